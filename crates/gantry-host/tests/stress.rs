//! Multi-thread stress tests: torn reads of the double and triple buffers (the writer
//! writes `[n; 64]`, the reader checks that every element is equal), an ordered byte stream
//! through the SPSC ring, and the pool's bound under several threads.
#![cfg(not(loom))]

use gantry_host::{BufferPool, DoubleBuffer, PoolConfig, TripleBuffer, spsc};

const ROUNDS: u64 = if cfg!(miri) { 60 } else { 200_000 };

#[test]
fn triple_buffer_never_tears_and_never_goes_back() {
    let (mut w, mut r) = TripleBuffer::new([0u64; 64]).split();
    std::thread::scope(|s| {
        s.spawn(move || {
            for n in 1..=ROUNDS {
                *w.input() = [n; 64];
                w.publish();
            }
        });
        let mut last = 0;
        while last < ROUNDS {
            let v = r.read();
            assert!(v.iter().all(|&x| x == v[0]), "torn read: {v:?}");
            assert!(v[0] >= last, "went back from {last} to {}", v[0]);
            last = v[0];
        }
    });
}

#[test]
fn double_buffer_never_tears() {
    let (mut w, mut r) = DoubleBuffer::new([0u64; 64], [0u64; 64]).split();
    let reads = ROUNDS / 4;
    std::thread::scope(|s| {
        s.spawn(move || {
            for n in 1..=ROUNDS {
                *w.write() = [n; 64];
                w.swap();
            }
        });
        let mut last = 0;
        for _ in 0..reads {
            let v = r.read();
            assert!(v.iter().all(|&x| x == v[0]), "torn read: {v:?}");
            assert!(v[0] >= last);
            last = v[0];
        }
    });
}

#[test]
fn double_buffer_reader_holding_blocks_only_that_buffer() {
    let (mut w, mut r) = DoubleBuffer::new(vec![0u8; 8], vec![0u8; 8]).split();
    let guard = r.read();
    // The back buffer is free: write it and publish.
    w.write().fill(1);
    w.swap();
    // The reader still holds the old front, now the back: the writer must not get it.
    assert!(w.try_write().is_none());
    assert!(guard.iter().all(|&b| b == 0));
    drop(guard);
    assert!(r.read().iter().all(|&b| b == 1));
    assert!(w.try_write().is_some());
}

#[test]
fn spsc_stream_arrives_in_order() {
    let total: usize = if cfg!(miri) { 2_000 } else { 4_000_000 };
    let (mut tx, mut rx) = spsc::channel(if cfg!(miri) { 61 } else { 4093 }).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut chunk = [0u8; 97];
            let mut sent = 0usize;
            while sent < total {
                let want = (total - sent).min(chunk.len());
                for (i, b) in chunk[..want].iter_mut().enumerate() {
                    *b = ((sent + i) % 251) as u8;
                }
                let mut done = 0;
                while done < want {
                    let n = tx.write(&chunk[done..want]);
                    if n == 0 {
                        std::thread::yield_now();
                    }
                    done += n;
                }
                sent += want;
            }
        });
        let mut got = 0usize;
        let mut buf = [0u8; 61];
        while got < total {
            let n = rx.read(&mut buf);
            if n == 0 {
                std::thread::yield_now();
            }
            for (i, &b) in buf[..n].iter().enumerate() {
                assert_eq!(b, ((got + i) % 251) as u8, "byte {}", got + i);
            }
            got += n;
        }
    });
}

#[test]
fn pool_bound_holds_under_threads() {
    // Threads get and return buffers in rounds; between rounds (all threads parked at a
    // barrier) the pool is quiescent and its idle count must be exact and within the bound,
    // and match the statistics: allocated - freed = idle + held.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    use gantry_host::BufferStats;

    let rounds = if cfg!(miri) { 3 } else { 200 };
    let per_round = if cfg!(miri) { 10 } else { 300 };
    for cache in [None, Some(0), Some(2)] {
        let stats = Arc::new(BufferStats::new());
        let mut cfg = PoolConfig::new(64)
            .with_max_buffers(8)
            .with_stats(Arc::clone(&stats));
        if let Some(c) = cache {
            cfg = cfg.with_thread_cache(c);
        }
        let pool = BufferPool::with_config(cfg);
        let barrier = Arc::new(Barrier::new(4));
        let held_total = Arc::new(AtomicUsize::new(0));
        // `spawn` + `join`, not a scope: `join` also waits for the thread-local destructors
        // that hand each thread's cache back, which the final checks rely on.
        let threads: Vec<_> = (0..4usize)
            .map(|t| {
                let (pool, barrier, held_total, stats) = (
                    pool.clone(),
                    Arc::clone(&barrier),
                    Arc::clone(&held_total),
                    Arc::clone(&stats),
                );
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for round in 0..rounds {
                        for i in 0..per_round {
                            held.push(pool.get_owned());
                            if (i + t + round) % 5 == 0 {
                                held.truncate(held.len() / 3);
                            }
                        }
                        held_total.fetch_add(held.len(), Ordering::SeqCst);
                        if barrier.wait().is_leader() {
                            let idle = pool.idle();
                            assert!(idle <= 8, "{idle} idle, bound 8");
                            let out = stats.snapshot().outstanding() as usize;
                            assert_eq!(out, idle + held_total.load(Ordering::SeqCst));
                            held_total.store(0, Ordering::SeqCst);
                        }
                        barrier.wait();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(pool.idle() <= 8);
        assert_eq!(pool.hits() + pool.misses(), 4 * (rounds * per_round) as u64);
        // Buffers move between threads too.
        let (send, recv) = std::sync::mpsc::channel();
        let p2 = pool.clone();
        std::thread::spawn(move || {
            for _ in 0..100 {
                send.send(p2.get_owned()).unwrap();
            }
        })
        .join()
        .unwrap();
        drop(recv.try_iter().collect::<Vec<_>>());
        assert!(pool.idle() <= 8);
        drop(pool);
        assert_eq!(stats.snapshot().live_bytes, 0);
    }
}

#[test]
fn handles_are_send() {
    fn send<T: Send>() {}
    send::<spsc::Producer>();
    send::<spsc::Consumer>();
    send::<gantry_host::DoubleWriter<Vec<u8>>>();
    send::<gantry_host::DoubleReader<Vec<u8>>>();
    send::<gantry_host::TripleWriter<Vec<u8>>>();
    send::<gantry_host::TripleReader<Vec<u8>>>();
    send::<gantry_host::PooledBuffer<'static>>();
    send::<BufferPool>();
    send::<gantry_host::AlignedBuf>();
}
