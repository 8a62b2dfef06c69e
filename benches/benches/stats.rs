//! P12: recording one statistics event (target <= 20 ns uncontended).
//!
//! `cargo bench -p gantry-benches --bench stats -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gantry_stats::{Counter, EventStats, Histogram, LocationKind, TransferKind};

/// A cheap stream of values spread over many buckets (xorshift, masked to 2^24 ns = 16 ms),
/// so the benchmark does not hit one cached bucket only.
#[inline]
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state & 0xFF_FFFF
}

/// Times `iters` calls of `record` on this thread while `others` threads call `background`
/// in a loop on the same data.
fn contended(
    iters: u64,
    others: usize,
    record: &(dyn Fn(u64) + Sync),
    background: &(dyn Fn(u64) + Sync),
) -> Duration {
    let stop = AtomicBool::new(false);
    let running = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..others {
            let (stop, running) = (&stop, &running);
            s.spawn(move || {
                running.fetch_add(1, Ordering::SeqCst);
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                while !stop.load(Ordering::Relaxed) {
                    background(next(&mut x));
                }
            });
        }
        while running.load(Ordering::SeqCst) < others {
            std::hint::spin_loop();
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let start = Instant::now();
        for _ in 0..iters {
            record(next(&mut x));
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        elapsed
    })
}

fn histogram(c: &mut Criterion) {
    let mut g = c.benchmark_group("stats");
    g.throughput(Throughput::Elements(1));

    let h = Histogram::new();
    let mut x = 1u64;
    g.bench_function("histogram_record/1_thread", |b| {
        b.iter(|| h.record(black_box(next(&mut x))))
    });

    let h = Histogram::new();
    g.bench_function("histogram_record/2_threads_same_histogram", |b| {
        b.iter_custom(|iters| contended(iters, 1, &|v| h.record(v), &|v| h.record(v)))
    });

    let c1 = Counter::new();
    g.bench_function("counter_inc/1_thread", |b| b.iter(|| black_box(&c1).inc()));

    let c2 = Counter::new();
    g.bench_function("counter_inc/2_threads_same_counter", |b| {
        b.iter_custom(|iters| contended(iters, 1, &|_| c2.inc(), &|_| c2.inc()))
    });

    let events = EventStats::new("buffers");
    g.bench_function("event_transfer/1_thread", |b| {
        b.iter(|| {
            let v = next(&mut x);
            events.record_transfer(TransferKind::Upload, black_box(v), Duration::from_nanos(v))
        })
    });
    g.bench_function("event_creation/1_thread", |b| {
        b.iter(|| {
            let v = next(&mut x);
            events.record_creation(black_box(v), LocationKind::Upload, Duration::from_nanos(v))
        })
    });
    g.bench_function("event_mapping_per_buffer/1_thread", |b| {
        b.iter(|| {
            let v = next(&mut x);
            events.record_mapping(black_box(v & 1023), Duration::from_nanos(v))
        })
    });
    g.bench_function("event_mapping_per_buffer/2_threads", |b| {
        b.iter_custom(|iters| {
            let map = |v: u64| events.record_mapping(v & 1023, Duration::from_nanos(v));
            contended(iters, 1, &map, &map)
        })
    });
    g.finish();
}

criterion_group!(benches, histogram);
criterion_main!(benches);
