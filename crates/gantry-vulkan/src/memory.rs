//! Memory-type choice and non-coherent range rounding: pure code over the device's reported
//! properties, unit-tested without a device.
//!
//! gpu-allocator's own `MemoryLocation::CpuToGpu` prefers `DEVICE_LOCAL | HOST_VISIBLE` memory
//! (the PCIe BAR). On a discrete GPU such as the H100 that makes every upload a single CPU thread
//! writing across PCIe (see `PERF.md`). gantry picks the memory type itself, by the ranked
//! preferences below, and hands gpu-allocator requirements restricted to that one type.

use ash::vk;

/// Where a buffer's memory lives; the Vulkan-side mirror of gantry-core's memory locations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// Device-local memory, not mapped (`GpuOnly`).
    DeviceLocal,
    /// Host-visible memory the CPU writes and the GPU reads; staging for uploads.
    Upload,
    /// Host-visible, preferably cached, memory the GPU writes and the CPU reads.
    Readback,
}

type Flags = vk::MemoryPropertyFlags;

const fn or(a: Flags, b: Flags) -> Flags {
    Flags::from_raw(a.as_raw() | b.as_raw())
}

const DL: Flags = Flags::DEVICE_LOCAL;
const HV: Flags = Flags::HOST_VISIBLE;
const HV_HC: Flags = or(HV, Flags::HOST_COHERENT);
const HV_CA: Flags = or(HV, Flags::HOST_CACHED);
const HV_HC_CA: Flags = or(HV_HC, Flags::HOST_CACHED);
const NONE: Flags = Flags::empty();

/// Device-local: VRAM the CPU cannot see first, so BAR memory stays free for whoever needs it.
const DEVICE_LOCAL_PREFS: &[(Flags, Flags)] = &[(DL, HV), (DL, NONE), (NONE, NONE)];
/// Staging: cached system memory (fast CPU writes, DMA by the copy engine), then any system
/// memory, and only then BAR VRAM or whatever is host-visible.
const UPLOAD_PREFS: &[(Flags, Flags)] = &[
    (HV_HC_CA, DL),
    (HV_CA, DL),
    (HV_HC, DL),
    (HV, DL),
    (HV_HC, NONE),
    (HV, NONE),
];
/// Readback: cached memory, so CPU reads are not uncached PCIe or write-combined reads.
const READBACK_PREFS: &[(Flags, Flags)] = &[
    (HV_HC_CA, DL),
    (HV_CA, DL),
    (HV_HC_CA, NONE),
    (HV_CA, NONE),
    (HV_HC, NONE),
    (HV, NONE),
];

/// Ranked `(required, forbidden)` property sets per location, best first.
fn preferences(location: Location) -> &'static [(Flags, Flags)] {
    match location {
        Location::DeviceLocal => DEVICE_LOCAL_PREFS,
        Location::Upload => UPLOAD_PREFS,
        Location::Readback => READBACK_PREFS,
    }
}

/// Chooses the memory type for `location` among the types allowed by `allowed_bits` (a
/// `VkMemoryRequirements::memoryTypeBits`), or `None` when no allowed type qualifies (for the
/// host-visible locations, no host-visible type at all).
pub fn choose_memory_type(
    types: &[vk::MemoryType],
    allowed_bits: u32,
    location: Location,
) -> Option<u32> {
    for &(required, forbidden) in preferences(location) {
        let found = types.iter().enumerate().find(|(i, t)| {
            allowed_bits & (1 << i) != 0
                && t.property_flags.contains(required)
                && !t.property_flags.intersects(forbidden)
                // Never lazily allocated or protected memory for buffers.
                && !t
                    .property_flags
                    .intersects(Flags::LAZILY_ALLOCATED | Flags::PROTECTED)
        });
        if let Some((i, _)) = found {
            return Some(i as u32);
        }
    }
    None
}

/// The range to flush or invalidate for `[offset, offset + size)` of an allocation that starts
/// at `alloc_offset` in its `VkDeviceMemory` and spans `alloc_size` bytes, rounded out to
/// `atom` (`nonCoherentAtomSize`, a power of two) as `VkMappedMemoryRange` requires, and
/// clamped to the allocation's end. Returns `(memory_offset, memory_size)`.
///
/// The backend allocates non-coherent memory with an alignment of at least `atom` and a size
/// rounded up to `atom`, so the rounded range never reaches outside the allocation (another
/// allocation's bytes would be flushed harmlessly, but `offset + size` could pass the end of the
/// `VkDeviceMemory`, which the specification forbids).
///
/// # Panics
/// In debug builds, when `atom` is not a power of two or the range lies outside the allocation.
pub fn non_coherent_range(
    alloc_offset: u64,
    alloc_size: u64,
    offset: u64,
    size: u64,
    atom: u64,
) -> (u64, u64) {
    debug_assert!(atom.is_power_of_two());
    debug_assert!(
        offset
            .checked_add(size)
            .is_some_and(|end| end <= alloc_size)
    );
    let start = alloc_offset + offset;
    let end = start + size;
    let alloc_end = alloc_offset + alloc_size;
    let aligned_start = start & !(atom - 1);
    let aligned_end = end
        .div_ceil(atom)
        .saturating_mul(atom)
        .min(alloc_end.next_multiple_of(atom));
    // Never start before the allocation when it is not itself atom-aligned (it always is for
    // non-coherent memory, see above; this keeps the function total).
    let aligned_start = aligned_start.max(alloc_offset & !(atom - 1));
    (aligned_start, aligned_end - aligned_start)
}

/// Rounds a memory requirement for non-coherent memory: alignment at least `atom`, size a
/// multiple of `atom`.
pub fn round_requirements_for_atom(
    req: vk::MemoryRequirements,
    atom: u64,
) -> vk::MemoryRequirements {
    vk::MemoryRequirements {
        size: req.size.next_multiple_of(atom),
        alignment: req.alignment.max(atom),
        memory_type_bits: req.memory_type_bits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(flags: Flags) -> vk::MemoryType {
        vk::MemoryType {
            property_flags: flags,
            heap_index: 0,
        }
    }

    /// The H100's memory types as listed in PERF.md.
    fn h100() -> Vec<vk::MemoryType> {
        vec![
            t(Flags::DEVICE_LOCAL),
            t(Flags::HOST_VISIBLE | Flags::HOST_COHERENT),
            t(Flags::HOST_VISIBLE | Flags::HOST_COHERENT | Flags::HOST_CACHED),
            t(Flags::DEVICE_LOCAL | Flags::HOST_VISIBLE | Flags::HOST_COHERENT),
        ]
    }

    #[test]
    fn h100_upload_uses_cached_system_memory_not_bar() {
        let types = h100();
        assert_eq!(choose_memory_type(&types, !0, Location::Upload), Some(2));
        assert_eq!(choose_memory_type(&types, !0, Location::Readback), Some(2));
        assert_eq!(
            choose_memory_type(&types, !0, Location::DeviceLocal),
            Some(0)
        );
    }

    #[test]
    fn respects_allowed_bits_and_falls_back() {
        let types = h100();
        // Cached type not allowed: plain system memory.
        assert_eq!(
            choose_memory_type(&types, 0b1011, Location::Upload),
            Some(1)
        );
        // Only BAR allowed: BAR.
        assert_eq!(
            choose_memory_type(&types, 0b1000, Location::Upload),
            Some(3)
        );
        // Only device-local, not host-visible: nothing for upload.
        assert_eq!(choose_memory_type(&types, 0b0001, Location::Upload), None);
    }

    #[test]
    fn unified_memory_single_type() {
        // lavapipe: one type with everything.
        let types = vec![t(Flags::DEVICE_LOCAL
            | Flags::HOST_VISIBLE
            | Flags::HOST_COHERENT
            | Flags::HOST_CACHED)];
        for loc in [Location::DeviceLocal, Location::Upload, Location::Readback] {
            assert_eq!(choose_memory_type(&types, 1, loc), Some(0));
        }
    }

    #[test]
    fn non_coherent_cached_readback_is_chosen() {
        let types = vec![
            t(Flags::DEVICE_LOCAL),
            t(Flags::HOST_VISIBLE | Flags::HOST_COHERENT),
            t(Flags::HOST_VISIBLE | Flags::HOST_CACHED),
        ];
        assert_eq!(choose_memory_type(&types, !0, Location::Readback), Some(2));
        assert_eq!(choose_memory_type(&types, !0, Location::Upload), Some(2));
    }

    #[test]
    fn flush_range_rounds_out_to_the_atom() {
        // Allocation at 256 in its memory, 1024 bytes; atom 64.
        assert_eq!(non_coherent_range(256, 1024, 0, 1, 64), (256, 64));
        assert_eq!(non_coherent_range(256, 1024, 10, 100, 64), (256, 128));
        assert_eq!(non_coherent_range(256, 1024, 64, 64, 64), (320, 64));
        assert_eq!(non_coherent_range(256, 1024, 63, 2, 64), (256, 128));
        // The whole allocation.
        assert_eq!(non_coherent_range(256, 1024, 0, 1024, 64), (256, 1024));
        // Ending at the allocation's end stays inside it.
        assert_eq!(non_coherent_range(256, 1024, 1000, 24, 64), (1216, 64));
        // Empty range at an unaligned offset: an atom-aligned empty-or-covering range.
        let (o, s) = non_coherent_range(0, 128, 70, 0, 64);
        assert_eq!(o % 64, 0);
        assert!(o <= 70 && o + s >= 70);
    }

    #[test]
    fn flush_range_is_always_valid() {
        // Exhaustive over small values: aligned, covering, inside the rounded allocation.
        let atom = 16;
        for alloc_offset in (0..64).step_by(16) {
            let alloc_size = 80; // multiple of the atom, as the backend guarantees
            for offset in 0..alloc_size {
                for size in 0..=(alloc_size - offset) {
                    let (o, s) = non_coherent_range(alloc_offset, alloc_size, offset, size, atom);
                    assert_eq!(o % atom, 0);
                    assert_eq!(s % atom, 0);
                    assert!(o <= alloc_offset + offset);
                    assert!(o + s >= alloc_offset + offset + size);
                    assert!(o >= alloc_offset);
                    assert!(o + s <= alloc_offset + alloc_size);
                }
            }
        }
    }

    #[test]
    fn requirements_rounding() {
        let r = round_requirements_for_atom(
            vk::MemoryRequirements {
                size: 100,
                alignment: 4,
                memory_type_bits: 3,
            },
            64,
        );
        assert_eq!((r.size, r.alignment, r.memory_type_bits), (128, 64, 3));
    }
}
