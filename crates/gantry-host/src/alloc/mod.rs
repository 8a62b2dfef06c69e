//! Offset allocators (H11): ring, bump and free-list sub-allocation over a range of memory
//! that the allocator does **not** own.
//!
//! Each allocator manages the offsets `0..capacity` of some memory held elsewhere: a host
//! buffer, a mapped staging buffer, a GPU buffer. It hands out [`Allocation`] handles that name
//! an `offset` and a `size`; what lives at those offsets is the caller's business. The code is
//! pure arithmetic over `u64` with no `unsafe`, so it runs, and is tested, on the CPU alone.
//!
//! | allocator | frees | use |
//! | --- | --- | --- |
//! | [`RingAllocator`] | in allocation order (FIFO) | per-frame streaming, staging rings |
//! | [`BumpAllocator`] | all at once ([`BumpAllocator::reset`]) | transient per-frame data |
//! | [`FreeListAllocator`] | any order, neighbours coalesce | long-lived sub-allocations |
//!
//! Every byte of `0..capacity` is, at every moment, in exactly one of three states, reported
//! by [`AllocatorReport`]: *used* (inside a live allocation), *free* (available to a later
//! allocation) or *wasted* (alignment padding, or bytes the ring skipped at its wrap; these come
//! back when the allocations that caused them are released). So
//! `used + free + wasted == capacity` always holds.
//!
//! Bad input (zero size, an alignment that is not a power of two, a request larger than the
//! capacity, offsets that would overflow `u64`) returns an [`AllocError`] carrying the
//! values, never panics, and leaves the allocator unchanged. Releasing a handle that another
//! allocator made, or one made before a `reset`, returns a [`FreeError`].
//!
//! # Example
//! ```
//! use gantry_host::alloc::FreeListAllocator;
//!
//! // Sub-allocate a 64 KiB buffer (host or GPU) by offset.
//! let mut heap = FreeListAllocator::new(64 * 1024);
//! let a = heap.allocate(1000, 256).unwrap();
//! let b = heap.allocate(4096, 4096).unwrap();
//! assert_eq!(a.offset() % 256, 0);
//! assert_eq!(b.offset() % 4096, 0);
//! heap.free(a).unwrap();
//! heap.free(b).unwrap();
//! assert_eq!(heap.used(), 0);
//! assert_eq!(heap.largest_free(), 64 * 1024);
//! ```
#![deny(unsafe_code)]

mod bump;
mod free_list;
mod ring;
#[cfg(test)]
mod tests;

pub use bump::BumpAllocator;
pub use free_list::FreeListAllocator;
pub use ring::RingAllocator;

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// A live sub-allocation: `size` bytes at `offset` in the range an allocator manages.
///
/// A handle is neither `Clone` nor `Copy`: it is released by value (`free(allocation)`), so
/// the compiler already refuses most double frees. Handles also carry the identity of the
/// allocator that made them and a sequence number, so a handle given to another allocator, or
/// kept across a `reset`, is refused with a [`FreeError`] rather than corrupting the allocator.
///
/// # Example
/// ```
/// use gantry_host::alloc::BumpAllocator;
///
/// let mut bump = BumpAllocator::new(1024);
/// let a = bump.allocate(100, 64).unwrap();
/// assert_eq!((a.offset(), a.size(), a.end()), (0, 100, 100));
/// assert_eq!(a.range(), 0..100);
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
#[must_use = "an allocation that is dropped without being freed stays allocated"]
pub struct Allocation {
    offset: u64,
    size: u64,
    allocator: u64,
    seq: u64,
}

impl Allocation {
    /// First byte of the allocation, aligned as requested.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(1024);
    /// let _a = ring.allocate(10, 1).unwrap();
    /// let b = ring.allocate(10, 256).unwrap();
    /// assert_eq!(b.offset(), 256);
    /// ```
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Size in bytes, exactly as requested.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(1024);
    /// assert_eq!(ring.allocate(10, 8).unwrap().size(), 10);
    /// ```
    pub fn size(&self) -> u64 {
        self.size
    }

    /// One past the last byte: `offset + size` (never overflows: it is at most the capacity).
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(1024);
    /// assert_eq!(ring.allocate(10, 8).unwrap().end(), 10);
    /// ```
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }

    /// The byte range `offset..offset + size`.
    ///
    /// # Example
    /// ```
    /// let mut ring = gantry_host::alloc::RingAllocator::new(1024);
    /// assert_eq!(ring.allocate(10, 8).unwrap().range(), 0..10);
    /// ```
    pub fn range(&self) -> core::ops::Range<u64> {
        self.offset..self.end()
    }
}

/// Why an allocation request was refused. The allocator is unchanged afterwards.
///
/// # Example
/// ```
/// use gantry_host::alloc::{AllocError, RingAllocator};
///
/// let mut ring = RingAllocator::new(1024);
/// assert_eq!(ring.allocate(0, 8), Err(AllocError::ZeroSize { align: 8 }));
/// assert_eq!(ring.allocate(8, 3), Err(AllocError::InvalidAlignment { size: 8, align: 3 }));
/// assert_eq!(
///     ring.allocate(2048, 8),
///     Err(AllocError::TooLarge { size: 2048, align: 8, capacity: 1024 })
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// A size of zero was requested; allocations must cover at least one byte.
    #[error("allocation size must be at least 1 byte (alignment {align})")]
    ZeroSize {
        /// Requested alignment.
        align: u64,
    },
    /// The alignment is not a power of two.
    #[error("alignment {align} is not a power of two (size {size})")]
    InvalidAlignment {
        /// Requested size.
        size: u64,
        /// Requested alignment.
        align: u64,
    },
    /// The request can never fit: it is larger than the whole range.
    #[error("request of {size} bytes (alignment {align}) exceeds the capacity of {capacity} bytes")]
    TooLarge {
        /// Requested size.
        size: u64,
        /// Requested alignment.
        align: u64,
        /// Capacity of the allocator.
        capacity: u64,
    },
    /// Aligning the request at the only candidate position overflows `u64`.
    #[error(
        "aligning {size} bytes to {align} overflows u64 within the capacity of {capacity} bytes"
    )]
    Overflow {
        /// Requested size.
        size: u64,
        /// Requested alignment.
        align: u64,
        /// Capacity of the allocator.
        capacity: u64,
    },
    /// The request fits the capacity but not the space free now (release allocations, or reset).
    #[error(
        "out of space: {size} bytes aligned to {align} do not fit; {free} of {capacity} bytes free, largest free range {largest_free} bytes"
    )]
    OutOfSpace {
        /// Requested size.
        size: u64,
        /// Requested alignment.
        align: u64,
        /// Capacity of the allocator.
        capacity: u64,
        /// Free bytes at the time of the request.
        free: u64,
        /// Largest free contiguous range at the time of the request.
        largest_free: u64,
    },
    /// Only the newest live allocation of a ring can be resized in place
    /// ([`RingAllocator::resize`]); this handle is an older one, a stale one or another
    /// allocator's.
    #[error("allocation at offset {offset} is not the ring's newest live allocation")]
    NotNewest {
        /// Offset of the refused handle.
        offset: u64,
    },
}

/// Why releasing an [`Allocation`] was refused. The allocator is unchanged afterwards.
///
/// # Example
/// ```
/// use gantry_host::alloc::{FreeError, FreeListAllocator};
///
/// let mut a = FreeListAllocator::new(1024);
/// let mut b = FreeListAllocator::new(1024);
/// let x = a.allocate(16, 16).unwrap();
/// assert!(matches!(b.free(x), Err(FreeError::Foreign { .. })));
/// ```
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FreeError {
    /// The handle was made by a different allocator.
    #[error("allocation at offset {offset} ({size} bytes) belongs to another allocator")]
    Foreign {
        /// Offset of the refused handle.
        offset: u64,
        /// Size of the refused handle.
        size: u64,
    },
    /// The handle is no longer live: it was made before a `reset` (or already released).
    #[error(
        "allocation at offset {offset} ({size} bytes) is not live (released, or made before a reset)"
    )]
    NotLive {
        /// Offset of the refused handle.
        offset: u64,
        /// Size of the refused handle.
        size: u64,
    },
    /// A ring allocation was released before older ones: rings release in allocation order.
    #[error(
        "ring allocations are released oldest first: offset {offset} released before the oldest live allocation at offset {oldest_offset}"
    )]
    OutOfOrder {
        /// Offset of the refused handle.
        offset: u64,
        /// Offset of the oldest live allocation, the only one that may be released now.
        oldest_offset: u64,
    },
}

/// Occupancy of an offset allocator at one moment.
///
/// `used + free + wasted == capacity` always holds.
///
/// # Example
/// ```
/// use gantry_host::alloc::FreeListAllocator;
///
/// let mut heap = FreeListAllocator::new(1000);
/// let _a = heap.allocate(100, 1).unwrap();
/// let r = heap.report();
/// assert_eq!((r.capacity, r.used, r.free, r.wasted), (1000, 100, 900, 0));
/// assert_eq!(r.live_allocations, 1);
/// assert_eq!(r.fragmentation(), 0.0);
/// println!("{r}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AllocatorReport {
    /// Size of the managed range, in bytes.
    pub capacity: u64,
    /// Bytes inside live allocations.
    pub used: u64,
    /// Bytes available to later allocations.
    pub free: u64,
    /// Bytes neither used nor free: alignment padding a bump or ring allocator cannot reuse,
    /// and bytes a ring skipped at its wrap. They come back when the allocations that caused
    /// them are released (or on reset).
    pub wasted: u64,
    /// The largest contiguous free range, in bytes.
    pub largest_free: u64,
    /// Number of live allocations.
    pub live_allocations: u64,
}

impl AllocatorReport {
    /// `1 - largest_free / free`: 0 when all free space is one range (or nothing is free),
    /// approaching 1 as free space splits into many small ranges.
    ///
    /// # Example
    /// ```
    /// use gantry_host::alloc::AllocatorReport;
    ///
    /// let r = AllocatorReport { capacity: 100, free: 40, largest_free: 10, ..Default::default() };
    /// assert_eq!(r.fragmentation(), 0.75);
    /// ```
    pub fn fragmentation(&self) -> f64 {
        fragmentation(self.largest_free, self.free)
    }
}

impl fmt::Display for AllocatorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} live allocations: {} B used, {} B free (largest {} B, fragmentation {:.1}%), {} B wasted, of {} B",
            self.live_allocations,
            self.used,
            self.free,
            self.largest_free,
            self.fragmentation() * 100.0,
            self.wasted,
            self.capacity
        )
    }
}

pub(crate) fn fragmentation(largest_free: u64, free: u64) -> f64 {
    if free == 0 {
        0.0
    } else {
        1.0 - largest_free as f64 / free as f64
    }
}

/// A unique identity for each allocator, so handles from another allocator are recognised.
fn next_allocator_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Checks the parts of a request that do not depend on the allocator's state.
fn validate(size: u64, align: u64, capacity: u64) -> Result<(), AllocError> {
    if size == 0 {
        return Err(AllocError::ZeroSize { align });
    }
    if !align.is_power_of_two() {
        return Err(AllocError::InvalidAlignment { size, align });
    }
    if size > capacity {
        return Err(AllocError::TooLarge {
            size,
            align,
            capacity,
        });
    }
    Ok(())
}

/// Where a request lands inside `start..limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// At this (aligned) offset.
    At(u64),
    /// It does not fit.
    No,
    /// Aligning `start` or adding `size` overflows `u64`.
    Overflow,
}

/// Places `size` bytes aligned to `align` (a power of two) at the lowest offset `>= start`
/// that ends at or before `limit`.
fn fit(start: u64, limit: u64, size: u64, align: u64) -> Fit {
    let Some(aligned) = start.checked_next_multiple_of(align) else {
        return Fit::Overflow;
    };
    match aligned.checked_add(size) {
        None => Fit::Overflow,
        Some(end) if end <= limit => Fit::At(aligned),
        Some(_) => Fit::No,
    }
}

/// Statistics reporting shared by the three allocators.
#[derive(Debug, Clone, Default)]
struct Reporter(Option<std::sync::Arc<crate::BufferStats>>);

impl Reporter {
    #[inline]
    fn alloc(&self, bytes: u64) {
        if let Some(stats) = &self.0 {
            stats.record_alloc(bytes);
        }
    }

    #[inline]
    fn dealloc(&self, bytes: u64) {
        if let Some(stats) = &self.0 {
            stats.record_dealloc(bytes);
        }
    }

    #[inline]
    fn resize(&self, old: u64, new: u64) {
        if let Some(stats) = &self.0 {
            stats.record_resize(old, new);
        }
    }
}
