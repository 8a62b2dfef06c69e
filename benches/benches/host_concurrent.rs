//! gantry-host's concurrent structures side by side with the peers they replace (targets
//! P8, P10, P11 of `PERF.md`): byte ring vs `ringbuf`, ring copies vs plain memcpy, buffer
//! pool vs a crossbeam `ArrayQueue` pool and a `Mutex<Vec<Vec<u8>>>` pool, triple buffer vs
//! `triple_buffer`. Compare only ratios within one run.
//!
//! `cargo bench -p gantry-benches --bench host_concurrent -- --warm-up-time 1 --measurement-time 3`
//!
//! `GANTRY_BENCH_QUICK=1` shortens every group (10 samples, 0.5 s warm-up, 1.5 s measured);
//! a filter picks groups, e.g. `-- 'ring_1thread|ring_2threads|triple'` for P8 and P11.
//! The filter `paired` (alone, or with others) also runs the P8/P11 comparisons as paired
//! rounds that alternate gantry and the peer, and prints the median of the per-round
//! ratios: on a shared, noisy machine these are the figures to trust.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use crossbeam_queue::ArrayQueue;
use gantry_host::{BufferPool, RingBuffer, TripleBuffer, spsc};
use ringbuf::traits::{Consumer as _, Producer as _, Split as _};
use ringbuf::{HeapRb, LocalRb, storage::Heap};

const SLICE: usize = 4096;
const RING: usize = 1 << 20;
const BUF: usize = 4096;

/// Spins a little, then yields: both rings' threads wait the same way.
fn wait(spins: &mut u32) {
    if *spins < 64 {
        std::hint::spin_loop();
        *spins += 1;
    } else {
        std::thread::yield_now();
    }
}

/// Criterion settings: `GANTRY_BENCH_QUICK` shortens every group.
fn config() -> Criterion {
    if std::env::var_os("GANTRY_BENCH_QUICK").is_some() {
        Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_millis(1500))
    } else {
        Criterion::default()
    }
}

fn ring_one_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_1thread_4KiB_through_1MiB");
    g.throughput(Throughput::Bytes(SLICE as u64));
    let data = vec![0xa5u8; SLICE];
    let half = vec![0u8; RING / 2];
    let mut out = vec![0u8; SLICE];

    // All four rings are allocated here, before any is freed, so that each gets its 1 MiB
    // the same way (a fresh `mmap` from glibc, at the same offset within a page). Allocated
    // one after the other inside the benchmarks, the first free raised glibc's mmap
    // threshold and the later rings came from the heap at other page offsets: their copies
    // then stood in another relation to `data` and `out` (4 KiB aliasing), a lottery that
    // moved one ring's time by up to 10x on the dev machine and had nothing to do with it.
    let mut ring = RingBuffer::new(RING).unwrap();
    ring.write(&half);
    let (mut tx, mut rx) = spsc::channel(RING).unwrap();
    tx.write(&half);
    let (mut ptx, mut prx) = HeapRb::<u8>::new(RING).split();
    ptx.push_slice(&half);
    let mut rb = LocalRb::<Heap<u8>>::new(RING);
    rb.push_slice(&half);

    g.bench_function("gantry_RingBuffer", |b| {
        b.iter(|| {
            ring.write(black_box(&data));
            ring.read(black_box(&mut out));
        })
    });
    g.bench_function("gantry_spsc", |b| {
        b.iter(|| {
            tx.write(black_box(&data));
            rx.read(black_box(&mut out));
        })
    });
    g.bench_function("ringbuf_HeapRb_split", |b| {
        b.iter(|| {
            ptx.push_slice(black_box(&data));
            prx.pop_slice(black_box(&mut out));
        })
    });
    g.bench_function("ringbuf_LocalRb", |b| {
        b.iter(|| {
            rb.push_slice(black_box(&data));
            rb.pop_slice(black_box(&mut out));
        })
    });
    g.bench_function("memcpy_same_bytes", |b| {
        // The same two 4 KiB copies as the rings, at the same places of a 1 MiB buffer: in
        // at the write position, out from the read position half a buffer behind it.
        let mut store = vec![0u8; RING];
        let mut off = 0;
        b.iter(|| {
            store[off..off + SLICE].copy_from_slice(black_box(&data));
            let from = (off + RING / 2) % RING;
            out.copy_from_slice(black_box(&store[from..from + SLICE]));
            off = (off + SLICE) % RING;
        })
    });
    g.finish();
}

fn ring_bulk(c: &mut Criterion) {
    const BULK: usize = 256 * 1024;
    let mut g = c.benchmark_group("ring_bulk_256KiB_through_1MiB");
    g.throughput(Throughput::Bytes(BULK as u64));
    let data = vec![0x5au8; BULK];
    let mut out = vec![0u8; BULK];
    g.bench_function("gantry_RingBuffer", |b| {
        let mut ring = RingBuffer::new(RING).unwrap();
        ring.write(&vec![0u8; 100_000]); // makes copies wrap now and then (PREFILL below)
        b.iter(|| {
            ring.write(black_box(&data));
            ring.read(black_box(&mut out));
        })
    });
    g.bench_function("memcpy_same_bytes", |b| {
        // The same copies as the ring, split at the end of the buffer the same way.
        const PREFILL: usize = 100_000;
        let mut store = vec![0u8; RING];
        let mut read = 0;
        b.iter(|| {
            let write = (read + PREFILL) % RING;
            let first = BULK.min(RING - write);
            store[write..write + first].copy_from_slice(black_box(&data[..first]));
            store[..BULK - first].copy_from_slice(black_box(&data[first..]));
            let first = BULK.min(RING - read);
            out[..first].copy_from_slice(black_box(&store[read..read + first]));
            out[first..].copy_from_slice(black_box(&store[..BULK - first]));
            read = (read + BULK) % RING;
        })
    });
    g.finish();
}

/// Producer thread writes `iters` slices, this thread reads them; returns the time taken.
fn two_threads<P: Send, C>(
    iters: u64,
    (mut tx, mut rx): (P, C),
    mut write: impl FnMut(&mut P, &[u8]) -> usize + Send,
    mut read: impl FnMut(&mut C, &mut [u8]) -> usize,
) -> Duration {
    let total = iters as usize * SLICE;
    let data = vec![0x3cu8; SLICE];
    let mut out = vec![0u8; SLICE];
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut sent = 0;
            let mut spins = 0;
            while sent < total {
                let want = (total - sent).min(SLICE);
                let n = write(&mut tx, &data[..want]);
                if n == 0 {
                    wait(&mut spins);
                } else {
                    spins = 0;
                }
                sent += n;
            }
        });
        let mut got = 0;
        let mut spins = 0;
        while got < total {
            let n = read(&mut rx, &mut out);
            if n == 0 {
                wait(&mut spins);
            } else {
                spins = 0;
            }
            got += n;
        }
        black_box(&out);
    });
    start.elapsed()
}

fn ring_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_2threads_4KiB_through_1MiB");
    g.throughput(Throughput::Bytes(SLICE as u64));
    g.bench_function("gantry_spsc", |b| {
        b.iter_custom(|iters| {
            two_threads(
                iters,
                spsc::channel(RING).unwrap(),
                |tx, d| tx.write(d),
                |rx, o| rx.read(o),
            )
        })
    });
    g.bench_function("ringbuf_HeapRb_split", |b| {
        b.iter_custom(|iters| {
            two_threads(
                iters,
                HeapRb::<u8>::new(RING).split(),
                |tx, d| tx.push_slice(d),
                |rx, o| rx.pop_slice(o),
            )
        })
    });
    g.finish();
}

/// The peer pools: get pops or allocates, put clears and pushes (or frees when full).
struct QueuePool(ArrayQueue<Vec<u8>>);
impl QueuePool {
    fn get(&self) -> Vec<u8> {
        self.0.pop().unwrap_or_else(|| Vec::with_capacity(BUF))
    }
    fn put(&self, mut b: Vec<u8>) {
        b.clear();
        let _ = self.0.push(b);
    }
}
struct MutexPool(Mutex<Vec<Vec<u8>>>, usize);
impl MutexPool {
    fn get(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUF))
    }
    fn put(&self, mut b: Vec<u8>) {
        b.clear();
        let mut v = self.0.lock().unwrap();
        if v.len() < self.1 {
            v.push(b);
        }
    }
}

fn pool_get_put(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_get_put_1thread");
    g.throughput(Throughput::Elements(1));
    let gantry = BufferPool::with_capacity(BUF, 64);
    let queue = QueuePool(ArrayQueue::new(64));
    let mutex = MutexPool(Mutex::new(Vec::new()), 64);
    g.bench_function("gantry_BufferPool", |b| {
        b.iter(|| drop(black_box(gantry.get())))
    });
    g.bench_function("crossbeam_ArrayQueue_pool", |b| {
        b.iter(|| queue.put(black_box(queue.get())))
    });
    g.bench_function("mutex_vec_pool", |b| {
        b.iter(|| mutex.put(black_box(mutex.get())))
    });
    g.finish();

    // Two threads hammer one pool; each does `iters` get+put pairs.
    let mut g = c.benchmark_group("pool_get_put_2threads_one_pool");
    g.throughput(Throughput::Elements(2));
    fn run2(iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..iters {
                        op();
                    }
                });
            }
        });
        start.elapsed()
    }
    g.bench_function("gantry_BufferPool", |b| {
        b.iter_custom(|iters| run2(iters, &|| drop(black_box(gantry.get()))))
    });
    g.bench_function("crossbeam_ArrayQueue_pool", |b| {
        b.iter_custom(|iters| run2(iters, &|| queue.put(black_box(queue.get()))))
    });
    g.bench_function("mutex_vec_pool", |b| {
        b.iter_custom(|iters| run2(iters, &|| mutex.put(black_box(mutex.get()))))
    });
    g.bench_function("no_pool_fresh_vec", |b| {
        b.iter_custom(|iters| run2(iters, &|| drop(black_box(Vec::<u8>::with_capacity(BUF)))))
    });
    g.finish();
    assert!(gantry.idle() <= 64);
}

fn triple(c: &mut Criterion) {
    type Frame = [u8; 4096];
    let data: Frame = [0x42; 4096];
    let mut g = c.benchmark_group("triple_4KiB_write_publish_1thread");
    g.throughput(Throughput::Elements(1));
    g.bench_function("gantry_TripleBuffer", |b| {
        let (mut w, _r) = TripleBuffer::new([0u8; 4096]).split();
        b.iter(|| {
            w.input().copy_from_slice(black_box(&data));
            w.publish();
        })
    });
    g.bench_function("triple_buffer", |b| {
        let (mut w, _r) = triple_buffer::triple_buffer(&[0u8; 4096]);
        b.iter(|| {
            w.input_buffer_mut().copy_from_slice(black_box(&data));
            w.publish();
        })
    });
    g.finish();

    let mut g = c.benchmark_group("triple_4KiB_write_publish_reader_running");
    g.throughput(Throughput::Elements(1));
    g.bench_function("gantry_TripleBuffer", |b| {
        b.iter_custom(|iters| {
            let (mut w, mut r) = TripleBuffer::<Frame>::new([0u8; 4096]).split();
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let v = r.read();
                        black_box((v[0], v[4095]));
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    w.input().copy_from_slice(black_box(&data));
                    w.publish();
                }
                let t = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                t
            })
        })
    });
    g.bench_function("triple_buffer", |b| {
        b.iter_custom(|iters| {
            let (mut w, mut r) = triple_buffer::triple_buffer::<Frame>(&[0u8; 4096]);
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let v = r.read();
                        black_box((v[0], v[4095]));
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    w.input_buffer_mut().copy_from_slice(black_box(&data));
                    w.publish();
                }
                let t = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                t
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = ring_one_thread, ring_bulk, ring_two_threads, pool_get_put, triple
}

/// Runs `gantry` and `peer` alternately (the order swaps every round, so neither always goes
/// first), `rounds` times after 3 warm-up rounds; each returns its time per operation. Prints
/// the medians and the median of the per-round ratios peer / gantry (above 1: gantry faster).
fn paired(
    label: &str,
    rounds: usize,
    mut gantry: impl FnMut() -> f64,
    mut peer: impl FnMut() -> f64,
) {
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for _ in 0..3 {
        gantry();
        peer();
    }
    let (mut g, mut p, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = gantry();
            (a, peer())
        } else {
            let b = peer();
            (gantry(), b)
        };
        g.push(a);
        p.push(b);
        r.push(b / a);
    }
    println!(
        "paired {label} ({rounds} rounds): gantry {:.1} ns/op, peer {:.1} ns/op; ratio peer/gantry median {:.2}x",
        median(&mut g),
        median(&mut p),
        median(&mut r),
    );
}

/// The P8 and P11 comparisons of the groups above, as paired rounds; the same work per
/// operation as the criterion groups (see each group for what is copied where).
fn paired_p8_p11(rounds: usize) {
    type Frame = [u8; 4096];
    let data = vec![0xa5u8; SLICE];
    let half = vec![0u8; RING / 2];
    let out = std::cell::RefCell::new(vec![0u8; SLICE]);
    let per = |n: usize, t: Instant| t.elapsed().as_nanos() as f64 / n as f64;

    // Both rings allocated before either is used or freed (same placement, see above).
    let (mut tx, mut rx) = spsc::channel(RING).unwrap();
    tx.write(&half);
    let (mut ptx, mut prx) = HeapRb::<u8>::new(RING).split();
    ptx.push_slice(&half);
    const N1: usize = 2000;
    paired(
        "ring_1thread_4KiB_through_1MiB gantry_spsc vs ringbuf_HeapRb_split",
        rounds,
        || {
            let out = &mut out.borrow_mut()[..];
            let t = Instant::now();
            for _ in 0..N1 {
                tx.write(black_box(&data));
                rx.read(black_box(&mut *out));
            }
            per(N1, t)
        },
        || {
            let out = &mut out.borrow_mut()[..];
            let t = Instant::now();
            for _ in 0..N1 {
                ptx.push_slice(black_box(&data));
                prx.pop_slice(black_box(&mut *out));
            }
            per(N1, t)
        },
    );
    drop((tx, rx, ptx, prx));

    const N2: u64 = 20_000;
    paired(
        "ring_2threads_4KiB_through_1MiB gantry_spsc vs ringbuf_HeapRb_split",
        rounds,
        || {
            let ring = spsc::channel(RING).unwrap();
            let t = two_threads(N2, ring, |tx, d| tx.write(d), |rx, o| rx.read(o));
            t.as_nanos() as f64 / N2 as f64
        },
        || {
            let ring = HeapRb::<u8>::new(RING).split();
            let t = two_threads(N2, ring, |tx, d| tx.push_slice(d), |rx, o| rx.pop_slice(o));
            t.as_nanos() as f64 / N2 as f64
        },
    );

    let frame: Frame = [0x42; 4096];
    let (mut w, _r) = TripleBuffer::new([0u8; 4096]).split();
    let (mut pw, _pr) = triple_buffer::triple_buffer(&[0u8; 4096]);
    const N3: usize = 5000;
    paired(
        "triple_4KiB_write_publish_1thread",
        rounds,
        || {
            let t = Instant::now();
            for _ in 0..N3 {
                w.input().copy_from_slice(black_box(&frame));
                w.publish();
            }
            per(N3, t)
        },
        || {
            let t = Instant::now();
            for _ in 0..N3 {
                pw.input_buffer_mut().copy_from_slice(black_box(&frame));
                pw.publish();
            }
            per(N3, t)
        },
    );

    const N4: usize = 20_000;
    paired(
        "triple_4KiB_write_publish_reader_running",
        rounds,
        || {
            let (mut w, mut r) = TripleBuffer::<Frame>::new([0u8; 4096]).split();
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let v = r.read();
                        black_box((v[0], v[4095]));
                    }
                });
                let t = Instant::now();
                for _ in 0..N4 {
                    w.input().copy_from_slice(black_box(&frame));
                    w.publish();
                }
                let ns = per(N4, t);
                stop.store(true, Ordering::Relaxed);
                ns
            })
        },
        || {
            let (mut w, mut r) = triple_buffer::triple_buffer::<Frame>(&[0u8; 4096]);
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let v = r.read();
                        black_box((v[0], v[4095]));
                    }
                });
                let t = Instant::now();
                for _ in 0..N4 {
                    w.input_buffer_mut().copy_from_slice(black_box(&frame));
                    w.publish();
                }
                let ns = per(N4, t);
                stop.store(true, Ordering::Relaxed);
                ns
            })
        },
    );
}

fn main() {
    // `cargo test --benches` passes no `--bench`: the paired rounds run only when benchmarking
    // and when a filter argument names them.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && args.iter().skip(1).any(|a| a.contains("paired")) {
        let quick = std::env::var_os("GANTRY_BENCH_QUICK").is_some();
        paired_p8_p11(if quick { 41 } else { 101 });
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
