//! Rolling reload (SIGHUP, `POST /reload`): every shard replaced by a new
//! incarnation, one at a time, on the same listening sockets.
//!
//! For the shard in turn, the old incarnation moves to `retiring` and a new
//! one is spawned; once the new one listens, the old one is told to stop
//! and drains; when it has exited (or after `--shutdown-timeout`), the next
//! shard follows. A new incarnation that cannot start, ends before it
//! listens, or does not listen within `--upgrade-timeout` ends the reload:
//! the old one is made current again (`reinstate`). A shard that is down or
//! still starting is skipped: its restart gives it a new incarnation.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::Level;

use super::{Action, Cause, Machine, Notice};
use crate::Error;
use crate::coordinator::LifecycleKind;
use crate::shard::ShardId;

/// A rolling reload in progress.
#[derive(Debug)]
pub(super) struct Reload {
    /// Shards still to replace, in order.
    pending: VecDeque<ShardId>,
    /// The shard being replaced now.
    step: Option<Step>,
}

/// One shard's turn in a rolling reload.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    shard: ShardId,
    old: u32,
    new: u32,
    /// The new incarnation listens and the old one was told to stop.
    draining: bool,
    /// When waiting for the current phase gives up.
    pub(super) deadline: Instant,
}

impl<O> Machine<O> {
    pub(super) fn reload_step(&self) -> Option<Step> {
        self.reload.as_ref().and_then(|r| r.step)
    }

    /// Why a reload or an upgrade cannot start now, if it cannot.
    pub(super) fn busy_with(&self) -> Option<&'static str> {
        if self.stopping() {
            Some("the process is shutting down")
        } else if self.reload.is_some() {
            Some("a rolling reload is in progress")
        } else if self.upgrade.is_running() {
            Some("a binary upgrade is in progress")
        } else {
            None
        }
    }

    /// Why a rolling reload asked for now would not start, if it would not.
    pub(crate) fn refuses_reload(&self) -> Option<&'static str> {
        self.busy_with()
    }

    pub(super) fn begin_reload(&mut self, now: Instant) {
        if let Some(busy) = self.refuses_reload() {
            self.log(Level::WARN, format!("rolling reload not started: {busy}"));
            return;
        }
        let shards = self.shards.len();
        self.log(
            Level::INFO,
            format!("rolling reload: replacing every shard, one at a time shards={shards}"),
        );
        self.push(Action::Notify(Notice::Reloading));
        self.reload = Some(Reload {
            pending: (0..shards).map(ShardId::new).collect(),
            step: None,
        });
        self.advance_reload(now);
    }

    /// Starts the next shard's turn, or ends the reload when none is left.
    fn advance_reload(&mut self, now: Instant) {
        loop {
            let Some(reload) = &mut self.reload else {
                return;
            };
            if reload.step.is_some() {
                return;
            }
            let Some(id) = reload.pending.pop_front() else {
                self.reload = None;
                let text = "rolling reload done: every shard runs a new incarnation";
                self.log(Level::INFO, text.to_owned());
                self.push(Action::Notify(Notice::Ready { first: false }));
                return;
            };
            let Some(state) = self.shards.get_mut(id.get()) else {
                continue;
            };
            let Some(old) = state.current.take_if(|c| c.listening) else {
                continue;
            };
            state.retiring.push(old);
            let Some(new) = self.spawn(id, Cause::Reload, now) else {
                continue;
            };
            let old = old.number;
            self.log(
                Level::INFO,
                format!("reloading shard shard={id} old={old} new={new}"),
            );
            if let Some(reload) = &mut self.reload {
                reload.step = Some(Step {
                    shard: id,
                    old,
                    new,
                    draining: false,
                    deadline: now + self.settings.upgrade_timeout,
                });
            }
            return;
        }
    }

    /// The step's new incarnation could not start.
    pub(super) fn reload_spawn_failed(&mut self, id: ShardId, error: &Error) {
        let Some(step) = self.reload_step().filter(|s| s.shard == id) else {
            return;
        };
        self.reinstate(id, step.old);
        self.reload = None;
        self.log(
            Level::ERROR,
            format!(
                "rolling reload stopped: cannot start a new incarnation; the old one keeps serving shard={id} error={error}"
            ),
        );
        self.push(Action::Notify(Notice::Ready { first: false }));
    }

    /// Incarnation `number` of `id` listens: if it is the step's new one,
    /// the old one may stop.
    pub(super) fn reload_listening(&mut self, id: ShardId, number: u32, now: Instant) {
        let Some(step) = self.reload_step() else {
            return;
        };
        if step.shard != id || step.new != number || step.draining {
            return;
        }
        let old_runs = self
            .shards
            .get(id.get())
            .is_some_and(|s| s.retiring.iter().any(|i| i.number == step.old));
        if old_runs {
            self.push(Action::Stop {
                shard: id,
                incarnation: step.old,
            });
        }
        let drain = now + self.settings.shutdown_timeout;
        if let Some(Reload {
            step: Some(step), ..
        }) = &mut self.reload
        {
            step.draining = true;
            step.deadline = drain;
        }
        self.publish(id, step.old, LifecycleKind::Disconnect);
    }

    /// A replaced incarnation ended: if it was the step's old one, the
    /// next shard follows.
    pub(super) fn reload_retired(&mut self, id: ShardId, number: u32, now: Instant) {
        if self
            .reload_step()
            .is_some_and(|s| s.shard == id && s.old == number)
        {
            if let Some(reload) = &mut self.reload {
                reload.step = None;
            }
            self.advance_reload(now);
        }
    }

    /// The current incarnation `number` of `id` ended; `true` if it was the
    /// step's new one and had not listened (the reload ends, the old one
    /// stays, and there is no restart).
    pub(super) fn reload_new_ended(
        &mut self,
        id: ShardId,
        number: u32,
        died: Option<&str>,
    ) -> bool {
        if !self
            .reload_step()
            .is_some_and(|s| s.shard == id && s.new == number && !s.draining)
        {
            return false;
        }
        let why = died.unwrap_or("its shard function returned");
        self.abandon_reload_step(&format!(
            "its new incarnation ended before it listened: {why}"
        ));
        true
    }

    /// The step's deadline passed.
    pub(super) fn reload_timer(&mut self, now: Instant) {
        let Some(step) = self.reload_step().filter(|s| now >= s.deadline) else {
            return;
        };
        if step.draining {
            let timeout = self.settings.shutdown_timeout;
            self.log(
                Level::WARN,
                format!(
                    "the replaced incarnation still has requests in flight; the reload moves on shard={} timeout={timeout:?}",
                    step.shard
                ),
            );
            if let Some(reload) = &mut self.reload {
                reload.step = None;
            }
            self.advance_reload(now);
        } else {
            let timeout = self.settings.upgrade_timeout;
            self.abandon_reload_step(&format!(
                "its new incarnation did not listen within {timeout:?} (--upgrade-timeout)"
            ));
        }
    }

    /// The shard in turn will not get its new incarnation: the old one
    /// stays, and the reload ends.
    fn abandon_reload_step(&mut self, why: &str) {
        let Some(step) = self.reload_step() else {
            return;
        };
        self.reload = None;
        if let Some(state) = self.shards.get_mut(step.shard.get())
            && let Some(new) = state.current.take_if(|c| c.number == step.new)
        {
            // Not listening yet; it finishes like a replaced incarnation.
            state.retiring.push(new);
            self.push(Action::Stop {
                shard: step.shard,
                incarnation: step.new,
            });
        }
        self.reinstate(step.shard, step.old);
        self.log(
            Level::ERROR,
            format!(
                "rolling reload stopped: {why}; the old incarnation keeps serving shard={} incarnation={}",
                step.shard, step.old
            ),
        );
        self.push(Action::Notify(Notice::Ready { first: false }));
    }

    /// Makes replaced incarnation `number` of `id` the current one again.
    fn reinstate(&mut self, id: ShardId, number: u32) {
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        let Some(old) = state.take_retiring(number) else {
            return;
        };
        state.current = Some(old);
        self.push(Action::Reinstate {
            shard: id,
            incarnation: number,
            since: old.since,
        });
    }
}
