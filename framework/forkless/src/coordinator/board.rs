//! The board: what the coordinator knows about each shard, shared with the
//! admin endpoint.
//!
//! The coordinator writes it on every lifecycle event it publishes and when
//! a shutdown begins; the admin thread reads it. Readiness is an atomic flag
//! ([`Board::is_ready`]), recomputed under the board's lock on each event:
//! set while every shard listens and no shutdown has begun, cleared by
//! [`Board::begin_stop`] before any shard is told to stop, and cleared while
//! any shard is not listening (starting, restarting, down). The per-shard
//! counters are read straight from their atomics, so a view never waits for
//! a shard: each incarnation of a shard has counters of its own (two are
//! alive at once during a rolling reload), and a shard's numbers are what
//! its retired incarnations counted plus what its live ones count now.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::ShardId;
use crate::bus::mesh::Registry;
use crate::coordinator::LifecycleKind;
use crate::coordinator::timeline::{Entry, Timeline};
use crate::shard::{CounterSnapshot, ShardCounters};

/// Where a shard is in its lifecycle, as the admin endpoint reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Forked or online, not yet listening.
    Starting,
    /// Accepting connections.
    Listening,
    /// Told to stop: finishing what is in flight.
    Stopping,
    /// Its thread ended (waiting for a restart, or for good).
    Down,
}

impl Phase {
    pub(crate) const ALL: [Phase; 4] = [
        Phase::Starting,
        Phase::Listening,
        Phase::Stopping,
        Phase::Down,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Listening => "listening",
            Phase::Stopping => "stopping",
            Phase::Down => "down",
        }
    }
}

/// The coordinator's record of one shard.
#[derive(Clone, Copy, Debug)]
struct Life {
    phase: Phase,
    /// 0 before the first fork.
    incarnation: u32,
    /// When the current incarnation was forked.
    since: Instant,
    /// Incarnations started after a death.
    restarts: u32,
    /// Incarnations started by a rolling reload.
    reloads: u32,
}

/// The counters of one shard: its live incarnations', and the sum of what
/// its retired ones counted.
#[derive(Debug, Default)]
struct Tally {
    live: Vec<(u32, Arc<ShardCounters>)>,
    retired: CounterSnapshot,
}

impl Tally {
    fn snapshot(&self) -> CounterSnapshot {
        let mut total = self.retired;
        for (_, counters) in &self.live {
            total.absorb(&counters.snapshot());
        }
        total
    }

    /// The longest any live incarnation has been in one task poll.
    fn busy_for(&self, now: Instant) -> Option<Duration> {
        self.live.iter().filter_map(|(_, c)| c.busy_for(now)).max()
    }
}

/// What the admin endpoint reads; see the module docs.
pub(crate) struct Board {
    started: Instant,
    started_at: SystemTime,
    ready: AtomicBool,
    stopping: AtomicBool,
    cpus: Vec<Option<usize>>,
    tallies: Vec<Mutex<Tally>>,
    lives: Mutex<Vec<Life>>,
    registry: Arc<Registry>,
    timeline: Mutex<Timeline>,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("shards", &self.cpus.len())
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

/// One shard as seen at one moment.
#[derive(Clone, Debug)]
pub(crate) struct ShardView {
    pub(crate) id: usize,
    pub(crate) cpu: Option<usize>,
    pub(crate) phase: Phase,
    pub(crate) incarnation: u32,
    /// Incarnations started after a death.
    pub(crate) restarts: u32,
    /// Incarnations started by rolling reloads.
    pub(crate) reloads: u32,
    /// Since the current incarnation was forked.
    pub(crate) uptime: Duration,
    pub(crate) counters: CounterSnapshot,
    /// Bus messages waiting for this shard.
    pub(crate) queued: u64,
    /// How long the task it runs now has been in one poll (zero between
    /// polls, and when the shard is not running).
    pub(crate) busy: Duration,
}

impl ShardView {
    /// Restarts after a death so far.
    pub(crate) fn restarts(&self) -> u32 {
        self.restarts
    }
}

/// The whole process as seen at one moment.
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub(crate) ready: bool,
    pub(crate) stopping: bool,
    pub(crate) uptime: Duration,
    /// Seconds since the Unix epoch when the runtime started.
    pub(crate) started_unix: f64,
    pub(crate) pid: u32,
    pub(crate) shards: Vec<ShardView>,
    /// The most recent lifecycle events, oldest first.
    pub(crate) events: Vec<Entry>,
}

impl Board {
    /// A board for shards placed on `cpus`.
    pub(crate) fn new(registry: Arc<Registry>, cpus: Vec<Option<usize>>) -> Arc<Self> {
        let started = Instant::now();
        let life = Life {
            phase: Phase::Down,
            incarnation: 0,
            since: started,
            restarts: 0,
            reloads: 0,
        };
        Arc::new(Self {
            started,
            started_at: SystemTime::now(),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            lives: Mutex::new(vec![life; cpus.len()]),
            tallies: cpus.iter().map(|_| Mutex::default()).collect(),
            cpus,
            registry,
            timeline: Mutex::default(),
        })
    }

    /// Every shard listens and no shutdown has begun.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// A shutdown has begun.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Counts incarnation `incarnation` of `shard` from now on.
    pub(crate) fn attach(&self, shard: ShardId, incarnation: u32, counters: Arc<ShardCounters>) {
        if let Some(tally) = self.tallies.get(shard.get()) {
            lock(tally).live.push((incarnation, counters));
        }
    }

    /// Incarnation `incarnation` of `shard` ended: keep what it counted
    /// (its connections are closed now).
    pub(crate) fn detach(&self, shard: ShardId, incarnation: u32) {
        let Some(tally) = self.tallies.get(shard.get()) else {
            return;
        };
        let mut tally = lock(tally);
        let Some(at) = tally.live.iter().position(|(i, _)| *i == incarnation) else {
            return;
        };
        let (_, counters) = tally.live.remove(at);
        let mut last = counters.snapshot();
        last.connections_open = 0;
        tally.retired.absorb(&last);
    }

    /// The longest any live incarnation of `shard` has been in one task
    /// poll (the systemd watchdog's test).
    pub(crate) fn busy_for(&self, shard: ShardId, now: Instant) -> Option<Duration> {
        lock(self.tallies.get(shard.get())?).busy_for(now)
    }

    /// Records a lifecycle event of `shard` (called by the coordinator for
    /// every event it publishes). A fork makes its incarnation the current
    /// one; events of any other incarnation (one replaced by a reload and
    /// finishing its requests) leave the phase alone.
    pub(crate) fn record(&self, shard: ShardId, incarnation: u32, kind: &LifecycleKind) {
        let mut lives = lock(&self.lives);
        let Some(life) = lives.get_mut(shard.get()) else {
            return;
        };
        if !matches!(kind, LifecycleKind::Fork) && incarnation != life.incarnation {
            return;
        }
        match kind {
            LifecycleKind::Fork => {
                *life = Life {
                    phase: Phase::Starting,
                    incarnation,
                    since: Instant::now(),
                    ..*life
                };
            }
            LifecycleKind::Online => life.phase = Phase::Starting,
            LifecycleKind::Listening => life.phase = Phase::Listening,
            LifecycleKind::Disconnect => life.phase = Phase::Stopping,
            LifecycleKind::Exit(_) => life.phase = Phase::Down,
        }
        let all_listening = lives.iter().all(|l| l.phase == Phase::Listening);
        // Under the lock, so a late event cannot undo `begin_stop`.
        self.ready
            .store(all_listening && !self.is_stopping(), Ordering::Release);
    }

    /// The next incarnation of `shard` is started after a death.
    pub(crate) fn count_restart(&self, shard: ShardId) {
        if let Some(life) = lock(&self.lives).get_mut(shard.get()) {
            life.restarts += 1;
        }
    }

    /// The next incarnation of `shard` is started by a rolling reload.
    pub(crate) fn count_reload(&self, shard: ShardId) {
        if let Some(life) = lock(&self.lives).get_mut(shard.get()) {
            life.reloads += 1;
        }
    }

    /// A rolling reload gave up on `shard`'s new incarnation: the listening
    /// one it was to replace is current again.
    pub(crate) fn reinstate(&self, shard: ShardId, incarnation: u32, since: Instant) {
        let mut lives = lock(&self.lives);
        if let Some(life) = lives.get_mut(shard.get()) {
            *life = Life {
                phase: Phase::Listening,
                incarnation,
                since,
                restarts: life.restarts,
                reloads: life.reloads.saturating_sub(1),
            };
        }
        let all_listening = lives.iter().all(|l| l.phase == Phase::Listening);
        self.ready
            .store(all_listening && !self.is_stopping(), Ordering::Release);
    }

    /// Puts an event on the timeline (see `timeline.rs` for the words):
    /// `shard` is the shard and its incarnation for a per-shard event.
    pub(crate) fn note(&self, kind: &'static str, shard: Option<(ShardId, u32)>, detail: String) {
        let shard = shard.map(|(id, incarnation)| (id.get(), incarnation));
        lock(&self.timeline).push(SystemTime::now(), kind, shard, detail);
    }

    /// A shutdown begins: not ready from now on. Called before any shard is
    /// told to stop.
    pub(crate) fn begin_stop(&self) {
        let _lives = lock(&self.lives);
        self.stopping.store(true, Ordering::Release);
        self.ready.store(false, Ordering::Release);
    }

    /// Why the process is not ready, or `None` when it is.
    pub(crate) fn not_ready_because(&self) -> Option<String> {
        if self.is_stopping() {
            return Some("shutting down".to_owned());
        }
        if self.is_ready() {
            return None;
        }
        let lives = lock(&self.lives);
        let waiting: Vec<String> = lives
            .iter()
            .enumerate()
            .filter(|(_, life)| life.phase != Phase::Listening)
            .map(|(id, life)| format!("shard {id} is {}", life.phase.name()))
            .collect();
        Some(if waiting.is_empty() {
            "not every shard listens yet".to_owned()
        } else {
            waiting.join(", ")
        })
    }

    /// Everything at once, for `/metrics` and `/status`.
    pub(crate) fn view(&self) -> View {
        let lives = lock(&self.lives).clone();
        let now = Instant::now();
        let shards = lives
            .iter()
            .enumerate()
            .map(|(id, life)| {
                let (counters, busy) = self.tallies.get(id).map_or_else(Default::default, |t| {
                    let tally = lock(t);
                    (tally.snapshot(), tally.busy_for(now))
                });
                ShardView {
                    id,
                    cpu: self.cpus.get(id).copied().flatten(),
                    phase: life.phase,
                    incarnation: life.incarnation,
                    restarts: life.restarts,
                    reloads: life.reloads,
                    uptime: now.saturating_duration_since(life.since),
                    counters,
                    queued: self.registry.queued(ShardId::new(id)),
                    busy: busy.unwrap_or_default(),
                }
            })
            .collect();
        View {
            ready: self.is_ready(),
            stopping: self.is_stopping(),
            uptime: now.saturating_duration_since(self.started),
            started_unix: self
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            pid: std::process::id(),
            shards,
            events: lock(&self.timeline).entries(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitReason;

    fn board(shards: usize) -> Arc<Board> {
        let registry = Arc::new(Registry::new(shards, 4));
        Board::new(registry, vec![None; shards])
    }

    fn all(board: &Board, shards: usize, incarnation: u32, kind: LifecycleKind) {
        for id in 0..shards {
            board.record(ShardId::new(id), incarnation, &kind);
        }
    }

    #[test]
    fn ready_once_every_shard_listens() {
        let board = board(2);
        assert!(!board.is_ready());
        all(&board, 2, 1, LifecycleKind::Fork);
        board.record(ShardId::new(0), 1, &LifecycleKind::Listening);
        assert!(!board.is_ready());
        assert_eq!(
            board.not_ready_because().as_deref(),
            Some("shard 1 is starting")
        );
        board.record(ShardId::new(1), 1, &LifecycleKind::Listening);
        assert!(board.is_ready());
        assert_eq!(board.not_ready_because(), None);
    }

    #[test]
    fn a_restarting_shard_makes_the_process_not_ready() {
        let board = board(2);
        all(&board, 2, 1, LifecycleKind::Fork);
        all(&board, 2, 1, LifecycleKind::Listening);
        let dead = LifecycleKind::Exit(ExitReason::Panicked("boom".into()));
        board.record(ShardId::new(1), 1, &dead);
        assert!(!board.is_ready());
        board.count_restart(ShardId::new(1));
        board.record(ShardId::new(1), 2, &LifecycleKind::Fork);
        assert!(!board.is_ready());
        board.record(ShardId::new(1), 2, &LifecycleKind::Listening);
        assert!(board.is_ready());
        let view = board.view();
        assert_eq!(view.shards[1].incarnation, 2);
        assert_eq!(view.shards[1].restarts(), 1);
        assert_eq!(view.shards[0].restarts(), 0);
    }

    #[test]
    fn a_reload_keeps_counting_both_incarnations_and_ignores_the_old_ones_events() {
        let board = board(1);
        let shard = ShardId::new(0);
        let (first, second) = (
            Arc::new(ShardCounters::default()),
            Arc::new(ShardCounters::default()),
        );
        board.attach(shard, 1, first.clone());
        board.record(shard, 1, &LifecycleKind::Fork);
        board.record(shard, 1, &LifecycleKind::Listening);
        first.request(200, Duration::from_micros(10));
        first.connection_opened();

        board.count_reload(shard);
        board.attach(shard, 2, second.clone());
        board.record(shard, 2, &LifecycleKind::Fork);
        board.record(shard, 2, &LifecycleKind::Listening);
        board.record(shard, 1, &LifecycleKind::Disconnect);
        second.request(200, Duration::from_micros(10));
        second.connection_opened();
        let view = board.view();
        assert_eq!(view.shards[0].phase, Phase::Listening);
        assert_eq!(view.shards[0].counters.requests, 2);
        assert_eq!(view.shards[0].counters.connections_open, 2);

        board.detach(shard, 1);
        board.record(shard, 1, &LifecycleKind::Exit(ExitReason::Returned));
        let view = board.view();
        assert!(
            board.is_ready(),
            "the old incarnation's exit is not the shard's"
        );
        assert_eq!(view.shards[0].counters.requests, 2, "what it counted stays");
        assert_eq!(view.shards[0].counters.connections_open, 1);
        assert_eq!(view.shards[0].incarnation, 2);
        assert_eq!((view.shards[0].restarts(), view.shards[0].reloads), (0, 1));
    }

    #[test]
    fn a_shutdown_is_not_ready_for_good() {
        let board = board(1);
        all(&board, 1, 1, LifecycleKind::Fork);
        all(&board, 1, 1, LifecycleKind::Listening);
        assert!(board.is_ready());
        board.begin_stop();
        assert!(!board.is_ready());
        // A shard that (re)starts listening during the shutdown changes nothing.
        all(&board, 1, 1, LifecycleKind::Listening);
        assert!(!board.is_ready());
        assert_eq!(board.not_ready_because().as_deref(), Some("shutting down"));
        assert!(board.view().stopping);
    }
}
