//! Preallocated round-robin buffers (H7).

use std::num::NonZeroUsize;

/// A fixed set of byte buffers, allocated up front and handed out in turn by
/// [`next`](Self::next), so a loop that needs a scratch buffer per step allocates nothing.
///
/// **Reuse:** with `count` buffers, the buffer returned by one call to `next` is returned
/// again, cleared, by the `count`-th call after it. The `&mut` borrow that `next` returns ends
/// before the next call, so a buffer is never reused while borrowed; data that must outlive
/// `count` steps must be copied out. A buffer keeps any capacity it grew to.
///
/// # Example
/// ```
/// use std::num::NonZeroUsize;
/// use gantry_host::PreallocatedBuffers;
///
/// let mut scratch = PreallocatedBuffers::new(NonZeroUsize::new(2).unwrap(), 4096);
/// let first = scratch.next().as_ptr();
/// scratch.next().extend_from_slice(b"data");
/// let third = scratch.next(); // the first buffer again, cleared
/// assert_eq!(third.as_ptr(), first);
/// assert!(third.is_empty() && third.capacity() >= 4096);
/// ```
#[derive(Debug, Clone)]
pub struct PreallocatedBuffers {
    buffers: Vec<Vec<u8>>,
    next: usize,
    buffer_size: usize,
}

impl PreallocatedBuffers {
    /// `count` buffers with capacity for `buffer_size` bytes each, allocated now.
    ///
    /// # Panics
    /// When the memory cannot be allocated (as [`Vec::with_capacity`]).
    ///
    /// # Example
    /// ```
    /// use std::num::NonZeroUsize;
    /// let bufs = gantry_host::PreallocatedBuffers::new(NonZeroUsize::new(3).unwrap(), 64);
    /// assert_eq!((bufs.len(), bufs.buffer_size()), (3, 64));
    /// ```
    #[track_caller]
    pub fn new(count: NonZeroUsize, buffer_size: usize) -> Self {
        Self {
            buffers: (0..count.get())
                .map(|_| Vec::with_capacity(buffer_size))
                .collect(),
            next: 0,
            buffer_size,
        }
    }

    /// The next buffer in turn, cleared (its capacity kept).
    ///
    /// # Example
    /// ```
    /// use std::num::NonZeroUsize;
    /// let mut bufs = gantry_host::PreallocatedBuffers::new(NonZeroUsize::MIN, 64);
    /// bufs.next().push(1);
    /// assert!(bufs.next().is_empty()); // one buffer: the same one, cleared
    /// ```
    #[allow(clippy::should_implement_trait)] // not an iterator: each buffer comes back forever
    pub fn next(&mut self) -> &mut Vec<u8> {
        let index = self.next;
        self.next = if index + 1 == self.buffers.len() {
            0
        } else {
            index + 1
        };
        let buffer = &mut self.buffers[index];
        buffer.clear();
        buffer
    }

    /// Index of the buffer the next call to [`next`](Self::next) returns.
    ///
    /// # Example
    /// ```
    /// use std::num::NonZeroUsize;
    /// let mut bufs = gantry_host::PreallocatedBuffers::new(NonZeroUsize::new(2).unwrap(), 8);
    /// bufs.next();
    /// assert_eq!(bufs.next_index(), 1);
    /// ```
    pub fn next_index(&self) -> usize {
        self.next
    }

    /// Number of buffers.
    ///
    /// # Example
    /// ```
    /// use std::num::NonZeroUsize;
    /// let bufs = gantry_host::PreallocatedBuffers::new(NonZeroUsize::new(2).unwrap(), 8);
    /// assert_eq!(bufs.len(), 2);
    /// ```
    #[allow(clippy::len_without_is_empty)] // never empty: the count is a `NonZeroUsize`
    pub fn len(&self) -> usize {
        self.buffers.len()
    }

    /// The capacity each buffer was allocated with.
    ///
    /// # Example
    /// ```
    /// use std::num::NonZeroUsize;
    /// let bufs = gantry_host::PreallocatedBuffers::new(NonZeroUsize::MIN, 8);
    /// assert_eq!(bufs.buffer_size(), 8);
    /// ```
    pub fn buffer_size(&self) -> usize {
        self.buffer_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_reuses_each_buffer_every_count_calls() {
        let mut bufs = PreallocatedBuffers::new(NonZeroUsize::new(3).unwrap(), 16);
        let ptrs: Vec<*const u8> = (0..3)
            .map(|i| {
                let b = bufs.next();
                b.push(i);
                b.as_ptr()
            })
            .collect();
        assert!(ptrs[0] != ptrs[1] && ptrs[1] != ptrs[2] && ptrs[0] != ptrs[2]);
        for round in 0..3 {
            for (i, &p) in ptrs.iter().enumerate() {
                assert_eq!(bufs.next_index(), i, "round {round}");
                let b = bufs.next();
                assert!(b.is_empty(), "a reused buffer is cleared");
                assert_eq!(b.as_ptr(), p, "no new allocation");
                b.extend_from_slice(&[1; 16]);
            }
        }
    }
}
