//! A size-class pool of GPU buffers: acquiring a pooled buffer instead of creating one.

use std::collections::HashMap;
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

type Key = (u64, u32, MemoryLocation);

/// A multiply-xor hasher for the pool's small integer keys (SipHash costs more than the rest
/// of an acquire).
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl core::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_isize(&mut self, v: isize) {
        self.write_u64(v as u64);
    }
}

type FreeLists<B> = HashMap<Key, Vec<Buffer<B>>, core::hash::BuildHasherDefault<KeyHasher>>;

struct PoolInner<B: Backend> {
    device: Device<B>,
    free: Mutex<FreeLists<B>>,
    max_per_class: usize,
    /// The latest completed submission seen (refreshed by polling when needed).
    completed: AtomicU64,
    hits: Counter,
    misses: Counter,
    busy_skips: Counter,
    returned: Counter,
    discarded: Counter,
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
                free: Mutex::new(FreeLists::default()),
                max_per_class,
                completed: AtomicU64::new(0),
                hits: Counter::new(),
                misses: Counter::new(),
                busy_skips: Counter::new(),
                returned: Counter::new(),
                discarded: Counter::new(),
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
        let class = class_of(size).ok_or(Error::Core(gantry_core::Error::SizeTooLarge {
            size,
            max: inner.device.limits().max_buffer_size,
        }))?;
        let key = (class, usage.bits(), location);
        let mut refreshed = false;
        loop {
            let completed = SubmissionIndex(inner.completed.load(Ordering::Acquire));
            let mut busy = false;
            let found = {
                let mut free = lock(&inner.free);
                match free.get_mut(&key) {
                    Some(list) => {
                        // Drop buffers destroyed or mapped while on loan, take the first idle.
                        let mut pos = None;
                        let mut i = 0;
                        while i < list.len() {
                            match list[i].reusable_after() {
                                None => {
                                    list.swap_remove(i);
                                    inner.discarded.inc();
                                }
                                Some(last) if last <= completed => {
                                    pos = Some(i);
                                    break;
                                }
                                Some(_) => i += 1,
                            }
                        }
                        busy = pos.is_none() && !list.is_empty();
                        pos.map(|p| list.swap_remove(p))
                    }
                    None => None,
                }
            };
            if let Some(buffer) = found {
                inner.hits.inc();
                return Ok(PooledBuffer {
                    buffer: Some(buffer),
                    pool: Arc::clone(inner),
                    key,
                    size,
                });
            }
            if busy && !refreshed {
                refreshed = true;
                let now = inner.device.poll()?;
                inner.completed.fetch_max(now.0, Ordering::AcqRel);
                continue;
            }
            if busy {
                inner.busy_skips.inc();
            }
            break;
        }
        inner.misses.inc();
        let buffer = inner.device.create_buffer(
            &BufferDesc::new(class, usage, location).with_label("gantry pooled buffer"),
        )?;
        Ok(PooledBuffer {
            buffer: Some(buffer),
            pool: Arc::clone(inner),
            key,
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
        lock(&self.inner.free).values().map(Vec::len).sum()
    }

    /// Drops every free buffer (their memory is freed once the GPU is done with them).
    pub fn clear(&self) {
        lock(&self.inner.free).clear();
    }
}

impl<B: Backend> StatisticsProvider for BufferPool<B> {
    fn name(&self) -> &str {
        "pool"
    }
    fn snapshot(&self) -> ProviderSnapshot {
        let i = &self.inner;
        let (n, bytes) = {
            let free = lock(&i.free);
            (
                free.values().map(Vec::len).sum::<usize>() as u64,
                free.iter().map(|(k, v)| k.0 * v.len() as u64).sum::<u64>(),
            )
        };
        ProviderSnapshot::new("pool")
            .counter("hits", i.hits.get(), Unit::Count)
            .counter("misses", i.misses.get(), Unit::Count)
            .counter("busy_skips", i.busy_skips.get(), Unit::Count)
            .counter("returned", i.returned.get(), Unit::Count)
            .counter("discarded", i.discarded.get(), Unit::Count)
            .counter("free_buffers", n, Unit::Count)
            .counter("free_bytes", bytes, Unit::Bytes)
    }
    fn reset(&self) {
        let i = &self.inner;
        i.hits.reset();
        i.misses.reset();
        i.busy_skips.reset();
        i.returned.reset();
        i.discarded.reset();
    }
}

/// A buffer on loan from a [`BufferPool`]; it goes back to the pool when dropped (and is
/// handed out again only after the GPU is done with it).
pub struct PooledBuffer<B: Backend> {
    buffer: Option<Buffer<B>>,
    pool: Arc<PoolInner<B>>,
    key: Key,
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
            .min(usize::try_from((256u64 << 20) / self.key.0).unwrap_or(usize::MAX))
            .max(1);
        let mut free = lock(&self.pool.free);
        let list = free.entry(self.key).or_default();
        if list.len() < cap {
            list.push(buffer);
            self.pool.returned.inc();
        } else {
            self.pool.discarded.inc();
        }
    }
}
