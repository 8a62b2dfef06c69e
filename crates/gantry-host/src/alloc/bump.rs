//! Bump (linear) allocator over offsets.

use std::sync::Arc;

use super::{
    AllocError, Allocation, AllocatorReport, Fit, Reporter, fit, next_allocator_id, validate,
};
use crate::BufferStats;

/// A bump allocator: each allocation is placed after the previous one; nothing is released
/// alone, everything is released at once by [`reset`](Self::reset). The cheapest allocator,
/// for data that lives one frame or one pass.
///
/// # Example
/// ```
/// use gantry_host::alloc::BumpAllocator;
///
/// let mut frame = BumpAllocator::new(1024);
/// let a = frame.allocate(100, 16).unwrap();
/// let b = frame.allocate(100, 256).unwrap();
/// assert_eq!((a.offset(), b.offset()), (0, 256));
/// assert_eq!(frame.report().wasted, 156); // alignment padding
/// frame.reset();
/// assert_eq!(frame.free_bytes(), 1024);
/// ```
#[derive(Debug)]
pub struct BumpAllocator {
    capacity: u64,
    head: u64,
    used: u64,
    live: u64,
    /// Sequence number of the first allocation since the last reset.
    epoch_start: u64,
    next_seq: u64,
    id: u64,
    stats: Reporter,
}

impl BumpAllocator {
    /// A bump allocator over the offsets `0..capacity`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(gantry_host::alloc::BumpAllocator::new(64).capacity(), 64);
    /// ```
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            head: 0,
            used: 0,
            live: 0,
            epoch_start: 0,
            next_seq: 0,
            id: next_allocator_id(),
            stats: Reporter::default(),
        }
    }

    /// Reports every allocation, and the release of all of them at each reset, into `stats`.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use gantry_host::{BufferStats, alloc::BumpAllocator};
    ///
    /// let stats = Arc::new(BufferStats::new());
    /// let mut bump = BumpAllocator::new(4096).with_stats(stats.clone());
    /// let _a = bump.allocate(100, 4).unwrap();
    /// let _b = bump.allocate(50, 4).unwrap();
    /// bump.reset();
    /// let s = stats.snapshot();
    /// assert_eq!((s.allocations, s.deallocations, s.live_bytes, s.peak_bytes), (2, 2, 0, 150));
    /// ```
    pub fn with_stats(mut self, stats: Arc<BufferStats>) -> Self {
        self.stats = Reporter(Some(stats));
        self
    }

    /// Allocates `size` bytes aligned to `align` (a power of two) after the previous allocation.
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`], [`AllocError::InvalidAlignment`], [`AllocError::TooLarge`]
    /// for bad requests; [`AllocError::OutOfSpace`] when the rest of the range is too small
    /// (reset); [`AllocError::Overflow`] when aligning overflows `u64`. The allocator is
    /// unchanged after an error.
    ///
    /// # Example
    /// ```
    /// let mut bump = gantry_host::alloc::BumpAllocator::new(100);
    /// let _a = bump.allocate(60, 1).unwrap();
    /// assert!(bump.allocate(60, 1).is_err());
    /// ```
    pub fn allocate(&mut self, size: u64, align: u64) -> Result<Allocation, AllocError> {
        validate(size, align, self.capacity)?;
        let offset = match fit(self.head, self.capacity, size, align) {
            Fit::At(offset) => offset,
            Fit::No => {
                return Err(AllocError::OutOfSpace {
                    size,
                    align,
                    capacity: self.capacity,
                    free: self.free_bytes(),
                    largest_free: self.free_bytes(),
                });
            }
            Fit::Overflow => {
                return Err(AllocError::Overflow {
                    size,
                    align,
                    capacity: self.capacity,
                });
            }
        };
        self.head = offset + size;
        self.used += size;
        self.live += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.alloc(size);
        Ok(Allocation {
            offset,
            size,
            allocator: self.id,
            seq,
        })
    }

    /// True when `allocation` was made by this allocator since its last reset.
    ///
    /// # Example
    /// ```
    /// let mut bump = gantry_host::alloc::BumpAllocator::new(100);
    /// let a = bump.allocate(10, 1).unwrap();
    /// assert!(bump.is_live(&a));
    /// bump.reset();
    /// assert!(!bump.is_live(&a));
    /// ```
    pub fn is_live(&self, allocation: &Allocation) -> bool {
        allocation.allocator == self.id && allocation.seq >= self.epoch_start
    }

    /// Releases every allocation and starts again at offset 0.
    ///
    /// With statistics attached, each allocation is recorded as released (so `allocations`
    /// and `deallocations` stay paired); that costs one atomic update per allocation.
    ///
    /// # Example
    /// ```
    /// let mut bump = gantry_host::alloc::BumpAllocator::new(100);
    /// let _a = bump.allocate(100, 1).unwrap();
    /// bump.reset();
    /// assert!(bump.allocate(100, 1).is_ok());
    /// ```
    pub fn reset(&mut self) {
        if self.live > 0 {
            for _ in 1..self.live {
                self.stats.dealloc(0);
            }
            self.stats.dealloc(self.used);
        }
        self.head = 0;
        self.used = 0;
        self.live = 0;
        self.epoch_start = self.next_seq;
    }

    /// Size of the managed range.
    ///
    /// # Example
    /// ```
    /// assert_eq!(gantry_host::alloc::BumpAllocator::new(64).capacity(), 64);
    /// ```
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes inside live allocations (padding not included).
    ///
    /// # Example
    /// ```
    /// let mut bump = gantry_host::alloc::BumpAllocator::new(64);
    /// let _a = bump.allocate(10, 1).unwrap();
    /// assert_eq!(bump.used(), 10);
    /// ```
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Bytes after the last allocation, still available.
    ///
    /// # Example
    /// ```
    /// let mut bump = gantry_host::alloc::BumpAllocator::new(64);
    /// let _a = bump.allocate(10, 1).unwrap();
    /// assert_eq!(bump.free_bytes(), 54);
    /// ```
    pub fn free_bytes(&self) -> u64 {
        self.capacity - self.head
    }

    /// The largest contiguous free range: for a bump allocator, all of the free space.
    ///
    /// # Example
    /// ```
    /// let bump = gantry_host::alloc::BumpAllocator::new(64);
    /// assert_eq!(bump.largest_free(), 64);
    /// ```
    pub fn largest_free(&self) -> u64 {
        self.free_bytes()
    }

    /// Always 0: a bump allocator's free space is one range.
    ///
    /// # Example
    /// ```
    /// assert_eq!(gantry_host::alloc::BumpAllocator::new(64).fragmentation(), 0.0);
    /// ```
    pub fn fragmentation(&self) -> f64 {
        super::fragmentation(self.largest_free(), self.free_bytes())
    }

    /// Number of allocations since the last reset.
    ///
    /// # Example
    /// ```
    /// let mut bump = gantry_host::alloc::BumpAllocator::new(64);
    /// let _a = bump.allocate(10, 1).unwrap();
    /// assert_eq!(bump.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.live as usize
    }

    /// True when nothing was allocated since the last reset.
    ///
    /// # Example
    /// ```
    /// assert!(gantry_host::alloc::BumpAllocator::new(64).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Occupancy now; `wasted` is the alignment padding between allocations.
    ///
    /// # Example
    /// ```
    /// let mut bump = gantry_host::alloc::BumpAllocator::new(64);
    /// let _a = bump.allocate(1, 1).unwrap();
    /// let _b = bump.allocate(1, 8).unwrap();
    /// let r = bump.report();
    /// assert_eq!((r.used, r.wasted, r.free), (2, 7, 55));
    /// ```
    pub fn report(&self) -> AllocatorReport {
        AllocatorReport {
            capacity: self.capacity,
            used: self.used,
            free: self.free_bytes(),
            wasted: self.head - self.used,
            largest_free: self.largest_free(),
            live_allocations: self.live,
        }
    }
}
