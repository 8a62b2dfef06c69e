//! The periodic reporter emits through `tracing`, at INFO, under target `gantry::stats`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_stats::{
    Collector, EventStats, LocationKind, PeriodicReporter, TRACING_TARGET, TransferKind,
};

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

fn subscriber(out: &Captured) -> impl tracing::Subscriber + Send + Sync + 'static {
    let out = out.clone();
    tracing_subscriber::fmt()
        .with_writer(move || out.clone())
        .with_ansi(false)
        .with_target(true)
        .with_env_filter("gantry::stats=info")
        .finish()
}

#[test]
fn reports_every_n_frames_through_tracing() {
    let out = Captured::default();
    let events = Arc::new(EventStats::new("buffers"));
    let mut reporter = PeriodicReporter::new(Collector::new().with(events.clone()))
        .every_frames(10)
        .reset_after_report(true);
    tracing::subscriber::with_default(subscriber(&out), || {
        let mut reported_at = Vec::new();
        for frame in 1..=35u64 {
            events.record_creation(1024, LocationKind::Upload, Duration::from_micros(2));
            events.record_transfer(TransferKind::Upload, 1 << 20, Duration::from_micros(50));
            if let Some(report) = reporter.on_frame() {
                reported_at.push(frame);
                // Reset after each report: every report covers exactly 10 frames.
                let Some(gantry_stats::MetricValue::Histogram { summary, .. }) =
                    report.get("buffers", "create.time")
                else {
                    panic!("no creation histogram")
                };
                assert_eq!(summary.count, 10);
            }
        }
        assert_eq!(reported_at, [10, 20, 30]);
    });
    let log = out.take();
    assert_eq!(log.matches("statistics report").count(), 3, "{log}");
    assert!(log.contains(" INFO "), "{log}");
    assert!(log.contains(TRACING_TARGET), "{log}");
    assert!(log.contains("frame=30"), "{log}");
    assert!(log.contains("upload.throughput"), "{log}");
    assert!(log.contains("20.97 GB/s"), "{log}"); // 1 MiB per 50 µs
}

#[test]
fn reports_when_the_interval_has_passed() {
    let out = Captured::default();
    let mut reporter = PeriodicReporter::new(Collector::new()).every(Duration::from_millis(100));
    tracing::subscriber::with_default(subscriber(&out), || {
        assert!(reporter.poll().is_none());
        assert!(reporter.on_frame().is_none());
        std::thread::sleep(Duration::from_millis(120));
        assert!(reporter.poll().is_some());
        assert!(
            reporter.poll().is_none(),
            "the period restarts after a report"
        );
        std::thread::sleep(Duration::from_millis(120));
        assert!(reporter.on_frame().is_some());
    });
    assert_eq!(out.take().matches("statistics report").count(), 2);
}

#[test]
fn reporter_thread_reports_and_stops_cleanly() {
    let out = Captured::default();
    let events = Arc::new(EventStats::new("buffers"));
    events.record_creation(1, LocationKind::Readback, Duration::from_nanos(5));
    // The thread has no thread-local default subscriber: use a global one for this process.
    tracing::subscriber::set_global_default(subscriber(&out)).unwrap();
    let thread = PeriodicReporter::new(Collector::new().with(events))
        .every(Duration::from_millis(10))
        .spawn(Duration::from_millis(2))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(thread); // joins, after a last report
    let log = out.take();
    let n = log.matches("statistics report").count();
    assert!(n >= 2, "{n} reports\n{log}");
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        out.take(),
        "",
        "nothing reported after the handle is dropped"
    );
}
