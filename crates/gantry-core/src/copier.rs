//! A persistent pool of copy threads for large host copies into and out of staging memory,
//! shared by the backends.
//!
//! One CPU thread copies about 10 GB/s on the H100's host, sixteen about 54 GB/s (PERF.md), so
//! large copies are split into jobs that several threads take in turn. Spawning those threads
//! per copy costs tens of microseconds each, which a pipelined 256 MiB upload (16 pieces) would
//! pay hundreds of times; these threads are spawned once per process and sleep when idle, after
//! spinning briefly so that the next piece of a pipelined transfer finds them awake.
//!
//! `GANTRY_COPY_THREADS` (read once, when the first copy starts the pool) sets how many
//! threads work on a copy, the caller included: 1 keeps every copy on the calling thread.
//! `GANTRY_COPY_SPIN_US` (read then too) sets how long an idle thread spins before it sleeps
//! (default 100; a frame loop whose gaps are a little longer keeps its threads awake with
//! more, at the cost of the cores they spin on).
//!
//! The caller of [`run`] (copy pieces), [`run_writes`] (writes into one mapping) or
//! [`run_calls`] (parts of other CPU work: a scatter plan made in parts) takes jobs too and
//! returns only when every job is done, so the jobs may point into memory the caller borrows.
//! [`run_staged`] copies many small writes to where a batch staged them.
//!
//! ```
//! use gantry_core::copier::run_calls;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! // Sums 0..8 in parts, on the copy threads and this one.
//! let sum = AtomicU64::new(0);
//! run_calls(8, &|i| {
//!     sum.fetch_add(i as u64, Ordering::Relaxed);
//! });
//! assert_eq!(sum.into_inner(), 28);
//! ```

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use std::ptr::NonNull;

use crate::scatter::ScatterWrite;

/// An address in host memory that jobs copy to or from.
///
/// `Send`/`Sync` only on this wrapper: the type gives no access to the bytes by itself; every
/// access goes through `unsafe` code whose callers guarantee the absence of data races.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ptr(NonNull<u8>);
// SAFETY: see the type's documentation: an address, never dereferenced without a caller's
// guarantee of exclusive or read-only access.
unsafe impl Send for Ptr {}
// SAFETY: as above.
unsafe impl Sync for Ptr {}

/// A table of 32-bit words in mapped memory that several threads fill at once, each its own
/// words: the [`crate::scatter::TableSink`] a backend gives
/// [`crate::scatter::ScatterPlan::of_list_into`] so that a plan's record table goes straight
/// into staging.
#[derive(Debug)]
pub struct RawTable {
    base: Ptr,
    len: usize,
}

impl RawTable {
    /// A table of `len` bytes at `base`.
    ///
    /// # Safety
    /// While the table lives, `base` is valid for writes of `len` bytes, and nothing but
    /// [`RawTable::put`] reads or writes them; calls of `put` that run at once write
    /// different words.
    #[must_use]
    pub unsafe fn new(base: *mut u8, len: usize) -> Self {
        Self {
            base: Ptr(NonNull::new(base).unwrap_or(NonNull::dangling())),
            len: if base.is_null() { 0 } else { len },
        }
    }

    /// Writes `words` at word `at` of the table (native byte order); nothing when they would
    /// not fit.
    pub fn put(&self, at: usize, words: &[u32]) {
        let bytes = core::mem::size_of_val(words);
        let Some(offset) = at.checked_mul(4) else {
            return;
        };
        if offset.checked_add(bytes).is_none_or(|end| end > self.len) {
            return;
        }
        // SAFETY: `offset..offset + bytes` lies inside the table (checked above), which the
        // constructor's caller made valid for writes and reserved to `put`, whose concurrent
        // calls write different words; `words` is other memory (a `&[u32]` while the table is
        // written through `put` alone).
        unsafe {
            std::ptr::copy_nonoverlapping(
                words.as_ptr().cast::<u8>(),
                self.base.0.as_ptr().add(offset),
                bytes,
            );
        }
    }
}

/// One piece of a scattered copy: `len` bytes from `src` to `dst`.
#[derive(Clone, Copy, Debug)]
pub struct CopyPiece {
    dst: Ptr,
    src: Ptr,
    len: usize,
}

impl CopyPiece {
    /// A piece copying `len` bytes from `src` to `dst`.
    ///
    /// # Safety
    /// When the piece is copied, `src` is valid for reads and `dst` for writes of `len`
    /// bytes, they do not overlap, and nothing else accesses the destination bytes.
    #[must_use]
    pub unsafe fn new(dst: *mut u8, src: *const u8, len: usize) -> Self {
        let p = |x: *mut u8| Ptr(NonNull::new(x).unwrap_or(NonNull::dangling()));
        Self {
            dst: p(dst),
            src: p(src.cast_mut()),
            len,
        }
    }

    /// Bytes in the piece.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the piece copies nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the piece copies to.
    #[must_use]
    pub fn dst(&self) -> *mut u8 {
        self.dst.0.as_ptr()
    }

    /// Where the piece copies from.
    #[must_use]
    pub fn src(&self) -> *const u8 {
        self.src.0.as_ptr()
    }

    /// Copies the piece.
    ///
    /// # Safety
    /// [`CopyPiece::new`]'s contract holds now.
    pub unsafe fn copy(&self) {
        // SAFETY: the contract.
        unsafe { std::ptr::copy_nonoverlapping(self.src(), self.dst(), self.len) };
    }
}

/// Most threads (the caller included) that work on one copy.
const MAX_THREADS: usize = 16;

/// How long an idle worker spins (checking for a new task) before it sleeps. Measured in
/// time, not spins: a `pause` takes from a few cycles to 140 (Skylake and later), so the
/// 20,000 spins this was meant about 1 ms there, and fifteen workers burned a core each
/// through every gap between two frames (taking hyperthread siblings from the threads that
/// record the frames). Long enough for the next piece of a pipelined transfer (its copy is
/// recorded and submitted in between: tens of microseconds).
const IDLE_SPIN: Duration = Duration::from_micros(100);

/// Spins between two looks at the clock while spinning.
const SPINS_PER_CHECK: u32 = 64;

/// What a task's jobs are. The slices and the function are the caller's, their borrows
/// erased: each is used only while the caller of [`run`], [`run_writes`] or [`run_calls`]
/// waits (a job is taken only while some are left, and the caller returns once none are).
enum Jobs {
    /// Copies.
    Copies(*const [CopyPiece]),
    /// Writes into one mapping: `bytes` to `base + offset` for each `(offset, bytes)`.
    Writes {
        base: *mut u8,
        writes: *const [(u64, &'static [u8])],
    },
    /// Staged writes: `writes[k].1` to `base + at[k].src_offset` for each `k`.
    Staged {
        base: *mut u8,
        writes: *const [(u64, &'static [u8])],
        at: *const [ScatterWrite],
    },
    /// Calls of the caller's function with each index below the task's count.
    Calls(*const (dyn Fn(usize) + Sync)),
}

/// One task: its jobs, the next job to take and the jobs not finished yet.
struct Task {
    jobs: Jobs,
    count: usize,
    /// Jobs taken at a time: enough small jobs to make about [`BLOCK_BYTES`], so that many
    /// small pieces (a batch's 256-byte writes) do not cost two shared atomics each.
    block: usize,
    next: AtomicUsize,
    left: AtomicUsize,
    /// Whether a call panicked (the caller panics in turn, once every job is done).
    panicked: AtomicBool,
}

// SAFETY: `Jobs::Calls` points at a `Sync` function, called from several threads by design;
// copies are `Send` and `Sync` already. The pointer is used only under the contract above.
unsafe impl Send for Task {}
// SAFETY: as above.
unsafe impl Sync for Task {}

/// Bytes a thread takes at a time when the jobs are small.
const BLOCK_BYTES: usize = 64 << 10;

impl Task {
    /// Does blocks of jobs until none is left to take.
    fn work(&self) {
        loop {
            let first = self.next.fetch_add(self.block, Ordering::Relaxed);
            if first >= self.count {
                break;
            }
            let end = self.count.min(first + self.block);
            // Why each block below is sound: a job is left (`first < count`), so the caller
            // is still waiting and what the task points to is alive; each index is handed out
            // once (the counter), so this thread is the only one doing this job; the caller
            // keeps the memory valid until `left` reaches zero, which happens only after these
            // jobs (Release below); the caller's contract makes every copy valid.
            match self.jobs {
                Jobs::Copies(jobs) => {
                    // SAFETY: see above.
                    let jobs = unsafe { &*jobs };
                    for job in &jobs[first..end] {
                        // SAFETY: see above.
                        unsafe { job.copy() };
                    }
                }
                Jobs::Writes { base, writes } => {
                    // SAFETY: see above.
                    let writes = unsafe { &*writes };
                    for &(offset, bytes) in &writes[first..end] {
                        // SAFETY: see above (`run_writes`'s contract).
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                bytes.as_ptr(),
                                base.add(offset as usize),
                                bytes.len(),
                            );
                        }
                    }
                }
                Jobs::Staged { base, writes, at } => {
                    // SAFETY: see above.
                    let (writes, at) = unsafe { (&*writes, &*at) };
                    for (w, a) in writes[first..end].iter().zip(&at[first..end]) {
                        // SAFETY: see above (`run_staged`'s contract).
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                w.1.as_ptr(),
                                base.add(a.src_offset as usize),
                                w.1.len(),
                            );
                        }
                    }
                }
                Jobs::Calls(f) => {
                    for i in first..end {
                        // SAFETY: see above.
                        let f = unsafe { &*f };
                        let call = std::panic::catch_unwind(AssertUnwindSafe(|| f(i)));
                        if call.is_err() {
                            self.panicked.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            self.left.fetch_sub(end - first, Ordering::Release);
        }
    }
}

struct Pool {
    /// The latest task.
    slot: Mutex<Option<Arc<Task>>>,
    /// Bumped with every new task; workers compare it with the last one they saw.
    generation: AtomicU64,
    wake: Condvar,
    /// Worker threads started (besides the callers).
    workers: AtomicUsize,
    /// How long an idle worker spins before it sleeps ([`IDLE_SPIN`] unless
    /// `GANTRY_COPY_SPIN_US` says otherwise).
    idle_spin: Duration,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        // Leaked on purpose: the threads live as long as the process, like a global pool.
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            slot: Mutex::new(None),
            generation: AtomicU64::new(0),
            wake: Condvar::new(),
            workers: AtomicUsize::new(0),
            idle_spin: spin_wanted(std::env::var("GANTRY_COPY_SPIN_US").ok().as_deref()),
        }));
        let threads = threads_wanted(
            std::env::var("GANTRY_COPY_THREADS").ok().as_deref(),
            std::thread::available_parallelism().map_or(1, usize::from),
        );
        for i in 1..threads {
            let spawned = std::thread::Builder::new()
                .name(format!("gantry-copy-{i}"))
                .spawn(move || worker(pool));
            if spawned.is_ok() {
                pool.workers.fetch_add(1, Ordering::Relaxed);
            }
        }
        pool
    })
}

/// Threads that work on a copy, the caller included: `GANTRY_COPY_THREADS` when it is a
/// number from 1 (the caller alone), else the machine's parallelism; at most [`MAX_THREADS`].
fn threads_wanted(env: Option<&str>, parallelism: usize) -> usize {
    env.and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(parallelism)
        .clamp(1, MAX_THREADS)
}

/// How long idle workers spin: `GANTRY_COPY_SPIN_US` microseconds when it is a number (at
/// most [`MAX_IDLE_SPIN`]; 0 sleeps at once), else [`IDLE_SPIN`].
fn spin_wanted(env: Option<&str>) -> Duration {
    env.and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(IDLE_SPIN, |us| Duration::from_micros(us).min(MAX_IDLE_SPIN))
}

/// The longest idle spin `GANTRY_COPY_SPIN_US` may ask for.
const MAX_IDLE_SPIN: Duration = Duration::from_millis(20);

fn worker(pool: &'static Pool) {
    let mut seen = 0u64;
    loop {
        let idle = Instant::now();
        'spin: while pool.generation.load(Ordering::Acquire) == seen {
            for _ in 0..SPINS_PER_CHECK {
                std::hint::spin_loop();
            }
            if idle.elapsed() >= pool.idle_spin {
                break 'spin;
            }
        }
        let task = {
            let mut slot = pool.slot.lock().unwrap_or_else(PoisonError::into_inner);
            while pool.generation.load(Ordering::Acquire) == seen {
                slot = pool.wake.wait(slot).unwrap_or_else(PoisonError::into_inner);
            }
            seen = pool.generation.load(Ordering::Acquire);
            slot.clone()
        };
        if let Some(task) = task {
            task.work();
        }
    }
}

/// Bytes one job of [`copy_pieces`] copies at most: small enough to balance the threads,
/// large enough that taking a job costs nothing next to the copy.
pub const COPY_GRAIN: usize = 1 << 20;

/// The least bytes of a job [`copy_pieces`] cuts (a copy of a few MiB is cut finer than
/// [`COPY_GRAIN`], so that every thread gets a part).
const MIN_GRAIN: usize = 128 << 10;

/// Copies every piece: on the calling thread below `parallel_min` bytes in all; else the
/// pieces are cut into jobs (of [`COPY_GRAIN`] bytes at most, fewer for a few MiB so that
/// every thread gets some) that the pool's threads and the calling one take in turn.
///
/// # Safety
/// Every piece satisfies [`CopyPiece::new`]'s contract until this returns, and no two pieces'
/// destinations overlap.
pub unsafe fn copy_pieces(pieces: &[CopyPiece], parallel_min: usize) {
    let total: usize = pieces.iter().map(CopyPiece::len).sum();
    if total < parallel_min {
        for p in pieces {
            // SAFETY: the function's contract.
            unsafe { p.copy() };
        }
        return;
    }
    let threads = pool().workers.load(Ordering::Relaxed) + 1;
    let grain = total.div_ceil(threads).clamp(MIN_GRAIN, COPY_GRAIN);
    if pieces.iter().all(|p| p.len() <= grain) {
        // SAFETY: the contract; `run` returns only when all are copied.
        unsafe { run(pieces) };
        return;
    }
    let mut jobs = Vec::with_capacity(total / grain + pieces.len());
    for p in pieces {
        let mut at = 0;
        while at < p.len() {
            let n = (p.len() - at).min(grain);
            // SAFETY: `at + n <= p.len`: in bounds of both ranges of the piece.
            jobs.push(unsafe { CopyPiece::new(p.dst().add(at), p.src().add(at), n) });
            at += n;
        }
    }
    // SAFETY: the jobs partition the pieces (contract), and `run` returns only when all are
    // copied.
    unsafe { run(&jobs) };
}

/// Copies every job, on the pool's threads and the calling one; returns when all are done.
///
/// # Safety
/// Every job satisfies [`CopyPiece::new`]'s contract until this returns, and no two jobs'
/// destinations overlap.
pub unsafe fn run(jobs: &[CopyPiece]) {
    let pool = pool();
    if jobs.len() <= 1 || pool.workers.load(Ordering::Relaxed) == 0 {
        for job in jobs {
            // SAFETY: the function's contract.
            unsafe { job.copy() };
        }
        return;
    }
    let n = jobs.len();
    let bytes: usize = jobs.iter().map(CopyPiece::len).sum();
    let block = (BLOCK_BYTES.saturating_mul(n) / bytes.max(1)).clamp(1, n);
    run_task(pool, Jobs::Copies(jobs), n, block);
}

/// Copies each `(offset, bytes)` of `writes` to `base + offset`, on the pool's threads and the
/// calling one; returns when all are done. A mapped buffer's many small writes, without a
/// list of pieces built first (10,000 writes: 240 KB more to write, and then read).
///
/// # Safety
/// Every `base + offset .. + bytes.len()` is valid for writes until this returns, no two
/// overlap, and none overlaps a `bytes`.
pub unsafe fn run_writes(base: *mut u8, writes: &[(u64, &[u8])]) {
    let pool = pool();
    let n = writes.len();
    if n <= 1 || pool.workers.load(Ordering::Relaxed) == 0 {
        // SAFETY: the function's contract.
        unsafe { write_here(base, writes) };
        return;
    }
    let total: usize = writes.iter().map(|w| w.1.len()).sum();
    let block = (BLOCK_BYTES.saturating_mul(n) / total.max(1)).clamp(1, n);
    let writes: *const [(u64, &[u8])] = writes;
    // SAFETY: only the lifetime changes; used under the contract of `Jobs` (above).
    let writes = unsafe {
        std::mem::transmute::<*const [(u64, &[u8])], *const [(u64, &'static [u8])]>(writes)
    };
    run_task(pool, Jobs::Writes { base, writes }, n, block);
}

/// Copies each `(offset, bytes)` of `writes` to `base + offset` on the calling thread.
///
/// # Safety
/// As for [`run_writes`].
unsafe fn write_here(base: *mut u8, writes: &[(u64, &[u8])]) {
    for &(offset, bytes) in writes {
        // SAFETY: the function's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(offset as usize), bytes.len())
        };
    }
}

/// Whether `writes` (`(offset, bytes)`) are in increasing order without overlaps: what
/// [`write_ascending`] needs to share them out.
///
/// ```
/// use gantry_core::copier::ascending;
/// let b = [0u8; 16];
/// assert!(ascending(&[(0, &b[..]), (16, &b[..])]));
/// assert!(!ascending(&[(0, &b[..]), (8, &b[..])]));
/// ```
#[must_use]
pub fn ascending(writes: &[(u64, &[u8])]) -> bool {
    writes
        .windows(2)
        .all(|w| w[0].0.saturating_add(w[0].1.len() as u64) <= w[1].0)
}

/// What one pass over a list of writes (`(offset, bytes)`) finds: what a backend's
/// `write_mapped_many` asks before it shares the writes out (a pass over 10,000 entries costs
/// 10-20 us on the H100's host, and it used to take four).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritesSummary {
    /// Bytes in all.
    pub total: usize,
    /// The lowest offset (0 for no writes).
    pub lo: u64,
    /// The highest end, `offset + len` (saturating; 0 for no writes).
    pub hi: u64,
    /// The longest write.
    pub max_len: usize,
    /// Whether each write starts at or after the previous one's end ([`ascending`]).
    pub ascending: bool,
}

/// [`WritesSummary`] of `writes`, in one pass.
///
/// ```
/// use gantry_core::copier::summarize;
/// let b = [0u8; 16];
/// let s = summarize(&[(32, &b[..8]), (48, &b[..])]);
/// assert_eq!((s.total, s.lo, s.hi, s.max_len, s.ascending), (24, 32, 64, 16, true));
/// assert!(!summarize(&[(0, &b[..]), (8, &b[..])]).ascending);
/// ```
#[must_use]
pub fn summarize(writes: &[(u64, &[u8])]) -> WritesSummary {
    let mut s = WritesSummary {
        total: 0,
        lo: u64::MAX,
        hi: 0,
        max_len: 0,
        ascending: true,
    };
    let mut prev_end = 0u64;
    for &(offset, bytes) in writes {
        let len = bytes.len();
        let end = offset.saturating_add(len as u64);
        s.total = s.total.wrapping_add(len);
        s.lo = s.lo.min(offset);
        s.hi = s.hi.max(end);
        s.max_len = s.max_len.max(len);
        s.ascending &= prev_end <= offset;
        prev_end = end;
    }
    if writes.is_empty() {
        s.lo = 0;
    }
    s
}

/// Copies each `(offset, bytes)` of `writes` to `base + offset`: on the calling thread below
/// `parallel_min` bytes in all, else on the pool's threads and the calling one (entries
/// larger than [`COPY_GRAIN`] cut into pieces); returns when all are done.
///
/// # Safety
/// `writes` are [`ascending`]; every `base + offset .. + bytes.len()` is valid for writes
/// until this returns, nothing else accesses it, and none overlaps a `bytes`.
pub unsafe fn write_ascending(base: *mut u8, writes: &[(u64, &[u8])], parallel_min: usize) {
    // SAFETY: the function's contract.
    unsafe { write_ascending_summarized(base, writes, parallel_min, &summarize(writes)) }
}

/// [`write_ascending`] with the writes' [`summarize`] already made (one pass fewer).
///
/// # Safety
/// As for [`write_ascending`]; `summary` is `summarize(writes)`.
pub unsafe fn write_ascending_summarized(
    base: *mut u8,
    writes: &[(u64, &[u8])],
    parallel_min: usize,
    summary: &WritesSummary,
) {
    if summary.total < parallel_min {
        // SAFETY: the function's contract.
        unsafe { write_here(base, writes) };
        return;
    }
    if summary.max_len <= COPY_GRAIN {
        // SAFETY: the function's contract.
        unsafe { run_writes(base, writes) };
        return;
    }
    let pieces: Vec<CopyPiece> = writes
        .iter()
        .map(|&(offset, bytes)| {
            // SAFETY: in the caller's range (contract).
            unsafe { CopyPiece::new(base.add(offset as usize), bytes.as_ptr(), bytes.len()) }
        })
        .collect();
    // SAFETY: the pieces' destinations are disjoint (ascending) and valid (contract).
    unsafe { copy_pieces(&pieces, parallel_min) };
}

/// Copies `writes[k].1` to `base + at[k].src_offset` for each `k` (the first
/// `min(writes.len(), at.len())`): many small writes staged by a batch, copied where it
/// placed them, on the pool's threads and the calling one when they come to `parallel_min`
/// bytes or more (else on the calling one); returns when all are done. No list of pieces is
/// built first (10,000 writes: 240 KB less to write and read again).
///
/// # Safety
/// Every `base + at[k].src_offset .. + writes[k].1.len()` is valid for writes until this
/// returns, no two overlap, and none overlaps a `writes[k].1`.
pub unsafe fn run_staged(
    base: *mut u8,
    writes: &[(u64, &[u8])],
    at: &[ScatterWrite],
    parallel_min: usize,
) {
    let n = writes.len().min(at.len());
    let (writes, at) = (&writes[..n], &at[..n]);
    let total: usize = writes.iter().map(|w| w.1.len()).sum();
    let pool = if total < parallel_min || n <= 1 {
        None
    } else {
        Some(pool()).filter(|p| p.workers.load(Ordering::Relaxed) > 0)
    };
    let Some(pool) = pool else {
        for (w, a) in writes.iter().zip(at) {
            // SAFETY: the function's contract.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    w.1.as_ptr(),
                    base.add(a.src_offset as usize),
                    w.1.len(),
                );
            }
        }
        return;
    };
    let block = (BLOCK_BYTES.saturating_mul(n) / total.max(1)).clamp(1, n);
    let writes: *const [(u64, &[u8])] = writes;
    // SAFETY: only the lifetime changes; used under the contract of `Jobs` (above).
    let writes = unsafe {
        std::mem::transmute::<*const [(u64, &[u8])], *const [(u64, &'static [u8])]>(writes)
    };
    run_task(pool, Jobs::Staged { base, writes, at }, n, block);
}

/// Calls `f(i)` for each `i` below `n`, on the pool's threads and the calling one; returns
/// when all calls have. For CPU work that splits into a few independent parts of tens of
/// microseconds each (a scatter plan made in parts). A panic in a call is raised again here.
/// The signature fits [`crate::scatter::ScatterPlan::new_in_parts`]'s runner.
pub fn run_calls(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let pool = pool();
    if n <= 1 || pool.workers.load(Ordering::Relaxed) == 0 {
        (0..n).for_each(f);
        return;
    }
    let call: *const (dyn Fn(usize) + Sync + '_) = f;
    // SAFETY: only the lifetime bound changes (same fat pointer); `run_task` returns only
    // when every call is done, and no call starts after that (`Jobs::Calls`), so `f` and what
    // it borrows outlive every use of the pointer.
    let call = unsafe {
        std::mem::transmute::<
            *const (dyn Fn(usize) + Sync + '_),
            *const (dyn Fn(usize) + Sync + 'static),
        >(call)
    };
    run_task(pool, Jobs::Calls(call), n, 1);
}

/// Publishes a task of `count` jobs taken `block` at a time, works on it, and returns once
/// every job is done (re-raising a panic of a call).
fn run_task(pool: &'static Pool, jobs: Jobs, count: usize, block: usize) {
    let task = Arc::new(Task {
        block,
        jobs,
        count,
        next: AtomicUsize::new(0),
        left: AtomicUsize::new(count),
        panicked: AtomicBool::new(false),
    });
    {
        let mut slot = pool.slot.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = Some(Arc::clone(&task));
        pool.generation.fetch_add(1, Ordering::Release);
    }
    // Wake as many sleeping workers as there are blocks for (the caller takes one); workers
    // still spinning join by themselves.
    let helpers = count.div_ceil(block).saturating_sub(1);
    if helpers >= pool.workers.load(Ordering::Relaxed) {
        pool.wake.notify_all();
    } else {
        for _ in 0..helpers {
            pool.wake.notify_one();
        }
    }
    task.work();
    let mut spins = 0u32;
    while task.left.load(Ordering::Acquire) != 0 {
        spins += 1;
        if spins < 1 << 14 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    // Drop the pool's reference early (a worker may still hold a clone, without touching the
    // jobs: they are all taken).
    let mut slot = pool.slot.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.as_ref().is_some_and(|t| Arc::ptr_eq(t, &task)) {
        *slot = None;
    }
    drop(slot);
    assert!(
        !task.panicked.load(Ordering::Relaxed),
        "a part run on the copy threads panicked"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn summarize_matches_its_definition(
            writes in proptest::collection::vec((0u64..4096, 0usize..300), 0..40),
        ) {
            let bytes = [7u8; 300];
            let writes: Vec<(u64, &[u8])> =
                writes.iter().map(|&(o, n)| (o, &bytes[..n])).collect();
            let s = summarize(&writes);
            prop_assert_eq!(s.total, writes.iter().map(|w| w.1.len()).sum::<usize>());
            prop_assert_eq!(s.lo, writes.iter().map(|w| w.0).min().unwrap_or(0));
            prop_assert_eq!(
                s.hi,
                writes.iter().map(|w| w.0 + w.1.len() as u64).max().unwrap_or(0)
            );
            prop_assert_eq!(s.max_len, writes.iter().map(|w| w.1.len()).max().unwrap_or(0));
            prop_assert_eq!(s.ascending, ascending(&writes));
        }
    }

    #[test]
    fn copy_threads_from_the_environment() {
        assert_eq!(threads_wanted(None, 8), 8);
        assert_eq!(threads_wanted(None, 64), MAX_THREADS);
        assert_eq!(threads_wanted(Some("4"), 8), 4);
        assert_eq!(threads_wanted(Some(" 1 "), 8), 1);
        assert_eq!(threads_wanted(Some("100"), 8), MAX_THREADS);
        // Not a usable number: the machine's parallelism.
        assert_eq!(threads_wanted(Some("0"), 8), 8);
        assert_eq!(threads_wanted(Some("many"), 8), 8);
        assert_eq!(threads_wanted(Some(""), 0), 1);
    }

    #[test]
    fn idle_spin_from_the_environment() {
        assert_eq!(spin_wanted(None), IDLE_SPIN);
        assert_eq!(spin_wanted(Some("250")), Duration::from_micros(250));
        assert_eq!(spin_wanted(Some(" 0 ")), Duration::ZERO);
        assert_eq!(spin_wanted(Some("999999999")), MAX_IDLE_SPIN);
        assert_eq!(spin_wanted(Some("-5")), IDLE_SPIN);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Every write lands where its entry says, on one thread or on the pool's, and
        /// nothing else of the mapping changes.
        #[test]
        fn run_staged_copies_each_write_where_listed(
            lens in proptest::collection::vec(1usize..300, 0..3000),
            gap in 0u64..40,
            parallel in any::<bool>(),
        ) {
            let datas: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|b| (b as u8) ^ (i as u8) ^ 0x5a).collect())
                .collect();
            let writes: Vec<(u64, &[u8])> =
                datas.iter().enumerate().map(|(i, d)| (i as u64 * 7, &d[..])).collect();
            let mut at = Vec::new();
            let mut used = gap;
            for d in &datas {
                at.push(ScatterWrite { dst_offset: 0, src_offset: used, len: d.len() as u64 });
                used += d.len() as u64 + gap;
            }
            let mut map = vec![0xeeu8; usize::try_from(used).unwrap_or(0) + 8];
            let min = if parallel { 0 } else { usize::MAX };
            // SAFETY: every listed range lies inside `map` (ours), one after another; the
            // writes are other memory.
            unsafe { run_staged(map.as_mut_ptr(), &writes, &at, min) };
            let mut expect = vec![0xeeu8; map.len()];
            for (d, a) in datas.iter().zip(&at) {
                let s = a.src_offset as usize;
                expect[s..s + d.len()].copy_from_slice(d);
            }
            prop_assert!(map == expect);
        }

        /// Ascending entries, some larger than a job's grain, land at their offsets on one
        /// thread or on the pool's; the bytes between them are left alone.
        #[test]
        fn write_ascending_lands_every_entry(
            lens in proptest::collection::vec(
                prop_oneof![1usize..600, (COPY_GRAIN - 5)..(COPY_GRAIN * 2 + 7)],
                0..12,
            ),
            gap in 0u64..100,
            parallel in any::<bool>(),
        ) {
            let datas: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|b| (b as u8) ^ (i as u8).wrapping_mul(31)).collect())
                .collect();
            let mut writes: Vec<(u64, &[u8])> = Vec::new();
            let mut at = gap;
            for d in &datas {
                writes.push((at, &d[..]));
                at += d.len() as u64 + gap;
            }
            prop_assert!(ascending(&writes));
            let mut map = vec![0x11u8; usize::try_from(at).unwrap_or(0) + 3];
            let min = if parallel { 0 } else { usize::MAX };
            // SAFETY: every entry lies inside `map` (ours), ascending; the data is other memory.
            unsafe { write_ascending(map.as_mut_ptr(), &writes, min) };
            let mut expect = vec![0x11u8; map.len()];
            for &(o, d) in &writes {
                expect[o as usize..o as usize + d.len()].copy_from_slice(d);
            }
            prop_assert!(map == expect);
        }
    }
}
