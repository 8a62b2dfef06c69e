//! The round trip every feature example runs: upload, GPU copy, readback, compare.

use gantry::core::{Backend, BufferDesc, BufferUsage, Device, MemoryLocation};

/// Uploads 64 KiB into a device-local buffer through gantry's staging, copies it on the GPU
/// into a second buffer, reads that back and compares; prints the adapter and the result.
pub fn round_trip<B: Backend>(device: &Device<B>) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "{} on {}",
        device.backend_name(),
        device.adapter_info().name
    );
    let data: Vec<u8> = (0..64u32 << 10).map(|i| (i * 7 + i / 251) as u8).collect();
    let usage = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
    let desc = BufferDesc::new(data.len() as u64, usage, MemoryLocation::DeviceLocal);
    let first = device.create_buffer(&BufferDesc {
        label: Some("example: first"),
        ..desc.clone()
    })?;
    let second = device.create_buffer(&BufferDesc {
        label: Some("example: second"),
        ..desc
    })?;
    let mut batch = device.batch()?;
    batch.write(&first, 0, &data)?;
    batch.submit()?;
    device.copy(&first, 0, &second, 0, data.len() as u64)?;
    let back = device.read(&second, 0, data.len() as u64)?;
    if back != data {
        return Err("the bytes read back differ from the bytes uploaded".into());
    }
    println!(
        "  {} bytes uploaded, copied on the device and read back: identical",
        back.len()
    );
    Ok(())
}

/// The first command-line argument: a text the adapter's name must contain (the xtask
/// passes `llvmpipe` to run the examples on lavapipe); `None` for the default adapter.
#[allow(dead_code)] // not every example opens a GPU
pub fn adapter_arg() -> Option<String> {
    std::env::args().nth(1)
}
