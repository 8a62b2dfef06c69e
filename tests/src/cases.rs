//! The cases, written once against the facade, generic over the backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gantry_core::{
    Backend, Buffer, BufferDesc, BufferUsage, Device, DeviceType, Error, MapMode, MemoryLocation,
    SubmissionIndex, align_up, block_on,
};

use crate::{Case, Outcome};

/// Every generic case, in table order.
#[must_use]
pub fn all<B: Backend>() -> Vec<Case<B>> {
    macro_rules! case {
        ($name:ident) => {
            case!($name, &[], false)
        };
        ($name:ident, $expected:expr, $slow:expr) => {
            Case {
                name: stringify!($name),
                expected_messages: $expected,
                slow: $slow,
                run: |d| to_outcome($name(d)),
            }
        };
    }
    vec![
        case!(usage_location_matrix),
        case!(round_trip_sizes),
        case!(round_trip_device_local_random),
        case!(round_trip_upload_mapped),
        case!(round_trip_readback_mapped),
        case!(mapped_at_creation),
        case!(typed_helpers),
        case!(copy_with_offsets),
        case!(batch_order_and_coalescing),
        case!(scatter_small_writes),
        case!(scatter_small_copies),
        case!(batch_write_many),
        case!(batch_copy_many),
        case!(batch_copy_list),
        case!(read_async),
        case!(submissions_wait_poll_callbacks),
        case!(cpu_gpu_hazards),
        case!(deferred_destroy),
        case!(bad_inputs),
        case!(threads),
        case!(create_destroy_10000),
        // A request beyond the heap: the layer may name the heap-size rule it breaks.
        case!(
            out_of_memory,
            &["01713", "OutOfDeviceMemory", "OUT_OF_DEVICE_MEMORY"],
            false
        ),
        case!(round_trip_256mib, &[], true),
    ]
    .into_iter()
    .chain(crate::manager::cases::<B>())
    .collect()
}

type R = Result<Outcome, String>;

fn to_outcome(r: R) -> Outcome {
    r.unwrap_or_else(Outcome::Fail)
}

fn pass(note: impl Into<String>) -> R {
    Ok(Outcome::Pass(note.into()))
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// `?` for gantry results inside cases, naming the step.
trait Step<T> {
    fn step(self, what: &str) -> Result<T, String>;
}

impl<T> Step<T> for Result<T, Error> {
    fn step(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: unexpected error: {e:?}"))
    }
}

/// Asserts the exact error (variant and values).
fn expect_err<T: core::fmt::Debug>(
    what: &str,
    got: Result<T, Error>,
    want: &Error,
) -> Result<(), String> {
    match got {
        Err(e) if &e == want => Ok(()),
        Err(e) => Err(format!("{what}: expected {want:?}, got {e:?}")),
        Ok(v) => Err(format!("{what}: expected {want:?}, got Ok({v:?})")),
    }
}

pub(crate) fn compare(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    check!(
        got.len() == want.len(),
        "{what}: read {} bytes, expected {}",
        got.len(),
        want.len()
    );
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        return Err(format!(
            "{what}: byte {at} differs: read {:#04x}, expected {:#04x}",
            got[at], want[at]
        ));
    }
    Ok(())
}

/// xorshift64*: reproducible random numbers without a dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).expect("test sizes fit in memory")
}

fn create<B: Backend>(
    d: &Device<B>,
    label: &str,
    size: u64,
    usage: BufferUsage,
    location: MemoryLocation,
) -> Result<Buffer<B>, String> {
    d.create_buffer(&BufferDesc::new(size, usage, location).with_label(label))
        .step(&format!("create {label}"))
}

const RW: BufferUsage = BufferUsage::TRANSFER_SRC.union(BufferUsage::TRANSFER_DST);

fn usage_location_matrix<B: Backend>(d: &Device<B>) -> R {
    let limits = d.limits().clone();
    let mut notes = Vec::new();
    for location in MemoryLocation::ALL {
        let supported = limits.supported_usage(location);
        let mut unsupported = Vec::new();
        for flag in BufferUsage::all().iter() {
            let got = d.create_buffer(&BufferDesc::new(256, flag, location).with_label("matrix"));
            if supported.contains(flag) {
                let buffer = got.step(&format!("{flag:?} at {location}"))?;
                let want = flag.with_automatic_flags(location, supported);
                check!(
                    buffer.usage() == want,
                    "{flag:?} at {location}: usage {:?}, expected {want:?} (automatic flags)",
                    buffer.usage()
                );
                let align = limits.size_alignment(want, location);
                check!(
                    buffer.size() >= 256 && buffer.size() % align == 0,
                    "{flag:?} at {location}: size {} not rounded up to {align}",
                    buffer.size()
                );
            } else {
                expect_err(
                    &format!("{flag:?} at {location}"),
                    got,
                    &Error::Unsupported {
                        usage: flag,
                        location,
                    },
                )?;
                unsupported.push(format!("{flag:?}"));
            }
        }
        // Everything supported at once, and the empty set.
        d.create_buffer(&BufferDesc::new(256, supported, location))
            .step(&format!("all supported flags at {location}"))?;
        let none = d.create_buffer(&BufferDesc::new(256, BufferUsage::empty(), location));
        if location == MemoryLocation::DeviceLocal {
            expect_err("no flags at device-local", none, &Error::EmptyUsage)?;
        } else {
            none.step(&format!("no flags at {location} (gets a transfer flag)"))?;
        }
        notes.push(format!(
            "{location}: unsupported [{}]",
            unsupported.join(", ")
        ));
    }
    pass(notes.join("; "))
}

fn round_trip_sizes<B: Backend>(d: &Device<B>) -> R {
    let mut rng = Rng::new(1);
    let sizes: [u64; 10] = [1, 2, 3, 4, 5, 255, 256, 4100, (1 << 20) + 12, 16 << 20];
    for location in MemoryLocation::ALL {
        for &size in &sizes {
            let data = rng.bytes(usize_of(size));
            let usage = if location == MemoryLocation::Readback {
                BufferUsage::empty()
            } else {
                BufferUsage::TRANSFER_SRC
            };
            let buffer = d
                .create_buffer_init(Some("sizes"), usage, location, &data)
                .step(&format!("create_buffer_init {size} B at {location}"))?;
            check!(
                buffer.requested_size() == size && buffer.size() >= size,
                "size bookkeeping"
            );
            let back = d
                .read(&buffer, 0, size)
                .step(&format!("read {size} B at {location}"))?;
            compare(&format!("{size} B at {location}"), &back, &data)?;
            if size > 16 {
                // An unaligned interior range (large ones are copied by several threads).
                let part = d
                    .read(&buffer, 5, size - 9)
                    .step(&format!("read 5..{} at {location}", size - 4))?;
                compare(
                    &format!("5..{} of {size} B at {location}", size - 4),
                    &part,
                    &data[5..usize_of(size - 4)],
                )?;
            }
        }
    }
    pass(format!(
        "sizes {sizes:?} at every location, exact bytes back"
    ))
}

fn round_trip_device_local_random<B: Backend>(d: &Device<B>) -> R {
    let seed = 0x5eed_0001;
    let mut rng = Rng::new(seed);
    let size: u64 = 4 << 20;
    let buffer = create(
        d,
        "random device-local",
        size,
        RW | BufferUsage::STORAGE,
        MemoryLocation::DeviceLocal,
    )?;
    let mut shadow = rng.bytes(usize_of(size));
    d.write(&buffer, 0, &shadow).step("initial write")?;
    let align = d.limits().copy_alignment;
    for _ in 0..48 {
        let max = if rng.below(8) == 0 { 1 << 20 } else { 64 << 10 };
        let len = (1 + rng.below(max / align)) * align;
        let offset = rng.below((size - len) / align + 1) * align;
        let data = rng.bytes(usize_of(len));
        d.write(&buffer, offset, &data).step("random write")?;
        shadow[usize_of(offset)..usize_of(offset + len)].copy_from_slice(&data);
    }
    let all = d.read(&buffer, 0, size).step("read all")?;
    compare("whole buffer", &all, &shadow)?;
    for _ in 0..32 {
        let len = 1 + rng.below(100_000);
        let offset = rng.below(size - len + 1);
        let got = d.read(&buffer, offset, len).step("unaligned read")?;
        compare(
            &format!("read at {offset} of {len}"),
            &got,
            &shadow[usize_of(offset)..usize_of(offset + len)],
        )?;
    }
    pass(format!(
        "48 aligned writes, 32 unaligned reads, 4 MiB, seed {seed:#x}"
    ))
}

fn round_trip_upload_mapped<B: Backend>(d: &Device<B>) -> R {
    let mut rng = Rng::new(2);
    let size: u64 = 1 << 20;
    let buffer = create(
        d,
        "upload",
        size,
        BufferUsage::empty(),
        MemoryLocation::Upload,
    )?;
    let mut shadow = vec![0u8; usize_of(size)];
    d.map(&buffer, MapMode::Write).step("map write")?;
    for _ in 0..64 {
        let len = 1 + rng.below(20_000);
        let offset = rng.below(size - len + 1);
        let data = rng.bytes(usize_of(len));
        d.write_mapped(&buffer, offset, &data)
            .step("write_mapped")?;
        shadow[usize_of(offset)..usize_of(offset + len)].copy_from_slice(&data);
    }
    d.unmap(&buffer).step("unmap")?;
    compare(
        "after mapped writes",
        &d.read(&buffer, 0, size).step("read")?,
        &shadow,
    )?;
    // The host-write path (no mapping by the caller).
    let align = d.limits().copy_alignment;
    for _ in 0..16 {
        let len = (1 + rng.below(4096)) * align;
        let offset = rng.below((size - len) / align + 1) * align;
        let data = rng.bytes(usize_of(len));
        d.write(&buffer, offset, &data).step("host write")?;
        shadow[usize_of(offset)..usize_of(offset + len)].copy_from_slice(&data);
    }
    compare(
        "after host writes",
        &d.read(&buffer, 0, size).step("read")?,
        &shadow,
    )?;
    // Persistent mapping survives GPU reads between accesses when unmapped in between.
    pass("64 mapped writes at any alignment, 16 host writes, exact bytes back")
}

fn round_trip_readback_mapped<B: Backend>(d: &Device<B>) -> R {
    let mut rng = Rng::new(3);
    let size: u64 = 1 << 20;
    let data = rng.bytes(usize_of(size));
    let src = d
        .create_buffer_init(
            Some("src"),
            BufferUsage::TRANSFER_SRC,
            MemoryLocation::DeviceLocal,
            &data,
        )
        .step("src")?;
    let rb = create(
        d,
        "readback",
        size,
        BufferUsage::empty(),
        MemoryLocation::Readback,
    )?;
    d.copy(&src, 0, &rb, 0, size).step("copy to readback")?;
    d.map(&rb, MapMode::Read).step("map read")?;
    for _ in 0..64 {
        let len = 1 + rng.below(50_000);
        let offset = rng.below(size - len + 1);
        let mut out = vec![0u8; usize_of(len)];
        d.read_mapped(&rb, offset, &mut out).step("read_mapped")?;
        compare(
            "read_mapped",
            &out,
            &data[usize_of(offset)..usize_of(offset + len)],
        )?;
    }
    d.unmap(&rb).step("unmap")?;
    compare("read()", &d.read(&rb, 0, size).step("read")?, &data)?;
    pass("copy into readback memory, 64 mapped reads at any alignment")
}

fn mapped_at_creation<B: Backend>(d: &Device<B>) -> R {
    let mut rng = Rng::new(4);
    for location in MemoryLocation::ALL {
        let size = 64 << 10;
        let usage = if location == MemoryLocation::Readback {
            BufferUsage::empty()
        } else {
            BufferUsage::TRANSFER_SRC
        };
        let buffer = d
            .create_buffer(
                &BufferDesc::new(size, usage, location)
                    .with_label("mapped at creation")
                    .with_mapped_at_creation(true),
            )
            .step("create mapped")?;
        check!(buffer.is_mapped(), "{location}: not mapped at creation");
        reuse_matches(&buffer, "mapped at creation")?;
        let data = rng.bytes(usize_of(size));
        d.write_mapped(&buffer, 0, &data).step("write_mapped")?;
        expect_err(
            "use before unmap",
            d.read(&buffer, 0, 4),
            &Error::BufferMapped {
                label: "mapped at creation".into(),
            },
        )?;
        d.unmap(&buffer).step("unmap")?;
        reuse_matches(&buffer, "unmapped")?;
        compare(
            &format!("{location}"),
            &d.read(&buffer, 0, size).step("read")?,
            &data,
        )?;
        reuse_matches(&buffer, "read")?;
    }
    pass("every location; device-local/readback through the facade's host copy")
}

fn typed_helpers<B: Backend>(d: &Device<B>) -> R {
    let values: Vec<u32> = (0..1000u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let buffer = d
        .create_buffer_init(
            Some("typed"),
            BufferUsage::STORAGE | BufferUsage::TRANSFER_SRC,
            MemoryLocation::DeviceLocal,
            &values,
        )
        .step("create_buffer_init")?;
    let back: Vec<u32> = d.read_pod(&buffer, 0, values.len()).step("read_pod")?;
    check!(back == values, "u32 round trip differs");
    let floats = [1.5f32, -2.0, 3.25, 1e9];
    d.write_pod(&buffer, 16, &floats).step("write_pod")?;
    let back: Vec<f32> = d.read_pod(&buffer, 16, 4).step("read_pod f32")?;
    check!(back == floats, "f32 round trip: {back:?}");
    let rest: Vec<u32> = d.read_pod(&buffer, 32, 10).step("read_pod rest")?;
    check!(
        rest == values[8..18],
        "neighbours of the typed write changed"
    );
    expect_err(
        "read_pod size overflow",
        d.read_pod::<u64>(&buffer, 0, usize::MAX),
        &Error::OutOfBounds {
            offset: 0,
            size: u64::MAX,
            buffer_size: buffer.size(),
        },
    )?;
    pass("u32 and f32 slices, Pod helpers")
}

fn copy_with_offsets<B: Backend>(d: &Device<B>) -> R {
    let mut rng = Rng::new(5);
    let size: u64 = 64 << 10;
    let a_data = rng.bytes(usize_of(size));
    let b_data = rng.bytes(usize_of(size));
    let a = d
        .create_buffer_init(Some("a"), RW, MemoryLocation::DeviceLocal, &a_data)
        .step("a")?;
    let b = d
        .create_buffer_init(Some("b"), RW, MemoryLocation::DeviceLocal, &b_data)
        .step("b")?;
    let mut model_b = b_data.clone();
    let align = d.limits().copy_alignment;
    let mut batch = d.batch().step("batch")?;
    for _ in 0..20 {
        let len = (1 + rng.below(1024)) * align;
        let so = rng.below((size - len) / align + 1) * align;
        let dof = rng.below((size - len) / align + 1) * align;
        batch.copy(&a, so, &b, dof, len).step("copy a->b")?;
        model_b[usize_of(dof)..usize_of(dof + len)]
            .copy_from_slice(&a_data[usize_of(so)..usize_of(so + len)]);
    }
    // Within one buffer, non-overlapping.
    batch.copy(&b, 0, &b, size / 2, 1024).step("copy b->b")?;
    let src_part = model_b[..1024].to_vec();
    model_b[usize_of(size / 2)..usize_of(size / 2) + 1024].copy_from_slice(&src_part);
    batch.submit().step("submit")?;
    compare("b", &d.read(&b, 0, size).step("read b")?, &model_b)?;
    compare("a unchanged", &d.read(&a, 0, size).step("read a")?, &a_data)?;
    pass("20 copies at random aligned offsets + one within a buffer, in one batch")
}

fn batch_order_and_coalescing<B: Backend>(d: &Device<B>) -> R {
    let n: u64 = 4096;
    let buf = create(d, "order src", n, RW, MemoryLocation::DeviceLocal)?;
    let out = create(d, "order dst", n, RW, MemoryLocation::DeviceLocal)?;
    let x = vec![0x11u8; usize_of(n)];
    let y = vec![0x22u8; usize_of(n)];
    let mut batch = d.batch().step("batch")?;
    batch.write(&buf, 0, &x).step("write x")?;
    batch.copy(&buf, 0, &out, 0, n).step("copy")?;
    batch.write(&buf, 0, &y).step("write y")?;
    check!(batch.len() == 3, "batch length {}", batch.len());
    batch.submit().step("submit")?;
    compare(
        "copy saw the first write",
        &d.read(&out, 0, n).step("read")?,
        &x,
    )?;
    compare("second write landed", &d.read(&buf, 0, n).step("read")?, &y)?;
    // 1000 adjacent and 1000 scattered 256-byte writes in one batch.
    let size: u64 = 1 << 20;
    let big = create(d, "many writes", size, RW, MemoryLocation::DeviceLocal)?;
    let mut model = vec![0u8; usize_of(size)];
    d.write(&big, 0, &model).step("zero")?;
    let mut rng = Rng::new(6);
    let mut batch = d.batch().step("batch")?;
    for i in 0..1000u64 {
        let data = rng.bytes(256);
        batch.write(&big, i * 256, &data).step("adjacent")?;
        model[usize_of(i * 256)..usize_of(i * 256 + 256)].copy_from_slice(&data);
    }
    for _ in 0..1000 {
        let offset = rng.below((size - 256) / 4 + 1) * 4;
        let data = rng.bytes(256);
        batch.write(&big, offset, &data).step("scattered")?;
        model[usize_of(offset)..usize_of(offset + 256)].copy_from_slice(&data);
    }
    batch.submit().step("submit")?;
    compare("2000 writes", &d.read(&big, 0, size).step("read")?, &model)?;
    pass("write/copy/write executes in recording order; 2000 small writes in one batch")
}

/// Many small writes in one batch, which backends may turn into one scatter dispatch
/// (`gantry_core::scatter`): every byte must land as program order says, whether the writes
/// are disjoint or overlap (last write wins), interleaved with copies, spread over several
/// buffers (with and without `STORAGE` usage), or more than one dispatch dimension holds.
fn scatter_small_writes<B: Backend>(d: &Device<B>) -> R {
    let size: u64 = 1 << 20;
    let storage = RW | BufferUsage::STORAGE;
    let bufs = [
        create(d, "scatter a", size, storage, MemoryLocation::DeviceLocal)?,
        create(d, "scatter b", size, RW, MemoryLocation::DeviceLocal)?,
        create(
            d,
            "scatter c",
            size + 12,
            storage,
            MemoryLocation::DeviceLocal,
        )?,
    ];
    let mut models: Vec<Vec<u8>> = Vec::new();
    let mut rng = Rng::new(42);
    for b in &bufs {
        let init = rng.bytes(usize_of(b.size()));
        d.write(b, 0, &init).step("initial contents")?;
        models.push(init);
    }
    let write = |batch: &mut gantry_core::Batch<B>,
                 models: &mut Vec<Vec<u8>>,
                 which: usize,
                 offset: u64,
                 data: &[u8]|
     -> Result<(), String> {
        batch.write(&bufs[which], offset, data).step("write")?;
        models[which][usize_of(offset)..usize_of(offset) + data.len()].copy_from_slice(data);
        Ok(())
    };
    let check_all = |models: &Vec<Vec<u8>>, what: &str| -> Result<(), String> {
        for (b, model) in bufs.iter().zip(models) {
            compare(what, &d.read(b, 0, b.size()).step("read")?, model)?;
        }
        Ok(())
    };

    // 1. 4096 disjoint writes of 4..=256 bytes in shuffled 256-byte slots of one buffer.
    let mut slots: Vec<u64> = (0..4096).collect();
    for i in (1..slots.len()).rev() {
        slots.swap(i, usize_of(rng.below(i as u64 + 1)));
    }
    let mut batch = d.batch().step("batch")?;
    for &slot in &slots {
        let len = (rng.below(64) + 1) * 4;
        let data = rng.bytes(usize_of(len));
        write(&mut batch, &mut models, 0, slot * 256, &data)?;
    }
    batch.submit().step("submit")?;
    check_all(&models, "4096 disjoint shuffled writes")?;

    // 2. Overlapping writes: last write wins.
    let mut batch = d.batch().step("batch")?;
    for _ in 0..3000 {
        let len = (rng.below(64) + 1) * 4;
        let offset = rng.below(1024) * 4;
        let data = rng.bytes(usize_of(len));
        write(&mut batch, &mut models, 0, offset, &data)?;
    }
    batch.submit().step("submit")?;
    check_all(&models, "3000 overlapping writes")?;

    // 3. Writes, a copy that reads what they wrote, more writes over the copied range, to
    //    three buffers interleaved; the tail of the odd-sized buffer included.
    let mut batch = d.batch().step("batch")?;
    for round in 0..4u64 {
        for i in 0..500u64 {
            let which = usize_of(i % 3);
            let offset = (round * 500 + i) * 128 % (size - 256);
            let data = rng.bytes(64 + usize_of(round) * 4);
            write(&mut batch, &mut models, which, offset, &data)?;
        }
        let (src, dst, at) = (usize_of(round % 3), usize_of((round + 1) % 3), round * 4096);
        batch
            .copy(&bufs[src], at, &bufs[dst], size - 65536 + at, 4096)
            .step("copy")?;
        let copied = models[src][usize_of(at)..usize_of(at + 4096)].to_vec();
        models[dst][usize_of(size - 65536 + at)..usize_of(size - 65536 + at + 4096)]
            .copy_from_slice(&copied);
    }
    let tail = rng.bytes(16);
    write(&mut batch, &mut models, 2, size - 4, &tail)?;
    batch.submit().step("submit")?;
    check_all(&models, "writes and copies interleaved over three buffers")?;

    // 4. Many more records than workgroups (grid-stride): 66,000 4-byte writes.
    let mut batch = d.batch().step("batch")?;
    for i in 0..66_000u64 {
        let data = rng.bytes(4);
        write(&mut batch, &mut models, 0, (i * 12) % (size - 4), &data)?;
    }
    batch.submit().step("submit")?;
    check_all(&models, "66,000 4-byte writes")?;

    // 5. Offsets and lengths in 16-byte multiples (the wide shader): 2000 writes of
    //    16..=1024 bytes in shuffled 1 KiB slots, to the odd-sized buffer up to its last
    //    16-byte-aligned byte, and to the first buffer, both in one batch.
    let mut slots: Vec<u64> = (0..1023).collect();
    for i in (1..slots.len()).rev() {
        slots.swap(i, usize_of(rng.below(i as u64 + 1)));
    }
    let mut batch = d.batch().step("batch")?;
    for (i, &slot) in slots.iter().chain(&slots[..977]).enumerate() {
        let len = (rng.below(64) + 1) * 16;
        let data = rng.bytes(usize_of(len));
        let which = if i < 1023 { 2 } else { 0 };
        write(&mut batch, &mut models, which, slot * 1024, &data)?;
    }
    let last = rng.bytes(16);
    write(&mut batch, &mut models, 2, size - 16, &last)?;
    batch.submit().step("submit")?;
    check_all(&models, "2000 writes in 16-byte multiples")?;
    pass(
        "4096 shuffled, 3000 overlapping, interleaved copies over 3 buffers, 66,000 tiny writes, \
         2000 in 16-byte multiples: exact",
    )
}

/// Many small copies in one batch, which backends may defer and scatter like small writes
/// (reading the bytes from the copy's source): from an upload buffer and from device-local
/// buffers, in shuffled order, with writes and copies to a source between copies that read
/// it, and chains (a copy's destination is the next copy's source). Every byte must land as
/// program order says.
fn scatter_small_copies<B: Backend>(d: &Device<B>) -> R {
    let size: u64 = 256 << 10;
    let storage = RW | BufferUsage::STORAGE;
    let upload = create(
        d,
        "copies upload",
        size,
        BufferUsage::TRANSFER_SRC,
        MemoryLocation::Upload,
    )?;
    let bufs = [
        create(d, "copies x", size, storage, MemoryLocation::DeviceLocal)?,
        create(d, "copies a", size, storage, MemoryLocation::DeviceLocal)?,
        create(d, "copies b", size, storage, MemoryLocation::DeviceLocal)?,
    ];
    let mut rng = Rng::new(7);
    let up_model = rng.bytes(usize_of(size));
    d.write(&upload, 0, &up_model).step("upload contents")?;
    let mut models: Vec<Vec<u8>> = Vec::new();
    for b in &bufs {
        let init = rng.bytes(usize_of(size));
        d.write(b, 0, &init).step("initial contents")?;
        models.push(init);
    }
    let copy = |batch: &mut gantry_core::Batch<B>,
                models: &mut Vec<Vec<u8>>,
                (src, so): (usize, u64),
                (dst, dof): (usize, u64),
                len: u64|
     -> Result<(), String> {
        batch
            .copy(&bufs[src], so, &bufs[dst], dof, len)
            .step("copy")?;
        let bytes = models[src][usize_of(so)..usize_of(so + len)].to_vec();
        models[dst][usize_of(dof)..usize_of(dof + len)].copy_from_slice(&bytes);
        Ok(())
    };
    let shuffled = |rng: &mut Rng, n: u64| {
        let mut v: Vec<u64> = (0..n).collect();
        for i in (1..v.len()).rev() {
            v.swap(i, usize_of(rng.below(i as u64 + 1)));
        }
        v
    };
    let check_all = |models: &Vec<Vec<u8>>, what: &str| -> Result<(), String> {
        for (b, model) in bufs.iter().zip(models) {
            compare(what, &d.read(b, 0, size).step("read")?, model)?;
        }
        Ok(())
    };

    // 1. 1000 copies of 4..=256 bytes from the upload buffer into shuffled 256-byte slots
    //    of x (a manager's staged uploads), then 1000 in 16-byte multiples into a.
    let mut batch = d.batch().step("batch")?;
    for (i, slot) in shuffled(&mut rng, 1000).into_iter().enumerate() {
        let len = (rng.below(64) + 1) * 4;
        let (dst, unit) = if i % 2 == 0 { (0, 4) } else { (1, 16) };
        let len = len / unit * unit + unit;
        let len = len.min(256);
        let from = rng.below((size - len) / 4) * 4;
        batch
            .copy(&upload, from, &bufs[dst], slot * 256, len)
            .step("copy from upload")?;
        models[dst][usize_of(slot * 256)..usize_of(slot * 256 + len)]
            .copy_from_slice(&up_model[usize_of(from)..usize_of(from + len)]);
    }
    batch.submit().step("submit")?;
    check_all(&models, "1000 copies from an upload buffer")?;

    // 2. Copies x -> a, then writes and a large copy over the x bytes they read, then
    //    copies x -> b of the new bytes; chains a -> b -> x.
    let mut batch = d.batch().step("batch")?;
    for slot in shuffled(&mut rng, 200) {
        copy(
            &mut batch,
            &mut models,
            (0, slot * 256),
            (1, slot * 512),
            256,
        )?;
    }
    for slot in 0..50u64 {
        let data = rng.bytes(128);
        batch.write(&bufs[0], slot * 1024, &data).step("write x")?;
        models[0][usize_of(slot * 1024)..usize_of(slot * 1024 + 128)].copy_from_slice(&data);
    }
    copy(&mut batch, &mut models, (2, 0), (0, 100 << 10), 64 << 10)?;
    for slot in shuffled(&mut rng, 200) {
        copy(
            &mut batch,
            &mut models,
            (0, slot * 512),
            (2, slot * 512 + 256),
            128,
        )?;
    }
    for slot in shuffled(&mut rng, 100) {
        copy(
            &mut batch,
            &mut models,
            (1, slot * 1024),
            (2, slot * 1024),
            64,
        )?;
        copy(
            &mut batch,
            &mut models,
            (2, slot * 1024),
            (0, slot * 2048 + 4),
            64,
        )?;
    }
    batch.submit().step("submit")?;
    check_all(&models, "copies around writes to their source, and chains")?;

    // 3. Groups of one destination from two sources, with another buffer's group emitted in
    //    between: writes to a, copies x -> a over the same bytes, writes to b and a large
    //    write to b (emitting b's group), then writes to a again that must land last.
    let mut batch = d.batch().step("batch")?;
    let write = |batch: &mut gantry_core::Batch<B>,
                 models: &mut Vec<Vec<u8>>,
                 which: usize,
                 at: u64,
                 rng: &mut Rng|
     -> Result<(), String> {
        let data = rng.bytes(64);
        batch.write(&bufs[which], at, &data).step("write")?;
        models[which][usize_of(at)..usize_of(at) + 64].copy_from_slice(&data);
        Ok(())
    };
    for slot in 0..32u64 {
        write(&mut batch, &mut models, 1, slot * 128, &mut rng)?;
    }
    for slot in 0..32u64 {
        copy(
            &mut batch,
            &mut models,
            (0, slot * 256),
            (1, slot * 128),
            64,
        )?;
    }
    for slot in 0..32u64 {
        write(&mut batch, &mut models, 2, slot * 128, &mut rng)?;
    }
    // A write too large to defer emits b's group, and only b's.
    let big = rng.bytes(20 << 10);
    batch.write(&bufs[2], 100 << 10, &big).step("large write")?;
    models[2][100 << 10..120 << 10].copy_from_slice(&big);
    for slot in 0..32u64 {
        write(&mut batch, &mut models, 1, slot * 128, &mut rng)?;
    }
    batch.submit().step("submit")?;
    check_all(&models, "one destination's groups from two sources")?;
    pass(
        "2000 copies from an upload buffer, 800 between buffers with hazards, groups from two \
         sources: exact",
    )
}

/// `Batch::write_many`: many writes to one buffer in one call land as that many `write`s
/// would (overlaps: the later wins); a bad entry anywhere rejects the whole call and leaves
/// the batch as it was, with what was recorded before it intact.
fn batch_write_many<B: Backend>(d: &Device<B>) -> R {
    let size: u64 = 1 << 20;
    let buf = create(
        d,
        "write_many",
        size,
        RW | BufferUsage::STORAGE,
        MemoryLocation::DeviceLocal,
    )?;
    let mut rng = Rng::new(99);
    let mut model = rng.bytes(usize_of(size));
    d.write(&buf, 0, &model).step("initial contents")?;
    let mut batch = d.batch().step("batch")?;
    // A plain write first: it must survive the rejected calls below.
    let first = rng.bytes(4096);
    batch.write(&buf, 8192, &first).step("write")?;
    model[8192..8192 + 4096].copy_from_slice(&first);
    let datas: Vec<(u64, Vec<u8>)> = (0..3000u64)
        .map(|i| {
            let len = (rng.below(64) + 1) * 16;
            let at = if i % 10 == 0 {
                rng.below(1024) * 16 // overlapping a small area
            } else {
                (rng.below((size - len) / 16)) * 16
            };
            (at, rng.bytes(usize_of(len)))
        })
        .collect();
    let writes: Vec<(u64, &[u8])> = datas.iter().map(|(o, b)| (*o, &b[..])).collect();
    let before = batch.len();
    for bad in [
        (size - 16, &[0u8; 32][..]),
        (6, &[0u8; 8][..]),
        (16, &[0u8; 6][..]),
    ] {
        let mut with_bad = writes.clone();
        with_bad.insert(1500, bad);
        match batch.write_many(&buf, &with_bad) {
            Err(_) => {}
            Ok(()) => return Err(format!("write_many accepted {:?}", (bad.0, bad.1.len()))),
        }
        if batch.len() != before {
            return Err("a rejected write_many recorded commands".into());
        }
    }
    batch.write_many(&buf, &writes).step("write_many")?;
    for (at, bytes) in &datas {
        model[usize_of(*at)..usize_of(*at) + bytes.len()].copy_from_slice(bytes);
    }
    batch.write_many(&buf, &[]).step("empty write_many")?;
    batch.submit().step("submit")?;
    compare(
        "3000 writes in one call",
        &d.read(&buf, 0, size).step("read")?,
        &model,
    )?;
    // Enough writes for a backend to plan them in parts (gantry-vulkan: 4096 and more, on
    // its copy threads): the last 300 revisit the slots of the first 300 (the later wins,
    // an overlap between parts), and two neighbours share a slot (one within a part).
    let datas: Vec<(u64, Vec<u8>)> = (0..4396u64)
        .map(|i| {
            let slot = if i == 2001 { 2000 } else { i % 4096 } * 2741 % 4096;
            (slot * 64, rng.bytes(64))
        })
        .collect();
    let writes: Vec<(u64, &[u8])> = datas.iter().map(|(o, b)| (*o, &b[..])).collect();
    let mut batch = d.batch().step("batch")?;
    batch.write_many(&buf, &writes).step("4396 writes")?;
    batch.submit().step("submit")?;
    for (at, bytes) in &datas {
        model[usize_of(*at)..usize_of(*at) + bytes.len()].copy_from_slice(bytes);
    }
    compare(
        "4396 writes in one call",
        &d.read(&buf, 0, size).step("read")?,
        &model,
    )?;
    pass(
        "3000 writes (some overlapping) in one call: exact; 3 bad entries rejected whole; \
         4396 writes revisiting slots: exact",
    )
}

fn read_async<B: Backend>(d: &Device<B>) -> R {
    let mut rng = Rng::new(7);
    let size: u64 = 1 << 20;
    let data = rng.bytes(usize_of(size));
    let buffer = d
        .create_buffer_init(Some("async"), RW, MemoryLocation::DeviceLocal, &data)
        .step("create")?;
    let mut futures = Vec::new();
    for _ in 0..8 {
        let len = 1 + rng.below(200_000);
        let offset = rng.below(size - len + 1);
        futures.push((
            offset,
            len,
            d.read_async(&buffer, offset, len).step("read_async")?,
        ));
    }
    // Overwrite after the reads were issued: they must see the old bytes.
    d.write(&buffer, 0, &vec![0u8; usize_of(size)])
        .step("overwrite")?;
    for (offset, len, fut) in futures {
        let got = block_on(fut).step("await")?;
        compare(
            "async read",
            &got,
            &data[usize_of(offset)..usize_of(offset + len)],
        )?;
    }
    // A readback buffer: busy while the read is in flight.
    let rb = create(
        d,
        "async readback",
        size,
        BufferUsage::empty(),
        MemoryLocation::Readback,
    )?;
    let src = d
        .create_buffer_init(Some("async src"), RW, MemoryLocation::DeviceLocal, &data)
        .step("src")?;
    d.copy(&src, 0, &rb, 0, size).step("copy")?;
    reuse_matches(&rb, "copied into")?;
    let fut = d.read_async(&rb, 10, 1000).step("read_async readback")?;
    reuse_matches(&rb, "being read")?;
    expect_err(
        "copy into a readback buffer being read",
        d.copy(&src, 0, &rb, 0, 4),
        &Error::BufferMapped {
            label: "async readback".into(),
        },
    )?;
    compare(
        "readback async",
        &block_on(fut).step("await")?,
        &data[10..1010],
    )?;
    reuse_matches(&rb, "read")?;
    d.copy(&src, 0, &rb, 0, 4)
        .step("copy after the read completed")?;
    // Dropping an unfinished read leaves the buffer usable.
    let fut = d.read_async(&rb, 0, 64).step("read_async")?;
    drop(fut);
    d.copy(&src, 0, &rb, 0, 4)
        .step("copy after dropping a read")?;
    pass("8 concurrent reads of device-local memory, readback memory busy while read")
}

fn submissions_wait_poll_callbacks<B: Backend>(d: &Device<B>) -> R {
    let buf = create(d, "subs", 1 << 16, RW, MemoryLocation::DeviceLocal)?;
    let data = vec![7u8; 1 << 16];
    let submit = || -> Result<SubmissionIndex, String> {
        let mut batch = d.batch().step("batch")?;
        batch.write(&buf, 0, &data).step("write")?;
        batch.submit().step("submit")
    };
    let i1 = submit()?;
    let i2 = submit()?;
    check!(
        i1 > SubmissionIndex::NONE && i2 > i1,
        "indices {i1} then {i2}"
    );
    check!(
        d.last_submitted() >= i2,
        "last_submitted {} < {i2}",
        d.last_submitted()
    );
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    d.on_submitted_work_done(i2, move || {
        c.fetch_add(1, Ordering::SeqCst);
    });
    check!(d.wait(i2, None).step("wait")?, "wait(None) returned false");
    check!(d.poll().step("poll")? >= i2, "poll after wait below {i2}");
    check!(
        count.load(Ordering::SeqCst) == 1,
        "callback did not run after wait"
    );
    let c = Arc::clone(&count);
    d.on_submitted_work_done(i1, move || {
        c.fetch_add(1, Ordering::SeqCst);
    });
    check!(
        count.load(Ordering::SeqCst) == 2,
        "callback on a completed submission did not run at once"
    );
    // Several callbacks, completion in order.
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let i3 = submit()?;
    let i4 = submit()?;
    // Registered in ascending order: they must run in that order whether each was still
    // pending (completion order) or already complete (at once).
    for i in [i3, i4] {
        let o = Arc::clone(&order);
        d.on_submitted_work_done(i, move || o.lock().unwrap().push(i));
    }
    let _ = d.wait(i4, Some(Duration::ZERO)).step("wait(0)")?;
    check!(
        d.wait(i4, Some(Duration::from_secs(30)))
            .step("wait(30 s)")?,
        "timed out"
    );
    let order = order.lock().unwrap().clone();
    check!(order == [i3, i4], "callbacks ran as {order:?}");
    check!(
        d.wait(SubmissionIndex::NONE, None).step("wait(NONE)")?,
        "NONE not complete"
    );
    // Polling until done, without blocking.
    let i5 = submit()?;
    let mut polls = 0u32;
    while d.poll().step("poll")? < i5 {
        polls += 1;
        check!(polls < 100_000, "poll never reached {i5}");
        std::thread::sleep(Duration::from_micros(50));
    }
    check!(
        buf.last_use() == i5,
        "buffer last use {} != {i5}",
        buf.last_use()
    );
    pass(format!(
        "indices {i1}..{i5} increasing; wait, poll ({polls} polls), callbacks in order"
    ))
}

fn cpu_gpu_hazards<B: Backend>(d: &Device<B>) -> R {
    let n: u64 = 1 << 20;
    let x = vec![0xAAu8; usize_of(n)];
    let y = vec![0xBBu8; usize_of(n)];
    let up = create(
        d,
        "hazard upload",
        n,
        BufferUsage::empty(),
        MemoryLocation::Upload,
    )?;
    let dst = create(d, "hazard dst", n, RW, MemoryLocation::DeviceLocal)?;
    d.write(&up, 0, &x).step("write x")?;
    // The GPU reads `up`; the host then writes it: the facade must wait for the copy.
    d.copy(&up, 0, &dst, 0, n).step("copy")?;
    d.write(&up, 0, &y)
        .step("host write while the copy may run")?;
    compare(
        "copy saw the old bytes",
        &d.read(&dst, 0, n).step("read")?,
        &x,
    )?;
    compare("host write landed", &d.read(&up, 0, n).step("read")?, &y)?;
    // Mapping waits the same way.
    d.copy(&up, 0, &dst, 0, n).step("copy 2")?;
    d.map(&up, MapMode::Write).step("map")?;
    d.write_mapped(&up, 0, &x).step("write_mapped")?;
    // While mapped, GPU work on the buffer is refused.
    let mapped = Error::BufferMapped {
        label: "hazard upload".into(),
    };
    expect_err("copy from mapped", d.copy(&up, 0, &dst, 0, 4), &mapped)?;
    d.unmap(&up).step("unmap")?;
    compare("copy 2 saw y", &d.read(&dst, 0, n).step("read")?, &y)?;
    // Recorded, then mapped before submit: the batch fails and nothing runs.
    let mut batch = d.batch().step("batch")?;
    batch.copy(&up, 0, &dst, 0, n).step("record")?;
    d.map(&up, MapMode::Write).step("map again")?;
    expect_err("submit with a mapped buffer", batch.submit(), &mapped)?;
    d.unmap(&up).step("unmap")?;
    compare("nothing ran", &d.read(&dst, 0, n).step("read")?, &y)?;
    pass("host writes and maps wait for GPU reads; GPU work on mapped memory refused")
}

/// Checks what pools see of `buffer` ([`Buffer::reusable_after`], read without the state lock)
/// against its locked state: its last use while alive and unmapped, else `None`.
fn reuse_matches<B: Backend>(buffer: &Buffer<B>, when: &str) -> Result<(), String> {
    let expected = (!buffer.is_destroyed() && !buffer.is_mapped()).then(|| buffer.last_use());
    check!(
        buffer.reusable_after() == expected,
        "{when}: reusable_after {:?}, the state says {expected:?}",
        buffer.reusable_after()
    );
    Ok(())
}

fn deferred_destroy<B: Backend>(d: &Device<B>) -> R {
    d.wait_idle().step("idle")?;
    d.poll().step("poll")?;
    let before = d.live_buffers();
    let n: u64 = 4 << 20;
    let data = Rng::new(8).bytes(usize_of(n));
    let src = d
        .create_buffer_init(Some("doomed"), RW, MemoryLocation::DeviceLocal, &data)
        .step("src")?;
    let dst = create(d, "survivor", n, RW, MemoryLocation::DeviceLocal)?;
    d.copy(&src, 0, &dst, 0, n).step("copy")?;
    reuse_matches(&src, "copied from")?;
    d.destroy_buffer(&src).step("destroy while in use")?;
    reuse_matches(&src, "destroyed")?;
    expect_err(
        "use after destroy",
        d.read(&src, 0, 4),
        &Error::Destroyed {
            label: "doomed".into(),
        },
    )?;
    compare("copy finished", &d.read(&dst, 0, n).step("read")?, &data)?;
    drop(dst);
    drop(src);
    d.wait_idle().step("idle")?;
    d.poll().step("poll")?;
    check!(
        d.live_buffers() == before,
        "live buffers {} after, {before} before",
        d.live_buffers()
    );
    pass("destroyed while the GPU used it: freed afterwards, copy intact")
}

/// Buffers filled with known bytes; `intact` checks nothing changed them.
struct Victims<B: Backend> {
    local: Buffer<B>,
    local_data: Vec<u8>,
    upload: Buffer<B>,
    upload_data: Vec<u8>,
}

impl<B: Backend> Victims<B> {
    fn new(d: &Device<B>) -> Result<Self, String> {
        let mut rng = Rng::new(9);
        let local_data = rng.bytes(4096);
        let upload_data = rng.bytes(4096);
        let local = d
            .create_buffer_init(Some("victim"), RW, MemoryLocation::DeviceLocal, &local_data)
            .step("victim")?;
        let upload = d
            .create_buffer_init(
                Some("victim upload"),
                BufferUsage::empty(),
                MemoryLocation::Upload,
                &upload_data,
            )
            .step("victim upload")?;
        Ok(Self {
            local,
            local_data,
            upload,
            upload_data,
        })
    }

    fn intact(&self, d: &Device<B>, after: &str) -> Result<(), String> {
        let what = format!("data intact after {after}");
        compare(
            &what,
            &d.read(&self.local, 0, 4096).step(&what)?,
            &self.local_data,
        )?;
        compare(
            &what,
            &d.read(&self.upload, 0, 4096).step(&what)?,
            &self.upload_data,
        )
    }
}

#[allow(clippy::too_many_lines, reason = "one list of every mistake, in order")]
fn bad_inputs<B: Backend>(d: &Device<B>) -> R {
    let v = Victims::new(d)?;
    let limits = d.limits().clone();
    let ca = limits.copy_alignment;
    let mut checked = 0u32;
    let mut mistake = |name: &str, result: Result<(), String>| -> Result<(), String> {
        result?;
        v.intact(d, name)?;
        checked += 1;
        Ok(())
    };
    let local = &v.local;
    let lsize = local.size();
    let dl = MemoryLocation::DeviceLocal;

    mistake(
        "zero size",
        expect_err(
            "zero size",
            d.create_buffer(&BufferDesc::new(0, RW, dl)),
            &Error::ZeroSize,
        ),
    )?;
    let over = limits.max_buffer_size + 1;
    mistake(
        "size over max",
        expect_err(
            "size over max",
            d.create_buffer(&BufferDesc::new(over, RW, dl)),
            &Error::SizeTooLarge {
                size: over,
                max: limits.max_buffer_size,
            },
        ),
    )?;
    mistake(
        "size near u64::MAX",
        expect_err(
            "size u64::MAX",
            d.create_buffer(&BufferDesc::new(u64::MAX, RW, dl)),
            &Error::SizeTooLarge {
                size: u64::MAX,
                max: limits.max_buffer_size,
            },
        ),
    )?;
    if ca > 1 {
        mistake(
            "misaligned write offset",
            expect_err(
                "misaligned write offset",
                d.write(local, 2, &[0u8; 4]),
                &Error::MisalignedOffset {
                    offset: 2,
                    alignment: ca,
                },
            ),
        )?;
        mistake(
            "misaligned write size",
            expect_err(
                "misaligned write size",
                d.write(local, 0, &[0u8; 3]),
                &Error::MisalignedSize {
                    size: 3,
                    alignment: ca,
                },
            ),
        )?;
        mistake(
            "misaligned copy src offset",
            expect_err(
                "misaligned copy src offset",
                d.copy(local, 1, local, 2048, 4),
                &Error::MisalignedOffset {
                    offset: 1,
                    alignment: ca,
                },
            )
            .map(|_| ()),
        )?;
        mistake(
            "misaligned copy dst offset",
            expect_err(
                "misaligned copy dst offset",
                d.copy(local, 0, local, 2049, 4),
                &Error::MisalignedOffset {
                    offset: 2049,
                    alignment: ca,
                },
            ),
        )?;
        mistake(
            "misaligned copy size",
            expect_err(
                "misaligned copy size",
                d.copy(local, 0, local, 2048, 6),
                &Error::MisalignedSize {
                    size: 6,
                    alignment: ca,
                },
            ),
        )?;
        mistake(
            "misaligned host write",
            expect_err(
                "misaligned host write (upload)",
                d.write(&v.upload, 6, &[0u8; 4]),
                &Error::MisalignedOffset {
                    offset: 6,
                    alignment: ca,
                },
            ),
        )?;
    }
    mistake(
        "write out of bounds",
        expect_err(
            "write out of bounds",
            d.write(local, lsize - 4, &[0u8; 8]),
            &Error::OutOfBounds {
                offset: lsize - 4,
                size: 8,
                buffer_size: lsize,
            },
        ),
    )?;
    let huge = u64::MAX - u64::MAX % ca; // the largest aligned offset: + 8 overflows
    mistake(
        "offset + size overflows",
        expect_err(
            "copy offset + size overflows",
            d.copy(local, huge, local, 0, 8),
            &Error::OutOfBounds {
                offset: huge,
                size: 8,
                buffer_size: lsize,
            },
        ),
    )?;
    mistake(
        "read out of bounds",
        expect_err(
            "read out of bounds",
            d.read(local, 1, lsize),
            &Error::OutOfBounds {
                offset: 1,
                size: lsize,
                buffer_size: lsize,
            },
        ),
    )?;
    mistake(
        "copy dst out of bounds",
        expect_err(
            "copy dst out of bounds",
            d.copy(&v.upload, 0, local, lsize - 4, 8),
            &Error::OutOfBounds {
                offset: lsize - 4,
                size: 8,
                buffer_size: lsize,
            },
        ),
    )?;
    mistake(
        "overlapping copy",
        expect_err(
            "overlapping copy in one buffer",
            d.copy(local, 0, local, 8, 16),
            &Error::OverlappingCopy {
                src_offset: 0,
                dst_offset: 8,
                size: 16,
            },
        ),
    )?;
    // Missing usage flags.
    let uniform = create(d, "uniform only", 256, BufferUsage::UNIFORM, dl);
    if let Ok(uniform) = uniform {
        mistake(
            "write without TRANSFER_DST",
            expect_err(
                "write without TRANSFER_DST",
                d.write(&uniform, 0, &[0u8; 4]),
                &Error::MissingUsage {
                    required: BufferUsage::TRANSFER_DST,
                    actual: BufferUsage::UNIFORM,
                },
            ),
        )?;
        mistake(
            "read without TRANSFER_SRC",
            expect_err(
                "read without TRANSFER_SRC",
                d.read(&uniform, 0, 4),
                &Error::MissingUsage {
                    required: BufferUsage::TRANSFER_SRC,
                    actual: BufferUsage::UNIFORM,
                },
            ),
        )?;
        mistake(
            "copy from a buffer without TRANSFER_SRC",
            expect_err(
                "copy without TRANSFER_SRC",
                d.copy(&uniform, 0, local, 0, 4),
                &Error::MissingUsage {
                    required: BufferUsage::TRANSFER_SRC,
                    actual: BufferUsage::UNIFORM,
                },
            ),
        )?;
    }
    let src_only = create(d, "src only", 256, BufferUsage::TRANSFER_SRC, dl)?;
    mistake(
        "copy into a buffer without TRANSFER_DST",
        expect_err(
            "copy without TRANSFER_DST",
            d.copy(local, 0, &src_only, 0, 4),
            &Error::MissingUsage {
                required: BufferUsage::TRANSFER_DST,
                actual: BufferUsage::TRANSFER_SRC,
            },
        ),
    )?;
    // Mapping.
    mistake(
        "map device-local",
        expect_err(
            "map device-local",
            d.map(local, MapMode::Write),
            &Error::NotMappable { location: dl },
        ),
    )?;
    mistake(
        "map upload for reading",
        expect_err(
            "map upload for reading",
            d.map(&v.upload, MapMode::Read),
            &Error::MapModeNotAllowed {
                mode: MapMode::Read,
                location: MemoryLocation::Upload,
            },
        ),
    )?;
    mistake(
        "unmap while unmapped",
        expect_err(
            "unmap while unmapped",
            d.unmap(&v.upload),
            &Error::NotMapped,
        ),
    )?;
    mistake(
        "write_mapped while unmapped",
        expect_err(
            "write_mapped while unmapped",
            d.write_mapped(&v.upload, 0, &[1]),
            &Error::NotMapped,
        ),
    )?;
    d.map(&v.upload, MapMode::Write).step("map")?;
    let double = expect_err(
        "double map",
        d.map(&v.upload, MapMode::Write),
        &Error::AlreadyMapped,
    );
    let wrong = expect_err(
        "read_mapped on a write mapping",
        d.read_mapped(&v.upload, 0, &mut [0u8; 4]),
        &Error::WrongMapMode {
            mapped: MapMode::Write,
            requested: MapMode::Read,
        },
    );
    let oob = expect_err(
        "write_mapped out of bounds",
        d.write_mapped(&v.upload, v.upload.size() - 1, &[1, 2]),
        &Error::OutOfBounds {
            offset: v.upload.size() - 1,
            size: 2,
            buffer_size: v.upload.size(),
        },
    );
    let mapped_err = Error::BufferMapped {
        label: "victim upload".into(),
    };
    let use_mapped = expect_err(
        "copy from mapped",
        d.copy(&v.upload, 0, local, 0, 4),
        &mapped_err,
    );
    let write_mapped_buf = expect_err(
        "write to mapped",
        d.write(&v.upload, 0, &[0u8; 4]),
        &mapped_err,
    );
    d.unmap(&v.upload).step("unmap")?;
    mistake("double map", double)?;
    mistake("read_mapped on a write mapping", wrong)?;
    mistake("write_mapped out of bounds", oob)?;
    mistake("copy from a mapped buffer", use_mapped)?;
    mistake("queue write to a mapped buffer", write_mapped_buf)?;
    // Unsupported usage, if this backend has any.
    if let Some(flag) = (BufferUsage::all() - limits.device_local_usage)
        .iter()
        .next()
    {
        mistake(
            "unsupported usage",
            expect_err(
                "unsupported usage",
                d.create_buffer(&BufferDesc::new(256, flag | BufferUsage::VERTEX, dl)),
                &Error::Unsupported {
                    usage: flag,
                    location: dl,
                },
            ),
        )?;
    }
    // A bad command in a batch is not recorded; the rest of the batch still runs.
    let mut batch = d.batch().step("batch")?;
    let scratch = create(d, "scratch", 4096, RW, dl)?;
    batch.write(&scratch, 0, &[5u8; 16]).step("good write")?;
    let bad = expect_err(
        "bad write in a batch",
        batch.write(local, 0, &[0u8; 5]),
        &Error::MisalignedSize {
            size: 5,
            alignment: ca,
        },
    );
    check!(batch.len() == 1, "rejected command recorded");
    batch.submit().step("submit")?;
    mistake("bad command in a batch", bad)?;
    check!(
        d.read(&scratch, 0, 16).step("read scratch")? == [5u8; 16],
        "good write in the batch lost"
    );
    // Destroyed buffers.
    let doomed = create(d, "doomed", 256, RW, dl)?;
    d.destroy_buffer(&doomed).step("destroy")?;
    let gone = Error::Destroyed {
        label: "doomed".into(),
    };
    mistake(
        "write destroyed",
        expect_err("write destroyed", d.write(&doomed, 0, &[0u8; 4]), &gone),
    )?;
    mistake(
        "read destroyed",
        expect_err("read destroyed", d.read(&doomed, 0, 4), &gone),
    )?;
    mistake(
        "copy destroyed",
        expect_err("copy destroyed", d.copy(&doomed, 0, local, 0, 4), &gone).map(|_| ()),
    )?;
    mistake(
        "destroy twice",
        expect_err("destroy twice", d.destroy_buffer(&doomed), &gone),
    )?;
    let doomed_up = create(
        d,
        "doomed",
        256,
        BufferUsage::empty(),
        MemoryLocation::Upload,
    )?;
    d.destroy_buffer(&doomed_up).step("destroy")?;
    mistake(
        "map destroyed",
        expect_err("map destroyed", d.map(&doomed_up, MapMode::Write), &gone),
    )?;
    // Destroyed after recording: the whole batch is refused, nothing runs.
    let doomed2 = create(d, "doomed", 256, RW, dl)?;
    let mut batch = d.batch().step("batch")?;
    batch.write(local, 0, &[0u8; 16]).step("record")?;
    batch.copy(&doomed2, 0, local, 0, 4).step("record copy")?;
    d.destroy_buffer(&doomed2).step("destroy")?;
    mistake(
        "submit with a destroyed buffer",
        expect_err("submit with destroyed", batch.submit(), &gone).map(|_| ()),
    )?;
    pass(format!(
        "{checked} mistakes, each the exact error, data intact after each"
    ))
}

fn threads<B: Backend>(d: &Device<B>) -> R {
    let threads = 4;
    let per_thread = 25;
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let d = d.clone();
                scope.spawn(move || -> Result<(), String> {
                    let mut rng = Rng::new(100 + t);
                    let mut mine = Vec::new();
                    for i in 0..per_thread {
                        let size = (1 + rng.below(16 << 10)) * 4;
                        let location = if i % 3 == 0 {
                            MemoryLocation::Upload
                        } else {
                            MemoryLocation::DeviceLocal
                        };
                        let usage = if location == MemoryLocation::Upload {
                            BufferUsage::empty()
                        } else {
                            RW
                        };
                        let data = rng.bytes(usize_of(size));
                        let buffer = d
                            .create_buffer(
                                &BufferDesc::new(size, usage, location)
                                    .with_label(&format!("thread {t} buffer {i}")),
                            )
                            .step("create")?;
                        d.write(&buffer, 0, &data).step("write")?;
                        mine.push((buffer, data));
                    }
                    for (buffer, data) in &mine {
                        let got = d.read(buffer, 0, data.len() as u64).step("read")?;
                        compare(&format!("thread {t}"), &got, data)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    for r in results {
        r?;
    }
    pass(format!(
        "{threads} threads x {per_thread} buffers created, written, read back at once"
    ))
}

/// `Batch::copy_many`: many copies between two buffers (and within one) in one call land
/// as that many `copy`s would, in order; a bad entry anywhere rejects the whole call and
/// leaves the batch as it was.
fn batch_copy_many<B: Backend>(d: &Device<B>) -> R {
    let size: u64 = 256 << 10;
    let storage = RW | BufferUsage::STORAGE;
    let a = create(d, "copy_many a", size, storage, MemoryLocation::DeviceLocal)?;
    let b = create(d, "copy_many b", size, storage, MemoryLocation::DeviceLocal)?;
    let mut rng = Rng::new(1234);
    let mut ma = rng.bytes(usize_of(size));
    let mut mb = rng.bytes(usize_of(size));
    d.write(&a, 0, &ma).step("initial a")?;
    d.write(&b, 0, &mb).step("initial b")?;
    let mut batch = d.batch().step("batch")?;
    // 2000 copies a -> b: 256-byte slots in shuffled order (scattered, as a manager's uploads
    // are), then some of b's slots copied on within b (reading what the first call wrote).
    let mut slots: Vec<u64> = (0..size / 512).collect();
    for i in (1..slots.len()).rev() {
        slots.swap(i, usize_of(rng.below(i as u64 + 1)));
    }
    let copies: Vec<(u64, u64, u64)> = slots
        .iter()
        .enumerate()
        .map(|(i, &s)| ((i as u64 % 512) * 256, s * 512, 4 * (1 + rng.below(64))))
        .collect();
    let before = batch.len();
    for bad in [(size - 16, 0, 32), (6, 0, 8), (0, 16, 6)] {
        let mut with_bad = copies.clone();
        with_bad.insert(copies.len() / 2, bad);
        if batch.copy_many(&a, &b, &with_bad).is_ok() {
            return Err(format!("copy_many accepted {bad:?}"));
        }
        if batch.len() != before {
            return Err("a rejected copy_many recorded commands".into());
        }
    }
    // Within one buffer, an overlapping entry is refused too.
    if batch
        .copy_many(&b, &b, &[(0, 4096, 64), (0, 32, 64)])
        .is_ok()
    {
        return Err("copy_many accepted an overlapping copy within one buffer".into());
    }
    batch.copy_many(&a, &b, &copies).step("copy_many a -> b")?;
    for &(so, dof, len) in &copies {
        let (so, dof, len) = (usize_of(so), usize_of(dof), usize_of(len));
        mb[dof..dof + len].copy_from_slice(&ma[so..so + len]);
    }
    let within: Vec<(u64, u64, u64)> = (0..200u64).map(|i| (i * 512, i * 512 + 256, 256)).collect();
    batch
        .copy_many(&b, &b, &within)
        .step("copy_many within b")?;
    for &(so, dof, len) in &within {
        let (so, dof, len) = (usize_of(so), usize_of(dof), usize_of(len));
        let bytes = mb[so..so + len].to_vec();
        mb[dof..dof + len].copy_from_slice(&bytes);
    }
    // And back: b -> a, reading what the calls above wrote.
    let back: Vec<(u64, u64, u64)> = (0..100u64)
        .map(|i| (i * 1024 + 256, i * 2048, 128))
        .collect();
    batch.copy_many(&b, &a, &back).step("copy_many b -> a")?;
    for &(so, dof, len) in &back {
        let (so, dof, len) = (usize_of(so), usize_of(dof), usize_of(len));
        ma[dof..dof + len].copy_from_slice(&mb[so..so + len]);
    }
    batch.copy_many(&a, &b, &[]).step("empty copy_many")?;
    batch.submit().step("submit")?;
    compare("a", &d.read(&a, 0, size).step("read a")?, &ma)?;
    compare("b", &d.read(&b, 0, size).step("read b")?, &mb)?;
    pass(
        "2300 copies in three calls (scattered, within one buffer, back): exact; bad entries rejected whole",
    )
}

/// `Device::write_mapped_list` + `Batch::copy_list`: writes staged where a list says (in an
/// upload buffer, by the copy threads when they are many), then copied by the list: 3,000
/// scattered 256-byte writes (a scatter dispatch where the backend has one), a run of
/// adjacent ones (one copy region) and mixed lengths, each exact; a list that does not
/// match its writes, or reaches past a buffer, is refused with nothing written or recorded.
fn batch_copy_list<B: Backend>(d: &Device<B>) -> R {
    use gantry_core::scatter::CopyList;
    let size: u64 = 4 << 20;
    let storage = RW | BufferUsage::STORAGE;
    let dst = create(
        d,
        "copy_list dst",
        size,
        storage,
        MemoryLocation::DeviceLocal,
    )?;
    let staging = create(
        d,
        "copy_list staging",
        size,
        BufferUsage::TRANSFER_SRC | BufferUsage::STORAGE,
        MemoryLocation::Upload,
    )?;
    let mut rng = Rng::new(77);
    let mut model = rng.bytes(usize_of(size));
    d.write(&dst, 0, &model).step("initial dst")?;
    let payload = rng.bytes(2 << 20);
    // Scattered 256-byte slots in shuffled order; a run of 64 adjacent slots; mixed lengths
    // (multiples of 4) to slots of their own.
    let mut slots: Vec<u64> = (0..size / 1024).collect();
    for i in (1..slots.len()).rev() {
        slots.swap(i, usize_of(rng.below(i as u64 + 1)));
    }
    let mut writes: Vec<(u64, &[u8])> = Vec::new();
    for (i, &slot) in slots[..3000].iter().enumerate() {
        writes.push((slot * 1024, &payload[i * 256..(i + 1) * 256]));
        if i == 1500 {
            // An empty write in the middle: no entry.
            writes.push((slot * 1024, &payload[..0]));
        }
    }
    // Four adjacent writes filling one slot: contiguous in staging and in the destination.
    for k in 0..4u64 {
        let at = usize_of(k) * 256;
        writes.push((slots[3000] * 1024 + k * 256, &payload[at..at + 256]));
    }
    for (i, &slot) in slots[3001..3200].iter().enumerate() {
        let len = usize_of(4 * (1 + rng.below(128)));
        writes.push((slot * 1024, &payload[i * 512..i * 512 + len]));
    }
    let mut list = CopyList::with_capacity(writes.len());
    let (end, _) = list.push_packed(4096, &writes, 16);
    if end + 4096 > size {
        return Err(format!("staged {end} bytes past the staging buffer"));
    }
    d.map(&staging, MapMode::Write).step("map staging")?;
    // A list that does not match its writes: refused, nothing written.
    let mut wrong = list.clone();
    wrong.push(end + 4096, 0, 4);
    if d.write_mapped_list(&staging, &writes, &wrong).is_ok() {
        return Err("write_mapped_list accepted a list with an extra entry".into());
    }
    d.write_mapped_list(&staging, &writes, &list)
        .step("write_mapped_list")?;
    d.unmap(&staging).step("unmap staging")?;
    let mut batch = d.batch().step("batch")?;
    let mut past = list.clone();
    past.push(0, size - 4, 8);
    if batch.copy_list(&staging, &dst, &past).is_ok() {
        return Err("copy_list accepted an entry past the destination".into());
    }
    if !batch.is_empty() {
        return Err("a rejected copy_list recorded commands".into());
    }
    batch.copy_list(&staging, &dst, &list).step("copy_list")?;
    batch.submit().step("submit")?;
    for &(offset, data) in &writes {
        let at = usize_of(offset);
        model[at..at + data.len()].copy_from_slice(data);
    }
    compare("dst", &d.read(&dst, 0, size).step("read dst")?, &model)?;
    pass(format!(
        "{} writes staged by their list and copied by it ({} contiguous): exact; mismatched and out-of-bounds lists refused",
        list.len(),
        list.joins()
    ))
}

fn create_destroy_10000<B: Backend>(d: &Device<B>) -> R {
    d.wait_idle().step("idle")?;
    d.poll().step("poll")?;
    let live = d.live_buffers();
    let live_bytes = d.live_bytes();
    // Warm up the backend's own pools once, then measure.
    for _ in 0..16 {
        let b = create(d, "warm", 64 << 10, RW, MemoryLocation::DeviceLocal)?;
        drop(b);
    }
    d.wait_idle().step("idle")?;
    d.poll().step("poll")?;
    let allocated = d.allocated_bytes();
    for i in 0..10_000u32 {
        let location = MemoryLocation::ALL[(i % 3) as usize];
        let usage = if location == MemoryLocation::DeviceLocal {
            RW
        } else {
            BufferUsage::empty()
        };
        let b = d
            .create_buffer(&BufferDesc::new(64 << 10, usage, location).with_label("churn"))
            .step("create")?;
        if i % 2 == 0 {
            d.destroy_buffer(&b).step("destroy")?;
        }
        drop(b);
    }
    d.wait_idle().step("idle")?;
    d.poll().step("poll")?;
    check!(
        d.live_buffers() == live && d.live_bytes() == live_bytes,
        "live buffers {} ({} B) after, {live} ({live_bytes} B) before",
        d.live_buffers(),
        d.live_bytes()
    );
    let after = d.allocated_bytes();
    if let (Some(before), Some(after)) = (allocated, after) {
        check!(
            after <= before,
            "backend memory grew: {before} B before, {after} B after 10,000 create/destroy"
        );
    }
    pass(format!(
        "live buffers back to {live}; backend allocated bytes {allocated:?} -> {after:?}"
    ))
}

/// Limits the process's address space for the duration of `f` (Linux), so that a CPU device,
/// whose device memory is host memory, really runs out. Only the big request fails: the
/// limit leaves room above what the process already maps.
#[cfg(target_os = "linux")]
fn with_address_space_headroom<T>(headroom: u64, f: impl FnOnce() -> T) -> Option<T> {
    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }
    const RLIMIT_AS: i32 = 9;
    unsafe extern "C" {
        fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
    }
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().next()?.parse().ok()?;
    let current = pages * 4096;
    let mut old = Rlimit { cur: 0, max: 0 };
    // SAFETY: `old` is a valid, writable rlimit struct with the C layout (two u64 on Linux).
    if unsafe { getrlimit(RLIMIT_AS, &mut old) } != 0 {
        return None;
    }
    let new = Rlimit {
        cur: (current + headroom).min(old.max),
        max: old.max,
    };
    // SAFETY: `new` is a valid rlimit struct; lowering the soft limit is always allowed.
    if unsafe { setrlimit(RLIMIT_AS, &new) } != 0 {
        return None;
    }
    let out = f();
    // SAFETY: restores the limit read above (soft limit <= hard limit, unchanged hard limit).
    unsafe { setrlimit(RLIMIT_AS, &old) };
    Some(out)
}

/// How many max-size buffers the OOM case holds at most while filling a GPU's heap
/// (64 x 4 GiB = 256 GiB, beyond any current GPU).
const OOM_MAX_BUFFERS: usize = 64;

fn out_of_memory<B: Backend>(d: &Device<B>) -> R {
    let max = d.limits().max_buffer_size;
    let info = d.adapter_info().clone();
    let (result, how) = if info.device_type == DeviceType::Cpu {
        // The device's memory is the host's: give the process 256 MiB of headroom and ask for
        // more than that, well within max_buffer_size.
        #[cfg(target_os = "linux")]
        {
            let size = (1u64 << 30).min(max - max % 4);
            let Some(r) = with_address_space_headroom(256 << 20, || {
                d.create_buffer(
                    &BufferDesc::new(size, RW, MemoryLocation::DeviceLocal).with_label("too big"),
                )
            }) else {
                return Ok(Outcome::Skip("could not limit the address space".into()));
            };
            (
                r,
                format!("{size} B with 256 MiB of host memory left (CPU device)"),
            )
        }
        #[cfg(not(target_os = "linux"))]
        {
            return Ok(Outcome::Skip(
                "CPU device: OOM needs an address-space limit (Linux only)".into(),
            ));
        }
    } else {
        // A real GPU: the largest buffer the device allows, beyond its heap on any GPU whose
        // max_buffer_size exceeds its memory (NVIDIA: 2^52).
        // Where max_buffer_size is below the heap (wgpu caps it at 4 GiB), keep the buffers
        // that fit and ask again until the heap runs out: OOM must still come back as an
        // error, not a panic or a lost device.
        let size = max - max % 4;
        let mut held = Vec::new();
        let r = loop {
            let r = d.create_buffer(
                &BufferDesc::new(size, RW, MemoryLocation::DeviceLocal).with_label("too big"),
            );
            match r {
                Ok(b) if held.len() < OOM_MAX_BUFFERS => held.push(b),
                other => break other,
            }
        };
        let how = if held.is_empty() {
            format!("{size} B (max_buffer_size)")
        } else {
            format!(
                "buffer {} of {size} B (max_buffer_size) after {} fitted",
                held.len() + 1,
                held.len()
            )
        };
        drop(held);
        (r, how)
    };
    match result {
        Err(Error::OutOfMemory) => {}
        Ok(_) => {
            return Ok(Outcome::Skip(format!(
                "the device had memory for {how}: cannot provoke OOM here"
            )));
        }
        Err(e) => return Err(format!("{how}: expected OutOfMemory, got {e:?}")),
    }
    // The device keeps working.
    let data = Rng::new(10).bytes(1 << 20);
    let b = d
        .create_buffer_init(Some("after oom"), RW, MemoryLocation::DeviceLocal, &data)
        .step("create after OOM")?;
    compare("after OOM", &d.read(&b, 0, 1 << 20).step("read")?, &data)?;
    pass(format!("OutOfMemory for {how}; device works afterwards"))
}

fn round_trip_256mib<B: Backend>(d: &Device<B>) -> R {
    let size: u64 = 256 << 20;
    check!(
        d.limits().max_buffer_size >= size,
        "max_buffer_size {} < 256 MiB: full limits not requested?",
        d.limits().max_buffer_size
    );
    let mut data = vec![0u8; usize_of(size)];
    for (i, chunk) in data.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
    }
    let buffer = create(d, "256 MiB", size, RW, MemoryLocation::DeviceLocal)?;
    let t = std::time::Instant::now();
    d.write(&buffer, 0, &data).step("write 256 MiB")?;
    d.wait_idle().step("idle")?;
    let up = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let back = d.read(&buffer, 0, size).step("read 256 MiB")?;
    let down = t.elapsed().as_secs_f64();
    compare("256 MiB", &back, &data)?;
    let _ = align_up(size, 4);
    pass(format!(
        "upload {:.2} GB/s, readback {:.2} GB/s (debug build, validation on)",
        size as f64 / up / 1e9,
        size as f64 / down / 1e9
    ))
}
