//! The line buffer against `BufRead::split`-based reference splitting, on random input fed
//! through a reader that returns random short reads and `Interrupted` errors.

use super::*;
use proptest::prelude::*;
use std::io::BufRead;

/// A reader that hands out its data in the given chunk sizes (cycled); a size of 0 is an
/// `Interrupted` error.
struct ShortReads {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    next: usize,
    calls: usize,
}

impl Read for ShortReads {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        if size == 0 {
            return Err(io::Error::from(ErrorKind::Interrupted));
        }
        let n = size.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reference: lines as `BufRead::lines` splits them (without `\n`, and without the `\r` of a
/// `\r\n`), with the raw length each occupies before its `\n` and where it starts.
fn reference(data: &[u8]) -> Vec<(Vec<u8>, usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in data.split(|&b| b == b'\n').map(<[u8]>::to_vec) {
        let raw_len = piece.len();
        let terminated = start + raw_len < data.len();
        if !terminated && piece.is_empty() {
            break; // nothing after the last '\n'
        }
        let mut line = piece;
        if terminated && line.last() == Some(&b'\r') {
            line.pop();
        }
        out.push((line, raw_len, start));
        start += raw_len + 1;
    }
    // Cross-check the splitting itself against std's.
    let std_split: Vec<Vec<u8>> = io::Cursor::new(data)
        .split(b'\n')
        .map(Result::unwrap)
        .collect();
    assert_eq!(std_split.len(), out.len());
    out
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    let max_len = if cfg!(miri) { 60 } else { 400 };
    proptest::collection::vec(
        prop_oneof![4 => Just(b'a'), 2 => Just(b'b'), 1 => Just(b'\r'), 2 => Just(b'\n')],
        0..max_len,
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 6 } else { 1024 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn lines_match_reference(
        data in input(),
        sizes in proptest::collection::vec(0usize..24, 1..8)
            .prop_filter("at least one non-interrupting read", |s| s.iter().any(|&n| n > 0)),
        capacity in 1usize..16,
        max_capacity in prop_oneof![Just(usize::MAX), 1usize..40],
    ) {
        let reader = ShortReads { data: data.clone(), pos: 0, sizes, next: 0, calls: 0 };
        let mut lines = LineBuffer::new(reader, capacity).with_max_capacity(max_capacity);
        let max = lines.max_capacity();
        let mut expected = reference(&data).into_iter();
        loop {
            let got = lines.read_line();
            match expected.next() {
                Some((line, raw_len, _)) if raw_len < max => {
                    let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(got, Some(&line[..]));
                }
                Some((_, _, start)) => {
                    // Too long: a clear error, and the bytes are still there.
                    match got {
                        Err(LineError::LineTooLong { limit, buffered }) => {
                            prop_assert_eq!((limit, buffered), (max, max));
                            prop_assert_eq!(lines.remaining(), &data[start..start + max]);
                        }
                        other => prop_assert!(false, "expected LineTooLong, got {:?}", other),
                    }
                    break;
                }
                None => {
                    prop_assert_eq!(got.map_err(|e| TestCaseError::fail(e.to_string()))?, None);
                    // Exhausted: no spinning, and it stays exhausted.
                    let calls = lines.get_ref().calls;
                    prop_assert_eq!(lines.read_line().map_err(|e| TestCaseError::fail(e.to_string()))?, None);
                    prop_assert_eq!(lines.get_ref().calls, calls);
                    prop_assert!(lines.remaining().is_empty());
                    break;
                }
            }
            prop_assert!(lines.capacity() <= max);
        }
    }
}

#[test]
fn io_errors_propagate_and_keep_bytes() {
    struct FailsAfter<'a>(&'a [u8]);
    impl Read for FailsAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("disk on fire"));
            }
            let n = self.0.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut lines = LineBuffer::new(FailsAfter(b"one\ntw"), 64);
    assert_eq!(lines.read_line().unwrap(), Some(&b"one"[..]));
    assert!(matches!(lines.read_line(), Err(LineError::Io(_))));
    assert_eq!(lines.remaining(), b"tw");
}

#[test]
fn crlf_and_lone_cr() {
    let mut lines = LineBuffer::new(&b"a\r\nb\rc\n\r\n\r"[..], 2);
    let mut got = Vec::new();
    while let Some(line) = lines.read_line().unwrap() {
        got.push(line.to_vec());
    }
    assert_eq!(got, [&b"a"[..], b"b\rc", b"", b"\r"]);
}

#[test]
fn too_long_line_can_be_skipped() {
    let mut lines = LineBuffer::new(&b"0123456789\nok\n"[..], 4).with_max_capacity(8);
    assert!(matches!(
        lines.read_line(),
        Err(LineError::LineTooLong { limit: 8, .. })
    ));
    // Skip the rest of the long line by hand.
    loop {
        let rest = lines.remaining();
        if let Some(i) = rest.iter().position(|&b| b == b'\n') {
            lines.consume(i + 1);
            break;
        }
        let n = rest.len();
        lines.consume(n);
        lines.fill().unwrap();
    }
    assert_eq!(lines.read_line().unwrap(), Some(&b"ok"[..]));
    assert_eq!(lines.read_line().unwrap(), None);
}

#[test]
fn fill_reports_a_full_buffer() {
    let mut lines = LineBuffer::new(&b"123456789"[..], 8).with_max_capacity(8);
    assert_eq!(lines.fill().unwrap(), 8);
    assert!(matches!(
        lines.fill(),
        Err(LineError::BufferFull { capacity: 8 })
    ));
    lines.consume(3);
    assert_eq!(lines.fill().unwrap(), 1);
    assert_eq!(lines.remaining(), b"456789");
}
