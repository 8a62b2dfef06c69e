//! The high-level GPU buffer (M4).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use gantry_core::{Backend, Buffer, BufferUsage, MemoryLocation, SubmissionIndex};

use crate::error::Result;
use crate::transfer::{Inner, PendingState, ReadbackHandle, TransferHandle};

pub(crate) struct GpuShared<B: Backend> {
    pub(crate) buffer: Buffer<B>,
    pub(crate) pending: Arc<PendingState>,
}

/// Where a [`GpuBuffer`]'s uploads stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadState {
    /// Nothing queued or in flight.
    Idle,
    /// This many uploads are queued, waiting for a flush.
    Queued(u64),
    /// The latest upload was submitted in this submission, not yet complete.
    InFlight(SubmissionIndex),
}

/// A buffer created by a [`crate::BufferManager`]. Writes go straight to memory when the
/// buffer is host-visible ([`MemoryLocation::Upload`]) and through the staging pool when it
/// is device-local; queued uploads are visible through [`GpuBuffer::upload_state`]. Cheap to
/// clone; dropping the last clone frees the buffer once the GPU is done with it.
pub struct GpuBuffer<B: Backend> {
    pub(crate) shared: Arc<GpuShared<B>>,
    pub(crate) inner: Arc<Inner<B>>,
}

impl<B: Backend> Clone for GpuBuffer<B> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: Backend> core::fmt::Debug for GpuBuffer<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GpuBuffer")
            .field("buffer", &self.shared.buffer)
            .field("pending_uploads", &self.pending_uploads())
            .finish()
    }
}

impl<B: Backend> GpuBuffer<B> {
    /// The device buffer, to bind or to pass to gantry-core.
    #[must_use]
    pub fn buffer(&self) -> &Buffer<B> {
        &self.shared.buffer
    }
    /// Its id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.shared.buffer.id()
    }
    /// Its label.
    #[must_use]
    pub fn label(&self) -> &str {
        self.shared.buffer.label()
    }
    /// Its size in bytes (rounded up to the device's alignments).
    #[must_use]
    pub fn size(&self) -> u64 {
        self.shared.buffer.size()
    }
    /// Its usage (with automatic flags).
    #[must_use]
    pub fn usage(&self) -> BufferUsage {
        self.shared.buffer.usage()
    }
    /// Its memory location.
    #[must_use]
    pub fn location(&self) -> MemoryLocation {
        self.shared.buffer.location()
    }
    /// Uploads queued and not yet submitted.
    #[must_use]
    pub fn pending_uploads(&self) -> u64 {
        self.shared.pending.queued.load(Ordering::Acquire)
    }
    /// Where its uploads stand (polls the device).
    ///
    /// # Errors
    /// Device loss.
    pub fn upload_state(&self) -> Result<UploadState> {
        let queued = self.pending_uploads();
        if queued > 0 {
            return Ok(UploadState::Queued(queued));
        }
        let last = SubmissionIndex(self.shared.pending.last_submission.load(Ordering::Acquire));
        if last > self.inner.device.poll()? {
            Ok(UploadState::InFlight(last))
        } else {
            Ok(UploadState::Idle)
        }
    }

    /// Writes `data` at `offset`. A host-visible buffer is written now (after flushing
    /// uploads still queued for it, and after GPU work using it completes); a device-local
    /// buffer gets a staged upload, queued until the next flush. `offset` and `data.len()`
    /// must be multiples of the copy alignment.
    ///
    /// # Errors
    /// The argument errors of [`gantry_core::Device::write`]; staging errors.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<TransferHandle<B>> {
        if self.location() == MemoryLocation::Upload {
            if self.pending_uploads() > 0 {
                self.inner.flush()?;
            }
            self.inner.device.write(&self.shared.buffer, offset, data)?;
            return Ok(self.inner.done_handle());
        }
        self.inner.upload(
            &self.shared.buffer,
            offset,
            data,
            Some(Arc::clone(&self.shared.pending)),
        )
    }

    /// Writes a slice of `T`; see [`GpuBuffer::write`].
    ///
    /// # Errors
    /// As [`GpuBuffer::write`].
    pub fn write_pod<T: bytemuck::Pod>(
        &self,
        offset: u64,
        data: &[T],
    ) -> Result<TransferHandle<B>> {
        self.write(offset, bytemuck::cast_slice(data))
    }

    /// Queues a readback of `size` bytes at `offset` (any alignment); ordered after every
    /// operation queued before it.
    ///
    /// # Errors
    /// [`gantry_core::Error::MissingUsage`] (`TRANSFER_SRC`), [`gantry_core::Error::OutOfBounds`],
    /// [`gantry_core::Error::Destroyed`].
    pub fn read(&self, offset: u64, size: u64) -> Result<ReadbackHandle<B>> {
        self.inner.read(&self.shared.buffer, offset, size)
    }
}
