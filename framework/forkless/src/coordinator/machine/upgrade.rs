//! Binary upgrade (SIGUSR2, `POST /upgrade`): the shell starts the new
//! binary with every listening socket; when it reports every shard
//! listening, this process tells systemd the new `MAINPID`, stops its
//! admin endpoint and drains (without `STOPPING=1`: the service is not
//! stopping). If it fails or is not ready in time, this one keeps serving.

use tracing::Level;

use super::{Action, Machine, Notice, Pid};

/// Where a binary upgrade is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Upgrade {
    None,
    /// [`Action::LaunchUpgrade`] was asked for.
    Launching,
    /// The new process runs and has not reported yet.
    Pending(Pid),
}

impl Upgrade {
    pub(super) fn is_running(self) -> bool {
        self != Upgrade::None
    }
}

impl<O> Machine<O> {
    /// Why a binary upgrade asked for now would not start, if it would not.
    pub(crate) fn refuses_upgrade(&self) -> Option<&'static str> {
        self.busy_with().or_else(|| {
            (!self.settings.can_upgrade)
                .then_some("the path of this binary is unknown; pass --upgrade-binary")
        })
    }

    pub(super) fn begin_upgrade(&mut self) {
        if let Some(why) = self.refuses_upgrade() {
            // Busy is a moment's refusal; no binary to run is a mistake.
            let level = if self.settings.can_upgrade {
                Level::WARN
            } else {
                Level::ERROR
            };
            self.log(level, format!("binary upgrade not started: {why}"));
            return;
        }
        self.upgrade = Upgrade::Launching;
        self.push(Action::LaunchUpgrade);
    }

    pub(super) fn on_upgrade_ready(&mut self, pid: Pid, now: std::time::Instant) {
        if self.upgrade != Upgrade::Pending(pid) {
            return;
        }
        self.upgrade = Upgrade::None;
        self.log(
            Level::INFO,
            format!(
                "binary upgrade: the new process serves; this one stops accepting, finishes its requests and exits new_pid={pid}"
            ),
        );
        self.push(Action::Notify(Notice::MainPid(pid)));
        self.handed_over = true;
        // Admin requests go to the new process from now on.
        self.push(Action::StopAdmin);
        self.begin_stop(now);
    }

    pub(super) fn on_upgrade_failed(&mut self, why: &str) {
        if std::mem::replace(&mut self.upgrade, Upgrade::None).is_running() {
            self.log(
                Level::ERROR,
                format!("binary upgrade failed: {why}; this process keeps serving"),
            );
        }
    }
}
