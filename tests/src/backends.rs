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
    #[cfg(feature = "wgpu")]
    out.push(entry(wgpu_backend::direct_hooks()));
    #[cfg(feature = "reference")]
    out.push(entry(reference_hooks()));
    #[cfg(feature = "vulkan")]
    out.push(entry(vulkan_backend::hooks()));
    #[cfg(feature = "vulkan")]
    out.push(entry(vulkan_backend::direct_hooks()));
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

    /// Direct writes off (on by default on CPU devices such as lavapipe), so that the
    /// `wgpu` column covers the device paths; the `wgpu-direct` column turns them on.
    fn options(index: usize, validation: bool) -> WgpuOptions {
        WgpuOptions {
            adapter: AdapterSelector::Index(index),
            validation,
            direct_writes: Some(false),
            ..WgpuOptions::default()
        }
    }

    /// The same backend with direct writes on (`WgpuOptions::direct_writes`): where the
    /// adapter can map device-local buffers (lavapipe), idle batches of small writes are
    /// carried out on the host.
    pub(super) fn direct_hooks() -> BackendHooks<WgpuBackend> {
        BackendHooks {
            name: "wgpu-direct",
            open: |index, validation| {
                WgpuBackend::new(&WgpuOptions {
                    direct_writes: Some(true),
                    ..options(index, validation)
                })
            },
            extra_cases: Vec::new,
            ..hooks()
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

#[cfg(feature = "vulkan")]
mod vulkan_backend {
    use gantry_core::Device;
    use gantry_vulkan::VulkanBackend;
    use gantry_vulkan::ash::vk;

    use super::BackendHooks;
    use crate::{Case, Outcome};

    /// The same backend with direct writes on (`gantry_vulkan::hal::open_direct`): on a
    /// UMA device (lavapipe) idle batches write device-local memory on the host.
    pub(super) fn direct_hooks() -> BackendHooks<VulkanBackend> {
        BackendHooks {
            name: "vulkan-direct",
            open: gantry_vulkan::hal::open_direct,
            extra_cases: Vec::new,
            ..hooks()
        }
    }

    /// gantry-vulkan's own messenger counts every warning or error of the Khronos layer
    /// (synchronization validation on); the suite reads them after every case.
    pub(super) fn hooks() -> BackendHooks<VulkanBackend> {
        BackendHooks {
            name: "vulkan",
            list: gantry_vulkan::hal::list_adapters,
            open: gantry_vulkan::hal::open,
            uncaptured: |backend| backend.take_validation_messages(),
            extra_cases: || {
                vec![
                    Case {
                        name: "validation_layer_catches_violation",
                        expected_messages: &[],
                        slow: false,
                        run: validation_layer_catches_violation,
                    },
                    Case {
                        name: "sync_validation_catches_hazard",
                        expected_messages: &[],
                        slow: false,
                        run: sync_validation_catches_hazard,
                    },
                ]
            },
        }
    }

    /// Proves synchronization validation is on: two unsynchronized copies writing the same
    /// bytes in one command buffer (recorded on the backend's raw device) must be reported
    /// as `SYNC-HAZARD-WRITE-AFTER-WRITE`.
    fn sync_validation_catches_hazard(device: &Device<VulkanBackend>) -> Outcome {
        let b = device.raw();
        let d = b.raw_device();
        let _ = b.take_validation_messages();
        let (family, queue) = b.universal_queue();
        let usage = vk::BufferUsageFlags::empty();
        let loc = gantry_vulkan::Location::DeviceLocal;
        // SAFETY: non-zero sizes. The pool, command buffer and fence are the case's own and
        // destroyed before it returns; the universal queue is used by no one else meanwhile
        // (gantry submits to it only when it has no dedicated transfer queue, and the runner
        // is idle between cases); the hazard is deliberate and harmless (same bytes, same
        // values); the buffers are destroyed after the fence wait.
        let result = unsafe {
            let src = b.create_buffer(256, usage, loc, "hazard src");
            let dst = b.create_buffer(256, usage, loc, "hazard dst");
            let (Ok(src), Ok(dst)) = (src, dst) else {
                return Outcome::Fail("could not create the buffers".into());
            };
            // Their first-use clears are still pending (no gantry submission follows) and are
            // dropped when they are destroyed.
            let pool = d.create_command_pool(
                &vk::CommandPoolCreateInfo::default().queue_family_index(family),
                None,
            );
            let run = pool.and_then(|pool| {
                let cmd = d.allocate_command_buffers(
                    &vk::CommandBufferAllocateInfo::default()
                        .command_pool(pool)
                        .command_buffer_count(1),
                )?[0];
                d.begin_command_buffer(cmd, &vk::CommandBufferBeginInfo::default())?;
                let region = [vk::BufferCopy {
                    src_offset: 0,
                    dst_offset: 0,
                    size: 256,
                }];
                d.cmd_copy_buffer(cmd, src.raw(), dst.raw(), &region);
                d.cmd_copy_buffer(cmd, src.raw(), dst.raw(), &region);
                d.end_command_buffer(cmd)?;
                let fence = d.create_fence(&vk::FenceCreateInfo::default(), None)?;
                let cmds = [cmd];
                d.queue_submit(
                    queue,
                    &[vk::SubmitInfo::default().command_buffers(&cmds)],
                    fence,
                )?;
                d.wait_for_fences(&[fence], true, u64::MAX)?;
                d.destroy_fence(fence, None);
                d.destroy_command_pool(pool, None);
                Ok(())
            });
            b.destroy_buffer(src);
            b.destroy_buffer(dst);
            run
        };
        if let Err(e) = result {
            return Outcome::Fail(format!("raw Vulkan call failed: {e}"));
        }
        let messages = b.take_validation_messages();
        if messages
            .iter()
            .any(|m| m.contains("SYNC-HAZARD-WRITE-AFTER-WRITE"))
        {
            Outcome::Pass("write-after-write between two copies reported".into())
        } else {
            Outcome::Fail(format!(
                "a deliberate hazard was NOT reported: synchronization validation off? \
                 captured: {messages:?}"
            ))
        }
    }

    /// Proves the validation check is real: a zero-size `VkBuffer` through the backend's raw
    /// device (`VUID-VkBufferCreateInfo-size-00912`) must be reported by the layer.
    fn validation_layer_catches_violation(device: &Device<VulkanBackend>) -> Outcome {
        let backend = device.raw();
        let _ = backend.take_validation_messages();
        let info = vk::BufferCreateInfo::default()
            .size(0)
            .usage(vk::BufferUsageFlags::TRANSFER_SRC)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: deliberately invalid (size 0) to provoke the layer; the buffer, if the
        // driver creates one, is destroyed at once and never used.
        let created = unsafe {
            match backend.raw_device().create_buffer(&info, None) {
                Ok(buffer) => {
                    backend.raw_device().destroy_buffer(buffer, None);
                    true
                }
                Err(_) => false,
            }
        };
        let messages = backend.take_validation_messages();
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
