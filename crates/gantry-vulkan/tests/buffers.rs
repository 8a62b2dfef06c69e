//! Buffers on a validated device: each location, exact round trips, copies with offsets,
//! submission tracking, teardown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ash::vk;
use common::{pattern, with_backend};
use gantry_vulkan::{CopyRegion, Error, Location, VulkanBackend, VulkanOptions};

const ALL: [Location; 3] = [Location::DeviceLocal, Location::Upload, Location::Readback];
const SECOND: u64 = 1_000_000_000;

#[test]
fn creates_each_location() {
    with_backend("creates_each_location", |b| {
        for loc in ALL {
            // SAFETY: non-zero size.
            let buf = unsafe {
                b.create_buffer(
                    1000,
                    vk::BufferUsageFlags::STORAGE_BUFFER,
                    loc,
                    "each location",
                )
            }
            .unwrap();
            assert_eq!(buf.size(), 1000);
            assert_eq!(buf.location(), loc);
            assert_eq!(
                buf.mapped_ptr().is_some(),
                loc != Location::DeviceLocal,
                "{loc:?}"
            );
            // SAFETY: never submitted.
            unsafe { b.destroy_buffer(buf) };
        }
    });
}

#[test]
fn round_trips_exact_bytes_in_every_location() {
    with_backend("round_trips", round_trips);
}

#[test]
fn round_trips_with_non_coherent_paths() {
    // Every host-visible buffer treated as non-coherent: atom-rounded allocations, flushes
    // and invalidations, whose ranges the validation layer checks.
    let options = VulkanOptions::validated().with_non_coherent_memory(true);
    common::with_backend_options("round_trips_non_coherent", &options, |b| {
        round_trips(b);
        copies_with_offsets(b);
    });
}

fn round_trips(b: &VulkanBackend) {
    {
        for loc in ALL {
            for &(size, offset, len) in &[(4096u64, 0u64, 4096usize), (1000, 13, 777), (64, 63, 1)]
            {
                // SAFETY: non-zero size.
                let buf = unsafe {
                    b.create_buffer(size, vk::BufferUsageFlags::VERTEX_BUFFER, loc, "round trip")
                }
                .unwrap();
                let data = pattern(len, offset as u8);
                // SAFETY: in bounds; nothing pending on the buffer.
                let idx = unsafe { b.write_buffer(&buf, offset, &data) }.unwrap();
                if let Some(idx) = idx {
                    b.wait(idx, 10 * SECOND).unwrap();
                }
                let mut out = vec![0u8; len];
                // SAFETY: in bounds; the write completed.
                unsafe { b.read_buffer(&buf, offset, &mut out) }.unwrap();
                assert_eq!(out, data, "{loc:?} size {size} offset {offset}");
                // SAFETY: everything completed.
                unsafe { b.destroy_buffer(buf) };
            }
        }
    }
}

#[test]
fn copies_with_offsets_in_one_batch() {
    with_backend("copies_with_offsets", copies_with_offsets);
}

fn copies_with_offsets(b: &VulkanBackend) {
    {
        let usage = vk::BufferUsageFlags::STORAGE_BUFFER;
        // SAFETY: non-zero sizes.
        let (src, mid, dst) = unsafe {
            (
                b.create_buffer(1024, usage, Location::Upload, "src")
                    .unwrap(),
                b.create_buffer(1024, usage, Location::DeviceLocal, "mid")
                    .unwrap(),
                b.create_buffer(1024, usage, Location::Readback, "dst")
                    .unwrap(),
            )
        };
        let data = pattern(1024, 7);
        // SAFETY: in bounds, nothing pending. (New memory is not zeroed: clear `dst` first.)
        unsafe {
            assert_eq!(b.write_buffer(&src, 0, &data).unwrap(), None);
            assert_eq!(b.write_buffer(&dst, 0, &[0; 1024]).unwrap(), None);
        }
        let copies = [
            // Two regions src -> mid (merged into one command).
            CopyRegion {
                src: &src,
                src_offset: 0,
                dst: &mid,
                dst_offset: 100,
                size: 200,
            },
            CopyRegion {
                src: &src,
                src_offset: 500,
                dst: &mid,
                dst_offset: 600,
                size: 300,
            },
            // Reads what the first copies wrote: needs a barrier inside the batch.
            CopyRegion {
                src: &mid,
                src_offset: 100,
                dst: &dst,
                dst_offset: 4,
                size: 200,
            },
            CopyRegion {
                src: &mid,
                src_offset: 600,
                dst: &dst,
                dst_offset: 300,
                size: 300,
            },
            // Overwrites part of what the previous copy wrote: write-after-write.
            CopyRegion {
                src: &src,
                src_offset: 1000,
                dst: &dst,
                dst_offset: 4,
                size: 24,
            },
        ];
        // SAFETY: all regions in bounds, no overlap within one buffer; buffers live until the
        // wait below.
        let idx = unsafe { b.submit_copies(&copies) }.unwrap();
        b.wait(idx, 10 * SECOND).unwrap();
        let mut out = vec![0u8; 1024];
        // SAFETY: the copies completed.
        unsafe { b.read_buffer(&dst, 0, &mut out) }.unwrap();
        assert_eq!(&out[4..28], &data[1000..1024]);
        assert_eq!(&out[28..204], &data[24..200]);
        assert_eq!(&out[300..600], &data[500..800]);
        assert_eq!(&out[..4], &[0; 4]);
        // SAFETY: everything completed.
        unsafe {
            b.destroy_buffer(src);
            b.destroy_buffer(mid);
            b.destroy_buffer(dst);
        }
    }
}

#[test]
fn submissions_are_tracked_polled_and_called_back() {
    with_backend("submissions", |b| {
        let usage = vk::BufferUsageFlags::TRANSFER_DST;
        // SAFETY: non-zero sizes.
        let (a, c) = unsafe {
            (
                b.create_buffer(256, usage, Location::DeviceLocal, "a")
                    .unwrap(),
                b.create_buffer(256, usage, Location::DeviceLocal, "c")
                    .unwrap(),
            )
        };
        let fired = Arc::new(AtomicUsize::new(0));
        let mut last = 0;
        for i in 0..8 {
            let copy = [CopyRegion {
                src: &a,
                src_offset: 0,
                dst: &c,
                dst_offset: 0,
                size: 256,
            }];
            // SAFETY: in bounds; buffers live until the wait below.
            let idx = unsafe { b.submit_copies(&copy) }.unwrap();
            assert!(idx > last, "indices increase");
            last = idx;
            let fired = Arc::clone(&fired);
            b.on_completed(idx, move || {
                fired.fetch_add(1, Ordering::SeqCst);
            });
            if i % 3 == 0 {
                b.poll().unwrap();
            }
        }
        assert_eq!(b.last_submitted_index(), last);
        b.wait(last, 10 * SECOND).unwrap();
        assert!(b.completed_index().unwrap() >= last);
        assert_eq!(fired.load(Ordering::SeqCst), 8);
        // Already complete: the callback runs right away.
        let f2 = Arc::clone(&fired);
        b.on_completed(last, move || {
            f2.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(fired.load(Ordering::SeqCst), 9);
        // A zero timeout on a future index times out.
        assert_eq!(b.wait(last + 100, 0), Err(Error::Timeout));
        // SAFETY: everything completed.
        unsafe {
            b.destroy_buffer(a);
            b.destroy_buffer(c);
        }
    });
}

#[test]
fn teardown_with_work_in_flight_is_clean() {
    with_backend("teardown_in_flight", |b| {
        // SAFETY: non-zero size.
        let buf = unsafe {
            b.create_buffer(
                1 << 16,
                vk::BufferUsageFlags::empty(),
                Location::DeviceLocal,
                "t",
            )
        }
        .unwrap();
        // A staged write leaves a staging buffer and a submission in flight.
        // SAFETY: in bounds.
        let idx = unsafe { b.write_buffer(&buf, 0, &pattern(1 << 16, 1)) }
            .unwrap()
            .unwrap();
        b.wait(idx, 10 * SECOND).unwrap();
        // SAFETY: completed.
        unsafe { b.destroy_buffer(buf) };
        // A second staged write whose submission is still pending when the backend drops.
        // SAFETY: non-zero size.
        let buf2 = unsafe {
            b.create_buffer(
                1 << 16,
                vk::BufferUsageFlags::empty(),
                Location::DeviceLocal,
                "t2",
            )
        }
        .unwrap();
        // SAFETY: in bounds.
        let idx2 = unsafe { b.write_buffer(&buf2, 0, &pattern(1 << 16, 2)) }
            .unwrap()
            .unwrap();
        b.wait(idx2, 10 * SECOND).unwrap();
        // SAFETY: completed.
        unsafe { b.destroy_buffer(buf2) };
        // Staging buffers are retired by the waits; nothing is left live.
        assert_eq!(b.live_buffers(), 0);
    });
}

#[test]
fn unsupported_usages_are_refused() {
    with_backend("unsupported_usages", |b| {
        let f = b.enabled_features();
        let as_usage = vk::BufferUsageFlags::ACCELERATION_STRUCTURE_STORAGE_KHR;
        let sbt = vk::BufferUsageFlags::SHADER_BINDING_TABLE_KHR;
        assert_eq!(b.check_usage(as_usage).is_ok(), f.acceleration_structure);
        assert_eq!(b.check_usage(sbt).is_ok(), f.ray_tracing_pipeline);
        if !f.acceleration_structure {
            // SAFETY: non-zero size.
            let r = unsafe { b.create_buffer(64, as_usage, Location::DeviceLocal, "as") };
            assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
        }
        if f.buffer_device_address {
            // SAFETY: non-zero size.
            let buf = unsafe {
                b.create_buffer(
                    64,
                    vk::BufferUsageFlags::STORAGE_BUFFER
                        | vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS,
                    Location::DeviceLocal,
                    "bda",
                )
            }
            .unwrap();
            assert!(buf.device_address().is_some_and(|a| a != 0));
            // SAFETY: never submitted.
            unsafe { b.destroy_buffer(buf) };
        }
        // All the classic usages at once.
        let classic = vk::BufferUsageFlags::UNIFORM_BUFFER
            | vk::BufferUsageFlags::STORAGE_BUFFER
            | vk::BufferUsageFlags::INDEX_BUFFER
            | vk::BufferUsageFlags::VERTEX_BUFFER
            | vk::BufferUsageFlags::INDIRECT_BUFFER
            | vk::BufferUsageFlags::UNIFORM_TEXEL_BUFFER
            | vk::BufferUsageFlags::STORAGE_TEXEL_BUFFER;
        // SAFETY: non-zero size.
        let buf = unsafe { b.create_buffer(256, classic, Location::Upload, "classic") }.unwrap();
        // SAFETY: never submitted.
        unsafe { b.destroy_buffer(buf) };
    });
}

#[test]
fn memory_budget_and_limits() {
    with_backend("memory_budget", |b| {
        let heaps = b.memory_budget();
        assert!(!heaps.is_empty());
        let before: u64 = heaps.iter().map(|h| h.usage).sum();
        // SAFETY: non-zero size.
        let buf = unsafe {
            b.create_buffer(
                8 << 20,
                vk::BufferUsageFlags::STORAGE_BUFFER,
                Location::DeviceLocal,
                "big",
            )
        }
        .unwrap();
        let after: u64 = b.memory_budget().iter().map(|h| h.usage).sum();
        assert!(after >= before, "usage does not shrink when allocating");
        for h in &heaps {
            assert!(h.budget > 0 && h.size > 0);
        }
        let l = b.limits();
        assert!(l.non_coherent_atom_size.is_power_of_two());
        assert!(l.min_storage_buffer_offset_alignment.is_power_of_two());
        // SAFETY: never submitted.
        unsafe { b.destroy_buffer(buf) };
    });
}

#[test]
fn labels_reach_validation_messages() {
    // A deliberate validation error on a labelled buffer: its message must carry the label.
    common::init_tracing();
    let Ok(b) = gantry_vulkan::VulkanBackend::new(&gantry_vulkan::VulkanOptions::validated())
    else {
        eprintln!("SKIPPED labels_reach_validation_messages: no Vulkan device");
        return;
    };
    // SAFETY: non-zero size.
    let buf = unsafe {
        b.create_buffer(
            256,
            vk::BufferUsageFlags::STORAGE_BUFFER,
            Location::DeviceLocal,
            "gantry-label-42",
        )
    }
    .unwrap();
    let (memory, offset) = buf.raw_memory();
    // Binding an already bound buffer again (to the same memory and offset, so the driver state
    // does not change) is a validation error naming the buffer.
    // SAFETY: deliberately invalid usage for the test; rebinding to the same memory and offset
    // leaves lavapipe's state unchanged.
    let _ = unsafe { b.raw_device().bind_buffer_memory(buf.raw(), memory, offset) };
    let report = b.validation_report();
    assert!(report.errors >= 1, "{report:?}");
    assert!(
        report
            .messages
            .iter()
            .any(|m| m.contains("gantry-label-42")),
        "{:?}",
        report.messages
    );
    // SAFETY: never submitted.
    unsafe { b.destroy_buffer(buf) };
}

#[test]
fn synchronization_validation_is_live() {
    // Proves the harness would catch a hazard: two unsynchronized copies writing the same
    // bytes in one command buffer must be reported by synchronization validation.
    common::init_tracing();
    let Ok(b) = gantry_vulkan::VulkanBackend::new(&gantry_vulkan::VulkanOptions::validated())
    else {
        eprintln!("SKIPPED synchronization_validation_is_live: no Vulkan device");
        return;
    };
    let d = b.raw_device();
    let usage = vk::BufferUsageFlags::empty();
    // SAFETY: non-zero sizes.
    let (src, dst) = unsafe {
        (
            b.create_buffer(256, usage, Location::DeviceLocal, "hazard src")
                .unwrap(),
            b.create_buffer(256, usage, Location::DeviceLocal, "hazard dst")
                .unwrap(),
        )
    };
    let (family, queue) = b.universal_queue();
    // SAFETY: a pool, a command buffer and a fence of the test's own on the backend's device,
    // all destroyed before the backend; the queue is not used concurrently (single thread);
    // the write-after-write hazard is deliberate and harmless (same bytes, same values).
    unsafe {
        let pool = d
            .create_command_pool(
                &vk::CommandPoolCreateInfo::default().queue_family_index(family),
                None,
            )
            .unwrap();
        let cmd = d
            .allocate_command_buffers(
                &vk::CommandBufferAllocateInfo::default()
                    .command_pool(pool)
                    .command_buffer_count(1),
            )
            .unwrap()[0];
        d.begin_command_buffer(cmd, &vk::CommandBufferBeginInfo::default())
            .unwrap();
        let region = [vk::BufferCopy {
            src_offset: 0,
            dst_offset: 0,
            size: 256,
        }];
        d.cmd_copy_buffer(cmd, src.raw(), dst.raw(), &region);
        d.cmd_copy_buffer(cmd, src.raw(), dst.raw(), &region);
        d.end_command_buffer(cmd).unwrap();
        let fence = d
            .create_fence(&vk::FenceCreateInfo::default(), None)
            .unwrap();
        let cmds = [cmd];
        d.queue_submit(
            queue,
            &[vk::SubmitInfo::default().command_buffers(&cmds)],
            fence,
        )
        .unwrap();
        d.wait_for_fences(&[fence], true, u64::MAX).unwrap();
        d.destroy_fence(fence, None);
        d.destroy_command_pool(pool, None);
        b.destroy_buffer(src);
        b.destroy_buffer(dst);
    }
    let report = b.validation_report();
    assert!(
        report
            .messages
            .iter()
            .any(|m| m.contains("SYNC-HAZARD-WRITE-AFTER-WRITE")),
        "{report:#?}"
    );
}

#[test]
fn many_threads_share_one_backend() {
    with_backend("many_threads", |b| {
        std::thread::scope(|s| {
            for t in 0..4u8 {
                s.spawn(move || {
                    for i in 0..8u8 {
                        let data = pattern(300 + usize::from(i) * 10, t * 16 + i);
                        // SAFETY: non-zero size.
                        let buf = unsafe {
                            b.create_buffer(
                                512,
                                vk::BufferUsageFlags::STORAGE_BUFFER,
                                Location::DeviceLocal,
                                "threaded",
                            )
                        }
                        .unwrap();
                        // SAFETY: in bounds; the buffer is this thread's alone.
                        let idx = unsafe { b.write_buffer(&buf, 4, &data) }.unwrap().unwrap();
                        b.wait(idx, 10 * SECOND).unwrap();
                        let mut out = vec![0; data.len()];
                        // SAFETY: in bounds; the write completed.
                        unsafe { b.read_buffer(&buf, 4, &mut out) }.unwrap();
                        assert_eq!(out, data);
                        // SAFETY: every submission using it completed.
                        unsafe { b.destroy_buffer(buf) };
                    }
                });
            }
        });
    });
}

#[test]
fn adapters_are_listed_and_chosen() {
    common::init_tracing();
    let Ok(list) = VulkanBackend::enumerate_adapters() else {
        eprintln!("SKIPPED adapters_are_listed_and_chosen: no Vulkan loader");
        return;
    };
    let Some(first) = list.iter().find(|a| a.usable) else {
        eprintln!("SKIPPED adapters_are_listed_and_chosen: no usable adapter");
        return;
    };
    // By index and by (case-insensitive) name, each opening the adapter asked for.
    let by_index = VulkanOptions::validated()
        .with_adapter(gantry_vulkan::AdapterPreference::Index(first.index));
    let b = VulkanBackend::new(&by_index).unwrap();
    assert_eq!(b.adapter_info().name, first.name);
    drop(b);
    let needle = first
        .name
        .chars()
        .take(4)
        .collect::<String>()
        .to_uppercase();
    let by_name = VulkanOptions::validated()
        .with_adapter(gantry_vulkan::AdapterPreference::NameContains(needle));
    let b = VulkanBackend::new(&by_name).unwrap();
    assert_eq!(b.adapter_info().name, first.name);
    let counter = b.validation_counter();
    drop(b);
    assert!(counter.report().is_clean());
    // A name nothing has is a named error, not a fallback.
    let none = VulkanOptions::validated().with_adapter(
        gantry_vulkan::AdapterPreference::NameContains("no such adapter".into()),
    );
    assert!(matches!(
        VulkanBackend::new(&none),
        Err(Error::NoAdapter { .. })
    ));
}
