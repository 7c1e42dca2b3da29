//! HTTP limits and strict framing, end to end through the test app: bad
//! framing gets `400`, big heads `431`, big bodies `413`, slow clients are cut
//! off, a shard holds its connection limit and slowloris does not starve
//! anyone. Every refusal is checked for `x-shard` and a closed connection.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use forkless_tests::{Response, Server, closed_within, read_response, request, send};

fn testapp(shards: usize, extra: &[&str]) -> Server {
    let shards = shards.to_string();
    let mut args = vec!["--shards", shards.as_str()];
    args.extend_from_slice(extra);
    Server::start(Path::new(env!("CARGO_BIN_EXE_forkless-testapp")), &args)
}

/// Sends `bytes` on a fresh connection and reads one response.
fn exchange(server: &Server, bytes: &[u8]) -> (Response, BufReader<TcpStream>) {
    let mut stream = BufReader::new(server.connect());
    send(stream.get_mut(), bytes);
    let response = read_response(&mut stream).unwrap_or_else(|| {
        panic!(
            "no response to {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    });
    (response, stream)
}

/// Asserts the framework refused `bytes` with `status`, `x-shard`, and a close.
fn assert_refused(server: &Server, bytes: &[u8], status: u16) -> Response {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
    let (response, mut stream) = exchange(server, bytes);
    assert_eq!(response.status, status, "for {shown:?}: {response:?}");
    assert!(
        response.header("x-shard").is_some(),
        "no x-shard for {shown:?}"
    );
    assert_eq!(
        response.header("connection"),
        Some("close"),
        "for {shown:?}"
    );
    assert!(
        closed_within(stream.get_mut(), Duration::from_secs(3)),
        "connection left open after {status} for {shown:?}"
    );
    response
}

const AMBIGUOUS: [(&str, &str); 12] = [
    (
        "both lengths",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    ),
    (
        "both lengths, te first",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ),
    (
        "te repeated",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ),
    (
        "te chunked twice",
        "Transfer-Encoding: chunked, chunked\r\n",
    ),
    ("te not chunked", "Transfer-Encoding: gzip\r\n"),
    (
        "te chunked not last",
        "Transfer-Encoding: chunked, gzip\r\n",
    ),
    (
        "cl repeated, same",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
    ),
    (
        "cl repeated, different",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ),
    ("cl list", "Content-Length: 5, 5\r\n"),
    ("cl signed", "Content-Length: +5\r\n"),
    ("cl not a number", "Content-Length: five\r\n"),
    ("obs-fold", "X-Folded: a\r\n b\r\n"),
];

#[test]
fn ambiguous_framing_gets_400_and_a_closed_connection() {
    let server = testapp(2, &[]);
    for (case, headers) in AMBIGUOUS {
        let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\n{headers}\r\n0\r\n\r\n");
        let response = assert_refused(&server, head.as_bytes(), 400);
        assert!(!response.body.is_empty(), "{case}: the 400 says why");
    }
    assert_refused(&server, b"GET / HTTP/1.1\r\n\r\n", 400);
    assert_refused(
        &server,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
    );
    assert_refused(
        &server,
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    // A malformed head also gets the framework's 400, with x-shard.
    assert_refused(
        &server,
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
        400,
    );
}

#[test]
fn hosts_and_request_targets_nginx_refuses_get_400() {
    let server = testapp(2, &[]);
    let long = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", "a".repeat(10 * 1024));
    let cases: [&[u8]; 7] = [
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x:80:80\r\n\r\n",
        long.as_bytes(),
        b"GET host:80 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST * HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ];
    for bytes in cases {
        let response = assert_refused(&server, bytes, 400);
        assert!(
            response.body.contains("Host") || response.body.contains("target"),
            "{:?}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)]),
            response.body
        );
    }
    // What stays allowed: OPTIONS *, a port, an IPv6 literal.
    for head in [
        &b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET /echo/p HTTP/1.1\r\nHost: x:8080\r\n\r\n",
        b"GET /echo/v6 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    ] {
        let (response, _) = exchange(&server, head);
        assert_ne!(response.status, 400, "{:?}", String::from_utf8_lossy(head));
    }
}

#[test]
fn unambiguous_framing_still_passes_and_keeps_the_connection() {
    let server = testapp(2, &[]);
    let cases: [&[u8]; 4] = [
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\nT: v\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /upload HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello",
    ];
    for bytes in cases {
        let (response, mut stream) = exchange(&server, bytes);
        assert_eq!(response.status, 200, "{:?}", String::from_utf8_lossy(bytes));
        assert_eq!(response.body, "5\n");
        send(stream.get_mut(), &request("GET", "/echo/again", &[]));
        let again = read_response(&mut stream).expect("the connection was kept");
        assert_eq!(again.body, "again");
    }
    let (response, _) = exchange(&server, b"GET /echo/old HTTP/1.0\r\n\r\n");
    assert_eq!(response.status, 200, "HTTP/1.0 needs no Host");
}

#[test]
fn a_bad_request_behind_good_pipelined_ones_is_answered_in_turn() {
    let server = testapp(2, &[]);
    let mut batch = request("GET", "/echo/1", &[]);
    batch.extend(request("GET", "/echo/2", &[]));
    batch.extend_from_slice(b"GET /echo/3 HTTP/1.1\r\n\r\n");
    batch.extend(request("GET", "/echo/4", &[]));
    let mut stream = BufReader::new(server.connect());
    send(stream.get_mut(), &batch);
    for expected in ["1", "2"] {
        let response = read_response(&mut stream).expect("a pipelined response");
        assert_eq!((response.status, response.body.as_str()), (200, expected));
    }
    let refused = read_response(&mut stream).expect("the refusal");
    assert_eq!(refused.status, 400);
    assert!(refused.header("x-shard").is_some());
    assert!(closed_within(stream.get_mut(), Duration::from_secs(3)));
}

#[test]
fn oversized_heads_get_431() {
    let server = testapp(2, &[]);
    let big = "a".repeat(40 * 1024);
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    assert_refused(&server, head.as_bytes(), 431);
    let lines: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\n{lines}\r\n");
    assert_refused(&server, head.as_bytes(), 431);

    let small = testapp(2, &["--max-header-size", "4k"]);
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(3000)
    );
    assert_eq!(exchange(&small, fits.as_bytes()).0.status, 200);
    let over = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(5000)
    );
    assert_refused(&small, over.as_bytes(), 431);
    // Refused before the end of the head arrives, too.
    let endless = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}", "a".repeat(5000));
    assert_refused(&small, endless.as_bytes(), 431);
}

#[test]
fn oversized_bodies_get_413() {
    let server = testapp(2, &["--max-body-size", "64k"]);
    // Declared too large: refused before the body is sent.
    let head = request("PUT", "/upload", &[("Content-Length", "2097152")]);
    assert_refused(&server, &head, 413);
    // Sent whole anyway: the client still reads the 413, not a reset.
    let mut whole = request("PUT", "/upload", &[("Content-Length", "1048576")]);
    whole.extend(vec![b'x'; 1024 * 1024]);
    assert_refused(&server, &whole, 413);
    // Chunked, no length: counted as it streams.
    let mut chunked = request("PUT", "/upload", &[("Transfer-Encoding", "chunked")]);
    for _ in 0..20 {
        chunked.extend_from_slice(b"1000\r\n");
        chunked.extend(vec![b'y'; 0x1000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_refused(&server, &chunked, 413);
    // An explicit limit, on both sides of it.
    let mut at = request("PUT", "/upload?limit=10", &[("Content-Length", "10")]);
    at.extend_from_slice(b"0123456789");
    assert_eq!(exchange(&server, &at).0.body, "10\n");
    let mut over = request("PUT", "/upload?limit=10", &[("Content-Length", "11")]);
    over.extend_from_slice(b"0123456789!");
    assert_refused(&server, &over, 413);
    // Within the configured limit.
    let mut fits = request("PUT", "/upload", &[("Content-Length", "65536")]);
    fits.extend(vec![b'z'; 65536]);
    assert_eq!(exchange(&server, &fits).0.body, "65536\n");
}

#[test]
fn a_head_that_does_not_arrive_in_time_gets_408() {
    for shards in [2, 4] {
        let server = testapp(shards, &["--header-read-timeout", "1s"]);
        let mut stream = BufReader::new(server.connect());
        send(stream.get_mut(), b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        let started = Instant::now();
        let response = read_response(&mut stream).expect("a 408");
        let waited = started.elapsed();
        assert_eq!(response.status, 408);
        assert!(response.header("x-shard").is_some());
        assert!(waited >= Duration::from_millis(900), "408 after {waited:?}");
        assert!(closed_within(stream.get_mut(), Duration::from_secs(3)));
    }
}

#[test]
fn idle_connections_close_silently_after_their_timeout() {
    // A kept connection idles out after the keep-alive timeout...
    let server = testapp(
        2,
        &["--keep-alive-timeout", "1s", "--header-read-timeout", "10s"],
    );
    let (first, mut kept) = exchange(&server, &request("GET", "/", &[]));
    assert_eq!(first.status, 200);
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = kept
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(4)));
    let _ = kept.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(rest.is_empty(), "an idle close says nothing");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&waited),
        "kept connection closed after {waited:?}"
    );

    // ...and a new connection that sends nothing after the header timeout.
    let server = testapp(
        2,
        &["--keep-alive-timeout", "10s", "--header-read-timeout", "1s"],
    );
    let mut silent = server.connect();
    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(4)));
    assert!(started.elapsed() >= Duration::from_millis(900));
    let (first, mut kept) = exchange(&server, &request("GET", "/", &[]));
    assert_eq!(first.status, 200);
    assert!(
        !closed_within(kept.get_mut(), Duration::from_millis(2500)),
        "a kept connection has the keep-alive timeout, not the header timeout"
    );
}

/// Sends the head of a 1,000-byte upload, then `pace` bytes of body per
/// 250 ms; returns the response the server gave up with and when.
fn trickle_upload(server: &Server, pace: usize) -> (Response, Duration, BufReader<TcpStream>) {
    let mut stream = BufReader::new(server.connect());
    send(
        stream.get_mut(),
        &request("PUT", "/upload", &[("Content-Length", "1000")]),
    );
    stream
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(250)))
        .expect("read timeout");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        if pace > 0 {
            // Writes fail once the server has given up; reading says why.
            let _ = stream.get_mut().write_all(&vec![b'x'; pace]);
        }
        let mut byte = [0u8; 1];
        match stream.get_mut().peek(&mut byte) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("the upload ended without an answer: {e}"),
        }
    }
    let waited = started.elapsed();
    stream
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let response = read_response(&mut stream).expect("an answer to the slow upload");
    (response, waited, stream)
}

#[test]
fn slow_and_stalled_uploads_are_cut_off_with_408() {
    let server = testapp(2, &["--body-read-timeout", "1s", "--body-min-rate", "1000"]);
    // 4 bytes/s against a minimum of 1,000 bytes/s, then a body that stops.
    for pace in [1, 0] {
        let (response, waited, mut stream) = trickle_upload(&server, pace);
        assert_eq!(response.status, 408, "pace {pace}: {response:?}");
        assert!(response.header("x-shard").is_some());
        assert!(
            (Duration::from_millis(800)..Duration::from_secs(5)).contains(&waited),
            "pace {pace}: cut off after {waited:?}"
        );
        assert!(closed_within(stream.get_mut(), Duration::from_secs(3)));
    }
    // A body at a good pace is not cut off.
    let (response, _) = {
        let mut stream = BufReader::new(server.connect());
        send(
            stream.get_mut(),
            &request("PUT", "/upload", &[("Content-Length", "3000")]),
        );
        for _ in 0..6 {
            send(stream.get_mut(), &[b'x'; 500]);
            std::thread::sleep(Duration::from_millis(250));
        }
        (read_response(&mut stream).expect("an answer"), stream)
    };
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "3000\n");
}

#[test]
fn a_client_that_never_reads_its_response_is_cut_off() {
    const SIZE: usize = 64 * 1024 * 1024;
    let server = testapp(2, &["--send-timeout", "1s"]);
    let mut stream = server.connect();
    send(&mut stream, &request("GET", &format!("/big/{SIZE}"), &[]));
    std::thread::sleep(Duration::from_secs(3));
    // Whatever the kernel buffered arrives, then the end of the stream.
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    let ended = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break false,
            Err(_) => break true,
        }
        assert!(Instant::now() < deadline, "still reading after 20 s");
    };
    assert!(ended, "the connection was not closed ({total} bytes read)");
    assert!(
        total < SIZE,
        "the whole response arrived: nothing was cut off"
    );
    // The shard is fine.
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn the_connection_limit_holds_and_the_shard_keeps_serving() {
    const LIMIT: usize = 10;
    for shards in [2, 4] {
        let server = testapp(shards, &["--max-connections", "10"]);
        let mut kept: HashMap<String, Vec<BufReader<TcpStream>>> = HashMap::new();
        let mut refused = 0;
        for _ in 0..2000 {
            let full = kept.values().filter(|c| c.len() == LIMIT).count();
            if full == shards && refused >= shards {
                break;
            }
            let mut stream = BufReader::new(server.connect());
            send(stream.get_mut(), &request("GET", "/", &[]));
            match read_response(&mut stream) {
                Some(response) if response.status == 200 => {
                    let shard = response.header("x-shard").expect("x-shard").to_owned();
                    let open = kept.entry(shard.clone()).or_default();
                    open.push(stream);
                    assert!(
                        open.len() <= LIMIT,
                        "shard {shard} holds {} connections",
                        open.len()
                    );
                }
                Some(response) => {
                    assert_eq!(response.status, 503, "{response:?}");
                    let shard = response.header("x-shard").expect("x-shard");
                    assert_eq!(
                        kept.get(shard).map_or(0, Vec::len),
                        LIMIT,
                        "shard {shard} refused below its limit"
                    );
                    refused += 1;
                }
                None => refused += 1,
            }
        }
        assert_eq!(kept.len(), shards, "not every shard was reached");
        assert!(
            kept.values().all(|c| c.len() == LIMIT),
            "a shard never filled up"
        );
        assert!(refused >= shards, "nothing was refused");

        // Every kept connection still works.
        for connections in kept.values_mut() {
            for stream in connections.iter_mut() {
                send(stream.get_mut(), &request("GET", "/echo/still", &[]));
                assert_eq!(read_response(stream).expect("served").body, "still");
            }
        }
        // Closing one makes room on its shard.
        let shard0 = kept.get_mut("0").expect("shard 0 connections");
        drop(shard0.pop());
        let mut served = false;
        for _ in 0..2000 {
            let mut stream = BufReader::new(server.connect());
            send(stream.get_mut(), &request("GET", "/", &[]));
            if let Some(response) = read_response(&mut stream)
                && response.status == 200
            {
                assert_eq!(response.header("x-shard"), Some("0"));
                served = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            served,
            "shard 0 never took a new connection after one closed"
        );
    }
}

#[test]
fn slowloris_does_not_starve_other_clients_and_is_cut_off() {
    const ATTACKERS: usize = 200;
    for shards in [2, 4] {
        let server = testapp(shards, &["--header-read-timeout", "2s"]);
        let mut attackers: Vec<TcpStream> = (0..ATTACKERS).map(|_| server.connect()).collect();
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let started = Instant::now();
        let writer = std::thread::spawn(move || {
            for byte in head.iter().take(6) {
                for attacker in &mut attackers {
                    // Fails once the server has closed it; that is the point.
                    let _ = attacker.write_all(&[*byte]);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            attackers
        });

        // Meanwhile, normal clients are answered promptly, on every shard.
        while started.elapsed() < Duration::from_millis(1800) {
            let asked = Instant::now();
            let response = server.get("/");
            let took = asked.elapsed();
            assert_eq!(response.status, 200);
            assert!(
                took < Duration::from_secs(1),
                "a normal request took {took:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }

        let mut attackers = writer.join().expect("the writer thread");
        let mut timed_out = 0;
        for attacker in &mut attackers {
            attacker
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("read timeout");
            let mut answer = Vec::new();
            let closed = match attacker.read_to_end(&mut answer) {
                Ok(_) => true,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            };
            assert!(closed, "a slowloris connection is still open");
            timed_out += usize::from(answer.starts_with(b"HTTP/1.1 408"));
        }
        assert!(
            timed_out > ATTACKERS / 2,
            "only {timed_out} of {ATTACKERS} were answered 408"
        );
        assert!(started.elapsed() < Duration::from_secs(15));
    }
}
