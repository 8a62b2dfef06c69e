//! The raw backend layer, shaped like wgpu-hal's `Api`: associated types, static dispatch,
//! documented preconditions and no argument validation.
//!
//! Every `unsafe fn` here lists its preconditions under `# Safety`. The facade
//! ([`crate::Device`]) establishes all of them before it calls in, so a backend only returns
//! what cannot be foreseen: [`DeviceError::OutOfMemory`], [`DeviceError::Lost`] and, for bugs,
//! [`DeviceError::Internal`].
//!
//! Common preconditions, referred to below as "a valid buffer" / "an aligned range":
//! - *valid buffer*: created by this backend object and not yet destroyed;
//! - *aligned range*: `offset` and `size` multiples of [`Limits::copy_alignment`], `size`
//!   non-zero, `offset + size <= ` the buffer's size (no overflow);
//! - *not mapped*: no mapping is active (after `create_buffer` with `mapped_at_creation`, or
//!   after `map`, until `unmap`).

use core::future::Future;
use core::time::Duration;

use crate::error::DeviceError;
use crate::types::{AdapterInfo, Limits, MapMode, RawBufferDesc, SubmissionIndex};

/// A completion callback, run once its submission has completed.
pub type SubmittedWorkDoneCallback = Box<dyn FnOnce() + Send + 'static>;

/// One backend device (an adapter opened with a queue). Implemented by `gantry-wgpu` and
/// `gantry-vulkan`; used through [`crate::Device`].
///
/// Submission model: [`Backend::submit`] and any submission a backend makes internally (for
/// [`Backend::read`] of device-local memory, say) get the next [`SubmissionIndex`]; indices
/// increase by one and complete in order. [`Backend::poll`] returns the latest completed one.
pub trait Backend: Send + Sync + Sized + 'static {
    /// A buffer with its memory.
    type Buffer: core::fmt::Debug + Send + Sync + 'static;
    /// A batch of transfer commands being recorded; executed in recording order by
    /// [`Backend::submit`].
    type Batch: Send + 'static;
    /// The future [`Backend::read_async`] returns. It must make progress on its own (the
    /// backend drives the device as needed): an executor that only polls it when woken must
    /// see it complete.
    type ReadFuture: Future<Output = Result<Vec<u8>, DeviceError>> + Send + 'static;

    /// Short name for tables: "wgpu", "vulkan".
    const NAME: &'static str;

    /// Which adapter this device runs on.
    fn adapter_info(&self) -> AdapterInfo;

    /// The device's limits, fixed for the device's lifetime.
    fn limits(&self) -> Limits;

    /// Creates a buffer.
    ///
    /// # Safety
    /// `desc` satisfies [`RawBufferDesc`]'s documented invariants (non-zero aligned size at
    /// most `max_buffer_size`, supported usage, `mapped_at_creation` only for upload memory).
    ///
    /// # Errors
    /// [`DeviceError::OutOfMemory`] when the memory cannot be allocated.
    unsafe fn create_buffer(&self, desc: &RawBufferDesc<'_>) -> Result<Self::Buffer, DeviceError>;

    /// Destroys a buffer and frees its memory.
    ///
    /// # Safety
    /// `buffer` is valid, not mapped, and no submission that uses it is still pending.
    unsafe fn destroy_buffer(&self, buffer: Self::Buffer);

    /// Maps the whole of a host-visible buffer.
    ///
    /// # Safety
    /// `buffer` is valid, not mapped, its location allows `mode`
    /// ([`crate::MemoryLocation::map_mode`]), and no pending submission uses it.
    ///
    /// # Errors
    /// Device loss or out of memory.
    unsafe fn map(&self, buffer: &Self::Buffer, mode: MapMode) -> Result<(), DeviceError>;

    /// Ends the mapping; bytes written through [`Backend::write_mapped`] become visible to the
    /// GPU (flushing non-coherent memory).
    ///
    /// # Safety
    /// `buffer` is valid and mapped.
    unsafe fn unmap(&self, buffer: &Self::Buffer);

    /// Copies `data` into a buffer mapped for writing, at `offset`.
    ///
    /// # Safety
    /// `buffer` is valid and mapped with [`MapMode::Write`]; `offset + data.len()` is within
    /// the buffer (any alignment).
    ///
    /// # Errors
    /// Only what the library below may report unexpectedly ([`DeviceError::Internal`]).
    unsafe fn write_mapped(
        &self,
        buffer: &Self::Buffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError>;

    /// Copies each `(offset, bytes)` into a buffer mapped for writing, in order, as that
    /// many [`Backend::write_mapped`] calls would. Backends override it to set up access to
    /// the mapping once. `summary` is the writes' [`crate::copier::summarize`], made once by
    /// the facade's bounds check (the range to map, the total, whether they are ascending).
    ///
    /// # Safety
    /// As for [`Backend::write_mapped`], for every entry; `summary` is
    /// `crate::copier::summarize(writes)`.
    ///
    /// # Errors
    /// As [`Backend::write_mapped`].
    unsafe fn write_mapped_many(
        &self,
        buffer: &Self::Buffer,
        writes: &[(u64, &[u8])],
        summary: &crate::copier::WritesSummary,
    ) -> Result<(), DeviceError> {
        let _ = summary;
        for &(offset, data) in writes {
            // SAFETY: forwarded (the caller's contract covers every entry).
            unsafe { self.write_mapped(buffer, offset, data) }?;
        }
        Ok(())
    }

    /// Copies `writes[k].1` into a buffer mapped for writing at `at[k].src_offset`, for
    /// every `k`: writes staged where a [`crate::scatter::CopyList`] says, for a later
    /// [`Backend::batch_copy_list`] from this buffer. Backends override it to copy on their
    /// copy threads.
    ///
    /// # Safety
    /// As for [`Backend::write_mapped`], for every `(at[k].src_offset, writes[k].1)`;
    /// `writes` and `at` have the same length, `at[k].len == writes[k].1.len()`, and the
    /// ranges ascend without overlapping.
    ///
    /// # Errors
    /// As [`Backend::write_mapped`].
    unsafe fn write_mapped_list(
        &self,
        buffer: &Self::Buffer,
        writes: &[(u64, &[u8])],
        at: &[crate::scatter::ScatterWrite],
    ) -> Result<(), DeviceError> {
        for (&(_, data), w) in writes.iter().zip(at) {
            // SAFETY: forwarded (the caller's contract covers every entry).
            unsafe { self.write_mapped(buffer, w.src_offset, data) }?;
        }
        Ok(())
    }

    /// Copies bytes out of a buffer mapped for reading, from `offset`.
    ///
    /// # Safety
    /// `buffer` is valid and mapped with [`MapMode::Read`]; `offset + out.len()` is within the
    /// buffer (any alignment).
    ///
    /// # Errors
    /// Only what the library below may report unexpectedly ([`DeviceError::Internal`]).
    unsafe fn read_mapped(
        &self,
        buffer: &Self::Buffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), DeviceError>;

    /// Writes `data` into an upload buffer from the host, without a submission; blocks until
    /// done.
    ///
    /// # Safety
    /// `buffer` is a valid, not mapped [`crate::MemoryLocation::Upload`] buffer; `offset` and
    /// `data.len()` form an aligned range; no pending submission uses the buffer.
    ///
    /// # Errors
    /// Device loss.
    unsafe fn write_host(
        &self,
        buffer: &Self::Buffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError>;

    /// Writes `data` to `dst` at `offset` and submits: what [`Backend::begin_batch`],
    /// [`Backend::batch_write`] and [`Backend::submit`] do together, which is the default.
    /// A backend may do better for one large write: submit it in several parts so that the
    /// device copies one part while the host stages the next, or have the device read
    /// `data` in place when it lies in host memory the device imported. Returns the index of
    /// the last submission made; every part is complete when that one is.
    ///
    /// `data` is only borrowed for the call: when this returns, the backend no longer reads
    /// it, or holds a guarantee that nothing can write it until the device has read it.
    ///
    /// # Safety
    /// As [`Backend::batch_write`]: `dst` is valid, has `TRANSFER_DST` and stays valid and not
    /// mapped until the returned submission has completed; `offset`/`data.len()` form an
    /// aligned range.
    ///
    /// # Errors
    /// Out of memory for staging, device loss.
    unsafe fn write_now(
        &self,
        dst: &Self::Buffer,
        offset: u64,
        data: &[u8],
    ) -> Result<SubmissionIndex, DeviceError> {
        let mut batch = self.begin_batch()?;
        // SAFETY: forwarded from this function's contract.
        unsafe {
            self.batch_write(&mut batch, dst, offset, data)?;
            self.submit(batch)
        }
    }

    /// Starts recording a batch of transfer commands.
    ///
    /// # Errors
    /// Device loss or out of memory.
    fn begin_batch(&self) -> Result<Self::Batch, DeviceError>;

    /// Records a write of `data` to `dst` at `offset` (through staging the backend owns).
    /// Executes in recording order with the batch's other commands.
    ///
    /// # Safety
    /// `batch` came from this backend's [`Backend::begin_batch`]; `dst` is valid, has
    /// `TRANSFER_DST` and stays valid and not mapped until the batch is submitted and that
    /// submission has completed; `offset`/`data.len()` form an aligned range.
    ///
    /// # Errors
    /// Out of memory for staging, device loss.
    unsafe fn batch_write(
        &self,
        batch: &mut Self::Batch,
        dst: &Self::Buffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError>;

    /// Records writes to `dst`, `(offset, bytes)` each (none empty), in order, as that many
    /// [`Backend::batch_write`] calls would. Returns how many were recorded, and the error
    /// that stopped the rest (staging exhausted). Backends override it to stage the bytes
    /// together (in parallel, when there are many).
    ///
    /// # Safety
    /// As for [`Backend::batch_write`], for every entry.
    unsafe fn batch_write_many(
        &self,
        batch: &mut Self::Batch,
        dst: &Self::Buffer,
        writes: &[(u64, &[u8])],
    ) -> (usize, Result<(), DeviceError>) {
        for (i, &(offset, data)) in writes.iter().enumerate() {
            // SAFETY: forwarded (the caller's contract covers every entry).
            if let Err(e) = unsafe { self.batch_write(batch, dst, offset, data) } {
                return (i, Err(e));
            }
        }
        (writes.len(), Ok(()))
    }

    /// Records a buffer-to-buffer copy.
    ///
    /// # Safety
    /// As for [`Backend::batch_write`] for `src` (with `TRANSFER_SRC`) and `dst` (with
    /// `TRANSFER_DST`); both ranges aligned; if `src` and `dst` are the same buffer, the
    /// ranges do not overlap.
    unsafe fn batch_copy(
        &self,
        batch: &mut Self::Batch,
        src: &Self::Buffer,
        src_offset: u64,
        dst: &Self::Buffer,
        dst_offset: u64,
        size: u64,
    );

    /// Records copies from `src` to `dst`, `(src_offset, dst_offset, size)` each, in order, as
    /// that many [`Backend::batch_copy`] calls would. Backends override it to do their
    /// per-buffer work once.
    ///
    /// # Safety
    /// As for [`Backend::batch_copy`], for every entry.
    unsafe fn batch_copy_many(
        &self,
        batch: &mut Self::Batch,
        src: &Self::Buffer,
        dst: &Self::Buffer,
        copies: &[(u64, u64, u64)],
    ) {
        for &(src_offset, dst_offset, size) in copies {
            // SAFETY: forwarded (the caller's contract covers every entry).
            unsafe { self.batch_copy(batch, src, src_offset, dst, dst_offset, size) };
        }
    }

    /// Records the copies of `list` from `src` to `dst`, as [`Backend::batch_copy_many`]
    /// would record `list`'s entries. The default records [`CopyList::regions`]
    /// (contiguous neighbours merged); backends override it to scatter the list as it is.
    ///
    /// # Safety
    /// As for [`Backend::batch_copy`], for every entry.
    ///
    /// [`CopyList::regions`]: crate::scatter::CopyList::regions
    unsafe fn batch_copy_list(
        &self,
        batch: &mut Self::Batch,
        src: &Self::Buffer,
        dst: &Self::Buffer,
        list: &crate::scatter::CopyList,
    ) {
        for (src_offset, dst_offset, size) in list.regions() {
            // SAFETY: forwarded (the caller's contract covers every entry, so every merged
            // range).
            unsafe { self.batch_copy(batch, src, src_offset, dst, dst_offset, size) };
        }
    }

    /// Submits a batch as one submission and returns its index.
    ///
    /// # Safety
    /// Every buffer the batch uses is valid and not mapped.
    ///
    /// # Errors
    /// Device loss or out of memory. The batch is consumed either way.
    unsafe fn submit(&self, batch: Self::Batch) -> Result<SubmissionIndex, DeviceError>;

    /// Reads `out.len()` bytes from `offset` into `out`, blocking until they are there.
    /// Device-local and upload buffers are copied through staging (a submission); readback
    /// buffers are mapped.
    ///
    /// # Safety
    /// `buffer` is valid and not mapped; `offset`/`out.len()` form an aligned range; a
    /// device-local or upload buffer has `TRANSFER_SRC`. A readback buffer may still be
    /// written by pending submissions: the backend waits for them (the result reflects every
    /// submission made before the call).
    ///
    /// # Errors
    /// Out of memory for staging, device loss.
    unsafe fn read(
        &self,
        buffer: &Self::Buffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), DeviceError>;

    /// Starts the same read as [`Backend::read`] and returns a future of the bytes. Any
    /// submission is made before this returns, so the buffer may be written again by later
    /// submissions. A readback buffer stays busy (as if mapped) until the future completes.
    ///
    /// # Safety
    /// As for [`Backend::read`], with `size` for `out.len()`; for a readback buffer, nothing
    /// maps it or submits work using it until the future has completed.
    ///
    /// # Errors
    /// Out of memory for staging, device loss.
    unsafe fn read_async(
        &self,
        buffer: &Self::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Self::ReadFuture, DeviceError>;

    /// The latest submission index handed out (by `submit` or internally).
    fn last_submitted(&self) -> SubmissionIndex;

    /// Does non-blocking maintenance (runs due callbacks) and returns the latest completed
    /// submission.
    ///
    /// # Errors
    /// Device loss.
    fn poll(&self) -> Result<SubmissionIndex, DeviceError>;

    /// Blocks until `index` has completed or `timeout` passes; `Ok(true)` when it completed.
    /// An index not yet submitted is waited for as the latest submitted one.
    ///
    /// # Errors
    /// Device loss.
    fn wait(&self, index: SubmissionIndex, timeout: Option<Duration>) -> Result<bool, DeviceError>;

    /// Runs `callback` once `index` has completed: at once if it already has, otherwise from a
    /// later [`Backend::poll`] or [`Backend::wait`] (on the thread calling it; never from
    /// `submit`, `read` or other calls the facade makes while holding buffer locks).
    fn on_submitted_work_done(&self, index: SubmissionIndex, callback: SubmittedWorkDoneCallback);

    /// Bytes of device memory the backend has allocated now (including its own staging), if
    /// the backend can tell.
    fn allocated_bytes(&self) -> Option<u64>;
}
