//! Model-based property tests of the arena: random allocation sequences; every live
//! allocation keeps its contents, none overlap, alignment holds, fixed mode fails cleanly.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Bytes { size: usize, align_log2: u32 },
    Zeroed { size: usize, align_log2: u32 },
    Value(u64),
    Slice(Vec<u32>),
    BadAlign(usize),
    Huge,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    let max: usize = if cfg!(miri) { 300 } else { 3000 };
    prop_oneof![
        6 => (0..max, 0u32..=12).prop_map(|(size, align_log2)| Op::Bytes { size, align_log2 }),
        2 => (0..max, 0u32..=12).prop_map(|(size, align_log2)| Op::Zeroed { size, align_log2 }),
        4 => any::<u64>().prop_map(Op::Value),
        2 => proptest::collection::vec(any::<u32>(), 0..40).prop_map(Op::Slice),
        1 => prop_oneof![Just(0usize), Just(3), Just(24), Just(usize::MAX)].prop_map(Op::BadAlign),
        1 => Just(Op::Huge),
        1 => Just(Op::Reset),
    ]
}

/// A live allocation: where it is and the bytes it must still hold.
struct Live {
    ptr: *const u8,
    bytes: Vec<u8>,
}

fn check(live: &[Live]) -> Result<(), TestCaseError> {
    let mut ranges: Vec<(usize, usize)> = live
        .iter()
        .filter(|l| !l.bytes.is_empty())
        .map(|l| (l.ptr.addr(), l.ptr.addr() + l.bytes.len()))
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        prop_assert!(pair[0].1 <= pair[1].0, "overlap {:?}", pair);
    }
    for l in live {
        // SAFETY: `ptr` came from a live allocation of `bytes.len()` initialised bytes in the
        // arena under test, which has not been reset since (reset clears `live`).
        let now = unsafe { core::slice::from_raw_parts(l.ptr, l.bytes.len()) };
        prop_assert_eq!(now, &l.bytes[..], "contents changed");
    }
    Ok(())
}

use proptest::test_runner::TestCaseError;

fn run(mut arena: Arena, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let fixed = arena.is_fixed();
    let mut live: Vec<Live> = Vec::new();
    let mut stamp = 0u8;
    for op in ops {
        stamp = stamp.wrapping_add(1);
        let before = arena.allocated_bytes();
        let capacity_before = arena.capacity();
        let is_reset = matches!(op, Op::Reset);
        let result: Result<(), ArenaError> = match op {
            Op::Bytes { size, align_log2 } => {
                let align = 1usize << align_log2;
                arena.try_alloc_bytes(size, align).map(|raw| {
                    assert_eq!(raw.len(), size);
                    assert_eq!(raw.as_ptr().addr() % align, 0, "alignment {align}");
                    for b in raw.iter_mut() {
                        b.write(stamp);
                    }
                    live.push(Live {
                        ptr: raw.as_ptr().cast(),
                        bytes: vec![stamp; size],
                    });
                })
            }
            Op::Zeroed { size, align_log2 } => {
                let align = 1usize << align_log2;
                arena.try_alloc_zeroed(size, align).map(|z| {
                    assert_eq!(z.as_ptr().addr() % align, 0, "alignment {align}");
                    assert!(z.iter().all(|&b| b == 0));
                    live.push(Live {
                        ptr: z.as_ptr(),
                        bytes: z.to_vec(),
                    });
                })
            }
            Op::Value(v) => arena.try_alloc(v).map(|r| {
                assert_eq!(*r, v);
                assert_eq!((r as *const u64).addr() % align_of::<u64>(), 0);
                live.push(Live {
                    ptr: (r as *const u64).cast(),
                    bytes: v.to_ne_bytes().to_vec(),
                });
            }),
            Op::Slice(values) => arena.try_alloc_slice_copy(&values).map(|s| {
                assert_eq!(&*s, &values[..]);
                assert_eq!(s.as_ptr().addr() % align_of::<u32>(), 0);
                live.push(Live {
                    ptr: s.as_ptr().cast(),
                    bytes: bytemuck::cast_slice(&values).to_vec(),
                });
            }),
            Op::BadAlign(align) => {
                let r = arena.try_alloc_bytes(8, align).map(|_| ());
                prop_assert_eq!(r, Err(ArenaError::InvalidAlignment { size: 8, align }));
                r
            }
            Op::Huge => {
                let r = arena.try_alloc_bytes(usize::MAX / 2, 4096).map(|_| ());
                prop_assert!(
                    matches!(
                        r,
                        Err(ArenaError::TooLarge { .. } | ArenaError::Full { .. })
                    ),
                    "{:?}",
                    r
                );
                r
            }
            Op::Reset => {
                arena.reset();
                live.clear();
                prop_assert_eq!(arena.allocated_bytes(), 0);
                prop_assert!(arena.chunk_count() <= 1);
                prop_assert!(arena.capacity() <= capacity_before);
                Ok(())
            }
        };
        match result {
            Ok(()) => prop_assert!(is_reset || arena.allocated_bytes() >= before),
            Err(e) => {
                // Failure changes nothing.
                prop_assert_eq!(arena.allocated_bytes(), before, "{}", e);
                prop_assert_eq!(arena.capacity(), capacity_before);
                if let ArenaError::Full {
                    size,
                    align,
                    remaining,
                    ..
                } = e
                {
                    prop_assert!(fixed);
                    // Had `size + align - 1` bytes been left, an aligned spot would exist.
                    prop_assert!(remaining < size + align - 1 || size > isize::MAX as usize / 2);
                }
            }
        }
        let used: usize = live.iter().map(|l| l.bytes.len()).sum();
        prop_assert!(arena.allocated_bytes() >= used);
        if fixed {
            prop_assert!(arena.allocated_bytes() <= arena.capacity());
        }
        check(&live)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn growing_arena_matches_model(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 24 } else { 120 })) {
        run(Arena::new(), ops)?;
    }

    #[test]
    fn small_first_chunk_matches_model(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 24 } else { 120 })) {
        run(Arena::with_capacity(24), ops)?;
    }

    #[test]
    fn fixed_arena_matches_model(
        cap in 0usize..if cfg!(miri) { 2048 } else { 20_000 },
        ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 24 } else { 120 }),
    ) {
        run(Arena::fixed(cap), ops)?;
    }
}

#[test]
fn fixed_arena_fills_exactly_and_reset_reuses_it() {
    let mut arena = Arena::fixed(64 * 8);
    let first: *const u64 = arena.alloc(0u64);
    for i in 1..64u64 {
        *arena.alloc(0u64) = i;
    }
    assert_eq!(arena.allocated_bytes(), 512);
    assert!(matches!(
        arena.try_alloc(1u8),
        Err(ArenaError::Full {
            size: 1,
            align: 1,
            capacity: 512,
            remaining: 0
        })
    ));
    arena.reset();
    // The same memory again, and no new chunk.
    let again: *const u64 = arena.alloc(0u64);
    assert_eq!(again, first);
    assert_eq!((arena.chunk_count(), arena.capacity()), (1, 512));
}

#[test]
#[should_panic(expected = "fixed arena full")]
fn panicking_variant_panics_with_the_error() {
    let arena = Arena::fixed(8);
    arena.alloc([0u8; 9]);
}

#[test]
fn page_aligned_memory_for_import() {
    let arena = Arena::new();
    arena.alloc(1u8);
    for _ in 0..3 {
        let page = arena.alloc_zeroed(3 * 4096, Arena::PAGE_ALIGN);
        assert_eq!(page.as_ptr().addr() % 4096, 0);
        page[3 * 4096 - 1] = 1;
    }
    let fixed = Arena::fixed(2 * 4096);
    let a = fixed.alloc_bytes(4096, Arena::PAGE_ALIGN);
    let b = fixed.alloc_bytes(4096, Arena::PAGE_ALIGN);
    assert_eq!(a.as_ptr().addr() % 4096, 0);
    assert_eq!(b.as_ptr().addr() % 4096, 0);
}

#[test]
fn growth_doubles_and_keeps_earlier_allocations() {
    let mut arena = Arena::new();
    let first = arena.alloc_slice_copy(&[7u8; 100]).as_ptr();
    for _ in 0..if cfg!(miri) { 200 } else { 10_000 } {
        arena.alloc([1u64; 8]);
    }
    // SAFETY: `first` points to 100 bytes the arena still holds (no reset since).
    let kept = unsafe { core::slice::from_raw_parts(first, 100) };
    assert_eq!(kept, &[7u8; 100]);
    let chunks = arena.chunk_count();
    assert!(chunks >= 2);
    arena.reset();
    assert_eq!(arena.chunk_count(), 1);
}

#[test]
fn zero_sized_allocations_are_aligned_and_free() {
    let arena = Arena::fixed(0);
    assert_eq!(arena.alloc_bytes(0, 4096).as_ptr().addr() % 4096, 0);
    let empty: &mut [u64] = arena.alloc_slice_copy(&[]);
    assert!(empty.is_empty());
    arena.alloc(());
    assert_eq!(arena.allocated_bytes(), 0);
    assert!(arena.try_alloc(0u8).is_err());
}

#[test]
fn stats_count_chunks() {
    let stats = std::sync::Arc::new(crate::BufferStats::new());
    let mut arena = Arena::new().with_stats(stats.clone());
    for _ in 0..100 {
        arena.alloc([0u64; 16]);
    }
    let s = stats.snapshot();
    assert_eq!(s.live_bytes, arena.capacity() as u64);
    assert_eq!(s.allocations, arena.chunk_count() as u64);
    arena.reset();
    assert_eq!(stats.snapshot().live_bytes, arena.capacity() as u64);
    drop(arena);
    assert_eq!(stats.snapshot().live_bytes, 0);
    assert_eq!(stats.snapshot().outstanding(), 0);
}

#[test]
fn arena_is_send() {
    fn send<T: Send>(_: T) {}
    let arena = Arena::new();
    arena.alloc(5u32);
    send(arena);
}
