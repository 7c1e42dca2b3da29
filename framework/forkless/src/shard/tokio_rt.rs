//! The tokio ecosystem on every shard (cargo feature `tokio`; `axum` turns
//! it on, `tokio-timers` is its old name).
//!
//! Shards run on glommio, not tokio, so a tokio client (tokio-postgres,
//! redis, reqwest, hyper-util's client), `tokio::spawn`, `spawn_blocking` or
//! a tokio sleep panics there with "there is no reactor running". With this
//! feature every shard thread runs inside the context of one tokio
//! multi-thread runtime of the process, with its I/O and time drivers on:
//!
//! - **Awaited on the shard.** A tokio socket or sleep made on a shard
//!   registers with that runtime's drivers. Reads, writes and the code
//!   around them run on the shard, in the task that awaits them; when a
//!   socket becomes ready or a timer fires, the runtime's driver wakes the
//!   shard's task through glommio's cross-thread waker (a queue push, and an
//!   `eventfd` write only if the shard sleeps), and the task goes on on its
//!   shard. `!Send` code may await tokio clients.
//! - **Spawned off the shard.** `tokio::spawn` runs its (`Send`) task on the
//!   runtime's worker threads, `spawn_blocking` on its blocking pool: never
//!   on a shard.
//! - **Sized from the process's CPU budget.** One worker per CPU the process
//!   may use (the count `--shards max` starts: affinity mask and cgroup
//!   quota, `shard::cpus`), not `available_parallelism()`, which on a pinned
//!   shard thread says 1. Every worker and blocking thread first resets its
//!   affinity to every CPU of that budget: threads inherit the affinity of
//!   the thread that starts them, which is often a pinned shard.
//! - **One per process, for its whole life.** The runtime starts with the
//!   first shard and is never torn down with a shard: an incarnation that
//!   crashes or is reloaded leaves no thread behind, and the next one enters
//!   the same runtime. Idle, its threads sleep in the kernel and cost no CPU.
//!   At exit the threads end with the process: tasks still spawned on it
//!   are not awaited (await them in the shard function if they matter).
//!
//! Timers on the shard's own clock ([`forkless::time`](crate::time),
//! [`TimeoutLayer`](crate::http::TimeoutLayer)) cost no thread hop and stay
//! the cheaper choice in code written for forkless.

#[cfg(feature = "tokio")]
mod enabled {
    use std::sync::OnceLock;

    use crate::shard::cpus;

    /// The runtime whose context every shard thread enters; `None` when it
    /// could not start (then tokio clients panic as without the feature).
    fn runtime() -> Option<&'static tokio::runtime::Runtime> {
        static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
        RUNTIME.get_or_init(build).as_ref()
    }

    fn build() -> Option<tokio::runtime::Runtime> {
        // The process's budget, not this (likely pinned) thread's one CPU.
        let budget = cpus::detect_process();
        let cpus = budget.cpus.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(budget.max_shards())
            .thread_name("forkless-tokio")
            .on_thread_start(move || {
                if let Err(error) = cpus::set_thread_affinity(&cpus) {
                    tracing::debug!(%error, "tokio thread keeps the affinity it inherited");
                }
            })
            .enable_all()
            .build()
            .map_err(|error| tracing::error!(%error, "cannot start the tokio runtime"))
            .ok()
    }

    /// Enters the tokio context on this (shard) thread until the guard drops.
    pub(crate) fn enter() -> Option<tokio::runtime::EnterGuard<'static>> {
        runtime().map(tokio::runtime::Runtime::enter)
    }
}

#[cfg(feature = "tokio")]
pub(crate) use enabled::enter;

/// Without the feature there is nothing to enter.
#[cfg(not(feature = "tokio"))]
pub(crate) fn enter() -> Option<()> {
    None
}
