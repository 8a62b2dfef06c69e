//! A report of every provider kind: JSON round trip, table, concurrent recording.

use std::sync::Arc;
use std::time::Duration;

use gantry_stats::{
    AllocatorUsage, Collector, Counter, EventStats, HeapUsage, LocationKind, MemoryMonitor,
    MetricValue, ProviderSnapshot, Report, StatisticsProvider, TransferKind, Unit,
};

/// A provider written the way another gantry component would write one.
struct Staging {
    allocations: Counter,
}

impl StatisticsProvider for Staging {
    fn name(&self) -> &str {
        "staging \"ring\""
    }
    fn snapshot(&self) -> ProviderSnapshot {
        ProviderSnapshot::new(self.name())
            .counter("allocations", self.allocations.get(), Unit::Count)
            .float("nan is dropped", f64::NAN, Unit::Ratio)
            .with("note", MetricValue::Text("tab\tand \u{e9}".into()))
    }
    fn reset(&self) {
        self.allocations.reset();
    }
}

fn busy_collector() -> (Collector, Arc<EventStats>, Arc<Staging>) {
    let events = Arc::new(EventStats::new("buffers").with_top_n(3));
    let memory = Arc::new(MemoryMonitor::new("memory"));
    let staging = Arc::new(Staging {
        allocations: Counter::new(),
    });
    let collector = Collector::new()
        .with(events.clone())
        .with(memory.clone())
        .with(staging.clone());

    for i in 0..100u64 {
        let location = LocationKind::ALL[i as usize % 3];
        events.record_creation(
            i * 3_001 + 17,
            location,
            Duration::from_nanos(1_000 + i * 37),
        );
        events.record_mapping(i % 7, Duration::from_nanos(300 + i));
        events.record_transfer(
            TransferKind::ALL[i as usize % 3],
            i << 12,
            Duration::from_nanos(10_000 + i * 999),
        );
        staging.allocations.inc();
    }
    events.record_destruction(17, LocationKind::DeviceLocal);
    memory.set_heap(HeapUsage {
        heap: 0,
        location: Some(LocationKind::DeviceLocal),
        used: 7 << 30,
        budget: Some(10 << 30),
    });
    memory.set_heap(HeapUsage {
        heap: 1,
        location: None,
        used: 1 << 20,
        budget: None,
    });
    memory.set_allocator(
        "staging",
        AllocatorUsage {
            used: 3 << 20,
            free: 5 << 20,
            largest_free: 3 << 20,
            wasted_at_wrap: 4096,
        },
    );
    (collector, events, staging)
}

#[test]
fn report_json_round_trip_is_equal() {
    let (collector, _, _) = busy_collector();
    let report = collector.report();
    assert_eq!(report.providers.len(), 3);
    let json = serde_json::to_string(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    // The pretty form too.
    assert_eq!(Report::from_json(&report.to_json()).unwrap(), report);

    // Spot checks of what the report says.
    let Some(MetricValue::Histogram { summary, unit }) = report.get("buffers", "create.time")
    else {
        panic!("no creation histogram");
    };
    assert_eq!(*unit, Unit::Nanos);
    assert_eq!(summary.count, 100);
    assert_eq!(summary.mean, Some(1_000.0 + 37.0 * 99.0 / 2.0));
    assert_eq!(
        report.get("buffers", "map.top"),
        Some(&MetricValue::Ranking(vec![(0, 15), (1, 15), (2, 14)]))
    );
    assert_eq!(
        report.get("memory", "heap0.pressure"),
        Some(&MetricValue::Float {
            value: Some(0.7),
            unit: Unit::Ratio
        })
    );
    assert_eq!(
        report.get("memory", "staging.fragmentation"),
        Some(&MetricValue::Float {
            value: Some(1.0 - 3.0 / 5.0),
            unit: Unit::Ratio
        })
    );
    assert_eq!(
        report.get("staging \"ring\"", "nan is dropped"),
        Some(&MetricValue::Float {
            value: None,
            unit: Unit::Ratio
        })
    );
}

#[test]
fn display_is_an_aligned_table() {
    let (collector, _, _) = busy_collector();
    let table = collector.report().to_string();
    assert!(table.contains("[buffers]"), "{table}");
    assert!(table.contains("[memory]"), "{table}");
    // Every metric line puts its value in the same column, after the longest name.
    let report = collector.report();
    let names: Vec<&str> = report
        .providers
        .iter()
        .flat_map(|p| p.metrics.iter().map(|m| m.name.as_str()))
        .collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap();
    let lines: Vec<Vec<char>> = table
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.chars().collect())
        .collect();
    assert_eq!(lines.len(), names.len());
    for (line, name) in lines.iter().zip(&names) {
        let shown: String = line[2..2 + name.chars().count()].iter().collect();
        assert_eq!(&shown, name);
        assert!(
            line[2 + name.chars().count()..2 + width + 2]
                .iter()
                .all(|&c| c == ' ')
        );
        assert_ne!(line[2 + width + 2], ' ', "{table}");
    }
    assert!(table.contains("7.00 GiB"), "{table}");
    assert!(table.contains("#0: 15, #1: 15, #2: 14"), "{table}");
}

#[test]
fn reset_clears_every_provider() {
    let (collector, events, staging) = busy_collector();
    collector.reset();
    let s = events.snapshot();
    assert_eq!(s.creation_time.count(), 0);
    assert_eq!(s.mapping_time.count(), 0);
    assert!(s.top_mapped.is_empty());
    assert_eq!(s.transfers.iter().map(|t| t.count()).sum::<u64>(), 0);
    assert_eq!(staging.allocations.get(), 0);
    // State survives: buffers still alive are still counted.
    assert_eq!(s.locations[LocationKind::Upload as usize].live_buffers, 33);
}

#[test]
fn many_threads_record_exact_totals() {
    const THREADS: u64 = 12;
    const PER_THREAD: u64 = 25_000;
    let events = EventStats::new("buffers");
    let counter = Counter::new();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (events, counter) = (&events, &counter);
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    counter.inc();
                    events.record_creation(64, LocationKind::Upload, Duration::from_nanos(i));
                    events.record_transfer(TransferKind::Copy, t + 1, Duration::from_nanos(2));
                    events.record_mapping(i % 100, Duration::from_nanos(5));
                    events.record_destruction(64, LocationKind::Upload);
                }
            });
        }
    });
    let n = THREADS * PER_THREAD;
    assert_eq!(counter.get(), n);
    let s = events.snapshot();
    assert_eq!(s.creation_time.count(), n);
    assert_eq!(
        s.creation_time.sum(),
        THREADS * PER_THREAD * (PER_THREAD - 1) / 2
    );
    assert_eq!(s.size_classes[0], n);
    let upload = s.locations[LocationKind::Upload as usize];
    assert_eq!((upload.live_buffers, upload.live_bytes), (0, 0));
    assert_eq!(upload.created_bytes, 64 * n);
    assert!(upload.peak_bytes >= 64 && upload.peak_bytes <= 64 * THREADS as i64);
    let copy = &s.transfers[TransferKind::Copy as usize];
    assert_eq!(copy.count(), n);
    assert_eq!(copy.total_bytes(), PER_THREAD * THREADS * (THREADS + 1) / 2);
    assert_eq!(copy.total_nanos(), 2 * n);
    assert_eq!(s.mapping_time.count(), n);
    assert_eq!(
        events.top_mapped(1000).iter().map(|&(_, c)| c).sum::<u64>(),
        n
    );
}
