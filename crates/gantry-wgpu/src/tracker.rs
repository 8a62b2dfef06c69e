//! Submission tracking: gantry's indices over wgpu's, completion through
//! `queue.on_submitted_work_done`, and completion callbacks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use gantry_core::{SubmissionIndex, SubmittedWorkDoneCallback};

#[derive(Default)]
struct Submitted {
    last: u64,
    /// gantry index -> wgpu index, for submissions not known to be complete.
    pending: VecDeque<(u64, wgpu::SubmissionIndex)>,
}

type Callbacks = Mutex<BTreeMap<u64, Vec<SubmittedWorkDoneCallback>>>;

#[derive(Default)]
pub(crate) struct Tracker {
    submitted: Mutex<Submitted>,
    completed: Arc<AtomicU64>,
    callbacks: Arc<Callbacks>,
    /// Callbacks whose submission completed, to run by the next `run_ready` (outside wgpu's
    /// callbacks and outside our locks, so a callback may submit or poll).
    ready: Arc<Mutex<Vec<SubmittedWorkDoneCallback>>>,
}

/// Runs inside wgpu's `on_submitted_work_done`: records completion and queues due callbacks.
fn complete(
    completed: &AtomicU64,
    callbacks: &Callbacks,
    ready: &Mutex<Vec<SubmittedWorkDoneCallback>>,
    index: u64,
) {
    completed.fetch_max(index, Ordering::SeqCst);
    let mut map = callbacks.lock().unwrap_or_else(PoisonError::into_inner);
    let later = map.split_off(&(index + 1));
    let due = std::mem::replace(&mut *map, later);
    ready
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(due.into_values().flatten());
}

impl Tracker {
    /// Submits under the lock, so indices follow wgpu's submission order.
    pub(crate) fn submit(
        &self,
        queue: &wgpu::Queue,
        commands: Vec<wgpu::CommandBuffer>,
    ) -> SubmissionIndex {
        let mut submitted = self
            .submitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let wgpu_index = queue.submit(commands);
        submitted.last += 1;
        let index = submitted.last;
        let completed = Arc::clone(&self.completed);
        let callbacks = Arc::clone(&self.callbacks);
        let ready = Arc::clone(&self.ready);
        queue.on_submitted_work_done(move || complete(&completed, &callbacks, &ready, index));
        let done = self.completed.load(Ordering::SeqCst);
        while submitted.pending.front().is_some_and(|(i, _)| *i <= done) {
            submitted.pending.pop_front();
        }
        submitted.pending.push_back((index, wgpu_index));
        SubmissionIndex(index)
    }

    pub(crate) fn last_submitted(&self) -> SubmissionIndex {
        SubmissionIndex(
            self.submitted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last,
        )
    }

    pub(crate) fn completed(&self) -> SubmissionIndex {
        SubmissionIndex(self.completed.load(Ordering::SeqCst))
    }

    /// wgpu's index for `index` (or the latest submission, if `index` is later); `None` when
    /// it is already complete.
    pub(crate) fn wgpu_index(&self, index: SubmissionIndex) -> Option<wgpu::SubmissionIndex> {
        let submitted = self
            .submitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let wanted = index.0.min(submitted.last);
        if wanted <= self.completed.load(Ordering::SeqCst) {
            return None;
        }
        submitted
            .pending
            .iter()
            .find(|(i, _)| *i >= wanted)
            .map(|(_, w)| w.clone())
    }

    /// Runs the callbacks of completed submissions, on the calling thread.
    pub(crate) fn run_ready(&self) {
        loop {
            let due =
                std::mem::take(&mut *self.ready.lock().unwrap_or_else(PoisonError::into_inner));
            if due.is_empty() {
                return;
            }
            for callback in due {
                callback();
            }
        }
    }

    pub(crate) fn on_done(&self, index: SubmissionIndex, callback: SubmittedWorkDoneCallback) {
        let run_now = {
            let mut map = self
                .callbacks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if index.0 <= self.completed.load(Ordering::SeqCst) {
                Some(callback)
            } else {
                map.entry(index.0).or_default().push(callback);
                None
            }
        };
        if let Some(callback) = run_now {
            callback();
        }
    }
}
