//! The split form of the byte ring (H3): one [`Producer`] and one [`Consumer`], each
//! `Send`, lock-free and wait-free.
//!
//! The two sides share the storage and two indices, each on its own cache line
//! ([`CachePadded`]). Each side also keeps a cached copy of the other side's index and
//! reloads it only when the cached value says there is not enough room (producer) or not
//! enough data (consumer), so a stream of writes and reads touches the shared cache lines
//! as rarely as possible. Indices run over `0..2 * capacity`, which tells a full ring from
//! an empty one without a separate count. The handles themselves are 128-byte aligned, so
//! the fields each side writes on every call (its own index and its cached copy of the
//! other's) never share a cache line with the other side's, wherever the two handles live.
//!
//! # Example
//! ```
//! use gantry_host::spsc;
//!
//! let (mut tx, mut rx) = spsc::channel(1024)?;
//! let writer = std::thread::spawn(move || {
//!     let data = [7u8; 10_000];
//!     let mut sent = 0;
//!     while sent < data.len() {
//!         sent += tx.write(&data[sent..]);
//!     }
//! });
//! let mut got = Vec::new();
//! let mut buf = [0u8; 256];
//! while got.len() < 10_000 {
//!     let n = rx.read(&mut buf);
//!     got.extend_from_slice(&buf[..n]);
//! }
//! writer.join().unwrap();
//! assert!(got.iter().all(|&b| b == 7));
//! # Ok::<(), gantry_host::RingError>(())
//! ```

use core::ptr::NonNull;
use std::io;

use crossbeam_utils::CachePadded;

use crate::ring::{RingError, check_capacity};
use crate::sync::{Arc, AtomicUsize, Ordering};

/// Storage and indices shared by the two sides.
struct Shared {
    /// Start of `cap` initialised bytes, from `Box::<[u8]>::into_raw`; freed in `Drop`.
    ptr: NonNull<u8>,
    cap: usize,
    /// Read index in `0..2 * cap`; written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Write index in `0..2 * cap`; written only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// Under loom, one checked cell per byte: the producer records a write and the
    /// consumer a read of every byte they copy, so loom checks that the index protocol
    /// orders every access to the bytes (it cannot see the raw copies themselves).
    #[cfg(loom)]
    track: Box<[crate::sync::UnsafeCell<()>]>,
}

impl Shared {
    /// Under loom, records accesses to the `n` bytes from position `pos` (wrapping).
    #[cfg(loom)]
    fn track(&self, pos: usize, n: usize, write: bool) {
        for i in 0..n {
            let cell = &self.track[(pos + i) % self.cap];
            if write {
                cell.with_mut(|_| ());
            } else {
                cell.with(|_| ());
            }
        }
    }
}

// SAFETY: `Shared` owns its byte storage like a `Box<[u8]>` (which is `Send`). The bytes are
// only accessed through `Producer` (the free region) and `Consumer` (the filled region);
// the index protocol (release stores, acquire loads) keeps those regions disjoint and
// orders every hand-over, so sharing `&Shared` between the two threads is sound.
unsafe impl Send for Shared {}
// SAFETY: as above: all shared mutation goes through atomics or through disjoint regions.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        let slice = core::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.cap);
        // SAFETY: `ptr` and `cap` come from `Box::into_raw` of a `Box<[u8]>` of `cap` bytes
        // (see `from_parts`), and this is the only place that frees it, once.
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// Bytes stored between read index `head` and write index `tail` (both in `0..2cap`).
#[inline(always)]
fn distance(head: usize, tail: usize, cap: usize) -> usize {
    if tail >= head {
        tail - head
    } else {
        tail + 2 * cap - head
    }
}

/// Storage position of index `i` (in `0..2cap`).
#[inline(always)]
fn position(i: usize, cap: usize) -> usize {
    if i >= cap { i - cap } else { i }
}

/// Index `i` moved `n <= cap` bytes on.
#[inline(always)]
fn advance(i: usize, n: usize, cap: usize) -> usize {
    let j = i + n;
    if j >= 2 * cap { j - 2 * cap } else { j }
}

/// Creates an empty ring of `capacity` bytes and returns its two sides.
///
/// # Errors
/// [`RingError::ZeroCapacity`] if `capacity` is 0, [`RingError::TooLarge`] if it is above
/// `isize::MAX / 2`.
///
/// # Example
/// ```
/// let (mut tx, mut rx) = gantry_host::spsc::channel(4)?;
/// assert_eq!(tx.write(b"abcdef"), 4);
/// let mut out = [0u8; 4];
/// assert_eq!(rx.read(&mut out), 4);
/// assert!(gantry_host::spsc::channel(0).is_err());
/// # Ok::<(), gantry_host::RingError>(())
/// ```
pub fn channel(capacity: usize) -> Result<(Producer, Consumer), RingError> {
    check_capacity(capacity)?;
    Ok(from_parts(vec![0u8; capacity].into_boxed_slice(), 0, 0))
}

/// Builds the two sides over `buf`, whose bytes `head..head + len` (wrapping) are stored.
pub(crate) fn from_parts(buf: Box<[u8]>, head: usize, len: usize) -> (Producer, Consumer) {
    let cap = buf.len();
    debug_assert!(cap > 0 && head < cap && len <= cap);
    let tail = advance(head, len, cap);
    let ptr = NonNull::new(Box::into_raw(buf).cast::<u8>()).expect("Box pointers are non-null");
    let shared = Arc::new(Shared {
        ptr,
        cap,
        head: CachePadded::new(AtomicUsize::new(head)),
        tail: CachePadded::new(AtomicUsize::new(tail)),
        #[cfg(loom)]
        track: (0..cap).map(|_| crate::sync::UnsafeCell::new(())).collect(),
    });
    (
        Producer {
            shared: Arc::clone(&shared),
            ptr,
            cap,
            tail,
            cached_head: head,
        },
        Consumer {
            shared,
            ptr,
            cap,
            head,
            cached_tail: tail,
        },
    )
}

/// The writing side of an SPSC byte ring; see the [module docs](self).
///
/// # Example
/// ```
/// let (mut tx, _rx) = gantry_host::spsc::channel(8)?;
/// assert_eq!(tx.write(b"hello"), 5);
/// # Ok::<(), gantry_host::RingError>(())
/// ```
// Aligned like `CachePadded`: the fields written on every call (`tail`, `cached_head`) never
// share a cache line (or the pair of lines the adjacent-line prefetcher fetches together) with
// the consumer's, even when both handles sit side by side, e.g. in one stack frame whose
// handles scoped threads borrow.
#[repr(align(128))]
pub struct Producer {
    shared: Arc<Shared>,
    ptr: NonNull<u8>,
    cap: usize,
    /// Our write index (the published one equals it between calls).
    tail: usize,
    /// The consumer's read index as last loaded; never ahead of the real one.
    cached_head: usize,
}

/// The reading side of an SPSC byte ring; see the [module docs](self).
///
/// # Example
/// ```
/// let (mut tx, mut rx) = gantry_host::spsc::channel(8)?;
/// tx.write(b"hi");
/// let mut out = [0u8; 2];
/// assert_eq!(rx.read(&mut out), 2);
/// assert_eq!(&out, b"hi");
/// # Ok::<(), gantry_host::RingError>(())
/// ```
// Aligned for the same reason as `Producer`.
#[repr(align(128))]
pub struct Consumer {
    shared: Arc<Shared>,
    ptr: NonNull<u8>,
    cap: usize,
    /// Our read index (the published one equals it between calls).
    head: usize,
    /// The producer's write index as last loaded; never ahead of the real one.
    cached_tail: usize,
}

// SAFETY: `ptr` points into the `Shared` storage kept alive by `shared`; a `Producer` only
// writes the free region, which the consumer does not touch until the producer publishes
// it with a release store, so moving the producer to another thread is sound.
unsafe impl Send for Producer {}
// SAFETY: as for `Producer`, with the filled region; the consumer hands bytes back with a
// release store of its read index.
unsafe impl Send for Consumer {}

impl core::fmt::Debug for Producer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.cap)
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.cap)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// The number of bytes the ring can hold.
    ///
    /// # Example
    /// ```
    /// let (tx, _rx) = gantry_host::spsc::channel(64)?;
    /// assert_eq!(tx.capacity(), 64);
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The number of bytes that can be written now (the consumer may free more at once).
    ///
    /// # Example
    /// ```
    /// let (mut tx, _rx) = gantry_host::spsc::channel(8)?;
    /// tx.write(b"abc");
    /// assert_eq!(tx.remaining(), 5);
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn remaining(&mut self) -> usize {
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        self.cap - distance(self.cached_head, self.tail, self.cap)
    }

    /// Whether the ring is full now.
    ///
    /// # Example
    /// ```
    /// let (mut tx, _rx) = gantry_host::spsc::channel(2)?;
    /// tx.write(b"ab");
    /// assert!(tx.is_full());
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn is_full(&mut self) -> bool {
        self.remaining() == 0
    }

    /// Whether the [`Consumer`] has been dropped.
    ///
    /// # Example
    /// ```
    /// let (tx, rx) = gantry_host::spsc::channel(2)?;
    /// drop(rx);
    /// assert!(tx.is_abandoned());
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }

    /// Appends as much of `data` as fits and returns how many bytes were written. Copies
    /// in at most two memcpys, then publishes the bytes with one release store.
    ///
    /// # Example
    /// ```
    /// let (mut tx, _rx) = gantry_host::spsc::channel(4)?;
    /// assert_eq!(tx.write(b"abcdef"), 4);
    /// assert_eq!(tx.write(b""), 0);
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn write(&mut self, data: &[u8]) -> usize {
        let cap = self.cap;
        let mut free = cap - distance(self.cached_head, self.tail, cap);
        if free < data.len() {
            self.cached_head = self.shared.head.load(Ordering::Acquire);
            free = cap - distance(self.cached_head, self.tail, cap);
        }
        let n = data.len().min(free);
        if n == 0 {
            return 0;
        }
        let pos = position(self.tail, cap);
        let first = n.min(cap - pos);
        let base = self.ptr.as_ptr();
        // SAFETY: `pos + first <= cap` and `n - first <= pos` (as `n <= free <= cap`), so both
        // ranges lie in the storage; they are in the free region, which the consumer does not
        // access until the release store below; `data` cannot overlap the ring's storage,
        // which no safe reference outside this module can reach while it is free.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), base.add(pos), first);
            if first < n {
                core::ptr::copy_nonoverlapping(data.as_ptr().add(first), base, n - first);
            }
        }
        #[cfg(loom)]
        self.shared.track(pos, n, true);
        self.tail = advance(self.tail, n, cap);
        self.shared.tail.store(self.tail, Ordering::Release);
        n
    }
}

impl Consumer {
    /// The number of bytes the ring can hold.
    ///
    /// # Example
    /// ```
    /// let (_tx, rx) = gantry_host::spsc::channel(64)?;
    /// assert_eq!(rx.capacity(), 64);
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The number of bytes ready to read now (the producer may add more at once).
    ///
    /// # Example
    /// ```
    /// let (mut tx, rx) = gantry_host::spsc::channel(8)?;
    /// tx.write(b"abc");
    /// assert_eq!(rx.available(), 3);
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn available(&self) -> usize {
        distance(
            self.head,
            self.shared.tail.load(Ordering::Acquire),
            self.cap,
        )
    }

    /// Whether no byte is ready now.
    ///
    /// # Example
    /// ```
    /// let (_tx, rx) = gantry_host::spsc::channel(8)?;
    /// assert!(rx.is_empty());
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.available() == 0
    }

    /// Whether the [`Producer`] has been dropped (bytes it wrote may still be stored).
    ///
    /// # Example
    /// ```
    /// let (tx, rx) = gantry_host::spsc::channel(2)?;
    /// drop(tx);
    /// assert!(rx.is_abandoned());
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }

    /// The stored bytes, oldest first, as two slices (the second non-empty only when they
    /// wrap). They stay valid while borrowed: the producer cannot overwrite them until
    /// they are consumed, which needs `&mut self`.
    ///
    /// # Example
    /// ```
    /// let (mut tx, mut rx) = gantry_host::spsc::channel(4)?;
    /// tx.write(b"abc");
    /// rx.consume(2);
    /// tx.write(b"def");
    /// assert_eq!(rx.as_slices(), (&b"cd"[..], &b"ef"[..]));
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn as_slices(&self) -> (&[u8], &[u8]) {
        let cap = self.cap;
        let len = self.available();
        let pos = position(self.head, cap);
        let first = len.min(cap - pos);
        let base = self.ptr.as_ptr();
        // SAFETY: both ranges lie in the storage (`pos + first <= cap`, `len - first <= pos`)
        // and in the filled region, published by the producer's release store that the
        // acquire load in `available` read; the producer does not write them again before
        // our read index passes them, which needs `&mut self`, so not while these borrows
        // of `self` live. The bytes are initialised (the storage starts zeroed).
        unsafe {
            (
                core::slice::from_raw_parts(base.add(pos), first),
                core::slice::from_raw_parts(base, len - first),
            )
        }
    }

    /// Copies up to `out.len()` of the oldest bytes into `out` without removing them;
    /// returns how many were copied.
    ///
    /// # Example
    /// ```
    /// let (mut tx, rx) = gantry_host::spsc::channel(4)?;
    /// tx.write(b"abc");
    /// let mut out = [0u8; 2];
    /// assert_eq!(rx.peek(&mut out), 2);
    /// assert_eq!(&out, b"ab");
    /// assert_eq!(rx.available(), 3);
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn peek(&self, out: &mut [u8]) -> usize {
        let (a, b) = self.as_slices();
        let first = out.len().min(a.len());
        out[..first].copy_from_slice(&a[..first]);
        let second = (out.len() - first).min(b.len());
        out[first..first + second].copy_from_slice(&b[..second]);
        first + second
    }

    /// Moves up to `out.len()` of the oldest bytes into `out` and returns how many were
    /// read. Copies in at most two memcpys, then frees the room with one release store.
    ///
    /// # Example
    /// ```
    /// let (mut tx, mut rx) = gantry_host::spsc::channel(4)?;
    /// tx.write(b"abc");
    /// let mut out = [0u8; 8];
    /// assert_eq!(rx.read(&mut out), 3);
    /// assert_eq!(&out[..3], b"abc");
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let cap = self.cap;
        let mut stored = distance(self.head, self.cached_tail, cap);
        if stored < out.len() {
            self.cached_tail = self.shared.tail.load(Ordering::Acquire);
            stored = distance(self.head, self.cached_tail, cap);
        }
        let n = out.len().min(stored);
        if n == 0 {
            return 0;
        }
        let pos = position(self.head, cap);
        let first = n.min(cap - pos);
        let base = self.ptr.as_ptr();
        // SAFETY: both ranges lie in the storage (`pos + first <= cap`, `n - first <= pos`)
        // and in the filled region, published by the producer's release store that our
        // acquire load of `tail` read; the producer does not write them until the release
        // store of `head` below. `out` is a unique borrow, so it cannot overlap them.
        unsafe {
            core::ptr::copy_nonoverlapping(base.add(pos), out.as_mut_ptr(), first);
            if first < n {
                core::ptr::copy_nonoverlapping(base, out.as_mut_ptr().add(first), n - first);
            }
        }
        #[cfg(loom)]
        self.shared.track(pos, n, false);
        self.head = advance(self.head, n, cap);
        self.shared.head.store(self.head, Ordering::Release);
        n
    }

    /// Drops up to `n` of the oldest bytes without copying them; returns how many were
    /// dropped. Use it after [`as_slices`](Self::as_slices) to consume in place.
    ///
    /// # Example
    /// ```
    /// let (mut tx, mut rx) = gantry_host::spsc::channel(4)?;
    /// tx.write(b"abc");
    /// assert_eq!(rx.consume(5), 3);
    /// assert!(rx.is_empty());
    /// # Ok::<(), gantry_host::RingError>(())
    /// ```
    #[inline]
    pub fn consume(&mut self, n: usize) -> usize {
        // Refresh the cached tail too: our read index must never pass it.
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        let n = n.min(distance(self.head, self.cached_tail, self.cap));
        if n > 0 {
            self.head = advance(self.head, n, self.cap);
            self.shared.head.store(self.head, Ordering::Release);
        }
        n
    }
}

impl io::Write for Producer {
    /// Writes what fits; `Ok(0)` when the ring is full.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(Producer::write(self, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Read for Consumer {
    /// Reads what is stored; `Ok(0)` when the ring is empty right now.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(Consumer::read(self, buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_have_cache_lines_of_their_own() {
        assert_eq!(core::mem::align_of::<Producer>(), 128);
        assert_eq!(core::mem::align_of::<Consumer>(), 128);
        // Side by side, as in one stack frame or one struct: 128 bytes apart at least.
        let pair = channel(8).unwrap();
        let (p, c) = (
            &pair.0 as *const Producer as usize,
            &pair.1 as *const Consumer as usize,
        );
        assert!(p.abs_diff(c) >= 128);
    }
}
