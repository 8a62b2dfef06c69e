//! Where a frame of 10,000 scattered 256-byte writes spends its time, phase by phase:
//! `begin_frame` (manager rows; criterion's frames include it), recording (the writes or
//! uploads), submission, and waiting for the device. Criterion
//! times whole frames (`wgpu_transfer`, `manager`); this splits them, so that a figure such as
//! "1.1 ms a frame" says which part to work on. Prints medians and the 10th and 90th
//! percentiles of `GANTRY_PHASES_FRAMES` frames (default 300) after 30 warm-up frames;
//! `GANTRY_PHASES_ONLY=text` runs only the rows whose name contains `text`;
//! `GANTRY_PHASES_EXTRA_DEVICES=1` keeps the other devices `wgpu_transfer`'s 10k group opens
//! (a second wgpu device, scatter off, and a Vulkan one) open while the rows run.
//!
//! ```sh
//! cargo bench -p gantry-benches --bench phases
//! ```

#[path = "common/mod.rs"]
#[expect(
    dead_code,
    reason = "phases uses the devices and offsets, not the criterion setup"
)]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use gantry::{BufferManager, ManagerConfig};
use gantry_core::{Backend, BufferDesc, BufferUsage, Device, MemoryLocation, SubmissionIndex};
use gantry_vulkan::{VulkanBackend, VulkanOptions};

use common::{SMALL, WRITES, open, scattered_offsets};

/// The times of one frame's phases.
#[derive(Clone, Copy, Default)]
struct Frame {
    /// `begin_frame` (manager rows; zero for the others).
    begin: Duration,
    record: Duration,
    submit: Duration,
    wait: Duration,
}

fn frames() -> usize {
    std::env::var("GANTRY_PHASES_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn micros(mut v: Vec<Duration>) -> String {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    format!("{:8.1} ({:7.1}-{:7.1})", at(0.5), at(0.1), at(0.9))
}

fn report(name: &str, frames: &[Frame]) {
    let total: Vec<Duration> = frames
        .iter()
        .map(|f| f.begin + f.record + f.submit + f.wait)
        .collect();
    // The mean is what criterion reports: rare slow frames move it, not the median.
    let mean = total.iter().sum::<Duration>().as_secs_f64() * 1e6 / total.len().max(1) as f64;
    let mut sorted = total.clone();
    sorted.sort_unstable();
    let tail = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{name:<40} begin {}  record {}  submit {}  wait {}  total {}  mean {mean:.1}, 99th {:.1}, max {:.1}",
        micros(frames.iter().map(|f| f.begin).collect()),
        micros(frames.iter().map(|f| f.record).collect()),
        micros(frames.iter().map(|f| f.submit).collect()),
        micros(frames.iter().map(|f| f.wait).collect()),
        micros(total),
        tail(0.99),
        tail(1.0),
    );
    // The slowest frames, by phase: where a tail comes from.
    let mut slow: Vec<&Frame> = frames.iter().collect();
    slow.sort_unstable_by_key(|f| core::cmp::Reverse(f.begin + f.record + f.submit + f.wait));
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let worst: Vec<String> = slow
        .iter()
        .take(3)
        .map(|f| format!("{:.0}/{:.0}/{:.0}", us(f.record), us(f.submit), us(f.wait)))
        .collect();
    println!(
        "{:<40} slowest frames (record/submit/wait µs): {}",
        "",
        worst.join(", ")
    );
}

thread_local! {
    /// The time of the frame's `begin_frame`, set by the manager rows and taken by `run`.
    static BEGIN: core::cell::Cell<Duration> = const { core::cell::Cell::new(Duration::ZERO) };
}

/// Runs `frame` (which returns its submission and the times of its first two phases) for the
/// warm-up and measured frames, waiting on `device` after each.
fn run<B: Backend>(
    name: &str,
    device: &Device<B>,
    mut frame: impl FnMut() -> (SubmissionIndex, Duration, Duration),
) {
    // `GANTRY_PHASES_ONLY=text`: only the rows whose name contains it.
    if let Ok(only) = std::env::var("GANTRY_PHASES_ONLY")
        && !name.contains(&only)
    {
        return;
    }
    let mut out = Vec::new();
    let mut faults = 0;
    for i in 0..30 + frames() {
        if i == 30 {
            faults = minor_faults();
        }
        let (index, record, submit) = frame();
        let begin = BEGIN.take();
        let t = Instant::now();
        device.wait(index, None).expect("wait");
        let wait = t.elapsed();
        if i >= 30 {
            out.push(Frame {
                begin,
                record,
                submit,
                wait,
            });
        }
    }
    report(name, &out);
    // Page faults of the process (all threads) per measured frame: fresh memory touched every
    // frame shows here (a fault costs microseconds, more in a virtual machine).
    println!(
        "{:<40} page faults a frame: {:.1}",
        "",
        minor_faults().saturating_sub(faults) as f64 / out.len().max(1) as f64
    );
}

/// The process's minor page faults so far (`/proc/self/stat`; 0 where it cannot be read).
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) end with `)`.
            let rest = s.rsplit_once(')')?.1;
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

fn batch_rows<B: Backend>(prefix: &str, device: &Device<B>) {
    let offsets = scattered_offsets();
    let record: Vec<u8> = (0..SMALL).map(|i| i as u8).collect();
    let many: Vec<(u64, &[u8])> = offsets.iter().map(|&o| (o, &record[..])).collect();
    let buf = device
        .create_buffer(
            &BufferDesc::new(
                WRITES * 4 * SMALL,
                BufferUsage::TRANSFER_DST,
                MemoryLocation::DeviceLocal,
            )
            .with_label("phases"),
        )
        .expect("buffer");
    run(&format!("{prefix}batch write x10000"), device, || {
        let t = Instant::now();
        let mut batch = device.batch().expect("batch");
        for &o in &offsets {
            batch.write(&buf, o, black_box(&record)).expect("write");
        }
        let record_time = t.elapsed();
        let t = Instant::now();
        let index = batch.submit().expect("submit");
        (index, record_time, t.elapsed())
    });
    run(&format!("{prefix}batch write_many"), device, || {
        let t = Instant::now();
        let mut batch = device.batch().expect("batch");
        batch
            .write_many(&buf, black_box(&many))
            .expect("write_many");
        let record_time = t.elapsed();
        let t = Instant::now();
        let index = batch.submit().expect("submit");
        (index, record_time, t.elapsed())
    });
    // What the manager's staging costs by itself, per frame: reopening a chunk (map an upload
    // buffer the last frame's copy read, its submission complete: "begin") and writing the
    // frame's 10,000 records into it packed, as `upload_many` does ("record"); then unmap and
    // one copy ("submit").
    let staging = device
        .create_buffer(
            &BufferDesc::new(4 << 20, BufferUsage::TRANSFER_SRC, MemoryLocation::Upload)
                .with_label("phases staging"),
        )
        .expect("staging");
    let packed: Vec<(u64, &[u8])> = (0..WRITES).map(|i| (i * SMALL, &record[..])).collect();
    run(&format!("{prefix}staging map+write"), device, || {
        let t = Instant::now();
        device
            .map(&staging, gantry_core::MapMode::Write)
            .expect("map");
        BEGIN.set(t.elapsed());
        let t = Instant::now();
        device
            .write_mapped_many(&staging, black_box(&packed))
            .expect("write");
        let record_time = t.elapsed();
        let t = Instant::now();
        device.unmap(&staging).expect("unmap");
        let mut batch = device.batch().expect("batch");
        batch.copy(&staging, 0, &buf, 0, SMALL).expect("copy");
        let index = batch.submit().expect("submit");
        (index, record_time, t.elapsed())
    });
    let m = BufferManager::new(device.clone(), ManagerConfig::default()).expect("manager");
    let mbuf = m
        .create_buffer(
            &BufferDesc::new(
                WRITES * 4 * SMALL,
                BufferUsage::TRANSFER_DST,
                MemoryLocation::DeviceLocal,
            )
            .with_label("phases manager"),
        )
        .expect("buffer");
    run(&format!("{prefix}manager upload x10000"), device, || {
        let t = Instant::now();
        m.begin_frame().expect("begin");
        BEGIN.set(t.elapsed());
        let t = Instant::now();
        for &o in &offsets {
            m.upload(mbuf.buffer(), o, black_box(&record))
                .expect("upload");
        }
        let record_time = t.elapsed();
        let t = Instant::now();
        let index = m.end_frame().expect("end").expect("submitted");
        (index, record_time, t.elapsed())
    });
    run(&format!("{prefix}manager upload_many"), device, || {
        let t = Instant::now();
        m.begin_frame().expect("begin");
        BEGIN.set(t.elapsed());
        let t = Instant::now();
        m.upload_many(mbuf.buffer(), black_box(&many))
            .expect("upload_many");
        let record_time = t.elapsed();
        let t = Instant::now();
        let index = m.end_frame().expect("end").expect("submitted");
        (index, record_time, t.elapsed())
    });
    // The same frame with the 10,000 records adjacent: one copy region.
    run(
        &format!("{prefix}manager upload_many adjacent"),
        device,
        || {
            let t = Instant::now();
            m.begin_frame().expect("begin");
            BEGIN.set(t.elapsed());
            let t = Instant::now();
            m.upload_many(mbuf.buffer(), black_box(&packed))
                .expect("upload_many");
            let record_time = t.elapsed();
            let t = Instant::now();
            let index = m.end_frame().expect("end").expect("submitted");
            (index, record_time, t.elapsed())
        },
    );
}

fn main() {
    // Criterion's arguments (`--bench`) are ignored.
    println!(
        "phase times in µs: median (10th-90th percentile) of {} frames of {WRITES} x {SMALL} B",
        frames()
    );
    let wgpu = open();
    println!("wgpu: {:?}", wgpu.adapter_info());
    // As in `wgpu_transfer`'s 10k group: other devices open beside the one measured.
    let _extra = std::env::var_os("GANTRY_PHASES_EXTRA_DEVICES").map(|_| {
        println!("with a second wgpu device and a Vulkan device open");
        let copies = Device::new(
            gantry_wgpu::WgpuBackend::new(&gantry_wgpu::WgpuOptions {
                scatter: false,
                ..gantry_wgpu::WgpuOptions::default()
            })
            .expect("a wgpu adapter"),
        );
        let vulkan =
            Device::new(VulkanBackend::new(&VulkanOptions::default()).expect("a Vulkan device"));
        (copies, vulkan)
    });
    batch_rows("wgpu ", &wgpu);
    println!(
        "wgpu staging chunks created: {}",
        wgpu.raw().staging_chunks_created()
    );
    let vulkan =
        Device::new(VulkanBackend::new(&VulkanOptions::default()).expect("a Vulkan device"));
    batch_rows("vulkan ", &vulkan);
    let direct = Device::new(
        VulkanBackend::new(&VulkanOptions::default().with_direct_writes(Some(true)))
            .expect("a Vulkan device"),
    );
    batch_rows("vulkan direct-on ", &direct);
    println!(
        "vulkan direct-on: {} writes done on the host",
        direct.raw().direct_writes()
    );
}
