//! gantry-host on its own, no GPU crate anywhere in the build: an arena for per-frame
//! scratch data, a ring allocator streaming frames through one fixed block (the same code
//! gantry's GPU staging ring runs over GPU memory), a free-list allocator, a record buffer
//! and a line buffer parsing input, with the allocation statistics at the end.
//!
//! `cargo run -p gantry-host --example host_only`

use std::sync::Arc;

use gantry_host::{
    Arena, BufferStats, FreeListAllocator, LineBuffer, RecordBuffer, RingAllocator,
    optimal_buffer_size,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stats = Arc::new(BufferStats::new());

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
