//! The synchronization primitives the bus is built on, swapped for
//! [loom](https://docs.rs/loom)'s under `--cfg loom` so that the model
//! tests (`loom_tests.rs`) check the very code that ships.
//!
//! - Atomics, fences, mutexes and the task wake cell come from here, never
//!   from `std` or `futures` directly, in `ring.rs`, `mesh.rs` and
//!   `registry.rs`.
//! - `Arc` stays `std`'s: it only shares ownership, no protocol depends on
//!   its counts. The rings themselves (`rtrb`) are not modelled: loom checks
//!   the wake protocol around them (see `ring.rs`).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

use std::task::Waker;

/// Holds the waker of the one task parked on something.
#[derive(Debug, Default)]
pub(crate) struct AtomicWaker {
    #[cfg(not(loom))]
    inner: futures::task::AtomicWaker,
    #[cfg(loom)]
    inner: loom::future::AtomicWaker,
}

impl AtomicWaker {
    /// Makes `waker` the one [`wake`](Self::wake) wakes.
    pub(crate) fn register(&self, waker: &Waker) {
        #[cfg(not(loom))]
        self.inner.register(waker);
        #[cfg(loom)]
        self.inner.register_by_ref(waker);
    }

    /// Wakes the registered task, if any.
    pub(crate) fn wake(&self) {
        self.inner.wake();
    }
}

/// Locks `mutex`, also when a panicking holder poisoned it: everything the
/// bus keeps under a lock stays consistent between statements.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
