//! The coordinator: starts the shards, supervises them, owns the signals and
//! runs shutdown, rolling reload and binary upgrade.
//!
//! It runs on the thread that called [`Runtime::run`](crate::Runtime::run)
//! and never does I/O for requests. Shards tell it what happens to them
//! ([`Event`]); it tells them what to do ([`Command`]). One event loop, one
//! channel in: signals, shard starts, listeners and exits are handled in the
//! order they arrive.
//!
//! Contract: every decision below is made by a deterministic state machine
//! (`machine/`: inputs with `now` in, actions out, no threads, sockets or
//! clocks), tested at simulated time; the shell (`shell.rs`) only feeds it
//! events and carries out its actions, and is the one place the admin
//! board, bus liveness, hand-off table and lifecycle subscribers change.
//! The loop blocks only waiting for the next event or the machine's next
//! timeout.
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
mod machine;
mod policy;
mod shell;
mod signals;
mod standin;
mod systemd;
pub(crate) mod timeline;
mod upgrade;

use std::any::Any;
use std::ffi::OsString;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

pub(crate) use handle::Asked;
pub use handle::Coordinator;
pub use lifecycle::{ExitReason, LifecycleEvent, LifecycleEvents, LifecycleKind};

use crate::bus::mesh::Registry;
use crate::error::ErrorKind;
use crate::shard::balance::Balance;
use crate::shard::control::{Command, Report, Reporter};
use crate::shard::handoff::Handoff;
use crate::shard::{self, ShardCounters, ShardId};
use crate::{Config, Error, Shards};
use board::Board;
use lifecycle::Subscribers;

/// Where the coordinator says whether a reload or an upgrade it was asked
/// for starts: `Err` with the reason it does not.
pub(crate) type Verdict = flume::Sender<Result<(), &'static str>>;

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
    /// SIGHUP or `POST /reload`; told whether it starts when asked
    /// through the handle.
    Reload(Option<Verdict>),
    /// SIGUSR2 or `POST /upgrade`; told whether it starts when asked
    /// through the handle.
    Upgrade(Option<Verdict>),
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
    /// The shard's hand-off slot (the same for every incarnation).
    pub(crate) handoff: Arc<Handoff>,
    /// The incarnation this one replaces, when a rolling reload started it.
    pub(crate) predecessor: Option<u32>,
    /// HTTPS: the process's one TLS configuration (`tls/`).
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
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

    // Before anything is bound: a bad certificate is a start error. The
    // ticket keys of the process this one upgrades, if it handed any over.
    let inherited_tickets = upgrade::take_ticket_keys();
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(crate::tls::Tls::load(
            files,
            inherited_tickets.as_deref(),
        )?)),
        None => None,
    };
    drop(inherited_tickets);
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
    let shards = placement
        .into_iter()
        .zip(sockets.shards)
        .map(|(cpu, sockets)| shell::Slot::new(cpu, sockets))
        .collect();
    let config = Arc::new(config);
    let settings = machine::Settings {
        shards: count,
        restart: config.restart,
        shutdown_timeout: config.shutdown_timeout,
        upgrade_timeout: config.upgrade_timeout,
        watchdog,
        can_upgrade: program.is_some(),
    };
    let mut machine = machine::Machine::new(settings, Instant::now());
    let mut shell = shell::Shell {
        config,
        starter,
        io_memory,
        registry,
        balance,
        subscribers,
        events_tx,
        addrs: sockets.addrs,
        notifier,
        parent,
        watchdog,
        shards,
        board,
        started,
        admin,
        admin_socket,
        program,
        args,
        tls,
    };
    // The first incarnations start before the app's coordinator code runs.
    if let Some(outcome) = shell.carry_out_all(&mut machine) {
        return outcome;
    }
    tracing::debug!(shards = count, io_memory, "shards started");

    let app = app.map(|app| {
        std::thread::Builder::new()
            .name("forkless-coordinator".into())
            .spawn(move || app(app_coordinator))
    });
    let outcome = shell.supervise(&mut machine, &events);
    signals.stop();
    // The app's coordinator code sees `recv() == None` from here on; it is
    // not waited for (it may be blocked in code of its own).
    drop(done);
    if let Some(Err(error)) = app {
        tracing::error!(%error, "could not start the app's coordinator thread");
    }
    if outcome.is_ok() {
        shell.join_all();
    }
    outcome
}

fn preflight_error(error: shard::preflight::PreflightError) -> Error {
    Error::new(ErrorKind::Preflight(error.to_string()))
}
