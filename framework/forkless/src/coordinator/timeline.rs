//! The timeline: the most recent lifecycle events of the process, with
//! their wall-clock time, as the dashboard and `/status` show them.
//!
//! Contract: pure and bounded. It keeps the last [`KEPT`] entries (older
//! ones fall off), numbers every entry (`seq`, from 1, never reused) so a
//! client polling `/status` can tell which entries it has already seen, and
//! names each event with one word of a fixed vocabulary:
//!
//! | kind       | per   | when                                                       |
//! |------------|-------|------------------------------------------------------------|
//! | `start`    | shard | the first incarnation of a shard is started                |
//! | `ready`    | both  | a shard listens; the process serves on every shard         |
//! | `crash`    | shard | a shard's thread panicked or its shard function failed      |
//! | `exit`     | shard | a shard's function returned (a reload or shutdown ends it) |
//! | `restart`  | shard | a new incarnation is started after a crash                 |
//! | `reload`   | both  | a rolling reload begins; it replaces a shard               |
//! | `stop`     | shard | an incarnation is told to stop and finishes its requests   |
//! | `upgrade`  | process | a binary upgrade starts, fails, or its process takes over |
//! | `shutdown` | process | a graceful shutdown begins                             |
//!
//! The coordinator's shell records them ([`Board::note`]); nothing here
//! reads a clock.
//!
//! [`Board::note`]: super::board::Board::note

use std::collections::VecDeque;
use std::time::SystemTime;

use super::lifecycle::{ExitReason, LifecycleKind};

/// How many entries are kept.
pub(crate) const KEPT: usize = 64;

/// One event on the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// 1 for the first entry, +1 for each one after.
    pub(crate) seq: u64,
    /// When the coordinator saw it.
    pub(crate) at: SystemTime,
    /// One word from the module's table.
    pub(crate) kind: &'static str,
    /// The shard, for a per-shard event.
    pub(crate) shard: Option<usize>,
    /// The shard's incarnation, for a per-shard event.
    pub(crate) incarnation: Option<u32>,
    /// One line for a human (a panic's message, a process id).
    pub(crate) detail: String,
}

/// The last [`KEPT`] entries.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    last_seq: u64,
    entries: VecDeque<Entry>,
}

impl Timeline {
    /// Adds an entry numbered after the last one; drops the oldest past
    /// [`KEPT`].
    pub(crate) fn push(
        &mut self,
        at: SystemTime,
        kind: &'static str,
        shard: Option<(usize, u32)>,
        detail: String,
    ) {
        self.last_seq += 1;
        if self.entries.len() == KEPT {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            seq: self.last_seq,
            at,
            kind,
            shard: shard.map(|(id, _)| id),
            incarnation: shard.map(|(_, incarnation)| incarnation),
            detail,
        });
    }

    /// The kept entries, oldest first.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.entries.iter().cloned().collect()
    }
}

/// The timeline's word and detail for a published lifecycle event of a
/// shard, or `None` for the ones it leaves out (`fork`, recorded with its
/// cause instead; `online`, a step on the way to `ready`).
pub(crate) fn shard_event(kind: &LifecycleKind) -> Option<(&'static str, String)> {
    match kind {
        LifecycleKind::Fork | LifecycleKind::Online => None,
        LifecycleKind::Listening => Some(("ready", "listening".to_owned())),
        LifecycleKind::Disconnect => Some(("stop", "finishing its requests".to_owned())),
        LifecycleKind::Exit(ExitReason::Returned) => Some(("exit", "returned".to_owned())),
        LifecycleKind::Exit(ExitReason::Failed(why)) => Some(("crash", format!("failed: {why}"))),
        LifecycleKind::Exit(ExitReason::Panicked(why)) => {
            Some(("crash", format!("panicked: {why}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn entries_are_numbered_and_the_oldest_fall_off() {
        let mut timeline = Timeline::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        timeline.push(t0, "start", Some((1, 1)), String::new());
        timeline.push(t0, "shutdown", None, "graceful".into());
        let entries = timeline.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].seq, entries[0].kind), (1, "start"));
        assert_eq!(
            (entries[0].shard, entries[0].incarnation),
            (Some(1), Some(1))
        );
        assert_eq!((entries[1].seq, entries[1].shard), (2, None));

        for _ in 0..KEPT {
            timeline.push(t0, "ready", Some((0, 1)), String::new());
        }
        let entries = timeline.entries();
        assert_eq!(entries.len(), KEPT);
        assert_eq!(entries[0].seq, 3, "the first two fell off");
        assert_eq!(entries[KEPT - 1].seq, KEPT as u64 + 2);
    }

    #[test]
    fn lifecycle_events_get_their_word() {
        assert_eq!(shard_event(&LifecycleKind::Fork), None);
        assert_eq!(shard_event(&LifecycleKind::Online), None);
        assert_eq!(
            shard_event(&LifecycleKind::Listening).map(|e| e.0),
            Some("ready")
        );
        let panicked = LifecycleKind::Exit(ExitReason::Panicked("boom".into()));
        assert_eq!(
            shard_event(&panicked),
            Some(("crash", "panicked: boom".to_owned()))
        );
        let returned = LifecycleKind::Exit(ExitReason::Returned);
        assert_eq!(shard_event(&returned).map(|e| e.0), Some("exit"));
    }
}
