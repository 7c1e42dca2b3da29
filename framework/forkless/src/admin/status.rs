//! `/status`: the per-shard table as JSON, what `pm2 list` shows, and what
//! the dashboard (`GET /`) and `top` draw.
//!
//! Requests per second and p99 latency come from two snapshots of the
//! counters: the one taken now and the previous one kept in [`Rates`]. The
//! previous one is replaced once it is at least [`RATE_WINDOW`] old, so a
//! monitor polling every second sees the figures over about the last
//! second, and two clients polling at once do not shrink the window to
//! nothing. The first call measures from the start of the runtime.
//!
//! `p99_ms` is estimated from the latency histogram's buckets over that
//! window the way Prometheus's `histogram_quantile` does (linear within the
//! bucket the 99th percentile falls in; the last finite bound when it falls
//! above every bound); `null` when the window saw no request.
//!
//! The document only ever gains fields: clients that parse it (`top`,
//! scripts) keep working across versions. `events` is the timeline of the
//! most recent lifecycle events (`coordinator/timeline.rs`), oldest first,
//! each with `seq`, `at_unix_ms`, `kind`, `shard` and `incarnation` (`null`
//! for a process-wide event) and `detail`.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::CounterSnapshot;
use crate::coordinator::board::View;
use crate::coordinator::timeline::Entry;

/// Shortest span a requests/s or p99 figure is measured over.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The previous snapshot of every shard's counters.
#[derive(Debug)]
pub(crate) struct Rates {
    previous: Mutex<Snapshot>,
}

#[derive(Clone, Debug)]
struct Snapshot {
    at: Instant,
    shards: Vec<CounterSnapshot>,
}

/// One shard's figures over the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Window {
    pub(crate) per_second: f64,
    /// Requests answered in the window, by latency bucket.
    pub(crate) latency: [u64; CounterSnapshot::LATENCY_BOUNDS.len() + 1],
}

impl Rates {
    /// Rates measured from `start` (when every count was zero).
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            previous: Mutex::new(Snapshot {
                at: start,
                shards: Vec::new(),
            }),
        }
    }

    /// Each shard's figures between the previous snapshot and `shards`
    /// taken at `now`; keeps `shards` as the next previous one when the
    /// previous is [`RATE_WINDOW`] old.
    pub(crate) fn measure(&self, now: Instant, shards: &[CounterSnapshot]) -> Vec<Window> {
        let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(previous.at).as_secs_f64();
        let zero = CounterSnapshot::default();
        let windows = shards
            .iter()
            .enumerate()
            .map(|(i, counters)| {
                let before = previous.shards.get(i).unwrap_or(&zero);
                let mut latency = counters.latency;
                for (bucket, earlier) in latency.iter_mut().zip(before.latency) {
                    *bucket = bucket.saturating_sub(earlier);
                }
                let requests = counters.requests.saturating_sub(before.requests);
                Window {
                    per_second: if elapsed > 0.0 {
                        requests as f64 / elapsed
                    } else {
                        0.0
                    },
                    latency,
                }
            })
            .collect();
        if now.saturating_duration_since(previous.at) >= RATE_WINDOW {
            *previous = Snapshot {
                at: now,
                shards: shards.to_vec(),
            };
        }
        windows
    }
}

/// The `q` quantile (0 to 1) of the requests counted in `buckets` (one per
/// [`CounterSnapshot::LATENCY_BOUNDS`], and one above), or `None` when
/// there are none.
pub(crate) fn quantile(q: f64, buckets: &[u64]) -> Option<Duration> {
    let bounds = CounterSnapshot::LATENCY_BOUNDS;
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 {
                Duration::ZERO
            } else {
                bounds[i - 1]
            };
            let share = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower).mul_f64(share));
        }
        below += count;
    }
    bounds.last().copied()
}

/// Rounds to 0.1, which is all a per-second rate or an uptime needs.
fn tenths(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// The p99 of `buckets` in milliseconds, to the microsecond; `null` for none.
fn p99_ms(buckets: &[u64]) -> Value {
    quantile(0.99, buckets).map_or(Value::Null, |p99| {
        json!((p99.as_secs_f64() * 1e6).round() / 1e3)
    })
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn event(entry: &Entry) -> Value {
    json!({
        "seq": entry.seq,
        "at_unix_ms": unix_ms(entry.at),
        "kind": entry.kind,
        "shard": entry.shard,
        "incarnation": entry.incarnation,
        "detail": entry.detail,
    })
}

/// The `/status` document for `view`, with rates from `rates`, taken at
/// `now` (`wall` on the system clock).
pub(crate) fn render(view: &View, rates: &Rates, now: Instant, wall: SystemTime) -> Value {
    let counters: Vec<CounterSnapshot> = view.shards.iter().map(|s| s.counters).collect();
    let windows = rates.measure(now, &counters);
    let table: Vec<Value> = view
        .shards
        .iter()
        .zip(&windows)
        .map(|(shard, window)| {
            let c = &shard.counters;
            json!({
                "shard": shard.id,
                "cpu": shard.cpu,
                "state": shard.phase.name(),
                "incarnation": shard.incarnation,
                "uptime_seconds": tenths(shard.uptime.as_secs_f64()),
                "restarts": shard.restarts(),
                "reloads": shard.reloads,
                "requests": c.requests,
                "requests_per_second": tenths(window.per_second),
                "p99_ms": p99_ms(&window.latency),
                "connections_open": c.connections_open,
                "connections_accepted": c.connections_accepted,
                "stalls": c.stalls,
                "handler_panics": c.handler_panics,
                "bus_queue_depth": shard.queued,
                "busy_ms": shard.busy.as_millis() as u64,
            })
        })
        .collect();
    let mut all = [0u64; CounterSnapshot::LATENCY_BOUNDS.len() + 1];
    for window in &windows {
        for (total, count) in all.iter_mut().zip(window.latency) {
            *total += count;
        }
    }
    json!({
        "pid": view.pid,
        "shards": view.shards.len(),
        "ready": view.ready,
        "stopping": view.stopping,
        "uptime_seconds": tenths(view.uptime.as_secs_f64()),
        "time_unix_ms": unix_ms(wall),
        "requests": counters.iter().map(|c| c.requests).sum::<u64>(),
        "requests_per_second": tenths(windows.iter().map(|w| w.per_second).sum()),
        "p99_ms": p99_ms(&all),
        "connections_open": counters.iter().map(|c| c.connections_open).sum::<u64>(),
        "restarts": view.shards.iter().map(|s| u64::from(s.restarts())).sum::<u64>(),
        "reloads": view.shards.iter().map(|s| u64::from(s.reloads)).sum::<u64>(),
        "table": table,
        "events": view.events.iter().map(event).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ShardId;
    use crate::bus::mesh::Registry;
    use crate::coordinator::LifecycleKind;
    use crate::coordinator::board::Board;
    use crate::shard::ShardCounters;

    /// Snapshots with these request counts, every request in bucket 0.
    fn counts(requests: &[u64]) -> Vec<CounterSnapshot> {
        requests
            .iter()
            .map(|&n| {
                let mut latency = [0; CounterSnapshot::LATENCY_BOUNDS.len() + 1];
                latency[0] = n;
                CounterSnapshot {
                    requests: n,
                    latency,
                    ..CounterSnapshot::default()
                }
            })
            .collect()
    }

    fn per_second(rates: &Rates, now: Instant, requests: &[u64]) -> Vec<f64> {
        let windows = rates.measure(now, &counts(requests));
        windows.iter().map(|w| w.per_second).collect()
    }

    #[test]
    fn rates_come_from_the_previous_snapshot_once_it_is_a_window_old() {
        let t0 = Instant::now();
        let rates = Rates::new(t0);
        let second = Duration::from_secs(1);
        assert_eq!(per_second(&rates, t0 + 2 * second, &[100, 0]), [50.0, 0.0]);
        // Half a window later: measured from the kept snapshot (t0 + 2 s).
        let half = t0 + 2 * second + second / 2;
        assert_eq!(per_second(&rates, half, &[150, 10]), [100.0, 20.0]);
        // That snapshot was too young to keep; this one replaces it.
        let third = t0 + 3 * second;
        let windows = rates.measure(third, &counts(&[200, 10]));
        assert_eq!(windows[0].per_second, 100.0);
        assert_eq!(windows[0].latency[0], 100, "latency over the window too");
        assert_eq!(windows[1].latency[0], 10);
        assert_eq!(per_second(&rates, t0 + 4 * second, &[200, 10]), [0.0, 0.0]);
    }

    #[test]
    fn the_p99_interpolates_within_its_bucket() {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        let mut buckets = [0u64; CounterSnapshot::LATENCY_BOUNDS.len() + 1];
        assert_eq!(quantile(0.99, &buckets), None, "no request, no p99");
        // 100 requests at most 100 us: p99 is 99 us.
        buckets[0] = 100;
        let p99 = ms(quantile(0.99, &buckets)).expect("a p99");
        assert!((p99 - 0.099).abs() < 1e-9, "{p99}");
        // 98 fast, 2 between 1 and 2.5 ms: the 99th is half-way in that bucket.
        buckets[0] = 98;
        buckets[4] = 2;
        let p99 = ms(quantile(0.99, &buckets)).expect("a p99");
        assert!((p99 - 1.75).abs() < 1e-9, "{p99}");
        // Above every bound: the last bound (10 s).
        let mut slow = [0u64; CounterSnapshot::LATENCY_BOUNDS.len() + 1];
        slow[CounterSnapshot::LATENCY_BOUNDS.len()] = 5;
        assert_eq!(quantile(0.99, &slow), Some(Duration::from_secs(10)));
    }

    #[test]
    fn the_table_has_a_row_per_shard() {
        let counters: Vec<_> = (0..3).map(|_| Arc::new(ShardCounters::default())).collect();
        let board = Board::new(Arc::new(Registry::new(3, 8)), (0..3).map(Some).collect());
        for (id, counters) in counters.iter().enumerate() {
            board.attach(ShardId::new(id), 1, counters.clone());
        }
        for id in 0..3 {
            board.record(ShardId::new(id), 1, &LifecycleKind::Fork);
        }
        board.record(ShardId::new(2), 1, &LifecycleKind::Listening);
        counters[2].request(200, Duration::from_micros(5));
        board.note(
            "start",
            Some((ShardId::new(2), 1)),
            "incarnation 1 started".into(),
        );
        let view = board.view();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        let status = render(&view, &Rates::new(Instant::now()), Instant::now(), wall);
        assert_eq!(status["shards"], 3);
        assert_eq!(status["ready"], false);
        assert_eq!(status["requests"], 1);
        let table = status["table"].as_array().expect("a table");
        assert_eq!(table.len(), 3);
        assert_eq!(table[2]["shard"], 2);
        assert_eq!(table[2]["cpu"], 2);
        assert_eq!(table[2]["state"], "listening");
        assert_eq!(table[0]["state"], "starting");
        assert_eq!(table[2]["requests"], 1);
        assert_eq!(table[1]["restarts"], 0);
        assert_eq!(status["pid"], std::process::id());
        assert_eq!(status["time_unix_ms"], 1_500);
        assert!(table[2]["p99_ms"].as_f64().is_some_and(|ms| ms > 0.0));
        assert_eq!(table[0]["p99_ms"], Value::Null, "no request, no p99");
        let events = status["events"].as_array().expect("events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["kind"], "start");
        assert_eq!(events[0]["shard"], 2);
        assert_eq!(events[0]["seq"], 1);
    }
}
