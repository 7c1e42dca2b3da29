//! Rolling reload (SIGHUP, `POST /reload`): every shard replaced by a new
//! incarnation, one at a time, on the same listening sockets.
//!
//! For the shard in turn, the old incarnation moves to `retiring` and a new
//! one starts; once the new one listens (`on_listening`), the old one is told
//! to stop and drains; when it has exited (`on_exit`, or after
//! `--shutdown-timeout`), the next shard follows. A new incarnation that ends
//! before it listens, or does not listen within `--upgrade-timeout`, ends the
//! reload: the old one is made current again (`reinstate`).

use std::collections::VecDeque;
use std::time::Instant;

use super::Supervisor;
use crate::shard::ShardId;

/// A rolling reload in progress.
#[derive(Debug)]
pub(super) struct Reload {
    /// Shards still to replace, in order.
    pub(super) pending: VecDeque<ShardId>,
    /// The shard being replaced now.
    pub(super) step: Option<Step>,
}

/// One shard's turn in a rolling reload.
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    pub(super) shard: ShardId,
    pub(super) old: u32,
    pub(super) new: u32,
    /// The new incarnation listens and the old one was told to stop.
    pub(super) draining: bool,
    /// When waiting for the current phase gives up.
    pub(super) deadline: Instant,
}

impl Supervisor {
    pub(super) fn reload_step(&self) -> Option<Step> {
        self.reload.as_ref().and_then(|r| r.step)
    }

    /// Why a reload or an upgrade cannot start now, if it cannot.
    pub(super) fn busy_with(&self) -> Option<&'static str> {
        if self.stopping() {
            Some("the process is shutting down")
        } else if self.reload.is_some() {
            Some("a rolling reload is in progress")
        } else if self.upgrade.is_some() {
            Some("a binary upgrade is in progress")
        } else {
            None
        }
    }

    pub(super) fn begin_reload(&mut self) {
        if let Some(busy) = self.busy_with() {
            tracing::warn!("rolling reload not started: {busy}");
            return;
        }
        tracing::info!(
            shards = self.shards.len(),
            "rolling reload: replacing every shard, one at a time"
        );
        if let Some(notifier) = &self.notifier {
            notifier.notify(&format!(
                "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC={}",
                monotonic_usec()
            ));
        }
        self.reload = Some(Reload {
            pending: (0..self.shards.len()).map(ShardId::new).collect(),
            step: None,
        });
        self.advance_reload();
    }

    /// Starts the next shard's turn, or ends the reload when none is left.
    pub(super) fn advance_reload(&mut self) {
        loop {
            let Some(reload) = &mut self.reload else {
                return;
            };
            if reload.step.is_some() {
                return;
            }
            let Some(id) = reload.pending.pop_front() else {
                self.reload = None;
                tracing::info!("rolling reload done: every shard runs a new incarnation");
                self.notify_ready();
                return;
            };
            let Some(state) = self.shards.get_mut(id.get()) else {
                continue;
            };
            // A shard that is down or still starting gets its new
            // incarnation from its restart, or already is one.
            let Some(old) = state.current.take_if(|c| c.listening) else {
                continue;
            };
            let old_number = old.number;
            state.retiring.push(old);
            self.board.count_reload(id);
            if let Err(error) = self.spawn(id) {
                self.reinstate(id, old_number);
                self.reload = None;
                tracing::error!(
                    shard = id.get(),
                    %error,
                    "rolling reload stopped: cannot start a new incarnation; the old one keeps serving"
                );
                self.notify_ready();
                return;
            }
            let new = self.shards.get(id.get()).map_or(0, |s| s.latest);
            tracing::info!(shard = id.get(), old = old_number, new, "reloading shard");
            if let Some(reload) = &mut self.reload {
                reload.step = Some(Step {
                    shard: id,
                    old: old_number,
                    new,
                    draining: false,
                    deadline: Instant::now() + self.config.upgrade_timeout,
                });
            }
            return;
        }
    }

    /// The shard in turn will not get its new incarnation: the old one
    /// stays, and the reload ends.
    pub(super) fn abandon_reload_step(&mut self, why: String) {
        let Some(step) = self.reload_step() else {
            return;
        };
        self.reload = None;
        if let Some(state) = self.shards.get_mut(step.shard.get())
            && let Some(new) = state.current.take_if(|c| c.number == step.new)
        {
            // Not listening yet; it finishes like a replaced incarnation.
            new.stop();
            state.retiring.push(new);
        }
        self.reinstate(step.shard, step.old);
        tracing::error!(
            shard = step.shard.get(),
            incarnation = step.old,
            "rolling reload stopped: {why}; the old incarnation keeps serving"
        );
        self.notify_ready();
    }

    /// Makes replaced incarnation `number` of `id` the current one again.
    pub(super) fn reinstate(&mut self, id: ShardId, number: u32) {
        let Some(state) = self.shards.get_mut(id.get()) else {
            return;
        };
        let Some(old) = state.take_retiring(number) else {
            return;
        };
        self.registry.activate(id, number);
        self.board.reinstate(id, number, old.since);
        state.current = Some(old);
    }

    pub(super) fn notify_ready(&self) {
        if let Some(notifier) = &self.notifier {
            notifier.notify(&format!(
                "READY=1\nSTATUS=serving on {} shards",
                self.shards.len()
            ));
        }
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
