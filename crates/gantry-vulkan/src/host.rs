//! Host memory the device reads and writes in place (`VK_EXT_external_memory_host`): the
//! zero-copy path of large uploads and readbacks.
//!
//! A [`HostMemory`] is a page-aligned host allocation imported once as a Vulkan buffer. While
//! it lives, [`Backend::write_now`](gantry_core::Backend::write_now) (what
//! `gantry_core::Device::write` calls) and [`Backend::read`](gantry_core::Backend::read) (what
//! `Device::read_into` calls) recognise a slice that lies inside it and let the copy engine
//! move the bytes straight between it and the destination: no staging buffer and no CPU copy.
//! On an H100 that is what reaches the DMA limit (PERF.md: 47-50 GB/s, against 41-43 GB/s for
//! the best staged path). Importing costs milliseconds (pinning the pages), so allocate once and
//! reuse.
//!
//! # Soundness
//! The device reads the memory after `write_now` returned: mutable access
//! ([`HostMemory::as_mut_slice`]) first waits for the last submission that read it. A readback
//! into it waits for the copy before it returns, while the caller's `&mut [u8]` borrow excludes
//! every other access. Dropping a `HostMemory` waits for its last use, then releases the import
//! and only then frees the memory.

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use crate::backend::{VulkanBackend, VulkanDevice};
use crate::buffer::VulkanBuffer;
use crate::error::{Error, Result};
use crate::submit::SubmissionIndex;

/// Live host-memory imports of one device, by start address.
#[derive(Default)]
pub(crate) struct HostRegistry {
    map: RwLock<BTreeMap<usize, Weak<HostInner>>>,
    count: AtomicU64,
}

impl HostRegistry {
    /// The import whose memory holds all of `bytes`, and the offset of `bytes` in it.
    pub(crate) fn find(&self, bytes: &[u8]) -> Option<(Arc<HostInner>, u64)> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let start = bytes.as_ptr().addr();
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (&base, weak) = map.range(..=start).next_back()?;
        let inner = weak.upgrade()?;
        let end = start.checked_add(bytes.len())?;
        (end <= base + inner.len).then(|| (inner, (start - base) as u64))
    }

    fn insert(&self, base: usize, inner: &Arc<HostInner>) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(base, Arc::downgrade(inner));
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&self, base: usize) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.remove(&base).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The shared part of a [`HostMemory`]: the allocation and its import.
pub(crate) struct HostInner {
    device: Arc<VulkanDevice>,
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
    /// The import; taken by `drop`.
    buffer: Option<VulkanBuffer>,
    /// The last submission that reads or writes the memory.
    last_use: AtomicU64,
}

// SAFETY: the memory is plain bytes owned by this value; the host accesses it only through
// `HostMemory`'s borrows, and device access is ordered by `last_use` (module docs).
unsafe impl Send for HostInner {}
// SAFETY: as above; shared access only reads, or records `last_use` atomically.
unsafe impl Sync for HostInner {}

impl HostInner {
    /// The imported buffer.
    pub(crate) fn buffer(&self) -> &VulkanBuffer {
        self.buffer
            .as_ref()
            .expect("the import is only taken when the last reference drops")
    }

    /// Records that submission `index` uses the memory.
    pub(crate) fn used_by(&self, index: SubmissionIndex) {
        self.last_use.fetch_max(index, Ordering::AcqRel);
    }
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.device.host_memory.remove(self.ptr.as_ptr().addr());
        let last = self.last_use.load(Ordering::Acquire);
        if self.device.wait_quiet(last).is_err() {
            // The device is lost and its copies may not have finished: leaking the import
            // and the memory is the only safe choice.
            std::mem::forget(self.buffer.take());
            return;
        }
        if let Some(buffer) = self.buffer.take() {
            // SAFETY: every submission that used the import completed (waited above), and no
            // new one can: the registry no longer returns it and no borrow of it is left.
            unsafe { self.device.destroy_buffer(buffer) };
        }
        // SAFETY: allocated with this layout in `HostMemory::new`; the import that referenced
        // it was released above.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Page-aligned host memory imported by the device: uploads from it and readbacks into it are
/// copied by the device directly, with no staging and no CPU copy (module docs).
///
/// ```no_run
/// use gantry_core::{BufferDesc, BufferUsage, Device, MemoryLocation};
/// use gantry_vulkan::{VulkanBackend, VulkanOptions};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = VulkanBackend::new(&VulkanOptions::default())?;
/// let mut host = backend.alloc_host_memory(64 << 20)?;
/// let device = Device::new(backend);
/// let buffer = device.create_buffer(&BufferDesc::new(
///     64 << 20,
///     BufferUsage::TRANSFER_DST | BufferUsage::TRANSFER_SRC,
///     MemoryLocation::DeviceLocal,
/// ))?;
/// host.as_mut_slice()?.fill(7);
/// device.write(&buffer, 0, &host)?; // the copy engine reads `host` in place
/// device.read_into(&buffer, 0, host.as_mut_slice()?)?; // and writes it in place
/// assert!(host.iter().all(|&b| b == 7));
/// # Ok(()) }
/// ```
pub struct HostMemory {
    inner: Arc<HostInner>,
}

impl std::fmt::Debug for HostMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMemory")
            .field("ptr", &self.inner.ptr)
            .field("len", &self.inner.len)
            .field("last_use", &self.last_use())
            .finish()
    }
}

impl VulkanBackend {
    /// Allocates `len` bytes of zeroed, page-aligned host memory and imports it (see
    /// [`HostMemory`]). The import is rounded up to `minImportedHostPointerAlignment`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the device lacks `VK_EXT_external_memory_host` or `len` is
    /// 0 or too large; [`Error::OutOfMemory`] when the allocation or the import fails for lack
    /// of memory.
    pub fn alloc_host_memory(&self, len: usize) -> Result<HostMemory> {
        HostMemory::new(&self.0, len)
    }
}

impl HostMemory {
    fn new(device: &Arc<VulkanDevice>, len: usize) -> Result<Self> {
        let Some(align) = device.limits.min_imported_host_pointer_alignment else {
            return Err(Error::Unsupported {
                what: "VK_EXT_external_memory_host".to_owned(),
            });
        };
        let align = align.max(4096);
        let unsupported = || Error::Unsupported {
            what: format!("host memory of {len} bytes (alignment {align})"),
        };
        if len == 0 {
            return Err(unsupported());
        }
        let size = (len as u64)
            .checked_next_multiple_of(align)
            .ok_or_else(unsupported)?;
        let layout = Layout::from_size_align(
            usize::try_from(size).map_err(|_| unsupported())?,
            usize::try_from(align).map_err(|_| unsupported())?,
        )
        .map_err(|_| unsupported())?;
        // SAFETY: the layout has a non-zero size.
        let Some(ptr) = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }) else {
            return Err(Error::OutOfMemory);
        };
        // SAFETY: `ptr` is `size` bytes we own, aligned to the import alignment; it is freed
        // only after the import is destroyed (`HostInner::drop`), and device access is ordered
        // with host access by `last_use` (module docs).
        let imported = unsafe {
            device.import_host_memory(
                ptr,
                size,
                ash::vk::BufferUsageFlags::empty(),
                "gantry host memory",
            )
        };
        let buffer = match imported {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: allocated above with `layout`, never imported.
                unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
                return Err(e);
            }
        };
        let inner = Arc::new(HostInner {
            device: Arc::clone(device),
            ptr,
            len,
            layout,
            buffer: Some(buffer),
            last_use: AtomicU64::new(0),
        });
        device.host_memory.insert(ptr.as_ptr().addr(), &inner);
        Ok(Self { inner })
    }

    /// The bytes, for reading. The device never writes them while this borrow lives.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` zero-initialized bytes we own; the device writes them only during a
        // readback, which holds the exclusive borrow of `as_mut_slice` until it completed.
        unsafe { std::slice::from_raw_parts(self.inner.ptr.as_ptr(), self.inner.len) }
    }

    /// The bytes, for writing: first waits until the device no longer reads them.
    ///
    /// # Errors
    /// [`Error::DeviceLost`] when the wait fails.
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        let last = self.inner.last_use.load(Ordering::Acquire);
        if last > 0 {
            self.inner.device.wait_quiet(last)?;
        }
        // SAFETY: `len` bytes we own; `&mut self` excludes host access through this value,
        // the registry hands out only shared references to the import, and every submission
        // that read the memory completed (waited above).
        Ok(unsafe { std::slice::from_raw_parts_mut(self.inner.ptr.as_ptr(), self.inner.len) })
    }

    /// The last submission that used the memory (0 if none).
    #[must_use]
    pub fn last_use(&self) -> SubmissionIndex {
        self.inner.last_use.load(Ordering::Acquire)
    }

    /// The imported buffer, for copies of one's own (`VulkanDevice::submit_copies`). Record
    /// such uses with care: `as_mut_slice` only knows of the submissions gantry made.
    #[must_use]
    pub fn buffer(&self) -> &VulkanBuffer {
        self.inner.buffer()
    }
}

impl std::ops::Deref for HostMemory {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}
