//! Memory pressure and fragmentation (S3): what the allocators and the backend's memory budget
//! say, turned into ratios.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::events::LocationKind;
use crate::report::{MetricValue, ProviderSnapshot, StatisticsProvider, Unit};

/// The state of one allocator (a staging ring, a free list, a pool), filled in by the
/// allocator layer.
///
/// # Example
/// ```
/// use gantry_stats::AllocatorUsage;
///
/// // 1 MiB ring: 768 KiB in use, 256 KiB free in two holes of 192 and 64 KiB.
/// let ring = AllocatorUsage { used: 768 << 10, free: 256 << 10, largest_free: 192 << 10, wasted_at_wrap: 0 };
/// assert_eq!(ring.capacity(), 1 << 20);
/// assert_eq!(ring.fragmentation(), 0.25); // 1 - 192/256
/// assert_eq!(ring.utilisation(), 0.75);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatorUsage {
    /// Bytes handed out.
    pub used: u64,
    /// Bytes free, in all holes together.
    pub free: u64,
    /// The largest single free range: the largest allocation that can succeed now.
    pub largest_free: u64,
    /// Bytes skipped at the end of a ring when an allocation did not fit before the wrap
    /// (counted in neither `used` nor `free`; 0 for allocators that do not wrap).
    pub wasted_at_wrap: u64,
}

impl AllocatorUsage {
    /// Bytes the allocator manages: used + free + wasted.
    pub fn capacity(&self) -> u64 {
        self.used
            .saturating_add(self.free)
            .saturating_add(self.wasted_at_wrap)
    }

    /// External fragmentation, `1 - largest_free / free`: 0 when all free space is one range
    /// (or there is none), approaching 1 when it is scattered in many small holes.
    pub fn fragmentation(&self) -> f64 {
        if self.free == 0 {
            0.0
        } else {
            (1.0 - self.largest_free.min(self.free) as f64 / self.free as f64).max(0.0)
        }
    }

    /// Fraction of the capacity in use, 0 when the capacity is 0.
    pub fn utilisation(&self) -> f64 {
        let cap = self.capacity();
        if cap == 0 {
            0.0
        } else {
            self.used as f64 / cap as f64
        }
    }

    /// Adds this allocator's metrics to `snapshot`, named `prefix.used`, `prefix.free`, ...
    pub fn push_metrics(&self, prefix: &str, snapshot: &mut ProviderSnapshot) {
        let bytes = |value| MetricValue::Counter {
            value,
            unit: Unit::Bytes,
        };
        snapshot.push(format!("{prefix}.used"), bytes(self.used));
        snapshot.push(format!("{prefix}.free"), bytes(self.free));
        snapshot.push(format!("{prefix}.largest_free"), bytes(self.largest_free));
        snapshot.push(
            format!("{prefix}.wasted_at_wrap"),
            bytes(self.wasted_at_wrap),
        );
        snapshot.push(
            format!("{prefix}.utilisation"),
            MetricValue::float(self.utilisation(), Unit::Ratio),
        );
        snapshot.push(
            format!("{prefix}.fragmentation"),
            MetricValue::float(self.fragmentation(), Unit::Ratio),
        );
    }
}

/// Use of one memory heap against the budget the backend reports for it (Vulkan's
/// `VK_EXT_memory_budget`); `budget` is `None` where the backend does not know it.
///
/// # Example
/// ```
/// use gantry_stats::{HeapUsage, LocationKind};
///
/// let heap = HeapUsage { heap: 0, location: Some(LocationKind::DeviceLocal), used: 6 << 30, budget: Some(8 << 30) };
/// assert_eq!(heap.pressure(), Some(0.75));
/// let unknown = HeapUsage { budget: None, ..heap };
/// assert_eq!(unknown.pressure(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapUsage {
    /// The heap's index.
    pub heap: u32,
    /// The kind of memory it mostly serves, when known.
    pub location: Option<LocationKind>,
    /// Bytes in use (by this process, as the backend counts them).
    pub used: u64,
    /// Bytes this process may use before the driver starts failing or paging.
    pub budget: Option<u64>,
}

impl HeapUsage {
    /// `used / budget` (may exceed 1 when over budget); `None` when the budget is unknown or 0.
    pub fn pressure(&self) -> Option<f64> {
        match self.budget {
            Some(b) if b > 0 => Some(self.used as f64 / b as f64),
            _ => None,
        }
    }
}

/// Memory pressure and fragmentation at one moment: every heap against its budget and every
/// allocator's state.
///
/// # Example
/// ```
/// use gantry_stats::{AllocatorUsage, HeapUsage, MemoryPressure};
///
/// let p = MemoryPressure {
///     heaps: vec![
///         HeapUsage { heap: 0, location: None, used: 9, budget: Some(10) },
///         HeapUsage { heap: 1, location: None, used: 5, budget: None },
///     ],
///     allocators: vec![
///         ("ring".into(), AllocatorUsage { used: 0, free: 30, largest_free: 20, wasted_at_wrap: 0 }),
///         ("list".into(), AllocatorUsage { used: 0, free: 10, largest_free: 5, wasted_at_wrap: 0 }),
///     ],
/// };
/// assert_eq!(p.max_pressure(), Some(0.9));
/// assert_eq!(p.overall_fragmentation(), 0.5); // 1 - 20/40
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryPressure {
    /// The heaps, by index.
    pub heaps: Vec<HeapUsage>,
    /// `(name, usage)` of each allocator, in the order they first reported.
    pub allocators: Vec<(String, AllocatorUsage)>,
}

impl MemoryPressure {
    /// The highest pressure of any heap with a known budget.
    pub fn max_pressure(&self) -> Option<f64> {
        self.heaps
            .iter()
            .filter_map(HeapUsage::pressure)
            .reduce(f64::max)
    }

    /// The fragmentation of all allocators together, `1 - largest_free / free` over the sums
    /// (the largest free range of any one allocator), 0 when nothing is free.
    pub fn overall_fragmentation(&self) -> f64 {
        let free: u64 = self.allocators.iter().map(|(_, a)| a.free).sum();
        let largest = self
            .allocators
            .iter()
            .map(|(_, a)| a.largest_free)
            .max()
            .unwrap_or(0);
        AllocatorUsage {
            free,
            largest_free: largest,
            ..AllocatorUsage::default()
        }
        .fragmentation()
    }

    /// The metrics a report shows.
    pub fn to_provider_snapshot(&self, name: &str) -> ProviderSnapshot {
        let mut p = ProviderSnapshot::new(name);
        for h in &self.heaps {
            let prefix = format!("heap{}", h.heap);
            p.push(
                format!("{prefix}.used"),
                MetricValue::Counter {
                    value: h.used,
                    unit: Unit::Bytes,
                },
            );
            if let Some(budget) = h.budget {
                p.push(
                    format!("{prefix}.budget"),
                    MetricValue::Counter {
                        value: budget,
                        unit: Unit::Bytes,
                    },
                );
            }
            p.push(
                format!("{prefix}.pressure"),
                MetricValue::Float {
                    value: h.pressure(),
                    unit: Unit::Ratio,
                },
            );
        }
        for (name, a) in &self.allocators {
            a.push_metrics(name, &mut p);
        }
        p.push(
            "max_pressure",
            MetricValue::Float {
                value: self.max_pressure(),
                unit: Unit::Ratio,
            },
        );
        p.push(
            "fragmentation",
            MetricValue::float(self.overall_fragmentation(), Unit::Ratio),
        );
        p
    }
}

/// The place allocators and the backend post their latest state, reported as one provider.
///
/// Updates take a mutex: they happen once per frame or per allocator call that changes the
/// layout, not per recorded event.
///
/// # Example
/// ```
/// use gantry_stats::{AllocatorUsage, HeapUsage, MemoryMonitor, StatisticsProvider};
///
/// let monitor = MemoryMonitor::new("memory");
/// monitor.set_heap(HeapUsage { heap: 0, location: None, used: 3 << 20, budget: Some(4 << 20) });
/// monitor.set_allocator("staging", AllocatorUsage { used: 0, free: 100, largest_free: 60, wasted_at_wrap: 0 });
/// let now = monitor.pressure();
/// assert_eq!(now.max_pressure(), Some(0.75));
/// assert!((now.overall_fragmentation() - 0.4).abs() < 1e-12);
/// assert!(monitor.snapshot().get("staging.fragmentation").is_some());
/// ```
#[derive(Debug)]
pub struct MemoryMonitor {
    name: String,
    state: Mutex<MemoryPressure>,
}

impl MemoryMonitor {
    /// An empty monitor reported under `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            state: Mutex::new(MemoryPressure::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryPressure> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the use of heap `usage.heap` (replacing what was there).
    pub fn set_heap(&self, usage: HeapUsage) {
        let mut s = self.state();
        match s.heaps.iter_mut().find(|h| h.heap == usage.heap) {
            Some(h) => *h = usage,
            None => {
                s.heaps.push(usage);
                s.heaps.sort_by_key(|h| h.heap);
            }
        }
    }

    /// Sets the state of allocator `name` (replacing what was there).
    pub fn set_allocator(&self, name: &str, usage: AllocatorUsage) {
        let mut s = self.state();
        match s.allocators.iter_mut().find(|(n, _)| n == name) {
            Some((_, a)) => *a = usage,
            None => s.allocators.push((name.to_owned(), usage)),
        }
    }

    /// Removes allocator `name` (when it is destroyed).
    pub fn remove_allocator(&self, name: &str) {
        self.state().allocators.retain(|(n, _)| n != name);
    }

    /// A copy of the current state.
    pub fn pressure(&self) -> MemoryPressure {
        self.state().clone()
    }
}

impl StatisticsProvider for MemoryMonitor {
    fn name(&self) -> &str {
        &self.name
    }

    fn snapshot(&self) -> ProviderSnapshot {
        self.pressure().to_provider_snapshot(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_at_the_edges() {
        let none = AllocatorUsage::default();
        assert_eq!((none.fragmentation(), none.utilisation()), (0.0, 0.0));
        let one_hole = AllocatorUsage {
            used: 10,
            free: 90,
            largest_free: 90,
            wasted_at_wrap: 0,
        };
        assert_eq!(one_hole.fragmentation(), 0.0);
        // A bad report (largest > free) is clamped, not negative.
        let bad = AllocatorUsage {
            largest_free: 200,
            ..one_hole
        };
        assert_eq!(bad.fragmentation(), 0.0);
        let wrapped = AllocatorUsage {
            used: 50,
            free: 30,
            largest_free: 10,
            wasted_at_wrap: 20,
        };
        assert_eq!(wrapped.capacity(), 100);
        assert_eq!(wrapped.utilisation(), 0.5);
        assert!((wrapped.fragmentation() - 2.0 / 3.0).abs() < 1e-12);
        let zero_budget = HeapUsage {
            budget: Some(0),
            ..HeapUsage::default()
        };
        assert_eq!(zero_budget.pressure(), None);
    }

    #[test]
    fn monitor_replaces_and_removes() {
        let m = MemoryMonitor::new("m");
        m.set_heap(HeapUsage {
            heap: 1,
            used: 1,
            budget: Some(2),
            location: None,
        });
        m.set_heap(HeapUsage {
            heap: 0,
            used: 9,
            budget: Some(10),
            location: Some(LocationKind::DeviceLocal),
        });
        m.set_heap(HeapUsage {
            heap: 1,
            used: 2,
            budget: Some(2),
            location: None,
        });
        m.set_allocator("a", AllocatorUsage::default());
        m.set_allocator(
            "a",
            AllocatorUsage {
                used: 1,
                ..AllocatorUsage::default()
            },
        );
        let p = m.pressure();
        assert_eq!(p.heaps.iter().map(|h| h.heap).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(p.max_pressure(), Some(1.0));
        assert_eq!(p.allocators.len(), 1);
        assert_eq!(p.allocators[0].1.used, 1);
        m.remove_allocator("a");
        assert!(m.pressure().allocators.is_empty());
    }
}
