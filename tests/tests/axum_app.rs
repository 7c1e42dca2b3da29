//! An axum `Router` with state, extractors and tower-http middleware
//! (`forkless-axum`), served by forkless at 2 and 4 shards: routes, 404s,
//! extractors, the shard id extractor, the bus from axum handlers, the
//! forkless timeout layer, the body limit, counters, panic isolation and
//! graceful shutdown of an in-flight request.

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use forkless_tests::{
    Server, closed_within, get_at, read_response, request, request_with_body, send,
};

const AXUM_APP: &str = env!("CARGO_BIN_EXE_forkless-axum");

/// Shard counts of these tests; 4 runs unpinned on small machines.
const SHARDS: [usize; 2] = [2, 4];

fn start(shards: usize, extra: &[&str]) -> Server {
    let shards = shards.to_string();
    let mut args = vec!["--shards", shards.as_str(), "--no-pin"];
    args.extend_from_slice(extra);
    Server::start(Path::new(AXUM_APP), &args)
}

/// `GET path` on a fresh connection: status and body, checking `x-shard`.
fn get(server: &Server, shards: usize, path: &str) -> (u16, String) {
    let response = server.get(path);
    let shard: usize = response
        .header("x-shard")
        .unwrap_or_else(|| panic!("GET {path}: no x-shard"))
        .parse()
        .expect("numeric x-shard");
    assert!(shard < shards, "GET {path}: x-shard {shard}");
    (response.status, response.body)
}

/// `method path` with `body` on a fresh connection.
fn post(server: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut stream = BufReader::new(server.connect());
    send(
        stream.get_mut(),
        &request_with_body("POST", path, headers, body),
    );
    let response = read_response(&mut stream).expect("a response");
    assert!(
        response.header("x-shard").is_some(),
        "POST {path}: no x-shard"
    );
    (response.status, response.body)
}

#[test]
fn routes_extractors_and_404s() {
    for shards in SHARDS {
        let server = start(shards, &[]);
        assert_eq!(get(&server, shards, "/"), (200, "ok\n".into()));
        assert_eq!(get(&server, shards, "/users/7"), (200, "user 7\n".into()));
        assert_eq!(get(&server, shards, "/users/x").0, 400);
        assert_eq!(
            get(&server, shards, "/search?q=rust&n=3"),
            (200, "rust x3\n".into())
        );
        assert_eq!(
            get(&server, shards, "/search?q=rust"),
            (200, "rust x1\n".into())
        );
        assert_eq!(get(&server, shards, "/search").0, 400);
        assert_eq!(get(&server, shards, "/nope"), (404, "not found\n".into()));
        assert_eq!(get(&server, shards, "/users").0, 404);

        let json = [("Content-Type", "application/json")];
        let (status, body) = post(&server, "/json", &json, br#"{"name":"forkless"}"#);
        assert_eq!(status, 200);
        let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
        assert_eq!(body["got"]["name"], "forkless");
        assert!(body["shard"].as_u64().is_some_and(|id| id < shards as u64));
        assert_eq!(post(&server, "/json", &json, b"{not json").0, 400);
        assert_eq!(post(&server, "/json", &[], b"{}").0, 415);
        assert_eq!(post(&server, "/upload", &[], b"12345"), (200, "5\n".into()));

        // A route that exists, with a method it does not take.
        let mut stream = BufReader::new(server.connect());
        send(stream.get_mut(), &request("DELETE", "/users/7", &[]));
        let response = read_response(&mut stream).expect("a response");
        assert_eq!(response.status, 405);
        assert!(response.header("x-shard").is_some());
    }
}

#[test]
fn every_shard_knows_its_id_through_the_extractors() {
    for shards in SHARDS {
        let server = start(shards, &[]);
        for path in ["/shard", "/extension"] {
            let answers = server.per_shard(path, shards);
            for (x_shard, body) in answers {
                assert_eq!(body, format!("{x_shard}\n"), "{path}");
            }
        }
        for (x_shard, body) in server.per_shard("/context", shards) {
            assert_eq!(body, format!("{x_shard} of {shards}\n"));
        }
    }
}

#[test]
fn each_shard_has_its_own_state() {
    for shards in SHARDS {
        let server = start(shards, &[]);
        for shard in 0..shards {
            let shard = shard.to_string();
            let (mut stream, _) = server
                .connect_to_shard(&shard)
                .unwrap_or_else(|| panic!("reach shard {shard}"));
            for expected in 1..=3 {
                send(stream.get_mut(), &request("GET", "/hits", &[]));
                let response = read_response(&mut stream).expect("a response");
                assert_eq!(response.header("x-shard"), Some(shard.as_str()));
                assert_eq!(response.body, format!("{expected}\n"), "shard {shard}");
            }
        }
    }
}

#[test]
fn axum_handlers_reach_every_shard_over_the_bus() {
    for shards in SHARDS {
        let server = start(shards, &[]);
        for to in 0..shards {
            for route in ["bus", "ctx-bus"] {
                let response = server.get(&format!("/{route}/{to}"));
                assert_eq!(response.status, 200, "/{route}/{to}");
                let from = response.header("x-shard").expect("x-shard");
                assert_eq!(
                    response.body,
                    format!("shard {to} answered shard {from}\n"),
                    "/{route}/{to}"
                );
            }
        }
        // No such shard: the bus says Closed, the handler says 503.
        assert_eq!(get(&server, shards, &format!("/bus/{shards}")).0, 503);
    }
}

#[test]
fn the_forkless_timeout_layer_answers_slow_requests() {
    let server = start(2, &[]);
    assert_eq!(get(&server, 2, "/slow"), (200, "slow\n".into()));
    let sent = Instant::now();
    assert_eq!(get(&server, 2, "/too-slow").0, 504);
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "the 500 ms timeout took {took:?}"
    );
}

#[test]
fn tower_http_timeouts_run_on_tokios_timer_from_the_shards() {
    let server = start(2, &[]);
    for _ in 0..4 {
        assert_eq!(get(&server, 2, "/tokio-timeout").0, 504);
    }
    assert_eq!(get(&server, 2, "/"), (200, "ok\n".into()));
    assert!(!server.output().contains("panicked"), "{}", server.output());
}

#[test]
fn bodies_over_the_max_body_size_get_413() {
    let server = start(2, &["--max-body-size", "1k"]);
    assert_eq!(
        post(&server, "/upload", &[], &[b'x'; 1000]),
        (200, "1000\n".into())
    );
    // Refused from its Content-Length, before the router runs.
    let (status, body) = post(&server, "/upload", &[], &[b'x'; 2000]);
    assert_eq!(status, 413);
    assert!(body.contains("1024 bytes"), "{body}");
    // Chunked, so only counted as it arrives: axum's extractor answers 413.
    let mut stream = BufReader::new(server.connect());
    let head = request(
        "POST",
        "/json",
        &[
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
        ],
    );
    send(stream.get_mut(), &head);
    send(stream.get_mut(), b"7d0\r\n");
    send(stream.get_mut(), &[b' '; 2000]);
    send(stream.get_mut(), b"\r\n0\r\n\r\n");
    let response = read_response(&mut stream).expect("a response");
    assert_eq!(response.status, 413);
    assert!(response.header("x-shard").is_some());
}

#[test]
fn tower_http_layers_without_timers_work_on_a_shard() {
    let server = start(2, &[]);
    // RequestBodyLimitLayer (64 KiB on /upload), under forkless's 1 MiB.
    assert_eq!(post(&server, "/upload", &[], &[b'x'; 100 * 1024]).0, 413);
    assert_eq!(
        post(&server, "/upload", &[], &[b'x'; 1024]),
        (200, "1024\n".into())
    );

    // CompressionLayer (the body comes chunked, so only the head is read).
    let mut stream = BufReader::new(server.connect());
    send(
        stream.get_mut(),
        &request("GET", "/big", &[("Accept-Encoding", "gzip")]),
    );
    let response = read_response(&mut stream).expect("a response");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    assert!(response.header("x-shard").is_some());

    // CorsLayer answers a preflight.
    let mut stream = BufReader::new(server.connect());
    let preflight = [
        ("Origin", "http://example.test"),
        ("Access-Control-Request-Method", "POST"),
    ];
    send(stream.get_mut(), &request("OPTIONS", "/json", &preflight));
    let response = read_response(&mut stream).expect("a response");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn a_panicking_axum_handler_gets_a_500_and_the_shard_keeps_serving() {
    for shards in SHARDS {
        let server = start(shards, &[]);
        let (mut bystander, first) = server.connect_to_shard("0").expect("reach shard 0");
        assert_eq!(first.status, 200);

        let (mut victim, _) = server.connect_to_shard("0").expect("reach shard 0");
        send(victim.get_mut(), &request("GET", "/panic", &[]));
        let response = read_response(&mut victim).expect("a response to the panic");
        assert_eq!(response.status, 500);
        assert_eq!(response.header("x-shard"), Some("0"));
        assert_eq!(response.header("connection"), Some("close"));
        assert!(closed_within(victim.get_mut(), Duration::from_secs(2)));

        // The other connection of that shard is untouched, and so is its state.
        for expected in 1..=2 {
            send(bystander.get_mut(), &request("GET", "/hits", &[]));
            let response = read_response(&mut bystander).expect("the bystander is still served");
            assert_eq!(response.status, 200);
            assert_eq!(response.body, format!("{expected}\n"));
        }
        server.per_shard("/", shards);
        let output = server.output();
        assert!(
            output.contains("the /panic route panics on purpose"),
            "{output}"
        );
    }
}

#[test]
fn sigterm_lets_an_in_flight_axum_request_finish() {
    for shards in SHARDS {
        let (mut server, admin) = start_with_admin(shards);
        let mut slow = BufReader::new(server.connect());
        send(slow.get_mut(), &request("GET", "/slow", &[]));
        // A shard read the request and handed it to the router (both in one
        // poll): it is in flight, its handler sleeping its 300 ms.
        let deadline = Instant::now() + Duration::from_secs(5);
        while received_bytes(admin) == 0.0 {
            assert!(
                Instant::now() < deadline,
                "the request never reached a shard"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        server.signal(libc::SIGTERM);
        let response = read_response(&mut slow).expect("the in-flight request is answered");
        assert_eq!((response.status, response.body.as_str()), (200, "slow\n"));
        assert_eq!(response.header("connection"), Some("close"));
        let status = server
            .wait_exit(Duration::from_secs(3))
            .unwrap_or_else(|| panic!("still running 3 s after SIGTERM at {shards} shards"));
        assert_eq!(status.code(), Some(0), "output:\n{}", server.output());
    }
}

#[test]
fn axum_requests_and_panics_are_counted_per_shard() {
    let (server, admin) = start_with_admin(2);
    for path in ["/", "/users/1", "/nope", "/panic"] {
        server.get(path);
    }
    let status = status(admin);
    assert_eq!(status["requests"], 4);
    let table = status["table"].as_array().expect("a table");
    let panics: u64 = table
        .iter()
        .map(|row| row["handler_panics"].as_u64().expect("a count"))
        .sum();
    assert_eq!(panics, 1);
}

/// Starts the app with the admin endpoint on a free port.
fn start_with_admin(shards: usize) -> (Server, SocketAddr) {
    let mut command = Command::new(AXUM_APP);
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--no-pin",
    ]);
    command.args(["--shards", &shards.to_string()]);
    let server = Server::start_command(command);
    let admin = server.admin_addr();
    (server, admin)
}

/// Request bytes every shard received so far, from `/metrics`.
fn received_bytes(admin: SocketAddr) -> f64 {
    let body = get_at(admin, "/metrics").body;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "forkless_http_received_bytes_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn status(admin: SocketAddr) -> serde_json::Value {
    let response = get_at(admin, "/status");
    assert_eq!(response.status, 200);
    serde_json::from_str(&response.body).expect("/status is JSON")
}
