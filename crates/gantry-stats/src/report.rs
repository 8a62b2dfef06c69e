//! The provider interface (S4): every component reports a [`ProviderSnapshot`] of named
//! metrics; a [`Report`] gathers them into one serde-serialisable value with a readable
//! [`Display`](fmt::Display).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::primitives::HistogramSummary;

/// The unit a metric is measured in; it decides how the value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A plain number of things.
    Count,
    /// Bytes, shown with binary prefixes (KiB, MiB, GiB).
    Bytes,
    /// Nanoseconds, shown as ns, µs, ms or s.
    Nanos,
    /// Bytes per second, shown with decimal prefixes (MB/s, GB/s) like transfer figures are.
    BytesPerSec,
    /// A fraction in `0..=1`, shown as a percentage.
    Ratio,
}

impl Unit {
    /// Formats `v` in this unit.
    ///
    /// # Example
    /// ```
    /// use gantry_stats::Unit;
    ///
    /// assert_eq!(Unit::Bytes.format(1536.0), "1.50 KiB");
    /// assert_eq!(Unit::Nanos.format(2_500.0), "2.50 µs");
    /// assert_eq!(Unit::BytesPerSec.format(12.5e9), "12.50 GB/s");
    /// assert_eq!(Unit::Ratio.format(0.25), "25.0 %");
    /// assert_eq!(Unit::Count.format(42.0), "42");
    /// ```
    pub fn format(self, v: f64) -> String {
        fn scaled(v: f64, base: f64, names: &[&str]) -> String {
            let mut v = v;
            let mut i = 0;
            while v.abs() >= base && i + 1 < names.len() {
                v /= base;
                i += 1;
            }
            if i == 0 && v.fract() == 0.0 {
                format!("{v:.0} {}", names[0])
            } else {
                format!("{v:.2} {}", names[i])
            }
        }
        match self {
            Unit::Count => {
                if v.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            }
            Unit::Bytes => scaled(v, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"]),
            Unit::BytesPerSec => scaled(v, 1000.0, &["B/s", "kB/s", "MB/s", "GB/s", "TB/s"]),
            Unit::Nanos => {
                let a = v.abs();
                if a < 1e3 {
                    format!("{v:.0} ns")
                } else if a < 1e6 {
                    format!("{:.2} µs", v / 1e3)
                } else if a < 1e9 {
                    format!("{:.2} ms", v / 1e6)
                } else {
                    format!("{:.2} s", v / 1e9)
                }
            }
            Unit::Ratio => format!("{:.1} %", v * 100.0),
        }
    }

    fn format_opt(self, v: Option<f64>) -> String {
        v.map_or_else(|| "-".to_owned(), |v| self.format(v))
    }

    fn format_u64(self, v: Option<u64>) -> String {
        self.format_opt(v.map(|v| v as f64))
    }
}

/// The value of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricValue {
    /// A count or total that only grows (events, bytes moved).
    Counter {
        /// The value.
        value: u64,
        /// Its unit.
        unit: Unit,
    },
    /// A value that goes up and down, with its peak.
    Gauge {
        /// The current value.
        value: i64,
        /// The highest value reached.
        peak: i64,
        /// The unit of both.
        unit: Unit,
    },
    /// A derived figure (a ratio, a throughput, a mean); `None` when it is undefined, such as
    /// a throughput before anything moved. Never NaN or infinite.
    Float {
        /// The value.
        value: Option<f64>,
        /// Its unit.
        unit: Unit,
    },
    /// A distribution.
    Histogram {
        /// Count, sum, min, max, mean and quantiles.
        summary: HistogramSummary,
        /// The unit of the values.
        unit: Unit,
    },
    /// The `(key, count)` pairs that count most, largest first (e.g. the most mapped buffers).
    Ranking(Vec<(u64, u64)>),
    /// Free text.
    Text(String),
}

impl MetricValue {
    /// A float metric; NaN and infinities become `None` so every report stays valid JSON.
    pub fn float(value: f64, unit: Unit) -> Self {
        MetricValue::Float {
            value: value.is_finite().then_some(value),
            unit,
        }
    }

    /// The single number that best stands for this metric over time (what a
    /// [`Recorder`](crate::Recorder) plots): the value, a gauge's current value, a
    /// histogram's mean. `None` for rankings and text.
    pub fn scalar(&self) -> Option<(f64, Unit)> {
        match self {
            MetricValue::Counter { value, unit } => Some((*value as f64, *unit)),
            MetricValue::Gauge { value, unit, .. } => Some((*value as f64, *unit)),
            MetricValue::Float { value, unit } => value.map(|v| (v, *unit)),
            MetricValue::Histogram { summary, unit } => summary.mean.map(|m| (m, *unit)),
            MetricValue::Ranking(_) | MetricValue::Text(_) => None,
        }
    }
}

impl fmt::Display for MetricValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricValue::Counter { value, unit } => f.write_str(&unit.format(*value as f64)),
            MetricValue::Gauge { value, peak, unit } => write!(
                f,
                "{} (peak {})",
                unit.format(*value as f64),
                unit.format(*peak as f64)
            ),
            MetricValue::Float { value, unit } => f.write_str(&unit.format_opt(*value)),
            MetricValue::Histogram { summary: s, unit } => {
                if s.count == 0 {
                    return f.write_str("n=0");
                }
                write!(
                    f,
                    "n={} mean={} p50={} p90={} p99={} min={} max={}",
                    s.count,
                    unit.format_opt(s.mean),
                    unit.format_u64(s.p50),
                    unit.format_u64(s.p90),
                    unit.format_u64(s.p99),
                    unit.format_u64(s.min),
                    unit.format_u64(s.max),
                )
            }
            MetricValue::Ranking(entries) => {
                if entries.is_empty() {
                    return f.write_str("-");
                }
                for (i, (key, count)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "#{key}: {count}")?;
                }
                Ok(())
            }
            MetricValue::Text(t) => f.write_str(t),
        }
    }
}

/// One named metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Its name within the provider, e.g. `"copy.throughput"`.
    pub name: String,
    /// Its value.
    pub value: MetricValue,
}

/// What one provider reports: its name and its metrics, in the order it chose.
///
/// # Example
/// ```
/// use gantry_stats::{MetricValue, ProviderSnapshot, Unit};
///
/// let s = ProviderSnapshot::new("staging")
///     .counter("allocations", 12, Unit::Count)
///     .gauge("used", 4096, 8192, Unit::Bytes)
///     .float("fragmentation", 0.25, Unit::Ratio);
/// assert_eq!(s.get("used"), Some(&MetricValue::Gauge { value: 4096, peak: 8192, unit: Unit::Bytes }));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderSnapshot {
    /// The provider's name.
    pub name: String,
    /// Its metrics.
    pub metrics: Vec<Metric>,
}

impl ProviderSnapshot {
    /// An empty snapshot for provider `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            metrics: Vec::new(),
        }
    }

    /// Adds a metric.
    pub fn push(&mut self, name: impl Into<String>, value: MetricValue) {
        self.metrics.push(Metric {
            name: name.into(),
            value,
        });
    }

    /// Adds a metric, builder style.
    pub fn with(mut self, name: impl Into<String>, value: MetricValue) -> Self {
        self.push(name, value);
        self
    }

    /// Adds a [`MetricValue::Counter`].
    pub fn counter(self, name: impl Into<String>, value: u64, unit: Unit) -> Self {
        self.with(name, MetricValue::Counter { value, unit })
    }

    /// Adds a [`MetricValue::Gauge`].
    pub fn gauge(self, name: impl Into<String>, value: i64, peak: i64, unit: Unit) -> Self {
        self.with(name, MetricValue::Gauge { value, peak, unit })
    }

    /// Adds a [`MetricValue::Float`] (NaN and infinities become `None`).
    pub fn float(self, name: impl Into<String>, value: f64, unit: Unit) -> Self {
        self.with(name, MetricValue::float(value, unit))
    }

    /// The metric called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&MetricValue> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| &m.value)
    }
}

/// A component that reports statistics: the staging ring, the registry, the transfer
/// orchestrator, the allocators all implement it.
///
/// # Example
/// ```
/// use gantry_stats::{Counter, ProviderSnapshot, StatisticsProvider, Unit};
///
/// struct Registry { live: Counter }
///
/// impl StatisticsProvider for Registry {
///     fn name(&self) -> &str { "registry" }
///     fn snapshot(&self) -> ProviderSnapshot {
///         ProviderSnapshot::new(self.name()).counter("buffers", self.live.get(), Unit::Count)
///     }
///     fn reset(&self) { self.live.reset() }
/// }
/// let r = Registry { live: Counter::new() };
/// r.live.add(3);
/// assert_eq!(r.snapshot().metrics.len(), 1);
/// ```
pub trait StatisticsProvider {
    /// The provider's name, unique within a report.
    fn name(&self) -> &str;

    /// The provider's metrics now. Must not block recorders for long: read atomics, or take a
    /// lock that the hot path does not.
    fn snapshot(&self) -> ProviderSnapshot;

    /// Sets the provider's counters back to zero. The default does nothing (for providers
    /// that only report state, such as an allocator's free space).
    fn reset(&self) {}
}

/// One snapshot of every provider, serialisable with serde and readable with `Display`.
///
/// # Example
/// ```
/// use gantry_stats::{ProviderSnapshot, Report, Unit};
///
/// let report = Report::from_snapshots(vec![
///     ProviderSnapshot::new("staging").counter("allocations", 3, Unit::Count),
/// ]);
/// let json = serde_json::to_string(&report).unwrap();
/// let back: Report = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, report);
/// assert!(report.to_string().contains("allocations"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Each provider's snapshot, in the order the providers were added.
    pub providers: Vec<ProviderSnapshot>,
}

impl Report {
    /// Takes a snapshot of each provider.
    pub fn gather(providers: &[&dyn StatisticsProvider]) -> Self {
        Self {
            providers: providers.iter().map(|p| p.snapshot()).collect(),
        }
    }

    /// A report of snapshots already taken.
    pub fn from_snapshots(providers: Vec<ProviderSnapshot>) -> Self {
        Self { providers }
    }

    /// The snapshot of provider `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderSnapshot> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The metric `metric` of provider `provider`.
    pub fn get(&self, provider: &str, metric: &str) -> Option<&MetricValue> {
        self.provider(provider)?.get(metric)
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every map key is a string and every float is
        // finite (see `MetricValue::float`).
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a report written by [`to_json`](Self::to_json).
    ///
    /// # Errors
    /// When `json` is not a report.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

impl fmt::Display for Report {
    /// A table: one section per provider, metric names left-aligned in one column, values in
    /// the next.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .providers
            .iter()
            .flat_map(|p| p.metrics.iter().map(|m| m.name.chars().count()))
            .max()
            .unwrap_or(0);
        for (i, p) in self.providers.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "[{}]", p.name)?;
            for m in &p.metrics {
                writeln!(f, "  {:<width$}  {}", m.name, m.value)?;
            }
        }
        Ok(())
    }
}

/// A set of providers that are reported and reset together.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use gantry_stats::{Collector, EventStats, LocationKind};
/// use std::time::Duration;
///
/// let events = Arc::new(EventStats::new("buffers"));
/// let mut collector = Collector::new();
/// collector.add(events.clone());
/// events.record_creation(4096, LocationKind::DeviceLocal, Duration::from_micros(3));
/// let report = collector.report();
/// assert!(report.provider("buffers").is_some());
/// collector.reset();
/// assert_eq!(events.snapshot().creation_time.count(), 0);
/// ```
#[derive(Clone, Default)]
pub struct Collector {
    providers: Vec<Arc<dyn StatisticsProvider + Send + Sync>>,
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.providers.iter().map(|p| p.name()))
            .finish()
    }
}

impl Collector {
    /// A collector with no providers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider; reports list providers in the order they were added.
    pub fn add(&mut self, provider: Arc<dyn StatisticsProvider + Send + Sync>) {
        self.providers.push(provider);
    }

    /// Adds a provider, builder style.
    pub fn with(mut self, provider: Arc<dyn StatisticsProvider + Send + Sync>) -> Self {
        self.add(provider);
        self
    }

    /// Number of providers.
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// Whether there are no providers.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// A snapshot of every provider.
    pub fn report(&self) -> Report {
        Report {
            providers: self.providers.iter().map(|p| p.snapshot()).collect(),
        }
    }

    /// Resets every provider.
    pub fn reset(&self) {
        for p in &self.providers {
            p.reset();
        }
    }
}
