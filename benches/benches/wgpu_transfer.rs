//! gantry-wgpu against plain wgpu, in the same run on the same device (PERF P2, P4, P6):
//! - upload 256 MiB from a host slice into device-local memory: gantry `Device::write`
//!   vs `queue.write_buffer` (4 MiB chunks) vs `wgpu::util::StagingBelt`;
//! - readback 256 MiB into a host slice: gantry `Device::read_into` vs copy + `map_async`;
//! - 10,000 scattered 256-byte writes per frame: a gantry batch (one scatter dispatch; and
//!   with the scatter path off, one copy region per write) vs `write_buffer` each vs
//!   `StagingBelt`, and the same bytes as one write for reference.
//!
//! The same gantry operations on the Vulkan backend (gantry-vulkan) run in the same groups,
//! so each figure has its wgpu peers beside it (issue 6).
//!
//! `cargo bench -p gantry-benches --bench wgpu_transfer`; `GANTRY_BENCH_QUICK=1` shortens
//! measurement (what docs/benchmarks-wgpu.md used on lavapipe).

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gantry_core::{BufferDesc, BufferUsage, Device, MemoryLocation};
use gantry_vulkan::{VulkanBackend, VulkanOptions};
use gantry_wgpu::{WgpuBackend, WgpuOptions};

use common::{SMALL, WRITES, configure, open, scattered_offsets, target, wait, wait_spin};

const BIG: u64 = 256 << 20;

fn open_vulkan() -> Device<VulkanBackend> {
    let backend = VulkanBackend::new(&VulkanOptions {
        wait_spin: wait_spin().unwrap_or(VulkanOptions::default().wait_spin),
        ..VulkanOptions::default()
    })
    .expect("a Vulkan device (lavapipe: mesa-vulkan-drivers)");
    Device::new(backend)
}

fn upload(c: &mut Criterion) {
    let gantry = open();
    let device = gantry.raw().wgpu_device().clone();
    let queue = gantry.raw().wgpu_queue().clone();
    let data: Vec<u8> = (0..BIG)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let gbuf = gantry
        .create_buffer(
            &BufferDesc::new(BIG, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
                .with_label("bench gantry upload"),
        )
        .expect("buffer");
    let wbuf = target(&device, BIG);
    let mut belt = wgpu::util::StagingBelt::new(device.clone(), 16 << 20);
    let vulkan = open_vulkan();
    let vbuf = vulkan
        .create_buffer(
            &BufferDesc::new(
                BIG,
                BufferUsage::TRANSFER_DST | BufferUsage::TRANSFER_SRC,
                MemoryLocation::DeviceLocal,
            )
            .with_label("bench gantry-vulkan upload"),
        )
        .expect("buffer");

    // The zero-copy path: the same bytes in host memory the device imported (imported once,
    // outside the measurement, as an application would).
    let host = vulkan
        .raw()
        .alloc_host_memory(BIG as usize)
        .ok()
        .map(|mut h| {
            h.as_mut_slice()
                .expect("host memory")
                .copy_from_slice(&data);
            h
        });

    let mut group = c.benchmark_group("upload_256MiB");
    group.throughput(Throughput::Bytes(BIG));
    group.bench_function("gantry_write", |b| {
        b.iter(|| {
            gantry.write(&gbuf, 0, black_box(&data)).expect("write");
            gantry.wait_idle().expect("wait");
        });
    });
    group.bench_function("gantry_vulkan_write", |b| {
        b.iter(|| {
            vulkan.write(&vbuf, 0, black_box(&data)).expect("write");
            vulkan.wait_idle().expect("wait");
        });
    });
    if let Some(host) = &host {
        group.bench_function("gantry_vulkan_write_from_host_memory", |b| {
            b.iter(|| {
                vulkan.write(&vbuf, 0, black_box(host)).expect("write");
                vulkan.wait_idle().expect("wait");
            });
        });
        vulkan.write(&vbuf, 0, host).expect("write");
        assert!(host.last_use() > 0, "the zero-copy upload was not taken");
        assert_eq!(
            vulkan.read(&vbuf, 0, BIG).expect("read"),
            data,
            "gantry-vulkan upload from host memory differs"
        );
    }
    group.bench_function("wgpu_write_buffer_4MiB_chunks", |b| {
        b.iter(|| {
            for (i, chunk) in data.chunks(4 << 20).enumerate() {
                queue.write_buffer(&wbuf, (i as u64) << 22, black_box(chunk));
            }
            wait(&device, queue.submit([]));
        });
    });
    group.bench_function("wgpu_staging_belt", |b| {
        b.iter(|| {
            let mut encoder = device.create_command_encoder(&Default::default());
            for (i, chunk) in data.chunks(16 << 20).enumerate() {
                let size = wgpu::BufferSize::new(chunk.len() as u64).expect("non-zero");
                belt.write_buffer(&mut encoder, &wbuf, (i as u64) << 24, size)
                    .copy_from_slice(black_box(chunk));
            }
            belt.finish();
            let index = queue.submit([encoder.finish()]);
            belt.recall();
            wait(&device, index);
        });
    });
    group.finish();
}

fn readback(c: &mut Criterion) {
    let gantry = open();
    let device = gantry.raw().wgpu_device().clone();
    let queue = gantry.raw().wgpu_queue().clone();
    let data: Vec<u8> = (0..BIG)
        .map(|i| (i.wrapping_mul(40_503) >> 3) as u8)
        .collect();
    let gbuf = gantry
        .create_buffer_init(
            Some("bench gantry readback"),
            BufferUsage::TRANSFER_SRC,
            MemoryLocation::DeviceLocal,
            &data,
        )
        .expect("buffer");
    let vulkan = open_vulkan();
    let vbuf = vulkan
        .create_buffer_init(
            Some("bench gantry-vulkan readback"),
            BufferUsage::TRANSFER_SRC,
            MemoryLocation::DeviceLocal,
            &data,
        )
        .expect("buffer");
    let wbuf = target(&device, BIG);
    queue.write_buffer(&wbuf, 0, &data);
    wait(&device, queue.submit([]));
    let mut out = vec![0u8; BIG as usize];

    let mut group = c.benchmark_group("readback_256MiB");
    group.throughput(Throughput::Bytes(BIG));
    group.bench_function("gantry_read_into", |b| {
        b.iter(|| {
            gantry
                .read_into(&gbuf, 0, black_box(&mut out))
                .expect("read")
        });
    });
    group.bench_function("gantry_vulkan_read_into", |b| {
        b.iter(|| {
            vulkan
                .read_into(&vbuf, 0, black_box(&mut out))
                .expect("read")
        });
    });
    // Checked on one read of its own, so the check holds whatever the filter ran.
    out.fill(0);
    vulkan.read_into(&vbuf, 0, &mut out).expect("read");
    assert_eq!(out, data, "gantry-vulkan readback differs");
    if let Ok(mut host) = vulkan.raw().alloc_host_memory(BIG as usize) {
        group.bench_function("gantry_vulkan_read_into_host_memory", |b| {
            b.iter(|| {
                let into = host.as_mut_slice().expect("host memory");
                vulkan.read_into(&vbuf, 0, black_box(into)).expect("read");
            });
        });
        vulkan
            .read_into(&vbuf, 0, host.as_mut_slice().expect("host memory"))
            .expect("read");
        assert!(host.last_use() > 0, "the zero-copy readback was not taken");
        assert_eq!(
            &host[..],
            &data[..],
            "gantry-vulkan readback into host memory differs"
        );
    }
    group.bench_function("wgpu_copy_map_async", |b| {
        b.iter(|| {
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench readback staging"),
                size: BIG,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&wbuf, 0, &staging, 0, BIG);
            let index = queue.submit([encoder.finish()]);
            staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
            wait(&device, index);
            out.copy_from_slice(&staging.get_mapped_range(..).expect("view"));
            staging.unmap();
            black_box(&out);
        });
    });
    group.finish();
    assert_eq!(out, data, "readback differs");
}

fn small_writes(c: &mut Criterion) {
    let gantry = open();
    let device = gantry.raw().wgpu_device().clone();
    let queue = gantry.raw().wgpu_queue().clone();
    let size = WRITES * 4 * SMALL;
    let offsets = scattered_offsets();
    let record: Vec<u8> = (0..SMALL).map(|i| i as u8).collect();
    let all: Vec<u8> = record.repeat(WRITES as usize);
    let gbuf = gantry
        .create_buffer(
            &BufferDesc::new(
                size,
                BufferUsage::TRANSFER_DST | BufferUsage::TRANSFER_SRC,
                MemoryLocation::DeviceLocal,
            )
            .with_label("bench gantry small writes"),
        )
        .expect("buffer");
    let wbuf = target(&device, size);
    let mut belt = wgpu::util::StagingBelt::new(device.clone(), 4 << 20);
    let copies = Device::new(
        WgpuBackend::new(&WgpuOptions {
            scatter: false,
            ..WgpuOptions::default()
        })
        .expect("a wgpu adapter"),
    );
    let cbuf = copies
        .create_buffer(
            &BufferDesc::new(size, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
                .with_label("bench gantry small writes, scatter off"),
        )
        .expect("buffer");
    let vulkan = open_vulkan();
    let vbuf = vulkan
        .create_buffer(
            &BufferDesc::new(size, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
                .with_label("bench gantry-vulkan small writes"),
        )
        .expect("buffer");

    let mut group = c.benchmark_group("10k_writes_256B_per_frame");
    group.throughput(Throughput::Bytes(WRITES * SMALL));
    group.bench_function("gantry_batch", |b| {
        b.iter(|| {
            let mut batch = gantry.batch().expect("batch");
            for &o in &offsets {
                batch.write(&gbuf, o, black_box(&record)).expect("write");
            }
            let index = batch.submit().expect("submit");
            gantry.wait(index, None).expect("wait");
        });
    });
    // When the row ran: every frame was one scatter dispatch, and the bytes landed.
    let stats = gantry.raw().scatter_stats();
    if stats.scattered_writes > 0 {
        assert_eq!(
            stats.copied_writes, 0,
            "gantry_batch fell back to copies: {stats}"
        );
        assert_eq!(stats.scattered_writes, stats.dispatches * WRITES, "{stats}");
        let got = gantry.read(&gbuf, 0, size).expect("read");
        for &o in &offsets {
            assert_eq!(
                &got[o as usize..(o + SMALL) as usize],
                &record[..],
                "at {o}"
            );
        }
    }
    // The same writes in one `write_many` call (the buffer's checks made once).
    let many: Vec<(u64, &[u8])> = offsets.iter().map(|&o| (o, &record[..])).collect();
    // Each frame timed on its own too: criterion's estimate (a mean) is printed beside the
    // frames' median and tail, to see whether a gap to the phases bench is in every frame.
    let mut frames: [Vec<std::time::Duration>; 4] = Default::default();
    group.bench_function("gantry_batch_write_many", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                let t = std::time::Instant::now();
                let mut batch = gantry.batch().expect("batch");
                batch
                    .write_many(&gbuf, black_box(&many))
                    .expect("write_many");
                let recorded = t.elapsed();
                let index = batch.submit().expect("submit");
                let submitted = t.elapsed();
                gantry.wait(index, None).expect("wait");
                let done = t.elapsed();
                frames[0].push(recorded);
                frames[1].push(submitted - recorded);
                frames[2].push(done - submitted);
                frames[3].push(done);
            }
            start.elapsed()
        });
    });
    for (phase, f) in ["record", "submit", "wait", "frame"]
        .iter()
        .zip(&mut frames)
    {
        print_frames(&format!("gantry_batch_write_many {phase}"), f);
    }
    group.bench_function("gantry_vulkan_batch_write_many", |b| {
        b.iter(|| {
            let mut batch = vulkan.batch().expect("batch");
            batch
                .write_many(&vbuf, black_box(&many))
                .expect("write_many");
            let index = batch.submit().expect("submit");
            vulkan.wait(index, None).expect("wait");
        });
    });
    // The same batch with the scatter path off: every write a copy region (the path before
    // gantry_core::scatter), on its own device, in the same run.
    group.bench_function("gantry_batch_scatter_off", |b| {
        b.iter(|| {
            let mut batch = copies.batch().expect("batch");
            for &o in &offsets {
                batch.write(&cbuf, o, black_box(&record)).expect("write");
            }
            let index = batch.submit().expect("submit");
            copies.wait(index, None).expect("wait");
        });
    });
    group.bench_function("gantry_vulkan_batch", |b| {
        b.iter(|| {
            let mut batch = vulkan.batch().expect("batch");
            for &o in &offsets {
                batch.write(&vbuf, o, black_box(&record)).expect("write");
            }
            let index = batch.submit().expect("submit");
            vulkan.wait(index, None).expect("wait");
        });
    });
    // Where a frame's time goes: recording the 10,000 writes alone (the batch is dropped
    // unsubmitted, its staging returned), on each backend.
    group.bench_function("gantry_batch_record_only", |b| {
        b.iter(|| {
            let mut batch = gantry.batch().expect("batch");
            for &o in &offsets {
                batch.write(&gbuf, o, black_box(&record)).expect("write");
            }
            drop(black_box(batch));
        });
    });
    group.bench_function("gantry_vulkan_batch_record_only", |b| {
        b.iter(|| {
            let mut batch = vulkan.batch().expect("batch");
            for &o in &offsets {
                batch.write(&vbuf, o, black_box(&record)).expect("write");
            }
            drop(black_box(batch));
        });
    });
    // Direct writes forced on (`VulkanOptions::direct_writes`): where device-local memory is
    // host-visible and coherent, the idle device's writes are done on the host. On a
    // discrete GPU whose buffers are not host-visible this falls back to the dispatch.
    let vdirect = Device::new(
        VulkanBackend::new(&VulkanOptions::default().with_direct_writes(Some(true)))
            .expect("a Vulkan device"),
    );
    let vdbuf = vdirect
        .create_buffer(
            &BufferDesc::new(size, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
                .with_label("bench gantry-vulkan small writes, direct"),
        )
        .expect("buffer");
    group.bench_function("gantry_vulkan_batch_direct", |b| {
        b.iter(|| {
            let mut batch = vdirect.batch().expect("batch");
            for &o in &offsets {
                batch.write(&vdbuf, o, black_box(&record)).expect("write");
            }
            let index = batch.submit().expect("submit");
            vdirect.wait(index, None).expect("wait");
        });
    });
    eprintln!(
        "gantry_vulkan_batch_direct: {} writes done on the host",
        vdirect.raw().direct_writes()
    );
    // The Vulkan backend with the scatter dispatch off: one copy region per write.
    let vcopies = Device::new(
        VulkanBackend::new(&VulkanOptions {
            scatter: Some(false),
            ..VulkanOptions::default()
        })
        .expect("a Vulkan device"),
    );
    let vcbuf = vcopies
        .create_buffer(
            &BufferDesc::new(size, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
                .with_label("bench gantry-vulkan small writes, scatter off"),
        )
        .expect("buffer");
    group.bench_function("gantry_vulkan_batch_scatter_off", |b| {
        b.iter(|| {
            let mut batch = vcopies.batch().expect("batch");
            for &o in &offsets {
                batch.write(&vcbuf, o, black_box(&record)).expect("write");
            }
            let index = batch.submit().expect("submit");
            vcopies.wait(index, None).expect("wait");
        });
    });
    group.bench_function("wgpu_write_buffer_each", |b| {
        b.iter(|| {
            for &o in &offsets {
                queue.write_buffer(&wbuf, o, black_box(&record));
            }
            wait(&device, queue.submit([]));
        });
    });
    group.bench_function("wgpu_staging_belt", |b| {
        b.iter(|| {
            let mut encoder = device.create_command_encoder(&Default::default());
            let size = wgpu::BufferSize::new(SMALL).expect("non-zero");
            for &o in &offsets {
                belt.write_buffer(&mut encoder, &wbuf, o, size)
                    .copy_from_slice(black_box(&record));
            }
            belt.finish();
            let index = queue.submit([encoder.finish()]);
            belt.recall();
            wait(&device, index);
        });
    });
    group.bench_function("reference_one_write_same_bytes", |b| {
        b.iter(|| {
            queue.write_buffer(&wbuf, 0, black_box(&all));
            wait(&device, queue.submit([]));
        });
    });
    group.finish();
}

/// Prints the median, 90th and 99th percentiles and mean of `frames` (each frame timed on its
/// own, warm-up included), in µs, on one line after `name`.
fn print_frames(name: &str, frames: &mut [std::time::Duration]) {
    if frames.is_empty() {
        return;
    }
    frames.sort_unstable();
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| us(frames[((frames.len() - 1) as f64 * q) as usize]);
    let mean = frames.iter().map(|&d| us(d)).sum::<f64>() / frames.len() as f64;
    println!(
        "{name}: {} frames timed one by one: median {:.1} µs, 90th {:.1}, 99th {:.1}, mean {:.1}",
        frames.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        mean
    );
}

fn benches(c: &mut Criterion) {
    let mut c = configure(c);
    upload(&mut c);
    readback(&mut c);
    small_writes(&mut c);
}

criterion_group!(wgpu_transfer, benches);
criterion_main!(wgpu_transfer);
