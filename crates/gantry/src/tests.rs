//! Unit tests on gantry-core's reference backend.

use gantry_core::reference::ReferenceBackend;
use gantry_core::{BufferDesc, BufferUsage, Device, MemoryLocation};

use crate::{BufferManager, Error, ManagerConfig, StagingConfig};

fn manager() -> BufferManager<ReferenceBackend> {
    BufferManager::new(
        Device::new(ReferenceBackend::new(256 << 20)),
        ManagerConfig::default(),
    )
    .unwrap()
}

const RW: BufferUsage = BufferUsage::TRANSFER_SRC.union(BufferUsage::TRANSFER_DST);

#[test]
fn adjacent_uploads_coalesce_into_one_copy() {
    let m = manager();
    let b = m
        .create_buffer(&BufferDesc::new(4096, RW, MemoryLocation::DeviceLocal))
        .unwrap();
    // Queued out of order; adjacent in the destination but not in staging order: the
    // sorted run merges only where staging is contiguous too.
    for i in 0..16u64 {
        b.write(i * 256, &[i as u8; 256]).unwrap();
    }
    let before = m.copy_regions_total();
    m.flush().unwrap();
    assert_eq!(m.copy_regions_total() - before, 1);
    let got = b.read(0, 4096).unwrap().wait().unwrap();
    for i in 0..16usize {
        assert!(got[i * 256..(i + 1) * 256].iter().all(|&x| x == i as u8));
    }
}

#[test]
fn dropping_the_manager_submits_what_is_queued() {
    let device = Device::new(ReferenceBackend::new(256 << 20));
    let m = BufferManager::new(device.clone(), ManagerConfig::default()).unwrap();
    let buf = device
        .create_buffer(&BufferDesc::new(4096, RW, MemoryLocation::DeviceLocal))
        .unwrap();
    // Handles dropped at once; nothing flushed before the manager goes.
    drop(m.upload(&buf, 0, &[7; 256]).unwrap());
    drop(m.upload(&buf, 256, &[8; 256]).unwrap());
    let many: Vec<(u64, &[u8])> = vec![(1024, &[9; 512][..]), (3072, &[10; 1024][..])];
    drop(m.upload_many(&buf, &many).unwrap());
    drop(m.upload(&buf, 2048, &[11; 2048][..1024]).unwrap());
    assert!(m.has_queued());
    drop(m);
    device.wait_idle().unwrap();
    let got = device.read(&buf, 0, 4096).unwrap();
    let mut want = vec![0u8; 4096];
    want[..256].fill(7);
    want[256..512].fill(8);
    want[1024..1536].fill(9);
    want[2048..3072].fill(11);
    want[3072..].fill(10);
    assert_eq!(got, want);
}

#[test]
fn joined_uploads_awaited_from_several_threads_all_complete() {
    let m = manager();
    let buf = m
        .create_buffer(&BufferDesc::new(64 << 10, RW, MemoryLocation::DeviceLocal))
        .unwrap();
    // Small uploads in a row share one operation (and its ticket).
    let handles: Vec<_> = (0..64u64)
        .map(|i| m.upload(buf.buffer(), i * 256, &[i as u8; 256]).unwrap())
        .collect();
    assert_eq!(
        core::mem::size_of_val(&handles[0]),
        core::mem::size_of::<usize>(),
        "a transfer handle is one pointer"
    );
    let mut handles = handles.into_iter();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let part: Vec<_> = handles.by_ref().take(16).collect();
            s.spawn(move || {
                for h in part {
                    gantry_core::block_on(h).unwrap();
                }
            });
        }
    });
    let got = buf.read(0, 64 << 10).unwrap().wait().unwrap();
    for i in 0..64usize {
        assert!(got[i * 256..][..256].iter().all(|&x| x == i as u8));
    }
}

#[test]
fn overlapping_uploads_last_write_wins() {
    let m = manager();
    let b = m
        .create_buffer(&BufferDesc::new(64, RW, MemoryLocation::DeviceLocal))
        .unwrap();
    b.write(0, &[1; 64]).unwrap();
    b.write(8, &[2; 16]).unwrap();
    b.write(16, &[3; 16]).unwrap();
    let got = b.read(0, 64).unwrap().wait().unwrap();
    let mut want = vec![1u8; 64];
    want[8..24].fill(2);
    want[16..32].fill(3);
    assert_eq!(got, want);
}

#[test]
fn readback_sees_only_what_was_queued_before_it() {
    let m = manager();
    let b = m
        .create_buffer(&BufferDesc::new(16, RW, MemoryLocation::DeviceLocal))
        .unwrap();
    b.write(0, &[5; 16]).unwrap();
    let r = b.read(3, 5).unwrap();
    b.write(0, &[6; 16]).unwrap();
    m.flush().unwrap();
    assert_eq!(r.wait().unwrap(), vec![5; 5]);
}

#[test]
fn bad_input_is_refused_with_values_and_queues_nothing() {
    let m = manager();
    let b = m
        .create_buffer(&BufferDesc::new(
            64,
            BufferUsage::TRANSFER_DST,
            MemoryLocation::DeviceLocal,
        ))
        .unwrap();
    assert_eq!(
        m.upload(b.buffer(), 60, &[0; 8]).unwrap_err(),
        Error::Core(gantry_core::Error::OutOfBounds {
            offset: 60,
            size: 8,
            buffer_size: 64
        })
    );
    assert!(matches!(
        m.read(b.buffer(), 0, 4).unwrap_err(),
        Error::Core(gantry_core::Error::MissingUsage { .. })
    ));
    assert!(!m.has_queued());
    assert_eq!(
        BufferManager::new(
            m.device().clone(),
            ManagerConfig {
                frames_in_flight: 0,
                ..ManagerConfig::default()
            }
        )
        .unwrap_err(),
        Error::InvalidConfig {
            field: "frames_in_flight",
            value: 0,
            reason: "must be at least 1"
        }
    );
    assert!(matches!(
        BufferManager::new(
            m.device().clone(),
            ManagerConfig {
                staging: StagingConfig {
                    chunk_size: 0,
                    ..StagingConfig::default()
                },
                ..ManagerConfig::default()
            }
        ),
        Err(Error::InvalidConfig {
            field: "staging.chunk_size",
            ..
        })
    ));
}

#[test]
fn pool_reuses_idle_buffers() {
    let m = manager();
    let a = m.acquire(1000, RW, MemoryLocation::DeviceLocal).unwrap();
    assert_eq!(a.size(), 1024);
    let id = a.id();
    drop(a);
    let b = m.acquire(600, RW, MemoryLocation::DeviceLocal).unwrap();
    assert_eq!(b.id(), id);
}

#[test]
fn streaming_ring_needs_a_frame_and_reports_full() {
    let m = manager();
    let ring = m
        .create_streaming_ring("r", 1024, BufferUsage::UNIFORM)
        .unwrap();
    assert_eq!(ring.push(&[0; 4]).unwrap_err(), Error::NotInFrame);
    ring.begin_frame().unwrap();
    let a = ring.push(&[1; 100]).unwrap();
    let b = ring.push(&[2; 100]).unwrap();
    assert_eq!(a.offset % ring.alignment(), 0);
    assert_eq!(b.offset % ring.alignment(), 0);
    assert_ne!(a.offset, b.offset);
    assert!(matches!(ring.push(&[0; 2048]), Err(Error::RingFull(_))));
    ring.end_frame().unwrap();
}

#[test]
fn pool_keeps_usages_apart_and_skips_destroyed_buffers() {
    use gantry_stats::{MetricValue, StatisticsProvider};
    let m = manager();
    let count = |name: &str| match m.pool().snapshot().get(name) {
        Some(MetricValue::Counter { value, .. }) => *value,
        other => panic!("{name}: {other:?}"),
    };
    // Same size class, different usages or locations: separate free lists.
    let a = m.acquire(4096, RW, MemoryLocation::DeviceLocal).unwrap();
    let a_id = a.id();
    drop(a);
    let b = m
        .acquire(4096, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
        .unwrap();
    assert_ne!(b.id(), a_id);
    let c = m.acquire(4096, RW, MemoryLocation::Upload).unwrap();
    assert_ne!(c.id(), a_id);
    let b_id = b.id();
    drop((b, c));
    assert_eq!(m.pool().free_buffers(), 3);
    assert_eq!(count("returned"), 3);
    assert_eq!(count("free_bytes"), 3 * 4096);
    // A buffer destroyed while on loan is never handed out again.
    let a = m.acquire(3000, RW, MemoryLocation::DeviceLocal).unwrap();
    assert_eq!(a.id(), a_id);
    assert_eq!(count("hits"), 1);
    m.device().destroy_buffer(&a).unwrap();
    drop(a);
    let again = m.acquire(4096, RW, MemoryLocation::DeviceLocal).unwrap();
    assert_ne!(again.id(), a_id);
    assert_eq!(count("discarded"), 1);
    let b = m
        .acquire(4000, BufferUsage::TRANSFER_DST, MemoryLocation::DeviceLocal)
        .unwrap();
    assert_eq!(b.id(), b_id);
    drop((again, b));
    m.pool().clear();
    assert_eq!(m.pool().free_buffers(), 0);
    m.pool().reset();
    assert_eq!(count("hits"), 0);
}

#[test]
fn staging_fragmentation_formula() {
    use crate::staging::fragmentation;
    const C: u64 = 1024;
    // Nothing free; idle chunks (each one whole free range): not fragmented.
    assert_eq!(fragmentation([(0, 0), (0, 0)].into_iter(), C), 0.0);
    assert_eq!(fragmentation([(C, C), (C, C), (C, C)].into_iter(), C), 0.0);
    // One chunk: the ring's own `1 - largest / free`.
    assert_eq!(fragmentation([(400, 100)].into_iter(), C), 0.75);
    // A chunk with room for any region beside fragmented ones: not fragmented.
    assert_eq!(fragmentation([(C, C), (600, 300)].into_iter(), C), 0.0);
    // Two chunks, each half free in one range: a whole-chunk region does not fit.
    assert_eq!(
        fragmentation([(C / 2, C / 2), (C / 2, C / 2)].into_iter(), C),
        0.5
    );
    // No chunks at all.
    assert_eq!(fragmentation(core::iter::empty(), 0), 0.0);
}

#[test]
fn idle_staging_is_not_fragmented() {
    use gantry_stats::MetricValue;
    let m = BufferManager::new(
        Device::new(ReferenceBackend::new(256 << 20)),
        ManagerConfig {
            staging: StagingConfig {
                chunk_size: 4096,
                initial_chunks: 2,
                ..StagingConfig::default()
            },
            ..ManagerConfig::default()
        },
    )
    .unwrap();
    let ring_fragmentation =
        |m: &BufferManager<ReferenceBackend>| match m.report().get("staging", "ring.fragmentation")
        {
            Some(MetricValue::Float { value, .. }) => value.unwrap_or(f64::NAN),
            other => panic!("ring.fragmentation: {other:?}"),
        };
    assert_eq!(m.staging_chunks(), 2);
    assert_eq!(m.staging_fragmentation(), 0.0);
    assert_eq!(ring_fragmentation(&m), 0.0);
    // Uploads spread over both chunks: the figure follows the chunks' free ranges.
    let b = m
        .create_buffer(&BufferDesc::new(8192, RW, MemoryLocation::DeviceLocal))
        .unwrap();
    b.write(0, &[1; 3072]).unwrap();
    b.write(4096, &[2; 2048]).unwrap();
    let reports = m.staging_reports();
    let free: u64 = reports.iter().map(|r| r.free).sum();
    let largest = reports.iter().map(|r| r.largest_free).max().unwrap();
    let want = 1.0 - largest as f64 / free.min(4096) as f64;
    assert!(want > 0.0, "{reports:?}");
    assert_eq!(m.staging_fragmentation(), want);
    assert_eq!(ring_fragmentation(&m), want);
    // Idle again after the GPU is done.
    m.wait_idle().unwrap();
    assert_eq!(m.staging_fragmentation(), 0.0);
    assert_eq!(ring_fragmentation(&m), 0.0);
    assert_eq!(m.staging_usage().used, 0);
}

/// One step of [`uploads_of_every_size_match_a_model`].
#[derive(Debug, Clone)]
enum Step {
    /// `BufferManager::upload` of `len` bytes of `fill` at the slot.
    Upload {
        slot: u64,
        len: u64,
        fill: u8,
    },
    /// `BufferManager::upload_many` of these `(slot, len, fill)` entries.
    Many(Vec<(u64, u64, u8)>),
    Flush,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    // Lengths in multiples of 4 (the copy alignment): those copied under the staging lock (up
    // to 1 KiB), those copied outside it (to 16 KiB) and those written straight into the
    // mapping; multiples of 16 and not, so that alignment padding falls between regions.
    let len = prop_oneof![
        6 => (1u64..=64).prop_map(|n| n * 4),
        2 => (257u64..=1024).prop_map(|n| n * 4),
        1 => (1025u64..=6000).prop_map(|n| n * 4),
    ];
    let entry = (0u64..1024, len.clone(), any::<u8>());
    prop_oneof![
        12 => entry.clone().prop_map(|(slot, len, fill)| Step::Upload { slot, len, fill }),
        3 => proptest::collection::vec(entry, 1..12).prop_map(Step::Many),
        1 => Just(Step::Flush),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Uploads of every size class, alone and in lists, interleaved, through small chunks
    /// that wrap and fill: the buffer ends up as a host-side model says. The staging paths
    /// differ by size (gathered under the staging lock, gathered outside it, written to the
    /// mapping), and their regions sit side by side in a chunk.
    #[test]
    fn uploads_of_every_size_match_a_model(steps in proptest::collection::vec(step(), 1..120)) {
        const SIZE: u64 = 64 << 10;
        let m = BufferManager::new(
            Device::new(ReferenceBackend::new(64 << 20)),
            ManagerConfig {
                staging: StagingConfig {
                    chunk_size: 96 << 10,
                    initial_chunks: 1,
                    max_chunks: 3,
                    ..StagingConfig::default()
                },
                ..ManagerConfig::default()
            },
        )
        .unwrap();
        let b = m
            .create_buffer(&BufferDesc::new(SIZE, RW, MemoryLocation::DeviceLocal))
            .unwrap();
        let mut model = vec![0u8; SIZE as usize];
        // Each entry's bytes count up from its fill value, so misplaced bytes show.
        let bytes = |len: u64, fill: u8| -> Vec<u8> {
            (0..len).map(|i| fill.wrapping_add(i as u8)).collect()
        };
        // Slots are 64 bytes apart; the end is clamped so the entry stays in the buffer.
        let place = |slot: u64, len: u64| (slot * 64).min(SIZE - len) / 4 * 4;
        for s in &steps {
            match s {
                Step::Upload { slot, len, fill } => {
                    let at = place(*slot, *len);
                    let data = bytes(*len, *fill);
                    m.upload(b.buffer(), at, &data).unwrap();
                    model[at as usize..(at + len) as usize].copy_from_slice(&data);
                }
                Step::Many(entries) => {
                    let owned: Vec<(u64, Vec<u8>)> = entries
                        .iter()
                        .map(|&(slot, len, fill)| (place(slot, len), bytes(len, fill)))
                        .collect();
                    let writes: Vec<(u64, &[u8])> =
                        owned.iter().map(|(at, d)| (*at, &d[..])).collect();
                    m.upload_many(b.buffer(), &writes).unwrap();
                    for (at, d) in &owned {
                        model[*at as usize..*at as usize + d.len()].copy_from_slice(d);
                    }
                }
                Step::Flush => {
                    m.flush().unwrap();
                }
            }
        }
        let got = m.read(b.buffer(), 0, SIZE).unwrap().wait().unwrap();
        if let Some(i) = (0..SIZE as usize).find(|&i| got[i] != model[i]) {
            proptest::prop_assert!(false, "byte {} is {}, the model says {}", i, got[i], model[i]);
        }
    }
}

/// A run of small uploads takes one staging allocation, grown ahead of the uploads, and gives
/// it back once the GPU is done: the host-side statistics of the staging rings show one
/// allocation, then nothing.
#[test]
fn small_uploads_share_one_staging_allocation() {
    let m = manager();
    let b = m
        .create_buffer(&BufferDesc::new(1 << 20, RW, MemoryLocation::DeviceLocal))
        .unwrap();
    let stats = m.host_stats();
    let before = stats.snapshot();
    for i in 0..1000u64 {
        m.upload(b.buffer(), i * 512, &[i as u8; 256]).unwrap();
    }
    let open = stats.snapshot();
    assert_eq!(open.allocations - before.allocations, 1);
    // Reserved ahead of the uploads, at most 64 KiB more than they hold.
    assert!(open.live_bytes >= 256_000 && open.live_bytes <= 256_000 + (64 << 10));
    assert_eq!(m.joined_uploads_total(), 999);
    // The flush trims it and ties it to the submission; the reference backend completes
    // at once, so the flush's reclaim gives it back.
    m.flush().unwrap();
    m.wait_idle().unwrap();
    let after = stats.snapshot();
    assert_eq!(after.live_bytes, 0);
    assert_eq!(after.deallocations - before.deallocations, 1);
    let got = b.read(0, 1 << 20).unwrap().wait().unwrap();
    for i in 0..1000usize {
        assert!(
            got[i * 512..i * 512 + 256].iter().all(|&x| x == i as u8),
            "upload {i}"
        );
    }
}
