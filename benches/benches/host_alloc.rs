//! Host allocation benchmarks: gantry's `Arena` against `bumpalo` (target P9: >= 1.0x for
//! 64-byte allocations), and the offset allocators' throughput (informational).
//!
//! Run: `cargo bench -p gantry-benches --bench host_alloc -- --warm-up-time 1 --measurement-time 3`
//!
//! Before the criterion groups, a paired run alternates the arena and bumpalo round by round
//! (10,000 allocations and a reset each) and prints both rates and their ratio: on a shared,
//! noisy machine, alternating keeps load changes from favouring one side.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
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

    // The same with fallible allocation on both sides, the `Result` matched at once as callers
    // do (the paired run also times it kept whole).
    group.bench_function("gantry_arena_try", |b| {
        let mut arena = Arena::new();
        b.iter(|| {
            for i in 0..N {
                if let Ok(r) = arena.try_alloc([i; 8]) {
                    black_box(r);
                }
            }
            arena.reset();
        });
    });
    group.bench_function("bumpalo_try", |b| {
        let mut bump = bumpalo::Bump::new();
        b.iter(|| {
            for i in 0..N {
                if let Ok(r) = bump.try_alloc([i; 8]) {
                    black_box(r);
                }
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

/// Alternates gantry's arena and bumpalo, round by round (10,000 allocations and a reset
/// each), and prints both rates and their ratio.
fn paired(
    label: &str,
    mut gantry_round: impl FnMut(&mut Arena),
    mut peer_round: impl FnMut(&mut bumpalo::Bump),
) {
    const ROUNDS: usize = 400;
    const WARM_UP: usize = 20;
    let mut arena = Arena::new();
    let mut bump = bumpalo::Bump::new();
    let mut gantry = Vec::with_capacity(ROUNDS);
    let mut peer = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS + WARM_UP {
        // The order alternates so neither side always goes first.
        let mut time_gantry = || {
            let start = Instant::now();
            gantry_round(&mut arena);
            start.elapsed()
        };
        let mut time_peer = || {
            let start = Instant::now();
            peer_round(&mut bump);
            start.elapsed()
        };
        let (a, b) = if round % 2 == 0 {
            let a = time_gantry();
            (a, time_peer())
        } else {
            let b = time_peer();
            (time_gantry(), b)
        };
        if round >= WARM_UP {
            gantry.push(a);
            peer.push(b);
        }
    }
    let rate = |d: Duration| N as f64 / d.as_secs_f64() / 1e6;
    let summary = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        (times[0], times[times.len() / 2])
    };
    let (g_min, g_med) = summary(&mut gantry);
    let (p_min, p_med) = summary(&mut peer);
    println!(
        "paired {label} ({ROUNDS} alternating rounds of {N}): gantry {:.0} M/s (best {:.0}), bumpalo {:.0} M/s (best {:.0}); ratio gantry/bumpalo: median {:.2}x, best {:.2}x",
        rate(g_med),
        rate(g_min),
        rate(p_med),
        rate(p_min),
        p_med.as_secs_f64() / g_med.as_secs_f64(),
        p_min.as_secs_f64() / g_min.as_secs_f64(),
    );
}

fn paired_arena_vs_bumpalo() {
    paired(
        "arena_64B alloc",
        |arena| {
            for i in 0..N {
                black_box(arena.alloc([i; 8]));
            }
            arena.reset();
        },
        |bump| {
            for i in 0..N {
                black_box(bump.alloc([i; 8]));
            }
            bump.reset();
        },
    );
    // The whole `Result` through `black_box`: gantry's carries a 40-byte error with the
    // request's values, bumpalo's a zero-sized one, and the compiler copies all 40 bytes.
    paired(
        "arena_64B try_alloc (Result kept)",
        |arena| {
            for i in 0..N {
                let _ = black_box(arena.try_alloc([i; 8]));
            }
            arena.reset();
        },
        |bump| {
            for i in 0..N {
                let _ = black_box(bump.try_alloc([i; 8]));
            }
            bump.reset();
        },
    );
    // As callers use it: the `Result` is matched at once.
    paired(
        "arena_64B try_alloc (Result matched)",
        |arena| {
            for i in 0..N {
                if let Ok(r) = arena.try_alloc([i; 8]) {
                    black_box(r);
                }
            }
            arena.reset();
        },
        |bump| {
            for i in 0..N {
                if let Ok(r) = bump.try_alloc([i; 8]) {
                    black_box(r);
                }
            }
            bump.reset();
        },
    );
}

criterion_group!(benches, arena_vs_bumpalo, offset_allocators);

fn main() {
    // `cargo test --benches` passes no `--bench`: keep that run short.
    if std::env::args().any(|a| a == "--bench") {
        paired_arena_vs_bumpalo();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
