//! `write_mapped_many` into a mapped upload buffer: many ascending entries go to the copy
//! threads (through one view from the buffer's start), others are copied in order with the
//! later write winning. Every byte is compared with a model after unmapping. Runs with wgpu's
//! validation on.

use gantry_core::{BufferDesc, BufferUsage, Device, MapMode, MemoryLocation};
use gantry_wgpu::{WgpuBackend, WgpuOptions};

fn device() -> Option<Device<WgpuBackend>> {
    match WgpuBackend::new(&WgpuOptions {
        validation: true,
        ..WgpuOptions::default()
    }) {
        Ok(b) => Some(Device::new(b)),
        Err(e) => {
            eprintln!("SKIPPED: no wgpu adapter: {e}");
            None
        }
    }
}

#[test]
fn write_mapped_many_lands_every_entry() {
    let Some(d) = device() else { return };
    let size: u64 = 4 << 20;
    let buf = d
        .create_buffer(
            &BufferDesc::new(size, BufferUsage::TRANSFER_SRC, MemoryLocation::Upload)
                .with_label("mapped many"),
        )
        .expect("buffer");
    // A 4 MiB pattern first, at an unaligned offset (one copy the copy threads share).
    let mut model: Vec<u8> = (0..size).map(|i| (i * 7 + (i >> 12)) as u8).collect();
    d.map(&buf, MapMode::Write).expect("map");
    d.write_mapped(&buf, 0, &[0u8; 3]).expect("head");
    d.write_mapped(&buf, 3, &model[3..]).expect("pattern");
    model[..3].fill(0);
    // 10,000 ascending 256-byte entries with gaps (2.56 MB: the copy threads' path), from
    // offset 4096 (the view still starts at 0).
    let datas: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| (0..256u32).map(|b| (b ^ i ^ (i >> 8)) as u8).collect())
        .collect();
    let writes: Vec<(u64, &[u8])> = datas
        .iter()
        .enumerate()
        .map(|(i, d)| (4096 + i as u64 * 384, &d[..]))
        .collect();
    d.write_mapped_many(&buf, &writes).expect("ascending");
    for &(o, b) in &writes {
        model[o as usize..o as usize + b.len()].copy_from_slice(b);
    }
    // Overlapping, descending entries (the in-order path): the later wins.
    let a = vec![0xaau8; 512];
    let b = vec![0xbbu8; 512];
    let overlapping: Vec<(u64, &[u8])> = (0..2000u64)
        .map(|i| {
            (
                size - 1024 - i * 256,
                if i % 2 == 0 { &a[..] } else { &b[..] },
            )
        })
        .collect();
    d.write_mapped_many(&buf, &overlapping)
        .expect("overlapping");
    for &(o, b) in &overlapping {
        model[o as usize..o as usize + b.len()].copy_from_slice(b);
    }
    d.unmap(&buf).expect("unmap");
    let got = d.read(&buf, 0, size).expect("read");
    assert!(got == model, "the mapped bytes differ from the model");
    d.wait_idle().expect("wait");
    let errors = d.raw().take_uncaptured_errors();
    assert!(errors.is_empty(), "uncaptured wgpu errors: {errors:#?}");
}
