//! A wait-free triple buffer (H12): the writer publishes values, the reader always gets the
//! latest one published, and neither ever waits for the other.
//!
//! Three buffers: the writer owns one (input), the reader owns one (output), and the third
//! (back) is exchanged through one atomic word that holds its index and a "new value" bit.
//! [`publish`](TripleWriter::publish) swaps the input with the back buffer and sets the bit;
//! [`read`](TripleReader::read) swaps the output with the back buffer only when the bit is
//! set. Each swap is one atomic `swap`, so both sides are wait-free, and no buffer is ever
//! accessed by both sides at once. Each buffer is on its own cache lines, and so is each
//! handle (they are 128-byte aligned): the index a handle rewrites on every publish or
//! update never shares a line with the other handle's, wherever the two handles live.

use crossbeam_utils::CachePadded;

use crate::sync::{Arc, AtomicUsize, Ordering, UnsafeCell};

/// Bits 0-1 of the back word: the back buffer's index. Bit 2: it holds a new value.
const INDEX: usize = 3;
const FRESH: usize = 4;

struct Shared<T> {
    bufs: [CachePadded<UnsafeCell<T>>; 3],
    /// Holds an index in `0..3` (and the `FRESH` bit) at all times: it starts at 2 and is
    /// only ever swapped with a handle's index, which is itself always in `0..3`.
    back: CachePadded<AtomicUsize>,
}

impl<T> Shared<T> {
    /// Buffer `i`, without a bounds check.
    ///
    /// # Safety
    /// `i < 3`.
    #[inline(always)]
    unsafe fn buf(&self, i: usize) -> &UnsafeCell<T> {
        debug_assert!(i < 3);
        // SAFETY: the caller guarantees `i < 3`, the length of `bufs`.
        unsafe { self.bufs.get_unchecked(i) }
    }
}

// SAFETY: every buffer is owned by exactly one of writer (input), reader (output) and the
// back word at any time; ownership moves only through atomic swaps of `back` with AcqRel
// ordering, which order all accesses of the old owner before those of the new one. Values
// of `T` move between the threads, which needs `T: Send`.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: `Shared` owns three `T`s; sending it sends them, which `T: Send` allows.
unsafe impl<T: Send> Send for Shared<T> {}

/// Constructor of the two handles of a triple buffer.
///
/// # Example
/// ```
/// use gantry_host::TripleBuffer;
///
/// let (mut writer, mut reader) = TripleBuffer::new([0u32; 64]).split();
/// let t = std::thread::spawn(move || {
///     for n in 1..=1000u32 {
///         *writer.input() = [n; 64];
///         writer.publish();
///     }
/// });
/// let mut last = 0;
/// while last < 1000 {
///     let value = reader.read();
///     assert!(value.iter().all(|&x| x == value[0])); // never torn
///     assert!(value[0] >= last); // never goes back
///     last = value[0];
/// }
/// t.join().unwrap();
/// ```
#[derive(Debug)]
pub struct TripleBuffer<T> {
    initial: [T; 3],
}

impl<T: Clone> TripleBuffer<T> {
    /// A triple buffer whose three buffers start as clones of `initial`, which the reader
    /// sees until the first publish.
    ///
    /// # Example
    /// ```
    /// let (_w, mut r) = gantry_host::TripleBuffer::new(7).split();
    /// assert_eq!(*r.read(), 7);
    /// ```
    pub fn new(initial: T) -> Self {
        Self {
            initial: [initial.clone(), initial.clone(), initial],
        }
    }
}

impl<T: Default> Default for TripleBuffer<T> {
    fn default() -> Self {
        Self {
            initial: [T::default(), T::default(), T::default()],
        }
    }
}

impl<T> TripleBuffer<T> {
    /// A triple buffer from three values: the reader first sees `output`, the writer first
    /// writes into `input`, and `back` is the third buffer.
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::TripleBuffer::from_values(1, 2, 3).split();
    /// assert_eq!(*r.read(), 1);
    /// assert_eq!(*w.input(), 2);
    /// ```
    pub fn from_values(output: T, input: T, back: T) -> Self {
        Self {
            initial: [output, input, back],
        }
    }

    /// Splits into the writer and the reader handle, each `Send` when `T` is.
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::TripleBuffer::new(0).split();
    /// w.write(3);
    /// assert_eq!(*r.read(), 3);
    /// ```
    pub fn split(self) -> (TripleWriter<T>, TripleReader<T>) {
        let [output, input, back] = self.initial;
        let shared = Arc::new(Shared {
            bufs: [
                CachePadded::new(UnsafeCell::new(output)),
                CachePadded::new(UnsafeCell::new(input)),
                CachePadded::new(UnsafeCell::new(back)),
            ],
            back: CachePadded::new(AtomicUsize::new(2)),
        });
        (
            TripleWriter {
                shared: Arc::clone(&shared),
                input: 1,
            },
            TripleReader { shared, output: 0 },
        )
    }
}

/// The writing handle of a triple buffer: fill [`input`](Self::input), then
/// [`publish`](Self::publish).
///
/// # Example
/// ```
/// let (mut w, mut r) = gantry_host::TripleBuffer::new(0u64).split();
/// *w.input() = 5;
/// w.publish();
/// assert_eq!(*r.read(), 5);
/// ```
// Aligned like `CachePadded`, so that `input`, written on every publish, never shares a cache
// line with the reader's `output`, even when both handles sit side by side (in one stack frame
// whose handles scoped threads borrow, say).
#[repr(align(128))]
pub struct TripleWriter<T> {
    shared: Arc<Shared<T>>,
    /// Always in `0..3` (starts at 1, then comes from the index bits of `back`).
    input: usize,
}

/// The reading handle of a triple buffer: [`read`](Self::read) returns the latest value.
///
/// # Example
/// ```
/// let (mut w, mut r) = gantry_host::TripleBuffer::new(0u64).split();
/// w.write(1);
/// w.write(2); // 1 is skipped: the reader only sees the latest
/// assert_eq!(*r.read(), 2);
/// ```
// Aligned for the same reason as `TripleWriter`.
#[repr(align(128))]
pub struct TripleReader<T> {
    shared: Arc<Shared<T>>,
    /// Always in `0..3` (starts at 0, then comes from the index bits of `back`).
    output: usize,
}

impl<T> core::fmt::Debug for TripleWriter<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TripleWriter").finish_non_exhaustive()
    }
}

impl<T> core::fmt::Debug for TripleReader<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TripleReader").finish_non_exhaustive()
    }
}

impl<T> TripleWriter<T> {
    /// The input buffer, to fill before [`publish`](Self::publish). It holds an older
    /// value (not necessarily the last one published).
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::TripleBuffer::new(vec![0u8; 4]).split();
    /// w.input().copy_from_slice(b"abcd");
    /// w.publish();
    /// assert_eq!(&r.read()[..], b"abcd");
    /// ```
    #[inline]
    pub fn input(&mut self) -> &mut T {
        // SAFETY: `self.input < 3` (see the field).
        let ptr = unsafe { self.shared.buf(self.input) }.with_mut(|p| p);
        // SAFETY: the input buffer is owned by this handle alone (see `Shared`) and stays so
        // while `self` is borrowed mutably; the `Arc` keeps it alive.
        unsafe { &mut *ptr }
    }

    /// Publishes the input buffer as the latest value; the writer gets another buffer as
    /// its input. Returns `true` if the value published before was never read (it is now
    /// overwritten). Wait-free.
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::TripleBuffer::new(0).split();
    /// *w.input() = 1;
    /// assert!(!w.publish());
    /// *w.input() = 2;
    /// assert!(w.publish()); // 1 was never read
    /// assert_eq!(*r.read(), 2);
    /// ```
    #[inline]
    pub fn publish(&mut self) -> bool {
        // Under loom, record our last access to the input before we give it away.
        #[cfg(loom)]
        self.shared.bufs[self.input].with_mut(|_| ());
        // AcqRel: release our writes to the input; acquire the reader's last reads of the
        // buffer we get back.
        let old = self.shared.back.swap(self.input | FRESH, Ordering::AcqRel);
        self.input = old & INDEX;
        old & FRESH != 0
    }

    /// Moves `value` into the input buffer and publishes it.
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::TripleBuffer::new(0).split();
    /// w.write(9);
    /// assert_eq!(*r.read(), 9);
    /// ```
    #[inline]
    pub fn write(&mut self, value: T) -> bool {
        *self.input() = value;
        self.publish()
    }

    /// Whether the last published value has not been read yet.
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::TripleBuffer::new(0).split();
    /// w.write(1);
    /// assert!(w.consumed() == false);
    /// r.read();
    /// assert!(w.consumed());
    /// ```
    pub fn consumed(&self) -> bool {
        self.shared.back.load(Ordering::Relaxed) & FRESH == 0
    }
}

impl<T> TripleReader<T> {
    /// Whether a value newer than the current output has been published.
    ///
    /// # Example
    /// ```
    /// let (mut w, r) = gantry_host::TripleBuffer::new(0).split();
    /// assert!(!r.updated());
    /// w.write(1);
    /// assert!(r.updated());
    /// ```
    #[inline]
    pub fn updated(&self) -> bool {
        self.shared.back.load(Ordering::Relaxed) & FRESH != 0
    }

    /// Takes the latest published value as the output if there is a new one; returns
    /// whether there was. Wait-free.
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::TripleBuffer::new(0).split();
    /// assert!(!r.update());
    /// w.write(1);
    /// assert!(r.update());
    /// assert_eq!(*r.output(), 1);
    /// ```
    #[inline]
    pub fn update(&mut self) -> bool {
        if !self.updated() {
            return false;
        }
        #[cfg(loom)]
        self.shared.bufs[self.output].with(|_| ());
        // AcqRel: acquire the writer's writes to the value we take; release our reads of
        // the output we give back.
        let old = self.shared.back.swap(self.output, Ordering::AcqRel);
        self.output = old & INDEX;
        true
    }

    /// The latest published value (after [`update`](Self::update)). Wait-free.
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::TripleBuffer::new(String::new()).split();
    /// w.write("hello".to_string());
    /// assert_eq!(r.read(), "hello");
    /// ```
    #[inline]
    pub fn read(&mut self) -> &T {
        self.update();
        self.output()
    }

    /// The current output, without looking for a newer value.
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::TripleBuffer::new(0).split();
    /// w.write(1);
    /// assert_eq!(*r.output(), 0);
    /// ```
    #[inline]
    pub fn output(&self) -> &T {
        // SAFETY: `self.output < 3` (see the field).
        let ptr = unsafe { self.shared.buf(self.output) }.with(|p| p);
        // SAFETY: the output buffer is owned by this handle alone (see `Shared`); it only
        // changes in `update`, which needs `&mut self`, so not while this borrow lives.
        unsafe { &*ptr }
    }

    /// Mutable access to the current output (the writer never sees this buffer again
    /// before the reader gives it back by updating).
    ///
    /// # Example
    /// ```
    /// let (mut w, mut r) = gantry_host::TripleBuffer::new(vec![1]).split();
    /// r.output_mut().push(2);
    /// assert_eq!(r.output(), &[1, 2]);
    /// ```
    #[inline]
    pub fn output_mut(&mut self) -> &mut T {
        // SAFETY: `self.output < 3` (see the field).
        let ptr = unsafe { self.shared.buf(self.output) }.with_mut(|p| p);
        // SAFETY: as in `output`; `&mut self` makes this the only access.
        unsafe { &mut *ptr }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_have_cache_lines_of_their_own() {
        assert_eq!(core::mem::align_of::<TripleWriter<u8>>(), 128);
        assert_eq!(core::mem::align_of::<TripleReader<u8>>(), 128);
        let pair = TripleBuffer::new(0u8).split();
        let (w, r) = (
            &pair.0 as *const TripleWriter<u8> as usize,
            &pair.1 as *const TripleReader<u8> as usize,
        );
        assert!(w.abs_diff(r) >= 128);
    }
}
