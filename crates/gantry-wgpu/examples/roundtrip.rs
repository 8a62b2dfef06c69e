//! Opens every Vulkan adapter wgpu finds, round-trips 1 MiB through a device-local buffer on
//! each (upload, GPU copy, readback) and prints the adapter and the result.
//!
//! This is the placeholder for gantry's full demo: it exercises a real driver end to end and
//! fails loudly when no adapter exists or a byte differs.

use std::process::ExitCode;
use std::time::Instant;

const SIZE: u64 = 1 << 20;

fn main() -> ExitCode {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
    if adapters.is_empty() {
        eprintln!("no Vulkan adapter found: install a Vulkan driver (mesa-vulkan-drivers)");
        return ExitCode::FAILURE;
    }
    let mut failed = false;
    for adapter in adapters {
        let info = adapter.get_info();
        let software = if info.device_type == wgpu::DeviceType::Cpu {
            " (software rasteriser: no GPU on this machine)"
        } else {
            ""
        };
        println!(
            "adapter: {} [{:?}], driver {} {}{software}",
            info.name, info.device_type, info.driver, info.driver_info
        );
        match round_trip(&adapter) {
            Ok(elapsed) => println!(
                "  1 MiB round trip (upload, copy, readback): {} bytes identical in {:.2} ms",
                SIZE,
                elapsed * 1e3
            ),
            Err(why) => {
                println!("  round trip FAILED: {why}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn round_trip(adapter: &wgpu::Adapter) -> Result<f64, String> {
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("gantry demo"),
        ..Default::default()
    }))
    .map_err(|e| format!("request_device: {e}"))?;
    let pattern: Vec<u8> = (0..SIZE)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let started = Instant::now();
    let gpu = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("gantry demo: device-local"),
        size: SIZE,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("gantry demo: readback"),
        size: SIZE,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    queue.write_buffer(&gpu, 0, &pattern);
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("gantry demo: readback copy"),
    });
    encoder.copy_buffer_to_buffer(&gpu, 0, &readback, 0, SIZE);
    let submission = queue.submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    readback.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: None,
        })
        .map_err(|e| format!("poll: {e}"))?;
    rx.recv()
        .map_err(|e| format!("map callback never ran: {e}"))?
        .map_err(|e| format!("map_async: {e}"))?;
    let view = readback
        .slice(..)
        .get_mapped_range()
        .map_err(|e| format!("get_mapped_range: {e}"))?;
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(at) = view.iter().zip(&pattern).position(|(a, b)| a != b) {
        return Err(format!(
            "byte {at} differs: read {:#04x}, wrote {:#04x}",
            view[at], pattern[at]
        ));
    }
    Ok(elapsed)
}
