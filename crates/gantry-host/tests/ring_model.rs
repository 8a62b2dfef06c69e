//! Model-based property tests of the byte ring and of the SPSC ring used from one thread:
//! random operation sequences (zero-length and oversized writes and reads included) are
//! applied to the ring and to a `VecDeque<u8>`, and both are compared after every step.
#![cfg(not(loom))]

use std::collections::VecDeque;

use gantry_host::{RingBuffer, RingError, spsc};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write(Vec<u8>),
    Read(usize),
    Peek(usize),
    Consume(usize),
    Clear,
}

fn op(cap: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..=2 * cap + 1).prop_map(Op::Write),
        3 => (0..=2 * cap + 1).prop_map(Op::Read),
        1 => (0..=2 * cap + 1).prop_map(Op::Peek),
        1 => (0..=2 * cap + 1).prop_map(Op::Consume),
        1 => Just(Op::Clear),
    ]
}

fn case() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (1usize..40).prop_flat_map(|cap| (Just(cap), prop::collection::vec(op(cap), 0..60)))
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 512 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn model_write(model: &mut VecDeque<u8>, cap: usize, data: &[u8]) -> usize {
    let n = data.len().min(cap - model.len());
    model.extend(&data[..n]);
    n
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ring_matches_vecdeque((cap, ops) in case()) {
        let mut ring = RingBuffer::new(cap).unwrap();
        let mut model = VecDeque::new();
        for op in ops {
            match op {
                Op::Write(data) => {
                    prop_assert_eq!(ring.write(&data), model_write(&mut model, cap, &data));
                }
                Op::Read(n) => {
                    let mut out = vec![0u8; n];
                    let got = ring.read(&mut out);
                    let want: Vec<u8> = model.drain(..n.min(model.len())).collect();
                    prop_assert_eq!(&out[..got], &want[..]);
                }
                Op::Peek(n) => {
                    let mut out = vec![0u8; n];
                    let got = ring.peek(&mut out);
                    let want: Vec<u8> = model.iter().take(n).copied().collect();
                    prop_assert_eq!(&out[..got], &want[..]);
                }
                Op::Consume(n) => {
                    let want = n.min(model.len());
                    model.drain(..want);
                    prop_assert_eq!(ring.consume(n), want);
                }
                Op::Clear => {
                    ring.clear();
                    model.clear();
                }
            }
            prop_assert_eq!(ring.available(), model.len());
            prop_assert_eq!(ring.remaining(), cap - model.len());
            prop_assert_eq!(ring.is_empty(), model.is_empty());
            prop_assert_eq!(ring.is_full(), model.len() == cap);
            let (a, b) = ring.as_slices();
            prop_assert!(b.is_empty() || a.len() + b.len() == model.len());
            let joined: Vec<u8> = a.iter().chain(b).copied().collect();
            prop_assert_eq!(joined, model.iter().copied().collect::<Vec<u8>>());
        }
    }

    #[test]
    fn spsc_matches_vecdeque((cap, ops) in case(), prefill in prop::collection::vec(any::<u8>(), 0..80)) {
        // Start from a split ring holding some bytes, to cover `RingBuffer::split`.
        let mut ring = RingBuffer::new(cap).unwrap();
        let mut model = VecDeque::new();
        ring.write(&prefill);
        model_write(&mut model, cap, &prefill);
        let mut tmp = [0u8; 3];
        let k = ring.read(&mut tmp[..prefill.len() % 3]);
        model.drain(..k);
        ring.write(&prefill);
        model_write(&mut model, cap, &prefill);
        let (mut tx, mut rx) = ring.split();
        for op in ops {
            match op {
                Op::Write(data) => {
                    prop_assert_eq!(tx.write(&data), model_write(&mut model, cap, &data));
                }
                Op::Read(n) => {
                    let mut out = vec![0u8; n];
                    let got = rx.read(&mut out);
                    let want: Vec<u8> = model.drain(..n.min(model.len())).collect();
                    prop_assert_eq!(&out[..got], &want[..]);
                }
                Op::Peek(n) => {
                    let mut out = vec![0u8; n];
                    let got = rx.peek(&mut out);
                    let want: Vec<u8> = model.iter().take(n).copied().collect();
                    prop_assert_eq!(&out[..got], &want[..]);
                }
                Op::Consume(n) => {
                    let want = n.min(model.len());
                    model.drain(..want);
                    prop_assert_eq!(rx.consume(n), want);
                }
                Op::Clear => {
                    // The split form has no clear: drain through the consumer instead.
                    let len = model.len();
                    model.clear();
                    prop_assert_eq!(rx.consume(usize::MAX), len);
                }
            }
            prop_assert_eq!(rx.available(), model.len());
            prop_assert_eq!(tx.remaining(), cap - model.len());
            prop_assert_eq!(tx.is_full(), model.len() == cap);
            let (a, b) = rx.as_slices();
            let joined: Vec<u8> = a.iter().chain(b).copied().collect();
            prop_assert_eq!(joined, model.iter().copied().collect::<Vec<u8>>());
        }
    }
}

#[test]
fn zero_capacity_is_a_typed_error() {
    assert_eq!(RingBuffer::new(0).unwrap_err(), RingError::ZeroCapacity);
    assert_eq!(spsc::channel(0).unwrap_err(), RingError::ZeroCapacity);
    assert!(matches!(
        RingBuffer::new(usize::MAX),
        Err(RingError::TooLarge {
            requested: usize::MAX,
            ..
        })
    ));
    assert!(matches!(
        spsc::channel(usize::MAX),
        Err(RingError::TooLarge { .. })
    ));
}
