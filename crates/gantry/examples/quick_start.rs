//! The README's quick start: create a manager, upload, read back.
//!
//! `cargo run -p gantry --features vulkan --example quick_start`

use gantry::core::Device;
use gantry::vulkan::{VulkanBackend, VulkanOptions};
use gantry::{BufferManager, ManagerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Open the best Vulkan adapter (a discrete GPU if there is one, else lavapipe).
    let device = Device::new(VulkanBackend::new(&VulkanOptions::default())?);
    let manager = BufferManager::new(device, ManagerConfig::default())?;

    // A device-local vertex buffer, filled through the staging ring at the next flush.
    let points: Vec<f32> = (0..1024).map(|i| i as f32).collect();
    let mesh = manager.create_vertex_buffer("points", &points)?;

    // Change part of it: queued, batched with other transfers, submitted by `flush`.
    manager.upload_pod(mesh.buffer(), 0, &[-1.0f32; 16])?;
    manager.flush()?;

    // Read it back (a readback sees every transfer queued before it).
    let bytes = manager.read(mesh.buffer(), 0, mesh.size())?.wait()?;
    let back: &[f32] = bytemuck::cast_slice(&bytes);
    assert_eq!((back[0], back[16], back[1023]), (-1.0, 16.0, 1023.0));
    println!("{} floats uploaded and read back", back.len());
    Ok(())
}
