//! gantry-core's validating facade over the Vulkan backend, validated: creation at every
//! location, writes and reads (blocking and async), batches, mapping, copies with offsets,
//! deferred destruction, callbacks; the run must be free of validation messages.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gantry_core::{Backend, BufferDesc, BufferUsage, Device, Error, MapMode, MemoryLocation};
use gantry_vulkan::{VulkanBackend, VulkanOptions};

fn with_device(name: &str, f: impl FnOnce(&Device<VulkanBackend>)) {
    common::init_tracing();
    let backend = match VulkanBackend::new(&VulkanOptions::validated()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIPPED {name}: no Vulkan device: {e}");
            return;
        }
    };
    let counter = backend.validation_counter();
    let device = Device::new(backend);
    f(&device);
    drop(device);
    let report = counter.report();
    assert!(report.is_clean(), "{name}: {report:#?}");
}

#[test]
fn facade_round_trips_every_location() {
    with_device("facade_round_trips", |d| {
        assert_eq!(d.backend_name(), "vulkan");
        for loc in MemoryLocation::ALL {
            let usage =
                BufferUsage::STORAGE | BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
            let b = d
                .create_buffer(&BufferDesc::new(1024, usage, loc).with_label("facade"))
                .unwrap();
            let data = common::pattern(512, 5);
            if loc != MemoryLocation::Readback {
                d.write(&b, 256, &data).unwrap();
            } else {
                // Readback buffers are filled by copies.
                let up = d
                    .create_buffer(&BufferDesc::new(
                        1024,
                        BufferUsage::TRANSFER_SRC,
                        MemoryLocation::Upload,
                    ))
                    .unwrap();
                d.write(&up, 0, &data).unwrap();
                d.copy(&up, 0, &b, 256, 512).unwrap();
            }
            assert_eq!(d.read(&b, 256, 512).unwrap(), data, "{loc}");
            let fut = d.read_async(&b, 256, 512).unwrap();
            assert_eq!(gantry_core::block_on(fut).unwrap(), data, "{loc} async");
        }
        d.wait_idle().unwrap();
    });
}

#[test]
fn facade_batches_and_maps() {
    with_device("facade_batches", |d| {
        let u = BufferUsage::STORAGE | BufferUsage::TRANSFER_SRC;
        let a = d
            .create_buffer(&BufferDesc::new(4096, u, MemoryLocation::DeviceLocal))
            .unwrap();
        let rb = d
            .create_buffer(&BufferDesc::new(
                4096,
                BufferUsage::TRANSFER_DST,
                MemoryLocation::Readback,
            ))
            .unwrap();
        let mut batch = d.batch().unwrap();
        for i in 0..16u64 {
            batch.write(&a, i * 256, &[i as u8; 256]).unwrap();
        }
        batch.copy(&a, 0, &rb, 0, 4096).unwrap();
        let idx = batch.submit().unwrap();
        let fired = Arc::new(AtomicUsize::new(0));
        let f = Arc::clone(&fired);
        d.on_submitted_work_done(idx, move || {
            f.fetch_add(1, Ordering::SeqCst);
        });
        assert!(d.wait(idx, None).unwrap());
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        d.map(&rb, MapMode::Read).unwrap();
        let mut out = vec![0; 4096];
        d.read_mapped(&rb, 0, &mut out).unwrap();
        d.unmap(&rb).unwrap();
        for i in 0..16 {
            assert!(out[i * 256..(i + 1) * 256].iter().all(|&x| x == i as u8));
        }
        // A mapped upload buffer: write, unmap (flush), copy, read.
        let up = d
            .create_buffer(&BufferDesc::new(
                256,
                BufferUsage::TRANSFER_SRC,
                MemoryLocation::Upload,
            ))
            .unwrap();
        d.map(&up, MapMode::Write).unwrap();
        d.write_mapped(&up, 8, &[7; 200]).unwrap();
        assert!(matches!(
            d.copy(&up, 0, &a, 0, 256),
            Err(Error::BufferMapped { .. })
        ));
        d.unmap(&up).unwrap();
        d.copy(&up, 0, &a, 0, 256).unwrap();
        let back = d.read(&a, 0, 256).unwrap();
        assert_eq!(&back[8..208], &[7; 200][..]);
        // Device-local memory cannot be mapped, same error as every backend.
        assert!(matches!(
            d.map(&a, MapMode::Write),
            Err(Error::NotMappable { .. })
        ));
        // Dropped while in use: freed once the GPU is done.
        let mut batch = d.batch().unwrap();
        batch.copy(&a, 0, &rb, 0, 4096).unwrap();
        batch.submit().unwrap();
        drop(a);
        drop(rb);
        drop(up);
        d.wait_idle().unwrap();
        assert!(d.raw().allocated_bytes().is_some());
    });
}

#[test]
fn facade_reports_limits_and_usages() {
    with_device("facade_limits", |d| {
        let l = d.limits();
        assert_eq!(l.copy_alignment, 4);
        assert!(l.max_buffer_size > 0);
        let supported = l.supported_usage(MemoryLocation::DeviceLocal);
        let b = d.raw();
        assert_eq!(
            supported.contains(BufferUsage::ACCELERATION_STRUCTURE_STORAGE),
            b.enabled_features().acceleration_structure
        );
        if !supported.contains(BufferUsage::SHADER_BINDING_TABLE) {
            let r = d.create_buffer(&BufferDesc::new(
                256,
                BufferUsage::SHADER_BINDING_TABLE,
                MemoryLocation::DeviceLocal,
            ));
            assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
        }
        // Dropping an unsubmitted batch with staged writes leaks nothing.
        let a = d
            .create_buffer(&BufferDesc::new(
                256,
                BufferUsage::TRANSFER_DST,
                MemoryLocation::DeviceLocal,
            ))
            .unwrap();
        let mut batch = d.batch().unwrap();
        batch.write(&a, 0, &[1; 64]).unwrap();
        drop(batch);
        drop(a);
        d.poll().unwrap();
    });
}

/// Writes and reads spanning several pooled 32 MiB staging chunks (a large write starting in
/// the middle of a chunk a small write began; a read through the readback ring), on memory
/// treated as non-coherent so every flush and invalidation runs, with small scattered and
/// adjacent writes in the same batch; validated, repeated so pooled chunks are reused.
#[test]
fn facade_multi_chunk_transfers_non_coherent() {
    common::init_tracing();
    let options = VulkanOptions::validated().with_non_coherent_memory(true);
    let backend = match VulkanBackend::new(&options) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIPPED facade_multi_chunk_transfers_non_coherent: no Vulkan device: {e}");
            return;
        }
    };
    let counter = backend.validation_counter();
    let d = Device::new(backend);
    const BIG: usize = 72 << 20;
    let usage = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
    let b = d
        .create_buffer(
            &BufferDesc::new(BIG as u64 + 4096, usage, MemoryLocation::DeviceLocal)
                .with_label("multi-chunk"),
        )
        .unwrap();
    for round in 0..2u8 {
        let big = common::pattern(BIG, 11 + round);
        let small = common::pattern(4096, 40 + round);
        let mut batch = d.batch().unwrap();
        // Adjacent small writes (merged into one region), then the big one behind them.
        batch.write(&b, BIG as u64, &small[..2048]).unwrap();
        batch.write(&b, BIG as u64 + 2048, &small[2048..]).unwrap();
        batch.write(&b, 0, &big).unwrap();
        let index = batch.submit().unwrap();
        d.wait(index, None).unwrap();
        let mut out = vec![0u8; BIG + 4096];
        d.read_into(&b, 0, &mut out).unwrap();
        assert!(out[..BIG] == big[..], "round {round}: big write");
        assert!(out[BIG..] == small[..], "round {round}: small writes");
        // An unaligned interior read across chunk boundaries.
        let mid = d.read(&b, (32 << 20) - 3, (33 << 20) + 5).unwrap();
        assert!(
            mid[..] == big[(32 << 20) - 3..(65 << 20) + 2],
            "round {round}: interior"
        );
    }
    drop(b);
    d.wait_idle().unwrap();
    drop(d);
    let report = counter.report();
    assert!(report.is_clean(), "{report:#?}");
}

/// `HostMemory`: `Device::write` from it and `Device::read_into` into it are copied by the
/// device in place (its `last_use` moves), byte-exact, at unaligned sub-slices too; mutable
/// access after a write waits, and dropping it with work pending is clean.
#[test]
fn host_memory_zero_copy_round_trips() {
    with_device("host_memory_zero_copy", |d| {
        let mut host = match d.raw().alloc_host_memory((4 << 20) + 100) {
            Ok(h) => h,
            Err(gantry_vulkan::Error::Unsupported { what }) => {
                eprintln!("SKIPPED host_memory_zero_copy: {what}");
                return;
            }
            Err(e) => panic!("alloc_host_memory: {e}"),
        };
        assert_eq!(host.len(), (4 << 20) + 100);
        assert!(host.iter().all(|&b| b == 0), "zeroed");
        let usage = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
        let n: u64 = 4 << 20;
        let buf = d
            .create_buffer(&BufferDesc::new(n, usage, MemoryLocation::DeviceLocal))
            .unwrap();
        let data = common::pattern(n as usize, 9);
        host.as_mut_slice().unwrap()[..n as usize].copy_from_slice(&data);
        assert_eq!(host.last_use(), 0);
        d.write(&buf, 0, &host[..n as usize]).unwrap();
        let after_write = host.last_use();
        assert!(after_write > 0, "the zero-copy path was not taken");
        // Overwrite right away: `as_mut_slice` waits for the copy, so the device saw `data`.
        host.as_mut_slice().unwrap().fill(0xEE);
        assert_eq!(d.read(&buf, 0, n).unwrap(), data, "staged readback");
        // Read back into an odd, 4-aligned sub-slice of the host memory.
        d.read_into(
            &buf,
            256,
            &mut host.as_mut_slice().unwrap()[100..100 + (1 << 20)],
        )
        .unwrap();
        assert!(
            host.last_use() > after_write,
            "the zero-copy readback was not taken"
        );
        assert_eq!(&host[100..100 + (1 << 20)], &data[256..256 + (1 << 20)]);
        assert!(host[..100].iter().all(|&b| b == 0xEE));
        // Upload from an unaligned sub-slice to an offset.
        let part = host[100..100 + (1 << 20)].to_vec();
        d.write(&buf, 1 << 20, &host[100..100 + (1 << 20)]).unwrap();
        let mut expect = data.clone();
        expect[1 << 20..2 << 20].copy_from_slice(&part);
        assert_eq!(d.read(&buf, 0, n).unwrap(), expect);
        // Small transfers and plain slices take the staged path and stay exact.
        let small = common::pattern(4096, 1);
        host.as_mut_slice().unwrap()[..4096].copy_from_slice(&small);
        let before = host.last_use();
        d.write(&buf, 0, &host[..4096]).unwrap();
        assert_eq!(host.last_use(), before, "4 KiB should be staged");
        assert_eq!(d.read(&buf, 0, 4096).unwrap(), small);
        // Drop with an upload pending: waits, then frees; the buffer is intact.
        d.write(&buf, 0, &host[..n as usize]).unwrap();
        let sent = host[..n as usize].to_vec();
        drop(host);
        assert_eq!(d.read(&buf, 0, n).unwrap(), sent);
    });
}

/// A write large enough to be pipelined (pieces of half a staging chunk, several in flight)
/// lands exactly, at an offset and with a ragged last piece; twice, so the second one reuses
/// the pooled chunks the first retired.
#[test]
fn pipelined_large_write_is_exact() {
    with_device("pipelined_large_write", |d| {
        let n: u64 = (72 << 20) + 12;
        let usage = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
        let buf = d
            .create_buffer(&BufferDesc::new(n + 8, usage, MemoryLocation::DeviceLocal))
            .unwrap();
        for seed in [3u8, 4] {
            let data = common::pattern(n as usize, seed);
            d.write(&buf, 4, &data).unwrap();
            let back = d.read(&buf, 0, n + 8).unwrap();
            assert_eq!(&back[..4], &[0; 4][..]);
            assert!(back[4..4 + n as usize] == data[..], "seed {seed}");
            assert_eq!(&back[4 + n as usize..], &[0; 4][..]);
        }
    });
}

/// `Device::write_mapped_many`: many entries in increasing order (copied by the copy threads
/// from 256 KiB) and overlapping ones out of order (copied in order, the later winning), on
/// coherent memory and on memory treated as non-coherent (flushed ranges, checked by the
/// validation layer).
#[test]
fn write_mapped_many_lands_in_order() {
    for non_coherent in [false, true] {
        common::init_tracing();
        let options = VulkanOptions::validated().with_non_coherent_memory(non_coherent);
        let backend = match VulkanBackend::new(&options) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("SKIPPED write_mapped_many: no Vulkan device: {e}");
                return;
            }
        };
        let counter = backend.validation_counter();
        let d = Device::new(backend);
        let size = 1u64 << 20;
        let b = d
            .create_buffer(
                &BufferDesc::new(size, BufferUsage::TRANSFER_SRC, MemoryLocation::Upload)
                    .with_label("write_mapped_many"),
            )
            .unwrap();
        let mut model = common::pattern(size as usize, 11);
        d.write(&b, 0, &model).unwrap();
        d.map(&b, MapMode::Write).unwrap();
        // 2000 x 256 bytes at a 384-byte stride: 512,000 bytes, increasing, gaps untouched.
        let datas: Vec<Vec<u8>> = (0..2000u32)
            .map(|i| common::pattern(256, (i % 251) as u8))
            .collect();
        let writes: Vec<(u64, &[u8])> = datas
            .iter()
            .enumerate()
            .map(|(i, bytes)| (i as u64 * 384 + 4, &bytes[..]))
            .collect();
        d.write_mapped_many(&b, &writes).unwrap();
        for &(at, bytes) in &writes {
            model[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        }
        // Overlapping, out of order: the later wins.
        let late = [
            common::pattern(1000, 7),
            common::pattern(600, 8),
            common::pattern(40, 9),
        ];
        let writes = [
            (900_000u64, &late[0][..]),
            (900_500, &late[1][..]),
            (100, &late[2][..]),
        ];
        d.write_mapped_many(&b, &writes).unwrap();
        for &(at, bytes) in &writes {
            model[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        }
        // A bad entry anywhere: nothing written (the read below compares with the model,
        // which the first entry would have changed).
        let bad = [(0u64, &late[2][..]), (size - 8, &late[2][..])];
        assert!(matches!(
            d.write_mapped_many(&b, &bad),
            Err(Error::OutOfBounds { .. })
        ));
        d.unmap(&b).unwrap();
        assert!(
            d.read(&b, 0, size).unwrap() == model,
            "non-coherent {non_coherent}: bytes differ"
        );
        drop(b);
        drop(d);
        let report = counter.report();
        assert!(
            report.is_clean(),
            "non-coherent {non_coherent}: {report:#?}"
        );
    }
}
