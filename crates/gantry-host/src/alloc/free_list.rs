//! Best-fit free-list allocator over offsets, with coalescing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{
    AllocError, Allocation, AllocatorReport, Fit, FreeError, Reporter, fit, next_allocator_id,
    validate,
};
use crate::BufferStats;

/// A general-purpose allocator: allocations are released in any order; a released range merges
/// with free neighbours, so free space does not stay split.
///
/// Placement is best fit: the smallest free range that holds the request once aligned. The
/// alignment padding in front of an allocation stays a free range, so a free-list allocator
/// never wastes bytes (`report().wasted == 0`). Allocation and release cost `O(log n)` in the
/// number of free ranges, plus a scan of the ranges that are large enough but cannot hold the
/// request at its alignment.
///
/// # Example
/// ```
/// use gantry_host::alloc::FreeListAllocator;
///
/// let mut heap = FreeListAllocator::new(300);
/// let a = heap.allocate(100, 1).unwrap();
/// let b = heap.allocate(100, 1).unwrap();
/// let c = heap.allocate(100, 1).unwrap();
/// heap.free(a).unwrap();
/// heap.free(c).unwrap();
/// assert_eq!((heap.free_bytes(), heap.largest_free()), (200, 100));
/// assert_eq!(heap.fragmentation(), 0.5);
/// heap.free(b).unwrap(); // merges with both neighbours
/// assert_eq!(heap.largest_free(), 300);
/// ```
#[derive(Debug)]
pub struct FreeListAllocator {
    capacity: u64,
    /// Free ranges by offset: `offset -> size`. Never two adjacent ranges.
    free_by_offset: BTreeMap<u64, u64>,
    /// The same ranges ordered by `(size, offset)`, for best fit.
    free_by_size: BTreeSet<(u64, u64)>,
    /// Live allocations: `offset -> (size, seq)`.
    live: BTreeMap<u64, (u64, u64)>,
    free_total: u64,
    next_seq: u64,
    id: u64,
    stats: Reporter,
}

impl FreeListAllocator {
    /// A free-list allocator over the offsets `0..capacity`.
    ///
    /// # Example
    /// ```
    /// let heap = gantry_host::alloc::FreeListAllocator::new(1 << 20);
    /// assert_eq!(heap.largest_free(), 1 << 20);
    /// ```
    pub fn new(capacity: u64) -> Self {
        let mut this = Self {
            capacity,
            free_by_offset: BTreeMap::new(),
            free_by_size: BTreeSet::new(),
            live: BTreeMap::new(),
            free_total: 0,
            next_seq: 0,
            id: next_allocator_id(),
            stats: Reporter::default(),
        };
        this.insert_free(0, capacity);
        this
    }

    /// Reports every allocation and release into `stats`.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use gantry_host::{BufferStats, alloc::FreeListAllocator};
    ///
    /// let stats = Arc::new(BufferStats::new());
    /// let mut heap = FreeListAllocator::new(4096).with_stats(stats.clone());
    /// let a = heap.allocate(100, 4).unwrap();
    /// heap.free(a).unwrap();
    /// assert_eq!(stats.snapshot().outstanding(), 0);
    /// ```
    pub fn with_stats(mut self, stats: Arc<BufferStats>) -> Self {
        self.stats = Reporter(Some(stats));
        self
    }

    fn insert_free(&mut self, offset: u64, size: u64) {
        if size > 0 {
            self.free_by_offset.insert(offset, size);
            self.free_by_size.insert((size, offset));
            self.free_total += size;
        }
    }

    fn remove_free(&mut self, offset: u64, size: u64) {
        self.free_by_offset.remove(&offset);
        self.free_by_size.remove(&(size, offset));
        self.free_total -= size;
    }

    /// Allocates `size` bytes aligned to `align` (a power of two) in the smallest free range
    /// that holds them.
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`], [`AllocError::InvalidAlignment`], [`AllocError::TooLarge`]
    /// for bad requests; [`AllocError::OutOfSpace`] when no free range holds the request;
    /// [`AllocError::Overflow`] when no range holds it and aligning in one of them overflowed
    /// `u64`. The allocator is unchanged after an error.
    ///
    /// # Example
    /// ```
    /// let mut heap = gantry_host::alloc::FreeListAllocator::new(8192);
    /// let a = heap.allocate(10, 4096).unwrap();
    /// let b = heap.allocate(10, 4096).unwrap();
    /// assert_eq!((a.offset(), b.offset()), (0, 4096));
    /// ```
    pub fn allocate(&mut self, size: u64, align: u64) -> Result<Allocation, AllocError> {
        validate(size, align, self.capacity)?;
        let mut overflowed = false;
        let mut found = None;
        for &(block_size, block_offset) in self.free_by_size.range((size, 0)..) {
            match fit(block_offset, block_offset + block_size, size, align) {
                Fit::At(offset) => {
                    found = Some((block_offset, block_size, offset));
                    break;
                }
                Fit::No => {}
                Fit::Overflow => overflowed = true,
            }
        }
        let Some((block_offset, block_size, offset)) = found else {
            return Err(if overflowed {
                AllocError::Overflow {
                    size,
                    align,
                    capacity: self.capacity,
                }
            } else {
                AllocError::OutOfSpace {
                    size,
                    align,
                    capacity: self.capacity,
                    free: self.free_total,
                    largest_free: self.largest_free(),
                }
            });
        };
        self.remove_free(block_offset, block_size);
        self.insert_free(block_offset, offset - block_offset);
        self.insert_free(offset + size, block_offset + block_size - (offset + size));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live.insert(offset, (size, seq));
        self.stats.alloc(size);
        Ok(Allocation {
            offset,
            size,
            allocator: self.id,
            seq,
        })
    }

    /// Releases `allocation`, merging its range with free neighbours.
    ///
    /// # Errors
    /// [`FreeError::Foreign`] for a handle of another allocator; [`FreeError::NotLive`] for one
    /// made before a [`reset`](Self::reset). The allocator is unchanged after an error.
    ///
    /// # Example
    /// ```
    /// let mut heap = gantry_host::alloc::FreeListAllocator::new(100);
    /// let a = heap.allocate(10, 1).unwrap();
    /// heap.free(a).unwrap();
    /// assert_eq!(heap.used(), 0);
    /// ```
    pub fn free(&mut self, allocation: Allocation) -> Result<(), FreeError> {
        let Allocation {
            offset,
            size,
            allocator,
            seq,
        } = allocation;
        if allocator != self.id {
            return Err(FreeError::Foreign { offset, size });
        }
        match self.live.get(&offset) {
            Some(&(live_size, live_seq)) if live_seq == seq && live_size == size => {}
            _ => return Err(FreeError::NotLive { offset, size }),
        }
        self.live.remove(&offset);
        self.stats.dealloc(size);

        let mut start = offset;
        let mut end = offset + size;
        if let Some((&prev_offset, &prev_size)) = self.free_by_offset.range(..offset).next_back()
            && prev_offset + prev_size == offset
        {
            self.remove_free(prev_offset, prev_size);
            start = prev_offset;
        }
        if let Some(&next_size) = self.free_by_offset.get(&end) {
            self.remove_free(end, next_size);
            end += next_size;
        }
        self.insert_free(start, end - start);
        Ok(())
    }

    /// Releases every allocation at once; handles made before are refused afterwards with
    /// [`FreeError::NotLive`].
    ///
    /// # Example
    /// ```
    /// let mut heap = gantry_host::alloc::FreeListAllocator::new(100);
    /// let a = heap.allocate(10, 1).unwrap();
    /// heap.reset();
    /// assert!(heap.free(a).is_err());
    /// assert_eq!(heap.largest_free(), 100);
    /// ```
    pub fn reset(&mut self) {
        for (_, (size, _)) in std::mem::take(&mut self.live) {
            self.stats.dealloc(size);
        }
        self.free_by_offset.clear();
        self.free_by_size.clear();
        self.free_total = 0;
        self.insert_free(0, self.capacity);
    }

    /// Size of the managed range.
    ///
    /// # Example
    /// ```
    /// assert_eq!(gantry_host::alloc::FreeListAllocator::new(64).capacity(), 64);
    /// ```
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes inside live allocations.
    ///
    /// # Example
    /// ```
    /// let mut heap = gantry_host::alloc::FreeListAllocator::new(64);
    /// let _a = heap.allocate(10, 8).unwrap();
    /// assert_eq!(heap.used(), 10);
    /// ```
    pub fn used(&self) -> u64 {
        self.capacity - self.free_total
    }

    /// Bytes in free ranges (all bytes not in a live allocation).
    ///
    /// # Example
    /// ```
    /// let mut heap = gantry_host::alloc::FreeListAllocator::new(64);
    /// let _a = heap.allocate(10, 8).unwrap();
    /// assert_eq!(heap.free_bytes(), 54);
    /// ```
    pub fn free_bytes(&self) -> u64 {
        self.free_total
    }

    /// The largest free range.
    ///
    /// # Example
    /// ```
    /// let mut heap = gantry_host::alloc::FreeListAllocator::new(64);
    /// let _a = heap.allocate(10, 1).unwrap();
    /// assert_eq!(heap.largest_free(), 54);
    /// ```
    pub fn largest_free(&self) -> u64 {
        self.free_by_size.last().map_or(0, |&(size, _)| size)
    }

    /// `1 - largest_free / free`, 0 when nothing is free. See [`AllocatorReport::fragmentation`].
    ///
    /// # Example
    /// ```
    /// let heap = gantry_host::alloc::FreeListAllocator::new(64);
    /// assert_eq!(heap.fragmentation(), 0.0);
    /// ```
    pub fn fragmentation(&self) -> f64 {
        super::fragmentation(self.largest_free(), self.free_total)
    }

    /// Number of free ranges (1 for an empty allocator, more as free space splits).
    ///
    /// # Example
    /// ```
    /// let heap = gantry_host::alloc::FreeListAllocator::new(64);
    /// assert_eq!(heap.free_ranges(), 1);
    /// ```
    pub fn free_ranges(&self) -> usize {
        self.free_by_offset.len()
    }

    /// Number of live allocations.
    ///
    /// # Example
    /// ```
    /// let mut heap = gantry_host::alloc::FreeListAllocator::new(64);
    /// let _a = heap.allocate(10, 1).unwrap();
    /// assert_eq!(heap.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when no allocation is live.
    ///
    /// # Example
    /// ```
    /// assert!(gantry_host::alloc::FreeListAllocator::new(64).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Occupancy now (`wasted` is always 0: padding stays free).
    ///
    /// # Example
    /// ```
    /// let mut heap = gantry_host::alloc::FreeListAllocator::new(64);
    /// let _a = heap.allocate(1, 1).unwrap();
    /// let _b = heap.allocate(1, 8).unwrap();
    /// let r = heap.report();
    /// assert_eq!((r.used, r.wasted, r.free, r.largest_free), (2, 0, 62, 55));
    /// ```
    pub fn report(&self) -> AllocatorReport {
        AllocatorReport {
            capacity: self.capacity,
            used: self.used(),
            free: self.free_total,
            wasted: 0,
            largest_free: self.largest_free(),
            live_allocations: self.live.len() as u64,
        }
    }
}
