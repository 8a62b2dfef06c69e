//! Property tests of the buffer pool: random get/drop sequences against an exact model of
//! how many buffers are idle (one thread), with the bound `idle <= max_buffers` checked
//! after every step, whatever the thread-cache size.
#![cfg(not(loom))]

use std::sync::Arc;

use gantry_host::{BufferPool, BufferStats, PoolConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Get,
    Drop(usize),
    Grow(usize),
    Detach(usize),
    DropAll,
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Get),
        4 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Grow),
        1 => any::<usize>().prop_map(Op::Detach),
        1 => Just(Op::DropAll),
        1 => Just(Op::Clear),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 3 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn idle_follows_model_and_bound_holds(
        max in 0usize..10,
        cache in prop::option::of(0usize..6),
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let stats = Arc::new(BufferStats::new());
        let mut cfg = PoolConfig::new(16)
            .with_max_buffers(max)
            .with_max_retained_capacity(64)
            .with_stats(Arc::clone(&stats));
        if let Some(c) = cache {
            cfg = cfg.with_thread_cache(c);
        }
        let pool = BufferPool::with_config(cfg);
        let mut held = Vec::new();
        let mut idle = 0usize;
        let (mut hits, mut misses) = (0u64, 0u64);
        let mut oversized = Vec::new(); // parallel to `held`
        for op in ops {
            match op {
                Op::Get => {
                    let b = pool.get();
                    prop_assert!(b.is_empty());
                    prop_assert!(b.capacity() >= 16);
                    if idle > 0 { idle -= 1; hits += 1 } else { misses += 1 }
                    held.push(b);
                    oversized.push(false);
                }
                Op::Drop(i) if !held.is_empty() => {
                    let i = i % held.len();
                    drop(held.swap_remove(i));
                    if !oversized.swap_remove(i) {
                        idle = (idle + 1).min(max);
                    }
                }
                Op::Grow(i) if !held.is_empty() => {
                    let i = i % held.len();
                    held[i].reserve(100);
                    oversized[i] = true;
                }
                Op::Detach(i) if !held.is_empty() => {
                    let i = i % held.len();
                    let v = held.swap_remove(i).into_inner();
                    oversized.swap_remove(i);
                    prop_assert!(v.capacity() >= 16);
                }
                Op::DropAll => {
                    for (b, big) in held.drain(..).zip(oversized.drain(..)) {
                        drop(b);
                        if !big {
                            idle = (idle + 1).min(max);
                        }
                    }
                }
                Op::Clear => {
                    pool.clear();
                    idle = 0;
                }
                _ => {}
            }
            prop_assert_eq!(pool.idle(), idle);
            prop_assert!(pool.idle() <= max);
            prop_assert_eq!((pool.hits(), pool.misses()), (hits, misses));
            let s = stats.snapshot();
            prop_assert_eq!(s.outstanding() as usize, idle + held.len());
        }
        drop(held);
        drop(pool);
        let s = stats.snapshot();
        prop_assert_eq!(s.live_bytes, 0);
        prop_assert_eq!(s.outstanding(), 0);
    }
}
