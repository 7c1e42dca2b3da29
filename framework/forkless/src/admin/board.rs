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
//! a shard.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::ShardId;
use crate::bus::mesh::Registry;
use crate::coordinator::LifecycleKind;
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
}

/// What the admin endpoint reads; see the module docs.
pub(crate) struct Board {
    started: Instant,
    started_at: SystemTime,
    ready: AtomicBool,
    stopping: AtomicBool,
    cpus: Vec<Option<usize>>,
    counters: Vec<Arc<ShardCounters>>,
    lives: Mutex<Vec<Life>>,
    registry: Arc<Registry>,
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
    /// Restarts so far: incarnations after the first.
    pub(crate) fn restarts(&self) -> u32 {
        self.incarnation.saturating_sub(1)
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
}

impl Board {
    /// A board for shards placed on `cpus`, counted in `counters`.
    pub(crate) fn new(
        registry: Arc<Registry>,
        shards: impl IntoIterator<Item = (Option<usize>, Arc<ShardCounters>)>,
    ) -> Arc<Self> {
        let started = Instant::now();
        let (cpus, counters): (Vec<_>, Vec<_>) = shards.into_iter().unzip();
        let life = Life {
            phase: Phase::Down,
            incarnation: 0,
            since: started,
        };
        Arc::new(Self {
            started,
            started_at: SystemTime::now(),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            lives: Mutex::new(vec![life; cpus.len()]),
            cpus,
            counters,
            registry,
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

    /// Records a lifecycle event of `shard` (called by the coordinator for
    /// every event it publishes).
    pub(crate) fn record(&self, shard: ShardId, incarnation: u32, kind: &LifecycleKind) {
        let mut lives = self.lives.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(life) = lives.get_mut(shard.get()) else {
            return;
        };
        match kind {
            LifecycleKind::Fork => {
                *life = Life {
                    phase: Phase::Starting,
                    incarnation,
                    since: Instant::now(),
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

    /// A shutdown begins: not ready from now on. Called before any shard is
    /// told to stop.
    pub(crate) fn begin_stop(&self) {
        let _lives = self.lives.lock().unwrap_or_else(PoisonError::into_inner);
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
        let lives = self.lives.lock().unwrap_or_else(PoisonError::into_inner);
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
        let lives = self
            .lives
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let now = Instant::now();
        let shards = lives
            .iter()
            .enumerate()
            .map(|(id, life)| {
                let counters = self.counters.get(id);
                let running = life.phase != Phase::Down;
                ShardView {
                    id,
                    cpu: self.cpus.get(id).copied().flatten(),
                    phase: life.phase,
                    incarnation: life.incarnation,
                    uptime: now.saturating_duration_since(life.since),
                    counters: counters.map(|c| c.snapshot()).unwrap_or_default(),
                    queued: self.registry.queued(ShardId::new(id)),
                    busy: counters
                        .filter(|_| running)
                        .and_then(|c| c.busy_for(now))
                        .unwrap_or_default(),
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitReason;

    fn board(shards: usize) -> Arc<Board> {
        let registry = Arc::new(Registry::new(shards, 4));
        Board::new(
            registry,
            (0..shards).map(|_| (None, Arc::new(ShardCounters::default()))),
        )
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
