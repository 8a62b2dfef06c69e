//! Buffer event statistics (S1, S2): creations, mappings, copies and transfers, the size-class
//! histogram and memory by location.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::primitives::{Counter, Gauge, Histogram, HistogramSnapshot, Padded};
use crate::report::{MetricValue, ProviderSnapshot, StatisticsProvider, Unit};

/// Where a buffer's memory lives (gantry-stats' own copy of the core crate's memory location,
/// so that this crate depends on no GPU layer).
///
/// # Example
/// ```
/// use gantry_stats::LocationKind;
///
/// assert_eq!(LocationKind::ALL.map(LocationKind::name), ["device_local", "upload", "readback"]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    /// Device-local memory, not mappable (or not mapped) by the host.
    DeviceLocal,
    /// Host-visible memory the host writes and the device reads.
    Upload,
    /// Host-visible memory the device writes and the host reads.
    Readback,
}

impl LocationKind {
    /// Every location, in index order.
    pub const ALL: [LocationKind; 3] = [
        LocationKind::DeviceLocal,
        LocationKind::Upload,
        LocationKind::Readback,
    ];

    /// A short name for reports: `device_local`, `upload`, `readback`.
    pub fn name(self) -> &'static str {
        match self {
            LocationKind::DeviceLocal => "device_local",
            LocationKind::Upload => "upload",
            LocationKind::Readback => "readback",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The size classes of the size histogram: up to 1 KiB, 64 KiB, 1 MiB, 16 MiB, and larger.
///
/// # Example
/// ```
/// use gantry_stats::SizeClass;
///
/// assert_eq!(SizeClass::of(1024), SizeClass::UpTo1KiB);
/// assert_eq!(SizeClass::of(1025), SizeClass::UpTo64KiB);
/// assert_eq!(SizeClass::of(16 << 20), SizeClass::UpTo16MiB);
/// assert_eq!(SizeClass::of((16 << 20) + 1), SizeClass::Larger);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeClass {
    /// `size <= 1 KiB`.
    UpTo1KiB,
    /// `1 KiB < size <= 64 KiB`.
    UpTo64KiB,
    /// `64 KiB < size <= 1 MiB`.
    UpTo1MiB,
    /// `1 MiB < size <= 16 MiB`.
    UpTo16MiB,
    /// `size > 16 MiB`.
    Larger,
}

impl SizeClass {
    /// Every class, smallest first.
    pub const ALL: [SizeClass; 5] = [
        SizeClass::UpTo1KiB,
        SizeClass::UpTo64KiB,
        SizeClass::UpTo1MiB,
        SizeClass::UpTo16MiB,
        SizeClass::Larger,
    ];

    /// The class of a buffer of `size` bytes.
    #[inline]
    pub fn of(size: u64) -> Self {
        match size {
            0..=1024 => SizeClass::UpTo1KiB,
            1025..=65_536 => SizeClass::UpTo64KiB,
            65_537..=1_048_576 => SizeClass::UpTo1MiB,
            1_048_577..=16_777_216 => SizeClass::UpTo16MiB,
            _ => SizeClass::Larger,
        }
    }

    /// A short name for reports, e.g. `<=64KiB`.
    pub fn name(self) -> &'static str {
        match self {
            SizeClass::UpTo1KiB => "<=1KiB",
            SizeClass::UpTo64KiB => "<=64KiB",
            SizeClass::UpTo1MiB => "<=1MiB",
            SizeClass::UpTo16MiB => "<=16MiB",
            SizeClass::Larger => ">16MiB",
        }
    }
}

/// The kinds of data movement counted apart.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use gantry_stats::{EventStats, TransferKind};
///
/// let stats = EventStats::new("transfers");
/// stats.record_transfer(TransferKind::Readback, 4 << 20, Duration::from_millis(1));
/// let s = stats.snapshot();
/// assert_eq!(s.transfers[TransferKind::Readback as usize].throughput(), Some(4194304000.0));
/// assert_eq!(s.transfers[TransferKind::Upload as usize].count(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// Host to device (through staging, a mapped buffer or imported host memory).
    Upload,
    /// Device to host.
    Readback,
    /// Buffer to buffer on the device.
    Copy,
}

impl TransferKind {
    /// Every kind, in index order.
    pub const ALL: [TransferKind; 3] = [
        TransferKind::Upload,
        TransferKind::Readback,
        TransferKind::Copy,
    ];

    /// A short name for reports: `upload`, `readback`, `copy`.
    pub fn name(self) -> &'static str {
        match self {
            TransferKind::Upload => "upload",
            TransferKind::Readback => "readback",
            TransferKind::Copy => "copy",
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Count, bytes and time of one kind of transfer.
#[derive(Debug, Default)]
struct TransferStats {
    time: Histogram,
    bytes: Histogram,
}

/// A copy of one kind of transfer's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSnapshot {
    /// Duration of each transfer, in nanoseconds (count = number of transfers).
    pub time: HistogramSnapshot,
    /// Size of each transfer, in bytes (sum = bytes moved).
    pub bytes: HistogramSnapshot,
}

impl TransferSnapshot {
    /// Number of transfers.
    pub fn count(&self) -> u64 {
        self.time.count()
    }

    /// Bytes moved.
    pub fn total_bytes(&self) -> u64 {
        self.bytes.sum()
    }

    /// Time spent, in nanoseconds.
    pub fn total_nanos(&self) -> u64 {
        self.time.sum()
    }

    /// Aggregate throughput in bytes per second (all bytes over all time), `None` before any
    /// time was recorded.
    pub fn throughput(&self) -> Option<f64> {
        let ns = self.total_nanos();
        (ns > 0).then(|| self.total_bytes() as f64 * 1e9 / ns as f64)
    }
}

/// One shard of the per-buffer mapping counts, on cache lines of its own.
type MapShard = Padded<Mutex<HashMap<u64, u64>>>;

/// Number of shards of the per-buffer mapping map: a power of two, more than the threads that
/// usually map at once.
const MAP_SHARDS: usize = 16;

/// Buffer event statistics: creations, destructions, mappings, copies and transfers, the
/// size-class histogram and live memory by location.
///
/// Every `record_*` call is lock-free except [`record_mapping`](Self::record_mapping), which
/// also counts mappings per buffer: that takes one of 16 mutexes, chosen by the buffer id
/// (about 20-40 ns uncontended, plus a hash-map update), so threads mapping different buffers
/// rarely meet. The per-buffer map holds one entry (16 bytes plus hash-map overhead) per
/// buffer ever mapped since the last reset; call [`forget_buffer`](Self::forget_buffer) when a
/// buffer is destroyed to keep it bounded, or turn it off with
/// [`without_mapping_frequency`](Self::without_mapping_frequency).
///
/// Averages are computed in floating point from exact sums and counts, never by integer
/// division, and come with p50/p90/p99.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use gantry_stats::{EventStats, LocationKind, SizeClass, TransferKind};
///
/// let stats = EventStats::new("buffers");
/// stats.record_creation(256 << 10, LocationKind::DeviceLocal, Duration::from_micros(12));
/// stats.record_creation(512, LocationKind::Upload, Duration::from_micros(5));
/// stats.record_mapping(7, Duration::from_nanos(800));
/// stats.record_mapping(7, Duration::from_nanos(900));
/// stats.record_mapping(9, Duration::from_nanos(700));
/// stats.record_transfer(TransferKind::Upload, 1 << 20, Duration::from_micros(100));
///
/// let s = stats.snapshot();
/// assert_eq!(s.creation_time.count(), 2);
/// assert_eq!(s.creation_time.mean(), Some(8_500.0));
/// assert_eq!(s.size_classes[SizeClass::UpTo1MiB as usize], 1);
/// assert_eq!(s.locations[LocationKind::DeviceLocal as usize].live_bytes, 256 << 10);
/// assert_eq!(s.top_mapped, vec![(7, 2), (9, 1)]);
/// let upload = &s.transfers[TransferKind::Upload as usize];
/// assert_eq!(upload.throughput(), Some(1048576.0 / 100e-6));
/// ```
#[derive(Debug)]
pub struct EventStats {
    name: String,
    top_n: usize,
    creation_time: Histogram,
    destructions: Counter,
    size_classes: [Counter; 5],
    live_buffers: [Gauge; 3],
    live_bytes: [Gauge; 3],
    created_bytes: [Counter; 3],
    mapping_time: Histogram,
    mapping_frequency: Option<Box<[MapShard]>>,
    transfers: [TransferStats; 3],
}

/// A copy of [`EventStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSnapshot {
    /// Time to create each buffer, in nanoseconds (count = buffers created).
    pub creation_time: HistogramSnapshot,
    /// Buffers destroyed.
    pub destructions: u64,
    /// Buffers created per [`SizeClass`], indexed by `SizeClass as usize`.
    pub size_classes: [u64; 5],
    /// Memory per [`LocationKind`], indexed by `LocationKind as usize`.
    pub locations: [LocationSnapshot; 3],
    /// Time of each mapping, in nanoseconds (count = mappings).
    pub mapping_time: HistogramSnapshot,
    /// The most mapped buffers, `(id, mappings)`, most first (ties by id).
    pub top_mapped: Vec<(u64, u64)>,
    /// Transfers per [`TransferKind`], indexed by `TransferKind as usize`.
    pub transfers: [TransferSnapshot; 3],
}

/// Buffers and bytes in one memory location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationSnapshot {
    /// Buffers alive now.
    pub live_buffers: i64,
    /// The most buffers alive at once.
    pub peak_buffers: i64,
    /// Bytes alive now.
    pub live_bytes: i64,
    /// The most bytes alive at once.
    pub peak_bytes: i64,
    /// Bytes ever created.
    pub created_bytes: u64,
}

impl EventStats {
    /// Empty statistics reported under `name`, counting mappings per buffer and reporting the
    /// 10 most mapped.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            top_n: 10,
            creation_time: Histogram::new(),
            destructions: Counter::new(),
            size_classes: Default::default(),
            live_buffers: Default::default(),
            live_bytes: Default::default(),
            created_bytes: Default::default(),
            mapping_time: Histogram::new(),
            mapping_frequency: Some(
                (0..MAP_SHARDS)
                    .map(|_| Padded(Mutex::new(HashMap::new())))
                    .collect(),
            ),
            transfers: Default::default(),
        }
    }

    /// Reports the `n` most mapped buffers instead of 10.
    pub fn with_top_n(mut self, n: usize) -> Self {
        self.top_n = n;
        self
    }

    /// Does not count mappings per buffer: [`record_mapping`](Self::record_mapping) becomes
    /// lock-free, and the top-N list stays empty.
    pub fn without_mapping_frequency(mut self) -> Self {
        self.mapping_frequency = None;
        self
    }

    /// Records a buffer of `size` bytes created in `location`, which took `time`.
    #[inline]
    pub fn record_creation(&self, size: u64, location: LocationKind, time: Duration) {
        self.creation_time.record(nanos(time));
        self.size_classes[SizeClass::of(size) as usize].inc();
        let i = location.index();
        self.live_buffers[i].add(1);
        self.live_bytes[i].add(size as i64);
        self.created_bytes[i].add(size);
    }

    /// Records the destruction of a buffer of `size` bytes in `location`.
    #[inline]
    pub fn record_destruction(&self, size: u64, location: LocationKind) {
        self.destructions.inc();
        let i = location.index();
        self.live_buffers[i].sub(1);
        self.live_bytes[i].sub(size as i64);
    }

    /// Records a mapping of buffer `buffer_id` that took `time`.
    #[inline]
    pub fn record_mapping(&self, buffer_id: u64, time: Duration) {
        self.mapping_time.record(nanos(time));
        if let Some(shards) = &self.mapping_frequency {
            let mut map = lock(&shards[shard_of(buffer_id)].0);
            *map.entry(buffer_id).or_insert(0) += 1;
        }
    }

    /// Drops buffer `buffer_id` from the per-buffer mapping counts (call it when the buffer is
    /// destroyed, so the map does not grow without bound).
    pub fn forget_buffer(&self, buffer_id: u64) {
        if let Some(shards) = &self.mapping_frequency {
            lock(&shards[shard_of(buffer_id)].0).remove(&buffer_id);
        }
    }

    /// Records a transfer of `bytes` bytes of kind `kind` that took `time`.
    #[inline]
    pub fn record_transfer(&self, kind: TransferKind, bytes: u64, time: Duration) {
        let t = &self.transfers[kind as usize];
        t.time.record(nanos(time));
        t.bytes.record(bytes);
    }

    /// The `n` most mapped buffers, `(id, mappings)`, most first; ties by increasing id.
    pub fn top_mapped(&self, n: usize) -> Vec<(u64, u64)> {
        let Some(shards) = &self.mapping_frequency else {
            return Vec::new();
        };
        let mut all: Vec<(u64, u64)> = Vec::new();
        for shard in shards.iter() {
            all.extend(lock(&shard.0).iter().map(|(&id, &count)| (id, count)));
        }
        let key = |&(id, count): &(u64, u64)| (std::cmp::Reverse(count), id);
        if all.len() > n {
            if n == 0 {
                return Vec::new();
            }
            all.select_nth_unstable_by_key(n - 1, key);
            all.truncate(n);
        }
        all.sort_unstable_by_key(key);
        all
    }

    /// Copies every figure.
    pub fn snapshot(&self) -> EventSnapshot {
        let loc = |i: usize| LocationSnapshot {
            live_buffers: self.live_buffers[i].get(),
            peak_buffers: self.live_buffers[i].peak(),
            live_bytes: self.live_bytes[i].get(),
            peak_bytes: self.live_bytes[i].peak(),
            created_bytes: self.created_bytes[i].get(),
        };
        let transfer = |i: usize| TransferSnapshot {
            time: self.transfers[i].time.snapshot(),
            bytes: self.transfers[i].bytes.snapshot(),
        };
        EventSnapshot {
            creation_time: self.creation_time.snapshot(),
            destructions: self.destructions.get(),
            size_classes: std::array::from_fn(|i| self.size_classes[i].get()),
            locations: std::array::from_fn(loc),
            mapping_time: self.mapping_time.snapshot(),
            top_mapped: self.top_mapped(self.top_n),
            transfers: std::array::from_fn(transfer),
        }
    }

    /// Sets every event count back to zero. Live buffers and bytes by location are state, not
    /// events, and are kept (their peaks restart from the current values); per-buffer mapping
    /// counts are cleared.
    pub fn reset(&self) {
        self.creation_time.reset();
        self.destructions.reset();
        self.size_classes.iter().for_each(Counter::reset);
        self.live_bytes.iter().for_each(Gauge::reset_peak);
        self.live_buffers.iter().for_each(Gauge::reset_peak);
        self.created_bytes.iter().for_each(Counter::reset);
        self.mapping_time.reset();
        if let Some(shards) = &self.mapping_frequency {
            shards.iter().for_each(|s| lock(&s.0).clear());
        }
        for t in &self.transfers {
            t.time.reset();
            t.bytes.reset();
        }
    }
}

fn shard_of(id: u64) -> usize {
    // Fibonacci hashing: consecutive ids land on different shards.
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - MAP_SHARDS.trailing_zeros())) as usize
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a shard leaves a valid map (counts only): keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventSnapshot {
    /// The metrics a report shows.
    pub fn to_provider_snapshot(&self, name: &str) -> ProviderSnapshot {
        let hist = |h: &HistogramSnapshot, unit| MetricValue::Histogram {
            summary: h.summary(),
            unit,
        };
        let mut p = ProviderSnapshot::new(name);
        p.push("create.time", hist(&self.creation_time, Unit::Nanos));
        p.push(
            "destroy.count",
            MetricValue::Counter {
                value: self.destructions,
                unit: Unit::Count,
            },
        );
        for class in SizeClass::ALL {
            p.push(
                format!("size.{}", class.name()),
                MetricValue::Counter {
                    value: self.size_classes[class as usize],
                    unit: Unit::Count,
                },
            );
        }
        for location in LocationKind::ALL {
            let l = &self.locations[location.index()];
            p.push(
                format!("memory.{}.buffers", location.name()),
                MetricValue::Gauge {
                    value: l.live_buffers,
                    peak: l.peak_buffers,
                    unit: Unit::Count,
                },
            );
            p.push(
                format!("memory.{}.bytes", location.name()),
                MetricValue::Gauge {
                    value: l.live_bytes,
                    peak: l.peak_bytes,
                    unit: Unit::Bytes,
                },
            );
        }
        p.push("map.time", hist(&self.mapping_time, Unit::Nanos));
        p.push("map.top", MetricValue::Ranking(self.top_mapped.clone()));
        for kind in TransferKind::ALL {
            let t = &self.transfers[kind as usize];
            p.push(format!("{}.time", kind.name()), hist(&t.time, Unit::Nanos));
            p.push(
                format!("{}.bytes", kind.name()),
                MetricValue::Counter {
                    value: t.total_bytes(),
                    unit: Unit::Bytes,
                },
            );
            p.push(
                format!("{}.throughput", kind.name()),
                MetricValue::Float {
                    value: t.throughput(),
                    unit: Unit::BytesPerSec,
                },
            );
        }
        p
    }
}

impl StatisticsProvider for EventStats {
    fn name(&self) -> &str {
        &self.name
    }

    fn snapshot(&self) -> ProviderSnapshot {
        EventStats::snapshot(self).to_provider_snapshot(&self.name)
    }

    fn reset(&self) {
        EventStats::reset(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_class_bounds() {
        for (size, class) in [
            (0, SizeClass::UpTo1KiB),
            (1 << 10, SizeClass::UpTo1KiB),
            ((1 << 10) + 1, SizeClass::UpTo64KiB),
            (64 << 10, SizeClass::UpTo64KiB),
            ((64 << 10) + 1, SizeClass::UpTo1MiB),
            (1 << 20, SizeClass::UpTo1MiB),
            ((1 << 20) + 1, SizeClass::UpTo16MiB),
            (16 << 20, SizeClass::UpTo16MiB),
            ((16 << 20) + 1, SizeClass::Larger),
            (u64::MAX, SizeClass::Larger),
        ] {
            assert_eq!(SizeClass::of(size), class, "{size}");
        }
    }

    #[test]
    fn memory_by_location_and_reset() {
        let s = EventStats::new("b");
        s.record_creation(100, LocationKind::Upload, Duration::ZERO);
        s.record_creation(300, LocationKind::Upload, Duration::ZERO);
        s.record_destruction(100, LocationKind::Upload);
        s.record_creation(5, LocationKind::Readback, Duration::ZERO);
        let snap = s.snapshot();
        let up = snap.locations[LocationKind::Upload as usize];
        assert_eq!(
            (up.live_buffers, up.live_bytes, up.peak_bytes),
            (1, 300, 400)
        );
        assert_eq!(up.created_bytes, 400);
        assert_eq!(
            snap.locations[LocationKind::Readback as usize].live_bytes,
            5
        );
        assert_eq!(
            snap.locations[LocationKind::DeviceLocal as usize].live_bytes,
            0
        );
        assert_eq!(snap.destructions, 1);

        s.reset();
        let snap = s.snapshot();
        assert_eq!(snap.creation_time.count(), 0);
        assert_eq!(snap.size_classes, [0; 5]);
        let up = snap.locations[LocationKind::Upload as usize];
        assert_eq!(
            (up.live_bytes, up.peak_bytes, up.created_bytes),
            (300, 300, 0)
        );
    }

    #[test]
    fn mapping_frequency_top_n_from_many_threads() {
        let s = EventStats::new("b").with_top_n(3);
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let s = &s;
                scope.spawn(move || {
                    for id in 0..50u64 {
                        // Buffer `id` is mapped `id + 1` times per thread.
                        for _ in 0..=id {
                            s.record_mapping(id, Duration::from_nanos(t + 1));
                        }
                    }
                });
            }
        });
        let snap = s.snapshot();
        assert_eq!(snap.mapping_time.count(), 4 * (1..=50).sum::<u64>());
        assert_eq!(snap.top_mapped, vec![(49, 200), (48, 196), (47, 192)]);
        s.forget_buffer(49);
        assert_eq!(s.top_mapped(1), vec![(48, 196)]);
        assert_eq!(s.top_mapped(0), vec![]);
        assert_eq!(s.top_mapped(1000).len(), 49);

        let off = EventStats::new("b").without_mapping_frequency();
        off.record_mapping(1, Duration::from_nanos(5));
        assert_eq!(off.snapshot().mapping_time.count(), 1);
        assert!(off.snapshot().top_mapped.is_empty());
    }

    #[test]
    fn throughput_is_bytes_over_time() {
        let s = EventStats::new("b");
        assert_eq!(s.snapshot().transfers[0].throughput(), None);
        s.record_transfer(TransferKind::Copy, 3_000, Duration::from_micros(1));
        s.record_transfer(TransferKind::Copy, 1_000, Duration::from_micros(3));
        let c = &s.snapshot().transfers[TransferKind::Copy as usize];
        assert_eq!(
            (c.count(), c.total_bytes(), c.total_nanos()),
            (2, 4_000, 4_000)
        );
        assert_eq!(c.throughput(), Some(1e9));
        let p = StatisticsProvider::snapshot(&s);
        assert_eq!(
            p.get("copy.throughput"),
            Some(&MetricValue::Float {
                value: Some(1e9),
                unit: Unit::BytesPerSec
            })
        );
    }
}
