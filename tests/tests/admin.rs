//! The admin endpoint end to end: health, Prometheus metrics that match the
//! requests the test sent, the status table, readiness that drops at the
//! first moment of a shutdown and while a shard restarts, and answers while
//! every shard is blocked.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use forkless_tests::{Server, app_binary, get_at, read_response, request, send, wait_for};
use prometheus_parse::{Scrape, Value};

const SUPERVISED: &str = env!("CARGO_BIN_EXE_forkless-supervised");

/// Shard counts of these tests (more than one, so the `shard` label matters).
const SHARDS: [usize; 2] = [2, 4];

/// Starts `binary` with `shards` shards and the admin endpoint on a free port.
fn start(binary: &Path, shards: usize, env: &[(&str, &str)]) -> (Server, SocketAddr) {
    let mut command = Command::new(binary);
    command.args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    command.args(["--shards", &shards.to_string()]);
    command.envs(env.iter().copied());
    let server = Server::start_command(command);
    let admin = server.admin_addr();
    (server, admin)
}

fn scrape(admin: SocketAddr) -> Scrape {
    let response = get_at(admin, "/metrics");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(response.body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The value of the one sample of `metric` with `labels` (0 when absent).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric} is not a single value: {other:?}"),
        })
        .sum()
}

fn status(admin: SocketAddr) -> serde_json::Value {
    let response = get_at(admin, "/status");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    serde_json::from_str(&response.body).expect("/status is JSON")
}

fn class(status: u16) -> &'static str {
    match status / 100 {
        2 => "2xx",
        4 => "4xx",
        _ => panic!("unexpected status {status}"),
    }
}

#[test]
fn metrics_and_status_count_exactly_the_requests_sent() {
    let hello = app_binary("hello");
    for shards in SHARDS {
        let (server, admin) = start(&hello, shards, &[]);
        let live = get_at(admin, "/livez");
        assert_eq!((live.status, live.body.as_str()), (200, "ok\n"));
        assert_eq!(live.header("connection"), Some("close"));
        wait_for("/readyz 200", Duration::from_secs(5), || {
            get_at(admin, "/readyz").status == 200
        });

        // (shard, class) -> requests, and shard -> connections, as the test saw them.
        let mut requests: HashMap<(String, &str), u64> = HashMap::new();
        let mut connections: HashMap<String, u64> = HashMap::new();
        for i in 0..60 {
            let response = server.get(if i % 4 == 0 { "/nope" } else { "/" });
            let shard = response.header("x-shard").expect("x-shard").to_owned();
            *requests
                .entry((shard.clone(), class(response.status)))
                .or_default() += 1;
            *connections.entry(shard).or_default() += 1;
        }
        // Requests, not connections: ten on one keep-alive connection.
        let mut stream = BufReader::new(server.connect());
        let mut kept_on = String::new();
        for _ in 0..10 {
            send(stream.get_mut(), &request("GET", "/", &[]));
            let response = read_response(&mut stream).expect("a response");
            kept_on = response.header("x-shard").expect("x-shard").to_owned();
            *requests
                .entry((kept_on.clone(), class(response.status)))
                .or_default() += 1;
        }
        *connections.entry(kept_on).or_default() += 1;
        drop(stream);

        let metrics = scrape(admin);
        assert_eq!(value(&metrics, "forkless_shards", &[]), shards as f64);
        assert_eq!(value(&metrics, "forkless_ready", &[]), 1.0);
        assert_eq!(value(&metrics, "forkless_http_requests_total", &[]), 70.0);
        let status = status(admin);
        assert_eq!(status["shards"], shards);
        assert_eq!(status["ready"], true);
        assert_eq!(status["requests"], 70);
        assert_eq!(status["pid"], server.pid());
        let table = status["table"].as_array().expect("a table");
        assert_eq!(table.len(), shards, "one row per shard");

        for (id, row) in table.iter().enumerate() {
            let shard = id.to_string();
            let label = [("shard", shard.as_str())];
            let mut total = 0;
            for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
                let seen = requests.get(&(shard.clone(), class)).copied().unwrap_or(0);
                total += seen;
                let labels = [("shard", shard.as_str()), ("class", class)];
                assert_eq!(
                    value(&metrics, "forkless_http_requests_total", &labels),
                    seen as f64,
                    "shard {shard} {class}"
                );
            }
            let count = "forkless_http_request_duration_seconds_count";
            assert_eq!(value(&metrics, count, &label), total as f64);
            let accepted = connections.get(&shard).copied().unwrap_or(0);
            let metric = "forkless_http_connections_accepted_total";
            assert_eq!(value(&metrics, metric, &label), accepted as f64);
            if total > 0 {
                let received = value(&metrics, "forkless_http_received_bytes_total", &label);
                let sent = value(&metrics, "forkless_http_sent_bytes_total", &label);
                assert!(received > 0.0 && sent > 0.0, "shard {shard} bytes");
            }
            let listening = [("shard", shard.as_str()), ("state", "listening")];
            assert_eq!(value(&metrics, "forkless_shard_state", &listening), 1.0);
            assert_eq!(
                value(&metrics, "forkless_shard_restarts_total", &label),
                0.0
            );

            assert_eq!(row["shard"], id);
            assert_eq!(row["state"], "listening");
            assert_eq!(row["incarnation"], 1);
            assert_eq!(row["restarts"], 0);
            assert_eq!(row["requests"], total);
            assert_eq!(row["connections_accepted"], accepted);
            assert_eq!(row["handler_panics"], 0);
        }

        // Every client closed: the open-connection gauges fall back to zero.
        wait_for("no open connections", Duration::from_secs(5), || {
            value(&scrape(admin), "forkless_http_connections_open", &[]) == 0.0
        });
    }
}

#[test]
fn readiness_drops_at_sigterm_while_in_flight_requests_finish() {
    for shards in SHARDS {
        let (mut server, admin) = start(Path::new(SUPERVISED), shards, &[]);
        wait_for("/readyz 200", Duration::from_secs(5), || {
            get_at(admin, "/readyz").status == 200
        });
        let mut slow = BufReader::new(server.connect());
        send(slow.get_mut(), &request("GET", "/slow/1500", &[]));
        // A shard read the request and handed it to its handler (both in
        // one poll): it is in flight.
        wait_for(
            "the slow request to reach a shard",
            Duration::from_secs(5),
            || value(&scrape(admin), "forkless_http_received_bytes_total", &[]) > 0.0,
        );

        server.signal(libc::SIGTERM);
        let signalled = Instant::now();
        wait_for("/readyz 503", Duration::from_secs(2), || {
            get_at(admin, "/readyz").status == 503
        });
        let dropped_after = signalled.elapsed();
        assert!(
            dropped_after < Duration::from_millis(1000),
            "readiness dropped {dropped_after:?} after SIGTERM"
        );
        let ready = get_at(admin, "/readyz");
        assert_eq!(ready.body, "not ready: shutting down\n");
        assert_eq!(get_at(admin, "/livez").status, 200, "alive while draining");
        let metrics = scrape(admin);
        assert_eq!(value(&metrics, "forkless_ready", &[]), 0.0);
        assert_eq!(value(&metrics, "forkless_stopping", &[]), 1.0);
        let listening = [("state", "listening")];
        assert_eq!(value(&metrics, "forkless_shard_state", &listening), 0.0);

        // The request in flight when readiness dropped still finishes.
        let response = read_response(&mut slow).expect("the in-flight request is answered");
        assert_eq!((response.status, response.body.as_str()), (200, "slow\n"));
        assert_eq!(response.header("connection"), Some("close"));
        let exit = server
            .wait_exit(Duration::from_secs(10))
            .expect("the server exits after draining");
        assert!(exit.success(), "exit {exit:?}:\n{}", server.output());
    }
}

#[test]
fn readiness_drops_while_a_shard_restarts() {
    let env = [("FORKLESS_TEST_RESTART_DELAY_MS", "1500")];
    for shards in SHARDS {
        let (server, admin) = start(Path::new(SUPERVISED), shards, &env);
        wait_for("/readyz 200", Duration::from_secs(5), || {
            get_at(admin, "/readyz").status == 200
        });
        let (mut stream, _) = server.connect_to_shard("1").expect("reach shard 1");
        send(stream.get_mut(), &request("GET", "/crash", &[]));
        assert_eq!(read_response(&mut stream).expect("answered").status, 200);

        // Shard 1 dies and its next incarnation waits 1.5 s before it listens.
        wait_for("/readyz 503", Duration::from_secs(3), || {
            get_at(admin, "/readyz").status == 503
        });
        let ready = get_at(admin, "/readyz");
        assert!(
            ready.body.starts_with("not ready: shard 1 is "),
            "{}",
            ready.body
        );
        assert_eq!(get_at(admin, "/livez").status, 200);
        let row = &status(admin)["table"][1];
        assert!(
            row["state"] == "down" || row["state"] == "starting",
            "shard 1 is {}",
            row["state"]
        );
        // The other shards serve on meanwhile.
        for _ in 0..20 {
            let response = server.get("/");
            assert_eq!(response.status, 200);
            assert_ne!(response.header("x-shard"), Some("1"));
        }

        wait_for("/readyz 200 again", Duration::from_secs(10), || {
            get_at(admin, "/readyz").status == 200
        });
        let metrics = scrape(admin);
        let restarts = |shard: &str| {
            value(
                &metrics,
                "forkless_shard_restarts_total",
                &[("shard", shard)],
            )
        };
        assert_eq!(restarts("1"), 1.0);
        assert_eq!(restarts("0"), 0.0);
        let table = status(admin)["table"].clone();
        assert_eq!(table[1]["state"], "listening");
        assert_eq!(table[1]["incarnation"], 2);
        assert_eq!(table[1]["restarts"], 1);
        assert_eq!(table[0]["incarnation"], 1);
    }
}

#[test]
fn the_admin_endpoint_answers_while_every_shard_is_blocked() {
    for shards in SHARDS {
        let (server, admin) = start(Path::new(SUPERVISED), shards, &[]);
        wait_for("/readyz 200", Duration::from_secs(5), || {
            get_at(admin, "/readyz").status == 200
        });
        // A kept connection on each shard first: once one shard is blocked,
        // finding the others would wait on it.
        let mut kept: Vec<_> = (0..shards)
            .map(|id| {
                let (stream, _) = server
                    .connect_to_shard(&id.to_string())
                    .unwrap_or_else(|| panic!("reach shard {id}"));
                stream
            })
            .collect();
        for stream in &mut kept {
            send(stream.get_mut(), &request("GET", "/block/2000", &[]));
        }
        let blocked_at = Instant::now();

        // Every shard sits in one poll; the admin endpoint still answers.
        wait_for("every shard to be busy", Duration::from_secs(2), || {
            let metrics = scrape(admin);
            (0..shards).all(|id| {
                let label = [("shard", &*id.to_string())];
                value(&metrics, "forkless_shard_busy_seconds", &label) > 0.0
            })
        });
        let asked = Instant::now();
        assert_eq!(get_at(admin, "/livez").status, 200);
        let table = status(admin)["table"].clone();
        assert!(asked.elapsed() < Duration::from_millis(1000));
        assert!(
            blocked_at.elapsed() < Duration::from_millis(2000),
            "the checks above ran after the shards were free again"
        );
        for id in 0..shards {
            assert!(table[id]["busy_ms"].as_u64() > Some(0), "{}", table[id]);
        }

        for stream in &mut kept {
            let response = read_response(stream).expect("the blocked request finishes");
            assert_eq!(response.body, "blocked\n");
        }
        // The stall is counted when the long poll returns, which may be just
        // after the response left.
        wait_for(
            "every shard to count its stall",
            Duration::from_secs(2),
            || {
                let metrics = scrape(admin);
                (0..shards).all(|id| {
                    let label = [("shard", &*id.to_string())];
                    value(&metrics, "forkless_shard_stalls_total", &label) >= 1.0
                })
            },
        );
        // One long poll is one stall, counted and logged once.
        let metrics = scrape(admin);
        for id in 0..shards {
            let label = [("shard", &*id.to_string())];
            assert_eq!(value(&metrics, "forkless_shard_stalls_total", &label), 1.0);
        }
        let output = server.output();
        assert_eq!(
            output.matches("stall: a task ran").count(),
            shards,
            "one stall line per shard expected:\n{output}"
        );
    }
}

#[test]
fn bus_metrics_count_the_requests_the_kv_app_forwards() {
    let kv = app_binary("kv");
    for shards in SHARDS {
        let (server, admin) = start(&kv, shards, &[]);
        // Each request that lands off its key's owner is one bus call from
        // the shard that answered to the owner (replies are not messages).
        let mut sent: HashMap<String, u64> = HashMap::new();
        let mut received: HashMap<String, u64> = HashMap::new();
        for i in 0..40 {
            let response = server.fetch("PUT", &format!("/kv/key-{i}"), b"value");
            assert_eq!(response.status, 201);
            let shard = response.header("x-shard").expect("x-shard").to_owned();
            let owner = response
                .header("x-kv-owner")
                .expect("x-kv-owner")
                .to_owned();
            if shard != owner {
                *sent.entry(shard).or_default() += 1;
                *received.entry(owner).or_default() += 1;
            }
        }
        assert!(!sent.is_empty(), "no request was forwarded");
        let metrics = scrape(admin);
        for id in 0..shards {
            let shard = id.to_string();
            let label = [("shard", shard.as_str())];
            let expect = |counts: &HashMap<String, u64>| counts.get(&shard).copied().unwrap_or(0);
            let metric = "forkless_bus_messages_sent_total";
            assert_eq!(value(&metrics, metric, &label), expect(&sent) as f64);
            let metric = "forkless_bus_messages_received_total";
            assert_eq!(value(&metrics, metric, &label), expect(&received) as f64);
            assert_eq!(value(&metrics, "forkless_bus_queue_depth", &label), 0.0);
        }
    }
}

/// Raises this process's descriptor limit (and so its children's) to the
/// hard limit; the limit it then has.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill and then read.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[test]
fn probes_get_through_a_thousand_silent_admin_connections() {
    const SILENT: usize = 1_000;
    if raise_fd_limit() < 2 * SILENT as u64 + 256 {
        eprintln!(
            "skipped: the descriptor limit is below {}",
            2 * SILENT + 256
        );
        return;
    }
    let (server, admin) = start(Path::new(SUPERVISED), 2, &[]);
    wait_for("/livez 200", Duration::from_secs(5), || {
        get_at(admin, "/livez").status == 200
    });
    // Connections that never send a byte, as a slowloris would hold them.
    let silent: Vec<_> = (0..SILENT)
        .map(|_| std::net::TcpStream::connect(admin).expect("connect to the admin port"))
        .collect();
    // A second batch that sends half a head and stops.
    let mut slow: Vec<_> = (0..50)
        .map(|_| std::net::TcpStream::connect(admin).expect("connect to the admin port"))
        .collect();
    for stream in &mut slow {
        send(stream, b"GET /livez HTTP/1.1\r\nHo");
    }
    for _ in 0..20 {
        let asked = Instant::now();
        let response = get_at(admin, "/livez");
        assert_eq!(response.status, 200, "{}", response.body);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "/livez took {:?} beside {SILENT} silent connections",
            asked.elapsed()
        );
    }
    assert_eq!(get_at(admin, "/readyz").status, 200);
    drop(silent);
    drop(slow);
    drop(server);
}

#[test]
fn admin_answers_carry_their_reason_phrase_and_409_for_a_refused_action() {
    let (server, admin) = start(Path::new(SUPERVISED), 2, &[]);
    wait_for("/readyz 200", Duration::from_secs(5), || {
        get_at(admin, "/readyz").status == 200
    });
    // A page of another site in an operator's browser cannot reload.
    let mut stream = forkless_tests::connect(admin);
    let cross = request(
        "POST",
        "/reload",
        &[("origin", "http://evil.example"), ("content-length", "0")],
    );
    send(&mut stream, &cross);
    let refused = read_response(&mut BufReader::new(stream)).expect("an answer");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(status(admin)["reloads"], 0, "no reload started");
    let mut stream = std::net::TcpStream::connect(admin).expect("connect");
    send(&mut stream, b"POST /reload HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut status_line).expect("status line");
    assert_eq!(status_line, "HTTP/1.1 202 Accepted\r\n");
    // The reload replaces two shards one at a time: an upgrade asked for
    // meanwhile is refused, and says why.
    let refused = forkless_tests::post_at(admin, "/upgrade");
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(
        refused.body,
        "binary upgrade not started: a rolling reload is in progress\n"
    );
    drop(server);
}
