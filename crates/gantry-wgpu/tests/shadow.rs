//! Batched writes through the host-side shadow (`WgpuOptions::write_shadow`), forced on so
//! that it runs on every adapter (by default only discrete GPUs use it): every byte lands as
//! program order says, whatever the mix of write sizes, alignments, staging chunks, deferred
//! scatter groups and copy regions. And a dropped batch's chunks go back to the pool.

use gantry_core::{BufferDesc, BufferUsage, Device, MemoryLocation};
use gantry_wgpu::{WgpuBackend, WgpuOptions};

mod common;
use common::Rng;

const SIZE: u64 = 1 << 20;

fn device(options: WgpuOptions) -> Option<Device<WgpuBackend>> {
    // Direct writes (on by default on CPU devices) only where a test asks for them.
    match WgpuBackend::new(&WgpuOptions {
        validation: true,
        direct_writes: options.direct_writes.or(Some(false)),
        ..options
    }) {
        Ok(b) => Some(Device::new(b)),
        Err(e) => {
            eprintln!("SKIPPED: no wgpu adapter: {e}");
            None
        }
    }
}

fn buffer(
    d: &Device<WgpuBackend>,
    label: &str,
    usage: BufferUsage,
) -> gantry_core::Buffer<WgpuBackend> {
    d.create_buffer(&BufferDesc::new(SIZE, usage, MemoryLocation::DeviceLocal).with_label(label))
        .expect("buffer")
}

fn random_batches(shadow: bool, chunk: u64, scatter: bool, direct: bool) {
    let Some(d) = device(WgpuOptions {
        write_shadow: Some(shadow),
        staging_chunk_bytes: chunk,
        scatter,
        direct_writes: Some(direct),
        ..WgpuOptions::default()
    }) else {
        return;
    };
    let rw = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
    let bufs = [
        buffer(&d, "shadow a", rw | BufferUsage::STORAGE),
        buffer(&d, "shadow b", rw),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ chunk);
    let mut models: Vec<Vec<u8>> = bufs
        .iter()
        .map(|b| {
            let init = rng.bytes(SIZE as usize);
            d.write(b, 0, &init).expect("initial contents");
            init
        })
        .collect();
    for round in 0..6 {
        let mut batch = d.batch().expect("batch");
        for _ in 0..1500 {
            let which = rng.below(2) as usize;
            // Mostly small (the shadow), some just above its 4 KiB limit, a few large.
            let len = match rng.below(20) {
                0 => 4096 + 4 * (1 + rng.below(2048)),
                1 => 4 * (1 + rng.below(1024)),
                2 => 4096,
                _ => 4 * (1 + rng.below(64)),
            };
            let at = 4 * rng.below((SIZE - len) / 4);
            let data = rng.bytes(len as usize);
            batch.write(&bufs[which], at, &data).expect("write");
            models[which][at as usize..(at + len) as usize].copy_from_slice(&data);
            if rng.below(50) == 0 {
                // Many writes in one call go straight into the mapping, between shadowed
                // ones (the window before them must be flushed first).
                let many: Vec<(u64, Vec<u8>)> = (0..1 + rng.below(80))
                    .map(|_| {
                        let len = 4 * (1 + rng.below(96));
                        (4 * rng.below((SIZE - len) / 4), rng.bytes(len as usize))
                    })
                    .collect();
                let refs: Vec<(u64, &[u8])> = many.iter().map(|(o, b)| (*o, &b[..])).collect();
                batch.write_many(&bufs[which], &refs).expect("write_many");
                for (at, bytes) in &many {
                    models[which][*at as usize..*at as usize + bytes.len()].copy_from_slice(bytes);
                }
            }
            if rng.below(100) == 0 {
                // A copy between the buffers reads what the batch wrote before it.
                let len = 4 * (1 + rng.below(256));
                let from = 4 * rng.below((SIZE - len) / 4);
                let to = 4 * rng.below((SIZE - len) / 4);
                batch
                    .copy(&bufs[which], from, &bufs[1 - which], to, len)
                    .expect("copy");
                let bytes = models[which][from as usize..(from + len) as usize].to_vec();
                models[1 - which][to as usize..(to + len) as usize].copy_from_slice(&bytes);
            }
        }
        batch.submit().expect("submit");
        for (b, model) in bufs.iter().zip(&models) {
            let got = d.read(b, 0, SIZE).expect("read");
            if let Some(i) = got.iter().zip(model).position(|(g, m)| g != m) {
                panic!(
                    "shadow {shadow}, chunk {chunk}, scatter {scatter}, direct {direct}, round \
                     {round}: byte {i} is {:#04x}, expected {:#04x}",
                    got[i], model[i]
                );
            }
        }
    }
    d.wait_idle().expect("idle");
    let errors = d.raw().take_uncaptured_errors();
    assert!(errors.is_empty(), "uncaptured wgpu errors: {errors:#?}");
}

#[test]
fn shadowed_writes_land_in_program_order() {
    random_batches(true, 8 << 20, true, false);
}

#[test]
fn shadowed_writes_across_small_chunks() {
    // 64 KiB chunks: windows end at chunk switches, and some writes get chunks of their own.
    random_batches(true, 64 << 10, true, false);
}

#[test]
fn shadowed_writes_as_copy_regions() {
    random_batches(true, 256 << 10, false, false);
}

#[test]
fn unshadowed_writes_land_in_program_order() {
    random_batches(false, 256 << 10, true, false);
}

/// With direct writes on, deferred writes wait in host memory; the copies and large writes
/// of these batches make them record everything, so the host bytes are staged when their
/// groups are emitted (mid-batch, before a copy reads the buffer, or at submission).
#[test]
fn host_held_writes_land_in_program_order() {
    random_batches(false, 256 << 10, true, true);
}

#[test]
fn dropped_batches_give_their_chunks_back() {
    let Some(d) = device(WgpuOptions::default()) else {
        return;
    };
    let buf = buffer(
        &d,
        "dropped",
        BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST,
    );
    let before = d.read(&buf, 0, SIZE).expect("read");
    let data = vec![0xA5u8; 256];
    for i in 0..50u64 {
        let mut batch = d.batch().expect("batch");
        for slot in 0..100 {
            batch
                .write(&buf, (slot * 1024 + i * 4) % SIZE, &data)
                .expect("write");
        }
        drop(batch);
    }
    assert_eq!(
        d.raw().staging_chunks_created(),
        1,
        "50 dropped batches in a row need one staging chunk"
    );
    assert!(
        d.read(&buf, 0, SIZE).expect("read") == before,
        "a dropped batch's writes landed"
    );
}

/// A `write_many` of about 3 MB of small writes, straight into the mapped staging chunks:
/// every write lands, across chunk switches, and a later plain write still wins over it.
#[test]
fn large_write_many_lands_across_chunks() {
    for chunk in [8u64 << 20, 256 << 10] {
        let Some(d) = device(WgpuOptions {
            staging_chunk_bytes: chunk,
            ..WgpuOptions::default()
        }) else {
            return;
        };
        let size = 8u64 << 20;
        let buf = d
            .create_buffer(
                &BufferDesc::new(
                    size,
                    BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST | BufferUsage::STORAGE,
                    MemoryLocation::DeviceLocal,
                )
                .with_label("write_many parts"),
            )
            .expect("buffer");
        let mut rng = Rng(77 ^ chunk);
        let mut model = rng.bytes(size as usize);
        d.write(&buf, 0, &model).expect("initial contents");
        // 6000 writes of 16..=1024 bytes at shuffled, disjoint 1 KiB slots: about 3 MB.
        let mut slots: Vec<u64> = (0..size / 1024).collect();
        for i in (1..slots.len()).rev() {
            slots.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let datas: Vec<(u64, Vec<u8>)> = slots[..6000]
            .iter()
            .map(|&s| {
                let len = 16 * (1 + rng.below(64));
                (s * 1024, rng.bytes(len as usize))
            })
            .collect();
        let writes: Vec<(u64, &[u8])> = datas.iter().map(|(o, b)| (*o, &b[..])).collect();
        let mut batch = d.batch().expect("batch");
        batch.write_many(&buf, &writes).expect("write_many");
        for (at, bytes) in &datas {
            model[*at as usize..*at as usize + bytes.len()].copy_from_slice(bytes);
        }
        let last = rng.bytes(64);
        let at = datas[2999].0;
        batch.write(&buf, at, &last).expect("write");
        model[at as usize..at as usize + 64].copy_from_slice(&last);
        batch.submit().expect("submit");
        let got = d.read(&buf, 0, size).expect("read");
        if let Some(i) = got.iter().zip(&model).position(|(g, m)| g != m) {
            panic!(
                "chunk {chunk}: byte {i} is {:#04x}, expected {:#04x}",
                got[i], model[i]
            );
        }
        d.wait_idle().expect("idle");
        let errors = d.raw().take_uncaptured_errors();
        assert!(errors.is_empty(), "uncaptured wgpu errors: {errors:#?}");
    }
}
