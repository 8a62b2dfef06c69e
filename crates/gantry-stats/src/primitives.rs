//! Lock-free recording primitives: [`Counter`], [`Gauge`] and [`Histogram`].
//!
//! Every primitive records through `&self` with relaxed atomics and never takes a lock. Each
//! value is exact on its own; a snapshot taken while other threads record may mix values from
//! slightly different moments (for example a histogram's `sum` may already include a value
//! whose bucket is not yet counted).

use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Keeps its contents on a cache line (pair) of their own, so two hot values updated by
/// different threads do not slow each other down (false sharing).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// A monotonically increasing event counter.
///
/// # Example
/// ```
/// use gantry_stats::Counter;
///
/// let c = Counter::new();
/// c.inc();
/// c.add(41);
/// assert_eq!(c.get(), 42);
/// c.reset();
/// assert_eq!(c.get(), 0);
/// ```
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n` (wrapping on overflow, after 2^64 events).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the counter back to zero.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// A value that goes up and down (live bytes, live buffers), with the highest value it reached.
///
/// The value is signed so that a release recorded before its matching acquire (possible when
/// two threads race) shows as a small negative number instead of wrapping to 2^64.
///
/// # Example
/// ```
/// use gantry_stats::Gauge;
///
/// let g = Gauge::new();
/// g.add(100);
/// g.add(50);
/// g.sub(120);
/// assert_eq!(g.get(), 30);
/// assert_eq!(g.peak(), 150);
/// g.reset_peak();
/// assert_eq!(g.peak(), 30);
/// ```
#[derive(Debug)]
pub struct Gauge {
    value: AtomicI64,
    peak: AtomicI64,
}

impl Default for Gauge {
    fn default() -> Self {
        Self::new()
    }
}

impl Gauge {
    /// A gauge at zero with a peak of zero.
    pub const fn new() -> Self {
        Self {
            value: AtomicI64::new(0),
            peak: AtomicI64::new(0),
        }
    }

    /// Adds `n` and raises the peak if the new value exceeds it.
    #[inline]
    pub fn add(&self, n: i64) {
        let now = self.value.fetch_add(n, Ordering::Relaxed).wrapping_add(n);
        // A load first: once the peak is established, the common case is a plain read.
        if now > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Subtracts `n`.
    #[inline]
    pub fn sub(&self, n: i64) {
        self.value.fetch_sub(n, Ordering::Relaxed);
    }

    /// Sets the value (and raises the peak if needed).
    #[inline]
    pub fn set(&self, v: i64) {
        self.value.store(v, Ordering::Relaxed);
        self.peak.fetch_max(v, Ordering::Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }

    /// The highest value reached since creation or the last [`reset_peak`](Self::reset_peak).
    #[inline]
    pub fn peak(&self) -> i64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Sets the peak to the current value, to measure the peak of a new phase.
    pub fn reset_peak(&self) {
        self.peak.store(self.get(), Ordering::Relaxed);
    }

    /// Sets value and peak back to zero.
    pub fn reset(&self) {
        self.value.store(0, Ordering::Relaxed);
        self.peak.store(0, Ordering::Relaxed);
    }
}

/// Sub-buckets per power of two, as a number of bits: 16 linear sub-buckets.
const SUB_BITS: u32 = 4;
const SUB_COUNT: u64 = 1 << SUB_BITS;
/// Number of buckets needed to cover every `u64`: values below 32 have a bucket each, then
/// 16 buckets for each of the 59 powers of two from 2^5 to 2^64.
pub(crate) const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) * SUB_COUNT as usize;

/// The bucket a value falls in. Values below 32 are exact; above, a bucket spans 1/16 to 1/32
/// of its lower bound.
#[inline]
pub(crate) fn bucket_index(v: u64) -> usize {
    if v < 2 * SUB_COUNT {
        v as usize
    } else {
        // msb >= 5, so `shift >= 1` and `v >> shift` lies in [16, 32).
        let msb = 63 - v.leading_zeros();
        let shift = msb - SUB_BITS;
        (shift as usize) * SUB_COUNT as usize + (v >> shift) as usize
    }
}

/// The smallest value and the width of bucket `index`.
#[inline]
pub(crate) fn bucket_bounds(index: usize) -> (u64, u64) {
    let sub = SUB_COUNT as usize;
    if index < 2 * sub {
        (index as u64, 1)
    } else {
        let shift = (index / sub - 1) as u32;
        let mantissa = (index % sub + sub) as u64;
        (mantissa << shift, 1 << shift)
    }
}

/// A log-bucketed histogram of `u64` values (nanoseconds, bytes), lock-free.
///
/// Values are counted in buckets laid out like an HDR histogram: every value below 32 has its
/// own bucket, and each power of two above is split into 16 linear sub-buckets. A bucket is
/// therefore at most 1/16 (6.25 %) as wide as its lower bound, which bounds the error of any
/// quantile; count, sum, min, max and the mean are exact. The whole `u64` range fits in
/// 976 buckets (7.6 KiB).
///
/// Recording costs two relaxed `fetch_add`s (the bucket and the sum) and two relaxed loads
/// (min and max, which are only written when a new extreme arrives); no lock, no allocation.
/// The sum wraps after 2^64 (584 years of nanoseconds, 16 EiB of bytes).
///
/// # Example
/// ```
/// use gantry_stats::Histogram;
///
/// let h = Histogram::new();
/// for v in 1..=100 {
///     h.record(v);
/// }
/// let s = h.snapshot();
/// assert_eq!((s.count(), s.sum(), s.min(), s.max()), (100, 5050, Some(1), Some(100)));
/// assert_eq!(s.mean(), Some(50.5)); // floating point, not integer division
/// let p50 = s.quantile(0.5).unwrap();
/// assert!((47..=53).contains(&p50), "{p50}");
/// ```
#[derive(Debug)]
pub struct Histogram {
    header: Padded<HistogramHeader>,
    buckets: Box<[AtomicU64]>,
}

#[derive(Debug)]
struct HistogramHeader {
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            header: Padded(HistogramHeader {
                sum: AtomicU64::new(0),
                min: AtomicU64::new(u64::MAX),
                max: AtomicU64::new(0),
            }),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records one value.
    #[inline]
    pub fn record(&self, v: u64) {
        self.buckets[bucket_index(v)].fetch_add(1, Ordering::Relaxed);
        let h = &self.header.0;
        h.sum.fetch_add(v, Ordering::Relaxed);
        if v < h.min.load(Ordering::Relaxed) {
            h.min.fetch_min(v, Ordering::Relaxed);
        }
        if v > h.max.load(Ordering::Relaxed) {
            h.max.fetch_max(v, Ordering::Relaxed);
        }
    }

    /// Records a duration in nanoseconds (saturating at `u64::MAX`, 584 years).
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Number of values recorded (sums the buckets: use a snapshot for repeated reads).
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Copies the histogram's state.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(u32, u64)> = self
            .buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let n = b.load(Ordering::Relaxed);
                (n > 0).then_some((i as u32, n))
            })
            .collect();
        let h = &self.header.0;
        let count = buckets.iter().map(|&(_, n)| n).sum::<u64>();
        let (min, max) = match (buckets.first(), buckets.last()) {
            (Some(&(first, _)), Some(&(last, _))) => {
                // Under concurrent recording a counted value may not have reached min/max yet
                // (or a reset may race): clamp both into their buckets, so a snapshot never
                // contradicts itself. Without concurrency both are exact.
                let (lo, lo_width) = bucket_bounds(first as usize);
                let (hi, hi_width) = bucket_bounds(last as usize);
                let min = h.min.load(Ordering::Relaxed);
                let max = h.max.load(Ordering::Relaxed);
                (
                    Some(min.clamp(lo, lo + (lo_width - 1))),
                    Some(max.clamp(hi, hi + (hi_width - 1))),
                )
            }
            _ => (None, None),
        };
        HistogramSnapshot {
            count,
            sum: h.sum.load(Ordering::Relaxed),
            min,
            max,
            buckets,
        }
    }

    /// Empties the histogram. Values recorded by other threads during the reset may be kept in
    /// part (for example in the sum but not in a bucket).
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        let h = &self.header.0;
        h.sum.store(0, Ordering::Relaxed);
        h.min.store(u64::MAX, Ordering::Relaxed);
        h.max.store(0, Ordering::Relaxed);
    }
}

/// A copy of a [`Histogram`] at one moment: the non-empty buckets and the exact aggregates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    count: u64,
    sum: u64,
    min: Option<u64>,
    max: Option<u64>,
    /// `(bucket index, count)` for every non-empty bucket, by increasing index.
    buckets: Vec<(u32, u64)>,
}

impl HistogramSnapshot {
    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the values (wrapping after 2^64).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Smallest value, `None` when empty.
    pub fn min(&self) -> Option<u64> {
        self.min
    }

    /// Largest value, `None` when empty.
    pub fn max(&self) -> Option<u64> {
        self.max
    }

    /// The mean in floating point, `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The `q` quantile (`0.0..=1.0`, clamped), `None` when empty.
    ///
    /// Uses the nearest-rank definition: the value of rank `max(1, ceil(q * count))` in sorted
    /// order. The answer is the middle of the bucket that holds that value, clamped to
    /// `[min, max]`, so it lies in the same bucket as the exact answer: within 1/16 of it.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        let mut index = self.buckets[self.buckets.len() - 1].0;
        for &(i, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                index = i;
                break;
            }
        }
        let (start, width) = bucket_bounds(index as usize);
        let mid = start + (width - 1) / 2;
        let lo = self.min.unwrap_or(0);
        let hi = self.max.unwrap_or(u64::MAX);
        Some(mid.clamp(lo.min(hi), hi))
    }

    /// Median.
    pub fn p50(&self) -> Option<u64> {
        self.quantile(0.5)
    }

    /// 90th percentile.
    pub fn p90(&self) -> Option<u64> {
        self.quantile(0.9)
    }

    /// 99th percentile.
    pub fn p99(&self) -> Option<u64> {
        self.quantile(0.99)
    }

    /// Adds another snapshot's values to this one (e.g. to combine per-thread histograms).
    ///
    /// # Example
    /// ```
    /// use gantry_stats::Histogram;
    ///
    /// let (a, b) = (Histogram::new(), Histogram::new());
    /// a.record(10);
    /// b.record(1_000);
    /// b.record(3_000);
    /// let mut all = a.snapshot();
    /// all.merge(&b.snapshot());
    /// assert_eq!((all.count(), all.min(), all.max()), (3, Some(10), Some(3_000)));
    /// assert!((all.p50().unwrap() as f64 - 1_000.0).abs() <= 1_000.0 / 16.0);
    /// ```
    pub fn merge(&mut self, other: &Self) {
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(i, n)), Some(&&(j, m))) => {
                    if i == j {
                        merged.push((i, n + m));
                        a.next();
                        b.next();
                    } else if i < j {
                        merged.push((i, n));
                        a.next();
                    } else {
                        merged.push((j, m));
                        b.next();
                    }
                }
                (Some(&&x), None) => {
                    merged.push(x);
                    a.next();
                }
                (None, Some(&&y)) => {
                    merged.push(y);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.buckets = merged;
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
        self.min = match (self.min, other.min) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        self.max = self.max.max(other.max);
    }

    /// The summary a report shows: count, sum, min, max, mean, p50, p90, p99.
    pub fn summary(&self) -> HistogramSummary {
        HistogramSummary {
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            mean: self.mean(),
            p50: self.p50(),
            p90: self.p90(),
            p99: self.p99(),
        }
    }
}

/// The figures of a histogram that a report shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramSummary {
    /// Number of values.
    pub count: u64,
    /// Sum of the values.
    pub sum: u64,
    /// Smallest value.
    pub min: Option<u64>,
    /// Largest value.
    pub max: Option<u64>,
    /// Mean, in floating point.
    pub mean: Option<f64>,
    /// Median (within 1/16).
    pub p50: Option<u64>,
    /// 90th percentile (within 1/16).
    pub p90: Option<u64>,
    /// 99th percentile (within 1/16).
    pub p99: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_layout_is_contiguous_and_covers_u64() {
        let mut expected_start = 0u64;
        for i in 0..BUCKETS {
            let (start, width) = bucket_bounds(i);
            assert_eq!(start, expected_start, "bucket {i}");
            assert_eq!(bucket_index(start), i);
            assert_eq!(bucket_index(start + (width - 1)), i);
            if i >= 32 {
                assert!(width * SUB_COUNT <= start, "bucket {i} too wide");
            }
            expected_start = start.wrapping_add(width);
        }
        assert_eq!(expected_start, 0, "the last bucket ends at u64::MAX");
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn empty_histogram() {
        let s = Histogram::new().snapshot();
        assert_eq!(s.count(), 0);
        assert_eq!(
            (s.min(), s.max(), s.mean(), s.p99()),
            (None, None, None, None)
        );
    }

    #[test]
    fn reset_empties() {
        let h = Histogram::new();
        h.record(7);
        h.record(u64::MAX);
        h.reset();
        assert_eq!(h.snapshot(), HistogramSnapshot::default());
        h.record(3);
        assert_eq!(h.snapshot().min(), Some(3));
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = Histogram::new();
        let threads = 8u64;
        let per = 20_000u64;
        std::thread::scope(|s| {
            for t in 0..threads {
                let h = &h;
                s.spawn(move || {
                    for i in 0..per {
                        h.record(t * per + i);
                    }
                });
            }
        });
        let s = h.snapshot();
        let n = threads * per;
        assert_eq!(s.count(), n);
        assert_eq!(s.sum(), n * (n - 1) / 2);
        assert_eq!((s.min(), s.max()), (Some(0), Some(n - 1)));
    }

    #[test]
    fn counters_and_gauges_are_exact_under_contention() {
        let c = Counter::new();
        let g = Gauge::new();
        let threads = 16;
        let per = 50_000;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..per {
                        c.inc();
                        g.add(3);
                        g.sub(2);
                    }
                });
            }
        });
        assert_eq!(c.get(), threads * per);
        assert_eq!(g.get(), (threads * per) as i64);
        // Each thread is at most 2 above its net contribution at any moment.
        assert!(g.peak() >= g.get() && g.peak() <= g.get() + 2 * threads as i64);
    }

    fn samples() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(
            prop_oneof![
                0u64..64,
                0u64..100_000,
                1_000u64..10_000_000_000,
                any::<u64>(),
            ],
            1..400,
        )
    }

    proptest! {
        #[test]
        fn quantiles_match_an_exact_sort(values in samples(), qs in prop::collection::vec(0.0f64..=1.0, 1..8)) {
            let h = Histogram::new();
            for &v in &values {
                h.record(v);
            }
            let s = h.snapshot();
            let mut sorted = values.clone();
            sorted.sort_unstable();
            prop_assert_eq!(s.count(), values.len() as u64);
            prop_assert_eq!(s.min(), sorted.first().copied());
            prop_assert_eq!(s.max(), sorted.last().copied());
            let exact_sum = values.iter().fold(0u64, |a, &v| a.wrapping_add(v));
            prop_assert_eq!(s.sum(), exact_sum);
            for q in qs.into_iter().chain([0.0, 0.5, 0.9, 0.99, 1.0]) {
                let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
                let exact = sorted[rank - 1];
                let estimate = s.quantile(q).unwrap();
                // Same bucket, hence within one bucket's relative error (1/16).
                prop_assert_eq!(bucket_index(estimate), bucket_index(exact), "q={} exact={} estimate={}", q, exact, estimate);
                let err = estimate.abs_diff(exact) as f64;
                prop_assert!(err <= exact as f64 / 16.0, "q={} exact={} estimate={}", q, exact, estimate);
            }
        }

        #[test]
        fn merge_equals_recording_everything(a in samples(), b in samples()) {
            let (ha, hb, hall) = (Histogram::new(), Histogram::new(), Histogram::new());
            for &v in &a { ha.record(v); hall.record(v); }
            for &v in &b { hb.record(v); hall.record(v); }
            let mut merged = ha.snapshot();
            merged.merge(&hb.snapshot());
            prop_assert_eq!(merged, hall.snapshot());
        }
    }
}
