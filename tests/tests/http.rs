//! HTTP behaviour of any forkless app, through the test app: ordering,
//! pipelining, panic isolation, bad input and slow clients.

use std::io::{BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use forkless_tests::{SHARD_COUNTS, Server, closed_within, read_response, request, send};

fn testapp(shards: usize, extra: &[&str]) -> Server {
    let shards = shards.to_string();
    let mut args = vec!["--shards", shards.as_str()];
    args.extend_from_slice(extra);
    Server::start(Path::new(env!("CARGO_BIN_EXE_forkless-testapp")), &args)
}

#[test]
fn keep_alive_requests_are_answered_in_order() {
    for shards in SHARD_COUNTS {
        let server = testapp(shards, &[]);
        let mut stream = BufReader::new(server.connect());
        for i in 0..1000 {
            send(
                stream.get_mut(),
                &request("GET", &format!("/echo/{i}"), &[]),
            );
            let response = read_response(&mut stream).expect("a response");
            assert_eq!(response.status, 200);
            assert_eq!(response.body, i.to_string());
        }
    }
}

#[test]
fn a_hundred_pipelined_requests_in_one_write_come_back_in_order() {
    for shards in SHARD_COUNTS {
        let server = testapp(shards, &[]);
        let mut stream = BufReader::new(server.connect());
        let batch: Vec<u8> = (0..100)
            .flat_map(|i| request("GET", &format!("/echo/{i}"), &[]))
            .collect();
        stream.get_mut().write_all(&batch).expect("one write");
        for i in 0..100 {
            let response = read_response(&mut stream).expect("a pipelined response");
            assert_eq!(response.status, 200);
            assert_eq!(response.body, i.to_string(), "response {i} out of order");
        }
    }
}

#[test]
fn a_panicking_handler_gets_a_500_and_every_shard_keeps_serving() {
    for shards in SHARD_COUNTS {
        let server = testapp(shards, &[]);
        let before = server.per_shard("/boot", shards);

        // A keep-alive connection on the shard that will see the panic.
        let (mut bystander, first) = server.connect_to_shard("0").expect("reach shard 0");
        assert_eq!(first.status, 200);

        let (mut victim, _) = server.connect_to_shard("0").expect("reach shard 0");
        send(victim.get_mut(), &request("GET", "/panic", &[]));
        let response = read_response(&mut victim).expect("a response to the panic");
        assert_eq!(response.status, 500);
        assert_eq!(response.header("x-shard"), Some("0"));
        assert_eq!(response.header("connection"), Some("close"));
        assert!(closed_within(victim.get_mut(), Duration::from_secs(2)));

        // The other connection of that shard is untouched.
        send(bystander.get_mut(), &request("GET", "/panics", &[]));
        let panics = read_response(&mut bystander).expect("the bystander is still served");
        assert_eq!(panics.status, 200);
        assert_eq!(panics.body, "1\n", "the panic was counted once");

        // Every shard still serves, and none was restarted.
        let after = server.per_shard("/boot", shards);
        assert_eq!(before, after, "a shard restarted");
    }
}

#[test]
fn a_malformed_request_line_gets_400_and_a_closed_connection() {
    let server = testapp(2, &[]);
    let mut stream = BufReader::new(server.connect());
    send(
        stream.get_mut(),
        b"GARBAGE\x01 / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let response = read_response(&mut stream).expect("a response");
    assert_eq!(response.status, 400);
    assert!(closed_within(stream.get_mut(), Duration::from_secs(2)));
}

#[test]
fn an_invalid_header_gets_400_and_a_closed_connection() {
    let server = testapp(2, &[]);
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: value\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: x\r\nno-colon-here\r\n\r\n"[..],
    ] {
        let mut stream = BufReader::new(server.connect());
        send(stream.get_mut(), bad);
        let response = read_response(&mut stream).expect("a response");
        assert_eq!(
            response.status,
            400,
            "for {:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(closed_within(stream.get_mut(), Duration::from_secs(2)));
    }
}

#[test]
fn a_stalled_client_is_cut_off_after_the_header_timeout() {
    for shards in SHARD_COUNTS {
        let server = testapp(shards, &["--header-read-timeout", "1s"]);
        let mut stalled = server.connect();
        send(&mut stalled, b"GET / HTTP/1.1\r\nHost: x\r\n");
        let started = Instant::now();

        // Others are served meanwhile, on every shard.
        for _ in 0..20 {
            assert_eq!(server.get("/").status, 200);
        }

        assert!(
            closed_within(&mut stalled, Duration::from_secs(4)),
            "the stalled connection was not closed"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900),
            "closed after {waited:?}, before the timeout"
        );
    }
}

#[test]
fn json_logs_tag_every_line_with_its_shard() {
    let server = testapp(2, &["--log-format", "json"]);
    let (mut victim, _) = server.connect_to_shard("1").expect("reach shard 1");
    send(victim.get_mut(), &request("GET", "/panic", &[]));
    assert_eq!(read_response(&mut victim).expect("a response").status, 500);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let output = server.output();
        let panic_line = output
            .lines()
            .find(|line| line.contains("panics on purpose"));
        if let Some(line) = panic_line {
            let json: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
            let spans = json["spans"].as_array().expect("a span list");
            assert!(
                spans
                    .iter()
                    .any(|span| span["name"] == "shard" && span["id"] == 1),
                "panic line not tagged with shard 1: {line}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no panic log line in:\n{output}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
