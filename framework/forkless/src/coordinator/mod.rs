//! The coordinator: starts the shards, supervises them, owns the signals and
//! runs shutdown.
//!
//! It runs on the thread that called [`Runtime::run`](crate::Runtime::run)
//! and never does I/O for requests. Shards tell it what happens to them
//! ([`Event`]); it tells them what to do ([`Command`]). One event loop, one
//! channel in: signals, shard starts, listeners and exits are handled in the
//! order they arrive.
//!
//! A shard whose thread dies (a panic outside the request guard, a failing
//! shard function) is restarted on its CPU after a backoff, with the same
//! [`ShardId`]; its bus queues reopen for the new incarnation and it rejoins
//! the port. Too many deaths of one shard within the crash-loop window
//! ([`RestartPolicy`]) stop the whole process with an error naming the shard
//! and its last panic.

mod handle;
pub(crate) mod lifecycle;
mod listen;
mod policy;
mod signals;
mod systemd;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

pub use handle::{Coordinator, CoordinatorBus};
pub use lifecycle::{ExitReason, LifecycleEvent, LifecycleKind};
pub use policy::RestartPolicy;

use crate::admin::Board;
use crate::bus::mesh::Registry;
use crate::entry::ShardOutcome;
use crate::error::ErrorKind;
use crate::shard::{self, ListenSpec, Shard, ShardCounters, ShardId, ShardParts};
use crate::{Config, Error, Shards};
use lifecycle::Subscribers;
use listen::{ListenSource, adopt, prebind};
use policy::{Deaths, Verdict};

/// What a shard (or the signal thread, or the app) tells the coordinator.
#[derive(Debug)]
pub(crate) enum Event {
    /// The shard's executor runs and its function started.
    Online(ShardId),
    /// The shard accepts connections; these are second descriptors of its
    /// listening sockets.
    Listening(ShardId, Vec<TcpListener>),
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

    let inherited =
        systemd::listen_fds().map_err(|e| Error::io("cannot use the inherited listeners", e))?;
    let (first, sources) = if inherited.is_empty() {
        prebind(&config.listen)?
    } else {
        tracing::info!(
            sockets = inherited.len(),
            "using inherited listening sockets (LISTEN_FDS) instead of --listen"
        );
        adopt(inherited)?
    };
    let addrs: Vec<SocketAddr> = sources.iter().map(ListenSource::addr).collect();
    let notifier = systemd::Notifier::from_env();
    let watchdog = notifier.as_ref().and(systemd::watchdog_interval());
    let (events_tx, events) = flume::unbounded();
    let signals = signals::Listener::start(events_tx.clone())
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    let registry = Arc::new(Registry::new(count, config.bus_capacity));
    let subscribers = Arc::new(Subscribers::default());
    let (done, done_rx) = flume::bounded::<()>(0);
    let app_coordinator = Coordinator::new(
        registry.clone(),
        events_tx.clone(),
        done_rx,
        subscribers.clone(),
    );

    let shards: Vec<ShardState> = placement.into_iter().map(ShardState::new).collect();
    let board = Board::new(
        registry.clone(),
        shards.iter().map(|s| (s.cpu, s.counters.clone())),
    );
    // Before the shards start, so `/livez` answers (and `/readyz` says why
    // not) from the first moment; stopped when this function returns.
    let _admin = match config.admin {
        Some(addr) => Some(crate::admin::start(addr, board.clone())?),
        None => None,
    };
    let mut supervisor = Supervisor {
        config: Arc::new(config),
        shard_fn,
        io_memory,
        registry,
        subscribers,
        events_tx,
        addrs,
        sources,
        notifier,
        watchdog: watchdog.map(|every| (every, Instant::now() + every)),
        shards,
        board,
        started,
        announced: false,
        stop_deadline: None,
        failure: None,
    };
    let mut first = Some(first);
    for index in 0..count {
        let listen = first.take();
        supervisor.spawn(ShardId::new(index), listen)?;
    }
    tracing::debug!(shards = count, io_memory, "shards started");

    let app = app.map(|app| {
        std::thread::Builder::new()
            .name("forkless-coordinator".into())
            .spawn(move || app(app_coordinator))
    });
    let outcome = supervisor.supervise(&events);
    signals.stop();
    // The app's coordinator code sees `recv() == None` from here on; it is
    // not waited for (it may be blocked in code of its own).
    drop(done);
    if let Some(Err(error)) = app {
        tracing::error!(%error, "could not start the app's coordinator thread");
    }
    if outcome.is_ok() {
        for state in &mut supervisor.shards {
            if let Some(thread) = state.thread.take() {
                let _ = thread.join();
            }
        }
    }
    outcome
}

/// What the coordinator knows about one shard.
struct ShardState {
    cpu: Option<usize>,
    counters: Arc<ShardCounters>,
    control: Option<flume::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    incarnation: u32,
    listening: bool,
    running: bool,
    /// Second descriptors of its listening sockets.
    listeners: Vec<TcpListener>,
    deaths: Deaths,
    restart_at: Option<Instant>,
}

impl ShardState {
    fn new(cpu: Option<usize>) -> Self {
        Self {
            cpu,
            counters: Arc::new(ShardCounters::default()),
            control: None,
            thread: None,
            incarnation: 0,
            listening: false,
            running: false,
            listeners: Vec::new(),
            deaths: Deaths::default(),
            restart_at: None,
        }
    }
}

struct Supervisor<F> {
    config: Arc<Config>,
    shard_fn: F,
    io_memory: usize,
    registry: Arc<Registry>,
    subscribers: Arc<Subscribers>,
    events_tx: flume::Sender<Event>,
    addrs: Vec<SocketAddr>,
    /// How each shard gets its listener for each address.
    sources: Vec<ListenSource>,
    notifier: Option<systemd::Notifier>,
    /// `WATCHDOG=1` interval and the next ping.
    watchdog: Option<(std::time::Duration, Instant)>,
    shards: Vec<ShardState>,
    /// What the admin endpoint reports: lifecycle state and readiness.
    board: Arc<Board>,
    started: Instant,
    announced: bool,
    stop_deadline: Option<Instant>,
    failure: Option<Error>,
}

impl<F, Fut> Supervisor<F>
where
    F: Fn(Shard) -> Fut + Send + Clone + 'static,
    Fut: Future + 'static,
    Fut::Output: ShardOutcome,
{
    /// Starts (or restarts) shard `id`; `listen` carries shard 0's prebound
    /// sockets at first start, otherwise each shard binds its own.
    fn spawn(&mut self, id: ShardId, listen: Option<Vec<ListenSpec>>) -> Result<(), Error> {
        let listen = match listen {
            Some(listen) => listen,
            None => self
                .sources
                .iter()
                .map(ListenSource::spec)
                .collect::<Result<_, _>>()?,
        };
        let Some(state) = self.shards.get_mut(id.get()) else {
            return Err(Error::config(format!("no shard {id}")));
        };
        let (control, control_rx) = flume::unbounded();
        let parts = ShardParts {
            id,
            count: self.registry.shards(),
            cpu: state.cpu,
            config: self.config.clone(),
            listen,
            events: self.events_tx.clone(),
            counters: state.counters.clone(),
            bus: self.registry.clone(),
        };
        if state.incarnation > 0 {
            self.registry.set_open(id, true);
        }
        let thread = shard::thread::spawn(parts, self.io_memory, control_rx, self.shard_fn.clone())
            .map_err(|e| Error::io("cannot start a shard thread", e))?;
        state.incarnation += 1;
        state.control = Some(control);
        state.thread = Some(thread);
        state.running = true;
        state.listening = false;
        state.restart_at = None;
        let incarnation = state.incarnation;
        self.publish(id, incarnation, LifecycleKind::Fork);
        Ok(())
    }

    fn publish(&self, shard: ShardId, incarnation: u32, kind: LifecycleKind) {
        self.board.record(shard, incarnation, &kind);
        self.subscribers.publish(LifecycleEvent {
            shard,
            incarnation,
            kind,
            at: SystemTime::now(),
        });
    }

    fn stopping(&self) -> bool {
        self.stop_deadline.is_some()
    }

    /// The event loop; returns when every shard has ended.
    fn supervise(&mut self, events: &flume::Receiver<Event>) -> Result<(), Error> {
        loop {
            if self
                .shards
                .iter()
                .all(|s| !s.running && s.restart_at.is_none())
            {
                return self.failure.take().map_or(Ok(()), Err);
            }
            let wake_at = self
                .shards
                .iter()
                .filter_map(|s| s.restart_at)
                .chain(self.stop_deadline)
                .chain(self.watchdog.map(|(_, next)| next))
                .min();
            let event = match wake_at {
                Some(at) => match events.recv_deadline(at) {
                    Ok(event) => Some(event),
                    Err(flume::RecvTimeoutError::Timeout) => None,
                    Err(flume::RecvTimeoutError::Disconnected) => break,
                },
                None => match events.recv() {
                    Ok(event) => Some(event),
                    Err(_) => break,
                },
            };
            match event {
                Some(event) => self.handle(event)?,
                None => self.on_timer()?,
            }
            if !self.announced && self.shards.iter().all(|s| s.listening || !s.running) {
                self.announced = true;
                if self.shards.iter().any(|s| s.listening) {
                    announce(&self.addrs, self.shards.len(), self.started);
                }
                if let Some(notifier) = &self.notifier {
                    notifier.notify(&format!(
                        "READY=1\nSTATUS=serving on {} shards\nMAINPID={}",
                        self.shards.len(),
                        std::process::id()
                    ));
                }
            }
        }
        self.failure.take().map_or(Ok(()), Err)
    }

    fn handle(&mut self, event: Event) -> Result<(), Error> {
        match event {
            Event::Online(id) => {
                if let Some(state) = self.shards.get(id.get()) {
                    self.publish(id, state.incarnation, LifecycleKind::Online);
                }
            }
            Event::Listening(id, listeners) => {
                if let Some(state) = self.shards.get_mut(id.get()) {
                    state.listening = true;
                    state.listeners = listeners;
                    let incarnation = state.incarnation;
                    self.publish(id, incarnation, LifecycleKind::Listening);
                }
            }
            Event::Exited(id, exit) => self.on_exit(id, exit),
            Event::Shutdown => {
                if !self.stopping() {
                    tracing::info!("shutdown requested; shutting down gracefully");
                    self.begin_stop();
                }
            }
            Event::Signal(signal) => {
                if self.stopping() {
                    tracing::warn!(signal, "second signal: forcing exit");
                    return Err(Error::new(ErrorKind::ShutdownForced));
                }
                tracing::info!(signal, "shutting down gracefully");
                self.begin_stop();
            }
        }
        Ok(())
    }

    fn on_exit(&mut self, id: ShardId, exit: Exit) {
        let stopping = self.stopping();
        let policy = self.config.restart;
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        state.running = false;
        state.control = None;
        let listeners = std::mem::take(&mut state.listeners);
        let incarnation = state.incarnation;
        let (reason, died) = match exit {
            Exit::Returned => (ExitReason::Returned, None),
            Exit::Failed(why) => (ExitReason::Failed(why.clone()), Some(why)),
            Exit::Panicked(why) => (ExitReason::Panicked(why.clone()), Some(why)),
        };
        let Some(why) = died else {
            drop(listeners);
            self.publish(id, incarnation, LifecycleKind::Exit(reason));
            return;
        };
        // Tasks the dead thread leaked may still own its listener: take the
        // socket out of the port group so no connection waits on it.
        for listener in listeners {
            let _ = socket2::SockRef::from(&listener).shutdown(std::net::Shutdown::Both);
        }
        if let Some(thread) = state.thread.take() {
            let _ = thread.join();
        }
        let verdict = (!stopping).then(|| state.deaths.record(&policy, Instant::now()));
        if let Some(Verdict::RestartAt(at)) = verdict {
            state.restart_at = Some(at);
        }
        self.publish(id, incarnation, LifecycleKind::Exit(reason));
        match verdict {
            Some(Verdict::RestartAt(at)) => tracing::warn!(
                shard = id.get(),
                backoff = ?at.saturating_duration_since(Instant::now()),
                "restarting shard"
            ),
            Some(Verdict::GiveUp { deaths }) => {
                let message = format!(
                    "crash loop: {deaths} deaths within {:?}, last: {why}",
                    policy.window
                );
                tracing::error!(shard = id.get(), "{message}; stopping");
                self.fail(Error::shard(id, message));
            }
            None => self.fail(Error::shard(id, why)),
        }
    }

    fn fail(&mut self, error: Error) {
        if self.failure.is_none() {
            self.failure = Some(error);
        }
        if !self.stopping() {
            self.begin_stop();
        }
    }

    /// A restart came due, the watchdog is due, or the shutdown deadline passed.
    fn on_timer(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        if let Some((every, next)) = self.watchdog
            && now >= next
        {
            self.watchdog = Some((every, now + every));
            self.ping_watchdog(now, every);
        }
        if let Some(deadline) = self.stop_deadline
            && now >= deadline
        {
            tracing::error!(
                timeout = ?self.config.shutdown_timeout,
                "shutdown deadline passed with work in flight; forcing exit"
            );
            return Err(Error::new(ErrorKind::ShutdownForced));
        }
        let due: Vec<ShardId> = self
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.restart_at.is_some_and(|at| at <= now))
            .map(|(i, _)| ShardId::new(i))
            .collect();
        for id in due {
            if let Err(error) = self.spawn(id, None) {
                tracing::error!(shard = id.get(), %error, "cannot restart shard");
                if let Some(state) = self.shards.get_mut(id.get()) {
                    state.restart_at = None;
                }
                self.fail(error);
            }
        }
        Ok(())
    }

    /// `WATCHDOG=1`, but only while every running shard's loop is alive: a
    /// shard stuck in one task poll for a whole interval withholds it, so
    /// systemd restarts the process.
    fn ping_watchdog(&self, now: Instant, every: std::time::Duration) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        let stuck = self.shards.iter().enumerate().find_map(|(i, s)| {
            let busy = s.counters.busy_for(now)?;
            (s.running && busy >= every).then_some((i, busy))
        });
        match stuck {
            None => notifier.notify("WATCHDOG=1"),
            Some((shard, busy)) => tracing::error!(
                shard,
                ?busy,
                "shard stuck in one task; withholding the systemd watchdog ping"
            ),
        }
    }

    fn begin_stop(&mut self) {
        // Not ready from now on, before any shard hears of the stop.
        self.board.begin_stop();
        if let Some(notifier) = &self.notifier {
            notifier.notify("STOPPING=1");
        }
        self.stop_deadline = Some(Instant::now() + self.config.shutdown_timeout);
        for index in 0..self.shards.len() {
            let state = &mut self.shards[index];
            state.restart_at = None;
            // The shard closes its own listener when it stops accepting; the
            // coordinator's second descriptor must not keep it open.
            state.listeners.clear();
            let Some(control) = &state.control else {
                continue;
            };
            let _ = control.send(Command::Stop);
            let incarnation = state.incarnation;
            self.publish(ShardId::new(index), incarnation, LifecycleKind::Disconnect);
        }
    }
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

fn preflight_error(error: shard::preflight::PreflightError) -> Error {
    Error::new(ErrorKind::Preflight(error.to_string()))
}
