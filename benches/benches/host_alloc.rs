//! Host allocation benchmarks: gantry's `Arena` against `bumpalo` (target P9: >= 1.0x for
//! 64-byte allocations), and the offset allocators' throughput (informational).
//!
//! Run: `cargo bench -p gantry-benches --bench host_alloc -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gantry_host::Arena;
use gantry_host::alloc::{BumpAllocator, FreeListAllocator, RingAllocator};

/// Allocations per iteration: allocate this many, then reset.
const N: u64 = 10_000;

fn arena_vs_bumpalo(c: &mut Criterion) {
    let mut group = c.benchmark_group("arena_64B");
    group.throughput(Throughput::Elements(N));

    group.bench_function("gantry_arena", |b| {
        let mut arena = Arena::new();
        b.iter(|| {
            for i in 0..N {
                black_box(arena.alloc([i; 8]));
            }
            arena.reset();
        });
    });
    group.bench_function("bumpalo", |b| {
        let mut bump = bumpalo::Bump::new();
        b.iter(|| {
            for i in 0..N {
                black_box(bump.alloc([i; 8]));
            }
            bump.reset();
        });
    });

    // The same with fallible allocation on both sides.
    group.bench_function("gantry_arena_try", |b| {
        let mut arena = Arena::new();
        b.iter(|| {
            for i in 0..N {
                let _ = black_box(arena.try_alloc([i; 8]));
            }
            arena.reset();
        });
    });
    group.bench_function("bumpalo_try", |b| {
        let mut bump = bumpalo::Bump::new();
        b.iter(|| {
            for i in 0..N {
                let _ = black_box(bump.try_alloc([i; 8]));
            }
            bump.reset();
        });
    });
    group.finish();
}

fn offset_allocators(c: &mut Criterion) {
    const K: u64 = 1_000;
    let mut group = c.benchmark_group("offset_alloc_free_64B");
    group.throughput(Throughput::Elements(K));

    group.bench_function("ring_fifo", |b| {
        let mut ring = RingAllocator::new(K * 64 + 1000);
        let mut live = std::collections::VecDeque::with_capacity(K as usize);
        b.iter(|| {
            for _ in 0..K {
                live.push_back(ring.allocate(64, 16).unwrap());
            }
            while let Some(a) = live.pop_front() {
                ring.free(a).unwrap();
            }
        });
    });
    group.bench_function("bump_reset", |b| {
        let mut bump = BumpAllocator::new(K * 64);
        b.iter(|| {
            for _ in 0..K {
                let _ = black_box(bump.allocate(64, 16).unwrap());
            }
            bump.reset();
        });
    });
    group.bench_function("free_list_interleaved", |b| {
        let mut heap = FreeListAllocator::new(K * 64 * 2);
        let mut live = Vec::with_capacity(K as usize);
        b.iter(|| {
            for i in 0..K {
                live.push(heap.allocate(64 + (i % 4) * 16, 16).unwrap());
            }
            // Free every other one first, then the rest: exercises coalescing.
            let mut odd = Vec::with_capacity(live.len() / 2);
            for (i, a) in live.drain(..).enumerate() {
                if i % 2 == 0 {
                    heap.free(a).unwrap();
                } else {
                    odd.push(a);
                }
            }
            for a in odd {
                heap.free(a).unwrap();
            }
        });
    });
    group.finish();
}

criterion_group!(benches, arena_vs_bumpalo, offset_allocators);
criterion_main!(benches);
