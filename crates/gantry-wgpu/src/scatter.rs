//! The scatter path of batched writes: many small writes into one buffer as one compute
//! dispatch of [`gantry_core::scatter::WGSL`] (or, for writes in 16-byte multiples,
//! [`gantry_core::scatter::WGSL_WIDE`]) instead of one copy region each.
//!
//! What lives here: the pipeline (created once per device, on the first batch that needs
//! it), the pool of scratch buffers the dispatch reads from, and the counters behind
//! [`crate::WgpuBackend::scatter_stats`]. The batch (`staging.rs`) decides what to defer
//! and when to emit; [`gantry_core::scatter::ScatterPlan`] decides whether a group of writes
//! may be scattered at all.
//!
//! Why a scratch buffer: the writes' bytes sit in a `MAP_WRITE | COPY_SRC` staging chunk,
//! and wgpu refuses `STORAGE` on `MAP_WRITE` buffers (without `MAPPABLE_PRIMARY_BUFFERS`), so
//! one copy moves the group's source window (and its record table) into a device-local
//! `STORAGE | COPY_DST` buffer the shader binds.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use gantry_core::DeviceError;

use crate::staging::ReadbackPool;
use gantry_core::scatter;

/// The scatter pipeline and its bind group layout (0: records, 1: source, 2: destination).
#[derive(Debug)]
pub(crate) struct ScatterPipeline {
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) pipeline: wgpu::ComputePipeline,
}

impl ScatterPipeline {
    /// Creates the pipeline of the word or (`wide`) wide shader; the caller captures wgpu's
    /// errors (error scopes). `None` if the WGSL does not parse (it always does: gantry-core's
    /// tests parse and validate it).
    ///
    /// The shader goes to wgpu as a parsed naga module, not as WGSL text: with
    /// `InstanceFlags::DEBUG` wgpu embeds WGSL source text in the SPIR-V (`OpSource` with
    /// source language 10), which the Khronos validation layer of the dev machine
    /// (Vulkan SDK 1.3.239) rejects as invalid SPIR-V. A naga module carries no source text.
    pub(crate) fn new(device: &wgpu::Device, wide: bool) -> Option<Self> {
        let (wgsl, unit) = if wide {
            (scatter::WGSL_WIDE, scatter::WIDE_UNIT)
        } else {
            (scatter::WGSL, 4)
        };
        let parsed = wgpu::naga::front::wgsl::parse_str(wgsl).ok()?;
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some("gantry-wgpu scatter"),
            source: wgpu::ShaderSource::Naga(std::borrow::Cow::Owned(parsed)),
        };
        // SAFETY: the shaders index only inside their bindings for every record table
        // `ScatterPlan::new` makes (each record lies inside both windows, which the binding
        // ranges are; the record count is the table's), and their loops end (each step adds
        // a positive stride to a counter bounded by a record count or length). Those are
        // what the runtime checks guard; without them a CPU implementation (llvmpipe) runs
        // each lane's access without a bounds test.
        let module = unsafe {
            device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
        };
        let entry = |binding: u32, read_only: bool, min: u64| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: wgpu::BufferSize::new(min),
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("gantry-wgpu scatter"),
            entries: &[
                entry(0, true, 4),
                entry(1, true, unit),
                entry(2, false, unit),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("gantry-wgpu scatter"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("gantry-wgpu scatter"),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(scatter::ENTRY_POINT),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        Some(Self { layout, pipeline })
    }
}

/// Counters of the scatter path, from [`crate::WgpuBackend::scatter_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScatterStats {
    /// Scatter dispatches recorded.
    pub dispatches: u64,
    /// Writes those dispatches carried.
    pub scattered_writes: u64,
    /// Groups of deferred writes that stayed copy regions (too few, overlapping, a window
    /// over the binding limit, or no pipeline).
    pub copied_groups: u64,
    /// Writes in those groups.
    pub copied_writes: u64,
}

impl core::fmt::Display for ScatterStats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} scatter dispatches ({} writes); {} groups kept as copies ({} writes)",
            self.dispatches, self.scattered_writes, self.copied_groups, self.copied_writes
        )
    }
}

/// What the backend shares with its batches for scattering.
#[derive(Debug)]
pub(crate) struct Scatter {
    /// Whether small writes are deferred at all ([`crate::WgpuOptions::scatter`]).
    pub(crate) enabled: bool,
    /// The device's `min_storage_buffer_offset_alignment`.
    pub(crate) storage_align: u64,
    /// The device's `max_storage_buffer_binding_size`.
    pub(crate) max_binding: u64,
    /// Whether plans take a workgroup per record ([`gantry_core::scatter::ScatterPlan::spread`]):
    /// on GPUs whose dispatch limit allows it; CPU devices keep the grid-stride plan.
    pub(crate) spread: bool,
    /// `[word, wide]`; `None` inside once creation failed: such groups then stay copies.
    pipelines: [OnceLock<Option<ScatterPipeline>>; 2],
    /// Idle scratch buffers (`STORAGE | COPY_DST`, device-local), served down to a quarter of
    /// their size.
    scratch: ReadbackPool,
    dispatches: AtomicU64,
    scattered_writes: AtomicU64,
    copied_groups: AtomicU64,
    copied_writes: AtomicU64,
}

/// Smallest scratch buffer created (sizes are rounded up to a power of two from here, so
/// that frames of slightly different sizes reuse the same buffers).
const MIN_SCRATCH: u64 = 64 << 10;

impl Scatter {
    pub(crate) fn new(
        enabled: bool,
        limits: &wgpu::Limits,
        keep_bytes: u64,
        cpu_device: bool,
    ) -> Self {
        Self {
            enabled,
            spread: !cpu_device
                && limits.max_compute_workgroups_per_dimension >= scatter::MAX_GROUPS_X,
            storage_align: u64::from(limits.min_storage_buffer_offset_alignment).max(4),
            max_binding: limits.max_storage_buffer_binding_size,
            pipelines: [OnceLock::new(), OnceLock::new()],
            scratch: ReadbackPool::with_slack(keep_bytes, 4),
            dispatches: AtomicU64::new(0),
            scattered_writes: AtomicU64::new(0),
            copied_groups: AtomicU64::new(0),
            copied_writes: AtomicU64::new(0),
        }
    }

    /// The word or (`wide`) wide pipeline, created by `create` on first use; `None` if that
    /// failed.
    pub(crate) fn pipeline(
        &self,
        wide: bool,
        create: impl FnOnce() -> Option<ScatterPipeline>,
    ) -> Option<&ScatterPipeline> {
        self.pipelines[usize::from(wide)]
            .get_or_init(create)
            .as_ref()
    }

    pub(crate) fn stats(&self) -> ScatterStats {
        ScatterStats {
            dispatches: self.dispatches.load(Ordering::Relaxed),
            scattered_writes: self.scattered_writes.load(Ordering::Relaxed),
            copied_groups: self.copied_groups.load(Ordering::Relaxed),
            copied_writes: self.copied_writes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count_dispatch(&self, writes: usize) {
        self.dispatches.fetch_add(1, Ordering::Relaxed);
        self.scattered_writes
            .fetch_add(writes as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_copied(&self, writes: usize) {
        self.copied_groups.fetch_add(1, Ordering::Relaxed);
        self.copied_writes
            .fetch_add(writes as u64, Ordering::Relaxed);
    }

    /// A scratch buffer of at least `size` bytes (at most four times that): an idle one or a
    /// new one from `create`.
    pub(crate) fn acquire_scratch(
        &self,
        size: u64,
        create: impl Fn(u64) -> Result<wgpu::Buffer, DeviceError>,
    ) -> Result<wgpu::Buffer, DeviceError> {
        if let Some(buffer) = self.scratch.take(size) {
            return Ok(buffer);
        }
        let rounded = size
            .max(MIN_SCRATCH)
            .checked_next_power_of_two()
            .unwrap_or(size);
        // A rounded size the device refuses is retried exact.
        create(rounded).or_else(|_| create(size))
    }

    /// Takes back scratch buffers once their batch is submitted (or dropped unsubmitted).
    ///
    /// No wait for the GPU is needed before a later batch records a copy into one of them:
    /// wgpu-core keeps each buffer's last use in the device's tracker, and at every
    /// `queue.submit` prepends a "Transit" command buffer with the barriers from that state to
    /// the submission's first use (`Queue::submit` in wgpu-core's `device/queue.rs`,
    /// `insert_barriers_from_device_tracker`). The later copy (`COPY_DST`) therefore follows
    /// a barrier from the earlier dispatch's `STORAGE_READ_ONLY`; a pipeline barrier orders
    /// against everything submitted earlier on the same queue, and gantry-wgpu submits on one
    /// queue. A buffer handed out again is submitted again only after the batch that held it
    /// was submitted, so the submission order is the order of use.
    pub(crate) fn release_scratch(&self, buffers: impl IntoIterator<Item = wgpu::Buffer>) {
        for buffer in buffers {
            // Beyond the bound it is destroyed; wgpu frees it once its submissions are done.
            self.scratch.release(buffer);
        }
    }
}
