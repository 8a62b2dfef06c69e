//! A size-class pool of GPU buffers: acquiring a pooled buffer instead of creating one.
//!
//! Two tiers:
//! - the **shared tier**: per (size class, usage, location) *slot*, a list of free buffers
//!   behind the pool's one lock;
//! - a **thread cache**: each thread that returns a buffer to a slot may park one buffer of
//!   that slot in thread-local storage. A thread acquiring and returning buffers of the same
//!   slot (the common pattern: scratch buffers, dedicated staging, readbacks) then touches no
//!   lock of the pool and no shared atomic; statistics it records are single-writer counters
//!   (a plain load and store, no read-modify-write).
//!
//! The bound holds across both tiers: a thread cache *reserves* its place in the slot (under
//! the lock, when it first parks a buffer there) and keeps the reservation while its buffer is
//! on loan, so `free buffers of a slot <= list + reservations <= cap` at all times.
//!
//! A buffer parked in a thread cache keeps the reference to its pool that its loan held, and
//! hands it to the next loan: a hit and a return touch no reference count either. The pool
//! therefore lives on while buffers are parked; what the user holds is a [`Pool`] handle, and
//! when the last handle goes the pool is *closed*: thread caches drop what they park (this
//! thread's at once, other threads' at their next use of a pool), and buffers returned later
//! are dropped.
//!
//! The reuse rule (M7) is the same in both tiers: a buffer is handed out only when it is alive,
//! unmapped and its last submission is `<=` the completed index. The completed index is
//! cached; the device is polled only when the cached value says "not yet".
//!
//! The pool's logic is written over [`Source`] (implemented by [`Device`]), so the tests can
//! drive it with items whose last use and completion they control.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use gantry_core::{
    Backend, Buffer, BufferDesc, BufferUsage, Device, MemoryLocation, SubmissionIndex,
};
use gantry_host::InlineAny;
use gantry_stats::{Counter, ProviderSnapshot, StatisticsProvider, Unit};

use crate::error::Result;
use crate::transfer::lock;

/// The smallest size class (2^8 bytes).
const MIN_CLASS_EXP: u32 = 8;
/// Size classes are powers of two, indexed by their exponent (0..64).
const CLASSES: usize = 64;
/// Free memory a slot keeps at most (but always one buffer).
const MAX_SLOT_BYTES: u64 = 256 << 20;

/// The size class exponent of `size`: the next power of two, at least 256 bytes; `None` when
/// that power of two does not fit in a `u64` (or `size` is 0).
#[inline]
fn class_exp(size: u64) -> Option<u32> {
    if size == 0 {
        return None;
    }
    // ceil(log2(size)) for size >= 2; the minimum covers 1.
    let exp = (u64::BITS - (size - 1).leading_zeros()).max(MIN_CLASS_EXP);
    (exp < u64::BITS).then_some(exp)
}

/// How many free buffers a slot of class `exp` keeps at most.
fn slot_cap(max_per_class: usize, exp: u32) -> usize {
    max_per_class
        .min(usize::try_from(MAX_SLOT_BYTES >> exp).unwrap_or(usize::MAX))
        .max(1)
}

/// What the pool pools: creating items, and when an item may be handed out again.
pub(crate) trait Source: Send + Sync + 'static {
    /// A pooled item (a buffer).
    type Item: Send + Sync + 'static;
    /// A new item of `size` bytes (a size class).
    fn create(&self, size: u64, usage: BufferUsage, location: MemoryLocation)
    -> Result<Self::Item>;
    /// The last submission that used `item`, if it may be reused once that completed; `None`
    /// when it never may (destroyed, mapped).
    fn reusable_after(item: &Self::Item) -> Option<SubmissionIndex>;
    /// The latest completed submission (non-blocking).
    fn poll(&self) -> Result<SubmissionIndex>;
    /// The largest item size, for the error of a size with no class.
    fn max_size(&self) -> u64;
}

impl<B: Backend> Source for Device<B> {
    type Item = Buffer<B>;
    fn create(&self, size: u64, usage: BufferUsage, location: MemoryLocation) -> Result<Buffer<B>> {
        Ok(self.create_buffer(
            &BufferDesc::new(size, usage, location).with_label("gantry pooled buffer"),
        )?)
    }
    fn reusable_after(item: &Buffer<B>) -> Option<SubmissionIndex> {
        item.reusable_after()
    }
    fn poll(&self) -> Result<SubmissionIndex> {
        Ok(Device::poll(self)?)
    }
    fn max_size(&self) -> u64 {
        self.limits().max_buffer_size
    }
}

/// The free buffers of one size class with one usage and location, shared by all threads.
struct SharedSlot<T> {
    exp: u32,
    usage: u32,
    location: MemoryLocation,
    /// Free buffers kept at most, in `list` and in thread caches together.
    cap: usize,
    list: Vec<T>,
    /// Thread caches holding a place in this slot (each parks at most one buffer).
    reserved: usize,
}

/// Event counts (for statistics).
#[derive(Clone, Copy, Default)]
struct Totals {
    hits: u64,
    returned: u64,
    discarded: u64,
}

impl Totals {
    fn add(self, o: Self) -> Self {
        Self {
            hits: self.hits.wrapping_add(o.hits),
            returned: self.returned.wrapping_add(o.returned),
            discarded: self.discarded.wrapping_add(o.discarded),
        }
    }
    fn sub(self, o: Self) -> Self {
        Self {
            hits: self.hits.wrapping_sub(o.hits),
            returned: self.returned.wrapping_sub(o.returned),
            discarded: self.discarded.wrapping_sub(o.discarded),
        }
    }
}

/// Everything behind the pool's one lock.
struct Shared<T> {
    /// Slot ids per size class exponent (a short list each: usages and locations).
    classes: Vec<Vec<usize>>,
    slots: Vec<SharedSlot<T>>,
    /// Events of the shared tier, and of thread caches that are gone.
    totals: Totals,
    /// What the live thread caches had counted at the last `reset`.
    base: Totals,
    /// The counters of the live thread caches.
    threads: Vec<Arc<LocalCounters>>,
}

impl<T> Shared<T> {
    /// The slot id for `(exp, usage, location)`, added if missing.
    fn slot(
        &mut self,
        exp: u32,
        usage: u32,
        location: MemoryLocation,
        max_per_class: usize,
    ) -> usize {
        let ids = &self.classes[exp as usize];
        if let Some(&id) = ids.iter().find(|&&id| {
            let s = &self.slots[id];
            s.usage == usage && s.location == location
        }) {
            return id;
        }
        let id = self.slots.len();
        self.slots.push(SharedSlot {
            exp,
            usage,
            location,
            cap: slot_cap(max_per_class, exp),
            list: Vec::new(),
            reserved: 0,
        });
        self.classes[exp as usize].push(id);
        id
    }

    /// Event counts since the last reset, over both tiers.
    fn totals(&self) -> Totals {
        let live = self
            .threads
            .iter()
            .fold(Totals::default(), |t, c| t.add(c.totals()));
        self.totals.add(live).sub(self.base)
    }
}

/// One thread cache's counters. Only the owning thread writes them (a load and a store: no
/// read-modify-write, so no lost update either); any thread reads them.
///
/// What the cache parks now is derived: `returned - hits - gone` buffers, and the same of the
/// bytes. A hit and a return each bump their two counters once, so no counter is written
/// twice in one acquire and release (a running "parked" count was: two read-modify-writes a
/// cycle on one address, each waiting for the last to be forwarded from the store buffer,
/// which on the pool's hit path was the longest chain). Stores are `Release` and
/// [`LocalCounters::parked`] loads what leaves before what enters, so it never sees more
/// buffers leave than entered.
#[derive(Default)]
struct LocalCounters {
    /// Buffers taken out as hits, and their bytes.
    hits: AtomicU64,
    hit_bytes: AtomicU64,
    /// Buffers parked, and their bytes.
    returned: AtomicU64,
    returned_bytes: AtomicU64,
    /// Buffers taken out otherwise (destroyed or mapped while on loan, or dropped with the
    /// cache's contents), and their bytes.
    gone: AtomicU64,
    gone_bytes: AtomicU64,
    /// Buffers found destroyed or mapped while on loan (for statistics; also in `gone`).
    discarded: AtomicU64,
}

/// Adds `n` (wrapping) to a counter only the calling thread writes.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Release);
}

impl LocalCounters {
    fn totals(&self) -> Totals {
        Totals {
            hits: self.hits.load(Ordering::Acquire),
            returned: self.returned.load(Ordering::Acquire),
            discarded: self.discarded.load(Ordering::Acquire),
        }
    }

    /// Buffers parked now, and their bytes. What left is loaded first: every buffer that left
    /// entered before, in the owner's order, and that store is then visible.
    fn parked(&self) -> (u64, u64) {
        let out = self
            .hits
            .load(Ordering::Acquire)
            .wrapping_add(self.gone.load(Ordering::Acquire));
        let out_bytes = self
            .hit_bytes
            .load(Ordering::Acquire)
            .wrapping_add(self.gone_bytes.load(Ordering::Acquire));
        (
            self.returned.load(Ordering::Acquire).wrapping_sub(out),
            self.returned_bytes
                .load(Ordering::Acquire)
                .wrapping_sub(out_bytes),
        )
    }

    /// One buffer of `bytes` parked.
    #[inline]
    fn returned(&self, bytes: u64) {
        bump(&self.returned, 1);
        bump(&self.returned_bytes, bytes);
    }

    /// One buffer of `bytes` taken out as a hit.
    #[inline]
    fn hit(&self, bytes: u64) {
        bump(&self.hits, 1);
        bump(&self.hit_bytes, bytes);
    }

    /// One buffer of `bytes` taken out otherwise (`discarded`: found destroyed or mapped).
    fn gone(&self, bytes: u64, discarded: bool) {
        bump(&self.gone, 1);
        bump(&self.gone_bytes, bytes);
        if discarded {
            bump(&self.discarded, 1);
        }
    }
}

struct PoolInner<S: Source> {
    source: S,
    /// Process-unique, to find this pool's thread caches.
    id: u64,
    max_per_class: usize,
    shared: Mutex<Shared<S::Item>>,
    /// The latest completed submission seen (refreshed by polling when needed).
    completed: AtomicU64,
    /// Bumped by [`EPOCH`] at each `clear`: thread caches of an older epoch drop what they
    /// park. Bit [`CLOSED`] is set when the last [`Pool`] handle goes.
    epoch: AtomicU64,
    misses: Counter,
    busy_skips: Counter,
}

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// [`PoolInner::epoch`]'s bit for a closed pool.
const CLOSED: u64 = 1;
/// One `clear` in [`PoolInner::epoch`].
const EPOCH: u64 = 2;

/// A short list whose first element is kept in place: a thread cache's lookups (one pool,
/// one slot, the common case) then follow no pointer to a heap buffer. Order is not kept.
struct Few<T> {
    head: Option<T>,
    tail: Vec<T>,
}

impl<T> Default for Few<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Few<T> {
    const fn new() -> Self {
        Self {
            head: None,
            tail: Vec::new(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.head.iter().chain(&self.tail)
    }

    /// The index of the first element matching `f`.
    #[inline]
    fn position(&self, mut f: impl FnMut(&T) -> bool) -> Option<usize> {
        match &self.head {
            Some(h) if f(h) => Some(0),
            Some(_) => self.tail.iter().position(f).map(|i| i + 1),
            None => None,
        }
    }

    #[inline]
    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        match i {
            0 => self.head.as_mut(),
            _ => self.tail.get_mut(i - 1),
        }
    }

    /// The first element matching `f`.
    #[inline]
    fn find_mut(&mut self, f: impl FnMut(&T) -> bool) -> Option<&mut T> {
        let i = self.position(f)?;
        self.get_mut(i)
    }

    /// Adds `v`; its index.
    fn push(&mut self, v: T) -> usize {
        if self.head.is_none() {
            self.head = Some(v);
            0
        } else {
            self.tail.push(v);
            self.tail.len()
        }
    }

    /// Removes and returns element `i` (the last one takes its place).
    fn swap_remove(&mut self, i: usize) -> Option<T> {
        if i == 0 {
            let head = self.head.take();
            self.head = self.tail.pop();
            head
        } else {
            (i - 1 < self.tail.len()).then(|| self.tail.swap_remove(i - 1))
        }
    }

    /// Keeps the elements matching `f`.
    fn retain(&mut self, mut f: impl FnMut(&T) -> bool) {
        self.tail.retain(&mut f);
        if self.head.as_ref().is_some_and(|h| !f(h)) {
            self.head = self.tail.pop();
        }
    }
}

/// One thread's cache for one pool: at most one parked buffer per slot.
struct LocalCache<S: Source> {
    pool: Weak<PoolInner<S>>,
    epoch: u64,
    slots: Few<LocalSlot<S>>,
    counters: Arc<LocalCounters>,
}

/// A buffer with the reference to its pool that its loan held (see the module doc).
type Held<S> = (<S as Source>::Item, Arc<PoolInner<S>>);

/// A thread cache's place in a shared slot (it holds one of the slot's reservations).
struct LocalSlot<S: Source> {
    slot: usize,
    exp: u32,
    /// [`slot_key`] of the slot's class, usage and location.
    key: u64,
    parked: Option<Held<S>>,
}

/// A slot's class exponent, usage bits and location in one word (compared in one go on the
/// thread cache's hit path).
#[inline]
fn slot_key(exp: u32, usage: u32, location: MemoryLocation) -> u64 {
    u64::from(exp) | u64::from(usage) << 8 | (location as u64) << 40
}

impl<S: Source> LocalCache<S> {
    /// Gives back the reservations and drops the parked buffers (the epoch changed, or the
    /// cache goes away).
    fn release_all(&mut self, pool: &PoolInner<S>, fold_counters: bool) {
        let slots = core::mem::take(&mut self.slots);
        {
            let mut sh = lock(&pool.shared);
            for ls in slots.iter() {
                let s = &mut sh.slots[ls.slot];
                s.reserved = s.reserved.saturating_sub(1);
            }
            if fold_counters {
                sh.totals = sh.totals.add(self.counters.totals());
                sh.threads.retain(|c| !Arc::ptr_eq(c, &self.counters));
            }
        }
        for ls in slots.iter() {
            if ls.parked.is_some() {
                self.counters.gone(1u64 << ls.exp, false);
            }
        }
        // The parked buffers are dropped here, outside the lock.
        drop(slots);
    }

    /// Drops everything if the pool was cleared since this cache last looked (`epoch` is the
    /// pool's, just read).
    #[cold]
    #[inline(never)]
    fn sync_epoch(&mut self, pool: &PoolInner<S>, epoch: u64) {
        if epoch != self.epoch {
            self.release_all(pool, false);
            self.epoch = epoch;
        }
    }
}

impl<S: Source> Drop for LocalCache<S> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            self.release_all(&pool, true);
        }
    }
}

impl<S: Source> LocalCache<S> {
    /// Whether the pool still exists and is open.
    fn alive(&self) -> bool {
        self.pool
            .upgrade()
            .is_some_and(|p| p.epoch.load(Ordering::Acquire) & CLOSED == 0)
    }
}

/// Machine words a thread cache takes in place (in the thread-local list).
const CACHE_WORDS: usize = 12;

/// One pool's cache in the thread-local list (any backend), kept in place: an
/// [`InlineAny`], whose downcast is an inline comparison (through `Box<dyn Any>` it was a call
/// through the vtable on every acquire and release, about a tenth of their time, and a
/// pointer to follow).
struct LocalEntry {
    pool: u64,
    cache: InlineAny<CACHE_WORDS>,
    /// Whether the cache's pool still exists and is open (the cache's type's check).
    alive: fn(&InlineAny<CACHE_WORDS>) -> bool,
}

thread_local! {
    static LOCAL: RefCell<Few<LocalEntry>> = const { RefCell::new(Few::new()) };
}

/// Runs `f` on this thread's cache for `pool` (created if missing), after dropping what a
/// `clear` made stale. `None` when the pool is closed, or thread-local storage is unavailable
/// (the thread is exiting) or in use further up the stack: the caller then uses the shared
/// tier.
#[inline]
fn with_local<S: Source, R>(
    pool: &Arc<PoolInner<S>>,
    f: impl FnOnce(&mut LocalCache<S>) -> R,
) -> Option<R> {
    LOCAL
        .try_with(|local| {
            let mut local = local.try_borrow_mut().ok()?;
            Some(f(cache_for(&mut local, pool)?))
        })
        .ok()
        .flatten()
}

/// This thread's cache for `pool` in `local` (created if missing), after dropping what a
/// `clear` made stale; `None` when the pool is closed. The cache borrows `local` only, not
/// `pool`. The hit (the pool's cache exists, same epoch) is inlined; the rest is not.
#[inline]
fn cache_for<'l, S: Source>(
    local: &'l mut Few<LocalEntry>,
    pool: &Arc<PoolInner<S>>,
) -> Option<&'l mut LocalCache<S>> {
    // A cache's epoch never has `CLOSED` set (none is made or synced once the pool is
    // closed), so a cache of the pool's epoch is of an open pool.
    let epoch = pool.epoch.load(Ordering::Acquire);
    let i = match local.position(|e| e.pool == pool.id) {
        Some(i) => i,
        None if epoch & CLOSED != 0 => return None,
        None => add_cache(local, pool, epoch),
    };
    let cache = local.get_mut(i)?.cache.downcast_mut::<LocalCache<S>>()?;
    if cache.epoch != epoch {
        if epoch & CLOSED != 0 {
            return None;
        }
        cache.sync_epoch(pool, epoch);
    }
    Some(cache)
}

/// Adds this thread's cache for `pool` (at `epoch`) to `local`; its index.
#[cold]
#[inline(never)]
fn add_cache<S: Source>(
    local: &mut Few<LocalEntry>,
    pool: &Arc<PoolInner<S>>,
    epoch: u64,
) -> usize {
    // A cache of items of one pointer (gantry's buffers) is kept in place; larger items (the
    // tests') may be boxed.
    const {
        assert!(
            size_of::<S::Item>() > size_of::<usize>()
                || InlineAny::<CACHE_WORDS>::fits::<LocalCache<S>>(),
            "a thread cache no longer fits in place: raise CACHE_WORDS"
        );
    };
    // Caches of pools that are gone or closed hold nothing the GPU uses, but may park
    // buffers: drop them now.
    local.retain(|e| (e.alive)(&e.cache));
    let counters = Arc::new(LocalCounters::default());
    lock(&pool.shared).threads.push(Arc::clone(&counters));
    local.push(LocalEntry {
        pool: pool.id,
        cache: InlineAny::new(LocalCache::<S> {
            pool: Arc::downgrade(pool),
            epoch,
            slots: Few::new(),
            counters,
        }),
        alive: |b| {
            b.downcast_ref::<LocalCache<S>>()
                .is_some_and(LocalCache::alive)
        },
    })
}

/// Parks `held` (a buffer of `slot` with its pool reference) in this thread's cache if the
/// cache has a free place there or can reserve one; leaves it in `*held` otherwise. The pool
/// reference moves into the cache: no reference count changes.
#[inline]
fn park<S: Source>(held: &mut Option<Held<S>>, slot: usize, exp: u32) {
    // Fails (leaving `held`) when thread-local storage is gone or busy.
    let _ = LOCAL.try_with(|local| {
        let Ok(mut local) = local.try_borrow_mut() else {
            return;
        };
        let Some((_, pool)) = held.as_ref() else {
            return;
        };
        let Some(cache) = cache_for(&mut local, pool) else {
            return;
        };
        if let Some(ls) = cache.slots.find_mut(|s| s.slot == slot) {
            if ls.parked.is_none() {
                ls.parked = held.take();
                cache.counters.returned(1u64 << exp);
            }
            return;
        }
        reserve_and_park(cache, held, slot, exp);
    });
}

/// The release's hit, small enough to inline: parks `held` in the first place of this
/// thread's first cache when that cache is the pool's, of its epoch, and that place is of
/// `slot` and empty; `false` (leaving `held`) otherwise, for [`park`] to handle.
#[inline]
fn park_head<S: Source>(held: &mut Option<Held<S>>, slot: usize, exp: u32) -> bool {
    // Written out, not shared with `take_head` through a helper taking a closure: built that
    // way, `held.take()` loaded the loan's two words as one 16-byte value right after the
    // acquire had stored them as two 8-byte halves, which defeats store-to-load forwarding
    // (lavapipe 4.7 -> 7.1 ns an acquire and release). Check the widths in `perf annotate`
    // after changing either path.
    LOCAL
        .try_with(|local| {
            let Ok(mut local) = local.try_borrow_mut() else {
                return false;
            };
            let Some((_, pool)) = held.as_ref() else {
                return false;
            };
            // Of the pool's epoch: open (see `cache_for`).
            let epoch = pool.epoch.load(Ordering::Acquire);
            let Some(entry) = local.head.as_mut().filter(|e| e.pool == pool.id) else {
                return false;
            };
            let Some(cache) = entry
                .cache
                .downcast_mut::<LocalCache<S>>()
                .filter(|c| c.epoch == epoch)
            else {
                return false;
            };
            let Some(ls) = cache
                .slots
                .head
                .as_mut()
                .filter(|ls| ls.slot == slot && ls.parked.is_none())
            else {
                return false;
            };
            ls.parked = held.take();
            cache.counters.returned(1u64 << exp);
            true
        })
        .unwrap_or(false)
}

/// Parks `held` in a new place of `cache` in `slot`, if the slot's bound allows reserving
/// one (the first return of a slot on this thread).
#[cold]
#[inline(never)]
fn reserve_and_park<S: Source>(
    cache: &mut LocalCache<S>,
    held: &mut Option<Held<S>>,
    slot: usize,
    exp: u32,
) {
    let key = {
        let Some((_, pool)) = held.as_ref() else {
            return;
        };
        let mut sh = lock(&pool.shared);
        let s = &mut sh.slots[slot];
        if s.list.len() + s.reserved >= s.cap {
            return;
        }
        s.reserved += 1;
        (s.usage, s.location)
    };
    cache.slots.push(LocalSlot {
        slot,
        exp,
        key: slot_key(exp, key.0, key.1),
        parked: held.take(),
    });
    cache.counters.returned(1u64 << exp);
}

/// What the thread cache found for an acquire.
enum LocalTake<S: Source> {
    /// A buffer ready for reuse (with its pool reference), and its slot.
    Hit(Held<S>, usize),
    /// A parked buffer the GPU may still use.
    Busy,
    /// Nothing parked.
    Empty,
}

impl<S: Source> PoolInner<S> {
    #[inline]
    fn completed(&self) -> SubmissionIndex {
        SubmissionIndex(self.completed.load(Ordering::Acquire))
    }

    /// Polls the device and remembers what completed.
    fn refresh(&self) -> Result<SubmissionIndex> {
        let now = self.source.poll()?;
        let prev = self.completed.fetch_max(now.0, Ordering::AcqRel);
        Ok(SubmissionIndex(prev.max(now.0)))
    }

    /// Takes this thread's parked buffer of the slot if the GPU is done with it by
    /// `completed` (no polling here: a busy buffer makes the caller poll and ask again).
    #[inline]
    fn take_local(
        cache: &mut LocalCache<S>,
        exp: u32,
        usage: u32,
        location: MemoryLocation,
        completed: SubmissionIndex,
    ) -> LocalTake<S> {
        let key = slot_key(exp, usage, location);
        let Some(ls) = cache.slots.find_mut(|s| s.key == key) else {
            return LocalTake::Empty;
        };
        let ready = match ls.parked.as_ref() {
            Some((item, _)) => S::reusable_after(item),
            None => return LocalTake::Empty,
        };
        if ready.is_some_and(|last| last > completed) {
            return LocalTake::Busy;
        }
        let Some(held) = ls.parked.take() else {
            return LocalTake::Empty;
        };
        if ready.is_some() {
            cache.counters.hit(1u64 << exp);
            LocalTake::Hit(held, ls.slot)
        } else {
            // Destroyed or mapped while on loan: never handed out again.
            cache.counters.gone(1u64 << exp, true);
            drop(held);
            LocalTake::Empty
        }
    }

    /// The shared tier's acquire: a ready buffer of the slot, or `None` (with the slot id).
    fn take_shared(
        &self,
        exp: u32,
        usage: u32,
        location: MemoryLocation,
        refreshed: &mut bool,
        busy: &mut bool,
    ) -> Result<(Option<S::Item>, usize)> {
        loop {
            let completed = self.completed();
            let mut sh = lock(&self.shared);
            let slot = sh.slot(exp, usage, location, self.max_per_class);
            let list = &mut sh.slots[slot].list;
            // Drop buffers destroyed or mapped while on loan, take the first idle one;
            // `reusable_after` (one lock) is asked once per buffer looked at.
            let mut found = None;
            let mut dead = Vec::new();
            let mut any_busy = false;
            let mut i = 0;
            while i < list.len() {
                match S::reusable_after(&list[i]) {
                    None => dead.push(list.swap_remove(i)),
                    Some(last) if last <= completed => {
                        found = Some(list.swap_remove(i));
                        break;
                    }
                    Some(_) => {
                        any_busy = true;
                        i += 1;
                    }
                }
            }
            sh.totals.discarded += dead.len() as u64;
            if found.is_some() {
                sh.totals.hits += 1;
            }
            drop(sh);
            drop(dead);
            if found.is_some() {
                return Ok((found, slot));
            }
            if any_busy && !*refreshed {
                *refreshed = true;
                self.refresh()?;
                continue;
            }
            *busy |= any_busy;
            return Ok((None, slot));
        }
    }

    /// The shared tier's release: into the slot's list if the bound allows and the pool is
    /// open, else dropped.
    #[inline(never)]
    fn put_shared(&self, slot: usize, item: S::Item) {
        let mut sh = lock(&self.shared);
        // Read under the lock: `close` sets the bit under it before emptying the lists.
        let open = self.epoch.load(Ordering::Acquire) & CLOSED == 0;
        let s = &mut sh.slots[slot];
        if open && s.list.len() + s.reserved < s.cap {
            s.list.push(item);
            sh.totals.returned += 1;
        } else {
            sh.totals.discarded += 1;
            drop(sh);
            // The buffer is freed once the GPU is done with it (gantry-core's deferral).
            drop(item);
        }
    }
}

impl<S: Source> Drop for PoolInner<S> {
    fn drop(&mut self) {
        // This thread's cache for this pool goes now; other threads drop theirs when they
        // next use a pool (or exit).
        drop_local_cache(self.id);
    }
}

/// Drops this thread's cache of pool `id`, if any (outside the thread-local's borrow: its
/// parked buffers and their pool references may take the pool with them).
fn drop_local_cache(id: u64) {
    let mine = LOCAL
        .try_with(|local| {
            let mut local = local.try_borrow_mut().ok()?;
            let i = local.position(|e| e.pool == id)?;
            Some(local.swap_remove(i))
        })
        .ok()
        .flatten();
    drop(mine);
}

/// The fast path, inlined into the caller: a ready buffer parked in this thread's cache.
/// The loan is built once, after the paths join, from the buffer and its slot: built in
/// each path and moved at the join, its fields were stored in one width and reloaded in
/// another, which defeats store-to-load forwarding (about a third of an acquire's time).
#[inline]
fn acquire<S: Source>(
    inner: &Arc<PoolInner<S>>,
    size: u64,
    usage: BufferUsage,
    location: MemoryLocation,
) -> Result<Loan<S>> {
    let Some(exp) = class_exp(size) else {
        return Err(size_error(inner, size));
    };
    let key = slot_key(exp, usage.bits(), location);
    let (held, slot) = match take_head(inner, key, exp) {
        Some(hit) => hit,
        None => acquire_other(inner, exp, usage, location)?,
    };
    Ok(Loan {
        held: Some(held),
        slot,
        size,
        exp,
    })
}

/// The acquire's hit, small enough to inline: the buffer parked in the first place of this
/// thread's first cache, when that cache is the pool's, of its epoch, that place is of the
/// slot `key`, and the buffer is ready by the cached completed index; with its slot.
/// `None` (taking nothing) otherwise, for [`acquire_other`].
#[inline]
fn take_head<S: Source>(inner: &Arc<PoolInner<S>>, key: u64, exp: u32) -> Option<(Held<S>, usize)> {
    LOCAL
        .try_with(|local| {
            let mut local = local.try_borrow_mut().ok()?;
            // Of the pool's epoch: open (see `cache_for`).
            let epoch = inner.epoch.load(Ordering::Acquire);
            let entry = local.head.as_mut().filter(|e| e.pool == inner.id)?;
            let cache = entry
                .cache
                .downcast_mut::<LocalCache<S>>()
                .filter(|c| c.epoch == epoch)?;
            let ls = cache.slots.head.as_mut().filter(|ls| ls.key == key)?;
            let (item, _) = ls.parked.as_ref()?;
            // Destroyed or mapped (`None`), or busy: `acquire_other` sorts it out.
            if S::reusable_after(item)? > inner.completed() {
                return None;
            }
            let held = ls.parked.take()?;
            cache.counters.hit(1u64 << exp);
            Some((held, ls.slot))
        })
        .ok()
        .flatten()
}

/// The acquire's other cases: another cache or slot of this thread's, a busy or dead parked
/// buffer, the shared tier, a new buffer.
#[inline(never)]
fn acquire_other<S: Source>(
    inner: &Arc<PoolInner<S>>,
    exp: u32,
    usage: BufferUsage,
    location: MemoryLocation,
) -> Result<(Held<S>, usize)> {
    let completed = inner.completed();
    match take_local(inner, exp, usage, location, completed) {
        Some(LocalTake::Hit(held, slot)) => Ok((held, slot)),
        Some(LocalTake::Busy) => acquire_polled(inner, exp, usage, location),
        Some(LocalTake::Empty) | None => acquire_shared(inner, exp, usage, location, false, false),
    }
}

/// [`PoolInner::take_local`] on this thread's cache; `None` when there is none to use.
#[inline]
fn take_local<S: Source>(
    inner: &Arc<PoolInner<S>>,
    exp: u32,
    usage: BufferUsage,
    location: MemoryLocation,
    completed: SubmissionIndex,
) -> Option<LocalTake<S>> {
    let bits = usage.bits();
    with_local(inner, |cache| {
        PoolInner::take_local(cache, exp, bits, location, completed)
    })
}

/// The error for a size with no class (0, or a power of two over `u64`).
#[cold]
fn size_error<S: Source>(inner: &PoolInner<S>, size: u64) -> crate::Error {
    if size == 0 {
        gantry_core::Error::ZeroSize.into()
    } else {
        gantry_core::Error::SizeTooLarge {
            size,
            max: inner.source.max_size(),
        }
        .into()
    }
}

/// This thread's parked buffer was busy by the cached completed index: poll, look again,
/// then fall back to the shared tier.
#[inline(never)]
fn acquire_polled<S: Source>(
    inner: &Arc<PoolInner<S>>,
    exp: u32,
    usage: BufferUsage,
    location: MemoryLocation,
) -> Result<(Held<S>, usize)> {
    let completed = inner.refresh()?;
    let busy = match take_local(inner, exp, usage, location, completed) {
        Some(LocalTake::Hit(held, slot)) => return Ok((held, slot)),
        Some(LocalTake::Busy) => true,
        Some(LocalTake::Empty) | None => false,
    };
    acquire_shared(inner, exp, usage, location, true, busy)
}

/// The slow path: the shared lists, else a new buffer (of size class `exp`).
#[inline(never)]
fn acquire_shared<S: Source>(
    inner: &Arc<PoolInner<S>>,
    exp: u32,
    usage: BufferUsage,
    location: MemoryLocation,
    mut refreshed: bool,
    mut busy: bool,
) -> Result<(Held<S>, usize)> {
    let bits = usage.bits();
    let (found, slot) = inner.take_shared(exp, bits, location, &mut refreshed, &mut busy)?;
    if let Some(item) = found {
        return Ok(((item, Arc::clone(inner)), slot));
    }
    if busy {
        inner.busy_skips.inc();
    }
    inner.misses.inc();
    let item = inner.source.create(1u64 << exp, usage, location)?;
    Ok(((item, Arc::clone(inner)), slot))
}

/// A buffer of a pool on loan, with a reference to the pool; it goes back when dropped.
struct Loan<S: Source> {
    /// Taken out only by `drop`.
    held: Option<Held<S>>,
    slot: usize,
    /// The size asked for (its class is the buffer's size).
    size: u64,
    /// The size class exponent of `size`.
    exp: u32,
}

impl<S: Source> Loan<S> {
    fn item(&self) -> Option<&S::Item> {
        self.held.as_ref().map(|(item, _)| item)
    }
}

impl<S: Source> Loan<S> {
    /// The release's other cases: another cache or slot of this thread's, a first return,
    /// the shared tier.
    #[inline(never)]
    fn release_slow(&mut self) {
        park(&mut self.held, self.slot, self.exp);
        // Destroyed or mapped buffers are dropped at the next acquire that looks at them.
        if let Some((item, pool)) = self.held.take() {
            pool.put_shared(self.slot, item);
        }
    }
}

impl<S: Source> Drop for Loan<S> {
    #[inline]
    fn drop(&mut self) {
        // Moves the buffer straight from the loan into this thread's cache.
        if !park_head(&mut self.held, self.slot, self.exp) {
            self.release_slow();
        }
    }
}

/// What the user holds of a pool (through [`BufferPool`]): when the last handle goes, the pool
/// closes (see the module doc).
struct Pool<S: Source> {
    inner: Arc<PoolInner<S>>,
}

impl<S: Source> core::ops::Deref for Pool<S> {
    type Target = Arc<PoolInner<S>>;
    fn deref(&self) -> &Arc<PoolInner<S>> {
        &self.inner
    }
}

impl<S: Source> Drop for Pool<S> {
    fn drop(&mut self) {
        close(&self.inner);
    }
}

/// Closes the pool: no more parking; the free buffers of the shared lists and of this
/// thread's cache are dropped now (other threads' at their next use of a pool, or exit).
fn close<S: Source>(inner: &Arc<PoolInner<S>>) {
    drop(take_lists(inner, true));
    drop_local_cache(inner.id);
}

/// Empties the shared lists (the caller drops their buffers, outside the lock) and, under
/// the lock, sets [`CLOSED`] (`close`) or starts a new epoch (a clear).
fn take_lists<S: Source>(inner: &PoolInner<S>, close: bool) -> Vec<Vec<S::Item>> {
    let mut sh = lock(&inner.shared);
    if close {
        inner.epoch.fetch_or(CLOSED, Ordering::AcqRel);
    } else {
        inner.epoch.fetch_add(EPOCH, Ordering::AcqRel);
    }
    sh.slots
        .iter_mut()
        .map(|s| core::mem::take(&mut s.list))
        .collect()
}

fn new_pool<S: Source>(source: S, max_per_class: usize) -> Arc<Pool<S>> {
    Arc::new(Pool {
        inner: new_inner(source, max_per_class),
    })
}

fn new_inner<S: Source>(source: S, max_per_class: usize) -> Arc<PoolInner<S>> {
    Arc::new(PoolInner {
        source,
        id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
        max_per_class,
        shared: Mutex::new(Shared {
            classes: (0..CLASSES).map(|_| Vec::new()).collect(),
            slots: Vec::new(),
            totals: Totals::default(),
            base: Totals::default(),
            threads: Vec::new(),
        }),
        completed: AtomicU64::new(0),
        epoch: AtomicU64::new(0),
        misses: Counter::new(),
        busy_skips: Counter::new(),
    })
}

/// Free buffers and their bytes, over both tiers.
fn free_counts<S: Source>(inner: &PoolInner<S>) -> (u64, u64) {
    let sh = lock(&inner.shared);
    let (mut n, mut bytes) = (0u64, 0u64);
    for s in &sh.slots {
        n += s.list.len() as u64;
        bytes += (s.list.len() as u64) << s.exp;
    }
    for c in &sh.threads {
        let (parked, parked_bytes) = c.parked();
        n = n.wrapping_add(parked);
        bytes = bytes.wrapping_add(parked_bytes);
    }
    (n, bytes)
}

fn clear<S: Source>(inner: &Arc<PoolInner<S>>) {
    drop(take_lists(inner, false));
    // This thread's cache now; other threads' caches at their next use of the pool.
    with_local(inner, |_| ());
}

/// A pool of buffers in power-of-two size classes (at least 256 bytes), per usage and
/// location. A buffer returned to the pool is handed out again only once every submission
/// that used it has completed (as gantry-core tracks them), and only while it is alive and
/// unmapped, so nothing the GPU still reads or writes is reused early. Cheap to clone.
///
/// Each (class, usage, location) slot keeps at most `max_per_class` free buffers and at most
/// 256 MiB (but always one), counting both the shared lists and the buffers parked in thread
/// caches: a thread that returns a buffer parks it in its own cache (one per slot) when the
/// bound allows, so its next acquire of that slot takes no lock. A thread's cache holds its
/// place in the slot while the buffer is on loan; it gives it back when the thread exits,
/// when the pool is cleared (at that thread's next use of the pool) or dropped (at that
/// thread's next use of any pool). So after [`BufferPool::clear`], buffers parked by other
/// threads stay counted in [`BufferPool::free_buffers`] until those threads next use the pool.
pub struct BufferPool<B: Backend> {
    inner: Arc<Pool<Device<B>>>,
}

impl<B: Backend> Clone for BufferPool<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: Backend> core::fmt::Debug for BufferPool<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BufferPool")
            .field("max_per_class", &self.inner.max_per_class)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> BufferPool<B> {
    /// A pool keeping at most `max_per_class` free buffers per slot (size class, usage and
    /// location).
    #[must_use]
    pub fn new(device: Device<B>, max_per_class: usize) -> Self {
        Self {
            inner: new_pool(device, max_per_class),
        }
    }

    /// A buffer of at least `size` bytes with `usage` at `location`: a free pooled buffer
    /// the GPU is done with, or a new one.
    ///
    /// # Errors
    /// As [`Device::create_buffer`]; [`gantry_core::Error::ZeroSize`];
    /// [`gantry_core::Error::SizeTooLarge`] when the size class overflows; device loss when
    /// polling for completed work.
    pub fn acquire(
        &self,
        size: u64,
        usage: BufferUsage,
        location: MemoryLocation,
    ) -> Result<PooledBuffer<B>> {
        acquire(&self.inner, size, usage, location).map(|loan| PooledBuffer { loan })
    }

    /// Records that `completed` has completed (the manager calls this when it polls), so
    /// acquiring need not poll.
    pub fn note_completed(&self, completed: SubmissionIndex) {
        self.inner
            .completed
            .fetch_max(completed.0, Ordering::AcqRel);
    }

    /// Free buffers held now, in the shared lists and in thread caches.
    #[must_use]
    pub fn free_buffers(&self) -> usize {
        usize::try_from(free_counts(&self.inner).0).unwrap_or(usize::MAX)
    }

    /// Drops every free buffer (their memory is freed once the GPU is done with them); those
    /// parked in other threads' caches go at those threads' next use of the pool.
    pub fn clear(&self) {
        clear(&self.inner);
    }
}

fn snapshot<S: Source>(inner: &PoolInner<S>) -> ProviderSnapshot {
    let (n, bytes) = free_counts(inner);
    let t = lock(&inner.shared).totals();
    ProviderSnapshot::new("pool")
        .counter("hits", t.hits, Unit::Count)
        .counter("misses", inner.misses.get(), Unit::Count)
        .counter("busy_skips", inner.busy_skips.get(), Unit::Count)
        .counter("returned", t.returned, Unit::Count)
        .counter("discarded", t.discarded, Unit::Count)
        .counter("free_buffers", n, Unit::Count)
        .counter("free_bytes", bytes, Unit::Bytes)
}

fn reset<S: Source>(inner: &PoolInner<S>) {
    {
        let mut sh = lock(&inner.shared);
        sh.totals = Totals::default();
        sh.base = sh
            .threads
            .iter()
            .fold(Totals::default(), |t, c| t.add(c.totals()));
    }
    inner.misses.reset();
    inner.busy_skips.reset();
}

impl<B: Backend> StatisticsProvider for BufferPool<B> {
    fn name(&self) -> &str {
        "pool"
    }
    fn snapshot(&self) -> ProviderSnapshot {
        snapshot(&self.inner)
    }
    fn reset(&self) {
        reset(&self.inner);
    }
}

/// A buffer on loan from a [`BufferPool`]; it goes back to the pool when dropped (and is
/// handed out again only after the GPU is done with it).
pub struct PooledBuffer<B: Backend> {
    loan: Loan<Device<B>>,
}

impl<B: Backend> core::fmt::Debug for PooledBuffer<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PooledBuffer")
            .field("buffer", &self.loan.item())
            .field("requested", &self.loan.size)
            .finish()
    }
}

impl<B: Backend> PooledBuffer<B> {
    /// The pooled buffer (its size is the size class, at least the size asked for).
    ///
    /// # Panics
    /// Never: the buffer is only taken out on drop.
    #[must_use]
    pub fn buffer(&self) -> &Buffer<B> {
        self.loan
            .item()
            .expect("a pooled buffer is only taken out when dropped")
    }
    /// The size asked for.
    #[must_use]
    pub fn requested_size(&self) -> u64 {
        self.loan.size
    }
}

impl<B: Backend> core::ops::Deref for PooledBuffer<B> {
    type Target = Buffer<B>;
    fn deref(&self) -> &Buffer<B> {
        self.buffer()
    }
}

#[cfg(test)]
mod tests;
