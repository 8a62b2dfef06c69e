//! The staging pool (M1): transfer regions sub-allocated from mapped upload memory.
//!
//! # Design
//!
//! The pool is a ring of *chunks*: upload buffers of [`StagingConfig::chunk_size`] bytes,
//! each sub-allocated by gantry-host's [`RingAllocator`]. A chunk that accepts regions is
//! mapped, and uploads copy their bytes straight into it when they are queued. At a flush the
//! chunk is unmapped, its regions are copied by the flush's submission, and each region is
//! tied to that submission; it is released when the submission completes, never before.
//! Neither wgpu nor gantry-core's facade lets the CPU write one range of a buffer while a
//! pending submission reads another range of it (wgpu refuses to submit work on a mapped
//! buffer), so a chunk takes new regions again only once all its regions are released: the
//! ring rewinds to offset 0 then, so no wrap waste remains. Chunks are used in turn,
//! oldest-released first, which lets several frames of uploads be in flight.
//!
//! When no chunk can place a region, the pool recovers in this order, recording a
//! [`StagingEvent`] for each step: reclaim regions whose submissions completed; wait for the
//! oldest pending submission; grow by a chunk (up to [`StagingConfig::max_chunks`]); submit
//! the regions queued so far early (so waiting can free them); and only then return
//! [`Error::StagingExhausted`]. A region larger than a chunk
//! goes through a dedicated temporary upload buffer, freed once its copy completes.
//!
//! # Fragmentation
//!
//! A region never spans two chunks, so the largest region the pool can ever place is one
//! chunk. The pool's fragmentation is measured against that: `1 - largest / min(free, chunk)`,
//! where `free` is the free bytes of all chunks, `largest` the largest free range of any one
//! chunk (free ranges of separate chunks are separate ranges) and `chunk` the chunk capacity;
//! 0 when nothing is free. It is the share of the largest region the free bytes could hold
//! (at most one chunk) that cannot be placed now. An idle pool reads 0 however many chunks it
//! has; a single chunk reads its ring's `1 - largest / free`; two chunks each with half of it
//! free in one range read 0.5 (a whole-chunk region does not fit, though a chunk's worth of
//! bytes is free). [`crate::BufferManager::staging_usage`] keeps the plain sums (its
//! [`AllocatorUsage::fragmentation`] knows nothing of chunks); the `staging` statistics
//! provider's `ring.fragmentation` and [`crate::BufferManager::staging_fragmentation`] use the
//! definition above.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use gantry_core::scatter::{CopyList, ScatterWrite};
use gantry_core::{
    Backend, Buffer, BufferDesc, BufferUsage, Device, MapMode, MemoryLocation, SubmissionIndex,
};
use gantry_host::{Allocation, BufferStats, RingAllocator};
use gantry_stats::{AllocatorUsage, MetricValue, ProviderSnapshot, Unit};

use crate::error::{Error, Result};

/// Staging pool configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagingConfig {
    /// Bytes per chunk (rounded up to the copy alignment). Default 4 MiB.
    pub chunk_size: u64,
    /// Chunks created up front. Default 2.
    pub initial_chunks: usize,
    /// The most chunks the pool grows to. Default 16.
    pub max_chunks: usize,
    /// Regions larger than a chunk go through a dedicated temporary buffer (default `true`);
    /// when `false` they fail with [`Error::StagingExhausted`].
    pub dedicated_for_large: bool,
}

impl Default for StagingConfig {
    fn default() -> Self {
        Self {
            chunk_size: 4 << 20,
            initial_chunks: 2,
            max_chunks: 16,
            dedicated_for_large: true,
        }
    }
}

/// One recovery step the pool took when a region did not fit, in the order taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StagingEvent {
    /// Released the regions of completed submissions (how many).
    Reclaimed {
        /// Regions released.
        regions: usize,
    },
    /// Waited for the oldest submission still reading staging memory.
    WaitedOldest {
        /// The submission waited for.
        submission: SubmissionIndex,
    },
    /// Added a chunk; `chunks` is the new count.
    Grew {
        /// Chunks after growing.
        chunks: usize,
    },
    /// Submitted the transfers queued so far, so that their regions can be released.
    SubmittedEarly {
        /// The submission made.
        submission: SubmissionIndex,
    },
    /// Gave up: [`Error::StagingExhausted`] was returned.
    Exhausted {
        /// Bytes requested.
        requested: u64,
    },
    /// A region larger than a chunk went through a dedicated buffer.
    Dedicated {
        /// Its size.
        size: u64,
    },
}

const MAX_EVENTS: usize = 4096;

pub(crate) struct Chunk<B: Backend> {
    pub(crate) buffer: Buffer<B>,
    ring: RingAllocator,
    /// Mapped for writing (accepting regions).
    mapped: bool,
    /// Regions written for the next flush. Regions placed one after another share the last
    /// allocation, grown in place ([`Chunk::place`]).
    open: Vec<Allocation>,
    /// Where the regions of the last open allocation end (the rest of it is reserved ahead).
    fill: u64,
    /// Regions a submission reads, oldest first.
    in_flight: VecDeque<(SubmissionIndex, Allocation)>,
    /// Writers hold it shared while they copy into the mapping; a flush takes it exclusively
    /// before unmapping.
    pub(crate) writers: Arc<RwLock<()>>,
    /// Uploads of up to 16 KiB copied outside the staging lock are gathered here and copied
    /// into the mapping in a few large writes when the chunk closes (one mapped view per run
    /// instead of one per upload).
    pub(crate) shadow: Arc<Mutex<Shadow>>,
    /// The same for uploads copied under the staging lock (up to 1 KiB, `LOCKED_UPLOAD` in
    /// transfer.rs): no lock of its own. Its spans cover only the regions and the alignment
    /// padding between regions placed one right after the other ([`Chunk::put_small`]), so
    /// it is written after `shadow`, whose merged spans may cover its regions with stale
    /// bytes.
    small: Shadow,
    /// Regions placed in this chunk so far.
    placed: u64,
    /// When the chunk last took regions (for oldest-first reuse).
    last_opened: u64,
}

/// How far ahead a chunk's open allocation grows when a region does not fit it: the ring (and
/// its statistics) is touched once per this many bytes of small regions instead of once per
/// region. The part not taken is given back when the chunk closes.
const RESERVE_AHEAD: u64 = 64 << 10;

impl<B: Backend> Chunk<B> {
    /// Places `size` bytes at a multiple of `align`: right after the last open region,
    /// inside the open allocation or by growing it, else in a new allocation (which may wrap).
    /// Offsets are those the ring would give one allocation per region; only the number of
    /// allocations differs.
    fn place(&mut self, size: u64, align: u64) -> Option<u64> {
        let at = self.place_in_ring(size, align)?;
        self.placed += 1;
        Some(at)
    }

    /// Copies `data` for the region just placed at `offset` (under the staging lock).
    pub(crate) fn put_small(&mut self, offset: u64, data: &[u8]) {
        self.small.put_placed(offset, data, self.placed);
    }

    fn place_in_ring(&mut self, size: u64, align: u64) -> Option<u64> {
        if let Some(last) = self.open.last_mut() {
            if let Some(at) = self.fill.checked_next_multiple_of(align)
                && let Some(end) = at.checked_add(size)
            {
                if end <= last.offset() + last.size() {
                    self.fill = end;
                    return Some(at);
                }
                let ahead = end
                    .saturating_add(RESERVE_AHEAD)
                    .min(self.ring.capacity())
                    .max(end);
                for new_end in [ahead, end] {
                    if self.ring.resize(last, new_end - last.offset()).is_ok() {
                        self.fill = end;
                        return Some(at);
                    }
                }
            }
            // The run cannot continue here: give back what it reserved ahead, then allocate
            // as the ring would (wrapping if it must).
            Self::trim(&mut self.ring, last, self.fill);
        }
        let allocation = self.ring.allocate(size, align).ok()?;
        let at = allocation.offset();
        self.fill = at + size;
        self.open.push(allocation);
        Some(at)
    }

    /// Shrinks `last`, the ring's newest allocation, to end at `fill`.
    fn trim(ring: &mut RingAllocator, last: &mut Allocation, fill: u64) {
        // The newest allocation shrinking to a non-zero size: `resize` cannot refuse it.
        let _ = ring.resize(last, fill - last.offset());
    }
}

/// Where a staged region lives.
pub(crate) struct Region {
    pub(crate) chunk: usize,
    pub(crate) offset: u64,
}

pub(crate) struct StagingState<B: Backend> {
    pub(crate) chunks: Vec<Chunk<B>>,
    pub(crate) config: StagingConfig,
    pub(crate) events: VecDeque<StagingEvent>,
    opened: u64,
    /// The chunk that took the latest region.
    current: Option<usize>,
    pub(crate) counters: Counters,
    host_stats: Arc<BufferStats>,
    /// The latest small upload operation, still open for the next small uploads to the same
    /// buffer to join under this lock (no queue lock for them); it goes to the orchestrator's
    /// queues when an upload cannot join it, and into the batch at the flush (transfer.rs).
    pub(crate) open_op: Option<crate::transfer::Op<B>>,
    /// Uploads that joined `open_op` and entries that extended its last one, not yet added to
    /// the orchestrator's counters (added at the flush and when they are read).
    pub(crate) joined: u64,
    pub(crate) coalesced: u64,
    /// Entry lists of flushed `upload_many` operations, cleared, for the next ones: a list
    /// of 10,000 entries is 240 KiB, and writing it into fresh memory each frame cost as
    /// much as staging the bytes.
    pub(crate) spare_entries: Vec<CopyList>,
}

#[derive(Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) reclaims: u64,
    pub(crate) waits: u64,
    pub(crate) grows: u64,
    pub(crate) early_submits: u64,
    pub(crate) exhausted: u64,
    pub(crate) dedicated: u64,
    pub(crate) staged_bytes: u64,
}

/// Spare entry lists kept at most, and the longest kept (64 Ki entries, 1.5 MiB).
const SPARE_ENTRY_LISTS: usize = 4;
const SPARE_ENTRIES_MAX: usize = 1 << 16;

impl<B: Backend> StagingState<B> {
    /// An empty entry list, with the capacity of a flushed one when there is one.
    pub(crate) fn entries(&mut self) -> CopyList {
        self.spare_entries.pop().unwrap_or_default()
    }

    /// Keeps `entries` (of a flushed operation) for [`Self::entries`], if there is room.
    pub(crate) fn give_back_entries(&mut self, mut entries: CopyList) {
        if self.spare_entries.len() < SPARE_ENTRY_LISTS
            && (1..=SPARE_ENTRIES_MAX).contains(&entries.capacity())
        {
            entries.clear();
            self.spare_entries.push(entries);
        }
    }
    pub(crate) fn new(
        device: &Device<B>,
        mut config: StagingConfig,
        host_stats: Arc<BufferStats>,
    ) -> Result<Self> {
        let ca = device.limits().copy_alignment.max(1);
        if config.chunk_size == 0 {
            return Err(Error::InvalidConfig {
                field: "staging.chunk_size",
                value: 0,
                reason: "must be non-zero",
            });
        }
        if config.max_chunks == 0 || config.initial_chunks > config.max_chunks {
            return Err(Error::InvalidConfig {
                field: "staging.max_chunks",
                value: config.max_chunks as u64,
                reason: "must be non-zero and at least initial_chunks",
            });
        }
        config.chunk_size =
            gantry_core::align_up(config.chunk_size, ca).ok_or(Error::InvalidConfig {
                field: "staging.chunk_size",
                value: config.chunk_size,
                reason: "overflows when aligned",
            })?;
        let mut state = Self {
            chunks: Vec::new(),
            config,
            events: VecDeque::new(),
            opened: 0,
            current: None,
            counters: Counters::default(),
            host_stats,
            open_op: None,
            joined: 0,
            coalesced: 0,
            spare_entries: Vec::new(),
        };
        for _ in 0..state.config.initial_chunks {
            state.add_chunk(device)?;
        }
        Ok(state)
    }

    fn add_chunk(&mut self, device: &Device<B>) -> Result<()> {
        let label = format!("gantry staging chunk {}", self.chunks.len());
        let buffer = device.create_buffer(
            &BufferDesc::new(
                self.config.chunk_size,
                BufferUsage::TRANSFER_SRC,
                MemoryLocation::Upload,
            )
            .with_label(&label),
        )?;
        let cap = buffer.size();
        self.chunks.push(Chunk {
            buffer,
            ring: RingAllocator::new(cap).with_stats(Arc::clone(&self.host_stats)),
            mapped: false,
            open: Vec::new(),
            fill: 0,
            in_flight: VecDeque::new(),
            writers: Arc::new(RwLock::new(())),
            shadow: Arc::new(Mutex::new(Shadow::default())),
            small: Shadow::default(),
            placed: 0,
            last_opened: 0,
        });
        Ok(())
    }

    pub(crate) fn event(&mut self, event: StagingEvent) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Tries to place `size` bytes in a chunk that has nothing in flight, oldest first;
    /// maps the chunk if needed.
    pub(crate) fn try_place(
        &mut self,
        device: &Device<B>,
        size: u64,
        align: u64,
    ) -> Result<Option<Region>> {
        // Fast path: the chunk that took the previous region.
        if let Some(i) = self.current {
            let chunk = &mut self.chunks[i];
            if chunk.mapped
                && chunk.in_flight.is_empty()
                && let Some(offset) = chunk.place(size, align)
            {
                self.counters.staged_bytes += size;
                return Ok(Some(Region { chunk: i, offset }));
            }
        }
        // Prefer chunks already open, then idle chunks released longest ago.
        let mut order: Vec<usize> = (0..self.chunks.len())
            .filter(|&i| self.chunks[i].in_flight.is_empty())
            .collect();
        order.sort_by_key(|&i| (!self.chunks[i].mapped, self.chunks[i].last_opened));
        for i in order {
            let chunk = &mut self.chunks[i];
            let (runs, fill) = (chunk.open.len(), chunk.fill);
            let Some(offset) = chunk.place(size, align) else {
                continue;
            };
            if !chunk.mapped {
                if let Err(e) = device.map(&chunk.buffer, MapMode::Write) {
                    // Undo the placement: drop the new allocation (the newest, so the ring
                    // takes it back), or give back what the last one grew by.
                    if chunk.open.len() > runs {
                        if let Some(allocation) = chunk.open.pop() {
                            let _ = chunk.ring.free(allocation);
                        }
                    } else if let Some(last) = chunk.open.last_mut() {
                        Chunk::<B>::trim(&mut chunk.ring, last, fill);
                    }
                    chunk.fill = fill;
                    return Err(e.into());
                }
                chunk.mapped = true;
                self.opened += 1;
                chunk.last_opened = self.opened;
            }
            self.counters.staged_bytes += size;
            self.current = Some(i);
            return Ok(Some(Region { chunk: i, offset }));
        }
        Ok(None)
    }

    /// Releases regions whose submission is `<= completed`; returns how many.
    pub(crate) fn reclaim(&mut self, completed: SubmissionIndex) -> usize {
        let mut released = 0;
        for chunk in &mut self.chunks {
            while let Some((idx, _)) = chunk.in_flight.front() {
                if *idx > completed {
                    break;
                }
                if let Some((_, allocation)) = chunk.in_flight.pop_front() {
                    // FIFO order within the chunk: the ring accepts it.
                    let _ = chunk.ring.free(allocation);
                    released += 1;
                }
            }
        }
        released
    }

    /// The oldest submission still reading a region.
    pub(crate) fn oldest_in_flight(&self) -> Option<SubmissionIndex> {
        self.chunks
            .iter()
            .filter_map(|c| c.in_flight.front().map(|(i, _)| *i))
            .min()
    }

    /// Whether some chunk holds regions written for the next flush.
    pub(crate) fn has_open_regions(&self) -> bool {
        self.chunks.iter().any(|c| !c.open.is_empty())
    }

    pub(crate) fn grow(&mut self, device: &Device<B>) -> Result<bool> {
        if self.chunks.len() >= self.config.max_chunks {
            return Ok(false);
        }
        self.add_chunk(device)?;
        Ok(true)
    }

    /// Unmaps every chunk holding open regions (after waiting for writers); returns their
    /// indices. Their regions stay open until [`StagingState::retire`].
    pub(crate) fn close_open_chunks(&mut self, device: &Device<B>) -> Result<Vec<usize>> {
        let mut closed = Vec::new();
        for (i, chunk) in self.chunks.iter_mut().enumerate() {
            if !chunk.mapped || chunk.open.is_empty() {
                continue;
            }
            // Every writer that allocated here holds the lock shared until it has queued its
            // operation; taking it exclusively waits for them.
            let exclusive = chunk
                .writers
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            {
                let mut shadow = chunk
                    .shadow
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                shadow.flush_into(device, &chunk.buffer, 256)?;
            }
            // After `shadow`: its spans merged across gaps may cover these regions.
            chunk.small.flush_into(device, &chunk.buffer, 0)?;
            drop(exclusive);
            device.unmap(&chunk.buffer)?;
            chunk.mapped = false;
            closed.push(i);
        }
        Ok(closed)
    }

    /// Ties the open regions of `chunks` to `submission` (or releases them at once when
    /// nothing was submitted).
    pub(crate) fn retire(&mut self, chunks: &[usize], submission: Option<SubmissionIndex>) {
        for &i in chunks {
            let chunk = &mut self.chunks[i];
            if let Some(last) = chunk.open.last_mut() {
                Chunk::<B>::trim(&mut chunk.ring, last, chunk.fill);
            }
            let open = core::mem::take(&mut chunk.open);
            match submission {
                Some(idx) => chunk.in_flight.extend(open.into_iter().map(|a| (idx, a))),
                None => {
                    for a in open {
                        let _ = chunk.ring.free(a);
                    }
                }
            }
        }
    }

    /// Usage summed over the chunks.
    pub(crate) fn usage(&self) -> AllocatorUsage {
        let mut u = AllocatorUsage::default();
        for c in &self.chunks {
            u.used += c.ring.used();
            u.free += c.ring.free_bytes();
            u.largest_free = u.largest_free.max(c.ring.largest_free());
            u.wasted_at_wrap += c.ring.wasted_at_wrap();
        }
        u
    }

    /// The pool's fragmentation (see the module docs).
    pub(crate) fn fragmentation(&self) -> f64 {
        fragmentation(
            self.chunks
                .iter()
                .map(|c| (c.ring.free_bytes(), c.ring.largest_free())),
            self.chunks
                .iter()
                .map(|c| c.ring.capacity())
                .max()
                .unwrap_or(0),
        )
    }

    pub(crate) fn snapshot(&self, name: &str) -> ProviderSnapshot {
        let u = self.usage();
        let c = self.counters;
        let mut s = ProviderSnapshot::new(name)
            .counter("chunks", self.chunks.len() as u64, Unit::Count)
            .counter(
                "capacity",
                self.chunks.len() as u64 * self.config.chunk_size,
                Unit::Bytes,
            )
            .counter(
                "regions_in_flight",
                self.chunks.iter().map(|c| c.in_flight.len() as u64).sum(),
                Unit::Count,
            )
            .counter("staged_bytes", c.staged_bytes, Unit::Bytes)
            .counter("recover_reclaim", c.reclaims, Unit::Count)
            .counter("recover_wait_oldest", c.waits, Unit::Count)
            .counter("recover_grow", c.grows, Unit::Count)
            .counter("recover_submit_early", c.early_submits, Unit::Count)
            .counter("exhausted", c.exhausted, Unit::Count)
            .counter("dedicated", c.dedicated, Unit::Count);
        u.push_metrics("ring", &mut s);
        let fragmentation = MetricValue::float(self.fragmentation(), Unit::Ratio);
        if let Some(m) = s
            .metrics
            .iter_mut()
            .find(|m| m.name == "ring.fragmentation")
        {
            m.value = fragmentation;
        }
        s
    }
}

/// `1 - largest / min(free, max_region)` over chunks given as `(free bytes, largest free
/// range)`, 0 when nothing is free (see the module docs).
pub(crate) fn fragmentation(chunks: impl Iterator<Item = (u64, u64)>, max_region: u64) -> f64 {
    let (free, largest) = chunks.fold((0u64, 0u64), |(free, largest), (f, l)| {
        (free.saturating_add(f), largest.max(l))
    });
    let placeable = free.min(max_region);
    if placeable == 0 {
        return 0.0;
    }
    (1.0 - largest.min(placeable) as f64 / placeable as f64).max(0.0)
}

impl<B: Backend> StagingState<B> {
    pub(crate) fn chunk_reports(&self) -> Vec<gantry_host::AllocatorReport> {
        self.chunks.iter().map(|c| c.ring.report()).collect()
    }
}

/// Bytes of small uploads waiting to be copied into a chunk's mapping.
#[derive(Default)]
pub(crate) struct Shadow {
    bytes: Vec<u8>,
    /// `(offset, len)` of each gathered upload, in allocation order.
    spans: Vec<(u64, u64)>,
    /// The chunk's placement count at the last [`Shadow::put_placed`].
    last_placed: u64,
}

impl Shadow {
    /// Copies `data` for the chunk offset `offset`.
    pub(crate) fn put(&mut self, offset: u64, data: &[u8]) {
        let start = offset as usize; // within a chunk, which fits in memory
        let end = start + data.len();
        if self.bytes.len() < end {
            self.bytes.resize(end.next_power_of_two(), 0);
        }
        self.bytes[start..end].copy_from_slice(data);
        // Right after the last span (within alignment padding): extend it, so that a run of
        // uploads stays one span and `flush_into` has nothing to sort.
        match self.spans.last_mut() {
            Some((s, len)) if *s + *len <= offset && offset <= *s + *len + 256 => {
                *len = offset + data.len() as u64 - *s;
            }
            _ => self.spans.push((offset, data.len() as u64)),
        }
    }

    /// Copies `data` for the chunk offset `offset`, the chunk's `placed`-th region. It extends
    /// the last span only when that holds the region placed just before (so the gap between
    /// them is alignment padding, holding no other region's bytes).
    fn put_placed(&mut self, offset: u64, data: &[u8], placed: u64) {
        let start = offset as usize; // within a chunk, which fits in memory
        let end = start + data.len();
        if self.bytes.len() < end {
            self.bytes.resize(end.next_power_of_two(), 0);
        }
        self.bytes[start..end].copy_from_slice(data);
        let follows = placed == self.last_placed.wrapping_add(1);
        self.last_placed = placed;
        match self.spans.last_mut() {
            Some((s, len)) if follows && *s + *len <= offset => {
                *len = offset + data.len() as u64 - *s;
            }
            _ => self.spans.push((offset, data.len() as u64)),
        }
    }

    /// Copies the bytes of each non-empty write of `writes` to the chunk offset of its entry
    /// of `at` (in step, as a [`CopyList`] built from them), all inside
    /// `[start, start + len)`, and keeps that range as one span (its alignment gaps too).
    pub(crate) fn put_list(
        &mut self,
        start: u64,
        len: u64,
        writes: &[(u64, &[u8])],
        at: &[ScatterWrite],
    ) {
        let end = (start + len) as usize; // within a chunk, which fits in memory
        if self.bytes.len() < end {
            self.bytes.resize(end.next_power_of_two(), 0);
        }
        let nonempty = writes.iter().filter(|w| !w.1.is_empty());
        for (&(_, data), w) in nonempty.zip(at) {
            let at = w.src_offset as usize;
            self.bytes[at..at + data.len()].copy_from_slice(data);
        }
        self.spans.push((start, len));
    }

    /// Writes the gathered spans into the mapped `buffer`, merging those at most `merge_gap`
    /// bytes apart.
    fn flush_into<B: Backend>(
        &mut self,
        device: &Device<B>,
        buffer: &Buffer<B>,
        merge_gap: u64,
    ) -> Result<()> {
        if self.spans.is_empty() {
            return Ok(());
        }
        self.spans.sort_unstable_by_key(|s| s.0);
        let mut i = 0;
        while i < self.spans.len() {
            let (start, mut end) = (self.spans[i].0, self.spans[i].0 + self.spans[i].1);
            let mut j = i + 1;
            // Merge spans that touch or are separated only by alignment padding. A gap of up
            // to 256 bytes holds no other region's bytes: regions written straight into the
            // mapping are larger than that (`SMALL_UPLOAD` in transfer.rs).
            while j < self.spans.len() && self.spans[j].0 <= end + merge_gap {
                end = end.max(self.spans[j].0 + self.spans[j].1);
                j += 1;
            }
            let bytes = &self.bytes[start as usize..end as usize];
            let written = device.write_mapped(buffer, start, bytes);
            if let Err(e) = written {
                self.spans.clear();
                return Err(e.into());
            }
            i = j;
        }
        self.spans.clear();
        Ok(())
    }
}
