//! The scatter dispatch: many small writes of a batch into one buffer as one compute
//! dispatch of `gantry_core::scatter`'s shader instead of one copy region each.
//!
//! Every copy region costs about 2.7 µs of GPU time on an H100 however regions are batched
//! (PERF.md), so a batch's small writes to one destination are deferred and, where
//! [`ScatterPlan::new`](gantry_core::scatter::ScatterPlan::new) accepts them, recorded as one
//! dispatch that reads a record table and the writes' bytes straight from the batch's
//! host-visible staging chunk (see [`crate::hal::VulkanBatch`]) and writes the destination
//! through a storage binding.
//!
//! This module owns the pipeline (created once per device, at first use) and the descriptors:
//! pushed with [`VK_KHR_push_descriptor`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/VK_KHR_push_descriptor.html)
//! when the device has it enabled, else allocated from descriptor pools that are reset when
//! their submission completes.

use std::sync::Mutex;

use ash::vk;

use crate::backend::{VulkanDevice, lock};
use crate::error::{Error, Result, VkResultExt};

/// Descriptor sets per pool (without push descriptors); a submission takes as many pools as
/// its dispatches need.
const SETS_PER_POOL: u32 = 64;

/// One storage binding: a range of a buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Binding {
    pub(crate) buffer: vk::Buffer,
    pub(crate) offset: u64,
    pub(crate) range: u64,
}

impl Binding {
    fn info(self) -> [vk::DescriptorBufferInfo; 1] {
        [vk::DescriptorBufferInfo {
            buffer: self.buffer,
            offset: self.offset,
            range: self.range,
        }]
    }
}

/// One planned dispatch of the scatter shader.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dispatch {
    /// Binding 0: the record table (in staging).
    pub(crate) records: Binding,
    /// Binding 1: the writes' bytes (in staging).
    pub(crate) src: Binding,
    /// Binding 2: the destination window.
    pub(crate) dst: Binding,
    /// Workgroups `[x, y]`.
    pub(crate) groups: [u32; 2],
    /// Whether the plan is wide (the 16-byte-unit shader).
    pub(crate) wide: bool,
    /// The descriptor set to bind, when descriptors are not pushed (null until allocated).
    pub(crate) set: vk::DescriptorSet,
}

/// The compute pipelines of the two scatter shaders (word and wide), their shared layouts and
/// (without push descriptors) the idle descriptor pools.
pub(crate) struct ScatterPipeline {
    set_layout: vk::DescriptorSetLayout,
    layout: vk::PipelineLayout,
    /// `[word, wide]`: `gantry_core::scatter::SPIRV` and `SPIRV_WIDE`.
    pipelines: [vk::Pipeline; 2],
    /// `VK_KHR_push_descriptor`'s functions, when the extension is enabled.
    push: Option<ash::khr::push_descriptor::Device>,
    /// Reset descriptor pools, for reuse.
    free_pools: Mutex<Vec<vk::DescriptorPool>>,
}

impl ScatterPipeline {
    /// Creates the descriptor set layout (three storage buffers: records and source
    /// read-only, destination), the pipeline layout and the two compute pipelines (from
    /// `gantry_core::scatter::SPIRV` and `SPIRV_WIDE`).
    ///
    /// Wraps [`vkCreateComputePipelines`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/vkCreateComputePipelines.html).
    fn new(d: &VulkanDevice) -> Result<Self> {
        let device = &d.device;
        let read = |spirv: &[u8]| {
            ash::util::read_spv(&mut std::io::Cursor::new(spirv)).map_err(|e| Error::Unsupported {
                what: format!("the scatter shader's SPIR-V: {e}"),
            })
        };
        let codes = [
            read(gantry_core::scatter::SPIRV)?,
            read(gantry_core::scatter::SPIRV_WIDE)?,
        ];
        let push = d
            .enabled
            .push_descriptor
            .then(|| ash::khr::push_descriptor::Device::new(d.raw_instance(), device));
        let bindings: Vec<vk::DescriptorSetLayoutBinding<'_>> = (0..3)
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let flags = if push.is_some() {
            vk::DescriptorSetLayoutCreateFlags::PUSH_DESCRIPTOR_KHR
        } else {
            vk::DescriptorSetLayoutCreateFlags::empty()
        };
        let set_info = vk::DescriptorSetLayoutCreateInfo::default()
            .flags(flags)
            .bindings(&bindings);
        // SAFETY: valid create info; the push flag only with VK_KHR_push_descriptor enabled.
        let set_layout = unsafe { device.create_descriptor_set_layout(&set_info, None) }
            .vk("vkCreateDescriptorSetLayout")?;
        let set_layouts = [set_layout];
        let layout_info = vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts);
        // SAFETY: valid create info naming the layout just created.
        let layout = match unsafe { device.create_pipeline_layout(&layout_info, None) } {
            Ok(l) => l,
            Err(e) => {
                // SAFETY: created above, unused.
                unsafe { device.destroy_descriptor_set_layout(set_layout, None) };
                return Err(crate::error::map_vk("vkCreatePipelineLayout", e));
            }
        };
        let destroy_layouts = || {
            // SAFETY: created above, used by no pipeline.
            unsafe {
                device.destroy_pipeline_layout(layout, None);
                device.destroy_descriptor_set_layout(set_layout, None);
            }
        };
        let mut pipelines = [vk::Pipeline::null(); 2];
        for (i, code) in codes.iter().enumerate() {
            match create_pipeline(device, layout, code) {
                Ok(p) => pipelines[i] = p,
                Err(e) => {
                    // SAFETY: created above, used by nothing recorded yet.
                    unsafe {
                        for p in &pipelines[..i] {
                            device.destroy_pipeline(*p, None);
                        }
                    }
                    destroy_layouts();
                    return Err(e);
                }
            }
        }
        d.set_name(pipelines[0], "gantry scatter pipeline");
        d.set_name(pipelines[1], "gantry wide scatter pipeline");
        Ok(Self {
            set_layout,
            layout,
            pipelines,
            push,
            free_pools: Mutex::new(Vec::new()),
        })
    }

    /// Whether descriptors are pushed (no pools needed).
    pub(crate) fn pushes(&self) -> bool {
        self.push.is_some()
    }

    /// Allocates and writes a descriptor set for each dispatch from reset pools (new ones as
    /// needed) and returns the pools, to be reset when the submission using them completes.
    ///
    /// # Safety
    /// Every binding's buffer is a live buffer of this device with storage-buffer usage, the
    /// ranges lie inside them and meet the device's storage-buffer limits.
    pub(crate) unsafe fn allocate_sets(
        &self,
        device: &ash::Device,
        dispatches: &mut [&mut Dispatch],
    ) -> Result<Vec<vk::DescriptorPool>> {
        let mut pools = Vec::new();
        let result = (|| {
            for group in dispatches.chunks_mut(SETS_PER_POOL as usize) {
                let pool = match lock(&self.free_pools).pop() {
                    Some(p) => p,
                    None => {
                        let sizes = [vk::DescriptorPoolSize {
                            ty: vk::DescriptorType::STORAGE_BUFFER,
                            descriptor_count: 3 * SETS_PER_POOL,
                        }];
                        let info = vk::DescriptorPoolCreateInfo::default()
                            .max_sets(SETS_PER_POOL)
                            .pool_sizes(&sizes);
                        // SAFETY: valid create info.
                        unsafe { device.create_descriptor_pool(&info, None) }
                            .vk("vkCreateDescriptorPool")?
                    }
                };
                pools.push(pool);
                let layouts = vec![self.set_layout; group.len()];
                let info = vk::DescriptorSetAllocateInfo::default()
                    .descriptor_pool(pool)
                    .set_layouts(&layouts);
                // SAFETY: the pool is reset (or new) and holds `SETS_PER_POOL >= group.len()`
                // sets of three storage buffers; only this call uses it.
                let sets = unsafe { device.allocate_descriptor_sets(&info) }
                    .vk("vkAllocateDescriptorSets")?;
                for (dispatch, set) in group.iter_mut().zip(sets) {
                    dispatch.set = set;
                    let infos = [
                        dispatch.records.info(),
                        dispatch.src.info(),
                        dispatch.dst.info(),
                    ];
                    let writes = descriptor_writes(set, &infos);
                    // SAFETY: the set was just allocated and is not in use; the buffers are
                    // live, with storage usage, and the ranges valid (contract).
                    unsafe { device.update_descriptor_sets(&writes, &[]) };
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(pools),
            Err(e) => {
                // SAFETY: the pools were never used by a submission.
                unsafe { self.release_pools(device, pools) };
                Err(e)
            }
        }
    }

    /// Resets descriptor pools and keeps them for reuse.
    ///
    /// # Safety
    /// No pending submission uses a set of these pools.
    pub(crate) unsafe fn release_pools(
        &self,
        device: &ash::Device,
        pools: impl IntoIterator<Item = vk::DescriptorPool>,
    ) {
        let mut free = lock(&self.free_pools);
        for pool in pools {
            // SAFETY: the sets of the pool are unused (contract); the pool is this device's.
            match unsafe {
                device.reset_descriptor_pool(pool, vk::DescriptorPoolResetFlags::empty())
            } {
                Ok(()) => free.push(pool),
                // SAFETY: as above; a pool that cannot be reset is not kept.
                Err(_) => unsafe { device.destroy_descriptor_pool(pool, None) },
            }
        }
    }

    /// Records one dispatch: binds the pipeline of its shader (word or wide), its
    /// descriptors (pushed, or the set allocated for it) and `vkCmdDispatch`.
    ///
    /// Wraps [`vkCmdDispatch`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/vkCmdDispatch.html).
    ///
    /// # Safety
    /// `cmd` is recording on a compute-capable queue family; the bindings are valid (as for [`Self::allocate_sets`]) and, without push descriptors,
    /// `dispatch.set` was allocated by [`Self::allocate_sets`]; the buffers outlive the
    /// submission.
    pub(crate) unsafe fn record(
        &self,
        device: &ash::Device,
        cmd: vk::CommandBuffer,
        dispatch: &Dispatch,
    ) {
        let pipeline = self.pipelines[usize::from(dispatch.wide)];
        // SAFETY: recording on a compute-capable family (contract). Both pipelines share the
        // layout, so descriptors pushed or bound below match either.
        unsafe { device.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, pipeline) };
        match &self.push {
            Some(push) => {
                let infos = [
                    dispatch.records.info(),
                    dispatch.src.info(),
                    dispatch.dst.info(),
                ];
                let writes = descriptor_writes(vk::DescriptorSet::null(), &infos);
                // SAFETY: recording; the layout was created with the push-descriptor flag
                // and the writes match its three storage bindings (contract for the buffers).
                unsafe {
                    push.cmd_push_descriptor_set(
                        cmd,
                        vk::PipelineBindPoint::COMPUTE,
                        self.layout,
                        0,
                        &writes,
                    )
                };
            }
            None => {
                // SAFETY: recording; the set matches the layout and stays valid until the
                // submission completes (its pool is reset only then).
                unsafe {
                    device.cmd_bind_descriptor_sets(
                        cmd,
                        vk::PipelineBindPoint::COMPUTE,
                        self.layout,
                        0,
                        &[dispatch.set],
                        &[],
                    )
                };
            }
        }
        // SAFETY: recording on a compute queue with the pipeline and its descriptors bound;
        // `groups` are within the minimum `maxComputeWorkGroupCount` (65,535 each).
        unsafe { device.cmd_dispatch(cmd, dispatch.groups[0], dispatch.groups[1], 1) };
    }

    /// Destroys the pipeline, its layouts and every descriptor pool (idle ones and `extra`).
    ///
    /// # Safety
    /// No pending submission uses the pipeline or a pool.
    pub(crate) unsafe fn destroy(
        self,
        device: &ash::Device,
        extra: impl IntoIterator<Item = vk::DescriptorPool>,
    ) {
        let pools = self
            .free_pools
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: all unused (contract), all created on `device`.
        unsafe {
            for pool in pools.into_iter().chain(extra) {
                device.destroy_descriptor_pool(pool, None);
            }
            for pipeline in self.pipelines {
                device.destroy_pipeline(pipeline, None);
            }
            device.destroy_pipeline_layout(self.layout, None);
            device.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}

/// Creates the compute pipeline of one scatter shader (`code`, SPIR-V words) with `layout`.
fn create_pipeline(
    device: &ash::Device,
    layout: vk::PipelineLayout,
    code: &[u32],
) -> Result<vk::Pipeline> {
    let module_info = vk::ShaderModuleCreateInfo::default().code(code);
    // SAFETY: `code` is the naga-generated SPIR-V of a valid WGSL module (gantry-core tests
    // that it matches), as 32-bit words.
    let module =
        unsafe { device.create_shader_module(&module_info, None) }.vk("vkCreateShaderModule")?;
    let entry = c"main";
    debug_assert_eq!(entry.to_str().ok(), Some(gantry_core::scatter::ENTRY_POINT));
    let stage = vk::PipelineShaderStageCreateInfo::default()
        .stage(vk::ShaderStageFlags::COMPUTE)
        .module(module)
        .name(entry);
    let info = [vk::ComputePipelineCreateInfo::default()
        .stage(stage)
        .layout(layout)];
    // SAFETY: the module's entry point `main` is a compute shader whose three storage
    // bindings of set 0 match `layout`; everything the info points to lives across the call.
    let created =
        unsafe { device.create_compute_pipelines(vk::PipelineCache::null(), &info, None) };
    // SAFETY: the module is needed only during pipeline creation.
    unsafe { device.destroy_shader_module(module, None) };
    match created {
        Ok(p) => Ok(p[0]),
        Err((_, e)) => Err(crate::error::map_vk("vkCreateComputePipelines", e)),
    }
}

/// The three storage-buffer writes of set `set` (null for push descriptors).
fn descriptor_writes<'a>(
    set: vk::DescriptorSet,
    infos: &'a [[vk::DescriptorBufferInfo; 1]; 3],
) -> [vk::WriteDescriptorSet<'a>; 3] {
    let write = |b: usize| {
        vk::WriteDescriptorSet::default()
            .dst_set(set)
            .dst_binding(b as u32)
            .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
            .buffer_info(&infos[b])
    };
    [write(0), write(1), write(2)]
}

impl VulkanDevice {
    /// The scatter pipeline, created at the first call; `None` when the submission queue has
    /// no compute or creation failed (logged once; batches then keep copies).
    pub(crate) fn scatter_pipeline(&self) -> Option<&ScatterPipeline> {
        if !self.submit_compute {
            return None;
        }
        self.scatter
            .get_or_init(|| match ScatterPipeline::new(self) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(
                        "gantry-vulkan: no scatter pipeline ({e}); small writes stay copies"
                    );
                    None
                }
            })
            .as_ref()
    }
}
