//! The Prometheus rendering, parsed back: with `prometheus-parse` (what a
//! scraper reads) and with a strict line-by-line check of the 0.0.4 text
//! format (what `prometheus-parse` forgives: it skips lines it cannot read).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

use super::render;
use crate::bus::mesh::Registry;
use crate::coordinator::LifecycleKind;
use crate::coordinator::board::{Board, View};
use crate::shard::ShardCounters;
use crate::{ExitReason, ShardId};

/// A board of `shards` shards, all listening, and their counters.
fn board(shards: usize) -> (Arc<Board>, Vec<Arc<ShardCounters>>) {
    let counters: Vec<_> = (0..shards)
        .map(|_| Arc::new(ShardCounters::default()))
        .collect();
    let board = Board::new(Arc::new(Registry::new(shards, 8)), vec![Some(0); shards]);
    for (id, counters) in counters.iter().enumerate() {
        board.attach(ShardId::new(id), 1, counters.clone());
        board.record(ShardId::new(id), 1, &LifecycleKind::Fork);
        board.record(ShardId::new(id), 1, &LifecycleKind::Listening);
    }
    (board, counters)
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("the scrape parses")
}

/// Checks every line against the text format; returns the sample lines.
fn strict_check(text: &str) -> usize {
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut samples = 0;
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and text");
            assert!(valid_name(name), "bad metric name in {line:?}");
            assert!(!help.is_empty());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad type in {line:?}"
            );
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} typed twice"
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for pair in labels.split(',') {
                    let (key, quoted) = pair.split_once('=').expect("label=value");
                    assert!(valid_name(key), "bad label name in {line:?}");
                    assert!(
                        quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                        "unquoted label value in {line:?}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| typed.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            typed.contains_key(family),
            "sample before its TYPE: {line:?}"
        );
        samples += 1;
    }
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {metric} {labels:?}"));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{metric} is not a single value: {other:?}"),
    }
}

#[test]
fn an_idle_process_renders_every_family_with_zeros() {
    let (board, _) = board(2);
    let text = render(&board.view());
    let samples = strict_check(&text);
    let scrape = parse(&text);
    // Nothing was skipped: histograms fold their bucket lines (one per
    // bound and `+Inf`) into one parsed sample per shard.
    let folded = 2 * crate::CounterSnapshot::LATENCY_BOUNDS.len();
    assert_eq!(scrape.samples.len() + folded, samples);
    assert_eq!(value(&scrape, "forkless_shards", &[]), 2.0);
    assert_eq!(value(&scrape, "forkless_ready", &[]), 1.0);
    for shard in ["0", "1"] {
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let labels = [("shard", shard), ("class", class)];
            assert_eq!(value(&scrape, "forkless_http_requests_total", &labels), 0.0);
        }
        let state = |s| {
            value(
                &scrape,
                "forkless_shard_state",
                &[("shard", shard), ("state", s)],
            )
        };
        assert_eq!(state("listening"), 1.0);
        assert_eq!(state("down"), 0.0);
    }
}

#[test]
fn counters_come_back_per_shard_with_their_labels() {
    let (board, counters) = board(2);
    for _ in 0..3 {
        counters[0].request(200, Duration::from_micros(80));
    }
    counters[0].request(404, Duration::from_millis(3));
    counters[1].request(500, Duration::from_secs(20));
    counters[1].handler_panic();
    counters[1].connection_opened();
    counters[1].received(120);
    counters[1].sent(3000);
    counters[0].stall();
    counters[0].bus_sent();
    counters[1].bus_received();
    board.record(
        ShardId::new(1),
        1,
        &LifecycleKind::Exit(ExitReason::Panicked("boom".into())),
    );
    board.count_restart(ShardId::new(1));
    board.record(ShardId::new(1), 2, &LifecycleKind::Fork);

    let view: View = board.view();
    let text = render(&view);
    strict_check(&text);
    let scrape = parse(&text);
    let req = |shard, class| {
        value(
            &scrape,
            "forkless_http_requests_total",
            &[("shard", shard), ("class", class)],
        )
    };
    assert_eq!(req("0", "2xx"), 3.0);
    assert_eq!(req("0", "4xx"), 1.0);
    assert_eq!(req("1", "5xx"), 1.0);
    assert_eq!(req("1", "2xx"), 0.0);
    let one = |metric, shard| value(&scrape, metric, &[("shard", shard)]);
    assert_eq!(one("forkless_http_handler_panics_total", "1"), 1.0);
    assert_eq!(one("forkless_http_connections_open", "1"), 1.0);
    assert_eq!(one("forkless_http_connections_accepted_total", "1"), 1.0);
    assert_eq!(one("forkless_http_received_bytes_total", "1"), 120.0);
    assert_eq!(one("forkless_http_sent_bytes_total", "1"), 3000.0);
    assert_eq!(one("forkless_shard_stalls_total", "0"), 1.0);
    assert_eq!(one("forkless_bus_messages_sent_total", "0"), 1.0);
    assert_eq!(one("forkless_bus_messages_received_total", "1"), 1.0);
    assert_eq!(one("forkless_bus_queue_depth", "0"), 0.0);
    assert_eq!(one("forkless_shard_restarts_total", "1"), 1.0);
    assert_eq!(one("forkless_shard_restarts_total", "0"), 0.0);
    assert_eq!(value(&scrape, "forkless_ready", &[]), 0.0);
    let starting = [("shard", "1"), ("state", "starting")];
    assert_eq!(value(&scrape, "forkless_shard_state", &starting), 1.0);

    // The histogram: cumulative buckets ending in +Inf, which equals the count.
    let histogram = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "forkless_http_request_duration_seconds"
                && s.labels.get("shard") == Some("0")
        })
        .expect("shard 0's latency histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {:?}", histogram.value);
    };
    let at = |le: f64| {
        buckets
            .iter()
            .find(|b| b.less_than == le)
            .map(|b| b.count)
            .unwrap_or_else(|| panic!("no bucket le={le}"))
    };
    assert_eq!(at(0.0001), 3.0);
    assert_eq!(at(0.0025), 3.0);
    assert_eq!(at(0.005), 4.0);
    assert_eq!(at(f64::INFINITY), 4.0);
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
    let count = "forkless_http_request_duration_seconds_count";
    assert_eq!(value(&scrape, count, &[("shard", "0")]), 4.0);
    let sum = value(
        &scrape,
        "forkless_http_request_duration_seconds_sum",
        &[("shard", "0")],
    );
    assert!((sum - 0.00324).abs() < 1e-9, "sum {sum}");
    let slow = value(
        &scrape,
        "forkless_http_request_duration_seconds_sum",
        &[("shard", "1")],
    );
    assert_eq!(slow, 20.0);
}

#[test]
fn every_family_is_documented_once() {
    let (board, _) = board(3);
    let text = render(&board.view());
    let scrape = parse(&text);
    let families: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for family in &families {
        assert!(scrape.docs.contains_key(*family), "{family} has no HELP");
    }
    let operations = include_str!("../../../../docs/operations.md");
    for family in &families {
        assert!(
            operations.contains(family),
            "{family} is missing from docs/operations.md"
        );
    }
}
