//! A test driver for the [`Machine`] at simulated time (as quinn-proto's
//! `Pair`): it feeds inputs at a clock it moves by hand and collects the
//! actions, carrying out none of them.

use std::time::{Duration, Instant};

use super::{Action, Input, Machine, Settings};
use crate::config::RestartPolicy;
use crate::shard::ShardId;
use crate::shard::control::Exit;

/// Orphans in tests are numbers.
pub(super) type Orphan = u32;

pub(super) struct Driver {
    pub(super) machine: Machine<Orphan>,
    pub(super) start: Instant,
    pub(super) now: Instant,
    /// Actions not looked at yet.
    pub(super) actions: Vec<Action<Orphan>>,
}

/// Settings the tests use: backoff 10 ms doubling to 50 ms, more than 3
/// deaths in 10 s is a crash loop, 5 s to shut down, 1 s to listen.
pub(super) fn settings(shards: usize) -> Settings {
    Settings {
        shards,
        restart: RestartPolicy {
            backoff_start: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(50),
            max_restarts: 3,
            window: Duration::from_secs(10),
        },
        shutdown_timeout: Duration::from_secs(5),
        upgrade_timeout: Duration::from_secs(1),
        watchdog: None,
        can_upgrade: true,
    }
}

pub(super) fn id(shard: usize) -> ShardId {
    ShardId::new(shard)
}

impl Driver {
    pub(super) fn new(settings: Settings) -> Self {
        let start = Instant::now();
        let mut driver = Self {
            machine: Machine::new(settings, start),
            start,
            now: start,
            actions: Vec::new(),
        };
        driver.drain();
        driver
    }

    /// `shards` shards, each with incarnation 1 listening; the start-up's
    /// actions are dropped.
    pub(super) fn serving(shards: usize) -> Self {
        let mut driver = Self::new(settings(shards));
        for shard in 0..shards {
            driver.feed(Input::Online {
                shard: id(shard),
                incarnation: 1,
            });
            driver.listen(shard, 1);
        }
        driver.take();
        driver
    }

    fn drain(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            self.actions.push(action);
        }
    }

    /// Feeds `input` at the driver's clock.
    pub(super) fn feed(&mut self, input: Input<Orphan>) {
        self.machine.handle(self.now, input);
        self.drain();
    }

    /// The actions since the last call.
    pub(super) fn take(&mut self) -> Vec<Action<Orphan>> {
        std::mem::take(&mut self.actions)
    }

    /// Moves the clock to `since` after the start.
    pub(super) fn at(&mut self, since: Duration) {
        self.now = self.start + since;
    }

    /// Moves the clock to the machine's timeout and feeds the timer;
    /// returns how far the clock moved, `None` when no timer is due.
    pub(super) fn tick(&mut self) -> Option<Duration> {
        let at = self.machine.poll_timeout()?;
        let moved = at.saturating_duration_since(self.now);
        self.now = self.now.max(at);
        let busy = vec![None; self.machine.shards.len()];
        self.feed(Input::Timer { busy });
        Some(moved)
    }

    pub(super) fn listen(&mut self, shard: usize, incarnation: u32) {
        self.feed(Input::Listening {
            shard: id(shard),
            incarnation,
        });
    }

    pub(super) fn drained(&mut self, shard: usize, incarnation: u32) {
        self.feed(Input::Drained {
            shard: id(shard),
            incarnation,
        });
    }

    pub(super) fn exit(&mut self, shard: usize, incarnation: u32, exit: Exit) {
        self.feed(Input::Exited {
            shard: id(shard),
            incarnation,
            exit,
        });
    }

    pub(super) fn panic(&mut self, shard: usize, incarnation: u32) {
        self.exit(shard, incarnation, Exit::Panicked("boom".to_owned()));
    }
}

/// The `(shard, incarnation)` of every spawn in `actions`.
pub(super) fn spawns(actions: &[Action<Orphan>]) -> Vec<(usize, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn {
                shard, incarnation, ..
            } => Some((shard.get(), *incarnation)),
            _ => None,
        })
        .collect()
}

/// The `(shard, incarnation)` of every stop in `actions`.
pub(super) fn stops(actions: &[Action<Orphan>]) -> Vec<(usize, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Stop { shard, incarnation } => Some((shard.get(), *incarnation)),
            _ => None,
        })
        .collect()
}

/// The `(shard, incarnation)` of every release in `actions`.
pub(super) fn releases(actions: &[Action<Orphan>]) -> Vec<(usize, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Release { shard, incarnation } => Some((shard.get(), *incarnation)),
            _ => None,
        })
        .collect()
}

/// Whether some log line in `actions` contains `text`.
pub(super) fn logged(actions: &[Action<Orphan>], text: &str) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Log { text: line, .. } if line.contains(text)))
}

/// The exit in `actions`, if any.
pub(super) fn exit_of(actions: &[Action<Orphan>]) -> Option<&Result<(), crate::Error>> {
    actions.iter().find_map(|a| match a {
        Action::Exit(outcome) => Some(outcome),
        _ => None,
    })
}
