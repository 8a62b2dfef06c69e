//! Series of values over a run (S6): recorded from reports, exported as JSON and drawn as an
//! SVG chart written by this crate.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::report::{Report, Unit};
use crate::svg::{PALETTE, escape, nice_ticks, text};

/// One named series: `(time in seconds, value)` points in recording order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The series' name, `provider/metric` when recorded from a report.
    pub name: String,
    /// The unit of the values.
    pub unit: Unit,
    /// `(seconds since the start of the run, value)`.
    pub points: Vec<(f64, f64)>,
}

/// Snapshots over time: named series of time-stamped values, exported as JSON
/// ([`to_json`](Self::to_json)) and drawn as an SVG chart ([`to_svg`](Self::to_svg)), one
/// panel per unit (bytes, bytes/s, ratios...) with axes, ticks, one line per series and a
/// legend.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use gantry_stats::{Collector, EventStats, LocationKind, Recorder, TransferKind, ChartOptions};
///
/// let events = Arc::new(EventStats::new("buffers"));
/// let collector = Collector::new().with(events.clone());
/// let mut recorder = Recorder::new();
/// for frame in 0..10u64 {
///     events.record_creation(1 << 20, LocationKind::DeviceLocal, Duration::from_micros(20));
///     events.record_transfer(TransferKind::Upload, 1 << 20, Duration::from_micros(100 + frame));
///     // Keep only what the chart should show: memory by location and throughput.
///     recorder.record_report_where(frame as f64 / 60.0, &collector.report(), |_, metric| {
///         metric.starts_with("memory.") && metric.ends_with(".bytes") || metric.ends_with(".throughput")
///     });
/// }
/// assert_eq!(recorder.get("buffers/memory.device_local.bytes").unwrap().points.len(), 10);
/// let svg = recorder.to_svg(&ChartOptions::default());
/// assert!(svg.starts_with("<svg") && svg.contains("buffers/upload.throughput"));
/// let back = Recorder::from_json(&recorder.to_json()).unwrap();
/// assert_eq!(back, recorder);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recorder {
    series: Vec<Series>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `(t, value)` to series `name` (created with `unit` on first use). Non-finite
    /// times or values are skipped: they have no place on a chart or in JSON.
    pub fn record(&mut self, t: f64, name: &str, unit: Unit, value: f64) {
        if !t.is_finite() || !value.is_finite() {
            return;
        }
        let series = match self.series.iter().position(|s| s.name == name) {
            Some(i) => &mut self.series[i],
            None => {
                self.series.push(Series {
                    name: name.to_owned(),
                    unit,
                    points: Vec::new(),
                });
                self.series.last_mut().expect("just pushed")
            }
        };
        series.points.push((t, value));
    }

    /// Records every metric of `report` that has a [scalar](crate::MetricValue::scalar) value,
    /// as series `provider/metric`, at time `t` (seconds).
    pub fn record_report(&mut self, t: f64, report: &Report) {
        self.record_report_where(t, report, |_, _| true);
    }

    /// Records the scalar metrics of `report` for which `keep(provider, metric)` is true.
    pub fn record_report_where(
        &mut self,
        t: f64,
        report: &Report,
        mut keep: impl FnMut(&str, &str) -> bool,
    ) {
        for p in &report.providers {
            for m in &p.metrics {
                if !keep(&p.name, &m.name) {
                    continue;
                }
                if let Some((v, unit)) = m.value.scalar() {
                    self.record(t, &format!("{}/{}", p.name, m.name), unit, v);
                }
            }
        }
    }

    /// Every series, in order of first recording.
    pub fn series(&self) -> &[Series] {
        &self.series
    }

    /// The series called `name`.
    pub fn get(&self, name: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.name == name)
    }

    /// Removes every series.
    pub fn clear(&mut self) {
        self.series.clear();
    }

    /// The series as JSON: `{"series":[{"name":..,"unit":..,"points":[[t,v],..]},..]}`.
    pub fn to_json(&self) -> String {
        // Cannot fail: string keys only, and `record` admits only finite numbers.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads series written by [`to_json`](Self::to_json).
    ///
    /// # Errors
    /// When `json` is not such a document.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Draws the run as an SVG document: one panel per unit, in order of first appearance,
    /// sharing the time axis; each panel has labelled ticks on both axes, a line per series
    /// and a legend. Every line is a `<polyline>` with a `data-series` attribute naming its
    /// series. Text is escaped, so any series name gives well-formed XML.
    pub fn to_svg(&self, options: &ChartOptions) -> String {
        let mut units: Vec<Unit> = Vec::new();
        for s in &self.series {
            if !units.contains(&s.unit) {
                units.push(s.unit);
            }
        }
        let width = f64::from(options.width.max(300));
        let panel_h = f64::from(options.panel_height.max(80));
        let (left, right_legend, top, gap, bottom) = (80.0, 250.0, 40.0, 50.0, 40.0);
        let plot_w = width - left - right_legend;
        let panels = units.len().max(1) as f64;
        let height = top + panels * panel_h + (panels - 1.0) * gap + bottom;

        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
        );
        out.push_str(
            "<style>.title{font-size:15px;font-weight:bold}.panel{font-size:12px;font-weight:bold}\
             .tick{fill:#444}.legend{fill:#222}.grid{stroke:#e4e4e4}.axis{stroke:#333}</style>\n",
        );
        let _ = writeln!(
            out,
            r#"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="white"/>"#
        );
        text(
            &mut out,
            width / 2.0,
            22.0,
            "middle",
            "title",
            &options.title,
        );

        let points = self.series.iter().flat_map(|s| s.points.iter());
        let (t0, t1) = points.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(t, _)| {
            (a.min(t), b.max(t))
        });
        if !t0.is_finite() {
            text(
                &mut out,
                width / 2.0,
                top + panel_h / 2.0,
                "middle",
                "panel",
                "no data",
            );
            out.push_str("</svg>\n");
            return out;
        }
        let xticks = nice_ticks(t0, t1, 8);
        let (x0, x1) = (xticks[0], xticks[xticks.len() - 1]);
        let sx = |t: f64| left + (t - x0) / (x1 - x0) * plot_w;

        for (pi, &unit) in units.iter().enumerate() {
            let py = top + pi as f64 * (panel_h + gap);
            let in_panel: Vec<(usize, &Series)> = self
                .series
                .iter()
                .enumerate()
                .filter(|(_, s)| s.unit == unit)
                .collect();
            let (mut lo, mut hi) = in_panel
                .iter()
                .flat_map(|(_, s)| s.points.iter())
                .fold((0.0f64, f64::NEG_INFINITY), |(a, b), &(_, v)| {
                    (a.min(v), b.max(v))
                });
            if unit == Unit::Ratio {
                hi = hi.max(1.0);
            }
            if hi <= lo {
                hi = lo + 1.0;
            }
            let yticks = value_ticks(unit, lo, hi);
            (lo, hi) = (yticks[0], yticks[yticks.len() - 1]);
            let sy = |v: f64| py + panel_h - (v - lo) / (hi - lo) * panel_h;

            text(&mut out, left, py - 8.0, "start", "panel", unit_title(unit));
            let _ = writeln!(out, r#"<g class="panel-frame">"#);
            for &v in &yticks {
                let y = sy(v);
                let _ = writeln!(
                    out,
                    r#"<line class="grid" x1="{left:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"#,
                    left + plot_w
                );
                text(
                    &mut out,
                    left - 6.0,
                    y + 4.0,
                    "end",
                    "tick",
                    &unit.format(v),
                );
            }
            for &t in &xticks {
                let x = sx(t);
                let _ = writeln!(
                    out,
                    r#"<line class="axis" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}"/>"#,
                    py + panel_h,
                    py + panel_h + 4.0
                );
                text(
                    &mut out,
                    x,
                    py + panel_h + 16.0,
                    "middle",
                    "tick",
                    &format!("{} s", trim_float(t)),
                );
            }
            let _ = writeln!(
                out,
                r#"<rect class="axis" x="{left:.1}" y="{py:.1}" width="{plot_w:.1}" height="{panel_h:.1}" fill="none"/>"#
            );
            out.push_str("</g>\n");

            for (li, (si, s)) in in_panel.iter().enumerate() {
                let color = PALETTE[si % PALETTE.len()];
                let mut pts = String::new();
                for &(t, v) in &s.points {
                    let _ = write!(pts, "{:.2},{:.2} ", sx(t), sy(v));
                }
                let _ = writeln!(
                    out,
                    r#"<polyline class="series" data-series="{}" fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    escape(&s.name),
                    pts.trim_end()
                );
                if let [(t, v)] = s.points[..] {
                    let _ = writeln!(
                        out,
                        r#"<circle cx="{:.2}" cy="{:.2}" r="2.5" fill="{color}"/>"#,
                        sx(t),
                        sy(v)
                    );
                }
                let ly = py + 10.0 + li as f64 * 16.0;
                let lx = left + plot_w + 12.0;
                let _ = writeln!(
                    out,
                    r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/>"#,
                    lx + 16.0
                );
                // About 6.5 px per character: shorten what would run off the picture, keeping
                // the full name as a tooltip.
                let room = ((width - lx - 26.0) / 6.5).max(4.0) as usize;
                let shown = if s.name.chars().count() > room {
                    let tail: String = {
                        let chars: Vec<char> = s.name.chars().collect();
                        chars[chars.len() - (room - 1)..].iter().collect()
                    };
                    format!("…{tail}")
                } else {
                    s.name.clone()
                };
                let _ = writeln!(out, "<g><title>{}</title>", escape(&s.name));
                text(&mut out, lx + 22.0, ly + 4.0, "start", "legend", &shown);
                out.push_str("</g>\n");
            }
        }
        text(
            &mut out,
            left + plot_w / 2.0,
            height - 6.0,
            "middle",
            "tick",
            "time (s)",
        );
        out.push_str("</svg>\n");
        out
    }
}

/// Nice ticks for values in `unit`: bytes step by 1, 2, 2.5 or 5 times a power of 1024 (so
/// the labels read 64 MiB, not 47.68 MiB), everything else by powers of ten.
fn value_ticks(unit: Unit, lo: f64, hi: f64) -> Vec<f64> {
    let mut base = 1.0;
    if unit == Unit::Bytes {
        let top = lo.abs().max(hi.abs());
        while top / base >= 1024.0 {
            base *= 1024.0;
        }
    }
    nice_ticks(lo / base, hi / base, 5)
        .into_iter()
        .map(|t| t * base)
        .collect()
}

fn unit_title(unit: Unit) -> &'static str {
    match unit {
        Unit::Count => "count",
        Unit::Bytes => "bytes",
        Unit::Nanos => "time",
        Unit::BytesPerSec => "throughput",
        Unit::Ratio => "ratio",
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// How [`Recorder::to_svg`] lays out its chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartOptions {
    /// The chart's title.
    pub title: String,
    /// Width in pixels (at least 300).
    pub width: u32,
    /// Height of each panel's plot area in pixels (at least 80).
    pub panel_height: u32,
}

impl Default for ChartOptions {
    fn default() -> Self {
        Self {
            title: "gantry statistics".to_owned(),
            width: 960,
            panel_height: 200,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ProviderSnapshot;
    use crate::svg::xml_check::check;

    fn sample_run() -> Recorder {
        let mut r = Recorder::new();
        for i in 0..20 {
            let t = f64::from(i) * 0.5;
            let report = Report::from_snapshots(vec![
                ProviderSnapshot::new("mem <&> \"x\"")
                    .gauge("device_local", i64::from(i) << 20, 20 << 20, Unit::Bytes)
                    .gauge("upload", i64::from(20 - i) << 10, 20 << 10, Unit::Bytes)
                    .float("fragmentation", f64::from(i % 7) / 7.0, Unit::Ratio)
                    .counter("frames", u64::from(i as u32), Unit::Count),
                ProviderSnapshot::new("transfer").float(
                    "upload.throughput",
                    1e9 * f64::from(i),
                    Unit::BytesPerSec,
                ),
            ]);
            r.record_report(t, &report);
        }
        r
    }

    #[test]
    fn svg_is_well_formed_with_one_line_per_series() {
        let r = sample_run();
        assert_eq!(r.series().len(), 5);
        let svg = r.to_svg(&ChartOptions {
            title: "run <1> & 'two'".into(),
            ..ChartOptions::default()
        });
        let elements = check(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(elements[0], "svg");
        let lines = elements.iter().filter(|e| *e == "polyline").count();
        assert_eq!(lines, r.series().len());
        for s in r.series() {
            let attr = format!(r#"data-series="{}""#, escape(&s.name));
            assert_eq!(svg.matches(&attr).count(), 1, "{attr}");
        }
        // One panel per unit: bytes, ratio, count, throughput.
        for title in ["bytes", "ratio", "count", "throughput"] {
            assert!(
                svg.contains(&format!(r#"class="panel">{title}<"#)),
                "{title}"
            );
        }
    }

    #[test]
    fn svg_edge_cases_stay_well_formed() {
        let empty = Recorder::new().to_svg(&ChartOptions::default());
        check(&empty).unwrap();
        let mut one = Recorder::new();
        one.record(3.0, "a", Unit::Nanos, 5.0);
        one.record(f64::NAN, "a", Unit::Nanos, 5.0);
        one.record(4.0, "a", Unit::Nanos, f64::INFINITY);
        assert_eq!(one.get("a").unwrap().points, vec![(3.0, 5.0)]);
        let svg = one.to_svg(&ChartOptions::default());
        assert_eq!(
            check(&svg)
                .unwrap()
                .iter()
                .filter(|e| *e == "polyline")
                .count(),
            1
        );
        let mut neg = Recorder::new();
        neg.record(0.0, "g", Unit::Count, -5.0);
        neg.record(1.0, "g", Unit::Count, -1.0);
        check(&neg.to_svg(&ChartOptions::default())).unwrap();
    }

    #[test]
    fn json_round_trip() {
        let r = sample_run();
        let back = Recorder::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }
}
