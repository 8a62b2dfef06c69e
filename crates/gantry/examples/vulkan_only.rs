//! `gantry` with `features = ["vulkan"]`: a round trip (upload, copy, readback) on the
//! best Vulkan adapter (a discrete GPU if there is one, else lavapipe).
//!
//! `cargo run -p gantry --features vulkan --example vulkan_only`

mod common;

use gantry::core::Device;
use gantry::vulkan::{VulkanBackend, VulkanOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::new(VulkanBackend::new(&VulkanOptions::default())?);
    common::round_trip(&device)
}
