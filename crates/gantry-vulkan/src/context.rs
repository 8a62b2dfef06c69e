//! Instance creation, adapter selection and device creation for [`VulkanBackend::new`].
//!
//! [`VulkanBackend::new`]: crate::VulkanBackend::new

use std::ffi::{CStr, c_char};

use ash::vk;

use crate::debug::{MessageLog, messenger_info};
use crate::error::{Error, Result, VkResultExt};

/// Which physical device [`VulkanBackend::new`](crate::VulkanBackend::new) picks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AdapterPreference {
    /// A discrete GPU if there is one, then integrated, virtual, CPU (lavapipe), other.
    #[default]
    HighPerformance,
    /// The adapter at this index in [`VulkanBackend::enumerate_adapters`]'s order.
    ///
    /// [`VulkanBackend::enumerate_adapters`]: crate::VulkanBackend::enumerate_adapters
    Index(usize),
    /// The first adapter whose name contains this text, ignoring case.
    NameContains(String),
}

/// What one physical device is, as the backend reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VulkanAdapterInfo {
    /// Index in enumeration order.
    pub index: usize,
    /// `VkPhysicalDeviceProperties::deviceName`.
    pub name: String,
    /// The device type.
    pub device_type: vk::PhysicalDeviceType,
    /// PCI vendor id.
    pub vendor_id: u32,
    /// PCI device id.
    pub device_id: u32,
    /// Highest Vulkan version the device supports.
    pub api_version: u32,
    /// Whether gantry can run on it (Vulkan 1.2 with timeline semaphores).
    pub usable: bool,
    /// Driver name and version text (`VkPhysicalDeviceDriverProperties`), when reported.
    pub driver: String,
    /// `maxBufferSize` (Vulkan 1.3 / maintenance4) when reported, else the largest heap.
    pub max_buffer_size: u64,
}

/// The instance-level objects the backend holds.
pub(crate) struct InstanceParts {
    pub(crate) entry: ash::Entry,
    pub(crate) instance: ash::Instance,
    /// Present when `VK_EXT_debug_utils` is enabled on the instance.
    pub(crate) debug_utils: Option<ash::ext::debug_utils::Instance>,
    /// The messenger this backend created (destroyed by it).
    pub(crate) messenger: vk::DebugUtilsMessengerEXT,
}

pub(crate) const VALIDATION_LAYER: &CStr = c"VK_LAYER_KHRONOS_validation";

/// Loads the Vulkan loader.
pub(crate) fn load_entry() -> Result<ash::Entry> {
    // SAFETY: loading the system's Vulkan loader runs its initialisers; the `Entry` keeps the
    // library loaded for as long as any object derived from it, which the backend guarantees
    // by holding the entry until after the instance is destroyed.
    unsafe { ash::Entry::load() }.map_err(|e| Error::Loader {
        reason: e.to_string(),
    })
}

fn has_extension(props: &[vk::ExtensionProperties], name: &CStr) -> bool {
    props
        .iter()
        .any(|p| p.extension_name_as_c_str().is_ok_and(|n| n == name))
}

/// Creates the instance: Vulkan 1.2, debug-utils when present, the validation layer with
/// synchronization validation when asked for, and a messenger counting into `log`.
pub(crate) fn create_instance(
    entry: ash::Entry,
    validation: bool,
    synchronization_validation: bool,
    log: &MessageLog,
) -> Result<InstanceParts> {
    // SAFETY: `entry` holds a loaded loader; the call has no other precondition.
    let version = unsafe { entry.try_enumerate_instance_version() }
        .vk("vkEnumerateInstanceVersion")?
        .unwrap_or(vk::API_VERSION_1_0);
    if version < vk::API_VERSION_1_2 {
        return Err(Error::Unsupported {
            what: format!(
                "Vulkan 1.2 instance (the loader offers {}.{})",
                vk::api_version_major(version),
                vk::api_version_minor(version)
            ),
        });
    }
    // SAFETY: as above.
    let available = unsafe { entry.enumerate_instance_extension_properties(None) }
        .vk("vkEnumerateInstanceExtensionProperties")?;
    let mut layers: Vec<*const c_char> = Vec::new();
    let mut extensions: Vec<*const c_char> = Vec::new();
    let mut debug_utils = has_extension(&available, ash::ext::debug_utils::NAME);
    let mut validation_features = false;
    if validation {
        // SAFETY: as above.
        let layer_props = unsafe { entry.enumerate_instance_layer_properties() }
            .vk("vkEnumerateInstanceLayerProperties")?;
        let found = layer_props
            .iter()
            .any(|l| l.layer_name_as_c_str().is_ok_and(|n| n == VALIDATION_LAYER));
        if !found {
            return Err(Error::Unsupported {
                what: "VK_LAYER_KHRONOS_validation is not installed".to_owned(),
            });
        }
        layers.push(VALIDATION_LAYER.as_ptr());
        // SAFETY: as above; the layer name is a valid NUL-terminated string.
        let layer_ext =
            unsafe { entry.enumerate_instance_extension_properties(Some(VALIDATION_LAYER)) }
                .vk("vkEnumerateInstanceExtensionProperties")?;
        debug_utils |= has_extension(&layer_ext, ash::ext::debug_utils::NAME);
        validation_features = synchronization_validation
            && has_extension(&layer_ext, ash::ext::validation_features::NAME);
        if validation_features {
            extensions.push(ash::ext::validation_features::NAME.as_ptr());
        } else if synchronization_validation {
            tracing::warn!(
                "gantry-vulkan: the validation layer lacks VK_EXT_validation_features: \
                 synchronization validation is OFF"
            );
        }
    }
    if debug_utils {
        extensions.push(ash::ext::debug_utils::NAME.as_ptr());
    }

    let app = vk::ApplicationInfo::default()
        .application_name(c"gantry")
        .engine_name(c"gantry")
        .api_version(vk::API_VERSION_1_2);
    let enabled_features = [vk::ValidationFeatureEnableEXT::SYNCHRONIZATION_VALIDATION];
    let mut features =
        vk::ValidationFeaturesEXT::default().enabled_validation_features(&enabled_features);
    let mut instance_messenger = messenger_info(log);
    let mut info = vk::InstanceCreateInfo::default()
        .application_info(&app)
        .enabled_layer_names(&layers)
        .enabled_extension_names(&extensions);
    if validation_features {
        info = info.push_next(&mut features);
    }
    if debug_utils {
        // Chained so that messages during vkCreateInstance/vkDestroyInstance are counted too.
        info = info.push_next(&mut instance_messenger);
    }
    // SAFETY: `info` and everything it points to (names, features, messenger info whose user
    // data `log` outlives the instance, see `VulkanBackend`'s drop order) live across the call.
    let instance = unsafe { entry.create_instance(&info, None) }.vk("vkCreateInstance")?;
    let mut parts = InstanceParts {
        debug_utils: debug_utils.then(|| ash::ext::debug_utils::Instance::new(&entry, &instance)),
        entry,
        instance,
        messenger: vk::DebugUtilsMessengerEXT::null(),
    };
    if let Some(du) = &parts.debug_utils {
        // SAFETY: the instance was created with VK_EXT_debug_utils; the user data outlives the
        // messenger, which the backend destroys before dropping `log`.
        match unsafe { du.create_debug_utils_messenger(&messenger_info(log), None) } {
            Ok(m) => parts.messenger = m,
            Err(e) => {
                // SAFETY: nothing was created from the instance yet.
                unsafe { parts.instance.destroy_instance(None) };
                return Err(crate::error::map_vk("vkCreateDebugUtilsMessengerEXT", e));
            }
        }
    }
    Ok(parts)
}

/// Lists the physical devices with what gantry needs to know about them.
pub(crate) fn adapters(
    instance: &ash::Instance,
) -> Result<Vec<(vk::PhysicalDevice, VulkanAdapterInfo)>> {
    // SAFETY: `instance` is a valid instance.
    let devices =
        unsafe { instance.enumerate_physical_devices() }.vk("vkEnumeratePhysicalDevices")?;
    Ok(devices
        .into_iter()
        .enumerate()
        .map(|(index, pd)| {
            // SAFETY: `pd` was just enumerated from `instance`.
            let props = unsafe { instance.get_physical_device_properties(pd) };
            let mut v12 = vk::PhysicalDeviceVulkan12Features::default();
            let usable = props.api_version >= vk::API_VERSION_1_2 && {
                let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut v12);
                // SAFETY: the device supports Vulkan 1.2, so the 1.2 feature struct is valid
                // in the chain; `f2` lives across the call.
                unsafe { instance.get_physical_device_features2(pd, &mut f2) };
                v12.timeline_semaphore == vk::TRUE
            };
            let mut driver_props = vk::PhysicalDeviceDriverProperties::default();
            let mut m4 = vk::PhysicalDeviceMaintenance4Properties::default();
            if props.api_version >= vk::API_VERSION_1_2 {
                let mut p2 = vk::PhysicalDeviceProperties2::default().push_next(&mut driver_props);
                if props.api_version >= vk::API_VERSION_1_3 {
                    p2 = p2.push_next(&mut m4);
                }
                // SAFETY: driver properties are core in 1.2 and maintenance4 properties in 1.3,
                // both checked; `p2` lives across the call.
                unsafe { instance.get_physical_device_properties2(pd, &mut p2) };
            }
            let cstr = |b: &[std::ffi::c_char]| {
                // SAFETY: reinterpreting c_char as u8 of the same size and alignment.
                let bytes = unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<u8>(), b.len()) };
                CStr::from_bytes_until_nul(bytes)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let driver = format!(
                "{} {}",
                cstr(&driver_props.driver_name),
                cstr(&driver_props.driver_info)
            )
            .trim()
            .to_owned();
            // SAFETY: `pd` was just enumerated from `instance`.
            let mem = unsafe { instance.get_physical_device_memory_properties(pd) };
            let largest_heap = mem
                .memory_heaps_as_slice()
                .iter()
                .map(|h| h.size)
                .max()
                .unwrap_or(0);
            let max_buffer_size = if m4.max_buffer_size > 0 {
                m4.max_buffer_size
            } else {
                largest_heap
            };
            let info = VulkanAdapterInfo {
                driver,
                max_buffer_size,
                index,
                name: props
                    .device_name_as_c_str()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                device_type: props.device_type,
                vendor_id: props.vendor_id,
                device_id: props.device_id,
                api_version: props.api_version,
                usable,
            };
            (pd, info)
        })
        .collect())
}

fn type_rank(t: vk::PhysicalDeviceType) -> u32 {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => 0,
        vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
        vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
        vk::PhysicalDeviceType::CPU => 3,
        _ => 4,
    }
}

/// Picks the physical device by `pref` among the usable ones.
pub(crate) fn select_adapter(
    instance: &ash::Instance,
    pref: &AdapterPreference,
) -> Result<(vk::PhysicalDevice, VulkanAdapterInfo)> {
    let all = adapters(instance)?;
    let usable = all.into_iter().filter(|(_, i)| i.usable);
    let found = match pref {
        AdapterPreference::HighPerformance => {
            usable.min_by_key(|(_, i)| (type_rank(i.device_type), i.index))
        }
        AdapterPreference::Index(n) => usable.into_iter().find(|(_, i)| i.index == *n),
        AdapterPreference::NameContains(s) => {
            let s = s.to_lowercase();
            usable
                .into_iter()
                .find(|(_, i)| i.name.to_lowercase().contains(&s))
        }
    };
    found.ok_or_else(|| Error::NoAdapter {
        wanted: format!("{pref:?} (Vulkan 1.2 with timeline semaphores)"),
    })
}

/// What the created (or adopted) device has enabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnabledFeatures {
    /// `bufferDeviceAddress` (Vulkan 1.2 feature) is enabled.
    pub buffer_device_address: bool,
    /// `VK_EXT_memory_budget` is enabled.
    pub memory_budget: bool,
    /// `VK_EXT_external_memory_host` is enabled.
    pub external_memory_host: bool,
    /// `VK_KHR_acceleration_structure` with its `accelerationStructure` feature is enabled.
    pub acceleration_structure: bool,
    /// `VK_KHR_ray_tracing_pipeline` with its `rayTracingPipeline` feature is enabled.
    pub ray_tracing_pipeline: bool,
    /// `VK_KHR_push_descriptor` is enabled: the scatter dispatch pushes its descriptors
    /// instead of allocating them from a pool.
    pub push_descriptor: bool,
}

/// The queue families gantry uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueueChoice {
    pub(crate) universal: u32,
    pub(crate) transfer: Option<u32>,
}

/// Picks the universal family (graphics + compute, else compute, else any transfer-capable)
/// and a dedicated transfer family (transfer without graphics or compute) when there is one.
pub(crate) fn choose_queues(families: &[vk::QueueFamilyProperties]) -> Option<QueueChoice> {
    let has =
        |f: &vk::QueueFamilyProperties, flags| f.queue_count > 0 && f.queue_flags.contains(flags);
    let universal = families
        .iter()
        .position(|f| has(f, vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE))
        .or_else(|| {
            families
                .iter()
                .position(|f| has(f, vk::QueueFlags::COMPUTE))
        })
        .or_else(|| {
            families
                .iter()
                .position(|f| has(f, vk::QueueFlags::TRANSFER))
        })?;
    let transfer = families.iter().position(|f| {
        has(f, vk::QueueFlags::TRANSFER)
            && !f
                .queue_flags
                .intersects(vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE)
    });
    Some(QueueChoice {
        universal: universal as u32,
        transfer: transfer.map(|t| t as u32),
    })
}

/// Whether queue family `family` can dispatch compute work (the scatter path needs it; a
/// transfer-only family cannot).
pub(crate) fn family_has_compute(families: &[vk::QueueFamilyProperties], family: u32) -> bool {
    families
        .get(family as usize)
        .is_some_and(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE))
}

/// Creates the logical device with one universal queue and, when `dedicated_transfer` is set
/// and the device has one, one dedicated transfer queue; timeline semaphores are required, the
/// rest is enabled when supported.
pub(crate) fn create_device(
    instance: &ash::Instance,
    pd: vk::PhysicalDevice,
    dedicated_transfer: bool,
) -> Result<(ash::Device, QueueChoice, EnabledFeatures)> {
    // SAFETY: `pd` belongs to `instance`.
    let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
    let mut queues = choose_queues(&families).ok_or_else(|| Error::Unsupported {
        what: "a queue family with transfer support".to_owned(),
    })?;
    if !dedicated_transfer {
        queues.transfer = None;
    }
    // SAFETY: as above.
    let exts = unsafe { instance.enumerate_device_extension_properties(pd) }
        .vk("vkEnumerateDeviceExtensionProperties")?;

    let mut v12 = vk::PhysicalDeviceVulkan12Features::default();
    let mut as_f = vk::PhysicalDeviceAccelerationStructureFeaturesKHR::default();
    let mut rt_f = vk::PhysicalDeviceRayTracingPipelineFeaturesKHR::default();
    let has_as_ext = has_extension(&exts, ash::khr::acceleration_structure::NAME)
        && has_extension(&exts, ash::khr::deferred_host_operations::NAME);
    let has_rt_ext = has_as_ext && has_extension(&exts, ash::khr::ray_tracing_pipeline::NAME);
    {
        let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut v12);
        if has_as_ext {
            f2 = f2.push_next(&mut as_f);
        }
        if has_rt_ext {
            f2 = f2.push_next(&mut rt_f);
        }
        // SAFETY: the chained structs belong to extensions the device offers (or to Vulkan 1.2,
        // which the adapter selection checked); `f2` lives across the call.
        unsafe { instance.get_physical_device_features2(pd, &mut f2) };
    }
    if v12.timeline_semaphore != vk::TRUE {
        return Err(Error::Unsupported {
            what: "timeline semaphores".to_owned(),
        });
    }
    let bda = v12.buffer_device_address == vk::TRUE;
    let enabled = EnabledFeatures {
        buffer_device_address: bda,
        memory_budget: has_extension(&exts, ash::ext::memory_budget::NAME),
        external_memory_host: has_extension(&exts, ash::ext::external_memory_host::NAME),
        // Acceleration structures need buffer device addresses and descriptor indexing.
        acceleration_structure: has_as_ext
            && bda
            && as_f.acceleration_structure == vk::TRUE
            && v12.descriptor_indexing == vk::TRUE,
        ray_tracing_pipeline: false,
        push_descriptor: has_extension(&exts, ash::khr::push_descriptor::NAME),
    };
    let enabled = EnabledFeatures {
        ray_tracing_pipeline: enabled.acceleration_structure
            && has_rt_ext
            && rt_f.ray_tracing_pipeline == vk::TRUE,
        ..enabled
    };

    let mut ext_names: Vec<*const c_char> = Vec::new();
    if enabled.memory_budget {
        ext_names.push(ash::ext::memory_budget::NAME.as_ptr());
    }
    if enabled.external_memory_host {
        ext_names.push(ash::ext::external_memory_host::NAME.as_ptr());
    }
    if enabled.acceleration_structure {
        ext_names.push(ash::khr::acceleration_structure::NAME.as_ptr());
        ext_names.push(ash::khr::deferred_host_operations::NAME.as_ptr());
    }
    if enabled.ray_tracing_pipeline {
        ext_names.push(ash::khr::ray_tracing_pipeline::NAME.as_ptr());
    }
    if enabled.push_descriptor {
        ext_names.push(ash::khr::push_descriptor::NAME.as_ptr());
    }

    let priorities = [1.0f32];
    let mut queue_infos = vec![
        vk::DeviceQueueCreateInfo::default()
            .queue_family_index(queues.universal)
            .queue_priorities(&priorities),
    ];
    if let Some(t) = queues.transfer {
        queue_infos.push(
            vk::DeviceQueueCreateInfo::default()
                .queue_family_index(t)
                .queue_priorities(&priorities),
        );
    }
    let mut v12_on = vk::PhysicalDeviceVulkan12Features::default()
        .timeline_semaphore(true)
        .buffer_device_address(bda)
        .descriptor_indexing(enabled.acceleration_structure);
    let mut as_on =
        vk::PhysicalDeviceAccelerationStructureFeaturesKHR::default().acceleration_structure(true);
    let mut rt_on =
        vk::PhysicalDeviceRayTracingPipelineFeaturesKHR::default().ray_tracing_pipeline(true);
    let mut info = vk::DeviceCreateInfo::default()
        .queue_create_infos(&queue_infos)
        .enabled_extension_names(&ext_names)
        .push_next(&mut v12_on);
    if enabled.acceleration_structure {
        info = info.push_next(&mut as_on);
    }
    if enabled.ray_tracing_pipeline {
        info = info.push_next(&mut rt_on);
    }
    // SAFETY: every extension and feature requested was reported supported above; the queue
    // families exist; `info` and everything it points to live across the call.
    let device = unsafe { instance.create_device(pd, &info, None) }.vk("vkCreateDevice")?;
    Ok((device, queues, enabled))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fam(flags: vk::QueueFlags) -> vk::QueueFamilyProperties {
        vk::QueueFamilyProperties {
            queue_flags: flags,
            queue_count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn queue_choice() {
        use vk::QueueFlags as Q;
        // H100-like: universal 0, transfer-only 1, compute-only 2.
        let h100 = [
            fam(Q::GRAPHICS | Q::COMPUTE | Q::TRANSFER),
            fam(Q::TRANSFER | Q::SPARSE_BINDING),
            fam(Q::COMPUTE | Q::TRANSFER),
        ];
        assert_eq!(
            choose_queues(&h100),
            Some(QueueChoice {
                universal: 0,
                transfer: Some(1)
            })
        );
        // lavapipe: one family for everything.
        let lvp = [fam(Q::GRAPHICS | Q::COMPUTE | Q::TRANSFER)];
        assert_eq!(
            choose_queues(&lvp),
            Some(QueueChoice {
                universal: 0,
                transfer: None
            })
        );
        assert_eq!(choose_queues(&[]), None);
        // Scatter needs compute on the submission family: the universal one has it, the
        // dedicated transfer family does not.
        assert!(family_has_compute(&h100, 0));
        assert!(!family_has_compute(&h100, 1));
        assert!(family_has_compute(&h100, 2));
        assert!(!family_has_compute(&h100, 7));
    }
}
