//! tokio's timer on every shard (cargo feature `tokio-timers`, on with
//! `axum`).
//!
//! Shards run on glommio, not tokio, so code that sleeps on tokio's timer
//! (tower-http's and tower's `TimeoutLayer`, `tokio::time::timeout` in a
//! handler) panics there with "there is no reactor running". With this
//! feature each shard thread runs inside the context of one small tokio
//! runtime of the process: one worker thread with only the time driver. A
//! tokio sleep made on a shard registers with that driver; when it fires,
//! the worker wakes the shard's task like any cross-thread waker, and the
//! task goes on running on its shard. `tokio::spawn` from a shard works too:
//! the (`Send`) task runs on that one worker, off the shards.
//!
//! The worker sleeps in the kernel while no timer is due, so an idle process
//! still uses no CPU. Timers on the shard's own clock
//! ([`forkless::time`](crate::time), [`TimeoutLayer`](crate::http::TimeoutLayer))
//! cost no thread hop and stay the cheaper choice in code written for
//! forkless.

#[cfg(feature = "tokio-timers")]
mod enabled {
    use std::sync::OnceLock;

    /// The runtime whose context every shard thread enters; `None` when it
    /// could not start (then tokio sleeps panic as without the feature).
    fn runtime() -> Option<&'static tokio::runtime::Runtime> {
        static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
        RUNTIME
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("forkless-tokio")
                    .enable_time()
                    .build()
                    .map_err(|error| {
                        tracing::error!(%error, "cannot start the tokio timer thread");
                    })
                    .ok()
            })
            .as_ref()
    }

    /// Enters the tokio context on this (shard) thread until the guard drops.
    pub(crate) fn enter() -> Option<tokio::runtime::EnterGuard<'static>> {
        runtime().map(tokio::runtime::Runtime::enter)
    }
}

#[cfg(feature = "tokio-timers")]
pub(crate) use enabled::enter;

/// Without the feature there is nothing to enter.
#[cfg(not(feature = "tokio-timers"))]
pub(crate) fn enter() -> Option<()> {
    None
}
