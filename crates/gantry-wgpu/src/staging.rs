//! Staging for batched writes: chunks of `MAP_WRITE | COPY_SRC` memory that stay mapped while
//! a batch records into them, are unmapped at submit, re-mapped with `map_async` (which
//! completes once the submission is done) and reused, up to a bound on idle bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use gantry_core::DeviceError;

const MAP_ALIGN: u64 = wgpu::MAP_ALIGNMENT;

/// Below this, one thread copies; above, the copy is split over threads.
const PARALLEL_COPY_MIN: usize = 16 << 20;

fn write_view(buffer: &wgpu::Buffer, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
    let start = offset - offset % MAP_ALIGN;
    let end = gantry_core::align_up(offset + data.len() as u64, wgpu::COPY_BUFFER_ALIGNMENT)
        .unwrap_or(u64::MAX)
        .min(buffer.size());
    let mut view = buffer
        .get_mapped_range_mut(start..end)
        .map_err(|e| DeviceError::Internal(format!("get_mapped_range_mut: {e}")))?;
    let skip = usize::try_from(offset - start).unwrap_or(usize::MAX);
    view.slice(skip..skip + data.len()).copy_from_slice(data);
    Ok(())
}

/// Copies `data` into the mapped `buffer` at `offset` (any alignment), splitting large copies
/// over the machine's cores (one thread reaches about 10 GB/s into write-combined memory;
/// several reach far more). Each thread takes its own view of a disjoint range.
pub(crate) fn write_mapped_range(
    buffer: &wgpu::Buffer,
    offset: u64,
    data: &[u8],
) -> Result<(), DeviceError> {
    if data.len() < PARALLEL_COPY_MIN {
        return write_view(buffer, offset, data);
    }
    let threads = copy_threads();
    if threads == 1 {
        return write_view(buffer, offset, data);
    }
    // Interior boundaries on MAP_ALIGNMENT, so the views do not overlap.
    let piece =
        gantry_core::align_up(data.len().div_ceil(threads) as u64, MAP_ALIGN).unwrap_or(u64::MAX);
    let first_end = (offset - offset % MAP_ALIGN + piece).min(offset + data.len() as u64);
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        let mut at = offset;
        let end = offset + data.len() as u64;
        let mut next_end = first_end;
        while at < end {
            let lo = usize::try_from(at - offset).unwrap_or(usize::MAX);
            let hi = usize::try_from(next_end - offset).unwrap_or(usize::MAX);
            let part = &data[lo..hi];
            let piece_offset = at;
            handles.push(scope.spawn(move || write_view(buffer, piece_offset, part)));
            at = next_end;
            next_end = (next_end + piece).min(end);
        }
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(DeviceError::Internal("copy thread panicked".into())))
        })
    })
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
}

impl StagingPool {
    pub(crate) fn new(chunk_bytes: u64, keep_bytes: u64) -> Self {
        Self {
            chunk_bytes: chunk_bytes.max(MAP_ALIGN),
            keep_bytes,
            free: Mutex::new(Vec::new()),
            idle: AtomicU64::new(0),
        }
    }

    pub(crate) fn idle_bytes(&self) -> u64 {
        self.idle.load(Ordering::Relaxed)
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
        Ok(Chunk {
            buffer: create(size)?,
            size,
        })
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

/// Idle `MAP_READ | COPY_DST` buffers for readback, reused instead of created per read (a
/// new buffer's pages are faulted in on first use), up to a bound on idle bytes.
#[derive(Debug)]
pub(crate) struct ReadbackPool {
    keep_bytes: u64,
    free: Mutex<Vec<wgpu::Buffer>>,
    idle: AtomicU64,
}

impl ReadbackPool {
    pub(crate) fn new(keep_bytes: u64) -> Self {
        Self {
            keep_bytes,
            free: Mutex::new(Vec::new()),
            idle: AtomicU64::new(0),
        }
    }

    /// An unmapped readback buffer of at least `size` bytes (at most twice that, so small
    /// reads do not hold big buffers).
    pub(crate) fn acquire(
        &self,
        size: u64,
        create: impl FnOnce(u64) -> Result<wgpu::Buffer, DeviceError>,
    ) -> Result<wgpu::Buffer, DeviceError> {
        {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, b)| b.size() >= size && b.size() / 2 <= size)
                .min_by_key(|(_, b)| b.size())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let buffer = free.swap_remove(i);
                self.idle.fetch_sub(buffer.size(), Ordering::Relaxed);
                return Ok(buffer);
            }
        }
        create(size)
    }

    /// Takes back an unmapped readback buffer, or frees it when the bound is reached.
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

/// A batch: one command encoder and the staging chunks its writes use.
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
    /// An error from recording (a temporary buffer that could not be created), returned by
    /// submit.
    pub(crate) error: Option<DeviceError>,
}

impl WgpuBatch {
    pub(crate) fn new(device: &wgpu::Device, pool: Arc<StagingPool>) -> Self {
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
            error: None,
        }
    }

    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
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

    /// Copies `data` into staging and records (or extends) the copy to `dst`.
    pub(crate) fn write(
        &mut self,
        dst: &wgpu::Buffer,
        offset: u64,
        data: &[u8],
        create: &dyn Fn(u64) -> Result<wgpu::Buffer, DeviceError>,
    ) -> Result<(), DeviceError> {
        let len = data.len() as u64;
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.size - self.used >= len);
        if !fits {
            self.view = None;
            let chunk = self.pool.acquire(len, create)?;
            self.chunks.push(chunk);
            self.used = 0;
        }
        let index = self.chunks.len() - 1;
        let src_offset = self.used;
        if data.len() >= PARALLEL_COPY_MIN {
            self.view = None;
            write_mapped_range(&self.chunks[index].buffer, src_offset, data)?;
        } else {
            if self.view.is_none() {
                let view = self.chunks[index]
                    .buffer
                    .get_mapped_range_mut(..)
                    .map_err(|e| DeviceError::Internal(format!("staging view: {e}")))?;
                self.view = Some(view);
            }
            if let Some(view) = self.view.as_mut() {
                let start = usize::try_from(src_offset).unwrap_or(usize::MAX);
                view.slice(start..start + data.len()).copy_from_slice(data);
            }
        }
        self.used = gantry_core::align_up(src_offset + len, MAP_ALIGN)
            .unwrap_or(u64::MAX)
            .min(self.chunks[index].size);
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

    /// Records a buffer-to-buffer copy.
    pub(crate) fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.flush();
        self.encoder()
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
    }

    /// Ends recording: the command buffer and the chunks to recycle after the submission.
    pub(crate) fn finish(mut self) -> (wgpu::CommandBuffer, Vec<Chunk>) {
        self.flush();
        self.view = None;
        let chunks = std::mem::take(&mut self.chunks);
        for chunk in &chunks {
            chunk.buffer.unmap();
        }
        let encoder = self
            .encoder
            .take()
            .expect("the encoder is only taken by finish");
        (encoder.finish(), chunks)
    }
}

impl Drop for WgpuBatch {
    fn drop(&mut self) {
        // A batch dropped unsubmitted: its chunks are still mapped and unused by the GPU.
        self.view = None;
        for chunk in std::mem::take(&mut self.chunks) {
            self.pool.give_back(chunk);
        }
    }
}
