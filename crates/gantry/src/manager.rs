//! The manager facade (M5) and the buffer factory (M6).

use std::sync::{Arc, Mutex};

use gantry_core::{
    Backend, Buffer, BufferDesc, BufferUsage, Device, MemoryLocation, SubmissionIndex, align_up,
};
use gantry_host::{AllocatorReport, BufferStats};
use gantry_stats::{
    AllocatorUsage, MemoryMonitor, ProviderSnapshot, Report, StatisticsProvider, Unit,
};

use crate::buffer::{GpuBuffer, GpuShared};
use crate::error::{Error, Result};
use crate::pool::{BufferPool, PooledBuffer};
use crate::registry::Registry;
use crate::staging::{StagingConfig, StagingEvent, StagingState};
use crate::streaming::StreamingRing;
use crate::transfer::{Inner, PendingState, ReadbackHandle, TransferHandle, lock};

/// Manager configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerConfig {
    /// Frames the CPU may run ahead of the GPU (default 2): [`BufferManager::begin_frame`]
    /// waits for the work of the frame this many frames back.
    pub frames_in_flight: usize,
    /// The staging pool.
    pub staging: StagingConfig,
    /// Free buffers the pool keeps per size class (default 32).
    pub pool_max_per_class: usize,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            frames_in_flight: 2,
            staging: StagingConfig::default(),
            pool_max_per_class: 32,
        }
    }
}

struct Frames {
    /// Frames begun.
    frame: u64,
    in_frame: bool,
    /// The last submission of each of the last `frames_in_flight` frames.
    fences: Vec<SubmissionIndex>,
}

/// Reports a gantry-host [`BufferStats`] as a gantry-stats provider.
#[derive(Debug, Clone)]
pub struct HostStatsProvider {
    name: String,
    stats: Arc<BufferStats>,
}

impl HostStatsProvider {
    /// Reports `stats` under `name`.
    #[must_use]
    pub fn new(name: impl Into<String>, stats: Arc<BufferStats>) -> Self {
        Self {
            name: name.into(),
            stats,
        }
    }
}

impl StatisticsProvider for HostStatsProvider {
    fn name(&self) -> &str {
        &self.name
    }
    fn snapshot(&self) -> ProviderSnapshot {
        let s = self.stats.snapshot();
        ProviderSnapshot::new(self.name.clone())
            .counter("allocations", s.allocations, Unit::Count)
            .counter("deallocations", s.deallocations, Unit::Count)
            .counter("live_bytes", s.live_bytes, Unit::Bytes)
            .counter("peak_bytes", s.peak_bytes, Unit::Bytes)
    }
    fn reset(&self) {
        self.stats.reset_peak();
    }
}

/// The buffer manager: staging pool, transfer orchestrator, registry, pool and statistics
/// over one [`Device`]. Every method takes `&self` and may be called from any thread; clones
/// share everything.
///
/// When the manager's shared state goes (its last clone, and the last [`GpuBuffer`] and
/// [`crate::ReadbackHandle`] that hold it), whatever is still queued is submitted, so an
/// upload whose handle was dropped unflushed still reaches its buffer; transfer handles held
/// past that point see the submission (or its error).
///
/// ```
/// use gantry::core::{reference::ReferenceBackend, BufferDesc, BufferUsage, Device, MemoryLocation};
/// use gantry::{BufferManager, ManagerConfig};
///
/// let device = Device::new(ReferenceBackend::new(64 << 20));
/// let manager = BufferManager::new(device.clone(), ManagerConfig::default())?;
/// let buffer = device.create_buffer(&BufferDesc::new(
///     256,
///     BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST,
///     MemoryLocation::DeviceLocal,
/// ))?;
/// drop(manager.upload(&buffer, 0, &[7u8; 256])?); // handle dropped, nothing flushed
/// drop(manager); // submits the upload
/// device.wait_idle()?;
/// assert_eq!(device.read(&buffer, 0, 256)?, vec![7u8; 256]);
/// # Ok::<(), gantry::Error>(())
/// ```
pub struct BufferManager<B: Backend> {
    inner: Arc<Inner<B>>,
    registry: Arc<Registry<B>>,
    pool: BufferPool<B>,
    frames: Arc<Mutex<Frames>>,
    config: ManagerConfig,
    monitor: Arc<MemoryMonitor>,
    host_stats: Arc<BufferStats>,
    extra_host_stats: Arc<Mutex<Vec<HostStatsProvider>>>,
}

impl<B: Backend> Clone for BufferManager<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            registry: Arc::clone(&self.registry),
            pool: self.pool.clone(),
            frames: Arc::clone(&self.frames),
            config: self.config.clone(),
            monitor: Arc::clone(&self.monitor),
            host_stats: Arc::clone(&self.host_stats),
            extra_host_stats: Arc::clone(&self.extra_host_stats),
        }
    }
}

impl<B: Backend> core::fmt::Debug for BufferManager<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BufferManager")
            .field("device", &self.inner.device)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn pad_to<'a>(bytes: &'a [u8], align: u64) -> std::borrow::Cow<'a, [u8]> {
    let len = bytes.len() as u64;
    match align_up(len, align) {
        Some(l) if l != len => {
            let mut v = bytes.to_vec();
            v.resize(l as usize, 0);
            std::borrow::Cow::Owned(v)
        }
        _ => std::borrow::Cow::Borrowed(bytes),
    }
}

impl<B: Backend> BufferManager<B> {
    /// A manager over `device`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`]; the errors of creating the first staging chunks.
    pub fn new(device: Device<B>, config: ManagerConfig) -> Result<Self> {
        if config.frames_in_flight == 0 {
            return Err(Error::InvalidConfig {
                field: "frames_in_flight",
                value: 0,
                reason: "must be at least 1",
            });
        }
        let host_stats = Arc::new(BufferStats::new());
        let staging = StagingState::new(&device, config.staging.clone(), Arc::clone(&host_stats))?;
        let pool = BufferPool::new(device.clone(), config.pool_max_per_class);
        let inner = Arc::new(Inner::new(device.clone(), staging, pool.clone()));
        Ok(Self {
            registry: Arc::new(Registry::new(device.clone())),
            pool,
            frames: Arc::new(Mutex::new(Frames {
                frame: 0,
                in_frame: false,
                fences: vec![SubmissionIndex::NONE; config.frames_in_flight],
            })),
            inner,
            monitor: Arc::new(MemoryMonitor::new("memory")),
            host_stats,
            extra_host_stats: Arc::new(Mutex::new(Vec::new())),
            config,
        })
    }

    /// The device.
    #[must_use]
    pub fn device(&self) -> &Device<B> {
        &self.inner.device
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// The registry of buffers this manager created.
    #[must_use]
    pub fn registry(&self) -> &Registry<B> {
        &self.registry
    }

    /// The size-class buffer pool.
    #[must_use]
    pub fn pool(&self) -> &BufferPool<B> {
        &self.pool
    }

    fn register(&self, buffer: Buffer<B>) -> GpuBuffer<B> {
        let shared = Arc::new(GpuShared {
            buffer,
            pending: Arc::new(PendingState::default()),
        });
        self.registry
            .insert(shared.buffer.id(), Arc::downgrade(&shared));
        self.inner.events.record_creation(
            shared.buffer.size(),
            location_kind(shared.buffer.location()),
            core::time::Duration::ZERO,
        );
        GpuBuffer {
            shared,
            inner: Arc::clone(&self.inner),
        }
    }

    /// Creates a registered buffer.
    ///
    /// # Errors
    /// As [`Device::create_buffer`].
    pub fn create_buffer(&self, desc: &BufferDesc<'_>) -> Result<GpuBuffer<B>> {
        let buffer = self.inner.device.create_buffer(desc)?;
        Ok(self.register(buffer))
    }

    /// Creates a registered buffer holding `data` (its size is `size_of_val(data)`, rounded
    /// up, the tail zeroed). Device-local buffers get a staged upload, queued until the next
    /// flush; host-visible ones are written now.
    ///
    /// # Errors
    /// As [`Device::create_buffer`] and [`GpuBuffer::write`].
    pub fn create_buffer_init<T: bytemuck::Pod>(
        &self,
        label: &str,
        usage: BufferUsage,
        location: MemoryLocation,
        data: &[T],
    ) -> Result<GpuBuffer<B>> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        // Copyable both ways, so contents can be read back or copied elsewhere.
        let extra = if location == MemoryLocation::Upload {
            BufferUsage::TRANSFER_SRC
        } else {
            BufferUsage::TRANSFER_DST | BufferUsage::TRANSFER_SRC
        };
        let buffer = self.create_buffer(
            &BufferDesc::new(bytes.len() as u64, usage | extra, location).with_label(label),
        )?;
        let padded = pad_to(bytes, self.inner.device.limits().copy_alignment.max(1));
        buffer.write(0, &padded)?;
        Ok(buffer)
    }

    /// A device-local vertex buffer holding `data`, uploaded through staging (M6).
    ///
    /// # Errors
    /// As [`BufferManager::create_buffer_init`].
    pub fn create_vertex_buffer<T: bytemuck::Pod>(
        &self,
        label: &str,
        data: &[T],
    ) -> Result<GpuBuffer<B>> {
        self.create_buffer_init(
            label,
            BufferUsage::VERTEX,
            MemoryLocation::DeviceLocal,
            data,
        )
    }

    /// A device-local index buffer holding `data`, uploaded through staging.
    ///
    /// # Errors
    /// As [`BufferManager::create_buffer_init`].
    pub fn create_index_buffer<T: bytemuck::Pod>(
        &self,
        label: &str,
        data: &[T],
    ) -> Result<GpuBuffer<B>> {
        self.create_buffer_init(label, BufferUsage::INDEX, MemoryLocation::DeviceLocal, data)
    }

    /// A storage buffer of `size` bytes, device-local (written through staging) or
    /// host-visible ([`MemoryLocation::Upload`], written directly). It can be read back.
    ///
    /// # Errors
    /// As [`Device::create_buffer`].
    pub fn create_storage_buffer(
        &self,
        label: &str,
        size: u64,
        location: MemoryLocation,
    ) -> Result<GpuBuffer<B>> {
        self.create_buffer(
            &BufferDesc::new(
                size,
                BufferUsage::STORAGE | BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST,
                location,
            )
            .with_label(label),
        )
    }

    /// A device-local indirect-arguments buffer holding `data` (also usable as storage, so a
    /// compute pass can write the arguments).
    ///
    /// # Errors
    /// As [`BufferManager::create_buffer_init`].
    pub fn create_indirect_buffer<T: bytemuck::Pod>(
        &self,
        label: &str,
        data: &[T],
    ) -> Result<GpuBuffer<B>> {
        self.create_buffer_init(
            label,
            BufferUsage::INDIRECT | BufferUsage::STORAGE,
            MemoryLocation::DeviceLocal,
            data,
        )
    }

    /// A host-visible staging buffer of `size` bytes (copy source).
    ///
    /// # Errors
    /// As [`Device::create_buffer`].
    pub fn create_staging_buffer(&self, label: &str, size: u64) -> Result<GpuBuffer<B>> {
        self.create_buffer(
            &BufferDesc::new(size, BufferUsage::TRANSFER_SRC, MemoryLocation::Upload)
                .with_label(label),
        )
    }

    /// A host-readable readback buffer of `size` bytes (copy destination).
    ///
    /// # Errors
    /// As [`Device::create_buffer`].
    pub fn create_readback_buffer(&self, label: &str, size: u64) -> Result<GpuBuffer<B>> {
        self.create_buffer(
            &BufferDesc::new(size, BufferUsage::TRANSFER_DST, MemoryLocation::Readback)
                .with_label(label),
        )
    }

    /// A dynamic uniform buffer: a [`StreamingRing`] with `UNIFORM` usage, one slot per
    /// frame in flight, handing out offsets aligned to the device's uniform offset alignment.
    ///
    /// # Errors
    /// As [`StreamingRing::new`].
    pub fn create_dynamic_uniform_buffer(
        &self,
        label: &str,
        bytes_per_frame: u64,
    ) -> Result<StreamingRing<B>> {
        let align = self.inner.device.limits().min_uniform_offset_alignment;
        StreamingRing::new(
            &self.inner.device,
            label,
            bytes_per_frame,
            BufferUsage::UNIFORM,
            self.config.frames_in_flight,
            align,
        )
    }

    /// A streaming ring with `usage`, one slot per frame in flight; offsets are aligned for
    /// binding (the uniform and storage offset alignments where the usage includes them).
    ///
    /// # Errors
    /// As [`StreamingRing::new`].
    pub fn create_streaming_ring(
        &self,
        label: &str,
        bytes_per_frame: u64,
        usage: BufferUsage,
    ) -> Result<StreamingRing<B>> {
        let limits = self.inner.device.limits();
        let mut align = limits.copy_alignment;
        if usage.contains(BufferUsage::UNIFORM) {
            align = align.max(limits.min_uniform_offset_alignment);
        }
        if usage.contains(BufferUsage::STORAGE) {
            align = align.max(limits.min_storage_offset_alignment);
        }
        StreamingRing::new(
            &self.inner.device,
            label,
            bytes_per_frame,
            usage,
            self.config.frames_in_flight,
            align,
        )
    }

    /// Queues an upload of `data` to `dst` at `offset` (multiples of the copy alignment).
    /// The bytes are copied into staging now; the copy runs at the next flush. Queued
    /// operations run in the order they were queued, so the last write to a byte wins.
    ///
    /// # Errors
    /// Argument errors (as [`gantry_core::Batch::write`]) before anything is queued;
    /// [`Error::StagingExhausted`].
    pub fn upload(&self, dst: &Buffer<B>, offset: u64, data: &[u8]) -> Result<TransferHandle<B>> {
        self.inner.upload(dst, offset, data, None)
    }

    /// Queues many uploads to one buffer: `(offset, bytes)` pairs, run in order as that many
    /// [`BufferManager::upload`]s would (where they overlap, the later wins). Every entry is
    /// checked before anything is queued. The bytes go into staging together, with one
    /// queued operation, ticket and staging lock per chunk's worth instead of per entry: for
    /// thousands of small scattered updates a frame (instances, particles, sparse uniforms),
    /// which the backends then scatter with one dispatch. The handle completes once every
    /// entry has landed.
    ///
    /// ```
    /// use gantry::{BufferManager, ManagerConfig};
    /// use gantry::core::{reference::ReferenceBackend, BufferDesc, BufferUsage, Device, MemoryLocation};
    ///
    /// # fn main() -> gantry::Result<()> {
    /// let device = Device::new(ReferenceBackend::new(64 << 20));
    /// let manager = BufferManager::new(device, ManagerConfig::default())?;
    /// let rw = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
    /// let particles = manager.create_buffer(
    ///     &BufferDesc::new(64 << 10, rw, MemoryLocation::DeviceLocal).with_label("particles"),
    /// )?;
    /// // Particles 3, 100 and 7 moved this frame: 16 bytes each, at 64-byte slots.
    /// let moved: [(u64, [f32; 4]); 3] = [(3, [1.0; 4]), (100, [2.0; 4]), (7, [3.0; 4])];
    /// let writes: Vec<(u64, &[u8])> = moved
    ///     .iter()
    ///     .map(|(slot, v)| (slot * 64, bytemuck::cast_slice(v)))
    ///     .collect();
    /// let handle = manager.upload_many(particles.buffer(), &writes)?;
    /// manager.flush()?;
    /// handle.wait()?;
    /// let back = manager.read(particles.buffer(), 100 * 64, 16)?.wait()?;
    /// assert_eq!(bytemuck::cast_slice::<u8, f32>(&back), &[2.0; 4]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Argument errors (as [`gantry_core::Batch::write`]), for the first bad entry, before
    /// anything is queued; [`Error::StagingExhausted`] (the entries before the chunk that
    /// could not be placed stay queued).
    pub fn upload_many(
        &self,
        dst: &Buffer<B>,
        writes: &[(u64, &[u8])],
    ) -> Result<TransferHandle<B>> {
        self.inner.upload_many(dst, writes)
    }

    /// Queues an upload of a slice of `T`; see [`BufferManager::upload`].
    ///
    /// # Errors
    /// As [`BufferManager::upload`].
    pub fn upload_pod<T: bytemuck::Pod>(
        &self,
        dst: &Buffer<B>,
        offset: u64,
        data: &[T],
    ) -> Result<TransferHandle<B>> {
        self.upload(dst, offset, bytemuck::cast_slice(data))
    }

    /// Queues a buffer-to-buffer copy.
    ///
    /// # Errors
    /// Argument errors (as [`gantry_core::Batch::copy`]) before anything is queued.
    pub fn copy(
        &self,
        src: &Buffer<B>,
        src_offset: u64,
        dst: &Buffer<B>,
        dst_offset: u64,
        size: u64,
    ) -> Result<TransferHandle<B>> {
        self.inner.copy(src, src_offset, dst, dst_offset, size)
    }

    /// Queues a readback of `size` bytes at `offset` (any alignment) of a buffer with
    /// `TRANSFER_SRC`; it sees every operation queued before it.
    ///
    /// # Errors
    /// Argument errors before anything is queued.
    pub fn read(&self, src: &Buffer<B>, offset: u64, size: u64) -> Result<ReadbackHandle<B>> {
        self.inner.read(src, offset, size)
    }

    /// Submits every queued operation (one submission, unless staging forced an earlier
    /// one). `Ok(None)` when nothing was queued.
    ///
    /// # Errors
    /// Submission errors; the operations' handles report them too.
    pub fn flush(&self) -> Result<Option<SubmissionIndex>> {
        let r = self.inner.flush();
        self.reclaim()?;
        r
    }

    /// Whether operations are queued.
    #[must_use]
    pub fn has_queued(&self) -> bool {
        self.inner.has_queued()
    }

    /// Non-blocking: releases staging regions and deferred buffers the GPU is done with;
    /// returns the latest completed submission.
    ///
    /// # Errors
    /// Device loss.
    pub fn poll(&self) -> Result<SubmissionIndex> {
        self.reclaim()
    }

    fn reclaim(&self) -> Result<SubmissionIndex> {
        let completed = self.inner.device.poll()?;
        lock(&self.inner.staging).reclaim(completed);
        self.pool.note_completed(completed);
        Ok(completed)
    }

    /// Flushes and blocks until every submission so far has completed; staging is then
    /// empty (and rewound: no wrap waste remains).
    ///
    /// # Errors
    /// Submission errors, device loss.
    pub fn wait_idle(&self) -> Result<()> {
        self.inner.flush()?;
        self.inner.device.wait_idle()?;
        self.reclaim()?;
        Ok(())
    }

    /// Starts a frame: waits for the work of the frame `frames_in_flight` frames back and
    /// releases what it used. Returns the frame number.
    ///
    /// # Errors
    /// Device loss.
    pub fn begin_frame(&self) -> Result<u64> {
        let (fence, frame) = {
            let mut f = lock(&self.frames);
            if f.in_frame {
                drop(f);
                self.end_frame()?;
                f = lock(&self.frames);
            }
            let n = f.fences.len() as u64;
            let fence = f.fences[(f.frame % n) as usize];
            f.in_frame = true;
            f.frame += 1;
            (fence, f.frame - 1)
        };
        if fence != SubmissionIndex::NONE {
            self.inner.device.wait(fence, None)?;
        }
        self.reclaim()?;
        Ok(frame)
    }

    /// Ends the frame: flushes queued operations and remembers the frame's last submission.
    ///
    /// # Errors
    /// Submission errors.
    pub fn end_frame(&self) -> Result<Option<SubmissionIndex>> {
        let submitted = self.inner.flush()?;
        let mut f = lock(&self.frames);
        let n = f.fences.len() as u64;
        let slot = ((f.frame + n - 1) % n) as usize;
        f.fences[slot] = self.inner.device.last_submitted();
        f.in_frame = false;
        Ok(submitted)
    }

    /// Frames begun so far.
    #[must_use]
    pub fn frame(&self) -> u64 {
        lock(&self.frames).frame
    }

    /// A buffer of at least `size` bytes from the size-class pool (see [`BufferPool`]).
    ///
    /// # Errors
    /// As [`BufferPool::acquire`].
    pub fn acquire(
        &self,
        size: u64,
        usage: BufferUsage,
        location: MemoryLocation,
    ) -> Result<PooledBuffer<B>> {
        self.pool.acquire(size, usage, location)
    }

    /// The staging pool's recovery steps so far (the latest 4096), oldest first.
    #[must_use]
    pub fn staging_events(&self) -> Vec<StagingEvent> {
        lock(&self.inner.staging).events.iter().copied().collect()
    }

    /// Forgets the recorded staging events.
    pub fn clear_staging_events(&self) {
        lock(&self.inner.staging).events.clear();
    }

    /// Staging memory use summed over the chunks.
    #[must_use]
    pub fn staging_usage(&self) -> AllocatorUsage {
        lock(&self.inner.staging).usage()
    }

    /// The staging pool's fragmentation: `1 - largest free range / min(free bytes, chunk
    /// size)`, 0 when idle (see [`crate::staging`]).
    #[must_use]
    pub fn staging_fragmentation(&self) -> f64 {
        lock(&self.inner.staging).fragmentation()
    }

    /// Staging chunks allocated now.
    #[must_use]
    pub fn staging_chunks(&self) -> usize {
        lock(&self.inner.staging).chunks.len()
    }

    /// The host-side allocation statistics of the staging rings (gantry-host counters).
    #[must_use]
    pub fn host_stats(&self) -> Arc<BufferStats> {
        Arc::clone(&self.host_stats)
    }

    /// Adds a gantry-host [`BufferStats`] (of any host-side buffers) to [`BufferManager::report`].
    pub fn add_host_stats(&self, name: &str, stats: Arc<BufferStats>) {
        lock(&self.extra_host_stats).push(HostStatsProvider::new(name, stats));
    }

    /// A gantry-stats report: transfers (events), staging, orchestrator, registry, pool,
    /// memory and the gantry-host statistics.
    #[must_use]
    pub fn report(&self) -> Report {
        let (staging, usage) = {
            let st = lock(&self.inner.staging);
            (st.snapshot("staging"), st.usage())
        };
        self.monitor.set_allocator("staging", usage);
        let c = &self.inner.counters;
        let transfers = ProviderSnapshot::new("orchestrator")
            .counter("queued_ops", c.queued_ops.get(), Unit::Count)
            .counter("flushes", c.flushes.get(), Unit::Count)
            .counter("submissions", c.submissions.get(), Unit::Count)
            .counter("copy_regions", c.copy_regions.get(), Unit::Count)
            .counter("coalesced", self.inner.coalesced_total(), Unit::Count)
            .counter("joined_uploads", self.inner.joined_total(), Unit::Count)
            .counter("failed_ops", c.failed_ops.get(), Unit::Count)
            .counter(
                "device_live_bytes",
                self.inner.device.live_bytes(),
                Unit::Bytes,
            );
        let host = HostStatsProvider::new("staging_host", Arc::clone(&self.host_stats));
        let mut snapshots = vec![
            self.inner
                .events
                .snapshot()
                .to_provider_snapshot("transfers"),
            staging,
            transfers,
            self.registry.snapshot(),
            self.pool.snapshot(),
            self.monitor.snapshot(),
            host.snapshot(),
        ];
        snapshots.extend(lock(&self.extra_host_stats).iter().map(|p| p.snapshot()));
        Report::from_snapshots(snapshots)
    }

    /// The staging allocators' gantry-host report, per chunk.
    #[must_use]
    pub fn staging_reports(&self) -> Vec<AllocatorReport> {
        let st = lock(&self.inner.staging);
        st.chunk_reports()
    }

    /// Bytes copied into staging so far.
    #[must_use]
    pub fn staged_bytes(&self) -> u64 {
        lock(&self.inner.staging).counters.staged_bytes
    }

    /// Queued operations' count (for tests and statistics).
    #[must_use]
    pub fn queued_ops_total(&self) -> u64 {
        self.inner.counters.queued_ops.get()
    }

    /// Uploads that joined the operation queued just before them (an upload to the same
    /// buffer, nothing else queued since) instead of queuing their own: they share its ticket
    /// and reach the backend as one list of writes.
    ///
    /// ```
    /// use gantry::{BufferManager, ManagerConfig};
    /// use gantry::core::{reference::ReferenceBackend, BufferDesc, BufferUsage, Device, MemoryLocation};
    ///
    /// # fn main() -> gantry::Result<()> {
    /// let device = Device::new(ReferenceBackend::new(64 << 20));
    /// let manager = BufferManager::new(device, ManagerConfig::default())?;
    /// let rw = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
    /// let a = manager.create_buffer(&BufferDesc::new(4096, rw, MemoryLocation::DeviceLocal))?;
    /// let b = manager.create_buffer(&BufferDesc::new(4096, rw, MemoryLocation::DeviceLocal))?;
    /// manager.upload(a.buffer(), 0, &[1u8; 64])?;
    /// manager.upload(a.buffer(), 256, &[2u8; 64])?; // joins the first
    /// manager.upload(b.buffer(), 0, &[3u8; 64])?; // another buffer: its own operation
    /// manager.read(a.buffer(), 0, 4)?; // a read in between...
    /// manager.upload(a.buffer(), 512, &[4u8; 64])?; // ...keeps this one out
    /// assert_eq!(manager.joined_uploads_total(), 1);
    /// manager.flush()?;
    /// assert_eq!(manager.read(a.buffer(), 256, 4)?.wait()?, [2u8; 4]);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn joined_uploads_total(&self) -> u64 {
        self.inner.joined_total()
    }

    /// Copy regions recorded so far (after coalescing).
    #[must_use]
    pub fn copy_regions_total(&self) -> u64 {
        self.inner.counters.copy_regions.get()
    }

    /// Submissions made by flushes so far.
    #[must_use]
    pub fn submissions_total(&self) -> u64 {
        self.inner.counters.submissions.get()
    }

    /// Pending uploads of all registered buffers.
    #[must_use]
    pub fn pending_uploads(&self) -> u64 {
        self.registry
            .buffers()
            .iter()
            .map(|b| b.pending_uploads)
            .sum()
    }
}

fn location_kind(location: MemoryLocation) -> gantry_stats::LocationKind {
    match location {
        MemoryLocation::DeviceLocal => gantry_stats::LocationKind::DeviceLocal,
        MemoryLocation::Upload => gantry_stats::LocationKind::Upload,
        MemoryLocation::Readback => gantry_stats::LocationKind::Readback,
    }
}
