//! `gantry` with `features = ["vulkan"]`: a round trip (upload, copy, readback) on the
//! best Vulkan adapter (a discrete GPU if there is one, else lavapipe), or the first whose
//! name contains the argument.
//!
//! `cargo run -p gantry --features vulkan --example vulkan_only [-- ADAPTER]`

mod common;

use gantry::core::Device;
use gantry::vulkan::{AdapterPreference, VulkanBackend, VulkanOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = VulkanOptions::default();
    if let Some(name) = common::adapter_arg() {
        options.adapter = AdapterPreference::NameContains(name);
    }
    let device = Device::new(VulkanBackend::new(&options)?);
    common::round_trip(&device)
}
