//! The one error type every backend returns (G11), and the backend layer's raw error.

use crate::types::{BufferUsage, MapMode, MemoryLocation};

/// gantry's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What the backend layer may return: only what the facade cannot foresee.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The driver ran out of device or host memory.
    #[error("out of memory")]
    OutOfMemory,
    /// The device was lost (driver reset, GPU removed, timeout).
    #[error("device lost")]
    Lost,
    /// Anything else the driver or the underlying library reported. The facade validates every
    /// argument, so this is a bug in gantry or in the layers below it.
    #[error("backend error: {0}")]
    Internal(String),
}

/// Every error gantry reports. The facade checks arguments before any backend call, so the
/// same mistake gives the same variant on every backend, and nothing is changed on the device
/// when an argument error is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer of size zero was requested; buffers must be at least one byte.
    #[error("buffer size must be non-zero")]
    ZeroSize,
    /// The usage, after automatic flags, is empty: a buffer must be usable for something
    /// (every API rejects a buffer without usage).
    #[error("buffer usage must not be empty")]
    EmptyUsage,
    /// The (rounded-up) size is over the device's `max_buffer_size`.
    #[error("buffer size {size} is over the device's maximum buffer size {max}")]
    SizeTooLarge {
        /// The size requested (before rounding).
        size: u64,
        /// The device's limit.
        max: u64,
    },
    /// An offset is not a multiple of the alignment the operation requires.
    #[error("offset {offset} is not a multiple of the required alignment {alignment}")]
    MisalignedOffset {
        /// The offset given.
        offset: u64,
        /// The required alignment.
        alignment: u64,
    },
    /// A size is not a multiple of the alignment the operation requires.
    #[error("size {size} is not a multiple of the required alignment {alignment}")]
    MisalignedSize {
        /// The size given.
        size: u64,
        /// The required alignment.
        alignment: u64,
    },
    /// `offset + size` is past the end of the buffer (or overflows `u64`).
    #[error(
        "range at offset {offset} of {size} bytes is out of bounds of a buffer of {buffer_size} bytes"
    )]
    OutOfBounds {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        size: u64,
        /// The buffer's size.
        buffer_size: u64,
    },
    /// The operation needs a usage flag the buffer was not created with.
    #[error("the operation needs usage {required:?}, the buffer has {actual:?}")]
    MissingUsage {
        /// The flags needed and missing.
        required: BufferUsage,
        /// The buffer's usage.
        actual: BufferUsage,
    },
    /// Only host-visible buffers can be mapped.
    #[error("a {location} buffer cannot be mapped; use an upload or readback buffer")]
    NotMappable {
        /// The buffer's location.
        location: MemoryLocation,
    },
    /// Upload buffers map for writing and readback buffers for reading; not the other way.
    #[error("a {location} buffer cannot be mapped for {mode:?}")]
    MapModeNotAllowed {
        /// The mode asked for.
        mode: MapMode,
        /// The buffer's location.
        location: MemoryLocation,
    },
    /// A mapped access used the wrong direction (reading a write mapping or the reverse).
    #[error("the buffer is mapped for {mapped:?}, not {requested:?}")]
    WrongMapMode {
        /// The mode the buffer is mapped with.
        mapped: MapMode,
        /// The mode the access needs.
        requested: MapMode,
    },
    /// `map` on a buffer that is already mapped.
    #[error("the buffer is already mapped")]
    AlreadyMapped,
    /// `unmap` or a mapped access on a buffer that is not mapped.
    #[error("the buffer is not mapped")]
    NotMapped,
    /// GPU work or a write through the queue on a buffer that is mapped: unmap it first.
    /// (This is how gantry keeps the CPU and the GPU off the same memory at once.)
    #[error("the buffer `{label}` is mapped; unmap it before the GPU or the queue uses it")]
    BufferMapped {
        /// The buffer's label.
        label: String,
    },
    /// A copy within one buffer whose source and destination ranges overlap.
    #[error(
        "copy within one buffer overlaps: source offset {src_offset}, destination offset {dst_offset}, size {size}"
    )]
    OverlappingCopy {
        /// Source offset.
        src_offset: u64,
        /// Destination offset.
        dst_offset: u64,
        /// Bytes copied.
        size: u64,
    },
    /// The buffer was destroyed.
    #[error("the buffer `{label}` was destroyed")]
    Destroyed {
        /// The buffer's label.
        label: String,
    },
    /// The buffer belongs to another device.
    #[error("the buffer `{label}` belongs to another device")]
    WrongDevice {
        /// The buffer's label.
        label: String,
    },
    /// The backend cannot give a buffer at this location these usage flags.
    #[error("usage {usage:?} is not supported for {location} buffers on this backend")]
    Unsupported {
        /// The flags that are not supported (only those).
        usage: BufferUsage,
        /// The location asked for.
        location: MemoryLocation,
    },
    /// A byte length is not a whole number of elements of the type asked for.
    #[error("{size} bytes are not a whole number of {type_size}-byte elements")]
    TypeSizeMismatch {
        /// The byte length.
        size: u64,
        /// `size_of::<T>()`.
        type_size: u64,
    },
    /// A write and the entry of a [`crate::scatter::CopyList`] meant to place it disagree
    /// ([`crate::Device::write_mapped_list`]): the list was not built from these writes.
    #[error(
        "write {index} (offset {offset}, {size} bytes) does not match its list entry (destination offset {entry_offset}, {entry_len} bytes)"
    )]
    ListMismatch {
        /// Index of the write among the non-empty ones (the number of non-empty writes when
        /// the list has more entries).
        index: usize,
        /// The write's offset (0 when there is no write `index`).
        offset: u64,
        /// The write's length (0 when there is no write `index`).
        size: u64,
        /// The entry's destination offset (0 when the list has no entry `index`).
        entry_offset: u64,
        /// The entry's length (0 when the list has no entry `index`).
        entry_len: u64,
    },
    /// The driver ran out of memory; the device keeps working.
    #[error("out of device memory")]
    OutOfMemory,
    /// The device was lost; every later call fails.
    #[error("device lost")]
    DeviceLost,
    /// No adapter matched, or the device could not be opened.
    #[error("no device: {reason}")]
    NoDevice {
        /// Why.
        reason: String,
    },
    /// An unexpected error from the layers below (a bug in gantry or in them).
    #[error("internal backend error: {message}")]
    Internal {
        /// The backend's message.
        message: String,
    },
}

impl From<DeviceError> for Error {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::OutOfMemory => Error::OutOfMemory,
            DeviceError::Lost => Error::DeviceLost,
            DeviceError::Internal(message) => Error::Internal { message },
        }
    }
}
