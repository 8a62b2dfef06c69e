//! The pool's reuse rule and bound, driven by a fake device whose completion the tests control.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use gantry_core::{BufferUsage, MemoryLocation, SubmissionIndex};
use gantry_stats::MetricValue;

use super::{Pool, PoolInner, Source, acquire, clear, free_counts, new_pool, reset, snapshot};
use crate::Result;

/// A device whose completed index the test sets; it counts what it creates.
#[derive(Default)]
struct Fake {
    completed: AtomicU64,
    created: AtomicU64,
    polls: AtomicU64,
}

/// A buffer: its last use and liveness are shared with the test, which plays the GPU and the
/// caller holding a clone of the buffer. One pointer, as gantry's buffers are, so the thread
/// caches are kept in place as they are for them.
struct Item(Arc<ItemState>);

struct ItemState {
    id: u64,
    size: u64,
    usage: BufferUsage,
    location: MemoryLocation,
    last_use: Arc<AtomicU64>,
    dead: Arc<AtomicBool>,
}

impl std::ops::Deref for Item {
    type Target = ItemState;
    fn deref(&self) -> &ItemState {
        &self.0
    }
}

impl Source for Fake {
    type Item = Item;
    fn create(&self, size: u64, usage: BufferUsage, location: MemoryLocation) -> Result<Item> {
        Ok(Item(Arc::new(ItemState {
            id: self.created.fetch_add(1, Ordering::SeqCst),
            size,
            usage,
            location,
            last_use: Arc::new(AtomicU64::new(0)),
            dead: Arc::new(AtomicBool::new(false)),
        })))
    }
    fn reusable_after(item: &Item) -> Option<SubmissionIndex> {
        (!item.dead.load(Ordering::SeqCst))
            .then(|| SubmissionIndex(item.last_use.load(Ordering::SeqCst)))
    }
    fn poll(&self) -> Result<SubmissionIndex> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        Ok(SubmissionIndex(self.completed.load(Ordering::SeqCst)))
    }
    fn max_size(&self) -> u64 {
        u64::MAX
    }
}

const U: BufferUsage = BufferUsage::TRANSFER_SRC.union(BufferUsage::TRANSFER_DST);
const L: MemoryLocation = MemoryLocation::DeviceLocal;

fn pool(max_per_class: usize) -> Arc<Pool<Fake>> {
    new_pool(Fake::default(), max_per_class)
}

fn item(l: &super::Loan<Fake>) -> &Item {
    l.item().unwrap()
}

fn counter(p: &PoolInner<Fake>, name: &str) -> u64 {
    match snapshot(p).get(name) {
        Some(MetricValue::Counter { value, .. }) => *value,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn size_classes() {
    use super::class_exp;
    assert_eq!(class_exp(0), None);
    assert_eq!(class_exp(1), Some(8));
    assert_eq!(class_exp(256), Some(8));
    assert_eq!(class_exp(257), Some(9));
    assert_eq!(class_exp(64 << 10), Some(16));
    assert_eq!(class_exp((64 << 10) + 1), Some(17));
    assert_eq!(class_exp(1 << 63), Some(63));
    assert_eq!(class_exp((1 << 63) + 1), None);
    let p = pool(4);
    assert!(acquire(&p, 0, U, L).is_err());
    assert!(acquire(&p, u64::MAX, U, L).is_err());
    assert_eq!(item(&acquire(&p, 300, U, L).unwrap()).size, 512);
}

#[test]
fn reuses_only_after_the_last_submission_completed() {
    let p = pool(4);
    let a = acquire(&p, 1000, U, L).unwrap();
    let (a_id, a_use) = (item(&a).id, Arc::clone(&item(&a).last_use));
    // Submitted work uses it (submission 5); nothing has completed.
    a_use.store(5, Ordering::SeqCst);
    drop(a); // parked in this thread's cache
    let b = acquire(&p, 1000, U, L).unwrap();
    assert_ne!(
        item(&b).id,
        a_id,
        "a buffer the GPU still uses was handed out"
    );
    assert_eq!(counter(&p, "busy_skips"), 1);
    // Submission 5 completes: the next acquire polls and reuses `a`.
    p.source.completed.store(5, Ordering::SeqCst);
    let c = acquire(&p, 1000, U, L).unwrap();
    assert_eq!(item(&c).id, a_id);
    // One poll per acquire that found its parked buffer busy by the cached index.
    assert_eq!(p.source.polls.load(Ordering::SeqCst), 2);
    drop((b, c));
    assert_eq!(p.source.created.load(Ordering::SeqCst), 2);
}

#[test]
fn use_after_return_through_a_clone_is_seen() {
    // The caller kept a clone of the buffer and submitted work with it after returning it:
    // the pool asks the buffer itself at every acquire, in both tiers.
    let p = pool(4);
    let a = acquire(&p, 4096, U, L).unwrap();
    let b = acquire(&p, 4096, U, L).unwrap();
    let (a_id, a_use) = (item(&a).id, Arc::clone(&item(&a).last_use));
    let (b_id, b_use) = (item(&b).id, Arc::clone(&item(&b).last_use));
    drop(a); // thread cache
    drop(b); // shared list
    a_use.store(7, Ordering::SeqCst);
    b_use.store(8, Ordering::SeqCst);
    p.source.completed.store(6, Ordering::SeqCst);
    let c = acquire(&p, 4096, U, L).unwrap();
    assert!(item(&c).id != a_id && item(&c).id != b_id);
    p.source.completed.store(7, Ordering::SeqCst);
    let d = acquire(&p, 4096, U, L).unwrap();
    assert_eq!(item(&d).id, a_id);
    let e = acquire(&p, 4096, U, L).unwrap();
    assert!(item(&e).id != b_id, "b's submission 8 has not completed");
}

#[test]
fn dead_buffers_are_never_handed_out() {
    let p = pool(4);
    let a = acquire(&p, 4096, U, L).unwrap();
    let b = acquire(&p, 4096, U, L).unwrap();
    let ids = [item(&a).id, item(&b).id];
    item(&a).dead.store(true, Ordering::SeqCst);
    item(&b).dead.store(true, Ordering::SeqCst);
    drop((a, b));
    let c = acquire(&p, 4096, U, L).unwrap();
    assert!(!ids.contains(&item(&c).id));
    assert_eq!(counter(&p, "discarded"), 2);
    assert_eq!(free_counts(&p).0, 0);
}

#[test]
fn the_cached_completed_index_saves_polls() {
    let p = pool(4);
    drop(acquire(&p, 4096, U, L).unwrap());
    for _ in 0..100 {
        drop(acquire(&p, 4096, U, L).unwrap());
    }
    assert_eq!(p.source.polls.load(Ordering::SeqCst), 0);
    assert_eq!(counter(&p, "hits"), 100);
    assert_eq!(counter(&p, "misses"), 1);
    assert_eq!(counter(&p, "returned"), 101);
}

#[test]
fn bound_holds_per_slot_across_tiers() {
    let p = pool(3);
    let loans: Vec<_> = (0..10).map(|_| acquire(&p, 4096, U, L).unwrap()).collect();
    drop(loans);
    assert_eq!(free_counts(&p).0, 3);
    assert_eq!(free_counts(&p).1, 3 * 4096);
    assert_eq!(counter(&p, "returned"), 3);
    assert_eq!(counter(&p, "discarded"), 7);
    // Other slots have their own bound.
    let other: Vec<_> = (0..5)
        .map(|_| acquire(&p, 4096, U, MemoryLocation::Upload).unwrap())
        .collect();
    drop(other);
    assert_eq!(free_counts(&p).0, 6);
    // 256 MiB per slot at most: one 256 MiB buffer.
    let big: Vec<_> = (0..3)
        .map(|_| acquire(&p, 256 << 20, U, L).unwrap())
        .collect();
    drop(big);
    assert_eq!(free_counts(&p).0, 7);
}

#[test]
fn bound_holds_with_threads_parking_at_once() {
    const THREADS: usize = 6;
    let p = pool(4);
    let parked = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (p, parked, done) = (Arc::clone(&p), Arc::clone(&parked), Arc::clone(&done));
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let loans: Vec<_> = (0..3).map(|_| acquire(&p, 4096, U, L).unwrap()).collect();
                    drop(loans);
                    assert!(free_counts(&p).0 <= 4);
                }
                parked.wait();
                done.wait();
            })
        })
        .collect();
    parked.wait();
    // Every thread is alive with its cache: free buffers in lists and caches together.
    assert!(free_counts(&p).0 <= 4, "{} free", free_counts(&p).0);
    let sh = super::lock(&p.shared);
    assert!(sh.slots.iter().all(|s| s.list.len() + s.reserved <= s.cap));
    drop(sh);
    done.wait();
    for h in handles {
        h.join().unwrap();
    }
    // The threads' caches are gone; their counts are kept.
    let sh = super::lock(&p.shared);
    assert!(sh.threads.is_empty());
    assert!(sh.slots.iter().all(|s| s.reserved == 0));
    drop(sh);
    let acquires = (THREADS * 50 * 3) as u64;
    assert_eq!(counter(&p, "hits") + counter(&p, "misses"), acquires);
    assert_eq!(counter(&p, "returned") + counter(&p, "discarded"), acquires);
    assert_eq!(counter(&p, "free_buffers"), free_counts(&p).0);
}

#[test]
fn buffers_cross_threads_and_stay_tracked() {
    let p = pool(4);
    let a = acquire(&p, 4096, U, L).unwrap();
    let a_use = Arc::clone(&item(&a).last_use);
    let a_id = item(&a).id;
    a_use.store(3, Ordering::SeqCst);
    // Returned on another thread, which parks it, then exits: the buffer goes with its cache.
    let p2 = Arc::clone(&p);
    std::thread::spawn(move || {
        drop(a);
        assert_eq!(free_counts(&p2).0, 1);
    })
    .join()
    .unwrap();
    assert_eq!(free_counts(&p).0, 0);
    let b = acquire(&p, 4096, U, L).unwrap();
    assert_ne!(item(&b).id, a_id);
    assert_eq!(counter(&p, "returned"), 1);
}

#[test]
fn clear_and_reset() {
    let p = pool(4);
    let loans: Vec<_> = (0..3).map(|_| acquire(&p, 4096, U, L).unwrap()).collect();
    drop(loans);
    assert_eq!(free_counts(&p).0, 3);
    clear(&p);
    assert_eq!(free_counts(&p).0, 0);
    assert!(super::lock(&p.shared).slots.iter().all(|s| s.reserved == 0));
    reset(&p);
    for name in ["hits", "misses", "returned", "discarded"] {
        assert_eq!(counter(&p, name), 0, "{name}");
    }
    drop(acquire(&p, 4096, U, L).unwrap());
    drop(acquire(&p, 4096, U, L).unwrap());
    assert_eq!(counter(&p, "hits"), 1);
    assert_eq!(counter(&p, "misses"), 1);
    assert_eq!(counter(&p, "returned"), 2);
}

#[test]
fn dropping_the_pool_frees_this_threads_cache() {
    let p = pool(4);
    let a = acquire(&p, 4096, U, L).unwrap();
    let dead = Arc::clone(&item(&a).dead);
    let weak = Arc::downgrade(&item(&a).dead);
    drop(a);
    drop(dead);
    assert_eq!(weak.strong_count(), 1, "parked");
    drop(p);
    assert_eq!(
        weak.strong_count(),
        0,
        "the parked buffer outlived its pool"
    );
}

#[test]
fn parked_buffers_carry_the_pool_reference() {
    let p = pool(4);
    let strong = || Arc::strong_count(&p.inner);
    assert_eq!(strong(), 1);
    let a = acquire(&p, 4096, U, L).unwrap();
    assert_eq!(strong(), 2, "the loan holds the pool");
    drop(a);
    assert_eq!(strong(), 2, "the parked buffer holds the loan's reference");
    for _ in 0..3 {
        let b = acquire(&p, 4096, U, L).unwrap();
        assert_eq!(counter(&p, "misses"), 1);
        assert_eq!(strong(), 2, "a hit takes the parked reference");
        drop(b);
        assert_eq!(strong(), 2);
    }
    clear(&p);
    drop(acquire(&p, 256, U, L).unwrap()); // this thread's cache notices the clear
    assert_eq!(strong(), 2, "only the 256-byte buffer is parked now");
    clear(&p);
    {
        let sh = super::lock(&p.shared);
        assert!(sh.slots.iter().all(|s| s.list.is_empty()));
    }
    super::with_local(&p, |_| ());
    assert_eq!(strong(), 1, "nothing parked, nothing on loan");
}

#[test]
fn loans_outliving_the_pool_are_dropped_on_return() {
    let p = pool(4);
    let a = acquire(&p, 4096, U, L).unwrap();
    let b = acquire(&p, 4096, U, L).unwrap();
    let weak_a = Arc::downgrade(&item(&a).dead);
    let weak_b = Arc::downgrade(&item(&b).dead);
    let inner = Arc::downgrade(&p.inner);
    drop(p);
    assert!(inner.upgrade().is_some(), "the loans keep the pool's state");
    drop(a);
    assert_eq!(weak_a.strong_count(), 0, "not parked in a closed pool");
    drop(b);
    assert_eq!(weak_b.strong_count(), 0, "not listed in a closed pool");
    assert!(
        inner.upgrade().is_none(),
        "the last loan took the pool's state with it"
    );
}

#[test]
fn closing_drops_other_threads_parked_buffers_at_their_next_pool() {
    let p = pool(4);
    let other = pool(4);
    let (p2, other2) = (Arc::clone(&p), Arc::clone(&other));
    let parked = Arc::new(Barrier::new(2));
    let closed = Arc::new(Barrier::new(2));
    let (parked2, closed2) = (Arc::clone(&parked), Arc::clone(&closed));
    let weak = std::thread::spawn(move || {
        let a = acquire(&p2, 4096, U, L).unwrap();
        let weak = Arc::downgrade(&item(&a).dead);
        drop(a);
        drop(p2);
        parked2.wait();
        closed2.wait();
        assert_eq!(weak.strong_count(), 1, "still parked here");
        // The first use of another pool on this thread drops caches of closed pools.
        drop(acquire(&other2, 4096, U, L).unwrap());
        weak
    });
    parked.wait();
    let inner = Arc::downgrade(&p.inner);
    drop(p);
    closed.wait();
    let weak = weak.join().unwrap();
    assert_eq!(weak.strong_count(), 0);
    assert!(inner.upgrade().is_none());
    drop(other);
}

/// The slots of the model test: (size asked, size class, usage, location).
const KEYS: [(u64, u64, BufferUsage, MemoryLocation); 4] = [
    (4096, 4096, U, L),
    (300, 512, U, L),
    (4096, 4096, BufferUsage::STORAGE, L),
    (4000, 4096, U, MemoryLocation::Upload),
];

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    /// Acquire from pool `pool` the slot `KEYS[key]`.
    Acquire { pool: usize, key: usize },
    /// Return the loan at this index (modulo the loans held).
    Release { loan: usize },
    /// The GPU uses the loan at this index in a submission `ahead` after the completed one.
    Use { loan: usize, ahead: u64 },
    /// The caller destroys (or maps) the buffer of the loan at this index.
    Kill { loan: usize },
    /// `n` more submissions complete.
    Complete { n: u64 },
    /// Clear pool `pool`.
    Clear { pool: usize },
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0..2usize, 0..KEYS.len()).prop_map(|(pool, key)| Op::Acquire { pool, key }),
        6 => any::<usize>().prop_map(|loan| Op::Release { loan }),
        3 => (any::<usize>(), 0..4u64).prop_map(|(loan, ahead)| Op::Use { loan, ahead }),
        1 => any::<usize>().prop_map(|loan| Op::Kill { loan }),
        2 => (0..3u64).prop_map(|n| Op::Complete { n }),
        1 => (0..2usize).prop_map(|pool| Op::Clear { pool }),
    ]
}

/// The model of one slot of one pool, for this (the only) thread.
#[derive(Clone, Default)]
struct ModelSlot {
    /// The shared list (order not modelled).
    list: Vec<u64>,
    /// This thread's cache has a place in the slot.
    reserved: bool,
    /// The buffer parked there.
    parked: Option<u64>,
}

/// The model of a pool.
struct ModelPool {
    cap: usize,
    slots: [ModelSlot; KEYS.len()],
    hits: u64,
    misses: u64,
    returned: u64,
}

#[test]
fn pools_match_a_model_of_both_tiers() {
    use proptest::prelude::*;
    // 256 cases (proptest's default; `PROPTEST_CASES` sets it, as under Miri).
    proptest!(|(ops in proptest::collection::vec(op(), 1..120))| {
        // Ids distinct across the two pools.
        let pools = [(0, 2), (1 << 32, 3)].map(|(first_id, cap)| {
            let fake = Fake {
                created: AtomicU64::new(first_id),
                ..Fake::default()
            };
            new_pool(fake, cap)
        });
        let mut model: Vec<ModelPool> = [2, 3]
            .map(|cap| ModelPool {
                cap,
                slots: Default::default(),
                hits: 0,
                misses: 0,
                returned: 0,
            })
            .into();
        // Every buffer made: (last use, dead), shared with the items.
        let mut items: std::collections::HashMap<u64, (Arc<AtomicU64>, Arc<AtomicBool>)> =
            std::collections::HashMap::new();
        let mut loans: Vec<(usize, usize, super::Loan<Fake>)> = Vec::new();
        let mut completed = 0u64;
        for op in ops {
            match op {
                Op::Acquire { pool: p, key: k } => {
                    let (size, class, usage, location) = KEYS[k];
                    let m = &mut model[p];
                    let ready = |id: &u64| {
                        let (last, dead) = &items[id];
                        !dead.load(Ordering::SeqCst) && last.load(Ordering::SeqCst) <= completed
                    };
                    let slot = &mut m.slots[k];
                    // This thread's parked buffer first: taken if ready, dropped if dead,
                    // kept if busy.
                    let mut expect = None;
                    if let Some(id) = slot.parked {
                        if ready(&id) {
                            expect = Some(id);
                            slot.parked = None;
                        } else if items[&id].1.load(Ordering::SeqCst) {
                            slot.parked = None;
                        }
                    }
                    let dead_listed = slot
                        .list
                        .iter()
                        .filter(|id| items[*id].1.load(Ordering::SeqCst))
                        .count();
                    let listed_ready: Vec<u64> = slot.list.iter().copied().filter(ready).collect();
                    let created = pools[p].source.created.load(Ordering::SeqCst);
                    let loan = acquire(&pools[p], size, usage, location).unwrap();
                    let it = item(&loan);
                    prop_assert_eq!((it.size, it.usage, it.location), (class, usage, location));
                    prop_assert!(!it.dead.load(Ordering::SeqCst), "a dead buffer handed out");
                    prop_assert!(
                        it.last_use.load(Ordering::SeqCst) <= completed,
                        "a busy buffer handed out"
                    );
                    prop_assert!(loans.iter().all(|(_, _, l)| item(l).id != it.id));
                    let id = it.id;
                    if let Some(e) = expect {
                        prop_assert_eq!(id, e, "the parked ready buffer comes first");
                        m.hits += 1;
                    } else if !listed_ready.is_empty() {
                        prop_assert!(listed_ready.contains(&id), "{} not a ready listed one", id);
                        slot.list.retain(|&x| x != id);
                        m.hits += 1;
                    } else {
                        prop_assert_eq!(id, created, "nothing ready: a new buffer");
                        m.misses += 1;
                        items.insert(id, (Arc::clone(&it.last_use), Arc::clone(&it.dead)));
                        // A full scan dropped every dead listed buffer.
                        prop_assert!(dead_listed == 0 || !slot.list.is_empty());
                        slot.list.retain(|x| !items[x].1.load(Ordering::SeqCst));
                    }
                    // Dead listed buffers the scan passed are dropped; which, the model does
                    // not say: it learns how many from the free count below.
                    let now_free = free_counts(&pools[p]).0;
                    let others: u64 = m
                        .slots
                        .iter()
                        .map(|s| (s.list.len() + usize::from(s.parked.is_some())) as u64)
                        .sum();
                    let dropped = others.checked_sub(now_free);
                    prop_assert!(dropped.is_some_and(|d| d as usize <= dead_listed));
                    let mut d = dropped.unwrap_or(0);
                    let slot = &mut m.slots[k];
                    slot.list.retain(|x| {
                        if d > 0 && items[x].1.load(Ordering::SeqCst) {
                            d -= 1;
                            false
                        } else {
                            true
                        }
                    });
                    loans.push((p, k, loan));
                }
                Op::Release { loan } if !loans.is_empty() => {
                    let (p, k, loan) = loans.swap_remove(loan % loans.len());
                    let id = item(&loan).id;
                    drop(loan);
                    let m = &mut model[p];
                    let cap = m.cap;
                    let slot = &mut m.slots[k];
                    if slot.reserved && slot.parked.is_none() {
                        slot.parked = Some(id);
                        m.returned += 1;
                    } else if !slot.reserved && slot.list.len() < cap {
                        slot.reserved = true;
                        slot.parked = Some(id);
                        m.returned += 1;
                    } else if slot.list.len() + usize::from(slot.reserved) < cap {
                        slot.list.push(id);
                        m.returned += 1;
                    }
                }
                Op::Use { loan, ahead } if !loans.is_empty() => {
                    let l = &loans[loan % loans.len()].2;
                    item(l).last_use.store(completed + ahead, Ordering::SeqCst);
                }
                Op::Kill { loan } if !loans.is_empty() => {
                    item(&loans[loan % loans.len()].2).dead.store(true, Ordering::SeqCst);
                }
                Op::Complete { n } => {
                    completed += n;
                    for p in &pools {
                        p.source.completed.store(completed, Ordering::SeqCst);
                    }
                }
                Op::Clear { pool: p } => {
                    clear(&pools[p]);
                    for s in &mut model[p].slots {
                        *s = ModelSlot::default();
                    }
                }
                Op::Release { .. } | Op::Use { .. } | Op::Kill { .. } => {}
            }
            for (p, m) in pools.iter().zip(&model) {
                let (n, bytes) = free_counts(p);
                let (mn, mbytes) = m.slots.iter().zip(KEYS).fold((0, 0), |(n, b), (s, key)| {
                    let k = (s.list.len() + usize::from(s.parked.is_some())) as u64;
                    (n + k, b + k * key.1)
                });
                prop_assert_eq!((n, bytes), (mn, mbytes), "free buffers and bytes");
                prop_assert_eq!(counter(p, "hits"), m.hits);
                prop_assert_eq!(counter(p, "misses"), m.misses);
                prop_assert_eq!(counter(p, "returned"), m.returned);
                let sh = super::lock(&p.shared);
                prop_assert!(sh.slots.iter().all(|s| s.list.len() + s.reserved <= s.cap));
            }
        }
    });
}
