//! A shim over the synchronisation primitives, so that the concurrent types of this crate
//! run under [loom](https://docs.rs/loom) when built with `RUSTFLAGS="--cfg loom"`.
//!
//! Under `cfg(loom)` every atomic, `Arc`, `UnsafeCell` and thread-local used by the pool,
//! the SPSC ring, the double and the triple buffer comes from loom, which then explores
//! their interleavings; otherwise they are the `core`/`std` ones at no cost.

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

/// `core::cell::UnsafeCell` with loom's closure API (`with`, `with_mut`), so that code
/// written against loom's checked cell compiles to plain pointer accesses outside loom.
#[cfg(not(loom))]
#[derive(Debug, Default)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// Wraps `value`.
    #[inline]
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a shared pointer to the value. Under loom this records a read.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a mutable pointer to the value. Under loom this records a write.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Spins, then yields, while waiting for another thread; `step` counts the calls so far.
#[inline]
pub(crate) fn backoff(step: &mut u32) {
    #[cfg(not(loom))]
    if *step < 6 {
        for _ in 0..(1u32 << *step) {
            core::hint::spin_loop();
        }
        *step += 1;
        return;
    }
    *step = step.saturating_add(1);
    yield_now();
}
