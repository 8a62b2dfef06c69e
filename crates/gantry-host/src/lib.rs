//! Host-side buffers for programs with or without a GPU.
//!
//! `gantry-host` depends on no GPU crate. The GPU layers of gantry reuse its allocation
//! algorithms over GPU memory.
#![deny(missing_docs)]

mod stats;

pub use stats::{BufferStats, StatsSnapshot};

mod aligned;
mod double;
mod pool;
mod ring;
pub mod spsc;
mod sync;
mod triple;

pub use aligned::{AlignedBuf, AlignedBufError, PAGE_SIZE};
pub use double::{DoubleBuffer, DoubleReader, DoubleWriter, ReadGuard, WriteGuard};
pub use pool::{BufferPool, PoolConfig, PooledBuffer};
pub use ring::{RingBuffer, RingError};
pub use triple::{TripleBuffer, TripleReader, TripleWriter};
