//! Graceful shutdown: a signal, the app, a failure or a finished binary
//! upgrade stops every incarnation; a second signal, or the shutdown
//! deadline (`--shutdown-timeout`), forces the exit (`ShutdownForced`).
//!
//! The barrier: an incarnation that has drained its connections keeps
//! serving the bus (its receivers, `run_on` jobs, calls) until every running
//! incarnation has drained or exited, so cross-shard work that a draining
//! shard still sends completes; then all are released together. A replaced
//! incarnation (rolling reload) is released as soon as it drains: its
//! successor owns the shard's inbox, so nothing new reaches it.

use std::time::Instant;

use tracing::Level;

use super::upgrade::Upgrade;
use super::{Action, Machine, Notice};
use crate::coordinator::LifecycleKind;
use crate::shard::ShardId;

impl<O> Machine<O> {
    /// Not ready from now on (before any shard hears of the stop); no
    /// reload, upgrade, restart or stand-in survives it.
    pub(super) fn begin_stop(&mut self, now: Instant) {
        self.push(Action::BeginStop);
        if !self.handed_over {
            self.push(Action::Notify(Notice::Stopping));
        }
        if let Upgrade::Pending(pid) = std::mem::replace(&mut self.upgrade, Upgrade::None) {
            self.log(
                Level::WARN,
                format!("shutting down: stopping the binary upgrade's new process pid={pid}"),
            );
            self.push(Action::StopUpgrade(pid));
        }
        if self.reload.take().is_some() {
            let text = "shutting down: the rolling reload ends here";
            self.log(Level::INFO, text.to_owned());
        }
        self.stop_deadline = Some(now + self.settings.shutdown_timeout);
        self.orphans.clear();
        let mut stopped = Vec::new();
        for (index, state) in self.shards.iter_mut().enumerate() {
            state.restart_at = None;
            let id = ShardId::new(index);
            self.actions.push_back(Action::StopStandIn(id));
            for life in state.current.iter().chain(&state.retiring) {
                stopped.push((id, life.number));
            }
        }
        for &(shard, incarnation) in &stopped {
            self.push(Action::Stop { shard, incarnation });
        }
        for (shard, incarnation) in stopped {
            self.publish(shard, incarnation, LifecycleKind::Disconnect);
        }
    }
}

impl<O> Machine<O> {
    /// Incarnation `number` of `id` drained; [`settle`](Machine::settle)
    /// decides when it is released.
    pub(super) fn on_drained(&mut self, id: ShardId, number: u32) {
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        let life = state
            .current
            .iter_mut()
            .chain(state.retiring.iter_mut())
            .find(|life| life.number == number);
        if let Some(life) = life {
            life.drained = true;
        }
    }

    /// Releases drained incarnations: while stopping, all of them once
    /// every running incarnation has drained; otherwise the replaced ones.
    pub(super) fn release_drained(&mut self) {
        let stopping = self.stopping();
        let barrier_passed = stopping
            && self
                .shards
                .iter()
                .all(|s| s.current.iter().chain(&s.retiring).all(|life| life.drained));
        let mut released = Vec::new();
        for (index, state) in self.shards.iter_mut().enumerate() {
            let replaced = state.retiring.iter_mut().map(|life| (life, true));
            let current = state.current.iter_mut().map(|life| (life, false));
            for (life, retiring) in current.chain(replaced) {
                let free = barrier_passed || (retiring && !stopping);
                if life.drained && !life.released && free {
                    life.released = true;
                    released.push((ShardId::new(index), life.number));
                }
            }
        }
        if barrier_passed && !released.is_empty() {
            let text = "every shard has drained: releasing them".to_owned();
            self.log(Level::DEBUG, text);
        }
        for (shard, incarnation) in released {
            self.push(Action::Release { shard, incarnation });
        }
    }
}
