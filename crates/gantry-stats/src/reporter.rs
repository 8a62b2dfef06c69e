//! The periodic reporter (S5): emits a [`Report`] through `tracing` every N frames or every
//! interval of time, driven by the caller's frame loop or by a thread of its own.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::report::{Collector, Report};

/// The `tracing` target reports are emitted under.
pub const TRACING_TARGET: &str = "gantry::stats";

/// Emits the report of a [`Collector`] through `tracing` (level INFO, target
/// [`TRACING_TARGET`]) when a frame count or a time interval has passed.
///
/// No thread is needed: call [`on_frame`](Self::on_frame) once per frame, or
/// [`poll`](Self::poll) from any loop; both check the clock. [`spawn`](Self::spawn) runs it on
/// a thread of its own instead, stopped cleanly when its handle is dropped.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use gantry_stats::{Collector, EventStats, PeriodicReporter};
///
/// let events = Arc::new(EventStats::new("buffers"));
/// let mut reporter = PeriodicReporter::new(Collector::new().with(events.clone()))
///     .every_frames(60)
///     .every(Duration::from_secs(10));
/// let mut reports = 0;
/// for _frame in 0..180 {
///     if reporter.on_frame().is_some() {
///         reports += 1;
///     }
/// }
/// assert_eq!(reports, 3);
/// ```
#[derive(Debug)]
pub struct PeriodicReporter {
    collector: Collector,
    every_frames: Option<u64>,
    every: Option<Duration>,
    reset_after_report: bool,
    frame: u64,
    last_frame: u64,
    last_time: Instant,
}

impl PeriodicReporter {
    /// A reporter of `collector` with no schedule yet (it reports only when asked, through
    /// [`report_now`](Self::report_now)).
    pub fn new(collector: Collector) -> Self {
        Self {
            collector,
            every_frames: None,
            every: None,
            reset_after_report: false,
            frame: 0,
            last_frame: 0,
            last_time: Instant::now(),
        }
    }

    /// Reports every `frames` frames counted by [`on_frame`](Self::on_frame) (0 turns it off).
    pub fn every_frames(mut self, frames: u64) -> Self {
        self.every_frames = (frames > 0).then_some(frames);
        self
    }

    /// Reports when `interval` has passed since the last report (zero turns it off).
    pub fn every(mut self, interval: Duration) -> Self {
        self.every = (!interval.is_zero()).then_some(interval);
        self
    }

    /// Resets every provider after each report, so each report covers one period.
    pub fn reset_after_report(mut self, yes: bool) -> Self {
        self.reset_after_report = yes;
        self
    }

    /// The collector reported.
    pub fn collector(&self) -> &Collector {
        &self.collector
    }

    /// Frames counted so far.
    pub fn frame(&self) -> u64 {
        self.frame
    }

    /// Counts one frame; reports (and returns the report) when a frame count or the time
    /// interval is due.
    pub fn on_frame(&mut self) -> Option<Report> {
        self.frame += 1;
        let frames_due = self
            .every_frames
            .is_some_and(|n| self.frame - self.last_frame >= n);
        (frames_due || self.time_due()).then(|| self.report_now())
    }

    /// Reports (and returns the report) when the time interval is due; counts no frame.
    pub fn poll(&mut self) -> Option<Report> {
        self.time_due().then(|| self.report_now())
    }

    fn time_due(&self) -> bool {
        self.every.is_some_and(|d| self.last_time.elapsed() >= d)
    }

    /// Reports now, restarting both the frame and the time period.
    pub fn report_now(&mut self) -> Report {
        let report = self.collector.report();
        tracing::info!(
            target: TRACING_TARGET,
            frame = self.frame,
            providers = report.providers.len(),
            "statistics report\n{report}"
        );
        if self.reset_after_report {
            self.collector.reset();
        }
        self.last_frame = self.frame;
        self.last_time = Instant::now();
        report
    }

    /// Runs the reporter on a thread of its own, checking every `tick` whether the time
    /// interval is due (frame counts do not apply: nothing counts frames there). The thread
    /// stops, after a last report, when the returned handle is dropped or
    /// [`stop`](ReporterThread::stop)ped.
    ///
    /// # Errors
    /// When the operating system cannot start the thread.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use gantry_stats::{Collector, PeriodicReporter};
    ///
    /// let thread = PeriodicReporter::new(Collector::new())
    ///     .every(Duration::from_millis(5))
    ///     .spawn(Duration::from_millis(1))
    ///     .unwrap();
    /// std::thread::sleep(Duration::from_millis(20));
    /// let reporter = thread.stop();
    /// assert!(reporter.frame() == 0);
    /// ```
    pub fn spawn(self, tick: Duration) -> std::io::Result<ReporterThread> {
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name("gantry-stats-reporter".to_owned())
            .spawn(move || {
                let mut me = self;
                loop {
                    match stopped.recv_timeout(tick) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            me.poll();
                        }
                        // A stop request, or the handle is gone.
                        _ => {
                            me.report_now();
                            return me;
                        }
                    }
                }
            })?;
        Ok(ReporterThread {
            stop: Some(stop),
            handle: Some(handle),
        })
    }
}

/// A [`PeriodicReporter`] running on its own thread; dropping it stops the thread and waits
/// for it.
#[derive(Debug)]
pub struct ReporterThread {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<thread::JoinHandle<PeriodicReporter>>,
}

impl ReporterThread {
    /// Stops the thread after a last report, and gives the reporter back.
    ///
    /// # Panics
    /// If the reporter thread panicked (a provider's `snapshot` panicked).
    pub fn stop(mut self) -> PeriodicReporter {
        self.shutdown()
            .expect("the reporter thread is joined only once")
    }

    fn shutdown(&mut self) -> Option<PeriodicReporter> {
        drop(self.stop.take());
        let handle = self.handle.take()?;
        match handle.join() {
            Ok(r) => Some(r),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for ReporterThread {
    fn drop(&mut self) {
        if thread::panicking() {
            drop(self.stop.take());
            return;
        }
        let _ = self.shutdown();
    }
}
