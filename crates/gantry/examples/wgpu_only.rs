//! `gantry` with `features = ["wgpu"]`: a round trip (upload, copy, readback) on the first
//! adapter wgpu finds, or the first whose name contains the argument.
//!
//! `cargo run -p gantry --features wgpu --example wgpu_only [-- ADAPTER]`

mod common;

use gantry::core::Device;
use gantry::wgpu::{AdapterSelector, WgpuBackend, WgpuOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = WgpuOptions::default();
    if let Some(name) = common::adapter_arg() {
        options.adapter = AdapterSelector::NameContains(name);
    }
    let device = Device::new(WgpuBackend::new(&options)?);
    common::round_trip(&device)
}
