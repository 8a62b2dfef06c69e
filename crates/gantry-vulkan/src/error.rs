//! The backend's error type and the one place where driver result codes are mapped.
//!
//! Following wgpu-hal's `map_host_device_oom_and_lost_err`, the environment's failures (out of
//! memory, device lost) are separated from everything else: [`map_vk`] is the only function in
//! the crate that looks at a [`vk::Result`], and [`map_alloc`] the only one that looks at a
//! gpu-allocator error.

use ash::vk;

/// Errors of the Vulkan backend.
///
/// The backend does not validate its callers' arguments (see the crate docs); what it returns is
/// what cannot be foreseen: the environment failing, or the device lacking a capability.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Host or device memory is exhausted (`VK_ERROR_OUT_OF_HOST_MEMORY`,
    /// `VK_ERROR_OUT_OF_DEVICE_MEMORY`, or gpu-allocator's out-of-memory).
    #[error("out of memory")]
    OutOfMemory,
    /// The device was lost (`VK_ERROR_DEVICE_LOST`); every object of the backend is now useless.
    #[error("the Vulkan device was lost")]
    DeviceLost,
    /// The device, instance or driver lacks something this operation needs.
    #[error("unsupported by this Vulkan device: {what}")]
    Unsupported {
        /// What is missing.
        what: String,
    },
    /// The Vulkan loader could not be found or loaded.
    #[error("could not load the Vulkan loader: {reason}")]
    Loader {
        /// Why.
        reason: String,
    },
    /// No physical device matched the requested adapter.
    #[error("no Vulkan adapter matches {wanted}")]
    NoAdapter {
        /// The preference that found nothing.
        wanted: String,
    },
    /// A wait ran out of time before the submission completed.
    #[error("timed out waiting for the GPU")]
    Timeout,
    /// Any other driver result: a bug in gantry or in the driver, never the caller's input.
    #[error("{call} returned {result}")]
    Driver {
        /// The Vulkan entry point.
        call: &'static str,
        /// What it returned.
        result: vk::Result,
    },
    /// gpu-allocator failed for a reason other than memory exhaustion.
    #[error("gpu-allocator: {reason}")]
    Allocator {
        /// gpu-allocator's message.
        reason: String,
    },
}

/// The backend's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps a driver result code: out-of-memory codes to [`Error::OutOfMemory`], device loss to
/// [`Error::DeviceLost`], timeouts to [`Error::Timeout`], anything else to [`Error::Driver`].
pub fn map_vk(call: &'static str, result: vk::Result) -> Error {
    match result {
        vk::Result::ERROR_OUT_OF_HOST_MEMORY | vk::Result::ERROR_OUT_OF_DEVICE_MEMORY => {
            Error::OutOfMemory
        }
        vk::Result::ERROR_DEVICE_LOST => Error::DeviceLost,
        vk::Result::TIMEOUT => Error::Timeout,
        vk::Result::ERROR_EXTENSION_NOT_PRESENT
        | vk::Result::ERROR_FEATURE_NOT_PRESENT
        | vk::Result::ERROR_LAYER_NOT_PRESENT
        | vk::Result::ERROR_INCOMPATIBLE_DRIVER => Error::Unsupported {
            what: format!("{call}: {result}"),
        },
        result => Error::Driver { call, result },
    }
}

/// Maps a gpu-allocator error, in the same spirit as [`map_vk`].
pub fn map_alloc(error: gpu_allocator::AllocationError) -> Error {
    use gpu_allocator::AllocationError as A;
    match error {
        A::OutOfMemory => Error::OutOfMemory,
        A::NoCompatibleMemoryTypeFound => Error::Unsupported {
            what: "no memory type fits this buffer".to_owned(),
        },
        // gpu-allocator maps only VK_ERROR_OUT_OF_DEVICE_MEMORY to `OutOfMemory` and reports
        // every other vkAllocateMemory failure as `Internal` text naming the code (lavapipe,
        // whose device memory is host memory, fails with VK_ERROR_OUT_OF_HOST_MEMORY).
        A::Internal(text) if text.contains("ERROR_OUT_OF_HOST_MEMORY") => Error::OutOfMemory,
        A::Internal(text) if text.contains("ERROR_DEVICE_LOST") => Error::DeviceLost,
        other => Error::Allocator {
            reason: other.to_string(),
        },
    }
}

/// Extension for `VkResult<T>`: `.vk("vkCall")?` maps through [`map_vk`].
pub(crate) trait VkResultExt<T> {
    fn vk(self, call: &'static str) -> Result<T>;
}

impl<T> VkResultExt<T> for std::result::Result<T, vk::Result> {
    fn vk(self, call: &'static str) -> Result<T> {
        self.map_err(|r| map_vk(call, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_failures_are_separated() {
        assert_eq!(
            map_vk("x", vk::Result::ERROR_OUT_OF_HOST_MEMORY),
            Error::OutOfMemory
        );
        assert_eq!(
            map_vk("x", vk::Result::ERROR_OUT_OF_DEVICE_MEMORY),
            Error::OutOfMemory
        );
        assert_eq!(
            map_vk("x", vk::Result::ERROR_DEVICE_LOST),
            Error::DeviceLost
        );
        assert_eq!(
            map_vk("vkX", vk::Result::ERROR_UNKNOWN),
            Error::Driver {
                call: "vkX",
                result: vk::Result::ERROR_UNKNOWN
            }
        );
        assert_eq!(
            map_alloc(gpu_allocator::AllocationError::OutOfMemory),
            Error::OutOfMemory
        );
        // The text gpu-allocator 0.28 builds for other vkAllocateMemory failures.
        let host_oom = format!(
            "Unexpected error in vkAllocateMemory: {:?}",
            vk::Result::ERROR_OUT_OF_HOST_MEMORY
        );
        assert_eq!(
            map_alloc(gpu_allocator::AllocationError::Internal(host_oom)),
            Error::OutOfMemory
        );
    }
}
