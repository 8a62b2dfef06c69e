//! A double buffer (H6) that is sound across threads: one [`DoubleWriter`] fills the back
//! buffer while one [`DoubleReader`] reads the front one, and
//! [`swap`](DoubleWriter::swap) publishes.
//!
//! One atomic word holds the index of the front buffer and a bit for each buffer the reader
//! is reading. The reader marks the front buffer in the same compare-and-swap that reads
//! which one it is, so a [`swap`](DoubleWriter::swap) can never hand the writer a buffer
//! the reader is still in: after a swap the writer's next [`write`](DoubleWriter::write)
//! waits until the reader has let go of the old front buffer (or
//! [`try_write`](DoubleWriter::try_write) returns `None`). No reader ever sees a buffer
//! being written. For a writer that must never wait, use the
//! [triple buffer](crate::TripleBuffer).

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use crossbeam_utils::CachePadded;

use crate::sync::{Arc, AtomicUsize, Ordering, UnsafeCell, backoff};

/// Bit 0: index of the front (published) buffer.
const FRONT: usize = 1;
/// Bit `1 + i`: the reader holds buffer `i`.
const READING: [usize; 2] = [2, 4];

struct Shared<T> {
    state: CachePadded<AtomicUsize>,
    bufs: [CachePadded<UnsafeCell<T>>; 2],
}

// SAFETY: the writer only accesses the back buffer after seeing (acquire) that the reader
// does not hold it, and the reader only accesses a buffer it marked with a compare-and-swap
// that also checked it is the front one; so no buffer is accessed by both at once, and
// each hand-over is ordered by release/acquire on `state`. Values of `T` are handed from
// one thread to the other, which needs `T: Send`.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: `Shared` owns two `T`s; sending it sends them, which `T: Send` allows.
unsafe impl<T: Send> Send for Shared<T> {}

/// Constructor of the two handles of a double buffer.
///
/// # Example
/// ```
/// use gantry_host::DoubleBuffer;
///
/// let (mut writer, mut reader) = DoubleBuffer::new(Vec::new(), Vec::new()).split();
/// let t = std::thread::spawn(move || {
///     for i in 0..100u32 {
///         let mut back = writer.write();
///         back.clear();
///         back.extend([i; 16]);
///         drop(back);
///         writer.swap();
///     }
/// });
/// for _ in 0..100 {
///     let front = reader.read();
///     assert!(front.windows(2).all(|w| w[0] == w[1])); // never half written
/// }
/// t.join().unwrap();
/// ```
#[derive(Debug)]
pub struct DoubleBuffer<T> {
    front: T,
    back: T,
}

impl<T> DoubleBuffer<T> {
    /// A double buffer whose reader first sees `front`; the writer first fills `back`.
    ///
    /// # Example
    /// ```
    /// let (_w, mut r) = gantry_host::DoubleBuffer::new(1, 2).split();
    /// assert_eq!(*r.read(), 1);
    /// ```
    pub fn new(front: T, back: T) -> Self {
        Self { front, back }
    }

    /// Splits into the writer and the reader handle, each `Send` when `T` is.
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::DoubleBuffer::new(0u64, 0).split();
    /// *w.write() = 5;
    /// w.swap();
    /// assert_eq!(*r.read(), 5);
    /// ```
    pub fn split(self) -> (DoubleWriter<T>, DoubleReader<T>) {
        let shared = Arc::new(Shared {
            state: CachePadded::new(AtomicUsize::new(0)),
            bufs: [
                CachePadded::new(UnsafeCell::new(self.front)),
                CachePadded::new(UnsafeCell::new(self.back)),
            ],
        });
        (
            DoubleWriter {
                shared: Arc::clone(&shared),
                front: 0,
            },
            DoubleReader { shared },
        )
    }
}

impl<T: Default> Default for DoubleBuffer<T> {
    fn default() -> Self {
        Self::new(T::default(), T::default())
    }
}

/// The writing handle of a double buffer: [`write`](Self::write) the back buffer, then
/// [`swap`](Self::swap) to publish it.
///
/// # Example
/// ```
/// let (mut w, mut r) = gantry_host::DoubleBuffer::new(vec![0u8; 4], vec![0u8; 4]).split();
/// w.write().fill(9);
/// w.swap();
/// assert_eq!(&*r.read(), &[9, 9, 9, 9]);
/// ```
pub struct DoubleWriter<T> {
    shared: Arc<Shared<T>>,
    /// Index of the front buffer; only this handle changes it.
    front: usize,
}

/// The reading handle of a double buffer: [`read`](Self::read) the front buffer.
///
/// # Example
/// ```
/// let (_w, mut r) = gantry_host::DoubleBuffer::new("front", "back").split();
/// assert_eq!(*r.read(), "front");
/// ```
pub struct DoubleReader<T> {
    shared: Arc<Shared<T>>,
}

impl<T> core::fmt::Debug for DoubleWriter<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DoubleWriter").finish_non_exhaustive()
    }
}

impl<T> core::fmt::Debug for DoubleReader<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DoubleReader").finish_non_exhaustive()
    }
}

impl<T> DoubleWriter<T> {
    /// Write access to the back buffer, or `None` while the reader still reads it (only
    /// possible right after a [`swap`](Self::swap)).
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::DoubleBuffer::new(0, 0).split();
    /// let guard = r.read(); // reads the front buffer
    /// w.swap(); // which is now the back buffer
    /// assert!(w.try_write().is_none());
    /// drop(guard);
    /// assert!(w.try_write().is_some());
    /// ```
    pub fn try_write(&mut self) -> Option<WriteGuard<'_, T>> {
        let back = 1 - self.front;
        // Acquire: the reader's reads of `back` happen before our writes.
        if self.shared.state.load(Ordering::Acquire) & READING[back] != 0 {
            return None;
        }
        let ptr = self.shared.bufs[back].with_mut(|p| p);
        Some(WriteGuard {
            ptr,
            _writer: PhantomData,
        })
    }

    /// Write access to the back buffer, waiting (spinning, then yielding) while the reader
    /// still reads it. The wait ends when the reader drops its [`ReadGuard`]; a reader
    /// that holds one forever blocks the writer forever.
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::DoubleBuffer::new(String::new(), String::new()).split();
    /// w.write().push_str("frame 1");
    /// w.swap();
    /// assert_eq!(&*r.read(), "frame 1");
    /// ```
    pub fn write(&mut self) -> WriteGuard<'_, T> {
        let back = 1 - self.front;
        let mut step = 0;
        while self.shared.state.load(Ordering::Acquire) & READING[back] != 0 {
            backoff(&mut step);
        }
        let ptr = self.shared.bufs[back].with_mut(|p| p);
        WriteGuard {
            ptr,
            _writer: PhantomData,
        }
    }

    /// Publishes the back buffer: it becomes the front one the reader sees, and the old
    /// front becomes the back one to write next.
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::DoubleBuffer::new(1, 2).split();
    /// w.swap();
    /// assert_eq!(*r.read(), 2);
    /// ```
    pub fn swap(&mut self) {
        // Under loom, record our last access to the back buffer before we publish it.
        #[cfg(loom)]
        self.shared.bufs[1 - self.front].with_mut(|_| ());
        // Release: our writes to the back buffer happen before the reader's reads.
        self.shared.state.fetch_xor(FRONT, Ordering::Release);
        self.front = 1 - self.front;
    }

    /// Whether the reader has been dropped.
    ///
    /// # Example
    /// ```
    /// let (w, r) = gantry_host::DoubleBuffer::new(0, 0).split();
    /// drop(r);
    /// assert!(w.is_abandoned());
    /// ```
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

impl<T> DoubleReader<T> {
    /// Read access to the front buffer, held until the guard is dropped. Never waits.
    ///
    /// # Example
    /// ```
    /// let (_w, mut r) = gantry_host::DoubleBuffer::new(vec![1, 2], vec![]).split();
    /// assert_eq!(r.read().len(), 2);
    /// ```
    pub fn read(&mut self) -> ReadGuard<'_, T> {
        let state = &self.shared.state;
        let mut s = state.load(Ordering::Relaxed);
        let index = loop {
            let index = s & FRONT;
            // Acquire: the writer's writes before the swap that made `index` the front
            // happen before our reads.
            match state.compare_exchange_weak(
                s,
                s | READING[index],
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break index,
                Err(now) => s = now,
            }
        };
        let ptr = self.shared.bufs[index].with(|p| p);
        ReadGuard {
            ptr,
            shared: &self.shared,
            index,
        }
    }

    /// Whether the writer has been dropped.
    ///
    /// # Example
    /// ```
    /// let (w, r) = gantry_host::DoubleBuffer::new(0, 0).split();
    /// drop(w);
    /// assert!(r.is_abandoned());
    /// ```
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

/// Read access to the front buffer of a double buffer; the writer cannot write into it
/// while this lives.
///
/// # Example
/// ```
/// let (mut w, mut r) = gantry_host::DoubleBuffer::new(1, 2).split();
/// let guard: gantry_host::ReadGuard<'_, i32> = r.read();
/// w.swap(); // publishes 2; the guard still reads 1, undisturbed
/// assert_eq!(*guard, 1);
/// ```
pub struct ReadGuard<'a, T> {
    ptr: *const T,
    shared: &'a Shared<T>,
    index: usize,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: `ptr` points to a buffer kept alive by the reader's `Arc` (borrowed for
        // `'a`); the bit we set in `state` keeps the writer out of it until `drop`.
        unsafe { &*self.ptr }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        // Under loom, record our last access before we let go of the buffer.
        #[cfg(loom)]
        self.shared.bufs[self.index].with(|_| ());
        // Release: our reads happen before the writer's next writes to this buffer.
        self.shared
            .state
            .fetch_and(!READING[self.index], Ordering::Release);
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for ReadGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        (**self).fmt(f)
    }
}

/// Write access to the back buffer of a double buffer; the reader cannot see it until
/// [`DoubleWriter::swap`].
///
/// # Example
/// ```
/// let (mut w, mut r) = gantry_host::DoubleBuffer::new(0, 0).split();
/// let mut guard: gantry_host::WriteGuard<'_, i32> = w.write();
/// *guard = 4;
/// drop(guard);
/// assert_eq!(*r.read(), 0); // not published yet
/// w.swap();
/// assert_eq!(*r.read(), 4);
/// ```
pub struct WriteGuard<'a, T> {
    ptr: *mut T,
    _writer: PhantomData<&'a mut DoubleWriter<T>>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: `ptr` points to the back buffer, kept alive by the writer's `Arc`
        // (borrowed mutably for `'a`); the reader is not in it (checked on creation) and
        // cannot enter it: it only marks the front buffer, which cannot change while the
        // writer is borrowed.
        unsafe { &*self.ptr }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; the guard borrows the writer mutably, so this is the only
        // access.
        unsafe { &mut *self.ptr }
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for WriteGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        (**self).fmt(f)
    }
}
