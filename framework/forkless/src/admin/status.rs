//! `/status`: the per-shard table as JSON, what `pm2 list` shows.
//!
//! Requests per second come from two snapshots of the request counters: the
//! one taken now and the previous one kept in [`Rates`]. The previous one is
//! replaced once it is at least [`RATE_WINDOW`] old, so a monitor polling
//! every second sees the rate over about the last second, and two clients
//! polling at once do not shrink the window to nothing. The first call
//! measures from the start of the runtime.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::coordinator::board::View;

/// Shortest span a requests/s figure is measured over.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The previous snapshot of every shard's request count.
#[derive(Debug)]
pub(crate) struct Rates {
    previous: Mutex<Snapshot>,
}

#[derive(Clone, Debug)]
struct Snapshot {
    at: Instant,
    requests: Vec<u64>,
}

impl Rates {
    /// Rates measured from `start` (when every count was zero).
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            previous: Mutex::new(Snapshot {
                at: start,
                requests: Vec::new(),
            }),
        }
    }

    /// Requests per second of each shard between the previous snapshot and
    /// `requests` taken at `now`; keeps `requests` as the next previous one
    /// when the previous is [`RATE_WINDOW`] old.
    pub(crate) fn per_second(&self, now: Instant, requests: &[u64]) -> Vec<f64> {
        let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(previous.at).as_secs_f64();
        let rates = requests
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let before = previous.requests.get(i).copied().unwrap_or(0);
                if elapsed > 0.0 {
                    count.saturating_sub(before) as f64 / elapsed
                } else {
                    0.0
                }
            })
            .collect();
        if now.saturating_duration_since(previous.at) >= RATE_WINDOW {
            *previous = Snapshot {
                at: now,
                requests: requests.to_vec(),
            };
        }
        rates
    }
}

/// Rounds to 0.1, which is all a per-second rate or an uptime needs.
fn tenths(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// The `/status` document for `view`, with rates from `rates`.
pub(crate) fn render(view: &View, rates: &Rates, now: Instant) -> Value {
    let counts: Vec<u64> = view.shards.iter().map(|s| s.counters.requests).collect();
    let per_second = rates.per_second(now, &counts);
    let table: Vec<Value> = view
        .shards
        .iter()
        .zip(&per_second)
        .map(|(shard, rate)| {
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
                "requests_per_second": tenths(*rate),
                "connections_open": c.connections_open,
                "connections_accepted": c.connections_accepted,
                "stalls": c.stalls,
                "handler_panics": c.handler_panics,
                "bus_queue_depth": shard.queued,
                "busy_ms": shard.busy.as_millis() as u64,
            })
        })
        .collect();
    json!({
        "pid": view.pid,
        "shards": view.shards.len(),
        "ready": view.ready,
        "stopping": view.stopping,
        "uptime_seconds": tenths(view.uptime.as_secs_f64()),
        "requests": counts.iter().sum::<u64>(),
        "requests_per_second": tenths(per_second.iter().sum()),
        "connections_open": view.shards.iter().map(|s| s.counters.connections_open).sum::<u64>(),
        "restarts": view.shards.iter().map(|s| u64::from(s.restarts())).sum::<u64>(),
        "table": table,
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

    #[test]
    fn rates_come_from_the_previous_snapshot_once_it_is_a_window_old() {
        let t0 = Instant::now();
        let rates = Rates::new(t0);
        let second = Duration::from_secs(1);
        assert_eq!(rates.per_second(t0 + 2 * second, &[100, 0]), [50.0, 0.0]);
        // Half a window later: measured from the kept snapshot (t0 + 2 s).
        let half = t0 + 2 * second + second / 2;
        assert_eq!(rates.per_second(half, &[150, 10]), [100.0, 20.0]);
        // That snapshot was too young to keep; this one replaces it.
        assert_eq!(rates.per_second(t0 + 3 * second, &[200, 10]), [100.0, 10.0]);
        assert_eq!(rates.per_second(t0 + 4 * second, &[200, 10]), [0.0, 0.0]);
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
        let view = board.view();
        let status = render(&view, &Rates::new(Instant::now()), Instant::now());
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
    }
}
