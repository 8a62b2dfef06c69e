//! Direct writes (`VulkanOptions::direct_writes`): on a device whose device-local memory the
//! host can reach (lavapipe), a batch's small writes and copies are done on the host at
//! submission when the device is idle, and on the device otherwise; every byte lands as
//! program order says either way, with validation and synchronization validation on.

mod common;

use gantry_core::{BufferDesc, BufferUsage, Device, MemoryLocation};
use gantry_vulkan::{VulkanBackend, VulkanOptions};

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn buffer(
    d: &Device<VulkanBackend>,
    size: u64,
    location: MemoryLocation,
) -> gantry_core::Buffer<VulkanBackend> {
    let usage = match location {
        MemoryLocation::Upload => BufferUsage::TRANSFER_SRC,
        _ => BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST,
    };
    d.create_buffer(&BufferDesc::new(size, usage, location))
        .unwrap()
}

#[test]
fn idle_batches_write_on_the_host_busy_ones_on_the_device() {
    let options = VulkanOptions::validated().with_direct_writes(Some(true));
    common::with_backend_options("direct writes", &options, |backend| {
        let d = Device::new(backend.clone());
        let size: u64 = 1 << 20;
        let a = buffer(&d, size, MemoryLocation::DeviceLocal);
        let b = buffer(&d, size, MemoryLocation::DeviceLocal);
        let upload = buffer(&d, size, MemoryLocation::Upload);
        let up = bytes(1, size as usize);
        d.write(&upload, 0, &up).unwrap();

        // A new buffer is cleared by the next submission: writes in that submission must
        // not be done before it (they would be cleared), so they take the device path.
        let fresh = buffer(&d, size, MemoryLocation::DeviceLocal);
        let mut fm = vec![0u8; size as usize];
        let before = backend.direct_writes();
        let mut batch = d.batch().unwrap();
        for i in 0..64usize {
            let data = bytes(100 + i as u64, 256);
            batch.write(&fresh, (i * 4096) as u64, &data).unwrap();
            fm[i * 4096..i * 4096 + 256].copy_from_slice(&data);
        }
        batch.submit().unwrap();
        assert_eq!(
            backend.direct_writes(),
            before,
            "a cleared buffer is not written directly"
        );
        assert!(d.read(&fresh, 0, size).unwrap() == fm);

        let mut am = bytes(2, size as usize);
        let mut bm = bytes(3, size as usize);
        d.write(&a, 0, &am).unwrap();
        d.write(&b, 0, &bm).unwrap();
        d.wait_idle().unwrap();
        let direct = backend.direct_writes_enabled();

        // Idle: writes (overlapping: last wins) and copies from the upload buffer go direct.
        let before = backend.direct_writes();
        let mut batch = d.batch().unwrap();
        for i in 0..300usize {
            let at = (i * 700) % (size as usize - 512);
            let data = bytes(10 + i as u64, 4 * (1 + i % 64));
            batch.write(&a, at as u64, &data).unwrap();
            am[at..at + data.len()].copy_from_slice(&data);
        }
        for i in 0..300usize {
            let (from, at) = (
                (i * 1024) % (size as usize - 256),
                (i * 3000) % (size as usize - 256),
            );
            batch
                .copy(&upload, from as u64, &b, at as u64, 256)
                .unwrap();
            bm[at..at + 256].copy_from_slice(&up[from..from + 256]);
        }
        batch.submit().unwrap();
        if direct {
            assert_eq!(backend.direct_writes(), before + 600, "idle: all direct");
        }
        assert!(d.read(&a, 0, size).unwrap() == am);
        assert!(d.read(&b, 0, size).unwrap() == bm);

        // A copy b -> a recorded first: a's later small writes must follow it on the device.
        let before = backend.direct_writes();
        let mut batch = d.batch().unwrap();
        batch.copy(&b, 0, &a, 0, 64 << 10).unwrap();
        am[..64 << 10].copy_from_slice(&bm[..64 << 10]);
        for i in 0..100usize {
            let data = bytes(500 + i as u64, 64);
            batch.write(&a, (i * 512) as u64, &data).unwrap();
            am[i * 512..i * 512 + 64].copy_from_slice(&data);
        }
        // Small copies a -> b read what the writes above wrote.
        for i in 0..100usize {
            batch
                .copy(&a, (i * 512) as u64, &b, (i * 2048) as u64, 64)
                .unwrap();
            let src = am[i * 512..i * 512 + 64].to_vec();
            bm[i * 2048..i * 2048 + 64].copy_from_slice(&src);
        }
        batch.submit().unwrap();
        assert_eq!(
            backend.direct_writes(),
            before,
            "a touched earlier in the batch"
        );
        assert!(d.read(&a, 0, size).unwrap() == am);
        assert!(d.read(&b, 0, size).unwrap() == bm);

        // Busy: a large copy still running when the next batch submits: device path.
        let big = buffer(&d, 64 << 20, MemoryLocation::DeviceLocal);
        let other = buffer(&d, 64 << 20, MemoryLocation::DeviceLocal);
        let mut batch = d.batch().unwrap();
        batch.copy(&big, 0, &other, 0, 64 << 20).unwrap();
        batch.submit().unwrap();
        let before = backend.direct_writes();
        let mut batch = d.batch().unwrap();
        for i in 0..100usize {
            let data = bytes(900 + i as u64, 128);
            batch.write(&a, (i * 1024) as u64, &data).unwrap();
            am[i * 1024..i * 1024 + 128].copy_from_slice(&data);
        }
        let index = batch.submit().unwrap();
        let busy_direct = backend.direct_writes() - before;
        assert!(
            busy_direct == 0 || busy_direct == 100,
            "all or none: {busy_direct}"
        );
        d.wait(index, None).unwrap();
        assert!(d.read(&a, 0, size).unwrap() == am);
        drop((a, b, upload, fresh, big, other));
        d.wait_idle().unwrap();
    });
}
