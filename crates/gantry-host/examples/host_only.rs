//! gantry-host on its own, no GPU crate anywhere in the build: a buffer pool shared by
//! worker threads, a byte ring between a producer and a consumer thread, an arena for per-frame
//! scratch data, a ring allocator streaming frames through one fixed block (the same code
//! gantry's GPU staging ring runs over GPU memory), a free-list allocator, a record buffer
//! and a line buffer parsing input, with the allocation statistics at the end.
//!
//! `cargo run -p gantry-host --example host_only`

use std::sync::Arc;

use gantry_host::{
    Arena, BufferPool, BufferStats, FreeListAllocator, LineBuffer, PoolConfig, RecordBuffer,
    RingAllocator, optimal_buffer_size,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stats = Arc::new(BufferStats::new());

    // Buffer pool: four threads take 4 KiB buffers, fill them and drop them; they come back
    // cleared, and at most 8 stay idle however many were out at once.
    let pool = BufferPool::with_config(
        PoolConfig::new(4096)
            .with_max_buffers(8)
            .with_stats(stats.clone()),
    );
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let pool = &pool;
            s.spawn(move || {
                for _ in 0..1000 {
                    let mut buf = pool.get();
                    assert!(buf.is_empty(), "pooled buffers come back cleared");
                    buf.extend_from_slice(&[t; 512]);
                }
            });
        }
    });
    println!(
        "pool: {} hits, {} misses, {} idle (bound 8)",
        pool.hits(),
        pool.misses(),
        pool.idle()
    );

    // Byte ring, split into a producer and a consumer on two threads: 1 MiB through 64 KiB.
    let (mut producer, mut consumer) = gantry_host::spsc::channel(64 << 10)?;
    let total: usize = 1 << 20;
    let sum = std::thread::scope(|s| {
        s.spawn(move || {
            let chunk: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
            let mut sent = 0;
            while sent < total {
                let n = producer.write(&chunk[..(total - sent).min(chunk.len())]);
                if n == 0 {
                    std::thread::yield_now();
                }
                sent += n;
            }
        });
        let mut buf = [0u8; 8192];
        let (mut received, mut sum) = (0usize, 0u64);
        while received < total {
            let n = consumer.read(&mut buf);
            if n == 0 {
                std::thread::yield_now();
            }
            sum += buf[..n].iter().map(|&b| u64::from(b)).sum::<u64>();
            received += n;
        }
        sum
    });
    println!("byte ring: {total} bytes through a 64 KiB SPSC ring, byte sum {sum}");

    // Arena: many live allocations at once, typed and aligned, freed together by `reset`.
    let mut arena = Arena::with_capacity(64 << 10).with_stats(stats.clone());
    for frame in 0..3u32 {
        let positions = arena.alloc_slice_copy(&[[frame as f32; 4]; 256]);
        let counter = arena.alloc(frame);
        *counter += 1;
        println!(
            "arena: frame {frame}: {} positions and a counter ({}), {} bytes in use",
            positions.len(),
            counter,
            arena.allocated_bytes()
        );
        arena.reset();
    }

    // Ring allocator: each frame takes a range of a 1 MiB block and gives back the oldest
    // once two newer frames exist (as the GPU finishes with them).
    let mut ring = RingAllocator::new(1 << 20).with_stats(stats.clone());
    let mut in_flight = std::collections::VecDeque::new();
    for frame in 0..8u64 {
        let size = 96 << 10 | (frame * 4096);
        in_flight.push_back(ring.allocate(size, 256)?);
        if in_flight.len() > 2 {
            let oldest = in_flight.pop_front().expect("three in flight");
            ring.free(oldest)?;
        }
    }
    println!(
        "ring: {} of {} bytes in use, largest free range {}, fragmentation {:.2}",
        ring.used(),
        ring.capacity(),
        ring.largest_free(),
        ring.fragmentation()
    );

    // Free list: long-lived ranges of any size, freed in any order.
    let mut heap = FreeListAllocator::new(4 << 20).with_stats(stats.clone());
    let a = heap.allocate(300 << 10, 256)?;
    let b = heap.allocate(1 << 20, 256)?;
    let _c = heap.allocate(64 << 10, 256)?;
    heap.free(a)?;
    println!(
        "free list: {} bytes used, {} free ranges, b at offset {}",
        heap.used(),
        heap.free_ranges(),
        b.offset()
    );
    heap.free(b)?;

    // Record buffer: bounded, refuses when full.
    let mut events = RecordBuffer::new(4);
    for i in 0..6 {
        if events.push(i).is_err() {
            println!(
                "record buffer: full at {} records, record {i} refused",
                events.len()
            );
            break;
        }
    }
    let drained: Vec<i32> = events.drain().collect();
    println!("record buffer: drained {drained:?}");

    // Line buffer over any `Read`.
    let input = "upload 65536\ncopy 4096\nreadback 256\n";
    let mut lines = LineBuffer::new(input.as_bytes(), 16);
    let mut total = 0u64;
    while let Some(line) = lines.read_line()? {
        let text = std::str::from_utf8(line)?.trim_end();
        let bytes: u64 = text.rsplit(' ').next().unwrap_or("0").parse()?;
        total += bytes;
        println!("line buffer: {text:?}");
    }
    println!("line buffer: {total} bytes named in the input");

    println!(
        "sizing: a 10 MB input gets a {}-byte read buffer",
        optimal_buffer_size(10_000_000)
    );
    println!("statistics: {:?}", stats.snapshot());
    Ok(())
}
