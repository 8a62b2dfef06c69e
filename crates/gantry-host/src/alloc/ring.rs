//! FIFO ring allocator over offsets.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{
    AllocError, Allocation, AllocatorReport, Fit, FreeError, Reporter, fit, next_allocator_id,
    validate,
};
use crate::BufferStats;

/// One live allocation, as the ring remembers it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    /// Where the space this entry took begins (before its alignment padding).
    start: u64,
    offset: u64,
    size: u64,
    /// This entry was placed at offset 0 because the tail of the range could not hold it.
    wrapped: bool,
}

/// A ring (circular) allocator: allocations are released in the order they were made (FIFO),
/// the way a streaming or staging ring is reclaimed frame by frame as the GPU finishes.
///
/// Allocations are placed after the newest one; when the end of the range cannot hold a
/// request, it wraps to offset 0 if the space before the oldest live allocation can. The bytes
/// skipped at the end are reported by [`wasted_at_wrap`](Self::wasted_at_wrap) until the
/// allocations before the wrap are released. When the last live allocation is released the
/// ring rewinds to offset 0, so an empty ring never carries wrap waste or a split free range.
///
/// # Example
/// ```
/// use gantry_host::alloc::RingAllocator;
///
/// let mut ring = RingAllocator::new(1000);
/// let a = ring.allocate(400, 1).unwrap();
/// let b = ring.allocate(400, 1).unwrap();
/// ring.free(a).unwrap(); // oldest first
/// // 200 bytes at the end are too few: the ring wraps to 0 and skips them.
/// let c = ring.allocate(300, 1).unwrap();
/// assert_eq!(c.offset(), 0);
/// assert_eq!(ring.wasted_at_wrap(), 200);
/// ring.free(b).unwrap();
/// assert_eq!(ring.wasted_at_wrap(), 0);
/// ring.free(c).unwrap();
/// assert_eq!(ring.free_bytes(), 1000);
/// ```
#[derive(Debug)]
pub struct RingAllocator {
    capacity: u64,
    /// End of the newest allocation: where the next one is tried first.
    head: u64,
    live: VecDeque<Entry>,
    used: u64,
    padding: u64,
    wasted_at_wrap: u64,
    next_seq: u64,
    id: u64,
    stats: Reporter,
}

impl RingAllocator {
    /// A ring over the offsets `0..capacity`.
    ///
    /// # Example
    /// ```
    /// let ring = gantry_host::alloc::RingAllocator::new(4096);
    /// assert_eq!(ring.capacity(), 4096);
    /// ```
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            head: 0,
            live: VecDeque::new(),
            used: 0,
            padding: 0,
            wasted_at_wrap: 0,
            next_seq: 0,
            id: next_allocator_id(),
            stats: Reporter::default(),
        }
    }

    /// Reports every allocation and release into `stats`.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use gantry_host::{BufferStats, alloc::RingAllocator};
    ///
    /// let stats = Arc::new(BufferStats::new());
    /// let mut ring = RingAllocator::new(4096).with_stats(stats.clone());
    /// let a = ring.allocate(100, 4).unwrap();
    /// assert_eq!(stats.snapshot().live_bytes, 100);
    /// ring.free(a).unwrap();
    /// assert_eq!(stats.snapshot().live_bytes, 0);
    /// ```
    pub fn with_stats(mut self, stats: Arc<BufferStats>) -> Self {
        self.stats = Reporter(Some(stats));
        self
    }

    /// Allocates `size` bytes aligned to `align` (a power of two).
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`], [`AllocError::InvalidAlignment`], [`AllocError::TooLarge`]
    /// for bad requests; [`AllocError::OutOfSpace`] when neither the space after the newest
    /// allocation nor the space before the oldest can hold it (release older allocations);
    /// [`AllocError::Overflow`] when the only candidate position overflows `u64`. The ring is
    /// unchanged after an error.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(1024);
    /// let a = ring.allocate(100, 64).unwrap();
    /// let b = ring.allocate(100, 64).unwrap();
    /// assert_eq!((a.offset(), b.offset()), (0, 128));
    /// assert!(ring.allocate(1000, 1).is_err());
    /// ```
    pub fn allocate(&mut self, size: u64, align: u64) -> Result<Allocation, AllocError> {
        validate(size, align, self.capacity)?;
        let (start, offset, wrapped) = self.place(size, align)?;
        let wrap_waste = if wrapped {
            self.capacity - self.head
        } else {
            0
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live.push_back(Entry {
            seq,
            start,
            offset,
            size,
            wrapped,
        });
        self.head = offset + size;
        self.used += size;
        self.padding += offset - start;
        self.wasted_at_wrap += wrap_waste;
        self.stats.alloc(size);
        Ok(Allocation {
            offset,
            size,
            allocator: self.id,
            seq,
        })
    }

    /// Resizes `allocation`, the newest live one, in place to `new_size` bytes: it shrinks
    /// (the bytes after its new end are free again), or it grows into the free space right
    /// after it, never wrapping. A staging ring packs a run of small regions into one
    /// allocation this way: one allocation grown per region and trimmed at the end, instead of
    /// an allocation (and a release) per region. Growth counts toward
    /// [`BufferStats`]' live and peak bytes, not as an allocation.
    ///
    /// # Errors
    /// [`AllocError::ZeroSize`] for `new_size` 0; [`AllocError::NotNewest`] for any handle
    /// but the newest live allocation of this ring; [`AllocError::OutOfSpace`] (with the
    /// growth as its size) when the free space right after it cannot hold the growth. The
    /// ring and the handle are unchanged after an error.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(1024);
    /// let _a = ring.allocate(100, 1).unwrap();
    /// let mut b = ring.allocate(100, 1).unwrap();
    /// ring.resize(&mut b, 900).unwrap(); // 100..1000
    /// assert_eq!((b.offset(), b.size(), ring.free_bytes()), (100, 900, 24));
    /// assert!(ring.resize(&mut b, 1000).is_err()); // would pass the end
    /// ring.resize(&mut b, 10).unwrap();
    /// assert_eq!(ring.allocate(20, 1).unwrap().offset(), 110);
    /// ```
    pub fn resize(&mut self, allocation: &mut Allocation, new_size: u64) -> Result<(), AllocError> {
        if new_size == 0 {
            return Err(AllocError::ZeroSize { align: 1 });
        }
        let newest = match self.live.back() {
            Some(n) if allocation.allocator == self.id && allocation.seq == n.seq => *n,
            _ => {
                return Err(AllocError::NotNewest {
                    offset: allocation.offset,
                });
            }
        };
        if new_size > newest.size {
            // The newest allocation ends at `head`: it grows into the free range after it.
            let grow = new_size - newest.size;
            let (after, _) = self.free_ranges();
            if grow > after {
                return Err(AllocError::OutOfSpace {
                    size: grow,
                    align: 1,
                    capacity: self.capacity,
                    free: self.free_bytes(),
                    largest_free: self.largest_free(),
                });
            }
            self.used += grow;
        } else {
            self.used -= newest.size - new_size;
        }
        if let Some(n) = self.live.back_mut() {
            n.size = new_size;
        }
        self.head = newest.offset + new_size;
        self.stats.resize(newest.size, new_size);
        allocation.size = new_size;
        Ok(())
    }

    /// Finds `(start, offset, wrapped)` for a request, without changing anything.
    fn place(&self, size: u64, align: u64) -> Result<(u64, u64, bool), AllocError> {
        let mut overflowed = false;
        let mut try_fit = |start, limit| match fit(start, limit, size, align) {
            Fit::At(offset) => Some(offset),
            Fit::No => None,
            Fit::Overflow => {
                overflowed = true;
                None
            }
        };
        let found = match self.live.front() {
            // Empty: the ring has rewound to 0.
            None => try_fit(0, self.capacity).map(|o| (0, o, false)),
            Some(oldest) if self.is_wrapped() => {
                try_fit(self.head, oldest.start).map(|o| (self.head, o, false))
            }
            Some(oldest) => try_fit(self.head, self.capacity)
                .map(|o| (self.head, o, false))
                .or_else(|| try_fit(0, oldest.start).map(|o| (0, o, true))),
        };
        found.ok_or_else(|| {
            if overflowed {
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
                    free: self.free_bytes(),
                    largest_free: self.largest_free(),
                }
            }
        })
    }

    /// True while the live allocations run past the end of the range and continue at 0.
    fn is_wrapped(&self) -> bool {
        match (self.live.front(), self.live.back()) {
            (Some(front), Some(back)) => back.start < front.start,
            _ => false,
        }
    }

    /// Releases `allocation`, which must be the oldest live one.
    ///
    /// # Errors
    /// [`FreeError::Foreign`] for a handle of another allocator, [`FreeError::NotLive`] for
    /// one made before a [`reset`](Self::reset), [`FreeError::OutOfOrder`] when older
    /// allocations are still live. The ring is unchanged after an error; the refused handle is
    /// dropped (it stays allocated until a reset, if it was live).
    ///
    /// # Example
    /// ```
    /// use gantry_host::alloc::{FreeError, RingAllocator};
    ///
    /// let mut ring = RingAllocator::new(1024);
    /// let a = ring.allocate(10, 1).unwrap();
    /// let b = ring.allocate(10, 1).unwrap();
    /// assert_eq!(ring.free(b), Err(FreeError::OutOfOrder { offset: 10, oldest_offset: 0 }));
    /// ring.free(a).unwrap();
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
        let Some(oldest) = self.live.front().copied() else {
            return Err(FreeError::NotLive { offset, size });
        };
        if seq < oldest.seq || seq >= oldest.seq + self.live.len() as u64 {
            return Err(FreeError::NotLive { offset, size });
        }
        if seq != oldest.seq {
            return Err(FreeError::OutOfOrder {
                offset,
                oldest_offset: oldest.offset,
            });
        }
        self.live.pop_front();
        self.used -= oldest.size;
        self.padding -= oldest.offset - oldest.start;
        self.stats.dealloc(oldest.size);
        match self.live.front() {
            None => self.rewind(),
            // The allocations before the wrap are all gone: the skipped tail is free again.
            Some(next) if next.wrapped => self.wasted_at_wrap = 0,
            Some(_) => {}
        }
        Ok(())
    }

    /// Releases every allocation at once; handles made before are refused afterwards with
    /// [`FreeError::NotLive`].
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(1024);
    /// let a = ring.allocate(1000, 1).unwrap();
    /// ring.reset();
    /// assert_eq!(ring.free_bytes(), 1024);
    /// assert!(ring.free(a).is_err());
    /// ```
    pub fn reset(&mut self) {
        for entry in self.live.drain(..) {
            self.stats.dealloc(entry.size);
        }
        self.used = 0;
        self.padding = 0;
        self.rewind();
    }

    fn rewind(&mut self) {
        self.head = 0;
        self.wasted_at_wrap = 0;
    }

    /// Size of the managed range.
    ///
    /// # Example
    /// ```
    /// assert_eq!(gantry_host::alloc::RingAllocator::new(64).capacity(), 64);
    /// ```
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes inside live allocations.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(64);
    /// let _a = ring.allocate(10, 1).unwrap();
    /// assert_eq!(ring.used(), 10);
    /// ```
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Bytes available to later allocations: the space after the newest allocation and the
    /// space before the oldest (not necessarily one range: see [`largest_free`](Self::largest_free)).
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(64);
    /// let _a = ring.allocate(10, 1).unwrap();
    /// assert_eq!(ring.free_bytes(), 54);
    /// ```
    pub fn free_bytes(&self) -> u64 {
        let (after, before) = self.free_ranges();
        after + before
    }

    /// Sizes of the free space after the newest allocation and before the oldest.
    fn free_ranges(&self) -> (u64, u64) {
        match self.live.front() {
            None => (self.capacity, 0),
            Some(oldest) if self.is_wrapped() => (oldest.start - self.head, 0),
            Some(oldest) => (self.capacity - self.head, oldest.start),
        }
    }

    /// The largest contiguous free range.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(100);
    /// let a = ring.allocate(30, 1).unwrap();
    /// let _b = ring.allocate(30, 1).unwrap();
    /// ring.free(a).unwrap();
    /// assert_eq!((ring.free_bytes(), ring.largest_free()), (70, 40));
    /// ```
    pub fn largest_free(&self) -> u64 {
        let (after, before) = self.free_ranges();
        after.max(before)
    }

    /// `1 - largest_free / free`, 0 when nothing is free. See [`AllocatorReport::fragmentation`].
    ///
    /// # Example
    /// ```
    /// let ring = gantry_host::alloc::RingAllocator::new(100);
    /// assert_eq!(ring.fragmentation(), 0.0);
    /// ```
    pub fn fragmentation(&self) -> f64 {
        super::fragmentation(self.largest_free(), self.free_bytes())
    }

    /// Bytes skipped at the end of the range when an allocation wrapped to offset 0; they are
    /// free again once every allocation made before the wrap is released.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(100);
    /// let a = ring.allocate(60, 1).unwrap();
    /// let _b = ring.allocate(30, 1).unwrap();
    /// ring.free(a).unwrap();
    /// let _c = ring.allocate(50, 1).unwrap(); // 10 bytes at the end are skipped
    /// assert_eq!(ring.wasted_at_wrap(), 10);
    /// ```
    pub fn wasted_at_wrap(&self) -> u64 {
        self.wasted_at_wrap
    }

    /// Number of live allocations.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(100);
    /// let _a = ring.allocate(60, 1).unwrap();
    /// assert_eq!(ring.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when no allocation is live.
    ///
    /// # Example
    /// ```
    /// assert!(gantry_host::alloc::RingAllocator::new(100).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Occupancy now; `wasted` is alignment padding plus [`wasted_at_wrap`](Self::wasted_at_wrap).
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(100);
    /// let _a = ring.allocate(10, 1).unwrap();
    /// let _b = ring.allocate(10, 16).unwrap(); // 6 bytes of padding
    /// let r = ring.report();
    /// assert_eq!((r.used, r.wasted, r.free), (20, 6, 74));
    /// ```
    pub fn report(&self) -> AllocatorReport {
        AllocatorReport {
            capacity: self.capacity,
            used: self.used,
            free: self.free_bytes(),
            wasted: self.padding + self.wasted_at_wrap,
            largest_free: self.largest_free(),
            live_allocations: self.live.len() as u64,
        }
    }
}
