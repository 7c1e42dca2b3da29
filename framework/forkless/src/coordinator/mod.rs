//! The coordinator: starts the shards, owns the signals, and runs shutdown.
//!
//! It runs on the thread that called [`Runtime::run`](crate::Runtime::run)
//! and never does I/O for requests. Shards tell it what happens to them
//! ([`Event`]); it tells them what to do ([`Command`]). One event loop, one
//! channel in: signals, shard starts and shard exits are handled in the order
//! they arrive.

mod handle;
mod signals;

pub use handle::{Coordinator, CoordinatorBus};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::bus::mesh::Registry;
use crate::entry::ShardOutcome;
use crate::error::ErrorKind;
use crate::shard::{self, ListenSpec, Shard, ShardCounters, ShardId, ShardParts};
use crate::{Config, Error, Shards};

/// What a shard (or the signal thread) tells the coordinator.
#[derive(Debug)]
pub(crate) enum Event {
    /// The shard's listeners accept connections.
    Serving(ShardId),
    /// The shard's thread is about to end.
    Exited(ShardId, Exit),
    /// A shutdown signal arrived.
    Signal(i32),
    /// The app asked for a graceful shutdown ([`Coordinator::shutdown`]).
    Shutdown,
}

/// How a shard ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// Its function returned `Ok`/`()`.
    Returned,
    /// Its function returned an error, or its executor could not start.
    Failed(String),
    /// Its thread panicked outside any request guard.
    Panicked(String),
}

/// What the coordinator tells a shard.
#[derive(Debug)]
pub(crate) enum Command {
    /// Begin a graceful shutdown.
    Stop,
}

struct ShardHandle {
    control: flume::Sender<Command>,
    thread: Option<JoinHandle<()>>,
    serving: bool,
    exited: bool,
}

/// App code that runs on its own thread beside the shards.
pub(crate) type AppCoordinator = Box<dyn FnOnce(Coordinator) + Send>;

/// Runs the whole process: returns when every shard has ended.
pub(crate) fn run<F, Fut>(
    config: Config,
    shard_fn: F,
    app: Option<AppCoordinator>,
) -> Result<(), Error>
where
    F: Fn(Shard) -> Fut + Send + Clone + 'static,
    Fut: Future + 'static,
    Fut::Output: ShardOutcome,
{
    let started = Instant::now();
    shard::preflight::check_io_uring().map_err(preflight_error)?;
    let budget = shard::cpus::detect();
    let count = match config.shards {
        Shards::Max => budget.max_shards(),
        Shards::Count(n) => n,
    };
    let placement = if config.pin {
        budget.placement(count)
    } else {
        vec![None; count]
    };
    let memlock = shard::preflight::memlock_limit();
    let ipc_lock = shard::preflight::has_ipc_lock();
    let io_memory =
        shard::preflight::io_memory_per_shard(count, config.io_memory, memlock, ipc_lock)
            .map_err(preflight_error)?;
    if let Some(limit) = memlock
        && !ipc_lock
        && shard::preflight::shards_that_fit(limit) < count
    {
        tracing::warn!(
            "the locked-memory limit ({} KiB) registers io_uring buffers for only {} of {count} shards; \
             the others use unregistered buffers (slower file I/O, sockets unaffected): raise `ulimit -l` to avoid it",
            limit / 1024,
            shard::preflight::shards_that_fit(limit)
        );
    }
    let (listen, addrs) = prebind(&config.listen)?;
    let mut first = Some(listen);
    let config = Arc::new(config);
    let (events_tx, events) = flume::unbounded();
    let signals = signals::Listener::start(events_tx.clone())
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    let registry = Arc::new(Registry::new(count, config.bus_capacity));
    let (done, done_rx) = flume::bounded::<()>(0);

    let mut shards = Vec::with_capacity(count);
    for (index, cpu) in placement.into_iter().enumerate() {
        let id = ShardId::new(index);
        let listen = first.take().unwrap_or_else(|| {
            addrs
                .iter()
                .map(|&addr| ListenSpec {
                    addr,
                    prebound: None,
                })
                .collect()
        });
        let (control, control_rx) = flume::unbounded();
        let parts = ShardParts {
            id,
            count,
            cpu,
            config: config.clone(),
            listen,
            events: events_tx.clone(),
            counters: Arc::new(ShardCounters::default()),
            bus: registry.clone(),
        };
        let thread = shard::thread::spawn(parts, io_memory, control_rx, shard_fn.clone())
            .map_err(|e| Error::io("cannot start a shard thread", e))?;
        shards.push(ShardHandle {
            control,
            thread: Some(thread),
            serving: false,
            exited: false,
        });
    }
    let app = app.map(|app| {
        let coordinator = Coordinator::new(registry.clone(), events_tx.clone(), done_rx);
        std::thread::Builder::new()
            .name("forkless-coordinator".into())
            .spawn(move || app(coordinator))
    });
    drop(events_tx);
    tracing::debug!(
        shards = count,
        io_memory,
        pinned = shards.len() == count && config.pin,
        "shards started"
    );

    let outcome = supervise(&mut shards, &events, &addrs, &config, started);
    signals.stop();
    // The app's coordinator code sees `recv() == None` from here on; it is
    // not waited for (it may be blocked in code of its own).
    drop(done);
    if let Some(Err(error)) = app {
        tracing::error!(%error, "could not start the app's coordinator thread");
    }
    if outcome.is_ok() {
        for handle in &mut shards {
            if let Some(thread) = handle.thread.take() {
                let _ = thread.join();
            }
        }
    }
    outcome
}

fn supervise(
    shards: &mut [ShardHandle],
    events: &flume::Receiver<Event>,
    addrs: &[SocketAddr],
    config: &Config,
    started: Instant,
) -> Result<(), Error> {
    let mut announced = false;
    let mut stop_deadline: Option<Instant> = None;
    let mut failure: Option<Error> = None;
    loop {
        if shards.iter().all(|s| s.exited) {
            return failure.map_or(Ok(()), Err);
        }
        let event = match stop_deadline {
            Some(deadline) => match events.recv_deadline(deadline) {
                Ok(event) => event,
                Err(flume::RecvTimeoutError::Timeout) => {
                    tracing::error!(
                        timeout = ?config.shutdown_timeout,
                        "shutdown deadline passed with work in flight; forcing exit"
                    );
                    return Err(Error::new(ErrorKind::ShutdownForced));
                }
                Err(flume::RecvTimeoutError::Disconnected) => break,
            },
            None => match events.recv() {
                Ok(event) => event,
                Err(_) => break,
            },
        };
        match event {
            Event::Serving(id) => {
                if let Some(handle) = shards.get_mut(id.get()) {
                    handle.serving = true;
                }
            }
            Event::Exited(id, exit) => {
                if let Some(handle) = shards.get_mut(id.get()) {
                    handle.exited = true;
                }
                match exit {
                    Exit::Returned => tracing::debug!(shard = id.get(), "shard finished"),
                    Exit::Failed(message) | Exit::Panicked(message) => {
                        tracing::error!(shard = id.get(), "shard stopped: {message}");
                        if failure.is_none() {
                            failure = Some(Error::shard(id, message));
                        }
                        if stop_deadline.is_none() {
                            stop_deadline = Some(begin_stop(shards, config));
                        }
                    }
                }
            }
            Event::Shutdown => {
                if stop_deadline.is_none() {
                    tracing::info!("shutdown requested; shutting down gracefully");
                    stop_deadline = Some(begin_stop(shards, config));
                }
            }
            Event::Signal(signal) => {
                if stop_deadline.is_some() {
                    tracing::warn!(signal, "second signal: forcing exit");
                    return Err(Error::new(ErrorKind::ShutdownForced));
                }
                tracing::info!(signal, "shutting down gracefully");
                stop_deadline = Some(begin_stop(shards, config));
            }
        }
        if !announced && shards.iter().all(|s| s.serving || s.exited) {
            announced = true;
            if shards.iter().any(|s| s.serving) {
                announce(addrs, shards.len(), started);
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

fn begin_stop(shards: &[ShardHandle], config: &Config) -> Instant {
    for handle in shards.iter().filter(|s| !s.exited) {
        let _ = handle.control.send(Command::Stop);
    }
    Instant::now() + config.shutdown_timeout
}

fn announce(addrs: &[SocketAddr], shards: usize, started: Instant) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for addr in addrs {
        let _ = writeln!(out, "listening on http://{addr}");
    }
    let _ = out.flush();
    tracing::info!(
        shards,
        elapsed = ?started.elapsed(),
        "every shard is serving"
    );
}

/// Binds the first socket of every address (resolving port 0 once) and
/// returns them for shard 0 with the addresses every other shard binds.
fn prebind(addrs: &[SocketAddr]) -> Result<(Vec<ListenSpec>, Vec<SocketAddr>), Error> {
    let mut specs = Vec::with_capacity(addrs.len());
    let mut resolved = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let listener = shard::listener::bind(addr)
            .map_err(|source| Error::new(ErrorKind::Bind { addr, source }))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read a listener's address", e))?;
        resolved.push(local);
        specs.push(ListenSpec {
            addr: local,
            prebound: Some(listener),
        });
    }
    Ok((specs, resolved))
}

fn preflight_error(error: shard::preflight::PreflightError) -> Error {
    Error::new(ErrorKind::Preflight(error.to_string()))
}
