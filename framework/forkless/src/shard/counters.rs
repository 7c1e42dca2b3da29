//! Per-shard counters: written by their shard only, readable from anywhere.
//!
//! Each shard owns one cache-line-aligned block of relaxed atomics, so a
//! write is a plain store on the owning core and the coordinator (or a
//! metrics scrape) reads them without asking the shard.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Origin of the `polling_since` timestamps, shared by every shard.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Counters of one shard; see the module docs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardCounters {
    requests: AtomicU64,
    handler_panics: AtomicU64,
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    stalls: AtomicU64,
    /// Nanoseconds after `epoch()` (plus one) at which the running task poll
    /// started; zero between polls.
    polling_since: AtomicU64,
}

/// A point-in-time copy of a shard's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterSnapshot {
    /// Requests answered (any status).
    pub requests: u64,
    /// Handler panics turned into `500` responses.
    pub handler_panics: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Polls that ran longer than the stall threshold.
    pub stalls: u64,
}

fn bump(counter: &AtomicU64) {
    // Single writer: a load and a store, no locked read-modify-write.
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl ShardCounters {
    pub(crate) fn request(&self) {
        bump(&self.requests);
    }

    pub(crate) fn handler_panic(&self) {
        bump(&self.handler_panics);
    }

    pub(crate) fn connection_opened(&self) {
        bump(&self.connections_accepted);
        bump(&self.connections_open);
    }

    pub(crate) fn connection_closed(&self) {
        let open = self.connections_open.load(Ordering::Relaxed);
        self.connections_open
            .store(open.saturating_sub(1), Ordering::Relaxed);
    }

    pub(crate) fn poll_started(&self, at: Instant) {
        let nanos = at.saturating_duration_since(epoch()).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        self.polling_since.store(nanos, Ordering::Relaxed);
    }

    pub(crate) fn poll_ended(&self) {
        self.polling_since.store(0, Ordering::Relaxed);
    }

    /// How long the task running on this shard has been in one poll, if
    /// one is running: a shard whose loop is alive never stays long.
    pub fn busy_for(&self, now: Instant) -> Option<Duration> {
        let since = self.polling_since.load(Ordering::Relaxed).checked_sub(1)?;
        let started = epoch() + Duration::from_nanos(since);
        Some(now.saturating_duration_since(started))
    }

    pub(crate) fn stall(&self) {
        bump(&self.stalls);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            handler_panics: self.handler_panics.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            stalls: self.stalls.load(Ordering::Relaxed),
        }
    }
}
