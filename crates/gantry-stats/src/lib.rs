//! Statistics that every gantry layer reports into.
//!
//! # The model
//!
//! * **Recording** is cheap and lock-free: [`Counter`], [`Gauge`] (with its peak) and
//!   [`Histogram`] (log-bucketed, 16 sub-buckets per power of two, so any quantile is within
//!   1/16 of the exact value) update relaxed atomics through `&self`, where the event happens.
//!   [`EventStats`] bundles them for buffer creations, mappings, copies and transfers (S1), the
//!   size-class histogram and memory by location (S2).
//! * **State** that allocators and the backend know (used, free, largest free range, heap
//!   budgets) is posted to a [`MemoryMonitor`], which turns it into pressure and
//!   fragmentation ratios (S3).
//! * **Reading**: every component implements [`StatisticsProvider`]; a [`Collector`] gathers
//!   them into one [`Report`] that serialises with serde and prints as an aligned table (S4).
//!   A [`PeriodicReporter`] resets and emits reports through `tracing` every N frames or every
//!   interval (S5).
//! * **Over time**: a [`Recorder`] keeps named series from successive reports, exports them
//!   as JSON and draws them as an SVG chart (S6); [`MemoryMap`] draws one allocator's blocks
//!   by offset (S7).
//!
//! Averages are floating point over exact sums and counts, never integer division.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use gantry_stats::*;
//!
//! let events = Arc::new(EventStats::new("buffers"));
//! let memory = Arc::new(MemoryMonitor::new("memory"));
//! let collector = Collector::new().with(events.clone()).with(memory.clone());
//!
//! events.record_creation(64 << 10, LocationKind::Upload, Duration::from_micros(4));
//! events.record_transfer(TransferKind::Upload, 64 << 10, Duration::from_micros(8));
//! memory.set_allocator("staging", AllocatorUsage { used: 64 << 10, free: 960 << 10, largest_free: 960 << 10, wasted_at_wrap: 0 });
//!
//! let report = collector.report();
//! println!("{report}");
//! let json = report.to_json();
//! assert_eq!(Report::from_json(&json).unwrap(), report);
//! ```
#![deny(missing_docs)]

mod events;
mod memmap;
mod pressure;
mod primitives;
mod recorder;
mod report;
mod reporter;
mod svg;

pub use events::{
    EventSnapshot, EventStats, LocationKind, LocationSnapshot, SizeClass, TransferKind,
    TransferSnapshot,
};
pub use memmap::{MapRange, MemoryMap};
pub use pressure::{AllocatorUsage, HeapUsage, MemoryMonitor, MemoryPressure};
pub use primitives::{Counter, Gauge, Histogram, HistogramSnapshot, HistogramSummary};
pub use recorder::{ChartOptions, Recorder, Series};
pub use report::{
    Collector, Metric, MetricValue, ProviderSnapshot, Report, StatisticsProvider, Unit,
};
pub use reporter::{PeriodicReporter, ReporterThread, TRACING_TARGET};
