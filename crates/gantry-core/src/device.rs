//! The validating facade over a [`Backend`]: [`Device`], [`Buffer`] and [`Batch`].
//!
//! Every argument is checked here, once, before any backend call (STYLE item 7), so every
//! backend returns the same [`Error`] for the same mistake, and a rejected call changes
//! nothing. The facade also tracks each buffer's map state and the last submission that used
//! it, so the CPU never writes memory the GPU may still read (STYLE item 16): host writes and
//! maps wait for that submission, and GPU work on a mapped buffer is refused.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::backend::{Backend, SubmittedWorkDoneCallback};
use crate::error::{Error, Result};
use crate::scatter::CopyList;
use crate::types::{
    AdapterInfo, BufferDesc, BufferUsage, Limits, MapMode, MemoryLocation, RawBufferDesc,
    SubmissionIndex, align_down, align_up,
};

static NEXT_DEVICE_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_BUFFER_ID: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A device: a [`Backend`] behind gantry's validation. Cheap to clone (an `Arc`); `Send + Sync`.
pub struct Device<B: Backend> {
    shared: Arc<Shared<B>>,
}

impl<B: Backend> Clone for Device<B> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<B: Backend> core::fmt::Debug for Device<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("backend", &B::NAME)
            .field("adapter", &self.shared.info.name)
            .finish_non_exhaustive()
    }
}

struct Shared<B: Backend> {
    raw: B,
    id: u64,
    limits: Limits,
    info: AdapterInfo,
    /// Buffers dropped or destroyed while a submission still used them: freed once it completes.
    deferred: Mutex<Vec<(SubmissionIndex, B::Buffer, u64)>>,
    live_buffers: AtomicU64,
    live_bytes: AtomicU64,
}

impl<B: Backend> Shared<B> {
    /// Frees `raw` now if `last_use` has completed, else when it has.
    fn dispose(&self, raw: B::Buffer, last_use: SubmissionIndex, size: u64) {
        let completed = self.raw.poll().unwrap_or(SubmissionIndex(u64::MAX));
        if last_use <= completed {
            // SAFETY: the buffer came from this backend, the facade unmapped it before calling
            // here, and every submission that used it (`<= last_use`) has completed (or the
            // device is lost and nothing runs any more).
            unsafe { self.raw.destroy_buffer(raw) };
            self.live_buffers.fetch_sub(1, Ordering::Relaxed);
            self.live_bytes.fetch_sub(size, Ordering::Relaxed);
        } else {
            lock(&self.deferred).push((last_use, raw, size));
        }
    }

    /// Frees deferred buffers whose last submission is `<= completed`.
    fn free_deferred(&self, completed: SubmissionIndex) {
        let done: Vec<_> = {
            let mut deferred = lock(&self.deferred);
            if deferred.is_empty() {
                return;
            }
            let (done, pending) = core::mem::take(&mut *deferred)
                .into_iter()
                .partition(|(idx, _, _)| *idx <= completed);
            *deferred = pending;
            done
        };
        for (_, raw, size) in done {
            // SAFETY: deferred buffers are unmapped and their last submission has completed.
            unsafe { self.raw.destroy_buffer(raw) };
            self.live_buffers.fetch_sub(1, Ordering::Relaxed);
            self.live_bytes.fetch_sub(size, Ordering::Relaxed);
        }
    }
}

impl<B: Backend> Drop for Shared<B> {
    fn drop(&mut self) {
        let last = self.raw.last_submitted();
        let _ = self.raw.wait(last, None);
        self.free_deferred(SubmissionIndex(u64::MAX));
    }
}

/// A buffer handle. Cheap to clone (an `Arc`); the buffer is freed when it is destroyed
/// explicitly or the last handle is dropped, and not before the GPU is done with it.
pub struct Buffer<B: Backend> {
    inner: Arc<BufferInner<B>>,
}

impl<B: Backend> Clone for Buffer<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: Backend> core::fmt::Debug for Buffer<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Buffer")
            .field("label", &self.inner.label)
            .field("size", &self.inner.size)
            .field("usage", &self.inner.usage)
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum MapState {
    Unmapped,
    /// Mapped by the backend.
    Mapped(MapMode),
    /// Mapped at creation, emulated by the facade for device-local/readback memory: the host
    /// copy is uploaded at `unmap`.
    Shadow(Vec<u8>),
    /// An asynchronous read of a readback buffer is in flight (the backend maps it).
    ReadPending,
}

struct BufferState<B: Backend> {
    raw: Option<B::Buffer>,
    map: MapState,
    last_use: SubmissionIndex,
}

/// [`BufferInner::reuse`]'s value for a destroyed buffer.
const DESTROYED: u64 = u64::MAX;
/// [`BufferInner::reuse`]'s value for a mapped buffer (or one mapped at creation, or busy with
/// an asynchronous read). Both this and [`DESTROYED`] mean "never reuse"; no submission index
/// comes near them.
const MAPPED: u64 = u64::MAX - 1;

impl<B: Backend> BufferState<B> {
    /// What [`Buffer::reusable_after`] answers for this state, as [`BufferInner::reuse`] keeps
    /// it.
    #[inline]
    fn reuse(&self) -> u64 {
        if self.raw.is_none() {
            DESTROYED
        } else if !matches!(self.map, MapState::Unmapped) {
            MAPPED
        } else {
            self.last_use.0
        }
    }
}

/// The buffer's state, locked; on drop it refreshes [`BufferInner::reuse`] (a plain store: every
/// change of the state happens under this guard).
struct StateGuard<'a, B: Backend> {
    state: MutexGuard<'a, BufferState<B>>,
    reuse: &'a AtomicU64,
}

impl<B: Backend> core::ops::Deref for StateGuard<'_, B> {
    type Target = BufferState<B>;
    #[inline]
    fn deref(&self) -> &BufferState<B> {
        &self.state
    }
}

impl<B: Backend> core::ops::DerefMut for StateGuard<'_, B> {
    #[inline]
    fn deref_mut(&mut self) -> &mut BufferState<B> {
        &mut self.state
    }
}

impl<B: Backend> Drop for StateGuard<'_, B> {
    #[inline]
    fn drop(&mut self) {
        // Under the lock, so stores happen in the order of the state's changes.
        self.reuse.store(self.state.reuse(), Ordering::Release);
    }
}

struct BufferInner<B: Backend> {
    device: Arc<Shared<B>>,
    id: u64,
    label: String,
    size: u64,
    requested_size: u64,
    usage: BufferUsage,
    location: MemoryLocation,
    state: Mutex<BufferState<B>>,
    /// `state.reuse()` as of the last unlock of `state`: lets pools ask
    /// [`Buffer::reusable_after`], and anyone [`Buffer::is_destroyed`] and
    /// [`Buffer::is_mapped`], without taking the lock.
    reuse: AtomicU64,
}

impl<B: Backend> BufferInner<B> {
    /// Locks the state (the only way to change it).
    #[inline]
    fn state(&self) -> StateGuard<'_, B> {
        StateGuard {
            state: lock(&self.state),
            reuse: &self.reuse,
        }
    }
    fn destroyed(&self) -> Error {
        Error::Destroyed {
            label: self.label.clone(),
        }
    }
    fn mapped(&self) -> Error {
        Error::BufferMapped {
            label: self.label.clone(),
        }
    }
    fn require(&self, required: BufferUsage) -> Result<()> {
        if self.usage.contains(required) {
            Ok(())
        } else {
            Err(Error::MissingUsage {
                required: required - self.usage,
                actual: self.usage,
            })
        }
    }
    /// Takes the raw buffer out and unmaps it if needed; `None` if already destroyed.
    fn take_raw(&self, state: &mut BufferState<B>) -> Option<B::Buffer> {
        let raw = state.raw.take()?;
        if matches!(state.map, MapState::Mapped(_)) {
            // SAFETY: `raw` is valid and mapped by the backend.
            unsafe { self.device.raw.unmap(&raw) };
        }
        state.map = MapState::Unmapped;
        Some(raw)
    }
}

impl<B: Backend> Drop for BufferInner<B> {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let last_use = state.last_use;
        let mut state_owned = BufferState {
            raw: state.raw.take(),
            map: core::mem::replace(&mut state.map, MapState::Unmapped),
            last_use,
        };
        if let Some(raw) = self.take_raw(&mut state_owned) {
            self.device.dispose(raw, last_use, self.size);
        }
    }
}

impl<B: Backend> Buffer<B> {
    /// Process-unique id of this buffer.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.inner.id
    }
    /// The debug label ("" when none was given).
    #[must_use]
    pub fn label(&self) -> &str {
        &self.inner.label
    }
    /// Size in bytes after rounding up to the device's alignments; bounds are checked against
    /// this size.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.inner.size
    }
    /// The size the descriptor asked for.
    #[must_use]
    pub fn requested_size(&self) -> u64 {
        self.inner.requested_size
    }
    /// Usage, including the automatic flags.
    #[must_use]
    pub fn usage(&self) -> BufferUsage {
        self.inner.usage
    }
    /// Memory location.
    #[must_use]
    pub fn location(&self) -> MemoryLocation {
        self.inner.location
    }
    /// Whether the buffer has been destroyed.
    #[must_use]
    pub fn is_destroyed(&self) -> bool {
        // No lock: the state's guard publishes this (Release) at every unlock.
        self.inner.reuse.load(Ordering::Acquire) == DESTROYED
    }
    /// Whether the buffer is mapped (or mapped at creation, or busy with an async read).
    #[must_use]
    pub fn is_mapped(&self) -> bool {
        self.inner.reuse.load(Ordering::Acquire) == MAPPED
    }
    /// The last submission that used this buffer ([`SubmissionIndex::NONE`] if none).
    #[must_use]
    pub fn last_use(&self) -> SubmissionIndex {
        self.inner.state().last_use
    }

    /// The last submission that used this buffer, if it is alive and not mapped (nor busy
    /// with an asynchronous read); `None` otherwise. One lock, for pools deciding whether a
    /// returned buffer can be handed out again.
    #[must_use]
    pub fn reusable_after(&self) -> Option<SubmissionIndex> {
        // No lock: the state's guard publishes this value (Release) at every unlock.
        let reuse = self.inner.reuse.load(Ordering::Acquire);
        (reuse < MAPPED).then_some(SubmissionIndex(reuse))
    }

    /// Runs `f` with the backend's buffer, for work the caller records through the backend's
    /// own device (a compute pass that reads what gantry uploaded, for example); `None` if the
    /// buffer was destroyed. gantry does not track such work: the caller orders it against
    /// gantry's submissions (wait for them before, and have gantry wait for it after).
    pub fn with_raw<R>(&self, f: impl FnOnce(&B::Buffer) -> R) -> Option<R> {
        self.inner.state().raw.as_ref().map(f)
    }
}

/// Checks that every write lies within `buffer_size` bytes, in one pass that also summarizes
/// them (their highest end is within the buffer, and no end overflowed, as the summary's ends
/// saturate); the error names the first write out of bounds.
fn check_writes_in(
    writes: &[(u64, &[u8])],
    buffer_size: u64,
) -> Result<crate::copier::WritesSummary> {
    let summary = crate::copier::summarize(writes);
    if summary.hi > buffer_size {
        for &(offset, data) in writes {
            check_bounds(offset, len64(data), buffer_size)?;
        }
    }
    Ok(summary)
}

/// Checks `offset + size <= buffer_size` without overflow.
/// Where a write into a buffer in `map` goes: `None` for the backend's mapping, the shadow
/// of a buffer mapped at creation; an error when it is not mapped for writing.
fn write_target(map: &mut MapState) -> Result<Option<&mut Vec<u8>>> {
    match map {
        MapState::Unmapped | MapState::ReadPending => Err(Error::NotMapped),
        MapState::Mapped(MapMode::Read) => Err(Error::WrongMapMode {
            mapped: MapMode::Read,
            requested: MapMode::Write,
        }),
        MapState::Mapped(MapMode::Write) => Ok(None),
        MapState::Shadow(shadow) => Ok(Some(shadow)),
    }
}

/// Copies `writes[k].1` to `at[k].src_offset` in `shadow`, in order (every range checked
/// inside it).
fn copy_to_shadow(shadow: &mut [u8], writes: &[(u64, &[u8])], at: &[crate::scatter::ScatterWrite]) {
    for (&(_, data), w) in writes.iter().zip(at) {
        let start = w.src_offset as usize; // within a Vec, so it fits in usize
        shadow[start..start + data.len()].copy_from_slice(data);
    }
}

/// Checks that `at` is the list of `writes` (entry `k` has the offset and length of the
/// `k`-th non-empty write); returns whether `writes` has empty entries and whether the
/// entries' source ranges ascend without overlapping. One pass.
fn check_list(
    writes: &[(u64, &[u8])],
    at: &[crate::scatter::ScatterWrite],
) -> Result<(bool, bool)> {
    let (mut k, mut empty, mut ascending, mut end, mut bad) = (0usize, false, true, 0u64, false);
    for &(offset, data) in writes {
        let len = len64(data);
        if len == 0 {
            empty = true;
            continue;
        }
        let w = at.get(k).copied().unwrap_or(crate::scatter::ScatterWrite {
            dst_offset: 0,
            src_offset: 0,
            len: 0,
        });
        bad |= (w.dst_offset != offset) | (w.len != len);
        ascending &= w.src_offset >= end;
        end = w.src_offset.wrapping_add(len);
        k += 1;
    }
    if bad || k != at.len() {
        // The first write that differs, named.
        let mut k = 0usize;
        for &(offset, data) in writes.iter().filter(|w| !w.1.is_empty()) {
            let len = len64(data);
            let (entry_offset, entry_len) = at.get(k).map_or((0, 0), |w| (w.dst_offset, w.len));
            if (entry_offset, entry_len) != (offset, len) {
                return Err(Error::ListMismatch {
                    index: k,
                    offset,
                    size: len,
                    entry_offset,
                    entry_len,
                });
            }
            k += 1;
        }
        let (entry_offset, entry_len) = at.get(k).map_or((0, 0), |w| (w.dst_offset, w.len));
        return Err(Error::ListMismatch {
            index: k,
            offset: 0,
            size: 0,
            entry_offset,
            entry_len,
        });
    }
    Ok((empty, ascending))
}

fn check_bounds(offset: u64, size: u64, buffer_size: u64) -> Result<()> {
    match offset.checked_add(size) {
        Some(end) if end <= buffer_size => Ok(()),
        _ => Err(Error::OutOfBounds {
            offset,
            size,
            buffer_size,
        }),
    }
}

/// [`check_aligned`] and [`check_bounds`] for every write, in order (the error is the first
/// failing write's); returns whether any write is empty. One branch-free pass over all of them
/// first (OR of the offsets and sizes, any range past the end): thousands of writes then cost
/// a few microseconds, not a division and two branches each; the write-by-write checks run
/// only when that pass finds something wrong (or the alignment is not a power of two).
fn check_writes(writes: &[(u64, &[u8])], alignment: u64, buffer_size: u64) -> Result<bool> {
    let (mut bits, mut outside, mut empty) = (0u64, false, false);
    for &(offset, data) in writes {
        let size = len64(data);
        let (end, overflow) = offset.overflowing_add(size);
        bits |= offset | size;
        outside |= overflow | (end > buffer_size);
        empty |= size == 0;
    }
    let aligned = alignment.is_power_of_two() && bits & (alignment - 1) == 0;
    if !aligned || outside {
        for &(offset, data) in writes {
            let size = len64(data);
            check_aligned(offset, size, alignment)?;
            check_bounds(offset, size, buffer_size)?;
        }
    }
    Ok(empty)
}

fn check_aligned(offset: u64, size: u64, alignment: u64) -> Result<()> {
    if crate::types::rem(offset, alignment) != 0 {
        return Err(Error::MisalignedOffset { offset, alignment });
    }
    if crate::types::rem(size, alignment) != 0 {
        return Err(Error::MisalignedSize { size, alignment });
    }
    Ok(())
}

/// The checks a batched write makes of its buffer (this device, alive, not mapped,
/// `TRANSFER_DST`), returning its state locked: the caller records while holding it.
fn writable<'a, B: Backend>(
    device: &Device<B>,
    buffer: &'a Buffer<B>,
) -> Result<StateGuard<'a, B>> {
    device.check_device(buffer)?;
    let inner = &buffer.inner;
    let state = inner.state();
    if state.raw.is_none() {
        return Err(inner.destroyed());
    }
    if !matches!(state.map, MapState::Unmapped) {
        return Err(inner.mapped());
    }
    inner.require(BufferUsage::TRANSFER_DST)?;
    Ok(state)
}

fn len64(data: &[u8]) -> u64 {
    // usize is at most 64 bits on every supported target.
    data.len() as u64
}

fn to_usize(size: u64, buffer_size: u64) -> Result<usize> {
    usize::try_from(size).map_err(|_| Error::OutOfBounds {
        offset: 0,
        size,
        buffer_size,
    })
}

impl<B: Backend> Device<B> {
    /// Wraps a backend device.
    pub fn new(raw: B) -> Self {
        let limits = raw.limits();
        let info = raw.adapter_info();
        Self {
            shared: Arc::new(Shared {
                raw,
                id: NEXT_DEVICE_ID.fetch_add(1, Ordering::Relaxed),
                limits,
                info,
                deferred: Mutex::new(Vec::new()),
                live_buffers: AtomicU64::new(0),
                live_bytes: AtomicU64::new(0),
            }),
        }
    }

    /// The backend under the facade, for what gantry does not wrap. Its `unsafe` methods'
    /// preconditions are then the caller's to keep.
    #[must_use]
    pub fn raw(&self) -> &B {
        &self.shared.raw
    }

    /// The device's limits.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The adapter this device runs on.
    #[must_use]
    pub fn adapter_info(&self) -> &AdapterInfo {
        &self.shared.info
    }

    /// The backend's short name.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        B::NAME
    }

    /// Buffers alive in the backend (including those whose destruction waits for the GPU).
    #[must_use]
    pub fn live_buffers(&self) -> u64 {
        self.shared.live_buffers.load(Ordering::Relaxed)
    }

    /// Bytes of buffers alive in the backend (rounded sizes).
    #[must_use]
    pub fn live_bytes(&self) -> u64 {
        self.shared.live_bytes.load(Ordering::Relaxed)
    }

    /// Device memory the backend reports as allocated, if it can tell.
    #[must_use]
    pub fn allocated_bytes(&self) -> Option<u64> {
        self.shared.raw.allocated_bytes()
    }

    fn check_device(&self, buffer: &Buffer<B>) -> Result<()> {
        if buffer.inner.device.id == self.shared.id {
            Ok(())
        } else {
            Err(Error::WrongDevice {
                label: buffer.inner.label.clone(),
            })
        }
    }

    /// Creates a buffer (G1). Adds the automatic usage flags and rounds the size up (G3, G4).
    ///
    /// # Errors
    /// [`Error::ZeroSize`], [`Error::SizeTooLarge`], [`Error::Unsupported`] naming the flags
    /// the backend cannot give this location, [`Error::EmptyUsage`] (a device-local buffer
    /// with no usage), [`Error::OutOfMemory`].
    pub fn create_buffer(&self, desc: &BufferDesc<'_>) -> Result<Buffer<B>> {
        let limits = &self.shared.limits;
        if desc.size == 0 {
            return Err(Error::ZeroSize);
        }
        let supported = limits.supported_usage(desc.location);
        let unsupported = desc.usage - supported;
        if !unsupported.is_empty() {
            return Err(Error::Unsupported {
                usage: unsupported,
                location: desc.location,
            });
        }
        let mut usage = desc.usage.with_automatic_flags(desc.location, supported);
        let shadow = desc.mapped_at_creation && desc.location != MemoryLocation::Upload;
        if shadow {
            usage |= BufferUsage::TRANSFER_DST;
        }
        // Automatic flags are only ones the backend supports at this location, except
        // TRANSFER_SRC/DST, which every backend supports everywhere; check anyway.
        let unsupported = usage - supported;
        if !unsupported.is_empty() {
            return Err(Error::Unsupported {
                usage: unsupported,
                location: desc.location,
            });
        }
        if usage.is_empty() {
            return Err(Error::EmptyUsage);
        }
        let align = limits.size_alignment(usage, desc.location);
        let size = align_up(desc.size, align)
            .filter(|s| *s <= limits.max_buffer_size)
            .ok_or(Error::SizeTooLarge {
                size: desc.size,
                max: limits.max_buffer_size,
            })?;
        let raw_desc = RawBufferDesc {
            label: desc.label,
            size,
            usage,
            location: desc.location,
            mapped_at_creation: desc.mapped_at_creation && !shadow,
        };
        // SAFETY: `raw_desc` was built above to satisfy `RawBufferDesc`'s invariants: non-zero
        // size rounded to the alignments and within max_buffer_size, usage within the
        // location's supported set, mapped_at_creation only for upload memory.
        let raw = unsafe { self.shared.raw.create_buffer(&raw_desc) }?;
        self.shared.live_buffers.fetch_add(1, Ordering::Relaxed);
        self.shared.live_bytes.fetch_add(size, Ordering::Relaxed);
        let map = if shadow {
            MapState::Shadow(vec![0; to_usize(size, size)?])
        } else if desc.mapped_at_creation {
            MapState::Mapped(MapMode::Write)
        } else {
            MapState::Unmapped
        };
        Ok(Buffer {
            inner: Arc::new(BufferInner {
                device: Arc::clone(&self.shared),
                id: NEXT_BUFFER_ID.fetch_add(1, Ordering::Relaxed),
                label: desc.label.unwrap_or_default().to_owned(),
                size,
                requested_size: desc.size,
                usage,
                location: desc.location,
                reuse: AtomicU64::new(if matches!(map, MapState::Unmapped) {
                    SubmissionIndex::NONE.0
                } else {
                    MAPPED
                }),
                state: Mutex::new(BufferState {
                    raw: Some(raw),
                    map,
                    last_use: SubmissionIndex::NONE,
                }),
            }),
        })
    }

    /// Creates a buffer holding `data` (G5). The size is `size_of_val(data)` (rounded up, the
    /// tail zeroed). Device-local and readback buffers get `TRANSFER_DST`.
    ///
    /// # Errors
    /// As [`Device::create_buffer`] and [`Device::write`].
    pub fn create_buffer_init<T: bytemuck::Pod>(
        &self,
        label: Option<&str>,
        usage: BufferUsage,
        location: MemoryLocation,
        data: &[T],
    ) -> Result<Buffer<B>> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let extra = if location == MemoryLocation::Upload {
            BufferUsage::empty()
        } else {
            BufferUsage::TRANSFER_DST
        };
        let desc = BufferDesc {
            label,
            size: len64(bytes),
            usage: usage | extra,
            location,
            mapped_at_creation: false,
        };
        let buffer = self.create_buffer(&desc)?;
        let ca = self.shared.limits.copy_alignment;
        if len64(bytes).is_multiple_of(ca) {
            self.write(&buffer, 0, bytes)?;
        } else {
            let padded_len = to_usize(
                align_up(len64(bytes), ca).unwrap_or(u64::MAX),
                buffer.size(),
            )?;
            let mut padded = vec![0u8; padded_len];
            padded[..bytes.len()].copy_from_slice(bytes);
            self.write(&buffer, 0, &padded)?;
        }
        Ok(buffer)
    }

    /// Destroys a buffer now; other handles then see [`Error::Destroyed`]. A mapped buffer is
    /// unmapped. The memory is freed once the GPU is done with it.
    ///
    /// # Errors
    /// [`Error::Destroyed`] if it already was, [`Error::BufferMapped`] while an async read of
    /// it is in flight, [`Error::WrongDevice`].
    pub fn destroy_buffer(&self, buffer: &Buffer<B>) -> Result<()> {
        self.check_device(buffer)?;
        let inner = &buffer.inner;
        let mut state = inner.state();
        if state.raw.is_none() {
            return Err(inner.destroyed());
        }
        if matches!(state.map, MapState::ReadPending) {
            return Err(inner.mapped());
        }
        let last_use = state.last_use;
        let raw = inner.take_raw(&mut state);
        drop(state);
        if let Some(raw) = raw {
            self.shared.dispose(raw, last_use, inner.size);
        }
        Ok(())
    }

    /// Waits (without holding the buffer's lock) until the buffer's last submission has
    /// completed, then returns the locked state, re-checked.
    fn lock_idle<'a>(&self, inner: &'a BufferInner<B>) -> Result<StateGuard<'a, B>> {
        loop {
            let state = inner.state();
            let last_use = state.last_use;
            if last_use == SubmissionIndex::NONE {
                return Ok(state);
            }
            drop(state);
            let completed = self.shared.raw.poll()?;
            if last_use > completed {
                self.shared.raw.wait(last_use, None)?;
            }
            let state = inner.state();
            if state.last_use == last_use {
                return Ok(state);
            }
        }
    }

    /// Maps a host-visible buffer (G6): upload buffers with [`MapMode::Write`], readback
    /// buffers with [`MapMode::Read`]. Waits for GPU work that uses the buffer. The mapping
    /// persists until [`Device::unmap`]; while mapped, the buffer cannot be used by GPU work.
    ///
    /// # Errors
    /// [`Error::NotMappable`] for device-local buffers, [`Error::MapModeNotAllowed`],
    /// [`Error::AlreadyMapped`], [`Error::Destroyed`], [`Error::DeviceLost`].
    pub fn map(&self, buffer: &Buffer<B>, mode: MapMode) -> Result<()> {
        self.check_device(buffer)?;
        let inner = &buffer.inner;
        match inner.location.map_mode() {
            None => {
                return Err(Error::NotMappable {
                    location: inner.location,
                });
            }
            Some(allowed) if allowed != mode => {
                return Err(Error::MapModeNotAllowed {
                    mode,
                    location: inner.location,
                });
            }
            Some(_) => {}
        }
        {
            let state = inner.state();
            if state.raw.is_none() {
                return Err(inner.destroyed());
            }
            if !matches!(state.map, MapState::Unmapped) {
                return Err(Error::AlreadyMapped);
            }
        }
        let mut state = self.lock_idle(inner)?;
        let Some(raw) = state.raw.as_ref() else {
            return Err(inner.destroyed());
        };
        if !matches!(state.map, MapState::Unmapped) {
            return Err(Error::AlreadyMapped);
        }
        // SAFETY: `raw` is valid (present), not mapped (checked under the lock), the mode is
        // the one its location allows, and its last submission has completed (`lock_idle`).
        unsafe { self.shared.raw.map(raw, mode) }?;
        state.map = MapState::Mapped(mode);
        Ok(())
    }

    /// Ends a mapping. For a buffer mapped at creation in device-local or readback memory,
    /// uploads what was written (one submission).
    ///
    /// # Errors
    /// [`Error::NotMapped`], [`Error::Destroyed`], [`Error::DeviceLost`].
    pub fn unmap(&self, buffer: &Buffer<B>) -> Result<()> {
        self.check_device(buffer)?;
        let inner = &buffer.inner;
        let mut guard = inner.state();
        let state = &mut *guard;
        let Some(raw) = state.raw.as_ref() else {
            return Err(inner.destroyed());
        };
        match core::mem::replace(&mut state.map, MapState::Unmapped) {
            MapState::Unmapped => Err(Error::NotMapped),
            MapState::ReadPending => {
                state.map = MapState::ReadPending;
                Err(Error::NotMapped)
            }
            MapState::Mapped(_) => {
                // SAFETY: `raw` is valid and mapped (state was `Mapped`).
                unsafe { self.shared.raw.unmap(raw) };
                Ok(())
            }
            MapState::Shadow(shadow) => {
                let uploaded = (|| {
                    let mut batch = self.shared.raw.begin_batch()?;
                    // SAFETY: shadow buffers have TRANSFER_DST (added at creation); the range
                    // is the whole buffer, whose size is a multiple of the copy alignment; the
                    // buffer is valid and (now) not mapped, and this lock is held until the
                    // batch is submitted.
                    unsafe { self.shared.raw.batch_write(&mut batch, raw, 0, &shadow) }?;
                    // SAFETY: the only buffer used is `raw`, valid and not mapped.
                    unsafe { self.shared.raw.submit(batch) }
                })();
                match uploaded {
                    Ok(idx) => {
                        state.last_use = idx;
                        Ok(())
                    }
                    Err(e) => {
                        // Still mapped, nothing lost: the caller may retry.
                        state.map = MapState::Shadow(shadow);
                        Err(e.into())
                    }
                }
            }
        }
    }

    /// Copies `data` into a mapped buffer at `offset` (any alignment).
    ///
    /// # Errors
    /// [`Error::NotMapped`], [`Error::WrongMapMode`], [`Error::OutOfBounds`],
    /// [`Error::Destroyed`].
    pub fn write_mapped(&self, buffer: &Buffer<B>, offset: u64, data: &[u8]) -> Result<()> {
        self.write_mapped_many(buffer, &[(offset, data)])
    }

    /// Copies each `(offset, bytes)` into a mapped buffer (any alignment), in order (where
    /// they overlap, the later wins), as that many [`Device::write_mapped`] calls would, with
    /// the buffer checked and locked once. Every entry is checked before any is written.
    ///
    /// ```
    /// use gantry_core::{Backend, Buffer, Device, MapMode};
    ///
    /// /// Fills the changed 32-byte slots of an upload buffer the host keeps mapped.
    /// fn fill_slots<B: Backend>(
    ///     device: &Device<B>,
    ///     staging: &Buffer<B>,
    ///     changed: &[(u32, [u8; 32])],
    /// ) -> gantry_core::Result<()> {
    ///     let writes: Vec<(u64, &[u8])> = changed
    ///         .iter()
    ///         .map(|(slot, bytes)| (u64::from(*slot) * 32, &bytes[..]))
    ///         .collect();
    ///     device.map(staging, MapMode::Write)?;
    ///     device.write_mapped_many(staging, &writes)?;
    ///     device.unmap(staging)
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`Device::write_mapped`], for the first entry that fails.
    pub fn write_mapped_many(&self, buffer: &Buffer<B>, writes: &[(u64, &[u8])]) -> Result<()> {
        self.check_device(buffer)?;
        let inner = &buffer.inner;
        let mut state = inner.state();
        let state = &mut *state;
        let Some(raw) = state.raw.as_ref() else {
            return Err(inner.destroyed());
        };
        match &mut state.map {
            MapState::Unmapped | MapState::ReadPending => Err(Error::NotMapped),
            MapState::Mapped(MapMode::Read) => Err(Error::WrongMapMode {
                mapped: MapMode::Read,
                requested: MapMode::Write,
            }),
            MapState::Mapped(MapMode::Write) => {
                let summary = check_writes_in(writes, inner.size)?;
                // SAFETY: mapped for writing, every range within the buffer (checked above);
                // `summary` is the writes'.
                unsafe {
                    match writes {
                        // One write keeps the backend's own path (which may split a large
                        // copy over threads).
                        [(offset, data)] => self.shared.raw.write_mapped(raw, *offset, data),
                        _ => self.shared.raw.write_mapped_many(raw, writes, &summary),
                    }
                }?;
                Ok(())
            }
            MapState::Shadow(shadow) => {
                check_writes_in(writes, inner.size)?;
                for &(offset, data) in writes {
                    let start = offset as usize; // within a Vec, so it fits in usize
                    shadow[start..start + data.len()].copy_from_slice(data);
                }
                Ok(())
            }
        }
    }

    /// Copies the bytes of each non-empty write of `writes` into a mapped buffer at the
    /// source offset of its entry of `list`: the `k`-th non-empty write goes to
    /// `list.as_slice()[k].src_offset`. `list` says where each write is staged in `buffer`
    /// and where it goes in a destination (`(offset, bytes)` of write `k` is entry `k`'s
    /// destination offset and length), so a later [`Batch::copy_list`] from `buffer`
    /// delivers the writes. One pass checks that the list was built from the writes, with
    /// the buffer checked and locked once; nothing is written when a check fails. Entries in
    /// increasing order without overlaps (how a stager places them) are copied on the copy
    /// threads when they come to many bytes; any other order is copied in order, the later
    /// write winning.
    ///
    /// ```
    /// use gantry_core::{Backend, Batch, Buffer, Device, MapMode, scatter::CopyList};
    ///
    /// /// Stages `writes` back to back in `staging` (mapped for writing), then copies each to
    /// /// its offset in `dst`.
    /// fn upload<B: Backend>(
    ///     device: &Device<B>,
    ///     staging: &Buffer<B>,
    ///     dst: &Buffer<B>,
    ///     writes: &[(u64, &[u8])],
    /// ) -> gantry_core::Result<()> {
    ///     let mut list = CopyList::with_capacity(writes.len());
    ///     let mut at = 0;
    ///     for &(offset, bytes) in writes {
    ///         list.push(at, offset, bytes.len() as u64);
    ///         at += bytes.len() as u64;
    ///     }
    ///     device.write_mapped_list(staging, writes, &list)?;
    ///     device.unmap(staging)?;
    ///     let mut batch: Batch<B> = device.batch()?;
    ///     batch.copy_list(staging, dst, &list)?;
    ///     batch.submit()?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// [`Error::ListMismatch`] for the first write that differs from its entry (or when the
    /// list has more or fewer entries than there are non-empty writes), and as
    /// [`Device::write_mapped`] for the first entry outside the buffer.
    pub fn write_mapped_list(
        &self,
        buffer: &Buffer<B>,
        writes: &[(u64, &[u8])],
        list: &CopyList,
    ) -> Result<()> {
        let size = buffer.inner.size;
        self.write_target(buffer, |raw, shadow| {
            let at = list.as_slice();
            if list.src_end() > size {
                for w in at {
                    check_bounds(w.src_offset, w.len, size)?;
                }
            }
            let (has_empty, ascending) = check_list(writes, at)?;
            let nonempty: Vec<(u64, &[u8])>;
            let writes = if has_empty {
                nonempty = writes.iter().copied().filter(|w| !w.1.is_empty()).collect();
                &nonempty[..]
            } else {
                writes
            };
            if let Some(shadow) = shadow {
                copy_to_shadow(shadow, writes, at);
                return Ok(());
            }
            if !ascending {
                for (&(_, data), w) in writes.iter().zip(at) {
                    // SAFETY: mapped for writing, the range within the buffer (checked above).
                    unsafe { self.shared.raw.write_mapped(raw, w.src_offset, data) }?;
                }
                return Ok(());
            }
            // SAFETY: mapped for writing; `writes` (the non-empty ones) and `at` in step, each
            // length equal to its entry's (`check_list`), every range within the buffer (the
            // list's largest end, or each checked above) and ascending without overlaps.
            unsafe { self.shared.raw.write_mapped_list(raw, writes, at) }?;
            Ok(())
        })
    }

    /// Stages `writes` back to back in a mapped buffer from `offset`, as
    /// [`CopyList::push_packed`] places them (each at a multiple of `align` from `offset`),
    /// appends their copies to `list`, and copies their bytes there: placed in parts and
    /// copied on the copy threads when they are thousands, and no pass to check a list built
    /// elsewhere. A later [`Batch::copy_list`] from `buffer` delivers the writes. Returns
    /// the bytes the writes take from `offset` and how many entries continue their
    /// predecessor in both buffers. When an entry would lie outside the buffer, it is named,
    /// `list` is left as it was and nothing is written.
    ///
    /// ```
    /// use gantry_core::{Backend, Batch, Buffer, Device, MapMode, scatter::CopyList};
    ///
    /// /// Stages 10,000 scattered 256-byte records in `staging` and copies each to its slot.
    /// fn upload<B: Backend>(
    ///     device: &Device<B>,
    ///     staging: &Buffer<B>,
    ///     dst: &Buffer<B>,
    ///     records: &[(u64, [u8; 256])],
    /// ) -> gantry_core::Result<()> {
    ///     let writes: Vec<(u64, &[u8])> =
    ///         records.iter().map(|(slot, r)| (slot * 256, &r[..])).collect();
    ///     let mut list = CopyList::new();
    ///     device.write_mapped_packed(staging, 0, &writes, 16, &mut list)?;
    ///     device.unmap(staging)?;
    ///     let mut batch: Batch<B> = device.batch()?;
    ///     batch.copy_list(staging, dst, &list)?;
    ///     batch.submit()?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`Device::write_mapped`], for the first entry outside the buffer.
    pub fn write_mapped_packed(
        &self,
        buffer: &Buffer<B>,
        offset: u64,
        writes: &[(u64, &[u8])],
        align: u64,
        list: &mut CopyList,
    ) -> Result<(u64, usize)> {
        let size = buffer.inner.size;
        self.write_target(buffer, |raw, shadow| {
            let snapshot = list.snapshot();
            let first = snapshot.0;
            // Thousands of writes are placed in parts on the copy threads.
            let placed = list.push_packed_in_parts(
                offset,
                writes,
                align,
                crate::scatter::plan_parts(writes.len()),
                &crate::copier::run_calls,
            );
            // The new entries ascend from `offset` (unless their sum wrapped: `placed` says so),
            // so the last one's end bounds them; counted from `offset` (where the list's offsets
            // may have wrapped), then added to it.
            let end = match list.as_slice()[first..].last() {
                _ if placed.0 == u64::MAX => None,
                Some(w) => w
                    .src_offset
                    .wrapping_sub(offset)
                    .checked_add(w.len)
                    .and_then(|rel| offset.checked_add(rel)),
                None => Some(0),
            };
            if end.is_none_or(|e| e > size) {
                let outside = list.as_slice()[first..]
                    .iter()
                    .find(|w| check_bounds(w.src_offset, w.len, size).is_err())
                    .map(|w| (w.src_offset, w.len));
                list.restore(snapshot);
                let (at, len) = outside.unwrap_or((offset, 0));
                return Err(Error::OutOfBounds {
                    offset: at,
                    size: len,
                    buffer_size: size,
                });
            }
            let at = &list.as_slice()[first..];
            let nonempty: Vec<(u64, &[u8])>;
            let writes = if at.len() == writes.len() {
                writes
            } else {
                nonempty = writes.iter().copied().filter(|w| !w.1.is_empty()).collect();
                &nonempty[..]
            };
            if let Some(shadow) = shadow {
                copy_to_shadow(shadow, writes, at);
                return Ok(placed);
            }
            // SAFETY: mapped for writing; `writes` (the non-empty ones) and `at` in step (placed
            // from them just now), each range within the buffer (the last end, checked above:
            // the ranges ascend from `offset` without overlapping).
            unsafe { self.shared.raw.write_mapped_list(raw, writes, at) }?;
            Ok(placed)
        })
    }

    /// Runs `f` on a buffer mapped for writing, under its lock: with its raw buffer and, for
    /// one mapped at creation, the shadow that stands for the mapping.
    fn write_target<T>(
        &self,
        buffer: &Buffer<B>,
        f: impl FnOnce(&B::Buffer, Option<&mut Vec<u8>>) -> Result<T>,
    ) -> Result<T> {
        self.check_device(buffer)?;
        let inner = &buffer.inner;
        let mut state = inner.state();
        let state = &mut *state;
        let Some(raw) = state.raw.as_ref() else {
            return Err(inner.destroyed());
        };
        f(raw, write_target(&mut state.map)?)
    }

    /// Copies bytes out of a buffer mapped for reading, from `offset` (any alignment).
    ///
    /// # Errors
    /// [`Error::NotMapped`], [`Error::WrongMapMode`], [`Error::OutOfBounds`],
    /// [`Error::Destroyed`].
    pub fn read_mapped(&self, buffer: &Buffer<B>, offset: u64, out: &mut [u8]) -> Result<()> {
        self.check_device(buffer)?;
        let inner = &buffer.inner;
        let state = inner.state();
        let Some(raw) = state.raw.as_ref() else {
            return Err(inner.destroyed());
        };
        match state.map {
            MapState::Unmapped | MapState::ReadPending => Err(Error::NotMapped),
            MapState::Mapped(MapMode::Write) | MapState::Shadow(_) => Err(Error::WrongMapMode {
                mapped: MapMode::Write,
                requested: MapMode::Read,
            }),
            MapState::Mapped(MapMode::Read) => {
                check_bounds(offset, len64(out), inner.size)?;
                // SAFETY: mapped for reading, range within the buffer (checked above).
                unsafe { self.shared.raw.read_mapped(raw, offset, out) }?;
                Ok(())
            }
        }
    }

    /// Writes `data` at `offset` (G5). Upload buffers are written from the host (after GPU
    /// work that uses them has completed); other buffers through staging, in one submission,
    /// ordered after earlier submissions. `offset` and `data.len()` must be multiples of
    /// [`Limits::copy_alignment`].
    ///
    /// # Errors
    /// [`Error::MissingUsage`] (`TRANSFER_DST`, except for upload buffers),
    /// [`Error::MisalignedOffset`], [`Error::MisalignedSize`], [`Error::OutOfBounds`],
    /// [`Error::BufferMapped`], [`Error::Destroyed`], [`Error::OutOfMemory`],
    /// [`Error::DeviceLost`].
    pub fn write(&self, buffer: &Buffer<B>, offset: u64, data: &[u8]) -> Result<()> {
        if buffer.inner.location != MemoryLocation::Upload {
            return self.write_now(buffer, offset, data);
        }
        self.check_device(buffer)?;
        let inner = &buffer.inner;
        let size = len64(data);
        {
            let state = inner.state();
            if state.raw.is_none() {
                return Err(inner.destroyed());
            }
            if !matches!(state.map, MapState::Unmapped) {
                return Err(inner.mapped());
            }
        }
        check_aligned(offset, size, self.shared.limits.copy_alignment)?;
        check_bounds(offset, size, inner.size)?;
        if size == 0 {
            return Ok(());
        }
        let state = self.lock_idle(inner)?;
        let Some(raw) = state.raw.as_ref() else {
            return Err(inner.destroyed());
        };
        if !matches!(state.map, MapState::Unmapped) {
            return Err(inner.mapped());
        }
        // SAFETY: an upload buffer, valid, not mapped, range aligned and in bounds (checked),
        // and its last submission has completed (`lock_idle`; the lock is held).
        unsafe { self.shared.raw.write_host(raw, offset, data) }?;
        Ok(())
    }

    /// A staged write to a device-local or readback buffer, submitted at once through
    /// [`Backend::write_now`] (which may pipeline it, or read `data` in place).
    fn write_now(&self, buffer: &Buffer<B>, offset: u64, data: &[u8]) -> Result<()> {
        self.check_device(buffer)?;
        let inner = &buffer.inner;
        let size = len64(data);
        let mut state = inner.state();
        let Some(raw) = state.raw.as_ref() else {
            return Err(inner.destroyed());
        };
        if !matches!(state.map, MapState::Unmapped) {
            return Err(inner.mapped());
        }
        inner.require(BufferUsage::TRANSFER_DST)?;
        check_aligned(offset, size, self.shared.limits.copy_alignment)?;
        check_bounds(offset, size, inner.size)?;
        if size == 0 {
            return Ok(());
        }
        // SAFETY: `raw` is valid, has TRANSFER_DST and is not mapped; the range is aligned and
        // in bounds (all checked above). The buffer's lock is held until the submission is
        // recorded as its last use, so it cannot be destroyed or mapped before that
        // submission completes (destroy defers, map waits for `last_use`).
        let idx = unsafe { self.shared.raw.write_now(raw, offset, data) }?;
        state.last_use = idx;
        drop(state);
        if !lock(&self.shared.deferred).is_empty() {
            let completed = self.shared.raw.poll()?;
            self.shared.free_deferred(completed);
        }
        Ok(())
    }

    /// Writes a slice of `T` at `offset` (G5); see [`Device::write`].
    ///
    /// # Errors
    /// As [`Device::write`].
    pub fn write_pod<T: bytemuck::Pod>(
        &self,
        buffer: &Buffer<B>,
        offset: u64,
        data: &[T],
    ) -> Result<()> {
        self.write(buffer, offset, bytemuck::cast_slice(data))
    }

    /// Checks a read of `size` bytes at `offset` and returns the aligned range to ask the
    /// backend for.
    fn check_read(
        &self,
        inner: &BufferInner<B>,
        state: &BufferState<B>,
        offset: u64,
        size: u64,
    ) -> Result<(u64, u64)> {
        if state.raw.is_none() {
            return Err(inner.destroyed());
        }
        if !matches!(state.map, MapState::Unmapped) {
            return Err(inner.mapped());
        }
        if inner.location != MemoryLocation::Readback {
            inner.require(BufferUsage::TRANSFER_SRC)?;
        }
        check_bounds(offset, size, inner.size)?;
        let ca = self.shared.limits.copy_alignment;
        let start = align_down(offset, ca);
        // The buffer's size is a multiple of the copy alignment, so this stays in bounds.
        let end = align_up(offset + size, ca)
            .unwrap_or(inner.size)
            .min(inner.size);
        Ok((start, end - start))
    }

    /// Reads `out.len()` bytes at `offset` (any alignment) into `out`, blocking (G8). The
    /// result reflects every submission made before the call.
    ///
    /// # Errors
    /// [`Error::MissingUsage`] (`TRANSFER_SRC`, except for readback buffers),
    /// [`Error::OutOfBounds`], [`Error::BufferMapped`], [`Error::Destroyed`],
    /// [`Error::OutOfMemory`], [`Error::DeviceLost`].
    pub fn read_into(&self, buffer: &Buffer<B>, offset: u64, out: &mut [u8]) -> Result<()> {
        self.check_device(buffer)?;
        let inner = &buffer.inner;
        let size = len64(out);
        let state = inner.state();
        let (start, len) = self.check_read(inner, &state, offset, size)?;
        if size == 0 {
            return Ok(());
        }
        let raw = state.raw.as_ref().ok_or_else(|| inner.destroyed())?;
        if start == offset && len == size {
            // SAFETY: valid, not mapped, aligned range in bounds, TRANSFER_SRC unless readback
            // (all checked by `check_read` under the held lock).
            unsafe { self.shared.raw.read(raw, start, out) }?;
        } else {
            let mut tmp = vec![0u8; to_usize(len, inner.size)?];
            // SAFETY: as above, for the aligned range `check_read` computed.
            unsafe { self.shared.raw.read(raw, start, &mut tmp) }?;
            let skip = (offset - start) as usize;
            out.copy_from_slice(&tmp[skip..skip + out.len()]);
        }
        Ok(())
    }

    /// Reads `size` bytes at `offset` (any alignment), blocking (G8).
    ///
    /// # Errors
    /// As [`Device::read_into`].
    pub fn read(&self, buffer: &Buffer<B>, offset: u64, size: u64) -> Result<Vec<u8>> {
        self.check_device(buffer)?;
        check_bounds(offset, size, buffer.inner.size)?;
        let mut out = vec![0u8; to_usize(size, buffer.inner.size)?];
        self.read_into(buffer, offset, &mut out)?;
        Ok(out)
    }

    /// Reads `count` values of `T` at `offset` (G5).
    ///
    /// # Errors
    /// As [`Device::read_into`]; [`Error::OutOfBounds`] if the byte size overflows.
    pub fn read_pod<T: bytemuck::Pod>(
        &self,
        buffer: &Buffer<B>,
        offset: u64,
        count: usize,
    ) -> Result<Vec<T>> {
        let size = (count as u64)
            .checked_mul(core::mem::size_of::<T>() as u64)
            .ok_or(Error::OutOfBounds {
                offset,
                size: u64::MAX,
                buffer_size: buffer.inner.size,
            })?;
        check_bounds(offset, size, buffer.inner.size)?;
        let mut out = vec![T::zeroed(); count];
        self.read_into(buffer, offset, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// Starts a read of `size` bytes at `offset` and returns a future of them (G8). Arguments
    /// are checked now; the future makes progress on its own. A readback buffer counts as
    /// mapped until the future completes (or is dropped, which then waits for the read).
    ///
    /// # Errors
    /// As [`Device::read_into`].
    pub fn read_async(&self, buffer: &Buffer<B>, offset: u64, size: u64) -> Result<ReadFuture<B>> {
        self.check_device(buffer)?;
        let inner = &buffer.inner;
        let mut state = inner.state();
        let (start, len) = self.check_read(inner, &state, offset, size)?;
        if size == 0 {
            return Ok(ReadFuture {
                inner: None,
                pending: None,
                skip: 0,
                len: 0,
            });
        }
        let raw = state.raw.as_ref().ok_or_else(|| inner.destroyed())?;
        // SAFETY: as for `read_into`; for a readback buffer the state becomes `ReadPending`
        // below, under the same lock, so nothing maps or submits it until the future is done.
        let fut = unsafe { self.shared.raw.read_async(raw, start, len) }?;
        let pending = if inner.location == MemoryLocation::Readback {
            state.map = MapState::ReadPending;
            Some(Arc::clone(&buffer.inner))
        } else {
            state.last_use = state.last_use.max(self.shared.raw.last_submitted());
            None
        };
        Ok(ReadFuture {
            inner: Some(Box::pin(fut)),
            pending,
            skip: (offset - start) as usize,
            len: size as usize,
        })
    }

    /// Copies `size` bytes from `src` at `src_offset` to `dst` at `dst_offset` (G7), in one
    /// submission.
    ///
    /// # Errors
    /// As [`Batch::copy`], plus submission errors.
    pub fn copy(
        &self,
        src: &Buffer<B>,
        src_offset: u64,
        dst: &Buffer<B>,
        dst_offset: u64,
        size: u64,
    ) -> Result<SubmissionIndex> {
        let mut batch = self.batch()?;
        batch.copy(src, src_offset, dst, dst_offset, size)?;
        batch.submit()
    }

    /// Starts a batch of transfer commands, submitted together (one submission).
    ///
    /// # Errors
    /// [`Error::DeviceLost`], [`Error::OutOfMemory`].
    pub fn batch(&self) -> Result<Batch<B>> {
        Ok(Batch {
            device: self.clone(),
            raw: Some(self.shared.raw.begin_batch()?),
            buffers: Vec::new(),
            commands: 0,
        })
    }

    /// Non-blocking: runs due callbacks, frees buffers the GPU is done with, and returns the
    /// latest completed submission (G10).
    ///
    /// # Errors
    /// [`Error::DeviceLost`].
    pub fn poll(&self) -> Result<SubmissionIndex> {
        let completed = self.shared.raw.poll()?;
        self.shared.free_deferred(completed);
        Ok(completed)
    }

    /// Blocks until `index` completes or `timeout` passes; `Ok(true)` if it completed (G10).
    ///
    /// # Errors
    /// [`Error::DeviceLost`].
    pub fn wait(&self, index: SubmissionIndex, timeout: Option<Duration>) -> Result<bool> {
        let done = self.shared.raw.wait(index, timeout)?;
        self.poll()?;
        Ok(done)
    }

    /// Blocks until every submission so far has completed.
    ///
    /// # Errors
    /// [`Error::DeviceLost`].
    pub fn wait_idle(&self) -> Result<()> {
        let last = self.shared.raw.last_submitted();
        self.wait(last, None).map(|_| ())
    }

    /// The latest submission index handed out.
    #[must_use]
    pub fn last_submitted(&self) -> SubmissionIndex {
        self.shared.raw.last_submitted()
    }

    /// Runs `callback` once `index` has completed: at once if it has, otherwise from a later
    /// [`Device::poll`] or [`Device::wait`] on the thread calling it (G10). Callbacks may call
    /// back into gantry (submit, write, poll) but should not block for long.
    pub fn on_submitted_work_done(
        &self,
        index: SubmissionIndex,
        callback: impl FnOnce() + Send + 'static,
    ) {
        let callback: SubmittedWorkDoneCallback = Box::new(callback);
        self.shared.raw.on_submitted_work_done(index, callback);
    }
}

/// A batch of transfer commands (writes and copies), executed in recording order as one
/// submission. Arguments are checked as each command is recorded; a rejected command is not
/// recorded and the batch stays usable. Dropping a batch discards it.
pub struct Batch<B: Backend> {
    device: Device<B>,
    raw: Option<B::Batch>,
    buffers: Vec<Arc<BufferInner<B>>>,
    commands: usize,
}

impl<B: Backend> core::fmt::Debug for Batch<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Batch")
            .field("commands", &self.commands)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Batch<B> {
    /// Commands recorded so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.commands
    }

    /// Whether no command was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.commands == 0
    }

    fn track(&mut self, buffer: &Buffer<B>) {
        // The last few entries catch the common patterns (many commands on one buffer, or
        // copies alternating between a staging buffer and a destination) without a set;
        // `submit` dedups the rest.
        let recent = &self.buffers[self.buffers.len().saturating_sub(4)..];
        if !recent.iter().any(|b| b.id == buffer.inner.id) {
            self.buffers.push(Arc::clone(&buffer.inner));
        }
    }

    /// Records a write of `data` to `buffer` at `offset`. `offset` and `data.len()` must be
    /// multiples of [`Limits::copy_alignment`]; the buffer needs `TRANSFER_DST`.
    ///
    /// # Errors
    /// [`Error::MissingUsage`], [`Error::MisalignedOffset`], [`Error::MisalignedSize`],
    /// [`Error::OutOfBounds`], [`Error::BufferMapped`], [`Error::Destroyed`],
    /// [`Error::WrongDevice`], [`Error::OutOfMemory`] (staging).
    pub fn write(&mut self, buffer: &Buffer<B>, offset: u64, data: &[u8]) -> Result<()> {
        let device = &self.device;
        let inner = &buffer.inner;
        let size = len64(data);
        let state = writable(device, buffer)?;
        let Some(raw) = state.raw.as_ref() else {
            return Err(inner.destroyed());
        };
        check_aligned(offset, size, device.shared.limits.copy_alignment)?;
        check_bounds(offset, size, inner.size)?;
        if size == 0 {
            return Ok(());
        }
        let batch = self
            .raw
            .as_mut()
            .expect("a batch is only consumed by submit");
        // SAFETY: the batch is this backend's; `raw` is valid, has TRANSFER_DST, is not mapped
        // and the range is aligned and in bounds (checked above under the lock). The batch
        // keeps an `Arc` of the buffer, and `submit` re-checks it is alive and unmapped.
        unsafe { device.shared.raw.batch_write(batch, raw, offset, data) }?;
        drop(state);
        self.commands += 1;
        self.track(buffer);
        Ok(())
    }

    /// Records a write of a slice of `T`; see [`Batch::write`].
    ///
    /// # Errors
    /// As [`Batch::write`].
    pub fn write_pod<T: bytemuck::Pod>(
        &mut self,
        buffer: &Buffer<B>,
        offset: u64,
        data: &[T],
    ) -> Result<()> {
        self.write(buffer, offset, bytemuck::cast_slice(data))
    }

    /// Records many writes to one buffer: `(offset, bytes)` pairs, recorded in order exactly
    /// as that many [`Batch::write`] calls would be (where they overlap, the later wins), with
    /// the buffer's own checks (device, state, usage) made once. Every write is checked
    /// before any is recorded: a write that fails its checks leaves the batch as it was. If
    /// staging runs out midway ([`Error::OutOfMemory`]), the writes before it stay recorded,
    /// as with separate calls.
    ///
    /// For thousands of small scattered updates a frame (instance data, particles, sparse
    /// uniforms) this costs little more than copying the bytes into staging; backends then
    /// scatter them with one dispatch ([`crate::scatter`]).
    ///
    /// ```
    /// use gantry_core::{Backend, Batch, Buffer, Device};
    ///
    /// /// Moves 64-byte instance records into their slots.
    /// fn update_instances<B: Backend>(
    ///     device: &Device<B>,
    ///     instances: &Buffer<B>,
    ///     changed: &[(u32, [u8; 64])],
    /// ) -> gantry_core::Result<()> {
    ///     let writes: Vec<(u64, &[u8])> = changed
    ///         .iter()
    ///         .map(|(slot, bytes)| (u64::from(*slot) * 64, &bytes[..]))
    ///         .collect();
    ///     let mut batch: Batch<B> = device.batch()?;
    ///     batch.write_many(instances, &writes)?;
    ///     batch.submit()?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`Batch::write`], for the first write that fails.
    pub fn write_many(&mut self, buffer: &Buffer<B>, writes: &[(u64, &[u8])]) -> Result<()> {
        let device = &self.device;
        let inner = &buffer.inner;
        let state = writable(device, buffer)?;
        let Some(raw) = state.raw.as_ref() else {
            return Err(inner.destroyed());
        };
        let has_empty = check_writes(writes, device.shared.limits.copy_alignment, inner.size)?;
        let batch = self
            .raw
            .as_mut()
            .expect("a batch is only consumed by submit");
        let nonempty: Vec<(u64, &[u8])>;
        let writes = if has_empty {
            nonempty = writes.iter().copied().filter(|w| !w.1.is_empty()).collect();
            &nonempty[..]
        } else {
            writes
        };
        // SAFETY: as in `write`: the batch is this backend's; `raw` is valid, has
        // TRANSFER_DST, is not mapped, and every range is aligned and in bounds (checked
        // above under the lock, which is still held).
        let (recorded, result) = unsafe { device.shared.raw.batch_write_many(batch, raw, writes) };
        let result = result.map_err(Error::from);
        drop(state);
        // What was recorded is tracked even after a failure: `submit` must check the buffer
        // and record its last use.
        if recorded > 0 {
            self.commands += recorded;
            self.track(buffer);
        }
        result
    }

    /// Records a copy of `size` bytes from `src` at `src_offset` to `dst` at `dst_offset`.
    /// Offsets and size must be multiples of [`Limits::copy_alignment`]; `src` needs
    /// `TRANSFER_SRC`, `dst` `TRANSFER_DST`; within one buffer the ranges must not overlap.
    ///
    /// # Errors
    /// [`Error::MissingUsage`], [`Error::MisalignedOffset`], [`Error::MisalignedSize`],
    /// [`Error::OutOfBounds`], [`Error::OverlappingCopy`], [`Error::BufferMapped`],
    /// [`Error::Destroyed`], [`Error::WrongDevice`].
    pub fn copy(
        &mut self,
        src: &Buffer<B>,
        src_offset: u64,
        dst: &Buffer<B>,
        dst_offset: u64,
        size: u64,
    ) -> Result<()> {
        self.copy_many(src, dst, &[(src_offset, dst_offset, size)])
    }

    /// Records many copies from `src` to `dst`: `(src_offset, dst_offset, size)` triples,
    /// recorded in order exactly as that many [`Batch::copy`] calls would be, with the two
    /// buffers' own checks (device, state, usage) and locks taken once. Every copy is checked
    /// before any is recorded: one that fails its checks leaves the batch as it was.
    ///
    /// ```
    /// use gantry_core::{Backend, Batch, Buffer, Device};
    ///
    /// /// Compacts live 256-byte particles: slot `from` of `src` to slot `to` of `dst`.
    /// fn compact<B: Backend>(
    ///     device: &Device<B>,
    ///     src: &Buffer<B>,
    ///     dst: &Buffer<B>,
    ///     moves: &[(u64, u64)],
    /// ) -> gantry_core::Result<()> {
    ///     let copies: Vec<(u64, u64, u64)> =
    ///         moves.iter().map(|&(from, to)| (from * 256, to * 256, 256)).collect();
    ///     let mut batch: Batch<B> = device.batch()?;
    ///     batch.copy_many(src, dst, &copies)?;
    ///     batch.submit()?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`Batch::copy`], for the first entry that fails.
    pub fn copy_many(
        &mut self,
        src: &Buffer<B>,
        dst: &Buffer<B>,
        copies: &[(u64, u64, u64)],
    ) -> Result<()> {
        let ca = self.device.shared.limits.copy_alignment;
        let same = src.inner.id == dst.inner.id;
        self.copy_locked(src, dst, |raw, batch, src_raw, dst_raw| {
            // The common case in one branch per entry (the alignment is a power of two):
            // aligned, in bounds, two distinct buffers. Anything else takes the checks that
            // name the fault.
            let mask = if ca.is_power_of_two() {
                ca - 1
            } else {
                u64::MAX
            };
            let (src_size, dst_size) = (src.inner.size, dst.inner.size);
            // Empty copies, counted in the same pass (they are not recorded).
            let mut empty = 0usize;
            for &(src_offset, dst_offset, size) in copies {
                empty += usize::from(size == 0);
                let fast = !same
                    && (src_offset | dst_offset | size) & mask == 0
                    && src_offset <= src_size
                    && dst_offset <= dst_size
                    && size <= src_size - src_offset
                    && size <= dst_size - dst_offset;
                if fast {
                    continue;
                }
                check_aligned(src_offset, size, ca)?;
                check_aligned(dst_offset, size, ca)?;
                check_bounds(src_offset, size, src_size)?;
                check_bounds(dst_offset, size, dst_size)?;
                if same
                    && src_offset < dst_offset + size
                    && dst_offset < src_offset + size
                    && size > 0
                {
                    return Err(Error::OverlappingCopy {
                        src_offset,
                        dst_offset,
                        size,
                    });
                }
            }
            if empty == 0 {
                // SAFETY: both buffers valid and unmapped, with the needed usage, every range
                // aligned, in bounds and not overlapping within one buffer (all checked above
                // under the locks, which `copy_locked` holds).
                unsafe { raw.batch_copy_many(batch, src_raw, dst_raw, copies) };
            } else {
                let nonempty: Vec<(u64, u64, u64)> =
                    copies.iter().copied().filter(|c| c.2 > 0).collect();
                // SAFETY: as above.
                unsafe { raw.batch_copy_many(batch, src_raw, dst_raw, &nonempty) };
            }
            Ok(copies.len() - empty)
        })
    }

    /// Records the copies of `list` from `src` to `dst`, as [`Batch::copy_many`] records
    /// the list's entries, with the list checked in constant time from what it kept while
    /// it grew (its largest ends and the low bits of every value) instead of entry by entry.
    /// For lists of thousands of copies built once and recorded once (a manager's staged
    /// uploads). `src` and `dst` are two buffers (one buffer goes as [`Batch::copy_many`],
    /// which checks overlaps).
    ///
    /// ```
    /// use gantry_core::{Backend, Batch, Buffer, Device, scatter::CopyList};
    ///
    /// /// Copies 256-byte slot `k` of `src` to slot `to[k]` of `dst`.
    /// fn spread<B: Backend>(
    ///     device: &Device<B>,
    ///     src: &Buffer<B>,
    ///     dst: &Buffer<B>,
    ///     to: &[u64],
    /// ) -> gantry_core::Result<()> {
    ///     let mut list = CopyList::with_capacity(to.len());
    ///     for (k, &slot) in to.iter().enumerate() {
    ///         list.push(k as u64 * 256, slot * 256, 256);
    ///     }
    ///     let mut batch: Batch<B> = device.batch()?;
    ///     batch.copy_list(src, dst, &list)?;
    ///     batch.submit()?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`Batch::copy_many`], for the first entry that fails.
    pub fn copy_list(&mut self, src: &Buffer<B>, dst: &Buffer<B>, list: &CopyList) -> Result<()> {
        if src.inner.id == dst.inner.id {
            let copies: Vec<(u64, u64, u64)> = list
                .as_slice()
                .iter()
                .map(|w| (w.src_offset, w.dst_offset, w.len))
                .collect();
            return self.copy_many(src, dst, &copies);
        }
        let ca = self.device.shared.limits.copy_alignment;
        self.copy_locked(src, dst, |raw, batch, src_raw, dst_raw| {
            let (src_size, dst_size) = (src.inner.size, dst.inner.size);
            let fast = ca.is_power_of_two()
                && list.bits() & (ca - 1) == 0
                && list.src_end() <= src_size
                && list.dst_end() <= dst_size;
            if !fast {
                // The entry that fails, named (a non-power-of-two alignment is checked entry
                // by entry and may pass).
                for w in list.as_slice() {
                    check_aligned(w.src_offset, w.len, ca)?;
                    check_aligned(w.dst_offset, w.len, ca)?;
                    check_bounds(w.src_offset, w.len, src_size)?;
                    check_bounds(w.dst_offset, w.len, dst_size)?;
                }
            }
            // SAFETY: two distinct buffers, valid and unmapped, with the needed usage; every
            // entry aligned and in bounds (its ends are at most the list's largest, its bits
            // among the list's, or it was checked above), under the locks `copy_locked`
            // holds.
            unsafe { raw.batch_copy_list(batch, src_raw, dst_raw, list) };
            Ok(list.len())
        })
    }

    /// Checks a copy's two buffers (device, not destroyed, not mapped, `TRANSFER_SRC` on
    /// `src` and `TRANSFER_DST` on `dst`), then runs `record` with both locked (in id order,
    /// so two threads copying A to B and B to A cannot deadlock) and tracks them if it
    /// recorded anything (it returns how many commands it did).
    fn copy_locked(
        &mut self,
        src: &Buffer<B>,
        dst: &Buffer<B>,
        record: impl FnOnce(&B, &mut B::Batch, &B::Buffer, &B::Buffer) -> Result<usize>,
    ) -> Result<()> {
        let device = &self.device;
        device.check_device(src)?;
        device.check_device(dst)?;
        let same = src.inner.id == dst.inner.id;
        let (first, second) = if src.inner.id <= dst.inner.id {
            (&src.inner, &dst.inner)
        } else {
            (&dst.inner, &src.inner)
        };
        let guard_a = first.state();
        let guard_b = if same { None } else { Some(second.state()) };
        let (src_state, dst_state) = match (&guard_b, src.inner.id <= dst.inner.id) {
            (None, _) => (&*guard_a, &*guard_a),
            (Some(b), true) => (&*guard_a, &**b),
            (Some(b), false) => (&**b, &*guard_a),
        };
        for (inner, state) in [(&src.inner, src_state), (&dst.inner, dst_state)] {
            if state.raw.is_none() {
                return Err(inner.destroyed());
            }
            if !matches!(state.map, MapState::Unmapped) {
                return Err(inner.mapped());
            }
        }
        src.inner.require(BufferUsage::TRANSFER_SRC)?;
        dst.inner.require(BufferUsage::TRANSFER_DST)?;
        let (Some(src_raw), Some(dst_raw)) = (src_state.raw.as_ref(), dst_state.raw.as_ref())
        else {
            return Err(src.inner.destroyed());
        };
        let batch = self
            .raw
            .as_mut()
            .expect("a batch is only consumed by submit");
        let recorded = record(&device.shared.raw, batch, src_raw, dst_raw)?;
        drop(guard_b);
        drop(guard_a);
        if recorded > 0 {
            self.commands += recorded;
            self.track(src);
            self.track(dst);
        }
        Ok(())
    }

    /// Submits the batch as one submission and returns its index. Every buffer it uses is
    /// re-checked: destroyed or mapped since recording fails the whole batch (nothing runs).
    ///
    /// # Errors
    /// [`Error::Destroyed`], [`Error::BufferMapped`], [`Error::OutOfMemory`],
    /// [`Error::DeviceLost`].
    pub fn submit(mut self) -> Result<SubmissionIndex> {
        let raw_batch = self.raw.take().expect("a batch is only consumed by submit");
        let mut buffers = core::mem::take(&mut self.buffers);
        buffers.sort_by_key(|b| b.id);
        buffers.dedup_by_key(|b| b.id);
        let mut guards = Vec::with_capacity(buffers.len());
        for inner in &buffers {
            let state = inner.state();
            if state.raw.is_none() {
                return Err(inner.destroyed());
            }
            if !matches!(state.map, MapState::Unmapped) {
                return Err(inner.mapped());
            }
            guards.push(state);
        }
        let shared = &self.device.shared;
        // SAFETY: every buffer the batch uses is alive and unmapped (checked above, and the
        // locks are held until the submission is recorded on each buffer).
        let idx = unsafe { shared.raw.submit(raw_batch) }?;
        for state in &mut guards {
            state.last_use = idx;
        }
        drop(guards);
        if !lock(&shared.deferred).is_empty() {
            let completed = shared.raw.poll()?;
            shared.free_deferred(completed);
        }
        Ok(idx)
    }
}

/// The future [`Device::read_async`] returns; resolves to the bytes read.
pub struct ReadFuture<B: Backend> {
    inner: Option<Pin<Box<B::ReadFuture>>>,
    /// A readback buffer in `ReadPending` state, to reset when done.
    pending: Option<Arc<BufferInner<B>>>,
    skip: usize,
    len: usize,
}

impl<B: Backend> ReadFuture<B> {
    fn finish(&mut self) {
        if let Some(inner) = self.pending.take() {
            let mut state = inner.state();
            if matches!(state.map, MapState::ReadPending) {
                state.map = MapState::Unmapped;
            }
        }
    }
}

impl<B: Backend> Future for ReadFuture<B> {
    type Output = Result<Vec<u8>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(fut) = this.inner.as_mut() else {
            return Poll::Ready(Ok(Vec::new()));
        };
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                this.inner = None;
                this.finish();
                Poll::Ready(result.map_err(Error::from).map(|mut bytes| {
                    if this.skip != 0 || bytes.len() != this.len {
                        bytes.drain(..this.skip);
                        bytes.truncate(this.len);
                    }
                    bytes
                }))
            }
        }
    }
}

impl<B: Backend> Drop for ReadFuture<B> {
    fn drop(&mut self) {
        if self.pending.is_some() {
            if let Some(fut) = self.inner.take() {
                // The backend still maps the readback buffer: finish the read before the
                // buffer can be used again.
                let _ = crate::block_on(fut);
            }
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ReferenceBackend;
    use crate::scatter::ScatterWrite;

    fn device() -> Device<ReferenceBackend> {
        Device::new(ReferenceBackend::new(1 << 20))
    }

    #[test]
    fn sizes_round_up_to_the_atom_for_non_coherent_host_memory() {
        let d = device();
        let b = d
            .create_buffer(&BufferDesc::new(
                65,
                BufferUsage::empty(),
                MemoryLocation::Upload,
            ))
            .unwrap();
        assert_eq!(b.size(), 128); // atom 64: 65 -> 128, not 65 + 65 % 64 = 66
        let b = d
            .create_buffer(&BufferDesc::new(
                5,
                BufferUsage::VERTEX,
                MemoryLocation::DeviceLocal,
            ))
            .unwrap();
        assert_eq!(b.size(), 8);
        assert!(b.usage().contains(BufferUsage::TRANSFER_DST));
        let b = d
            .create_buffer(&BufferDesc::new(
                5,
                BufferUsage::UNIFORM,
                MemoryLocation::DeviceLocal,
            ))
            .unwrap();
        assert_eq!(b.size(), 256);
    }

    #[test]
    fn oom_from_the_backend_is_out_of_memory_and_the_device_keeps_working() {
        let d = device();
        let too_big = BufferDesc::new(
            2 << 20,
            BufferUsage::TRANSFER_DST,
            MemoryLocation::DeviceLocal,
        );
        assert_eq!(d.create_buffer(&too_big).unwrap_err(), Error::OutOfMemory);
        let b = d
            .create_buffer_init(
                None,
                BufferUsage::TRANSFER_SRC,
                MemoryLocation::DeviceLocal,
                &[1u32, 2, 3],
            )
            .unwrap();
        assert_eq!(d.read_pod::<u32>(&b, 0, 3).unwrap(), [1, 2, 3]);
    }

    /// A 256-byte upload buffer, mapped for writing, every byte 1.
    fn filled_upload(d: &Device<ReferenceBackend>) -> Buffer<ReferenceBackend> {
        let b = d
            .create_buffer(&BufferDesc::new(
                256,
                BufferUsage::TRANSFER_SRC,
                MemoryLocation::Upload,
            ))
            .unwrap();
        d.map(&b, MapMode::Write).unwrap();
        d.write_mapped(&b, 0, &[1u8; 256]).unwrap();
        b
    }

    #[test]
    fn write_mapped_many_checks_every_entry_first() {
        let d = device();
        let b = filled_upload(&d);
        let x = [9u8; 16];
        // The first entry out of bounds is named; nothing is written, not even the good ones.
        for (bad, want) in [
            ((250u64, &x[..]), (250, 16)),
            ((u64::MAX - 4, &x[..8]), (u64::MAX - 4, 8)),
            ((257, &x[..0]), (257, 0)),
        ] {
            let writes = [(0u64, &x[..]), bad, (300, &x[..])];
            assert_eq!(
                d.write_mapped_many(&b, &writes).unwrap_err(),
                Error::OutOfBounds {
                    offset: want.0,
                    size: want.1,
                    buffer_size: 256
                }
            );
        }
        d.unmap(&b).unwrap();
        assert_eq!(d.read(&b, 0, 256).unwrap(), vec![1u8; 256]);
        d.map(&b, MapMode::Write).unwrap();
        // Good entries, out of order and overlapping: each lands, the later one winning.
        let writes = [
            (240u64, &x[..]),
            (0, &x[..8]),
            (4, &[5u8; 8][..]),
            (256, &x[..0]),
        ];
        d.write_mapped_many(&b, &writes).unwrap();
        d.unmap(&b).unwrap();
        let got = d.read(&b, 0, 256).unwrap();
        let mut want = vec![1u8; 256];
        want[240..].fill(9);
        want[..4].fill(9);
        want[4..12].fill(5);
        assert_eq!(got, want);
    }

    #[test]
    fn copy_lists_check_in_constant_time_and_name_the_bad_entry() {
        let d = device();
        let rw = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
        let src = d
            .create_buffer(&BufferDesc::new(1024, rw, MemoryLocation::DeviceLocal))
            .unwrap();
        let dst = d
            .create_buffer(&BufferDesc::new(512, rw, MemoryLocation::DeviceLocal))
            .unwrap();
        let bytes: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 251) as u8).collect();
        d.write(&src, 0, &bytes).unwrap();
        d.write(&dst, 0, &[0u8; 512]).unwrap();
        // Scattered, contiguous runs and an empty entry: the same bytes as `copy_many`.
        let mut list = CopyList::new();
        for (s, t, n) in [
            (0, 256, 16),
            (16, 272, 16),
            (512, 0, 64),
            (900, 400, 0),
            (64, 480, 32),
        ] {
            list.push(s, t, n);
        }
        let mut batch = d.batch().unwrap();
        batch.copy_list(&src, &dst, &list).unwrap();
        batch.submit().unwrap();
        let mut want = vec![0u8; 512];
        want[256..288].copy_from_slice(&bytes[..32]);
        want[..64].copy_from_slice(&bytes[512..576]);
        want[480..].copy_from_slice(&bytes[64..96]);
        assert_eq!(d.read(&dst, 0, 512).unwrap(), want);
        // A bad entry anywhere: named, and nothing recorded.
        for (bad, err) in [
            (
                (1000, 0, 32),
                Error::OutOfBounds {
                    offset: 1000,
                    size: 32,
                    buffer_size: 1024,
                },
            ),
            (
                (0, 500, 16),
                Error::OutOfBounds {
                    offset: 500,
                    size: 16,
                    buffer_size: 512,
                },
            ),
            (
                (u64::MAX - 3, 0, 8),
                Error::OutOfBounds {
                    offset: u64::MAX - 3,
                    size: 8,
                    buffer_size: 1024,
                },
            ),
            (
                (2, 0, 4),
                Error::MisalignedOffset {
                    offset: 2,
                    alignment: 4,
                },
            ),
        ] {
            let mut bad_list = list.clone();
            bad_list.push(bad.0, bad.1, bad.2);
            bad_list.push(0, 0, 4);
            let mut batch = d.batch().unwrap();
            assert_eq!(batch.copy_list(&src, &dst, &bad_list).unwrap_err(), err);
            assert!(batch.is_empty());
        }
        // One buffer: the overlap check of `copy_many`.
        let mut within = CopyList::new();
        within.push(0, 8, 16);
        let mut batch = d.batch().unwrap();
        assert_eq!(
            batch.copy_list(&src, &src, &within).unwrap_err(),
            Error::OverlappingCopy {
                src_offset: 0,
                dst_offset: 8,
                size: 16
            }
        );
    }

    #[test]
    fn write_mapped_list_checks_the_list_against_the_writes_first() {
        let d = device();
        let b = filled_upload(&d);
        let (x, y) = ([9u8; 16], [5u8; 8]);
        let writes = [(4096u64, &x[..]), (7, &x[..0]), (8192, &y[..])];
        let mut list = CopyList::new();
        let (end, _) = list.push_packed(32, &writes, 16);
        assert_eq!(end, 32);
        // Entry lengths or offsets that differ, or counts that differ: named, nothing written.
        let mut short = CopyList::new();
        short.push(32, 4096, 16);
        let mut wrong = short.clone();
        wrong.push(48, 8000, 8);
        let mut long = list.clone();
        long.push(100, 0, 4);
        for (l, index, write, entry) in [
            (&short, 1, (8192, 8), (0, 0)),
            (&wrong, 1, (8192, 8), (8000, 8)),
            (&long, 2, (0, 0), (0, 4)),
        ] {
            assert_eq!(
                d.write_mapped_list(&b, &writes, l).unwrap_err(),
                Error::ListMismatch {
                    index,
                    offset: write.0,
                    size: write.1,
                    entry_offset: entry.0,
                    entry_len: entry.1,
                }
            );
        }
        // An entry outside the buffer: named.
        let mut outside = CopyList::new();
        outside.push(32, 4096, 16);
        outside.push(250, 8192, 8);
        assert_eq!(
            d.write_mapped_list(&b, &writes, &outside).unwrap_err(),
            Error::OutOfBounds {
                offset: 250,
                size: 8,
                buffer_size: 256
            }
        );
        d.unmap(&b).unwrap();
        assert_eq!(d.read(&b, 0, 256).unwrap(), vec![1u8; 256]);
        d.map(&b, MapMode::Write).unwrap();
        d.write_mapped_list(&b, &writes, &list).unwrap();
        // Out of order (a list of one's own): copied in order.
        let mut back = CopyList::new();
        back.push(200, 4096, 16);
        back.push(100, 8192, 8);
        d.write_mapped_list(&b, &writes, &back).unwrap();
        d.unmap(&b).unwrap();
        let mut want = vec![1u8; 256];
        want[32..48].fill(9);
        want[48..56].fill(5);
        want[200..216].fill(9);
        want[100..108].fill(5);
        assert_eq!(d.read(&b, 0, 256).unwrap(), want);
    }

    #[test]
    fn write_mapped_packed_places_checks_and_copies() {
        let d = device();
        let b = filled_upload(&d);
        d.unmap(&b).unwrap();
        let (x, y) = ([9u8; 20], [5u8; 8]);
        let writes = [(4096u64, &x[..]), (7, &x[..0]), (8192, &y[..])];
        let mut list = CopyList::new();
        assert_eq!(
            d.write_mapped_packed(&b, 0, &writes, 16, &mut list)
                .unwrap_err(),
            Error::NotMapped
        );
        d.map(&b, MapMode::Write).unwrap();
        list.push(0, 0, 4);
        let before = list.clone();
        // The second write would end past the buffer: named; list and buffer unchanged.
        assert_eq!(
            d.write_mapped_packed(&b, 220, &writes, 16, &mut list)
                .unwrap_err(),
            Error::OutOfBounds {
                offset: 252,
                size: 8,
                buffer_size: 256
            }
        );
        assert_eq!(list, before);
        // Offsets beyond `u64`: refused, not wrapped.
        assert!(
            d.write_mapped_packed(&b, u64::MAX - 8, &writes, 16, &mut list)
                .is_err()
        );
        assert_eq!(list, before);
        assert_eq!(
            d.write_mapped_packed(&b, 64, &writes, 16, &mut list),
            Ok((48, 0))
        );
        assert_eq!(
            &list.as_slice()[1..],
            [
                ScatterWrite {
                    dst_offset: 4096,
                    src_offset: 64,
                    len: 20
                },
                ScatterWrite {
                    dst_offset: 8192,
                    src_offset: 96,
                    len: 8
                }
            ]
        );
        d.unmap(&b).unwrap();
        let mut want = vec![1u8; 256];
        want[64..84].fill(9);
        want[96..104].fill(5);
        assert_eq!(d.read(&b, 0, 256).unwrap(), want);
    }

    #[test]
    fn rejected_commands_change_nothing() {
        let d = device();
        let rw = BufferUsage::TRANSFER_SRC | BufferUsage::TRANSFER_DST;
        let b = d
            .create_buffer_init(Some("b"), rw, MemoryLocation::DeviceLocal, &[7u8; 64])
            .unwrap();
        let mut batch = d.batch().unwrap();
        batch.write(&b, 0, &[1u8; 8]).unwrap();
        assert_eq!(
            batch.write(&b, 2, &[0u8; 4]).unwrap_err(),
            Error::MisalignedOffset {
                offset: 2,
                alignment: 4
            }
        );
        assert_eq!(
            batch.copy(&b, 0, &b, 4, 8).unwrap_err(),
            Error::OverlappingCopy {
                src_offset: 0,
                dst_offset: 4,
                size: 8
            }
        );
        assert_eq!(
            batch.copy(&b, u64::MAX - 3, &b, 0, 8).unwrap_err(),
            Error::OutOfBounds {
                offset: u64::MAX - 3,
                size: 8,
                buffer_size: 64
            }
        );
        assert_eq!(batch.len(), 1);
        batch.submit().unwrap();
        let mut want = [7u8; 64];
        want[..8].fill(1);
        assert_eq!(d.read(&b, 0, 64).unwrap(), want);
    }

    #[test]
    fn destroyed_and_dropped_buffers_are_freed() {
        let d = device();
        for i in 0..100u64 {
            let b = d
                .create_buffer(&BufferDesc::new(
                    1000 + i,
                    BufferUsage::TRANSFER_DST,
                    MemoryLocation::DeviceLocal,
                ))
                .unwrap();
            if i % 2 == 0 {
                d.destroy_buffer(&b).unwrap();
                assert_eq!(
                    d.destroy_buffer(&b).unwrap_err(),
                    Error::Destroyed {
                        label: String::new()
                    }
                );
            }
        }
        assert_eq!(d.live_buffers(), 0);
        assert_eq!(d.live_bytes(), 0);
        assert_eq!(d.allocated_bytes(), Some(0));
    }

    #[test]
    fn map_rules() {
        let d = device();
        let up = d
            .create_buffer(&BufferDesc::new(
                64,
                BufferUsage::empty(),
                MemoryLocation::Upload,
            ))
            .unwrap();
        assert_eq!(
            d.map(&up, MapMode::Read).unwrap_err(),
            Error::MapModeNotAllowed {
                mode: MapMode::Read,
                location: MemoryLocation::Upload
            }
        );
        assert_eq!(d.unmap(&up).unwrap_err(), Error::NotMapped);
        d.map(&up, MapMode::Write).unwrap();
        assert_eq!(
            d.map(&up, MapMode::Write).unwrap_err(),
            Error::AlreadyMapped
        );
        d.write_mapped(&up, 3, &[9]).unwrap();
        d.unmap(&up).unwrap();
        assert_eq!(d.read(&up, 3, 1).unwrap(), [9]);
    }
}
