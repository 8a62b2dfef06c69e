//! Buffers: creation in a chosen memory type through gpu-allocator, persistent mapping,
//! flush/invalidate of non-coherent memory, writes and readback, host-memory import.

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use ash::vk;
use gpu_allocator::MemoryLocation;
use gpu_allocator::vulkan::{Allocation, AllocationCreateDesc, AllocationScheme};

use crate::backend::{VulkanDevice, lock};
use crate::error::{Error, Result, VkResultExt, map_alloc};
use crate::memory::{
    Location, choose_memory_type, non_coherent_range, round_requirements_for_atom,
};
use crate::submit::{RawCopy, SubmissionIndex, record_copies};

/// A host pointer into mapped memory.
///
/// `Send`/`Sync` only on this wrapper: the pointer is an address in a mapping that does not
/// move while the buffer lives, and the type gives no access to the bytes by itself; every
/// access goes through `unsafe` code whose callers guarantee the absence of data races (the
/// backend's preconditions on mapped ranges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MappedPtr(pub(crate) NonNull<u8>);
// SAFETY: see the type's documentation: an address, never dereferenced without a caller's
// guarantee of exclusive or read-only access.
unsafe impl Send for MappedPtr {}
// SAFETY: as above.
unsafe impl Sync for MappedPtr {}

impl MappedPtr {
    /// The address (a method, so closures capture the `Send` wrapper, not the raw pointer).
    pub(crate) fn get(self) -> *mut u8 {
        self.0.as_ptr()
    }
}

/// Copies of at least this many bytes between host memory and a mapping are split over
/// threads: one CPU thread cannot saturate the memory system (PERF.md: 9.8 GB/s for one thread
/// against 54 GB/s for sixteen on the H100 host). From 1 MiB: the copy threads are persistent,
/// so a manager's flushed shadow (2.5 MB for 10,000 small uploads: 250 us on one thread there)
/// is worth splitting too.
pub(crate) const PARALLEL_COPY_MIN: usize = 1 << 20;

/// Copies `src` to `dst`, split over the copy threads when large.
///
/// # Safety
/// `dst` is valid for writes of `src.len()` bytes, does not overlap `src`, and nothing else
/// accesses those bytes during the call.
pub(crate) unsafe fn copy_to_mapped(dst: *mut u8, src: &[u8]) {
    // SAFETY: one piece, the function's contract.
    unsafe { copy_pieces(&[CopyPiece::new(dst, src.as_ptr(), src.len())]) };
}

/// Copies `dst.len()` bytes from `src` into `dst`, split over the copy threads when large.
///
/// # Safety
/// `src` is valid for reads of `dst.len()` bytes, does not overlap `dst`, and nothing writes
/// those bytes during the call.
pub(crate) unsafe fn copy_from_mapped(dst: &mut [u8], src: *const u8) {
    // SAFETY: one piece, the function's contract (`dst` is exclusively borrowed).
    unsafe { copy_pieces(&[CopyPiece::new(dst.as_mut_ptr(), src, dst.len())]) };
}

pub(crate) use gantry_core::copier::CopyPiece;

/// Copies every piece; when the total is large (one thread cannot saturate the memory
/// system), the pieces are cut into jobs of at most `COPY_GRAIN` bytes that the copy
/// threads (`gantry_core::copier`) and the caller take in turn.
///
/// # Safety
/// Every piece satisfies [`CopyPiece::new`]'s contract, and no two pieces' destinations
/// overlap.
pub(crate) unsafe fn copy_pieces(pieces: &[CopyPiece]) {
    // SAFETY: forwarded.
    unsafe { copy_pieces_from(pieces, PARALLEL_COPY_MIN) };
}

/// [`copy_pieces`], shared out among the copy threads from `parallel_min` bytes in all
/// ([`gantry_core::copier::copy_pieces`]).
///
/// # Safety
/// As for [`copy_pieces`].
pub(crate) unsafe fn copy_pieces_from(pieces: &[CopyPiece], parallel_min: usize) {
    // SAFETY: forwarded.
    unsafe { gantry_core::copier::copy_pieces(pieces, parallel_min) };
}

#[derive(Debug)]
enum Memory {
    /// Sub-allocated (or dedicated) by gpu-allocator.
    Allocated(Allocation),
    /// A `VkDeviceMemory` importing caller-owned host memory (`VK_EXT_external_memory_host`).
    Imported { memory: vk::DeviceMemory, size: u64 },
}

/// A Vulkan buffer with its memory. Destroy it with [`VulkanDevice::destroy_buffer`](crate::VulkanDevice::destroy_buffer).
#[derive(Debug)]
pub struct VulkanBuffer {
    raw: vk::Buffer,
    size: u64,
    usage: vk::BufferUsageFlags,
    location: Location,
    memory: Memory,
    mapped: Option<MappedPtr>,
    /// The mapping of a device-local buffer whose memory is host-visible and coherent (a UMA
    /// device), for the backend's direct writes only; never handed out.
    uma: Option<MappedPtr>,
    coherent: bool,
    heap: u32,
    device_address: Option<u64>,
    /// A staging chunk of the backend's own, returned to its pool when retired.
    pub(crate) pooled: bool,
}

impl VulkanBuffer {
    /// The `VkBuffer` handle.
    pub fn raw(&self) -> vk::Buffer {
        self.raw
    }

    /// The size asked for at creation.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The usage the buffer was created with: what was asked for plus what the backend adds
    /// (see [`VulkanDevice::create_buffer`](crate::VulkanDevice::create_buffer)).
    pub fn usage(&self) -> vk::BufferUsageFlags {
        self.usage
    }

    /// Where the memory lives.
    pub fn location(&self) -> Location {
        self.location
    }

    /// The persistent mapping of an [`Location::Upload`] or [`Location::Readback`] buffer (or
    /// an imported one): `size()` bytes at this address stay mapped until the buffer is
    /// destroyed. `None` for device-local buffers, even where their memory happens to be
    /// host-visible (lavapipe, BAR): writes to them go through staging (G6).
    pub fn mapped_ptr(&self) -> Option<NonNull<u8>> {
        self.mapped.map(|p| p.0)
    }

    /// The mapping of a device-local buffer whose memory is host-visible and coherent (a
    /// UMA device: lavapipe, integrated GPUs), where batches may write directly when the
    /// device is idle (see `VulkanOptions::direct_writes`).
    pub(crate) fn uma_ptr(&self) -> Option<MappedPtr> {
        self.uma
    }

    /// Whether the memory is host-coherent (no flush/invalidate needed).
    pub fn is_coherent(&self) -> bool {
        self.coherent
    }

    /// The buffer's device address, when created with device-address usage.
    pub fn device_address(&self) -> Option<u64> {
        self.device_address
    }

    /// The `VkDeviceMemory` the buffer is bound to and the offset of its binding, for
    /// interoperation and tests.
    pub fn raw_memory(&self) -> (vk::DeviceMemory, u64) {
        let (memory, offset, _) = self.memory_range();
        (memory, offset)
    }

    /// `(memory, offset in it, size of the allocation)`.
    fn memory_range(&self) -> (vk::DeviceMemory, u64, u64) {
        match &self.memory {
            // SAFETY: the allocation's memory handle stays valid while the allocation lives.
            Memory::Allocated(a) => (unsafe { a.memory() }, a.offset(), a.size()),
            Memory::Imported { memory, size } => (*memory, 0, *size),
        }
    }
}

const AS_USAGE: vk::BufferUsageFlags = vk::BufferUsageFlags::from_raw(
    vk::BufferUsageFlags::ACCELERATION_STRUCTURE_BUILD_INPUT_READ_ONLY_KHR.as_raw()
        | vk::BufferUsageFlags::ACCELERATION_STRUCTURE_STORAGE_KHR.as_raw(),
);

impl VulkanDevice {
    /// Usage added to every buffer [`Self::create_buffer`] creates: `TRANSFER_SRC` and
    /// `TRANSFER_DST` (writes to and reads of device-local memory go through staging) and
    /// `STORAGE_BUFFER` (a batch's small writes may be scattered into the buffer by a compute
    /// dispatch, and the staging chunks are read by it). Imported host memory gets only the
    /// transfer usages (external memory may not support storage use; writes to it stay
    /// copies).
    pub const ADDED_USAGE: vk::BufferUsageFlags = vk::BufferUsageFlags::from_raw(
        vk::BufferUsageFlags::TRANSFER_SRC.as_raw()
            | vk::BufferUsageFlags::TRANSFER_DST.as_raw()
            | vk::BufferUsageFlags::STORAGE_BUFFER.as_raw(),
    );

    /// Whether the device can create buffers with `usage` (G2): device addresses need
    /// `bufferDeviceAddress`, acceleration-structure usages `VK_KHR_acceleration_structure`,
    /// the shader-binding-table usage `VK_KHR_ray_tracing_pipeline`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the first missing capability.
    pub fn check_usage(&self, usage: vk::BufferUsageFlags) -> Result<()> {
        let missing = |what: &str| {
            Err(Error::Unsupported {
                what: what.to_owned(),
            })
        };
        if usage.contains(vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS)
            && !self.enabled.buffer_device_address
        {
            return missing("device-address buffers (bufferDeviceAddress)");
        }
        if usage.intersects(AS_USAGE) && !self.enabled.acceleration_structure {
            return missing("acceleration-structure buffers (VK_KHR_acceleration_structure)");
        }
        if usage.contains(vk::BufferUsageFlags::SHADER_BINDING_TABLE_KHR)
            && !self.enabled.ray_tracing_pipeline
        {
            return missing("shader-binding-table buffers (VK_KHR_ray_tracing_pipeline)");
        }
        Ok(())
    }

    fn buffer_info<'a>(
        &'a self,
        size: u64,
        usage: vk::BufferUsageFlags,
    ) -> vk::BufferCreateInfo<'a> {
        let info = vk::BufferCreateInfo::default().size(size).usage(usage);
        if self.sharing_families.len() > 1 {
            // Shared between the universal and the transfer family: no ownership transfers.
            info.sharing_mode(vk::SharingMode::CONCURRENT)
                .queue_family_indices(&self.sharing_families)
        } else {
            info.sharing_mode(vk::SharingMode::EXCLUSIVE)
        }
    }

    /// Creates a buffer of `size` bytes with `usage` plus [`Self::ADDED_USAGE`] (transfer
    /// source and destination, which the staging and readback paths need, and storage-buffer
    /// usage, which the scatter dispatch of small batch writes needs) in memory chosen for
    /// `location` (G1, G3).
    ///
    /// Wraps [`vkCreateBuffer`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/vkCreateBuffer.html).
    ///
    /// Host-visible buffers are persistently mapped. Non-coherent memory is allocated with
    /// `nonCoherentAtomSize` granularity so flushes never reach past the allocation.
    ///
    /// The contents start as zeros, as on wgpu (so no backend hands out another allocation's
    /// old bytes): host-visible memory is cleared at once; device-local memory by a
    /// `vkCmdFillBuffer` recorded at the start of the next submission, which comes before any
    /// use of the buffer by gantry (an engine using the raw handle on its own queue must wait
    /// for [`Self::last_submitted_index`] after a gantry submission, or clear it itself).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for usages the device lacks ([`Self::check_usage`]) or when no
    /// memory type fits; [`Error::OutOfMemory`].
    ///
    /// # Safety
    /// `size > 0` and not above the device's maximum buffer size.
    pub unsafe fn create_buffer(
        &self,
        size: u64,
        usage: vk::BufferUsageFlags,
        location: Location,
        label: &str,
    ) -> Result<VulkanBuffer> {
        // SAFETY: forwarded.
        let buffer = unsafe { self.create_buffer_uninit(size, usage, location, label) }?;
        match buffer.mapped {
            Some(ptr) => {
                // SAFETY: the mapping is `size` bytes long and nothing else uses the new buffer.
                unsafe { std::ptr::write_bytes(ptr.0.as_ptr(), 0, size as usize) };
                // SAFETY: as above.
                if let Err(e) = unsafe { self.flush(&buffer, 0, size) } {
                    // SAFETY: never used by the device.
                    unsafe { self.destroy_buffer(buffer) };
                    return Err(e);
                }
            }
            None => lock(&self.pending_fills).push(buffer.raw),
        }
        Ok(buffer)
    }

    /// [`Self::create_buffer`] without clearing: for the backend's own staging, which is
    /// always written before it is read.
    ///
    /// # Safety
    /// As for [`Self::create_buffer`].
    pub(crate) unsafe fn create_buffer_uninit(
        &self,
        size: u64,
        usage: vk::BufferUsageFlags,
        location: Location,
        label: &str,
    ) -> Result<VulkanBuffer> {
        self.check_usage(usage)?;
        let usage = usage | Self::ADDED_USAGE;
        let info = self.buffer_info(size, usage);
        // SAFETY: `size > 0` (contract), usage is supported (checked), the sharing families are
        // families of this device.
        let raw = unsafe { self.device.create_buffer(&info, None) }.vk("vkCreateBuffer")?;
        let destroy_raw = || {
            // SAFETY: the buffer was just created and is not bound to memory or in use.
            unsafe { self.device.destroy_buffer(raw, None) }
        };
        // SAFETY: `raw` is a live buffer of this device.
        let mut req = unsafe { self.device.get_buffer_memory_requirements(raw) };
        let types = self.memory_props.memory_types_as_slice();
        let Some(type_index) = choose_memory_type(types, req.memory_type_bits, location) else {
            destroy_raw();
            return Err(Error::Unsupported {
                what: format!("a memory type for {location:?} buffers"),
            });
        };
        let flags = types[type_index as usize].property_flags;
        let coherent =
            flags.contains(vk::MemoryPropertyFlags::HOST_COHERENT) && !self.force_non_coherent;
        let host_visible = flags.contains(vk::MemoryPropertyFlags::HOST_VISIBLE);
        if host_visible && !coherent {
            req = round_requirements_for_atom(req, self.limits.non_coherent_atom_size);
        }
        // Restrict gpu-allocator to the chosen type; `Unknown` makes it take the first allowed
        // type as is (see memory.rs for why its own CpuToGpu choice is not used).
        req.memory_type_bits = 1 << type_index;
        let desc = AllocationCreateDesc {
            name: label,
            requirements: req,
            location: MemoryLocation::Unknown,
            linear: true,
            allocation_scheme: AllocationScheme::GpuAllocatorManaged,
        };
        let allocation = match lock(&self.allocator).allocate(&desc) {
            Ok(a) => a,
            Err(e) => {
                destroy_raw();
                return Err(map_alloc(e));
            }
        };
        // SAFETY: the allocation comes from a memory type allowed by the buffer's requirements,
        // with the required size and alignment; the buffer is not bound yet.
        let bound = unsafe {
            self.device
                .bind_buffer_memory(raw, allocation.memory(), allocation.offset())
        }
        .vk("vkBindBufferMemory");
        if let Err(e) = bound {
            destroy_raw();
            let _ = lock(&self.allocator).free(allocation);
            return Err(e);
        }
        let mapping = allocation.mapped_ptr().map(|p| MappedPtr(p.cast()));
        let (mapped, uma) = if location == Location::DeviceLocal {
            (None, mapping.filter(|_| host_visible && coherent))
        } else {
            (mapping, None)
        };
        let device_address = usage
            .contains(vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS)
            .then(|| {
                let info = vk::BufferDeviceAddressInfo::default().buffer(raw);
                // SAFETY: the buffer has device-address usage (bufferDeviceAddress is enabled,
                // checked above) and is bound to memory allocated with the device-address flag
                // (gpu-allocator sets it on every block when buffer_device_address is on).
                unsafe { self.device.get_buffer_device_address(&info) }
            });
        let heap = types[type_index as usize].heap_index;
        self.heap_usage[heap as usize].fetch_add(allocation.size(), Ordering::Relaxed);
        self.live_buffers.fetch_add(1, Ordering::Relaxed);
        if !label.is_empty() {
            self.set_name(raw, label);
        }
        Ok(VulkanBuffer {
            raw,
            size,
            usage,
            location,
            memory: Memory::Allocated(allocation),
            mapped,
            uma,
            coherent: coherent || !host_visible,
            heap,
            device_address,
            pooled: false,
        })
    }

    /// Bytes of host memory imported through [`Self::import_host_memory`] and still live.
    pub(crate) fn imported_bytes(&self) -> u64 {
        self.imported_bytes.load(Ordering::Relaxed)
    }

    /// Size of the staging chunks that batches write into and large reads cycle through
    /// (larger single writes span several chunks).
    pub(crate) const STAGING_CHUNK: u64 = 32 << 20;
    /// Default bound on the bytes of idle staging chunks kept for reuse
    /// ([`crate::VulkanOptions::staging_keep_bytes`]).
    pub(crate) const STAGING_KEEP_DEFAULT: u64 = 512 << 20;

    /// A host-visible staging buffer of at least `size` bytes in `location` memory (upload
    /// or readback): a pooled chunk when `size` fits one, else a buffer of its own.
    pub(crate) fn staging_buffer(&self, size: u64, location: Location) -> Result<VulkanBuffer> {
        let (usage, label) = match location {
            Location::Readback => (vk::BufferUsageFlags::TRANSFER_DST, "gantry readback"),
            _ => (vk::BufferUsageFlags::TRANSFER_SRC, "gantry staging"),
        };
        if size <= Self::STAGING_CHUNK {
            {
                let mut pool = lock(&self.staging_pool);
                if let Some(i) = pool.iter().rposition(|b| b.location == location) {
                    return Ok(pool.swap_remove(i));
                }
            }
            // SAFETY: non-zero size.
            let mut b =
                unsafe { self.create_buffer_uninit(Self::STAGING_CHUNK, usage, location, label) }?;
            b.pooled = true;
            return Ok(b);
        }
        // SAFETY: non-zero size.
        unsafe { self.create_buffer_uninit(size, usage, location, label) }
    }

    /// Returns a retired staging chunk to the pool (while the pool's idle bytes stay within
    /// the bound), or destroys the buffer.
    ///
    /// # Safety
    /// As for [`Self::destroy_buffer`].
    pub(crate) unsafe fn recycle_staging(&self, buffer: VulkanBuffer) {
        if buffer.pooled {
            let mut pool = lock(&self.staging_pool);
            if (pool.len() as u64 + 1) * Self::STAGING_CHUNK <= self.staging_keep_bytes {
                pool.push(buffer);
                return;
            }
        }
        // SAFETY: forwarded.
        unsafe { self.destroy_buffer(buffer) };
    }

    /// Destroys idle staging chunks until at most `keep_bytes` of them remain.
    pub fn trim_staging(&self, keep_bytes: u64) {
        let extra: Vec<VulkanBuffer> = {
            let mut pool = lock(&self.staging_pool);
            let keep = usize::try_from(keep_bytes / Self::STAGING_CHUNK).unwrap_or(usize::MAX);
            if pool.len() <= keep {
                return;
            }
            pool.drain(keep..).collect()
        };
        for b in extra {
            // SAFETY: idle pooled chunks are used by no pending submission.
            unsafe { self.destroy_buffer(b) };
        }
    }

    /// Copies `data` into a mapped buffer at `offset` and flushes the range.
    ///
    /// # Safety
    /// The buffer is mapped, the range lies inside it, and nothing else accesses it now.
    pub(crate) unsafe fn write_mapped_raw(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let Some(ptr) = buffer.mapped else {
            return Err(Error::Unsupported {
                what: "host access to a buffer that is not host-visible".to_owned(),
            });
        };
        // SAFETY: in bounds of the mapping and unaliased (contract); `data` is host memory
        // that cannot be this device mapping's bytes being written.
        unsafe {
            copy_to_mapped(ptr.0.as_ptr().add(offset as usize), data);
            self.flush(buffer, offset, data.len() as u64)
        }
    }

    /// Invalidates and copies `out.len()` bytes of a mapped buffer at `offset` into `out`.
    ///
    /// # Safety
    /// The buffer is mapped, the range lies inside it, and no device write to it is pending.
    pub(crate) unsafe fn read_mapped_raw(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let Some(ptr) = buffer.mapped else {
            return Err(Error::Unsupported {
                what: "host access to a buffer that is not host-visible".to_owned(),
            });
        };
        // SAFETY: in bounds, no device write pending (contract).
        unsafe {
            self.invalidate(buffer, offset, out.len() as u64)?;
            copy_from_mapped(out, ptr.0.as_ptr().add(offset as usize));
        }
        Ok(())
    }

    /// Destroys a buffer and frees its memory (imported memory is released; the host memory
    /// itself stays the caller's).
    ///
    /// Wraps [`vkDestroyBuffer`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/vkDestroyBuffer.html).
    ///
    /// # Safety
    /// No pending or future submission uses the buffer (wait for the last submission that
    /// referenced it).
    pub unsafe fn destroy_buffer(&self, buffer: VulkanBuffer) {
        // A device-local buffer's clear may sit in a submission the caller never saw.
        let Some(buffer) = self.defer_if_clearing(buffer) else {
            return;
        };
        // SAFETY: the device no longer uses the buffer (contract).
        unsafe { self.device.destroy_buffer(buffer.raw, None) };
        match buffer.memory {
            Memory::Allocated(a) => {
                self.heap_usage[buffer.heap as usize].fetch_sub(a.size(), Ordering::Relaxed);
                if let Err(e) = lock(&self.allocator).free(a) {
                    tracing::error!("gantry-vulkan: freeing an allocation: {e}");
                }
            }
            Memory::Imported { memory, size } => {
                self.heap_usage[buffer.heap as usize].fetch_sub(size, Ordering::Relaxed);
                self.imported_bytes.fetch_sub(size, Ordering::Relaxed);
                // SAFETY: the memory was allocated by `import_host_memory`, bound only to this
                // buffer, which is destroyed above.
                unsafe { self.device.free_memory(memory, None) };
            }
        }
        self.live_buffers.fetch_sub(1, Ordering::Relaxed);
    }

    fn mapped_ranges(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        size: u64,
    ) -> Option<vk::MappedMemoryRange<'static>> {
        if buffer.coherent || size == 0 {
            return None;
        }
        let (memory, alloc_offset, alloc_size) = buffer.memory_range();
        let (o, s) = non_coherent_range(
            alloc_offset,
            alloc_size,
            offset,
            size,
            self.limits.non_coherent_atom_size,
        );
        Some(
            vk::MappedMemoryRange::default()
                .memory(memory)
                .offset(o)
                .size(s),
        )
    }

    /// Makes host writes to `[offset, offset + size)` of a mapped buffer visible to the device
    /// (`vkFlushMappedMemoryRanges`, rounded to `nonCoherentAtomSize`); nothing for coherent
    /// memory.
    ///
    /// Wraps [`vkFlushMappedMemoryRanges`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/vkFlushMappedMemoryRanges.html).
    ///
    /// # Safety
    /// The buffer is mapped and the range lies inside it.
    pub unsafe fn flush(&self, buffer: &VulkanBuffer, offset: u64, size: u64) -> Result<()> {
        if let Some(range) = self.mapped_ranges(buffer, offset, size) {
            // SAFETY: the range is atom-aligned and inside the mapped allocation.
            unsafe { self.device.flush_mapped_memory_ranges(&[range]) }
                .vk("vkFlushMappedMemoryRanges")?;
        }
        Ok(())
    }

    /// Makes device writes to `[offset, offset + size)` of a mapped buffer visible to the host
    /// (`vkInvalidateMappedMemoryRanges`, rounded); nothing for coherent memory.
    ///
    /// Wraps [`vkInvalidateMappedMemoryRanges`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/vkInvalidateMappedMemoryRanges.html).
    ///
    /// # Safety
    /// The buffer is mapped and the range lies inside it; the host has no unflushed writes in
    /// the rounded range (they would be discarded).
    pub unsafe fn invalidate(&self, buffer: &VulkanBuffer, offset: u64, size: u64) -> Result<()> {
        if let Some(range) = self.mapped_ranges(buffer, offset, size) {
            // SAFETY: as in `flush`.
            unsafe { self.device.invalidate_mapped_memory_ranges(&[range]) }
                .vk("vkInvalidateMappedMemoryRanges")?;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (G5). Mapped buffers are written in place and flushed
    /// (returns `None`); device-local ones through a staging buffer and a copy submission
    /// (returns its index; the staging buffer is freed when it completes).
    ///
    /// # Safety
    /// `offset + data.len() <= buffer.size()`; no pending submission reads or writes the range
    /// of a mapped buffer; the buffer outlives a returned submission.
    pub unsafe fn write_buffer(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        data: &[u8],
    ) -> Result<Option<SubmissionIndex>> {
        if data.is_empty() {
            return Ok(None);
        }
        let len = data.len() as u64;
        if let Some(ptr) = buffer.mapped {
            // SAFETY: the range lies inside the mapping, and nothing else accesses it now
            // (contract); `data` cannot overlap device memory mapped for this buffer, because
            // it is borrowed shared while the mapping is only written here.
            unsafe {
                copy_to_mapped(ptr.0.as_ptr().add(offset as usize), data);
                self.flush(buffer, offset, len)?;
            }
            return Ok(None);
        }
        // SAFETY: len > 0.
        let staging = unsafe {
            self.create_buffer_uninit(
                len,
                vk::BufferUsageFlags::TRANSFER_SRC,
                Location::Upload,
                "gantry staging",
            )
        }?;
        // SAFETY: the staging buffer is new, mapped (upload memory is host-visible) and
        // `len` bytes long; the range is flushed right after.
        unsafe {
            let Some(p) = staging.mapped else {
                self.destroy_buffer(staging);
                return Err(Error::Unsupported {
                    what: "host-visible upload memory".to_owned(),
                });
            };
            copy_to_mapped(p.0.as_ptr(), data);
            if let Err(e) = self.flush(&staging, 0, len) {
                self.destroy_buffer(staging);
                return Err(e);
            }
        }
        let (src, dst) = (staging.raw, buffer.raw);
        let region = [vk::BufferCopy {
            src_offset: 0,
            dst_offset: offset,
            size: len,
        }];
        // SAFETY: both buffers are alive until completion (the staging buffer is retired with
        // the submission; the destination by contract), the regions are in bounds.
        let index = unsafe {
            self.submit_with(vec![staging], |d, cmd| {
                d.cmd_copy_buffer(cmd, src, dst, &region)
            })
        }?;
        Ok(Some(index))
    }

    /// Reads `out.len()` bytes at `offset` into `out`, blocking (G8). Mapped buffers are read
    /// in place after an invalidate; device-local ones through a readback buffer and a copy,
    /// waited for with the timeline semaphore.
    ///
    /// # Safety
    /// `offset + out.len() <= buffer.size()`; for mapped buffers, every submission writing the
    /// range has completed; for device-local ones, the buffer stays alive during the call.
    pub unsafe fn read_buffer(
        &self,
        buffer: &VulkanBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let len = out.len() as u64;
        if let Some(ptr) = buffer.mapped {
            // SAFETY: in bounds and no device write pending (contract).
            unsafe {
                self.invalidate(buffer, offset, len)?;
                copy_from_mapped(out, ptr.0.as_ptr().add(offset as usize));
            }
            return Ok(());
        }
        // SAFETY: len > 0.
        let staging = unsafe {
            self.create_buffer_uninit(
                len,
                vk::BufferUsageFlags::TRANSFER_DST,
                Location::Readback,
                "gantry readback",
            )
        }?;
        let copy = RawCopy {
            src: buffer.raw,
            src_offset: offset,
            dst: staging.raw,
            dst_offset: 0,
            size: len,
        };
        // SAFETY: in bounds, distinct buffers; both alive until the wait below returns.
        let submitted =
            unsafe { self.submit_with(Vec::new(), |d, cmd| record_copies(d, cmd, [copy])) };
        let result = submitted
            .and_then(|index| self.wait_quiet(index))
            .and_then(|()| {
                // SAFETY: the copy completed and its writes were made available to the host by
                // the trailing barrier; the staging buffer is mapped and `len` bytes long.
                unsafe {
                    self.invalidate(&staging, 0, len)?;
                    let p = staging.mapped.ok_or(Error::Unsupported {
                        what: "host-visible readback memory".to_owned(),
                    })?;
                    copy_from_mapped(out, p.0.as_ptr());
                }
                Ok(())
            });
        match &result {
            // SAFETY: the copy completed (waited above).
            Ok(()) => unsafe { self.destroy_buffer(staging) },
            Err(_) => {
                // The copy may still be pending: wait for everything submitted, then destroy.
                let _ = self.wait_idle_own();
                // SAFETY: every submission completed, or the device is lost.
                unsafe { self.destroy_buffer(staging) };
            }
        }
        result
    }

    /// Imports page-aligned host memory as a buffer the device reads and writes directly
    /// (`VK_EXT_external_memory_host`): copies to or from it need no CPU copy.
    ///
    /// Wraps [`VK_EXT_external_memory_host`](https://registry.khronos.org/vulkan/specs/1.3-extensions/man/html/VK_EXT_external_memory_host.html).
    ///
    /// The returned buffer's [`VulkanBuffer::mapped_ptr`] is `ptr`; its location is reported as
    /// [`Location::Upload`]. Destroying it releases the import, never the host memory.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the extension is not enabled, the pointer or size is not a
    /// multiple of `minImportedHostPointerAlignment`, or the driver cannot import it.
    ///
    /// # Safety
    /// - `ptr` points to `size` bytes of host memory that stays allocated (and is not
    ///   unmapped or remapped) until the buffer is destroyed;
    /// - while a submission using the buffer is pending, the host does not access the range
    ///   the device writes, nor write the range it reads.
    pub unsafe fn import_host_memory(
        &self,
        ptr: NonNull<u8>,
        size: u64,
        usage: vk::BufferUsageFlags,
        label: &str,
    ) -> Result<VulkanBuffer> {
        let Some(ext) = &self.external_memory_host else {
            return Err(Error::Unsupported {
                what: "VK_EXT_external_memory_host".to_owned(),
            });
        };
        let align = self
            .limits
            .min_imported_host_pointer_alignment
            .unwrap_or(4096);
        if size == 0
            || !(ptr.as_ptr().addr() as u64).is_multiple_of(align)
            || !size.is_multiple_of(align)
        {
            return Err(Error::Unsupported {
                what: format!(
                    "host import of {size} bytes at {ptr:p}: pointer and size must be multiples of {align}"
                ),
            });
        }
        self.check_usage(usage)?;
        let handle_type = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;
        let mut host_props = vk::MemoryHostPointerPropertiesEXT::default();
        // SAFETY: the extension is enabled; `ptr` is a valid host pointer (contract) aligned to
        // minImportedHostPointerAlignment (checked); `host_props` is a valid output struct.
        unsafe {
            (ext.fp().get_memory_host_pointer_properties_ext)(
                self.device.handle(),
                handle_type,
                ptr.as_ptr().cast(),
                &mut host_props,
            )
        }
        .result()
        .vk("vkGetMemoryHostPointerPropertiesEXT")?;

        let usage = usage | vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST;
        let mut external = vk::ExternalMemoryBufferCreateInfo::default().handle_types(handle_type);
        let info = self.buffer_info(size, usage).push_next(&mut external);
        // SAFETY: size > 0; the external-memory struct names a handle type of an enabled
        // extension.
        let raw = unsafe { self.device.create_buffer(&info, None) }.vk("vkCreateBuffer")?;
        // SAFETY: `raw` is live.
        let req = unsafe { self.device.get_buffer_memory_requirements(raw) };
        let types = self.memory_props.memory_types_as_slice();
        let allowed = req.memory_type_bits & host_props.memory_type_bits;
        let Some(type_index) = choose_memory_type(types, allowed, Location::Upload) else {
            // SAFETY: created above, unused.
            unsafe { self.device.destroy_buffer(raw, None) };
            return Err(Error::Unsupported {
                what: "a memory type that imports this host pointer".to_owned(),
            });
        };
        let mut import = vk::ImportMemoryHostPointerInfoEXT::default()
            .handle_type(handle_type)
            .host_pointer(ptr.as_ptr().cast());
        let mut flags_info =
            vk::MemoryAllocateFlagsInfo::default().flags(vk::MemoryAllocateFlags::DEVICE_ADDRESS);
        let mut alloc_info = vk::MemoryAllocateInfo::default()
            .allocation_size(size)
            .memory_type_index(type_index)
            .push_next(&mut import);
        if usage.contains(vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS) {
            alloc_info = alloc_info.push_next(&mut flags_info);
        }
        // SAFETY: the memory type is allowed for this pointer and buffer; the pointer and size
        // are aligned; the host memory outlives the allocation (contract).
        let memory = match unsafe { self.device.allocate_memory(&alloc_info, None) } {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: created above, unused.
                unsafe { self.device.destroy_buffer(raw, None) };
                return Err(crate::error::map_vk("vkAllocateMemory", e));
            }
        };
        // SAFETY: the memory is at least `req.size` (the import covers `size` >= the buffer's
        // size rounded to the import alignment) and of an allowed type.
        if let Err(e) = unsafe { self.device.bind_buffer_memory(raw, memory, 0) } {
            // SAFETY: created above, unused.
            unsafe {
                self.device.destroy_buffer(raw, None);
                self.device.free_memory(memory, None);
            }
            return Err(crate::error::map_vk("vkBindBufferMemory", e));
        }
        let flags = types[type_index as usize].property_flags;
        let heap = types[type_index as usize].heap_index;
        let device_address = usage
            .contains(vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS)
            .then(|| {
                let info = vk::BufferDeviceAddressInfo::default().buffer(raw);
                // SAFETY: device-address usage with the feature enabled; memory allocated with
                // the device-address flag.
                unsafe { self.device.get_buffer_device_address(&info) }
            });
        self.heap_usage[heap as usize].fetch_add(size, Ordering::Relaxed);
        self.imported_bytes.fetch_add(size, Ordering::Relaxed);
        self.live_buffers.fetch_add(1, Ordering::Relaxed);
        if !label.is_empty() {
            self.set_name(raw, label);
            self.set_name(memory, label);
        }
        Ok(VulkanBuffer {
            raw,
            size,
            usage,
            location: Location::Upload,
            memory: Memory::Imported { memory, size },
            mapped: Some(MappedPtr(ptr)),
            uma: None,
            coherent: flags.contains(vk::MemoryPropertyFlags::HOST_COHERENT)
                && !self.force_non_coherent,
            heap,
            device_address,
            pooled: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_copies_are_exact() {
        for len in [
            0,
            1,
            4097,
            PARALLEL_COPY_MIN - 1,
            PARALLEL_COPY_MIN + 12_345,
        ] {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
            let mut mid = vec![0u8; len];
            // SAFETY: `mid` is `len` bytes, distinct from `src`.
            unsafe { copy_to_mapped(mid.as_mut_ptr(), &src) };
            assert!(mid == src, "to, len {len}");
            let mut back = vec![0u8; len];
            // SAFETY: `mid` is `len` readable bytes, distinct from `back`.
            unsafe { copy_from_mapped(&mut back, mid.as_ptr()) };
            assert!(back == src, "from, len {len}");
        }
    }

    /// Thousands of small pieces (a batch's 256-byte writes) shared out in blocks: every
    /// piece lands, none twice, also when the count is not a multiple of the block.
    #[test]
    fn many_small_pieces_are_exact() {
        for (count, len) in [(10_000usize, 256usize), (3_001, 20), (7, 4096), (1, 64)] {
            let src: Vec<u8> = (0..count * len).map(|i| (i * 13 + i / 251) as u8).collect();
            // Every piece lands at a 16-byte-aligned slot, in reverse order, gaps between.
            let slot = len.next_multiple_of(16) + 16;
            let mut dst = vec![0xEEu8; count * slot];
            let pieces: Vec<CopyPiece> = (0..count)
                .map(|i| {
                    let at = (count - 1 - i) * slot;
                    // SAFETY: `dst[at..at + len]` and `src[i * len..][..len]` are in bounds
                    // and distinct; both outlive the copy below.
                    unsafe {
                        CopyPiece::new(dst.as_mut_ptr().add(at), src.as_ptr().add(i * len), len)
                    }
                })
                .collect();
            // SAFETY: the pieces' destinations do not overlap.
            unsafe { copy_pieces_from(&pieces, 0) };
            for i in 0..count {
                let at = (count - 1 - i) * slot;
                assert!(
                    dst[at..at + len] == src[i * len..(i + 1) * len],
                    "{count} x {len}: piece {i}"
                );
                assert!(
                    dst[at + len..at + slot].iter().all(|&b| b == 0xEE),
                    "{count} x {len}: bytes after piece {i}"
                );
            }
        }
    }

    /// Many copies at once from several threads through the shared copy threads: each one
    /// exact (a caller also works on its own jobs, so none waits for another's).
    #[test]
    fn concurrent_parallel_copies_are_exact() {
        std::thread::scope(|s| {
            for t in 0..4u8 {
                s.spawn(move || {
                    for round in 0..3u8 {
                        let len = PARALLEL_COPY_MIN + 4099 * usize::from(t + round);
                        let src: Vec<u8> = (0..len)
                            .map(|i| (i as u8) ^ t.wrapping_mul(31) ^ round)
                            .collect();
                        let mut dst = vec![0u8; len];
                        // SAFETY: `dst` is `len` bytes, distinct from `src`.
                        unsafe { copy_to_mapped(dst.as_mut_ptr(), &src) };
                        assert!(dst == src, "thread {t} round {round}");
                    }
                });
            }
        });
    }
}
