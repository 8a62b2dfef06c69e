//! The cross-backend conformance suite: cases written once against gantry-core's facade,
//! generic over [`gantry_core::Backend`], run on every backend compiled in.
//!
//! - [`cases::all`] lists the cases; each takes a [`Device<B>`] and returns an [`Outcome`].
//! - [`backends::entries`] lists the backends compiled in; adding a backend is one
//!   `register` line there.
//! - [`Entry::run`] opens each adapter of a backend with validation on, runs every case, and
//!   fails a case on any validation message or uncaptured backend error.
//! - The `conformance` binary prints the table; `cargo xtask conformance` runs it.

pub mod backends;
pub mod cases;
pub mod manager;
pub mod validation;

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use gantry_core::{AdapterInfo, Backend, Device, Error};

/// What a case concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; the note says what was checked (or what the backend cannot do).
    Pass(String),
    /// Not applicable on this adapter, with the reason (printed loudly, never silent).
    Skip(String),
    /// Failed, with the reason.
    Fail(String),
}

/// A case's result as a `Result`: `Err` is a failure message.
pub type CaseResult = Result<String, String>;

/// One conformance case, generic over the backend.
pub struct Case<B: Backend> {
    /// Name, shown in the table.
    pub name: &'static str,
    /// Validation messages this case provokes on purpose (substring match); any other
    /// message fails it.
    pub expected_messages: &'static [&'static str],
    /// Only with `--full` or when named by a filter (slow: 256 MiB).
    pub slow: bool,
    /// The case.
    pub run: fn(&Device<B>) -> Outcome,
}

/// A case's report.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Everything one adapter of one backend produced.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    /// Backend name.
    pub backend: String,
    /// The adapter, when it could be opened.
    pub adapter: AdapterInfo,
    /// Case reports (empty when the device did not open).
    pub cases: Vec<CaseReport>,
    /// Why the device did not open.
    pub open_error: Option<String>,
}

/// Options of a run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Run only cases whose name contains one of these.
    pub filters: Vec<String>,
    /// Include slow cases.
    pub full: bool,
    /// Khronos validation layer (and wgpu's debug checks) on.
    pub validation: bool,
}

impl RunOptions {
    fn selects<B: Backend>(&self, case: &Case<B>) -> bool {
        if self.filters.is_empty() {
            return !case.slow || self.full;
        }
        self.filters.iter().any(|f| case.name.contains(f.as_str()))
    }
}

/// A backend the suite can run: lists adapters and runs the cases on one.
pub trait Entry {
    /// Backend name.
    fn name(&self) -> &'static str;
    /// Adapters this backend finds.
    fn adapters(&self) -> Vec<AdapterInfo>;
    /// Runs the selected cases on adapter `index`.
    fn run(&self, index: usize, options: &RunOptions) -> AdapterReport;
}

/// How to open and inspect one backend; `register` in [`backends`] turns it into an [`Entry`].
pub struct BackendHooks<B: Backend> {
    /// Backend name.
    pub name: &'static str,
    /// Lists adapters (with validation as asked).
    pub list: fn(validation: bool) -> Vec<AdapterInfo>,
    /// Opens adapter `index`.
    pub open: fn(index: usize, validation: bool) -> Result<B, Error>,
    /// Errors the backend saw outside any call that returned them (uncaptured errors).
    pub uncaptured: fn(&B) -> Vec<String>,
    /// Backend-specific cases (e.g. proving that a deliberate violation is caught).
    pub extra_cases: fn() -> Vec<Case<B>>,
}

struct HookEntry<B: Backend>(BackendHooks<B>);

impl<B: Backend> Entry for HookEntry<B> {
    fn name(&self) -> &'static str {
        self.0.name
    }

    fn adapters(&self) -> Vec<AdapterInfo> {
        (self.0.list)(true)
    }

    fn run(&self, index: usize, options: &RunOptions) -> AdapterReport {
        run_hooks(&self.0, index, options)
    }
}

/// Wraps hooks into an [`Entry`].
pub fn entry<B: Backend>(hooks: BackendHooks<B>) -> Box<dyn Entry> {
    Box::new(HookEntry(hooks))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

fn run_hooks<B: Backend>(
    hooks: &BackendHooks<B>,
    index: usize,
    options: &RunOptions,
) -> AdapterReport {
    validation::install(false);
    let _ = validation::take();
    let listed = (hooks.list)(options.validation);
    let fallback = listed.get(index).cloned().unwrap_or(AdapterInfo {
        name: format!("adapter #{index}"),
        backend: hooks.name.to_owned(),
        driver: String::new(),
        device_type: gantry_core::DeviceType::Other,
    });
    let raw = match (hooks.open)(index, options.validation) {
        Ok(raw) => raw,
        Err(e) => {
            return AdapterReport {
                backend: hooks.name.to_owned(),
                adapter: fallback,
                cases: Vec::new(),
                open_error: Some(e.to_string()),
            };
        }
    };
    let device = Device::new(raw);
    let opening_messages = validation::take();
    let mut reports = Vec::new();
    if !opening_messages.is_empty() {
        reports.push(CaseReport {
            name: "open_device".into(),
            outcome: Outcome::Fail(format!(
                "validation errors while opening the device: {}",
                opening_messages.join(" | ")
            )),
            seconds: 0.0,
        });
    }
    let mut cases = cases::all::<B>();
    cases.extend((hooks.extra_cases)());
    for case in cases.iter().filter(|c| options.selects(c)) {
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| (case.run)(&device)));
        let mut outcome = match result {
            Ok(o) => o,
            Err(payload) => Outcome::Fail(format!("panicked: {}", panic_message(&*payload))),
        };
        if let Err(e) = device.wait_idle()
            && !matches!(outcome, Outcome::Fail(_))
        {
            outcome = Outcome::Fail(format!("device unusable after the case: {e}"));
        }
        // Expected messages may come through either channel: wgpu logs them, gantry-vulkan's
        // own messenger reports them through `uncaptured`.
        let (expected, unexpected): (Vec<String>, Vec<String>) = validation::take()
            .into_iter()
            .chain(
                (hooks.uncaptured)(device.raw())
                    .into_iter()
                    .map(|m| format!("uncaptured: {m}")),
            )
            .partition(|m| case.expected_messages.iter().any(|e| m.contains(e)));
        if let (Outcome::Pass(note), Some(first)) = (&mut outcome, expected.first()) {
            let first: String = first.chars().take(160).collect();
            note.push_str(&format!(
                " [{} expected validation message(s), first: {}]",
                expected.len(),
                first.replace('\n', " ")
            ));
        }
        if !unexpected.is_empty() && !matches!(outcome, Outcome::Fail(_)) {
            let shown: Vec<&str> = unexpected.iter().take(3).map(String::as_str).collect();
            outcome = Outcome::Fail(format!(
                "{} validation error(s): {}",
                unexpected.len(),
                shown.join(" | ")
            ));
        }
        reports.push(CaseReport {
            name: case.name.to_owned(),
            outcome,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    AdapterReport {
        backend: hooks.name.to_owned(),
        adapter: device.adapter_info().clone(),
        cases: reports,
        open_error: None,
    }
}
