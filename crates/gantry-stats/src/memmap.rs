//! A memory map picture (S7): one allocator's (or block's) allocations by offset, free space
//! visible, as SVG.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::pressure::AllocatorUsage;
use crate::report::Unit;
use crate::svg::{PALETTE, escape, text};

/// One allocation in a [`MemoryMap`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRange {
    /// Offset of its first byte.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
    /// What it is (a buffer's label, an upload's id).
    pub label: String,
}

/// The allocations of one block of memory, drawn as an SVG picture by offset.
///
/// The block is drawn as `rows` horizontal bars read left to right, top to bottom; each
/// allocation is a coloured box (its label inside when it fits, and always as a tooltip), free
/// space is hatched grey, and ranges that overlap another are outlined in red.
///
/// # Example
/// ```
/// use gantry_stats::MemoryMap;
///
/// let map = MemoryMap::new("staging ring", 1 << 20)
///     .with_range(0, 256 << 10, "mesh upload")
///     .with_range(512 << 10, 128 << 10, "uniforms <frame 7>")
///     .with_range(768 << 10, 64 << 10, "readback");
/// assert_eq!(map.free_ranges(), vec![(256 << 10, 256 << 10), (640 << 10, 128 << 10), (832 << 10, 192 << 10)]);
/// let usage = map.usage();
/// assert_eq!((usage.used, usage.free, usage.largest_free), (448 << 10, 576 << 10, 256 << 10));
/// let svg = map.to_svg(800, 2);
/// assert!(svg.contains("uniforms &lt;frame 7&gt;"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryMap {
    /// The picture's title.
    pub title: String,
    /// Bytes in the block.
    pub total: u64,
    /// The allocations, in any order.
    pub ranges: Vec<MapRange>,
}

impl MemoryMap {
    /// An empty map of a block of `total` bytes.
    pub fn new(title: impl Into<String>, total: u64) -> Self {
        Self {
            title: title.into(),
            total,
            ranges: Vec::new(),
        }
    }

    /// Adds an allocation.
    pub fn push(&mut self, offset: u64, size: u64, label: impl Into<String>) {
        self.ranges.push(MapRange {
            offset,
            size,
            label: label.into(),
        });
    }

    /// Adds an allocation, builder style.
    pub fn with_range(mut self, offset: u64, size: u64, label: impl Into<String>) -> Self {
        self.push(offset, size, label);
        self
    }

    /// The `[start, end)` pieces of the block covered by allocations, merged and clipped to
    /// the block.
    fn covered(&self) -> Vec<(u64, u64)> {
        let mut spans: Vec<(u64, u64)> = self
            .ranges
            .iter()
            .map(|r| {
                let start = r.offset.min(self.total);
                (start, r.offset.saturating_add(r.size).min(self.total))
            })
            .filter(|(s, e)| e > s)
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    /// The free `(offset, size)` ranges: every part of the block no allocation covers.
    pub fn free_ranges(&self) -> Vec<(u64, u64)> {
        let mut free = Vec::new();
        let mut at = 0;
        for (s, e) in self.covered() {
            if s > at {
                free.push((at, s - at));
            }
            at = e;
        }
        if self.total > at {
            free.push((at, self.total - at));
        }
        free
    }

    /// Used, free and largest free bytes of the block (overlapping allocations count once).
    pub fn usage(&self) -> AllocatorUsage {
        let free = self.free_ranges();
        let free_bytes: u64 = free.iter().map(|&(_, s)| s).sum();
        AllocatorUsage {
            used: self.total - free_bytes,
            free: free_bytes,
            largest_free: free.iter().map(|&(_, s)| s).max().unwrap_or(0),
            wasted_at_wrap: 0,
        }
    }

    /// Indices of the ranges that overlap another range or end past the block.
    fn faulty(&self) -> Vec<bool> {
        let mut faulty = vec![false; self.ranges.len()];
        let mut order: Vec<usize> = (0..self.ranges.len()).collect();
        order.sort_unstable_by_key(|&i| self.ranges[i].offset);
        let mut reach: Option<(u64, usize)> = None; // furthest end so far, and whose
        for &i in &order {
            let r = &self.ranges[i];
            let end = r.offset.saturating_add(r.size);
            if end > self.total {
                faulty[i] = true;
            }
            if r.size == 0 {
                continue;
            }
            if let Some((far, j)) = reach
                && r.offset < far
            {
                faulty[i] = true;
                faulty[j] = true;
            }
            if reach.is_none_or(|(far, _)| end > far) {
                reach = Some((end, i));
            }
        }
        faulty
    }

    /// Draws the map as an SVG document `width` pixels wide, the block laid out over `rows`
    /// bars (at least 1).
    pub fn to_svg(&self, width: u32, rows: u32) -> String {
        let rows = u64::from(rows.max(1));
        let width = f64::from(width.max(200));
        let (left, right, top, row_h, row_gap) = (70.0, 20.0, 56.0, 36.0, 22.0);
        let bar_w = width - left - right;
        let height = top + rows as f64 * (row_h + row_gap) + 10.0;
        let total = self.total.max(1);
        let per_row = total.div_ceil(rows);

        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
        );
        out.push_str(concat!(
            "<defs><pattern id=\"free\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" ",
            "patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#f4f4f4\"/>",
            "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#c8c8c8\" stroke-width=\"2\"/>",
            "</pattern></defs>\n",
            "<style>.title{font-size:15px;font-weight:bold}.tick{fill:#444}.label{fill:white}",
            ".summary{fill:#222}</style>\n"
        ));
        let _ = writeln!(
            out,
            r#"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="white"/>"#
        );
        text(&mut out, left, 20.0, "start", "title", &self.title);
        let usage = self.usage();
        let holes = self.free_ranges().len();
        let summary = format!(
            "{} used of {}, {} free in {} range{}, largest free {}, fragmentation {}",
            Unit::Bytes.format(usage.used as f64),
            Unit::Bytes.format(self.total as f64),
            Unit::Bytes.format(usage.free as f64),
            holes,
            if holes == 1 { "" } else { "s" },
            Unit::Bytes.format(usage.largest_free as f64),
            Unit::Ratio.format(usage.fragmentation()),
        );
        text(&mut out, left, 38.0, "start", "summary", &summary);

        // Places [start, end) on the rows: one rectangle per row it touches.
        let pieces = |start: u64, end: u64| {
            let mut v = Vec::new();
            let mut s = start;
            while s < end {
                let row = s / per_row;
                let row_end = ((row + 1) * per_row).min(end);
                let x = left + (s - row * per_row) as f64 / per_row as f64 * bar_w;
                let w = ((row_end - s) as f64 / per_row as f64 * bar_w).max(1.0);
                v.push((x, top + row as f64 * (row_h + row_gap), w));
                s = row_end;
            }
            v
        };

        for row in 0..rows {
            let y = top + row as f64 * (row_h + row_gap);
            let start = row * per_row;
            let _ = writeln!(
                out,
                r##"<rect x="{left:.1}" y="{y:.1}" width="{bar_w:.1}" height="{row_h:.1}" fill="none" stroke="#333"/>"##
            );
            text(
                &mut out,
                left - 6.0,
                y + row_h / 2.0 + 4.0,
                "end",
                "tick",
                &Unit::Bytes.format(start.min(self.total) as f64),
            );
            for k in 0..=4u64 {
                let x = left + bar_w * k as f64 / 4.0;
                let off = (start + per_row * k / 4).min(self.total);
                let _ = writeln!(
                    out,
                    r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/>"##,
                    y + row_h,
                    y + row_h + 4.0
                );
                let anchor = match k {
                    0 => "start",
                    4 => "end",
                    _ => "middle",
                };
                text(
                    &mut out,
                    x,
                    y + row_h + 15.0,
                    anchor,
                    "tick",
                    &format!("0x{off:x}"),
                );
            }
        }

        for (offset, size) in self.free_ranges() {
            for (x, y, w) in pieces(offset, offset + size) {
                let _ = writeln!(
                    out,
                    r#"<rect class="free" x="{x:.2}" y="{y:.1}" width="{w:.2}" height="{row_h:.1}" fill="url(#free)"><title>free: {} at 0x{offset:x}</title></rect>"#,
                    escape(&Unit::Bytes.format(size as f64))
                );
            }
        }
        let faulty = self.faulty();
        for (i, r) in self.ranges.iter().enumerate() {
            let start = r.offset.min(self.total);
            let end = r.offset.saturating_add(r.size).min(self.total);
            let color = PALETTE[i % PALETTE.len()];
            let stroke = if faulty[i] {
                r##" stroke="#d00" stroke-width="2""##
            } else {
                r##" stroke="white" stroke-width="0.5""##
            };
            let tip = escape(&format!(
                "{}: 0x{:x}..0x{:x} ({}){}",
                r.label,
                r.offset,
                r.offset.saturating_add(r.size),
                Unit::Bytes.format(r.size as f64),
                if faulty[i] {
                    " overlaps another range or ends past the block"
                } else {
                    ""
                }
            ));
            for (x, y, w) in pieces(start, end) {
                let _ = writeln!(
                    out,
                    r#"<rect class="allocation" x="{x:.2}" y="{y:.1}" width="{w:.2}" height="{row_h:.1}" fill="{color}"{stroke}><title>{tip}</title></rect>"#
                );
                // About 6.5 px per character at 11 px.
                let fits = ((w - 6.0) / 6.5).floor().max(0.0) as usize;
                if fits >= 3 {
                    let label: String = if r.label.chars().count() > fits {
                        let mut l: String = r.label.chars().take(fits - 1).collect();
                        l.push('…');
                        l
                    } else {
                        r.label.clone()
                    };
                    text(
                        &mut out,
                        x + 3.0,
                        y + row_h / 2.0 + 4.0,
                        "start",
                        "label",
                        &label,
                    );
                }
            }
        }
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svg::xml_check::check;

    #[test]
    fn free_space_and_overlaps() {
        let map = MemoryMap::new("m", 100)
            .with_range(10, 20, "a")
            .with_range(25, 10, "b overlaps a")
            .with_range(90, 20, "c past the end")
            .with_range(50, 0, "empty");
        assert_eq!(map.free_ranges(), vec![(0, 10), (35, 55)]);
        let u = map.usage();
        assert_eq!((u.used, u.free, u.largest_free), (35, 65, 55));
        assert_eq!(map.faulty(), vec![true, true, true, false]);
        let svg = map.to_svg(600, 3);
        let elements = check(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert!(elements.iter().filter(|e| *e == "rect").count() >= 6);
        assert_eq!(svg.matches(r#"class="free""#).count(), 3, "{svg}"); // (35,55) spans 2 rows
    }

    #[test]
    fn empty_and_full_maps() {
        let empty = MemoryMap::new("<empty & free>", 0);
        assert!(empty.free_ranges().is_empty());
        check(&empty.to_svg(100, 0)).unwrap();
        let full = MemoryMap::new("f", 64).with_range(0, 64, "all");
        assert!(full.free_ranges().is_empty());
        assert_eq!(full.usage().fragmentation(), 0.0);
        check(&full.to_svg(500, 1)).unwrap();
    }
}
