//! A persistent pool of copy threads for large host copies into and out of staging memory.
//!
//! One CPU thread copies about 10 GB/s on the H100's host, sixteen about 54 GB/s (PERF.md), so
//! large copies are split into jobs that several threads take in turn. Spawning those threads
//! per copy costs tens of microseconds each, which a pipelined 256 MiB upload (16 pieces) would
//! pay hundreds of times; these threads are spawned once per process and sleep when idle, after
//! spinning briefly so that the next piece of a pipelined transfer finds them awake.
//!
//! The caller of [`run`] takes jobs too and returns only when every job is done, so the jobs
//! may point into memory the caller borrows.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use crate::buffer::CopyPiece;

/// Most threads (the caller included) that work on one copy.
const MAX_THREADS: usize = 16;

/// Spins of an idle worker (checking for a new task) before it sleeps: about 50 µs.
const IDLE_SPINS: u32 = 20_000;

/// One copy: its jobs, the next job to take and the jobs not finished yet.
struct Task {
    jobs: Vec<CopyPiece>,
    /// Jobs taken at a time: enough small jobs to make about [`BLOCK_BYTES`], so that many
    /// small pieces (a batch's 256-byte writes) do not cost two shared atomics each.
    block: usize,
    next: AtomicUsize,
    left: AtomicUsize,
}

/// Bytes a thread takes at a time when the jobs are small.
const BLOCK_BYTES: usize = 64 << 10;

impl Task {
    /// Copies blocks of jobs until none is left to take.
    fn work(&self) {
        loop {
            let first = self.next.fetch_add(self.block, Ordering::Relaxed);
            let Some(jobs) = self.jobs.get(first..) else {
                break;
            };
            let jobs = &jobs[..jobs.len().min(self.block)];
            if jobs.is_empty() {
                break;
            }
            for job in jobs {
                // SAFETY: each index is handed out once (the counter), so this thread is the
                // only one copying this job; the caller of `run` keeps the memory valid until
                // `left` reaches zero, which happens only after these copies (Release below).
                unsafe { job.copy() };
            }
            self.left.fetch_sub(jobs.len(), Ordering::Release);
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
        }));
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_THREADS);
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

fn worker(pool: &'static Pool) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0;
        while pool.generation.load(Ordering::Acquire) == seen && spins < IDLE_SPINS {
            std::hint::spin_loop();
            spins += 1;
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

/// Copies every job, on the pool's threads and the calling one; returns when all are done.
///
/// # Safety
/// Every job satisfies [`CopyPiece::new`]'s contract until this returns, and no two jobs'
/// destinations overlap.
pub(crate) unsafe fn run(jobs: Vec<CopyPiece>) {
    let pool = pool();
    if jobs.len() <= 1 || pool.workers.load(Ordering::Relaxed) == 0 {
        for job in &jobs {
            // SAFETY: the function's contract.
            unsafe { job.copy() };
        }
        return;
    }
    let n = jobs.len();
    let bytes: usize = jobs.iter().map(CopyPiece::len).sum();
    let block = (BLOCK_BYTES.saturating_mul(n) / bytes.max(1)).clamp(1, n);
    let task = Arc::new(Task {
        block,
        jobs,
        next: AtomicUsize::new(0),
        left: AtomicUsize::new(n),
    });
    {
        let mut slot = pool.slot.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = Some(Arc::clone(&task));
        pool.generation.fetch_add(1, Ordering::Release);
    }
    pool.wake.notify_all();
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
}
