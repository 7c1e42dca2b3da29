//! The coordinator: starts the shards, supervises them, owns the signals and
//! runs shutdown, rolling reload and binary upgrade.
//!
//! It runs on the thread that called [`Runtime::run`](crate::Runtime::run)
//! and never does I/O for requests. Shards tell it what happens to them
//! ([`Event`]); it tells them what to do ([`Command`]). One event loop, one
//! channel in: signals, shard starts, listeners and exits are handled in the
//! order they arrive.
//!
//! A shard whose thread dies (a panic outside the request guard, a failing
//! shard function) is restarted on its CPU after a backoff, with the same
//! [`ShardId`]; its bus queues reopen for the new incarnation and it accepts
//! from the same listening sockets (the coordinator keeps them, `listen.rs`),
//! so connections waiting in their queues are served, not reset. Too many
//! deaths of one shard within the crash-loop window ([`RestartPolicy`]) stop
//! the whole process with an error naming the shard and its last panic.
//!
//! **Rolling reload** (SIGHUP, `POST /reload`): one shard at a time, a new
//! incarnation starts beside the old one on the same sockets; once it
//! listens, the old one is told to stop: it stops accepting (leaving the
//! queue to the new one) and finishes its connections as in a shutdown.
//! When it has exited, the next shard follows. A new incarnation that dies
//! or does not listen in time ends the reload; the old one keeps serving.
//!
//! **Binary upgrade** (SIGUSR2, `POST /upgrade`): the new binary starts with
//! every listening socket (`upgrade.rs`); when it reports every shard
//! listening, this process drains and exits 0; if it exits or is not ready
//! in time, this one keeps serving.

pub(crate) mod board;
mod handle;
pub(crate) mod lifecycle;
mod listen;
mod policy;
mod reload;
mod signals;
mod standin;
mod systemd;
mod upgrade;

use std::any::Any;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

pub use handle::Coordinator;
pub use lifecycle::{ExitReason, LifecycleEvent, LifecycleEvents, LifecycleKind};

use crate::bus::mesh::{FIRST_INCARNATION, Registry};
use crate::error::ErrorKind;
use crate::shard::balance::Balance;
use crate::shard::control::{Command, Exit, Report, Reporter};
use crate::shard::{self, ShardCounters, ShardId};
use crate::{Config, Error, Shards};
use board::Board;
use lifecycle::Subscribers;
use policy::{Deaths, Verdict};
use reload::Reload;

/// What a shard (or the signal thread, the admin endpoint, the upgrade
/// watcher, or the app) tells the coordinator. Shard events name the
/// incarnation they come from.
#[derive(Debug)]
pub(crate) enum Event {
    /// What incarnation `u32` of a shard reports about itself.
    Shard(ShardId, u32, Report),
    /// A shutdown signal arrived.
    Signal(i32),
    /// The app asked for a graceful shutdown ([`Coordinator::shutdown`]).
    Shutdown,
    /// SIGHUP or `POST /reload`.
    Reload,
    /// SIGUSR2 or `POST /upgrade`.
    Upgrade,
    /// The upgrade's new process (this pid) listens on every shard.
    UpgradeReady(libc::pid_t),
    /// The upgrade's new process will not take over, and why.
    UpgradeFailed(String),
    /// A stand-in accepted this connection for a shard that is down.
    Orphan(ShardId, std::net::TcpStream),
}

/// What the coordinator gives each new incarnation of a shard: everything
/// it needs to run, and nothing it could use to reach above its layer.
#[derive(Debug)]
pub(crate) struct ShardParts {
    pub(crate) id: ShardId,
    pub(crate) incarnation: u32,
    pub(crate) count: usize,
    pub(crate) cpu: Option<usize>,
    pub(crate) config: Arc<Config>,
    /// Bytes of the executor's DMA arena (`shard/preflight.rs`).
    pub(crate) io_memory: usize,
    /// This incarnation's descriptors of the shard's listening sockets; the
    /// coordinator keeps the sockets across incarnations and processes.
    pub(crate) listen: Vec<TcpListener>,
    pub(crate) control: flume::Receiver<Command>,
    pub(crate) reporter: Reporter,
    pub(crate) counters: Arc<ShardCounters>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) balance: Arc<Balance>,
}

/// Starts a shard incarnation's thread (the layers above supply it: it
/// runs the app's shard function).
pub(crate) type Starter = Box<dyn Fn(ShardParts) -> std::io::Result<JoinHandle<()>>>;

/// Starts the admin endpoint on its socket (the admin layer supplies it);
/// the returned guard stops it when dropped.
pub(crate) type AdminStart =
    Box<dyn FnOnce(TcpListener, Arc<Board>, Coordinator) -> Result<Box<dyn Any>, Error>>;

/// App code that runs on its own thread beside the shards.
pub(crate) type AppCoordinator = Box<dyn FnOnce(Coordinator) + Send>;

/// Runs the whole process: returns when every shard has ended.
pub(crate) fn run(
    config: Config,
    starter: Starter,
    app: Option<AppCoordinator>,
    admin: Option<AdminStart>,
) -> Result<(), Error> {
    let started = Instant::now();
    // Done before `main` already (`membarrier_before_main`); idempotent.
    glommio::early_init();
    // Read first: a binary upgrade starts this path with these arguments
    // (the file at the path may be replaced by then: that is the point).
    let program = config
        .upgrade_binary
        .clone()
        .or_else(|| std::env::current_exe().ok());
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
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
    let mut sockets = if inherited.is_empty() {
        listen::bind(&config.listen, count, config.share_port)?
    } else {
        tracing::info!(
            sockets = inherited.len(),
            "using inherited listening sockets (LISTEN_FDS) instead of --listen"
        );
        listen::adopt(inherited, count)?
    };
    let admin_socket = match (sockets.admin.take(), config.admin) {
        (Some(inherited), _) => Some(inherited),
        (None, Some(addr)) => Some(listen::bind_admin(addr)?),
        (None, None) => None,
    };
    let notifier = systemd::Notifier::from_env();
    let watchdog = notifier.as_ref().and(systemd::watchdog_interval());
    let parent = systemd::Notifier::from_var(upgrade::READY_ENV);
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

    let board = Board::new(registry.clone(), placement.clone());
    let balance = Arc::new(Balance::new(count));
    // Before the shards start, so `/livez` answers (and `/readyz` says why
    // not) from the first moment; stopped when the supervisor is dropped.
    let admin = match (&admin_socket, admin) {
        (Some(socket), Some(start)) => Some(start(
            listen::dup(socket)?,
            board.clone(),
            app_coordinator.clone(),
        )?),
        _ => None,
    };
    let shards: Vec<ShardState> = placement
        .into_iter()
        .zip(sockets.shards)
        .map(|(cpu, sockets)| ShardState::new(cpu, sockets))
        .collect();
    let mut supervisor = Supervisor {
        config: Arc::new(config),
        starter,
        io_memory,
        registry,
        balance,
        subscribers,
        events_tx,
        addrs: sockets.addrs,
        notifier,
        parent,
        watchdog: watchdog.map(|every| (every, Instant::now() + every)),
        shards,
        board,
        started,
        announced: false,
        stop_deadline: None,
        failure: None,
        reload: None,
        upgrade: None,
        handed_over: false,
        admin,
        admin_socket,
        program,
        args,
        orphans: VecDeque::new(),
        next_adopter: 0,
    };
    for index in 0..count {
        supervisor.spawn(ShardId::new(index))?;
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
            for incarnation in state.current.iter_mut().chain(&mut state.retiring) {
                if let Some(thread) = incarnation.thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
    outcome
}

/// One running incarnation of a shard.
struct Incarnation {
    number: u32,
    counters: Arc<ShardCounters>,
    control: flume::Sender<Command>,
    thread: Option<JoinHandle<()>>,
    listening: bool,
    /// When it was forked.
    since: Instant,
}

impl Incarnation {
    fn stop(&self) {
        // A closed channel means its thread is already ending.
        let _ = self.control.send(Command::Stop);
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the coordinator knows about one shard.
struct ShardState {
    cpu: Option<usize>,
    /// Its listening sockets; every incarnation gets descriptors of them.
    sockets: Vec<TcpListener>,
    /// The incarnation that serves and owns the bus inbox; `None` while
    /// the shard is down.
    current: Option<Incarnation>,
    /// Incarnations a rolling reload replaced, finishing their requests.
    retiring: Vec<Incarnation>,
    /// Number of the latest incarnation started.
    latest: u32,
    deaths: Deaths,
    restart_at: Option<Instant>,
    /// Accepts on its sockets while no incarnation of it listens.
    standin: Option<standin::StandIn>,
}

impl ShardState {
    fn new(cpu: Option<usize>, sockets: Vec<TcpListener>) -> Self {
        Self {
            cpu,
            sockets,
            current: None,
            retiring: Vec::new(),
            // The first spawn is the incarnation the bus keeps the inbox
            // for until then (see `Registry::new`).
            latest: FIRST_INCARNATION - 1,
            deaths: Deaths::default(),
            restart_at: None,
            standin: None,
        }
    }

    fn listening(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.listening)
    }

    fn take_retiring(&mut self, number: u32) -> Option<Incarnation> {
        let at = self.retiring.iter().position(|i| i.number == number)?;
        Some(self.retiring.remove(at))
    }
}

struct Supervisor {
    config: Arc<Config>,
    starter: Starter,
    io_memory: usize,
    registry: Arc<Registry>,
    balance: Arc<Balance>,
    subscribers: Arc<Subscribers>,
    events_tx: flume::Sender<Event>,
    addrs: Vec<SocketAddr>,
    notifier: Option<systemd::Notifier>,
    /// The process whose binary upgrade started this one, waiting for
    /// `READY=1`.
    parent: Option<systemd::Notifier>,
    /// `WATCHDOG=1` interval and the next ping.
    watchdog: Option<(Duration, Instant)>,
    shards: Vec<ShardState>,
    /// What the admin endpoint reports: lifecycle state and readiness.
    board: Arc<Board>,
    started: Instant,
    announced: bool,
    stop_deadline: Option<Instant>,
    failure: Option<Error>,
    reload: Option<Reload>,
    /// A binary upgrade's new process that has not reported yet.
    upgrade: Option<upgrade::Pending>,
    /// A binary upgrade took over: this process drains and exits.
    handed_over: bool,
    /// The admin endpoint; dropping it stops it.
    admin: Option<Box<dyn Any>>,
    /// The admin listening socket, handed on by a binary upgrade.
    admin_socket: Option<TcpListener>,
    /// What a binary upgrade starts.
    program: Option<PathBuf>,
    args: Vec<OsString>,
    /// Connections stand-ins accepted while no shard listened.
    orphans: VecDeque<std::net::TcpStream>,
    /// Where the next orphan goes (round robin over listening shards).
    next_adopter: usize,
}

impl Supervisor {
    /// Starts a new incarnation of shard `id`; it becomes the current one
    /// (any previous one must have been moved out of `current` first).
    fn spawn(&mut self, id: ShardId) -> Result<(), Error> {
        let count = self.registry.shards();
        let Some(state) = self.shards.get_mut(id.get()) else {
            return Err(Error::config(format!("no shard {id}")));
        };
        let listen = state
            .sockets
            .iter()
            .map(listen::dup)
            .collect::<Result<Vec<_>, _>>()?;
        let number = state.latest + 1;
        let counters = Arc::new(ShardCounters::default());
        let (control, control_rx) = flume::unbounded();
        let events = self.events_tx.clone();
        let parts = ShardParts {
            id,
            incarnation: number,
            count,
            cpu: state.cpu,
            config: self.config.clone(),
            io_memory: self.io_memory,
            listen,
            control: control_rx,
            reporter: Reporter::new(
                id,
                number,
                Arc::new(move |id, number, report| {
                    // The coordinator outlives every shard; a closed channel
                    // means the process is already exiting.
                    let _ = events.send(Event::Shard(id, number, report));
                }),
            ),
            counters: counters.clone(),
            registry: self.registry.clone(),
            balance: self.balance.clone(),
        };
        self.registry.activate(id, number);
        self.board.attach(id, number, counters.clone());
        let thread = match (self.starter)(parts) {
            Ok(thread) => thread,
            Err(e) => {
                self.board.detach(id, number);
                self.registry.retire(id, number);
                self.balance.retire(id, number);
                return Err(Error::io("cannot start a shard thread", e));
            }
        };
        state.latest = number;
        state.current = Some(Incarnation {
            number,
            counters,
            control,
            thread: Some(thread),
            listening: false,
            since: Instant::now(),
        });
        state.restart_at = None;
        self.publish(id, number, LifecycleKind::Fork);
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
                .all(|s| s.current.is_none() && s.retiring.is_empty() && s.restart_at.is_none())
            {
                return self.failure.take().map_or(Ok(()), Err);
            }
            let wake_at = self
                .shards
                .iter()
                .filter_map(|s| s.restart_at)
                .chain(self.stop_deadline)
                .chain(self.watchdog.map(|(_, next)| next))
                .chain(self.reload_step().map(|step| step.deadline))
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
            if !self.announced
                && self
                    .shards
                    .iter()
                    .all(|s| s.listening() || s.current.is_none())
            {
                self.announced = true;
                if self.shards.iter().any(ShardState::listening) {
                    announce(&self.addrs, self.shards.len(), self.started);
                }
                let ready = format!(
                    "READY=1\nSTATUS=serving on {} shards\nMAINPID={}",
                    self.shards.len(),
                    std::process::id()
                );
                if let Some(notifier) = &self.notifier {
                    notifier.notify(&ready);
                }
                if let Some(parent) = self.parent.take() {
                    parent.notify(&ready);
                }
            }
        }
        self.failure.take().map_or(Ok(()), Err)
    }

    fn handle(&mut self, event: Event) -> Result<(), Error> {
        match event {
            Event::Shard(id, number, Report::Online) => {
                self.publish(id, number, LifecycleKind::Online);
            }
            Event::Shard(id, number, Report::Listening) => self.on_listening(id, number),
            Event::Shard(id, number, Report::Exited(exit)) => self.on_exit(id, number, exit),
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
            Event::Reload => self.begin_reload(),
            Event::Upgrade => self.begin_upgrade(),
            Event::UpgradeReady(pid) => self.on_upgrade_ready(pid),
            Event::UpgradeFailed(why) => {
                if self.upgrade.take().is_some() {
                    tracing::error!("binary upgrade failed: {why}; this process keeps serving");
                }
            }
            Event::Orphan(down, stream) => {
                tracing::trace!(
                    shard = down.get(),
                    "handing on a connection of a shard that is down"
                );
                self.orphans.push_back(stream);
                self.place_orphans();
            }
        }
        Ok(())
    }

    /// An incarnation ended: the admin board keeps what it counted, and
    /// the connections it still held (a dead thread closes none) stop
    /// counting for the hand-off.
    fn forget(&self, id: ShardId, ended: &Incarnation) {
        self.board.detach(id, ended.number);
        let leaked = ended.counters.snapshot().connections_open;
        self.balance.forget(id, leaked);
    }

    /// Hands waiting orphans to listening shards, in turn.
    fn place_orphans(&mut self) {
        while let Some(stream) = self.orphans.pop_front() {
            let count = self.shards.len();
            let adopter = (0..count)
                .map(|i| (self.next_adopter + i) % count)
                .find(|&i| self.shards[i].listening());
            let Some(adopter) = adopter else {
                self.orphans.push_front(stream);
                return;
            };
            self.next_adopter = adopter + 1;
            if let Some(current) = &self.shards[adopter].current
                && let Err(flume::SendError(Command::Adopt(stream))) =
                    current.control.send(Command::Adopt(stream))
            {
                // Its thread is ending; the next shard gets it.
                self.orphans.push_front(stream);
                if let Some(current) = &mut self.shards[adopter].current {
                    current.listening = false;
                }
            }
        }
    }

    /// Starts a stand-in for shard `id`, which has no listening incarnation.
    fn stand_in(&mut self, id: ShardId) {
        if self.stopping() {
            return;
        }
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        if state.standin.is_some() || state.sockets.is_empty() {
            return;
        }
        let sockets = state
            .sockets
            .iter()
            .map(listen::dup)
            .collect::<Result<Vec<_>, _>>();
        let started = sockets.map_err(|e| e.to_string()).and_then(|sockets| {
            standin::StandIn::start(id, sockets, self.events_tx.clone()).map_err(|e| e.to_string())
        });
        match started {
            Ok(standin) => state.standin = Some(standin),
            Err(error) => tracing::warn!(
                shard = id.get(),
                %error,
                "cannot accept for a shard that is down; its connections wait for it"
            ),
        }
    }

    fn on_listening(&mut self, id: ShardId, number: u32) {
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        if let Some(current) = state.current.as_mut().filter(|c| c.number == number) {
            current.listening = true;
            // Back: it accepts for itself.
            drop(state.standin.take());
        }
        self.publish(id, number, LifecycleKind::Listening);
        self.place_orphans();
        let Some(step) = self.reload_step() else {
            return;
        };
        if step.shard != id || step.new != number || step.draining {
            return;
        }
        // The new incarnation accepts: the old one may stop.
        if let Some(old) = self
            .shards
            .get(id.get())
            .and_then(|s| s.retiring.iter().find(|i| i.number == step.old))
        {
            old.stop();
        }
        if let Some(Reload {
            step: Some(step), ..
        }) = &mut self.reload
        {
            step.draining = true;
            step.deadline = Instant::now() + self.config.shutdown_timeout;
        }
        self.publish(id, step.old, LifecycleKind::Disconnect);
    }

    fn on_exit(&mut self, id: ShardId, number: u32, exit: Exit) {
        let stopping = self.stopping();
        let policy = self.config.restart;
        let (reason, died) = match exit {
            Exit::Returned => (ExitReason::Returned, None),
            Exit::Failed(why) => (ExitReason::Failed(why.clone()), Some(why)),
            Exit::Panicked(why) => (ExitReason::Panicked(why.clone()), Some(why)),
        };
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        // An incarnation a reload replaced has finished its requests.
        if let Some(mut old) = state.take_retiring(number) {
            old.join();
            self.forget(id, &old);
            match &died {
                None => tracing::debug!(shard = id.get(), number, "replaced incarnation finished"),
                Some(why) => tracing::warn!(
                    shard = id.get(),
                    number,
                    "replaced incarnation ended with an error while finishing: {why}"
                ),
            }
            self.publish(id, number, LifecycleKind::Exit(reason));
            if self
                .reload_step()
                .is_some_and(|s| s.shard == id && s.old == number)
            {
                if let Some(reload) = &mut self.reload {
                    reload.step = None;
                }
                self.advance_reload();
            }
            return;
        }
        let Some(mut current) = state.current.take_if(|c| c.number == number) else {
            return;
        };
        current.join();
        self.forget(id, &current);
        self.publish(id, number, LifecycleKind::Exit(reason));
        self.stand_in(id);
        // A reload's new incarnation ended before it listened: the old one
        // still serves and stays.
        if self
            .reload_step()
            .is_some_and(|s| s.shard == id && s.new == number && !s.draining)
        {
            let why = died.unwrap_or_else(|| "its shard function returned".to_owned());
            self.abandon_reload_step(format!(
                "its new incarnation ended before it listened: {why}"
            ));
            return;
        }
        let Some(why) = died else {
            return;
        };
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        let verdict = (!stopping).then(|| state.deaths.record(&policy, Instant::now()));
        match verdict {
            Some(Verdict::RestartAt(at)) => {
                state.restart_at = Some(at);
                tracing::warn!(
                    shard = id.get(),
                    backoff = ?at.saturating_duration_since(Instant::now()),
                    "restarting shard"
                );
            }
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

    /// A restart came due, the watchdog is due, a reload step waited too
    /// long, or the shutdown deadline passed.
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
        if let Some(step) = self.reload_step()
            && now >= step.deadline
        {
            if step.draining {
                tracing::warn!(
                    shard = step.shard.get(),
                    timeout = ?self.config.shutdown_timeout,
                    "the replaced incarnation still has requests in flight; the reload moves on"
                );
                if let Some(reload) = &mut self.reload {
                    reload.step = None;
                }
                self.advance_reload();
            } else {
                self.abandon_reload_step(format!(
                    "its new incarnation did not listen within {:?} (--upgrade-timeout)",
                    self.config.upgrade_timeout
                ));
            }
        }
        let due: Vec<ShardId> = self
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.restart_at.is_some_and(|at| at <= now))
            .map(|(i, _)| ShardId::new(i))
            .collect();
        for id in due {
            self.board.count_restart(id);
            if let Err(error) = self.spawn(id) {
                tracing::error!(shard = id.get(), %error, "cannot restart shard");
                if let Some(state) = self.shards.get_mut(id.get()) {
                    state.restart_at = None;
                }
                self.fail(error);
            }
        }
        Ok(())
    }

    /// `WATCHDOG=1`, but only after `READY=1` (systemd's start timeout
    /// covers the start) and while every running shard's loop is alive: a
    /// shard stuck in one task poll for a whole interval withholds it, so
    /// systemd restarts the process.
    fn ping_watchdog(&self, now: Instant, every: Duration) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        if !self.announced {
            return;
        }
        let stuck = self.shards.iter().enumerate().find_map(|(i, s)| {
            if s.current.is_none() && s.retiring.is_empty() {
                return None;
            }
            let busy = self.board.busy_for(ShardId::new(i), now)?;
            (busy >= every).then_some((i, busy))
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
        if !self.handed_over
            && let Some(notifier) = &self.notifier
        {
            notifier.notify("STOPPING=1");
        }
        if let Some(pending) = self.upgrade.take() {
            tracing::warn!(
                pid = pending.pid,
                "shutting down: stopping the binary upgrade's new process"
            );
            upgrade::stop(pending.pid);
        }
        if self.reload.take().is_some() {
            tracing::info!("shutting down: the rolling reload ends here");
        }
        self.stop_deadline = Some(Instant::now() + self.config.shutdown_timeout);
        // The coordinator's descriptors must not keep the ports open once
        // the shards close theirs.
        self.admin_socket = None;
        let mut disconnected = Vec::new();
        self.orphans.clear();
        for (index, state) in self.shards.iter_mut().enumerate() {
            state.restart_at = None;
            state.sockets.clear();
            drop(state.standin.take());
            for incarnation in state.current.iter().chain(&state.retiring) {
                incarnation.stop();
                disconnected.push((ShardId::new(index), incarnation.number));
            }
        }
        for (id, number) in disconnected {
            self.publish(id, number, LifecycleKind::Disconnect);
        }
    }

    fn begin_upgrade(&mut self) {
        if let Some(busy) = self.busy_with() {
            tracing::warn!("binary upgrade not started: {busy}");
            return;
        }
        let Some(program) = self.program.clone() else {
            tracing::error!(
                "binary upgrade not started: the path of this binary is unknown; pass --upgrade-binary"
            );
            return;
        };
        let mut sockets = Vec::new();
        for state in &self.shards {
            for socket in &state.sockets {
                sockets.push((socket.as_fd(), listen::HTTP_NAME));
            }
        }
        if let Some(admin) = &self.admin_socket {
            sockets.push((admin.as_fd(), listen::ADMIN_NAME));
        }
        let mut env = Vec::new();
        if let Some(notifier) = &self.notifier {
            env.push(("NOTIFY_SOCKET".to_owned(), notifier.target.clone()));
        }
        if let Some((every, _)) = self.watchdog {
            env.push((
                "WATCHDOG_USEC".to_owned(),
                (every * 2).as_micros().to_string(),
            ));
        }
        let launch = upgrade::Launch {
            program: &program,
            args: &self.args,
            sockets,
            env,
        };
        match upgrade::start(launch, self.config.upgrade_timeout, self.events_tx.clone()) {
            Ok(pending) => {
                tracing::info!(
                    pid = pending.pid,
                    binary = %program.display(),
                    "binary upgrade: started the new process; it takes over once every shard of it listens"
                );
                self.upgrade = Some(pending);
            }
            Err(error) => tracing::error!(
                binary = %program.display(),
                %error,
                "binary upgrade failed to start; this process keeps serving"
            ),
        }
    }

    fn on_upgrade_ready(&mut self, pid: libc::pid_t) {
        if self.upgrade.as_ref().map(|p| p.pid) != Some(pid) {
            return;
        }
        self.upgrade = None;
        tracing::info!(
            new_pid = pid,
            "binary upgrade: the new process serves; this one stops accepting, finishes its requests and exits"
        );
        if let Some(notifier) = &self.notifier {
            notifier.notify(&format!("MAINPID={pid}"));
        }
        self.handed_over = true;
        // Admin requests go to the new process from now on.
        drop(self.admin.take());
        self.begin_stop();
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
