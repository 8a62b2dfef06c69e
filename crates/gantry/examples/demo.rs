//! gantry's demo: a streaming workload on every backend and adapter found, with the GPU
//! checksumming what was uploaded.
//!
//! Per frame: dynamic uniforms written slot by slot, a particle buffer rewritten whole, a
//! few large bulk uploads (all three through gantry's staging), buffer-to-buffer copies,
//! then a compute pass (WGSL; through wgpu, or compiled to SPIR-V with naga and run through
//! the raw ash device) checksums every buffer on the GPU, and a readback brings the
//! checksums and a sample of the copied bytes home. Every checksum is compared with the
//! CPU's; any mismatch fails the run.
//!
//! `cargo xtask demo [--backend wgpu|vulkan] [--adapter NAME] [--frames N] [--seconds S]
//! [--json PATH] [--svg PATH] [--validation] [--inject-fault]`
//!
//! `--inject-fault` flips one bit of the particles after the CPU has checksummed them (frame
//! 1), to show that a corrupted upload fails the run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use gantry::core::{Backend, Buffer, BufferDesc, BufferUsage, Device, DeviceType, MemoryLocation};
use gantry::stats::{ChartOptions, EventStats, Histogram, Recorder, TransferKind, Unit};
use gantry::vulkan::ash::vk;
use gantry::vulkan::{AdapterPreference, VulkanBackend, VulkanOptions};
use gantry::wgpu::{AdapterSelector, WgpuBackend, WgpuOptions};
use gantry::{BufferManager, GpuBuffer, ManagerConfig, StreamingRing};

/// The checksum shader: every invocation hashes a strided share of `data`'s words and adds
/// its sum into `result[0]` (wrapping), so the order of the additions does not matter.
const SHADER: &str = r"
@group(0) @binding(0) var<storage, read> data: array<u32>;
@group(0) @binding(1) var<storage, read_write> result: array<atomic<u32>>;

fn hash_word(w: u32, i: u32) -> u32 {
    var h = (w ^ (i * 0x9E3779B9u)) * 0x85EBCA6Bu;
    h = h ^ (h >> 13u);
    return h;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let n = arrayLength(&data);
    let stride = groups.x * 256u;
    var sum = 0u;
    for (var i = gid.x; i < n; i = i + stride) {
        sum = sum + hash_word(data[i], i);
    }
    atomicAdd(&result[0], sum);
}
";

/// The CPU's side of [`SHADER`].
fn checksum(bytes: &[u8]) -> u32 {
    bytes.chunks_exact(4).enumerate().fold(0u32, |sum, (i, w)| {
        let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let mut h = (w ^ (i as u32).wrapping_mul(0x9E37_79B9)).wrapping_mul(0x85EB_CA6B);
        h ^= h >> 13;
        sum.wrapping_add(h)
    })
}

const WORKGROUP: u64 = 256;
const MAX_GROUPS: u64 = 1024;
const UNIFORM_SLOTS: u64 = 64;
const UNIFORM_STRIDE: u64 = 256;
const PARTICLES: u64 = 32 * 1024;
const PARTICLE_SIZE: u64 = 32;
const BULK_UPLOADS: u64 = 3;
const BULK_SIZE: u64 = 2 << 20;
const SAMPLE: u64 = 64 << 10;
/// Buffers the GPU checksums: uniforms, particles, bulk, mirror.
const CHECKED: usize = 4;

struct Args {
    backend: Option<String>,
    adapter: Option<String>,
    frames: Option<u64>,
    seconds: f64,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    validation: bool,
    /// Flip one uploaded bit in frame 1 after the CPU's checksums: shows the check fails.
    inject_fault: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        backend: None,
        adapter: None,
        frames: None,
        seconds: 2.0,
        json: None,
        svg: None,
        validation: false,
        inject_fault: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => {
                let b = value()?;
                if b != "wgpu" && b != "vulkan" {
                    return Err(format!("--backend {b}: expected wgpu or vulkan"));
                }
                args.backend = Some(b);
            }
            "--adapter" => args.adapter = Some(value()?),
            "--frames" => {
                args.frames = Some(value()?.parse().map_err(|e| format!("--frames: {e}"))?);
            }
            "--seconds" => {
                args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?;
            }
            "--json" => args.json = Some(value()?.into()),
            "--svg" => args.svg = Some(value()?.into()),
            "--validation" => args.validation = true,
            "--inject-fault" => args.inject_fault = true,
            "-h" | "--help" => {
                println!(
                    "gantry demo [--backend wgpu|vulkan] [--adapter NAME] [--frames N] \
                     [--seconds S] [--json PATH] [--svg PATH] [--validation] [--inject-fault]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One backend-and-adapter pair to run on.
struct Target {
    backend: &'static str,
    index: usize,
    name: String,
    device_type: String,
    software: bool,
}

fn targets(args: &Args) -> Vec<Target> {
    let mut out = Vec::new();
    let wanted = |name: &str| {
        args.adapter
            .as_ref()
            .is_none_or(|a| name.to_lowercase().contains(&a.to_lowercase()))
    };
    if args.backend.as_deref() != Some("vulkan") {
        for (index, info) in gantry::wgpu::list_adapters(&WgpuOptions::default())
            .into_iter()
            .enumerate()
        {
            if wanted(&info.name) {
                out.push(Target {
                    backend: "wgpu",
                    index,
                    software: info.device_type == DeviceType::Cpu,
                    device_type: format!("{:?}", info.device_type),
                    name: info.name,
                });
            }
        }
    }
    if args.backend.as_deref() != Some("wgpu") {
        match VulkanBackend::enumerate_adapters() {
            Ok(list) => {
                for info in list {
                    if info.usable && wanted(&info.name) {
                        out.push(Target {
                            backend: "vulkan",
                            index: info.index,
                            software: info.device_type == vk::PhysicalDeviceType::CPU,
                            device_type: format!("{:?}", info.device_type),
                            name: info.name,
                        });
                    }
                }
            }
            Err(e) => eprintln!("demo: Vulkan adapters could not be listed: {e}"),
        }
    }
    out
}

fn run() -> Result<bool, String> {
    let args = parse_args()?;
    let targets = targets(&args);
    if targets.is_empty() {
        return Err(
            "no adapter found (install a Vulkan driver: mesa-vulkan-drivers), \
                    or none matches --backend/--adapter"
                .into(),
        );
    }
    // The workspace's target directory (two levels above this crate), wherever the demo is
    // started from; `CARGO_TARGET_DIR` wins, as it does for cargo.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let out_dir = target_dir.join("gantry-demo");
    let out_dir = std::fs::create_dir_all(&out_dir)
        .and_then(|()| out_dir.canonicalize())
        .map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let mut all_ok = true;
    let mut json_reports = Vec::new();
    let mut summaries = Vec::new();
    for (n, target) in targets.iter().enumerate() {
        println!(
            "\n=== {} on {} [{}]{}",
            target.backend,
            target.name,
            target.device_type,
            if target.software {
                " (software rasteriser, lavapipe: no GPU on this machine)"
            } else {
                ""
            }
        );
        let result = match target.backend {
            "wgpu" => run_wgpu(target, &args),
            _ => run_vulkan(target, &args),
        };
        match result {
            Ok(outcome) => {
                all_ok &= outcome.ok;
                let svg_path = match &args.svg {
                    Some(p) if targets.len() == 1 => p.clone(),
                    Some(p) => {
                        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("demo");
                        p.with_file_name(format!("{stem}-{n}.svg"))
                    }
                    None => out_dir.join(format!(
                        "demo-{}-{}.svg",
                        target.backend,
                        slug(&target.name)
                    )),
                };
                std::fs::write(&svg_path, &outcome.svg)
                    .map_err(|e| format!("{}: {e}", svg_path.display()))?;
                println!("chart: {}", svg_path.display());
                json_reports.push(outcome.json);
                summaries.push(format!(
                    "{:<7} {:<40} {:>6} frames  p50 {:>7.2} ms  p99 {:>7.2} ms  checksums {}",
                    target.backend,
                    truncate(&target.name, 40),
                    outcome.frames,
                    outcome.p50_ms,
                    outcome.p99_ms,
                    if outcome.ok { "all match" } else { "MISMATCH" }
                ));
            }
            Err(e) => {
                all_ok = false;
                println!("FAILED: {e}");
                summaries.push(format!(
                    "{:<7} {:<40} FAILED: {e}",
                    target.backend,
                    truncate(&target.name, 40)
                ));
            }
        }
    }
    if let Some(path) = &args.json {
        let json = format!("[\n{}\n]\n", json_reports.join(",\n"));
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("report JSON: {}", path.display());
    }
    println!("\n=== summary");
    for s in &summaries {
        println!("{s}");
    }
    println!(
        "{}",
        if all_ok {
            "demo: every checksum matched on every adapter"
        } else {
            "demo: FAILED (see above)"
        }
    );
    Ok(all_ok)
}

fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s
        .split('-')
        .filter(|p| !p.is_empty())
        .take(4)
        .collect::<Vec<_>>();
    s.join("-")
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// What one run produced.
struct Outcome {
    ok: bool,
    frames: u64,
    p50_ms: f64,
    p99_ms: f64,
    svg: String,
    json: String,
}

/// The GPU checksum pass of one backend.
trait Checksummer<B: Backend> {
    /// Checksums each of `ranges` into its slot of `results` (slot `i` at `i * stride`),
    /// after gantry's submission `after`, and waits for it.
    fn run(
        &mut self,
        after: gantry::core::SubmissionIndex,
        ranges: &[Range<B>],
        results: &Buffer<B>,
        stride: u64,
    ) -> Result<(), String>;
}

fn run_wgpu(target: &Target, args: &Args) -> Result<Outcome, String> {
    let options = WgpuOptions {
        adapter: AdapterSelector::Index(target.index),
        validation: args.validation,
        ..WgpuOptions::default()
    };
    let backend = WgpuBackend::new(&options).map_err(|e| format!("opening wgpu: {e}"))?;
    let device = Device::new(backend);
    let outcome = run_workload(&device, args, WgpuChecksummer::new)?;
    let errors = device.raw().take_uncaptured_errors();
    if !errors.is_empty() {
        for e in &errors {
            println!("wgpu error: {e}");
        }
        return Err(format!("{} wgpu errors", errors.len()));
    }
    Ok(outcome)
}

fn run_vulkan(target: &Target, args: &Args) -> Result<Outcome, String> {
    let options = VulkanOptions::default()
        .with_validation(args.validation)
        .with_adapter(AdapterPreference::Index(target.index));
    let backend = VulkanBackend::new(&options).map_err(|e| format!("opening Vulkan: {e}"))?;
    println!(
        "transfer queue: {}",
        if backend.has_dedicated_transfer_queue() {
            "dedicated family"
        } else {
            "the universal queue"
        }
    );
    let device = Device::new(backend);
    let outcome = run_workload(&device, args, VulkanChecksummer::new)?;
    if args.validation {
        let messages = device.raw().take_validation_messages();
        if messages.is_empty() {
            println!("Khronos validation layer: no messages");
        } else {
            for m in &messages {
                println!("validation: {m}");
            }
            return Err(format!("{} validation messages", messages.len()));
        }
    }
    Ok(outcome)
}

/// A range of a buffer the GPU checksums.
struct Range<B: Backend> {
    buffer: Buffer<B>,
    offset: u64,
    size: u64,
}

/// Where this frame's dynamic uniforms live.
enum Uniforms<B: Backend> {
    /// gantry's per-frame streaming ring (host-visible memory the GPU reads directly).
    Ring(StreamingRing<B>),
    /// A device-local buffer written through staging, where the adapter cannot use
    /// host-visible memory as a storage buffer (wgpu without `MAPPABLE_PRIMARY_BUFFERS`).
    Staged(GpuBuffer<B>),
}

type NewChecksummer<B, C> = fn(&Device<B>) -> Result<C, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn run_workload<B: Backend, C: Checksummer<B>>(
    device: &Device<B>,
    args: &Args,
    new_checksummer: NewChecksummer<B, C>,
) -> Result<Outcome, String> {
    let manager = BufferManager::new(device.clone(), ManagerConfig::default()).map_err(err)?;
    let events = Arc::new(EventStats::new("demo"));
    let slot_stride = device.limits().min_storage_offset_alignment.max(256);
    let storage = BufferUsage::STORAGE | BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
    let create = |label: &str, size: u64, usage: BufferUsage| {
        manager
            .create_buffer(&BufferDesc {
                label: Some(label),
                ..BufferDesc::new(size, usage, MemoryLocation::DeviceLocal)
            })
            .map_err(|e| format!("create {label}: {e}"))
    };
    let uniform_bytes = UNIFORM_SLOTS * UNIFORM_STRIDE;
    let ring_usage = BufferUsage::UNIFORM | BufferUsage::STORAGE;
    let uniforms_at = if device
        .limits()
        .supported_usage(MemoryLocation::Upload)
        .contains(ring_usage)
    {
        println!("dynamic uniforms: gantry's streaming ring (host-visible, read by the GPU)");
        Uniforms::Ring(
            manager
                .create_streaming_ring("demo uniforms", uniform_bytes, ring_usage)
                .map_err(err)?,
        )
    } else {
        println!(
            "dynamic uniforms: staged into device-local memory (host-visible storage unsupported)"
        );
        Uniforms::Staged(create(
            "demo uniforms",
            uniform_bytes,
            storage | BufferUsage::UNIFORM,
        )?)
    };
    let particles_buf = create(
        "demo particles",
        PARTICLES * PARTICLE_SIZE,
        storage | BufferUsage::VERTEX,
    )?;
    let bulk_buf = create("demo bulk", BULK_UPLOADS * BULK_SIZE, storage)?;
    let mirror_buf = create(
        "demo mirror",
        PARTICLES * PARTICLE_SIZE + BULK_SIZE,
        storage,
    )?;
    let results_buf = create("demo checksums", CHECKED as u64 * slot_stride, storage)?;
    let mut checksummer = new_checksummer(device)?;

    let frame_time = Histogram::new();
    let mut recorder = Recorder::new();
    let bar = match args.frames {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new((args.seconds * 10.0).ceil() as u64),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:40}] {msg}")
            .map_err(err)?
            .progress_chars("=> "),
    );

    let mut uniforms = vec![0u8; uniform_bytes as usize];
    let mut particles = vec![0u8; (PARTICLES * PARTICLE_SIZE) as usize];
    let mut bulk = vec![0u8; (BULK_UPLOADS * BULK_SIZE) as usize];
    let zeros = vec![0u8; (CHECKED as u64 * slot_stride) as usize];
    let started = Instant::now();
    let mut frame = 0u64;
    let mut mismatches = 0u64;
    let mut checked = 0u64;
    let mut staging_peak = 0u64;
    let mut fragmentation_peak = 0f64;
    loop {
        let done = match args.frames {
            Some(n) => frame >= n,
            None => started.elapsed().as_secs_f64() >= args.seconds && frame >= 3,
        };
        if done {
            break;
        }
        // The CPU side of this frame's data.
        let seed = (frame as u32).wrapping_mul(0x0100_0193) ^ 0x811C_9DC5;
        fill(&mut uniforms, seed);
        // The live particles change in number from frame to frame (all of them in frame 0);
        // only those are rewritten and uploaded, the rest of the buffer keeps older frames'
        // data on both sides.
        let live = if frame == 0 {
            PARTICLES
        } else {
            PARTICLES * 3 / 4 + (frame * 7919) % (PARTICLES / 4)
        };
        let live_bytes = (live * PARTICLE_SIZE) as usize;
        fill(&mut particles[..live_bytes], seed.rotate_left(7));
        fill(&mut bulk, seed.rotate_left(13));
        let copied_bulk = frame % BULK_UPLOADS;
        let bulk_range =
            (copied_bulk * BULK_SIZE) as usize..((copied_bulk + 1) * BULK_SIZE) as usize;
        let mut mirror = particles.clone();
        mirror.extend_from_slice(&bulk[bulk_range]);
        let expected = [
            checksum(&uniforms),
            checksum(&particles),
            checksum(&bulk),
            checksum(&mirror),
        ];

        if args.inject_fault && frame == 1 {
            particles[100] ^= 1;
        }

        manager.begin_frame().map_err(err)?;
        let frame_started = Instant::now();
        // Dynamic uniforms, slot by slot.
        let uniform_range = match &uniforms_at {
            Uniforms::Ring(ring) => {
                ring.begin_frame().map_err(err)?;
                let mut first: Option<Range<B>> = None;
                for slot in uniforms.chunks_exact(UNIFORM_STRIDE as usize) {
                    let a = ring.push(slot).map_err(err)?;
                    match &mut first {
                        None => {
                            first = Some(Range {
                                buffer: a.buffer,
                                offset: a.offset,
                                size: a.size,
                            });
                        }
                        Some(r) if a.offset == r.offset + r.size => r.size += a.size,
                        Some(_) => return Err("streaming ring slots are not contiguous".into()),
                    }
                }
                ring.end_frame().map_err(err)?;
                first.ok_or("no uniforms")?
            }
            Uniforms::Staged(buffer) => {
                for (i, slot) in uniforms.chunks_exact(UNIFORM_STRIDE as usize).enumerate() {
                    manager
                        .upload(buffer.buffer(), i as u64 * UNIFORM_STRIDE, slot)
                        .map_err(err)?;
                }
                Range {
                    buffer: buffer.buffer().clone(),
                    offset: 0,
                    size: uniform_bytes,
                }
            }
        };
        // Uploads through gantry's staging: the checksum slots cleared, the particles, the
        // bulk in large pieces; one flush.
        let t = Instant::now();
        manager
            .upload(results_buf.buffer(), 0, &zeros)
            .map_err(err)?;
        manager
            .upload(particles_buf.buffer(), 0, &particles[..live_bytes])
            .map_err(err)?;
        for piece in 0..BULK_UPLOADS {
            let at = piece * BULK_SIZE;
            manager
                .upload(
                    bulk_buf.buffer(),
                    at,
                    &bulk[at as usize..(at + BULK_SIZE) as usize],
                )
                .map_err(err)?;
        }
        let staging = manager.staging_usage();
        staging_peak = staging_peak.max(staging.used);
        fragmentation_peak = fragmentation_peak.max(staging.fragmentation());
        if let Some(index) = manager.flush().map_err(err)? {
            device.wait(index, None).map_err(err)?;
        }
        let upload_time = t.elapsed();
        let upload_bytes = (live_bytes + bulk.len() + zeros.len()) as u64
            + if matches!(uniforms_at, Uniforms::Staged(_)) {
                uniform_bytes
            } else {
                0
            };
        events.record_transfer(TransferKind::Upload, upload_bytes, upload_time);

        // Copies: the particles and one bulk piece into the mirror.
        let t = Instant::now();
        let copy_bytes = PARTICLES * PARTICLE_SIZE + BULK_SIZE;
        manager
            .copy(
                particles_buf.buffer(),
                0,
                mirror_buf.buffer(),
                0,
                PARTICLES * PARTICLE_SIZE,
            )
            .map_err(err)?;
        manager
            .copy(
                bulk_buf.buffer(),
                copied_bulk * BULK_SIZE,
                mirror_buf.buffer(),
                PARTICLES * PARTICLE_SIZE,
                BULK_SIZE,
            )
            .map_err(err)?;
        let copied = manager.flush().map_err(err)?.unwrap_or_default();
        device.wait(copied, None).map_err(err)?;
        let copy_time = t.elapsed();
        events.record_transfer(TransferKind::Copy, copy_bytes, copy_time);
        let transfer_time = frame_started.elapsed();

        // The GPU consumes the data.
        let t = Instant::now();
        let whole = |b: &GpuBuffer<B>| Range {
            buffer: b.buffer().clone(),
            offset: 0,
            size: b.buffer().requested_size(),
        };
        let ranges = [
            uniform_range,
            whole(&particles_buf),
            whole(&bulk_buf),
            whole(&mirror_buf),
        ];
        checksummer.run(copied, &ranges, results_buf.buffer(), slot_stride)?;
        let compute_time = t.elapsed();

        // Readback: the checksums and a sample of the mirror.
        let t = Instant::now();
        let readback_bytes = CHECKED as u64 * slot_stride + SAMPLE;
        let results = manager
            .read(results_buf.buffer(), 0, CHECKED as u64 * slot_stride)
            .map_err(err)?;
        let sample = manager.read(mirror_buf.buffer(), 0, SAMPLE).map_err(err)?;
        manager.end_frame().map_err(err)?;
        let results = results.wait().map_err(err)?;
        let sample = sample.wait().map_err(err)?;
        let readback_time = t.elapsed();
        events.record_transfer(TransferKind::Readback, readback_bytes, readback_time);
        let frame_transfer = transfer_time + readback_time;
        frame_time.record_duration(frame_transfer);

        for (slot, want) in expected.iter().enumerate() {
            let at = slot * slot_stride as usize;
            let got = u32::from_le_bytes([
                results[at],
                results[at + 1],
                results[at + 2],
                results[at + 3],
            ]);
            checked += 1;
            if got != *want {
                mismatches += 1;
                bar.suspend(|| {
                    println!(
                        "frame {frame}: checksum of {} MISMATCH: GPU {got:#010x}, CPU {want:#010x}",
                        ["uniforms", "particles", "bulk", "mirror"][slot]
                    );
                });
            }
        }
        if sample[..] != mirror[..SAMPLE as usize] {
            mismatches += 1;
            bar.suspend(|| println!("frame {frame}: read-back bytes of the mirror differ"));
        }

        let now = started.elapsed().as_secs_f64();
        for (kind, bytes, time) in [
            ("upload", upload_bytes, upload_time),
            ("copy", copy_bytes, copy_time),
            ("readback", readback_bytes, readback_time),
        ] {
            let secs = time.as_secs_f64().max(1e-9);
            recorder.record(
                now,
                &format!("{kind} throughput"),
                Unit::BytesPerSec,
                bytes as f64 / secs,
            );
        }
        recorder.record(
            now,
            "frame transfer time",
            Unit::Nanos,
            frame_transfer.as_nanos() as f64,
        );
        recorder.record(
            now,
            "compute pass",
            Unit::Nanos,
            compute_time.as_nanos() as f64,
        );
        recorder.record(now, "staging used", Unit::Bytes, staging.used as f64);
        recorder.record(
            now,
            "staging capacity",
            Unit::Bytes,
            staging.capacity() as f64,
        );
        recorder.record(
            now,
            "device live bytes",
            Unit::Bytes,
            device.live_bytes() as f64,
        );
        recorder.record(
            now,
            "staging fragmentation",
            Unit::Ratio,
            staging.fragmentation(),
        );

        frame += 1;
        match args.frames {
            Some(_) => bar.set_position(frame),
            None => bar.set_position((started.elapsed().as_secs_f64() * 10.0) as u64),
        }
        bar.set_message(format!(
            "frame {frame}, {checked} checksums, {mismatches} mismatches"
        ));
    }
    bar.finish_and_clear();
    drop(checksummer);
    manager.wait_idle().map_err(err)?;
    let elapsed = started.elapsed().as_secs_f64();

    let report = manager.report();
    // The JSON also carries the demo's own timings (submit to completion, per kind).
    let mut json_report = report.clone();
    json_report
        .providers
        .push(events.snapshot().to_provider_snapshot("demo"));
    let frames = frame;
    let summary = frame_time.snapshot();
    let ms = |ns: Option<u64>| ns.unwrap_or(0) as f64 / 1e6;
    println!("{report}");
    println!("--- demo summary");
    println!(
        "frames: {frames} in {elapsed:.2} s ({:.1} frames/s)",
        frames as f64 / elapsed
    );
    let snapshot = events.snapshot();
    for (kind, t) in ["upload", "readback", "copy"]
        .iter()
        .zip(&snapshot.transfers)
    {
        println!(
            "{kind:<9} {:>10.1} MB/s  ({} transfers, {:.1} MiB, submit to completion)",
            t.throughput().unwrap_or(0.0) / 1e6,
            t.count(),
            t.total_bytes() as f64 / (1 << 20) as f64
        );
    }
    println!(
        "frame transfer time (uploads + copies + readback): p50 {:.3} ms, p99 {:.3} ms",
        ms(summary.p50()),
        ms(summary.p99())
    );
    println!(
        "staging: peak {:.1} MiB in use per frame, {} chunks, peak fragmentation {:.2}",
        staging_peak as f64 / (1 << 20) as f64,
        manager.staging_chunks(),
        fragmentation_peak
    );
    let registry = manager.registry().buffers();
    for location in MemoryLocation::ALL {
        let (n, bytes) = registry
            .iter()
            .filter(|b| b.location == location)
            .fold((0, 0), |(n, bytes), b| (n + 1, bytes + b.size));
        println!(
            "memory {:<13} {n:>3} buffers in the manager's registry, {:>8.2} MiB",
            location.to_string(),
            bytes as f64 / (1 << 20) as f64
        );
    }
    println!(
        "device: {} live buffers, {:.2} MiB (with staging chunks and the streaming ring, upload memory)",
        device.live_buffers(),
        device.live_bytes() as f64 / (1 << 20) as f64
    );
    println!(
        "checksums: {checked} compared, {}",
        if mismatches == 0 {
            "every one matches the CPU's".to_owned()
        } else {
            format!("{mismatches} MISMATCHES")
        }
    );
    let info = device.adapter_info();
    let svg = recorder.to_svg(&ChartOptions {
        title: format!("gantry demo: {} on {}", device.backend_name(), info.name),
        ..ChartOptions::default()
    });
    Ok(Outcome {
        ok: mismatches == 0,
        frames,
        p50_ms: ms(summary.p50()),
        p99_ms: ms(summary.p99()),
        svg,
        json: json_report.to_json(),
    })
}

/// Fills `out` with words that depend on `seed` and their position.
fn fill(out: &mut [u8], seed: u32) {
    for (i, w) in out.chunks_exact_mut(4).enumerate() {
        let v = (i as u32).wrapping_mul(2_654_435_761) ^ seed;
        w.copy_from_slice(&v.rotate_left(i as u32 & 31).to_le_bytes());
    }
}

fn workgroups(size: u64) -> u32 {
    (size / 4).div_ceil(WORKGROUP).clamp(1, MAX_GROUPS) as u32
}

/// The checksum pass through the backend's own wgpu device and queue.
struct WgpuChecksummer {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

impl WgpuChecksummer {
    fn new(device: &Device<WgpuBackend>) -> Result<Self, String> {
        let wgpu_device = device.raw().wgpu_device().clone();
        let module = wgpu_device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("demo checksum"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let pipeline = wgpu_device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("demo checksum"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        Ok(Self {
            queue: device.raw().wgpu_queue().clone(),
            device: wgpu_device,
            pipeline,
            layout,
        })
    }
}

impl Checksummer<WgpuBackend> for WgpuChecksummer {
    fn run(
        &mut self,
        _after: gantry::core::SubmissionIndex,
        ranges: &[Range<WgpuBackend>],
        results: &Buffer<WgpuBackend>,
        stride: u64,
    ) -> Result<(), String> {
        // gantry submits to this same queue, so its uploads and copies come first; wgpu
        // tracks the buffers' use across submissions.
        let results = results
            .with_raw(|b| b.raw().clone())
            .ok_or("results buffer destroyed")?;
        let mut groups = Vec::with_capacity(ranges.len());
        for (slot, range) in ranges.iter().enumerate() {
            let raw = range
                .buffer
                .with_raw(|b| b.raw().clone())
                .ok_or("buffer destroyed")?;
            let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("demo checksum"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &raw,
                            offset: range.offset,
                            size: std::num::NonZeroU64::new(range.size),
                        }),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &results,
                            offset: slot as u64 * stride,
                            size: std::num::NonZeroU64::new(4),
                        }),
                    },
                ],
            });
            groups.push((group, workgroups(range.size)));
        }
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("demo checksum"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("demo checksum"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            for (group, count) in &groups {
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(*count, 1, 1);
            }
        }
        let index = self.queue.submit([encoder.finish()]);
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| format!("poll: {e}"))?;
        Ok(())
    }
}

/// The checksum pass through the raw ash device: SPIR-V from naga, one descriptor set per
/// buffer, a command buffer on the universal queue that waits for gantry's timeline
/// semaphore, and a fence.
struct VulkanChecksummer {
    backend: VulkanBackend,
    module: vk::ShaderModule,
    set_layout: vk::DescriptorSetLayout,
    layout: vk::PipelineLayout,
    pipeline: vk::Pipeline,
    pool: vk::DescriptorPool,
    sets: Vec<vk::DescriptorSet>,
    commands: vk::CommandPool,
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
}

/// WGSL to SPIR-V with naga.
fn spirv() -> Result<Vec<u32>, String> {
    let module = naga::front::wgsl::parse_str(SHADER).map_err(|e| e.emit_to_string(SHADER))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .map_err(|e| format!("{e:?}"))?;
    let options = naga::back::spv::Options {
        lang_version: (1, 0),
        ..naga::back::spv::Options::default()
    };
    naga::back::spv::write_vec(
        &module,
        &info,
        &options,
        Some(&naga::back::spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: "main".into(),
        }),
    )
    .map_err(|e| e.to_string())
}

fn vk_err(what: &'static str) -> impl Fn(vk::Result) -> String {
    move |e| format!("{what}: {e}")
}

impl VulkanChecksummer {
    fn new(device: &Device<VulkanBackend>) -> Result<Self, String> {
        let backend = device.raw().clone();
        let code = spirv()?;
        let raw = backend.raw_device();
        let (family, _) = backend.universal_queue();
        let mut this = Self {
            backend: backend.clone(),
            module: vk::ShaderModule::null(),
            set_layout: vk::DescriptorSetLayout::null(),
            layout: vk::PipelineLayout::null(),
            pipeline: vk::Pipeline::null(),
            pool: vk::DescriptorPool::null(),
            sets: Vec::new(),
            commands: vk::CommandPool::null(),
            cmd: vk::CommandBuffer::null(),
            fence: vk::Fence::null(),
        };
        // Every object is stored in `this` as soon as it exists, so `Drop` frees whatever was
        // made if a later step fails.
        // SAFETY: `code` is SPIR-V that naga validated and wrote.
        this.module = unsafe {
            raw.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&code), None)
        }
        .map_err(vk_err("vkCreateShaderModule"))?;
        let bindings = [0, 1].map(|b| {
            vk::DescriptorSetLayoutBinding::default()
                .binding(b)
                .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
        });
        // SAFETY: a valid create info on a live device.
        this.set_layout = unsafe {
            raw.create_descriptor_set_layout(
                &vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings),
                None,
            )
        }
        .map_err(vk_err("vkCreateDescriptorSetLayout"))?;
        let set_layouts = [this.set_layout];
        // SAFETY: the set layout was created above on this device.
        this.layout = unsafe {
            raw.create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts),
                None,
            )
        }
        .map_err(vk_err("vkCreatePipelineLayout"))?;
        let stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(this.module)
            .name(c"main");
        let info = vk::ComputePipelineCreateInfo::default()
            .stage(stage)
            .layout(this.layout);
        // SAFETY: module and layout are live objects of this device, and the layout matches
        // the shader's bindings (two storage buffers in set 0).
        this.pipeline =
            unsafe { raw.create_compute_pipelines(vk::PipelineCache::null(), &[info], None) }
                .map_err(|(_, e)| format!("vkCreateComputePipelines: {e}"))?[0];
        let sizes = [vk::DescriptorPoolSize::default()
            .ty(vk::DescriptorType::STORAGE_BUFFER)
            .descriptor_count(2 * CHECKED as u32)];
        // SAFETY: a valid create info on a live device.
        this.pool = unsafe {
            raw.create_descriptor_pool(
                &vk::DescriptorPoolCreateInfo::default()
                    .max_sets(CHECKED as u32)
                    .pool_sizes(&sizes),
                None,
            )
        }
        .map_err(vk_err("vkCreateDescriptorPool"))?;
        let layouts = [this.set_layout; CHECKED];
        // SAFETY: the pool has room for these sets, allocated from one thread.
        let sets = unsafe {
            raw.allocate_descriptor_sets(
                &vk::DescriptorSetAllocateInfo::default()
                    .descriptor_pool(this.pool)
                    .set_layouts(&layouts),
            )
        }
        .map_err(vk_err("vkAllocateDescriptorSets"))?;
        this.sets = sets;
        // SAFETY: a valid create info for the universal queue's family on a live device.
        this.commands = unsafe {
            raw.create_command_pool(
                &vk::CommandPoolCreateInfo::default()
                    .queue_family_index(family)
                    .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER),
                None,
            )
        }
        .map_err(vk_err("vkCreateCommandPool"))?;
        // SAFETY: the pool was created above and is used from this thread only.
        this.cmd = unsafe {
            raw.allocate_command_buffers(
                &vk::CommandBufferAllocateInfo::default()
                    .command_pool(this.commands)
                    .level(vk::CommandBufferLevel::PRIMARY)
                    .command_buffer_count(1),
            )
        }
        .map_err(vk_err("vkAllocateCommandBuffers"))?[0];
        // SAFETY: a valid create info on a live device.
        this.fence = unsafe { raw.create_fence(&vk::FenceCreateInfo::default(), None) }
            .map_err(vk_err("vkCreateFence"))?;
        Ok(this)
    }
}

impl Checksummer<VulkanBackend> for VulkanChecksummer {
    fn run(
        &mut self,
        after: gantry::core::SubmissionIndex,
        ranges: &[Range<VulkanBackend>],
        results: &Buffer<VulkanBackend>,
        stride: u64,
    ) -> Result<(), String> {
        let raw = self.backend.raw_device();
        let results = results
            .with_raw(|b| b.raw())
            .ok_or("results buffer destroyed")?;
        let mut dispatches = Vec::with_capacity(ranges.len());
        for (slot, (range, &set)) in ranges.iter().zip(&self.sets).enumerate() {
            let data = [vk::DescriptorBufferInfo::default()
                .buffer(
                    range
                        .buffer
                        .with_raw(|b| b.raw())
                        .ok_or("buffer destroyed")?,
                )
                .offset(range.offset)
                .range(range.size)];
            let result = [vk::DescriptorBufferInfo::default()
                .buffer(results)
                .offset(slot as u64 * stride)
                .range(4)];
            let writes = [
                vk::WriteDescriptorSet::default()
                    .dst_set(set)
                    .dst_binding(0)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(&data),
                vk::WriteDescriptorSet::default()
                    .dst_set(set)
                    .dst_binding(1)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(&result),
            ];
            // SAFETY: no pending command buffer uses the set (the previous run waited for its
            // fence); the buffers are live (the demo holds them past this run) and have
            // STORAGE usage; the offsets are multiples of minStorageBufferOffsetAlignment
            // (the streaming ring's alignment includes it; the results' stride is at least
            // it).
            unsafe { raw.update_descriptor_sets(&writes, &[]) };
            dispatches.push((set, workgroups(range.size)));
        }
        let (_, queue) = self.backend.universal_queue();
        let cmd = self.cmd;
        // SAFETY: the command buffer is not pending: the previous run waited for its fence.
        unsafe {
            raw.reset_command_buffer(cmd, vk::CommandBufferResetFlags::empty())
                .map_err(vk_err("vkResetCommandBuffer"))?;
            raw.begin_command_buffer(
                cmd,
                &vk::CommandBufferBeginInfo::default()
                    .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
            )
            .map_err(vk_err("vkBeginCommandBuffer"))?;
        }
        let before = [vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::SHADER_READ | vk::AccessFlags::SHADER_WRITE)];
        let after_barrier = [vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE)
            .dst_access_mask(vk::AccessFlags::TRANSFER_READ | vk::AccessFlags::HOST_READ)];
        // SAFETY: `cmd` is recording; the pipeline, layout and sets are live, and the sets
        // name live buffers (see `new`).
        unsafe {
            raw.cmd_pipeline_barrier(
                cmd,
                vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::DependencyFlags::empty(),
                &before,
                &[],
                &[],
            );
            raw.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, self.pipeline);
            for (set, groups) in &dispatches {
                raw.cmd_bind_descriptor_sets(
                    cmd,
                    vk::PipelineBindPoint::COMPUTE,
                    self.layout,
                    0,
                    &[*set],
                    &[],
                );
                raw.cmd_dispatch(cmd, *groups, 1, 1);
            }
            raw.cmd_pipeline_barrier(
                cmd,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::PipelineStageFlags::TRANSFER | vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &after_barrier,
                &[],
                &[],
            );
            raw.end_command_buffer(cmd)
                .map_err(vk_err("vkEndCommandBuffer"))?;
        }
        // Wait on gantry's timeline semaphore for the copies (and so the uploads before them).
        let wait_values = [after.0];
        let wait_semaphores = [self.backend.timeline_semaphore()];
        let wait_stages = [vk::PipelineStageFlags::COMPUTE_SHADER];
        let mut timeline =
            vk::TimelineSemaphoreSubmitInfo::default().wait_semaphore_values(&wait_values);
        let cmds = [cmd];
        let submit = vk::SubmitInfo::default()
            .wait_semaphores(&wait_semaphores)
            .wait_dst_stage_mask(&wait_stages)
            .command_buffers(&cmds)
            .push_next(&mut timeline);
        // SAFETY: the universal queue is used from this thread only while the demo runs (gantry
        // submits from the calling thread, which is this one); the fence is unsignalled (reset
        // after each wait); the command buffer is executable.
        unsafe {
            raw.queue_submit(queue, &[submit], self.fence)
                .map_err(vk_err("vkQueueSubmit"))?;
            raw.wait_for_fences(&[self.fence], true, u64::MAX)
                .map_err(vk_err("vkWaitForFences"))?;
            raw.reset_fences(&[self.fence])
                .map_err(vk_err("vkResetFences"))?;
        }
        Ok(())
    }
}

impl Drop for VulkanChecksummer {
    fn drop(&mut self) {
        let raw = self.backend.raw_device();
        // SAFETY: every submission of `cmd` was waited for (its fence) before `run` returned,
        // so the GPU uses none of these objects; null handles are ignored by the destroy calls.
        unsafe {
            raw.destroy_fence(self.fence, None);
            raw.destroy_command_pool(self.commands, None);
            raw.destroy_descriptor_pool(self.pool, None);
            raw.destroy_pipeline(self.pipeline, None);
            raw.destroy_pipeline_layout(self.layout, None);
            raw.destroy_descriptor_set_layout(self.set_layout, None);
            raw.destroy_shader_module(self.module, None);
        }
    }
}
