//! Simulates a short run and writes what gantry-stats draws: a chart of memory by location,
//! transfer throughput and fragmentation over time, its JSON series, the final report, and a
//! memory map of a staging ring.
//!
//! `cargo run -p gantry-stats --example chart -- [output directory]` (default: the current one).

use std::sync::Arc;
use std::time::Duration;

use gantry_stats::{
    AllocatorUsage, ChartOptions, Collector, EventStats, LocationKind, MemoryMap, MemoryMonitor,
    Recorder, TransferKind,
};

fn main() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let events = Arc::new(EventStats::new("buffers"));
    let memory = Arc::new(MemoryMonitor::new("memory"));
    let collector = Collector::new().with(events.clone()).with(memory.clone());
    let mut recorder = Recorder::new();

    // 240 frames at 60 frames per second: device-local memory grows, uploads stream through
    // a 64 MiB staging ring whose free space splits and merges.
    let mut seed = 0x1234_5678_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for frame in 0..240u64 {
        let t = frame as f64 / 60.0;
        if frame % 4 == 0 {
            let size = (1 + rand() % 8) << 20;
            events.record_creation(size, LocationKind::DeviceLocal, Duration::from_micros(20));
        }
        if frame % 10 == 0 {
            events.record_creation(256 << 10, LocationKind::Upload, Duration::from_micros(8));
            events.record_creation(64 << 10, LocationKind::Readback, Duration::from_micros(8));
        }
        if frame > 120 && frame % 6 == 0 {
            events.record_destruction(4 << 20, LocationKind::DeviceLocal);
        }
        let bytes = (2 + rand() % 6) << 20;
        let ns = bytes * 1_000_000_000 / (8_000_000_000 + (rand() % 4_000_000_000));
        events.record_transfer(TransferKind::Upload, bytes, Duration::from_nanos(ns));
        let free = 64u64 << 20;
        let largest = free / (1 + frame % 24 / 6);
        memory.set_allocator(
            "staging",
            AllocatorUsage {
                used: 0,
                free,
                largest_free: largest,
                wasted_at_wrap: 0,
            },
        );
        // Each sample shows one frame: restart the counters after recording it.
        recorder.record_report_where(t, &collector.report(), |_, m| {
            (m.starts_with("memory.") && m.ends_with(".bytes"))
                || m == "upload.throughput"
                || m == "staging.fragmentation"
        });
        events.reset();
    }

    let chart = recorder.to_svg(&ChartOptions {
        title: "gantry: a simulated run of 240 frames".into(),
        ..ChartOptions::default()
    });
    std::fs::write(dir.join("stats-chart.svg"), chart)?;
    std::fs::write(dir.join("stats-series.json"), recorder.to_json())?;
    std::fs::write(dir.join("stats-report.json"), collector.report().to_json())?;

    let map = MemoryMap::new("staging ring, 64 MiB", 64 << 20)
        .with_range(0, 6 << 20, "frame 41 uploads")
        .with_range(6 << 20, 3 << 20, "mesh <terrain>")
        .with_range(12 << 20, 512 << 10, "uniforms")
        .with_range(20 << 20, 18 << 20, "texture & atlas")
        .with_range(40 << 20, 1 << 20, "readback")
        .with_range(41 << 20, 64 << 10, "tiny")
        .with_range(56 << 20, 6 << 20, "frame 42 uploads");
    std::fs::write(dir.join("stats-memory-map.svg"), map.to_svg(960, 2))?;
    println!("{}", collector.report());
    println!(
        "wrote stats-chart.svg, stats-series.json, stats-report.json, stats-memory-map.svg to {}",
        dir.display()
    );
    Ok(())
}
