//! The backends compiled into the suite. Adding a backend is one `register` line in
//! [`entries`] (plus its optional dependency and feature in `tests/Cargo.toml`).

#[cfg_attr(
    not(any(feature = "wgpu", feature = "reference")),
    allow(unused_imports)
)]
use crate::{BackendHooks, Entry, entry};

/// Every backend compiled in, in table order.
#[must_use]
#[allow(
    clippy::vec_init_then_push,
    reason = "one push per backend feature, each behind its cfg"
)]
pub fn entries() -> Vec<Box<dyn Entry>> {
    #[allow(unused_mut, reason = "empty when no backend feature is on")]
    let mut out: Vec<Box<dyn Entry>> = Vec::new();
    #[cfg(feature = "wgpu")]
    out.push(entry(wgpu_backend::hooks()));
    #[cfg(feature = "reference")]
    out.push(entry(reference_hooks()));
    // The Vulkan backend's line, once `gantry-vulkan` implements `gantry_core::Backend`
    // (add `gantry-vulkan = { workspace = true, optional = true }` and
    // `vulkan = ["dep:gantry-vulkan"]` to tests/Cargo.toml; adjust the constructor names):
    // #[cfg(feature = "vulkan")]
    // out.push(entry(BackendHooks::<gantry_vulkan::VulkanBackend> {
    //     name: "vulkan",
    //     list: |validation| gantry_vulkan::list_adapters(validation),
    //     open: |index, validation| gantry_vulkan::VulkanBackend::new(index, validation),
    //     uncaptured: |_| Vec::new(),
    //     extra_cases: Vec::new,
    // }));
    // Its validation messages reach the suite as `log::error!` records whose target
    // contains "validation" (see `crate::validation`).
    out
}

/// gantry-core's reference backend: one adapter, a 1 GiB "heap".
#[cfg(feature = "reference")]
#[must_use]
pub fn reference_hooks() -> BackendHooks<gantry_core::reference::ReferenceBackend> {
    use gantry_core::Backend as _;
    use gantry_core::reference::ReferenceBackend;
    BackendHooks {
        name: "reference",
        list: |_| vec![ReferenceBackend::default().adapter_info()],
        open: |index, _| {
            if index == 0 {
                Ok(ReferenceBackend::default())
            } else {
                Err(gantry_core::Error::NoDevice {
                    reason: format!("the reference backend has one adapter, not #{index}"),
                })
            }
        },
        uncaptured: |_| Vec::new(),
        extra_cases: Vec::new,
    }
}

#[cfg(feature = "wgpu")]
mod wgpu_backend {
    use gantry_core::Device;
    use gantry_wgpu::{AdapterSelector, WgpuBackend, WgpuOptions};

    use super::BackendHooks;
    use crate::{Case, Outcome};

    fn options(index: usize, validation: bool) -> WgpuOptions {
        WgpuOptions {
            adapter: AdapterSelector::Index(index),
            validation,
            ..WgpuOptions::default()
        }
    }

    pub(super) fn hooks() -> BackendHooks<WgpuBackend> {
        BackendHooks {
            name: "wgpu",
            list: |validation| gantry_wgpu::list_adapters(&options(0, validation)),
            open: |index, validation| WgpuBackend::new(&options(index, validation)),
            uncaptured: WgpuBackend::take_uncaptured_errors,
            extra_cases: || {
                vec![Case {
                    name: "validation_layer_catches_violation",
                    expected_messages: &[],
                    slow: false,
                    run: validation_layer_catches_violation,
                }]
            },
        }
    }

    /// Proves the validation check is real: creates a zero-size `VkBuffer` through raw Vulkan
    /// (`VUID-VkBufferCreateInfo-size-00912`) and expects the captured messages to name it.
    fn validation_layer_catches_violation(device: &Device<WgpuBackend>) -> Outcome {
        let _ = crate::validation::take();
        // SAFETY: the hal device is only used for the duration of this block, while the wgpu
        // device is alive; the buffer created is destroyed before the block ends and never
        // used by wgpu.
        let created = unsafe {
            let Some(hal) = device
                .raw()
                .wgpu_device()
                .as_hal::<wgpu::hal::api::Vulkan>()
            else {
                return Outcome::Skip("not a Vulkan adapter: no Khronos layer to test".into());
            };
            let raw = hal.raw_device();
            let info = ash::vk::BufferCreateInfo::default()
                .size(0)
                .usage(ash::vk::BufferUsageFlags::TRANSFER_SRC)
                .sharing_mode(ash::vk::SharingMode::EXCLUSIVE);
            match raw.create_buffer(&info, None) {
                Ok(buffer) => {
                    raw.destroy_buffer(buffer, None);
                    true
                }
                Err(_) => false,
            }
        };
        let messages = crate::validation::take();
        if messages.iter().any(|m| m.contains("00912")) {
            Outcome::Pass(format!(
                "zero-size vkCreateBuffer reported by the layer (created: {created})"
            ))
        } else {
            Outcome::Fail(format!(
                "a deliberate violation was NOT reported: is VK_LAYER_KHRONOS_validation installed \
                 and enabled? captured: {messages:?}"
            ))
        }
    }
}
