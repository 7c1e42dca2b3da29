//! The thread of one shard incarnation: build its executor pinned to its
//! CPU, run the body the layers above give it, report how it ended.
//!
//! Contract: the body runs as the executor's main task, under
//! `catch_unwind`, with the stall detector and the shard timer running; the
//! thread reports [`Report::Online`] before the body starts and
//! [`Report::Exited`] as its very last act, after `on_exit` ran. `on_exit`
//! runs however the thread ends (the body returned, failed, panicked, or the
//! executor could not start), and as soon as a task panics: a panic that
//! escapes a task is contained (`crash.rs`), the body is dropped, and every
//! task still alive is dropped before the executor ends, so nothing the
//! incarnation held outlives it.

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::future::{Either, select};
use glommio::{LocalExecutorBuilder, Placement};

use super::ShardCounters;
use super::control::{Exit, Report, Reporter};
use super::task::{Contained, drop_every_task};
use super::{ShardId, crash, stall, timer};

/// Turns of the executor (1 ms each) a teardown waits for every task to
/// drop its future.
const TEARDOWN_TURNS: usize = 100;

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
            let on_exit = OnExit(std::cell::Cell::new(Some(Box::new(on_exit))));
            let exit = run(spec, body, &on_exit);
            on_exit.run();
            reporter.report(Report::Exited(exit));
        })
}

/// `on_exit`, run once: as soon as the incarnation crashes (so no new work
/// is handed to it while its connections close), or when its thread ends.
struct OnExit(std::cell::Cell<Option<Box<dyn FnOnce()>>>);

impl OnExit {
    fn run(&self) {
        if let Some(on_exit) = self.0.take() {
            on_exit();
        }
    }
}

fn run<B, Fut>(spec: ThreadSpec, body: B, on_exit: &OnExit) -> Exit
where
    B: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    // The tokio runtime's context for tokio clients and middleware (feature
    // `tokio`); kept for the thread's whole life.
    let _tokio = super::tokio_rt::enter();
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
            let crashed = crash::arm();
            reporter.report(Report::Online);
            let body = Contained::new(body());
            // The latch first: once it is set, the body is not polled again
            // (it would accept connections the teardown then drops).
            let ended = match select(pin!(crashed.wait()), pin!(body)).await {
                Either::Right((Some(Ok(())), _)) => Ok(Exit::Returned),
                Either::Right((Some(Err(message)), _)) => Ok(Exit::Failed(message)),
                // The body is dropped here: it accepts no more (what waits
                // in the listen queue stays there for the next incarnation).
                Either::Right((None, _)) | Either::Left(_) => Err(()),
            };
            let exit = ended.unwrap_or_else(|()| {
                Exit::Panicked(crash::take_why().unwrap_or_else(|| "a task panicked".into()))
            });
            if matches!(exit, Exit::Panicked(_)) {
                // Closed to senders and hand-offs at once, before it drains.
                on_exit.run();
                // Tasks already woken get a last turn to finish what they
                // were writing before they are dropped.
                glommio::timer::sleep(crash::CRASH_GRACE).await;
            }
            // Whatever the incarnation still runs (its connections, the
            // app's detached tasks) ends here, with what it holds.
            drop_every_task(TEARDOWN_TURNS).await;
            timer::stop();
            exit
        }))
    }));
    // Every task was dropped above (glommio itself would leak them).
    drop(executor);
    match outcome {
        Ok(exit) => exit,
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
