//! The `hello` app end to end, at 1, 2 and 4 shards.

use std::collections::HashSet;
use std::io::BufReader;
use std::time::{Duration, Instant};

use forkless_tests::{SHARD_COUNTS, Server, app_binary, read_response, request, send};

fn hello(shards: usize) -> Server {
    let shards = shards.to_string();
    Server::start(&app_binary("hello"), &["--shards", &shards])
}

#[test]
fn fresh_connections_are_served_by_every_shard() {
    for shards in SHARD_COUNTS {
        let server = hello(shards);
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let response = server.get("/");
            assert_eq!(response.status, 200);
            assert_eq!(response.body, "Hello World\n");
            let shard = response
                .header("x-shard")
                .expect("x-shard header")
                .to_owned();
            let id: usize = shard.parse().expect("numeric shard id");
            assert!(
                id < shards,
                "shard id {id} out of range for {shards} shards"
            );
            seen.insert(shard);
        }
        if shards > 1 {
            assert!(seen.len() > 1, "{shards} shards but only {seen:?} answered");
        }
    }
}

#[test]
fn a_thousand_keep_alive_requests_on_one_connection() {
    for shards in SHARD_COUNTS {
        let server = hello(shards);
        let mut stream = BufReader::new(server.connect());
        let mut first_shard = None;
        for _ in 0..1000 {
            send(stream.get_mut(), &request("GET", "/", &[]));
            let response = read_response(&mut stream).expect("a response on the same connection");
            assert_eq!(response.status, 200);
            assert_eq!(response.body, "Hello World\n");
            let shard = response.header("x-shard").map(str::to_owned);
            // One connection lives on one shard.
            assert_eq!(*first_shard.get_or_insert(shard.clone()), shard);
        }
    }
}

#[test]
fn unknown_paths_are_404_and_other_methods_405() {
    let server = hello(2);
    assert_eq!(server.get("/nope").status, 404);
    let mut stream = BufReader::new(server.connect());
    send(stream.get_mut(), &request("DELETE", "/", &[]));
    assert_eq!(read_response(&mut stream).expect("a response").status, 405);
}

#[test]
fn sigterm_exits_zero_within_two_seconds() {
    for shards in SHARD_COUNTS {
        let mut server = hello(shards);
        // An idle keep-alive connection must not hold the shutdown up.
        let mut idle = BufReader::new(server.connect());
        send(idle.get_mut(), &request("GET", "/", &[]));
        assert_eq!(read_response(&mut idle).expect("a response").status, 200);
        let sent = Instant::now();
        server.signal(libc::SIGTERM);
        let status = server
            .wait_exit(Duration::from_secs(2))
            .unwrap_or_else(|| panic!("still running 2 s after SIGTERM with {shards} shards"));
        assert_eq!(status.code(), Some(0), "output:\n{}", server.output());
        assert!(sent.elapsed() < Duration::from_secs(2));
    }
}

#[test]
fn sigint_exits_zero_too() {
    let mut server = hello(2);
    server.signal(libc::SIGINT);
    let status = server.wait_exit(Duration::from_secs(2)).expect("exited");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_second_copy_on_the_same_port_is_refused_unless_asked_to_share() {
    let first = hello(2);
    let port = first.addr.to_string();
    let mut second = std::process::Command::new(app_binary("hello"))
        .args(["--shards", "2", "--listen", &port])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run a second copy");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait for the second copy") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("the second copy started on a port the first one holds");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1), "the second copy must not start");
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        &mut second.stderr.take().expect("piped stderr"),
        &mut stderr,
    )
    .expect("read stderr");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].contains("address is in use"), "unclear: {stderr}");
    assert!(
        lines[0].contains("--share-port"),
        "no way out given: {stderr}"
    );
    // The first one never saw the attempt.
    for _ in 0..20 {
        assert_eq!(first.get("/").status, 200);
    }

    // Asked to share, it starts and takes connections on the same port.
    let mut command = std::process::Command::new(app_binary("hello"));
    command.args(["--shards", "1", "--listen", &port, "--share-port"]);
    let second = Server::start_command(command);
    assert_eq!(second.addr, first.addr);
    assert_eq!(second.get("/").status, 200);
}
