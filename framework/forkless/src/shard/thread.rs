//! The thread of one shard: build its executor, run the shard function,
//! report how it ended.

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::thread::JoinHandle;

use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};

use super::latch::Latch;
use super::{Shard, ShardId, ShardParts};
use crate::bus::mesh::Registry;
use crate::coordinator::{Command, Event, Exit};
use crate::entry::ShardOutcome;

/// glommio submission queue depth per ring; 3 rings a shard.
const RING_DEPTH: usize = 128;

/// Starts shard `parts.id` on its own thread.
pub(crate) fn spawn<F, Fut>(
    parts: ShardParts,
    io_memory: usize,
    control: flume::Receiver<Command>,
    shard_fn: F,
) -> io::Result<JoinHandle<()>>
where
    F: Fn(Shard) -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: ShardOutcome,
{
    let (id, incarnation) = (parts.id, parts.incarnation);
    std::thread::Builder::new()
        .name(format!("shard-{id}"))
        .spawn(move || {
            let span = tracing::info_span!("shard", id = id.get());
            let _entered = span.enter();
            let events = parts.events.clone();
            let closed = CloseOnExit {
                registry: parts.bus.clone(),
                id,
                incarnation,
            };
            let exit = match run(parts, io_memory, control, shard_fn) {
                Ok(exit) => exit,
                Err(message) => Exit::Failed(message),
            };
            drop(closed);
            let _ = events.send(Event::Exited(id, incarnation, exit));
        })
}

fn run<F, Fut>(
    parts: ShardParts,
    io_memory: usize,
    control: flume::Receiver<Command>,
    shard_fn: F,
) -> Result<Exit, String>
where
    F: Fn(Shard) -> Fut,
    Fut: Future + 'static,
    Fut::Output: ShardOutcome,
{
    // tokio's timer for middleware written against it (feature
    // `tokio-timers`); kept for the thread's whole life.
    let _tokio = crate::tokio_timers::enter();
    let placement = match parts.cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    let executor = LocalExecutorBuilder::new(placement)
        .name(&format!("shard-{}", parts.id))
        .io_memory(io_memory)
        .ring_depth(RING_DEPTH)
        .spin_before_park(parts.config.spin_before_park)
        .make()
        .map_err(|e| executor_error(parts.id, &e.to_string()))?;

    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        executor.run(crate::shard::stall::Watched::new(async move {
            crate::shard::stall::start(parts.counters.clone(), parts.config.stall_threshold);
            crate::http::timer::start();
            let stopping = Latch::new();
            let (adopted_tx, adopted) = flume::unbounded();
            crate::spawn(listen_for_commands(control, stopping.clone(), adopted_tx)).detach();
            let shard = Shard::new(parts, stopping, adopted);
            crate::spawn(crate::bus::serve_jobs(shard.clone())).detach();
            shard.report(Event::Online(shard.id(), shard.incarnation()));
            let result = shard_fn(shard).await.into_result();
            crate::http::timer::stop();
            result
        }))
    }));
    Ok(match outcome {
        Ok(Ok(())) => Exit::Returned,
        Ok(Err(message)) => Exit::Failed(message),
        Err(payload) => Exit::Panicked(crate::panic::message(payload.as_ref())),
    })
}

/// Marks the shard's bus queues closed when its thread ends, however it ends
/// (unless a newer incarnation owns them already): senders see `Closed`
/// from then on and calls waiting on it give up.
struct CloseOnExit {
    registry: Arc<Registry>,
    id: ShardId,
    incarnation: u32,
}

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.registry.retire(self.id, self.incarnation);
    }
}

async fn listen_for_commands(
    control: flume::Receiver<Command>,
    stopping: Latch,
    adopted: flume::Sender<std::net::TcpStream>,
) {
    // A closed channel means the coordinator is gone: stop as well.
    while let Ok(command) = control.recv_async().await {
        match command {
            Command::Stop => stopping.set(),
            // Dropped (closed) when this shard serves no HTTP.
            Command::Adopt(stream) => drop(adopted.send(stream)),
        }
    }
    stopping.set();
}

fn executor_error(shard: ShardId, detail: &str) -> String {
    let hint = if detail.contains("ENOMEM") || detail.contains("Cannot allocate memory") {
        " (locked memory: raise `ulimit -l` / LimitMEMLOCK=, or run fewer shards)"
    } else {
        ""
    };
    format!("cannot start the executor of shard {shard}: {detail}{hint}")
}
