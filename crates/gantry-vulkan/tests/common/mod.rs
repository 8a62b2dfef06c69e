//! Shared test setup: a validated backend (validation + synchronization validation), and a
//! check, after the backend is dropped, that no validation message of warning level or above
//! was seen during the whole run, teardown included.
#![allow(dead_code)]

use gantry_vulkan::{Error, VulkanBackend, VulkanOptions};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Runs `f` on a fresh validated backend, drops it, then asserts the run was clean.
///
/// No Vulkan loader or device is a loud, named skip (printed), never a silent pass.
pub fn with_backend(name: &str, f: impl FnOnce(&VulkanBackend)) {
    // The scatter dispatch forced on and direct writes off: the device paths are exercised
    // on CPU devices (lavapipe) too.
    with_backend_options(
        name,
        &VulkanOptions::validated()
            .with_scatter(Some(true))
            .with_direct_writes(Some(false)),
        f,
    );
}

/// [`with_backend`] with other options (validation stays on).
pub fn with_backend_options(name: &str, options: &VulkanOptions, f: impl FnOnce(&VulkanBackend)) {
    init_tracing();
    let options = options.clone().with_validation(true);
    let backend = match VulkanBackend::new(&options) {
        Ok(b) => b,
        Err(e @ (Error::Loader { .. } | Error::NoAdapter { .. })) => {
            eprintln!("SKIPPED {name}: no Vulkan device: {e}");
            return;
        }
        Err(e) => panic!("{name}: creating the backend: {e}"),
    };
    let counter = backend.validation_counter();
    f(&backend);
    assert_eq!(backend.live_buffers(), 0, "{name}: buffers leaked");
    drop(backend);
    let report = counter.report();
    assert!(
        report.is_clean(),
        "{name}: {} validation error(s), {} warning(s):\n{}",
        report.errors,
        report.warnings,
        report.messages.join("\n")
    );
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8))
        .collect()
}
