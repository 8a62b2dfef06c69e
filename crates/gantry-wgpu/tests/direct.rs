//! Direct writes (`WgpuOptions::direct_writes`): a batch of deferred small writes to buffers
//! the host may map is carried out on the host at submission, when no submission still uses
//! those buffers; otherwise it takes the scatter dispatch. Either way every byte lands as
//! program order says. Runs with wgpu's validation on; any error wgpu reports outside its
//! error scopes fails the test. Tests that need a device whose buffers the host maps
//! (`MAPPABLE_PRIMARY_BUFFERS`) skip elsewhere.

use gantry_core::{BufferDesc, BufferUsage, Device, MemoryLocation};
use gantry_wgpu::{WgpuBackend, WgpuOptions};

mod common;
use common::Rng;

fn device(name: &str) -> Option<Device<WgpuBackend>> {
    let backend = match WgpuBackend::new(&WgpuOptions {
        validation: true,
        direct_writes: Some(true),
        ..WgpuOptions::default()
    }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIPPED {name}: no wgpu adapter: {e}");
            return None;
        }
    };
    if !backend.direct_writes_enabled() {
        eprintln!("SKIPPED {name}: the adapter cannot map device-local buffers");
        return None;
    }
    Some(Device::new(backend))
}

fn finish(name: &str, d: &Device<WgpuBackend>) {
    d.wait_idle().expect("wait");
    let errors = d.raw().take_uncaptured_errors();
    assert!(
        errors.is_empty(),
        "{name}: uncaptured wgpu errors: {errors:#?}"
    );
}

const RW: BufferUsage = BufferUsage::TRANSFER_SRC
    .union(BufferUsage::TRANSFER_DST)
    .union(BufferUsage::STORAGE);

fn buffer(d: &Device<WgpuBackend>, label: &str, size: u64) -> gantry_core::Buffer<WgpuBackend> {
    d.create_buffer(&BufferDesc::new(size, RW, MemoryLocation::DeviceLocal).with_label(label))
        .expect("buffer")
}

/// Fills each buffer with random bytes; returns them, the model of each buffer.
fn fill(
    d: &Device<WgpuBackend>,
    bufs: &[gantry_core::Buffer<WgpuBackend>],
    rng: &mut Rng,
) -> Vec<Vec<u8>> {
    bufs.iter()
        .map(|b| {
            let init = rng.bytes(b.size() as usize);
            d.write(b, 0, &init).expect("initial contents");
            init
        })
        .collect()
}

/// Writes carried out on the GPU (scatter dispatches or copy regions) since `before`.
fn gpu_writes(d: &Device<WgpuBackend>, before: gantry_wgpu::ScatterStats) -> u64 {
    let now = d.raw().scatter_stats();
    now.scattered_writes + now.copied_writes - before.scattered_writes - before.copied_writes
}

fn check(name: &str, got: &[u8], model: &[u8]) {
    if let Some(i) = got.iter().zip(model).position(|(g, m)| g != m) {
        panic!(
            "{name}: byte {i} is {:#04x}, expected {:#04x}",
            got[i], model[i]
        );
    }
    assert_eq!(got.len(), model.len(), "{name}: length");
}

/// Random small writes (4-byte multiples up to 1 KiB, some over earlier ones) through
/// `write_many` and `write`, applied to `model` as well; returns how many.
fn random_writes(
    rng: &mut Rng,
    batch: &mut gantry_core::Batch<WgpuBackend>,
    buf: &gantry_core::Buffer<WgpuBackend>,
    model: &mut [u8],
) -> u64 {
    let size = model.len() as u64;
    let datas: Vec<(u64, Vec<u8>)> = (0..1500)
        .map(|_| {
            let len = 4 * (1 + rng.below(256));
            (4 * rng.below((size - len) / 4), rng.bytes(len as usize))
        })
        .collect();
    let refs: Vec<(u64, &[u8])> = datas.iter().map(|(o, b)| (*o, &b[..])).collect();
    batch.write_many(buf, &refs).expect("write_many");
    for (at, bytes) in &datas {
        model[*at as usize..*at as usize + bytes.len()].copy_from_slice(bytes);
    }
    for _ in 0..500 {
        let len = 4 * (1 + rng.below(64));
        let at = 4 * rng.below((size - len) / 4);
        let data = rng.bytes(len as usize);
        batch.write(buf, at, &data).expect("write");
        model[at as usize..(at + len) as usize].copy_from_slice(&data);
    }
    2000
}

#[test]
fn idle_batches_write_on_the_host() {
    let Some(d) = device("idle") else { return };
    let mut rng = Rng(0xD1EC7);
    let size = 4u64 << 20;
    let bufs = [buffer(&d, "direct a", size), buffer(&d, "direct b", size)];
    let mut models = fill(&d, &bufs, &mut rng);
    d.wait_idle().expect("idle");
    for round in 0..4 {
        let direct = d.raw().direct_writes();
        let stats = d.raw().scatter_stats();
        let mut batch = d.batch().expect("batch");
        let mut n = 0;
        for (buf, model) in bufs.iter().zip(&mut models) {
            n += random_writes(&mut rng, &mut batch, buf, model);
        }
        batch.submit().expect("submit");
        assert_eq!(
            d.raw().direct_writes() - direct,
            n,
            "round {round}: every write on the host"
        );
        assert_eq!(
            d.raw().scatter_stats(),
            stats,
            "round {round}: no dispatch, no copies"
        );
        for (buf, model) in bufs.iter().zip(&models) {
            check(
                &format!("round {round}"),
                &d.read(buf, 0, size).expect("read"),
                model,
            );
        }
    }
    finish("idle", &d);
}

/// A large copy into the destination is still running (or just done) when the batch of
/// writes is submitted: the writes must land after it either way (on the host once the copy
/// is done, else through the dispatch).
#[test]
fn writes_after_a_busy_copy_keep_program_order() {
    let Some(d) = device("busy") else { return };
    let mut rng = Rng(0xB05E);
    let size = 64u64 << 20;
    let src = buffer(&d, "busy src", size);
    let dst = buffer(&d, "busy dst", size);
    let mut model = rng.bytes(size as usize);
    d.write(&src, 0, &model).expect("source contents");
    d.wait_idle().expect("idle");
    for round in 0..3 {
        let direct = d.raw().direct_writes();
        let stats = d.raw().scatter_stats();
        let mut copy = d.batch().expect("copy batch");
        copy.copy(&src, 0, &dst, 0, size).expect("copy");
        copy.submit().expect("submit copy");
        // `model` is now what `dst` holds after the copy; the writes go over it.
        let mut batch = d.batch().expect("batch");
        let n = random_writes(&mut rng, &mut batch, &dst, &mut model);
        batch.submit().expect("submit writes");
        let on_host = d.raw().direct_writes() - direct;
        let on_gpu = gpu_writes(&d, stats);
        assert_eq!(on_host + on_gpu, n, "round {round}: {on_host} + {on_gpu}");
        eprintln!("round {round}: {on_host} on the host, {on_gpu} on the GPU");
        check(
            &format!("round {round} ({on_host} on the host)"),
            &d.read(&dst, 0, size).expect("read"),
            &model,
        );
        // The next round copies the original source again.
        model = d.read(&src, 0, size).expect("read source");
    }
    finish("busy", &d);
}

/// A batch that records anything else (here a copy into the destination before the writes)
/// keeps its writes on the GPU: a write on the host at submission would land before that
/// copy ran.
#[test]
fn batches_with_other_commands_keep_their_writes_on_the_gpu() {
    let Some(d) = device("mixed") else { return };
    let mut rng = Rng(0x313D);
    let size = 1u64 << 20;
    let src = buffer(&d, "mixed src", size);
    let dst = buffer(&d, "mixed dst", size);
    let src_bytes = rng.bytes(size as usize);
    d.write(&src, 0, &src_bytes).expect("source");
    let mut model = vec![0u8; size as usize];
    d.write(&dst, 0, &model).expect("zero");
    d.wait_idle().expect("idle");
    let direct = d.raw().direct_writes();
    let mut batch = d.batch().expect("batch");
    batch.copy(&src, 0, &dst, 0, size).expect("copy");
    model.copy_from_slice(&src_bytes);
    let n = random_writes(&mut rng, &mut batch, &dst, &mut model);
    batch.submit().expect("submit");
    assert_eq!(d.raw().direct_writes(), direct, "nothing on the host");
    assert!(n > 0);
    check("mixed", &d.read(&dst, 0, size).expect("read"), &model);
    finish("mixed", &d);
}

#[test]
fn direct_writes_can_be_turned_off() {
    let Some(d) = device("off") else { return };
    let size = 1u64 << 20;
    let buf = buffer(&d, "off", size);
    let mut model = vec![0u8; size as usize];
    d.write(&buf, 0, &model).expect("zero");
    d.wait_idle().expect("idle");
    d.raw().set_direct_writes(false);
    let stats = d.raw().scatter_stats();
    let mut rng = Rng(0x0FF);
    let mut batch = d.batch().expect("batch");
    let n = random_writes(&mut rng, &mut batch, &buf, &mut model);
    batch.submit().expect("submit");
    assert_eq!(d.raw().direct_writes(), 0);
    assert_eq!(
        gpu_writes(&d, stats),
        n,
        "every write through the dispatch or copies"
    );
    check("off", &d.read(&buf, 0, size).expect("read"), &model);
    finish("off", &d);
}

/// Small copies from upload buffers (how a `BufferManager` flushes its staging ring) are
/// carried out on the host too: the upload buffers carry `MAP_READ` with direct writes on.
#[test]
fn copies_from_upload_buffers_are_done_on_the_host() {
    let Some(d) = device("copies") else { return };
    let mut rng = Rng(0xC0B1E5);
    let size = 2u64 << 20;
    let dsts = [
        buffer(&d, "copy dst a", size),
        buffer(&d, "copy dst b", size),
    ];
    let mut models = fill(&d, &dsts, &mut rng);
    let ring_bytes = rng.bytes(1 << 20);
    let ring = d
        .create_buffer_init(
            Some("copy ring"),
            BufferUsage::TRANSFER_SRC,
            MemoryLocation::Upload,
            &ring_bytes,
        )
        .expect("upload buffer");
    d.wait_idle().expect("idle");
    let direct = d.raw().direct_writes();
    let stats = d.raw().scatter_stats();
    let mut batch = d.batch().expect("batch");
    let mut n = 0u64;
    for (dst, model) in dsts.iter().zip(&mut models) {
        // The source window starts well past the ring's start: offsets are rebased on it.
        let copies: Vec<(u64, u64, u64)> = (0..700)
            .map(|_| {
                let len = 4 * (1 + rng.below(128));
                let from = (256 << 10) + 4 * rng.below(((768 << 10) - len) / 4);
                let to = 4 * rng.below((size - len) / 4);
                (from, to, len)
            })
            .collect();
        batch.copy_many(&ring, dst, &copies).expect("copy_many");
        for &(from, to, len) in &copies {
            model[to as usize..(to + len) as usize]
                .copy_from_slice(&ring_bytes[from as usize..(from + len) as usize]);
        }
        n += copies.len() as u64;
        // Writes of host bytes to another destination join the same submission.
    }
    let extra = buffer(&d, "copy extra", size);
    let mut extra_model = vec![0u8; size as usize];
    d.write(&extra, 0, &extra_model).expect("zero");
    d.wait_idle().expect("idle");
    n += random_writes(&mut rng, &mut batch, &extra, &mut extra_model);
    batch.submit().expect("submit");
    assert_eq!(
        d.raw().direct_writes() - direct,
        n,
        "every copy and write on the host"
    );
    assert_eq!(d.raw().scatter_stats(), stats, "no dispatch, no copies");
    for (dst, model) in dsts.iter().zip(&models) {
        check("copies", &d.read(dst, 0, size).expect("read"), model);
    }
    check(
        "writes",
        &d.read(&extra, 0, size).expect("read"),
        &extra_model,
    );
    finish("copies", &d);
}
