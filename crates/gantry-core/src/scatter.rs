//! Scatter uploads: many small writes into one buffer as one compute dispatch.
//!
//! Every copy region costs a fixed amount of GPU time however regions are batched (about
//! 2.7 µs on an H100, `../shared/PERF.md`), so 10,000 scattered 256-byte writes recorded as
//! copy regions take 27-30 ms. A backend instead puts the writes' bytes in staging, as usual,
//! plus one table of *records* (destination offset, source offset, length, in 4-byte words),
//! and records one dispatch of [`WGSL`]: each workgroup copies records `r`, `r + groups`,
//! `r + 2 * groups` ... (a grid-stride loop), 64 lanes per record. The whole frame then costs
//! one dispatch of at most [`MAX_GROUPS`] workgroups: enough to fill a large GPU, few enough
//! that a CPU implementation (lavapipe) does not pay a per-workgroup cost per record.
//!
//! Writes whose offsets and lengths are all multiples of 16 bytes (the common case: vertex,
//! instance and uniform data) get the *wide* shader, [`WGSL_WIDE`]: 16-byte elements and eight
//! lanes per workgroup, so a 256-byte record is two steps of eight lanes. A CPU implementation
//! (lavapipe's llvmpipe) pays per eight-lane step and per lane access, not per byte: on the dev
//! machine, 10,000 records of 256 bytes took 17 ms with the word shader and about 4 ms with
//! the wide one. A GPU runs either far faster than the host records the writes.
//!
//! This module holds what both backends share: the shaders, the record layout, and the
//! planning ([`ScatterPlan::new`]) that decides whether a set of writes may be scattered at
//! all: enough of them to pay for the dispatch, all 4-byte aligned, destination ranges that do
//! not overlap (the lanes of one dispatch run in no defined order, so overlapping writes would
//! race; such batches keep their copies, which keep program order), and windows that fit one
//! storage binding.
//!
//! # Record table
//! `records[0]` is the number of records `n`; record `r` is the three words at
//! `1 + 3r`: destination offset (from the destination binding's start), source offset (from
//! the source binding's start) and length, all in *units* of the plan's shader: 4-byte words
//! for [`WGSL`], 16-byte elements for [`WGSL_WIDE`] ([`ScatterPlan::unit`]).
//!
//! ```
//! use gantry_core::scatter::{ScatterPlan, ScatterWrite, apply};
//! // 32 writes of 8 bytes, in reverse order, to every other 8-byte slot.
//! let writes: Vec<ScatterWrite> = (0..32u64)
//!     .rev()
//!     .map(|i| ScatterWrite { dst_offset: 1024 + 16 * i, src_offset: 8 * (31 - i), len: 8 })
//!     .collect();
//! let plan = ScatterPlan::new(&writes, 256, 1 << 27).expect("scatterable");
//! assert_eq!(plan.dst_base, 1024);
//! assert_eq!(plan.groups, [32, 1]);
//! assert!(!plan.wide); // 8-byte writes: the word shader
//!
//! // What the dispatch does, on the CPU.
//! let staging: Vec<u8> = (0..=255u8).collect();
//! let mut dst = vec![0u8; 2048];
//! let window = plan.dst_base as usize..(plan.dst_base + plan.dst_size) as usize;
//! apply(&plan.records, plan.unit(), &staging[plan.src_base as usize..], &mut dst[window]);
//! assert_eq!(&dst[1024 + 16 * 31..1024 + 16 * 31 + 8], &staging[0..8]);
//! ```

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The scatter shader (WGSL). Bindings of group 0: `0` the record table (read-only
/// storage), `1` the source bytes (read-only storage), `2` the destination window
/// (read-write storage). Dispatch [`ScatterPlan::groups`] workgroups.
pub const WGSL: &str = r"// gantry scatter: workgroups take records in turn (see gantry_core::scatter).
@group(0) @binding(0) var<storage, read> records: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let count = records[0];
    let stride = groups.x * groups.y;
    for (var r = wg.x + wg.y * groups.x; r < count; r = r + stride) {
        let base = 1u + 3u * r;
        let d = records[base];
        let s = records[base + 1u];
        let n = records[base + 2u];
        for (var i = lane; i < n; i = i + 64u) {
            dst[d + i] = src[s + i];
        }
    }
}
";

/// The wide scatter shader (WGSL), for plans whose offsets and lengths are all multiples of
/// 16 bytes ([`ScatterPlan::wide`]): the same bindings and record table as [`WGSL`], in
/// 16-byte units, with [`WIDE_WORKGROUP_SIZE`] lanes per workgroup.
pub const WGSL_WIDE: &str = r"// gantry wide scatter: 16-byte units, eight lanes a record (see gantry_core::scatter).
@group(0) @binding(0) var<storage, read> records: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let count = records[0];
    let stride = groups.x * groups.y;
    for (var r = wg.x + wg.y * groups.x; r < count; r = r + stride) {
        let base = 1u + 3u * r;
        let d = records[base];
        let s = records[base + 1u];
        let n = records[base + 2u];
        for (var i = lane; i < n; i = i + 8u) {
            dst[d + i] = src[s + i];
        }
    }
}
";

/// [`WGSL`] compiled to SPIR-V 1.0 by naga (checked in; a test regenerates it and fails when
/// it differs: run `GANTRY_BLESS=1 cargo test -p gantry-core scatter` after editing the WGSL).
/// Little-endian bytes, as `ash::util::read_spv` takes them.
pub const SPIRV: &[u8] = include_bytes!("scatter.spv");

/// [`WGSL_WIDE`] compiled to SPIR-V 1.0 by naga (checked in, tested like [`SPIRV`]).
pub const SPIRV_WIDE: &[u8] = include_bytes!("scatter_wide.spv");

/// The shaders' entry point.
pub const ENTRY_POINT: &str = "main";

/// Lanes per workgroup in [`WGSL`].
pub const WORKGROUP_SIZE: u32 = 64;

/// Lanes per workgroup in [`WGSL_WIDE`].
pub const WIDE_WORKGROUP_SIZE: u32 = 8;

/// Bytes per unit of [`WGSL_WIDE`]'s record table (a `vec4<u32>`).
pub const WIDE_UNIT: u64 = 16;

/// Largest write a backend should defer for scattering; larger writes are cheaper as copy
/// regions (one region moves ~135 KB in the time it costs on an H100).
pub const MAX_WRITE: u64 = 16 << 10;

/// Fewest writes to one destination worth a dispatch; below this, copy regions are cheaper
/// than the dispatch and its barriers.
pub const MIN_WRITES: usize = 16;

/// Words per record in the table (after the leading count).
pub const RECORD_WORDS: usize = 3;

/// Most workgroups one dispatch uses (records are shared out in a grid-stride loop), unless
/// the plan is [spread](ScatterPlan::spread).
pub const MAX_GROUPS: u32 = 1024;

/// Most workgroups a spread plan puts in one row (`x`): Vulkan's guaranteed minimum of
/// `maxComputeWorkGroupCount`, and wgpu's default `max_compute_workgroups_per_dimension`.
pub const MAX_GROUPS_X: u32 = 65_535;

/// One deferred write: `len` bytes from `src_offset` in staging to `dst_offset` in the
/// destination buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScatterWrite {
    /// Byte offset in the destination buffer.
    pub dst_offset: u64,
    /// Byte offset of the bytes in the staging buffer they were copied into.
    pub src_offset: u64,
    /// Bytes (a non-zero multiple of 4).
    pub len: u64,
}

impl ScatterWrite {
    /// The write a copy of `len` bytes from `src_offset` (in a source buffer the dispatch
    /// binds) to `dst_offset` amounts to.
    #[must_use]
    pub const fn of_copy((src_offset, dst_offset, len): (u64, u64, u64)) -> Self {
        Self {
            dst_offset,
            src_offset,
            len,
        }
    }
}

/// Whether a dispatch can carry a write of `len` bytes between these offsets: not empty, at
/// most [`MAX_WRITE`] bytes, everything 4-byte aligned.
#[must_use]
pub const fn carries(dst_offset: u64, src_offset: u64, len: u64) -> bool {
    len > 0 && len <= MAX_WRITE && (dst_offset | src_offset | len).is_multiple_of(4)
}

/// Whether a dispatch can carry every one of `writes` (`(dst_offset, bytes)`, source offset 0:
/// [`carries`]), and their bytes in all: one branch-free pass, for thousands of writes.
///
/// ```
/// use gantry_core::scatter::carries_all;
/// let a = [7u8; 256];
/// assert_eq!(carries_all(&[(0, &a[..]), (512, &a[..])]), (true, 512));
/// assert_eq!(carries_all(&[(0, &a[..]), (2, &a[..])]), (false, 512));
/// assert_eq!(carries_all(&[(0, &a[..0])]), (false, 0));
/// ```
#[must_use]
pub fn carries_all(writes: &[(u64, &[u8])]) -> (bool, usize) {
    let (mut bits, mut total, mut bad) = (0u64, 0usize, false);
    for &(offset, data) in writes {
        let len = data.len();
        bits |= offset | len as u64;
        total = total.wrapping_add(len);
        bad |= len == 0 || len as u64 > MAX_WRITE;
    }
    (!bad && bits.is_multiple_of(4), total)
}

/// A piece of a list of copies cut by [`copy_runs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyRun<'a> {
    /// Consecutive copies a dispatch can carry ([`carries`]).
    Scatter(&'a [(u64, u64, u64)]),
    /// One copy it cannot: a copy region.
    Copy(u64, u64, u64),
}

/// Cuts `copies` (`(src_offset, dst_offset, len)`, in program order) into the longest runs a
/// scatter dispatch can carry and, between them, the single copies it cannot; in order, so a
/// backend defers each run as a whole and records each other copy where it stands.
///
/// ```
/// use gantry_core::scatter::{copy_runs, CopyRun};
/// let copies = [(0, 64, 16), (16, 128, 16), (32, 7, 16), (48, 256, 16)];
/// let runs: Vec<CopyRun> = copy_runs(&copies).collect();
/// assert_eq!(
///     runs,
///     [CopyRun::Scatter(&copies[..2]), CopyRun::Copy(32, 7, 16), CopyRun::Scatter(&copies[3..])]
/// );
/// ```
pub fn copy_runs(copies: &[(u64, u64, u64)]) -> impl Iterator<Item = CopyRun<'_>> {
    let mut rest = copies;
    core::iter::from_fn(move || {
        let &(src_offset, dst_offset, len) = rest.first()?;
        if !carries(dst_offset, src_offset, len) {
            rest = &rest[1..];
            return Some(CopyRun::Copy(src_offset, dst_offset, len));
        }
        let n = rest
            .iter()
            .position(|&(s, d, l)| !carries(d, s, l))
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(CopyRun::Scatter(run))
    })
}

/// A list of copies between two buffers (`(src_offset, dst_offset, len)` each, in program
/// order) that keeps, as it grows, what a batch must check about it: the largest ends, the
/// low bits of every offset and length, the longest entry, and how many entries continue
/// their predecessor in both buffers. [`crate::Batch::copy_list`] then checks the whole list
/// in constant time instead of entry by entry, and hands it to the backend as it is: a list
/// of thousands of copies built once (a manager's staged uploads) is walked once. It also
/// keeps what a scatter dispatch's plan needs (the windows of both buffers, the alignment of
/// the destination ranges), so [`ScatterPlan::of_list`] plans one with a single pass over
/// the entries (the one that fills its record table).
///
/// Empty entries are left out. Nothing is merged: entry `k` is the `k`-th non-empty push, so
/// a list that says where each of a set of writes is staged stays in step with the writes
/// ([`crate::Device::write_mapped_list`]).
///
/// ```
/// use gantry_core::scatter::CopyList;
/// let mut list = CopyList::new();
/// assert!(!list.push(0, 512, 256));
/// assert!(list.push(256, 768, 256)); // continues the first in both buffers
/// assert!(!list.push(512, 0, 256));
/// list.push(768, 4096, 0); // empty: left out
/// assert_eq!(list.len(), 3);
/// assert_eq!(list.joins(), 1);
/// assert!(list.carried());
/// assert_eq!((list.src_end(), list.dst_end()), (768, 1024));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyList {
    items: Vec<ScatterWrite>,
    sum: ListSum,
}

/// What a [`CopyList`] keeps about its entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ListSum {
    /// Every offset and length ORed together (alignment checks).
    bits: u64,
    /// Every destination offset and length ORed together (the plan's bitmap cell).
    dst_bits: u64,
    /// Smallest `src_offset` (`u64::MAX` for none; exact whenever `src_end` is not
    /// `u64::MAX`).
    src_lo: u64,
    /// Largest `src_offset + len` (`u64::MAX` once one overflows).
    src_end: u64,
    /// Smallest `dst_offset` (`u64::MAX` for none).
    dst_lo: u64,
    /// Largest `dst_offset + len` (`u64::MAX` once one overflows).
    dst_end: u64,
    /// Longest entry.
    max_len: u64,
    /// Entries that start where their predecessor ends, in both buffers.
    joins: usize,
}

impl ListSum {
    const EMPTY: Self = Self {
        bits: 0,
        dst_bits: 0,
        src_lo: u64::MAX,
        src_end: 0,
        dst_lo: u64::MAX,
        dst_end: 0,
        max_len: 0,
        joins: 0,
    };
}

impl Default for CopyList {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyList {
    /// An empty list.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            items: Vec::new(),
            sum: ListSum::EMPTY,
        }
    }

    /// An empty list with room for `n` entries.
    #[must_use]
    pub fn with_capacity(n: usize) -> Self {
        Self {
            items: Vec::with_capacity(n),
            ..Self::new()
        }
    }

    /// Appends a copy of `len` bytes from `src_offset` to `dst_offset` (nothing when `len`
    /// is 0); returns whether it starts where the previous entry ends in both buffers.
    #[inline]
    pub fn push(&mut self, src_offset: u64, dst_offset: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        let last = self.items.last();
        let joins = last.is_some_and(|l| {
            l.src_offset.wrapping_add(l.len) == src_offset
                && l.dst_offset.wrapping_add(l.len) == dst_offset
        });
        let s = &mut self.sum;
        s.joins += usize::from(joins);
        s.bits |= src_offset | dst_offset | len;
        s.dst_bits |= dst_offset | len;
        s.src_lo = s.src_lo.min(src_offset);
        s.src_end = s.src_end.max(src_offset.saturating_add(len));
        s.dst_lo = s.dst_lo.min(dst_offset);
        s.dst_end = s.dst_end.max(dst_offset.saturating_add(len));
        s.max_len = s.max_len.max(len);
        self.items.push(ScatterWrite {
            dst_offset,
            src_offset,
            len,
        });
        joins
    }

    /// Appends a copy for each non-empty write of `writes` (`(dst_offset, bytes)`), staged
    /// back to back from source offset `base`: each at a multiple of `align` (a power of
    /// two; another is taken as the next one) from `base`, the previous write's length
    /// rounded up to it after the previous start. Returns the bytes the writes take from
    /// `base` (the last length rounded up too) and how many entries start where their
    /// predecessor ends in both buffers. What [`Self::push`] does per write, with the same
    /// entries and summary, in one pass whose only step from one entry to the next is an
    /// addition: for thousands of writes staged as one region.
    ///
    /// ```
    /// use gantry_core::scatter::CopyList;
    /// let a = [1u8; 12];
    /// let mut list = CopyList::new();
    /// let (end, joins) = list.push_packed(4096, &[(0, &a[..]), (12, &a[..0]), (64, &a[..])], 16);
    /// assert_eq!((end, joins), (32, 0));
    /// assert_eq!(list.len(), 2);
    /// assert_eq!((list.as_slice()[1].src_offset, list.as_slice()[1].dst_offset), (4112, 64));
    /// assert_eq!(list.src_end(), 4112 + 12);
    /// ```
    pub fn push_packed(&mut self, base: u64, writes: &[(u64, &[u8])], align: u64) -> (u64, usize) {
        let mask = pad_mask(align);
        self.items.reserve(writes.len());
        // What the list keeps, in registers and off the step from one entry's start to the
        // next (an addition of a length rounded up, computed beside it). The source ranges
        // ascend, so the first one starts them and the last one's end bounds them (unless
        // the sum wrapped). `Part::place` is the same loop for a part; written once, through
        // a closure that takes each entry (a push here, a slot there), this pass took a
        // fifth longer (10,000 entries: 32 -> 38 us on the dev machine).
        let (mut bits, mut dst_bits, mut dst_lo, mut dst_hi) = (0u64, 0u64, u64::MAX, 0u64);
        let mut longest = 0u64;
        let (mut prev_end, mut prev_dst) = self.last_ends(base);
        let (mut joins, mut end, mut wrapped) = (0usize, 0u64, false);
        for &(dst_offset, data) in writes {
            let len = data.len() as u64;
            if len == 0 {
                continue;
            }
            let at = end;
            end = at.wrapping_add(len.wrapping_add(mask) & !mask);
            wrapped |= (end < at) | (len > !mask);
            joins += usize::from((at == prev_end) & (dst_offset == prev_dst));
            prev_end = at.wrapping_add(len);
            prev_dst = dst_offset.wrapping_add(len);
            bits |= at | dst_offset | len;
            dst_bits |= dst_offset | len;
            dst_lo = dst_lo.min(dst_offset);
            dst_hi = dst_hi.max(dst_offset.saturating_add(len));
            longest = longest.max(len);
            self.items.push(ScatterWrite {
                dst_offset,
                src_offset: base.wrapping_add(at),
                len,
            });
        }
        self.absorb(
            base,
            Part {
                bits,
                dst_bits,
                dst_lo,
                dst_hi,
                longest,
                joins,
                first: (0, 0),
                last: (prev_end, prev_dst),
            },
            wrapped,
        );
        (if wrapped { u64::MAX } else { end }, joins)
    }

    /// Where the last entry ends, in the source (counted from `base`) and the destination
    /// (`u64::MAX` for no entry: nothing continues it).
    fn last_ends(&self, base: u64) -> (u64, u64) {
        self.items.last().map_or((u64::MAX, u64::MAX), |l| {
            (
                l.src_offset.wrapping_add(l.len).wrapping_sub(base),
                l.dst_offset.wrapping_add(l.len),
            )
        })
    }

    /// [`Self::push_packed`] with its work split into `parts` parts that `run` may run in
    /// parallel ([`ScatterPlan::new_in_parts`]'s runner): the same entries, summary and
    /// result. Each part first measures its writes (entries, bytes once padded); then, each
    /// from where the parts before it end, places and summarizes them into its own slice of
    /// the list. Falls back to [`Self::push_packed`] for fewer than two parts' worth.
    ///
    /// ```
    /// use gantry_core::scatter::CopyList;
    /// let bytes = [3u8; 48];
    /// let writes: Vec<(u64, &[u8])> =
    ///     (0..5000u64).map(|i| (i * 7919 % 5000 * 64, &bytes[..(i % 3 * 16) as usize])).collect();
    /// let run = |n: usize, f: &(dyn Fn(usize) + Sync)| (0..n).for_each(f);
    /// let (mut one, mut parts) = (CopyList::new(), CopyList::new());
    /// let a = one.push_packed(256, &writes, 16);
    /// let b = parts.push_packed_in_parts(256, &writes, 16, 4, &run);
    /// assert_eq!((a, one), (b, parts));
    /// ```
    pub fn push_packed_in_parts(
        &mut self,
        base: u64,
        writes: &[(u64, &[u8])],
        align: u64,
        parts: usize,
        run: &PartRunner<'_>,
    ) -> (u64, usize) {
        let part_len = writes.len().div_ceil(parts.max(1)).max(MIN_WRITES);
        if parts <= 1 || writes.len() < 2 * part_len {
            return self.push_packed(base, writes, align);
        }
        let mask = align.max(1).checked_next_power_of_two().unwrap_or(1 << 63) - 1;
        let chunks: Vec<&[(u64, &[u8])]> = writes.chunks(part_len).collect();
        // Each part's entries and padded bytes.
        let sizes: Vec<Mutex<(usize, u64, bool)>> =
            chunks.iter().map(|_| Mutex::new((0, 0, false))).collect();
        run(chunks.len(), &|i| {
            let (mut n, mut sum, mut wrapped) = (0usize, 0u64, false);
            for &(_, data) in chunks[i] {
                let len = data.len() as u64;
                n += usize::from(len != 0);
                let next = sum.wrapping_add(len.wrapping_add(mask) & !mask);
                wrapped |= (next < sum) | (len > !mask);
                sum = next;
            }
            *lock(&sizes[i]) = (n, sum, wrapped);
        });
        // Where each part starts, in the list and from `base`.
        let first = self.items.len();
        let mut starts = Vec::with_capacity(chunks.len());
        let (mut items, mut at, mut wrapped) = (first, 0u64, false);
        for size in sizes {
            let (n, sum, w) = size.into_inner().unwrap_or_else(PoisonError::into_inner);
            starts.push((n, at));
            items += n;
            let next = at.wrapping_add(sum);
            wrapped |= w | (next < at);
            at = next;
        }
        let (before_end, before_dst) = self.last_ends(base);
        self.items.resize(items, ScatterWrite::of_copy((0, 0, 0)));
        let mut rest = &mut self.items[first..];
        let slots: Vec<Mutex<(&mut [ScatterWrite], Part)>> = starts
            .iter()
            .map(|&(n, _)| {
                let (slot, tail) = core::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                Mutex::new((slot, Part::default()))
            })
            .collect();
        run(chunks.len(), &|i| {
            let mut guard = lock(&slots[i]);
            let (slot, part) = &mut *guard;
            let mut slots = slot.iter_mut();
            *part = Part::place(chunks[i], base, starts[i].1, mask, |w| {
                if let Some(s) = slots.next() {
                    *s = w;
                }
            })
            .0;
        });
        // The parts' summaries in order; a part's first entry joins the last entry before it.
        let mut all = Part::default();
        let (mut prev_end, mut prev_dst) = (before_end, before_dst);
        for slot in slots {
            let (_, p) = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
            if p.longest == 0 {
                continue;
            }
            all.joins += p.joins + usize::from((p.first.0 == prev_end) & (p.first.1 == prev_dst));
            if all.longest == 0 {
                all.first = p.first;
            }
            (prev_end, prev_dst) = p.last;
            all.bits |= p.bits;
            all.dst_bits |= p.dst_bits;
            all.dst_lo = all.dst_lo.min(p.dst_lo);
            all.dst_hi = all.dst_hi.max(p.dst_hi);
            all.longest = all.longest.max(p.longest);
        }
        let joins = all.joins;
        all.last = (prev_end, prev_dst);
        self.absorb(base, all, wrapped);
        (if wrapped { u64::MAX } else { at }, joins)
    }

    /// Adds to the summary what placing entries from `base` found (`p.first.0`: where the
    /// first one starts, `p.last.0`: where the last one ends, both from `base`; `wrapped`: a
    /// sum overflowed, so no bound holds). Joins with the entry before the first placed one
    /// are in `p` already.
    fn absorb(&mut self, base: u64, p: Part, wrapped: bool) {
        if p.longest == 0 {
            return;
        }
        let s = &mut self.sum;
        s.bits |= p.bits | base;
        s.dst_bits |= p.dst_bits;
        s.max_len = s.max_len.max(p.longest);
        let src_end = if wrapped {
            u64::MAX
        } else {
            base.saturating_add(p.last.0)
        };
        // The placed ranges ascend from the first (when `src_end` is exact).
        s.src_lo = s.src_lo.min(base.wrapping_add(p.first.0));
        s.src_end = s.src_end.max(src_end);
        s.dst_lo = s.dst_lo.min(p.dst_lo);
        s.dst_end = s.dst_end.max(p.dst_hi);
        s.joins += p.joins;
    }

    /// The list's length and summary, to [`Self::restore`] after entries pushed since are
    /// refused.
    pub(crate) fn snapshot(&self) -> (usize, ListSum) {
        (self.items.len(), self.sum)
    }

    /// Drops the entries pushed since `snapshot` was taken and restores its summary.
    pub(crate) fn restore(&mut self, (len, sum): (usize, ListSum)) {
        self.items.truncate(len);
        self.sum = sum;
    }

    /// Reserves room for `n` more entries.
    pub fn reserve(&mut self, n: usize) {
        self.items.reserve(n);
    }

    /// Empties the list, keeping its memory.
    pub fn clear(&mut self) {
        self.items.clear();
        self.sum = ListSum::EMPTY;
    }

    /// The entries, in the order pushed.
    #[must_use]
    pub fn as_slice(&self) -> &[ScatterWrite] {
        &self.items
    }

    /// Entries the list holds without allocating.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.items.capacity()
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the list has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Entries that start where their predecessor ends in both buffers (a copy of the list
    /// as regions needs `len() - joins()` of them).
    #[must_use]
    pub const fn joins(&self) -> usize {
        self.sum.joins
    }

    /// Whether the entries form one contiguous range in both buffers.
    #[must_use]
    pub fn is_contiguous(&self) -> bool {
        !self.items.is_empty() && self.sum.joins + 1 == self.items.len()
    }

    /// Largest end of a source range (`u64::MAX` if one overflows).
    #[must_use]
    pub const fn src_end(&self) -> u64 {
        self.sum.src_end
    }

    /// Largest end of a destination range (`u64::MAX` if one overflows).
    #[must_use]
    pub const fn dst_end(&self) -> u64 {
        self.sum.dst_end
    }

    /// Every offset and length ORed together: the list is aligned to `a` (a power of two)
    /// when `bits() % a == 0`.
    #[must_use]
    pub const fn bits(&self) -> u64 {
        self.sum.bits
    }

    /// Whether a scatter dispatch can carry every entry ([`carries`]).
    #[must_use]
    pub const fn carried(&self) -> bool {
        self.sum.bits.is_multiple_of(4) && self.sum.max_len <= MAX_WRITE
    }

    /// The entries as copy regions, `(src_offset, dst_offset, len)`, each run of entries
    /// contiguous in both buffers merged into one.
    ///
    /// ```
    /// use gantry_core::scatter::CopyList;
    /// let mut list = CopyList::new();
    /// for (s, d) in [(0, 100), (8, 108), (16, 0), (24, 8)] {
    ///     list.push(s, d, 8);
    /// }
    /// assert_eq!(list.regions().collect::<Vec<_>>(), [(0, 100, 16), (16, 0, 16)]);
    /// ```
    pub fn regions(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        // One contiguous range (an adjacent list): one region, without a pass.
        let whole = match (self.is_contiguous(), self.items.first(), self.items.last()) {
            (true, Some(f), Some(l)) => Some((
                f.src_offset,
                f.dst_offset,
                l.src_offset.wrapping_add(l.len).wrapping_sub(f.src_offset),
            )),
            _ => None,
        };
        let mut rest = if whole.is_some() {
            &[][..]
        } else {
            &self.items[..]
        };
        whole.into_iter().chain(core::iter::from_fn(move || {
            let (first, tail) = rest.split_first()?;
            let mut len = first.len;
            let n = tail
                .iter()
                .position(|w| {
                    let next = w.src_offset == first.src_offset.wrapping_add(len)
                        && w.dst_offset == first.dst_offset.wrapping_add(len);
                    len = len.wrapping_add(w.len);
                    !next
                })
                .unwrap_or(tail.len());
            let len = tail[..n]
                .iter()
                .fold(first.len, |l, w| l.wrapping_add(w.len));
            rest = &tail[n..];
            Some((first.src_offset, first.dst_offset, len))
        }))
    }
}

/// What placing one part of [`CopyList::push_packed_in_parts`] found.
#[derive(Clone, Copy, Debug)]
struct Part {
    bits: u64,
    dst_bits: u64,
    dst_lo: u64,
    /// Largest destination end (saturating).
    dst_hi: u64,
    /// 0: the part has no entries.
    longest: u64,
    /// Entries after the part's first that continue their predecessor.
    joins: usize,
    /// The first entry's start (from the list's base) and destination offset.
    first: (u64, u64),
    /// The last entry's end (from the base) and destination end.
    last: (u64, u64),
}

impl Default for Part {
    fn default() -> Self {
        Self {
            bits: 0,
            dst_bits: 0,
            dst_lo: u64::MAX,
            dst_hi: 0,
            longest: 0,
            joins: 0,
            first: (u64::MAX, u64::MAX),
            last: (u64::MAX, u64::MAX),
        }
    }
}

impl Part {
    /// Places the non-empty writes of `writes`, in order, from `at` (counted from `base`),
    /// each length rounded up to `mask + 1`, as `push_packed` does: gives each entry to
    /// `put`; returns what it found, where the last one ends once rounded up, and whether a
    /// sum overflowed.
    #[inline]
    fn place(
        writes: &[(u64, &[u8])],
        base: u64,
        at: u64,
        mask: u64,
        mut put: impl FnMut(ScatterWrite),
    ) -> (Self, u64, bool) {
        // Kept in locals, not the struct's fields, and the first entry found apart (it is
        // placed at `at`): in the loop they cost a third more.
        let first = writes
            .iter()
            .find(|w| !w.1.is_empty())
            .map_or((u64::MAX, u64::MAX), |w| (at, w.0));
        let (mut bits, mut dst_bits, mut dst_lo, mut dst_hi) = (0u64, 0u64, u64::MAX, 0u64);
        let (mut longest, mut joins) = (0u64, 0usize);
        let (mut prev_end, mut prev_dst) = (u64::MAX, u64::MAX);
        let (mut end, mut wrapped) = (at, false);
        for &(dst_offset, data) in writes {
            let len = data.len() as u64;
            if len == 0 {
                continue;
            }
            let at = end;
            end = at.wrapping_add(len.wrapping_add(mask) & !mask);
            wrapped |= (end < at) | (len > !mask);
            joins += usize::from((at == prev_end) & (dst_offset == prev_dst));
            prev_end = at.wrapping_add(len);
            prev_dst = dst_offset.wrapping_add(len);
            bits |= at | dst_offset | len;
            dst_bits |= dst_offset | len;
            dst_lo = dst_lo.min(dst_offset);
            dst_hi = dst_hi.max(dst_offset.saturating_add(len));
            longest = longest.max(len);
            put(ScatterWrite {
                dst_offset,
                src_offset: base.wrapping_add(at),
                len,
            });
        }
        let p = Self {
            bits,
            dst_bits,
            dst_lo,
            dst_hi,
            longest,
            joins,
            first,
            last: (prev_end, prev_dst),
        };
        (p, end, wrapped)
    }
}

/// The mask that rounds a length up to `align` (a power of two; another is taken as the
/// next one).
fn pad_mask(align: u64) -> u64 {
    align.max(1).checked_next_power_of_two().unwrap_or(1 << 63) - 1
}

/// How to scatter a set of writes into one destination with one dispatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScatterPlan {
    /// Start of the destination binding (a multiple of the storage offset alignment).
    pub dst_base: u64,
    /// Size of the destination binding (a multiple of 4; covers every write).
    pub dst_size: u64,
    /// Start of the source binding in staging (a multiple of the storage offset alignment).
    pub src_base: u64,
    /// Size of the source binding (a multiple of 4; covers every write's bytes).
    pub src_size: u64,
    /// The record table, offsets relative to the two bindings, in [`Self::unit`]s (see the
    /// module docs).
    pub records: Vec<u32>,
    /// Whether every offset and length is a multiple of [`WIDE_UNIT`]: dispatch
    /// [`WGSL_WIDE`] ([`SPIRV_WIDE`]) instead of [`WGSL`].
    pub wide: bool,
    /// Workgroups to dispatch, `[x, y]` (`z` is 1; `y` is 1 from [`ScatterPlan::new`], the
    /// shader accepts any grid).
    pub groups: [u32; 2],
    /// Records in the table (its first word), also when the table was handed out
    /// ([`ScatterPlan::of_list_into`]) and `records` is empty.
    pub count: u32,
}

impl ScatterPlan {
    /// Plans one dispatch for `writes` (in program order), or `None` when they must stay
    /// copy regions: fewer than [`MIN_WRITES`], a write that is empty, not 4-byte aligned or
    /// larger than [`MAX_WRITE`], two destination ranges that overlap, a window larger than
    /// `max_binding` bytes or offsets beyond what 32-bit words address.
    ///
    /// `storage_align` is the device's minimum storage-buffer offset alignment (a power of
    /// two; bindings start at multiples of it and of 16).
    #[must_use]
    pub fn new(writes: &[ScatterWrite], storage_align: u64, max_binding: u64) -> Option<Self> {
        if writes.len() < MIN_WRITES || !storage_align.is_power_of_two() {
            return None;
        }
        let summary = Summary::of(writes)?;
        let layout = Layout::of(&summary, writes.len(), storage_align, max_binding)?;
        if !summary.sorted {
            let cells = summary.cells();
            let disjoint = if cells.fit_bitmap(writes.len()) {
                disjoint_by_bitmap(writes, summary.dst_lo, cells.shift, cells.count)
            } else {
                disjoint_by_sorting(writes)
            };
            if !disjoint {
                return None;
            }
        }
        let mut records = vec![0u32; 1 + RECORD_WORDS * writes.len()];
        records[0] = layout.count;
        layout.fill(&mut records[1..], writes);
        Some(layout.plan(records))
    }

    /// [`Self::new`] with its work split into `parts` parts that `run` may run in parallel:
    /// the same plan, one dispatch, for a submission that has threads to spare. `run(n, f)`
    /// calls `f(i)` once for every `i` below `n`, in any order or at once, and returns when
    /// all calls have. Each part summarizes its writes, then marks them in a bitmap of its own
    /// and fills its rows of the record table; the bitmaps are merged (an overlap between
    /// parts refuses the plan as an overlap within one does). Falls back to [`Self::new`]
    /// when the parts' bitmaps would take more than `PARALLEL_BITMAP_BYTES` (4 MiB) or the
    /// windows are so sparse that [`Self::new`] sorts.
    ///
    /// ```
    /// use gantry_core::scatter::{ScatterPlan, ScatterWrite};
    /// let writes: Vec<ScatterWrite> = (0..5000u64)
    ///     .map(|i| ScatterWrite { dst_offset: (i * 7919 % 5000) * 64, src_offset: i * 64, len: 64 })
    ///     .collect();
    /// // A sequential `run`; a backend hands the parts to its threads.
    /// let run = |n: usize, f: &(dyn Fn(usize) + Sync)| (0..n).for_each(f);
    /// let plan = ScatterPlan::new_in_parts(&writes, 256, 1 << 30, 4, &run);
    /// assert_eq!(plan, ScatterPlan::new(&writes, 256, 1 << 30));
    /// ```
    #[must_use]
    pub fn new_in_parts(
        writes: &[ScatterWrite],
        storage_align: u64,
        max_binding: u64,
        parts: usize,
        run: &PartRunner<'_>,
    ) -> Option<Self> {
        let part_len = writes.len().div_ceil(parts.max(1)).max(MIN_WRITES);
        if parts <= 1 || writes.len() < 2 * part_len || !storage_align.is_power_of_two() {
            return Self::new(writes, storage_align, max_binding);
        }
        let chunks: Vec<&[ScatterWrite]> = writes.chunks(part_len).collect();
        let summaries: Vec<Mutex<Option<Summary>>> =
            chunks.iter().map(|_| Mutex::new(None)).collect();
        run(chunks.len(), &|i| {
            *lock(&summaries[i]) = Summary::of(chunks[i]);
        });
        let mut summary: Option<Summary> = None;
        for s in summaries {
            let s = s.into_inner().unwrap_or_else(PoisonError::into_inner)?;
            summary = Some(match summary {
                None => s,
                Some(all) => all.then(&s),
            });
        }
        Self::summarized(
            writes,
            &summary?,
            storage_align,
            max_binding,
            part_len,
            run,
            None,
        )
    }

    /// [`Self::new_in_parts`] for the entries of `list`, from what the list keeps about them:
    /// no pass over the entries but the one that checks their destinations are disjoint and
    /// fills the record table, in parts. The same plan as [`Self::new`] of
    /// `list.as_slice()`.
    ///
    /// ```
    /// use gantry_core::scatter::{CopyList, ScatterPlan};
    /// let bytes = [1u8; 64];
    /// let writes: Vec<(u64, &[u8])> = (0..5000u64).map(|i| (i * 7919 % 5000 * 64, &bytes[..])).collect();
    /// let mut list = CopyList::new();
    /// list.push_packed(4096, &writes, 16);
    /// let run = |n: usize, f: &(dyn Fn(usize) + Sync)| (0..n).for_each(f);
    /// let plan = ScatterPlan::of_list(&list, 256, 1 << 30, 4, &run);
    /// assert_eq!(plan, ScatterPlan::new(list.as_slice(), 256, 1 << 30));
    /// assert!(plan.is_some());
    /// ```
    #[must_use]
    pub fn of_list(
        list: &CopyList,
        storage_align: u64,
        max_binding: u64,
        parts: usize,
        run: &PartRunner<'_>,
    ) -> Option<Self> {
        Self::of_list_to(list, storage_align, max_binding, parts, run, None)
    }

    /// [`Self::of_list`], handing the record table to `put` instead of keeping it (the plan's
    /// `records` is empty): `put(at, words)` writes `words` at word `at` of a table of
    /// [`Self::table_words`]`(list.len())` words. Each part puts its rows from the thread that
    /// filled them, so a backend can have them written straight into mapped staging memory;
    /// the count (word 0) is put last, only when the plan is made. A refused plan may have
    /// put some rows: the table is then unused.
    ///
    /// ```
    /// use std::sync::Mutex;
    /// use gantry_core::scatter::{CopyList, ScatterPlan};
    /// let bytes = [1u8; 64];
    /// let writes: Vec<(u64, &[u8])> = (0..5000u64).map(|i| (i * 7919 % 5000 * 64, &bytes[..])).collect();
    /// let mut list = CopyList::new();
    /// list.push_packed(4096, &writes, 16);
    /// let table = Mutex::new(vec![0u32; ScatterPlan::table_words(list.len())]);
    /// let put = |at: usize, words: &[u32]| {
    ///     table.lock().unwrap()[at..at + words.len()].copy_from_slice(words);
    /// };
    /// let run = |n: usize, f: &(dyn Fn(usize) + Sync)| (0..n).for_each(f);
    /// let plan = ScatterPlan::of_list_into(&list, 256, 1 << 30, 4, &run, &put).unwrap();
    /// let whole = ScatterPlan::of_list(&list, 256, 1 << 30, 4, &run).unwrap();
    /// assert_eq!(*table.lock().unwrap(), whole.records);
    /// assert!(plan.records.is_empty());
    /// assert_eq!((plan.dst_base, plan.dst_size, plan.groups), (whole.dst_base, whole.dst_size, whole.groups));
    /// ```
    #[must_use]
    pub fn of_list_into(
        list: &CopyList,
        storage_align: u64,
        max_binding: u64,
        parts: usize,
        run: &PartRunner<'_>,
        put: &TableSink<'_>,
    ) -> Option<Self> {
        Self::of_list_to(list, storage_align, max_binding, parts, run, Some(put))
    }

    /// [`Self::of_list_into`] in [`plan_parts`] parts on the copy threads
    /// ([`crate::copier::run_calls`]), the record table written into `table`: what a backend
    /// calls with its batch's mapped staging (see [`Self::list_table_bytes`] for the room).
    #[must_use]
    pub fn of_list_on_threads(
        list: &CopyList,
        storage_align: u64,
        max_binding: u64,
        table: &crate::copier::RawTable,
    ) -> Option<Self> {
        let put = |at: usize, words: &[u32]| table.put(at, words);
        Self::of_list_into(
            list,
            storage_align,
            max_binding,
            plan_parts(list.len()),
            &crate::copier::run_calls,
            &put,
        )
    }

    /// Bytes of the record table of a plan of `list`, or `None` when the list alone rules a
    /// plan out (fewer than [`MIN_WRITES`] entries, one a dispatch cannot carry) or the table
    /// would pass `max_binding`: the staging a backend sets aside before
    /// [`Self::of_list_on_threads`].
    ///
    /// ```
    /// use gantry_core::scatter::{CopyList, ScatterPlan, MIN_WRITES};
    /// let mut list = CopyList::new();
    /// for i in 0..MIN_WRITES as u64 {
    ///     list.push(i * 16, i * 64, 16);
    /// }
    /// assert_eq!(ScatterPlan::list_table_bytes(&list, 1 << 20), Some(4 * (1 + 3 * MIN_WRITES as u64)));
    /// assert_eq!(ScatterPlan::list_table_bytes(&list, 64), None);
    /// list.push(0, 1, 3); // not 4-byte aligned
    /// assert_eq!(ScatterPlan::list_table_bytes(&list, 1 << 20), None);
    /// ```
    #[must_use]
    pub fn list_table_bytes(list: &CopyList, max_binding: u64) -> Option<u64> {
        let bytes = u64::try_from(Self::table_words(list.len()))
            .ok()?
            .checked_mul(4)?;
        (list.len() >= MIN_WRITES && list.carried() && bytes <= max_binding).then_some(bytes)
    }

    /// Words in the record table of a plan of `writes` writes (the count, then a record
    /// each).
    #[must_use]
    pub const fn table_words(writes: usize) -> usize {
        1 + RECORD_WORDS * writes
    }

    fn of_list_to(
        list: &CopyList,
        storage_align: u64,
        max_binding: u64,
        parts: usize,
        run: &PartRunner<'_>,
        put: Option<&TableSink<'_>>,
    ) -> Option<Self> {
        let writes = list.as_slice();
        let s = &list.sum;
        // An end that overflowed leaves no window (and the source's start inexact).
        if writes.len() < MIN_WRITES
            || !list.carried()
            || s.src_end == u64::MAX
            || s.dst_end == u64::MAX
        {
            return None;
        }
        let (first, last) = (writes.first()?, writes.last()?);
        let summary = Summary {
            dst_lo: s.dst_lo,
            dst_hi: s.dst_end,
            src_lo: s.src_lo,
            src_hi: s.src_end,
            low: s.bits,
            dst_low: s.dst_bits,
            // Checked by the bitmap (one pass with the fill), not by a pass of its own.
            sorted: false,
            first_dst: first.dst_offset,
            last_end: last.dst_offset + last.len,
        };
        let part_len = writes.len().div_ceil(parts.max(1)).max(MIN_WRITES);
        Self::summarized(
            writes,
            &summary,
            storage_align,
            max_binding,
            part_len,
            run,
            put,
        )
    }

    /// The plan of `writes`, which `summary` describes, with the per-write work in parts of
    /// `part_len` writes (see [`Self::new_in_parts`]); its record table kept, or handed to
    /// `put` (see [`Self::of_list_into`]).
    fn summarized(
        writes: &[ScatterWrite],
        summary: &Summary,
        storage_align: u64,
        max_binding: u64,
        part_len: usize,
        run: &PartRunner<'_>,
        put: Option<&TableSink<'_>>,
    ) -> Option<Self> {
        if !storage_align.is_power_of_two() {
            return None;
        }
        let part_len = part_len.max(1);
        let chunks: Vec<&[ScatterWrite]> = writes.chunks(part_len).collect();
        // One part runs here, without the runner.
        let run = |n: usize, f: &(dyn Fn(usize) + Sync)| {
            if n == 1 { f(0) } else { run(n, f) }
        };
        let summary = *summary;
        let layout = Layout::of(&summary, writes.len(), storage_align, max_binding)?;
        let cells = summary.cells();
        let words = usize::try_from(cells.count.div_ceil(64)).unwrap_or(usize::MAX);
        if !summary.sorted
            && (!cells.fit_bitmap(writes.len())
                || words.saturating_mul(8 * chunks.len()) > PARALLEL_BITMAP_BYTES)
        {
            let mut plan = Self::new(writes, storage_align, max_binding)?;
            if let Some(put) = put {
                put(0, &core::mem::take(&mut plan.records));
            }
            return Some(plan);
        }
        // Kept: one table, each part fills its rows in place. Handed out: each part fills
        // its rows in a buffer of its thread's and puts them.
        let mut records = if put.is_some() {
            Vec::new()
        } else {
            vec![0u32; Self::table_words(writes.len())]
        };
        let rows: Vec<Mutex<&mut [u32]>> = records
            .get_mut(1..)
            .unwrap_or_default()
            .chunks_mut(RECORD_WORDS * part_len)
            .map(Mutex::new)
            .collect();
        // Part `i`: marks its writes' cells in `bits` (none when sorted), fills and places
        // its rows; whether its writes were disjoint.
        let part = |i: usize, bits: Option<&mut [u64]>| -> bool {
            let writes = chunks[i];
            let fill = |rows: &mut [u32]| match bits {
                Some(bits) => layout.mark_and_fill(bits, rows, writes, summary.dst_lo, cells.shift),
                None => {
                    layout.fill(rows, writes);
                    true
                }
            };
            match put {
                None => fill(&mut lock(&rows[i])),
                Some(put) => with_rows(RECORD_WORDS * writes.len(), |rows| {
                    let done = fill(rows);
                    if done {
                        put(1 + RECORD_WORDS * part_len * i, rows);
                    }
                    done
                }),
            }
        };
        if summary.sorted {
            run(chunks.len(), &|i| {
                part(i, None);
            });
        } else {
            let mut bitmaps = take_bitmaps(chunks.len(), words);
            let slots: Vec<Mutex<(&mut [u64], bool)>> = bitmaps
                .iter_mut()
                .map(|b| Mutex::new((&mut b[..words], true)))
                .collect();
            run(chunks.len(), &|i| {
                let mut slot = lock(&slots[i]);
                let (bits, disjoint) = &mut *slot;
                *disjoint = part(i, Some(bits));
            });
            // Merged word by word (an overlap between two parts: a bit in both), and left
            // all zeros for the next call.
            let mut parts: Vec<(&mut [u64], bool)> = slots
                .into_iter()
                .map(|s| s.into_inner().unwrap_or_else(PoisonError::into_inner))
                .collect();
            let mut disjoint = parts.iter().all(|p| p.1);
            for w in 0..words {
                let mut seen = 0u64;
                for (bits, _) in &mut parts {
                    disjoint &= seen & bits[w] == 0;
                    seen |= bits[w];
                    bits[w] = 0;
                }
            }
            drop(parts);
            give_bitmaps(bitmaps);
            if !disjoint {
                return None;
            }
        }
        drop(rows);
        match put {
            Some(put) => put(0, &[layout.count]),
            None => records[0] = layout.count,
        }
        Some(layout.plan(records))
    }

    /// Where to cut `writes` (in program order) so that each piece's destination ranges are
    /// disjoint: the ends of the longest disjoint runs, one after the other (the last is
    /// `writes.len()`). A set that [`Self::new`] refuses only for overlaps (the same bytes
    /// written twice in a frame) can then go as one dispatch per run, in order, instead of
    /// one copy region per write. `None` when cutting would not help: a write that cannot be
    /// scattered at all, a destination window too sparse for the bitmap check, or overlaps
    /// so frequent that most writes would be in runs of fewer than [`MIN_WRITES`] (too short
    /// for a dispatch each).
    ///
    /// ```
    /// use gantry_core::scatter::{ScatterPlan, ScatterWrite};
    /// let w = |slot: u64| ScatterWrite { dst_offset: slot * 64, src_offset: 0, len: 64 };
    /// // Slots 0..100, then 50..200: slot 50 again at index 100 starts a second run.
    /// let writes: Vec<ScatterWrite> = (0..100).chain(50..200).map(w).collect();
    /// assert_eq!(ScatterPlan::disjoint_runs(&writes), Some(vec![100, 250]));
    /// // The same slot again and again: runs of one write, not worth cutting.
    /// assert_eq!(ScatterPlan::disjoint_runs(&[w(7); 40]), None);
    /// ```
    #[must_use]
    pub fn disjoint_runs(writes: &[ScatterWrite]) -> Option<Vec<usize>> {
        let summary = Summary::of(writes)?;
        if summary.sorted {
            return Some(vec![writes.len()]);
        }
        let cells = summary.cells();
        if !cells.fit_bitmap(writes.len()) {
            return None;
        }
        let words = usize::try_from(cells.count.div_ceil(64)).ok()?;
        let mut bits = take_bitmaps(1, words).pop()?;
        let range = |w: &ScatterWrite| {
            let a = (w.dst_offset - summary.dst_lo) >> cells.shift;
            (a, a + (w.len >> cells.shift))
        };
        let mut ends = Vec::new();
        let mut start = 0;
        for (k, w) in writes.iter().enumerate() {
            let (a, b) = range(w);
            if !mark(&mut bits, a, b) {
                // Clears what the run marked (the bitmap is all zeros again), then starts the
                // next run with this write.
                for w in &writes[start..k] {
                    let (a, b) = range(w);
                    for_each_word(a, b, |i, m| bits[i] &= !m);
                }
                ends.push(k);
                start = k;
                mark(&mut bits, a, b);
            }
        }
        for w in &writes[start..] {
            let (a, b) = range(w);
            for_each_word(a, b, |i, m| bits[i] &= !m);
        }
        ends.push(writes.len());
        give_bitmaps(vec![bits]);
        let mut start = 0;
        let in_long_runs: usize = ends
            .iter()
            .map(|&end| {
                let len = end - std::mem::replace(&mut start, end);
                if len >= MIN_WRITES { len } else { 0 }
            })
            .sum();
        (2 * in_long_runs >= writes.len()).then_some(ends)
    }

    /// Gives every record a workgroup of its own (up to [`MAX_GROUPS_X`] a row, in as many
    /// rows as needed) instead of at most [`MAX_GROUPS`] taking records in turn. For GPUs:
    /// each record's loads come from staging in host memory, a PCIe round trip of a
    /// microsecond or more, and with a workgroup per record they are all in flight at once
    /// rather than one record after another. CPU devices keep the grid-stride plan, where
    /// extra workgroups only add overhead.
    ///
    /// ```
    /// use gantry_core::scatter::{ScatterPlan, ScatterWrite, MAX_GROUPS};
    /// let writes: Vec<ScatterWrite> = (0..3000u64)
    ///     .map(|i| ScatterWrite { dst_offset: i * 64, src_offset: i * 16, len: 16 })
    ///     .collect();
    /// let mut plan = ScatterPlan::new(&writes, 256, 1 << 30).unwrap();
    /// assert_eq!(plan.groups, [MAX_GROUPS, 1]);
    /// plan.spread();
    /// assert_eq!(plan.groups, [3000, 1]);
    /// ```
    pub fn spread(&mut self) {
        let count = self.count.max(1);
        let rows = count.div_ceil(MAX_GROUPS_X);
        self.groups = [count.div_ceil(rows), rows];
    }

    /// Bytes per unit of the record table: 4, or [`WIDE_UNIT`] for a wide plan.
    #[must_use]
    pub const fn unit(&self) -> u64 {
        if self.wide { WIDE_UNIT } else { 4 }
    }

    /// The plan's shader as WGSL: [`WGSL_WIDE`] or [`WGSL`].
    #[must_use]
    pub const fn wgsl(&self) -> &'static str {
        if self.wide { WGSL_WIDE } else { WGSL }
    }

    /// The record table as bytes (native endianness, as the GPU reads it on every platform
    /// gantry runs on).
    #[must_use]
    pub fn record_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.records)
    }
}

/// Sets of at least this many writes are planned in parts ([`plan_parts`]):
/// [`ScatterPlan::new`] takes about 10 ns a write on the H100's host, so 10,000 writes took
/// 100 to 130 us of a submission on one thread.
pub const PARALLEL_PLAN_MIN: usize = 4096;

/// Writes per part of a plan made in parts.
pub const PLAN_PART: usize = 2048;

/// Most parts one plan is made in.
pub const MAX_PLAN_PARTS: usize = 8;

/// How many parts [`ScatterPlan::new_in_parts`] should split `writes` writes into when a
/// backend has threads to run them on: 1 below [`PARALLEL_PLAN_MIN`], else one per
/// [`PLAN_PART`] writes, at most [`MAX_PLAN_PARTS`].
///
/// ```
/// use gantry_core::scatter::plan_parts;
/// assert_eq!(plan_parts(100), 1);
/// assert_eq!(plan_parts(10_000), 5);
/// assert_eq!(plan_parts(1_000_000), 8);
/// ```
#[must_use]
pub const fn plan_parts(writes: usize) -> usize {
    if writes >= PARALLEL_PLAN_MIN {
        let parts = writes.div_ceil(PLAN_PART);
        if parts < MAX_PLAN_PARTS {
            parts
        } else {
            MAX_PLAN_PARTS
        }
    } else {
        1
    }
}

/// Runs parts of a job for [`ScatterPlan::new_in_parts`]: `run(n, f)` calls `f(i)` once for
/// every `i` below `n`, in any order or at once, and returns when all calls have.
pub type PartRunner<'a> = dyn Fn(usize, &(dyn Fn(usize) + Sync)) + 'a;

/// Takes a plan's record table for [`ScatterPlan::of_list_into`]: `put(at, words)` writes
/// `words` at word `at` of the table; called from several threads at once, never twice for
/// one word.
pub type TableSink<'a> = dyn Fn(usize, &[u32]) + Sync + 'a;

std::thread_local! {
    /// A part's rows before they are put ([`ScatterPlan::of_list_into`]).
    static ROWS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on `n` words of this thread's row buffer (taken out while `f` runs: a fresh one
/// when thread-local storage is gone).
fn with_rows<R>(n: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    let mut rows = ROWS.try_with(|cell| cell.take()).unwrap_or_default();
    if rows.len() < n {
        rows.resize(n, 0);
    }
    let r = f(&mut rows[..n]);
    let _ = ROWS.try_with(|cell| cell.replace(rows));
    r
}

/// What one pass over a set of writes finds: their windows, the low bits of their offsets and
/// lengths, and whether they are in increasing order without overlaps.
#[derive(Clone, Copy, Debug)]
struct Summary {
    dst_lo: u64,
    dst_hi: u64,
    src_lo: u64,
    src_hi: u64,
    /// Bits below 16 of any offset or length: zero when the wide shader applies.
    low: u64,
    /// The same of the destination ranges alone (from 0; `dst_lo` is a multiple of what this
    /// finds): the bitmap's cell.
    dst_low: u64,
    /// In increasing, non-overlapping order (no check needed).
    sorted: bool,
    first_dst: u64,
    last_end: u64,
}

impl Summary {
    /// `None` when a write is empty, larger than [`MAX_WRITE`], not 4-byte aligned or ends
    /// beyond `u64::MAX`.
    fn of(writes: &[ScatterWrite]) -> Option<Self> {
        let mut s = Self {
            dst_lo: u64::MAX,
            dst_hi: 0,
            src_lo: u64::MAX,
            src_hi: 0,
            low: 0,
            dst_low: 0,
            sorted: true,
            first_dst: writes.first().map_or(0, |w| w.dst_offset),
            last_end: 0,
        };
        for w in writes {
            if w.len == 0 || w.len > MAX_WRITE || (w.dst_offset | w.src_offset | w.len) % 4 != 0 {
                return None;
            }
            let dst_end = w.dst_offset.checked_add(w.len)?;
            let src_end = w.src_offset.checked_add(w.len)?;
            s.low |= w.dst_offset | w.src_offset | w.len;
            s.dst_low |= w.dst_offset | w.len;
            s.sorted &= w.dst_offset >= s.last_end;
            s.last_end = dst_end;
            s.dst_lo = s.dst_lo.min(w.dst_offset);
            s.dst_hi = s.dst_hi.max(dst_end);
            s.src_lo = s.src_lo.min(w.src_offset);
            s.src_hi = s.src_hi.max(src_end);
        }
        Some(s)
    }

    /// The summary of these writes followed by `next`'s.
    fn then(&self, next: &Self) -> Self {
        Self {
            dst_lo: self.dst_lo.min(next.dst_lo),
            dst_hi: self.dst_hi.max(next.dst_hi),
            src_lo: self.src_lo.min(next.src_lo),
            src_hi: self.src_hi.max(next.src_hi),
            low: self.low | next.low,
            dst_low: self.dst_low | next.dst_low,
            sorted: self.sorted && next.sorted && next.first_dst >= self.last_end,
            first_dst: self.first_dst,
            last_end: next.last_end,
        }
    }

    /// The bitmap cells of the destination window: the coarsest power of two every range
    /// shares (4 bytes to [`MAX_CELL`]), so 256-byte writes at multiples of 256 take a bit
    /// each and the bitmap stays small enough for the L1 cache.
    fn cells(&self) -> Cells {
        let shift = self.dst_low.trailing_zeros().min(MAX_CELL.trailing_zeros());
        Cells {
            shift,
            count: (self.dst_hi - self.dst_lo) >> shift,
        }
    }
}

/// Bitmap cells of a destination window: `count` cells of `1 << shift` bytes.
#[derive(Clone, Copy, Debug)]
struct Cells {
    shift: u32,
    count: u64,
}

impl Cells {
    /// Whether a bitmap check of `writes` writes costs less than sorting them.
    fn fit_bitmap(&self, writes: usize) -> bool {
        self.count / 64 <= BITMAP_WORDS_PER_WRITE * writes as u64 && self.count <= MAX_BITMAP_UNITS
    }
}

/// Where a plan's bindings start and the unit of its records.
#[derive(Clone, Copy, Debug)]
struct Layout {
    dst_base: u64,
    dst_size: u64,
    src_base: u64,
    src_size: u64,
    wide: bool,
    shift: u32,
    count: u32,
}

impl Layout {
    /// `None` when a window is larger than `max_binding` or beyond 32-bit unit offsets.
    fn of(s: &Summary, writes: usize, storage_align: u64, max_binding: u64) -> Option<Self> {
        let align = storage_align.max(WIDE_UNIT);
        let dst_base = s.dst_lo - s.dst_lo % align;
        let src_base = s.src_lo - s.src_lo % align;
        let (dst_size, src_size) = (s.dst_hi - dst_base, s.src_hi - src_base);
        if dst_size > max_binding || src_size > max_binding {
            return None;
        }
        // The bases are multiples of 16, so offsets from them keep the low bits.
        let wide = s.low.is_multiple_of(WIDE_UNIT);
        let shift = if wide { WIDE_UNIT } else { 4 }.trailing_zeros();
        let units = |v: u64| u32::try_from(v >> shift).ok();
        // Bindings are at most `max_binding` bytes, so unit offsets fit when it is <= 16 GiB.
        units(dst_size)?;
        units(src_size)?;
        Some(Self {
            dst_base,
            dst_size,
            src_base,
            src_size,
            wide,
            shift,
            count: u32::try_from(writes).ok()?,
        })
    }

    /// Fills `rows` (the record table after its count) with the records of `writes`.
    fn fill(&self, rows: &mut [u32], writes: &[ScatterWrite]) {
        let shift = self.shift;
        for (r, w) in rows.chunks_exact_mut(RECORD_WORDS).zip(writes) {
            // In range: every offset lies inside a window whose size fits (checked in `of`).
            r[0] = ((w.dst_offset - self.dst_base) >> shift) as u32;
            r[1] = ((w.src_offset - self.src_base) >> shift) as u32;
            r[2] = (w.len >> shift) as u32;
        }
    }

    /// [`mark`] and [`Self::fill`] in one pass: marks each write's cells in `bits` and
    /// fills its record, until a write overlaps one marked before (returns `false`; the rows
    /// are then partly filled).
    fn mark_and_fill(
        &self,
        bits: &mut [u64],
        rows: &mut [u32],
        writes: &[ScatterWrite],
        lo: u64,
        cell_shift: u32,
    ) -> bool {
        let shift = self.shift;
        for (r, w) in rows.chunks_exact_mut(RECORD_WORDS).zip(writes) {
            let a = (w.dst_offset - lo) >> cell_shift;
            if !mark(bits, a, a + (w.len >> cell_shift)) {
                return false;
            }
            // In range: as in `fill`.
            r[0] = ((w.dst_offset - self.dst_base) >> shift) as u32;
            r[1] = ((w.src_offset - self.src_base) >> shift) as u32;
            r[2] = (w.len >> shift) as u32;
        }
        true
    }

    fn plan(&self, records: Vec<u32>) -> ScatterPlan {
        ScatterPlan {
            dst_base: self.dst_base,
            dst_size: self.dst_size,
            src_base: self.src_base,
            src_size: self.src_size,
            records,
            wide: self.wide,
            groups: [self.count.min(MAX_GROUPS), 1],
            count: self.count,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Most bytes the bitmaps of [`ScatterPlan::new_in_parts`] take together.
const PARALLEL_BITMAP_BYTES: usize = 4 << 20;

/// Bitmaps for [`ScatterPlan::new_in_parts`], all zeros, kept between calls (fresh memory
/// costs a page fault a page: about 3 us each on the H100's host).
static BITMAPS: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());

/// `n` zeroed bitmaps of at least `words` words.
fn take_bitmaps(n: usize, words: usize) -> Vec<Vec<u64>> {
    let mut kept = lock(&BITMAPS);
    (0..n)
        .map(|_| {
            let mut b = kept.pop().unwrap_or_default();
            if b.len() < words {
                b.resize(words, 0);
            }
            b
        })
        .collect()
}

/// Gives back bitmaps taken with [`take_bitmaps`], all zeros again.
fn give_bitmaps(bitmaps: Vec<Vec<u64>>) {
    lock(&BITMAPS).extend(bitmaps);
}

/// The largest bitmap cell, in bytes: ranges aligned to more still take a bit per this many
/// bytes (the shift stays far from 64).
const MAX_CELL: u64 = 1 << 12;

/// The bitmap check is used while the bitmap has at most this many 64-bit words per write
/// (so its cost stays linear in the writes' bytes, well under a sort's per write).
const BITMAP_WORDS_PER_WRITE: u64 = 64;

/// Largest destination window, in units, checked with a bitmap (a 16 MiB bitmap, kept per
/// thread and reused); larger windows are sorted.
const MAX_BITMAP_UNITS: u64 = 1 << 27;

std::thread_local! {
    /// All zeros between calls of [`disjoint_by_bitmap`].
    static BITMAP: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether no two writes' destination ranges overlap, by marking each write's cells (of
/// `1 << shift` bytes, counted from `lo`) in a bitmap of `cells` bits: linear in the writes'
/// size, no sort. Every offset and length is a multiple of the cell; every range lies in
/// `lo..lo + (cells << shift)`.
fn disjoint_by_bitmap(writes: &[ScatterWrite], lo: u64, shift: u32, cells: u64) -> bool {
    let Ok(words) = usize::try_from(cells.div_ceil(64)) else {
        return disjoint_by_sorting(writes);
    };
    BITMAP.with(|cell| {
        let Ok(mut bits) = cell.try_borrow_mut() else {
            return disjoint_by_sorting(writes);
        };
        if bits.len() < words {
            bits.resize(words, 0);
        }
        let range = |w: &ScatterWrite| {
            let a = (w.dst_offset - lo) >> shift;
            (a, a + (w.len >> shift))
        };
        let marked = writes
            .iter()
            .position(|w| {
                let (a, b) = range(w);
                !mark(&mut bits, a, b)
            })
            .unwrap_or(writes.len());
        // Leave the bitmap all zeros for the next call: a memset when it is small, else
        // write by write.
        if words <= 8 * marked {
            bits[..words].fill(0);
        } else {
            for w in &writes[..marked] {
                let (a, b) = range(w);
                for_each_word(a, b, |i, m| bits[i] &= !m);
            }
        }
        marked == writes.len()
    })
}

/// Sets bits `a..b` of `bits` if none of them is set yet; returns whether it did.
#[inline(always)]
fn mark(bits: &mut [u64], a: u64, b: u64) -> bool {
    if a / 64 == (b - 1) / 64 {
        // Within one word (every write of up to 64 units that does not straddle a word).
        let (i, n) = ((a / 64) as usize, b - a);
        let m = if n == 64 {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << (a % 64)
        };
        let Some(word) = bits.get_mut(i) else {
            return mark_words(bits, a, b);
        };
        let free = *word & m == 0;
        *word |= if free { m } else { 0 };
        return free;
    }
    mark_words(bits, a, b)
}

/// [`mark`] for a range over several words.
#[inline(never)]
fn mark_words(bits: &mut [u64], a: u64, b: u64) -> bool {
    let mut free = true;
    for_each_word(a, b, |i, m| free &= bits[i] & m == 0);
    if free {
        for_each_word(a, b, |i, m| bits[i] |= m);
    }
    free
}

/// Calls `f(word index, mask)` for each 64-bit word that bits `a..b` (`a < b`) touch.
fn for_each_word(a: u64, b: u64, mut f: impl FnMut(usize, u64)) {
    let (first, last) = (a / 64, (b - 1) / 64);
    for word in first..=last {
        let lo = if word == first { a % 64 } else { 0 };
        let hi = if word == last { (b - 1) % 64 + 1 } else { 64 };
        let mask = if hi - lo == 64 {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << lo
        };
        f(word as usize, mask);
    }
}

/// Whether no two writes' destination ranges overlap, by sorting them.
fn disjoint_by_sorting(writes: &[ScatterWrite]) -> bool {
    let mut ranges: Vec<(u64, u64)> = writes
        .iter()
        .map(|w| (w.dst_offset, w.dst_offset + w.len))
        .collect();
    ranges.sort_unstable_by_key(|r| r.0);
    ranges.windows(2).all(|p| p[0].1 <= p[1].0)
}

/// What one dispatch does, on the CPU: copies every record of `records` (in units of `unit`
/// bytes: [`ScatterPlan::unit`]) from `src` (the source binding's bytes) into `dst` (the
/// destination binding's bytes). Used to test plans and by backends without compute.
///
/// Records that reach outside `src` or `dst` are skipped (the GPU's robust buffer access
/// would discard them too); a plan from [`ScatterPlan::new`] never has such records.
pub fn apply(records: &[u32], unit: u64, src: &[u8], dst: &mut [u8]) {
    let unit = usize::try_from(unit).unwrap_or(usize::MAX);
    let Some((&count, table)) = records.split_first() else {
        return;
    };
    for r in table.chunks_exact(RECORD_WORDS).take(count as usize) {
        let [d, s, n] = [r[0], r[1], r[2]].map(|w| (w as usize).saturating_mul(unit));
        if let (Some(from), Some(to)) = (
            src.get(s..s.saturating_add(n)),
            dst.get_mut(d..d.saturating_add(n)),
        ) {
            to.copy_from_slice(from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(n: u64, stride: u64, len: u64) -> Vec<ScatterWrite> {
        (0..n)
            .map(|i| ScatterWrite {
                dst_offset: 4096 + i * stride,
                src_offset: 512 + i * len,
                len,
            })
            .collect()
    }

    /// Plans `ws` (shuffled: the plan keeps program order), applies it on the CPU and
    /// compares with writing each in turn; returns the plan.
    fn plan_and_apply(mut ws: Vec<ScatterWrite>, storage_align: u64) -> ScatterPlan {
        for i in (1..ws.len()).rev() {
            ws.swap(i, (i * 7919) % (i + 1));
        }
        let plan = ScatterPlan::new(&ws, storage_align, 1 << 27).expect("plan");
        assert_eq!(plan.records[0] as usize, ws.len());
        assert_eq!(plan.records.len(), 1 + 3 * ws.len());
        assert_eq!(plan.dst_base % storage_align.max(16), 0);
        assert_eq!(plan.src_base % storage_align.max(16), 0);
        let staging: Vec<u8> = (0..400_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let end = ws.iter().map(|w| w.dst_offset + w.len).max().unwrap_or(0);
        let mut dst = vec![0u8; end as usize + 64];
        let mut model = dst.clone();
        for w in &ws {
            let (d, s, n) = (w.dst_offset as usize, w.src_offset as usize, w.len as usize);
            model[d..d + n].copy_from_slice(&staging[s..s + n]);
        }
        let window = plan.dst_base as usize..(plan.dst_base + plan.dst_size) as usize;
        apply(
            &plan.records,
            plan.unit(),
            &staging[plan.src_base as usize..(plan.src_base + plan.src_size) as usize],
            &mut dst[window],
        );
        assert_eq!(dst, model);
        plan
    }

    #[test]
    fn plans_scattered_writes_and_applies_them_exactly() {
        // 16-byte multiples everywhere: the wide shader, records in 16-byte units.
        let plan = plan_and_apply(writes(100, 1024, 256), 256);
        assert!(plan.wide);
        assert_eq!(plan.unit(), WIDE_UNIT);
        assert_eq!(plan.wgsl(), WGSL_WIDE);
        assert_eq!((plan.dst_base, plan.src_base), (4096, 512));
        assert!(plan.records[1..].chunks(3).any(|r| r == [0, 0, 16]));
        // Word-aligned lengths: the word shader, records in words.
        let plan = plan_and_apply(writes(100, 1024, 260), 4);
        assert!(!plan.wide);
        assert_eq!(plan.unit(), 4);
        assert_eq!(plan.wgsl(), WGSL);
        assert!(plan.records[1..].chunks(3).any(|r| r == [0, 0, 65]));
        // 16-byte lengths at a 4-byte offset: the word shader.
        let mut ws = writes(40, 1024, 64);
        ws[7].dst_offset += 4;
        assert!(!plan_and_apply(ws, 16).wide);
    }

    #[test]
    fn refuses_what_one_dispatch_cannot_do() {
        // Too few.
        assert!(ScatterPlan::new(&writes(MIN_WRITES as u64 - 1, 512, 256), 256, 1 << 27).is_none());
        // Overlapping destinations (stride smaller than the length).
        assert!(ScatterPlan::new(&writes(32, 128, 256), 256, 1 << 27).is_none());
        // Overlap out of order.
        let mut ws = writes(32, 512, 256);
        ws.push(ScatterWrite {
            dst_offset: 4096 + 100,
            src_offset: 0,
            len: 4,
        });
        assert!(ScatterPlan::new(&ws, 256, 1 << 27).is_none());
        // Misaligned, empty, too large.
        for bad in [
            ScatterWrite {
                dst_offset: 2,
                src_offset: 0,
                len: 4,
            },
            ScatterWrite {
                dst_offset: 0,
                src_offset: 0,
                len: 0,
            },
            ScatterWrite {
                dst_offset: 0,
                src_offset: 0,
                len: MAX_WRITE + 4,
            },
        ] {
            let mut ws = writes(32, 512, 256);
            ws.push(bad);
            assert!(ScatterPlan::new(&ws, 256, 1 << 27).is_none(), "{bad:?}");
        }
        // A window over the binding limit.
        assert!(ScatterPlan::new(&writes(32, 1 << 20, 256), 256, 1 << 24).is_none());
        // Offsets near u64::MAX do not overflow.
        let mut ws = writes(32, 512, 256);
        ws.push(ScatterWrite {
            dst_offset: u64::MAX - 3,
            src_offset: 0,
            len: 4,
        });
        assert!(ScatterPlan::new(&ws, 256, u64::MAX).is_none());
    }

    #[test]
    fn adjacent_writes_are_disjoint() {
        let plan = ScatterPlan::new(&writes(64, 256, 256), 16, 1 << 27).expect("plan");
        assert_eq!(plan.dst_size, 64 * 256);
    }

    #[test]
    fn many_writes_share_a_bounded_grid() {
        let ws = writes(70_000, 4, 4);
        let plan = ScatterPlan::new(&ws, 256, 1 << 30).expect("plan");
        assert_eq!(plan.groups, [MAX_GROUPS, 1]);
        assert_eq!(plan.records[0], 70_000);
        let few = ScatterPlan::new(&writes(20, 512, 256), 256, 1 << 30).expect("plan");
        assert_eq!(few.groups, [20, 1]);
    }

    /// The WGSL of both shaders is valid and the checked-in SPIR-V is what naga makes of it.
    #[test]
    fn spirv_matches_wgsl() {
        check_spirv(WGSL, SPIRV, "scatter.spv");
        check_spirv(WGSL_WIDE, SPIRV_WIDE, "scatter_wide.spv");
    }

    fn check_spirv(wgsl: &str, checked_in: &[u8], file: &str) {
        let module = naga::front::wgsl::parse_str(wgsl).expect("WGSL parses");
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .expect("WGSL validates");
        let options = naga::back::spv::Options {
            lang_version: (1, 0),
            ..naga::back::spv::Options::default()
        };
        let words = naga::back::spv::write_vec(
            &module,
            &info,
            &options,
            Some(&naga::back::spv::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: ENTRY_POINT.into(),
            }),
        )
        .expect("SPIR-V");
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        if std::env::var_os("GANTRY_BLESS").is_some() {
            let path = format!("{}/src/{file}", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(path, &bytes).expect("write the SPIR-V");
        } else {
            assert!(
                bytes == checked_in,
                "{file} is stale: GANTRY_BLESS=1 cargo test -p gantry-core scatter"
            );
        }
    }

    /// Whether any two of `ws` overlap, the obvious way.
    fn overlaps(ws: &[ScatterWrite]) -> bool {
        ws.iter().enumerate().any(|(i, a)| {
            ws[i + 1..]
                .iter()
                .any(|b| a.dst_offset < b.dst_offset + b.len && b.dst_offset < a.dst_offset + a.len)
        })
    }

    proptest::proptest! {
        /// Model check: a plan exists exactly when the writes are disjoint (and otherwise
        /// valid), through the sorted fast path, the bitmap (small windows) and the sort
        /// (sparse windows); applying it equals writing each in program order. The bitmap
        /// is left clean: a second, disjoint call on the same thread still succeeds.
        #[test]
        fn plans_exactly_the_disjoint_sets(
            raw in proptest::collection::vec((0u64..4096, 1u64..=16, proptest::bool::ANY), 16..80),
            spread in proptest::sample::select(vec![4u64, 16, 1024]),
            sorted in proptest::bool::ANY,
        ) {
            let mut src = 0;
            let mut ws: Vec<ScatterWrite> = raw
                .iter()
                .map(|&(slot, units, wide)| {
                    let grain = if wide { 16 } else { 4 };
                    let w = ScatterWrite {
                        dst_offset: slot * spread / 4 * grain,
                        src_offset: src,
                        len: units * grain,
                    };
                    src += w.len;
                    w
                })
                .collect();
            if sorted {
                ws.sort_by_key(|w| w.dst_offset);
            }
            let plan = ScatterPlan::new(&ws, 16, u64::MAX >> 4);
            proptest::prop_assert_eq!(plan.is_some(), !overlaps(&ws));
            // The same plan made in parts, the parts run on threads of their own.
            let threads = |n: usize, f: &(dyn Fn(usize) + Sync)| {
                std::thread::scope(|s| {
                    for i in 0..n {
                        s.spawn(move || f(i));
                    }
                });
            };
            for parts in [2, 3, 5] {
                let in_parts = ScatterPlan::new_in_parts(&ws, 16, u64::MAX >> 4, parts, &threads);
                proptest::prop_assert_eq!(&in_parts, &plan);
            }
            // Cut into runs: each disjoint, each ended by the first write that overlaps it.
            if let Some(ends) = ScatterPlan::disjoint_runs(&ws) {
                let long: usize = ends
                    .iter()
                    .scan(0, |start, &end| Some(end - std::mem::replace(start, end)))
                    .filter(|&len| len >= MIN_WRITES)
                    .sum();
                proptest::prop_assert!(2 * long >= ws.len());
                proptest::prop_assert_eq!(ends.last().copied(), Some(ws.len()));
                proptest::prop_assert_eq!(ends.len() == 1, !overlaps(&ws));
                let mut start = 0;
                for &end in &ends {
                    proptest::prop_assert!(start < end);
                    proptest::prop_assert!(!overlaps(&ws[start..end]));
                    if end < ws.len() {
                        proptest::prop_assert!(overlaps(&ws[start..=end]));
                    }
                    start = end;
                }
            }
            if let Some(plan) = plan {
                let staging: Vec<u8> = (0..src as u32).map(|i| (i * 7 % 253) as u8).collect();
                let end = ws.iter().map(|w| w.dst_offset + w.len).max().unwrap_or(0);
                let mut dst = vec![0u8; end as usize];
                let mut model = dst.clone();
                for w in &ws {
                    let (d, s, n) = (w.dst_offset as usize, w.src_offset as usize, w.len as usize);
                    model[d..d + n].copy_from_slice(&staging[s..s + n]);
                }
                let window = plan.dst_base as usize..(plan.dst_base + plan.dst_size) as usize;
                apply(&plan.records, plan.unit(), &staging[plan.src_base as usize..], &mut dst[window]);
                proptest::prop_assert!(dst == model);
            }
            let clean: Vec<ScatterWrite> = (0..32u64)
                .rev()
                .map(|i| ScatterWrite { dst_offset: i * 64, src_offset: i * 64, len: 64 })
                .collect();
            proptest::prop_assert!(ScatterPlan::new(&clean, 16, 1 << 30).is_some());
        }
    }

    #[test]
    fn apply_skips_out_of_range_records() {
        let records = [2, 0, 0, 1, 100, 0, 1];
        let mut dst = [0u8; 8];
        apply(&records, 4, &[1, 2, 3, 4], &mut dst);
        assert_eq!(dst, [1, 2, 3, 4, 0, 0, 0, 0]);
        // A huge unit saturates instead of overflowing, and is skipped.
        apply(&[1, 1, 0, 1], u64::MAX, &[1, 2, 3, 4], &mut dst);
        assert_eq!(dst, [1, 2, 3, 4, 0, 0, 0, 0]);
    }

    proptest::proptest! {
        /// Model check of [`CopyList`]: `push_packed` gives the entries, joins and
        /// alignment bits that one `push` per write gives, and bounds that cover every
        /// entry (exact for writes of one length); `regions` copies exactly what the entries
        /// copy, in as many regions as `len() - joins()`.
        #[test]
        fn copy_list_summaries_hold(
            raw in proptest::collection::vec((0u64..64, 0u64..=6, proptest::bool::ANY), 0..60),
            base in proptest::sample::select(vec![0u64, 4, 4096, u64::MAX - 64]),
            align in proptest::sample::select(vec![1u64, 4, 16]),
            uniform in proptest::bool::ANY,
        ) {
            let bytes = [0u8; 64];
            // Slot-sized writes (contiguous runs where slots follow) or mixed lengths.
            let writes: Vec<(u64, &[u8])> = raw
                .iter()
                .map(|&(slot, len, next)| {
                    let len = if uniform { 8 } else { len as usize * 4 };
                    (if next { slot * 8 } else { slot * 24 + 4 }, &bytes[..len])
                })
                .collect();
            let mut packed = CopyList::new();
            let (end, joins) = packed.push_packed(base, &writes, align);
            let mut one = CopyList::new();
            let mut at = 0u64;
            for &(dst, data) in &writes {
                if data.is_empty() {
                    continue;
                }
                one.push(base.wrapping_add(at), dst, data.len() as u64);
                at += (data.len() as u64).next_multiple_of(align);
            }
            proptest::prop_assert_eq!(end, at);
            proptest::prop_assert_eq!(packed.as_slice(), one.as_slice());
            proptest::prop_assert_eq!(joins, one.joins());
            proptest::prop_assert_eq!(packed.joins(), one.joins());
            proptest::prop_assert_eq!(packed.carried(), one.carried());
            for a in [4u64, 16] {
                proptest::prop_assert_eq!(packed.bits().is_multiple_of(a), one.bits().is_multiple_of(a));
            }
            proptest::prop_assert_eq!(packed.src_end(), one.src_end());
            proptest::prop_assert_eq!(packed.dst_end(), one.dst_end());
            proptest::prop_assert_eq!(packed.sum.dst_lo, one.sum.dst_lo);
            proptest::prop_assert_eq!(packed.sum.dst_bits, one.sum.dst_bits);
            if one.src_end() != u64::MAX {
                proptest::prop_assert_eq!(packed.sum.src_lo, one.sum.src_lo);
            }

            let exact = |f: fn(&ScatterWrite) -> u64| {
                one.as_slice().iter().map(|w| f(w).checked_add(w.len)).try_fold(0u64, |m, e| e.map(|e| m.max(e)))
            };
            proptest::prop_assert_eq!(Some(one.src_end()).filter(|&e| e != u64::MAX), exact(|w| w.src_offset).filter(|&e| e != u64::MAX));
            proptest::prop_assert_eq!(Some(one.dst_end()), exact(|w| w.dst_offset));
            // Regions: the same bytes moved (source offsets from `base` wrap; compared
            // relative to it), contiguous neighbours merged.
            let regions: Vec<(u64, u64, u64)> = one.regions().collect();
            proptest::prop_assert_eq!(regions.len(), one.len() - one.joins());
            let mut model = vec![0u64; 2048];
            let mut merged = vec![0u64; 2048];
            for w in one.as_slice() {
                for i in 0..w.len {
                    model[(w.dst_offset + i) as usize] = w.src_offset.wrapping_sub(base) + i + 1;
                }
            }
            for &(s, d, n) in &regions {
                for i in 0..n {
                    merged[(d + i) as usize] = s.wrapping_sub(base) + i + 1;
                }
            }
            proptest::prop_assert_eq!(model, merged);
        }
    }

    proptest::proptest! {
        /// `push_packed_in_parts` gives what `push_packed` gives (entries, summary, result),
        /// onto an empty list or one that already has entries (a first entry that continues
        /// the last one counts), whatever order the parts run in.
        #[test]
        fn copy_list_packed_in_parts_matches_one_pass(
            raw in proptest::collection::vec((0u64..512, 0usize..=3, proptest::bool::ANY), 0..400),
            parts in 1usize..6,
            align in proptest::sample::select(vec![1u64, 4, 16, 64]),
            seeded in proptest::bool::ANY,
        ) {
            let bytes = [0u8; 64];
            let writes: Vec<(u64, &[u8])> = raw
                .iter()
                .enumerate()
                .map(|(i, &(slot, len, adjacent))| {
                    let offset = if adjacent { i as u64 * 16 } else { slot * 64 };
                    (offset, &bytes[..len * 16])
                })
                .collect();
            let mut one = CopyList::new();
            if seeded {
                one.push(96, 0, 16);
            }
            let mut split = one.clone();
            let a = one.push_packed(112, &writes, align);
            let backwards = |n: usize, f: &(dyn Fn(usize) + Sync)| (0..n).rev().for_each(f);
            let b = split.push_packed_in_parts(112, &writes, align, parts, &backwards);
            proptest::prop_assert_eq!(a, b);
            proptest::prop_assert_eq!(one, split);
        }
    }

    proptest::proptest! {
        /// `ScatterPlan::of_list` plans what `ScatterPlan::new` plans for the list's entries
        /// (or refuses what it refuses), from lists pushed one by one or packed, in parts run
        /// in any order: scattered or ascending, overlapping or not, mixed alignments.
        #[test]
        fn plans_of_lists_match_plans_of_entries(
            raw in proptest::collection::vec((0u64..3000, 1u64..=4), 0..1500),
            packed in proptest::bool::ANY,
            order in 0u8..3,
            parts in 1usize..7,
            unit in proptest::sample::select(vec![4u64, 16]),
            storage_align in proptest::sample::select(vec![4u64, 256]),
        ) {
            let bytes = [0u8; 256];
            // 0: ascending, 1: the same shuffled (disjoint), 2: as drawn (overlaps likely).
            let mut slots = raw.clone();
            if order < 2 {
                slots.sort_unstable();
                slots.dedup_by_key(|s| s.0);
            }
            if order == 1 {
                let n = slots.len();
                for i in 0..n {
                    slots.swap(i, (i * 7919 + 13) % n);
                }
            }
            // Slots of 64 bytes; writes of one to four units, which fit their slot.
            let writes: Vec<(u64, &[u8])> = slots
                .iter()
                .map(|&(slot, n)| (slot * 64, &bytes[..(n * unit) as usize]))
                .collect();
            let mut list = CopyList::new();
            if packed {
                list.push_packed(4096, &writes, unit);
            } else {
                let mut at = 8192;
                for &(dst, data) in &writes {
                    list.push(at, dst, data.len() as u64);
                    at += data.len() as u64 + unit;
                }
            }
            let backwards = |n: usize, f: &(dyn Fn(usize) + Sync)| (0..n).rev().for_each(f);
            let planned = ScatterPlan::of_list(&list, storage_align, 1 << 30, parts, &backwards);
            proptest::prop_assert_eq!(&planned, &ScatterPlan::new(list.as_slice(), storage_align, 1 << 30));
            if order < 2 {
                // Disjoint: planned whenever there are enough writes.
                proptest::prop_assert_eq!(planned.is_some(), list.len() >= MIN_WRITES);
            }
            // Handed out: the same table, put part by part (count last).
            let table = Mutex::new(vec![0u32; ScatterPlan::table_words(list.len())]);
            let put = |at: usize, words: &[u32]| {
                lock(&table)[at..at + words.len()].copy_from_slice(words);
            };
            let into = ScatterPlan::of_list_into(&list, storage_align, 1 << 30, parts, &backwards, &put);
            proptest::prop_assert_eq!(into.is_some(), planned.is_some());
            if let (Some(mut into), Some(mut planned)) = (into, planned) {
                proptest::prop_assert!(into.records.is_empty());
                proptest::prop_assert_eq!(&*lock(&table), &planned.records);
                // Spread alike without the table (a grid from the count it no longer has
                // made one workgroup of 10,000 records: 33 ms on the H100).
                into.spread();
                planned.spread();
                proptest::prop_assert_eq!(into.count as usize, list.len());
                into.records = planned.records.clone();
                proptest::prop_assert_eq!(into, planned);
            }
        }
    }

    #[test]
    fn copy_list_push_skips_empties_and_saturates() {
        let mut list = CopyList::new();
        assert!(!list.push(0, 0, 0));
        assert!(list.is_empty() && !list.is_contiguous());
        list.push(u64::MAX - 4, 8, 16);
        assert_eq!(list.src_end(), u64::MAX);
        assert_eq!(list.dst_end(), 24);
        list.clear();
        assert_eq!(
            (list.len(), list.src_end(), list.bits(), list.joins()),
            (0, 0, 0, 0)
        );
        list.push(0, 0, MAX_WRITE + 4);
        assert!(!list.carried());
        list.push(MAX_WRITE + 4, MAX_WRITE + 4, 4);
        assert!(list.is_contiguous());
        assert_eq!(list.regions().collect::<Vec<_>>(), [(0, 0, MAX_WRITE + 8)]);
    }
}
