//! Host-side buffers for programs with or without a GPU.
//!
//! `gantry-host` depends on no GPU crate. The GPU layers of gantry reuse its allocation
//! algorithms over GPU memory.
#![deny(missing_docs)]

mod stats;

pub use stats::{BufferStats, StatsSnapshot};
