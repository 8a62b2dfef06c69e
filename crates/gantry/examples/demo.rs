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
//! [--json PATH] [--svg PATH] [--validation]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use gantry::core::{Backend, Buffer, BufferDesc, BufferUsage, Device, DeviceType, MemoryLocation};
use gantry::stats::{
    ChartOptions, Collector, EventStats, Histogram, LocationKind, Recorder, TransferKind, Unit,
};
use gantry::vulkan::ash::vk;
use gantry::vulkan::{AdapterPreference, VulkanBackend, VulkanOptions};
use gantry::wgpu::{AdapterSelector, WgpuBackend, WgpuOptions};

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
            "-h" | "--help" => {
                println!(
                    "gantry demo [--backend wgpu|vulkan] [--adapter NAME] [--frames N] \
                     [--seconds S] [--json PATH] [--svg PATH] [--validation]"
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
    let out_dir = PathBuf::from("target/gantry-demo");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
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
    /// Checksums every target buffer into its slot of the results buffer, after gantry's
    /// submission `after`, and waits for it.
    fn run(
        &mut self,
        device: &Device<B>,
        after: gantry::core::SubmissionIndex,
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

/// The buffers one run streams into.
struct Buffers<B: Backend> {
    uniforms: Buffer<B>,
    particles: Buffer<B>,
    bulk: Buffer<B>,
    mirror: Buffer<B>,
    results: Buffer<B>,
    /// Distance between checksum slots in `results` (the storage offset alignment).
    slot_stride: u64,
}

type NewChecksummer<B, C> = fn(&Device<B>, &Buffers<B>) -> Result<C, String>;

fn run_workload<B: Backend, C: Checksummer<B>>(
    device: &Device<B>,
    args: &Args,
    new_checksummer: NewChecksummer<B, C>,
) -> Result<Outcome, String> {
    let events = Arc::new(EventStats::new("transfers"));
    let collector = Collector::new().with(events.clone());
    let limits = device.limits().clone();
    let slot_stride = limits.min_storage_offset_alignment.max(256);
    let storage = BufferUsage::STORAGE | BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
    let create = |label: &str, size: u64, usage: BufferUsage| {
        let started = Instant::now();
        let b = device
            .create_buffer(&BufferDesc {
                label: Some(label),
                ..BufferDesc::new(size, usage, MemoryLocation::DeviceLocal)
            })
            .map_err(|e| format!("create {label}: {e}"))?;
        events.record_creation(size, LocationKind::DeviceLocal, started.elapsed());
        Ok::<_, String>(b)
    };
    let buffers = Buffers {
        uniforms: create(
            "demo uniforms",
            UNIFORM_SLOTS * UNIFORM_STRIDE,
            storage | BufferUsage::UNIFORM,
        )?,
        particles: create(
            "demo particles",
            PARTICLES * PARTICLE_SIZE,
            storage | BufferUsage::VERTEX,
        )?,
        bulk: create("demo bulk", BULK_UPLOADS * BULK_SIZE, storage)?,
        mirror: create(
            "demo mirror",
            PARTICLES * PARTICLE_SIZE + BULK_SIZE,
            storage,
        )?,
        results: create("demo checksums", CHECKED as u64 * slot_stride, storage)?,
        slot_stride,
    };
    let mut checksummer = new_checksummer(device, &buffers)?;

    let frame_time = Histogram::new();
    let mut recorder = Recorder::new();
    let bar = match args.frames {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new((args.seconds * 10.0).ceil() as u64),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:40}] {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );

    let mut uniforms = vec![0u8; (UNIFORM_SLOTS * UNIFORM_STRIDE) as usize];
    let mut particles = vec![0u8; (PARTICLES * PARTICLE_SIZE) as usize];
    let mut bulk = vec![0u8; (BULK_UPLOADS * BULK_SIZE) as usize];
    let zeros = vec![0u8; (CHECKED as u64 * slot_stride) as usize];
    let started = Instant::now();
    let mut frame = 0u64;
    let mut mismatches = 0u64;
    let mut checked = 0u64;
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
        fill(&mut particles, seed.rotate_left(7));
        fill(&mut bulk, seed.rotate_left(13));
        let copied_bulk = frame % BULK_UPLOADS;
        let bulk_range =
            (copied_bulk * BULK_SIZE) as usize..((copied_bulk + 1) * BULK_SIZE) as usize;
        let mut mirror = particles.clone();
        mirror.extend_from_slice(&bulk[bulk_range.clone()]);
        let expected = [
            checksum(&uniforms),
            checksum(&particles),
            checksum(&bulk),
            checksum(&mirror),
        ];

        let frame_started = Instant::now();
        // Uploads: uniforms slot by slot, the particles whole, the bulk in large pieces, and
        // the checksum slots cleared, all in one batch through gantry's staging.
        let t = Instant::now();
        let mut batch = device.batch().map_err(|e| e.to_string())?;
        batch
            .write(&buffers.results, 0, &zeros)
            .map_err(|e| e.to_string())?;
        for slot in 0..UNIFORM_SLOTS {
            let at = slot * UNIFORM_STRIDE;
            batch
                .write(
                    &buffers.uniforms,
                    at,
                    &uniforms[at as usize..(at + UNIFORM_STRIDE) as usize],
                )
                .map_err(|e| e.to_string())?;
        }
        batch
            .write(&buffers.particles, 0, &particles)
            .map_err(|e| e.to_string())?;
        for piece in 0..BULK_UPLOADS {
            let at = piece * BULK_SIZE;
            batch
                .write(
                    &buffers.bulk,
                    at,
                    &bulk[at as usize..(at + BULK_SIZE) as usize],
                )
                .map_err(|e| e.to_string())?;
        }
        let uploaded = batch.submit().map_err(|e| e.to_string())?;
        device.wait(uploaded, None).map_err(|e| e.to_string())?;
        let upload_bytes = (uniforms.len() + particles.len() + bulk.len() + zeros.len()) as u64;
        let upload_time = t.elapsed();
        events.record_transfer(TransferKind::Upload, upload_bytes, upload_time);

        // Copies: the particles and one bulk piece into the mirror.
        let t = Instant::now();
        let mut batch = device.batch().map_err(|e| e.to_string())?;
        batch
            .copy(
                &buffers.particles,
                0,
                &buffers.mirror,
                0,
                PARTICLES * PARTICLE_SIZE,
            )
            .map_err(|e| e.to_string())?;
        batch
            .copy(
                &buffers.bulk,
                copied_bulk * BULK_SIZE,
                &buffers.mirror,
                PARTICLES * PARTICLE_SIZE,
                BULK_SIZE,
            )
            .map_err(|e| e.to_string())?;
        let copied = batch.submit().map_err(|e| e.to_string())?;
        device.wait(copied, None).map_err(|e| e.to_string())?;
        let copy_time = t.elapsed();
        events.record_transfer(
            TransferKind::Copy,
            PARTICLES * PARTICLE_SIZE + BULK_SIZE,
            copy_time,
        );
        let transfer_time = frame_started.elapsed();

        // The GPU consumes the data.
        let t = Instant::now();
        checksummer.run(device, copied)?;
        let compute_time = t.elapsed();

        // Readback: the checksums and a sample of the mirror.
        let t = Instant::now();
        let results = device
            .read(&buffers.results, 0, CHECKED as u64 * slot_stride)
            .map_err(|e| e.to_string())?;
        let sample = device
            .read(&buffers.mirror, 0, SAMPLE)
            .map_err(|e| e.to_string())?;
        let readback_time = t.elapsed();
        events.record_transfer(
            TransferKind::Readback,
            CHECKED as u64 * slot_stride + SAMPLE,
            readback_time,
        );
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
                bar.println(format!(
                    "frame {frame}: checksum of {} MISMATCH: GPU {got:#010x}, CPU {want:#010x}",
                    ["uniforms", "particles", "bulk", "mirror"][slot]
                ));
            }
        }
        if sample[..] != mirror[..SAMPLE as usize] {
            mismatches += 1;
            bar.println(format!(
                "frame {frame}: read-back bytes of the mirror differ"
            ));
        }

        let now = started.elapsed().as_secs_f64();
        let copy_bytes = PARTICLES * PARTICLE_SIZE + BULK_SIZE;
        let readback_bytes = CHECKED as u64 * slot_stride + SAMPLE;
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
        recorder.record(now, "live bytes", Unit::Bytes, device.live_bytes() as f64);

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
    device.wait_idle().map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64();

    let report = collector.report();
    let frames = frame;
    let summary = frame_time.snapshot();
    let ms = |ns: Option<u64>| ns.unwrap_or(0) as f64 / 1e6;
    println!("{report}");
    println!(
        "frames: {frames} in {elapsed:.2} s ({:.1} frames/s)",
        frames as f64 / elapsed
    );
    println!(
        "frame transfer time (uploads + copies + readback): p50 {:.3} ms, p99 {:.3} ms",
        ms(summary.p50()),
        ms(summary.p99())
    );
    println!(
        "memory: {} live bytes in {} buffers",
        device.live_bytes(),
        device.live_buffers()
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
        json: report.to_json(),
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

fn checked_buffers<B: Backend>(b: &Buffers<B>) -> [&Buffer<B>; CHECKED] {
    [&b.uniforms, &b.particles, &b.bulk, &b.mirror]
}

/// The checksum pass through the backend's own wgpu device and queue.
struct WgpuChecksummer {
    pipeline: wgpu::ComputePipeline,
    groups: Vec<(wgpu::BindGroup, u32)>,
}

impl WgpuChecksummer {
    fn new(device: &Device<WgpuBackend>, buffers: &Buffers<WgpuBackend>) -> Result<Self, String> {
        let wgpu_device = device.raw().wgpu_device();
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
        let results = buffers
            .results
            .with_raw(|b| b.raw().clone())
            .ok_or("results buffer destroyed")?;
        let mut groups = Vec::new();
        for (slot, buffer) in checked_buffers(buffers).into_iter().enumerate() {
            let raw = buffer
                .with_raw(|b| b.raw().clone())
                .ok_or("buffer destroyed")?;
            let group = wgpu_device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("demo checksum"),
                layout: &layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &raw,
                            offset: 0,
                            size: std::num::NonZeroU64::new(buffer.requested_size()),
                        }),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &results,
                            offset: slot as u64 * buffers.slot_stride,
                            size: std::num::NonZeroU64::new(4),
                        }),
                    },
                ],
            });
            groups.push((group, workgroups(buffer.requested_size())));
        }
        Ok(Self { pipeline, groups })
    }
}

impl Checksummer<WgpuBackend> for WgpuChecksummer {
    fn run(
        &mut self,
        device: &Device<WgpuBackend>,
        _after: gantry::core::SubmissionIndex,
    ) -> Result<(), String> {
        // gantry submits to this same queue, so its uploads and copies come first; wgpu
        // tracks the buffers' use across submissions.
        let backend = device.raw();
        let mut encoder =
            backend
                .wgpu_device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("demo checksum"),
                });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("demo checksum"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            for (group, count) in &self.groups {
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(*count, 1, 1);
            }
        }
        let index = backend.wgpu_queue().submit([encoder.finish()]);
        backend
            .wgpu_device()
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
    sets: Vec<(vk::DescriptorSet, u32)>,
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
    fn new(
        device: &Device<VulkanBackend>,
        buffers: &Buffers<VulkanBackend>,
    ) -> Result<Self, String> {
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
        let results = buffers
            .results
            .with_raw(|b| b.raw())
            .ok_or("results buffer destroyed")?;
        for (slot, (buffer, set)) in checked_buffers(buffers).into_iter().zip(sets).enumerate() {
            let data = [vk::DescriptorBufferInfo::default()
                .buffer(buffer.with_raw(|b| b.raw()).ok_or("buffer destroyed")?)
                .offset(0)
                .range(buffer.requested_size())];
            let result = [vk::DescriptorBufferInfo::default()
                .buffer(results)
                .offset(slot as u64 * buffers.slot_stride)
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
            // SAFETY: the set is unused by the GPU yet; the buffers are live (the demo keeps
            // them until this checksummer is dropped) and have STORAGE usage; the result
            // offset is a multiple of minStorageBufferOffsetAlignment.
            unsafe { raw.update_descriptor_sets(&writes, &[]) };
            this.sets.push((set, workgroups(buffer.requested_size())));
        }
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
        _device: &Device<VulkanBackend>,
        after: gantry::core::SubmissionIndex,
    ) -> Result<(), String> {
        let raw = self.backend.raw_device();
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
            for (set, groups) in &self.sets {
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
