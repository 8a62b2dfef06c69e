//! `gantry` with no feature: no GPU crate is compiled in, yet the shared GPU types, the
//! host buffers and the statistics are there. The round trip runs on gantry-core's
//! reference backend (buffers in host memory), through the same validating facade the GPU
//! backends sit behind.
//!
//! `cargo run -p gantry --example no_backend`

mod common;

use gantry::core::Device;
use gantry::core::reference::ReferenceBackend;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::new(ReferenceBackend::new(64 << 20));
    common::round_trip(&device)?;
    // The facade's validation is the same with or without a GPU.
    let bad = device.read(
        &device.create_buffer(&gantry::core::BufferDesc::new(
            256,
            gantry::core::BufferUsage::TRANSFER_SRC,
            gantry::core::MemoryLocation::DeviceLocal,
        ))?,
        128,
        256,
    );
    println!("  reading past the end: {}", bad.unwrap_err());
    Ok(())
}
