//! The `gantry` buffer manager against plain wgpu and gantry-core's device, in the same run
//! on the same device (PERF P2, P4, P5, P6, P7):
//! - upload 256 MiB from a host slice into device-local memory: manager (`GpuBuffer::write`,
//!   then a flush) vs `queue.write_buffer` (4 MiB chunks) vs `wgpu::util::StagingBelt` vs the raw
//!   backend under the facade (`gantry_core::Device::write`);
//! - readback 256 MiB: manager (`read().wait_into()`) vs `Device::read_into` vs copy + `map_async`;
//! - 10,000 uploads of 256 bytes per frame, scattered and adjacent: manager frame vs
//!   `write_buffer` each vs `StagingBelt`;
//! - acquiring a 64 KiB buffer from the manager's pool vs creating one.
//!
//! `cargo bench -p gantry-benches --bench manager`; `GANTRY_BENCH_QUICK=1` shortens the
//! measurement; `GANTRY_BENCH_BIG_MIB=N` sets the large transfer size (default 256).

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gantry::{BufferManager, ManagerConfig};
use gantry_core::{BufferDesc, BufferUsage, Device, MemoryLocation};
use gantry_wgpu::WgpuBackend;

use common::{SMALL, WRITES, configure, open, scattered_offsets, target, wait};

fn big() -> u64 {
    std::env::var("GANTRY_BENCH_BIG_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(256)
        << 20
}

fn manager(device: &Device<WgpuBackend>) -> BufferManager<WgpuBackend> {
    BufferManager::new(device.clone(), ManagerConfig::default()).expect("manager")
}

fn upload(c: &mut Criterion) {
    let big = big();
    let gantry = open();
    let m = manager(&gantry);
    let device = gantry.raw().wgpu_device().clone();
    let queue = gantry.raw().wgpu_queue().clone();
    let data: Vec<u8> = (0..big)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let mbuf = m
        .create_buffer(
            &BufferDesc::new(big, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
                .with_label("bench manager upload"),
        )
        .expect("buffer");
    let gbuf = gantry
        .create_buffer(
            &BufferDesc::new(big, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
                .with_label("bench core upload"),
        )
        .expect("buffer");
    let wbuf = target(&device, big);
    let mut belt = wgpu::util::StagingBelt::new(device.clone(), 16 << 20);

    let mut group = c.benchmark_group(format!("upload_{}MiB", big >> 20));
    group.throughput(Throughput::Bytes(big));
    group.bench_function("manager_write_flush", |b| {
        b.iter(|| {
            mbuf.write(0, black_box(&data)).expect("write");
            m.wait_idle().expect("wait");
        });
    });
    group.bench_function("core_device_write", |b| {
        b.iter(|| {
            gantry.write(&gbuf, 0, black_box(&data)).expect("write");
            gantry.wait_idle().expect("wait");
        });
    });
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
    let big = big();
    let gantry = open();
    let m = manager(&gantry);
    let device = gantry.raw().wgpu_device().clone();
    let queue = gantry.raw().wgpu_queue().clone();
    let data: Vec<u8> = (0..big)
        .map(|i| (i.wrapping_mul(40_503) >> 3) as u8)
        .collect();
    let gbuf = gantry
        .create_buffer_init(
            Some("bench readback"),
            BufferUsage::TRANSFER_SRC,
            MemoryLocation::DeviceLocal,
            &data,
        )
        .expect("buffer");
    let wbuf = target(&device, big);
    queue.write_buffer(&wbuf, 0, &data);
    wait(&device, queue.submit([]));
    let mut out = vec![0u8; big as usize];

    let mut group = c.benchmark_group(format!("readback_{}MiB", big >> 20));
    group.throughput(Throughput::Bytes(big));
    group.bench_function("manager_read_wait_into", |b| {
        b.iter(|| {
            m.read(&gbuf, 0, big)
                .expect("read")
                .wait_into(black_box(&mut out))
                .expect("wait");
        });
    });
    group.bench_function("core_device_read_into", |b| {
        b.iter(|| {
            gantry
                .read_into(&gbuf, 0, black_box(&mut out))
                .expect("read")
        });
    });
    group.bench_function("wgpu_copy_map_async", |b| {
        b.iter(|| {
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench readback staging"),
                size: big,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&wbuf, 0, &staging, 0, big);
            let index = queue.submit([encoder.finish()]);
            staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
            wait(&device, index);
            out.copy_from_slice(&staging.get_mapped_range(..).expect("view"));
            staging.unmap();
            black_box(&out);
        });
    });
    group.finish();
    let check = m.read(&gbuf, 0, big).expect("read").wait().expect("wait");
    assert!(check == data, "manager readback differs");
}

fn small_writes(c: &mut Criterion) {
    let gantry = open();
    let m = manager(&gantry);
    let device = gantry.raw().wgpu_device().clone();
    let queue = gantry.raw().wgpu_queue().clone();
    let size = WRITES * 4 * SMALL;
    let scattered = scattered_offsets();
    let adjacent: Vec<u64> = (0..WRITES).map(|i| i * SMALL).collect();
    let record: Vec<u8> = (0..SMALL).map(|i| i as u8).collect();
    let mbuf = m
        .create_buffer(
            &BufferDesc::new(size, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
                .with_label("bench manager small writes"),
        )
        .expect("buffer");
    let wbuf = target(&device, size);
    let mut belt = wgpu::util::StagingBelt::new(device.clone(), 4 << 20);

    for (name, offsets) in [("scattered", &scattered), ("adjacent", &adjacent)] {
        let mut group = c.benchmark_group(format!("10k_uploads_256B_per_frame_{name}"));
        group.throughput(Throughput::Bytes(WRITES * SMALL));
        group.bench_function("manager_frame", |b| {
            b.iter(|| {
                m.begin_frame().expect("begin");
                for &o in offsets.iter() {
                    m.upload(mbuf.buffer(), o, black_box(&record))
                        .expect("upload");
                }
                let index = m.end_frame().expect("end").expect("submitted");
                gantry.wait(index, None).expect("wait");
            });
        });
        group.bench_function("wgpu_write_buffer_each", |b| {
            b.iter(|| {
                for &o in offsets.iter() {
                    queue.write_buffer(&wbuf, o, black_box(&record));
                }
                wait(&device, queue.submit([]));
            });
        });
        group.bench_function("wgpu_staging_belt", |b| {
            b.iter(|| {
                let mut encoder = device.create_command_encoder(&Default::default());
                let size = wgpu::BufferSize::new(SMALL).expect("non-zero");
                for &o in offsets.iter() {
                    belt.write_buffer(&mut encoder, &wbuf, o, size)
                        .copy_from_slice(black_box(&record));
                }
                belt.finish();
                let index = queue.submit([encoder.finish()]);
                belt.recall();
                wait(&device, index);
            });
        });
        group.finish();
    }
}

fn acquire(c: &mut Criterion) {
    let gantry = open();
    let m = manager(&gantry);
    let usage = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST | BufferUsage::STORAGE;
    // Warm the pool.
    drop(
        m.acquire(64 << 10, usage, MemoryLocation::DeviceLocal)
            .expect("acquire"),
    );
    let mut group = c.benchmark_group("buffer_64KiB");
    group.bench_function("manager_acquire_release", |b| {
        b.iter(|| {
            let p = m
                .acquire(black_box(64 << 10), usage, MemoryLocation::DeviceLocal)
                .expect("acquire");
            black_box(p.id());
        });
    });
    group.bench_function("core_create_drop", |b| {
        b.iter(|| {
            let buf = gantry
                .create_buffer(&BufferDesc::new(
                    black_box(64 << 10),
                    usage,
                    MemoryLocation::DeviceLocal,
                ))
                .expect("create");
            black_box(buf.id());
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let mut c = configure(c);
    upload(&mut c);
    readback(&mut c);
    small_writes(&mut c);
    acquire(&mut c);
}

criterion_group!(manager_benches, benches);
criterion_main!(manager_benches);
