//! [`VulkanBackend`]: construction (own device or adopted), device facts, teardown.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ash::vk;
use gpu_allocator::vulkan::{Allocator, AllocatorCreateDesc};

use crate::buffer::VulkanBuffer;
use crate::context::{self, AdapterPreference, EnabledFeatures, VulkanAdapterInfo};
use crate::debug::{MessageLog, ValidationReport, messenger_info};
use crate::error::{Error, Result, VkResultExt, map_alloc};
use crate::submit::Submitter;

/// Options for [`VulkanBackend::new`].
#[derive(Clone, Debug)]
pub struct VulkanOptions {
    /// Enable `VK_LAYER_KHRONOS_validation` (an error if it is not installed).
    pub validation: bool,
    /// With `validation`, also enable synchronization validation
    /// (`VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT`).
    pub synchronization_validation: bool,
    /// Give Vulkan objects the buffers' labels through `vkSetDebugUtilsObjectNameEXT` (G12).
    pub debug_names: bool,
    /// Which adapter to open.
    pub adapter: AdapterPreference,
    /// Treat every host-visible memory type as non-coherent: allocations rounded to
    /// `nonCoherentAtomSize`, explicit flushes and invalidations. Flushing coherent memory is
    /// valid and harmless, so this runs the non-coherent paths (and lets the validation layer
    /// check their ranges) on devices whose memory is all coherent, such as lavapipe. For tests.
    pub treat_memory_as_non_coherent: bool,
    /// Bytes of idle staging chunks (upload and readback, 32 MiB each) kept for reuse; more
    /// are destroyed as they retire. Allocating large host-visible memory is expensive (the
    /// driver pins it), so keep at least the size of the largest regular transfer.
    pub staging_keep_bytes: u64,
    /// Submit gantry's transfers to the device's dedicated transfer-only queue family when it
    /// has one (family 1 on an H100), instead of the universal (graphics/compute) queue.
    ///
    /// Off by default: the transfer queue was measured no faster than the universal one for
    /// copies (PERF.md), and it cannot dispatch compute, so with it on, batches of many small
    /// writes stay copy regions instead of one scatter dispatch (`gantry_core::scatter`). Its
    /// value is overlap with the engine's own work on the universal queue.
    pub dedicated_transfer_queue: bool,
    /// Whether batches turn many small writes into one scatter compute dispatch
    /// (`gantry_core::scatter`): `None` (the default) decides per device: on for GPUs; on CPU
    /// implementations (lavapipe) only for writes in 16-byte multiples (the wide shader),
    /// because there a copy region is a `memcpy` and the word shader measured slower than the
    /// copies, the wide one 2x faster (docs/bench/vulkan.md). `Some(true)` forces it on for
    /// every write wherever the submission queue can dispatch compute (tests use it on
    /// lavapipe); `Some(false)` turns it off.
    pub scatter: Option<bool>,
    /// Whether a batch's small writes (and small copies) to a device-local buffer whose
    /// memory the host can reach are carried out on the host at submission, when every
    /// earlier submission has completed and nothing earlier in the batch touches that buffer
    /// (otherwise they take the scatter dispatch or copies as usual). `None` (the default):
    /// on for UMA devices (CPU implementations such as lavapipe, integrated GPUs), where
    /// device-local memory is host memory and a `memcpy` beats any command; off for
    /// discrete GPUs. Writes counted by [`VulkanDevice::direct_writes`].
    pub direct_writes: Option<bool>,
    /// How long a wait polls the submission's completion before it blocks in
    /// `vkWaitSemaphores` (default 500 µs). A blocking wait returns tens of microseconds
    /// after the work completes (32 µs for a submit and wait on an H100, against 9.5 µs
    /// polling, PERF.md); short waits, such as a frame's transfers, finish sooner polling. A
    /// wait for longer work burns at most this much of a core before it blocks. Zero blocks
    /// at once.
    pub wait_spin: std::time::Duration,
}

impl Default for VulkanOptions {
    fn default() -> Self {
        Self {
            validation: false,
            synchronization_validation: true,
            debug_names: true,
            adapter: AdapterPreference::default(),
            treat_memory_as_non_coherent: false,
            staging_keep_bytes: VulkanDevice::STAGING_KEEP_DEFAULT,
            dedicated_transfer_queue: false,
            scatter: None,
            direct_writes: None,
            wait_spin: std::time::Duration::from_micros(500),
        }
    }
}

impl VulkanOptions {
    /// Validation and synchronization validation on, as the tests run.
    pub fn validated() -> Self {
        Self {
            validation: true,
            ..Self::default()
        }
    }

    /// Sets [`Self::validation`].
    pub fn with_validation(mut self, on: bool) -> Self {
        self.validation = on;
        self
    }

    /// Sets [`Self::debug_names`].
    pub fn with_debug_names(mut self, on: bool) -> Self {
        self.debug_names = on;
        self
    }

    /// Sets [`Self::treat_memory_as_non_coherent`].
    pub fn with_non_coherent_memory(mut self, on: bool) -> Self {
        self.treat_memory_as_non_coherent = on;
        self
    }

    /// Sets [`Self::staging_keep_bytes`].
    pub fn with_staging_keep_bytes(mut self, bytes: u64) -> Self {
        self.staging_keep_bytes = bytes;
        self
    }

    /// Sets [`Self::direct_writes`].
    pub fn with_direct_writes(mut self, on: Option<bool>) -> Self {
        self.direct_writes = on;
        self
    }

    /// Sets [`Self::scatter`].
    pub fn with_scatter(mut self, on: Option<bool>) -> Self {
        self.scatter = on;
        self
    }

    /// Sets [`Self::dedicated_transfer_queue`].
    pub fn with_dedicated_transfer_queue(mut self, on: bool) -> Self {
        self.dedicated_transfer_queue = on;
        self
    }

    /// Sets [`Self::adapter`].
    pub fn with_adapter(mut self, adapter: AdapterPreference) -> Self {
        self.adapter = adapter;
        self
    }
}

/// An engine's Vulkan objects, handed to [`VulkanBackend::from_raw`].
///
/// The backend clones the function tables but never destroys the instance, the device or the
/// queues; see `from_raw`'s safety contract.
#[derive(Clone)]
pub struct RawVulkan {
    /// The loader the instance came from.
    pub entry: ash::Entry,
    /// The engine's instance (Vulkan 1.2 or later).
    pub instance: ash::Instance,
    /// The physical device `device` was created from.
    pub physical_device: vk::PhysicalDevice,
    /// The engine's device.
    pub device: ash::Device,
    /// Family of `queue`.
    pub queue_family_index: u32,
    /// The queue gantry submits to when `transfer_queue` is `None`.
    pub queue: vk::Queue,
    /// A queue of another family (typically a dedicated transfer family) gantry submits to
    /// instead; buffers are then shared concurrently between both families. Batches of many
    /// small writes become one compute dispatch only when the family gantry submits to
    /// supports compute; otherwise they stay copies.
    pub transfer_queue: Option<(u32, vk::Queue)>,
    /// The optional features and extensions enabled on `device`.
    pub enabled: EnabledFeatures,
    /// Whether `VK_EXT_debug_utils` is enabled on `instance` (debug names, messenger).
    pub debug_utils: bool,
    /// Install the backend's own counting messenger on `instance` (needs `debug_utils`).
    pub install_messenger: bool,
    /// Name objects through `vkSetDebugUtilsObjectNameEXT` (needs `debug_utils`).
    pub debug_names: bool,
}

/// Limits and alignments of the device that the buffer layer needs (G4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VulkanLimits {
    /// `nonCoherentAtomSize`: flush/invalidate granularity of non-coherent memory.
    pub non_coherent_atom_size: u64,
    /// `minUniformBufferOffsetAlignment`.
    pub min_uniform_buffer_offset_alignment: u64,
    /// `minStorageBufferOffsetAlignment`.
    pub min_storage_buffer_offset_alignment: u64,
    /// `minTexelBufferOffsetAlignment`.
    pub min_texel_buffer_offset_alignment: u64,
    /// `optimalBufferCopyOffsetAlignment`.
    pub optimal_buffer_copy_offset_alignment: u64,
    /// `minMemoryMapAlignment`.
    pub min_memory_map_alignment: u64,
    /// `maxUniformBufferRange`.
    pub max_uniform_buffer_range: u64,
    /// `maxStorageBufferRange`.
    pub max_storage_buffer_range: u64,
    /// `minImportedHostPointerAlignment` when `VK_EXT_external_memory_host` is enabled.
    pub min_imported_host_pointer_alignment: Option<u64>,
}

/// One memory heap's size, budget and use (G14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapBudget {
    /// Heap index.
    pub heap_index: u32,
    /// Whether the heap is device-local.
    pub device_local: bool,
    /// The heap's size.
    pub size: u64,
    /// How much this process may use (`VK_EXT_memory_budget`), else the heap's size.
    pub budget: u64,
    /// How much this process uses (`VK_EXT_memory_budget`, all of the process's allocations),
    /// else the bytes of this backend's live buffers in the heap.
    pub usage: u64,
    /// Whether `budget` and `usage` come from the driver.
    pub from_driver: bool,
}

/// gantry's Vulkan backend: a shared handle on a [`VulkanDevice`].
///
/// Cheap to clone (an `Arc`). The device is torn down when the last handle goes: the backend,
/// its batches and its read futures all hold one, so none of them can outlive the device.
/// Every [`VulkanDevice`] method is reachable through `Deref`.
#[derive(Clone)]
pub struct VulkanBackend(pub(crate) Arc<VulkanDevice>);

impl std::ops::Deref for VulkanBackend {
    type Target = VulkanDevice;
    fn deref(&self) -> &VulkanDevice {
        &self.0
    }
}

impl std::fmt::Debug for VulkanBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VulkanBackend")
            .field("adapter", &self.0.adapter.name)
            .field("transfer_family", &self.0.submit_family)
            .finish_non_exhaustive()
    }
}

/// A Vulkan device with its queues, gpu-allocator, and a timeline-tracked transfer path: the
/// state behind [`VulkanBackend`].
///
/// See the crate documentation for the model. Methods take `&self` and may be called from any
/// thread; recording and submission share one lock.
pub struct VulkanDevice {
    pub(crate) device: ash::Device,
    pub(crate) physical_device: vk::PhysicalDevice,
    pub(crate) adapter: VulkanAdapterInfo,
    pub(crate) enabled: EnabledFeatures,
    pub(crate) limits: VulkanLimits,
    pub(crate) memory_props: vk::PhysicalDeviceMemoryProperties,
    /// Families buffers are shared between (one, or universal + transfer: `CONCURRENT`).
    pub(crate) sharing_families: Vec<u32>,
    pub(crate) universal: (u32, vk::Queue),
    pub(crate) submit_family: u32,
    /// Whether `submit_family` supports compute, so batches may scatter small writes with a
    /// dispatch (and barriers may name the compute-shader stage).
    pub(crate) submit_compute: bool,
    /// Whether batches defer small writes for scattering ([`VulkanOptions::scatter`]).
    pub(crate) scatter_enabled: AtomicBool,
    /// Whether groups that need the word shader (not all in 16-byte multiples) are scattered
    /// too, or stay copies (the default on CPU devices).
    pub(crate) scatter_words: AtomicBool,
    /// Whether batches may write host-reachable device-local buffers directly
    /// ([`VulkanOptions::direct_writes`]).
    pub(crate) direct_enabled: AtomicBool,
    /// Writes carried out directly so far.
    pub(crate) direct_count: AtomicU64,
    /// [`VulkanOptions::wait_spin`], in nanoseconds.
    pub(crate) wait_spin_ns: u64,
    /// The scatter pipeline, created on first use; `None` inside when creation failed (the
    /// batches then keep copies).
    pub(crate) scatter: std::sync::OnceLock<Option<crate::scatter::ScatterPipeline>>,
    /// Scatter dispatches submitted so far.
    pub(crate) scatter_dispatches: AtomicU64,
    pub(crate) debug_names: Option<ash::ext::debug_utils::Device>,
    pub(crate) external_memory_host: Option<ash::ext::external_memory_host::Device>,
    pub(crate) allocator: ManuallyDrop<Mutex<Allocator>>,
    pub(crate) submitter: Mutex<Submitter>,
    pub(crate) timeline: vk::Semaphore,
    pub(crate) callbacks: Mutex<Vec<(u64, crate::submit::Callback)>>,
    pub(crate) live_buffers: AtomicU64,
    /// The highest completed submission index the backend has seen.
    pub(crate) completed_cache: AtomicU64,
    pub(crate) heap_usage: Vec<AtomicU64>,
    /// Idle staging chunks for reuse.
    pub(crate) staging_pool: Mutex<Vec<VulkanBuffer>>,
    /// Buffers to destroy at the next maintenance (never submitted, or already complete).
    pub(crate) orphans: Mutex<Vec<VulkanBuffer>>,
    pub(crate) imported_bytes: AtomicU64,
    /// Live [`crate::HostMemory`] imports, found by address for zero-copy transfers.
    pub(crate) host_memory: crate::host::HostRegistry,
    /// Device-local buffers created since the last submission, cleared at its start.
    pub(crate) pending_fills: Mutex<Vec<vk::Buffer>>,
    /// [`VulkanOptions::treat_memory_as_non_coherent`].
    pub(crate) force_non_coherent: bool,
    /// [`VulkanOptions::staging_keep_bytes`].
    pub(crate) staging_keep_bytes: u64,
    instance: ash::Instance,
    debug_utils_instance: Option<ash::ext::debug_utils::Instance>,
    messenger: vk::DebugUtilsMessengerEXT,
    owns_device: bool,
    owns_instance: bool,
    /// Counted validation messages; dropped after the messenger and the instance.
    log: Arc<MessageLog>,
    /// Keeps the loader loaded until after the instance is destroyed.
    _entry: ash::Entry,
}

/// Locks a mutex, ignoring poisoning: every critical section leaves its state consistent
/// before any call that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl VulkanBackend {
    /// Lists the physical devices, in the order [`AdapterPreference::Index`] uses.
    ///
    /// # Errors
    /// The loader is missing or the instance cannot be created.
    pub fn enumerate_adapters() -> Result<Vec<VulkanAdapterInfo>> {
        let log = Arc::new(MessageLog::default());
        let parts = context::create_instance(context::load_entry()?, false, false, &log)?;
        let list = context::adapters(&parts.instance);
        // SAFETY: the messenger and the instance were created above and nothing else uses them.
        unsafe {
            if let Some(du) = &parts.debug_utils {
                du.destroy_debug_utils_messenger(parts.messenger, None);
            }
            parts.instance.destroy_instance(None);
        }
        Ok(list?.into_iter().map(|(_, i)| i).collect())
    }

    /// Creates an instance and a device of its own (G13).
    ///
    /// Wraps [`vkCreateDevice`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/vkCreateDevice.html).
    ///
    /// Enables Vulkan 1.2 timeline semaphores (required), `bufferDeviceAddress`,
    /// `VK_EXT_memory_budget`, `VK_EXT_external_memory_host`, `VK_KHR_push_descriptor` and the
    /// ray-tracing buffer extensions when supported. Transfers go to the universal queue; with
    /// [`VulkanOptions::dedicated_transfer_queue`], to a dedicated transfer queue when the
    /// device has a transfer-only family (G14).
    ///
    /// # Errors
    /// [`Error::Loader`] without a Vulkan loader; [`Error::Unsupported`] when validation is
    /// asked for but not installed, or the device lacks Vulkan 1.2 or timeline semaphores;
    /// [`Error::NoAdapter`]; [`Error::OutOfMemory`] and [`Error::Driver`] from the driver.
    pub fn new(options: &VulkanOptions) -> Result<Self> {
        let log = Arc::new(MessageLog::default());
        let entry = context::load_entry()?;
        let parts = context::create_instance(
            entry,
            options.validation,
            options.synchronization_validation,
            &log,
        )?;
        let destroy_instance = |parts: &context::InstanceParts| {
            // SAFETY: called only on failure, when no object created from the instance is left.
            unsafe {
                if let Some(du) = &parts.debug_utils {
                    du.destroy_debug_utils_messenger(parts.messenger, None);
                }
                parts.instance.destroy_instance(None);
            }
        };
        let (pd, adapter) = match context::select_adapter(&parts.instance, &options.adapter) {
            Ok(x) => x,
            Err(e) => {
                destroy_instance(&parts);
                return Err(e);
            }
        };
        let (device, queues, enabled) =
            match context::create_device(&parts.instance, pd, options.dedicated_transfer_queue) {
                Ok(x) => x,
                Err(e) => {
                    destroy_instance(&parts);
                    return Err(e);
                }
            };
        // SAFETY: the device was created with one queue in each of these families.
        let universal = unsafe { device.get_device_queue(queues.universal, 0) };
        let transfer = queues.transfer.map(|f| {
            // SAFETY: as above.
            (f, unsafe { device.get_device_queue(f, 0) })
        });
        let debug_names = options.debug_names && parts.debug_utils.is_some();
        let raw = RawVulkan {
            entry: parts.entry.clone(),
            instance: parts.instance.clone(),
            physical_device: pd,
            device: device.clone(),
            queue_family_index: queues.universal,
            queue: universal,
            transfer_queue: transfer,
            enabled,
            debug_utils: parts.debug_utils.is_some(),
            install_messenger: false,
            debug_names,
        };
        // SAFETY: `raw` describes the objects just created, with the features enabled as
        // recorded; ownership is taken right after.
        let built = unsafe { VulkanDevice::build(raw, log, Some(adapter)) };
        match built {
            Ok(mut backend) => {
                backend.owns_device = true;
                backend.owns_instance = true;
                backend.messenger = parts.messenger;
                backend.debug_utils_instance = parts.debug_utils;
                backend.force_non_coherent = options.treat_memory_as_non_coherent;
                backend.staging_keep_bytes = options.staging_keep_bytes;
                backend.wait_spin_ns =
                    u64::try_from(options.wait_spin.as_nanos()).unwrap_or(u64::MAX);
                match options.scatter {
                    Some(on) => backend.set_scatter(on),
                    None => backend.set_scatter_auto(),
                }
                if let Some(on) = options.direct_writes {
                    backend.set_direct_writes(on);
                }
                Ok(Self(Arc::new(backend)))
            }
            Err(e) => {
                // SAFETY: `build` destroys what it created before failing; the device is idle.
                unsafe { device.destroy_device(None) };
                destroy_instance(&parts);
                Err(e)
            }
        }
    }

    /// Adopts an engine's instance, physical device, device and queue(s) without taking
    /// ownership of them (G13).
    ///
    /// The backend creates its own objects on `raw.device` (a command pool, a timeline
    /// semaphore, gpu-allocator's memory blocks, buffers, optionally a messenger on
    /// `raw.instance`) and destroys exactly those when dropped. It never destroys the instance,
    /// the device or the queues, and never waits for the whole device or queue to go idle: it
    /// waits only for its own submissions.
    ///
    /// # Safety
    /// - `raw.instance`, `raw.physical_device` and `raw.device` are valid, related (the device
    ///   was created from that physical device of that instance), and outlive the backend and
    ///   every buffer it created; `raw.entry` is the loader they came from.
    /// - The instance was created with `apiVersion` 1.2 or later, and the device with the
    ///   Vulkan 1.2 `timelineSemaphore` feature enabled.
    /// - `raw.enabled` is true only for what was enabled on the device: `bufferDeviceAddress`
    ///   (Vulkan 1.2 feature), the extensions `VK_EXT_memory_budget`,
    ///   `VK_EXT_external_memory_host`, `VK_KHR_acceleration_structure` (with its feature, and
    ///   `VK_KHR_deferred_host_operations`), `VK_KHR_ray_tracing_pipeline` (with its feature),
    ///   `VK_KHR_push_descriptor`.
    ///   `raw.debug_utils` is true only if `VK_EXT_debug_utils` is enabled on the instance.
    /// - `raw.queue` was obtained from `raw.device` in family `raw.queue_family_index`, whose
    ///   family supports transfer operations (any graphics, compute or transfer family does);
    ///   likewise `raw.transfer_queue`, from a different family.
    /// - Queues are externally synchronized objects: the engine does not use the queue gantry
    ///   submits to (the transfer queue if given, else `raw.queue`) concurrently with a backend
    ///   call. Give gantry a queue of its own when the engine submits from other threads.
    /// - Work the engine submits that reads buffers gantry writes waits on
    ///   [`VulkanDevice::timeline_semaphore`] for the matching value (or runs on the same queue after
    ///   gantry's submission, since gantry's command buffers begin and end with full barriers).
    pub unsafe fn from_raw(raw: RawVulkan) -> Result<Self> {
        let log = Arc::new(MessageLog::default());
        let install = raw.install_messenger && raw.debug_utils;
        let du = install.then(|| ash::ext::debug_utils::Instance::new(&raw.entry, &raw.instance));
        let mut messenger = vk::DebugUtilsMessengerEXT::null();
        if let Some(du) = &du {
            // SAFETY: the instance has VK_EXT_debug_utils (contract); `log` outlives the
            // messenger, destroyed in `Drop` before `log` is dropped.
            messenger = unsafe { du.create_debug_utils_messenger(&messenger_info(&log), None) }
                .vk("vkCreateDebugUtilsMessengerEXT")?;
        }
        // SAFETY: forwarded from this function's contract.
        let built = unsafe { VulkanDevice::build(raw, log, None) };
        match built {
            Ok(mut backend) => {
                backend.messenger = messenger;
                backend.debug_utils_instance = du;
                Ok(Self(Arc::new(backend)))
            }
            Err(e) => {
                if let Some(du) = &du {
                    // SAFETY: created above, unused by anything else.
                    unsafe { du.destroy_debug_utils_messenger(messenger, None) };
                }
                Err(e)
            }
        }
    }
}

impl VulkanDevice {
    /// Creates the backend's own objects on the given device; owns nothing of `raw` (the
    /// callers flip the ownership flags).
    ///
    /// # Safety
    /// `from_raw`'s contract holds for `raw`.
    unsafe fn build(
        raw: RawVulkan,
        log: Arc<MessageLog>,
        adapter: Option<VulkanAdapterInfo>,
    ) -> Result<Self> {
        let instance = raw.instance;
        let device = raw.device;
        let pd = raw.physical_device;
        let adapter = match adapter {
            Some(a) => a,
            None => context::adapters(&instance)?
                .into_iter()
                .find(|(p, _)| *p == pd)
                .map(|(_, i)| i)
                .ok_or_else(|| Error::NoAdapter {
                    wanted: "the adopted physical device".to_owned(),
                })?,
        };
        // SAFETY: `pd` belongs to `instance` (contract).
        let props = unsafe { instance.get_physical_device_properties(pd) };
        let mut host_props = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
        if raw.enabled.external_memory_host {
            let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut host_props);
            // SAFETY: the extension is enabled on the device (contract), so its property struct
            // may be chained; Vulkan 1.2 provides vkGetPhysicalDeviceProperties2.
            unsafe { instance.get_physical_device_properties2(pd, &mut p2) };
        }
        let l = &props.limits;
        let limits = VulkanLimits {
            non_coherent_atom_size: l.non_coherent_atom_size.max(1),
            min_uniform_buffer_offset_alignment: l.min_uniform_buffer_offset_alignment,
            min_storage_buffer_offset_alignment: l.min_storage_buffer_offset_alignment,
            min_texel_buffer_offset_alignment: l.min_texel_buffer_offset_alignment,
            optimal_buffer_copy_offset_alignment: l.optimal_buffer_copy_offset_alignment,
            min_memory_map_alignment: l.min_memory_map_alignment as u64,
            max_uniform_buffer_range: l.max_uniform_buffer_range.into(),
            max_storage_buffer_range: l.max_storage_buffer_range.into(),
            min_imported_host_pointer_alignment: raw
                .enabled
                .external_memory_host
                .then_some(host_props.min_imported_host_pointer_alignment),
        };
        // SAFETY: `pd` belongs to `instance`.
        let memory_props = unsafe { instance.get_physical_device_memory_properties(pd) };

        let (submit_family, submit_queue) = raw
            .transfer_queue
            .unwrap_or((raw.queue_family_index, raw.queue));
        // SAFETY: `pd` belongs to `instance` (contract).
        let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
        let submit_compute = context::family_has_compute(&families, submit_family);
        let mut sharing_families = vec![raw.queue_family_index];
        if submit_family != raw.queue_family_index {
            sharing_families.push(submit_family);
        }

        let allocator = Allocator::new(&AllocatorCreateDesc {
            instance: instance.clone(),
            device: device.clone(),
            physical_device: pd,
            debug_settings: gpu_allocator::AllocatorDebugSettings::default(),
            buffer_device_address: raw.enabled.buffer_device_address,
            allocation_sizes: gpu_allocator::AllocationSizes::new(32 << 20, 32 << 20)
                .with_max_device_memblock_size(256 << 20)
                .with_max_host_memblock_size(64 << 20),
        })
        .map_err(map_alloc)?;

        let debug_names = (raw.debug_names && raw.debug_utils)
            .then(|| ash::ext::debug_utils::Device::new(&instance, &device));
        let external_memory_host = raw
            .enabled
            .external_memory_host
            .then(|| ash::ext::external_memory_host::Device::new(&instance, &device));

        let mut type_info = vk::SemaphoreTypeCreateInfo::default()
            .semaphore_type(vk::SemaphoreType::TIMELINE)
            .initial_value(0);
        let sem_info = vk::SemaphoreCreateInfo::default().push_next(&mut type_info);
        // SAFETY: the device has timeline semaphores enabled (contract); `sem_info` lives
        // across the call.
        let timeline =
            unsafe { device.create_semaphore(&sem_info, None) }.vk("vkCreateSemaphore")?;
        // SAFETY: `submit_family` is a family of `device` (contract).
        let submitter = match unsafe { Submitter::new(&device, submit_family, submit_queue) } {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: created above and never used.
                unsafe { device.destroy_semaphore(timeline, None) };
                return Err(e);
            }
        };
        let heap_usage = (0..memory_props.memory_heap_count)
            .map(|_| AtomicU64::new(0))
            .collect();
        let backend = Self {
            universal: (raw.queue_family_index, raw.queue),
            submit_family,
            submit_compute,
            scatter_enabled: AtomicBool::new(submit_compute),
            scatter_words: AtomicBool::new(adapter.device_type != vk::PhysicalDeviceType::CPU),
            direct_enabled: AtomicBool::new(matches!(
                adapter.device_type,
                vk::PhysicalDeviceType::CPU | vk::PhysicalDeviceType::INTEGRATED_GPU
            )),
            direct_count: AtomicU64::new(0),
            wait_spin_ns: 500_000,
            scatter: std::sync::OnceLock::new(),
            scatter_dispatches: AtomicU64::new(0),
            sharing_families,
            physical_device: pd,
            adapter,
            enabled: raw.enabled,
            limits,
            memory_props,
            debug_names,
            external_memory_host,
            allocator: ManuallyDrop::new(Mutex::new(allocator)),
            submitter: Mutex::new(submitter),
            timeline,
            callbacks: Mutex::new(Vec::new()),
            live_buffers: AtomicU64::new(0),
            completed_cache: AtomicU64::new(0),
            heap_usage,
            staging_pool: Mutex::new(Vec::new()),
            orphans: Mutex::new(Vec::new()),
            imported_bytes: AtomicU64::new(0),
            host_memory: crate::host::HostRegistry::default(),
            pending_fills: Mutex::new(Vec::new()),
            force_non_coherent: false,
            staging_keep_bytes: Self::STAGING_KEEP_DEFAULT,
            device,
            instance,
            debug_utils_instance: None,
            messenger: vk::DebugUtilsMessengerEXT::null(),
            owns_device: false,
            owns_instance: false,
            log,
            _entry: raw.entry,
        };
        backend.set_name(backend.timeline, "gantry timeline");
        backend.set_name(
            lock(&backend.submitter).pool(),
            "gantry transfer command pool",
        );
        Ok(backend)
    }

    /// Names a Vulkan object for validation messages and tools (G12), when debug names are on.
    pub(crate) fn set_name<H: vk::Handle>(&self, handle: H, name: &str) {
        let Some(du) = &self.debug_names else { return };
        let Ok(name) = std::ffi::CString::new(name.replace('\0', " ")) else {
            return;
        };
        let info = vk::DebugUtilsObjectNameInfoEXT::default()
            .object_handle(handle)
            .object_name(&name);
        // SAFETY: the handle is a live object of this device (callers name objects right after
        // creating them); naming needs no other synchronization. A failure only loses a name.
        let _ = unsafe { du.set_debug_utils_object_name(&info) };
    }

    /// The validation messages counted so far by the backend's messenger (its own instance's,
    /// or the one installed by [`VulkanBackend::from_raw`] with `install_messenger`).
    pub fn validation_report(&self) -> ValidationReport {
        self.log.report()
    }

    /// The validation messages (warning level and above) kept since the last call, clearing
    /// them; the counts in [`Self::validation_report`] are not reset. gantry's conformance
    /// runner reads this after every case.
    pub fn take_validation_messages(&self) -> Vec<String> {
        self.log.take()
    }

    /// A handle on the message counters that outlives the backend (to check teardown).
    pub fn validation_counter(&self) -> crate::debug::ValidationCounter {
        crate::debug::ValidationCounter(Arc::clone(&self.log))
    }

    /// What the adapter is.
    pub fn adapter_info(&self) -> &VulkanAdapterInfo {
        &self.adapter
    }

    /// The device's limits and alignments.
    pub fn limits(&self) -> &VulkanLimits {
        &self.limits
    }

    /// The optional features enabled on the device.
    pub fn enabled_features(&self) -> EnabledFeatures {
        self.enabled
    }

    /// The queue family gantry submits its transfers to: the universal family, or the
    /// dedicated transfer family when one was asked for
    /// ([`VulkanOptions::dedicated_transfer_queue`], `RawVulkan::transfer_queue`).
    pub fn transfer_queue_family(&self) -> u32 {
        self.submit_family
    }

    /// Whether batches turn many small writes into one scatter compute dispatch: the family
    /// gantry submits to supports compute (not a dedicated transfer queue) and
    /// [`VulkanOptions::scatter`] allows it (by default on CPU devices only for writes in
    /// 16-byte multiples). The pipeline itself is created at first use; if that fails,
    /// batches keep copies.
    pub fn scatter_supported(&self) -> bool {
        self.scatter_enabled.load(Ordering::Relaxed)
    }

    /// Turns the scatter dispatch on for every write (`true`) or off (`false`) for batches
    /// submitted from now on (see [`VulkanOptions::scatter`]; devices adopted with
    /// `from_raw` start as [`Self::set_scatter_auto`] leaves them). Stays off when the
    /// submission queue has no compute.
    pub fn set_scatter(&self, on: bool) {
        self.scatter_enabled
            .store(on && self.submit_compute, Ordering::Relaxed);
        self.scatter_words.store(on, Ordering::Relaxed);
    }

    /// The default of [`VulkanOptions::scatter`]: on for GPUs; on CPU devices only for groups
    /// of writes in 16-byte multiples.
    pub fn set_scatter_auto(&self) {
        self.scatter_enabled
            .store(self.submit_compute, Ordering::Relaxed);
        self.scatter_words.store(
            self.adapter.device_type != vk::PhysicalDeviceType::CPU,
            Ordering::Relaxed,
        );
    }

    /// Turns direct writes ([`VulkanOptions::direct_writes`]) on or off for batches
    /// submitted from now on.
    pub fn set_direct_writes(&self, on: bool) {
        self.direct_enabled.store(on, Ordering::Relaxed);
    }

    /// Whether batches may write host-reachable device-local buffers directly
    /// ([`VulkanOptions::direct_writes`]).
    pub fn direct_writes_enabled(&self) -> bool {
        self.direct_enabled.load(Ordering::Relaxed)
    }

    /// How many batched writes and copies were carried out directly on the host so far
    /// ([`VulkanOptions::direct_writes`]).
    pub fn direct_writes(&self) -> u64 {
        self.direct_count.load(Ordering::Relaxed)
    }

    /// How many scatter dispatches (see `gantry_core::scatter`) gantry has submitted: each
    /// replaced at least [`gantry_core::scatter::MIN_WRITES`] copy regions of one batch.
    pub fn scatter_dispatches(&self) -> u64 {
        self.scatter_dispatches.load(Ordering::Relaxed)
    }

    /// Whether gantry submits to a dedicated transfer queue of its own family (G14).
    pub fn has_dedicated_transfer_queue(&self) -> bool {
        self.submit_family != self.universal.0
    }

    /// The universal (graphics/compute) queue family and queue.
    pub fn universal_queue(&self) -> (u32, vk::Queue) {
        self.universal
    }

    /// The raw device, for interoperation.
    pub fn raw_device(&self) -> &ash::Device {
        &self.device
    }

    /// The raw instance, for interoperation.
    pub fn raw_instance(&self) -> &ash::Instance {
        &self.instance
    }

    /// The physical device.
    pub fn raw_physical_device(&self) -> vk::PhysicalDevice {
        self.physical_device
    }

    /// The timeline semaphore every gantry submission signals: submission index `n` is
    /// complete when its value reaches `n`. Other queues wait on it to consume gantry's writes.
    ///
    /// Wraps [`VkSemaphoreTypeCreateInfo`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/VkSemaphoreTypeCreateInfo.html).
    pub fn timeline_semaphore(&self) -> vk::Semaphore {
        self.timeline
    }

    /// Number of buffers created and not yet destroyed, not counting the backend's idle
    /// staging chunks.
    pub fn live_buffers(&self) -> u64 {
        self.live_buffers.load(Ordering::Relaxed) - lock(&self.staging_pool).len() as u64
    }

    /// Budget and use of every memory heap (G14): from `VK_EXT_memory_budget` when enabled,
    /// else the heap sizes and this backend's own buffers.
    ///
    /// Wraps [`VK_EXT_memory_budget`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/VK_EXT_memory_budget.html).
    pub fn memory_budget(&self) -> Vec<HeapBudget> {
        let mut budget = vk::PhysicalDeviceMemoryBudgetPropertiesEXT::default();
        let from_driver = self.enabled.memory_budget;
        if from_driver {
            let mut p2 = vk::PhysicalDeviceMemoryProperties2::default().push_next(&mut budget);
            // SAFETY: VK_EXT_memory_budget is enabled, so its struct may be chained;
            // `self.physical_device` belongs to `self.instance`.
            unsafe {
                self.instance
                    .get_physical_device_memory_properties2(self.physical_device, &mut p2)
            };
        }
        self.memory_props
            .memory_heaps_as_slice()
            .iter()
            .enumerate()
            .map(|(i, heap)| HeapBudget {
                heap_index: i as u32,
                device_local: heap.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL),
                size: heap.size,
                budget: if from_driver {
                    budget.heap_budget[i]
                } else {
                    heap.size
                },
                usage: if from_driver {
                    budget.heap_usage[i]
                } else {
                    self.heap_usage[i].load(Ordering::Relaxed)
                },
                from_driver,
            })
            .collect()
    }
}

impl Drop for VulkanDevice {
    /// Tears down in dependency order: wait for gantry's own submissions (never the whole
    /// device), release finished staging buffers, free command buffers and the pool, destroy the
    /// timeline semaphore, drop gpu-allocator (frees its memory blocks), then, only when owned,
    /// the device, the messenger and the instance. The message log is dropped last, after
    /// every messenger that points to it.
    fn drop(&mut self) {
        if let Err(e) = self.wait_idle_own() {
            tracing::error!("gantry-vulkan: waiting for own submissions at teardown: {e}");
        }
        let pooled: Vec<VulkanBuffer> = lock(&self.staging_pool)
            .drain(..)
            .chain(lock(&self.orphans).drain(..))
            .collect();
        for b in pooled {
            // SAFETY: idle staging chunks and orphans are used by no pending submission.
            unsafe { self.destroy_buffer(b) };
        }
        let live = self.live_buffers.load(Ordering::Relaxed);
        if live != 0 {
            tracing::warn!(
                "gantry-vulkan: dropping the backend with {live} live buffer(s); destroy every \
                 buffer first (their VkBuffer handles leak)"
            );
        }
        let mut submitter = lock(&self.submitter);
        // SAFETY: every submission is complete (waited above, or the device is lost and
        // nothing more will execute), so the command buffers and pool are unused; they belong
        // to `self.device`.
        let pools = unsafe { submitter.destroy(&self.device) };
        drop(submitter);
        if let Some(Some(scatter)) = self.scatter.take() {
            // SAFETY: no submission is pending (as above), so neither the pipeline nor any
            // descriptor pool (idle, or left by a submission) is in use; all are this
            // device's.
            unsafe { scatter.destroy(&self.device, pools) };
        }
        // SAFETY: no pending submission signals or waits on the semaphore any more.
        unsafe { self.device.destroy_semaphore(self.timeline, None) };
        // SAFETY: dropped exactly once, here, before the device is destroyed; gpu-allocator
        // frees its memory blocks on drop.
        unsafe { ManuallyDrop::drop(&mut self.allocator) };
        if self.owns_device {
            // SAFETY: every object this backend created on the device is destroyed above; the
            // device is owned and idle.
            unsafe { self.device.destroy_device(None) };
        }
        if let Some(du) = &self.debug_utils_instance
            && self.messenger != vk::DebugUtilsMessengerEXT::null()
        {
            // SAFETY: the messenger was created by this backend on this instance.
            unsafe { du.destroy_debug_utils_messenger(self.messenger, None) };
        }
        if self.owns_instance {
            // SAFETY: the device and messenger created from it are destroyed above.
            unsafe { self.instance.destroy_instance(None) };
        }
    }
}
