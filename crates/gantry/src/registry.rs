//! The buffer registry (M3): every buffer the manager created, with its state.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, Weak};

use gantry_core::{Backend, BufferUsage, Device, MemoryLocation, SubmissionIndex};
use gantry_stats::{ProviderSnapshot, StatisticsProvider, Unit};

use crate::buffer::GpuShared;
use crate::transfer::lock;

/// Where a registered buffer is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferLifecycle {
    /// Alive, nothing queued or in flight for it.
    Ready,
    /// Uploads are queued for it (not yet submitted).
    PendingUpload,
    /// Its latest upload was submitted and has not completed yet.
    Uploading(SubmissionIndex),
    /// Destroyed explicitly; the handle still exists.
    Destroyed,
}

/// What the registry knows about one buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferInfo {
    /// The buffer's id ([`gantry_core::Buffer::id`]).
    pub id: u64,
    /// Its label.
    pub label: String,
    /// Its size in bytes (rounded).
    pub size: u64,
    /// Its usage (with automatic flags).
    pub usage: BufferUsage,
    /// Its memory location.
    pub location: MemoryLocation,
    /// Its state.
    pub state: BufferLifecycle,
    /// Uploads queued and not yet submitted.
    pub pending_uploads: u64,
}

/// Every buffer a [`crate::BufferManager`] created and that is still referenced. Entries
/// leave the registry when the last handle of their buffer is dropped. The registry is only
/// locked when buffers are created and queried, never on the transfer path.
pub struct Registry<B: Backend> {
    device: Device<B>,
    entries: Mutex<HashMap<u64, Weak<GpuShared<B>>>>,
}

impl<B: Backend> core::fmt::Debug for Registry<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl<B: Backend> Registry<B> {
    pub(crate) fn new(device: Device<B>) -> Self {
        Self {
            device,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn insert(&self, id: u64, shared: Weak<GpuShared<B>>) {
        let mut entries = lock(&self.entries);
        entries.retain(|_, w| w.strong_count() > 0);
        entries.insert(id, shared);
    }

    /// Every registered buffer still referenced, sorted by id.
    #[must_use]
    pub fn buffers(&self) -> Vec<BufferInfo> {
        let completed = self.device.poll().unwrap_or(SubmissionIndex(u64::MAX));
        let live: Vec<_> = {
            let mut entries = lock(&self.entries);
            entries.retain(|_, w| w.strong_count() > 0);
            entries.values().filter_map(Weak::upgrade).collect()
        };
        let mut out: Vec<BufferInfo> = live
            .iter()
            .map(|s| {
                let b = &s.buffer;
                let queued = s.pending.queued.load(Ordering::Acquire);
                let last = SubmissionIndex(s.pending.last_submission.load(Ordering::Acquire));
                let state = if b.is_destroyed() {
                    BufferLifecycle::Destroyed
                } else if queued > 0 {
                    BufferLifecycle::PendingUpload
                } else if last > completed {
                    BufferLifecycle::Uploading(last)
                } else {
                    BufferLifecycle::Ready
                };
                BufferInfo {
                    id: b.id(),
                    label: b.label().to_owned(),
                    size: b.size(),
                    usage: b.usage(),
                    location: b.location(),
                    state,
                    pending_uploads: queued,
                }
            })
            .collect();
        out.sort_by_key(|i| i.id);
        out
    }

    /// The buffer with `id`, if registered and referenced.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<BufferInfo> {
        self.buffers().into_iter().find(|b| b.id == id)
    }

    /// Buffers with uploads queued or in flight.
    #[must_use]
    pub fn with_pending_uploads(&self) -> Vec<BufferInfo> {
        self.buffers()
            .into_iter()
            .filter(|b| {
                matches!(
                    b.state,
                    BufferLifecycle::PendingUpload | BufferLifecycle::Uploading(_)
                )
            })
            .collect()
    }

    /// Bytes of live (not destroyed) registered buffers at `location`.
    #[must_use]
    pub fn live_bytes(&self, location: MemoryLocation) -> u64 {
        self.buffers()
            .iter()
            .filter(|b| b.location == location && b.state != BufferLifecycle::Destroyed)
            .map(|b| b.size)
            .sum()
    }

    /// Registered buffers still referenced.
    #[must_use]
    pub fn len(&self) -> usize {
        let mut entries = lock(&self.entries);
        entries.retain(|_, w| w.strong_count() > 0);
        entries.len()
    }

    /// Whether no buffer is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> StatisticsProvider for Registry<B> {
    fn name(&self) -> &str {
        "registry"
    }

    fn snapshot(&self) -> ProviderSnapshot {
        let buffers = self.buffers();
        let mut s = ProviderSnapshot::new("registry")
            .counter("buffers", buffers.len() as u64, Unit::Count)
            .counter(
                "pending_uploads",
                buffers.iter().map(|b| b.pending_uploads).sum(),
                Unit::Count,
            );
        for location in MemoryLocation::ALL {
            let bytes = buffers
                .iter()
                .filter(|b| b.location == location && b.state != BufferLifecycle::Destroyed)
                .map(|b| b.size)
                .sum();
            s = s.counter(format!("live_bytes.{location}"), bytes, Unit::Bytes);
        }
        s
    }
}
