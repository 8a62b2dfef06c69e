//! A reference backend: buffers in host memory, submissions executed at once. No GPU and no
//! driver; it models the [`Backend`] contract so the facade can be unit-tested anywhere and
//! so the conformance suite shows what the contract alone produces next to real backends.
//! Enabled by the `reference` feature (and in gantry-core's own tests).

use core::future::{Ready, ready};
use core::time::Duration;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::backend::{Backend, SubmittedWorkDoneCallback};
use crate::error::DeviceError;
use crate::types::{
    AdapterInfo, BufferUsage, DeviceType, Limits, MapMode, RawBufferDesc, SubmissionIndex,
};

/// A reference buffer: its bytes and its mapping.
#[derive(Debug)]
pub struct RefBuffer {
    bytes: Mutex<Vec<u8>>,
    size: u64,
}

impl RefBuffer {
    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn range(offset: u64, len: usize) -> core::ops::Range<usize> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    start..start + len
}

#[derive(Debug)]
enum Command {
    Write {
        dst: Arc<RefBuffer>,
        offset: u64,
        data: Vec<u8>,
    },
    Copy {
        src: Arc<RefBuffer>,
        src_offset: u64,
        dst: Arc<RefBuffer>,
        dst_offset: u64,
        size: u64,
    },
}

/// A batch of recorded commands.
#[derive(Debug, Default)]
pub struct RefBatch {
    commands: Vec<Command>,
}

/// The reference backend. Its "device memory" is a heap of `heap_size` bytes: creating more
/// returns [`DeviceError::OutOfMemory`].
#[derive(Debug)]
pub struct ReferenceBackend {
    heap_size: u64,
    used: AtomicU64,
    submitted: Mutex<u64>,
}

impl ReferenceBackend {
    /// A reference device with a heap of `heap_size` bytes.
    #[must_use]
    pub fn new(heap_size: u64) -> Self {
        Self {
            heap_size,
            used: AtomicU64::new(0),
            submitted: Mutex::new(0),
        }
    }
}

impl Default for ReferenceBackend {
    fn default() -> Self {
        Self::new(1 << 30)
    }
}

impl Backend for ReferenceBackend {
    type Buffer = Arc<RefBuffer>;
    type Batch = RefBatch;
    type ReadFuture = Ready<Result<Vec<u8>, DeviceError>>;

    const NAME: &'static str = "reference";

    fn adapter_info(&self) -> AdapterInfo {
        AdapterInfo {
            name: "gantry reference backend (host memory, no GPU)".into(),
            backend: "reference".into(),
            driver: "none".into(),
            device_type: DeviceType::Other,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            copy_alignment: 4,
            map_alignment: 8,
            min_uniform_offset_alignment: 256,
            min_storage_offset_alignment: 64,
            // Non-coherent, so the facade's rounding to the atom size is exercised.
            non_coherent_atom_size: 64,
            max_buffer_size: 4 << 30,
            host_coherent: false,
            unified_memory: true,
            device_local_usage: BufferUsage::all(),
            upload_usage: BufferUsage::all(),
            readback_usage: BufferUsage::all(),
        }
    }

    unsafe fn create_buffer(
        &self,
        desc: &RawBufferDesc<'_>,
    ) -> Result<Arc<RefBuffer>, DeviceError> {
        let used = self.used.fetch_add(desc.size, Ordering::SeqCst);
        if used.saturating_add(desc.size) > self.heap_size {
            self.used.fetch_sub(desc.size, Ordering::SeqCst);
            return Err(DeviceError::OutOfMemory);
        }
        let len = usize::try_from(desc.size).map_err(|_| DeviceError::OutOfMemory)?;
        Ok(Arc::new(RefBuffer {
            bytes: Mutex::new(vec![0; len]),
            size: desc.size,
        }))
    }

    unsafe fn destroy_buffer(&self, buffer: Arc<RefBuffer>) {
        self.used.fetch_sub(buffer.size, Ordering::SeqCst);
    }

    unsafe fn map(&self, _buffer: &Arc<RefBuffer>, _mode: MapMode) -> Result<(), DeviceError> {
        Ok(())
    }

    unsafe fn unmap(&self, _buffer: &Arc<RefBuffer>) {}

    unsafe fn write_mapped(
        &self,
        buffer: &Arc<RefBuffer>,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        buffer.bytes()[range(offset, data.len())].copy_from_slice(data);
        Ok(())
    }

    unsafe fn read_mapped(
        &self,
        buffer: &Arc<RefBuffer>,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), DeviceError> {
        out.copy_from_slice(&buffer.bytes()[range(offset, out.len())]);
        Ok(())
    }

    unsafe fn write_host(
        &self,
        buffer: &Arc<RefBuffer>,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        buffer.bytes()[range(offset, data.len())].copy_from_slice(data);
        Ok(())
    }

    fn begin_batch(&self) -> Result<RefBatch, DeviceError> {
        Ok(RefBatch::default())
    }

    unsafe fn batch_write(
        &self,
        batch: &mut RefBatch,
        dst: &Arc<RefBuffer>,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DeviceError> {
        batch.commands.push(Command::Write {
            dst: Arc::clone(dst),
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    unsafe fn batch_copy(
        &self,
        batch: &mut RefBatch,
        src: &Arc<RefBuffer>,
        src_offset: u64,
        dst: &Arc<RefBuffer>,
        dst_offset: u64,
        size: u64,
    ) {
        batch.commands.push(Command::Copy {
            src: Arc::clone(src),
            src_offset,
            dst: Arc::clone(dst),
            dst_offset,
            size,
        });
    }

    unsafe fn submit(&self, batch: RefBatch) -> Result<SubmissionIndex, DeviceError> {
        let mut submitted = self
            .submitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for command in batch.commands {
            match command {
                Command::Write { dst, offset, data } => {
                    dst.bytes()[range(offset, data.len())].copy_from_slice(&data);
                }
                Command::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size,
                } => {
                    let len = usize::try_from(size).unwrap_or(usize::MAX);
                    let tmp = src.bytes()[range(src_offset, len)].to_vec();
                    dst.bytes()[range(dst_offset, len)].copy_from_slice(&tmp);
                }
            }
        }
        *submitted += 1;
        Ok(SubmissionIndex(*submitted))
    }

    unsafe fn read(
        &self,
        buffer: &Arc<RefBuffer>,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), DeviceError> {
        out.copy_from_slice(&buffer.bytes()[range(offset, out.len())]);
        Ok(())
    }

    unsafe fn read_async(
        &self,
        buffer: &Arc<RefBuffer>,
        offset: u64,
        size: u64,
    ) -> Result<Self::ReadFuture, DeviceError> {
        let len = usize::try_from(size).map_err(|_| DeviceError::OutOfMemory)?;
        Ok(ready(Ok(buffer.bytes()[range(offset, len)].to_vec())))
    }

    fn last_submitted(&self) -> SubmissionIndex {
        SubmissionIndex(
            *self
                .submitted
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn poll(&self) -> Result<SubmissionIndex, DeviceError> {
        Ok(self.last_submitted())
    }

    fn wait(
        &self,
        _index: SubmissionIndex,
        _timeout: Option<Duration>,
    ) -> Result<bool, DeviceError> {
        Ok(true)
    }

    fn on_submitted_work_done(&self, _index: SubmissionIndex, callback: SubmittedWorkDoneCallback) {
        // Every submission completes inside `submit`.
        callback();
    }

    fn allocated_bytes(&self) -> Option<u64> {
        Some(self.used.load(Ordering::SeqCst))
    }
}
