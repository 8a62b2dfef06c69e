//! G13: a backend adopting an engine's instance, device and queue through `from_raw`, with
//! validation on, round-tripping data; the engine's objects outlive the backend and are
//! destroyed by the engine.

mod common;

use std::ffi::{CStr, c_void};
use std::sync::Mutex;

use ash::vk;
use gantry_vulkan::{EnabledFeatures, Location, RawVulkan, VulkanBackend};

/// The engine's own messages of warning level or above (its messenger outlives the backend,
/// so it sees the engine destroying its device after gantry is gone: any object gantry
/// forgot to destroy is reported there).
static ENGINE_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The engine's messenger callback.
///
/// # Safety
/// Called by the loader with valid callback data.
unsafe extern "system" fn engine_callback(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    _types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    _user: *mut c_void,
) -> vk::Bool32 {
    // SAFETY: the loader passes valid data or null.
    let text = match unsafe { data.as_ref() } {
        // SAFETY: a non-null message is NUL-terminated and valid during the call.
        Some(d) if !d.p_message.is_null() => unsafe { CStr::from_ptr(d.p_message) }
            .to_string_lossy()
            .into_owned(),
        _ => String::new(),
    };
    if severity.intersects(
        vk::DebugUtilsMessageSeverityFlagsEXT::WARNING
            | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
    ) {
        ENGINE_MESSAGES.lock().unwrap().push(text);
    }
    vk::FALSE
}

/// The "engine": what an application would have created before gantry.
struct Engine {
    entry: ash::Entry,
    instance: ash::Instance,
    pd: vk::PhysicalDevice,
    device: ash::Device,
    family: u32,
    queue: vk::Queue,
    bda: bool,
}

fn engine() -> Option<Engine> {
    // SAFETY: loading the system loader; the entry outlives everything created from it here.
    let entry = unsafe { ash::Entry::load() }.ok()?;
    let layers = [c"VK_LAYER_KHRONOS_validation".as_ptr()];
    let exts = [
        ash::ext::debug_utils::NAME.as_ptr(),
        ash::ext::validation_features::NAME.as_ptr(),
    ];
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_2);
    let enables = [vk::ValidationFeatureEnableEXT::SYNCHRONIZATION_VALIDATION];
    let mut features = vk::ValidationFeaturesEXT::default().enabled_validation_features(&enables);
    let info = vk::InstanceCreateInfo::default()
        .application_info(&app)
        .enabled_layer_names(&layers)
        .enabled_extension_names(&exts)
        .push_next(&mut features);
    // SAFETY: valid create info; the layer and its extensions are installed on this machine
    // (the test fails loudly otherwise).
    let instance = unsafe { entry.create_instance(&info, None) }.expect("instance with validation");
    // SAFETY: valid instance.
    let pds = unsafe { instance.enumerate_physical_devices() }.ok()?;
    let pd = *pds.first()?;
    // SAFETY: `pd` belongs to `instance`.
    let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
    let family = families
        .iter()
        .position(|f| f.queue_flags.contains(vk::QueueFlags::GRAPHICS))? as u32;
    let mut v12 = vk::PhysicalDeviceVulkan12Features::default();
    let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut v12);
    // SAFETY: Vulkan 1.2 instance; valid chain.
    unsafe { instance.get_physical_device_features2(pd, &mut f2) };
    let bda = v12.buffer_device_address == vk::TRUE;
    let prio = [1.0];
    let queues = [vk::DeviceQueueCreateInfo::default()
        .queue_family_index(family)
        .queue_priorities(&prio)];
    let mut on = vk::PhysicalDeviceVulkan12Features::default()
        .timeline_semaphore(true)
        .buffer_device_address(bda);
    let dinfo = vk::DeviceCreateInfo::default()
        .queue_create_infos(&queues)
        .push_next(&mut on);
    // SAFETY: supported features, existing family.
    let device = unsafe { instance.create_device(pd, &dinfo, None) }.ok()?;
    // SAFETY: one queue was created in `family`.
    let queue = unsafe { device.get_device_queue(family, 0) };
    Some(Engine {
        entry,
        instance,
        pd,
        device,
        family,
        queue,
        bda,
    })
}

#[test]
fn adopts_an_existing_device_and_round_trips() {
    common::init_tracing();
    let Some(e) = engine() else {
        eprintln!("SKIPPED adopts_an_existing_device_and_round_trips: no Vulkan device");
        return;
    };
    let e_du = ash::ext::debug_utils::Instance::new(&e.entry, &e.instance);
    let info = vk::DebugUtilsMessengerCreateInfoEXT::default()
        .message_severity(
            vk::DebugUtilsMessageSeverityFlagsEXT::WARNING
                | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
        )
        .message_type(
            vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
        )
        .pfn_user_callback(Some(engine_callback));
    // SAFETY: the instance has VK_EXT_debug_utils; the callback uses only a static.
    let e_messenger = unsafe { e_du.create_debug_utils_messenger(&info, None) }.unwrap();
    let raw = RawVulkan {
        entry: e.entry.clone(),
        instance: e.instance.clone(),
        physical_device: e.pd,
        device: e.device.clone(),
        queue_family_index: e.family,
        queue: e.queue,
        transfer_queue: None,
        enabled: EnabledFeatures {
            buffer_device_address: e.bda,
            ..EnabledFeatures::default()
        },
        debug_utils: true,
        install_messenger: true,
        debug_names: true,
    };
    // SAFETY: the engine's objects are valid, related, created with Vulkan 1.2 and timeline
    // semaphores, `enabled` matches what was enabled, and they outlive the backend (destroyed
    // below, after it). The queue is used by no one else meanwhile.
    let backend = unsafe { VulkanBackend::from_raw(raw) }.expect("from_raw");
    let counter = backend.validation_counter();
    assert!(!backend.has_dedicated_transfer_queue());
    let data = common::pattern(3000, 9);
    // SAFETY: non-zero sizes; everything is waited for before destruction.
    unsafe {
        let dl = backend
            .create_buffer(
                4096,
                vk::BufferUsageFlags::STORAGE_BUFFER,
                Location::DeviceLocal,
                "adopted",
            )
            .unwrap();
        let idx = backend.write_buffer(&dl, 100, &data).unwrap().unwrap();
        backend.wait(idx, u64::MAX).unwrap();
        let mut out = vec![0; data.len()];
        backend.read_buffer(&dl, 100, &mut out).unwrap();
        assert_eq!(out, data);
        backend.destroy_buffer(dl);
    }
    drop(backend);
    let report = counter.report();
    assert!(report.is_clean(), "{report:?}");
    // The engine's objects are still alive and usable: the backend did not destroy them.
    // SAFETY: the engine's device is valid and idle w.r.t. gantry's work (waited above); the
    // engine's messenger is destroyed after the device, before the instance.
    unsafe {
        e.device
            .device_wait_idle()
            .expect("engine's device still valid");
        e.device.destroy_device(None);
        e_du.destroy_debug_utils_messenger(e_messenger, None);
        e.instance.destroy_instance(None);
    }
    let engine = ENGINE_MESSAGES.lock().unwrap().clone();
    assert!(engine.is_empty(), "engine saw: {engine:#?}");
}

/// An adopted device without `VK_KHR_push_descriptor`: the scatter dispatch takes its
/// descriptors from pools (reset when the submission completes), validated.
#[test]
fn adopted_device_without_push_descriptors_scatters_from_pools() {
    use gantry_core::{BufferDesc, BufferUsage, Device, MemoryLocation};
    common::init_tracing();
    let Some(e) = engine() else {
        eprintln!(
            "SKIPPED adopted_device_without_push_descriptors_scatters_from_pools: no Vulkan device"
        );
        return;
    };
    let raw = RawVulkan {
        entry: e.entry.clone(),
        instance: e.instance.clone(),
        physical_device: e.pd,
        device: e.device.clone(),
        queue_family_index: e.family,
        queue: e.queue,
        transfer_queue: None,
        enabled: EnabledFeatures {
            buffer_device_address: e.bda,
            push_descriptor: false,
            ..EnabledFeatures::default()
        },
        debug_utils: true,
        install_messenger: true,
        debug_names: true,
    };
    // SAFETY: as in `adopts_an_existing_device_and_round_trips`.
    let backend = unsafe { VulkanBackend::from_raw(raw) }.expect("from_raw");
    let counter = backend.validation_counter();
    backend.set_scatter(true); // on CPU devices (lavapipe) it defaults to wide groups only
    backend.set_direct_writes(false); // on UMA devices (lavapipe) it defaults to on
    assert!(backend.scatter_supported());
    let d = Device::new(backend.clone());
    let size = 1u64 << 20;
    let buf = d
        .create_buffer(&BufferDesc::new(
            size,
            BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST,
            MemoryLocation::DeviceLocal,
        ))
        .unwrap();
    let mut model = vec![0u8; size as usize];
    // Three batches, so the pool is reset and reused.
    for round in 0..3u8 {
        let mut batch = d.batch().unwrap();
        for i in 0..1000usize {
            let data = common::pattern(128, round.wrapping_add(i as u8));
            let at = (i * 1024 + usize::from(round) * 256) as u64;
            batch.write(&buf, at, &data).unwrap();
            model[at as usize..at as usize + 128].copy_from_slice(&data);
        }
        batch.submit().unwrap();
    }
    assert_eq!(backend.scatter_dispatches(), 3);
    assert!(d.read(&buf, 0, size).unwrap() == model);
    drop(buf);
    d.wait_idle().unwrap();
    drop(d);
    drop(backend);
    let report = counter.report();
    assert!(report.is_clean(), "{report:?}");
    // SAFETY: gantry is gone and waited for its work; the engine destroys its objects.
    unsafe {
        e.device
            .device_wait_idle()
            .expect("engine's device still valid");
        e.device.destroy_device(None);
        e.instance.destroy_instance(None);
    }
}
