//! The thin shell around the [`Machine`]: it receives events, feeds them
//! to the machine with `Instant::now()`, and carries out its actions.
//!
//! Contract: the shell decides nothing. It owns what the machine must not
//! hold (threads, sockets, channels, the systemd sockets, the upgrade's
//! child) and is the one place every per-incarnation table is updated
//! from the actions: the admin [`Board`], the bus's liveness
//! ([`Registry::activate`]/`retire`), the hand-off [`Balance`] and the
//! lifecycle [`Subscribers`] ([`Shell::carry_out`]). It blocks only in
//! [`Shell::supervise`], waiting for the next event or the machine's
//! timeout, and when it joins a thread that has reported its exit.

use std::any::Any;
use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tracing::Level;

use super::board::Board;
use super::lifecycle::{LifecycleEvent, LifecycleKind, Subscribers};
use super::machine::{Action, Cause, Input, Machine, Notice};
use super::timeline;
use super::{Event, ShardParts, Starter, listen, standin, systemd, upgrade};
use crate::bus::mesh::Registry;
use crate::shard::balance::Balance;
use crate::shard::control::{Command, Report, Reporter};
use crate::shard::handoff::Handoff;
use crate::shard::{ShardCounters, ShardId};
use crate::{Config, Error};

/// The machine as the shell drives it: orphans are accepted connections.
pub(super) type Core = Machine<std::net::TcpStream>;

/// One running incarnation's thread and its ends.
struct Running {
    number: u32,
    counters: Arc<ShardCounters>,
    control: flume::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

/// What the shell holds for one shard.
pub(super) struct Slot {
    cpu: Option<usize>,
    /// Its listening sockets; every incarnation gets descriptors of them.
    sockets: Vec<TcpListener>,
    /// Its incarnations that run (two during a reload's step).
    running: Vec<Running>,
    /// Accepts on its sockets while no incarnation of it listens.
    standin: Option<standin::StandIn>,
    /// Where a replaced incarnation hands its state to its successor.
    handoff: Arc<Handoff>,
}

impl Slot {
    pub(super) fn new(cpu: Option<usize>, sockets: Vec<TcpListener>) -> Self {
        Self {
            cpu,
            sockets,
            running: Vec::new(),
            standin: None,
            handoff: Arc::default(),
        }
    }

    fn find(&self, number: u32) -> Option<&Running> {
        self.running.iter().find(|r| r.number == number)
    }
}

pub(super) struct Shell {
    pub(super) config: Arc<Config>,
    pub(super) starter: Starter,
    pub(super) io_memory: usize,
    pub(super) registry: Arc<Registry>,
    pub(super) balance: Arc<Balance>,
    pub(super) subscribers: Arc<Subscribers>,
    pub(super) events_tx: flume::Sender<Event>,
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) notifier: Option<systemd::Notifier>,
    /// The process whose binary upgrade started this one, waiting for
    /// `READY=1`.
    pub(super) parent: Option<systemd::Notifier>,
    /// `WATCHDOG=1` interval.
    pub(super) watchdog: Option<Duration>,
    pub(super) shards: Vec<Slot>,
    /// What the admin endpoint reports: lifecycle state and readiness.
    pub(super) board: Arc<Board>,
    pub(super) started: Instant,
    /// The admin endpoint; dropping it stops it.
    pub(super) admin: Option<Box<dyn Any>>,
    /// The admin listening socket, handed on by a binary upgrade.
    pub(super) admin_socket: Option<TcpListener>,
    /// What a binary upgrade starts.
    pub(super) program: Option<PathBuf>,
    pub(super) args: Vec<OsString>,
    /// HTTPS: the certificates reloaded with the shards, the ticket keys
    /// handed to an upgrade.
    pub(super) tls: Option<Arc<crate::tls::Tls>>,
}

impl Shell {
    /// The event loop; returns the machine's exit.
    pub(super) fn supervise(
        &mut self,
        machine: &mut Core,
        events: &flume::Receiver<Event>,
    ) -> Result<(), Error> {
        loop {
            if let Some(outcome) = self.carry_out_all(machine) {
                return outcome;
            }
            let received = match machine.poll_timeout() {
                Some(at) => events
                    .recv_deadline(at)
                    .map(Some)
                    .map_err(|e| matches!(e, flume::RecvTimeoutError::Disconnected)),
                None => events.recv().map(Some).map_err(|_| true),
            };
            let input = match received {
                Ok(Some(event)) => {
                    answer(machine, &event);
                    if let (Event::Reload(_), Some(tls)) = (&event, &self.tls) {
                        // Before the shards: new incarnations handshake with it.
                        tls.reload();
                    }
                    if let Event::UpgradeFailed(why) = &event {
                        self.board.note("upgrade", None, format!("failed: {why}"));
                    }
                    input(event)
                }
                Ok(None) | Err(false) => Input::Timer { busy: self.busy() },
                // The shell holds a sender: never.
                Err(true) => return Ok(()),
            };
            machine.handle(Instant::now(), input);
        }
    }

    /// Carries out every action the machine has; `Some` once it exits.
    pub(super) fn carry_out_all(&mut self, machine: &mut Core) -> Option<Result<(), Error>> {
        while let Some(action) = machine.poll_action() {
            if let Some(outcome) = self.carry_out(machine, action) {
                return Some(outcome);
            }
        }
        None
    }

    /// Joins every thread still running (after a clean exit).
    pub(super) fn join_all(&mut self) {
        for slot in &mut self.shards {
            for running in &mut slot.running {
                if let Some(thread) = running.thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }

    /// How long each shard has been in one task poll.
    fn busy(&self) -> Vec<Option<Duration>> {
        let now = Instant::now();
        (0..self.shards.len())
            .map(|i| self.board.busy_for(ShardId::new(i), now))
            .collect()
    }

    /// Carries out one action: the one place the tables change.
    fn carry_out(
        &mut self,
        machine: &mut Core,
        action: Action<std::net::TcpStream>,
    ) -> Option<Result<(), Error>> {
        match action {
            Action::Spawn {
                shard,
                incarnation,
                cause,
            } => {
                match cause {
                    Cause::First => {}
                    Cause::Restart => self.board.count_restart(shard),
                    Cause::Reload => self.board.count_reload(shard),
                }
                if let Err(error) = self.spawn(shard, incarnation, cause) {
                    let failed = Input::SpawnFailed {
                        shard,
                        incarnation,
                        error,
                    };
                    machine.handle(Instant::now(), failed);
                }
            }
            Action::Stop { shard, incarnation } => {
                if let Some(running) = self.slot(shard).and_then(|s| s.find(incarnation)) {
                    // A closed channel means its thread is already ending.
                    let _ = running.control.send(Command::Stop);
                }
            }
            Action::Release { shard, incarnation } => {
                if let Some(running) = self.slot(shard).and_then(|s| s.find(incarnation)) {
                    // A closed channel means its thread is already ending.
                    let _ = running.control.send(Command::Release);
                }
            }
            Action::Forget { shard, incarnation } => self.forget(shard, incarnation),
            Action::Reinstate {
                shard,
                incarnation,
                since,
            } => {
                self.registry.activate(shard, incarnation);
                self.board.reinstate(shard, incarnation, since);
            }
            Action::Adopt {
                shard,
                incarnation,
                orphan,
            } => {
                let sent = match self.slot(shard).and_then(|s| s.find(incarnation)) {
                    Some(running) => running.control.send(Command::Adopt(orphan)),
                    None => Err(flume::SendError(Command::Adopt(orphan))),
                };
                if let Err(flume::SendError(Command::Adopt(orphan))) = sent {
                    let refused = Input::AdoptRefused {
                        shard,
                        incarnation,
                        orphan,
                    };
                    machine.handle(Instant::now(), refused);
                }
            }
            Action::StartStandIn(shard) => self.stand_in(shard),
            Action::StopStandIn(shard) => {
                if let Some(slot) = self.slot_mut(shard) {
                    drop(slot.standin.take());
                }
            }
            Action::Publish {
                shard,
                incarnation,
                kind,
            } => self.publish(shard, incarnation, kind),
            Action::Notify(notice) => self.notify(notice),
            Action::BeginStop => {
                self.board.begin_stop();
                let detail = "graceful shutdown began".to_owned();
                self.board.note("shutdown", None, detail);
                // The coordinator's descriptors must not keep the ports
                // open once the shards close theirs.
                self.admin_socket = None;
                for slot in &mut self.shards {
                    slot.sockets.clear();
                }
            }
            Action::LaunchUpgrade => {
                let launched = self.launch_upgrade();
                machine.handle(Instant::now(), launched);
            }
            Action::StopUpgrade(pid) => upgrade::stop(pid),
            Action::StopAdmin => drop(self.admin.take()),
            Action::Announce => self.announce(),
            Action::Log { level, text } => log(level, &text),
            Action::Exit(outcome) => return Some(outcome),
        }
        None
    }

    fn slot(&self, id: ShardId) -> Option<&Slot> {
        self.shards.get(id.get())
    }

    fn slot_mut(&mut self, id: ShardId) -> Option<&mut Slot> {
        self.shards.get_mut(id.get())
    }

    /// Starts incarnation `number` of shard `id`, and publishes its fork.
    fn spawn(&mut self, id: ShardId, number: u32, cause: Cause) -> Result<(), Error> {
        let count = self.registry.shards();
        let Some(slot) = self.shards.get_mut(id.get()) else {
            return Err(Error::config(format!("no shard {id}")));
        };
        let listen = slot
            .sockets
            .iter()
            .map(listen::dup)
            .collect::<Result<Vec<_>, _>>()?;
        let counters = Arc::new(ShardCounters::default());
        let (control, control_rx) = flume::unbounded();
        // The incarnation a reload replaces still runs: the newest before this.
        let predecessor = (cause == Cause::Reload)
            .then(|| slot.running.iter().map(|r| r.number).max())
            .flatten();
        let events = self.events_tx.clone();
        let parts = ShardParts {
            id,
            incarnation: number,
            count,
            cpu: slot.cpu,
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
            handoff: slot.handoff.clone(),
            predecessor,
            tls: self.tls.as_ref().map(|tls| tls.server_config().clone()),
        };
        self.registry.activate(id, number);
        self.board.attach(id, number, counters.clone());
        slot.handoff.started(number);
        let thread = match (self.starter)(parts) {
            Ok(thread) => thread,
            Err(e) => {
                self.board.detach(id, number);
                self.registry.retire(id, number);
                self.balance.retire(id, number);
                slot.handoff.ended(number);
                return Err(Error::io("cannot start a shard thread", e));
            }
        };
        slot.running.push(Running {
            number,
            counters,
            control,
            thread: Some(thread),
        });
        self.publish(id, number, LifecycleKind::Fork);
        let word = match cause {
            Cause::First => "start",
            Cause::Restart => "restart",
            Cause::Reload => "reload",
        };
        let detail = format!("incarnation {number} started");
        self.board.note(word, Some((id, number)), detail);
        Ok(())
    }

    /// An incarnation ended: its thread is joined, the admin board keeps
    /// what it counted, and the connections it still held (a dead thread
    /// closes none) stop counting for the hand-off.
    fn forget(&mut self, id: ShardId, number: u32) {
        let Some(slot) = self.shards.get_mut(id.get()) else {
            return;
        };
        let Some(at) = slot.running.iter().position(|r| r.number == number) else {
            return;
        };
        let mut ended = slot.running.remove(at);
        if let Some(thread) = ended.thread.take() {
            let _ = thread.join();
        }
        self.board.detach(id, number);
        let leaked = ended.counters.snapshot().connections_open;
        self.balance.forget(id, leaked);
    }

    fn publish(&self, shard: ShardId, incarnation: u32, kind: LifecycleKind) {
        self.board.record(shard, incarnation, &kind);
        if let Some((word, detail)) = timeline::shard_event(&kind) {
            self.board.note(word, Some((shard, incarnation)), detail);
        }
        self.subscribers.publish(LifecycleEvent {
            shard,
            incarnation,
            kind,
            at: SystemTime::now(),
        });
    }

    /// Starts a stand-in for shard `id`, unless one runs or it has no
    /// sockets.
    fn stand_in(&mut self, id: ShardId) {
        let events = self.events_tx.clone();
        let Some(slot) = self.shards.get_mut(id.get()) else {
            return;
        };
        if slot.standin.is_some() || slot.sockets.is_empty() {
            return;
        }
        let sockets = slot
            .sockets
            .iter()
            .map(listen::dup)
            .collect::<Result<Vec<_>, _>>();
        let started = sockets.map_err(|e| e.to_string()).and_then(|sockets| {
            standin::StandIn::start(id, sockets, events).map_err(|e| e.to_string())
        });
        match started {
            Ok(standin) => slot.standin = Some(standin),
            Err(error) => tracing::warn!(
                shard = id.get(),
                %error,
                "cannot accept for a shard that is down; its connections wait for it"
            ),
        }
    }

    fn notify(&mut self, notice: Notice) {
        let shards = self.shards.len();
        match notice {
            Notice::Ready { .. } => {
                let detail = format!("serving on {shards} shards");
                self.board.note("ready", None, detail);
            }
            Notice::Reloading => {
                let detail = "rolling reload started".to_owned();
                self.board.note("reload", None, detail);
            }
            Notice::MainPid(pid) => {
                let detail = format!("process {pid} took over");
                self.board.note("upgrade", None, detail);
            }
            Notice::Stopping | Notice::Watchdog => {}
        }
        let state = match notice {
            Notice::Ready { first: true } => {
                let ready = format!(
                    "READY=1\nSTATUS=serving on {shards} shards\nMAINPID={}",
                    std::process::id()
                );
                if let Some(parent) = self.parent.take() {
                    parent.notify(&ready);
                }
                ready
            }
            Notice::Ready { first: false } => format!("READY=1\nSTATUS=serving on {shards} shards"),
            Notice::Reloading => format!(
                "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC={}",
                monotonic_usec()
            ),
            Notice::Stopping => "STOPPING=1".to_owned(),
            Notice::MainPid(pid) => format!("MAINPID={pid}"),
            Notice::Watchdog => "WATCHDOG=1".to_owned(),
        };
        if let Some(notifier) = &self.notifier {
            notifier.notify(&state);
        }
    }

    /// Starts the binary upgrade's new process with every listening socket.
    fn launch_upgrade(&mut self) -> Input<std::net::TcpStream> {
        let Some(program) = self.program.clone() else {
            return Input::UpgradeNotStarted;
        };
        let mut sockets = Vec::new();
        for slot in &self.shards {
            for socket in &slot.sockets {
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
        if let Some(every) = self.watchdog {
            env.push((
                "WATCHDOG_USEC".to_owned(),
                (every * 2).as_micros().to_string(),
            ));
        }
        let tickets = self.tls.as_ref().map(|tls| tls.export_ticket_keys());
        let launch = upgrade::Launch {
            program: &program,
            args: &self.args,
            sockets,
            env,
            tickets: tickets.as_deref(),
        };
        match upgrade::start(launch, self.config.upgrade_timeout, self.events_tx.clone()) {
            Ok(pending) => {
                tracing::info!(
                    pid = pending.pid,
                    binary = %program.display(),
                    "binary upgrade: started the new process; it takes over once every shard of it listens"
                );
                let detail = format!("started process {}", pending.pid);
                self.board.note("upgrade", None, detail);
                Input::UpgradeStarted(pending.pid)
            }
            Err(error) => {
                tracing::error!(
                    binary = %program.display(),
                    %error,
                    "binary upgrade failed to start; this process keeps serving"
                );
                let detail = format!("failed to start: {error}");
                self.board.note("upgrade", None, detail);
                Input::UpgradeNotStarted
            }
        }
    }

    fn announce(&self) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        for addr in &self.addrs {
            crate::log::announce(&mut out, "listening on", &format!("{scheme}://{addr}"));
        }
        let _ = out.flush();
        tracing::info!(
            shards = self.shards.len(),
            elapsed = ?self.started.elapsed(),
            "every shard is serving"
        );
    }
}

/// Tells whoever asked for a reload or an upgrade whether it starts, from
/// the same rule the machine then applies to it.
fn answer(machine: &Core, event: &Event) {
    let (verdict, refusal) = match event {
        Event::Reload(Some(verdict)) => (verdict, machine.refuses_reload()),
        Event::Upgrade(Some(verdict)) => (verdict, machine.refuses_upgrade()),
        _ => return,
    };
    let _ = verdict.send(refusal.map_or(Ok(()), Err));
}

/// What an event means to the machine.
fn input(event: Event) -> Input<std::net::TcpStream> {
    match event {
        Event::Shard(shard, incarnation, Report::Online) => Input::Online { shard, incarnation },
        Event::Shard(shard, incarnation, Report::Listening) => {
            Input::Listening { shard, incarnation }
        }
        Event::Shard(shard, incarnation, Report::Drained) => Input::Drained { shard, incarnation },
        Event::Shard(shard, incarnation, Report::Exited(exit)) => Input::Exited {
            shard,
            incarnation,
            exit,
        },
        Event::Signal(signal) => Input::Signal(signal),
        Event::Shutdown => Input::Shutdown,
        Event::Reload(_) => Input::Reload,
        Event::Upgrade(_) => Input::Upgrade,
        Event::UpgradeReady(pid) => Input::UpgradeReady(pid),
        Event::UpgradeFailed(why) => Input::UpgradeFailed(why),
        Event::Orphan(from, orphan) => Input::Orphan { from, orphan },
    }
}

/// A log line the machine asked for.
fn log(level: Level, text: &str) {
    match level {
        Level::ERROR => tracing::error!("{text}"),
        Level::WARN => tracing::warn!("{text}"),
        Level::INFO => tracing::info!("{text}"),
        Level::DEBUG => tracing::debug!("{text}"),
        _ => tracing::trace!("{text}"),
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as `RELOADING=1` wants it.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs * 1_000_000 + nanos / 1_000
}
