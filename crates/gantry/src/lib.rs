//! GPU buffer management over wgpu or Vulkan, generic over [`gantry_core::Backend`].
//!
//! Choose the backend with a feature flag: `wgpu`, `vulkan`, or both. The host-side
//! buffer crate, the statistics crate and the shared GPU types are always available.
//!
//! The entry point is [`BufferManager`]: it owns a [`staging`] pool, a transfer
//! orchestrator (uploads, copies and readbacks queued from any thread, batched and coalesced
//! into few submissions), a [`Registry`] of every buffer it created, a size-class
//! [`BufferPool`] and the statistics. See `docs/guide.md` for the three common jobs.
//!
//! ```
//! use gantry::{BufferManager, ManagerConfig};
//! use gantry::core::{reference::ReferenceBackend, BufferUsage, Device};
//!
//! # fn main() -> gantry::Result<()> {
//! let device = Device::new(ReferenceBackend::new(64 << 20));
//! let manager = BufferManager::new(device, ManagerConfig::default())?;
//! let mesh = manager.create_vertex_buffer("mesh", &[0.0f32, 1.0, 2.0, 3.0])?;
//! manager.flush()?;
//! let back = manager.read(mesh.buffer(), 0, 16)?.wait()?;
//! assert_eq!(bytemuck::cast_slice::<u8, f32>(&back), &[0.0, 1.0, 2.0, 3.0]);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod buffer;
mod error;
mod manager;
mod pool;
mod registry;
pub mod staging;
mod streaming;
mod transfer;

#[cfg(test)]
mod tests;

pub use buffer::{GpuBuffer, UploadState};
pub use error::{Error, Result};
pub use manager::{BufferManager, HostStatsProvider, ManagerConfig};
pub use pool::{BufferPool, PooledBuffer};
pub use registry::{BufferInfo, BufferLifecycle, Registry};
pub use staging::{StagingConfig, StagingEvent};
pub use streaming::{StreamAllocation, StreamingRing};
pub use transfer::{ReadbackHandle, TransferHandle};

pub use gantry_core as core;
pub use gantry_host as host;
pub use gantry_stats as stats;

/// The wgpu backend (feature `wgpu`).
#[cfg(feature = "wgpu")]
pub use gantry_wgpu as wgpu;

/// The Vulkan backend (feature `vulkan`).
#[cfg(feature = "vulkan")]
pub use gantry_vulkan as vulkan;

/// `docs/guide.md`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/guide.md")]
pub struct Guide;
