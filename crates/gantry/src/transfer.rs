//! The transfer orchestrator (M2): uploads, copies and readbacks queued from any thread,
//! recorded into one batch per flush, with adjacent uploads coalesced into single copies.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use gantry_core::{
    Backend, Batch, Buffer, BufferUsage, Device, MemoryLocation, ReadFuture, SubmissionIndex,
    align_down, align_up,
};
use gantry_stats::{Counter, EventStats, TransferKind};

use crate::error::{Error, Result};
use crate::pool::{BufferPool, PooledBuffer};
use crate::staging::{Region, StagingEvent, StagingState};
use gantry_core::scatter::{CopyList, ScatterWrite};

/// Where `size` staged bytes start: at a multiple of 16 when `size` is one (the backends' wide
/// scatter shader takes such writes), else at the copy alignment `align`.
#[inline]
fn staged_align(size: u64, align: u64) -> u64 {
    if size.is_multiple_of(16) {
        align.max(16)
    } else {
        align
    }
}

/// The operation of an upload of `size` bytes staged at `region`, to `dst_offset` in `dst`.
fn staged_op<B: Backend>(
    seq: u64,
    dst: &Buffer<B>,
    dst_offset: u64,
    size: u64,
    region: &Region,
    ticket: &Arc<Ticket<B>>,
    owner: Option<Arc<PendingState>>,
) -> Op<B> {
    Op {
        seq,
        kind: OpKind::Upload {
            dst: dst.clone(),
            dst_offset,
            size,
            src: Src::Staged {
                chunk: region.chunk,
                offset: region.offset,
            },
        },
        ticket: Arc::clone(ticket),
        owner,
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

const QUEUED: u64 = u64::MAX;
/// Uploads up to this size are gathered in host memory and copied into the mapped chunk in
/// large runs at the flush; larger ones are copied into the mapping at once.
const SMALL_UPLOAD: u64 = 16 << 10;

/// Uploads up to this size are copied into the shadow and queued while the staging lock is
/// held (one lock instead of the writer guard and two shared handles; the copy is short).
const LOCKED_UPLOAD: u64 = 1 << 10;
const SHARDS: usize = 8;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// Completion state of one queued operation, shared by its handles: what a
/// [`TransferHandle`] holds (one reference count per handle, the device and orchestrator
/// references are the ticket's, taken once for all the uploads that join one operation).
pub(crate) struct Ticket<B: Backend> {
    /// `QUEUED`, or the submission that carries the operation (0: nothing to wait for).
    submission: AtomicU64,
    failed: Mutex<Option<gantry_core::Error>>,
    /// To poll and wait on.
    device: Device<B>,
    /// To flush when a handle waits on a queued operation. Weak: queued operations hold
    /// their tickets, so a strong reference would keep the orchestrator alive; when it goes,
    /// it submits what is queued (or fails it) first, so no ticket stays queued.
    inner: Weak<Inner<B>>,
    /// The tasks awaiting the operation's handles, woken by one helper thread per ticket.
    wakers: Mutex<Vec<Waker>>,
    /// Whether that helper thread was started.
    helper: AtomicBool,
}

impl<B: Backend> Ticket<B> {
    fn new(inner: &Arc<Inner<B>>, submission: u64) -> Arc<Self> {
        Arc::new(Self {
            submission: AtomicU64::new(submission),
            failed: Mutex::new(None),
            device: inner.device.clone(),
            inner: Arc::downgrade(inner),
            wakers: Mutex::new(Vec::new()),
            helper: AtomicBool::new(false),
        })
    }
    fn queued(inner: &Arc<Inner<B>>) -> Arc<Self> {
        Self::new(inner, QUEUED)
    }
    fn done(inner: &Arc<Inner<B>>) -> Arc<Self> {
        Self::new(inner, 0)
    }
    fn fail(&self, e: gantry_core::Error) {
        *lock(&self.failed) = Some(e);
        self.submission.store(0, Ordering::Release);
    }
    fn error(&self) -> Option<Error> {
        lock(&self.failed).clone().map(Error::TransferFailed)
    }
    fn is_queued(&self) -> bool {
        self.submission.load(Ordering::Acquire) == QUEUED
    }
    /// Submits the queue if this operation is still in it.
    fn flush_if_queued(&self) -> Result<()> {
        if !self.is_queued() {
            return Ok(());
        }
        match self.inner.upgrade() {
            Some(inner) => inner.flush().map(drop),
            // Not reached: the orchestrator submits or fails its queue when it goes.
            None => Err(Error::TransferFailed(gantry_core::Error::Internal {
                message: "the manager went with this operation still queued".into(),
            })),
        }
    }
}

/// Upload state shared by a [`crate::GpuBuffer`] and the operations queued for it.
#[derive(Debug, Default)]
pub(crate) struct PendingState {
    pub(crate) queued: AtomicU64,
    pub(crate) last_submission: AtomicU64,
}

enum Src<B: Backend> {
    Staged { chunk: usize, offset: u64 },
    Dedicated(PooledBuffer<B>),
}

enum OpKind<B: Backend> {
    Upload {
        dst: Buffer<B>,
        dst_offset: u64,
        size: u64,
        src: Src<B>,
    },
    /// Many uploads to one buffer staged together in one chunk ([`Inner::upload_many`]):
    /// copies from the chunk to `dst`, in program order, one entry per upload.
    UploadMany {
        dst: Buffer<B>,
        chunk: usize,
        entries: CopyList,
        /// The entries' bytes in all (counted as they come, for the flush's statistics).
        bytes: u64,
    },
    Copy {
        src: Buffer<B>,
        src_offset: u64,
        dst: Buffer<B>,
        dst_offset: u64,
        size: u64,
    },
    Read {
        src: Buffer<B>,
        offset: u64,
        size: u64,
        slot: Arc<ReadSlot<B>>,
    },
}

/// One queued operation.
pub(crate) struct Op<B: Backend> {
    seq: u64,
    kind: OpKind<B>,
    ticket: Arc<Ticket<B>>,
    owner: Option<Arc<PendingState>>,
}

enum ReadState<B: Backend> {
    Queued,
    Ready(PooledBuffer<B>),
    Failed(gantry_core::Error),
}

pub(crate) struct ReadSlot<B: Backend> {
    state: Mutex<ReadState<B>>,
    /// Bytes asked for, and where they start in the aligned copy.
    len: u64,
    skip: u64,
}

/// Orchestrator counters.
#[derive(Debug, Default)]
pub(crate) struct TransferCounters {
    pub(crate) queued_ops: Counter,
    pub(crate) flushes: Counter,
    pub(crate) submissions: Counter,
    pub(crate) copy_regions: Counter,
    pub(crate) coalesced: Counter,
    /// Uploads that joined the last queued operation instead of queuing their own.
    pub(crate) joined: Counter,
    pub(crate) failed_ops: Counter,
}

/// What the manager shares between its handles: device, staging, queues, statistics.
pub(crate) struct Inner<B: Backend> {
    pub(crate) device: Device<B>,
    pub(crate) staging: Mutex<StagingState<B>>,
    queues: Vec<Mutex<Vec<Op<B>>>>,
    /// An emptied operation list kept from the last flush, so that flushes swap lists with
    /// the queues instead of growing (and copying) a new one each time.
    spare: Mutex<Vec<Op<B>>>,
    seq: AtomicU64,
    pub(crate) events: Arc<EventStats>,
    pub(crate) counters: TransferCounters,
    /// Dedicated staging and readback buffers come from here (reused once the GPU is done).
    pool: BufferPool<B>,
}

impl<B: Backend> Drop for Inner<B> {
    /// Submits what is still queued: the last manager or buffer going does not take queued
    /// uploads with it (as a `BufWriter` flushes when dropped). Handles still held see the
    /// submission, or the error if it failed.
    fn drop(&mut self) {
        let mut st = lock(&self.staging);
        if let Err(e) = self.flush_locked(&mut st) {
            // Failed before taking the queue (closing the staging chunks): fail what is left.
            let e = match e {
                Error::Core(e) | Error::TransferFailed(e) => e,
                other => gantry_core::Error::Internal {
                    message: other.to_string(),
                },
            };
            let mut left: Vec<Op<B>> = st.open_op.take().into_iter().collect();
            for q in &self.queues {
                left.append(&mut lock(q));
            }
            for op in &left {
                if op.ticket.is_queued() {
                    op.ticket.fail(e.clone());
                }
            }
            self.finish_owners(&left, None);
        }
    }
}

impl<B: Backend> Inner<B> {
    pub(crate) fn new(device: Device<B>, staging: StagingState<B>, pool: BufferPool<B>) -> Self {
        Self {
            pool,
            device,
            staging: Mutex::new(staging),
            queues: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            spare: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            events: Arc::new(EventStats::new("transfers")),
            counters: TransferCounters::default(),
        }
    }

    fn push(&self, op: Op<B>) {
        self.counters.queued_ops.inc();
        if let Some(owner) = &op.owner {
            owner.queued.fetch_add(1, Ordering::AcqRel);
        }
        self.enqueue(op);
    }

    /// Puts an operation already counted (by [`Self::push`] or as the open one) in a queue.
    fn enqueue(&self, op: Op<B>) {
        let shard = SHARD.with(|s| *s);
        lock(&self.queues[shard]).push(op);
    }

    /// Orchestrator counters with the staging state's pending counts added.
    pub(crate) fn joined_total(&self) -> u64 {
        self.counters.joined.get() + lock(&self.staging).joined
    }

    /// See [`Self::joined_total`].
    pub(crate) fn coalesced_total(&self) -> u64 {
        self.counters.coalesced.get() + lock(&self.staging).coalesced
    }

    /// Adds an upload of `size` bytes, staged at `staging_offset` in chunk `chunk`, to
    /// `dst_offset` in `dst`, to the open operation (`st.open_op`, kept under the staging lock
    /// the caller holds) when that is an upload to `dst` from the same chunk; returns its
    /// ticket, which the new upload shares.
    ///
    /// Order: the open operation must be the last one queued at all (no sequence number was
    /// taken since it), else a later operation of another thread (a read of `dst`, say) would
    /// move behind this upload. An operation queued after this check gets a later number, so
    /// it stays after the upload, as it came after it.
    fn join(
        &self,
        st: &mut StagingState<B>,
        dst: &Buffer<B>,
        chunk: usize,
        staging_offset: u64,
        dst_offset: u64,
        size: u64,
    ) -> Option<Arc<Ticket<B>>> {
        let last = st.open_op.as_mut()?;
        if self.seq.load(Ordering::Acquire) != last.seq.wrapping_add(1) {
            return None;
        }
        // A single staged upload becomes a list of one, then takes the entry like a list.
        if let OpKind::Upload {
            dst: d,
            dst_offset,
            size,
            src: Src::Staged { chunk: c, offset },
        } = &last.kind
            && d.id() == dst.id()
            && *c == chunk
        {
            let mut entries = st.spare_entries.pop().unwrap_or_default();
            entries.push(*offset, *dst_offset, *size);
            last.kind = OpKind::UploadMany {
                dst: dst.clone(),
                chunk,
                entries,
                bytes: *size,
            };
        }
        let OpKind::UploadMany {
            dst: d,
            chunk: c,
            entries,
            bytes,
        } = &mut last.kind
        else {
            return None;
        };
        if d.id() != dst.id() || *c != chunk {
            return None;
        }
        let ticket = Arc::clone(&last.ticket);
        *bytes += size;
        st.coalesced += u64::from(entries.push(staging_offset, dst_offset, size));
        st.joined += 1;
        Some(ticket)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn alignment(&self) -> u64 {
        self.device.limits().copy_alignment.max(1)
    }

    /// Checks what a transfer command would check, so errors come at enqueue time.
    fn check_range(
        &self,
        buffer: &Buffer<B>,
        offset: u64,
        size: u64,
        need: BufferUsage,
    ) -> Result<()> {
        if buffer.is_destroyed() {
            return Err(gantry_core::Error::Destroyed {
                label: buffer.label().to_owned(),
            }
            .into());
        }
        if !buffer.usage().contains(need) {
            return Err(gantry_core::Error::MissingUsage {
                required: need - buffer.usage(),
                actual: buffer.usage(),
            }
            .into());
        }
        match offset.checked_add(size) {
            Some(end) if end <= buffer.size() => Ok(()),
            _ => Err(gantry_core::Error::OutOfBounds {
                offset,
                size,
                buffer_size: buffer.size(),
            }
            .into()),
        }
    }

    fn check_aligned(&self, offset: u64, size: u64) -> Result<()> {
        let a = self.alignment();
        if gantry_core::align_down(offset, a) != offset {
            return Err(gantry_core::Error::MisalignedOffset {
                offset,
                alignment: a,
            }
            .into());
        }
        if gantry_core::align_down(size, a) != size {
            return Err(gantry_core::Error::MisalignedSize { size, alignment: a }.into());
        }
        Ok(())
    }

    /// Places `size` bytes in staging at a multiple of `align` (a power of two, at least the
    /// copy alignment), recovering as documented in [`crate::staging`].
    fn place_aligned(&self, st: &mut StagingState<B>, size: u64, align: u64) -> Result<Region> {
        if let Some(r) = st.try_place(&self.device, size, align)? {
            return Ok(r);
        }
        // A bounded number of rounds: each round either frees or adds space.
        for _ in 0..(st.config.max_chunks + 4) * 2 {
            let completed = self.device.poll()?;
            let regions = st.reclaim(completed);
            st.counters.reclaims += 1;
            st.event(StagingEvent::Reclaimed { regions });
            if let Some(r) = st.try_place(&self.device, size, align)? {
                return Ok(r);
            }
            if let Some(oldest) = st.oldest_in_flight() {
                self.device.wait(oldest, None)?;
                st.counters.waits += 1;
                st.event(StagingEvent::WaitedOldest { submission: oldest });
                let regions = st.reclaim(oldest);
                st.event(StagingEvent::Reclaimed { regions });
                if let Some(r) = st.try_place(&self.device, size, align)? {
                    return Ok(r);
                }
            }
            if st.grow(&self.device)? {
                st.counters.grows += 1;
                st.event(StagingEvent::Grew {
                    chunks: st.chunks.len(),
                });
                if let Some(r) = st.try_place(&self.device, size, align)? {
                    return Ok(r);
                }
            }
            if st.has_open_regions() {
                if let Some(submission) = self.flush_locked(st)? {
                    st.counters.early_submits += 1;
                    st.event(StagingEvent::SubmittedEarly { submission });
                }
                continue;
            }
            break;
        }
        st.counters.exhausted += 1;
        st.event(StagingEvent::Exhausted { requested: size });
        Err(Error::StagingExhausted {
            requested: size,
            chunk_size: st.config.chunk_size,
            chunks: st.chunks.len(),
            max_chunks: st.config.max_chunks,
        })
    }

    /// Queues an upload of `data` to `dst` at `offset`; the bytes are copied into staging now.
    pub(crate) fn upload(
        self: &Arc<Self>,
        dst: &Buffer<B>,
        offset: u64,
        data: &[u8],
        owner: Option<Arc<PendingState>>,
    ) -> Result<TransferHandle<B>> {
        let size = data.len() as u64;
        self.check_range(dst, offset, size, BufferUsage::TRANSFER_DST)?;
        self.check_aligned(offset, size)?;
        if size == 0 {
            return Ok(self.handle(Ticket::done(self)));
        }
        let mut st = lock(&self.staging);
        if size > st.config.chunk_size {
            let ticket = Ticket::queued(self);
            if !st.config.dedicated_for_large {
                st.counters.exhausted += 1;
                st.event(StagingEvent::Exhausted { requested: size });
                return Err(Error::StagingExhausted {
                    requested: size,
                    chunk_size: st.config.chunk_size,
                    chunks: st.chunks.len(),
                    max_chunks: st.config.max_chunks,
                });
            }
            st.counters.dedicated += 1;
            st.event(StagingEvent::Dedicated { size });
            if dst.location() != MemoryLocation::Upload {
                // Around the ring, at once: what is queued goes first (program order), then
                // `Device::write`, which the backend may pipeline or copy in place from
                // imported host memory (gantry-vulkan's `HostMemory`). A dedicated staging
                // buffer filled now and copied at the next flush would serialize the host
                // copy and the DMA.
                self.flush_locked(&mut st)?;
                drop(st);
                self.device.write(dst, offset, data)?;
                let idx = self.device.last_submitted();
                ticket.submission.store(idx.0, Ordering::Release);
                if let Some(owner) = &owner {
                    owner.last_submission.fetch_max(idx.0, Ordering::AcqRel);
                }
                return Ok(self.handle(ticket));
            }
            drop(st);
            let staging =
                self.pool
                    .acquire(size, BufferUsage::TRANSFER_SRC, MemoryLocation::Upload)?;
            self.device.write(&staging, 0, data)?;
            self.push(Op {
                seq: self.next_seq(),
                kind: OpKind::Upload {
                    dst: dst.clone(),
                    dst_offset: offset,
                    size,
                    src: Src::Dedicated(staging),
                },
                ticket: Arc::clone(&ticket),
                owner,
            });
            return Ok(self.handle(ticket));
        }
        let region = self.place_aligned(&mut st, size, staged_align(size, self.alignment()))?;
        if size <= LOCKED_UPLOAD {
            // Small enough to copy under the staging lock: no writer guard, and the op is
            // queued (or joined) before a flush (which takes this lock) can close the chunk.
            st.chunks[region.chunk].put_small(region.offset, data);
            if owner.is_none() {
                if let Some(ticket) =
                    self.join(&mut st, dst, region.chunk, region.offset, offset, size)
                {
                    drop(st);
                    return Ok(self.handle(ticket));
                }
                // The open operation from now on; the one before goes to a queue.
                let ticket = Ticket::queued(self);
                self.counters.queued_ops.inc();
                let op = staged_op(self.next_seq(), dst, offset, size, &region, &ticket, None);
                let before = st.open_op.replace(op);
                drop(st);
                if let Some(before) = before {
                    self.enqueue(before);
                }
                return Ok(self.handle(ticket));
            }
        }
        let ticket = Ticket::queued(self);
        let op = |seq| staged_op(seq, dst, offset, size, &region, &ticket, owner.clone());
        if size <= LOCKED_UPLOAD {
            // Copied above, under the staging lock.
            self.push(op(self.next_seq()));
            drop(st);
            return Ok(self.handle(ticket));
        }
        let chunk = &st.chunks[region.chunk];
        let writers = Arc::clone(&chunk.writers);
        let seq = self.next_seq();
        let guard = writers.read().unwrap_or_else(PoisonError::into_inner);
        if size <= SMALL_UPLOAD {
            let shadow = Arc::clone(&chunk.shadow);
            drop(st);
            lock(&shadow).put(region.offset, data);
        } else {
            let buffer = chunk.buffer.clone();
            drop(st);
            let written = self.device.write_mapped(&buffer, region.offset, data);
            if let Err(e) = written {
                drop(guard);
                return Err(e.into());
            }
        }
        self.push(op(seq));
        drop(guard);
        Ok(self.handle(ticket))
    }

    /// Queues many uploads to `dst`: `(offset, bytes)` pairs, in program order (overlaps: the
    /// later wins). Every entry is checked before anything is queued. The bytes are packed
    /// into staging as one region per chunk's worth (each entry at a multiple of 16 bytes, so
    /// backends can scatter those of whole 16-byte units with their wide shader), with one
    /// queued operation, one ticket and one lock per region instead of per entry. Entries
    /// larger than a chunk go as [`Self::upload`] does. The handle is the last region's:
    /// submissions complete in order, so it completes once every entry has landed.
    pub(crate) fn upload_many(
        self: &Arc<Self>,
        dst: &Buffer<B>,
        writes: &[(u64, &[u8])],
    ) -> Result<TransferHandle<B>> {
        self.check_range(dst, 0, 0, BufferUsage::TRANSFER_DST)?;
        let a = self.alignment();
        // One branch per entry in the common case (the alignment is a power of two); an entry
        // that fails it takes the checks that name the fault.
        let mask = if a.is_power_of_two() { a - 1 } else { u64::MAX };
        let dst_size = dst.size();
        let chunk_size = lock(&self.staging).config.chunk_size;
        // One pass over all entries, without a branch: the checks (only a fault takes the
        // loop that names it), the bytes, and the packed length as one region (what the
        // common case, a list that fits one chunk, needs: each entry at a multiple of the
        // wide alignment, the previous length rounded up to it, as
        // `CopyList::push_packed` places them; saturating once it overflows).
        let wide = a.max(16);
        let wmask = wide.wrapping_sub(1);
        let measure = |writes: &[(u64, &[u8])]| {
            writes
                .iter()
                .fold((false, 0u64, 0u64), |(bad, bytes, end), &(offset, data)| {
                    let size = data.len() as u64;
                    let bad = bad
                        | ((offset | size) & mask != 0)
                        | (offset > dst_size)
                        | (size > dst_size.wrapping_sub(offset));
                    let padded = size.saturating_add(wmask) & !wmask;
                    (bad, bytes.wrapping_add(size), end.saturating_add(padded))
                })
        };
        // Thousands of entries are measured in parts on the copy threads (the sums add up).
        let parts = gantry_core::scatter::plan_parts(writes.len());
        let (faulty, bytes, packed) = if parts > 1 {
            let chunks: Vec<&[(u64, &[u8])]> =
                writes.chunks(writes.len().div_ceil(parts)).collect();
            let sums: Vec<Mutex<(bool, u64, u64)>> =
                chunks.iter().map(|_| Mutex::new((false, 0, 0))).collect();
            gantry_core::copier::run_calls(chunks.len(), &|i| {
                *lock(&sums[i]) = measure(chunks[i]);
            });
            sums.into_iter()
                .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
                .fold((false, 0u64, 0u64), |(bad, bytes, end), (b, n, e)| {
                    (bad | b, bytes.wrapping_add(n), end.saturating_add(e))
                })
        } else {
            measure(writes)
        };
        for &(offset, data) in writes.iter().filter(|_| faulty) {
            let size = data.len() as u64;
            match offset.checked_add(size) {
                Some(end) if end <= dst_size => {}
                _ => {
                    return Err(gantry_core::Error::OutOfBounds {
                        offset,
                        size,
                        buffer_size: dst_size,
                    }
                    .into());
                }
            }
            self.check_aligned(offset, size)?;
        }
        if !a.is_power_of_two() {
            // No backend has such a copy alignment; `push_packed` pads to powers of two, so
            // the regions below would not hold their lists: one upload each.
            let mut last = None;
            for &(offset, data) in writes.iter().filter(|w| !w.1.is_empty()) {
                last = Some(self.upload(dst, offset, data, None)?);
            }
            return Ok(last.unwrap_or_else(|| self.handle(Ticket::done(self))));
        }
        if packed <= chunk_size {
            // One region.
            return if packed == 0 {
                Ok(self.handle(Ticket::done(self)))
            } else {
                self.queue_many(dst, writes, packed, bytes)
            };
        }
        let mut last = None;
        // Where the entries are cut into regions of at most a chunk: only the packed length
        // and the bytes are tracked here; each region's list is built once it is placed
        // (`queue_many`).
        let mut start = 0;
        let (mut end, mut bytes) = (0u64, 0u64);
        for (i, &(offset, data)) in writes.iter().enumerate() {
            let size = data.len() as u64;
            if size == 0 {
                continue;
            }
            if size > chunk_size {
                if end > 0 {
                    self.queue_many(dst, &writes[start..i], end, bytes)?;
                    (end, bytes) = (0, 0);
                }
                start = i + 1;
                last = Some(self.upload(dst, offset, data, None)?);
                continue;
            }
            // As `push_packed` pads (the copy alignment is a power of two here).
            let padded = align_up(size, wide).unwrap_or(u64::MAX);
            if end.saturating_add(padded) > chunk_size {
                // `end > 0` here: an entry that fits a chunk fits an empty region.
                self.queue_many(dst, &writes[start..i], end, bytes)?;
                start = i;
                (end, bytes) = (padded, size);
            } else {
                end += padded;
                bytes += size;
            }
        }
        if end > 0 {
            last = Some(self.queue_many(dst, &writes[start..], end, bytes)?);
        }
        Ok(last.unwrap_or_else(|| self.handle(Ticket::done(self))))
    }

    /// Stages `writes` (each at most a chunk; `len` bytes once packed as [`Self::upload_many`]
    /// packs them, `bytes` in all) in one region and queues them as one operation.
    fn queue_many(
        self: &Arc<Self>,
        dst: &Buffer<B>,
        writes: &[(u64, &[u8])],
        len: u64,
        bytes: u64,
    ) -> Result<TransferHandle<B>> {
        let ticket = Ticket::queued(self);
        let a = self.alignment();
        let mut st = lock(&self.staging);
        let region = self.place_aligned(&mut st, len, a.max(16))?;
        let chunk = &st.chunks[region.chunk];
        let writers = Arc::clone(&chunk.writers);
        let buffer = chunk.buffer.clone();
        let shadow = Arc::clone(&chunk.shadow);
        let seq = self.next_seq();
        let guard = writers.read().unwrap_or_else(PoisonError::into_inner);
        let mut entries = st.entries();
        drop(st);
        // Where each entry is staged, packed from the region's start as `upload_many`
        // measured them: the list the flush records, and where the bytes are copied to.
        // Entries contiguous with their neighbour in staging and the destination (the flush
        // copies them as one region) are counted as coalesced.
        let written = if len <= SMALL_UPLOAD {
            // Small regions join the chunk's shadow, like small uploads: its flush merges
            // spans across gaps of up to 256 bytes, which must not hold bytes it lacks.
            let (_, joins) = entries.push_packed(region.offset, writes, a.max(16));
            lock(&shadow).put_list(region.offset, len, writes, entries.as_slice());
            Ok(joins)
        } else {
            // Straight into the mapping, once per region (the copy threads take many bytes;
            // the entries ascend, so the copies stream into write-combined memory too).
            self.device
                .write_mapped_packed(&buffer, region.offset, writes, a.max(16), &mut entries)
                .map(|(_, joins)| joins)
        };
        let coalesced = match written {
            Ok(joins) => joins as u64,
            Err(e) => {
                drop(guard);
                return Err(e.into());
            }
        };
        self.counters.coalesced.add(coalesced);
        self.push(Op {
            seq,
            kind: OpKind::UploadMany {
                dst: dst.clone(),
                chunk: region.chunk,
                entries,
                bytes,
            },
            ticket: Arc::clone(&ticket),
            owner: None,
        });
        drop(guard);
        Ok(self.handle(ticket))
    }

    /// Queues a buffer-to-buffer copy.
    pub(crate) fn copy(
        self: &Arc<Self>,
        src: &Buffer<B>,
        src_offset: u64,
        dst: &Buffer<B>,
        dst_offset: u64,
        size: u64,
    ) -> Result<TransferHandle<B>> {
        self.check_range(src, src_offset, size, BufferUsage::TRANSFER_SRC)?;
        self.check_range(dst, dst_offset, size, BufferUsage::TRANSFER_DST)?;
        self.check_aligned(src_offset, size)?;
        self.check_aligned(dst_offset, size)?;
        if src.id() == dst.id()
            && size > 0
            && src_offset < dst_offset + size
            && dst_offset < src_offset + size
        {
            return Err(gantry_core::Error::OverlappingCopy {
                src_offset,
                dst_offset,
                size,
            }
            .into());
        }
        if size == 0 {
            return Ok(self.handle(Ticket::done(self)));
        }
        let ticket = Ticket::queued(self);
        self.push(Op {
            seq: self.next_seq(),
            kind: OpKind::Copy {
                src: src.clone(),
                src_offset,
                dst: dst.clone(),
                dst_offset,
                size,
            },
            ticket: Arc::clone(&ticket),
            owner: None,
        });
        Ok(self.handle(ticket))
    }

    /// Queues a readback of `size` bytes at `offset` (any alignment).
    pub(crate) fn read(
        self: &Arc<Self>,
        src: &Buffer<B>,
        offset: u64,
        size: u64,
    ) -> Result<ReadbackHandle<B>> {
        self.check_range(src, offset, size, BufferUsage::TRANSFER_SRC)?;
        let a = self.alignment();
        let start = align_down(offset, a);
        let end = align_up(offset + size, a)
            .unwrap_or(src.size())
            .min(src.size());
        let ticket = if size == 0 {
            Ticket::done(self)
        } else {
            Ticket::queued(self)
        };
        let slot = Arc::new(ReadSlot {
            state: Mutex::new(ReadState::Queued),
            len: size,
            skip: offset - start,
        });
        if size > 0 {
            // Validate the length fits in memory now, not at flush.
            usize::try_from(size).map_err(|_| gantry_core::Error::OutOfBounds {
                offset,
                size,
                buffer_size: src.size(),
            })?;
            self.push(Op {
                seq: self.next_seq(),
                kind: OpKind::Read {
                    src: src.clone(),
                    offset: start,
                    size: end - start,
                    slot: Arc::clone(&slot),
                },
                ticket: Arc::clone(&ticket),
                owner: None,
            });
        }
        Ok(ReadbackHandle {
            inner: Arc::clone(self),
            ticket,
            slot,
            future: None,
        })
    }

    /// A handle of an operation already complete.
    pub(crate) fn done_handle(self: &Arc<Self>) -> TransferHandle<B> {
        self.handle(Ticket::done(self))
    }

    fn handle(&self, ticket: Arc<Ticket<B>>) -> TransferHandle<B> {
        TransferHandle { ticket }
    }

    /// Whether any operation is queued.
    pub(crate) fn has_queued(&self) -> bool {
        lock(&self.staging).open_op.is_some() || self.queues.iter().any(|q| !lock(q).is_empty())
    }

    /// Submits everything queued as one submission (more only when staging forces an early
    /// submission).
    pub(crate) fn flush(&self) -> Result<Option<SubmissionIndex>> {
        let mut st = lock(&self.staging);
        self.flush_locked(&mut st)
    }

    pub(crate) fn flush_locked(&self, st: &mut StagingState<B>) -> Result<Option<SubmissionIndex>> {
        let started = Instant::now();
        let closed = st.close_open_chunks(&self.device)?;
        let mut ops: Vec<Op<B>> = std::mem::take(&mut *lock(&self.spare));
        for q in &self.queues {
            let mut q = lock(q);
            if ops.is_empty() {
                // The queue keeps the spare's capacity; no operation is copied.
                std::mem::swap(&mut ops, &mut *q);
            } else {
                ops.append(&mut q);
            }
        }
        ops.extend(st.open_op.take());
        self.counters.joined.add(core::mem::take(&mut st.joined));
        self.counters
            .coalesced
            .add(core::mem::take(&mut st.coalesced));
        if ops.is_empty() {
            st.retire(&closed, None);
            return Ok(None);
        }
        self.counters.flushes.inc();
        ops.sort_by_key(|op| op.seq);
        let mut batch = match self.device.batch() {
            Ok(b) => b,
            Err(e) => {
                for op in &ops {
                    op.ticket.fail(e.clone());
                }
                self.finish_owners(&ops, None);
                st.retire(&closed, None);
                return Err(e.into());
            }
        };
        let mut bytes = [0u64; 3];
        let mut run: Vec<usize> = Vec::new();
        let mut readbacks: Vec<(usize, PooledBuffer<B>)> = Vec::new();
        for i in 0..ops.len() {
            match &ops[i].kind {
                OpKind::Upload { size, .. } => {
                    bytes[0] += size;
                    run.push(i);
                }
                OpKind::UploadMany { bytes: b, .. } => {
                    bytes[0] += b;
                    run.push(i);
                }
                OpKind::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size,
                } => {
                    self.emit_run(&mut batch, st, &ops, &mut run);
                    bytes[2] += size;
                    self.counters.copy_regions.inc();
                    if let Err(e) = batch.copy(src, *src_offset, dst, *dst_offset, *size) {
                        self.counters.failed_ops.inc();
                        ops[i].ticket.fail(e);
                    }
                }
                OpKind::Read {
                    src, offset, size, ..
                } => {
                    self.emit_run(&mut batch, st, &ops, &mut run);
                    bytes[1] += size;
                    // The pool only returns gantry-core's errors.
                    let rb = self
                        .pool
                        .acquire(*size, BufferUsage::TRANSFER_DST, MemoryLocation::Readback)
                        .map_err(|e| match e {
                            Error::Core(e) => e,
                            _ => gantry_core::Error::OutOfMemory,
                        });
                    let recorded = rb.and_then(|rb| {
                        batch.copy(src, *offset, &rb, 0, *size)?;
                        Ok(rb)
                    });
                    self.counters.copy_regions.inc();
                    match recorded {
                        Ok(rb) => readbacks.push((i, rb)),
                        Err(e) => {
                            self.counters.failed_ops.inc();
                            ops[i].ticket.fail(e);
                        }
                    }
                }
            }
        }
        self.emit_run(&mut batch, st, &ops, &mut run);
        let submitted = if batch.is_empty() {
            Ok(SubmissionIndex::NONE)
        } else {
            batch.submit()
        };
        match submitted {
            Ok(idx) => {
                if idx != SubmissionIndex::NONE {
                    self.counters.submissions.inc();
                }
                for (i, rb) in readbacks {
                    if let OpKind::Read { slot, .. } = &ops[i].kind {
                        *lock(&slot.state) = ReadState::Ready(rb);
                    }
                }
                for op in &ops {
                    if op.ticket.is_queued() {
                        op.ticket.submission.store(idx.0, Ordering::Release);
                    }
                }
                self.finish_owners(&ops, Some(idx));
                st.retire(&closed, (idx != SubmissionIndex::NONE).then_some(idx));
                let elapsed = started.elapsed();
                for (kind, b) in [
                    (TransferKind::Upload, bytes[0]),
                    (TransferKind::Readback, bytes[1]),
                    (TransferKind::Copy, bytes[2]),
                ] {
                    if b > 0 {
                        self.events.record_transfer(kind, b, elapsed);
                    }
                }
                for op in &mut ops {
                    if let OpKind::UploadMany { entries, .. } = &mut op.kind {
                        st.give_back_entries(core::mem::take(entries));
                    }
                }
                ops.clear();
                *lock(&self.spare) = ops;
                Ok((idx != SubmissionIndex::NONE).then_some(idx))
            }
            Err(e) => {
                for op in &ops {
                    if op.ticket.is_queued() {
                        op.ticket.fail(e.clone());
                    }
                    if let OpKind::Read { slot, .. } = &op.kind {
                        *lock(&slot.state) = ReadState::Failed(e.clone());
                    }
                }
                self.finish_owners(&ops, None);
                st.retire(&closed, None);
                Err(e.into())
            }
        }
    }

    fn finish_owners(&self, ops: &[Op<B>], idx: Option<SubmissionIndex>) {
        for op in ops {
            if let Some(owner) = &op.owner {
                if let Some(idx) = idx {
                    owner.last_submission.fetch_max(idx.0, Ordering::AcqRel);
                }
                owner.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Records the uploads of `run` (indices into `ops`, in order): per destination, in
    /// program order (overlapping uploads: the last write wins), neighbours merged into one
    /// copy where both the destination and the staging ranges are contiguous.
    fn emit_run(
        &self,
        batch: &mut Batch<B>,
        st: &StagingState<B>,
        ops: &[Op<B>],
        run: &mut Vec<usize>,
    ) {
        if run.is_empty() {
            return;
        }
        let mut groups: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut order: Vec<u64> = Vec::new();
        // Runs of uploads to one destination (the common case) skip the map.
        let mut last: Option<(u64, Vec<usize>)> = None;
        for &i in run.iter() {
            if let OpKind::Upload { dst, .. } | OpKind::UploadMany { dst, .. } = &ops[i].kind {
                let id = dst.id();
                match &mut last {
                    Some((last_id, members)) if *last_id == id => members.push(i),
                    _ => {
                        if let Some((last_id, members)) = last.take() {
                            groups.insert(last_id, members);
                        }
                        let members = groups.remove(&id).unwrap_or_else(|| {
                            order.push(id);
                            Vec::new()
                        });
                        last = Some((id, members));
                        if let Some((_, members)) = &mut last {
                            members.push(i);
                        }
                    }
                }
            }
        }
        if let Some((last_id, members)) = last {
            groups.insert(last_id, members);
        }
        run.clear();
        // Counted here and added once (an atomic add per entry costs more than the entry).
        let mut regions = 0u64;
        let mut coalesced = 0u64;
        let mut copies: Vec<(u64, u64, u64)> = Vec::new();
        let mut members: Vec<usize> = Vec::new();
        for id in order {
            let Some(group) = groups.remove(&id) else {
                continue;
            };
            // Program order throughout (overlapping uploads: the last wins). No sort is
            // needed to find merges: two uploads contiguous in both the destination and
            // staging were staged one right after the other, so they are neighbours here.
            // The copies from one staging buffer go to the batch in one `copy_many` call
            // (the two buffers checked and locked once, not per upload).
            if let [i] = group[..]
                && let OpKind::UploadMany {
                    dst,
                    chunk,
                    entries,
                    ..
                } = &ops[i].kind
            {
                // One `upload_many` region (or joined small uploads): its list goes to the
                // batch as it is (contiguous entries were counted when staged).
                regions += (entries.len() - entries.joins()) as u64;
                if let Err(e) = batch.copy_list(&st.chunks[*chunk].buffer, dst, entries) {
                    self.counters.failed_ops.inc();
                    ops[i].ticket.fail(e);
                }
                continue;
            }
            let mut from: Option<&Buffer<B>> = None;
            for &i in &group {
                let single;
                let (src, items): (&Buffer<B>, &[ScatterWrite]) = match &ops[i].kind {
                    OpKind::Upload {
                        dst_offset,
                        size,
                        src,
                        ..
                    } => {
                        let (buffer, offset) = match src {
                            Src::Staged { chunk, offset } => (&st.chunks[*chunk].buffer, *offset),
                            Src::Dedicated(b) => (b.buffer(), 0),
                        };
                        single = [ScatterWrite {
                            dst_offset: *dst_offset,
                            src_offset: offset,
                            len: *size,
                        }];
                        (buffer, &single[..])
                    }
                    OpKind::UploadMany { chunk, entries, .. } => {
                        (&st.chunks[*chunk].buffer, entries.as_slice())
                    }
                    _ => continue,
                };
                if from.is_some_and(|f| f.id() != src.id()) {
                    self.record_copies(batch, ops, from, &copies, &members);
                    copies.clear();
                    members.clear();
                }
                from = Some(src);
                copies.reserve(items.len());
                let before = copies.len();
                for (k, w) in items.iter().enumerate() {
                    match copies.last_mut() {
                        Some(last)
                            if last.0 + last.2 == w.src_offset
                                && last.1 + last.2 == w.dst_offset =>
                        {
                            last.2 += w.len;
                            // Within one list, counted when it was staged.
                            coalesced += u64::from(k == 0);
                        }
                        _ => copies.push((w.src_offset, w.dst_offset, w.len)),
                    }
                }
                regions += (copies.len() - before) as u64;
                members.push(i);
            }
            self.record_copies(batch, ops, from, &copies, &members);
            copies.clear();
            members.clear();
        }
        self.counters.copy_regions.add(regions);
        self.counters.coalesced.add(coalesced);
    }

    /// Records `copies` from `src` to the destination of the uploads `members` (the ops the
    /// copies carry, all to one destination; they fail together if the batch refuses the
    /// call, as it does only for a destination destroyed or mapped since they were queued).
    fn record_copies(
        &self,
        batch: &mut Batch<B>,
        ops: &[Op<B>],
        src: Option<&Buffer<B>>,
        copies: &[(u64, u64, u64)],
        members: &[usize],
    ) {
        let (Some(src), Some(&first)) = (src, members.first()) else {
            return;
        };
        let (OpKind::Upload { dst, .. } | OpKind::UploadMany { dst, .. }) = &ops[first].kind else {
            return;
        };
        if let Err(e) = batch.copy_many(src, dst, copies) {
            for &i in members {
                self.counters.failed_ops.inc();
                ops[i].ticket.fail(e.clone());
            }
        }
    }
}

/// A queued upload or copy. Poll it, wait for it, or `.await` it. Waiting (or awaiting) an
/// operation that is still queued flushes the queue first.
///
/// One pointer: returned by value from every upload, a handle with a second field was
/// written in two stores and copied in one wider load, which defeats store-to-load forwarding.
pub struct TransferHandle<B: Backend> {
    ticket: Arc<Ticket<B>>,
}

impl<B: Backend> core::fmt::Debug for TransferHandle<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TransferHandle")
            .field("submission", &self.submission())
            .finish_non_exhaustive()
    }
}

impl<B: Backend> TransferHandle<B> {
    /// The submission that carries the operation; `None` while it is queued.
    #[must_use]
    pub fn submission(&self) -> Option<SubmissionIndex> {
        match self.ticket.submission.load(Ordering::Acquire) {
            QUEUED => None,
            i => Some(SubmissionIndex(i)),
        }
    }

    /// Whether the operation is still queued (not yet flushed).
    #[must_use]
    pub fn is_queued(&self) -> bool {
        self.ticket.is_queued()
    }

    /// Non-blocking: whether the GPU has finished the operation.
    ///
    /// # Errors
    /// [`Error::TransferFailed`] if its submission failed; device loss.
    pub fn is_complete(&self) -> Result<bool> {
        if let Some(e) = self.ticket.error() {
            return Err(e);
        }
        match self.submission() {
            None => Ok(false),
            Some(idx) => Ok(self.ticket.device.poll()? >= idx),
        }
    }

    /// Blocks until the GPU has finished the operation, flushing first if it is queued.
    ///
    /// # Errors
    /// [`Error::TransferFailed`], device loss.
    pub fn wait(&self) -> Result<()> {
        self.ticket.flush_if_queued()?;
        if let Some(e) = self.ticket.error() {
            return Err(e);
        }
        if let Some(idx) = self.submission() {
            self.ticket.device.wait(idx, None)?;
        }
        Ok(())
    }
}

impl<B: Backend> Future for TransferHandle<B> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &*self;
        let ticket = &this.ticket;
        if let Err(e) = ticket.flush_if_queued() {
            return Poll::Ready(Err(e));
        }
        // Registered before the check: a completion after it wakes this task.
        {
            let mut wakers = lock(&ticket.wakers);
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
        }
        match this.is_complete() {
            Err(e) => Poll::Ready(Err(e)),
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => {
                if let Some(idx) = this.submission() {
                    if !ticket.helper.swap(true, Ordering::AcqRel) {
                        // Make progress on our own: one thread per operation waits for its
                        // submission and wakes every task awaiting it.
                        let ticket = Arc::clone(ticket);
                        std::thread::spawn(move || {
                            let _ = ticket.device.wait(idx, None);
                            let wakers = core::mem::take(&mut *lock(&ticket.wakers));
                            for w in wakers {
                                w.wake();
                            }
                        });
                    }
                } else {
                    // Submitted by a flush on another thread that has not marked it yet.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

/// A queued readback. [`ReadbackHandle::wait`] blocks for the bytes; `.await` gives them
/// without blocking. Waiting (or awaiting) a readback that is still queued flushes the queue.
pub struct ReadbackHandle<B: Backend> {
    inner: Arc<Inner<B>>,
    ticket: Arc<Ticket<B>>,
    slot: Arc<ReadSlot<B>>,
    future: Option<ReadFuture<B>>,
}

impl<B: Backend> core::fmt::Debug for ReadbackHandle<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReadbackHandle")
            .field("len", &self.slot.len)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> ReadbackHandle<B> {
    /// The submission that carries the copy to host memory; `None` while queued.
    #[must_use]
    pub fn submission(&self) -> Option<SubmissionIndex> {
        match self.ticket.submission.load(Ordering::Acquire) {
            QUEUED => None,
            i => Some(SubmissionIndex(i)),
        }
    }

    /// Non-blocking: whether the bytes are ready to be read.
    ///
    /// # Errors
    /// [`Error::TransferFailed`], device loss.
    pub fn is_complete(&self) -> Result<bool> {
        if let Some(e) = self.ticket.error() {
            return Err(e);
        }
        match self.submission() {
            None => Ok(false),
            Some(idx) => Ok(self.inner.device.poll()? >= idx),
        }
    }

    fn ready(&self) -> Result<Option<(Buffer<B>, u64)>> {
        if self.slot.len == 0 {
            return Ok(None);
        }
        if self.ticket.is_queued() {
            self.inner.flush()?;
        }
        if let Some(e) = self.ticket.error() {
            return Err(e);
        }
        match &*lock(&self.slot.state) {
            ReadState::Ready(buffer) => Ok(Some((buffer.buffer().clone(), self.slot.skip))),
            ReadState::Failed(e) => Err(Error::TransferFailed(e.clone())),
            ReadState::Queued => Err(Error::TransferFailed(gantry_core::Error::Destroyed {
                label: "readback was never recorded".into(),
            })),
        }
    }

    /// Blocks until the bytes are back and copies them into `out`, which must be exactly as
    /// long as the readback.
    ///
    /// # Errors
    /// [`gantry_core::Error::OutOfBounds`] when `out` has another length (nothing is read);
    /// [`Error::TransferFailed`], device loss.
    pub fn wait_into(self, out: &mut [u8]) -> Result<()> {
        if out.len() as u64 != self.slot.len {
            return Err(gantry_core::Error::OutOfBounds {
                offset: 0,
                size: out.len() as u64,
                buffer_size: self.slot.len,
            }
            .into());
        }
        match self.ready()? {
            None => Ok(()),
            Some((buffer, skip)) => Ok(self.inner.device.read_into(&buffer, skip, out)?),
        }
    }

    /// Blocks until the bytes are back and returns them.
    ///
    /// # Errors
    /// [`Error::TransferFailed`], device loss.
    pub fn wait(self) -> Result<Vec<u8>> {
        match self.ready()? {
            None => Ok(Vec::new()),
            Some((buffer, skip)) => Ok(self.inner.device.read(&buffer, skip, self.slot.len)?),
        }
    }
}

impl<B: Backend> Future for ReadbackHandle<B> {
    type Output = Result<Vec<u8>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.future.is_none() {
            match this.ready() {
                Err(e) => return Poll::Ready(Err(e)),
                Ok(None) => return Poll::Ready(Ok(Vec::new())),
                Ok(Some((buffer, skip))) => {
                    match this.inner.device.read_async(&buffer, skip, this.slot.len) {
                        Ok(f) => this.future = Some(f),
                        Err(e) => return Poll::Ready(Err(e.into())),
                    }
                }
            }
        }
        match this.future.as_mut() {
            Some(f) => Pin::new(f).poll(cx).map(|r| r.map_err(Error::from)),
            None => Poll::Ready(Ok(Vec::new())),
        }
    }
}
