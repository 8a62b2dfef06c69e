//! Captures validation messages: a `log` logger that keeps every error-level record from the
//! graphics stack (wgpu-hal's Vulkan debug messenger logs the Khronos validation layer's
//! errors at `Error` under `wgpu_hal::vulkan::...`). Backends that are not wgpu report their
//! validation errors the same way: `log::error!` with a target containing `validation`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

struct Capture;

static MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static ECHO: AtomicBool = AtomicBool::new(false);
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn is_validation(target: &str) -> bool {
    target.starts_with("wgpu_hal") || target.contains("validation")
}

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Error && is_validation(record.target()) {
            let text = record.args().to_string();
            let mut messages = MESSAGES.lock().unwrap_or_else(PoisonError::into_inner);
            // wgpu-hal logs a message's objects, queues and command buffers as separate
            // records starting with a tab: they belong to the message before.
            match messages.last_mut() {
                Some(last) if text.starts_with('\t') => {
                    last.push(' ');
                    last.push_str(text.trim());
                }
                _ => messages.push(format!("[{}] {text}", record.target())),
            }
        } else if ECHO.load(Ordering::Relaxed) && record.level() <= log::Level::Warn {
            eprintln!("[{} {}] {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: Capture = Capture;

/// Installs the capturing logger (once per process). `echo` prints other warnings and
/// errors to stderr.
pub fn install(echo: bool) {
    ECHO.store(echo, Ordering::Relaxed);
    if !INSTALLED.swap(true, Ordering::SeqCst) && log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// The validation errors captured since the last call, and clears them.
pub fn take() -> Vec<String> {
    std::mem::take(&mut *MESSAGES.lock().unwrap_or_else(PoisonError::into_inner))
}
