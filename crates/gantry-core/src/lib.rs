//! gantry's shared GPU types: descriptors, usage flags, limits, the backend trait, the one
//! error type and the argument validation every backend shares.
//!
//! Two layers, like wgpu-core over wgpu-hal:
//!
//! - [`Backend`]: the raw layer each backend crate implements (`gantry-wgpu`,
//!   `gantry-vulkan`). Associated types, static dispatch, `unsafe fn`s with documented
//!   preconditions, no argument validation; returns only [`DeviceError`]s (out of memory,
//!   device lost).
//! - [`Device`], [`Buffer`], [`Batch`]: the validating facade users call. It checks every
//!   argument once, before any backend call, so every backend gives the same [`Error`] for the
//!   same mistake, and it tracks map state and submissions so the CPU never writes memory the
//!   GPU still uses.
//!
//! ```no_run
//! # fn demo<B: gantry_core::Backend>(device: gantry_core::Device<B>) -> gantry_core::Result<()> {
//! use gantry_core::{BufferDesc, BufferUsage, MemoryLocation};
//! let buffer = device.create_buffer(
//!     &BufferDesc::new(1024, BufferUsage::STORAGE | BufferUsage::TRANSFER_SRC, MemoryLocation::DeviceLocal)
//!         .with_label("particles"),
//! )?;
//! device.write_pod(&buffer, 0, &[1.0f32, 2.0, 3.0, 4.0])?;
//! let back: Vec<f32> = device.read_pod(&buffer, 0, 4)?;
//! assert_eq!(back, [1.0, 2.0, 3.0, 4.0]);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod backend;
pub mod copier;
mod device;
mod error;
pub mod scatter;
mod types;

#[cfg(any(test, feature = "reference"))]
pub mod reference;

pub use backend::{Backend, SubmittedWorkDoneCallback};
pub use device::{Batch, Buffer, Device, ReadFuture};
pub use error::{DeviceError, Error, Result};
pub use types::{
    AdapterInfo, BufferDesc, BufferUsage, DeviceType, Limits, MapMode, MemoryLocation,
    RawBufferDesc, SubmissionIndex, align_down, align_up,
};

/// Runs a future to completion on the current thread, parking between wake-ups. Enough for
/// gantry's read futures, which make progress on their own.
pub fn block_on<F: core::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = core::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
