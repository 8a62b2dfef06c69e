//! A byte ring buffer (H3) for one owner; [`RingBuffer::split`] turns it into the
//! lock-free single-producer/single-consumer form of [`crate::spsc`].

use std::io;

/// Why a ring buffer could not be created.
///
/// # Example
/// ```
/// use gantry_host::{RingBuffer, RingError};
///
/// match RingBuffer::new(0) {
///     Err(RingError::ZeroCapacity) => {}
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(
///     RingError::ZeroCapacity.to_string(),
///     "a ring buffer needs a capacity of at least one byte, got 0"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// A ring needs room for at least one byte.
    #[error("a ring buffer needs a capacity of at least one byte, got 0")]
    ZeroCapacity,
    /// The capacity is larger than a ring can index (`isize::MAX / 2` bytes).
    #[error("ring capacity {requested} exceeds the largest supported, {max} bytes")]
    TooLarge {
        /// The capacity asked for.
        requested: usize,
        /// The largest capacity a ring supports.
        max: usize,
    },
}

/// The largest capacity a ring supports: its read and write indices run over twice the
/// capacity, which must fit in an `isize`.
pub(crate) const MAX_CAPACITY: usize = isize::MAX as usize / 2;

/// Checks a requested ring capacity.
pub(crate) fn check_capacity(capacity: usize) -> Result<(), RingError> {
    if capacity == 0 {
        Err(RingError::ZeroCapacity)
    } else if capacity > MAX_CAPACITY {
        Err(RingError::TooLarge {
            requested: capacity,
            max: MAX_CAPACITY,
        })
    } else {
        Ok(())
    }
}

/// A fixed-capacity byte ring buffer, owned by one thread.
///
/// Writes and reads are partial: they move as many bytes as fit (or as are stored) and
/// return that count. Each copies through at most two `copy_from_slice` calls (memcpy),
/// one for each side of the wrap-around point, never byte by byte.
///
/// # Example
/// ```
/// use gantry_host::RingBuffer;
///
/// let mut ring = RingBuffer::new(8)?;
/// assert_eq!(ring.write(b"hello"), 5);
/// assert_eq!(ring.write(b"world"), 3); // only three bytes of room left
/// let mut out = [0u8; 6];
/// assert_eq!(ring.read(&mut out), 6);
/// assert_eq!(&out, b"hellow");
/// assert_eq!(ring.available(), 2);
/// assert_eq!(ring.remaining(), 6);
/// # Ok::<(), gantry_host::RingError>(())
/// ```
#[derive(Clone)]
pub struct RingBuffer {
    buf: Box<[u8]>,
    /// Position of the oldest stored byte, `< capacity`.
    head: usize,
    /// Number of stored bytes, `<= capacity`.
    len: usize,
}

impl core::fmt::Debug for RingBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingBuffer")
            .field("capacity", &self.capacity())
            .field("available", &self.len)
            .finish_non_exhaustive()
    }
}

impl RingBuffer {
    /// An empty ring that holds up to `capacity` bytes.
    ///
    /// # Errors
    /// [`RingError::ZeroCapacity`] if `capacity` is 0, [`RingError::TooLarge`] if it is
    /// above `isize::MAX / 2`.
    ///
    /// # Example
    /// ```
    /// use gantry_host::{RingBuffer, RingError};
    ///
    /// assert_eq!(RingBuffer::new(0).unwrap_err(), RingError::ZeroCapacity);
    /// assert_eq!(RingBuffer::new(16)?.capacity(), 16);
    /// # Ok::<(), RingError>(())
    /// ```
    pub fn new(capacity: usize) -> Result<Self, RingError> {
        check_capacity(capacity)?;
        Ok(Self {
            buf: vec![0u8; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        })
    }

    /// The number of bytes the ring can hold.
    ///
    /// # Example
    /// ```
    /// assert_eq!(gantry_host::RingBuffer::new(32)?.capacity(), 32);
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The number of bytes stored, ready to read.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::RingBuffer::new(4)?;
    /// ring.write(b"ab");
    /// assert_eq!(ring.available(), 2);
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn available(&self) -> usize {
        self.len
    }

    /// The number of bytes that can still be written.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::RingBuffer::new(4)?;
    /// ring.write(b"ab");
    /// assert_eq!(ring.remaining(), 2);
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn remaining(&self) -> usize {
        self.capacity() - self.len
    }

    /// Whether no byte is stored.
    ///
    /// # Example
    /// ```
    /// assert!(gantry_host::RingBuffer::new(4)?.is_empty());
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether no byte can be written.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::RingBuffer::new(2)?;
    /// ring.write(b"xyz");
    /// assert!(ring.is_full());
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    /// Position one past the newest stored byte (where the next write goes).
    #[inline]
    fn tail(&self) -> usize {
        let t = self.head + self.len;
        if t >= self.capacity() {
            t - self.capacity()
        } else {
            t
        }
    }

    /// Appends as much of `data` as fits and returns how many bytes were written (0 when
    /// full or when `data` is empty).
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::RingBuffer::new(4)?;
    /// assert_eq!(ring.write(b"abcdef"), 4);
    /// assert_eq!(ring.write(b"g"), 0);
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.remaining());
        if n == 0 {
            return 0;
        }
        let tail = self.tail();
        let first = n.min(self.capacity() - tail);
        let base = self.buf.as_mut_ptr();
        // SAFETY: `tail < capacity` and `first <= capacity - tail`, so the first range lies
        // in `buf`; when the write wraps (`first < n`), `n - first = tail + n - capacity <=
        // tail - len <= tail` (as `n <= capacity - len`), so the second one does too. Both
        // ranges are in the free region, and `data.len() >= n`. `&mut self` keeps `data`
        // from overlapping `buf`. (The bounds are thus checked once here, not per copy.)
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), base.add(tail), first);
            if first < n {
                core::ptr::copy_nonoverlapping(data.as_ptr().add(first), base, n - first);
            }
        }
        self.len += n;
        n
    }

    /// Copies up to `out.len()` of the oldest bytes into `out` without removing them;
    /// returns how many were copied.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::RingBuffer::new(4)?;
    /// ring.write(b"abc");
    /// let mut out = [0u8; 2];
    /// assert_eq!(ring.peek(&mut out), 2);
    /// assert_eq!(&out, b"ab");
    /// assert_eq!(ring.available(), 3);
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn peek(&self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        if n == 0 {
            return 0;
        }
        let first = n.min(self.capacity() - self.head);
        let base = self.buf.as_ptr();
        // SAFETY: `head < capacity` and `first <= capacity - head`, so the first range lies
        // in `buf`; when the stored bytes wrap (`first < n`), `n - first <= head + len -
        // capacity <= head`, so the second one does too. Both are stored (initialised)
        // bytes, `out.len() >= n`, and `out` is a unique borrow, so it cannot overlap `buf`.
        unsafe {
            core::ptr::copy_nonoverlapping(base.add(self.head), out.as_mut_ptr(), first);
            if first < n {
                core::ptr::copy_nonoverlapping(base, out.as_mut_ptr().add(first), n - first);
            }
        }
        n
    }

    /// Moves up to `out.len()` of the oldest bytes into `out`; returns how many were read
    /// (0 when empty or when `out` is empty).
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::RingBuffer::new(4)?;
    /// ring.write(b"abc");
    /// let mut out = [0u8; 8];
    /// assert_eq!(ring.read(&mut out), 3);
    /// assert_eq!(&out[..3], b"abc");
    /// assert!(ring.is_empty());
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = self.peek(out);
        self.advance(n);
        n
    }

    /// Drops up to `n` of the oldest bytes without copying them; returns how many were
    /// dropped. Use it after [`as_slices`](Self::as_slices) to consume in place.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::RingBuffer::new(4)?;
    /// ring.write(b"abc");
    /// assert_eq!(ring.consume(2), 2);
    /// assert_eq!(ring.as_slices(), (&b"c"[..], &b""[..]));
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn consume(&mut self, n: usize) -> usize {
        let n = n.min(self.len);
        self.advance(n);
        n
    }

    #[inline]
    fn advance(&mut self, n: usize) {
        self.len -= n;
        self.head += n;
        if self.head >= self.capacity() {
            self.head -= self.capacity();
        }
        if self.len == 0 {
            // Start again at the front, so later writes are less likely to wrap.
            self.head = 0;
        }
    }

    /// The stored bytes, oldest first, as two slices: the second is non-empty only when
    /// the stored bytes wrap around the end of the storage.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::RingBuffer::new(4)?;
    /// ring.write(b"abc");
    /// ring.consume(2);
    /// ring.write(b"def");
    /// assert_eq!(ring.as_slices(), (&b"cd"[..], &b"ef"[..]));
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn as_slices(&self) -> (&[u8], &[u8]) {
        let first = self.len.min(self.capacity() - self.head);
        (
            &self.buf[self.head..self.head + first],
            &self.buf[..self.len - first],
        )
    }

    /// Removes every stored byte.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::RingBuffer::new(4)?;
    /// ring.write(b"abc");
    /// ring.clear();
    /// assert_eq!((ring.available(), ring.remaining()), (0, 4));
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Splits the ring, with its stored bytes, into a [`Producer`](crate::spsc::Producer)
    /// and a [`Consumer`](crate::spsc::Consumer) that may live on two threads.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::RingBuffer::new(8)?;
    /// ring.write(b"ab");
    /// let (mut tx, mut rx) = ring.split();
    /// std::thread::spawn(move || assert_eq!(tx.write(b"cd"), 2)).join().unwrap();
    /// let mut out = [0u8; 4];
    /// assert_eq!(rx.read(&mut out), 4);
    /// assert_eq!(&out, b"abcd");
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    pub fn split(self) -> (crate::spsc::Producer, crate::spsc::Consumer) {
        let (head, len) = (self.head, self.len);
        crate::spsc::from_parts(self.buf, head, len)
    }
}

impl io::Write for RingBuffer {
    /// Writes what fits; `Ok(0)` when the ring is full (so `write_all` then fails with
    /// `WriteZero`).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(RingBuffer::write(self, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Read for RingBuffer {
    /// Reads what is stored; `Ok(0)` when the ring is empty.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(RingBuffer::read(self, buf))
    }
}
