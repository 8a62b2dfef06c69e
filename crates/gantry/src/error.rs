//! The manager's error type: gantry-core's errors plus what only the manager can report.

use gantry_host::AllocError;

/// The manager's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Every error the manager reports. Argument errors are returned before anything is queued
/// or written, so a rejected call loses nothing and changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the device facade (argument checks, out of memory, device lost).
    #[error(transparent)]
    Core(#[from] gantry_core::Error),
    /// The staging pool could not place a region after every recovery step (reclaim, wait for
    /// the oldest submission, grow, submit early).
    #[error(
        "staging exhausted: {requested} bytes do not fit; {chunks} chunk(s) of {chunk_size} bytes, at most {max_chunks}"
    )]
    StagingExhausted {
        /// Bytes requested.
        requested: u64,
        /// Size of one staging chunk.
        chunk_size: u64,
        /// Chunks allocated now.
        chunks: usize,
        /// The configured limit.
        max_chunks: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {field} = {value}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A streaming ring (or dynamic uniform buffer) has no room left in this frame.
    #[error("streaming ring frame is full: {0}")]
    RingFull(AllocError),
    /// A streaming ring was written outside `begin_frame`/`end_frame`.
    #[error("streaming ring is not in a frame: call begin_frame first")]
    NotInFrame,
    /// The transfer was queued, but its submission failed; the message is the submission's
    /// error.
    #[error("the transfer's submission failed: {0}")]
    TransferFailed(gantry_core::Error),
}
