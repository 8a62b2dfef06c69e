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
/// caller holding a clone of the buffer.
struct Item {
    id: u64,
    size: u64,
    last_use: Arc<AtomicU64>,
    dead: Arc<AtomicBool>,
}

impl Source for Fake {
    type Item = Item;
    fn create(&self, size: u64, _: BufferUsage, _: MemoryLocation) -> Result<Item> {
        Ok(Item {
            id: self.created.fetch_add(1, Ordering::SeqCst),
            size,
            last_use: Arc::new(AtomicU64::new(0)),
            dead: Arc::new(AtomicBool::new(false)),
        })
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
