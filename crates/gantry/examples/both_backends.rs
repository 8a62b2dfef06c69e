//! `gantry` with `features = ["wgpu", "vulkan"]`: the same generic code runs a round trip
//! (upload, copy, readback) on each backend in turn.
//!
//! `cargo run -p gantry --features wgpu,vulkan --example both_backends`

mod common;

use gantry::core::Device;
use gantry::vulkan::{VulkanBackend, VulkanOptions};
use gantry::wgpu::{WgpuBackend, WgpuOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::round_trip(&Device::new(WgpuBackend::new(&WgpuOptions::default())?))?;
    common::round_trip(&Device::new(VulkanBackend::new(&VulkanOptions::default())?))
}
