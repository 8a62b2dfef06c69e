//! Setup shared by the GPU transfer benchmarks (`wgpu_transfer`, `manager`): the gantry-wgpu
//! device they open, the plain-wgpu target buffers and waits of the peers, the scattered
//! offsets of the 10,000-write frame, and the criterion configuration.

use std::time::Duration;

use criterion::Criterion;
use gantry_core::Device;
use gantry_wgpu::{WgpuBackend, WgpuOptions};

/// Bytes per small write.
pub const SMALL: u64 = 256;
/// Small writes per frame.
pub const WRITES: u64 = 10_000;

/// A gantry-wgpu device keeping the staging chunks a 256 MiB upload needs, like a
/// long-running application would. `GANTRY_WAIT_SPIN_US` sets its
/// [`WgpuOptions::wait_spin`] (default: the backend's). `GANTRY_WGPU_DISCRETE=1` takes a
/// discrete GPU's paths on any adapter (no direct writes, the write shadow on): to profile
/// on lavapipe what an H100 runs.
pub fn open() -> Device<WgpuBackend> {
    let discrete = std::env::var_os("GANTRY_WGPU_DISCRETE").is_some_and(|v| v == "1");
    let backend = WgpuBackend::new(&WgpuOptions {
        staging_keep_bytes: 512 << 20,
        wait_spin: wait_spin().unwrap_or(WgpuOptions::default().wait_spin),
        direct_writes: discrete.then_some(false),
        write_shadow: discrete.then_some(true),
        ..WgpuOptions::default()
    })
    .expect("a wgpu adapter (lavapipe: mesa-vulkan-drivers)");
    Device::new(backend)
}

/// `GANTRY_WAIT_SPIN_US`: how long the benchmarks' gantry devices poll before a wait blocks.
pub fn wait_spin() -> Option<Duration> {
    let us = std::env::var("GANTRY_WAIT_SPIN_US").ok()?;
    Some(Duration::from_micros(
        us.parse().expect("GANTRY_WAIT_SPIN_US: microseconds"),
    ))
}

/// Waits for one wgpu submission.
pub fn wait(device: &wgpu::Device, index: wgpu::SubmissionIndex) {
    device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
        .expect("poll");
}

/// A plain wgpu device-local buffer for the peers to write into.
pub fn target(device: &wgpu::Device, size: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("bench target"),
        size,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

/// Every fourth 256-byte slot of a 10 MiB buffer, in a shuffled (fixed) order.
pub fn scattered_offsets() -> Vec<u64> {
    let mut slots: Vec<u64> = (0..WRITES).map(|i| i * 4).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..slots.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        slots.swap(i, (x % (i as u64 + 1)) as usize);
    }
    slots.into_iter().map(|s| s * SMALL).collect()
}

/// Criterion settings: `GANTRY_BENCH_QUICK` shortens measurement.
pub fn configure(c: &mut Criterion) -> Criterion {
    let quick = std::env::var_os("GANTRY_BENCH_QUICK").is_some();
    let c = std::mem::take(c);
    if quick {
        c.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
    } else {
        c.sample_size(20).measurement_time(Duration::from_secs(10))
    }
}
