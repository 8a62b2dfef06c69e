//! Allocation statistics (H10): allocations, deallocations, live bytes and peak bytes.

use core::sync::atomic::{AtomicU64, Ordering};

/// Allocation statistics kept with atomics, so any number of threads can report into one
/// `BufferStats` through `&self`.
///
/// The pool, the arena and the offset allocators of this crate report into it. Counters use
/// relaxed ordering: each is exact, but a snapshot taken while other threads record may mix
/// values from slightly different moments.
///
/// # Example
/// ```
/// use gantry_host::BufferStats;
///
/// let stats = BufferStats::new();
/// stats.record_alloc(4096);
/// stats.record_alloc(1024);
/// stats.record_dealloc(4096);
/// let s = stats.snapshot();
/// assert_eq!((s.allocations, s.deallocations), (2, 1));
/// assert_eq!((s.live_bytes, s.peak_bytes), (1024, 5120));
/// ```
#[derive(Debug, Default)]
pub struct BufferStats {
    allocations: AtomicU64,
    deallocations: AtomicU64,
    live_bytes: AtomicU64,
    peak_bytes: AtomicU64,
}

/// A copy of [`BufferStats`]' counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StatsSnapshot {
    /// Number of allocations recorded.
    pub allocations: u64,
    /// Number of deallocations recorded.
    pub deallocations: u64,
    /// Bytes allocated and not yet deallocated.
    pub live_bytes: u64,
    /// The highest `live_bytes` ever reached (since creation or the last [`BufferStats::reset_peak`]).
    pub peak_bytes: u64,
}

impl BufferStats {
    /// Empty statistics.
    pub const fn new() -> Self {
        Self {
            allocations: AtomicU64::new(0),
            deallocations: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
            peak_bytes: AtomicU64::new(0),
        }
    }

    /// Records an allocation of `bytes` bytes.
    #[inline]
    pub fn record_alloc(&self, bytes: u64) {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        let live = self
            .live_bytes
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes);
        self.peak_bytes.fetch_max(live, Ordering::Relaxed);
    }

    /// Records a deallocation of `bytes` bytes. Live bytes saturate at zero if more is
    /// released than was recorded, rather than wrapping.
    #[inline]
    pub fn record_dealloc(&self, bytes: u64) {
        self.deallocations.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .live_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                Some(live.saturating_sub(bytes))
            });
    }

    /// Records that a live allocation changed from `old` to `new` bytes in place (no
    /// allocation or deallocation is counted).
    ///
    /// # Example
    /// ```
    /// let stats = gantry_host::BufferStats::new();
    /// stats.record_alloc(100);
    /// stats.record_resize(100, 300);
    /// stats.record_resize(300, 50);
    /// let s = stats.snapshot();
    /// assert_eq!((s.allocations, s.live_bytes, s.peak_bytes), (1, 50, 300));
    /// ```
    #[inline]
    pub fn record_resize(&self, old: u64, new: u64) {
        if new >= old {
            let grown = new - old;
            let live = self
                .live_bytes
                .fetch_add(grown, Ordering::Relaxed)
                .saturating_add(grown);
            self.peak_bytes.fetch_max(live, Ordering::Relaxed);
        } else {
            let shrunk = old - new;
            let _ = self
                .live_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                    Some(live.saturating_sub(shrunk))
                });
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            allocations: self.allocations.load(Ordering::Relaxed),
            deallocations: self.deallocations.load(Ordering::Relaxed),
            live_bytes: self.live_bytes.load(Ordering::Relaxed),
            peak_bytes: self.peak_bytes.load(Ordering::Relaxed),
        }
    }

    /// Sets the peak to the current live bytes, to measure the peak of a new phase.
    pub fn reset_peak(&self) {
        self.peak_bytes
            .store(self.live_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl StatsSnapshot {
    /// Allocations not yet matched by a deallocation.
    pub fn outstanding(&self) -> u64 {
        self.allocations.saturating_sub(self.deallocations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_are_exact() {
        let stats = BufferStats::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        stats.record_alloc(8);
                        stats.record_dealloc(8);
                    }
                });
            }
        });
        let s = stats.snapshot();
        assert_eq!(s.allocations, 4000);
        assert_eq!(s.deallocations, 4000);
        assert_eq!(s.live_bytes, 0);
        assert!(s.peak_bytes >= 8 && s.peak_bytes <= 32, "{s:?}");
        assert_eq!(s.outstanding(), 0);
    }

    #[test]
    fn over_release_saturates() {
        let stats = BufferStats::new();
        stats.record_alloc(4);
        stats.record_dealloc(10);
        assert_eq!(stats.snapshot().live_bytes, 0);
        stats.reset_peak();
        assert_eq!(stats.snapshot().peak_bytes, 0);
    }
}
