//! gantry's Vulkan backend, on ash and gpu-allocator.
#![deny(missing_docs)]
