//! The scatter path of batched writes: which batches take one compute dispatch
//! ([`WgpuBackend::scatter_stats`]) and which keep their copy regions, and that every byte
//! lands as program order says either way. Runs with wgpu's validation on; any error wgpu
//! reports outside its error scopes fails the test.

use gantry_core::{Backend, BufferDesc, BufferUsage, Device, MemoryLocation, RawBufferDesc};
use gantry_wgpu::{ScatterStats, WgpuBackend, WgpuBuffer, WgpuOptions};

const SIZE: u64 = 1 << 20;

fn with_device(name: &str, options: WgpuOptions, f: impl FnOnce(&Device<WgpuBackend>)) {
    // Direct writes (on by default on CPU devices) would take these batches off the GPU.
    let backend = match WgpuBackend::new(&WgpuOptions {
        validation: true,
        direct_writes: options.direct_writes.or(Some(false)),
        ..options
    }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIPPED {name}: no wgpu adapter: {e}");
            return;
        }
    };
    let device = Device::new(backend);
    f(&device);
    device.wait_idle().expect("wait");
    let errors = device.raw().take_uncaptured_errors();
    assert!(
        errors.is_empty(),
        "{name}: uncaptured wgpu errors: {errors:#?}"
    );
}

/// Deterministic bytes.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn buffer(d: &Device<WgpuBackend>, label: &str) -> gantry_core::Buffer<WgpuBackend> {
    d.create_buffer(
        &BufferDesc::new(
            SIZE,
            BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST,
            MemoryLocation::DeviceLocal,
        )
        .with_label(label),
    )
    .expect("buffer")
}

/// Shuffled slot indices `0..n`.
fn shuffled(n: u64, seed: u32) -> Vec<u64> {
    let mut slots: Vec<u64> = (0..n).collect();
    let r = pattern(4 * n as usize, seed);
    for i in (1..slots.len()).rev() {
        let v = u32::from_le_bytes([r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]]);
        slots.swap(i, v as usize % (i + 1));
    }
    slots
}

fn stats_since(d: &Device<WgpuBackend>, before: ScatterStats) -> (u64, u64) {
    let now = d.raw().scatter_stats();
    (
        now.dispatches - before.dispatches,
        now.copied_groups - before.copied_groups,
    )
}

#[test]
fn disjoint_writes_take_one_dispatch() {
    with_device("disjoint", WgpuOptions::default(), |d| {
        let buf = buffer(d, "disjoint");
        let mut model = pattern(SIZE as usize, 1);
        d.write(&buf, 0, &model).expect("initial contents");
        let before = d.raw().scatter_stats();
        let mut batch = d.batch().expect("batch");
        for (i, slot) in shuffled(2048, 2).into_iter().enumerate() {
            // 4..=256 bytes at the start of a 512-byte slot.
            let len = 4 * (1 + i % 64);
            let data = pattern(len, 100 + i as u32);
            let at = (slot * 512) as usize;
            batch.write(&buf, at as u64, &data).expect("write");
            model[at..at + len].copy_from_slice(&data);
        }
        batch.submit().expect("submit");
        assert_eq!(stats_since(d, before), (1, 0), "one dispatch, no copies");
        assert!(
            d.read(&buf, 0, SIZE).expect("read") == model,
            "scattered bytes differ"
        );
    });
}

#[test]
fn rewritten_slots_take_a_dispatch_per_run() {
    with_device("rewritten", WgpuOptions::default(), |d| {
        let buf = buffer(d, "rewritten");
        let mut model = pattern(SIZE as usize, 5);
        d.write(&buf, 0, &model).expect("initial contents");
        let before = d.raw().scatter_stats();
        let mut batch = d.batch().expect("batch");
        // 1,000 disjoint 64-byte slots, then 600 of them again: the later wins.
        let slots = shuffled(1000, 11);
        for (i, &slot) in slots.iter().chain(&slots[..600]).enumerate() {
            let data = pattern(64, 100 + i as u32);
            let at = slot * 128;
            batch.write(&buf, at, &data).expect("write");
            model[at as usize..at as usize + 64].copy_from_slice(&data);
        }
        batch.submit().expect("submit");
        assert_eq!(stats_since(d, before), (2, 0), "two dispatches, no copies");
        assert!(
            d.read(&buf, 0, SIZE).expect("read") == model,
            "the later writes win"
        );
    });
}

#[test]
fn overlapping_writes_are_not_scattered() {
    with_device("overlapping", WgpuOptions::default(), |d| {
        let buf = buffer(d, "overlapping");
        let mut model = pattern(SIZE as usize, 3);
        d.write(&buf, 0, &model).expect("initial contents");
        let before = d.raw().scatter_stats();
        let mut batch = d.batch().expect("batch");
        // 500 writes of 256 bytes at 4-byte steps over 2 KiB: each overlaps many others and
        // the last write must win.
        for i in 0..500u64 {
            let at = (i * 196) % 2048;
            let data = pattern(256, 7 + i as u32);
            batch.write(&buf, at, &data).expect("write");
            model[at as usize..at as usize + 256].copy_from_slice(&data);
        }
        batch.submit().expect("submit");
        assert_eq!(stats_since(d, before), (0, 1), "kept as copies");
        assert!(
            d.read(&buf, 0, SIZE).expect("read") == model,
            "last write must win"
        );
    });
}

#[test]
fn copies_between_scattered_writes_keep_program_order() {
    with_device("interleaved", WgpuOptions::default(), |d| {
        let (a, b) = (buffer(d, "a"), buffer(d, "b"));
        let mut ma = pattern(SIZE as usize, 4);
        let mut mb = pattern(SIZE as usize, 5);
        d.write(&a, 0, &ma).expect("initial a");
        d.write(&b, 0, &mb).expect("initial b");
        let before = d.raw().scatter_stats();
        let mut batch = d.batch().expect("batch");
        let write =
            |batch: &mut gantry_core::Batch<WgpuBackend>, ma: &mut Vec<u8>, at: u64, seed: u32| {
                let data = pattern(128, seed);
                batch.write(&a, at, &data).expect("write");
                ma[at as usize..at as usize + 128].copy_from_slice(&data);
            };
        // 64 writes to a, a copy a -> b that must see them, 64 more writes over the same
        // range of a that the copy must not see, and a copy b -> a over part of it.
        for i in 0..64u64 {
            write(&mut batch, &mut ma, i * 256, i as u32);
        }
        batch.copy(&a, 0, &b, 4096, 16384).expect("copy");
        let copied = ma[..16384].to_vec();
        mb[4096..4096 + 16384].copy_from_slice(&copied);
        for i in 0..64u64 {
            write(&mut batch, &mut ma, i * 256 + 64, 1000 + i as u32);
        }
        batch.copy(&b, 0, &a, 8192, 4096).expect("copy");
        let copied = mb[..4096].to_vec();
        ma[8192..8192 + 4096].copy_from_slice(&copied);
        batch.submit().expect("submit");
        // The two copies are small enough to be deferred too, each alone in its group (too
        // few to scatter), so each stays a copy.
        assert_eq!(
            stats_since(d, before),
            (2, 2),
            "two dispatches around the copies"
        );
        assert!(d.read(&a, 0, SIZE).expect("read") == ma, "a differs");
        assert!(d.read(&b, 0, SIZE).expect("read") == mb, "b differs");
    });
}

#[test]
fn buffer_without_storage_usage_gets_copies() {
    with_device("no storage", WgpuOptions::default(), |d| {
        let backend = d.raw();
        // A buffer made with wgpu directly, without STORAGE, wrapped for the raw API.
        let raw = backend
            .wgpu_device()
            .create_buffer(&wgpu::BufferDescriptor {
                label: Some("no storage"),
                size: SIZE,
                usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
        let buf = WgpuBuffer::from_raw(raw, MemoryLocation::DeviceLocal);
        let before = backend.scatter_stats();
        let mut model = vec![0u8; SIZE as usize];
        let mut batch = backend.begin_batch().expect("batch");
        for (i, slot) in shuffled(256, 9).into_iter().enumerate() {
            let data = pattern(256, i as u32);
            let at = slot * 1024;
            // SAFETY: `buf` lives to the end of this test, is never mapped, has COPY_DST and
            // the range is aligned and in bounds.
            unsafe { backend.batch_write(&mut batch, &buf, at, &data) }.expect("write");
            model[at as usize..at as usize + 256].copy_from_slice(&data);
        }
        // SAFETY: the batch only uses `buf`, alive and unmapped.
        let idx = unsafe { backend.submit(batch) }.expect("submit");
        backend.wait(idx, None).expect("wait");
        assert_eq!(stats_since(d, before), (0, 0), "never deferred");
        let mut out = vec![0u8; SIZE as usize];
        // SAFETY: as above; COPY_SRC for the readback copy.
        unsafe { backend.read(&buf, 0, &mut out) }.expect("read");
        assert!(out == model, "bytes differ");
        // SAFETY: no batch uses it any more (waited above).
        unsafe { backend.destroy_buffer(buf) };
    });
}

#[test]
fn device_local_buffers_get_storage_usage() {
    with_device("usage", WgpuOptions::default(), |d| {
        let backend = d.raw();
        let desc = |usage, location| RawBufferDesc {
            label: None,
            size: 256,
            usage,
            location,
            mapped_at_creation: false,
        };
        // SAFETY: valid descriptors (usages the device supports at these locations).
        let (dst, src_only) = unsafe {
            (
                backend
                    .create_buffer(&desc(
                        BufferUsage::TRANSFER_DST,
                        MemoryLocation::DeviceLocal,
                    ))
                    .expect("buffer"),
                backend
                    .create_buffer(&desc(
                        BufferUsage::TRANSFER_SRC,
                        MemoryLocation::DeviceLocal,
                    ))
                    .expect("buffer"),
            )
        };
        assert!(dst.raw().usage().contains(wgpu::BufferUsages::STORAGE));
        assert!(!src_only.raw().usage().contains(wgpu::BufferUsages::STORAGE));
        // SAFETY: never used.
        unsafe {
            backend.destroy_buffer(dst);
            backend.destroy_buffer(src_only);
        }
    });
}

#[test]
fn scatter_can_be_turned_off() {
    let options = WgpuOptions {
        scatter: false,
        ..WgpuOptions::default()
    };
    with_device("scatter off", options, |d| {
        let buf = buffer(d, "off");
        let mut model = vec![0u8; SIZE as usize];
        d.write(&buf, 0, &model).expect("zero");
        let mut batch = d.batch().expect("batch");
        for (i, slot) in shuffled(512, 11).into_iter().enumerate() {
            let data = pattern(256, i as u32);
            let at = slot * 1024;
            batch.write(&buf, at, &data).expect("write");
            model[at as usize..at as usize + 256].copy_from_slice(&data);
        }
        batch.submit().expect("submit");
        assert_eq!(d.raw().scatter_stats(), ScatterStats::default());
        assert!(
            d.read(&buf, 0, SIZE).expect("read") == model,
            "bytes differ"
        );
    });
}

#[test]
fn writes_spread_over_staging_chunks_scatter_per_chunk() {
    // 64 KiB chunks: 300 writes of 256 bytes fill the first chunk (256 writes) and spill
    // into a second (44). Two groups, two dispatches; the first group's record table lands
    // in the second chunk (the two-copy path), the second's beside its data (one copy).
    let options = WgpuOptions {
        staging_chunk_bytes: 64 << 10,
        ..WgpuOptions::default()
    };
    with_device("chunks", options, |d| {
        let buf = buffer(d, "chunks");
        // wgpu zeroes new buffers; no initial write, whose staging chunk could serve the
        // batch (1 MiB, as large as the write) if it were back in the pool in time.
        let mut model = vec![0u8; SIZE as usize];
        let before = d.raw().scatter_stats();
        let mut batch = d.batch().expect("batch");
        for (i, slot) in shuffled(300, 13).into_iter().enumerate() {
            let data = pattern(256, 500 + i as u32);
            let at = slot * 2048 + 512;
            batch.write(&buf, at, &data).expect("write");
            model[at as usize..at as usize + 256].copy_from_slice(&data);
        }
        batch.submit().expect("submit");
        assert_eq!(stats_since(d, before), (2, 0), "one dispatch per chunk");
        assert!(
            d.read(&buf, 0, SIZE).expect("read") == model,
            "bytes differ"
        );
    });
}
