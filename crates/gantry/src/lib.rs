//! GPU buffer management over wgpu or Vulkan.
//!
//! Choose the backend with a feature flag: `wgpu`, `vulkan`, or both. The host-side
//! buffer crate, the statistics crate and the shared GPU types are always available.
#![deny(missing_docs)]

pub use gantry_core as core;
pub use gantry_host as host;
pub use gantry_stats as stats;

/// The wgpu backend (feature `wgpu`).
#[cfg(feature = "wgpu")]
pub use gantry_wgpu as wgpu;

/// The Vulkan backend (feature `vulkan`).
#[cfg(feature = "vulkan")]
pub use gantry_vulkan as vulkan;
