//! Host-side buffers for programs with or without a GPU.
//!
//! `gantry-host` depends on no GPU crate. The GPU layers of gantry reuse its allocation
//! algorithms over GPU memory.
#![deny(missing_docs)]

mod stats;

// Offset allocators, arena, line/record/preallocated buffers, sizing (host-b).
pub mod alloc;
mod arena;
mod line;
mod prealloc;
mod record;
mod sizing;

pub use stats::{BufferStats, StatsSnapshot};

pub use alloc::{
    AllocError, Allocation, AllocatorReport, BumpAllocator, FreeError, FreeListAllocator,
    RingAllocator,
};
pub use arena::{Arena, ArenaError};
pub use line::{LineBuffer, LineError};
pub use prealloc::PreallocatedBuffers;
pub use record::{RecordBuffer, RecordBufferFull};
pub use sizing::{
    MAX_BUFFER_SIZE, MIN_BUFFER_SIZE, PAGE_SIZE, buffer_size_for, optimal_buffer_size,
};

// Pool, rings, double and triple buffers, aligned buffers (host-a).
mod aligned;
mod double;
mod inline_any;
mod pool;
mod ring;
pub mod spsc;
mod sync;
mod triple;

pub use aligned::{AlignedBuf, AlignedBufError};
pub use double::{DoubleBuffer, DoubleReader, DoubleWriter, ReadGuard, WriteGuard};
pub use inline_any::InlineAny;
pub use pool::{BufferPool, PoolConfig, PooledBuffer};
pub use ring::{RingBuffer, RingError};
pub use triple::{TripleBuffer, TripleReader, TripleWriter};
