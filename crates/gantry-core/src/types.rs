//! Plain types shared by every layer: descriptors, usage flags, memory locations, limits,
//! adapter information and submission indices.

use core::fmt;

bitflags::bitflags! {
    /// What a buffer may be used for (G2). The facade adds some flags automatically (G3), see
    /// [`BufferUsage::with_automatic_flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct BufferUsage: u32 {
        /// Source of transfer commands: copies, readback through staging.
        const TRANSFER_SRC = 1 << 0;
        /// Destination of transfer commands: copies, writes through staging.
        const TRANSFER_DST = 1 << 1;
        /// Uniform (constant) buffer.
        const UNIFORM = 1 << 2;
        /// Storage buffer (read/write from shaders).
        const STORAGE = 1 << 3;
        /// Index buffer.
        const INDEX = 1 << 4;
        /// Vertex buffer.
        const VERTEX = 1 << 5;
        /// Indirect draw/dispatch arguments.
        const INDIRECT = 1 << 6;
        /// Uniform texel buffer.
        const UNIFORM_TEXEL = 1 << 7;
        /// Storage texel buffer.
        const STORAGE_TEXEL = 1 << 8;
        /// Buffer device address (`vkGetBufferDeviceAddress`).
        const DEVICE_ADDRESS = 1 << 9;
        /// Read-only input to acceleration-structure builds (vertices, indices, instances).
        const ACCELERATION_STRUCTURE_INPUT = 1 << 10;
        /// Backing storage of an acceleration structure.
        const ACCELERATION_STRUCTURE_STORAGE = 1 << 11;
        /// Ray-tracing shader binding table.
        const SHADER_BINDING_TABLE = 1 << 12;
    }
}

impl BufferUsage {
    /// The usage after gantry's automatic flags (G3), given what the device supports at the
    /// buffer's location:
    /// - vertex, index and storage buffers get `TRANSFER_DST` (they are filled by uploads);
    /// - storage buffers get `DEVICE_ADDRESS` where `supported` contains it;
    /// - [`MemoryLocation::Upload`] buffers get `TRANSFER_SRC`, [`MemoryLocation::Readback`]
    ///   buffers get `TRANSFER_DST` (that is what staging memory is for).
    #[must_use]
    pub fn with_automatic_flags(self, location: MemoryLocation, supported: BufferUsage) -> Self {
        let mut usage = self;
        if usage.intersects(Self::VERTEX | Self::INDEX | Self::STORAGE) {
            usage |= Self::TRANSFER_DST;
        }
        if usage.contains(Self::STORAGE) && supported.contains(Self::DEVICE_ADDRESS) {
            usage |= Self::DEVICE_ADDRESS;
        }
        match location {
            MemoryLocation::DeviceLocal => {}
            MemoryLocation::Upload => usage |= Self::TRANSFER_SRC,
            MemoryLocation::Readback => usage |= Self::TRANSFER_DST,
        }
        usage
    }
}

/// Where a buffer's memory lives (G3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemoryLocation {
    /// Device-local memory: fastest for the GPU, written and read through staging.
    DeviceLocal,
    /// Host-visible memory the CPU writes and the GPU reads (staging for uploads, per-frame
    /// data). Mappable for writing.
    Upload,
    /// Host-visible memory the GPU writes and the CPU reads. Mappable for reading.
    Readback,
}

impl MemoryLocation {
    /// Every location, for tables and tests.
    pub const ALL: [MemoryLocation; 3] = [Self::DeviceLocal, Self::Upload, Self::Readback];

    /// Whether the CPU can map this memory.
    #[must_use]
    pub const fn is_host_visible(self) -> bool {
        !matches!(self, Self::DeviceLocal)
    }

    /// The one [`MapMode`] a buffer at this location may be mapped with, if any.
    #[must_use]
    pub const fn map_mode(self) -> Option<MapMode> {
        match self {
            Self::DeviceLocal => None,
            Self::Upload => Some(MapMode::Write),
            Self::Readback => Some(MapMode::Read),
        }
    }
}

impl fmt::Display for MemoryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DeviceLocal => "device-local",
            Self::Upload => "upload",
            Self::Readback => "readback",
        })
    }
}

/// How a host-visible buffer is mapped: [`MemoryLocation::Upload`] buffers for writing,
/// [`MemoryLocation::Readback`] buffers for reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapMode {
    /// The CPU reads the mapped bytes.
    Read,
    /// The CPU writes the mapped bytes.
    Write,
}

/// Describes a buffer to create (G1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferDesc<'a> {
    /// Debug name; reaches the driver (G12).
    pub label: Option<&'a str>,
    /// Size in bytes, non-zero. The facade rounds it up to the device's alignments (G4).
    pub size: u64,
    /// What the buffer is used for; the facade adds automatic flags (G3).
    pub usage: BufferUsage,
    /// Where its memory lives.
    pub location: MemoryLocation,
    /// Create the buffer mapped for writing. For [`MemoryLocation::Upload`] the backend maps
    /// the memory itself; for the other locations the facade keeps a host copy that is
    /// uploaded at `unmap` (such buffers get `TRANSFER_DST`).
    pub mapped_at_creation: bool,
}

impl<'a> BufferDesc<'a> {
    /// A descriptor with no label, not mapped at creation.
    #[must_use]
    pub const fn new(size: u64, usage: BufferUsage, location: MemoryLocation) -> Self {
        Self {
            label: None,
            size,
            usage,
            location,
            mapped_at_creation: false,
        }
    }

    /// Sets the debug label.
    #[must_use]
    pub const fn with_label(mut self, label: &'a str) -> Self {
        self.label = Some(label);
        self
    }

    /// Sets `mapped_at_creation`.
    #[must_use]
    pub const fn with_mapped_at_creation(mut self, mapped: bool) -> Self {
        self.mapped_at_creation = mapped;
        self
    }
}

/// What the backend receives: a descriptor the facade has already validated, with automatic
/// flags added and the size rounded up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawBufferDesc<'a> {
    /// Debug name, to be given to the driver.
    pub label: Option<&'a str>,
    /// Size in bytes: non-zero, a multiple of the alignments in [`Limits`] that apply, at most
    /// `max_buffer_size`.
    pub size: u64,
    /// Usage, a subset of [`Limits::supported_usage`] for `location`.
    pub usage: BufferUsage,
    /// Memory location.
    pub location: MemoryLocation,
    /// Only ever `true` for [`MemoryLocation::Upload`]: return the buffer mapped for writing.
    pub mapped_at_creation: bool,
}

/// The device's limits and capabilities that gantry uses (G4), read from the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Alignment of offsets and sizes of writes and buffer-to-buffer copies (4 on wgpu).
    pub copy_alignment: u64,
    /// Alignment of the start of a mapped range (8 on wgpu).
    pub map_alignment: u64,
    /// Minimum alignment of uniform-buffer binding offsets.
    pub min_uniform_offset_alignment: u64,
    /// Minimum alignment of storage-buffer binding offsets.
    pub min_storage_offset_alignment: u64,
    /// `nonCoherentAtomSize`: granularity of flushes of non-coherent host-visible memory.
    pub non_coherent_atom_size: u64,
    /// Largest buffer the device accepts, in bytes.
    pub max_buffer_size: u64,
    /// Whether host-visible memory is coherent (no explicit flush/invalidate needed).
    pub host_coherent: bool,
    /// Whether device-local memory is also host-visible (integrated GPU, CPU device, BAR).
    pub unified_memory: bool,
    /// Usage flags this backend can give device-local buffers.
    pub device_local_usage: BufferUsage,
    /// Usage flags this backend can give upload buffers.
    pub upload_usage: BufferUsage,
    /// Usage flags this backend can give readback buffers.
    pub readback_usage: BufferUsage,
}

impl Limits {
    /// Usage flags supported at `location`.
    #[must_use]
    pub const fn supported_usage(&self, location: MemoryLocation) -> BufferUsage {
        match location {
            MemoryLocation::DeviceLocal => self.device_local_usage,
            MemoryLocation::Upload => self.upload_usage,
            MemoryLocation::Readback => self.readback_usage,
        }
    }

    /// The alignment a buffer's size is rounded up to (G4): the copy alignment; the
    /// non-coherent atom size for host-visible memory that is not coherent; the minimum
    /// uniform/storage offset alignment for uniform/storage buffers (so that arrays of
    /// such buffers' contents can be bound at aligned offsets).
    #[must_use]
    pub fn size_alignment(&self, usage: BufferUsage, location: MemoryLocation) -> u64 {
        let mut align = self.copy_alignment.max(1);
        if location.is_host_visible() && !self.host_coherent {
            align = align.max(self.non_coherent_atom_size);
        }
        if usage.contains(BufferUsage::UNIFORM) {
            align = align.max(self.min_uniform_offset_alignment);
        }
        if usage.contains(BufferUsage::STORAGE) {
            align = align.max(self.min_storage_offset_alignment);
        }
        align
    }
}

/// Rounds `value` UP to a multiple of `alignment` (which must be non-zero); `None` on
/// overflow. Unlike `value + value % alignment`, this is correct for every value.
#[must_use]
pub const fn align_up(value: u64, alignment: u64) -> Option<u64> {
    let rem = rem(value, alignment);
    if rem == 0 {
        Some(value)
    } else {
        value.checked_add(alignment - rem)
    }
}

/// Rounds `value` DOWN to a multiple of `alignment` (non-zero).
#[must_use]
pub const fn align_down(value: u64, alignment: u64) -> u64 {
    value - rem(value, alignment)
}

/// `value % alignment`, with a mask instead of a division for powers of two (every GPU
/// alignment is one; hot loops call these per write).
#[inline]
pub(crate) const fn rem(value: u64, alignment: u64) -> u64 {
    if alignment.is_power_of_two() {
        value & (alignment - 1)
    } else {
        value % alignment
    }
}

/// The kind of physical device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// A GPU with its own memory.
    DiscreteGpu,
    /// A GPU sharing memory with the CPU.
    IntegratedGpu,
    /// A virtual GPU.
    VirtualGpu,
    /// A software implementation running on the CPU (lavapipe, llvmpipe, SwiftShader).
    Cpu,
    /// Anything else.
    Other,
}

/// Which adapter a device runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterInfo {
    /// Adapter name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// The gantry backend and the API under it, e.g. "wgpu/vulkan".
    pub backend: String,
    /// Driver name and version.
    pub driver: String,
    /// Physical device type.
    pub device_type: DeviceType,
}

impl fmt::Display for AdapterInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{:?}] on {}, driver {}",
            self.name, self.device_type, self.backend, self.driver
        )
    }
}

/// Identifies one submission to the device's queue. Indices increase by one per submission,
/// starting at 1; [`SubmissionIndex::NONE`] (0) means "no submission", which is always
/// complete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubmissionIndex(pub u64);

impl SubmissionIndex {
    /// No submission: complete from the start.
    pub const NONE: SubmissionIndex = SubmissionIndex(0);
}

impl fmt::Display for SubmissionIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds_up_not_by_remainder() {
        assert_eq!(align_up(0, 256), Some(0));
        assert_eq!(align_up(1, 256), Some(256));
        assert_eq!(align_up(255, 256), Some(256));
        assert_eq!(align_up(256, 256), Some(256));
        assert_eq!(align_up(300, 256), Some(512)); // `300 + 300 % 256` would give 344
        assert_eq!(align_up(u64::MAX, 4), None);
        assert_eq!(align_down(300, 256), 256);
    }

    #[test]
    fn automatic_flags() {
        let all = BufferUsage::all();
        let u = BufferUsage::STORAGE.with_automatic_flags(MemoryLocation::DeviceLocal, all);
        assert!(u.contains(BufferUsage::TRANSFER_DST | BufferUsage::DEVICE_ADDRESS));
        let u = BufferUsage::STORAGE.with_automatic_flags(
            MemoryLocation::DeviceLocal,
            all - BufferUsage::DEVICE_ADDRESS,
        );
        assert!(!u.contains(BufferUsage::DEVICE_ADDRESS));
        let u = BufferUsage::UNIFORM.with_automatic_flags(MemoryLocation::DeviceLocal, all);
        assert_eq!(u, BufferUsage::UNIFORM);
        let u = BufferUsage::empty().with_automatic_flags(MemoryLocation::Upload, all);
        assert_eq!(u, BufferUsage::TRANSFER_SRC);
    }
}
