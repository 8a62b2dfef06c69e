//! The fast-path preparation: page-aligned host memory imported as a buffer
//! (`VK_EXT_external_memory_host`), round-tripping through device-local memory with no CPU
//! copy on the device side.

mod common;

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

use ash::vk;
use gantry_vulkan::{CopyRegion, Error, Location};

#[test]
fn imported_host_memory_round_trips() {
    common::with_backend("imported_host_memory_round_trips", |b| {
        let Some(align) = b.limits().min_imported_host_pointer_alignment else {
            eprintln!("SKIPPED imported_host_memory_round_trips: no VK_EXT_external_memory_host");
            return;
        };
        let size = 4 * align.max(4096) as usize;
        let layout = Layout::from_size_align(size, align as usize).unwrap();
        // SAFETY: non-zero size.
        let src_mem = NonNull::new(unsafe { alloc_zeroed(layout) }).unwrap();
        // SAFETY: as above.
        let dst_mem = NonNull::new(unsafe { alloc_zeroed(layout) }).unwrap();
        let data = common::pattern(size, 3);
        // SAFETY: `src_mem` is `size` bytes we own, nothing else references it.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), src_mem.as_ptr(), size) };

        // SAFETY: both allocations are page-aligned, `size` long, and freed only after the
        // imported buffers are destroyed; the host does not touch them while copies run.
        let (src, dst) = unsafe {
            (
                b.import_host_memory(
                    src_mem,
                    size as u64,
                    vk::BufferUsageFlags::empty(),
                    "import src",
                )
                .unwrap(),
                b.import_host_memory(
                    dst_mem,
                    size as u64,
                    vk::BufferUsageFlags::empty(),
                    "import dst",
                )
                .unwrap(),
            )
        };
        assert_eq!(src.mapped_ptr(), Some(src_mem));
        // SAFETY: non-zero size.
        let dl = unsafe {
            b.create_buffer(
                size as u64,
                vk::BufferUsageFlags::STORAGE_BUFFER,
                Location::DeviceLocal,
                "dl",
            )
        }
        .unwrap();
        let n = size as u64;
        // host memory -> device-local -> host memory, with an offset on the way back.
        let copies = [
            CopyRegion {
                src: &src,
                src_offset: 0,
                dst: &dl,
                dst_offset: 0,
                size: n,
            },
            CopyRegion {
                src: &dl,
                src_offset: 0,
                dst: &dst,
                dst_offset: 0,
                size: n - 64,
            },
        ];
        // SAFETY: in bounds; all buffers live until the wait.
        let idx = unsafe { b.submit_copies(&copies) }.unwrap();
        b.wait(idx, u64::MAX).unwrap();
        let mut out = vec![0u8; size];
        // SAFETY: the copy completed; coherent or invalidated by read_buffer.
        unsafe { b.read_buffer(&dst, 0, &mut out) }.unwrap();
        assert_eq!(&out[..size - 64], &data[..size - 64]);
        assert_eq!(&out[size - 64..], &vec![0u8; 64][..]);
        // SAFETY: the host memory was written by the device and the copy completed.
        let direct = unsafe { std::slice::from_raw_parts(dst_mem.as_ptr(), size - 64) };
        assert_eq!(direct, &data[..size - 64]);

        // A misaligned pointer is refused, not imported.
        // SAFETY: never imported (refused by the alignment check before any driver call).
        let bad = unsafe {
            b.import_host_memory(
                NonNull::new(src_mem.as_ptr().add(64)).unwrap(),
                n - align,
                vk::BufferUsageFlags::empty(),
                "bad",
            )
        };
        assert!(matches!(bad, Err(Error::Unsupported { .. })), "{bad:?}");

        // SAFETY: all work completed; the imports are released before the memory is freed.
        unsafe {
            b.destroy_buffer(src);
            b.destroy_buffer(dst);
            b.destroy_buffer(dl);
            dealloc(src_mem.as_ptr(), layout);
            dealloc(dst_mem.as_ptr(), layout);
        }
    });
}
