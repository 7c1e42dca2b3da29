//! # forkless
//!
//! Thread-per-core Rust servers in one process: one **shard** per core (a
//! single-threaded glommio executor pinned to its CPU, with its own
//! SO_REUSEPORT listener on the shared port), and a **coordinator** that
//! starts them, owns the signals and runs graceful shutdown.
//!
//! ```no_run
//! use forkless::prelude::*;
//!
//! #[shard_main(listen = "127.0.0.1:8080")]
//! async fn main(shard: Shard) -> Result<(), forkless::Error> {
//!     shard.serve(|_req: Request| async { "Hello World\n" }).await
//! }
//! ```
//!
//! An axum `Router` (or any tower `Service`) runs on every shard just as
//! well, with [`Shard::serve_tower`]; see [`http`] and the cargo feature
//! `axum` (axum extractors for the shard's id and context).
//!
//! The layers, bottom up: [`shard`](Shard) (executor per core, placement,
//! listener) -> coordinator (lifecycle, signals, shutdown) -> [`http`]
//! (hyper on glommio). See `ARCHITECTURE.md` for the model and its invariants.

#![warn(missing_docs)]

mod admin;
mod app;
pub mod bus;
mod cli;
mod clock;
mod config;
mod coordinator;
mod entry;
mod error;
pub mod http;
mod log;
mod offload;
mod panic;
mod rate_limit;
mod runtime;
mod shard;
pub mod time;
mod tls;
mod top;

pub use app::Shard;
pub use bus::CoordinatorBus;
pub use cli::CommandLine;
pub use config::RestartPolicy;
pub use config::{AccessLog, Config, DEFAULT_LISTEN, LogFormat, Shards, TlsFiles};
pub use coordinator::{Coordinator, ExitReason, LifecycleEvent, LifecycleEvents, LifecycleKind};
pub use entry::EXIT_FORCED;
pub use error::Error;
pub use offload::offload;
pub use runtime::Runtime;
pub use shard::{CounterSnapshot, JoinHandle, ShardCounters, ShardId, spawn};

/// Marks the `async fn` every shard runs and generates `main`.
///
/// The function takes the [`Shard`] and returns `()` or `Result<(), E>`
/// where `E: Display`. The generated `main` parses the standard command line
/// (`--shards`, `--listen`, `--log-format`, ..., `--help`; each also from
/// a `FORKLESS_*` environment variable or a `--config` file), starts
/// logging, runs the function on every shard and exits with its outcome.
///
/// Options: `listen = "IP:PORT"` (default listen address), `shards = N`
/// (default shard count instead of one per CPU) and `args = T` (the app's
/// own flags, a `clap::Args` type, read on every shard with
/// [`Shard::args`]). See `docs/command-line.md`.
///
/// ```no_run
/// use forkless::prelude::*;
///
/// #[shard_main(listen = "127.0.0.1:3000", shards = 2)]
/// async fn main(shard: Shard) -> Result<(), forkless::Error> {
///     shard.serve(|_req: Request| async { "hi\n" }).await
/// }
/// ```
pub use forkless_macros::shard_main;

/// The names most apps need.
pub mod prelude {
    pub use crate::bus::{Bus, Origin};
    pub use crate::http::{IntoResponse, Request, Response, StatusCode};
    pub use crate::{Shard, ShardId, shard_main};
}

#[doc(hidden)]
pub mod __private {
    pub use crate::app::ShardOutcome;
    pub use crate::cli::{AppArgsSpec, MainOptions};
    pub use crate::entry::run_main;
}

/// glommio registers the process for private expedited `membarrier` on
/// first use. In a process with one thread that is one system call; with
/// threads alive the kernel waits for an RCU grace period first, which was
/// seen to take seconds on a loaded machine (a binary upgrade's new process
/// beside the loaded old one, tests running shards inside a test harness).
/// So every binary linking forkless registers before `main`, while it still
/// has one thread.
#[used]
#[unsafe(link_section = ".init_array")]
static MEMBARRIER_BEFORE_MAIN: extern "C" fn() = membarrier_before_main;

extern "C" fn membarrier_before_main() {
    glommio::early_init();
}

/// The README's example, compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The guides' examples, compiled as doctests so they cannot rot (they use
/// axum and its extractors, so only with the `axum` feature, as a workspace
/// build has it).
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../../../docs/getting-started.md")]
pub struct GettingStartedDoctests;

/// See [`GettingStartedDoctests`].
#[cfg(doctest)]
#[doc = include_str!("../../../docs/cpu-heavy-work.md")]
pub struct CpuHeavyWorkDoctests;

/// See [`GettingStartedDoctests`].
#[cfg(doctest)]
#[doc = include_str!("../../../docs/websockets.md")]
pub struct WebSocketsDoctests;

/// See [`GettingStartedDoctests`].
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../../../docs/from-node-cluster.md")]
pub struct FromNodeClusterDoctests;
