//! A thread-safe, bounded pool of byte buffers (H1, H2).
//!
//! # Design
//!
//! A shared bounded queue (crossbeam's `ArrayQueue`) alone makes every `get` and every
//! return a compare-and-swap on cache lines that all threads fight over. This pool puts a
//! small cache in front of it for each thread that uses it (a per-pool, per-thread cache,
//! kept in a thread-local): a `get` that finds a buffer there and the return of that buffer
//! are plain `Vec` pops and pushes with no atomic read-modify-write at all. Only when a
//! thread's cache is empty (on `get`) or full (on return) does it go to the shared queue,
//! moving half a cache at a time.
//!
//! The bound holds globally, caches included, through *credits*: the pool starts with
//! `max_buffers` credits in one atomic counter. A buffer may only be kept idle with a
//! credit: every buffer in the shared queue carries one, and a thread cache holds a credit
//! for each buffer it keeps (it takes them from the counter a batch at a time, and gives
//! its spare ones back when it runs empty). So at every moment
//! `idle buffers <= credits taken out <= max_buffers`. A buffer that finds no credit is
//! freed.
//!
//! When a thread exits, its caches go back to their pools (or are freed). When a pool is
//! dropped, its shared queue and the dropping thread's cache are freed at once; another
//! thread frees its cache of that pool (at most its thread-cache size of buffers) the next
//! time it starts using a pool it has no cache for yet, or when it exits.

use core::cell::RefCell;
use core::fmt;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU64, AtomicUsize as StdAtomicUsize};
use std::sync::{Arc, Mutex, Weak};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

use crate::BufferStats;
use crate::sync::{AtomicUsize, Ordering};

/// Creation parameters of a [`BufferPool`]; the `with_*` methods tune the optional knobs.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use gantry_host::{BufferPool, BufferStats, PoolConfig};
///
/// let stats = Arc::new(BufferStats::new());
/// let pool = BufferPool::with_config(
///     PoolConfig::new(4096)
///         .with_max_buffers(16)
///         .with_max_retained_capacity(64 * 1024)
///         .with_stats(Arc::clone(&stats)),
/// );
/// drop(pool.get());
/// assert_eq!(stats.snapshot().allocations, 1);
/// ```
#[derive(Debug, Clone)]
pub struct PoolConfig {
    buffer_size: usize,
    max_buffers: usize,
    max_retained_capacity: usize,
    thread_cache: Option<usize>,
    stats: Option<Arc<BufferStats>>,
}

impl PoolConfig {
    /// Buffers of `buffer_size` bytes of capacity, at most 64 kept idle, buffers that grew
    /// past `max(4 * buffer_size, 4096)` bytes freed instead of kept, no statistics.
    ///
    /// # Example
    /// ```
    /// let pool = gantry_host::BufferPool::with_config(gantry_host::PoolConfig::new(512));
    /// assert_eq!(pool.max_buffers(), 64);
    /// ```
    pub fn new(buffer_size: usize) -> Self {
        Self {
            buffer_size,
            max_buffers: 64,
            max_retained_capacity: buffer_size.saturating_mul(4).max(4096),
            thread_cache: None,
            stats: None,
        }
    }

    /// The most buffers the pool keeps idle, in all threads' caches together (0 keeps none).
    ///
    /// # Example
    /// ```
    /// use gantry_host::{BufferPool, PoolConfig};
    /// let pool = BufferPool::with_config(PoolConfig::new(512).with_max_buffers(2));
    /// assert_eq!(pool.max_buffers(), 2);
    /// ```
    pub fn with_max_buffers(mut self, max_buffers: usize) -> Self {
        self.max_buffers = max_buffers;
        self
    }

    /// Returned buffers whose capacity is above `bytes` are freed, not kept.
    ///
    /// # Example
    /// ```
    /// use gantry_host::{BufferPool, PoolConfig};
    /// let pool = BufferPool::with_config(PoolConfig::new(16).with_max_retained_capacity(16));
    /// let mut b = pool.get();
    /// b.resize(1000, 0); // grows past the cap
    /// drop(b);
    /// assert_eq!(pool.idle(), 0);
    /// ```
    pub fn with_max_retained_capacity(mut self, bytes: usize) -> Self {
        self.max_retained_capacity = bytes;
        self
    }

    /// How many buffers each thread may cache for this pool (clamped to `max_buffers`);
    /// 0 turns the thread caches off, so every `get` and return goes through the shared
    /// queue. The default is `max_buffers / (2 * available parallelism)`, at least 1 and at
    /// most 32.
    ///
    /// # Example
    /// ```
    /// use gantry_host::{BufferPool, PoolConfig};
    /// let pool = BufferPool::with_config(PoolConfig::new(64).with_thread_cache(0));
    /// drop(pool.get());
    /// assert_eq!(pool.idle(), 1);
    /// ```
    pub fn with_thread_cache(mut self, buffers: usize) -> Self {
        self.thread_cache = Some(buffers);
        self
    }

    /// Reports every buffer the pool allocates and frees (by capacity) into `stats`.
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use gantry_host::{BufferPool, BufferStats, PoolConfig};
    /// let stats = Arc::new(BufferStats::new());
    /// let pool = BufferPool::with_config(PoolConfig::new(100).with_stats(stats.clone()));
    /// let b = pool.get();
    /// assert_eq!(stats.snapshot().live_bytes, b.capacity() as u64);
    /// ```
    pub fn with_stats(mut self, stats: Arc<BufferStats>) -> Self {
        self.stats = Some(stats);
        self
    }
}

/// Unique pool identities, to find a pool's entry in a thread's caches.
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// Hit and miss counts and the cache length of one thread for one pool. Written only by
/// that thread (plain load + store, no read-modify-write); read by anyone.
#[derive(Debug, Default)]
struct ThreadCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    idle: StdAtomicUsize,
}

impl ThreadCounters {
    #[inline(always)]
    fn bump(counter: &AtomicU64) {
        use core::sync::atomic::Ordering::Relaxed;
        counter.store(counter.load(Relaxed).wrapping_add(1), Relaxed);
    }
}

/// `repr(C)` keeps the order: the read-mostly fields that every `get` and return read
/// come first, on cache lines of their own (the alignment of `credits` also keeps them
/// away from the `Arc`'s counts); the fields written on slow paths come after.
#[repr(C)]
struct Inner {
    id: u64,
    buffer_size: usize,
    max_buffers: usize,
    max_retained: usize,
    local_cap: usize,
    stats: Option<Arc<BufferStats>>,
    /// Bumped by `clear`; caches with an older generation free their buffers.
    generation: AtomicU64,
    /// Credits not taken by anyone (see the module docs).
    credits: CachePadded<AtomicUsize>,
    /// Idle buffers that are in no thread cache; each holds one credit.
    shared: Option<ArrayQueue<Vec<u8>>>,
    /// Counters of every thread cache of this pool.
    threads: Mutex<Vec<Arc<CachePadded<ThreadCounters>>>>,
    /// Hits and misses of exited threads and of the uncached path.
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Inner {
    #[inline]
    fn record_free(&self, capacity: usize) {
        if let Some(stats) = &self.stats {
            stats.record_dealloc(capacity as u64);
        }
    }

    fn new_buffer(&self) -> Vec<u8> {
        let buf = Vec::with_capacity(self.buffer_size);
        if let Some(stats) = &self.stats {
            stats.record_alloc(buf.capacity() as u64);
        }
        buf
    }

    /// Takes up to `want` credits; returns how many it got.
    fn take_credits(&self, want: usize) -> usize {
        let mut got = 0;
        let _ = self
            .credits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                got = c.min(want);
                (got > 0).then(|| c - got)
            });
        got
    }

    fn give_credits(&self, n: usize) {
        if n > 0 {
            self.credits.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// `get` without a thread cache.
    fn shared_get(&self) -> Option<Vec<u8>> {
        let buf = self.shared.as_ref()?.pop()?;
        self.give_credits(1);
        Some(buf)
    }

    /// Return without a thread cache: keep `buf` in the shared queue if a credit is free.
    fn shared_put(&self, buf: Vec<u8>) {
        if let Some(queue) = &self.shared
            && self.take_credits(1) == 1
        {
            match queue.push(buf) {
                Ok(()) => return,
                Err(buf) => {
                    // Cannot happen (the queue holds `max_buffers` and every entry has a
                    // credit), but stay correct if it does.
                    self.give_credits(1);
                    self.record_free(buf.capacity());
                    return;
                }
            }
        }
        self.record_free(buf.capacity());
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Free this thread's cache of the pool now; other threads free theirs later.
        let id = self.id;
        let _ = CACHES.try_with(|caches| {
            if let Ok(mut caches) = caches.try_borrow_mut() {
                caches.retain(|c| c.pool_id != id);
            }
        });
        if let Some(queue) = &self.shared {
            while let Some(buf) = queue.pop() {
                self.record_free(buf.capacity());
            }
        }
    }
}

/// One thread's cache for one pool.
struct LocalCache {
    pool_id: u64,
    pool: Weak<Inner>,
    stats: Option<Arc<BufferStats>>,
    generation: u64,
    bufs: Vec<Vec<u8>>,
    /// Credits held; `bufs.len() <= credits <= local_cap`.
    credits: usize,
    counters: Arc<CachePadded<ThreadCounters>>,
}

impl LocalCache {
    fn new(pool: &Arc<Inner>) -> Self {
        let counters = Arc::new(CachePadded::new(ThreadCounters::default()));
        pool.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&counters));
        Self {
            pool_id: pool.id,
            pool: Arc::downgrade(pool),
            stats: pool.stats.clone(),
            generation: pool.generation.load(core::sync::atomic::Ordering::Acquire),
            bufs: Vec::with_capacity(pool.local_cap),
            credits: 0,
            counters,
        }
    }

    #[inline(always)]
    fn set_idle(&self) {
        self.counters
            .idle
            .store(self.bufs.len(), core::sync::atomic::Ordering::Relaxed);
    }

    /// Frees the cached buffers and gives back the credits (after `clear`).
    #[cold]
    fn reset(&mut self, pool: &Inner, generation: u64) {
        for buf in self.bufs.drain(..) {
            pool.record_free(buf.capacity());
        }
        pool.give_credits(core::mem::take(&mut self.credits));
        self.generation = generation;
        self.set_idle();
    }

    #[inline(always)]
    fn check_generation(&mut self, pool: &Inner) {
        let generation = pool.generation.load(core::sync::atomic::Ordering::Acquire);
        if generation != self.generation {
            self.reset(pool, generation);
        }
    }

    #[inline]
    fn get(&mut self, pool: &Inner) -> Vec<u8> {
        self.check_generation(pool);
        if let Some(buf) = self.bufs.pop() {
            ThreadCounters::bump(&self.counters.hits);
            self.set_idle();
            return buf;
        }
        self.get_slow(pool)
    }

    #[cold]
    fn get_slow(&mut self, pool: &Inner) -> Vec<u8> {
        // Our cache is empty: give back the credits we hold for nothing, and the one of the
        // buffer we may take from the shared queue.
        let popped = pool.shared.as_ref().and_then(|q| q.pop());
        let give = core::mem::take(&mut self.credits) + usize::from(popped.is_some());
        pool.give_credits(give);
        match popped {
            Some(buf) => {
                ThreadCounters::bump(&self.counters.hits);
                buf
            }
            None => {
                ThreadCounters::bump(&self.counters.misses);
                pool.new_buffer()
            }
        }
    }

    #[inline]
    fn put(&mut self, pool: &Inner, buf: Vec<u8>) {
        self.check_generation(pool);
        if self.bufs.len() < self.credits {
            self.bufs.push(buf);
            self.set_idle();
            return;
        }
        self.put_slow(pool, buf);
    }

    #[cold]
    fn put_slow(&mut self, pool: &Inner, buf: Vec<u8>) {
        let cap = pool.local_cap;
        if self.bufs.len() >= cap
            && let Some(queue) = &pool.shared
        {
            // Full: move the older half (with their credits) to the shared queue.
            let n = (cap / 2).max(1).min(self.bufs.len());
            // Count them out of this cache before they enter the shared queue, so that
            // `idle` does not count them twice meanwhile.
            self.counters
                .idle
                .store(self.bufs.len() - n, core::sync::atomic::Ordering::Relaxed);
            for old in self.bufs.drain(..n) {
                self.credits -= 1;
                if let Err(old) = queue.push(old) {
                    pool.give_credits(1);
                    pool.record_free(old.capacity());
                }
            }
        }
        if self.credits < cap {
            self.credits += pool.take_credits(cap - self.credits);
        }
        if self.bufs.len() < self.credits {
            self.bufs.push(buf);
        } else {
            pool.record_free(buf.capacity());
        }
        self.set_idle();
    }
}

impl Drop for LocalCache {
    fn drop(&mut self) {
        use core::sync::atomic::Ordering::Relaxed;
        match self.pool.upgrade() {
            Some(pool) => {
                // Buffers from before a `clear` are freed, not handed on.
                let generation = pool.generation.load(core::sync::atomic::Ordering::Acquire);
                if generation != self.generation {
                    self.reset(&pool, generation);
                }
                // Hand the buffers, with their credits, to the shared queue (counted out of
                // this cache first, as in `put_slow`).
                self.counters.idle.store(0, Relaxed);
                for buf in self.bufs.drain(..) {
                    self.credits -= 1;
                    pool.shared_put_with_credit(buf);
                }
                pool.give_credits(self.credits);
                // Fold the counters into the pool's and leave the list under one hold of the
                // list's lock, which `count` takes to read both: it sees this thread's
                // counts once, before or after, never in both places.
                let mut threads = pool.threads.lock().unwrap_or_else(|e| e.into_inner());
                pool.hits
                    .fetch_add(self.counters.hits.load(Relaxed), Relaxed);
                pool.misses
                    .fetch_add(self.counters.misses.load(Relaxed), Relaxed);
                threads.retain(|c| !Arc::ptr_eq(c, &self.counters));
            }
            None => {
                if let Some(stats) = &self.stats {
                    for buf in &self.bufs {
                        stats.record_dealloc(buf.capacity() as u64);
                    }
                }
            }
        }
    }
}

impl Inner {
    /// Keeps `buf`, whose credit the caller hands over, in the shared queue.
    fn shared_put_with_credit(&self, buf: Vec<u8>) {
        let rejected = match &self.shared {
            Some(queue) => queue.push(buf).err(),
            None => Some(buf),
        };
        if let Some(buf) = rejected {
            self.give_credits(1);
            self.record_free(buf.capacity());
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static CACHES: RefCell<Vec<LocalCache>> = const { RefCell::new(Vec::new()) };
}
#[cfg(loom)]
loom::thread_local! {
    static CACHES: RefCell<Vec<LocalCache>> = RefCell::new(Vec::new());
}

/// Runs `f` on this thread's cache for `pool`, creating it if needed; `None` when the
/// thread-local is gone (thread exit) or already borrowed.
/// The pool used last on this thread is kept first.
#[inline(never)]
fn with_cache<R>(pool: &Arc<Inner>, f: impl FnOnce(&mut LocalCache, &Inner) -> R) -> Option<R> {
    CACHES
        .try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            match caches.iter().position(|c| c.pool_id == pool.id) {
                Some(i) => caches.swap(0, i),
                None => {
                    let i = new_cache(&mut caches, pool);
                    caches.swap(0, i);
                }
            }
            Some(f(&mut caches[0], pool))
        })
        .ok()
        .flatten()
}

/// The fast path of `get`: a buffer from this thread's cache of the pool it used last,
/// moved straight into `out`, with no atomic read-modify-write. Returns whether it found
/// one; if not, the caller takes the slow path.
///
/// Buffers are moved in place (`out`, `&mut`) rather than returned through `Option`s:
/// fewer copies of the `Vec` through the stack, which the CPU must forward store to load.
#[inline(always)]
fn fast_get(pool: &Inner, out: &mut Vec<u8>) -> bool {
    CACHES
        .try_with(|caches| {
            let Ok(mut caches) = caches.try_borrow_mut() else {
                return false;
            };
            let Some(cache) = caches.first_mut() else {
                return false;
            };
            if cache.pool_id != pool.id
                || cache.bufs.is_empty()
                || cache.generation != pool.generation.load(core::sync::atomic::Ordering::Acquire)
            {
                return false;
            }
            if let Some(buf) = cache.bufs.pop() {
                *out = buf;
            }
            ThreadCounters::bump(&cache.counters.hits);
            cache.set_idle();
            true
        })
        .unwrap_or(false)
}

/// The fast path of a return: moves `buf` into this thread's cache of the pool it used
/// last, if that holds a spare credit; returns whether it did (`buf` is then empty).
#[inline(always)]
fn fast_put(pool: &Inner, buf: &mut Vec<u8>) -> bool {
    CACHES
        .try_with(|caches| {
            let Ok(mut caches) = caches.try_borrow_mut() else {
                return false;
            };
            let Some(cache) = caches.first_mut() else {
                return false;
            };
            if cache.pool_id != pool.id
                || cache.bufs.len() >= cache.credits
                || cache.generation != pool.generation.load(core::sync::atomic::Ordering::Acquire)
            {
                return false;
            }
            cache.bufs.push(core::mem::take(buf));
            cache.set_idle();
            true
        })
        .unwrap_or(false)
}

#[cold]
fn new_cache(caches: &mut Vec<LocalCache>, pool: &Arc<Inner>) -> usize {
    // Free the caches of pools that no longer exist.
    caches.retain(|c| c.pool.strong_count() > 0);
    caches.push(LocalCache::new(pool));
    caches.len() - 1
}

/// A thread-safe pool of byte buffers with a global bound: a small cache per thread in
/// front of a shared queue, and `max_buffers` credits that every idle buffer must hold, so
/// idle buffers never exceed `max_buffers`, caches included.
///
/// [`get`](Self::get) hands out a [`PooledBuffer`] that derefs to `Vec<u8>`; when dropped
/// it goes back to the pool cleared (length 0, capacity kept), unless its capacity grew
/// past [`PoolConfig::with_max_retained_capacity`] or `max_buffers` buffers are already
/// idle, in which case it is freed. Cloning a `BufferPool` gives another handle to the
/// same pool.
///
/// # Example
/// ```
/// use gantry_host::BufferPool;
///
/// let pool = BufferPool::with_capacity(4096, 8);
/// for _ in 0..100 {
///     let mut buf = pool.get();
///     buf.extend_from_slice(b"@seq\nACGT\n+\nIIII\n");
///     assert_eq!(&buf[..4], b"@seq");
/// } // each buffer goes back here
/// assert_eq!((pool.misses(), pool.hits()), (1, 99));
/// assert!(pool.idle() <= 8);
/// ```
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<Inner>,
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("buffer_size", &self.inner.buffer_size)
            .field("max_buffers", &self.inner.max_buffers)
            .field("idle", &self.idle())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish_non_exhaustive()
    }
}

impl BufferPool {
    /// A pool of buffers of `buffer_size` bytes keeping at most 64 idle.
    ///
    /// # Example
    /// ```
    /// let pool = gantry_host::BufferPool::new(1024);
    /// assert!(pool.get().capacity() >= 1024);
    /// ```
    pub fn new(buffer_size: usize) -> Self {
        Self::with_config(PoolConfig::new(buffer_size))
    }

    /// A pool of buffers of `buffer_size` bytes keeping at most `max_buffers` idle.
    ///
    /// # Example
    /// ```
    /// let pool = gantry_host::BufferPool::with_capacity(1024, 4);
    /// assert_eq!(pool.max_buffers(), 4);
    /// ```
    pub fn with_capacity(buffer_size: usize, max_buffers: usize) -> Self {
        Self::with_config(PoolConfig::new(buffer_size).with_max_buffers(max_buffers))
    }

    /// A pool built from `config`.
    ///
    /// # Example
    /// ```
    /// use gantry_host::{BufferPool, PoolConfig};
    /// let pool = BufferPool::with_config(PoolConfig::new(256).with_max_buffers(3));
    /// assert_eq!(pool.buffer_size(), 256);
    /// ```
    pub fn with_config(config: PoolConfig) -> Self {
        let max = config.max_buffers;
        let local_cap = match config.thread_cache {
            Some(n) => n.min(max),
            None => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                (max / (2 * threads)).clamp(1, 32).min(max)
            }
        };
        Self {
            inner: Arc::new(Inner {
                id: NEXT_POOL_ID.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
                buffer_size: config.buffer_size,
                max_buffers: max,
                max_retained: config.max_retained_capacity,
                local_cap,
                stats: config.stats,
                generation: AtomicU64::new(0),
                credits: CachePadded::new(AtomicUsize::new(max)),
                shared: (max > 0).then(|| ArrayQueue::new(max)),
                threads: Mutex::new(Vec::new()),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    /// Takes an idle buffer (length 0), or allocates one of `buffer_size` bytes of
    /// capacity if none is idle. The buffer borrows the pool; see
    /// [`get_owned`](Self::get_owned) for one that does not.
    ///
    /// # Example
    /// ```
    /// let pool = gantry_host::BufferPool::new(64);
    /// let mut buf = pool.get();
    /// buf.push(1);
    /// assert_eq!(buf.len(), 1);
    /// drop(buf);
    /// assert!(pool.get().is_empty()); // came back cleared
    /// ```
    #[inline]
    pub fn get(&self) -> PooledBuffer<'_> {
        let buf = self.take();
        PooledBuffer {
            accounted: buf.capacity(),
            buf,
            pool: Some(PoolRef::Borrowed(&self.inner)),
        }
    }

    /// Like [`get`](Self::get), but the buffer holds a reference count on the pool, so it
    /// can be sent to other threads and outlive this handle. Costs an atomic increment
    /// and decrement on the pool's shared count.
    ///
    /// # Example
    /// ```
    /// let pool = gantry_host::BufferPool::new(64);
    /// let mut buf = pool.get_owned();
    /// std::thread::spawn(move || buf.push(7)).join().unwrap();
    /// ```
    pub fn get_owned(&self) -> PooledBuffer<'static> {
        let buf = self.take();
        PooledBuffer {
            accounted: buf.capacity(),
            buf,
            pool: Some(PoolRef::Owned(Arc::clone(&self.inner))),
        }
    }

    #[inline(always)]
    fn take(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        if !fast_get(&self.inner, &mut buf) {
            buf = self.take_slow();
        }
        buf
    }

    #[inline(never)]
    fn take_slow(&self) -> Vec<u8> {
        let inner = &self.inner;
        if inner.local_cap > 0
            && let Some(buf) = with_cache(inner, LocalCache::get)
        {
            return buf;
        }
        match inner.shared_get() {
            Some(buf) => {
                inner
                    .hits
                    .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                buf
            }
            None => {
                inner
                    .misses
                    .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                inner.new_buffer()
            }
        }
    }

    /// Frees every idle buffer: the shared ones at once, those in thread caches when each
    /// thread next uses the pool (or exits). Buffers handed out are not affected.
    ///
    /// # Example
    /// ```
    /// let pool = gantry_host::BufferPool::new(64);
    /// drop(pool.get());
    /// pool.clear();
    /// assert_eq!(pool.idle(), 0);
    /// ```
    pub fn clear(&self) {
        let inner = &self.inner;
        inner
            .generation
            .fetch_add(1, core::sync::atomic::Ordering::AcqRel);
        if let Some(queue) = &inner.shared {
            while let Some(buf) = queue.pop() {
                inner.give_credits(1);
                inner.record_free(buf.capacity());
            }
        }
        // Reset our own cache now rather than on next use.
        let _ = with_cache(inner, |cache, pool| cache.check_generation(pool));
    }

    /// The number of idle buffers, in the shared queue and in every thread's cache. Exact
    /// when no other thread uses the pool meanwhile; otherwise a snapshot that a buffer
    /// moving between the shared queue and a thread at that moment may be missing from, or
    /// counted in twice. The real number never exceeds
    /// [`max_buffers`](Self::max_buffers) (see the module docs).
    ///
    /// # Example
    /// ```
    /// let pool = gantry_host::BufferPool::with_capacity(64, 2);
    /// let (a, b, c) = (pool.get(), pool.get(), pool.get());
    /// drop((a, b, c));
    /// assert_eq!(pool.idle(), 2);
    /// ```
    pub fn idle(&self) -> usize {
        use core::sync::atomic::Ordering::Relaxed;
        let shared = self.inner.shared.as_ref().map_or(0, ArrayQueue::len);
        let cached: usize = self
            .inner
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.idle.load(Relaxed))
            .sum();
        shared + cached
    }

    /// How many `get`s found an idle buffer.
    ///
    /// # Example
    /// ```
    /// let pool = gantry_host::BufferPool::new(64);
    /// drop(pool.get());
    /// drop(pool.get());
    /// assert_eq!(pool.hits(), 1);
    /// ```
    pub fn hits(&self) -> u64 {
        self.count(|c| &c.hits, &self.inner.hits)
    }

    /// How many `get`s had to allocate.
    ///
    /// # Example
    /// ```
    /// let pool = gantry_host::BufferPool::new(64);
    /// let (a, b) = (pool.get(), pool.get());
    /// assert_eq!(pool.misses(), 2);
    /// ```
    pub fn misses(&self) -> u64 {
        self.count(|c| &c.misses, &self.inner.misses)
    }

    fn count(&self, field: impl Fn(&ThreadCounters) -> &AtomicU64, base: &AtomicU64) -> u64 {
        use core::sync::atomic::Ordering::Relaxed;
        let threads = self.inner.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads
            .iter()
            .fold(base.load(Relaxed), |sum, c| sum + field(c).load(Relaxed))
    }

    /// The most buffers kept idle.
    ///
    /// # Example
    /// ```
    /// assert_eq!(gantry_host::BufferPool::new(8).max_buffers(), 64);
    /// ```
    pub fn max_buffers(&self) -> usize {
        self.inner.max_buffers
    }

    /// The capacity of newly allocated buffers.
    ///
    /// # Example
    /// ```
    /// assert_eq!(gantry_host::BufferPool::new(8).buffer_size(), 8);
    /// ```
    pub fn buffer_size(&self) -> usize {
        self.inner.buffer_size
    }

    /// The statistics the pool reports into, if any.
    ///
    /// # Example
    /// ```
    /// assert!(gantry_host::BufferPool::new(8).stats().is_none());
    /// ```
    pub fn stats(&self) -> Option<&Arc<BufferStats>> {
        self.inner.stats.as_ref()
    }
}

/// How a [`PooledBuffer`] refers to its pool.
enum PoolRef<'a> {
    Borrowed(&'a Arc<Inner>),
    Owned(Arc<Inner>),
}

impl PoolRef<'_> {
    #[inline(always)]
    fn arc(&self) -> &Arc<Inner> {
        match self {
            PoolRef::Borrowed(arc) => arc,
            PoolRef::Owned(arc) => arc,
        }
    }
}

/// A buffer from a [`BufferPool`]; derefs to `Vec<u8>` (read and write) and goes back to
/// the pool, cleared, when dropped.
///
/// # Example
/// ```
/// let pool = gantry_host::BufferPool::new(16);
/// let mut buf = pool.get();
/// buf.extend_from_slice(b"abc"); // DerefMut to Vec<u8>
/// assert_eq!(&buf[..], b"abc"); // Deref
/// let owned: Vec<u8> = buf.into_inner(); // detached: never goes back
/// assert_eq!(owned, b"abc");
/// ```
pub struct PooledBuffer<'a> {
    buf: Vec<u8>,
    /// Capacity reported to the statistics for this buffer.
    accounted: usize,
    /// `None` once detached.
    pool: Option<PoolRef<'a>>,
}

impl PooledBuffer<'_> {
    /// Detaches the buffer from the pool and returns it; it will not go back. The pool's
    /// statistics count it as freed.
    ///
    /// # Example
    /// ```
    /// let pool = gantry_host::BufferPool::new(16);
    /// let v = pool.get().into_inner();
    /// assert!(v.capacity() >= 16);
    /// assert_eq!(pool.idle(), 0);
    /// ```
    pub fn into_inner(mut self) -> Vec<u8> {
        if let Some(pool) = self.pool.take() {
            pool.arc().record_free(self.accounted);
        }
        core::mem::take(&mut self.buf)
    }
}

impl Drop for PooledBuffer<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        let Some(pool) = &self.pool else {
            return;
        };
        let inner = pool.arc();
        if self.buf.capacity() == self.accounted && self.accounted <= inner.max_retained {
            self.buf.clear();
            if fast_put(inner, &mut self.buf) {
                return;
            }
        }
        self.drop_slow();
    }
}

impl PooledBuffer<'_> {
    #[inline(never)]
    fn drop_slow(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        let inner = pool.arc();
        let mut buf = core::mem::take(&mut self.buf);
        buf.clear();
        let capacity = buf.capacity();
        if capacity > inner.max_retained || inner.max_buffers == 0 {
            inner.record_free(self.accounted);
            return;
        }
        if capacity != self.accounted
            && let Some(stats) = &inner.stats
        {
            // The Vec reallocated while out: report it as a free and a new allocation.
            stats.record_dealloc(self.accounted as u64);
            stats.record_alloc(capacity as u64);
        }
        let mut slot = Some(buf);
        if inner.local_cap > 0 {
            let _ = with_cache(inner, |cache, pool| {
                if let Some(buf) = slot.take() {
                    cache.put(pool, buf);
                }
            });
        }
        if let Some(buf) = slot {
            inner.shared_put(buf);
        }
    }
}

impl Deref for PooledBuffer<'_> {
    type Target = Vec<u8>;

    #[inline(always)]
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for PooledBuffer<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl AsRef<[u8]> for PooledBuffer<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl AsMut<[u8]> for PooledBuffer<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl fmt::Debug for PooledBuffer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuffer")
            .field("len", &self.buf.len())
            .field("capacity", &self.buf.capacity())
            .field("attached", &self.pool.is_some())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_cleared_with_capacity() {
        let pool = BufferPool::with_capacity(32, 4);
        let mut b = pool.get();
        b.extend_from_slice(&[1; 40]);
        let cap = b.capacity();
        drop(b);
        let b = pool.get();
        assert!(b.is_empty());
        assert_eq!(b.capacity(), cap);
        assert_eq!((pool.hits(), pool.misses()), (1, 1));
    }

    #[test]
    fn bound_holds_single_thread() {
        for cache in [None, Some(0), Some(1), Some(3)] {
            let mut config = PoolConfig::new(8).with_max_buffers(5);
            if let Some(c) = cache {
                config = config.with_thread_cache(c);
            }
            let pool = BufferPool::with_config(config);
            let held: Vec<_> = (0..20).map(|_| pool.get()).collect();
            drop(held);
            assert!(pool.idle() <= 5, "{cache:?}: {}", pool.idle());
            assert!(pool.idle() >= 1);
        }
    }

    #[test]
    fn zero_max_buffers_keeps_nothing() {
        let pool = BufferPool::with_capacity(8, 0);
        drop(pool.get());
        drop(pool.get());
        assert_eq!(pool.idle(), 0);
        assert_eq!(pool.misses(), 2);
    }

    #[test]
    fn oversized_buffers_are_freed() {
        let stats = Arc::new(BufferStats::new());
        let pool = BufferPool::with_config(
            PoolConfig::new(16)
                .with_max_retained_capacity(64)
                .with_stats(Arc::clone(&stats)),
        );
        let mut b = pool.get();
        b.reserve(1000);
        drop(b);
        assert_eq!(pool.idle(), 0);
        let s = stats.snapshot();
        assert_eq!((s.allocations, s.deallocations, s.live_bytes), (1, 1, 0));
    }

    #[test]
    fn stats_balance_after_everything_is_gone() {
        let stats = Arc::new(BufferStats::new());
        let pool = BufferPool::with_config(
            PoolConfig::new(16)
                .with_max_buffers(3)
                .with_stats(Arc::clone(&stats)),
        );
        let held: Vec<_> = (0..6).map(|_| pool.get()).collect();
        drop(held);
        let mut grown = pool.get();
        grown.reserve(40); // grows within the retained cap
        drop(grown);
        let detached = pool.get().into_inner();
        assert!(detached.capacity() >= 16);
        let s = stats.snapshot();
        // Idle buffers are 16 bytes, except the grown one (56 or more).
        let idle = pool.idle() as u64;
        assert!(
            s.live_bytes >= idle * 16 && s.live_bytes <= (idle - 1) * 16 + 64,
            "{s:?}"
        );
        drop(pool);
        let s = stats.snapshot();
        assert_eq!(s.live_bytes, 0, "{s:?}");
        assert_eq!(s.allocations, s.deallocations);
    }

    #[test]
    fn clear_frees_idle_buffers() {
        let pool = BufferPool::with_capacity(8, 8);
        let held: Vec<_> = (0..4).map(|_| pool.get()).collect();
        drop(held);
        assert!(pool.idle() > 0);
        pool.clear();
        assert_eq!(pool.idle(), 0);
        drop(pool.get());
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn clear_also_frees_caches_of_threads_that_exit() {
        let pool =
            BufferPool::with_config(PoolConfig::new(8).with_max_buffers(8).with_thread_cache(4));
        let ready = Arc::new(std::sync::Barrier::new(2));
        let go = Arc::new(std::sync::Barrier::new(2));
        // `spawn` + `join`, not a scope: `join` also waits for the thread-local destructors.
        let t = std::thread::spawn({
            let (pool, ready, go) = (pool.clone(), Arc::clone(&ready), Arc::clone(&go));
            move || {
                let held: Vec<_> = (0..3).map(|_| pool.get()).collect();
                drop(held); // now cached in this thread
                ready.wait();
                go.wait(); // exits after the clear below
            }
        });
        ready.wait();
        pool.clear();
        go.wait();
        t.join().unwrap();
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn owned_buffer_outlives_pool() {
        let pool = BufferPool::new(8);
        let mut b = pool.get_owned();
        drop(pool);
        b.push(1);
        drop(b);
    }

    #[test]
    fn exited_threads_hand_their_cache_back() {
        let pool =
            BufferPool::with_config(PoolConfig::new(8).with_max_buffers(8).with_thread_cache(4));
        // `spawn` + `join`, not a scope: `join` also waits for the thread-local destructors.
        let p2 = pool.clone();
        std::thread::spawn(move || {
            let held: Vec<_> = (0..6).map(|_| p2.get()).collect();
            drop(held);
        })
        .join()
        .unwrap();
        // The thread's cache went to the shared queue: this thread can take them.
        let idle = pool.idle();
        assert!((1..=8).contains(&idle), "{idle}");
        let held: Vec<_> = (0..idle).map(|_| pool.get()).collect();
        assert_eq!(pool.misses(), 6);
        drop(held);
    }

    #[test]
    fn bound_holds_across_threads() {
        let iters = if cfg!(miri) { 20 } else { 2000 };
        let pool = BufferPool::with_capacity(8, 6);
        std::thread::scope(|s| {
            for t in 0..3 {
                let pool = &pool;
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..iters {
                        if (i + t) % 3 == 0 {
                            held.clear();
                        }
                        held.push(pool.get());
                        assert!(pool.idle() <= 6);
                    }
                });
            }
        });
        assert!(pool.idle() <= 6);
        assert_eq!(pool.hits() + pool.misses(), 3 * iters as u64);
    }
}
