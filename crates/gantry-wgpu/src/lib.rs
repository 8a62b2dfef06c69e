//! gantry's wgpu backend.
#![deny(missing_docs)]
