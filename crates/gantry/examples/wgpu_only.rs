//! `gantry` with `features = ["wgpu"]`: a round trip (upload, copy, readback) on the first
//! adapter wgpu finds.
//!
//! `cargo run -p gantry --features wgpu --example wgpu_only`

mod common;

use gantry::core::Device;
use gantry::wgpu::{WgpuBackend, WgpuOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::new(WgpuBackend::new(&WgpuOptions::default())?);
    common::round_trip(&device)
}
