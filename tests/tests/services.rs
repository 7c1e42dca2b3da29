//! tokio clients awaited on every shard (`forkless-services`, the cargo
//! feature `tokio`): tokio-postgres and deadpool-postgres against a private
//! PostgreSQL (TCP and Unix socket), redis against a private Redis, reqwest
//! against a local HTTP server, `tokio::spawn`, `spawn_blocking`, tokio's
//! timer and DNS; in a forkless handler, in an axum handler, and in a task
//! spawned on a shard, at 1, 2 and 4 shards. And axum's own
//! `WebSocketUpgrade` and tower-http's `ServeDir` over forkless.
//!
//! Skipped, saying so, when PostgreSQL or Redis is not installed (`.ci/run`
//! installs both).

use std::io::BufReader;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use forkless_tests::services::{HttpPeer, Postgres, Redis};
use forkless_tests::{Server, read_response, request, send};

const APP: &str = env!("CARGO_BIN_EXE_forkless-services");

/// Calls per client and shard count.
const CALLS: usize = 1000;

/// Keep-alive connections the calls are spread over (so over the shards).
const CONNECTIONS: usize = 8;

struct Services {
    postgres: Postgres,
    redis: Redis,
    peer: HttpPeer,
}

fn services() -> Option<Services> {
    let postgres = Postgres::start()?;
    let redis = Redis::start()?;
    Some(Services {
        postgres,
        redis,
        peer: HttpPeer::start(),
    })
}

fn start(services: &Services, shards: usize, mode: &str, extra: &[(&str, &Path)]) -> Server {
    let mut command = Command::new(APP);
    command
        .args(["--listen", "127.0.0.1:0", "--no-pin"])
        .args(["--shards", &shards.to_string()])
        .env("SERVICES_MODE", mode)
        .env("SERVICES_PG", services.postgres.tcp_config())
        .env("SERVICES_PG_UNIX", services.postgres.unix_config())
        .env("SERVICES_REDIS", services.redis.url())
        .env("SERVICES_REDIS_UNIX", services.redis.unix_url())
        .env("SERVICES_PEER", services.peer.url());
    for (name, value) in extra {
        command.env(name, value);
    }
    Server::start_command(command)
}

/// `GET path` on `stream`: status and body, checking `x-shard`.
fn get(stream: &mut BufReader<TcpStream>, shards: usize, path: &str) -> (u16, String) {
    send(stream.get_mut(), &request("GET", path, &[]));
    let response = read_response(stream).unwrap_or_else(|| panic!("GET {path}: no response"));
    let shard: usize = response
        .header("x-shard")
        .and_then(|shard| shard.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no numeric x-shard"));
    assert!(shard < shards, "GET {path}: x-shard {shard}");
    (response.status, response.body)
}

/// `calls` requests `route/{i}` spread over keep-alive connections, each
/// answered with `expect(i)`.
fn calls(server: &Server, shards: usize, route: &str, calls: usize, expect: fn(usize) -> String) {
    let mut streams: Vec<_> = (0..CONNECTIONS)
        .map(|_| BufReader::new(server.connect()))
        .collect();
    for i in 0..calls {
        let stream = &mut streams[i % CONNECTIONS];
        let (status, body) = get(stream, shards, &format!("{route}/{i}"));
        assert_eq!(
            (status, body.as_str()),
            (200, expect(i).as_str()),
            "{route}/{i} at {shards} shards"
        );
    }
}

fn plus_one(i: usize) -> String {
    (i + 1).to_string()
}

fn same(i: usize) -> String {
    i.to_string()
}

/// Everything both modes serve, at `shards` shards.
/// One server at a time: the stall check measures wall time, which a shard
/// loses whenever more threads than CPUs are runnable (another test's
/// server, or more shards than CPUs).
static ONE_SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check_clients(services: &Services, shards: usize, mode: &str) {
    let _alone = ONE_SERVER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = start(services, shards, mode, &[]);
    calls(&server, shards, "/pg", CALLS, plus_one);
    calls(&server, shards, "/redis", CALLS, same);
    let mut stream = BufReader::new(server.connect());
    for _ in 0..CALLS {
        assert_eq!(get(&mut stream, shards, "/http"), (200, "peer".into()));
    }
    calls(&server, shards, "/pg-unix", 100, plus_one);
    calls(&server, shards, "/pool", 100, plus_one);
    calls(&server, shards, "/redis-unix", 100, same);
    let (status, spawned) = get(&mut stream, shards, "/spawn");
    assert_eq!(status, 200, "{spawned}");
    assert!(
        spawned.starts_with("forkless-tokio") && spawned.ends_with("same=false"),
        "tokio::spawn ran on {spawned}"
    );
    let (status, blocking) = get(&mut stream, shards, "/blocking");
    assert_eq!(status, 200, "{blocking}");
    assert!(
        !blocking.starts_with("shard-") && blocking.ends_with("same=false"),
        "spawn_blocking ran on {blocking}"
    );
    let (status, slept) = get(&mut stream, shards, "/sleep");
    assert_eq!(status, 200, "{slept}");
    let slept: u64 = slept.parse().expect("milliseconds");
    assert!(slept >= 20, "a 20 ms tokio sleep took {slept} ms");
    let (status, addrs) = get(&mut stream, shards, "/dns");
    assert_eq!(status, 200, "{addrs}");
    assert!(addrs.parse::<usize>().expect("a count") >= 1);
    if mode == "forkless" {
        calls(&server, shards, "/on-shard-task", CALLS, same);
    }
    // A blocking client call shows as a stall. With more shards than
    // CPUs, a shard preempted by another reads as one too, so the check
    // holds where every shard has a CPU of its own.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let output = server.output();
    assert!(
        shards > cpus || !output.contains("stall"),
        "a shard stalled at {shards} shards:\n{output}"
    );
}

#[test]
fn forkless_handlers_await_tokio_clients() {
    let Some(services) = services() else { return };
    for shards in [1, 2, 4] {
        check_clients(&services, shards, "forkless");
    }
}

#[test]
fn axum_handlers_await_tokio_clients() {
    let Some(services) = services() else { return };
    for shards in [1, 2, 4] {
        check_clients(&services, shards, "axum");
    }
}

#[test]
fn axum_websocket_upgrade_echoes_and_serve_dir_serves() {
    let Some(services) = services() else { return };
    let _alone = ONE_SERVER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = std::env::temp_dir().join(format!("forkless-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a static directory");
    std::fs::write(dir.join("hello.txt"), "hello from disk\n").expect("a static file");
    let server = start(&services, 2, "axum", &[("SERVICES_STATIC", &dir)]);
    for round in 0..20 {
        let url = format!("ws://{}/ws", server.addr);
        let (mut ws, response) =
            tungstenite::client(url.as_str(), server.connect()).expect("the handshake");
        assert_eq!(response.status(), 101);
        assert!(response.headers().contains_key("x-shard"));
        for i in 0..10 {
            let text = format!("round {round} message {i}");
            ws.send(tungstenite::Message::text(text.clone()))
                .expect("send");
            match ws.read().expect("an echo") {
                tungstenite::Message::Text(echo) => assert_eq!(echo.as_str(), text),
                other => panic!("echo of {text}: {other:?}"),
            }
        }
        ws.close(None).expect("close");
        // The close handshake: read until the server's close arrives.
        while ws.read().is_ok() {}
    }
    let mut stream = BufReader::new(server.connect());
    assert_eq!(
        get(&mut stream, 2, "/static/hello.txt"),
        (200, "hello from disk\n".into())
    );
    assert_eq!(get(&mut stream, 2, "/static/missing.txt").0, 404);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
