//! The scatter dispatch (`gantry_core::scatter`): a batch of many small disjoint writes to one
//! buffer becomes one compute dispatch, long disjoint runs of rewritten slots a dispatch each,
//! overlapping ones otherwise ordered copies, and every byte lands exactly as program order
//! says, with validation and synchronization validation on.

mod common;

use gantry_core::{BufferDesc, BufferUsage, Device, MemoryLocation};
use gantry_vulkan::{VulkanBackend, VulkanOptions};

/// xorshift: reproducible bytes and shuffles without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn device_local(
    d: &Device<VulkanBackend>,
    size: u64,
    label: &str,
) -> gantry_core::Buffer<VulkanBackend> {
    d.create_buffer(
        &BufferDesc::new(
            size,
            BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST,
            MemoryLocation::DeviceLocal,
        )
        .with_label(label),
    )
    .unwrap()
}

#[test]
fn disjoint_small_writes_take_one_dispatch_overlapping_ones_do_not() {
    common::with_backend("scatter", |backend| {
        assert!(
            !backend.has_dedicated_transfer_queue(),
            "the universal queue is the default"
        );
        assert!(backend.scatter_supported());
        let d = Device::new(backend.clone());
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let size: u64 = 4 << 20;
        let buf = device_local(&d, size, "scatter target");
        let mut model = rng.bytes(size as usize);
        d.write(&buf, 0, &model).unwrap();

        // 10,000 disjoint 256-byte writes in shuffled slots: one dispatch.
        let mut slots: Vec<u64> = (0..10_000).collect();
        for i in (1..slots.len()).rev() {
            slots.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let before = backend.scatter_dispatches();
        let mut batch = d.batch().unwrap();
        for &slot in &slots {
            let data = rng.bytes(256);
            let at = (slot * 384) as usize;
            batch.write(&buf, at as u64, &data).unwrap();
            model[at..at + 256].copy_from_slice(&data);
        }
        batch.submit().unwrap();
        assert_eq!(backend.scatter_dispatches(), before + 1, "one dispatch");
        assert!(d.read(&buf, 0, size).unwrap() == model, "disjoint writes");

        // 2,000 overlapping writes: copies in program order, no dispatch.
        let before = backend.scatter_dispatches();
        let mut batch = d.batch().unwrap();
        for _ in 0..2000 {
            let len = ((rng.next() % 64) + 1) as usize * 4;
            let at = (rng.next() % 1024) as usize * 4;
            let data = rng.bytes(len);
            batch.write(&buf, at as u64, &data).unwrap();
            model[at..at + len].copy_from_slice(&data);
        }
        batch.submit().unwrap();
        assert_eq!(backend.scatter_dispatches(), before, "no dispatch");
        assert!(
            d.read(&buf, 0, size).unwrap() == model,
            "overlapping writes"
        );

        // 3,000 disjoint writes, then 1,500 of the same slots again (the later wins): two
        // disjoint runs, a dispatch each, in order.
        let before = backend.scatter_dispatches();
        let mut batch = d.batch().unwrap();
        for &slot in slots[..3000].iter().chain(&slots[..1500]) {
            let data = rng.bytes(256);
            let at = (slot * 384) as usize;
            batch.write(&buf, at as u64, &data).unwrap();
            model[at..at + 256].copy_from_slice(&data);
        }
        batch.submit().unwrap();
        assert_eq!(
            backend.scatter_dispatches(),
            before + 2,
            "a dispatch per run"
        );
        assert!(d.read(&buf, 0, size).unwrap() == model, "rewritten slots");

        // Writes, a copy reading them, writes over the copied range: the deferred writes
        // are emitted before the copy, the later ones after it.
        let other = device_local(&d, size, "scatter other");
        let mut other_model = vec![0u8; size as usize];
        let before = backend.scatter_dispatches();
        let mut batch = d.batch().unwrap();
        for i in 0..64usize {
            let data = rng.bytes(128);
            batch.write(&buf, (i * 256) as u64, &data).unwrap();
            model[i * 256..i * 256 + 128].copy_from_slice(&data);
        }
        batch.copy(&buf, 0, &other, 4096, 64 * 256).unwrap();
        other_model[4096..4096 + 64 * 256].copy_from_slice(&model[..64 * 256]);
        for i in 0..64usize {
            let data = rng.bytes(64);
            let at = 4096 + i * 256 + 64;
            batch.write(&other, at as u64, &data).unwrap();
            other_model[at..at + 64].copy_from_slice(&data);
            batch.write(&buf, (i * 256) as u64, &data).unwrap();
            model[i * 256..i * 256 + 64].copy_from_slice(&data);
        }
        batch.submit().unwrap();
        assert_eq!(backend.scatter_dispatches(), before + 3, "three dispatches");
        assert!(
            d.read(&buf, 0, size).unwrap() == model,
            "interleaved: source"
        );
        assert!(
            d.read(&other, 0, size).unwrap() == other_model,
            "interleaved: destination"
        );
        drop((buf, other));
        d.wait_idle().unwrap();
    });
}

#[test]
fn writes_spanning_two_staging_chunks_take_two_dispatches() {
    common::with_backend("scatter two chunks", |backend| {
        let d = Device::new(backend.clone());
        let mut rng = Rng(77);
        let write = gantry_core::scatter::MAX_WRITE as usize;
        let count = 2200usize; // 2200 x 16 KiB: more than one 32 MiB staging chunk
        let size = (count * write) as u64;
        let buf = device_local(&d, size, "scatter two chunks");
        let mut model = vec![0u8; size as usize];
        let before = backend.scatter_dispatches();
        let mut batch = d.batch().unwrap();
        for i in (0..count).rev() {
            let data = rng.bytes(write);
            batch.write(&buf, (i * write) as u64, &data).unwrap();
            model[i * write..(i + 1) * write].copy_from_slice(&data);
        }
        batch.submit().unwrap();
        assert_eq!(backend.scatter_dispatches(), before + 2);
        assert!(d.read(&buf, 0, size).unwrap() == model);
        drop(buf);
        d.wait_idle().unwrap();
    });
}

#[test]
fn many_more_writes_than_workgroups_in_one_dispatch() {
    common::with_backend("scatter 70,000 writes", |backend| {
        let d = Device::new(backend.clone());
        let mut rng = Rng(5);
        let size: u64 = (1 << 20) + 12; // odd-sized: the last write ends at the buffer's end
        let buf = device_local(&d, size, "scatter 70k");
        let mut model = vec![0u8; size as usize];
        let before = backend.scatter_dispatches();
        let mut batch = d.batch().unwrap();
        for i in 0..70_000usize {
            let data = rng.bytes(4);
            let at = i * 12 + 8;
            batch.write(&buf, at as u64, &data).unwrap();
            model[at..at + 4].copy_from_slice(&data);
        }
        let tail = rng.bytes(4);
        batch.write(&buf, size - 4, &tail).unwrap();
        model[size as usize - 4..].copy_from_slice(&tail);
        batch.submit().unwrap();
        assert_eq!(
            backend.scatter_dispatches(),
            before + 1,
            "one dispatch, records shared out over the workgroups"
        );
        assert!(d.read(&buf, 0, size).unwrap() == model);
        drop(buf);
        d.wait_idle().unwrap();
    });
}

#[test]
fn dedicated_transfer_queue_keeps_copies() {
    let options = VulkanOptions::validated()
        .with_scatter(Some(true))
        .with_direct_writes(Some(false))
        .with_dedicated_transfer_queue(true);
    common::with_backend_options("scatter on the transfer queue", &options, |backend| {
        // lavapipe has no transfer-only family: there the option changes nothing.
        if backend.has_dedicated_transfer_queue() {
            assert!(!backend.scatter_supported());
        }
        let d = Device::new(backend.clone());
        let buf = device_local(&d, 1 << 20, "scatter transfer queue");
        let mut model = vec![0u8; 1 << 20];
        let mut batch = d.batch().unwrap();
        for i in 0..100usize {
            let data = vec![i as u8; 256];
            batch.write(&buf, (i * 1024) as u64, &data).unwrap();
            model[i * 1024..i * 1024 + 256].copy_from_slice(&data);
        }
        let before = backend.scatter_dispatches();
        batch.submit().unwrap();
        let expected = u64::from(backend.scatter_supported());
        assert_eq!(backend.scatter_dispatches(), before + expected);
        assert!(d.read(&buf, 0, 1 << 20).unwrap() == model);
        drop(buf);
        d.wait_idle().unwrap();
    });
}

/// The default (`scatter: None`): GPUs scatter every group; CPU devices (lavapipe) only groups
/// in 16-byte multiples (the wide shader), and keep copies for the rest. Both land exactly.
#[test]
fn auto_scatter_takes_wide_groups_everywhere_and_word_groups_on_gpus() {
    let options = VulkanOptions::validated().with_direct_writes(Some(false));
    common::with_backend_options("auto scatter", &options, |backend| {
        assert!(backend.scatter_supported());
        let cpu = backend.adapter_info().device_type == ash::vk::PhysicalDeviceType::CPU;
        let d = Device::new(backend.clone());
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let size: u64 = 1 << 20;
        let buf = device_local(&d, size, "auto scatter");
        let mut model = rng.bytes(size as usize);
        d.write(&buf, 0, &model).unwrap();
        for (len, scattered) in [(256usize, true), (260, !cpu)] {
            let mut batch = d.batch().unwrap();
            for i in 0..500usize {
                let data = rng.bytes(len);
                let at = (499 - i) * 1024;
                batch.write(&buf, at as u64, &data).unwrap();
                model[at..at + len].copy_from_slice(&data);
            }
            let before = backend.scatter_dispatches();
            batch.submit().unwrap();
            assert_eq!(
                backend.scatter_dispatches(),
                before + u64::from(scattered),
                "{len}-byte writes on a {} device",
                if cpu { "CPU" } else { "GPU" }
            );
            assert!(d.read(&buf, 0, size).unwrap() == model, "{len}-byte writes");
        }
        // Forced on: the word group scatters on every device.
        backend.set_scatter(true);
        let mut batch = d.batch().unwrap();
        for i in 0..100usize {
            let data = rng.bytes(20);
            batch.write(&buf, (i * 64) as u64, &data).unwrap();
            model[i * 64..i * 64 + 20].copy_from_slice(&data);
        }
        let before = backend.scatter_dispatches();
        batch.submit().unwrap();
        assert_eq!(backend.scatter_dispatches(), before + 1);
        assert!(d.read(&buf, 0, size).unwrap() == model);
        drop(buf);
        d.wait_idle().unwrap();
    });
}

/// Small copies between buffers with storage usage join the destination's deferred writes:
/// 100 copies from an upload buffer are one dispatch; a dispatch that writes a buffer right
/// after one that read it (deferred copies from `x`, then deferred writes to `x`) is ordered
/// by a barrier (synchronization validation is on), and every byte lands.
#[test]
fn small_copies_are_scattered_from_their_source() {
    let options = VulkanOptions::validated()
        .with_scatter(Some(true))
        .with_direct_writes(Some(false));
    common::with_backend_options("scatter copies", &options, |backend| {
        let d = Device::new(backend.clone());
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let size: u64 = 1 << 20;
        let upload = d
            .create_buffer(&BufferDesc::new(
                size,
                BufferUsage::TRANSFER_SRC,
                MemoryLocation::Upload,
            ))
            .unwrap();
        let up = rng.bytes(size as usize);
        d.write(&upload, 0, &up).unwrap();
        let x = device_local(&d, size, "scatter copies x");
        let a = device_local(&d, size, "scatter copies a");
        let mut xm = rng.bytes(size as usize);
        let mut am = rng.bytes(size as usize);
        d.write(&x, 0, &xm).unwrap();
        d.write(&a, 0, &am).unwrap();

        let before = backend.scatter_dispatches();
        let mut batch = d.batch().unwrap();
        for i in (0..100usize).rev() {
            batch
                .copy(&upload, (i * 512) as u64, &x, (i * 1024) as u64, 256)
                .unwrap();
            xm[i * 1024..i * 1024 + 256].copy_from_slice(&up[i * 512..i * 512 + 256]);
        }
        batch.submit().unwrap();
        assert_eq!(
            backend.scatter_dispatches(),
            before + 1,
            "100 copies, one dispatch"
        );
        assert!(d.read(&x, 0, size).unwrap() == xm);

        let before = backend.scatter_dispatches();
        let mut batch = d.batch().unwrap();
        for i in (0..100usize).rev() {
            batch
                .copy(&x, (i * 1024) as u64, &a, (i * 2048) as u64, 512)
                .unwrap();
            am[i * 2048..i * 2048 + 512].copy_from_slice(&xm[i * 1024..i * 1024 + 512]);
        }
        // Writes over the bytes those copies read: the copies' dispatch comes first.
        for i in 0..100usize {
            let data = rng.bytes(256);
            batch.write(&x, (i * 1024 + 256) as u64, &data).unwrap();
            xm[i * 1024 + 256..i * 1024 + 512].copy_from_slice(&data);
        }
        batch.submit().unwrap();
        assert_eq!(
            backend.scatter_dispatches(),
            before + 2,
            "copies, then writes"
        );
        assert!(
            d.read(&a, 0, size).unwrap() == am,
            "a: the bytes x had before the writes"
        );
        assert!(d.read(&x, 0, size).unwrap() == xm);
        drop((upload, x, a));
        d.wait_idle().unwrap();
    });
}
