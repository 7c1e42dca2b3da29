//! The thread of one shard incarnation: build its executor pinned to its
//! CPU, run the body the layers above give it, report how it ended.
//!
//! Contract: the body runs as the executor's main task, under
//! `catch_unwind`, with the stall detector and the shard timer running; the
//! thread reports [`Report::Online`] before the body starts and
//! [`Report::Exited`] as its very last act, after `on_exit` ran. `on_exit`
//! runs however the thread ends (the body returned, failed, panicked, or the
//! executor could not start), so per-incarnation tables are closed even when
//! the body's tasks are leaked by a panic.

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::ShardCounters;
use super::control::{Exit, Report, Reporter};
use super::{ShardId, stall, timer};

/// glommio submission queue depth per ring; 3 rings a shard.
const RING_DEPTH: usize = 128;

/// How to build one incarnation's thread and executor.
#[derive(Debug)]
pub(crate) struct ThreadSpec {
    pub(crate) id: ShardId,
    pub(crate) cpu: Option<usize>,
    /// Bytes of the executor's DMA arena (`preflight.rs`).
    pub(crate) io_memory: usize,
    pub(crate) spin_before_park: Duration,
    pub(crate) stall_threshold: Option<Duration>,
    pub(crate) counters: Arc<ShardCounters>,
    pub(crate) reporter: Reporter,
}

/// Starts the thread; `body` is called on it and its future awaited as the
/// shard's main task.
pub(crate) fn spawn<B, Fut>(
    spec: ThreadSpec,
    body: B,
    on_exit: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>>
where
    B: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    let id = spec.id;
    std::thread::Builder::new()
        .name(format!("shard-{id}"))
        .spawn(move || {
            let span = tracing::info_span!("shard", id = id.get());
            let _entered = span.enter();
            let reporter = spec.reporter.clone();
            let exit = run(spec, body);
            on_exit();
            reporter.report(Report::Exited(exit));
        })
}

fn run<B, Fut>(spec: ThreadSpec, body: B) -> Exit
where
    B: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    // tokio's timer for middleware written against it (feature
    // `tokio-timers`); kept for the thread's whole life.
    let _tokio = crate::tokio_timers::enter();
    let placement = match spec.cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    let executor = match LocalExecutorBuilder::new(placement)
        .name(&format!("shard-{}", spec.id))
        .io_memory(spec.io_memory)
        .ring_depth(RING_DEPTH)
        .spin_before_park(spec.spin_before_park)
        .make()
    {
        Ok(executor) => executor,
        Err(e) => return Exit::Failed(executor_error(spec.id, &e.to_string())),
    };
    let ThreadSpec {
        counters,
        stall_threshold,
        reporter,
        ..
    } = spec;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        executor.run(stall::Watched::new(async move {
            stall::start(counters, stall_threshold);
            timer::start();
            reporter.report(Report::Online);
            let result = body().await;
            timer::stop();
            result
        }))
    }));
    match outcome {
        Ok(Ok(())) => Exit::Returned,
        Ok(Err(message)) => Exit::Failed(message),
        Err(payload) => Exit::Panicked(crate::panic::message(payload.as_ref())),
    }
}

fn executor_error(shard: ShardId, detail: &str) -> String {
    let hint = if detail.contains("ENOMEM") || detail.contains("Cannot allocate memory") {
        " (locked memory: raise `ulimit -l` / LimitMEMLOCK=, or run fewer shards)"
    } else {
        ""
    };
    format!("cannot start the executor of shard {shard}: {detail}{hint}")
}
