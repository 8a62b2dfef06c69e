//! Model-based property tests of the offset allocators: random operation sequences, including
//! bad input, applied to the allocator and to a simple reference model, compared after every
//! step.

use super::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 512 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const MAX_OPS: usize = if cfg!(miri) { 24 } else { 200 };

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        size: u64,
        align: u64,
    },
    /// Release the live allocation at this index (modulo the number live).
    Free(usize),
    Reset,
    /// Release a handle made by another allocator.
    Foreign,
    /// Release a handle made before a reset (modulo the number kept).
    Stale(usize),
    /// Resize the live allocation at this index (modulo the number live) to this size (rings
    /// only: the newest resizes in place, the others are refused).
    Resize(usize, u64),
}

fn align() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => (0u32..=8).prop_map(|p| 1u64 << p),
        1 => Just(4096u64),
        1 => Just(0u64),
        1 => Just(3u64),
        1 => Just(48u64),
    ]
}

fn ops() -> impl Strategy<Value = (u64, Vec<Op>)> {
    (1u64..=1024).prop_flat_map(|cap| {
        let op = prop_oneof![
            8 => (0..=cap + 8, align()).prop_map(|(size, align)| Op::Alloc { size, align }),
            6 => any::<usize>().prop_map(Op::Free),
            1 => Just(Op::Reset),
            1 => Just(Op::Foreign),
            1 => any::<usize>().prop_map(Op::Stale),
            3 => (any::<usize>(), 0..=cap + 8).prop_map(|(i, size)| Op::Resize(i, size)),
        ];
        (Just(cap), proptest::collection::vec(op, 1..MAX_OPS))
    })
}

/// A live allocation as the model knows it.
#[derive(Debug)]
struct Live {
    handle: Allocation,
    align: u64,
    /// Where the space it took begins (the ring model only).
    start: u64,
}

/// The checks every allocator must pass after every step: no overlap, alignment, every byte
/// accounted for, the fragmentation formula.
fn check_common<'a>(
    report: &AllocatorReport,
    cap: u64,
    live: impl Iterator<Item = &'a Live> + Clone,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(report.capacity, cap);
    prop_assert_eq!(report.live_allocations, live.clone().count() as u64);
    let used: u64 = live.clone().map(|l| l.handle.size()).sum();
    prop_assert_eq!(report.used, used);
    prop_assert_eq!(
        report.used + report.free + report.wasted,
        cap,
        "{:?}",
        report
    );
    prop_assert!(report.largest_free <= report.free);
    let expected = if report.free == 0 {
        0.0
    } else {
        1.0 - report.largest_free as f64 / report.free as f64
    };
    prop_assert_eq!(report.fragmentation(), expected);
    prop_assert!((0.0..1.0).contains(&report.fragmentation()));

    let mut ranges: Vec<(u64, u64)> = live
        .clone()
        .map(|l| (l.handle.offset(), l.handle.end()))
        .collect();
    ranges.sort_unstable();
    for l in live {
        prop_assert_eq!(l.handle.offset() % l.align, 0, "alignment of {:?}", l);
        prop_assert!(l.handle.size() > 0 && l.handle.end() <= cap);
    }
    for pair in ranges.windows(2) {
        prop_assert!(pair[0].1 <= pair[1].0, "overlap: {:?}", pair);
    }
    Ok(())
}

/// The error every allocator must give for a request that is bad whatever its state.
fn bad_request(size: u64, align: u64, cap: u64) -> Option<AllocError> {
    if size == 0 {
        Some(AllocError::ZeroSize { align })
    } else if !align.is_power_of_two() {
        Some(AllocError::InvalidAlignment { size, align })
    } else if size > cap {
        Some(AllocError::TooLarge {
            size,
            align,
            capacity: cap,
        })
    } else {
        None
    }
}

fn align_up(x: u64, align: u64) -> u64 {
    x.div_ceil(align) * align
}

/// Free gaps between live allocations (the free list's free ranges, when coalescing works).
fn gaps(cap: u64, live: &[Live]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = live
        .iter()
        .map(|l| (l.handle.offset(), l.handle.end()))
        .collect();
    ranges.sort_unstable();
    let mut gaps = Vec::new();
    let mut at = 0;
    for (start, end) in ranges {
        if start > at {
            gaps.push((at, start));
        }
        at = end;
    }
    if cap > at {
        gaps.push((at, cap));
    }
    gaps
}

proptest! {
    #![proptest_config(config())]

    /// Free list against a model that knows only the live allocations: free space is exactly
    /// the gaps between them (coalescing), and a request fails only when no gap holds it.
    #[test]
    fn free_list_matches_model((cap, ops) in ops()) {
        let mut heap = FreeListAllocator::new(cap);
        let mut other = FreeListAllocator::new(cap);
        let mut live: Vec<Live> = Vec::new();
        let mut stale: Vec<Allocation> = Vec::new();
        for op in ops {
            let before = heap.report();
            match op {
                Op::Alloc { size, align } => {
                    let result = heap.allocate(size, align);
                    let fits_somewhere = |size, align| gaps(cap, &live)
                        .iter()
                        .any(|&(s, e)| align_up(s, align) + size <= e);
                    match (bad_request(size, align, cap), result) {
                        (Some(expected), result) => prop_assert_eq!(result, Err(expected)),
                        (None, Ok(handle)) => {
                            prop_assert_eq!(handle.size(), size);
                            live.push(Live { handle, align, start: 0 });
                        }
                        (None, Err(e)) => {
                            prop_assert!(matches!(e, AllocError::OutOfSpace { .. }), "{e}");
                            prop_assert!(!fits_somewhere(size, align), "{e} but a gap holds it");
                        }
                    }
                }
                Op::Free(i) if !live.is_empty() => {
                    let l = live.swap_remove(i % live.len());
                    prop_assert_eq!(heap.free(l.handle), Ok(()));
                }
                Op::Free(_) => {}
                Op::Reset => {
                    heap.reset();
                    stale.extend(live.drain(..).map(|l| l.handle));
                }
                Op::Foreign => {
                    if let Ok(h) = other.allocate(1, 1) {
                        let (offset, size) = (h.offset(), h.size());
                        prop_assert_eq!(heap.free(h), Err(FreeError::Foreign { offset, size }));
                    }
                }
                Op::Stale(i) if !stale.is_empty() => {
                    let h = stale.swap_remove(i % stale.len());
                    let (offset, size) = (h.offset(), h.size());
                    prop_assert_eq!(heap.free(h), Err(FreeError::NotLive { offset, size }));
                }
                Op::Stale(_) | Op::Resize(..) => {}
            }
            let report = heap.report();
            if !matches!(op, Op::Alloc { .. } | Op::Free(_) | Op::Reset) {
                prop_assert_eq!(report, before, "a refused free changed the allocator");
            }
            check_common(&report, cap, live.iter())?;
            let gaps = gaps(cap, &live);
            prop_assert_eq!(report.wasted, 0);
            prop_assert_eq!(heap.free_ranges(), gaps.len(), "free ranges not coalesced");
            prop_assert_eq!(report.largest_free, gaps.iter().map(|(s, e)| e - s).max().unwrap_or(0));
            prop_assert_eq!(
                (heap.used(), heap.free_bytes(), heap.largest_free(), heap.fragmentation()),
                (report.used, report.free, report.largest_free, report.fragmentation())
            );
        }
        heap.reset();
        prop_assert_eq!(heap.largest_free(), cap);
    }

    /// Bump allocator against a model that only knows where the last allocation ended.
    #[test]
    fn bump_matches_model((cap, ops) in ops()) {
        let mut bump = BumpAllocator::new(cap);
        let mut live: Vec<Live> = Vec::new();
        let mut head = 0;
        for op in ops {
            match op {
                Op::Alloc { size, align } => {
                    let before = bump.report();
                    let result = bump.allocate(size, align);
                    match bad_request(size, align, cap) {
                        Some(expected) => prop_assert_eq!(result, Err(expected)),
                        None => {
                            let offset = align_up(head, align);
                            if offset + size <= cap {
                                let handle = result.unwrap();
                                prop_assert_eq!((handle.offset(), handle.size()), (offset, size));
                                prop_assert!(bump.is_live(&handle));
                                head = offset + size;
                                live.push(Live { handle, align, start: 0 });
                            } else {
                                prop_assert!(
                                    matches!(result, Err(AllocError::OutOfSpace { .. })),
                                    "expected out of space, got {:?}", result
                                );
                            }
                        }
                    }
                    if live.len() as u64 == before.live_allocations {
                        prop_assert_eq!(bump.report(), before, "a refused request changed the allocator");
                    }
                }
                Op::Reset => {
                    bump.reset();
                    for l in live.drain(..) {
                        prop_assert!(!bump.is_live(&l.handle));
                    }
                    head = 0;
                }
                Op::Free(_) | Op::Foreign | Op::Stale(_) | Op::Resize(..) => {}
            }
            let report = bump.report();
            check_common(&report, cap, live.iter())?;
            prop_assert_eq!(report.free, cap - head);
            prop_assert_eq!(report.largest_free, report.free);
        }
    }

    /// Ring allocator against a model of the ring rule: place after the newest allocation,
    /// else wrap to 0 if it fits before the oldest; release oldest first only; rewind when
    /// empty.
    #[test]
    fn ring_matches_model((cap, ops) in ops()) {
        let stats = std::sync::Arc::new(crate::BufferStats::new());
        let mut ring = RingAllocator::new(cap).with_stats(stats.clone());
        let mut other = RingAllocator::new(cap);
        // Oldest first.
        let mut live: std::collections::VecDeque<Live> = Default::default();
        let mut stale: Vec<Allocation> = Vec::new();
        for op in ops {
            let before = ring.report();
            let mut changed = false;
            match op {
                Op::Alloc { size, align } => {
                    let result = ring.allocate(size, align);
                    if let Some(expected) = bad_request(size, align, cap) {
                        prop_assert_eq!(result, Err(expected));
                    } else {
                        let head = live.back().map_or(0, |l| l.handle.end());
                        let expected = match (live.front(), live.back()) {
                            (None, _) => (size <= cap).then_some((0, 0)),
                            (Some(oldest), Some(newest)) if newest.start < oldest.start => {
                                let at = align_up(head, align);
                                (at + size <= oldest.start).then_some((head, at))
                            }
                            (Some(oldest), _) => {
                                let at = align_up(head, align);
                                if at + size <= cap {
                                    Some((head, at))
                                } else if size <= oldest.start {
                                    Some((0, 0))
                                } else {
                                    None
                                }
                            }
                        };
                        match (expected, result) {
                            (Some((start, offset)), Ok(handle)) => {
                                prop_assert_eq!((handle.offset(), handle.size()), (offset, size));
                                live.push_back(Live { handle, align, start });
                                changed = true;
                            }
                            (None, Err(AllocError::OutOfSpace { free, largest_free, .. })) => {
                                prop_assert_eq!((free, largest_free), (before.free, before.largest_free));
                            }
                            (expected, result) => {
                                prop_assert!(false, "expected {:?}, got {:?}", expected, result);
                            }
                        }
                    }
                }
                Op::Free(i) if !live.is_empty() => {
                    let i = i % live.len();
                    if i == 0 {
                        let l = live.pop_front().unwrap();
                        prop_assert_eq!(ring.free(l.handle), Ok(()));
                        changed = true;
                    } else {
                        // Out of order: refused, and the ring keeps it live. Rebuild the handle
                        // (the test sees the private fields) so the model keeps it too.
                        let l = live.remove(i).unwrap();
                        let h = &l.handle;
                        let copy = Allocation { offset: h.offset, size: h.size, allocator: h.allocator, seq: h.seq };
                        let (offset, oldest_offset) = (h.offset, live[0].handle.offset());
                        prop_assert_eq!(
                            ring.free(l.handle),
                            Err(FreeError::OutOfOrder { offset, oldest_offset })
                        );
                        live.insert(i, Live { handle: copy, ..l });
                    }
                }
                Op::Free(_) => {}
                Op::Reset => {
                    ring.reset();
                    stale.extend(live.drain(..).map(|l| l.handle));
                    changed = true;
                }
                Op::Foreign => {
                    if let Ok(h) = other.allocate(1, 1) {
                        let (offset, size) = (h.offset(), h.size());
                        prop_assert_eq!(ring.free(h), Err(FreeError::Foreign { offset, size }));
                    }
                }
                Op::Stale(i) if !stale.is_empty() => {
                    let h = stale.swap_remove(i % stale.len());
                    let (offset, size) = (h.offset(), h.size());
                    prop_assert_eq!(ring.free(h), Err(FreeError::NotLive { offset, size }));
                }
                Op::Stale(_) => {}
                Op::Resize(i, new_size) if !live.is_empty() => {
                    let i = i % live.len();
                    let newest = i == live.len() - 1;
                    let wrapped = live.back().unwrap().start < live.front().unwrap().start;
                    let limit = if wrapped { live.front().unwrap().start } else { cap };
                    let h = &live[i].handle;
                    let (offset, size) = (h.offset(), h.size());
                    let result = ring.resize(&mut live[i].handle, new_size);
                    if new_size == 0 {
                        prop_assert_eq!(result, Err(AllocError::ZeroSize { align: 1 }));
                    } else if !newest {
                        prop_assert_eq!(result, Err(AllocError::NotNewest { offset }));
                    } else if offset + new_size <= limit {
                        prop_assert_eq!(result, Ok(()));
                        changed = true;
                    } else {
                        prop_assert_eq!(
                            result,
                            Err(AllocError::OutOfSpace {
                                size: new_size - size,
                                align: 1,
                                capacity: cap,
                                free: before.free,
                                largest_free: before.largest_free,
                            })
                        );
                    }
                    let h = &live[i].handle;
                    let want = if changed { new_size } else { size };
                    prop_assert_eq!((h.offset(), h.size()), (offset, want));
                }
                Op::Resize(..) => {}
            }
            let report = ring.report();
            if !changed {
                prop_assert_eq!(report, before, "a refused call changed the ring");
            }
            check_common(&report, cap, live.iter())?;

            // Free space and wrap waste from the model.
            let head = live.back().map_or(0, |l| l.handle.end());
            let (free, largest, wrap_waste) = match (live.front(), live.back()) {
                (None, _) => (cap, cap, 0),
                (Some(oldest), Some(newest)) if newest.start < oldest.start => {
                    let k = live.iter().position(|l| l.start < oldest.start).unwrap();
                    (oldest.start - head, oldest.start - head, cap - live[k - 1].handle.end())
                }
                (Some(oldest), _) => (
                    cap - head + oldest.start,
                    (cap - head).max(oldest.start),
                    0,
                ),
            };
            prop_assert_eq!((report.free, report.largest_free), (free, largest));
            prop_assert_eq!(ring.wasted_at_wrap(), wrap_waste);
            let padding: u64 = live.iter().map(|l| l.handle.offset() - l.start).sum();
            prop_assert_eq!(report.wasted, padding + wrap_waste);
            prop_assert_eq!(ring.len(), live.len());
            prop_assert_eq!(stats.snapshot().live_bytes, report.used);
        }
        // Releasing everything, oldest first, rewinds the ring: no wrap waste remains.
        while let Some(l) = live.pop_front() {
            prop_assert_eq!(ring.free(l.handle), Ok(()));
        }
        prop_assert_eq!(ring.report().free, cap);
        prop_assert_eq!(ring.wasted_at_wrap(), 0);
    }
}

#[test]
fn overflow_when_aligning_is_an_error_not_a_panic() {
    let cap = u64::MAX;
    let mut bump = BumpAllocator::new(cap);
    let _a = bump.allocate(u64::MAX - 10, 1).unwrap();
    let before = bump.report();
    assert_eq!(
        bump.allocate(5, 1 << 40),
        Err(AllocError::Overflow {
            size: 5,
            align: 1 << 40,
            capacity: cap
        })
    );
    assert_eq!(bump.report(), before);

    let mut ring = RingAllocator::new(cap);
    let _a = ring.allocate(u64::MAX - 10, 1).unwrap();
    assert!(matches!(
        ring.allocate(5, 1 << 40),
        Err(AllocError::Overflow { .. })
    ));

    let mut heap = FreeListAllocator::new(cap);
    let _a = heap.allocate(u64::MAX - 10, 1).unwrap();
    assert!(matches!(
        heap.allocate(5, 1 << 40),
        Err(AllocError::Overflow { .. })
    ));
    assert!(heap.allocate(5, 1).is_ok());
}

#[test]
fn zero_capacity_refuses_cleanly() {
    let mut ring = RingAllocator::new(0);
    assert!(matches!(
        ring.allocate(1, 1),
        Err(AllocError::TooLarge { .. })
    ));
    let mut heap = FreeListAllocator::new(0);
    assert!(matches!(
        heap.allocate(1, 1),
        Err(AllocError::TooLarge { .. })
    ));
    assert_eq!(heap.report().fragmentation(), 0.0);
    let mut bump = BumpAllocator::new(0);
    assert!(matches!(
        bump.allocate(1, 1),
        Err(AllocError::TooLarge { .. })
    ));
}

#[test]
fn stats_stay_paired() {
    let stats = std::sync::Arc::new(crate::BufferStats::new());
    let mut ring = RingAllocator::new(100).with_stats(stats.clone());
    let mut heap = FreeListAllocator::new(100).with_stats(stats.clone());
    let mut bump = BumpAllocator::new(100).with_stats(stats.clone());
    let a = ring.allocate(10, 1).unwrap();
    let _b = ring.allocate(10, 1).unwrap();
    ring.free(a).unwrap();
    ring.reset();
    let _c = heap.allocate(30, 1).unwrap();
    let d = heap.allocate(30, 1).unwrap();
    heap.free(d).unwrap();
    heap.reset();
    let _e = bump.allocate(7, 1).unwrap();
    let _f = bump.allocate(7, 1).unwrap();
    bump.reset();
    let s = stats.snapshot();
    assert_eq!((s.allocations, s.deallocations, s.live_bytes), (6, 6, 0));
    assert_eq!(s.peak_bytes, 60);
}

#[test]
fn report_displays() {
    let mut heap = FreeListAllocator::new(300);
    let _a = heap.allocate(100, 1).unwrap();
    let text = heap.report().to_string();
    assert!(
        text.contains("100 B used") && text.contains("200 B free"),
        "{text}"
    );
}
