//! Staging for batched writes: chunks of `MAP_WRITE | COPY_SRC` memory that stay mapped while
//! a batch records into them, are unmapped at submit, re-mapped with `map_async` (which
//! completes once the submission is done) and reused, up to a bound on idle bytes.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use gantry_core::DeviceError;
use gantry_core::scatter::{self, CopyList, CopyRun, ScatterPlan, ScatterWrite};

use crate::WgpuBackend;
use crate::scatter::{Scatter, ScatterPipeline};

const MAP_ALIGN: u64 = wgpu::MAP_ALIGNMENT;

/// Writes up to this size are gathered in a batch's shadow (see `WgpuBatch::shadow`).
const SHADOW_WRITE_MAX: usize = 4096;
/// The shadow's window: copied into the mapping when full.
const SHADOW_BYTES: usize = 64 << 10;

/// Below this, one thread copies a readback; above, the copy is split over threads.
const PARALLEL_COPY_MIN: usize = 16 << 20;

/// Below this, one thread copies into a mapping; above, the copy threads share it (they are
/// persistent, so a manager's flushed shadow of a few MB is worth splitting).
const PARALLEL_WRITE_MIN: usize = 1 << 20;

/// Many small writes of at least this many bytes in all are copied into staging (or a mapped
/// buffer) by the copy threads (`gantry_core::copier`): 10,000 writes of 256 bytes took 190 us
/// on one thread of the H100's host.
pub(crate) const PARALLEL_STAGED_MIN: usize = 256 << 10;

/// Most bytes of deferred writes a batch keeps in host memory for direct writes
/// (`WgpuBatch::host`); later ones are staged as usual.
const HOST_BYTES_MAX: usize = 64 << 20;

/// Copies `data` into the mapped `buffer` at `offset` (any alignment), through one view of the
/// range; from [`PARALLEL_WRITE_MIN`] bytes the copy threads (`gantry_core::copier`) share the
/// copy (one thread reaches about 10 GB/s into write-combined memory; several reach far more).
pub(crate) fn write_mapped_range(
    buffer: &wgpu::Buffer,
    offset: u64,
    data: &[u8],
) -> Result<(), DeviceError> {
    let start = offset - offset % MAP_ALIGN;
    let end = gantry_core::align_up(offset + data.len() as u64, wgpu::COPY_BUFFER_ALIGNMENT)
        .unwrap_or(u64::MAX)
        .min(buffer.size());
    let mut view = buffer
        .get_mapped_range_mut(start..end)
        .map_err(|e| DeviceError::Internal(format!("get_mapped_range_mut: {e}")))?;
    let skip = usize::try_from(offset - start).unwrap_or(usize::MAX);
    let mut dst = view.slice(skip..skip + data.len());
    if data.len() < PARALLEL_WRITE_MIN {
        dst.copy_from_slice(data);
        return Ok(());
    }
    let base = dst.as_raw_element_ptr().as_ptr();
    // SAFETY: `dst` is a writable view of `data.len()` bytes at `base`, which this thread holds
    // mutably (nothing else writes it) until the copy returns; `data` is host memory, not this
    // mapping.
    unsafe {
        let piece = gantry_core::copier::CopyPiece::new(base, data.as_ptr(), data.len());
        gantry_core::copier::copy_pieces(&[piece], PARALLEL_WRITE_MIN);
    }
    Ok(())
}

fn read_view(buffer: &wgpu::Buffer, offset: u64, out: &mut [u8]) -> Result<(), DeviceError> {
    let start = offset - offset % MAP_ALIGN;
    let end = gantry_core::align_up(offset + out.len() as u64, wgpu::COPY_BUFFER_ALIGNMENT)
        .unwrap_or(u64::MAX)
        .min(buffer.size());
    let view = buffer
        .get_mapped_range(start..end)
        .map_err(|e| DeviceError::Internal(format!("get_mapped_range: {e}")))?;
    let skip = usize::try_from(offset - start).unwrap_or(usize::MAX);
    out.copy_from_slice(&view[skip..skip + out.len()]);
    Ok(())
}

/// Copies from the mapped `buffer` at `offset` (any alignment) into `out`, splitting large
/// copies over the machine's cores like [`write_mapped_range`].
pub(crate) fn read_mapped_range(
    buffer: &wgpu::Buffer,
    offset: u64,
    out: &mut [u8],
) -> Result<(), DeviceError> {
    let threads = copy_threads();
    if out.len() < PARALLEL_COPY_MIN || threads == 1 {
        return read_view(buffer, offset, out);
    }
    let piece =
        gantry_core::align_up(out.len().div_ceil(threads) as u64, MAP_ALIGN).unwrap_or(u64::MAX);
    let first = usize::try_from(
        (offset - offset % MAP_ALIGN + piece).min(offset + out.len() as u64) - offset,
    )
    .unwrap_or(usize::MAX);
    let piece = usize::try_from(piece).unwrap_or(usize::MAX);
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        let (head, mut rest) = out.split_at_mut(first);
        handles.push(scope.spawn(move || read_view(buffer, offset, head)));
        let mut at = offset + first as u64;
        while !rest.is_empty() {
            let n = piece.min(rest.len());
            let (part, tail) = rest.split_at_mut(n);
            rest = tail;
            let part_offset = at;
            at += n as u64;
            handles.push(scope.spawn(move || read_view(buffer, part_offset, part)));
        }
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(DeviceError::Internal("copy thread panicked".into())))
        })
    })
}

fn copy_threads() -> usize {
    // `available_parallelism` reads cgroup files: ask once, not per copy.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .clamp(1, 16)
    })
}

/// A mapped staging buffer.
#[derive(Debug)]
pub(crate) struct Chunk {
    buffer: wgpu::Buffer,
    size: u64,
}

/// Idle mapped chunks, ready for the next batch.
#[derive(Debug)]
pub(crate) struct StagingPool {
    chunk_bytes: u64,
    keep_bytes: u64,
    free: Mutex<Vec<Chunk>>,
    idle: AtomicU64,
    /// Chunks created since the pool was (a steady stream of batches stops creating them).
    created: AtomicU64,
}

impl StagingPool {
    pub(crate) fn new(chunk_bytes: u64, keep_bytes: u64) -> Self {
        Self {
            chunk_bytes: chunk_bytes.max(MAP_ALIGN),
            keep_bytes,
            free: Mutex::new(Vec::new()),
            idle: AtomicU64::new(0),
            created: AtomicU64::new(0),
        }
    }

    pub(crate) fn idle_bytes(&self) -> u64 {
        self.idle.load(Ordering::Relaxed)
    }

    pub(crate) fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// A mapped chunk of at least `min_size` bytes: an idle one or a new one.
    fn acquire(
        &self,
        min_size: u64,
        create: &dyn Fn(u64) -> Result<wgpu::Buffer, DeviceError>,
    ) -> Result<Chunk, DeviceError> {
        {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, c)| c.size >= min_size)
                .min_by_key(|(_, c)| c.size)
                .map(|(i, _)| i);
            if let Some(i) = best {
                let chunk = free.swap_remove(i);
                self.idle.fetch_sub(chunk.size, Ordering::Relaxed);
                return Ok(chunk);
            }
        }
        let size = gantry_core::align_up(min_size.max(self.chunk_bytes), MAP_ALIGN)
            .ok_or(DeviceError::OutOfMemory)?;
        let buffer = create(size)?;
        self.created.fetch_add(1, Ordering::Relaxed);
        Ok(Chunk { buffer, size })
    }

    /// Keeps a mapped, unused chunk if the bound allows, else frees it.
    fn give_back(&self, chunk: Chunk) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if self.idle.load(Ordering::Relaxed) + chunk.size <= self.keep_bytes {
            self.idle.fetch_add(chunk.size, Ordering::Relaxed);
            free.push(chunk);
        } else {
            drop(free);
            chunk.buffer.destroy();
        }
    }

    /// Re-maps submitted chunks; each comes back to the pool once its submission is done
    /// (the `map_async` callback runs in a later poll).
    pub(crate) fn recycle_after_submit(self: &Arc<Self>, chunks: Vec<Chunk>) {
        for chunk in chunks {
            if self.idle.load(Ordering::Relaxed) + chunk.size > self.keep_bytes {
                chunk.buffer.destroy();
                continue;
            }
            let pool = Arc::clone(self);
            let buffer = chunk.buffer.clone();
            let size = chunk.size;
            buffer.map_async(wgpu::MapMode::Write, .., move |result| {
                if result.is_ok() {
                    pool.give_back(chunk);
                } else {
                    chunk.buffer.destroy();
                }
            });
            let _ = size;
        }
    }
}

impl Drop for StagingPool {
    fn drop(&mut self) {
        for chunk in self
            .free
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            chunk.buffer.destroy();
        }
    }
}

/// Idle buffers of one kind, reused instead of created per use (a new buffer's pages are
/// faulted in on first use), up to a bound on idle bytes: `MAP_READ | COPY_DST` buffers for
/// readback, and the scatter path's scratch buffers.
#[derive(Debug)]
pub(crate) struct ReadbackPool {
    keep_bytes: u64,
    /// A buffer serves requests down to `1 / slack` of its size, so small uses do not hold
    /// big buffers.
    slack: u64,
    free: Mutex<Vec<wgpu::Buffer>>,
    idle: AtomicU64,
}

impl ReadbackPool {
    /// Readback buffers: served down to half their size.
    pub(crate) fn new(keep_bytes: u64) -> Self {
        Self::with_slack(keep_bytes, 2)
    }

    pub(crate) fn with_slack(keep_bytes: u64, slack: u64) -> Self {
        Self {
            keep_bytes,
            slack: slack.max(1),
            free: Mutex::new(Vec::new()),
            idle: AtomicU64::new(0),
        }
    }

    /// An idle buffer of at least `size` bytes (at most `slack` times that), if there is one.
    pub(crate) fn take(&self, size: u64) -> Option<wgpu::Buffer> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.size() >= size && b.size() / self.slack <= size)
            .min_by_key(|(_, b)| b.size())
            .map(|(i, _)| i)?;
        let buffer = free.swap_remove(best);
        self.idle.fetch_sub(buffer.size(), Ordering::Relaxed);
        Some(buffer)
    }

    /// An idle buffer of at least `size` bytes (see [`Self::take`]), else one from `create`.
    pub(crate) fn acquire(
        &self,
        size: u64,
        create: impl FnOnce(u64) -> Result<wgpu::Buffer, DeviceError>,
    ) -> Result<wgpu::Buffer, DeviceError> {
        match self.take(size) {
            Some(buffer) => Ok(buffer),
            None => create(size),
        }
    }

    /// Takes back an unmapped buffer, or frees it when the bound is reached.
    pub(crate) fn release(&self, buffer: wgpu::Buffer) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if self.idle.load(Ordering::Relaxed) + buffer.size() <= self.keep_bytes {
            self.idle.fetch_add(buffer.size(), Ordering::Relaxed);
            free.push(buffer);
        } else {
            drop(free);
            buffer.destroy();
        }
    }
}

impl Drop for ReadbackPool {
    fn drop(&mut self) {
        for buffer in self
            .free
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            buffer.destroy();
        }
    }
}

/// A copy not yet recorded, kept so that the next adjacent write can extend it.
#[derive(Debug)]
struct PendingCopy {
    chunk: usize,
    src_offset: u64,
    dst: wgpu::Buffer,
    dst_offset: u64,
    size: u64,
}

/// Small writes to one destination from one source (a staging chunk, or the source of
/// deferred small copies), deferred to become one scatter dispatch (or, when
/// [`ScatterPlan::new`] refuses them, copy regions in program order).
#[derive(Debug)]
struct Group {
    dst: wgpu::Buffer,
    src: Source,
    writes: Vec<ScatterWrite>,
}

/// Where a group's bytes are: a staging chunk of the batch, the batch's host buffer (for
/// direct writes; staged before anything is recorded from it), or (deferred copies) the
/// copies' source buffer.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Chunk(usize),
    Host,
    Buffer(wgpu::Buffer),
}

/// Where a deferred write of `len` bytes to `offset` is staged: at a multiple of the wide
/// unit when both are (so that its group can take the wide scatter shader), else of
/// `MAP_ALIGN`.
fn deferred_align(offset: u64, len: u64) -> u64 {
    if (offset | len).is_multiple_of(scatter::WIDE_UNIT) {
        scatter::WIDE_UNIT.max(MAP_ALIGN)
    } else {
        MAP_ALIGN
    }
}

/// Where a batch staged a record table: chunk, offset, bytes.
type StagedTable = (usize, u64, u64);

/// [`WgpuBatch::current`] when no group is current.
const NO_GROUP: usize = usize::MAX;

/// A batch: one command encoder and the staging chunks its writes use.
///
/// Ordering: commands reach the encoder in program order *per buffer*. Small writes to a
/// `STORAGE` destination are deferred in [`Group`]s; before anything else touching that
/// destination is recorded (a write that is not deferred, a copy from or to it) its groups
/// are emitted, and `finish` emits the rest. The pending (coalescing) copy and the groups
/// never share a destination: deferring a write to the pending copy's destination records
/// that copy first, and a pending copy is only started after its destination's groups were
/// emitted. Commands on different buffers may be reordered; nothing can observe that.
/// Small copies into a `STORAGE` buffer are deferred too, as writes whose bytes are in the
/// copy's source; a command that writes such a source first emits every group, so the
/// deferred reads keep their place before it.
#[derive(Debug)]
pub struct WgpuBatch {
    encoder: Option<wgpu::CommandEncoder>,
    pool: Arc<StagingPool>,
    chunks: Vec<Chunk>,
    /// Bytes used in the last chunk (a multiple of `MAP_ALIGNMENT`).
    used: u64,
    pending: Option<PendingCopy>,
    /// A write view of the whole last chunk, held while recording so that small writes do
    /// not each ask wgpu for a view; dropped before the chunk is unmapped.
    view: Option<wgpu::BufferViewMut>,
    /// Small writes bound for the last chunk at `shadow_at`, gathered in host memory and
    /// copied into the mapping [`SHADOW_BYTES`] at a time. Staging is often write-combined
    /// memory (on discrete GPUs, device memory behind the PCIe BAR), where every locked
    /// instruction between two small copies (each write takes a buffer lock) drains the
    /// write-combining buffers: 10,000 writes of 256 bytes took 2.3 ms to record on an H100
    /// that way, and 0.42 ms as one call. Copies of whole windows keep the stream unbroken.
    /// Whether small writes go through `shadow`: where staging may be write-combined
    /// (discrete GPUs). On UMA devices it is cached host memory and the extra copy costs.
    shadow: Vec<u8>,
    shadow_at: usize,
    use_shadow: bool,
    /// Deferred small writes, groups per (destination, source), in creation order.
    groups: Vec<Group>,
    /// How many of `groups` hold deferred copies (a `Source::Buffer`).
    copy_groups: usize,
    /// The group the last deferred write joined (checked first: consecutive writes to one
    /// buffer cost one handle comparison each); [`NO_GROUP`] after groups were emitted, when
    /// it may no longer be its destination's newest group.
    current: usize,
    scatter: Arc<Scatter>,
    /// Scratch buffers the batch's dispatches read, returned to the pool after submission.
    scratch: Vec<wgpu::Buffer>,
    /// Whether deferred writes wait in `host` for a direct write at submission
    /// ([`crate::WgpuOptions::direct_writes`]).
    direct: bool,
    /// The bytes of deferred writes whose group's source is [`Source::Host`] (each at its
    /// `deferred_align`), at most [`HOST_BYTES_MAX`].
    host: Vec<u8>,
    /// Whether any command was recorded into the encoder.
    encoder_used: bool,
    /// An error from recording (a temporary buffer that could not be created), returned by
    /// submit.
    pub(crate) error: Option<DeviceError>,
}

impl WgpuBatch {
    pub(crate) fn new(
        device: &wgpu::Device,
        pool: Arc<StagingPool>,
        scatter: Arc<Scatter>,
        use_shadow: bool,
        direct: bool,
    ) -> Self {
        Self {
            encoder: Some(
                device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("gantry-wgpu batch"),
                }),
            ),
            pool,
            chunks: Vec::new(),
            used: 0,
            pending: None,
            view: None,
            shadow: Vec::new(),
            shadow_at: 0,
            use_shadow,
            groups: Vec::new(),
            copy_groups: 0,
            current: NO_GROUP,
            scatter,
            scratch: Vec::new(),
            direct,
            host: Vec::new(),
            encoder_used: false,
            error: None,
        }
    }

    /// The encoder, to record into it.
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.encoder_used = true;
        self.encoder
            .as_mut()
            .expect("the encoder is only taken by finish")
    }

    fn flush(&mut self) {
        if let Some(p) = self.pending.take() {
            let src = self.chunks[p.chunk].buffer.clone();
            self.encoder()
                .copy_buffer_to_buffer(&src, p.src_offset, &p.dst, p.dst_offset, p.size);
        }
    }

    /// The write view of the last chunk, taken at first use.
    fn view_mut(&mut self) -> Result<&mut wgpu::BufferViewMut, DeviceError> {
        if self.view.is_none() {
            let chunk = self
                .chunks
                .last()
                .ok_or_else(|| DeviceError::Internal("staging view without a chunk".into()))?;
            let view = chunk
                .buffer
                .get_mapped_range_mut(..)
                .map_err(|e| DeviceError::Internal(format!("staging view: {e}")))?;
            self.view = Some(view);
        }
        self.view
            .as_mut()
            .ok_or_else(|| DeviceError::Internal("staging view".into()))
    }

    /// Copies the shadow's bytes into the last chunk's mapping, at `shadow_at`.
    fn flush_shadow(&mut self) -> Result<(), DeviceError> {
        if self.shadow.is_empty() {
            return Ok(());
        }
        let at = self.shadow_at;
        let mut shadow = std::mem::take(&mut self.shadow);
        let result = self
            .view_mut()
            .map(|view| view.slice(at..at + shadow.len()).copy_from_slice(&shadow));
        shadow.clear();
        self.shadow = shadow;
        result
    }

    /// Where `len` bytes of a deferred write go next in [`Self::host`], at a multiple of
    /// `align`, with the padding added; `None` when the batch has direct writes off or the
    /// host buffer would pass [`HOST_BYTES_MAX`] (the write is staged as usual).
    fn host_room(&mut self, len: u64, align: u64) -> Option<u64> {
        if !self.direct {
            return None;
        }
        let at = gantry_core::align_up(self.host.len() as u64, align)?;
        if at.checked_add(len)? > HOST_BYTES_MAX as u64 {
            return None;
        }
        self.host.resize(usize::try_from(at).ok()?, 0);
        Some(at)
    }

    /// Stages the host buffer's bytes (one block) and points every group that reads them,
    /// in `self.groups` and in `more`, at that chunk: before any of them is recorded.
    fn stage_host(&mut self, ctx: &WgpuBackend, more: &mut [Group]) -> Result<(), DeviceError> {
        let mut host = std::mem::take(&mut self.host);
        // Host offsets are aligned from the buffer's start: a base aligned to the largest
        // `deferred_align` keeps them aligned.
        let staged = self.stage(ctx, &host, scatter::WIDE_UNIT.max(MAP_ALIGN));
        host.clear();
        self.host = host;
        let (index, base) = staged?;
        for g in self.groups.iter_mut().chain(more.iter_mut()) {
            if g.src == Source::Host {
                g.src = Source::Chunk(index);
                for w in &mut g.writes {
                    w.src_offset += base;
                }
            }
        }
        self.current = NO_GROUP;
        Ok(())
    }

    /// Carries out the deferred writes on the host, if the batch recorded nothing else, every
    /// group reads [`Self::host`] or a buffer the host may read (`MAP_READ`: a
    /// `BufferManager`'s staging ring, say) and writes a buffer the host may map
    /// (`MAP_WRITE`), and none of those buffers is still used by a submission: maps each
    /// source's and destination's window, copies the writes, unmaps. Otherwise (or if a
    /// mapping fails) leaves the groups to be recorded as usual; a destination written before
    /// the failure is written again by them, with the same bytes.
    ///
    /// The pending groups are independent: a command that writes a buffer some group reads
    /// first emits every group, and one that reads a group's destination emits that group
    /// (`before_writing`, `emit_for`), so no pending group reads another's destination.
    fn write_direct(&mut self, ctx: &WgpuBackend) {
        let readable = |b: &wgpu::Buffer| b.usage().contains(wgpu::BufferUsages::MAP_READ);
        let eligible = !self.encoder_used
            && self.groups.iter().enumerate().all(|(i, g)| {
                let source_ok = match &g.src {
                    Source::Host => true,
                    Source::Buffer(b) => readable(b) && !self.groups.iter().any(|h| h.dst == *b),
                    Source::Chunk(_) => false,
                };
                source_ok
                    && !g.writes.is_empty()
                    && g.dst.usage().contains(wgpu::BufferUsages::MAP_WRITE)
                    // One group per destination: one mapping each.
                    && !self.groups[..i].iter().any(|h| h.dst == g.dst)
            });
        if !eligible || self.groups.is_empty() {
            return;
        }
        // Each destination's window, and each source buffer's (over all its groups).
        let window = |ranges: &mut dyn Iterator<Item = (u64, u64)>, size: u64| {
            let (lo, hi) = ranges.fold((u64::MAX, 0), |(lo, hi), (at, len)| {
                (lo.min(at), hi.max(at + len))
            });
            let hi = gantry_core::align_up(hi, wgpu::COPY_BUFFER_ALIGNMENT)
                .unwrap_or(u64::MAX)
                .min(size);
            (gantry_core::align_down(lo, MAP_ALIGN), hi)
        };
        let windows: Vec<(u64, u64)> = self
            .groups
            .iter()
            .map(|g| {
                window(
                    &mut g.writes.iter().map(|w| (w.dst_offset, w.len)),
                    g.dst.size(),
                )
            })
            .collect();
        let mut sources: Vec<(wgpu::Buffer, u64, u64)> = Vec::new();
        for g in &self.groups {
            if let Source::Buffer(b) = &g.src
                && !sources.iter().any(|(s, ..)| s == b)
            {
                let (lo, hi) = window(
                    &mut self
                        .groups
                        .iter()
                        .filter(|h| h.src == g.src)
                        .flat_map(|h| h.writes.iter().map(|w| (w.src_offset, w.len))),
                    b.size(),
                );
                sources.push((b.clone(), lo, hi));
            }
        }
        // 0: pending, 1: mapped, 2: refused.
        let map = |buffer: &wgpu::Buffer, mode, lo, hi| {
            let state = Arc::new(AtomicU8::new(0));
            let done = Arc::clone(&state);
            let asked = ctx.scoped(|| {
                buffer.map_async(mode, lo..hi, move |r| {
                    done.store(if r.is_ok() { 1 } else { 2 }, Ordering::Release);
                });
            });
            if asked.is_err() {
                state.store(2, Ordering::Release);
            }
            state
        };
        let mut states: Vec<Arc<AtomicU8>> = self
            .groups
            .iter()
            .zip(&windows)
            .map(|(g, &(lo, hi))| map(&g.dst, wgpu::MapMode::Write, lo, hi))
            .collect();
        states.extend(
            sources
                .iter()
                .map(|(b, lo, hi)| map(b, wgpu::MapMode::Read, *lo, *hi)),
        );
        // Completes the mappings of buffers no submission uses; the others stay pending.
        let polled = ctx.wgpu_device().poll(wgpu::PollType::Poll).is_ok();
        let written = polled
            && states.iter().all(|s| s.load(Ordering::Acquire) == 1)
            && self.copy_direct(&windows, &sources);
        // Unmaps what was mapped and cancels what is pending.
        for g in &self.groups {
            g.dst.unmap();
        }
        for (b, ..) in &sources {
            b.unmap();
        }
        if written {
            let count: usize = self.groups.iter().map(|g| g.writes.len()).sum();
            ctx.direct_count
                .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
            self.groups.clear();
            self.copy_groups = 0;
            self.current = NO_GROUP;
            self.host.clear();
        }
    }

    /// [`Self::write_direct`]'s copies, every window mapped: `false` if a view could not be
    /// had.
    fn copy_direct(&self, windows: &[(u64, u64)], sources: &[(wgpu::Buffer, u64, u64)]) -> bool {
        let mut views = Vec::with_capacity(sources.len());
        for (b, lo, hi) in sources {
            let Ok(view) = b.get_mapped_range(*lo..*hi) else {
                return false;
            };
            views.push(view);
        }
        for (g, &(lo, hi)) in self.groups.iter().zip(windows) {
            let (bytes, base): (&[u8], u64) = match &g.src {
                Source::Host => (&self.host, 0),
                Source::Buffer(b) => {
                    let Some(i) = sources.iter().position(|(s, ..)| s == b) else {
                        return false;
                    };
                    (&views[i], sources[i].1)
                }
                Source::Chunk(_) => return false,
            };
            let Ok(mut view) = g.dst.get_mapped_range_mut(lo..hi) else {
                return false;
            };
            for w in &g.writes {
                // Inside both windows by construction.
                let at = (w.dst_offset - lo) as usize;
                let from = (w.src_offset - base) as usize;
                let len = w.len as usize;
                view.slice(at..at + len)
                    .copy_from_slice(&bytes[from..from + len]);
            }
        }
        true
    }

    /// Where `len` bytes go next, at a multiple of `align` (a power of two, at least
    /// `MAP_ALIGNMENT`): the last chunk when they fit, else a new one (the shadow flushed and
    /// the view dropped first, both belonging to the last chunk). Returns the chunk's index
    /// and the offset; `used` is left to the caller.
    fn room(
        &mut self,
        ctx: &WgpuBackend,
        len: u64,
        align: u64,
    ) -> Result<(usize, u64), DeviceError> {
        let start = gantry_core::align_up(self.used, align).unwrap_or(u64::MAX);
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| start <= c.size && c.size - start >= len);
        if fits {
            return Ok((self.chunks.len() - 1, start));
        }
        self.flush_shadow()?;
        self.view = None;
        let chunk = self.pool.acquire(len, &|size| ctx.create_staging(size))?;
        self.chunks.push(chunk);
        Ok((self.chunks.len() - 1, 0))
    }

    /// Copies `data` into staging at an offset that is a multiple of `align` (a power of
    /// two, at least `MAP_ALIGNMENT`); returns the chunk's index and the offset.
    fn stage(
        &mut self,
        ctx: &WgpuBackend,
        data: &[u8],
        align: u64,
    ) -> Result<(usize, u64), DeviceError> {
        let len = data.len() as u64;
        let (index, start) = self.room(ctx, len, align)?;
        let at = usize::try_from(start).unwrap_or(usize::MAX);
        if data.len() >= PARALLEL_WRITE_MIN {
            self.flush_shadow()?;
            self.view = None;
            write_mapped_range(&self.chunks[index].buffer, start, data)?;
        } else if !self.use_shadow || data.len() > SHADOW_WRITE_MAX {
            // The shadow's window must not span these bytes (its gaps are filled): flush it.
            self.flush_shadow()?;
            self.view_mut()?
                .slice(at..at + data.len())
                .copy_from_slice(data);
        } else {
            // Small writes gather in the shadow, copied into the mapping a window at a time.
            if at < self.shadow_at + self.shadow.len()
                || at + data.len() - self.shadow_at > SHADOW_BYTES
            {
                self.flush_shadow()?;
            }
            if self.shadow.is_empty() {
                self.shadow_at = at;
            }
            // The alignment gap (never read) is filled too, so the window stays contiguous.
            self.shadow.resize(at - self.shadow_at, 0);
            self.shadow.extend_from_slice(data);
        }
        self.used = gantry_core::align_up(start + len, MAP_ALIGN)
            .unwrap_or(u64::MAX)
            .min(self.chunks[index].size);
        Ok((index, start))
    }

    /// Copies `data` into staging and defers it for a scatter dispatch, or records (or
    /// extends) the copy to `dst`.
    pub(crate) fn write(
        &mut self,
        ctx: &WgpuBackend,
        dst: &wgpu::Buffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        let len = data.len() as u64;
        self.before_writing(ctx, dst)?;
        let scatterable = self.scatter.enabled
            && scatter::carries(offset, 0, len)
            && dst.usage().contains(wgpu::BufferUsages::STORAGE);
        let align = if scatterable {
            deferred_align(offset, len)
        } else {
            MAP_ALIGN
        };
        if scatterable && let Some(src_offset) = self.host_room(len, align) {
            if self.pending.as_ref().is_some_and(|p| p.dst == *dst) {
                self.flush();
            }
            self.host.extend_from_slice(data);
            self.defer(dst, Source::Host, offset, src_offset, len);
            return Ok(());
        }
        let (index, src_offset) = self.stage(ctx, data, align)?;
        if scatterable {
            if self.pending.as_ref().is_some_and(|p| p.dst == *dst) {
                self.flush();
            }
            self.defer(dst, Source::Chunk(index), offset, src_offset, len);
            return Ok(());
        }
        self.emit_for(ctx, dst)?;
        if let Some(p) = &mut self.pending
            && p.chunk == index
            && p.src_offset + p.size == src_offset
            && p.dst == *dst
            && p.dst_offset + p.size == offset
        {
            p.size += len;
            return Ok(());
        }
        self.flush();
        self.pending = Some(PendingCopy {
            chunk: index,
            src_offset,
            dst: dst.clone(),
            dst_offset: offset,
            size: len,
        });
        Ok(())
    }

    /// Records many writes to `dst` as that many [`Self::write`] calls would, copying their
    /// bytes straight into the mapped chunk: the shadow exists because each separate write
    /// takes a lock between two copies, which breaks write-combining; one call has no locks
    /// in between, so the copies stream into the mapping as they are, and the shadow's second
    /// copy is saved. Returns how many were recorded and the error that stopped the rest.
    pub(crate) fn write_many(
        &mut self,
        ctx: &WgpuBackend,
        dst: &wgpu::Buffer,
        writes: &[(u64, &[u8])],
    ) -> (usize, Result<(), DeviceError>) {
        let bulk = self.scatter.enabled
            && dst.usage().contains(wgpu::BufferUsages::STORAGE)
            && scatter::carries_all(writes).0;
        if !bulk {
            // With the shadow off, `stage` copies into the mapping (after flushing the
            // window, whose gaps must not span these bytes).
            let shadowed = std::mem::replace(&mut self.use_shadow, false);
            let mut recorded = 0;
            let mut result = Ok(());
            for &(offset, data) in writes {
                if let Err(e) = self.write(ctx, dst, offset, data) {
                    result = Err(e);
                    break;
                }
                recorded += 1;
            }
            self.use_shadow = shadowed;
            return (recorded, result);
        }
        let mut recorded = 0;
        let result = self.write_many_deferred(ctx, dst, writes, &mut recorded);
        (recorded, result)
    }

    /// [`Self::write_many`] when every write is deferred: what [`Self::write`] does for each,
    /// with the checks that concern the destination made once, and each chunk's writes
    /// copied and deferred in one loop. Counts the writes recorded in `recorded`.
    fn write_many_deferred(
        &mut self,
        ctx: &WgpuBackend,
        dst: &wgpu::Buffer,
        writes: &[(u64, &[u8])],
        recorded: &mut usize,
    ) -> Result<(), DeviceError> {
        self.before_writing(ctx, dst)?;
        if self.pending.as_ref().is_some_and(|p| p.dst == *dst) {
            self.flush();
        }
        if self.direct && !writes.is_empty() {
            // Into host memory while there is room (see `host_room`).
            let group = self.group_for(dst, &Source::Host);
            let mut list = std::mem::take(&mut self.groups[group].writes);
            for &(offset, data) in writes {
                let len = data.len() as u64;
                let Some(at) = self.host_room(len, deferred_align(offset, len)) else {
                    break;
                };
                self.host.extend_from_slice(data);
                list.push(ScatterWrite {
                    dst_offset: offset,
                    src_offset: at,
                    len,
                });
                *recorded += 1;
            }
            self.groups[group].writes = list;
        }
        // The shadow's window must not span these bytes (its gaps are filled).
        self.flush_shadow()?;
        while let Some(&(offset, data)) = writes.get(*recorded) {
            let len = data.len() as u64;
            // The chunk the next write goes in; the loop below fills it.
            let (index, start) = self.room(ctx, len, deferred_align(offset, len))?;
            let size = self.chunks[index].size;
            self.view_mut()?;
            let first = *recorded;
            // A new chunk is used from its start.
            let mut used = if start == 0 { 0 } else { self.used };
            let group = self.group_for(dst, &Source::Chunk(index));
            let list = &mut self.groups[group].writes;
            let Some(view) = self.view.as_mut() else {
                return Err(DeviceError::Internal("staging view".into()));
            };
            // Placed first, then copied together (on the copy threads when they are many).
            let mut mapping = view.slice(..);
            let limit = size.min(u64::try_from(mapping.len()).unwrap_or(u64::MAX));
            let base = mapping.as_raw_element_ptr().as_ptr();
            list.reserve(writes.len() - first);
            let listed = list.len();
            for &(offset, data) in &writes[first..] {
                let len = data.len() as u64;
                let at =
                    gantry_core::align_up(used, deferred_align(offset, len)).unwrap_or(u64::MAX);
                if at > limit || limit - at < len {
                    break;
                }
                list.push(ScatterWrite {
                    dst_offset: offset,
                    src_offset: at,
                    len,
                });
                used = at + len;
                *recorded += 1;
            }
            // SAFETY: `base` is the start of this chunk's mapping, held mutably through the
            // view (nothing else writes it), `limit` bytes or more; each listed range lies
            // below `limit` and after the previous one (`used` only grows), so none overlaps
            // another or a write's bytes (host memory, not this mapping).
            unsafe {
                gantry_core::copier::run_staged(
                    base,
                    &writes[first..*recorded],
                    &list[listed..],
                    PARALLEL_STAGED_MIN,
                );
            }
            if *recorded == first {
                // A fresh chunk holds at least `len` bytes: cannot happen, but never loop.
                return Err(DeviceError::Internal("staging chunk too small".into()));
            }
            self.used = gantry_core::align_up(used, MAP_ALIGN)
                .unwrap_or(u64::MAX)
                .min(size);
        }
        Ok(())
    }

    fn defer(
        &mut self,
        dst: &wgpu::Buffer,
        src: Source,
        dst_offset: u64,
        src_offset: u64,
        len: u64,
    ) {
        self.defer_ref(dst, &src, dst_offset, src_offset, len);
    }

    /// [`Self::defer`], cloning the source only when it opens a group.
    fn defer_ref(
        &mut self,
        dst: &wgpu::Buffer,
        src: &Source,
        dst_offset: u64,
        src_offset: u64,
        len: u64,
    ) {
        let write = ScatterWrite {
            dst_offset,
            src_offset,
            len,
        };
        self.defer_many(dst, src, core::iter::once(write));
    }

    /// [`Self::defer_ref`] for many writes with one source and destination: the group is
    /// looked up once, not per write.
    fn defer_many(
        &mut self,
        dst: &wgpu::Buffer,
        src: &Source,
        writes: impl ExactSizeIterator<Item = ScatterWrite>,
    ) {
        if writes.len() > 0 {
            let group = self.group_for(dst, src);
            self.groups[group].writes.extend(writes);
        }
    }

    /// The index of the group that writes deferred now to `dst` from `src` join: push them
    /// onto its list, in program order.
    fn group_for(&mut self, dst: &wgpu::Buffer, src: &Source) -> usize {
        let current = self
            .groups
            .get(self.current)
            .is_some_and(|g| g.src == *src && g.dst == *dst);
        if !current {
            // A write joins its destination's newest group when that group has the same
            // source; else it opens a new group, emitted after the older ones (program
            // order).
            match self.groups.iter().rposition(|g| g.dst == *dst) {
                Some(i) if self.groups[i].src == *src => self.current = i,
                _ => {
                    self.current = self.groups.len();
                    if matches!(src, Source::Buffer(_)) {
                        self.copy_groups += 1;
                    }
                    self.groups.push(Group {
                        dst: dst.clone(),
                        src: src.clone(),
                        writes: Vec::new(),
                    });
                }
            }
        }
        self.current
    }

    /// Before a command that writes `buffer`: if a deferred copy reads it, emits every group
    /// (in order), so that those reads are recorded before the write.
    fn before_writing(
        &mut self,
        ctx: &WgpuBackend,
        buffer: &wgpu::Buffer,
    ) -> Result<(), DeviceError> {
        // Every write of a batch calls this: with no copy groups pending (the common case of
        // a batch of writes) there is nothing to scan.
        if self.copy_groups > 0
            && self
                .groups
                .iter()
                .any(|g| matches!(&g.src, Source::Buffer(b) if b == buffer))
        {
            self.emit_all(ctx)?;
        }
        Ok(())
    }

    /// Emits the deferred groups that write `buffer`, in their order.
    fn emit_for(&mut self, ctx: &WgpuBackend, buffer: &wgpu::Buffer) -> Result<(), DeviceError> {
        if !self.groups.iter().any(|g| g.dst == *buffer) {
            return Ok(());
        }
        let (emit, keep): (Vec<Group>, Vec<Group>) = std::mem::take(&mut self.groups)
            .into_iter()
            .partition(|g| g.dst == *buffer);
        self.groups = keep;
        self.copy_groups = self
            .groups
            .iter()
            .filter(|g| matches!(g.src, Source::Buffer(_)))
            .count();
        self.current = NO_GROUP;
        self.emit(ctx, emit)
    }

    /// Emits every deferred group.
    fn emit_all(&mut self, ctx: &WgpuBackend) -> Result<(), DeviceError> {
        let groups = std::mem::take(&mut self.groups);
        self.copy_groups = 0;
        self.current = NO_GROUP;
        self.emit(ctx, groups)
    }

    fn emit(&mut self, ctx: &WgpuBackend, mut groups: Vec<Group>) -> Result<(), DeviceError> {
        let mut result = Ok(());
        if groups.iter().any(|g| g.src == Source::Host) {
            result = self.stage_host(ctx, &mut groups);
        }
        for group in groups {
            // After a failure the rest are dropped: the batch fails at submit.
            if result.is_ok() {
                result = self.emit_group(ctx, group);
            }
        }
        if let Err(e) = &result {
            self.error.get_or_insert_with(|| e.clone());
        }
        result
    }

    /// Records one group: one scatter dispatch when it may be scattered, else its copies.
    fn emit_group(&mut self, ctx: &WgpuBackend, group: Group) -> Result<(), DeviceError> {
        let shared = Arc::clone(&self.scatter);
        let plan = if group.writes.len() >= scatter::MIN_WRITES {
            // Many writes are planned in parts on the copy threads (one plan, one dispatch).
            ScatterPlan::new_in_parts(
                &group.writes,
                shared.storage_align,
                shared.max_binding,
                scatter::plan_parts(group.writes.len()),
                &gantry_core::copier::run_calls,
            )
            .filter(|p| p.record_bytes().len() as u64 <= shared.max_binding)
            .map(|mut p| {
                // GPUs: a workgroup per record; CPU devices: grid-stride.
                if shared.spread {
                    p.spread();
                }
                p
            })
        } else {
            None
        };
        let refused = plan.is_none();
        let pipeline = plan.as_ref().and_then(|p| ctx.scatter_pipeline(p.wide));
        let (Some(plan), Some(pipeline)) = (plan, pipeline) else {
            // Refused for overlaps (some bytes written twice): a group per disjoint run, in
            // order (wgpu orders dispatches that write one buffer). A run cut again finds no
            // overlap, so this goes one level deep.
            if refused
                && group.writes.len() >= 2 * scatter::MIN_WRITES
                && let Some(ends) = ScatterPlan::disjoint_runs(&group.writes)
                && ends.len() > 1
            {
                let mut start = 0;
                for end in ends {
                    let run = Group {
                        dst: group.dst.clone(),
                        src: group.src.clone(),
                        writes: group.writes[start..end].to_vec(),
                    };
                    start = end;
                    self.emit_group(ctx, run)?;
                }
                return Ok(());
            }
            shared.count_copied(group.writes.len());
            self.record_copies(&group);
            return Ok(());
        };
        // The record table goes into staging like the data; on the same chunk, at an offset
        // aligned for a storage binding, one copy takes the source window and the table.
        let align = shared.storage_align.max(MAP_ALIGN);
        let (rec_chunk, rec_offset) = self.stage(ctx, plan.record_bytes(), align)?;
        let table = (rec_chunk, rec_offset, plan.record_bytes().len() as u64);
        let (src, dst, n) = (&group.src, &group.dst, group.writes.len());
        self.record_dispatch(ctx, &plan, pipeline, src, dst, n, table)
    }

    /// Records the dispatch of `plan` (for `writes` writes to `dst` whose bytes are in
    /// `src`), its record table staged (`rec_len` bytes at `rec_offset` of chunk
    /// `rec_chunk`): the source window and the table copied into a device-local scratch
    /// buffer, one compute pass.
    #[allow(clippy::too_many_arguments)]
    fn record_dispatch(
        &mut self,
        ctx: &WgpuBackend,
        plan: &ScatterPlan,
        pipeline: &ScatterPipeline,
        src: &Source,
        dst: &wgpu::Buffer,
        writes: usize,
        (rec_chunk, rec_offset, rec_len): StagedTable,
    ) -> Result<(), DeviceError> {
        let shared = Arc::clone(&self.scatter);
        let align = shared.storage_align;
        let one_copy = *src == Source::Chunk(rec_chunk) && rec_offset >= plan.src_base;
        let (rec_at, scratch_size) = if one_copy {
            let at = rec_offset - plan.src_base;
            (at, at + rec_len)
        } else {
            let at = gantry_core::align_up(plan.src_size, align).ok_or(DeviceError::OutOfMemory)?;
            (at, at + rec_len)
        };
        let scratch = shared.acquire_scratch(scratch_size, |size| ctx.create_scratch(size))?;
        let src = self
            .source(src)
            .ok_or_else(|| DeviceError::Internal("scatter group of unstaged host bytes".into()))?;
        let records = self.chunks[rec_chunk].buffer.clone();
        let encoder = self.encoder();
        if one_copy {
            encoder.copy_buffer_to_buffer(&src, plan.src_base, &scratch, 0, scratch_size);
        } else {
            encoder.copy_buffer_to_buffer(&src, plan.src_base, &scratch, 0, plan.src_size);
            encoder.copy_buffer_to_buffer(&records, rec_offset, &scratch, rec_at, rec_len);
        }
        let binding = |buffer, offset, size| {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset,
                size: wgpu::BufferSize::new(size),
            })
        };
        let bind_group = ctx.scoped(|| {
            ctx.wgpu_device()
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("gantry-wgpu scatter"),
                    layout: &pipeline.layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: binding(&scratch, rec_at, rec_len),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: binding(&scratch, 0, plan.src_size),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: binding(dst, plan.dst_base, plan.dst_size),
                        },
                    ],
                })
        });
        let bind_group = match bind_group {
            Ok(b) => b,
            Err(e) => {
                shared.release_scratch([scratch]);
                return Err(e);
            }
        };
        {
            let mut pass = self
                .encoder()
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("gantry-wgpu scatter"),
                    timestamp_writes: None,
                });
            pass.set_pipeline(&pipeline.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(plan.groups[0], plan.groups[1], 1);
        }
        self.scratch.push(scratch);
        shared.count_dispatch(writes);
        Ok(())
    }

    /// Records a group's writes as copy regions in program order, adjacent ones merged.
    fn record_copies(&mut self, group: &Group) {
        let Some(src) = self.source(&group.src) else {
            self.error.get_or_insert_with(|| {
                DeviceError::Internal("copies of unstaged host bytes".into())
            });
            return;
        };
        let encoder = self.encoder();
        let mut run: Option<ScatterWrite> = None;
        for w in &group.writes {
            if let Some(r) = &mut run
                && r.src_offset + r.len == w.src_offset
                && r.dst_offset + r.len == w.dst_offset
            {
                r.len += w.len;
                continue;
            }
            if let Some(r) = run.replace(*w) {
                encoder.copy_buffer_to_buffer(&src, r.src_offset, &group.dst, r.dst_offset, r.len);
            }
        }
        if let Some(r) = run {
            encoder.copy_buffer_to_buffer(&src, r.src_offset, &group.dst, r.dst_offset, r.len);
        }
    }

    /// The buffer a group's bytes are in; `None` for host bytes, which `emit` stages before
    /// their groups are recorded.
    fn source(&self, src: &Source) -> Option<wgpu::Buffer> {
        match src {
            Source::Chunk(i) => Some(self.chunks[*i].buffer.clone()),
            Source::Host => None,
            Source::Buffer(b) => Some(b.clone()),
        }
    }

    /// Records a buffer-to-buffer copy: a small one into a `STORAGE` buffer joins the
    /// destination's deferred writes (the scatter dispatch then reads its bytes from a
    /// scratch copy of the source window), any other one goes to the encoder.
    pub(crate) fn copy(
        &mut self,
        ctx: &WgpuBackend,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.flush();
        // Errors are kept in `self.error` for submit.
        if self.before_writing(ctx, dst).is_err() || self.emit_for(ctx, src).is_err() {
            return;
        }
        if self.scatter.enabled
            && scatter::carries(dst_offset, src_offset, size)
            && src != dst
            && dst.usage().contains(wgpu::BufferUsages::STORAGE)
        {
            self.defer(
                dst,
                Source::Buffer(src.clone()),
                dst_offset,
                src_offset,
                size,
            );
            return;
        }
        if self.emit_for(ctx, dst).is_err() {
            return;
        }
        self.encoder()
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
    }

    /// Records copies from `src` to `dst` as that many [`Self::copy`] calls would, with the
    /// per-buffer work (emitting what must come first, the eligibility checks) done once and
    /// the source handle cloned once per group rather than per copy.
    pub(crate) fn copy_many(
        &mut self,
        ctx: &WgpuBackend,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        copies: &[(u64, u64, u64)],
    ) {
        let scatterable =
            self.scatter.enabled && src != dst && dst.usage().contains(wgpu::BufferUsages::STORAGE);
        if !scatterable {
            for &(src_offset, dst_offset, size) in copies {
                self.copy(ctx, src, src_offset, dst, dst_offset, size);
            }
            return;
        }
        self.flush();
        // Nothing deferred below writes `src` or reads `dst`: once is enough.
        if self.before_writing(ctx, dst).is_err() || self.emit_for(ctx, src).is_err() {
            return;
        }
        let source = Source::Buffer(src.clone());
        // Runs of entries that scatter join the deferred writes in one call each; the rest
        // are copies, recorded in between (program order).
        for piece in scatter::copy_runs(copies) {
            match piece {
                CopyRun::Scatter(run) => {
                    self.defer_many(dst, &source, run.iter().copied().map(ScatterWrite::of_copy));
                }
                CopyRun::Copy(src_offset, dst_offset, size) => {
                    self.copy(ctx, src, src_offset, dst, dst_offset, size);
                }
            }
        }
    }

    /// Records the copies of `list` as [`Self::copy_many`] records its entries: a list
    /// whose entries a dispatch carries joins the deferred writes whole (no entry is looked
    /// at); one of few regions once contiguous neighbours merge goes as copies.
    pub(crate) fn copy_list(
        &mut self,
        ctx: &WgpuBackend,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        list: &CopyList,
    ) {
        let scatterable =
            self.scatter.enabled && src != dst && dst.usage().contains(wgpu::BufferUsages::STORAGE);
        if !scatterable || list.len() - list.joins() < scatter::MIN_WRITES {
            for (src_offset, dst_offset, size) in list.regions() {
                self.copy(ctx, src, src_offset, dst, dst_offset, size);
            }
            return;
        }
        if !list.carried() {
            let copies: Vec<(u64, u64, u64)> = list.regions().collect();
            self.copy_many(ctx, src, dst, &copies);
            return;
        }
        self.flush();
        // Nothing deferred below writes `src` or reads `dst`: once is enough.
        if self.before_writing(ctx, dst).is_err() || self.emit_for(ctx, src).is_err() {
            return;
        }
        let source = Source::Buffer(src.clone());
        // Planned now from what the list keeps, and recorded after the writes to `dst`
        // deferred before it: unless the batch may write on the host at submission (a
        // recorded command rules that out), or the plan is refused (overlaps), when the
        // entries join the deferred writes.
        if !self.direct {
            let planned = self.plan_list(ctx, list);
            let recorded = match planned {
                Ok(Some((plan, table))) => ctx.scatter_pipeline(plan.wide).map(|pipeline| {
                    self.emit_for(ctx, dst).and_then(|()| {
                        let n = list.len();
                        self.record_dispatch(ctx, &plan, pipeline, &source, dst, n, table)
                    })
                }),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            };
            match recorded {
                Some(Err(e)) => {
                    self.error.get_or_insert(e);
                    return;
                }
                Some(Ok(())) => return,
                None => {}
            }
        }
        self.defer_many(dst, &source, list.as_slice().iter().copied());
    }

    /// The scatter plan of `list` ([`ScatterPlan::of_list_into`]), its record table written
    /// straight into staging by the threads that fill it: the plan and where the table is
    /// (chunk, offset, bytes); `None` when the plan is refused (the staging it took is
    /// left unused).
    fn plan_list(
        &mut self,
        ctx: &WgpuBackend,
        list: &CopyList,
    ) -> Result<Option<(ScatterPlan, StagedTable)>, DeviceError> {
        let shared = Arc::clone(&self.scatter);
        let Some(rec_len) = ScatterPlan::list_table_bytes(list, shared.max_binding) else {
            return Ok(None);
        };
        let Ok(table_len) = usize::try_from(rec_len) else {
            return Ok(None);
        };
        let (index, start) = self.room(ctx, rec_len, shared.storage_align.max(MAP_ALIGN))?;
        // A view of the table's bytes alone: the batch's view of the chunk goes (with the
        // shadow, which belongs to it) first.
        self.flush_shadow()?;
        self.view = None;
        let buffer = self.chunks[index].buffer.clone();
        let mut view = buffer
            .get_mapped_range_mut(start..start + rec_len)
            .map_err(|e| DeviceError::Internal(format!("get_mapped_range_mut: {e}")))?;
        let base = view.slice(..).as_raw_element_ptr().as_ptr();
        // SAFETY: `view` is a write view of the table's `rec_len` bytes at `base`, held until
        // the plan is made; nothing else of the batch touches them meanwhile, and the plan's
        // parts put different words.
        let table = unsafe { gantry_core::copier::RawTable::new(base, table_len) };
        let plan =
            ScatterPlan::of_list_on_threads(list, shared.storage_align, shared.max_binding, &table);
        drop(view);
        let Some(mut plan) = plan else {
            return Ok(None);
        };
        // GPUs: a workgroup per record; CPU devices: grid-stride.
        if shared.spread {
            plan.spread();
        }
        self.used = gantry_core::align_up(start + rec_len, MAP_ALIGN)
            .unwrap_or(u64::MAX)
            .min(self.chunks[index].size);
        Ok(Some((plan, (index, start, rec_len))))
    }

    /// Ends recording: the command buffer, the chunks to recycle after the submission and
    /// the scratch buffers to give back to the pool.
    pub(crate) fn finish(
        mut self,
        ctx: &WgpuBackend,
    ) -> Result<(wgpu::CommandBuffer, Vec<Chunk>, Vec<wgpu::Buffer>), DeviceError> {
        if self.direct {
            self.write_direct(ctx);
        }
        self.emit_all(ctx)?;
        self.flush();
        self.flush_shadow()?;
        self.view = None;
        let chunks = std::mem::take(&mut self.chunks);
        for chunk in &chunks {
            chunk.buffer.unmap();
        }
        let scratch = std::mem::take(&mut self.scratch);
        let encoder = self
            .encoder
            .take()
            .expect("the encoder is only taken by finish");
        Ok((encoder.finish(), chunks, scratch))
    }
}

impl Drop for WgpuBatch {
    fn drop(&mut self) {
        // A batch dropped unsubmitted: its chunks are still mapped and unused by the GPU, and
        // its scratch buffers were never used either.
        self.view = None;
        for chunk in std::mem::take(&mut self.chunks) {
            self.pool.give_back(chunk);
        }
        self.scatter
            .release_scratch(std::mem::take(&mut self.scratch));
    }
}
