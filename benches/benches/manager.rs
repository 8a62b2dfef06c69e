//! The `gantry` buffer manager against plain wgpu and gantry-core's device, in the same run
//! (PERF P2, P4, P5, P6, P7):
//! - upload 256 MiB from a host slice into device-local memory: manager (`GpuBuffer::write`,
//!   then a flush) vs `queue.write_buffer` (4 MiB chunks) vs `wgpu::util::StagingBelt` vs the raw
//!   backend under the facade (`gantry_core::Device::write`);
//! - readback 256 MiB: manager (`read().wait_into()`) vs `Device::read_into` vs copy + `map_async`;
//! - 10,000 uploads of 256 bytes per frame, scattered and adjacent: manager frame vs
//!   `write_buffer` each vs `StagingBelt`;
//! - acquiring a 64 KiB buffer from the manager's pool vs creating one.
//!
//! The manager rows run on both backends, in the same groups: over gantry-wgpu (names without
//! a prefix, beside the plain-wgpu peers) and over gantry-vulkan (names prefixed `vulkan_`).
//!
//! `cargo bench -p gantry-benches --bench manager`; `GANTRY_BENCH_QUICK=1` shortens the
//! measurement; `GANTRY_BENCH_BIG_MIB=N` sets the large transfer size (default 256).

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use gantry::{BufferManager, ManagerConfig};
use gantry_core::{Backend, BufferDesc, BufferUsage, Device, MemoryLocation};
use gantry_vulkan::{VulkanBackend, VulkanOptions};

use common::{SMALL, WRITES, configure, open, scattered_offsets, target, wait};

/// The prefix of the Vulkan backend's rows.
const VULKAN: &str = "vulkan_";

fn big() -> u64 {
    std::env::var("GANTRY_BENCH_BIG_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(256)
        << 20
}

fn open_vulkan() -> Device<VulkanBackend> {
    let backend = VulkanBackend::new(&VulkanOptions::default())
        .expect("a Vulkan device (lavapipe: mesa-vulkan-drivers)");
    Device::new(backend)
}

fn manager<B: Backend>(device: &Device<B>) -> BufferManager<B> {
    BufferManager::new(device.clone(), ManagerConfig::default()).expect("manager")
}

/// `{prefix}manager_write_flush` and `{prefix}core_device_write` on `device`.
fn upload_rows<B: Backend>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    prefix: &str,
    device: &Device<B>,
    data: &[u8],
) {
    let big = data.len() as u64;
    let m = manager(device);
    let mbuf = m
        .create_buffer(
            &BufferDesc::new(big, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
                .with_label("bench manager upload"),
        )
        .expect("buffer");
    let gbuf = device
        .create_buffer(
            &BufferDesc::new(big, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
                .with_label("bench core upload"),
        )
        .expect("buffer");
    group.bench_function(format!("{prefix}manager_write_flush"), |b| {
        b.iter(|| {
            mbuf.write(0, black_box(data)).expect("write");
            m.wait_idle().expect("wait");
        });
    });
    group.bench_function(format!("{prefix}core_device_write"), |b| {
        b.iter(|| {
            device.write(&gbuf, 0, black_box(data)).expect("write");
            device.wait_idle().expect("wait");
        });
    });
}

/// `{prefix}manager_read_wait_into` and `{prefix}core_device_read_into` on `device`; checks
/// the manager's readback.
fn readback_rows<B: Backend>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    prefix: &str,
    device: &Device<B>,
    data: &[u8],
) {
    let big = data.len() as u64;
    let m = manager(device);
    let gbuf = device
        .create_buffer_init(
            Some("bench readback"),
            BufferUsage::TRANSFER_SRC,
            MemoryLocation::DeviceLocal,
            data,
        )
        .expect("buffer");
    let mut out = vec![0u8; data.len()];
    group.bench_function(format!("{prefix}manager_read_wait_into"), |b| {
        b.iter(|| {
            m.read(&gbuf, 0, big)
                .expect("read")
                .wait_into(black_box(&mut out))
                .expect("wait");
        });
    });
    group.bench_function(format!("{prefix}core_device_read_into"), |b| {
        b.iter(|| {
            device
                .read_into(&gbuf, 0, black_box(&mut out))
                .expect("read")
        });
    });
    let check = m.read(&gbuf, 0, big).expect("read").wait().expect("wait");
    assert!(check == data, "{prefix}manager readback differs");
}

/// A manager and its target buffer for the 10,000-write frames.
fn small_setup<B: Backend>(device: &Device<B>) -> (BufferManager<B>, gantry::GpuBuffer<B>) {
    let m = manager(device);
    let mbuf = m
        .create_buffer(
            &BufferDesc::new(
                WRITES * 4 * SMALL,
                BufferUsage::TRANSFER_DST,
                MemoryLocation::DeviceLocal,
            )
            .with_label("bench manager small writes"),
        )
        .expect("buffer");
    (m, mbuf)
}

/// `{prefix}manager_frame`: one frame of 256-byte uploads at `offsets`.
fn frame_row<B: Backend>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    prefix: &str,
    (m, mbuf): &(BufferManager<B>, gantry::GpuBuffer<B>),
    offsets: &[u64],
    record: &[u8],
) {
    group.bench_function(format!("{prefix}manager_frame"), |b| {
        b.iter(|| {
            m.begin_frame().expect("begin");
            for &o in offsets {
                m.upload(mbuf.buffer(), o, black_box(record))
                    .expect("upload");
            }
            let index = m.end_frame().expect("end").expect("submitted");
            m.device().wait(index, None).expect("wait");
        });
    });
}

/// `{prefix}manager_frame_upload_many`: the same frame as one `upload_many` call.
fn frame_many_row<B: Backend>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    prefix: &str,
    (m, mbuf): &(BufferManager<B>, gantry::GpuBuffer<B>),
    offsets: &[u64],
    record: &[u8],
) {
    let writes: Vec<(u64, &[u8])> = offsets.iter().map(|&o| (o, record)).collect();
    group.bench_function(format!("{prefix}manager_frame_upload_many"), |b| {
        b.iter(|| {
            m.begin_frame().expect("begin");
            m.upload_many(mbuf.buffer(), black_box(&writes))
                .expect("upload_many");
            let index = m.end_frame().expect("end").expect("submitted");
            m.device().wait(index, None).expect("wait");
        });
    });
}

/// `{prefix}manager_acquire_release` and `{prefix}core_create_drop` on `device`.
fn acquire_rows<B: Backend>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    prefix: &str,
    device: &Device<B>,
) {
    let m = manager(device);
    let usage = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST | BufferUsage::STORAGE;
    // Warm the pool.
    drop(
        m.acquire(64 << 10, usage, MemoryLocation::DeviceLocal)
            .expect("acquire"),
    );
    group.bench_function(format!("{prefix}manager_acquire_release"), |b| {
        b.iter(|| {
            let p = m
                .acquire(black_box(64 << 10), usage, MemoryLocation::DeviceLocal)
                .expect("acquire");
            black_box(p.id());
        });
    });
    group.bench_function(format!("{prefix}core_create_drop"), |b| {
        b.iter(|| {
            let buf = device
                .create_buffer(&BufferDesc::new(
                    black_box(64 << 10),
                    usage,
                    MemoryLocation::DeviceLocal,
                ))
                .expect("create");
            black_box(buf.id());
        });
    });
}

fn upload(c: &mut Criterion) {
    let big = big();
    let gantry = open();
    let device = gantry.raw().wgpu_device().clone();
    let queue = gantry.raw().wgpu_queue().clone();
    let data: Vec<u8> = (0..big)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let wbuf = target(&device, big);
    let mut belt = wgpu::util::StagingBelt::new(device.clone(), 16 << 20);

    let mut group = c.benchmark_group(format!("upload_{}MiB", big >> 20));
    group.throughput(Throughput::Bytes(big));
    upload_rows(&mut group, "", &gantry, &data);
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
    upload_rows(&mut group, VULKAN, &open_vulkan(), &data);
    group.finish();
}

fn readback(c: &mut Criterion) {
    let big = big();
    let gantry = open();
    let device = gantry.raw().wgpu_device().clone();
    let queue = gantry.raw().wgpu_queue().clone();
    let data: Vec<u8> = (0..big)
        .map(|i| (i.wrapping_mul(40_503) >> 3) as u8)
        .collect();
    let wbuf = target(&device, big);
    queue.write_buffer(&wbuf, 0, &data);
    wait(&device, queue.submit([]));
    let mut out = vec![0u8; big as usize];

    let mut group = c.benchmark_group(format!("readback_{}MiB", big >> 20));
    group.throughput(Throughput::Bytes(big));
    readback_rows(&mut group, "", &gantry, &data);
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
    readback_rows(&mut group, VULKAN, &open_vulkan(), &data);
    group.finish();
}

fn small_writes(c: &mut Criterion) {
    let gantry = open();
    let vulkan = open_vulkan();
    let device = gantry.raw().wgpu_device().clone();
    let queue = gantry.raw().wgpu_queue().clone();
    let size = WRITES * 4 * SMALL;
    let scattered = scattered_offsets();
    let adjacent: Vec<u64> = (0..WRITES).map(|i| i * SMALL).collect();
    let record: Vec<u8> = (0..SMALL).map(|i| i as u8).collect();
    let wgpu_manager = small_setup(&gantry);
    let vulkan_manager = small_setup(&vulkan);
    let wbuf = target(&device, size);
    let mut belt = wgpu::util::StagingBelt::new(device.clone(), 4 << 20);

    for (name, offsets) in [("scattered", &scattered), ("adjacent", &adjacent)] {
        let mut group = c.benchmark_group(format!("10k_uploads_256B_per_frame_{name}"));
        group.throughput(Throughput::Bytes(WRITES * SMALL));
        frame_row(&mut group, "", &wgpu_manager, offsets, &record);
        frame_many_row(&mut group, "", &wgpu_manager, offsets, &record);
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
        frame_row(&mut group, VULKAN, &vulkan_manager, offsets, &record);
        frame_many_row(&mut group, VULKAN, &vulkan_manager, offsets, &record);
        group.finish();
    }
}

fn acquire(c: &mut Criterion) {
    let mut group = c.benchmark_group("buffer_64KiB");
    acquire_rows(&mut group, "", &open());
    acquire_rows(&mut group, VULKAN, &open_vulkan());
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
