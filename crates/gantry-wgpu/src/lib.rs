//! gantry's wgpu backend: [`WgpuBackend`] implements [`gantry_core::Backend`] on wgpu 30, on
//! whatever adapter wgpu finds (Mesa's lavapipe on the dev machine, NVIDIA on real hardware).
//!
//! How it uses wgpu:
//! - writes in a batch go through staging chunks that stay mapped while recording (one
//!   `memcpy` each, no extra copy), adjacent writes are coalesced into one copy region, and
//!   chunks are re-mapped with `map_async` after their submission and reused (like
//!   `wgpu::util::StagingBelt`, but with a bound on what is kept);
//! - many small writes (and small copies) to one buffer in a batch become one compute
//!   dispatch that scatters them from staging, or from the copies' source
//!   ([`gantry_core::scatter`]), instead of one copy region each (a copy region costs
//!   ~2.7 µs of GPU time on an H100 however regions are batched); overlapping writes, too
//!   few writes and buffers without `STORAGE` usage keep their copies. For this
//!   every device-local buffer gantry-wgpu creates with `TRANSFER_DST` also gets wgpu's
//!   `STORAGE` usage; [`WgpuBackend::scatter_stats`] counts what was scattered;
//! - a batch is one command encoder and one `queue.submit`;
//! - readback is a copy into a `MAP_READ` buffer, `map_async`, one `device.poll` wait;
//! - host writes to upload buffers map the range, copy, unmap;
//! - wgpu errors are captured with error scopes around each call that may raise one and
//!   turned into [`DeviceError`]s, never a panic; anything that escapes the scopes reaches
//!   the uncaptured-error handler and is kept for [`WgpuBackend::take_uncaptured_errors`];
//! - labels reach wgpu, and through it the driver (G12).
//!
//! What wgpu cannot do, reported as [`gantry_core::Error::Unsupported`] naming the flag:
//! `DEVICE_ADDRESS`, `UNIFORM_TEXEL`, `STORAGE_TEXEL`, `ACCELERATION_STRUCTURE_INPUT`,
//! `ACCELERATION_STRUCTURE_STORAGE`, `SHADER_BINDING_TABLE` (wgpu exposes no texel buffers,
//! no buffer device address and only experimental ray tracing). Upload and readback buffers
//! support the shader usages only when the adapter has `MAPPABLE_PRIMARY_BUFFERS`
//! (requested when present); otherwise only `TRANSFER_SRC` / `TRANSFER_DST` respectively.
#![deny(missing_docs)]

mod scatter;
mod staging;
mod tracker;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use gantry_core::{
    AdapterInfo, Backend, BufferUsage, DeviceError, DeviceType, Error, Limits, MapMode,
    MemoryLocation, RawBufferDesc, SubmissionIndex, SubmittedWorkDoneCallback,
};

pub use scatter::ScatterStats;
use scatter::{Scatter, ScatterPipeline};
use staging::{ReadbackPool, StagingPool, WgpuBatch};
use tracker::Tracker;

/// Which adapter to open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AdapterSelector {
    /// The first adapter wgpu lists.
    #[default]
    First,
    /// The adapter at this index in [`list_adapters`]' order.
    Index(usize),
    /// The first adapter whose name contains this text (case-insensitive).
    NameContains(String),
}

/// Options for [`WgpuBackend::new`].
#[derive(Clone, Debug)]
pub struct WgpuOptions {
    /// Which adapter.
    pub adapter: AdapterSelector,
    /// wgpu backends to search (default: Vulkan).
    pub backends: wgpu::Backends,
    /// Turn on the API's validation layer and debug labels
    /// (`InstanceFlags::VALIDATION | DEBUG`).
    pub validation: bool,
    /// Give labels to the driver (`InstanceFlags::DEBUG`: `VK_EXT_debug_utils` object names,
    /// visible in validation messages, RenderDoc, Nsight) even without validation (G12).
    pub debug_labels: bool,
    /// Request the adapter's full limits (so `max_buffer_size` is the adapter's, e.g. 256 MiB
    /// buffers work) instead of wgpu's defaults.
    pub full_limits: bool,
    /// Bytes of idle staging chunks kept for reuse; more are freed.
    pub staging_keep_bytes: u64,
    /// Size of a staging chunk (writes larger than this get a chunk of their own).
    pub staging_chunk_bytes: u64,
    /// Turn many small writes to one buffer in a batch into one compute dispatch
    /// (default: on). Off, every write is a copy region, as with `StagingBelt`.
    pub scatter: bool,
    /// Gather a batch's small writes (up to 4 KiB) in host memory and copy them into the
    /// mapped staging chunk 64 KiB at a time. `None` (the default): on for discrete GPUs,
    /// where wgpu's staging is write-combined device memory behind the PCIe BAR and small
    /// copies into it, interleaved with the locks each write takes, are slow (10,000 writes
    /// of 256 bytes: 2.3 ms to record on an H100, 0.42 ms through the window); off for CPU
    /// and integrated devices, whose staging is cached host memory.
    pub write_shadow: Option<bool>,
    /// Let a batch write its deferred small writes on the host, straight into the
    /// destinations' memory, instead of recording a scatter dispatch: on devices whose
    /// device-local memory the host reaches (CPU implementations such as lavapipe,
    /// integrated GPUs). `None` (the default): on for CPU and integrated devices that have
    /// `MAPPABLE_PRIMARY_BUFFERS`; off for discrete GPUs. On, device-local buffers are created
    /// with `MAP_WRITE` and upload buffers with `MAP_READ` as well (the backend maps them so
    /// only for this), and a batch's deferred writes wait in host memory until submission;
    /// see [`WgpuBackend::direct_writes`].
    pub direct_writes: Option<bool>,
    /// How long a wait polls (`PollType::Poll`) before it blocks in `PollType::Wait`
    /// (default 500 µs): a blocking wait wakes up tens of microseconds after the work
    /// completes, so short waits, such as a frame's transfers, finish sooner polling. A wait
    /// for longer work burns at most this much of a core before it blocks. Zero blocks at
    /// once.
    pub wait_spin: Duration,
}

impl Default for WgpuOptions {
    fn default() -> Self {
        Self {
            adapter: AdapterSelector::First,
            backends: wgpu::Backends::VULKAN,
            validation: false,
            debug_labels: true,
            full_limits: true,
            staging_keep_bytes: 64 << 20,
            staging_chunk_bytes: 8 << 20,
            scatter: true,
            write_shadow: None,
            direct_writes: None,
            wait_spin: Duration::from_micros(500),
        }
    }
}

fn instance(options: &WgpuOptions) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = options.backends;
    desc.flags = wgpu::InstanceFlags::empty();
    if options.validation {
        desc.flags |= wgpu::InstanceFlags::VALIDATION | wgpu::InstanceFlags::DEBUG;
    }
    if options.debug_labels {
        desc.flags |= wgpu::InstanceFlags::DEBUG;
    }
    wgpu::Instance::new(desc)
}

fn adapter_info(info: &wgpu::AdapterInfo) -> AdapterInfo {
    AdapterInfo {
        name: info.name.clone(),
        backend: format!("wgpu/{}", info.backend.to_str()),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_owned(),
        device_type: match info.device_type {
            wgpu::DeviceType::DiscreteGpu => DeviceType::DiscreteGpu,
            wgpu::DeviceType::IntegratedGpu => DeviceType::IntegratedGpu,
            wgpu::DeviceType::VirtualGpu => DeviceType::VirtualGpu,
            wgpu::DeviceType::Cpu => DeviceType::Cpu,
            wgpu::DeviceType::Other => DeviceType::Other,
        },
    }
}

/// Every adapter wgpu finds for `options.backends`, in the order [`AdapterSelector::Index`]
/// uses.
#[must_use]
pub fn list_adapters(options: &WgpuOptions) -> Vec<AdapterInfo> {
    let instance = instance(options);
    pollster::block_on(instance.enumerate_adapters(options.backends))
        .iter()
        .map(|a| adapter_info(&a.get_info()))
        .collect()
}

/// Usage flags wgpu can give a buffer, whatever the location.
const WGPU_SHADER_USAGE: BufferUsage = BufferUsage::UNIFORM
    .union(BufferUsage::STORAGE)
    .union(BufferUsage::INDEX)
    .union(BufferUsage::VERTEX)
    .union(BufferUsage::INDIRECT);

/// wgpu's usage for a buffer of `usage` at `location`. A device-local buffer that may be
/// written (`COPY_DST`) also gets `STORAGE`, so that batched small writes can be scattered
/// into it by a compute dispatch; `STORAGE` costs nothing on the APIs wgpu targets here.
/// With `direct` ([`WgpuOptions::direct_writes`]) it gets `MAP_WRITE` too, so that batches
/// can write it on the host.
fn wgpu_usage(usage: BufferUsage, location: MemoryLocation, direct: bool) -> wgpu::BufferUsages {
    let mut out = match location {
        MemoryLocation::DeviceLocal => wgpu::BufferUsages::empty(),
        // With direct writes, batches also read upload buffers on the host.
        MemoryLocation::Upload if direct => {
            wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::MAP_READ
        }
        MemoryLocation::Upload => wgpu::BufferUsages::MAP_WRITE,
        MemoryLocation::Readback => wgpu::BufferUsages::MAP_READ,
    };
    for (ours, theirs) in [
        (BufferUsage::TRANSFER_SRC, wgpu::BufferUsages::COPY_SRC),
        (BufferUsage::TRANSFER_DST, wgpu::BufferUsages::COPY_DST),
        (BufferUsage::UNIFORM, wgpu::BufferUsages::UNIFORM),
        (BufferUsage::STORAGE, wgpu::BufferUsages::STORAGE),
        (BufferUsage::INDEX, wgpu::BufferUsages::INDEX),
        (BufferUsage::VERTEX, wgpu::BufferUsages::VERTEX),
        (BufferUsage::INDIRECT, wgpu::BufferUsages::INDIRECT),
    ] {
        if usage.contains(ours) {
            out |= theirs;
        }
    }
    if location == MemoryLocation::DeviceLocal && out.contains(wgpu::BufferUsages::COPY_DST) {
        out |= wgpu::BufferUsages::STORAGE;
        if direct {
            out |= wgpu::BufferUsages::MAP_WRITE;
        }
    }
    out
}

/// A wgpu buffer with what the backend needs to know about it.
///
/// Device-local buffers created with `TRANSFER_DST` carry wgpu's `STORAGE` usage besides the
/// usages asked for: batched small writes into them are scattered by one compute dispatch
/// (see the crate docs). A buffer without `STORAGE` (one wrapped with
/// [`WgpuBuffer::from_raw`], say) gets every write as a copy region instead.
#[derive(Debug)]
pub struct WgpuBuffer {
    buffer: wgpu::Buffer,
    location: MemoryLocation,
}

impl WgpuBuffer {
    /// Wraps a buffer created with wgpu directly (on this backend's device), for the raw
    /// [`Backend`] calls. `location` says how gantry-wgpu treats it: `Readback` buffers are
    /// read by mapping them, others through a copy. Writes in a batch are scattered into it
    /// only when it has `STORAGE` usage.
    #[must_use]
    pub fn from_raw(buffer: wgpu::Buffer, location: MemoryLocation) -> Self {
        Self { buffer, location }
    }

    /// The wgpu buffer, to bind it in wgpu passes.
    #[must_use]
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// A device opened through wgpu; implements [`Backend`].
pub struct WgpuBackend {
    adapter: wgpu::Adapter,
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterInfo,
    limits: Limits,
    tracker: Arc<Tracker>,
    staging: Arc<StagingPool>,
    readback: Arc<ReadbackPool>,
    scatter: Arc<Scatter>,
    /// [`WgpuOptions::write_shadow`], resolved.
    write_shadow: bool,
    /// [`WgpuOptions::wait_spin`].
    wait_spin: Duration,
    /// Whether device-local buffers get `MAP_WRITE` ([`WgpuOptions::direct_writes`]).
    direct_capable: bool,
    /// Whether batches begun now write on the host ([`WgpuBackend::set_direct_writes`]).
    direct_enabled: AtomicBool,
    /// Writes carried out on the host so far.
    pub(crate) direct_count: AtomicU64,
    lost: Arc<AtomicBool>,
    uncaptured: Arc<Mutex<Vec<String>>>,
}

impl core::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WgpuBackend")
            .field("adapter", &self.info)
            .finish_non_exhaustive()
    }
}

// The backend objects are shared across threads (the facade requires it).
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<WgpuBackend>();
    send_sync::<WgpuBuffer>();
};

const MAP_ALIGN: u64 = wgpu::MAP_ALIGNMENT;
const COPY_ALIGN: u64 = wgpu::COPY_BUFFER_ALIGNMENT;

fn align_down(v: u64, a: u64) -> u64 {
    v - v % a
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).expect("mapped ranges fit in the address space")
}

impl WgpuBackend {
    /// Opens the adapter `options` selects.
    ///
    /// # Errors
    /// [`Error::NoDevice`] naming what was looked for and what exists.
    pub fn new(options: &WgpuOptions) -> Result<Self, Error> {
        let instance = instance(options);
        let adapters = pollster::block_on(instance.enumerate_adapters(options.backends));
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        let adapter = match &options.adapter {
            AdapterSelector::First => adapters.into_iter().next(),
            AdapterSelector::Index(i) => adapters.into_iter().nth(*i),
            AdapterSelector::NameContains(text) => {
                let text = text.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&text))
            }
        }
        .ok_or_else(|| Error::NoDevice {
            reason: format!(
                "no wgpu adapter matches {:?} among {:?} (backends {:?})",
                options.adapter, names, options.backends
            ),
        })?;
        let wanted = wgpu::Features::MAPPABLE_PRIMARY_BUFFERS;
        let features = adapter.features() & wanted;
        let required_limits = if options.full_limits {
            adapter.limits()
        } else {
            wgpu::Limits::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("gantry-wgpu device"),
            required_features: features,
            required_limits,
            ..Default::default()
        }))
        .map_err(|e| Error::NoDevice {
            reason: format!("request_device on {}: {e}", adapter.get_info().name),
        })?;
        let lost = Arc::new(AtomicBool::new(false));
        {
            let lost = Arc::clone(&lost);
            device.set_device_lost_callback(move |_reason, _message| {
                lost.store(true, Ordering::SeqCst);
            });
        }
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        {
            let uncaptured = Arc::clone(&uncaptured);
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                uncaptured
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(e.to_string());
            }));
        }
        let wlimits = device.limits();
        let winfo = adapter.get_info();
        let mappable_primary = device
            .features()
            .contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS);
        let transfer = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
        let limits = Limits {
            copy_alignment: COPY_ALIGN,
            map_alignment: MAP_ALIGN,
            min_uniform_offset_alignment: u64::from(wlimits.min_uniform_buffer_offset_alignment),
            min_storage_offset_alignment: u64::from(wlimits.min_storage_buffer_offset_alignment),
            // wgpu flushes and invalidates host-visible memory itself.
            non_coherent_atom_size: COPY_ALIGN,
            max_buffer_size: wlimits.max_buffer_size,
            host_coherent: true,
            unified_memory: matches!(
                winfo.device_type,
                wgpu::DeviceType::Cpu | wgpu::DeviceType::IntegratedGpu
            ),
            device_local_usage: transfer | WGPU_SHADER_USAGE,
            upload_usage: if mappable_primary {
                transfer | WGPU_SHADER_USAGE
            } else {
                BufferUsage::TRANSFER_SRC
            },
            readback_usage: if mappable_primary {
                transfer | WGPU_SHADER_USAGE
            } else {
                BufferUsage::TRANSFER_DST
            },
        };
        let staging = Arc::new(StagingPool::new(
            options.staging_chunk_bytes,
            options.staging_keep_bytes,
        ));
        let readback = Arc::new(ReadbackPool::new(options.staging_keep_bytes));
        let scatter = Arc::new(Scatter::new(
            options.scatter,
            &wlimits,
            options.staging_keep_bytes,
            winfo.device_type == wgpu::DeviceType::Cpu,
        ));
        let write_shadow = options.write_shadow.unwrap_or(!limits.unified_memory);
        let direct_capable =
            mappable_primary && options.direct_writes.unwrap_or(limits.unified_memory);
        Ok(Self {
            readback,
            scatter,
            adapter,
            info: adapter_info(&winfo),
            device,
            queue,
            limits,
            tracker: Arc::new(Tracker::default()),
            staging,
            write_shadow,
            wait_spin: options.wait_spin,
            direct_capable,
            direct_enabled: AtomicBool::new(direct_capable),
            direct_count: AtomicU64::new(0),
            lost,
            uncaptured,
        })
    }

    /// The wgpu device, for work gantry does not wrap.
    #[must_use]
    pub fn wgpu_device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    #[must_use]
    pub fn wgpu_queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The wgpu adapter.
    #[must_use]
    pub fn wgpu_adapter(&self) -> &wgpu::Adapter {
        &self.adapter
    }

    /// Errors wgpu reported outside any error scope since the last call (each is a bug).
    #[must_use]
    pub fn take_uncaptured_errors(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .uncaptured
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// How many batched writes were carried out on the host so far
    /// ([`WgpuOptions::direct_writes`]).
    ///
    /// A batch writes on the host at submission when everything it recorded is deferred small
    /// writes and copies (bound for the scatter dispatch) from host memory or upload buffers
    /// to buffers created with direct writes on, and no earlier submission still uses those
    /// buffers: it maps each source's and destination's window, copies the writes and
    /// unmaps, and records no GPU work for them. Otherwise they go to staging and the
    /// dispatch as usual. A `BufferManager`'s flush is such a batch: copies from its
    /// staging ring.
    #[must_use]
    pub fn direct_writes(&self) -> u64 {
        self.direct_count.load(Ordering::Relaxed)
    }

    /// Turns direct writes on or off for batches begun from now on. On, only buffers created
    /// while [`WgpuOptions::direct_writes`] was on qualify (they carry `MAP_WRITE`).
    pub fn set_direct_writes(&self, on: bool) {
        self.direct_enabled
            .store(on && self.direct_capable, Ordering::Relaxed);
    }

    /// Whether batches begun now may write on the host ([`Self::set_direct_writes`]).
    #[must_use]
    pub fn direct_writes_enabled(&self) -> bool {
        self.direct_enabled.load(Ordering::Relaxed)
    }

    /// Bytes of idle staging memory kept for reuse.
    #[must_use]
    pub fn idle_staging_bytes(&self) -> u64 {
        self.staging.idle_bytes()
    }

    /// Staging chunks created since the device was opened. Batches reuse idle chunks once
    /// their submissions complete (and at once when dropped unsubmitted), so in a steady
    /// stream of batches this stops growing.
    #[must_use]
    pub fn staging_chunks_created(&self) -> u64 {
        self.staging.created()
    }

    /// What the scatter path did since the device was opened: dispatches recorded and the
    /// groups of small writes that stayed copy regions.
    #[must_use]
    pub fn scatter_stats(&self) -> ScatterStats {
        self.scatter.stats()
    }

    /// The pipeline of the word (`wide == false`) or wide scatter shader, created at first
    /// use; `None` if creation failed.
    fn scatter_pipeline(&self, wide: bool) -> Option<&ScatterPipeline> {
        self.scatter.pipeline(wide, || {
            self.scoped(|| ScatterPipeline::new(&self.device, wide))
                .ok()
                .flatten()
        })
    }

    /// A mapped staging chunk for batched writes.
    fn create_staging(&self, size: u64) -> Result<wgpu::Buffer, DeviceError> {
        self.scoped(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("gantry-wgpu staging"),
                size,
                usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            })
        })
    }

    /// A device-local buffer a scatter dispatch reads its records and bytes from.
    fn create_scratch(&self, size: u64) -> Result<wgpu::Buffer, DeviceError> {
        self.scoped(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("gantry-wgpu scatter scratch"),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    fn lost_or(&self, message: String) -> DeviceError {
        if self.lost.load(Ordering::SeqCst) {
            DeviceError::Lost
        } else {
            DeviceError::Internal(message)
        }
    }

    /// Runs `f` inside error scopes and turns what they catch into a [`DeviceError`].
    fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T, DeviceError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let out = f();
        let internal = pollster::block_on(internal.pop());
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        if self.lost.load(Ordering::SeqCst) {
            return Err(DeviceError::Lost);
        }
        if oom.is_some() {
            return Err(DeviceError::OutOfMemory);
        }
        if let Some(e) = validation.or(internal) {
            return Err(self.lost_or(e.to_string()));
        }
        Ok(out)
    }

    fn check_lost(&self) -> Result<(), DeviceError> {
        if self.lost.load(Ordering::SeqCst) {
            Err(DeviceError::Lost)
        } else {
            Ok(())
        }
    }

    fn poll_err(&self, e: wgpu::PollError) -> DeviceError {
        self.lost_or(format!("device.poll: {e}"))
    }

    /// Submits finished command buffers as one submission with the next index.
    fn submit_commands(
        &self,
        commands: Vec<wgpu::CommandBuffer>,
    ) -> Result<SubmissionIndex, DeviceError> {
        self.check_lost()?;
        let tracker = &self.tracker;
        // Completion callbacks are not run here: the facade may hold buffer locks while it
        // submits. They run from the next poll or wait.
        self.scoped(|| tracker.submit(&self.queue, commands))
    }

    /// Maps `range` of `buffer` and waits for the mapping.
    fn map_blocking(
        &self,
        buffer: &wgpu::Buffer,
        mode: wgpu::MapMode,
        range: std::ops::Range<u64>,
        wait_for: Option<wgpu::SubmissionIndex>,
    ) -> Result<(), DeviceError> {
        let slot = Arc::new(Mutex::new(None));
        let result = Arc::clone(&slot);
        self.scoped(|| {
            buffer.map_async(mode, range, move |r| {
                *result.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
            });
        })?;
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: wait_for,
                timeout: None,
            })
            .map_err(|e| self.poll_err(e))?;
        loop {
            if let Some(r) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
                return r.map_err(|e| self.lost_or(format!("map_async: {e}")));
            }
            // The callback fires inside a poll; another thread's poll may be running it.
            self.device
                .poll(wgpu::PollType::Poll)
                .map_err(|e| self.poll_err(e))?;
            std::thread::yield_now();
        }
    }

    /// Copies `range` of a mapped buffer into `out`; the range may have any alignment.
    fn copy_out_mapped(
        buffer: &wgpu::Buffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), DeviceError> {
        staging::read_mapped_range(buffer, offset, out)
    }

    fn copy_in_mapped(buffer: &wgpu::Buffer, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        staging::write_mapped_range(buffer, offset, data)
    }

    /// Records a copy of `buffer`'s range into a new `MAP_READ` buffer and submits it.
    fn copy_to_readback(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<(wgpu::Buffer, SubmissionIndex), DeviceError> {
        let readback = self.readback.acquire(size, |size| {
            self.scoped(|| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("gantry-wgpu readback staging"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
        })?;
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("gantry-wgpu readback"),
            });
        encoder.copy_buffer_to_buffer(buffer, offset, &readback, 0, size);
        let idx = self.submit_commands(vec![encoder.finish()])?;
        Ok((readback, idx))
    }
}

/// The shared state between a [`ReadFuture`] and the `map_async` callback.
#[derive(Default)]
struct ReadSlot {
    result: Option<Result<(), wgpu::BufferAsyncError>>,
    /// Set by the callback and never cleared (the future takes `result`): what the helper
    /// thread waits for.
    called: bool,
    waker: Option<Waker>,
}

/// The future of [`WgpuBackend`]'s `read_async`: resolves once wgpu has mapped the bytes. A
/// helper thread waits on the device, so the future completes without anyone polling wgpu.
pub struct ReadFuture {
    buffer: wgpu::Buffer,
    /// Mapped range, and the part of it the caller asked for.
    map_start: u64,
    offset: u64,
    size: u64,
    /// Unmap and keep nothing (staging) or unmap the caller's readback buffer.
    slot: Arc<Mutex<ReadSlot>>,
    lost: Arc<AtomicBool>,
    done: bool,
    /// Where a staging buffer goes back after the read (`None` for the caller's buffer).
    pool: Option<Arc<ReadbackPool>>,
}

impl Future for ReadFuture {
    type Output = Result<Vec<u8>, DeviceError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(Err(DeviceError::Internal(
                "read future polled after completion".into(),
            )));
        }
        let result = {
            let mut slot = this.slot.lock().unwrap_or_else(PoisonError::into_inner);
            match slot.result.take() {
                Some(r) => r,
                None => {
                    slot.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        };
        this.done = true;
        if let Err(e) = result {
            return Poll::Ready(Err(if this.lost.load(Ordering::SeqCst) {
                DeviceError::Lost
            } else {
                DeviceError::Internal(format!("map_async: {e}"))
            }));
        }
        let mut out = vec![0u8; usize_of(this.size)];
        let copied = WgpuBackend::copy_out_mapped(&this.buffer, this.offset, &mut out);
        this.buffer.unmap();
        let _ = this.map_start;
        if let Some(pool) = this.pool.take() {
            pool.release(this.buffer.clone());
        }
        Poll::Ready(copied.map(|()| out))
    }
}

impl WgpuBackend {
    fn start_map_read(
        &self,
        buffer: wgpu::Buffer,
        map_start: u64,
        offset: u64,
        size: u64,
        wait_for: Option<wgpu::SubmissionIndex>,
        pool: Option<Arc<ReadbackPool>>,
    ) -> Result<ReadFuture, DeviceError> {
        let slot = Arc::new(Mutex::new(ReadSlot::default()));
        let cb_slot = Arc::clone(&slot);
        let map_end = offset + size;
        self.scoped(|| {
            buffer.map_async(wgpu::MapMode::Read, map_start..map_end, move |r| {
                let waker = {
                    let mut slot = cb_slot.lock().unwrap_or_else(PoisonError::into_inner);
                    slot.result = Some(r);
                    slot.called = true;
                    slot.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            });
        })?;
        // The helper thread drives the device until the mapping is done.
        let device = self.device.clone();
        let done = Arc::clone(&slot);
        std::thread::Builder::new()
            .name("gantry-wgpu read".into())
            .spawn(move || {
                let _ = device.poll(wgpu::PollType::Wait {
                    submission_index: wait_for,
                    timeout: None,
                });
                // The callback may have run on another thread's poll; keep polling until it
                // has, without spinning hard. (Not `result`: the future may have taken it, and
                // a thread still polling a device at process exit can crash in its teardown.)
                for _ in 0..10_000 {
                    if done.lock().unwrap_or_else(PoisonError::into_inner).called {
                        return;
                    }
                    let _ = device.poll(wgpu::PollType::Poll);
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
            .map_err(|e| DeviceError::Internal(format!("spawn read thread: {e}")))?;
        Ok(ReadFuture {
            buffer,
            map_start,
            offset,
            size,
            slot,
            lost: Arc::clone(&self.lost),
            done: false,
            pool,
        })
    }
}

impl Backend for WgpuBackend {
    type Buffer = WgpuBuffer;
    type Batch = WgpuBatch;
    type ReadFuture = ReadFuture;

    const NAME: &'static str = "wgpu";

    fn adapter_info(&self) -> AdapterInfo {
        self.info.clone()
    }

    fn limits(&self) -> Limits {
        self.limits.clone()
    }

    unsafe fn create_buffer(&self, desc: &RawBufferDesc<'_>) -> Result<WgpuBuffer, DeviceError> {
        self.check_lost()?;
        let usage = wgpu_usage(desc.usage, desc.location, self.direct_capable);
        let buffer = self.scoped(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: desc.label,
                size: desc.size,
                usage,
                mapped_at_creation: desc.mapped_at_creation,
            })
        });
        match buffer {
            Ok(buffer) => Ok(WgpuBuffer {
                buffer,
                location: desc.location,
            }),
            Err(e) => Err(e),
        }
    }

    unsafe fn destroy_buffer(&self, buffer: WgpuBuffer) {
        // wgpu frees the memory at the next maintenance once the GPU is done.
        buffer.buffer.destroy();
    }

    unsafe fn map(&self, buffer: &WgpuBuffer, mode: MapMode) -> Result<(), DeviceError> {
        let mode = match mode {
            MapMode::Read => wgpu::MapMode::Read,
            MapMode::Write => wgpu::MapMode::Write,
        };
        self.map_blocking(&buffer.buffer, mode, 0..buffer.buffer.size(), None)
    }

    unsafe fn unmap(&self, buffer: &WgpuBuffer) {
        buffer.buffer.unmap();
    }

    unsafe fn write_mapped(
        &self,
        buffer: &WgpuBuffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        Self::copy_in_mapped(&buffer.buffer, offset, data)
    }

    unsafe fn write_mapped_many(
        &self,
        buffer: &WgpuBuffer,
        writes: &[(u64, &[u8])],
        summary: &gantry_core::copier::WritesSummary,
    ) -> Result<(), DeviceError> {
        if writes.is_empty() {
            return Ok(());
        }
        let (lo, hi) = (summary.lo, summary.hi);
        // One view over all the entries (a view per entry costs a wgpu call each).
        let start = align_down(lo, MAP_ALIGN);
        let end = gantry_core::align_up(hi, COPY_ALIGN)
            .unwrap_or(u64::MAX)
            .min(buffer.buffer.size());
        if start >= end {
            return Ok(());
        }
        // In increasing order without overlaps (a manager's staged region) and many bytes:
        // the copy threads take them, into a view from the buffer's start (so the entries'
        // offsets address it). Anything else is copied in order, the later write winning.
        if summary.total >= staging::PARALLEL_STAGED_MIN
            && summary.ascending
            && let Ok(mut view) = buffer.buffer.get_mapped_range_mut(0..end)
        {
            let mut mapping = view.slice(..);
            if mapping.len() as u64 >= hi {
                let base = mapping.as_raw_element_ptr().as_ptr();
                // SAFETY: `base` is the start of a writable view of `hi` bytes or more, held
                // here (nothing else writes it); every entry lies below `hi`, no two overlap
                // (ascending, checked); the bytes are host memory, not this mapping;
                // `summary` is theirs.
                unsafe {
                    gantry_core::copier::write_ascending_summarized(
                        base,
                        writes,
                        staging::PARALLEL_STAGED_MIN,
                        summary,
                    );
                };
                return Ok(());
            }
        }
        let mut view = buffer
            .buffer
            .get_mapped_range_mut(start..end)
            .map_err(|e| DeviceError::Internal(format!("get_mapped_range_mut: {e}")))?;
        for &(offset, data) in writes {
            let at = usize::try_from(offset - start).unwrap_or(usize::MAX);
            view.slice(at..at + data.len()).copy_from_slice(data);
        }
        Ok(())
    }

    unsafe fn write_mapped_list(
        &self,
        buffer: &WgpuBuffer,
        writes: &[(u64, &[u8])],
        at: &[gantry_core::scatter::ScatterWrite],
    ) -> Result<(), DeviceError> {
        let Some(last) = at.last() else {
            return Ok(());
        };
        let hi = last.src_offset + last.len;
        // One view over all the entries (a view per entry costs a wgpu call each), from the
        // buffer's start so the entries' offsets address it.
        let end = gantry_core::align_up(hi, COPY_ALIGN)
            .unwrap_or(u64::MAX)
            .min(buffer.buffer.size());
        if let Ok(mut view) = buffer.buffer.get_mapped_range_mut(0..end) {
            let mut mapping = view.slice(..);
            if mapping.len() as u64 >= hi {
                let base = mapping.as_raw_element_ptr().as_ptr();
                // SAFETY: `base` is the start of a writable view of `hi` bytes or more, held
                // here (nothing else writes it); every entry lies below `hi` and no two
                // overlap (contract: they ascend); the bytes are host memory, not this
                // mapping; `writes` and `at` are in step.
                unsafe {
                    gantry_core::copier::run_staged(base, writes, at, staging::PARALLEL_STAGED_MIN);
                };
                return Ok(());
            }
        }
        for (&(_, data), w) in writes.iter().zip(at) {
            // SAFETY: forwarded (the caller's contract covers every entry).
            unsafe { self.write_mapped(buffer, w.src_offset, data) }?;
        }
        Ok(())
    }

    unsafe fn read_mapped(
        &self,
        buffer: &WgpuBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), DeviceError> {
        Self::copy_out_mapped(&buffer.buffer, offset, out)
    }

    unsafe fn write_host(
        &self,
        buffer: &WgpuBuffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        let start = align_down(offset, MAP_ALIGN);
        let end = offset + data.len() as u64;
        self.map_blocking(&buffer.buffer, wgpu::MapMode::Write, start..end, None)?;
        let copied = Self::copy_in_mapped(&buffer.buffer, offset, data);
        buffer.buffer.unmap();
        copied
    }

    fn begin_batch(&self) -> Result<WgpuBatch, DeviceError> {
        self.check_lost()?;
        Ok(WgpuBatch::new(
            &self.device,
            Arc::clone(&self.staging),
            Arc::clone(&self.scatter),
            self.write_shadow,
            self.direct_enabled.load(Ordering::Relaxed),
        ))
    }

    unsafe fn batch_write(
        &self,
        batch: &mut WgpuBatch,
        dst: &WgpuBuffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        batch.write(self, &dst.buffer, offset, data)
    }

    unsafe fn batch_write_many(
        &self,
        batch: &mut WgpuBatch,
        dst: &WgpuBuffer,
        writes: &[(u64, &[u8])],
    ) -> (usize, Result<(), DeviceError>) {
        batch.write_many(self, &dst.buffer, writes)
    }

    unsafe fn batch_copy(
        &self,
        batch: &mut WgpuBatch,
        src: &WgpuBuffer,
        src_offset: u64,
        dst: &WgpuBuffer,
        dst_offset: u64,
        size: u64,
    ) {
        if src.buffer != dst.buffer {
            batch.copy(self, &src.buffer, src_offset, &dst.buffer, dst_offset, size);
            return;
        }
        // wgpu refuses a copy within one buffer (even for disjoint ranges, which Vulkan
        // allows): go through a temporary buffer, in the same batch.
        let temp = self.scoped(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("gantry-wgpu same-buffer copy"),
                size,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        match temp {
            Ok(temp) => {
                batch.copy(self, &src.buffer, src_offset, &temp, 0, size);
                batch.copy(self, &temp, 0, &dst.buffer, dst_offset, size);
            }
            Err(e) => {
                batch.error.get_or_insert(e);
            }
        }
    }

    unsafe fn batch_copy_many(
        &self,
        batch: &mut WgpuBatch,
        src: &WgpuBuffer,
        dst: &WgpuBuffer,
        copies: &[(u64, u64, u64)],
    ) {
        if src.buffer == dst.buffer {
            for &(src_offset, dst_offset, size) in copies {
                // SAFETY: forwarded (the caller's contract covers every entry).
                unsafe { self.batch_copy(batch, src, src_offset, dst, dst_offset, size) };
            }
            return;
        }
        batch.copy_many(self, &src.buffer, &dst.buffer, copies);
    }

    unsafe fn batch_copy_list(
        &self,
        batch: &mut WgpuBatch,
        src: &WgpuBuffer,
        dst: &WgpuBuffer,
        list: &gantry_core::scatter::CopyList,
    ) {
        if src.buffer == dst.buffer {
            for (src_offset, dst_offset, size) in list.regions() {
                // SAFETY: forwarded (the caller's contract covers every entry, so every
                // merged range).
                unsafe { self.batch_copy(batch, src, src_offset, dst, dst_offset, size) };
            }
            return;
        }
        batch.copy_list(self, &src.buffer, &dst.buffer, list);
    }

    unsafe fn submit(&self, mut batch: WgpuBatch) -> Result<SubmissionIndex, DeviceError> {
        if let Some(e) = batch.error.take() {
            return Err(e);
        }
        let (command, chunks, scratch) = batch.finish(self)?;
        let idx = self.submit_commands(vec![command]);
        // Reusable at once, submitted or not: see `Scatter::release_scratch`.
        self.scatter.release_scratch(scratch);
        let idx = idx?;
        self.staging.recycle_after_submit(chunks);
        Ok(idx)
    }

    unsafe fn read(
        &self,
        buffer: &WgpuBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), DeviceError> {
        let size = out.len() as u64;
        if buffer.location == MemoryLocation::Readback {
            let start = align_down(offset, MAP_ALIGN);
            self.map_blocking(
                &buffer.buffer,
                wgpu::MapMode::Read,
                start..offset + size,
                None,
            )?;
            let copied = Self::copy_out_mapped(&buffer.buffer, offset, out);
            buffer.buffer.unmap();
            return copied;
        }
        let (readback, idx) = self.copy_to_readback(&buffer.buffer, offset, size)?;
        let wait_for = self.tracker.wgpu_index(idx);
        self.map_blocking(&readback, wgpu::MapMode::Read, 0..size, wait_for)?;
        let copied = Self::copy_out_mapped(&readback, 0, out);
        readback.unmap();
        self.readback.release(readback);
        copied
    }

    unsafe fn read_async(
        &self,
        buffer: &WgpuBuffer,
        offset: u64,
        size: u64,
    ) -> Result<ReadFuture, DeviceError> {
        if buffer.location == MemoryLocation::Readback {
            let start = align_down(offset, MAP_ALIGN);
            return self.start_map_read(buffer.buffer.clone(), start, offset, size, None, None);
        }
        let (readback, idx) = self.copy_to_readback(&buffer.buffer, offset, size)?;
        let wait_for = self.tracker.wgpu_index(idx);
        let pool = Some(Arc::clone(&self.readback));
        self.start_map_read(readback, 0, 0, size, wait_for, pool)
    }

    fn last_submitted(&self) -> SubmissionIndex {
        self.tracker.last_submitted()
    }

    fn poll(&self) -> Result<SubmissionIndex, DeviceError> {
        self.check_lost()?;
        self.device
            .poll(wgpu::PollType::Poll)
            .map_err(|e| self.poll_err(e))?;
        self.tracker.run_ready();
        Ok(self.tracker.completed())
    }

    fn wait(&self, index: SubmissionIndex, timeout: Option<Duration>) -> Result<bool, DeviceError> {
        let done = self.wait_inner(index, timeout);
        self.tracker.run_ready();
        done
    }

    fn on_submitted_work_done(&self, index: SubmissionIndex, callback: SubmittedWorkDoneCallback) {
        self.tracker.on_done(index, callback);
    }

    fn allocated_bytes(&self) -> Option<u64> {
        self.device
            .generate_allocator_report()
            .map(|r| r.total_allocated_bytes)
    }
}

impl WgpuBackend {
    fn wait_inner(
        &self,
        index: SubmissionIndex,
        timeout: Option<Duration>,
    ) -> Result<bool, DeviceError> {
        self.check_lost()?;
        if index <= self.tracker.completed() {
            return Ok(true);
        }
        let Some(wgpu_index) = self.tracker.wgpu_index(index) else {
            return Ok(true);
        };
        // Poll first (`WgpuOptions::wait_spin`): a blocking wait wakes up late.
        let spin = timeout.map_or(self.wait_spin, |t| t.min(self.wait_spin));
        let start = std::time::Instant::now();
        while start.elapsed() < spin {
            self.device
                .poll(wgpu::PollType::Poll)
                .map_err(|e| self.poll_err(e))?;
            if self.tracker.completed() >= index {
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        let timeout = timeout.map(|t| t.saturating_sub(start.elapsed()));
        match self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(wgpu_index),
            timeout,
        }) {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => return Ok(false),
            Err(e) => return Err(self.poll_err(e)),
        }
        // The work-done callback may run on another thread's poll right now.
        let wanted = index.min(self.tracker.last_submitted());
        for _ in 0..1000 {
            if self.tracker.completed() >= wanted {
                return Ok(true);
            }
            self.device
                .poll(wgpu::PollType::Poll)
                .map_err(|e| self.poll_err(e))?;
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(self.tracker.completed() >= wanted)
    }
}
