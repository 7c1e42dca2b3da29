//! The body of every shard thread: from the parts the coordinator hands a
//! new incarnation to the app's shard function running on it.
//!
//! Contract: the body spawns the incarnation's framework tasks (the
//! coordinator's commands, `run_on` jobs) before the shard function starts,
//! and closes the incarnation's bus inbox and balance row when the thread
//! ends, however it ends, so senders see `Closed` and no connection is
//! handed to it any more.
//!
//! The shutdown barrier: when the shard function returns after the
//! coordinator said stop, the body reports [`Report::Drained`] and stays
//! pending (so every task the app spawned, its bus receivers and `run_on`
//! jobs keep running) until the coordinator sends [`Command::Release`]
//! (every shard has drained, or a reload replaced this incarnation) or is
//! gone. A shard function that returns on its own, unasked, ends the
//! incarnation at once, as before.

use std::fmt::Display;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use super::Shard;
use super::run_on::serve_jobs;
use crate::bus::ShardBus;
use crate::coordinator::{ShardParts, Starter};
use crate::shard::ShardCore;
use crate::shard::control::{Command, Report};
use crate::shard::latch::Latch;
use crate::shard::thread::{self, ThreadSpec};

/// What a shard function may return: `()` or `Result<(), E: Display>`.
#[diagnostic::on_unimplemented(
    message = "a shard function returns `()` or `Result<(), E>` with `E: Display`, not `{Self}`",
    label = "this return type is not accepted by #[shard_main]"
)]
pub trait ShardOutcome {
    /// `Err` with the error's text when the shard failed.
    fn into_result(self) -> Result<(), String>;
}

impl ShardOutcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> ShardOutcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// The coordinator's way to start an incarnation running `shard_fn`.
pub(crate) fn starter<F, Fut>(shard_fn: F) -> Starter
where
    F: Fn(Shard) -> Fut + Send + Clone + 'static,
    Fut: Future + 'static,
    Fut::Output: ShardOutcome,
{
    Box::new(move |parts: ShardParts| {
        let spec = ThreadSpec {
            id: parts.id,
            cpu: parts.cpu,
            io_memory: parts.io_memory,
            spin_before_park: parts.config.spin_before_park,
            stall_threshold: parts.config.stall_threshold,
            counters: parts.counters.clone(),
            reporter: parts.reporter.clone(),
        };
        let (registry, balance) = (parts.registry.clone(), parts.balance.clone());
        let handoff = parts.handoff.clone();
        let (id, incarnation) = (parts.id, parts.incarnation);
        let shard_fn = shard_fn.clone();
        thread::spawn(
            spec,
            move || run(parts, shard_fn),
            move || {
                registry.retire(id, incarnation);
                balance.retire(id, incarnation);
                handoff.ended(incarnation);
            },
        )
    })
}

async fn run<F, Fut>(parts: ShardParts, shard_fn: F) -> Result<(), String>
where
    F: Fn(Shard) -> Fut,
    Fut: Future + 'static,
    Fut::Output: ShardOutcome,
{
    let ShardParts {
        id,
        incarnation,
        count,
        cpu,
        config,
        io_memory: _,
        listen,
        control,
        reporter,
        counters,
        registry,
        balance,
        handoff,
        predecessor,
        tls,
    } = parts;
    let bus = Rc::new(ShardBus::new(
        id,
        incarnation,
        registry,
        counters.clone(),
        config.bus_spin,
    ));
    let core = Rc::new(ShardCore {
        id,
        incarnation,
        count,
        cpu,
        config: Arc::clone(&config),
        counters,
        stopping: Latch::new(),
        balance,
        reporter,
        handoff,
        predecessor,
        tls,
    });
    let (adopted_tx, adopted) = flume::unbounded();
    let released = Latch::new();
    crate::spawn(listen_for_commands(
        control,
        core.stopping.clone(),
        released.clone(),
        adopted_tx,
    ))
    .detach();
    let stopping = core.stopping.clone();
    let reporter = core.reporter.clone();
    let shard = Shard::new(core, bus, listen, adopted);
    crate::spawn(serve_jobs(shard.clone())).detach();
    let outcome = shard_fn(shard).await.into_result();
    if stopping.is_set() {
        reporter.report(Report::Drained);
        released.wait().await;
    }
    outcome
}

async fn listen_for_commands(
    control: flume::Receiver<Command>,
    stopping: Latch,
    released: Latch,
    adopted: flume::Sender<std::net::TcpStream>,
) {
    // A closed channel means the coordinator is gone: stop (and let go)
    // as well.
    while let Ok(command) = control.recv_async().await {
        match command {
            Command::Stop => stopping.set(),
            Command::Release => released.set(),
            // Dropped (closed) when this shard serves no HTTP.
            Command::Adopt(stream) => drop(adopted.send(stream)),
        }
    }
    stopping.set();
    released.set();
}
