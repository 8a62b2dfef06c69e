//! loom models of the concurrent types. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p gantry-host --release --test loom`.
#![cfg(loom)]

use gantry_host::{BufferPool, DoubleBuffer, PoolConfig, TripleBuffer, spsc};
use loom::thread;

fn bounded() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

#[test]
fn spsc_ring_delivers_bytes_in_order() {
    bounded().check(|| {
        let (mut tx, mut rx) = spsc::channel(2).unwrap();
        let t = thread::spawn(move || {
            let data = [1u8, 2, 3];
            let mut sent = 0;
            while sent < data.len() {
                let n = tx.write(&data[sent..]);
                if n == 0 {
                    thread::yield_now();
                }
                sent += n;
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 2];
        while got.len() < 3 {
            let n = rx.read(&mut buf);
            if n == 0 {
                thread::yield_now();
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, [1, 2, 3]);
        t.join().unwrap();
    });
}

#[test]
fn double_buffer_reader_never_sees_a_write() {
    bounded().check(|| {
        let (mut w, mut r) = DoubleBuffer::new([0usize; 2], [0usize; 2]).split();
        let t = thread::spawn(move || {
            for n in 1..=2 {
                let mut back = w.write();
                back[0] = n;
                back[1] = n;
                drop(back);
                w.swap();
            }
        });
        let mut last = 0;
        for _ in 0..2 {
            let v = r.read();
            assert_eq!(v[0], v[1]);
            assert!(v[0] >= last);
            last = v[0];
        }
        t.join().unwrap();
    });
}

#[test]
fn triple_buffer_reader_gets_whole_values_in_order() {
    bounded().check(|| {
        let (mut w, mut r) = TripleBuffer::new([0usize; 2]).split();
        let t = thread::spawn(move || {
            for n in 1..=3 {
                *w.input() = [n, n];
                w.publish();
            }
        });
        let mut last = 0;
        for _ in 0..3 {
            let v = *r.read();
            assert_eq!(v[0], v[1]);
            assert!(v[0] >= last);
            last = v[0];
        }
        t.join().unwrap();
        r.update();
        assert_eq!(*r.output(), [3, 3]);
    });
}

#[test]
fn pool_bound_holds_with_thread_caches() {
    bounded().check(|| {
        let pool =
            BufferPool::with_config(PoolConfig::new(8).with_max_buffers(2).with_thread_cache(1));
        let p2 = pool.clone();
        let t = thread::spawn(move || {
            let a = p2.get();
            let b = p2.get();
            drop(a);
            drop(b);
            assert!(p2.idle() <= 2);
            let c = p2.get_owned();
            c
        });
        let a = pool.get();
        drop(a);
        let b = pool.get();
        drop(b);
        assert!(pool.idle() <= 2);
        let c = t.join().unwrap();
        drop(c);
        assert!(pool.idle() <= 2);
        assert_eq!(pool.hits() + pool.misses(), 5);
    });
}

#[test]
fn pool_bound_holds_through_shared_queue() {
    bounded().check(|| {
        let pool =
            BufferPool::with_config(PoolConfig::new(8).with_max_buffers(1).with_thread_cache(0));
        let p2 = pool.clone();
        let t = thread::spawn(move || {
            drop(p2.get());
            assert!(p2.idle() <= 1);
        });
        drop(pool.get());
        t.join().unwrap();
        assert!(pool.idle() <= 1);
    });
}
