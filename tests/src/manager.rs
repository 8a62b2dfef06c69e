//! Cases for the `gantry` buffer manager (M1-M7, M13), generic over the backend like the
//! rest of the suite: each builds a [`BufferManager`] over the suite's device.

use std::sync::Arc;

use gantry::{
    BufferLifecycle, BufferManager, Error as MError, ManagerConfig, StagingConfig, StagingEvent,
    UploadState,
};
use gantry_core::{Backend, BufferDesc, BufferUsage, Device, MemoryLocation, block_on};

use crate::cases::{Rng, compare};
use crate::{Case, Outcome};

type R = Result<String, String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

trait Step<T> {
    fn step(self, what: &str) -> Result<T, String>;
}

impl<T, E: core::fmt::Debug> Step<T> for Result<T, E> {
    fn step(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: unexpected error: {e:?}"))
    }
}

/// The manager cases, in table order.
#[must_use]
pub fn cases<B: Backend>() -> Vec<Case<B>> {
    macro_rules! case {
        ($name:ident) => {
            Case {
                name: stringify!($name),
                expected_messages: &[],
                slow: false,
                run: |d| match $name(d) {
                    Ok(note) => Outcome::Pass(note),
                    Err(e) => Outcome::Fail(e),
                },
            }
        };
    }
    vec![
        case!(manager_mixed_random_threads),
        case!(manager_streaming_ring_wraps),
        case!(manager_drop_mid_flight),
        case!(manager_drop_submits_queued),
        case!(manager_staging_recovery_order),
        case!(manager_registry_pool_report),
        case!(manager_async_handles),
        case!(manager_joined_uploads),
    ]
}

fn small_staging(chunk: u64, initial: usize, max: usize) -> ManagerConfig {
    ManagerConfig {
        staging: StagingConfig {
            chunk_size: chunk,
            initial_chunks: initial,
            max_chunks: max,
            dedicated_for_large: true,
        },
        ..ManagerConfig::default()
    }
}

const RW: BufferUsage = BufferUsage::TRANSFER_SRC.union(BufferUsage::TRANSFER_DST);

/// Thousands of random uploads, copies and readbacks from several threads through one
/// manager, checked against a host model of every buffer (each thread owns its buffers, so
/// its model is exact), with small staging chunks so recovery runs too.
fn manager_mixed_random_threads<B: Backend>(d: &Device<B>) -> R {
    let m = BufferManager::new(d.clone(), small_staging(64 << 10, 1, 4)).step("manager")?;
    let threads = 4u64;
    let ops = 600u64;
    let size = 32u64 << 10;
    let results: Vec<Result<(u64, u64), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let m = m.clone();
                scope.spawn(move || -> Result<(u64, u64), String> {
                    let mut rng = Rng::new(7000 + t);
                    let bufs: Vec<_> = (0..2)
                        .map(|i| {
                            m.create_buffer(
                                &BufferDesc::new(
                                    size,
                                    RW | BufferUsage::STORAGE,
                                    MemoryLocation::DeviceLocal,
                                )
                                .with_label(&format!("t{t} b{i}")),
                            )
                        })
                        .collect::<Result<_, _>>()
                        .step("create")?;
                    let mut model = vec![vec![0u8; size as usize]; 2];
                    for (b, mdl) in bufs.iter().zip(&model) {
                        b.write(0, mdl).step("zero")?;
                    }
                    let mut reads = Vec::new();
                    let mut checked = 0u64;
                    for op in 0..ops {
                        let which = rng.below(2) as usize;
                        match rng.below(11) {
                            0..=5 => {
                                // Mostly small writes, some adjacent runs, a few large.
                                let len = if rng.below(20) == 0 {
                                    (1 + rng.below(24 << 10 >> 2)) * 4
                                } else {
                                    (1 + rng.below(128)) * 4
                                };
                                let off = rng.below((size - len) / 4 + 1) * 4;
                                let data = rng.bytes(len as usize);
                                bufs[which].write(off, &data).step("upload")?;
                                model[which][off as usize..(off + len) as usize]
                                    .copy_from_slice(&data);
                                if rng.below(4) == 0 && off + 2 * len <= size {
                                    let data2 = rng.bytes(len as usize);
                                    bufs[which].write(off + len, &data2).step("adjacent")?;
                                    model[which][(off + len) as usize..(off + 2 * len) as usize]
                                        .copy_from_slice(&data2);
                                }
                            }
                            6..=7 => {
                                let len = (1 + rng.below(1024)) * 4;
                                let so = rng.below((size - len) / 4 + 1) * 4;
                                let dof = rng.below((size - len) / 4 + 1) * 4;
                                let other = 1 - which;
                                m.copy(bufs[which].buffer(), so, bufs[other].buffer(), dof, len)
                                    .step("copy")?;
                                let src = model[which][so as usize..(so + len) as usize].to_vec();
                                model[other][dof as usize..(dof + len) as usize]
                                    .copy_from_slice(&src);
                            }
                            10 => {
                                // Many uploads in one call: small and mid-sized, 16-byte
                                // multiples among them, overlaps (the later wins), sometimes
                                // more than a staging chunk's worth (split into regions).
                                let most = if rng.below(4) == 0 { 400 } else { 40 };
                                let n = 1 + rng.below(most);
                                let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
                                for _ in 0..n {
                                    let len = match rng.below(10) {
                                        0 => (1 + rng.below(2048)) * 4,
                                        1..=3 => (1 + rng.below(16)) * 16,
                                        _ => (1 + rng.below(64)) * 4,
                                    };
                                    let off = rng.below((size - len) / 4 + 1) * 4;
                                    entries.push((off, rng.bytes(len as usize)));
                                }
                                let writes: Vec<(u64, &[u8])> =
                                    entries.iter().map(|(o, b)| (*o, &b[..])).collect();
                                let h = m
                                    .upload_many(bufs[which].buffer(), &writes)
                                    .step("upload_many")?;
                                for (off, data) in &entries {
                                    model[which][*off as usize..*off as usize + data.len()]
                                        .copy_from_slice(data);
                                }
                                if rng.below(8) == 0 {
                                    m.flush().step("flush")?;
                                    h.wait().step("upload_many wait")?;
                                }
                            }
                            _ => {
                                let off = rng.below(size - 1);
                                let len = 1 + rng.below((size - off).min(4096));
                                let want =
                                    model[which][off as usize..(off + len) as usize].to_vec();
                                reads.push((bufs[which].read(off, len).step("read")?, want, op));
                            }
                        }
                        if rng.below(25) == 0 {
                            m.flush().step("flush")?;
                        }
                        if reads.len() >= 8 {
                            for (h, want, at) in reads.drain(..) {
                                let got = h.wait().step("read wait")?;
                                compare(
                                    &format!("thread {t} read queued at op {at}"),
                                    &got,
                                    &want,
                                )?;
                                checked += 1;
                            }
                        }
                    }
                    for (h, want, at) in reads.drain(..) {
                        let got = h.wait().step("read wait")?;
                        compare(&format!("thread {t} read queued at op {at}"), &got, &want)?;
                        checked += 1;
                    }
                    for (i, b) in bufs.iter().enumerate() {
                        let got = b
                            .read(0, size)
                            .step("final read")?
                            .wait()
                            .step("final wait")?;
                        compare(
                            &format!("thread {t} buffer {i} at the end"),
                            &got,
                            &model[i],
                        )?;
                    }
                    Ok((ops, checked))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut total = 0;
    let mut reads = 0;
    for r in results {
        let (o, c) = r?;
        total += o;
        reads += c;
    }
    m.wait_idle().step("idle")?;
    let usage = m.staging_usage();
    ensure!(
        usage.used == 0 && usage.wasted_at_wrap == 0,
        "staging not empty after wait_idle: {usage:?}"
    );
    Ok(format!(
        "{threads} threads, {total} random ops (+adjacent pairs), {reads} readbacks matched the model; {} submissions, {} copy regions for {} queued ops",
        m.submissions_total(),
        m.copy_regions_total(),
        m.queued_ops_total()
    ))
}

/// A streaming ring with 2 frames in flight wraps 200 times; every frame's records are copied
/// out by GPU work right after the frame, and read back at the end: a slot overwritten while
/// its copy was pending would show another frame's bytes.
fn manager_streaming_ring_wraps<B: Backend>(d: &Device<B>) -> R {
    let m = BufferManager::new(
        d.clone(),
        ManagerConfig {
            frames_in_flight: 2,
            ..ManagerConfig::default()
        },
    )
    .step("manager")?;
    let frames = 400u64;
    let per_frame = 4u64;
    let record = 256u64;
    let ring = m
        .create_streaming_ring("stream", per_frame * 512, BufferUsage::STORAGE)
        .step("ring")?;
    let checker = m
        .create_storage_buffer(
            "checker",
            frames * per_frame * record,
            MemoryLocation::DeviceLocal,
        )
        .step("checker")?;
    let mut want = vec![0u8; (frames * per_frame * record) as usize];
    for f in 0..frames {
        m.begin_frame().step("begin")?;
        ring.begin_frame().step("ring begin")?;
        let mut allocs = Vec::new();
        for i in 0..per_frame {
            let bytes: Vec<u8> = (0..record)
                .map(|k| (f as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(7) ^ k as u8)
                .collect();
            let a = ring.push(&bytes).step("push")?;
            ensure!(
                a.offset % ring.alignment() == 0,
                "offset {} not aligned to {}",
                a.offset,
                ring.alignment()
            );
            let at = (f * per_frame + i) * record;
            want[at as usize..(at + record) as usize].copy_from_slice(&bytes);
            allocs.push((a, at));
        }
        ring.end_frame().step("ring end")?;
        for (a, at) in allocs {
            m.copy(&a.buffer, a.offset, checker.buffer(), at, record)
                .step("copy")?;
        }
        m.end_frame().step("end")?;
    }
    let got = checker
        .read(0, frames * per_frame * record)
        .step("read")?
        .wait()
        .step("wait")?;
    compare("checker", &got, &want)?;
    Ok(format!(
        "{frames} frames, 2 slots (ring wrapped {} times), {} records copied out by the GPU and matched",
        frames / 2,
        frames * per_frame
    ))
}

/// Buffers, pooled buffers and staging regions dropped while submitted work still uses them:
/// no validation error (the harness checks), and the survivors hold exactly their data.
fn manager_drop_mid_flight<B: Backend>(d: &Device<B>) -> R {
    let m = BufferManager::new(d.clone(), small_staging(256 << 10, 1, 2)).step("manager")?;
    let mut rng = Rng::new(99);
    let keep = m
        .create_storage_buffer("keeper", 1 << 20, MemoryLocation::DeviceLocal)
        .step("keeper")?;
    let mut want = vec![0u8; 1 << 20];
    for round in 0..20u64 {
        let doomed = m
            .create_storage_buffer("doomed", 512 << 10, MemoryLocation::DeviceLocal)
            .step("doomed")?;
        let data = rng.bytes(512 << 10);
        doomed.write(0, &data).step("doomed upload")?;
        let pooled = m
            .acquire(64 << 10, RW, MemoryLocation::DeviceLocal)
            .step("acquire")?;
        m.copy(doomed.buffer(), 0, &pooled, 0, 64 << 10)
            .step("copy to pooled")?;
        let at = (round % 16) * (64 << 10);
        m.copy(&pooled, 0, keep.buffer(), at, 64 << 10)
            .step("copy to keeper")?;
        want[at as usize..(at + (64 << 10)) as usize].copy_from_slice(&data[..64 << 10]);
        m.flush().step("flush")?;
        // Dropped while the copies may still run.
        drop(doomed);
        drop(pooled);
        // New work right away reuses staging and, maybe, the pooled buffer's memory.
        let scratch = m
            .acquire(64 << 10, RW, MemoryLocation::DeviceLocal)
            .step("acquire again")?;
        let junk = rng.bytes(64 << 10);
        m.upload(&scratch, 0, &junk).step("junk upload")?;
        m.flush().step("flush 2")?;
    }
    let got = keep.read(0, 1 << 20).step("read")?.wait().step("wait")?;
    compare("keeper", &got, &want)?;
    Ok(
        "20 rounds: buffers, pooled buffers and staging regions dropped mid-flight; keeper exact"
            .into(),
    )
}

/// A manager dropped with uploads still queued (no flush, handles dropped) submits them:
/// joined small uploads, an `upload_many` region and a staged larger upload all arrive, and
/// the staging memory they were read from is freed only after the GPU is done.
fn manager_drop_submits_queued<B: Backend>(d: &Device<B>) -> R {
    let size = 1u64 << 20;
    let dst = d
        .create_buffer(&BufferDesc::new(size, RW, MemoryLocation::DeviceLocal).with_label("dst"))
        .step("dst")?;
    let mut rng = Rng::new(31);
    let mut want = vec![0u8; size as usize];
    for round in 0..4u64 {
        let m = BufferManager::new(d.clone(), small_staging(256 << 10, 1, 4)).step("manager")?;
        let base = round * (size / 4);
        let mut put = |at: u64, data: &[u8]| {
            want[(base + at) as usize..(base + at) as usize + data.len()].copy_from_slice(data);
        };
        // A run of small uploads (they join one operation).
        for i in 0..300u64 {
            let data = rng.bytes(256);
            drop(m.upload(&dst, base + i * 256, &data).step("small upload")?);
            put(i * 256, &data);
        }
        // One list.
        let bytes = rng.bytes(64 << 10);
        let many: Vec<(u64, &[u8])> = (0..64u64)
            .map(|i| {
                (
                    base + (96 << 10) + i * 1024,
                    &bytes[(i * 1024) as usize..][..1024],
                )
            })
            .collect();
        drop(m.upload_many(&dst, &many).step("upload_many")?);
        put(96 << 10, &bytes);
        // One larger staged upload.
        let big = rng.bytes(64 << 10);
        drop(
            m.upload(&dst, base + (160 << 10), &big)
                .step("larger upload")?,
        );
        put(160 << 10, &big);
        ensure!(
            m.has_queued(),
            "round {round}: nothing queued before the drop"
        );
        drop(m);
    }
    d.wait_idle().step("wait idle")?;
    let got = d.read(&dst, 0, size).step("read")?;
    compare("after the managers were dropped", &got, &want)?;
    Ok("4 managers dropped with joined, listed and larger uploads queued: all arrived".into())
}

/// Fills the staging pool and checks the recovery steps come in the documented order:
/// reclaim, wait for the oldest submission, grow, submit early, and only then an error.
fn manager_staging_recovery_order<B: Backend>(d: &Device<B>) -> R {
    let chunk = 64u64 << 10;
    let m = BufferManager::new(d.clone(), small_staging(chunk, 1, 2)).step("manager")?;
    let dst = m
        .create_storage_buffer("dst", 4 * chunk, MemoryLocation::DeviceLocal)
        .step("dst")?;
    let mut rng = Rng::new(5);
    let mut want = vec![0u8; (4 * chunk) as usize];
    let mut put = |off: u64, len: u64, rng: &mut Rng| -> Result<(), String> {
        let data = rng.bytes(len as usize);
        m.upload(dst.buffer(), off, &data).step("upload")?;
        want[off as usize..(off + len) as usize].copy_from_slice(&data);
        Ok(())
    };
    // 1. Fill the only chunk with queued (unsubmitted) regions, then one more: nothing is in
    //    flight, so: reclaim (nothing), grow.
    put(0, chunk, &mut rng)?;
    ensure!(
        m.staging_events().is_empty(),
        "events before full: {:?}",
        m.staging_events()
    );
    put(chunk, chunk / 4, &mut rng)?;
    let ev = m.staging_events();
    ensure!(
        matches!(
            ev.as_slice(),
            [
                StagingEvent::Reclaimed { regions: 0 },
                StagingEvent::Grew { chunks: 2 }
            ]
        ),
        "first fill: expected [reclaim, grow], got {ev:?}"
    );
    // 2. Fill the second chunk, then one more: at the limit, so reclaim, then submit early,
    //    then reclaim again (and wait for the oldest if it has not completed yet).
    put(chunk + chunk / 4, chunk * 3 / 4, &mut rng)?;
    m.clear_staging_events();
    put(2 * chunk, chunk / 4, &mut rng)?;
    let ev = m.staging_events();
    let ok = match ev.as_slice() {
        [
            StagingEvent::Reclaimed { regions: 0 },
            StagingEvent::SubmittedEarly { .. },
            StagingEvent::Reclaimed { .. },
        ] => true,
        [
            StagingEvent::Reclaimed { regions: 0 },
            StagingEvent::SubmittedEarly { submission },
            StagingEvent::Reclaimed { .. },
            StagingEvent::WaitedOldest { submission: w },
            StagingEvent::Reclaimed { .. },
        ] => w == submission,
        _ => false,
    };
    ensure!(
        ok,
        "second fill: expected [reclaim, submit early, reclaim, (wait oldest, reclaim)], got {ev:?}"
    );
    // 3. In-flight work and a full pool: the wait comes before growing. Submit both chunks'
    //    worth, then ask for a full chunk while they may still run.
    m.flush().step("flush")?;
    m.clear_staging_events();
    put(3 * chunk, chunk, &mut rng)?;
    let ev = m.staging_events();
    // Either the GPU was already done (reclaim frees), or we waited for the oldest.
    let ok = match ev.as_slice() {
        [] => true, // a chunk was idle already (its regions completed and were reclaimed)
        [StagingEvent::Reclaimed { regions }] => *regions > 0,
        [
            StagingEvent::Reclaimed { .. },
            StagingEvent::WaitedOldest { .. },
            StagingEvent::Reclaimed { .. },
            ..,
        ] => !ev.iter().any(|e| matches!(e, StagingEvent::Grew { .. })),
        _ => false,
    };
    ensure!(
        ok,
        "third fill: a wait or a reclaim must come before any growth, got {ev:?}"
    );
    // 4. A region larger than a chunk with dedicated buffers off: the error, with its values.
    let strict = BufferManager::new(
        d.clone(),
        ManagerConfig {
            staging: StagingConfig {
                chunk_size: chunk,
                initial_chunks: 1,
                max_chunks: 1,
                dedicated_for_large: false,
            },
            ..ManagerConfig::default()
        },
    )
    .step("strict manager")?;
    let big = vec![1u8; (2 * chunk) as usize];
    match strict.upload(dst.buffer(), 0, &big) {
        Err(MError::StagingExhausted {
            requested,
            chunk_size,
            chunks,
            max_chunks,
        }) if requested == 2 * chunk && chunk_size == chunk && chunks == 1 && max_chunks == 1 => {}
        other => {
            return Err(format!(
                "oversized upload: expected StagingExhausted, got {other:?}"
            ));
        }
    }
    ensure!(
        matches!(
            strict.staging_events().last(),
            Some(StagingEvent::Exhausted { .. })
        ),
        "no Exhausted event"
    );
    // And with dedicated buffers on, the same upload goes through one.
    m.upload(dst.buffer(), 0, &big).step("dedicated upload")?;
    want[..big.len()].copy_from_slice(&big);
    ensure!(
        m.staging_events()
            .iter()
            .any(|e| matches!(e, StagingEvent::Dedicated { .. })),
        "no Dedicated event"
    );
    m.wait_idle().step("idle")?;
    let usage = m.staging_usage();
    ensure!(
        usage.used == 0 && usage.wasted_at_wrap == 0,
        "not reset: {usage:?}"
    );
    let got = dst.read(0, 4 * chunk).step("read")?.wait().step("wait")?;
    compare("dst", &got, &want)?;
    Ok("reclaim -> grow; reclaim -> submit early -> reclaim (-> wait oldest); wait before grow; exhausted error with values; dedicated; reset when idle; data exact".into())
}

/// Registry queries, pending-upload state, pool reuse only after the GPU is done, report.
fn manager_registry_pool_report<B: Backend>(d: &Device<B>) -> R {
    let m = BufferManager::new(d.clone(), ManagerConfig::default()).step("manager")?;
    let a = m
        .create_vertex_buffer("mesh", &[1.0f32, 2.0, 3.0])
        .step("vertex")?;
    let u = m
        .create_storage_buffer("host storage", 1024, MemoryLocation::Upload)
        .step("host storage")?;
    ensure!(a.pending_uploads() == 1, "pending {}", a.pending_uploads());
    ensure!(
        a.upload_state().step("state")? == UploadState::Queued(1),
        "state {:?}",
        a.upload_state()
    );
    let pending = m.registry().with_pending_uploads();
    ensure!(
        pending.len() == 1
            && pending[0].id == a.id()
            && pending[0].state == BufferLifecycle::PendingUpload,
        "registry pending: {pending:?}"
    );
    ensure!(
        m.registry().live_bytes(MemoryLocation::Upload) == u.size(),
        "upload live bytes {}",
        m.registry().live_bytes(MemoryLocation::Upload)
    );
    u.write(0, &[9u8; 16]).step("host write")?;
    m.flush().step("flush")?;
    m.wait_idle().step("idle")?;
    ensure!(
        a.upload_state().step("state")? == UploadState::Idle,
        "not idle"
    );
    ensure!(
        m.registry().with_pending_uploads().is_empty(),
        "still pending"
    );
    let got = a.read(0, 12).step("read")?.wait().step("wait")?;
    compare("vertex", &got, bytemuck::cast_slice(&[1.0f32, 2.0, 3.0]))?;
    drop(u);
    ensure!(
        m.registry().live_bytes(MemoryLocation::Upload) == 0,
        "dropped buffer still registered"
    );
    // Pool: a buffer used by a submission that has not completed is not handed out again.
    let src = m
        .create_storage_buffer("src", 8 << 20, MemoryLocation::DeviceLocal)
        .step("src")?;
    let mut reused_busy = 0;
    for _ in 0..20 {
        let p = m
            .acquire(8 << 20, RW, MemoryLocation::DeviceLocal)
            .step("acquire")?;
        let id = p.id();
        let idx = m.copy(src.buffer(), 0, &p, 0, 8 << 20).step("copy")?;
        m.flush().step("flush")?;
        let submission = idx.submission().ok_or("copy not submitted")?;
        drop(p);
        let q = m
            .acquire(8 << 20, RW, MemoryLocation::DeviceLocal)
            .step("acquire 2")?;
        if q.id() == id && d.poll().step("poll")? < submission {
            reused_busy += 1;
        }
    }
    ensure!(
        reused_busy == 0,
        "pool handed out {reused_busy} buffers still in use"
    );
    let report = m.report();
    for p in [
        "transfers",
        "staging",
        "orchestrator",
        "registry",
        "pool",
        "memory",
        "staging_host",
    ] {
        ensure!(report.provider(p).is_some(), "report lacks {p}: {report}");
    }
    ensure!(
        report.get("staging", "ring.wasted_at_wrap").is_some(),
        "no wasted_at_wrap metric"
    );
    Ok("pending-upload state and registry queries, pool never reuses busy buffers, report has every provider".into())
}

/// Handles awaited (`block_on`) and polled.
fn manager_async_handles<B: Backend>(d: &Device<B>) -> R {
    let m = Arc::new(BufferManager::new(d.clone(), ManagerConfig::default()).step("manager")?);
    let b = m
        .create_storage_buffer("async", 4096, MemoryLocation::DeviceLocal)
        .step("create")?;
    let h = b.write(0, &[7u8; 4096]).step("write")?;
    ensure!(
        h.submission().is_none(),
        "queued write already has a submission"
    );
    block_on(h).step("await write")?;
    let r = b.read(100, 50).step("read")?;
    let bytes = block_on(r).step("await read")?;
    compare("awaited read", &bytes, &[7u8; 50])?;
    let h = b.write(0, &[1u8; 8]).step("write 2")?;
    m.flush().step("flush")?;
    h.wait().step("wait")?;
    ensure!(h.is_complete().step("complete")?, "not complete after wait");
    // Bad input loses nothing: a misaligned upload is refused and nothing is queued.
    let before = m.queued_ops_total();
    match b.write(2, &[0u8; 4]) {
        Err(MError::Core(gantry_core::Error::MisalignedOffset {
            offset: 2,
            alignment,
        })) if alignment == d.limits().copy_alignment => {}
        other => return Err(format!("misaligned write: {other:?}")),
    }
    match m.read(b.buffer(), 4000, 200) {
        Err(MError::Core(gantry_core::Error::OutOfBounds {
            offset: 4000,
            size: 200,
            buffer_size: 4096,
        })) => {}
        other => return Err(format!("out-of-bounds read: {other:?}")),
    }
    // `upload_many` checks every entry first: one bad entry anywhere refuses the whole call.
    let good = [9u8; 64];
    let mut many: Vec<(u64, &[u8])> = (0..40u64).map(|i| (i * 64, &good[..])).collect();
    for (bad, fault) in [
        ((4064, &good[..]), "out of bounds"),
        ((6, &good[..8]), "misaligned offset"),
        ((64, &good[..6]), "misaligned size"),
    ] {
        many.insert(20, bad);
        let refused = m.upload_many(b.buffer(), &many);
        many.remove(20);
        match (refused, fault) {
            (
                Err(MError::Core(gantry_core::Error::OutOfBounds {
                    offset: 4064,
                    size: 64,
                    buffer_size: 4096,
                })),
                "out of bounds",
            )
            | (
                Err(MError::Core(gantry_core::Error::MisalignedOffset { offset: 6, .. })),
                "misaligned offset",
            )
            | (
                Err(MError::Core(gantry_core::Error::MisalignedSize { size: 6, .. })),
                "misaligned size",
            ) => {}
            (other, _) => return Err(format!("upload_many with an entry {fault}: {other:?}")),
        }
    }
    ensure!(
        m.queued_ops_total() == before,
        "a refused call queued something"
    );
    let h = m.upload_many(b.buffer(), &many).step("upload_many")?;
    h.wait().step("upload_many wait")?;
    compare(
        "upload_many after refused calls",
        &b.read(0, 2560).step("read")?.wait().step("read wait")?,
        &[9u8; 2560],
    )?;
    Ok(
        "write and readback awaited with block_on, polled, refused input (upload_many's bad \
         entries too) queues nothing"
            .into(),
    )
}

/// Small uploads to one buffer join the last queued operation when nothing else was queued
/// since (`joined_uploads` in the report). A model of both buffers checks every byte, and
/// every read queued between the uploads sees exactly the uploads queued before it. Copies
/// and reads of the buffer in between keep later uploads from joining earlier ones.
fn manager_joined_uploads<B: Backend>(d: &Device<B>) -> R {
    let m = BufferManager::new(d.clone(), ManagerConfig::default()).step("manager")?;
    let size: u64 = 256 << 10;
    let a = m
        .create_storage_buffer("joined a", size, MemoryLocation::DeviceLocal)
        .step("a")?;
    let b = m
        .create_storage_buffer("joined b", size, MemoryLocation::DeviceLocal)
        .step("b")?;
    let mut rng = Rng::new(0x101ED);
    let mut models = [rng.bytes(size as usize), rng.bytes(size as usize)];
    m.upload(a.buffer(), 0, &models[0]).step("a contents")?;
    m.upload(b.buffer(), 0, &models[1]).step("b contents")?;
    let bufs = [a.buffer(), b.buffer()];
    let mut reads = Vec::new();
    let mut next = 0u64;
    for i in 0..4000 {
        match rng.below(100) {
            0..=74 => {
                // Mostly to `a`; every third one right after the previous (merged entries).
                let len = 4 * (1 + rng.below(64));
                let at = if i % 3 == 0 && next + len <= size {
                    next
                } else {
                    4 * rng.below((size - len) / 4)
                };
                let data = rng.bytes(len as usize);
                m.upload(bufs[0], at, &data).step("upload a")?;
                models[0][at as usize..(at + len) as usize].copy_from_slice(&data);
                next = at + len;
            }
            75..=84 => {
                let len = 4 * (1 + rng.below(64));
                let at = 4 * rng.below((size - len) / 4);
                let data = rng.bytes(len as usize);
                m.upload(bufs[1], at, &data).step("upload b")?;
                models[1][at as usize..(at + len) as usize].copy_from_slice(&data);
            }
            85..=91 => {
                let which = rng.below(2) as usize;
                let len = 4 * (1 + rng.below(512));
                let at = 4 * rng.below((size - len) / 4);
                let want = models[which][at as usize..(at + len) as usize].to_vec();
                reads.push((m.read(bufs[which], at, len).step("read")?, want));
            }
            92..=97 => {
                let from = rng.below(2) as usize;
                let len = 4 * (1 + rng.below(256));
                let src = 4 * rng.below((size - len) / 4);
                let dst = 4 * rng.below((size - len) / 4);
                m.copy(bufs[from], src, bufs[1 - from], dst, len)
                    .step("copy")?;
                let bytes = models[from][src as usize..(src + len) as usize].to_vec();
                models[1 - from][dst as usize..(dst + len) as usize].copy_from_slice(&bytes);
            }
            _ => {
                m.flush().step("flush")?;
            }
        }
    }
    // Across threads: a read another thread queues between two uploads of this one sees the
    // first, not the second, though the second could join the first's operation (the read
    // is in another queue).
    let slot = 64 << 10;
    let mut cross = 0;
    std::thread::scope(|scope| -> Result<(), String> {
        let (ask, asked) = std::sync::mpsc::channel::<()>();
        let (tell, told) = std::sync::mpsc::channel();
        let (mr, src) = (&m, bufs[0]);
        let reader = scope.spawn(move || -> Result<(), String> {
            for () in asked {
                let handle = mr.read(src, slot, 256).step("read from another thread")?;
                tell.send(handle).map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        for round in 0..50u8 {
            let first = vec![round; 256];
            m.upload(bufs[0], slot, &first).step("first upload")?;
            ask.send(()).map_err(|e| e.to_string())?;
            let handle = told.recv().map_err(|e| e.to_string())?;
            m.upload(bufs[0], slot, &[!round; 256])
                .step("second upload")?;
            if round % 10 == 9 {
                m.flush().step("flush")?;
            }
            reads.push((handle, first));
            models[0][slot as usize..slot as usize + 256].fill(!round);
            cross += 1;
        }
        drop(ask);
        reader.join().map_err(|_| "reader panicked".to_string())?
    })?;
    m.flush().step("flush")?;
    // The handles of one joined run (one operation) awaited from four threads at once, not
    // flushed first: the first poll flushes, one helper thread waits and wakes every task.
    let mut run = Vec::new();
    for i in 0..32u64 {
        let data = rng.bytes(256);
        let at = (128 << 10) + i * 256;
        models[1][at as usize..at as usize + 256].copy_from_slice(&data);
        run.push(m.upload(bufs[1], at, &data).step("joined run")?);
    }
    let mut run = run.into_iter();
    std::thread::scope(|scope| -> Result<(), String> {
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let part: Vec<_> = run.by_ref().take(8).collect();
                scope.spawn(move || {
                    part.into_iter()
                        .try_for_each(|h| block_on(h).map_err(|e| format!("await joined: {e:?}")))
                })
            })
            .collect();
        for w in waiters {
            w.join()
                .map_err(|_| "an awaiting thread panicked".to_string())??;
        }
        Ok(())
    })?;
    let n = reads.len();
    for (i, (handle, want)) in reads.into_iter().enumerate() {
        compare(
            &format!("read {i}"),
            &handle.wait().step("read wait")?,
            &want,
        )?;
    }
    for (buf, model) in bufs.iter().zip(&models) {
        compare(
            "final",
            &m.read(buf, 0, size).step("read")?.wait().step("wait")?,
            model,
        )?;
    }
    let joined = m.joined_uploads_total();
    ensure!(
        m.report().get("orchestrator", "joined_uploads").is_some(),
        "the report lacks joined_uploads"
    );
    ensure!(joined > 1000, "only {joined} uploads joined");
    Ok(format!(
        "4000 random uploads, copies, reads and flushes, {cross} reads from another thread \
         between two uploads: {joined} uploads joined, {n} reads saw exactly what came before \
         them; a joined run's 32 handles awaited from 4 threads"
    ))
}
