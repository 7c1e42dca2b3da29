//! Supervision and graceful shutdown end to end: restarts of a dead shard,
//! crash loops, draining in-flight requests on SIGTERM, the deadline.

use std::io::BufReader;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use forkless_tests::{Server, closed_within, read_response, request, send};

const BINARY: &str = env!("CARGO_BIN_EXE_forkless-supervised");

fn supervised(shards: usize, extra: &[&str]) -> Server {
    let shards = shards.to_string();
    let mut args = vec!["--shards", shards.as_str()];
    args.extend_from_slice(extra);
    Server::start(Path::new(BINARY), &args)
}

/// Waits (at most 10 s) until the output contains `text`.
fn wait_for_output(server: &Server, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = server.output();
        if output.contains(text) {
            return output;
        }
        assert!(Instant::now() < deadline, "no {text:?} in:\n{output}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_shard_killed_by_a_background_panic_is_restarted_and_rejoins_the_port() {
    for shards in [2, 4] {
        let server = supervised(shards, &[]);
        let before = server.per_shard("/boot", shards);
        let (mut stream, _) = server.connect_to_shard("1").expect("reach shard 1");
        send(stream.get_mut(), &request("GET", "/crash", &[]));
        assert_eq!(read_response(&mut stream).expect("answered").status, 200);

        let output = wait_for_output(&server, "shard listening shard=1 incarnation=2");
        assert!(output.contains("shard exit (panicked: a background task panics on purpose"));
        assert!(output.contains("shard fork shard=1 incarnation=2"));
        assert!(output.contains("shard online shard=1 incarnation=2"));

        // Every shard serves again; only shard 1 is a new incarnation.
        for _ in 0..200 {
            assert_eq!(server.get("/").status, 200);
        }
        let after = server.per_shard("/boot", shards);
        for (shard, token) in &before {
            if shard == "1" {
                assert_ne!(after[shard], *token, "shard 1 was not restarted");
            } else {
                assert_eq!(after[shard], *token, "shard {shard} restarted");
            }
        }
    }
}

#[test]
fn a_crash_loop_exits_non_zero_naming_the_shard_and_the_panic() {
    for shards in ["2", "4"] {
        crash_loop(shards);
    }
}

fn crash_loop(shards: &str) {
    let started = Instant::now();
    let output = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--shards", shards])
        .env("FORKLESS_TEST_CRASH_AT_START", "1")
        .output()
        .expect("run the app");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("crash loop"), "stderr: {stderr}");
    assert!(
        stderr.contains("fails at start on purpose"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("shard "), "stderr: {stderr}");
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_refuses_new_connections() {
    for shards in [2, 4] {
        let mut server = supervised(shards, &[]);
        let mut in_flight: Vec<BufReader<TcpStream>> = (0..50)
            .map(|_| {
                let mut stream = BufReader::new(server.connect());
                send(stream.get_mut(), &request("GET", "/slow/1500", &[]));
                stream
            })
            .collect();
        // Let every request reach its handler before the signal.
        std::thread::sleep(Duration::from_millis(300));
        server.signal(libc::SIGTERM);

        // New connections are refused while the old ones finish.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_err(),
            "a new connection was accepted after SIGTERM"
        );

        for stream in &mut in_flight {
            let response = read_response(stream).expect("the in-flight request finished");
            assert_eq!(response.status, 200);
            assert_eq!(response.body, "slow\n");
            assert_eq!(response.header("connection"), Some("close"));
        }
        let status = server.wait_exit(Duration::from_secs(10)).expect("exited");
        assert_eq!(status.code(), Some(0), "output:\n{}", server.output());
    }
}

#[test]
fn keep_alive_clients_get_connection_close_and_no_reset() {
    for shards in [2, 4] {
        keep_alive_clients_close_cleanly(shards);
    }
}

fn keep_alive_clients_close_cleanly(shards: usize) {
    let mut server = supervised(shards, &[]);
    let mut clients: Vec<BufReader<TcpStream>> = (0..10)
        .map(|_| {
            let mut stream = BufReader::new(server.connect());
            send(stream.get_mut(), &request("GET", "/", &[]));
            let response = read_response(&mut stream).expect("a response");
            assert_eq!(response.status, 200);
            assert_eq!(response.header("connection"), None, "keep-alive");
            stream
        })
        .collect();
    // Half are mid-request when the signal comes, half are idle.
    for client in clients.iter_mut().take(5) {
        send(client.get_mut(), &request("GET", "/slow/800", &[]));
    }
    std::thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGTERM);
    for (i, client) in clients.iter_mut().enumerate() {
        if i < 5 {
            let response = read_response(client).expect("the in-flight request finished");
            assert_eq!(response.status, 200);
            assert_eq!(response.header("connection"), Some("close"));
        }
        // Closed cleanly: end of stream, not a reset.
        let mut byte = [0u8; 1];
        client
            .get_mut()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let read = std::io::Read::read(client.get_mut(), &mut byte);
        assert!(matches!(read, Ok(0)), "client {i}: {read:?}");
    }
    let status = server.wait_exit(Duration::from_secs(5)).expect("exited");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_request_that_never_finishes_forces_exit_at_the_deadline() {
    for shards in [2, 4] {
        forced_at_the_deadline(shards);
    }
}

fn forced_at_the_deadline(shards: usize) {
    let mut server = supervised(shards, &["--shutdown-timeout", "1s"]);
    let mut hanging = server.connect();
    send(&mut hanging, &request("GET", "/hang", &[]));
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(5)).expect("exited");
    let waited = signalled.elapsed();
    assert_eq!(status.code(), Some(forkless::EXIT_FORCED.into()));
    assert!(
        waited >= Duration::from_millis(900),
        "exited after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "exited after {waited:?}");
    assert!(closed_within(&mut hanging, Duration::from_secs(1)));
}

#[test]
fn a_second_signal_forces_exit_at_once() {
    let mut server = supervised(2, &[]);
    let mut hanging = server.connect();
    send(&mut hanging, &request("GET", "/hang", &[]));
    std::thread::sleep(Duration::from_millis(200));
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    server.signal(libc::SIGINT);
    let status = server
        .wait_exit(Duration::from_secs(2))
        .expect("exited at once");
    assert_eq!(status.code(), Some(forkless::EXIT_FORCED.into()));
}

#[test]
fn a_blocked_shard_is_reported_as_a_stall_with_its_id() {
    let server = supervised(2, &[]);
    let (mut stream, _) = server.connect_to_shard("1").expect("reach shard 1");
    send(stream.get_mut(), &request("GET", "/block/100", &[]));
    assert_eq!(read_response(&mut stream).expect("answered").status, 200);
    let output = wait_for_output(&server, "stall: a task ran without yielding");
    let line = output
        .lines()
        .find(|line| line.contains("stall: a task ran without yielding"))
        .expect("the stall line");
    assert!(
        line.contains("shard{id=1}"),
        "not tagged with shard 1: {line}"
    );
    // A short block is not a stall.
    let (mut quick, _) = server.connect_to_shard("0").expect("reach shard 0");
    send(quick.get_mut(), &request("GET", "/block/5", &[]));
    assert_eq!(read_response(&mut quick).expect("answered").status, 200);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.output().matches("stall: a task ran").count(), 1);
}
