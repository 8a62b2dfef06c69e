//! gantry's Vulkan backend, on ash and gpu-allocator.
//!
//! [`VulkanBackend`] owns (or, through [`VulkanBackend::from_raw`], adopts) a Vulkan device and
//! provides gantry's raw backend operations on it: buffers in device-local, upload and
//! readback memory ([`memory::Location`]); persistent mapping with flush/invalidate of
//! non-coherent memory; writes and readback; batched buffer-to-buffer copies, with many small
//! writes and copies of a batch scattered by one compute dispatch (or, on UMA devices such as
//! lavapipe, written on the host when the device is idle: [`VulkanOptions::direct_writes`]),
//! submitted to the universal queue (or, on request, a dedicated transfer queue) and tracked
//! by a timeline semaphore; polling, waiting and completion callbacks; memory budgets; import
//! of host memory.
//!
//! Like wgpu-hal, this layer does not validate its callers' arguments: the `unsafe` methods
//! document their preconditions (in-bounds ranges, buffers alive until their submissions
//! complete), which gantry-core's validating facade checks once for every backend. Errors are
//! only what cannot be foreseen: out of memory, device lost, missing capabilities.
//!
//! Through gantry-core's validating facade:
//!
//! ```no_run
//! use gantry_core::{BufferDesc, BufferUsage, Device, MemoryLocation};
//! use gantry_vulkan::{VulkanBackend, VulkanOptions};
//!
//! let backend = VulkanBackend::new(&VulkanOptions::validated())?;
//! let counter = backend.validation_counter();
//! let device = Device::new(backend);
//! let buffer = device.create_buffer(
//!     &BufferDesc::new(1024, BufferUsage::STORAGE | BufferUsage::TRANSFER_SRC, MemoryLocation::DeviceLocal)
//!         .with_label("particles"),
//! )?;
//! device.write(&buffer, 0, &[1, 2, 3, 4])?;
//! assert_eq!(device.read(&buffer, 0, 4)?, [1, 2, 3, 4]);
//! drop((buffer, device));
//! assert!(counter.report().is_clean());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `docs/architecture.md (section "gantry-vulkan")` for queues, memory choices, synchronization and the
//! `from_raw` contract.
#![deny(missing_docs)]

mod backend;
mod buffer;
mod context;
pub mod debug;
pub mod error;
pub mod hal;
mod host;
pub mod memory;
mod scatter;
mod submit;

pub use ash;
pub use backend::{
    HeapBudget, RawVulkan, VulkanBackend, VulkanDevice, VulkanLimits, VulkanOptions,
};
pub use buffer::VulkanBuffer;
pub use context::{AdapterPreference, EnabledFeatures, VulkanAdapterInfo};
pub use debug::{ValidationCounter, ValidationReport};
pub use error::{Error, Result};
pub use hal::{VulkanBatch, VulkanReadFuture};
pub use host::HostMemory;
pub use memory::Location;
pub use submit::{CopyRegion, SubmissionIndex};
