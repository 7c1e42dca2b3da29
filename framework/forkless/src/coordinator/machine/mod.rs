//! The coordinator's decisions as a deterministic state machine (as
//! quinn-proto's `Connection`): every supervision, shutdown, reload and
//! upgrade rule lives here, and nothing else does.
//!
//! Contract:
//! - No threads, sockets, channels, clocks or logging inside: the shell
//!   feeds [`Input`]s with the time they happened ([`Machine::handle`]),
//!   carries out the [`Action`]s it takes back in order
//!   ([`Machine::poll_action`]) and feeds [`Input::Timer`] when
//!   [`Machine::poll_timeout`] comes due. Nothing blocks; the same inputs
//!   at the same instants give the same actions.
//! - An action the shell could not carry out comes back as an input
//!   ([`Input::SpawnFailed`], [`Input::AdoptRefused`],
//!   [`Input::UpgradeNotStarted`]), handled before the next action.
//! - Once the actions of an input are drained, the machine looks at the
//!   whole: the first time every running shard listens it announces (and
//!   sends `READY=1`), and once no incarnation is left it exits, with the
//!   first failure if there was one.
//! - [`Action::Exit`] is the last action: inputs after it are ignored.
//!
//! - The shutdown barrier: an incarnation told to stop reports
//!   [`Input::Drained`] once its connections are done and keeps serving the
//!   bus until [`Action::Release`]. While the process stops, every drained
//!   incarnation is released once every running one has drained (or
//!   exited); one a reload replaced is released at once (its shard's inbox
//!   belongs to its successor). The shutdown deadline still forces the exit.
//!
//! Restarts follow [`Deaths`] (`policy.rs`); a rolling reload is
//! `reload.rs`; a shutdown and its barrier `stop.rs`; a binary upgrade
//! `upgrade.rs`; orphaned connections `orphans.rs`.

mod input;
mod orphans;
mod reload;
mod stop;
mod upgrade;

#[cfg(test)]
mod barrier_tests;
#[cfg(test)]
mod driver;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::Level;

pub(crate) use input::{Action, Cause, Input, Notice, Pid, Settings};

use super::lifecycle::{ExitReason, LifecycleKind};
use super::policy::{Deaths, Verdict};
use crate::Error;
use crate::bus::mesh::FIRST_INCARNATION;
use crate::error::ErrorKind;
use crate::shard::ShardId;
use crate::shard::control::Exit;
use reload::Reload;
use upgrade::Upgrade;

/// One incarnation the machine knows runs.
#[derive(Clone, Copy, Debug)]
struct Life {
    number: u32,
    listening: bool,
    /// Told to stop, it drained and waits to be released.
    drained: bool,
    /// [`Action::Release`] was sent to it.
    released: bool,
    /// When it was spawned.
    since: Instant,
    cause: Cause,
}

/// What the machine knows about one shard.
#[derive(Debug)]
struct Shard {
    /// The incarnation that serves; `None` while the shard is down.
    current: Option<Life>,
    /// Incarnations a reload replaced (or gave up on), finishing.
    retiring: Vec<Life>,
    /// Number of the latest incarnation spawned.
    latest: u32,
    deaths: Deaths,
    restart_at: Option<Instant>,
}

impl Shard {
    fn listening(&self) -> Option<u32> {
        self.current.filter(|c| c.listening).map(|c| c.number)
    }

    fn take_retiring(&mut self, number: u32) -> Option<Life> {
        let at = self.retiring.iter().position(|i| i.number == number)?;
        Some(self.retiring.remove(at))
    }

    fn running(&self) -> bool {
        self.current.is_some() || !self.retiring.is_empty()
    }
}

/// The coordinator's state; see the module docs.
#[derive(Debug)]
pub(crate) struct Machine<O> {
    settings: Settings,
    shards: Vec<Shard>,
    actions: VecDeque<Action<O>>,
    /// An input was handled (the announcement waits for one).
    woken: bool,
    announced: bool,
    exited: bool,
    stop_deadline: Option<Instant>,
    failure: Option<Error>,
    reload: Option<Reload>,
    upgrade: Upgrade,
    /// A binary upgrade took over: this process drains and exits.
    handed_over: bool,
    /// Connections stand-ins accepted while no shard listened.
    orphans: VecDeque<O>,
    /// Where the next orphan goes (round robin over listening shards).
    next_adopter: usize,
    next_watchdog: Option<Instant>,
}

impl<O> Machine<O> {
    /// A machine that spawns every shard's first incarnation.
    pub(crate) fn new(settings: Settings, now: Instant) -> Self {
        let shards = (0..settings.shards)
            .map(|_| Shard {
                current: None,
                retiring: Vec::new(),
                // The first spawn is the incarnation the bus keeps the
                // inbox for until then (see `Registry::new`).
                latest: FIRST_INCARNATION - 1,
                deaths: Deaths::default(),
                restart_at: None,
            })
            .collect();
        let mut machine = Self {
            next_watchdog: settings.watchdog.map(|every| now + every),
            settings,
            shards,
            actions: VecDeque::new(),
            woken: false,
            announced: false,
            exited: false,
            stop_deadline: None,
            failure: None,
            reload: None,
            upgrade: Upgrade::None,
            handed_over: false,
            orphans: VecDeque::new(),
            next_adopter: 0,
        };
        for index in 0..machine.shards.len() {
            machine.spawn(ShardId::new(index), Cause::First, now);
        }
        machine
    }

    /// The next action to carry out, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action<O>> {
        if self.actions.is_empty() {
            self.settle();
        }
        self.actions.pop_front()
    }

    /// When to feed [`Input::Timer`] next (`None`: only on an input).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.exited {
            return None;
        }
        self.shards
            .iter()
            .filter_map(|s| s.restart_at)
            .chain(self.stop_deadline)
            .chain(self.next_watchdog)
            .chain(self.reload_step().map(|step| step.deadline))
            .min()
    }

    /// Takes in what happened at `now`.
    pub(crate) fn handle(&mut self, now: Instant, input: Input<O>) {
        if self.exited {
            return;
        }
        self.woken = true;
        match input {
            Input::Online { shard, incarnation } => {
                self.publish(shard, incarnation, LifecycleKind::Online);
            }
            Input::Listening { shard, incarnation } => self.on_listening(shard, incarnation, now),
            Input::Drained { shard, incarnation } => self.on_drained(shard, incarnation),
            Input::Exited {
                shard,
                incarnation,
                exit,
            } => self.on_exit(shard, incarnation, exit, now),
            Input::SpawnFailed {
                shard,
                incarnation,
                error,
            } => self.on_spawn_failed(shard, incarnation, error, now),
            Input::Signal(signal) => {
                if self.stopping() {
                    self.log(
                        Level::WARN,
                        format!("second signal: forcing exit signal={signal}"),
                    );
                    self.exit(Err(Error::new(ErrorKind::ShutdownForced)));
                    return;
                }
                self.log(
                    Level::INFO,
                    format!("shutting down gracefully signal={signal}"),
                );
                self.begin_stop(now);
            }
            Input::Shutdown => {
                if !self.stopping() {
                    let text = "shutdown requested; shutting down gracefully";
                    self.log(Level::INFO, text.to_owned());
                    self.begin_stop(now);
                }
            }
            Input::Reload => self.begin_reload(now),
            Input::Upgrade => self.begin_upgrade(),
            Input::UpgradeStarted(pid) => self.upgrade = Upgrade::Pending(pid),
            Input::UpgradeNotStarted => self.upgrade = Upgrade::None,
            Input::UpgradeReady(pid) => self.on_upgrade_ready(pid, now),
            Input::UpgradeFailed(why) => self.on_upgrade_failed(&why),
            Input::Orphan { from, orphan } => {
                self.log(
                    Level::TRACE,
                    format!("handing on a connection of a shard that is down shard={from}"),
                );
                self.orphans.push_back(orphan);
                self.place_orphans();
            }
            Input::AdoptRefused {
                shard,
                incarnation,
                orphan,
            } => self.on_adopt_refused(shard, incarnation, orphan),
            Input::Timer { busy } => self.on_timer(now, &busy),
        }
    }

    fn stopping(&self) -> bool {
        self.stop_deadline.is_some()
    }

    fn push(&mut self, action: Action<O>) {
        self.actions.push_back(action);
    }

    fn log(&mut self, level: Level, text: String) {
        self.push(Action::Log { level, text });
    }

    fn publish(&mut self, shard: ShardId, incarnation: u32, kind: LifecycleKind) {
        self.push(Action::Publish {
            shard,
            incarnation,
            kind,
        });
    }

    fn exit(&mut self, outcome: Result<(), Error>) {
        self.exited = true;
        self.push(Action::Exit(outcome));
    }

    /// After an input's actions: release drained incarnations the barrier
    /// no longer holds, announce the first time every running shard
    /// listens, exit once no incarnation is left.
    fn settle(&mut self) {
        if self.exited {
            return;
        }
        self.release_drained();
        if self.woken
            && !self.announced
            && self
                .shards
                .iter()
                .all(|s| s.listening().is_some() || s.current.is_none())
        {
            self.announced = true;
            if self.shards.iter().any(|s| s.listening().is_some()) {
                self.push(Action::Announce);
            }
            self.push(Action::Notify(Notice::Ready { first: true }));
        }
        if self
            .shards
            .iter()
            .all(|s| !s.running() && s.restart_at.is_none())
        {
            let outcome = self.failure.take().map_or(Ok(()), Err);
            self.exit(outcome);
        }
    }

    /// Spawns the next incarnation of `id`; it becomes the current one
    /// (any previous one must have been moved out of `current` first).
    fn spawn(&mut self, id: ShardId, cause: Cause, now: Instant) -> Option<u32> {
        let state = self.shards.get_mut(id.get())?;
        let number = state.latest + 1;
        state.latest = number;
        state.restart_at = None;
        state.current = Some(Life {
            number,
            listening: false,
            drained: false,
            released: false,
            since: now,
            cause,
        });
        self.push(Action::Spawn {
            shard: id,
            incarnation: number,
            cause,
        });
        Some(number)
    }

    fn on_spawn_failed(&mut self, id: ShardId, number: u32, error: Error, now: Instant) {
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        let Some(life) = state.current.take_if(|c| c.number == number) else {
            return;
        };
        // The number is used again by the next spawn.
        state.latest = number - 1;
        match life.cause {
            Cause::First => {
                // Nothing else the start-up asked for happens.
                self.actions.clear();
                self.exit(Err(error));
            }
            Cause::Restart => self.restart_failed(id, &error, now),
            Cause::Reload => self.reload_spawn_failed(id, &error),
        }
    }

    /// A restart could not start its incarnation (out of descriptors,
    /// memory, locked memory): it counts as a death and is tried again
    /// after the backoff, while the other shards serve on; only the
    /// crash-loop limit gives up.
    fn restart_failed(&mut self, id: ShardId, error: &Error, now: Instant) {
        if self.stopping() {
            return;
        }
        let policy = self.settings.restart;
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        match state.deaths.record(&policy, now) {
            Verdict::RestartAt(at) => {
                state.restart_at = Some(at);
                let backoff = at.saturating_duration_since(now);
                self.log(
                    Level::WARN,
                    format!(
                        "cannot restart shard: {error}; trying again shard={id} backoff={backoff:?}"
                    ),
                );
            }
            Verdict::GiveUp { deaths } => {
                let message = format!(
                    "crash loop: {deaths} deaths within {:?}, last: cannot restart: {error}",
                    policy.window
                );
                self.log(Level::ERROR, format!("{message}; stopping shard={id}"));
                self.fail(Error::shard(id, message), now);
            }
        }
    }

    fn on_listening(&mut self, id: ShardId, number: u32, now: Instant) {
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        if let Some(current) = state.current.as_mut().filter(|c| c.number == number) {
            current.listening = true;
            // Back: it accepts for itself.
            self.push(Action::StopStandIn(id));
        }
        self.publish(id, number, LifecycleKind::Listening);
        self.place_orphans();
        self.reload_listening(id, number, now);
    }

    fn on_exit(&mut self, id: ShardId, number: u32, exit: Exit, now: Instant) {
        let (reason, died) = match exit {
            Exit::Returned => (ExitReason::Returned, None),
            Exit::Failed(why) => (ExitReason::Failed(why.clone()), Some(why)),
            Exit::Panicked(why) => (ExitReason::Panicked(why.clone()), Some(why)),
        };
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        // An incarnation a reload replaced has finished its requests.
        if state.take_retiring(number).is_some() {
            self.push(Action::Forget {
                shard: id,
                incarnation: number,
            });
            let text = match &died {
                None => (
                    Level::DEBUG,
                    format!("replaced incarnation finished shard={id} number={number}"),
                ),
                Some(why) => (
                    Level::WARN,
                    format!(
                        "replaced incarnation ended with an error while finishing: {why} shard={id} number={number}"
                    ),
                ),
            };
            self.log(text.0, text.1);
            self.publish(id, number, LifecycleKind::Exit(reason));
            self.reload_retired(id, number, now);
            return;
        }
        if state.current.take_if(|c| c.number == number).is_none() {
            return;
        }
        self.push(Action::Forget {
            shard: id,
            incarnation: number,
        });
        self.publish(id, number, LifecycleKind::Exit(reason));
        if !self.stopping() {
            self.push(Action::StartStandIn(id));
        }
        if self.reload_new_ended(id, number, died.as_deref()) {
            return;
        }
        let Some(why) = died else {
            return;
        };
        let stopping = self.stopping();
        let policy = self.settings.restart;
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        let verdict = (!stopping).then(|| state.deaths.record(&policy, now));
        match verdict {
            Some(Verdict::RestartAt(at)) => {
                state.restart_at = Some(at);
                let backoff = at.saturating_duration_since(now);
                self.log(
                    Level::WARN,
                    format!("restarting shard shard={id} backoff={backoff:?}"),
                );
            }
            Some(Verdict::GiveUp { deaths }) => {
                let message = format!(
                    "crash loop: {deaths} deaths within {:?}, last: {why}",
                    policy.window
                );
                self.log(Level::ERROR, format!("{message}; stopping shard={id}"));
                self.fail(Error::shard(id, message), now);
            }
            None => self.fail(Error::shard(id, why), now),
        }
    }

    /// Remembers the first failure and stops.
    fn fail(&mut self, error: Error, now: Instant) {
        if self.failure.is_none() {
            self.failure = Some(error);
        }
        if !self.stopping() {
            self.begin_stop(now);
        }
    }

    /// A restart came due, the watchdog is due, a reload step waited too
    /// long, or the shutdown deadline passed.
    fn on_timer(&mut self, now: Instant, busy: &[Option<Duration>]) {
        if let (Some(every), Some(next)) = (self.settings.watchdog, self.next_watchdog)
            && now >= next
        {
            self.next_watchdog = Some(now + every);
            self.ping_watchdog(every, busy);
        }
        if let Some(deadline) = self.stop_deadline
            && now >= deadline
        {
            let timeout = self.settings.shutdown_timeout;
            self.log(
                Level::ERROR,
                format!(
                    "shutdown deadline passed with work in flight; forcing exit timeout={timeout:?}"
                ),
            );
            self.exit(Err(Error::new(ErrorKind::ShutdownForced)));
            return;
        }
        self.reload_timer(now);
        let due: Vec<ShardId> = self
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.restart_at.is_some_and(|at| at <= now))
            .map(|(i, _)| ShardId::new(i))
            .collect();
        for id in due {
            self.spawn(id, Cause::Restart, now);
        }
    }

    /// `WATCHDOG=1`, but only after `READY=1` (systemd's start timeout
    /// covers the start) and while every running shard's loop is alive: a
    /// shard stuck in one task poll for a whole interval withholds it, so
    /// systemd restarts the process.
    fn ping_watchdog(&mut self, every: Duration, busy: &[Option<Duration>]) {
        if !self.announced {
            return;
        }
        let stuck = self.shards.iter().enumerate().find_map(|(i, s)| {
            let busy = busy.get(i).copied().flatten().filter(|_| s.running())?;
            (busy >= every).then_some((i, busy))
        });
        match stuck {
            None => self.push(Action::Notify(Notice::Watchdog)),
            Some((shard, busy)) => self.log(
                Level::ERROR,
                format!(
                    "shard stuck in one task; withholding the systemd watchdog ping shard={shard} busy={busy:?}"
                ),
            ),
        }
    }
}
