//! gantry-core's raw [`Backend`] trait for [`VulkanBackend`].
//!
//! The trait's preconditions are established by gantry-core's facade; this module translates
//! its types (usage flags, locations, submission indices, errors) and forwards to
//! [`VulkanDevice`]'s methods.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ash::vk;
use ash::vk::Handle;
use gantry_core::scatter::{self, CopyList, CopyRun, ScatterPlan, ScatterWrite};
use gantry_core::{
    AdapterInfo, Backend, BufferUsage, DeviceError, DeviceType, Limits, MapMode, MemoryLocation,
    RawBufferDesc, SubmissionIndex, SubmittedWorkDoneCallback,
};

use crate::backend::{VulkanBackend, VulkanDevice, lock};
use crate::buffer::{MappedPtr, VulkanBuffer};
use crate::error::Error;
use crate::memory::{Location, choose_memory_type};
use crate::scatter::{Binding, Dispatch};
use crate::submit::{Direct, Op, RawCopy, record_copies, record_ops};

impl From<Error> for DeviceError {
    /// The backend's errors in gantry-core's terms: out of memory and device loss keep their
    /// meaning, everything else is a bug below the facade.
    fn from(e: Error) -> Self {
        match e {
            Error::OutOfMemory => DeviceError::OutOfMemory,
            Error::DeviceLost => DeviceError::Lost,
            other => DeviceError::Internal(other.to_string()),
        }
    }
}

impl From<Error> for gantry_core::Error {
    /// For constructors: no loader, no adapter or a missing capability is `NoDevice`.
    fn from(e: Error) -> Self {
        match e {
            Error::Loader { .. } | Error::NoAdapter { .. } | Error::Unsupported { .. } => {
                gantry_core::Error::NoDevice {
                    reason: e.to_string(),
                }
            }
            other => DeviceError::from(other).into(),
        }
    }
}

/// The adapters [`open`] can open, as gantry-core describes them (for the conformance runner).
pub fn list_adapters(validation: bool) -> Vec<AdapterInfo> {
    let _ = validation;
    VulkanBackend::enumerate_adapters()
        .unwrap_or_default()
        .iter()
        .map(adapter_info)
        .collect()
}

/// Opens adapter `index` of [`list_adapters`], with the Khronos validation layer and
/// synchronization validation when `validation` is set. Validated devices (the conformance
/// suite) also have the scatter dispatch forced on and direct writes off, so that the device
/// paths are exercised on CPU devices too ([`open_direct`] covers direct writes).
///
/// # Errors
/// [`gantry_core::Error::NoDevice`] when the adapter cannot be opened.
pub fn open(index: usize, validation: bool) -> Result<VulkanBackend, gantry_core::Error> {
    let options = crate::VulkanOptions::default()
        .with_validation(validation)
        .with_adapter(crate::AdapterPreference::Index(index))
        .with_scatter(validation.then_some(true))
        .with_direct_writes(validation.then_some(false));
    VulkanBackend::new(&options).map_err(Into::into)
}

/// [`open`] with direct writes forced on (`VulkanOptions::direct_writes`): where device-local
/// memory is host-reachable (lavapipe, integrated GPUs), idle batches write it on the host;
/// elsewhere this is [`open`] with the scatter dispatch at its default.
///
/// # Errors
/// As [`open`].
pub fn open_direct(index: usize, validation: bool) -> Result<VulkanBackend, gantry_core::Error> {
    let options = crate::VulkanOptions::default()
        .with_validation(validation)
        .with_adapter(crate::AdapterPreference::Index(index))
        .with_direct_writes(Some(true));
    VulkanBackend::new(&options).map_err(Into::into)
}

fn adapter_info(a: &crate::VulkanAdapterInfo) -> AdapterInfo {
    AdapterInfo {
        name: a.name.clone(),
        backend: "vulkan".to_owned(),
        driver: a.driver.clone(),
        device_type: match a.device_type {
            vk::PhysicalDeviceType::DISCRETE_GPU => DeviceType::DiscreteGpu,
            vk::PhysicalDeviceType::INTEGRATED_GPU => DeviceType::IntegratedGpu,
            vk::PhysicalDeviceType::VIRTUAL_GPU => DeviceType::VirtualGpu,
            vk::PhysicalDeviceType::CPU => DeviceType::Cpu,
            _ => DeviceType::Other,
        },
    }
}

/// Bytes in a `batch_write_many` from which its small writes are staged together and copied
/// by the copy threads: one thread copies about 10 GB/s, so 2.5 MB of 256-byte writes take a
/// quarter of a millisecond alone.
const MANY_PARALLEL_MIN: usize = 256 << 10;

/// gantry-core's memory location as the Vulkan backend's.
pub fn location(l: MemoryLocation) -> Location {
    match l {
        MemoryLocation::DeviceLocal => Location::DeviceLocal,
        MemoryLocation::Upload => Location::Upload,
        MemoryLocation::Readback => Location::Readback,
    }
}

/// gantry-core's usage flags as Vulkan's (G2).
pub fn usage_flags(u: BufferUsage) -> vk::BufferUsageFlags {
    use vk::BufferUsageFlags as V;
    let table = [
        (BufferUsage::TRANSFER_SRC, V::TRANSFER_SRC),
        (BufferUsage::TRANSFER_DST, V::TRANSFER_DST),
        (BufferUsage::UNIFORM, V::UNIFORM_BUFFER),
        (BufferUsage::STORAGE, V::STORAGE_BUFFER),
        (BufferUsage::INDEX, V::INDEX_BUFFER),
        (BufferUsage::VERTEX, V::VERTEX_BUFFER),
        (BufferUsage::INDIRECT, V::INDIRECT_BUFFER),
        (BufferUsage::UNIFORM_TEXEL, V::UNIFORM_TEXEL_BUFFER),
        (BufferUsage::STORAGE_TEXEL, V::STORAGE_TEXEL_BUFFER),
        (BufferUsage::DEVICE_ADDRESS, V::SHADER_DEVICE_ADDRESS),
        (
            BufferUsage::ACCELERATION_STRUCTURE_INPUT,
            V::ACCELERATION_STRUCTURE_BUILD_INPUT_READ_ONLY_KHR,
        ),
        (
            BufferUsage::ACCELERATION_STRUCTURE_STORAGE,
            V::ACCELERATION_STRUCTURE_STORAGE_KHR,
        ),
        (
            BufferUsage::SHADER_BINDING_TABLE,
            V::SHADER_BINDING_TABLE_KHR,
        ),
    ];
    table
        .iter()
        .filter(|(g, _)| u.contains(*g))
        .fold(V::empty(), |acc, (_, v)| acc | *v)
}

impl VulkanDevice {
    /// The usage flags this device supports (G2): everything but device addresses without
    /// `bufferDeviceAddress`, acceleration structures without `VK_KHR_acceleration_structure`
    /// and shader binding tables without `VK_KHR_ray_tracing_pipeline`.
    pub fn supported_usage(&self) -> BufferUsage {
        let mut u = BufferUsage::all();
        if !self.enabled.buffer_device_address {
            u -= BufferUsage::DEVICE_ADDRESS;
        }
        if !self.enabled.acceleration_structure {
            u -= BufferUsage::ACCELERATION_STRUCTURE_INPUT
                | BufferUsage::ACCELERATION_STRUCTURE_STORAGE;
        }
        if !self.enabled.ray_tracing_pipeline {
            u -= BufferUsage::SHADER_BINDING_TABLE;
        }
        u
    }

    fn memory_flags(&self, l: Location) -> vk::MemoryPropertyFlags {
        let types = self.memory_props.memory_types_as_slice();
        choose_memory_type(types, !0, l)
            .map(|i| types[i as usize].property_flags)
            .unwrap_or_default()
    }
}

/// Pieces of a pipelined write in flight at once (each half a staging chunk).
const PIPELINE_DEPTH: usize = 6;

/// Smallest transfer that looks up [`crate::HostMemory`] imports for a zero-copy path.
const HOST_DIRECT_MIN: usize = 64 << 10;

/// A batch of transfer commands: copies between raw handles, and writes staged in chunks the
/// batch fills as it records. Recorded into one command buffer at submission, in order, with
/// barriers only between commands that touch the same bytes.
///
/// Small writes (up to [`scatter::MAX_WRITE`] bytes) to a buffer with storage-buffer usage are
/// deferred per destination while the batch records, when the device can dispatch compute on
/// its submission queue ([`VulkanDevice::scatter_supported`]). A destination's deferred writes
/// are emitted, in program order, before the next command that touches that buffer (a copy
/// from or to it, a larger write) and at submission: each run of them staged in one chunk
/// becomes one scatter dispatch where [`ScatterPlan::new`] accepts it (enough writes,
/// disjoint, aligned), else copy regions as before. Deferring past commands on other buffers
/// keeps program order, since those commands touch neither the destination nor the staging
/// bytes (staging is only ever read by the device).
///
/// Small copies between two different buffers with storage usage (a manager's uploads from
/// its staging ring) are deferred the same way, as writes whose bytes the dispatch reads from
/// the copy's source. A command that writes such a source first emits every deferred group,
/// so that the deferred reads keep their place before it.
pub struct VulkanBatch {
    device: Arc<VulkanDevice>,
    ops: Vec<BatchOp>,
    staging: Vec<VulkanBuffer>,
    /// Bytes used in the last staging buffer.
    cursor: u64,
    /// Whether small writes are deferred for scattering.
    scatter: bool,
    /// Deferred small writes per destination (raw handle), and the order destinations were
    /// first deferred in (so the recording order does not depend on hashing).
    deferred: HashMap<u64, Deferred>,
    deferred_order: Vec<u64>,
    /// The destination written last, kept out of `deferred` so that a run of writes to one
    /// buffer costs no hash lookup per write.
    current: Option<Deferred>,
    /// Buffers that deferred copies read (not staging) and that were not emitted yet: a
    /// command writing one of them first emits every deferred group.
    deferred_srcs: Vec<vk::Buffer>,
    /// The coherent host mappings of the sources of deferred copies (for direct writes).
    src_hosts: Vec<(vk::Buffer, MappedPtr)>,
}

/// Where the bytes of a run of deferred writes are: a staging chunk of the batch, or (for
/// deferred copies) another buffer with storage usage.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Source {
    Chunk(usize),
    Buffer(vk::Buffer),
}

/// Every write staged in a batch's chunks starts at a multiple of this (the wide scatter
/// shader's unit).
const STAGED_ALIGN: u64 = 16;

/// One command of a batch as recorded by `batch_*`.
enum BatchOp {
    Copy(RawCopy),
    /// Small writes to one destination, for a scatter dispatch.
    Writes(Deferred),
    /// A scatter dispatch planned when recorded (a [`CopyList`]'s), its records staged.
    Scatter(Dispatch),
}

/// Small writes to one destination: offsets in the destination and in staging.
struct Deferred {
    dst: vk::Buffer,
    writes: Vec<ScatterWrite>,
    /// `(source, index of its first write in writes)`: the runs of writes whose bytes are in
    /// one source (a dispatch reads its source bytes from one binding).
    runs: Vec<(Source, usize)>,
    /// The destination's mapping on a UMA device, for direct writes.
    host: Option<MappedPtr>,
}

impl Deferred {
    /// The runs of writes with their bytes in one source: `(source, writes)`.
    fn runs(&self) -> impl Iterator<Item = (Source, &[ScatterWrite])> {
        self.runs.iter().enumerate().map(|(i, &(source, start))| {
            let end = self.runs.get(i + 1).map_or(self.writes.len(), |r| r.1);
            (source, &self.writes[start..end])
        })
    }
}

impl VulkanBatch {
    /// Moves `dst`'s deferred writes into the command list, before a command that touches it.
    fn emit_deferred(&mut self, dst: vk::Buffer) {
        if self.current.as_ref().is_some_and(|c| c.dst == dst) {
            if let Some(d) = self.current.take() {
                self.ops.push(BatchOp::Writes(d));
            }
        } else if let Some(d) = self.deferred.remove(&dst.as_raw()) {
            self.ops.push(BatchOp::Writes(d));
        }
    }

    /// Before a command that writes `buffer`: if a deferred copy reads it, emits every
    /// deferred group (in order), so that those reads are recorded before the write.
    fn before_writing(&mut self, buffer: vk::Buffer) {
        if self.deferred_srcs.contains(&buffer) {
            self.emit_all_deferred();
        }
    }

    /// Defers a write of `len` bytes staged at `at` in staging chunk `chunk` to `dst` at
    /// `offset`, and moves the cursor past it (every staged write starts 16-byte aligned).
    fn defer_staged(&mut self, dst: &VulkanBuffer, chunk: usize, offset: u64, at: u64, len: u64) {
        self.defer(
            dst.raw(),
            dst.uma_ptr(),
            Source::Chunk(chunk),
            ScatterWrite {
                dst_offset: offset,
                src_offset: at,
                len,
            },
        );
        self.cursor = (at + len).next_multiple_of(STAGED_ALIGN);
    }

    /// Notes that deferred copies read `src`: a later command writing it emits them first,
    /// and direct writes may read it on the host when it is mapped and coherent.
    fn register_copy_source(&mut self, src: &VulkanBuffer) {
        if !self.deferred_srcs.contains(&src.raw()) {
            self.deferred_srcs.push(src.raw());
        }
        if src.is_coherent()
            && let Some(host) = src.mapped_ptr().map(MappedPtr).or(src.uma_ptr())
            && !self.src_hosts.iter().any(|s| s.0 == src.raw())
        {
            self.src_hosts.push((src.raw(), host));
        }
    }

    /// Defers a small write to `dst` (mapped at `host` on a UMA device) whose bytes are in
    /// `source`.
    fn defer(
        &mut self,
        dst: vk::Buffer,
        host: Option<MappedPtr>,
        source: Source,
        write: ScatterWrite,
    ) {
        self.defer_many(dst, host, source, core::iter::once(write));
    }

    /// [`Self::defer`] for many writes with their bytes in one source: the destination's
    /// list is looked up once, not per write.
    fn defer_many(
        &mut self,
        dst: vk::Buffer,
        host: Option<MappedPtr>,
        source: Source,
        writes: impl ExactSizeIterator<Item = ScatterWrite>,
    ) {
        if writes.len() > 0 {
            self.deferred_list(dst, host, source).extend(writes);
        }
    }

    /// The list of writes deferred to `dst` (mapped at `host` on a UMA device), ready for
    /// writes whose bytes are in `source`: push them onto it, in program order.
    fn deferred_list(
        &mut self,
        dst: vk::Buffer,
        host: Option<MappedPtr>,
        source: Source,
    ) -> &mut Vec<ScatterWrite> {
        let d = match self.current.take() {
            Some(c) if c.dst == dst => self.current.insert(c),
            prev => {
                if let Some(prev) = prev {
                    self.deferred.insert(prev.dst.as_raw(), prev);
                }
                let key = dst.as_raw();
                let d = self.deferred.remove(&key).unwrap_or_else(|| {
                    self.deferred_order.push(key);
                    Deferred {
                        dst,
                        writes: Vec::new(),
                        runs: Vec::new(),
                        host,
                    }
                });
                self.current.insert(d)
            }
        };
        if d.runs.last().is_none_or(|r| r.0 != source) {
            d.runs.push((source, d.writes.len()));
        }
        &mut d.writes
    }

    /// Moves every deferred write into the command list (at submission).
    fn emit_all_deferred(&mut self) {
        if let Some(c) = self.current.take() {
            self.deferred.insert(c.dst.as_raw(), c);
        }
        for raw in std::mem::take(&mut self.deferred_order) {
            if let Some(d) = self.deferred.remove(&raw) {
                self.ops.push(BatchOp::Writes(d));
            }
        }
        self.deferred_srcs.clear();
    }

    /// Writes a scatter plan's record table into staging (the current chunk, or a new one)
    /// and returns its binding; `None` when no staging could be had (the writes then stay
    /// copies).
    fn stage_records(&mut self, plan: &ScatterPlan) -> Option<Binding> {
        let bytes = plan.record_bytes();
        let len = bytes.len() as u64;
        let (ptr, at) = self.table_room(len)?;
        // SAFETY: `table_room` gave `len` bytes of the batch's own mapped chunk at `ptr`,
        // which nothing else of the batch uses.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.get(), bytes.len()) };
        self.table_written(at, len)
    }

    /// Room for a record table of `len` bytes in staging (the current chunk, or a new one):
    /// the address of its mapping there, and its offset. The batch uses nothing at or after
    /// the offset until [`Self::table_written`].
    fn table_room(&mut self, len: u64) -> Option<(MappedPtr, u64)> {
        let align = self
            .device
            .limits
            .min_storage_buffer_offset_alignment
            .max(16);
        let mut at = self.cursor.next_multiple_of(align);
        let room = self.staging.last().map_or(0, |s| s.size());
        if self.staging.is_empty() || at.checked_add(len).is_none_or(|end| end > room) {
            let chunk = self.device.staging_buffer(len, Location::Upload).ok()?;
            self.staging.push(chunk);
            at = 0;
        }
        let ptr = self.staging.last()?.mapped_ptr()?;
        // SAFETY: `at + len` fits in the mapped chunk (checked above, or a new chunk of at
        // least `len` bytes), so the address is inside its mapping.
        let at_ptr = unsafe { ptr.as_ptr().add(usize::try_from(at).ok()?) };
        Some((MappedPtr(std::ptr::NonNull::new(at_ptr)?), at))
    }

    /// The binding of a record table of `len` bytes written at `at` in the current chunk
    /// ([`Self::table_room`]), made visible to the device.
    fn table_written(&mut self, at: u64, len: u64) -> Option<Binding> {
        let staging = self.staging.last()?;
        // SAFETY: the range was just written, lies inside the mapped chunk, not submitted.
        unsafe { self.device.flush(staging, at, len) }.ok()?;
        self.cursor = (at + len).next_multiple_of(16);
        Some(Binding {
            buffer: staging.raw(),
            offset: at,
            range: len,
        })
    }
}

impl Drop for VulkanBatch {
    fn drop(&mut self) {
        // Staging of a batch dropped without submission was never used by the device: back
        // to the pool now, for the next batch (through `orphans` it would wait for the next
        // `maintain`, and batches dropped in a row would each allocate new chunks).
        for chunk in self.staging.drain(..) {
            // SAFETY: the chunk was never part of a submission; the batch owned it alone.
            unsafe { self.device.recycle_staging(chunk) };
        }
    }
}

/// The future [`Backend::read_async`] returns: completes when the copy into the readback
/// staging buffer has, then copies the bytes out. A helper thread waits on the timeline
/// semaphore and wakes the task, so no one has to poll the device.
pub struct VulkanReadFuture {
    device: Arc<VulkanDevice>,
    state: ReadState,
    waker: Arc<Mutex<Option<Waker>>>,
    waiter_started: bool,
}

enum ReadState {
    Ready(Result<Vec<u8>, DeviceError>),
    Pending {
        index: u64,
        staging: VulkanBuffer,
        len: usize,
    },
    Done,
}

impl Future for VulkanReadFuture {
    type Output = Result<Vec<u8>, DeviceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match std::mem::replace(&mut this.state, ReadState::Done) {
            ReadState::Done => Poll::Ready(Err(DeviceError::Internal(
                "read future polled after completion".to_owned(),
            ))),
            ReadState::Ready(r) => Poll::Ready(r),
            ReadState::Pending {
                index,
                staging,
                len,
            } => {
                let done = match this.device.completed_index() {
                    Ok(done) => done,
                    Err(e) => {
                        this.device.retire_after(index, staging);
                        return Poll::Ready(Err(e.into()));
                    }
                };
                if done >= index {
                    let mut out = vec![0u8; len];
                    // SAFETY: the copy into `staging` completed and the trailing barrier made
                    // it available to the host; `len` bytes are in bounds.
                    let r = unsafe { this.device.read_mapped_raw(&staging, 0, &mut out) };
                    // SAFETY: the submission using the staging buffer completed.
                    unsafe { this.device.recycle_staging(staging) };
                    return Poll::Ready(r.map(|()| out).map_err(Into::into));
                }
                *lock(&this.waker) = Some(cx.waker().clone());
                if !this.waiter_started {
                    this.waiter_started = true;
                    let device = Arc::clone(&this.device);
                    let waker = Arc::clone(&this.waker);
                    // The thread holds the device, so the device outlives its wait.
                    std::thread::spawn(move || {
                        // Waits in slices; stops on completion or device loss.
                        while let Ok(false) = device.wait_raw(index, 100_000_000) {}
                        if let Some(w) = lock(&waker).take() {
                            w.wake();
                        }
                    });
                }
                this.state = ReadState::Pending {
                    index,
                    staging,
                    len,
                };
                Poll::Pending
            }
        }
    }
}

impl Drop for VulkanReadFuture {
    fn drop(&mut self) {
        if let ReadState::Pending { index, staging, .. } =
            std::mem::replace(&mut self.state, ReadState::Done)
        {
            self.device.retire_after(index, staging);
        }
    }
}

impl VulkanDevice {
    /// Submits a copy of `buffer[offset..offset + len]` into a new readback staging buffer.
    ///
    /// # Safety
    /// As for [`Backend::read`] of a device-local or upload buffer.
    unsafe fn stage_read(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        len: u64,
    ) -> crate::Result<(u64, VulkanBuffer)> {
        // A pooled readback chunk when `len` fits one.
        let staging = self.staging_buffer(len, Location::Readback)?;
        let copy = RawCopy {
            src: buffer.raw(),
            src_offset: offset,
            dst: staging.raw(),
            dst_offset: 0,
            size: len,
        };
        // SAFETY: in bounds (contract), distinct buffers; the staging buffer is retired only
        // after this submission completes, the source is kept alive by the facade.
        match unsafe { self.submit_with(Vec::new(), |d, cmd| record_copies(d, cmd, [copy])) } {
            Ok(index) => Ok((index, staging)),
            Err(e) => {
                // SAFETY: never submitted.
                unsafe { self.recycle_staging(staging) };
                Err(e)
            }
        }
    }

    /// Writes `data` to `dst` at `offset` in pieces of half a staging chunk, each its own
    /// submission: the copy threads fill piece k+1 while the device copies piece k, so the
    /// host copy and the DMA overlap. At most [`PIPELINE_DEPTH`] pieces are in flight. Returns
    /// the last submission; on an error, the pieces already submitted have completed.
    ///
    /// # Safety
    /// As for [`Backend::write_now`].
    unsafe fn write_pipelined(
        &self,
        dst: &VulkanBuffer,
        offset: u64,
        data: &[u8],
    ) -> crate::Result<u64> {
        let half = Self::STAGING_CHUNK / 2;
        let mut flight: VecDeque<u64> = VecDeque::new();
        let mut chunk: Option<VulkanBuffer> = None;
        let mut last = 0u64;
        let result = (|| -> crate::Result<()> {
            for (i, piece) in data.chunks(half as usize).enumerate() {
                if flight.len() >= PIPELINE_DEPTH
                    && let Some(oldest) = flight.pop_front()
                {
                    self.wait_quiet(oldest)?;
                }
                let staging = match chunk.take() {
                    Some(c) => c,
                    None => self.staging_buffer(Self::STAGING_CHUNK, Location::Upload)?,
                };
                let at = (i as u64 % 2) * half;
                let Some(ptr) = staging.mapped_ptr() else {
                    self.retire_after(last, staging);
                    return Err(crate::Error::Unsupported {
                        what: "a mapped staging chunk".to_owned(),
                    });
                };
                // SAFETY: this half of the chunk is ours: the chunk came from the pool (no
                // pending use) or was used only for its other half; `piece` fits in it.
                unsafe { crate::buffer::copy_to_mapped(ptr.as_ptr().add(at as usize), piece) };
                // SAFETY: the range was just written and lies inside the mapped chunk.
                if let Err(e) = unsafe { self.flush(&staging, at, piece.len() as u64) } {
                    self.retire_after(last, staging);
                    return Err(e);
                }
                let copy = RawCopy {
                    src: staging.raw(),
                    src_offset: at,
                    dst: dst.raw(),
                    dst_offset: offset + i as u64 * half,
                    size: piece.len() as u64,
                };
                // SAFETY: in bounds (contract; the piece fits the chunk); the chunk is retired
                // only after its last submission (below), `dst` is kept alive by the caller.
                let index = match unsafe {
                    self.submit_with(Vec::new(), |d, cmd| record_copies(d, cmd, [copy]))
                } {
                    Ok(index) => index,
                    Err(e) => {
                        self.retire_after(last, staging);
                        return Err(e);
                    }
                };
                last = index;
                flight.push_back(index);
                if at == 0 && (i + 1) * (half as usize) < data.len() {
                    chunk = Some(staging);
                } else {
                    self.retire_after(index, staging);
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            // The facade records no use of `dst` for a failed write: let what was submitted
            // finish first.
            let _ = self.wait_quiet(last);
            return Err(e);
        }
        Ok(last)
    }

    /// Reads `buffer[offset..offset + out.len()]` through a ring of pooled readback chunks:
    /// while the host copies chunk k out (over several threads), the device copies the next
    /// ones; each chunk is its own submission, waited for on the timeline semaphore.
    ///
    /// # Safety
    /// As for [`Backend::read`] of a device-local or upload buffer.
    unsafe fn read_chunked(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> crate::Result<()> {
        /// Chunk copies in flight at once.
        const RING: usize = 3;
        let chunk = Self::STAGING_CHUNK;
        let len = out.len() as u64;
        let mut free: Vec<VulkanBuffer> = Vec::new();
        let mut flight: VecDeque<(u64, VulkanBuffer, u64, u64)> = VecDeque::new();
        let mut next = 0u64;
        let result = (|| -> crate::Result<()> {
            while next < len || !flight.is_empty() {
                while next < len && flight.len() < RING {
                    let staging = match free.pop() {
                        Some(b) => b,
                        None => self.staging_buffer(chunk, Location::Readback)?,
                    };
                    let n = (len - next).min(chunk);
                    let copy = RawCopy {
                        src: buffer.raw(),
                        src_offset: offset + next,
                        dst: staging.raw(),
                        dst_offset: 0,
                        size: n,
                    };
                    // SAFETY: in bounds (contract; `n` fits the chunk), distinct buffers; the
                    // chunk stays alive until its submission completes (waited below or
                    // retired with it), the source is kept alive by the facade.
                    let submitted = unsafe {
                        self.submit_with(Vec::new(), |d, cmd| record_copies(d, cmd, [copy]))
                    };
                    match submitted {
                        Ok(index) => flight.push_back((index, staging, next, n)),
                        Err(e) => {
                            free.push(staging);
                            return Err(e);
                        }
                    }
                    next += n;
                }
                if let Some((index, staging, at, n)) = flight.pop_front() {
                    if let Err(e) = self.wait_quiet(index) {
                        self.retire_after(index, staging);
                        return Err(e);
                    }
                    let part = &mut out[at as usize..(at + n) as usize];
                    // SAFETY: the copy into the chunk completed (waited above); `n` bytes are
                    // in bounds of the chunk.
                    let r = unsafe { self.read_mapped_raw(&staging, 0, part) };
                    free.push(staging);
                    r?;
                }
            }
            Ok(())
        })();
        for (index, staging, ..) in flight.drain(..) {
            self.retire_after(index, staging);
        }
        for b in free {
            // SAFETY: each chunk's submission completed (waited for) or never happened.
            unsafe { self.recycle_staging(b) };
        }
        result
    }
}

impl VulkanBackend {
    /// The scatter dispatch of `list`'s copies from `src` into `dst`, planned from what the
    /// list keeps ([`ScatterPlan::of_list`]) with its records staged in `batch`; `None` when
    /// the device has no scatter pipeline, the plan is refused (overlapping destinations,
    /// windows beyond the limits) or no staging could be had.
    fn plan_list(
        &self,
        batch: &mut VulkanBatch,
        src: &VulkanBuffer,
        dst: &VulkanBuffer,
        list: &CopyList,
    ) -> Option<Dispatch> {
        self.0.scatter_pipeline()?;
        let limits = self.0.limits;
        let words = self
            .0
            .scatter_words
            .load(std::sync::atomic::Ordering::Relaxed);
        let len = ScatterPlan::list_table_bytes(list, limits.max_storage_buffer_range)?;
        // The record table goes straight into staging, each part's rows from the thread
        // that fills them (a refused plan leaves the bytes unused).
        let (ptr, at) = batch.table_room(len)?;
        // SAFETY: `table_room` gave `len` bytes of the batch's own mapped chunk at `ptr`,
        // unused by the batch until `table_written`; the plan's parts put different words.
        let table =
            unsafe { gantry_core::copier::RawTable::new(ptr.get(), usize::try_from(len).ok()?) };
        let mut plan = ScatterPlan::of_list_on_threads(
            list,
            limits.min_storage_buffer_offset_alignment,
            limits.max_storage_buffer_range,
            &table,
        )
        .filter(|plan| plan.wide || words)?;
        // GPUs: a workgroup per record; CPU devices: grid-stride.
        if self.0.adapter.device_type != vk::PhysicalDeviceType::CPU {
            plan.spread();
        }
        let records = batch.table_written(at, len)?;
        Some(Dispatch {
            records,
            src: Binding {
                buffer: src.raw(),
                offset: plan.src_base,
                range: plan.src_size,
            },
            dst: Binding {
                buffer: dst.raw(),
                offset: plan.dst_base,
                range: plan.dst_size,
            },
            groups: plan.groups,
            wide: plan.wide,
            set: vk::DescriptorSet::null(),
        })
    }
}

impl Backend for VulkanBackend {
    type Buffer = VulkanBuffer;
    type Batch = VulkanBatch;
    type ReadFuture = VulkanReadFuture;

    const NAME: &'static str = "vulkan";

    fn adapter_info(&self) -> AdapterInfo {
        adapter_info(&self.0.adapter)
    }

    fn limits(&self) -> Limits {
        let l = &self.0.limits;
        let coherent = |loc| {
            !self.0.force_non_coherent
                && self
                    .0
                    .memory_flags(loc)
                    .contains(vk::MemoryPropertyFlags::HOST_COHERENT)
        };
        let usage = self.0.supported_usage();
        Limits {
            // vkCmdCopyBuffer needs no alignment; 4 (what vkCmdUpdateBuffer/FillBuffer and
            // wgpu need) keeps both backends' rules identical (G11).
            copy_alignment: 4,
            // Persistent mappings have no offset rule; 8 matches wgpu's for the same reason.
            map_alignment: 8,
            min_uniform_offset_alignment: l.min_uniform_buffer_offset_alignment,
            min_storage_offset_alignment: l.min_storage_buffer_offset_alignment,
            non_coherent_atom_size: l.non_coherent_atom_size,
            max_buffer_size: self.0.adapter.max_buffer_size,
            host_coherent: coherent(Location::Upload) && coherent(Location::Readback),
            unified_memory: self
                .0
                .memory_flags(Location::DeviceLocal)
                .contains(vk::MemoryPropertyFlags::HOST_VISIBLE),
            device_local_usage: usage,
            upload_usage: usage,
            readback_usage: usage,
        }
    }

    unsafe fn create_buffer(&self, desc: &RawBufferDesc<'_>) -> Result<VulkanBuffer, DeviceError> {
        // SAFETY: the facade guarantees a non-zero size within the maximum (trait contract).
        let b = unsafe {
            self.0.create_buffer(
                desc.size,
                usage_flags(desc.usage),
                location(desc.location),
                desc.label.unwrap_or(""),
            )
        };
        // Usage was checked against `limits()` by the facade, so `Unsupported` cannot come
        // from it; map whatever comes as gantry-core's device errors.
        b.map_err(Into::into)
    }

    unsafe fn destroy_buffer(&self, buffer: VulkanBuffer) {
        // SAFETY: no pending submission uses the buffer (trait contract).
        unsafe { self.0.destroy_buffer(buffer) }
    }

    unsafe fn map(&self, buffer: &VulkanBuffer, mode: MapMode) -> Result<(), DeviceError> {
        // Host-visible buffers are persistently mapped; mapping for reading makes the device's
        // writes visible to the host.
        if mode == MapMode::Read {
            // SAFETY: a valid, host-visible buffer with no pending submission (contract).
            unsafe { self.0.invalidate(buffer, 0, buffer.size()) }?;
        }
        Ok(())
    }

    unsafe fn unmap(&self, _buffer: &VulkanBuffer) {
        // The mapping is persistent; `write_mapped` already flushed what it wrote.
    }

    unsafe fn write_mapped(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        // SAFETY: mapped for writing and in bounds (contract); the host is the only user of
        // the buffer while it is mapped. Flushes the written range.
        unsafe { self.0.write_mapped_raw(buffer, offset, data) }.map_err(Into::into)
    }

    unsafe fn write_mapped_many(
        &self,
        buffer: &VulkanBuffer,
        writes: &[(u64, &[u8])],
        summary: &gantry_core::copier::WritesSummary,
    ) -> Result<(), DeviceError> {
        // In increasing order without overlaps (a manager's staged region), many bytes go
        // to the copy threads; anything else is copied in order, the later write winning.
        let Some(ptr) = buffer
            .mapped_ptr()
            .filter(|_| summary.total >= MANY_PARALLEL_MIN && summary.ascending)
        else {
            for &(offset, data) in writes {
                // SAFETY: forwarded (the caller's contract covers every entry).
                unsafe { self.write_mapped(buffer, offset, data) }?;
            }
            return Ok(());
        };
        // SAFETY: each range lies inside the mapping (contract) and no two overlap
        // (ascending, checked); the bytes are host memory that is not this mapping;
        // `summary` is theirs.
        unsafe {
            gantry_core::copier::write_ascending_summarized(
                ptr.as_ptr(),
                writes,
                MANY_PARALLEL_MIN,
                summary,
            );
        };
        if !writes.is_empty() {
            // SAFETY: the range was just written and lies inside the mapping (ascending:
            // `lo` is the first write's offset, `hi` the last one's end).
            unsafe { self.0.flush(buffer, summary.lo, summary.hi - summary.lo) }?;
        }
        Ok(())
    }

    unsafe fn write_mapped_list(
        &self,
        buffer: &VulkanBuffer,
        writes: &[(u64, &[u8])],
        at: &[ScatterWrite],
    ) -> Result<(), DeviceError> {
        let (Some(ptr), Some(first), Some(last)) = (buffer.mapped_ptr(), at.first(), at.last())
        else {
            for (&(_, data), w) in writes.iter().zip(at) {
                // SAFETY: forwarded (the caller's contract covers every entry).
                unsafe { self.write_mapped(buffer, w.src_offset, data) }?;
            }
            return Ok(());
        };
        // SAFETY: each range lies inside the mapping and no two overlap (contract: they
        // ascend); the bytes are host memory that is not this mapping; `writes` and `at`
        // are in step.
        unsafe {
            gantry_core::copier::run_staged(ptr.as_ptr(), writes, at, MANY_PARALLEL_MIN);
        }
        let (lo, hi) = (first.src_offset, last.src_offset + last.len);
        // SAFETY: the range was just written and lies inside the mapping (ascending: the
        // first entry starts it, the last ends it).
        unsafe { self.0.flush(buffer, lo, hi - lo) }?;
        Ok(())
    }

    unsafe fn read_mapped(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), DeviceError> {
        let Some(ptr) = buffer.mapped_ptr() else {
            return Err(DeviceError::Internal(
                "read_mapped on an unmapped buffer".to_owned(),
            ));
        };
        // SAFETY: mapped for reading (invalidated at `map`), in bounds (contract).
        unsafe { crate::buffer::copy_from_mapped(out, ptr.as_ptr().add(offset as usize)) };
        Ok(())
    }

    unsafe fn write_host(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        // SAFETY: an upload buffer (host-visible, mapped), in bounds, unused by pending work.
        unsafe { self.0.write_mapped_raw(buffer, offset, data) }.map_err(Into::into)
    }

    fn begin_batch(&self) -> Result<VulkanBatch, DeviceError> {
        Ok(VulkanBatch {
            device: Arc::clone(&self.0),
            ops: Vec::new(),
            staging: Vec::new(),
            cursor: 0,
            scatter: self.0.scatter_supported(),
            deferred: HashMap::new(),
            deferred_order: Vec::new(),
            current: None,
            deferred_srcs: Vec::new(),
            src_hosts: Vec::new(),
        })
    }

    unsafe fn batch_write(
        &self,
        batch: &mut VulkanBatch,
        dst: &VulkanBuffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        // Fill the current staging chunk, then fresh pooled chunks: a large write spans
        // several chunks (one copy region each) and no staging is allocated per call once
        // the pool holds enough chunks.
        let chunk = VulkanDevice::STAGING_CHUNK;
        let len = data.len() as u64;
        // Small, aligned writes to a storage-capable destination wait for a scatter dispatch
        // (they fit one chunk, so they stay one piece); anything else is ordered after the
        // destination's deferred writes.
        let defer = batch.scatter
            && scatter::carries(offset, 0, len)
            && dst.usage().contains(vk::BufferUsageFlags::STORAGE_BUFFER);
        batch.before_writing(dst.raw());
        if !defer {
            batch.emit_deferred(dst.raw());
        } else if let Some(staging) = batch.staging.last()
            && staging.size().saturating_sub(batch.cursor) >= len
            && let Some(ptr) = staging.mapped_ptr()
        {
            // The common case, without the general path's bookkeeping: one small write that
            // fits the current chunk.
            let at = batch.cursor;
            // SAFETY: the staging chunk is the batch's own (not submitted yet), mapped, and
            // `at + len` fits in it (checked); `data` is host memory that is not this mapping.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    ptr.as_ptr().add(at as usize),
                    data.len(),
                );
            }
            if !staging.is_coherent() {
                // SAFETY: the range was just written and lies inside the mapped chunk.
                unsafe { self.0.flush(staging, at, len) }?;
            }
            let chunk_index = batch.staging.len() - 1;
            batch.defer_staged(dst, chunk_index, offset, at, len);
            return Ok(());
        }
        let mut pieces = Vec::new();
        let mut flushes = Vec::new();
        let mut done = 0usize;
        while done < data.len() {
            let rest = (data.len() - done) as u64;
            let room = batch
                .staging
                .last()
                .map_or(0, |s| s.size().saturating_sub(batch.cursor));
            // A write that fits a chunk stays in one piece (one region); a larger one fills
            // whatever room is left first.
            if room == 0 || (rest > room && rest <= chunk) || (rest > chunk && room < 4096) {
                batch
                    .staging
                    .push(self.0.staging_buffer(chunk, Location::Upload)?);
                batch.cursor = 0;
                continue;
            }
            let Some(staging) = batch.staging.last() else {
                return Err(DeviceError::Internal("no staging buffer".to_owned()));
            };
            let Some(ptr) = staging.mapped_ptr() else {
                return Err(DeviceError::Internal("unmapped staging buffer".to_owned()));
            };
            let take = rest.min(room);
            let at = batch.cursor;
            let n = take as usize;
            // SAFETY: the staging chunk is the batch's own (not submitted yet), mapped, and
            // `at + take` fits in it; the source is `data[done..done + n]`, host memory that
            // is not this mapping; pieces of one batch never share staging bytes.
            pieces.push(unsafe {
                crate::buffer::CopyPiece::new(
                    ptr.as_ptr().add(at as usize),
                    data.as_ptr().add(done),
                    n,
                )
            });
            if defer {
                let chunk_index = batch.staging.len() - 1;
                batch.defer(
                    dst.raw(),
                    dst.uma_ptr(),
                    Source::Chunk(chunk_index),
                    ScatterWrite {
                        dst_offset: offset + done as u64,
                        src_offset: at,
                        len: take,
                    },
                );
            } else {
                batch.ops.push(BatchOp::Copy(RawCopy {
                    src: staging.raw(),
                    src_offset: at,
                    dst: dst.raw(),
                    dst_offset: offset + done as u64,
                    size: take,
                }));
            }
            flushes.push((batch.staging.len() - 1, at, take));
            // Keep every staged write 16-byte aligned.
            batch.cursor = (at + take).next_multiple_of(16);
            done += n;
        }
        // SAFETY: each piece was built above from an in-bounds, unaliased staging range.
        unsafe { crate::buffer::copy_pieces(&pieces) };
        // Non-coherent memory: flush what was written (nothing for coherent memory).
        for &(i, at, take) in &flushes {
            // SAFETY: the range was just written, lies inside the mapped chunk, and the chunk
            // is not submitted yet.
            unsafe { self.0.flush(&batch.staging[i], at, take) }?;
        }
        Ok(())
    }

    unsafe fn batch_write_many(
        &self,
        batch: &mut VulkanBatch,
        dst: &VulkanBuffer,
        writes: &[(u64, &[u8])],
    ) -> (usize, Result<(), DeviceError>) {
        // One pass for both: whether a dispatch carries every write, and their bytes.
        let (carried, total) = scatter::carries_all(writes);
        let deferrable =
            batch.scatter && dst.usage().contains(vk::BufferUsageFlags::STORAGE_BUFFER) && carried;
        if !deferrable || total < MANY_PARALLEL_MIN {
            let mut recorded = 0;
            for &(offset, data) in writes {
                // SAFETY: forwarded (the caller's contract covers every entry).
                if let Err(e) = unsafe { self.batch_write(batch, dst, offset, data) } {
                    return (recorded, Err(e));
                }
                recorded += 1;
            }
            return (recorded, Ok(()));
        }
        // Many small writes: staged as `batch_write` would place them (each 16-byte aligned
        // in the current chunk, a new chunk when it is full), deferred, and their bytes copied
        // together by the copy threads.
        batch.before_writing(dst.raw());
        // Per chunk used: (index, first byte written, end).
        let mut ranges: Vec<(usize, u64, u64)> = Vec::new();
        let mut recorded = 0;
        let mut result = Ok(());
        while recorded < writes.len() {
            let len = writes[recorded].1.len() as u64;
            let room = batch
                .staging
                .last()
                .map_or(0, |s| s.size().saturating_sub(batch.cursor));
            if room < len {
                match self
                    .0
                    .staging_buffer(VulkanDevice::STAGING_CHUNK, Location::Upload)
                {
                    Ok(chunk) => {
                        batch.staging.push(chunk);
                        batch.cursor = 0;
                    }
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                }
            }
            let index = batch.staging.len() - 1;
            let size = batch.staging[index].size();
            let Some(ptr) = batch.staging[index].mapped_ptr() else {
                result = Err(DeviceError::Internal("unmapped staging buffer".to_owned()));
                break;
            };
            // As many writes as fit in this chunk, each at a multiple of `STAGED_ALIGN` (as
            // `defer_staged` places them), straight into the destination's deferred list; then
            // their bytes, copied by the copy threads to where the list says.
            let (from, first) = (batch.cursor, recorded);
            let (mut at, mut end) = (from, from);
            let list = batch.deferred_list(dst.raw(), dst.uma_ptr(), Source::Chunk(index));
            list.reserve(writes.len() - recorded);
            let listed = list.len();
            for &(offset, data) in &writes[recorded..] {
                let len = data.len() as u64;
                if size.saturating_sub(at) < len {
                    break;
                }
                list.push(ScatterWrite {
                    dst_offset: offset,
                    src_offset: at,
                    len,
                });
                end = at + len;
                at = end.next_multiple_of(STAGED_ALIGN);
                recorded += 1;
            }
            // SAFETY: the staging chunk is the batch's own (not submitted yet) and mapped;
            // each listed range lies inside it (checked above) and after the previous one
            // (`at` only moves forward), so none overlaps another or a write's bytes (host
            // memory, not this mapping).
            unsafe {
                gantry_core::copier::run_staged(
                    ptr.as_ptr(),
                    &writes[first..recorded],
                    &list[listed..],
                    MANY_PARALLEL_MIN,
                );
            }
            batch.cursor = at;
            if recorded == first {
                // Nothing fitted in a chunk with room for the first write: cannot happen
                // (chunks hold MAX_WRITE bytes), but never loop on it.
                result = Err(DeviceError::Internal("staging chunk too small".to_owned()));
                break;
            }
            ranges.push((index, from, end));
        }
        // Whatever was deferred got its bytes, even when staging ran out midway.
        for &(index, from, to) in &ranges {
            // SAFETY: the range was just written, lies inside the mapped chunk, and the chunk
            // is not submitted yet (nothing for coherent memory).
            if let Err(e) = unsafe { self.0.flush(&batch.staging[index], from, to - from) } {
                return (recorded, Err(e.into()));
            }
        }
        (recorded, result)
    }

    unsafe fn write_now(
        &self,
        dst: &VulkanBuffer,
        offset: u64,
        data: &[u8],
    ) -> Result<SubmissionIndex, DeviceError> {
        if data.len() >= HOST_DIRECT_MIN
            && let Some((host, at)) = self.0.host_memory.find(data)
            && host.buffer().is_coherent()
        {
            let copy = RawCopy {
                src: host.buffer().raw(),
                src_offset: at,
                dst: dst.raw(),
                dst_offset: offset,
                size: data.len() as u64,
            };
            // SAFETY: `dst` is valid and stays so until completion (contract); the import is
            // alive while `data` borrows it and afterwards until `used_by`'s submission
            // completed (`HostInner` waits for it before releasing the import); the range
            // `at..at + len` lies inside it (`find`). Host writes made before are visible to
            // the copy through vkQueueSubmit's implicit host-write dependency (coherent memory).
            let index = unsafe {
                self.0
                    .submit_with(Vec::new(), |d, cmd| record_copies(d, cmd, [copy]))
            }?;
            host.used_by(index);
            return Ok(SubmissionIndex(index));
        }
        if data.len() as u64 >= 2 * VulkanDevice::STAGING_CHUNK {
            // SAFETY: forwarded from the contract.
            return unsafe { self.0.write_pipelined(dst, offset, data) }
                .map(SubmissionIndex)
                .map_err(Into::into);
        }
        let mut batch = self.begin_batch()?;
        // SAFETY: forwarded from the contract.
        unsafe {
            self.batch_write(&mut batch, dst, offset, data)?;
            self.submit(batch)
        }
    }

    unsafe fn batch_copy(
        &self,
        batch: &mut VulkanBatch,
        src: &VulkanBuffer,
        src_offset: u64,
        dst: &VulkanBuffer,
        dst_offset: u64,
        size: u64,
    ) {
        // Deferred writes to either buffer come first: the copy may read what they write, or
        // overwrite it; so do deferred copies that read the destination.
        batch.before_writing(dst.raw());
        batch.emit_deferred(src.raw());
        let storage = vk::BufferUsageFlags::STORAGE_BUFFER;
        if batch.scatter
            && scatter::carries(dst_offset, src_offset, size)
            && src.raw() != dst.raw()
            && src.usage().contains(storage)
            && dst.usage().contains(storage)
        {
            // A small copy (a manager's staged upload, typically) joins the destination's
            // deferred writes: the scatter dispatch reads its bytes straight from `src`.
            batch.register_copy_source(src);
            batch.defer(
                dst.raw(),
                dst.uma_ptr(),
                Source::Buffer(src.raw()),
                ScatterWrite {
                    dst_offset,
                    src_offset,
                    len: size,
                },
            );
            return;
        }
        batch.emit_deferred(dst.raw());
        batch.ops.push(BatchOp::Copy(RawCopy {
            src: src.raw(),
            src_offset,
            dst: dst.raw(),
            dst_offset,
            size,
        }));
    }

    unsafe fn batch_copy_many(
        &self,
        batch: &mut VulkanBatch,
        src: &VulkanBuffer,
        dst: &VulkanBuffer,
        copies: &[(u64, u64, u64)],
    ) {
        let storage = vk::BufferUsageFlags::STORAGE_BUFFER;
        let scatterable = batch.scatter
            && src.raw() != dst.raw()
            && src.usage().contains(storage)
            && dst.usage().contains(storage);
        if !scatterable {
            for &(src_offset, dst_offset, size) in copies {
                // SAFETY: forwarded (the caller's contract covers every entry).
                unsafe { self.batch_copy(batch, src, src_offset, dst, dst_offset, size) };
            }
            return;
        }
        // What `batch_copy` does first for each copy, once: nothing deferred below writes
        // `src` or reads `dst`, so neither changes between the entries.
        batch.before_writing(dst.raw());
        batch.emit_deferred(src.raw());
        batch.register_copy_source(src);
        // Runs of entries that scatter join the deferred writes in one call each; the rest
        // are copies, recorded in between (program order).
        for piece in scatter::copy_runs(copies) {
            match piece {
                CopyRun::Scatter(run) => batch.defer_many(
                    dst.raw(),
                    dst.uma_ptr(),
                    Source::Buffer(src.raw()),
                    run.iter().copied().map(ScatterWrite::of_copy),
                ),
                CopyRun::Copy(src_offset, dst_offset, size) => {
                    // SAFETY: forwarded (the caller's contract covers every entry).
                    unsafe { self.batch_copy(batch, src, src_offset, dst, dst_offset, size) };
                }
            }
        }
    }

    unsafe fn batch_copy_list(
        &self,
        batch: &mut VulkanBatch,
        src: &VulkanBuffer,
        dst: &VulkanBuffer,
        list: &CopyList,
    ) {
        let storage = vk::BufferUsageFlags::STORAGE_BUFFER;
        let scatterable = batch.scatter
            && src.raw() != dst.raw()
            && src.usage().contains(storage)
            && dst.usage().contains(storage);
        // Few regions once contiguous neighbours merge (an adjacent list: one): copies.
        if !scatterable || list.len() - list.joins() < scatter::MIN_WRITES {
            for (src_offset, dst_offset, size) in list.regions() {
                // SAFETY: forwarded (the caller's contract covers every entry, so every
                // merged range).
                unsafe { self.batch_copy(batch, src, src_offset, dst, dst_offset, size) };
            }
            return;
        }
        if !list.carried() {
            let copies: Vec<(u64, u64, u64)> = list.regions().collect();
            // SAFETY: forwarded.
            unsafe { self.batch_copy_many(batch, src, dst, &copies) };
            return;
        }
        batch.before_writing(dst.raw());
        batch.emit_deferred(src.raw());
        // Planned now from what the list keeps, and recorded after the writes to `dst`
        // deferred before it: unless the writes may be done on the host at submission (a UMA
        // destination), or the plan is refused (overlaps), when the entries join the
        // deferred writes as `batch_copy_many` defers a run that scatters.
        let direct = dst.uma_ptr().is_some()
            && self
                .0
                .direct_enabled
                .load(std::sync::atomic::Ordering::Relaxed);
        if !direct && let Some(dispatch) = self.plan_list(batch, src, dst, list) {
            batch.emit_deferred(dst.raw());
            batch.ops.push(BatchOp::Scatter(dispatch));
            return;
        }
        batch.register_copy_source(src);
        batch.defer_many(
            dst.raw(),
            dst.uma_ptr(),
            Source::Buffer(src.raw()),
            list.as_slice().iter().copied(),
        );
    }

    unsafe fn submit(&self, mut batch: VulkanBatch) -> Result<SubmissionIndex, DeviceError> {
        batch.emit_all_deferred();
        let batch_ops = std::mem::take(&mut batch.ops);
        let pipeline = if batch_ops
            .iter()
            .any(|op| matches!(op, BatchOp::Writes(_) | BatchOp::Scatter(_)))
        {
            self.0.scatter_pipeline()
        } else {
            None
        };
        let limits = self.0.limits;
        // GPUs: a workgroup per record (`ScatterPlan::spread`); CPU devices: grid-stride.
        let spread = self.0.adapter.device_type != vk::PhysicalDeviceType::CPU;
        let words = self
            .0
            .scatter_words
            .load(std::sync::atomic::Ordering::Relaxed);
        let direct_enabled = self
            .0
            .direct_enabled
            .load(std::sync::atomic::Ordering::Relaxed);
        // Buffers that ops recorded for certain (not direct candidates) read or write.
        let mut touched: Vec<vk::Buffer> = Vec::new();
        let mut ops: Vec<Op<'_>> = Vec::with_capacity(batch_ops.len());
        let mut dispatches = 0u64;
        for op in batch_ops {
            let d = match op {
                BatchOp::Copy(c) => {
                    for b in [c.src, c.dst] {
                        if !touched.contains(&b) {
                            touched.push(b);
                        }
                    }
                    ops.push(Op::Copy(c));
                    continue;
                }
                BatchOp::Writes(d) => d,
                BatchOp::Scatter(d) => {
                    // Planned only with a pipeline, which stays once created.
                    let Some(p) = pipeline else {
                        return Err(DeviceError::Internal("no scatter pipeline".to_owned()));
                    };
                    for b in [d.src.buffer, d.dst.buffer] {
                        if !touched.contains(&b) {
                            touched.push(b);
                        }
                    }
                    ops.push(Op::Scatter(p, d));
                    dispatches += 1;
                    continue;
                }
            };
            // A UMA destination that nothing earlier in the batch touches, with sources the
            // host can read: the writes may be done on the host (decided at submission).
            let direct = direct_enabled
                .then_some(d.host)
                .flatten()
                .filter(|_| !touched.contains(&d.dst))
                .and_then(|host| {
                    let mut writes = Vec::with_capacity(d.writes.len());
                    let mut srcs = Vec::new();
                    for (source, ws) in d.runs() {
                        let ptr = match source {
                            Source::Chunk(chunk) => {
                                batch.staging.get(chunk).and_then(VulkanBuffer::mapped_ptr)
                            }
                            Source::Buffer(b) => {
                                srcs.push(b);
                                batch
                                    .src_hosts
                                    .iter()
                                    .find(|s| s.0 == b && !touched.contains(&b))
                                    .map(|s| s.1.0)
                            }
                        }?;
                        let ptr: *const u8 = ptr.as_ptr();
                        writes.extend(ws.iter().map(|w| (ptr, *w)));
                    }
                    Some(Direct {
                        dst: d.dst,
                        dst_ptr: host.get(),
                        srcs,
                        writes,
                        fallback: 0,
                        fallback_dispatches: 0,
                    })
                });
            let direct_at = direct.map(|op| {
                ops.push(Op::Direct(op));
                (ops.len() - 1, dispatches)
            });
            if direct_at.is_none() {
                // Its fallback is recorded for certain: later direct writes must not touch
                // what it reads or writes.
                let srcs = d.runs().filter_map(|(source, _)| match source {
                    Source::Buffer(b) => Some(b),
                    Source::Chunk(_) => None,
                });
                for b in std::iter::once(d.dst).chain(srcs) {
                    if !touched.contains(&b) {
                        touched.push(b);
                    }
                }
            }
            for (source, writes) in d.runs() {
                let src = match source {
                    Source::Chunk(chunk) => batch.staging.get(chunk).map(VulkanBuffer::raw),
                    Source::Buffer(b) => Some(b),
                };
                let Some(src) = src else {
                    return Err(DeviceError::Internal("no staging buffer".to_owned()));
                };
                // Many writes are planned in parts on the copy threads (one plan, one
                // dispatch).
                let mut dispatch_of = |writes: &[ScatterWrite]| {
                    let p = pipeline?;
                    let parts = scatter::plan_parts(writes.len());
                    let mut plan = ScatterPlan::new_in_parts(
                        writes,
                        limits.min_storage_buffer_offset_alignment,
                        limits.max_storage_buffer_range,
                        parts,
                        &gantry_core::copier::run_calls,
                    )
                    .filter(|plan| plan.wide || words)
                    .filter(|plan| {
                        plan.record_bytes().len() as u64 <= limits.max_storage_buffer_range
                    })?;
                    if spread {
                        plan.spread();
                    }
                    let records = batch.stage_records(&plan)?;
                    Some(Op::Scatter(
                        p,
                        Dispatch {
                            records,
                            src: Binding {
                                buffer: src,
                                offset: plan.src_base,
                                range: plan.src_size,
                            },
                            dst: Binding {
                                buffer: d.dst,
                                offset: plan.dst_base,
                                range: plan.dst_size,
                            },
                            groups: plan.groups,
                            wide: plan.wide,
                            set: vk::DescriptorSet::null(),
                        },
                    ))
                };
                let copy = |w: &ScatterWrite| {
                    Op::Copy(RawCopy {
                        src,
                        src_offset: w.src_offset,
                        dst: d.dst,
                        dst_offset: w.dst_offset,
                        size: w.len,
                    })
                };
                if let Some(op) = dispatch_of(writes) {
                    ops.push(op);
                    dispatches += 1;
                    continue;
                }
                // Refused: when for overlaps (some bytes written twice), a dispatch per
                // disjoint run, in order (the recorder puts a barrier between two dispatches
                // into one buffer); runs too short for a dispatch, and anything else, copy.
                let ends = pipeline
                    .and_then(|_| ScatterPlan::disjoint_runs(writes))
                    .filter(|ends| ends.len() > 1)
                    .unwrap_or_else(|| vec![writes.len()]);
                let mut start = 0;
                for end in ends {
                    let run = &writes[start..end];
                    start = end;
                    match (run.len() >= scatter::MIN_WRITES)
                        .then(|| dispatch_of(run))
                        .flatten()
                    {
                        Some(op) => {
                            ops.push(op);
                            dispatches += 1;
                        }
                        None => ops.extend(run.iter().map(copy)),
                    }
                }
            }
            if let Some((at, before)) = direct_at {
                let fallback = ops.len() - at - 1;
                if let Some(Op::Direct(op)) = ops.get_mut(at) {
                    op.fallback = fallback;
                    op.fallback_dispatches = dispatches - before;
                }
            }
        }
        let staging = std::mem::take(&mut batch.staging);
        let mut pools = Vec::new();
        if let Some(p) = pipeline
            && dispatches > 0
            && !p.pushes()
        {
            let mut sets: Vec<&mut Dispatch> = ops
                .iter_mut()
                .filter_map(|op| match op {
                    Op::Scatter(_, d) => Some(d),
                    Op::Copy(_) | Op::Direct(_) => None,
                })
                .collect();
            // SAFETY: the bindings are live buffers with storage usage (destinations checked
            // when the writes were deferred, staging chunks always have it), ranges inside
            // them within the storage limits (the plan's and the table's checks above).
            match unsafe { p.allocate_sets(&self.0.device, &mut sets) } {
                Ok(p) => pools = p,
                Err(e) => {
                    lock(&self.0.orphans).extend(staging);
                    return Err(e.into());
                }
            }
        }
        let mut outcome = (0, 0);
        // SAFETY: every buffer is valid and stays so until completion (trait contract; the
        // staging buffers are retired with the submission, the descriptor pools reset after
        // it); ranges are in bounds; dispatches exist only with a pipeline, which exists only
        // on a compute-capable submission family. Direct ops: their pointers are the coherent
        // mappings of the destination (a live UMA buffer of the batch) and of staging chunks
        // or copy sources (kept alive by the batch), every write was checked in bounds when
        // recorded, no op before one touches its destination or sources (`touched`), and
        // `record_ops` runs under the submission lock; the facade keeps device-local buffers
        // from being mapped.
        let index = unsafe {
            self.0.submit_with_pools(staging, pools, |d, cmd, ctx| {
                outcome = record_ops(d, cmd, &ops, ctx);
            })
        }?;
        let (direct, skipped) = outcome;
        self.0
            .scatter_dispatches
            .fetch_add(dispatches - skipped, std::sync::atomic::Ordering::Relaxed);
        self.0
            .direct_count
            .fetch_add(direct, std::sync::atomic::Ordering::Relaxed);
        Ok(SubmissionIndex(index))
    }

    unsafe fn read(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), DeviceError> {
        if buffer.location() == Location::Readback {
            // Pending submissions may still write it: the result reflects all of them.
            let last = self.0.last_submitted_index();
            if last > self.0.completed_index()? {
                self.0.wait_quiet(last)?;
            }
            // SAFETY: every submission made before the call completed (waited above).
            return unsafe { self.0.read_mapped_raw(buffer, offset, out) }.map_err(Into::into);
        }
        if out.len() >= HOST_DIRECT_MIN
            && let Some((host, at)) = self.0.host_memory.find(out)
            && host.buffer().is_coherent()
        {
            let copy = RawCopy {
                src: buffer.raw(),
                src_offset: offset,
                dst: host.buffer().raw(),
                dst_offset: at,
                size: out.len() as u64,
            };
            // SAFETY: `buffer` is valid with TRANSFER_SRC and the range in bounds (contract);
            // the import is alive while `out` borrows it and its range `at..at + len` lies
            // inside it (`find`); the caller's exclusive borrow of `out` keeps the host away
            // until the wait below returns. The trailing barrier of `submit_with` makes the
            // copy's writes visible to the host.
            let index = unsafe {
                self.0
                    .submit_with(Vec::new(), |d, cmd| record_copies(d, cmd, [copy]))
            }?;
            host.used_by(index);
            return self.0.wait_quiet(index).map_err(Into::into);
        }
        if out.len() as u64 > VulkanDevice::STAGING_CHUNK {
            // SAFETY: forwarded from the contract.
            return unsafe { self.0.read_chunked(buffer, offset, out) }.map_err(Into::into);
        }
        // SAFETY: in bounds, valid (contract); the wait below keeps both alive.
        let (index, staging) = unsafe { self.0.stage_read(buffer, offset, out.len() as u64) }?;
        let waited = self.0.wait_quiet(index);
        let read = waited.and_then(|()| {
            // SAFETY: the copy completed.
            unsafe { self.0.read_mapped_raw(&staging, 0, out) }
        });
        // Retired, not destroyed: if the wait failed the copy may still be pending.
        self.0.retire_after(index, staging);
        read.map_err(Into::into)
    }

    unsafe fn read_async(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        size: u64,
    ) -> Result<VulkanReadFuture, DeviceError> {
        let idle = self.0.completed_index()? >= self.0.last_submitted_index();
        let state = if buffer.location() == Location::Readback && idle {
            let mut out = vec![0u8; size as usize];
            // SAFETY: nothing is pending on the device (checked above), so nothing writes it.
            let r = unsafe { self.0.read_mapped_raw(buffer, offset, &mut out) };
            ReadState::Ready(r.map(|()| out).map_err(Into::into))
        } else {
            // A copy, ordered after every pending submission by its leading barrier, also for
            // a readback buffer still being written.
            // SAFETY: as for `read`.
            let (index, staging) = unsafe { self.0.stage_read(buffer, offset, size) }?;
            ReadState::Pending {
                index,
                staging,
                len: size as usize,
            }
        };
        Ok(VulkanReadFuture {
            device: Arc::clone(&self.0),
            state,
            waker: Arc::new(Mutex::new(None)),
            waiter_started: false,
        })
    }

    fn last_submitted(&self) -> SubmissionIndex {
        SubmissionIndex(self.0.last_submitted_index())
    }

    fn poll(&self) -> Result<SubmissionIndex, DeviceError> {
        Ok(SubmissionIndex(self.0.poll()?))
    }

    fn wait(&self, index: SubmissionIndex, timeout: Option<Duration>) -> Result<bool, DeviceError> {
        let index = index.0.min(self.0.last_submitted_index());
        let ns = timeout.map_or(u64::MAX, |t| {
            u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
        });
        let done = self.0.wait_raw(index, ns)?;
        self.0.poll()?;
        Ok(done)
    }

    fn on_submitted_work_done(&self, index: SubmissionIndex, callback: SubmittedWorkDoneCallback) {
        self.0.on_completed(index.0, callback);
    }

    fn allocated_bytes(&self) -> Option<u64> {
        Some(lock(&self.0.allocator).capacity() + self.0.imported_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_flags_map_one_to_one() {
        let all = usage_flags(BufferUsage::all());
        assert_eq!(
            all.as_raw().count_ones(),
            BufferUsage::all().bits().count_ones()
        );
        assert_eq!(
            usage_flags(BufferUsage::VERTEX),
            vk::BufferUsageFlags::VERTEX_BUFFER
        );
        assert_eq!(
            usage_flags(BufferUsage::empty()),
            vk::BufferUsageFlags::empty()
        );
    }

    #[test]
    fn device_errors() {
        assert_eq!(
            DeviceError::from(Error::OutOfMemory),
            DeviceError::OutOfMemory
        );
        assert_eq!(DeviceError::from(Error::DeviceLost), DeviceError::Lost);
        assert!(matches!(
            DeviceError::from(Error::Timeout),
            DeviceError::Internal(_)
        ));
    }
}
