//! Per-shard counters: written by their shard only, readable from anywhere.
//!
//! Each shard owns one cache-line-aligned block of relaxed atomics, so a
//! write is a plain store on the owning core and the coordinator (or a
//! metrics scrape) reads them without asking the shard.
//!
//! What the request path pays: per request, two counter stores (status
//! class, latency bucket) and one add (latency sum), plus the two clock
//! reads that time it; per socket read or send, one add of the byte count;
//! per bus message, one store on each side. No locks, no allocation, no
//! system calls. Each incarnation of a shard (first start, restart, rolling
//! reload) gets fresh counters, so two incarnations alive at once during a
//! reload never write the same atomics; the admin board adds up the live
//! incarnations and what the retired ones counted, so a shard's totals only
//! grow (except the open-connection gauge).

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
    /// Requests answered, by status class (`1xx` to `5xx`).
    classes: [AtomicU64; STATUS_CLASSES],
    /// Requests answered, by latency bucket (not cumulative).
    latency: [AtomicU64; LATENCY_BUCKETS],
    /// Sum of the latencies, in nanoseconds.
    latency_sum_ns: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    connections_refused: AtomicU64,
    bus_sent: AtomicU64,
    bus_received: AtomicU64,
    handler_panics: AtomicU64,
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    stalls: AtomicU64,
    /// Nanoseconds after `epoch()` (plus one) at which the running task poll
    /// started; zero between polls.
    polling_since: AtomicU64,
}

/// Status classes counted: `1xx` to `5xx` (anything else counts as `5xx`).
const STATUS_CLASSES: usize = 5;

/// Upper bounds of the request latency buckets, in nanoseconds: 100 us to
/// 10 s, in 1-2.5-5 steps. One more bucket counts what is slower.
const LATENCY_BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Latency buckets: one per bound, and one above the last.
const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// A point-in-time copy of a shard's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterSnapshot {
    /// Requests answered (any status): the sum of `by_class`.
    pub requests: u64,
    /// Requests answered by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub by_class: [u64; STATUS_CLASSES],
    /// Requests by latency (from hyper handing over the request to the
    /// response being ready): `latency[i]` counts those at most
    /// [`LATENCY_BOUNDS`](Self::LATENCY_BOUNDS)`[i]` and above the bound
    /// before; the last entry counts those above every bound.
    pub latency: [u64; LATENCY_BUCKETS],
    /// Sum of all request latencies, in nanoseconds.
    pub latency_sum_ns: u64,
    /// Bytes read from client sockets (request heads and bodies).
    pub bytes_received: u64,
    /// Bytes written to client sockets (responses).
    pub bytes_sent: u64,
    /// Connections refused at the connection limit (answered `503`, or
    /// closed unanswered past 64 refusals at once).
    pub connections_refused: u64,
    /// Bus messages this shard sent (to shards and to the coordinator).
    pub bus_sent: u64,
    /// Bus messages this shard received (from shards and the coordinator).
    pub bus_received: u64,
    /// Handler panics turned into `500` responses.
    pub handler_panics: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Polls that ran longer than the stall threshold.
    pub stalls: u64,
}

impl CounterSnapshot {
    /// Adds `other` (another incarnation of the same shard) into this one.
    pub(crate) fn absorb(&mut self, other: &CounterSnapshot) {
        fn add<const N: usize>(into: &mut [u64; N], from: &[u64; N]) {
            for (into, from) in into.iter_mut().zip(from) {
                *into += from;
            }
        }
        self.requests += other.requests;
        add(&mut self.by_class, &other.by_class);
        add(&mut self.latency, &other.latency);
        self.latency_sum_ns += other.latency_sum_ns;
        self.bytes_received += other.bytes_received;
        self.bytes_sent += other.bytes_sent;
        self.connections_refused += other.connections_refused;
        self.bus_sent += other.bus_sent;
        self.bus_received += other.bus_received;
        self.handler_panics += other.handler_panics;
        self.connections_open += other.connections_open;
        self.connections_accepted += other.connections_accepted;
        self.stalls += other.stalls;
    }

    /// Upper bounds of the latency buckets (see [`latency`](Self::latency)).
    ///
    /// ```
    /// use forkless::CounterSnapshot;
    ///
    /// assert_eq!(CounterSnapshot::LATENCY_BOUNDS[0].as_micros(), 100);
    /// assert_eq!(CounterSnapshot::LATENCY_BOUNDS.last().map(|b| b.as_secs()), Some(10));
    /// ```
    pub const LATENCY_BOUNDS: [Duration; LATENCY_BOUNDS_NS.len()] = {
        let mut bounds = [Duration::ZERO; LATENCY_BOUNDS_NS.len()];
        let mut i = 0;
        while i < bounds.len() {
            bounds[i] = Duration::from_nanos(LATENCY_BOUNDS_NS[i]);
            i += 1;
        }
        bounds
    };
}

fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

fn add(counter: &AtomicU64, n: u64) {
    // Single writer: a load and a store, no locked read-modify-write.
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// The latency bucket of `nanos`: the first whose bound is not below it.
fn latency_bucket(nanos: u64) -> usize {
    LATENCY_BOUNDS_NS.partition_point(|&bound| bound < nanos)
}

impl ShardCounters {
    /// A response with `status` was handed to hyper `took` after its request.
    pub(crate) fn request(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, STATUS_CLASSES) - 1;
        bump(&self.classes[class]);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        bump(&self.latency[latency_bucket(nanos)]);
        add(&self.latency_sum_ns, nanos);
    }

    pub(crate) fn received(&self, bytes: usize) {
        add(&self.bytes_received, bytes as u64);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        add(&self.bytes_sent, bytes as u64);
    }

    pub(crate) fn connection_refused(&self) {
        bump(&self.connections_refused);
    }

    pub(crate) fn bus_sent(&self) {
        bump(&self.bus_sent);
    }

    pub(crate) fn bus_received(&self) {
        bump(&self.bus_received);
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
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let by_class = self.classes.each_ref().map(load);
        CounterSnapshot {
            requests: by_class.iter().sum(),
            by_class,
            latency: self.latency.each_ref().map(load),
            latency_sum_ns: load(&self.latency_sum_ns),
            bytes_received: load(&self.bytes_received),
            bytes_sent: load(&self.bytes_sent),
            connections_refused: load(&self.connections_refused),
            bus_sent: load(&self.bus_sent),
            bus_received: load(&self.bus_received),
            handler_panics: self.handler_panics.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            stalls: self.stalls.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_their_class_and_latency_bucket() {
        let counters = ShardCounters::default();
        counters.request(200, Duration::from_micros(50));
        counters.request(204, Duration::from_micros(100));
        counters.request(404, Duration::from_micros(101));
        counters.request(503, Duration::from_secs(11));
        counters.request(101, Duration::ZERO);
        counters.request(999, Duration::from_millis(1));
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.by_class, [1, 2, 0, 1, 2]);
        assert_eq!(snapshot.requests, 6);
        // <= 100 us: 50 us, 100 us and zero; <= 250 us: 101 us; <= 1 ms: 1 ms.
        assert_eq!(snapshot.latency[0], 3);
        assert_eq!(snapshot.latency[1], 1);
        assert_eq!(snapshot.latency[3], 1);
        assert_eq!(snapshot.latency[LATENCY_BUCKETS - 1], 1);
        assert_eq!(snapshot.latency.iter().sum::<u64>(), 6);
        assert_eq!(
            snapshot.latency_sum_ns,
            50_000 + 100_000 + 101_000 + 11_000_000_000 + 1_000_000
        );
    }
}
