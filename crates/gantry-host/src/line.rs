//! Line buffer (H4): lines from any `Read`, split with `memchr`.

use std::io::{self, ErrorKind, Read};

/// Default largest buffer (and so longest line) a [`LineBuffer`] grows to: 1 MiB, or its
/// initial capacity if larger.
const DEFAULT_MAX_CAPACITY: usize = 1 << 20;

/// Why a [`LineBuffer`] could not return a line. No buffered byte is lost: after a
/// [`LineTooLong`](LineError::LineTooLong) the bytes are still in
/// [`remaining`](LineBuffer::remaining), and can be skipped with [`consume`](LineBuffer::consume).
///
/// # Example
/// ```
/// use gantry_host::{LineBuffer, LineError};
///
/// let mut lines = LineBuffer::new(&b"0123456789\n"[..], 4).with_max_capacity(8);
/// assert!(matches!(lines.read_line(), Err(LineError::LineTooLong { limit: 8, buffered: 8 })));
/// assert_eq!(lines.remaining(), b"01234567");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The reader failed (an `Interrupted` read is retried, never reported).
    #[error("reading input failed: {0}")]
    Io(#[from] io::Error),
    /// A line is longer than the largest buffer allowed; `buffered` bytes of it are held.
    #[error(
        "line longer than the {limit}-byte limit of the line buffer ({buffered} bytes buffered, no newline)"
    )]
    LineTooLong {
        /// The buffer's maximum capacity.
        limit: usize,
        /// Bytes of the line held in the buffer.
        buffered: usize,
    },
    /// [`LineBuffer::fill`] found the buffer full at its maximum capacity.
    #[error(
        "line buffer full at its {capacity}-byte maximum; read or consume buffered bytes first"
    )]
    BufferFull {
        /// The buffer's maximum capacity.
        capacity: usize,
    },
}

/// A buffer that reads from `R` and hands out one line at a time, without copying.
///
/// * Lines end at `\n`; the `\n`, and a `\r` just before it, are not part of the returned line
///   (like [`std::io::BufRead::lines`]). A lone `\r` elsewhere is kept.
/// * The last line is returned even without a final `\n` (then nothing is stripped from it).
/// * A line longer than the buffer grows the buffer (doubling), up to a maximum capacity
///   (default 1 MiB, or the initial capacity if larger; see
///   [`with_max_capacity`](Self::with_max_capacity)). A line is returned when its bytes before
///   the `\n` (a `\r` included) number fewer than the maximum capacity: the buffer must also
///   hold the `\n`, or see the end of input, after them. A longer line makes
///   [`read_line`](Self::read_line) return [`LineError::LineTooLong`].
/// * `Interrupted` reads are retried; a read of 0 bytes is end of input, so `read_line` never
///   spins on an exhausted reader.
///
/// # Example
/// ```
/// use gantry_host::LineBuffer;
///
/// let input = &b"@seq1\r\nACGT\nlast line"[..];
/// let mut lines = LineBuffer::new(input, 4); // grows past 4 bytes as needed
/// let mut got = Vec::new();
/// while let Some(line) = lines.read_line()? {
///     got.push(line.to_vec());
/// }
/// assert_eq!(got, [&b"@seq1"[..], b"ACGT", b"last line"]);
/// # Ok::<(), gantry_host::LineError>(())
/// ```
#[derive(Debug)]
pub struct LineBuffer<R> {
    reader: R,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes.
    pos: usize,
    /// End of the buffered bytes.
    filled: usize,
    /// Bytes after `pos` already searched for a newline, so none is searched twice.
    scanned: usize,
    max_capacity: usize,
    eof: bool,
}

impl<R: Read> LineBuffer<R> {
    /// A line buffer over `reader` with an initial capacity of `capacity` bytes (at least 1).
    ///
    /// # Example
    /// ```
    /// let lines = gantry_host::LineBuffer::new(std::io::empty(), 8192);
    /// assert_eq!(lines.capacity(), 8192);
    /// ```
    pub fn new(reader: R, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            reader,
            buf: vec![0; capacity],
            pos: 0,
            filled: 0,
            scanned: 0,
            max_capacity: capacity.max(DEFAULT_MAX_CAPACITY),
            eof: false,
        }
    }

    /// Sets the largest capacity the buffer grows to, and so the longest line it returns
    /// (never below the current capacity).
    ///
    /// # Example
    /// ```
    /// let lines = gantry_host::LineBuffer::new(std::io::empty(), 16).with_max_capacity(64);
    /// assert_eq!(lines.max_capacity(), 64);
    /// ```
    pub fn with_max_capacity(mut self, max_capacity: usize) -> Self {
        self.max_capacity = max_capacity.max(self.buf.len());
        self
    }

    /// Reads once from the reader into the free space, first moving unconsumed bytes to the
    /// front and, when the buffer is full of them, growing it (up to the maximum). Returns the
    /// bytes read; `Ok(0)` means end of input. `Interrupted` reads are retried.
    ///
    /// # Errors
    /// [`LineError::Io`] when the reader fails, [`LineError::BufferFull`] when the buffer is
    /// full at its maximum capacity (the reader is not called).
    ///
    /// # Example
    /// ```
    /// let mut lines = gantry_host::LineBuffer::new(&b"abc"[..], 16);
    /// assert_eq!(lines.fill()?, 3);
    /// assert_eq!(lines.remaining(), b"abc");
    /// assert_eq!(lines.fill()?, 0);
    /// # Ok::<(), gantry_host::LineError>(())
    /// ```
    pub fn fill(&mut self) -> Result<usize, LineError> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        if self.filled == self.buf.len() {
            if self.buf.len() >= self.max_capacity {
                return Err(LineError::BufferFull {
                    capacity: self.max_capacity,
                });
            }
            let grown = self.buf.len().saturating_mul(2).min(self.max_capacity);
            self.buf.resize(grown, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.filled..]) {
                Ok(n) => {
                    // A misbehaving reader could claim more than it was given.
                    let n = n.min(self.buf.len() - self.filled);
                    self.filled += n;
                    self.eof = n == 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Returns the next line (without its `\n` or `\r\n`), reading from the reader as needed;
    /// `Ok(None)` at end of input once every byte has been returned.
    ///
    /// # Errors
    /// [`LineError::Io`] when the reader fails, [`LineError::LineTooLong`] when a line does
    /// not fit the maximum capacity. Buffered bytes stay buffered after an error.
    ///
    /// # Example
    /// ```
    /// let mut lines = gantry_host::LineBuffer::new(&b"a\nb"[..], 16);
    /// assert_eq!(lines.read_line()?, Some(&b"a"[..]));
    /// assert_eq!(lines.read_line()?, Some(&b"b"[..]));
    /// assert_eq!(lines.read_line()?, None);
    /// # Ok::<(), gantry_host::LineError>(())
    /// ```
    pub fn read_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        let (start, end) = loop {
            let from = self.pos + self.scanned;
            if let Some(i) = memchr::memchr(b'\n', &self.buf[from..self.filled]) {
                let newline = from + i;
                let start = self.pos;
                self.pos = newline + 1;
                self.scanned = 0;
                let end = if newline > start && self.buf[newline - 1] == b'\r' {
                    newline - 1
                } else {
                    newline
                };
                break (start, end);
            }
            self.scanned = self.filled - self.pos;
            if !self.eof {
                match self.fill() {
                    Ok(_) => continue,
                    Err(LineError::BufferFull { capacity }) => {
                        return Err(LineError::LineTooLong {
                            limit: capacity,
                            buffered: self.filled - self.pos,
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            if self.pos == self.filled {
                return Ok(None);
            }
            // End of input: the rest is the last line, without a newline.
            let start = self.pos;
            self.pos = self.filled;
            self.scanned = 0;
            break (start, self.filled);
        };
        Ok(Some(&self.buf[start..end]))
    }

    /// The buffered bytes not yet returned or consumed.
    ///
    /// # Example
    /// ```
    /// let mut lines = gantry_host::LineBuffer::new(&b"a\nbc"[..], 16);
    /// lines.read_line()?;
    /// assert_eq!(lines.remaining(), b"bc");
    /// # Ok::<(), gantry_host::LineError>(())
    /// ```
    pub fn remaining(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }

    /// Marks `amount` buffered bytes as used (at most all of [`remaining`](Self::remaining)).
    ///
    /// # Example
    /// ```
    /// let mut lines = gantry_host::LineBuffer::new(&b"skip:a\n"[..], 16);
    /// lines.fill()?;
    /// lines.consume(5);
    /// assert_eq!(lines.read_line()?, Some(&b"a"[..]));
    /// # Ok::<(), gantry_host::LineError>(())
    /// ```
    pub fn consume(&mut self, amount: usize) {
        let amount = amount.min(self.filled - self.pos);
        self.pos += amount;
        self.scanned = self.scanned.saturating_sub(amount);
    }

    /// True once the reader has reported end of input (a later [`fill`](Self::fill) may
    /// still find more, for a reader that grows).
    ///
    /// # Example
    /// ```
    /// let mut lines = gantry_host::LineBuffer::new(&b""[..], 16);
    /// assert_eq!(lines.read_line()?, None);
    /// assert!(lines.is_eof());
    /// # Ok::<(), gantry_host::LineError>(())
    /// ```
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Current size of the buffer.
    ///
    /// # Example
    /// ```
    /// let mut lines = gantry_host::LineBuffer::new(&b"longer than four\n"[..], 4);
    /// lines.read_line()?;
    /// assert_eq!(lines.capacity(), 32);
    /// # Ok::<(), gantry_host::LineError>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The largest size the buffer grows to.
    ///
    /// # Example
    /// ```
    /// let lines = gantry_host::LineBuffer::new(std::io::empty(), 16);
    /// assert_eq!(lines.max_capacity(), 1 << 20);
    /// ```
    pub fn max_capacity(&self) -> usize {
        self.max_capacity
    }

    /// The reader.
    ///
    /// # Example
    /// ```
    /// let lines = gantry_host::LineBuffer::new(&b"x"[..], 16);
    /// assert_eq!(*lines.get_ref(), b"x");
    /// ```
    pub fn get_ref(&self) -> &R {
        &self.reader
    }

    /// Returns the reader; buffered bytes are dropped.
    ///
    /// # Example
    /// ```
    /// let lines = gantry_host::LineBuffer::new(std::io::empty(), 16);
    /// let _reader: std::io::Empty = lines.into_inner();
    /// ```
    pub fn into_inner(self) -> R {
        self.reader
    }
}

#[cfg(test)]
mod tests;
