//! A size-class pool of GPU buffers: acquiring a pooled buffer instead of creating one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gantry_core::{
    Backend, Buffer, BufferDesc, BufferUsage, Device, MemoryLocation, SubmissionIndex,
};
use gantry_stats::{Counter, ProviderSnapshot, StatisticsProvider, Unit};

use crate::error::{Error, Result};
use crate::transfer::lock;

/// The smallest size class.
const MIN_CLASS: u64 = 256;
/// Size classes are powers of two, indexed by their exponent (0..64).
const CLASSES: usize = 64;

/// The free buffers of one size class with one usage and location.
struct Slot<B: Backend> {
    usage: u32,
    location: MemoryLocation,
    list: Vec<Buffer<B>>,
}

/// Everything behind the pool's one lock: free lists per size class (a `Vec` indexed by
/// the class's exponent, each a short list of (usage, location) slots, so no hashing), and
/// the counters bumped while the lock is held anyway (plain integers, no atomics).
struct FreeLists<B: Backend> {
    classes: Vec<Vec<Slot<B>>>,
    hits: u64,
    returned: u64,
    discarded: u64,
}

impl<B: Backend> FreeLists<B> {
    fn new() -> Self {
        Self {
            classes: (0..CLASSES).map(|_| Vec::new()).collect(),
            hits: 0,
            returned: 0,
            discarded: 0,
        }
    }

    /// The index of the slot for `usage` at `location` in class `exp`, added if missing.
    fn slot(&mut self, exp: usize, usage: u32, location: MemoryLocation) -> usize {
        let slots = &mut self.classes[exp];
        if let Some(i) = slots
            .iter()
            .position(|s| s.usage == usage && s.location == location)
        {
            return i;
        }
        slots.push(Slot {
            usage,
            location,
            list: Vec::new(),
        });
        slots.len() - 1
    }

    fn slots(&self) -> impl Iterator<Item = (u64, &Slot<B>)> {
        self.classes
            .iter()
            .enumerate()
            .flat_map(|(exp, slots)| slots.iter().map(move |s| (1u64 << exp, s)))
    }
}

struct PoolInner<B: Backend> {
    device: Device<B>,
    free: Mutex<FreeLists<B>>,
    max_per_class: usize,
    /// The latest completed submission seen (refreshed by polling when needed).
    completed: AtomicU64,
    misses: Counter,
    busy_skips: Counter,
}

/// A pool of buffers in power-of-two size classes (at least 256 bytes), per usage and
/// location; each class keeps at most `max_per_class` free buffers and at most 256 MiB
/// (but always one). A buffer returned to the pool is handed out again only once every submission
/// that used it has completed (as gantry-core tracks them), so nothing the GPU still reads
/// or writes is reused early. Cheap to clone.
pub struct BufferPool<B: Backend> {
    inner: Arc<PoolInner<B>>,
}

impl<B: Backend> Clone for BufferPool<B> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<B: Backend> core::fmt::Debug for BufferPool<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BufferPool")
            .field("max_per_class", &self.inner.max_per_class)
            .finish_non_exhaustive()
    }
}

/// The size class of `size`: the next power of two, at least 256 bytes.
fn class_of(size: u64) -> Option<u64> {
    size.max(MIN_CLASS).checked_next_power_of_two()
}

impl<B: Backend> BufferPool<B> {
    /// A pool keeping at most `max_per_class` free buffers per class.
    #[must_use]
    pub fn new(device: Device<B>, max_per_class: usize) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                device,
                free: Mutex::new(FreeLists::new()),
                max_per_class,
                completed: AtomicU64::new(0),
                misses: Counter::new(),
                busy_skips: Counter::new(),
            }),
        }
    }

    /// A buffer of at least `size` bytes with `usage` at `location`: a free pooled buffer
    /// the GPU is done with, or a new one.
    ///
    /// # Errors
    /// As [`Device::create_buffer`]; [`gantry_core::Error::SizeTooLarge`] when the size class
    /// overflows.
    pub fn acquire(
        &self,
        size: u64,
        usage: BufferUsage,
        location: MemoryLocation,
    ) -> Result<PooledBuffer<B>> {
        let inner = &self.inner;
        if size == 0 {
            return Err(gantry_core::Error::ZeroSize.into());
        }
        let class = class_of(size).ok_or_else(|| {
            Error::Core(gantry_core::Error::SizeTooLarge {
                size,
                max: inner.device.limits().max_buffer_size,
            })
        })?;
        let exp = class.trailing_zeros() as usize;
        let mut refreshed = false;
        let slot = loop {
            let completed = SubmissionIndex(inner.completed.load(Ordering::Acquire));
            let mut free = lock(&inner.free);
            let slot = free.slot(exp, usage.bits(), location);
            let list = &mut free.classes[exp][slot].list;
            // Drop buffers destroyed or mapped while on loan, take the first idle one;
            // `reusable_after` (one lock) is asked once per buffer looked at.
            let mut found = None;
            let mut dropped = 0;
            let mut i = 0;
            while i < list.len() {
                match list[i].reusable_after() {
                    None => {
                        list.swap_remove(i);
                        dropped += 1;
                    }
                    Some(last) if last <= completed => {
                        found = Some(list.swap_remove(i));
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            let busy = found.is_none() && !list.is_empty();
            free.discarded += dropped;
            if let Some(buffer) = found {
                free.hits += 1;
                drop(free);
                return Ok(PooledBuffer {
                    buffer: Some(buffer),
                    pool: Arc::clone(inner),
                    exp: exp as u8,
                    slot: slot as u32,
                    size,
                });
            }
            drop(free);
            if busy && !refreshed {
                refreshed = true;
                let now = inner.device.poll()?;
                inner.completed.fetch_max(now.0, Ordering::AcqRel);
                continue;
            }
            if busy {
                inner.busy_skips.inc();
            }
            break slot;
        };
        inner.misses.inc();
        let buffer = inner.device.create_buffer(
            &BufferDesc::new(class, usage, location).with_label("gantry pooled buffer"),
        )?;
        Ok(PooledBuffer {
            buffer: Some(buffer),
            pool: Arc::clone(inner),
            exp: exp as u8,
            slot: slot as u32,
            size,
        })
    }

    /// Records that `completed` has completed (the manager calls this when it polls), so
    /// acquiring need not poll.
    pub fn note_completed(&self, completed: SubmissionIndex) {
        self.inner
            .completed
            .fetch_max(completed.0, Ordering::AcqRel);
    }

    /// Free buffers held now.
    #[must_use]
    pub fn free_buffers(&self) -> usize {
        lock(&self.inner.free)
            .slots()
            .map(|(_, s)| s.list.len())
            .sum()
    }

    /// Drops every free buffer (their memory is freed once the GPU is done with them).
    pub fn clear(&self) {
        let mut free = lock(&self.inner.free);
        for slot in free.classes.iter_mut().flatten() {
            slot.list.clear();
        }
    }
}

impl<B: Backend> StatisticsProvider for BufferPool<B> {
    fn name(&self) -> &str {
        "pool"
    }
    fn snapshot(&self) -> ProviderSnapshot {
        let i = &self.inner;
        let (n, bytes, hits, returned, discarded) = {
            let free = lock(&i.free);
            (
                free.slots().map(|(_, s)| s.list.len()).sum::<usize>() as u64,
                free.slots()
                    .map(|(class, s)| class * s.list.len() as u64)
                    .sum::<u64>(),
                free.hits,
                free.returned,
                free.discarded,
            )
        };
        ProviderSnapshot::new("pool")
            .counter("hits", hits, Unit::Count)
            .counter("misses", i.misses.get(), Unit::Count)
            .counter("busy_skips", i.busy_skips.get(), Unit::Count)
            .counter("returned", returned, Unit::Count)
            .counter("discarded", discarded, Unit::Count)
            .counter("free_buffers", n, Unit::Count)
            .counter("free_bytes", bytes, Unit::Bytes)
    }
    fn reset(&self) {
        let i = &self.inner;
        {
            let mut free = lock(&i.free);
            free.hits = 0;
            free.returned = 0;
            free.discarded = 0;
        }
        i.misses.reset();
        i.busy_skips.reset();
    }
}

/// A buffer on loan from a [`BufferPool`]; it goes back to the pool when dropped (and is
/// handed out again only after the GPU is done with it).
pub struct PooledBuffer<B: Backend> {
    buffer: Option<Buffer<B>>,
    pool: Arc<PoolInner<B>>,
    /// The size class's exponent and the index of its (usage, location) slot.
    exp: u8,
    slot: u32,
    size: u64,
}

impl<B: Backend> core::fmt::Debug for PooledBuffer<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PooledBuffer")
            .field("buffer", &self.buffer)
            .field("requested", &self.size)
            .finish()
    }
}

impl<B: Backend> PooledBuffer<B> {
    /// The pooled buffer (its size is the size class, at least the size asked for).
    ///
    /// # Panics
    /// Never: the buffer is only taken out on drop.
    #[must_use]
    pub fn buffer(&self) -> &Buffer<B> {
        self.buffer
            .as_ref()
            .expect("a pooled buffer is only taken out when dropped")
    }
    /// The size asked for.
    #[must_use]
    pub fn requested_size(&self) -> u64 {
        self.size
    }
}

impl<B: Backend> core::ops::Deref for PooledBuffer<B> {
    type Target = Buffer<B>;
    fn deref(&self) -> &Buffer<B> {
        self.buffer()
    }
}

impl<B: Backend> Drop for PooledBuffer<B> {
    fn drop(&mut self) {
        let Some(buffer) = self.buffer.take() else {
            return;
        };
        // Destroyed or mapped buffers are dropped from the free list at the next acquire.
        // Large classes keep fewer free buffers: at most 256 MiB of free memory per class.
        let cap = self
            .pool
            .max_per_class
            .min(usize::try_from((256u64 << 20) >> self.exp).unwrap_or(usize::MAX))
            .max(1);
        let mut free = lock(&self.pool.free);
        let list = &mut free.classes[usize::from(self.exp)][self.slot as usize].list;
        if list.len() < cap {
            list.push(buffer);
            free.returned += 1;
        } else {
            free.discarded += 1;
        }
    }
}
