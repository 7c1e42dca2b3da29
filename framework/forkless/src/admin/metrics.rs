//! `/metrics`: the whole process in the Prometheus text exposition format
//! (version 0.0.4), one scrape for every shard.
//!
//! Every per-shard series carries a `shard="N"` label; the values are read
//! from each shard's counters at scrape time (see [`Board::view`]), never by
//! asking the shard, so a scrape answers while a shard is stuck or
//! restarting. Counters keep counting across restarts and reloads of their
//! shard.
//! `docs/operations.md` lists every metric.
//!
//! [`Board::view`]: super::board::Board::view

use std::fmt::Write;

use crate::CounterSnapshot;
use crate::coordinator::board::{Phase, ShardView, View};

/// The `Content-Type` of the text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Writes one metric family: its help, its type and a sample per shard.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    /// A family with one sample per shard, `value` picked from each.
    fn per_shard<T: std::fmt::Display>(
        &mut self,
        shards: &[ShardView],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&ShardView) -> T,
    ) {
        self.head(name, kind, help);
        for shard in shards {
            self.sample(name, &format!("shard=\"{}\"", shard.id), value(shard));
        }
    }
}

/// Renders `view` as Prometheus text.
pub(crate) fn render(view: &View) -> String {
    let mut out = String::with_capacity(2048 + view.shards.len() * 4096);
    let mut f = Family { out: &mut out };
    let shards = view.shards.as_slice();

    f.head("forkless_shards", "gauge", "Shards this process runs.");
    f.sample("forkless_shards", "", shards.len());
    f.head(
        "forkless_ready",
        "gauge",
        "1 while every shard listens and no shutdown has begun, else 0.",
    );
    f.sample("forkless_ready", "", u8::from(view.ready));
    f.head(
        "forkless_stopping",
        "gauge",
        "1 once a graceful shutdown has begun.",
    );
    f.sample("forkless_stopping", "", u8::from(view.stopping));
    f.head(
        "forkless_start_time_seconds",
        "gauge",
        "When the runtime started, in seconds since the Unix epoch.",
    );
    f.sample("forkless_start_time_seconds", "", view.started_unix);
    f.head(
        "forkless_uptime_seconds",
        "gauge",
        "Seconds since the runtime started.",
    );
    f.sample("forkless_uptime_seconds", "", view.uptime.as_secs_f64());

    f.head(
        "forkless_shard_state",
        "gauge",
        "1 for the state each shard is in (starting, listening, stopping, down), 0 for the others.",
    );
    for shard in shards {
        for phase in Phase::ALL {
            f.sample(
                "forkless_shard_state",
                &format!("shard=\"{}\",state=\"{}\"", shard.id, phase.name()),
                u8::from(shard.phase == phase),
            );
        }
    }
    f.per_shard(
        shards,
        "forkless_shard_restarts_total",
        "counter",
        "Times the shard was restarted after dying.",
        ShardView::restarts,
    );
    f.per_shard(
        shards,
        "forkless_shard_reloads_total",
        "counter",
        "Times the shard was replaced by a rolling reload.",
        |s| s.reloads,
    );
    f.per_shard(
        shards,
        "forkless_shard_uptime_seconds",
        "gauge",
        "Seconds since the shard's current incarnation started.",
        |s| s.uptime.as_secs_f64(),
    );
    f.per_shard(
        shards,
        "forkless_shard_stalls_total",
        "counter",
        "Task polls that ran longer than the stall threshold.",
        |s| s.counters.stalls,
    );
    f.per_shard(
        shards,
        "forkless_shard_busy_seconds",
        "gauge",
        "How long the shard's current task poll has been running (0 between polls): a shard stuck in one task shows here.",
        |s| s.busy.as_secs_f64(),
    );

    f.head(
        "forkless_http_requests_total",
        "counter",
        "Requests answered, by status class.",
    );
    for shard in shards {
        for (class, count) in CLASSES.iter().zip(shard.counters.by_class) {
            f.sample(
                "forkless_http_requests_total",
                &format!("shard=\"{}\",class=\"{class}\"", shard.id),
                count,
            );
        }
    }
    latency(&mut f, shards);
    f.per_shard(
        shards,
        "forkless_http_handler_panics_total",
        "counter",
        "Handler panics answered with 500.",
        |s| s.counters.handler_panics,
    );
    f.per_shard(
        shards,
        "forkless_http_connections_open",
        "gauge",
        "Connections open now.",
        |s| s.counters.connections_open,
    );
    f.per_shard(
        shards,
        "forkless_http_connections_accepted_total",
        "counter",
        "Connections accepted and served.",
        |s| s.counters.connections_accepted,
    );
    f.per_shard(
        shards,
        "forkless_http_connections_refused_total",
        "counter",
        "Connections refused at the --max-connections limit (answered 503 and closed).",
        |s| s.counters.connections_refused,
    );
    f.per_shard(
        shards,
        "forkless_http_received_bytes_total",
        "counter",
        "Bytes read from client connections (request heads and bodies).",
        |s| s.counters.bytes_received,
    );
    f.per_shard(
        shards,
        "forkless_http_sent_bytes_total",
        "counter",
        "Bytes written to client connections.",
        |s| s.counters.bytes_sent,
    );

    f.per_shard(
        shards,
        "forkless_bus_messages_sent_total",
        "counter",
        "Bus messages the shard sent (to shards and to the coordinator).",
        |s| s.counters.bus_sent,
    );
    f.per_shard(
        shards,
        "forkless_bus_messages_received_total",
        "counter",
        "Bus messages the shard received (from shards and from the coordinator).",
        |s| s.counters.bus_received,
    );
    f.per_shard(
        shards,
        "forkless_bus_queue_depth",
        "gauge",
        "Bus messages waiting for the shard, over every message type.",
        |s| s.queued,
    );
    out
}

/// The request latency histogram: cumulative buckets, sum and count.
fn latency(f: &mut Family<'_>, shards: &[ShardView]) {
    const NAME: &str = "forkless_http_request_duration_seconds";
    f.head(
        NAME,
        "histogram",
        "Time from a request's head being parsed to its response being ready.",
    );
    let bucket = format!("{NAME}_bucket");
    for shard in shards {
        let counters: &CounterSnapshot = &shard.counters;
        let mut cumulative = 0u64;
        for (i, count) in counters.latency.iter().enumerate() {
            cumulative += count;
            let le = match CounterSnapshot::LATENCY_BOUNDS.get(i) {
                Some(bound) => bound.as_secs_f64().to_string(),
                None => "+Inf".to_owned(),
            };
            f.sample(
                &bucket,
                &format!("shard=\"{}\",le=\"{le}\"", shard.id),
                cumulative,
            );
        }
        let labels = format!("shard=\"{}\"", shard.id);
        let sum = counters.latency_sum_ns as f64 / 1e9;
        f.sample(&format!("{NAME}_sum"), &labels, sum);
        f.sample(&format!("{NAME}_count"), &labels, cumulative);
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
