//! Graceful shutdown: a signal, the app, a failure or a finished binary
//! upgrade stops every incarnation; a second signal, or the shutdown
//! deadline (`--shutdown-timeout`), forces the exit (`ShutdownForced`).

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
