//! What goes into the [`Machine`](super::Machine) and what comes out: plain
//! data, no sockets, threads or clocks.

use std::time::{Duration, Instant};

use tracing::Level;

use crate::Error;
use crate::config::RestartPolicy;
use crate::coordinator::LifecycleKind;
use crate::shard::ShardId;
use crate::shard::control::Exit;

/// The process id of a binary upgrade's new process.
pub(crate) type Pid = libc::pid_t;

/// What the machine is told once, at the start.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) shards: usize,
    pub(crate) restart: RestartPolicy,
    /// `--shutdown-timeout`: a shutdown's deadline, and how long a reload
    /// waits for a replaced incarnation to finish.
    pub(crate) shutdown_timeout: Duration,
    /// `--upgrade-timeout`: how long a reload waits for a new incarnation
    /// to listen.
    pub(crate) upgrade_timeout: Duration,
    /// The systemd watchdog interval (only when systemd is told anything).
    pub(crate) watchdog: Option<Duration>,
    /// Whether the path of the binary to upgrade to is known.
    pub(crate) can_upgrade: bool,
}

/// What happened, as the shell saw it. `O` is an orphaned connection
/// (a `TcpStream` in the shell; anything in tests).
#[derive(Debug)]
pub(crate) enum Input<O> {
    /// Incarnation `incarnation` of `shard` runs its shard function.
    Online { shard: ShardId, incarnation: u32 },
    /// It accepts connections.
    Listening { shard: ShardId, incarnation: u32 },
    /// Told to stop, it has drained its connections and waits for
    /// [`Action::Release`], serving the bus meanwhile.
    Drained { shard: ShardId, incarnation: u32 },
    /// Its thread ended.
    Exited {
        shard: ShardId,
        incarnation: u32,
        exit: Exit,
    },
    /// [`Action::Spawn`] of it could not be carried out.
    SpawnFailed {
        shard: ShardId,
        incarnation: u32,
        error: Error,
    },
    /// A shutdown signal (SIGTERM, SIGINT).
    Signal(i32),
    /// The app asked for a graceful shutdown.
    Shutdown,
    /// SIGHUP or `POST /reload`.
    Reload,
    /// SIGUSR2 or `POST /upgrade`.
    Upgrade,
    /// [`Action::LaunchUpgrade`] started this process.
    UpgradeStarted(Pid),
    /// [`Action::LaunchUpgrade`] could not start it (the shell said why).
    UpgradeNotStarted,
    /// The upgrade's new process listens on every shard.
    UpgradeReady(Pid),
    /// The upgrade's new process will not take over, and why.
    UpgradeFailed(String),
    /// A stand-in accepted this connection for `from`, which is down.
    Orphan { from: ShardId, orphan: O },
    /// [`Action::Adopt`] found the incarnation's thread ending.
    AdoptRefused {
        shard: ShardId,
        incarnation: u32,
        orphan: O,
    },
    /// [`Machine::poll_timeout`](super::Machine::poll_timeout) came due.
    /// `busy[i]`: how long shard `i`'s live incarnations have been in one
    /// task poll (the watchdog's test).
    Timer { busy: Vec<Option<Duration>> },
}

/// Why an incarnation is spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The process starts.
    First,
    /// The previous incarnation died.
    Restart,
    /// A rolling reload replaces the previous one.
    Reload,
}

/// What systemd (or the upgrade's parent process) is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// `READY=1` with the status; `first` adds `MAINPID` and goes to the
    /// upgrade's parent process too.
    Ready { first: bool },
    /// `RELOADING=1`.
    Reloading,
    /// `STOPPING=1`.
    Stopping,
    /// `MAINPID=`: a binary upgrade's new process took over.
    MainPid(Pid),
    /// `WATCHDOG=1`.
    Watchdog,
}

/// What the shell must do, in order.
#[derive(Debug)]
pub(crate) enum Action<O> {
    /// Start incarnation `incarnation` of `shard`; once started it is
    /// published as `fork`. If it cannot start, say [`Input::SpawnFailed`].
    Spawn {
        shard: ShardId,
        incarnation: u32,
        cause: Cause,
    },
    /// Tell the incarnation to stop accepting and finish.
    Stop { shard: ShardId, incarnation: u32 },
    /// Let the drained incarnation's remaining tasks end (the shutdown
    /// barrier is passed, or a reload replaced it).
    Release { shard: ShardId, incarnation: u32 },
    /// The incarnation ended: join its thread, keep what it counted.
    Forget { shard: ShardId, incarnation: u32 },
    /// A reload gave up: the incarnation it replaced (forked at `since`)
    /// is the current one again.
    Reinstate {
        shard: ShardId,
        incarnation: u32,
        since: Instant,
    },
    /// Hand `orphan` to this listening incarnation; if its thread is
    /// ending, say [`Input::AdoptRefused`].
    Adopt {
        shard: ShardId,
        incarnation: u32,
        orphan: O,
    },
    /// Accept for `shard`, which does not listen (unless one already does,
    /// or it has no sockets).
    StartStandIn(ShardId),
    /// `shard` listens again, or the process stops.
    StopStandIn(ShardId),
    /// A lifecycle event.
    Publish {
        shard: ShardId,
        incarnation: u32,
        kind: LifecycleKind,
    },
    /// Tell systemd.
    Notify(Notice),
    /// A shutdown begins: not ready from now on, and the coordinator
    /// drops its descriptors of the listening sockets.
    BeginStop,
    /// Start the binary upgrade's new process; say [`Input::UpgradeStarted`]
    /// or [`Input::UpgradeNotStarted`].
    LaunchUpgrade,
    /// Stop an upgrade's new process that will not take over.
    StopUpgrade(Pid),
    /// Stop the admin endpoint (a new process answers from now on).
    StopAdmin,
    /// The first time every shard listens: print the addresses.
    Announce,
    /// A log line.
    Log { level: Level, text: String },
    /// The process ends with this outcome; nothing follows.
    Exit(Result<(), Error>),
}
