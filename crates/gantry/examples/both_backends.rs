//! `gantry` with `features = ["wgpu", "vulkan"]`: the same generic code runs a round trip
//! (upload, copy, readback) on each backend in turn (on the adapter whose name contains the
//! argument, if one is given).
//!
//! `cargo run -p gantry --features wgpu,vulkan --example both_backends [-- ADAPTER]`

mod common;

use gantry::core::Device;
use gantry::vulkan::{AdapterPreference, VulkanBackend, VulkanOptions};
use gantry::wgpu::{AdapterSelector, WgpuBackend, WgpuOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut wgpu_options = WgpuOptions::default();
    let mut vulkan_options = VulkanOptions::default();
    if let Some(name) = common::adapter_arg() {
        wgpu_options.adapter = AdapterSelector::NameContains(name.clone());
        vulkan_options.adapter = AdapterPreference::NameContains(name);
    }
    common::round_trip(&Device::new(WgpuBackend::new(&wgpu_options)?))?;
    common::round_trip(&Device::new(VulkanBackend::new(&vulkan_options)?))
}
