//! A crashed shard leaves nothing behind (issue #13): its clients are
//! answered or closed at once, and its descriptors and threads are freed,
//! crash after crash, at 1, 2 and 4 shards.

use std::io::BufReader;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use forkless_tests::{SHARD_COUNTS, Server, closed_within, read_response, request, send, wait_for};

const BINARY: &str = env!("CARGO_BIN_EXE_forkless-supervised");

/// Crashes per run: well past the default crash-loop limit (raised here).
const CRASHES: usize = 20;

fn count_entries(dir: String) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

fn fds(pid: i32) -> usize {
    count_entries(format!("/proc/{pid}/fd"))
}

fn threads(pid: i32) -> usize {
    count_entries(format!("/proc/{pid}/task"))
}

/// Sockets of `port` in CLOSE-WAIT (the peer closed, the server never did).
fn close_wait(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&"08")
        })
        .count()
}

/// Keep-alive connections, each answered once, until `count` of them are
/// on `shard` (the others are kept too, so the shards stay balanced and
/// fresh connections keep reaching every shard): `(on shard, elsewhere)`.
fn clients_on(
    server: &Server,
    shard: &str,
    count: usize,
) -> (Vec<BufReader<TcpStream>>, Vec<BufReader<TcpStream>>) {
    let (mut on, mut elsewhere) = (Vec::new(), Vec::new());
    for _ in 0..20 * count {
        if on.len() == count {
            break;
        }
        let mut stream = BufReader::new(server.connect());
        send(stream.get_mut(), &request("GET", "/", &[]));
        let response = read_response(&mut stream).expect("an answer");
        if response.header("x-shard") == Some(shard) {
            on.push(stream);
        } else {
            elsewhere.push(stream);
        }
    }
    assert_eq!(
        on.len(),
        count,
        "could not place {count} clients on shard {shard}"
    );
    (on, elsewhere)
}

/// Asks for a crash on `stream`, a keep-alive connection to the shard.
fn crash(stream: &mut BufReader<TcpStream>) {
    send(stream.get_mut(), &request("GET", "/crash", &[]));
    let answer = read_response(stream).expect("the crash request is answered");
    assert_eq!(answer.status, 200);
}

#[test]
fn a_crashed_shard_closes_its_connections_and_frees_what_it_held() {
    for shards in SHARD_COUNTS {
        let server = Server::start(
            Path::new(BINARY),
            &[
                "--shards",
                &shards.to_string(),
                "--max-restarts",
                "1000",
                "--admin",
                "127.0.0.1:0",
            ],
        );
        let pid = server.pid();
        let victim = (shards - 1).to_string();
        // Warm up every shard once, then count with no connection open.
        drop(server.per_shard("/", shards));
        let settle = |what: &str, fd_goal: usize, thread_goal: usize| {
            wait_for(what, Duration::from_secs(10), || {
                fds(pid) == fd_goal && threads(pid) == thread_goal
            });
        };
        std::thread::sleep(Duration::from_millis(200));
        let (fds_before, threads_before) = (fds(pid), threads(pid));

        for round in 0..CRASHES {
            let clients = if round == 0 { 10 } else { 2 };
            let (mut doomed, mut others) = clients_on(&server, &victim, clients + 1);
            crash(&mut doomed[clients]);
            let crashed_at = Instant::now();
            for stream in &mut doomed {
                assert!(
                    closed_within(stream.get_mut(), Duration::from_secs(1)),
                    "round {round} at {shards} shards: a client of the crashed shard got \
                     neither an answer nor a close within 1 s"
                );
            }
            // The other shards' clients were not touched.
            for stream in &mut others {
                send(stream.get_mut(), &request("GET", "/", &[]));
                let response = read_response(stream).expect("a healthy shard answers");
                assert_eq!(response.status, 200);
            }
            assert!(crashed_at.elapsed() < Duration::from_secs(5));
            // Back on the port before the next round. A fresh connection
            // that met the crash itself may be closed unanswered (the open
            // part of #13: no 503 for requests in flight yet): try another.
            wait_for("the shard to serve again", Duration::from_secs(10), || {
                let mut stream = BufReader::new(server.connect());
                send(stream.get_mut(), &request("GET", "/", &[]));
                read_response(&mut stream).is_some_and(|response| {
                    response.status == 200 && response.header("x-shard") == Some(&*victim)
                })
            });
        }
        settle(
            "descriptors and threads back to their count before the crashes",
            fds_before,
            threads_before,
        );
        assert_eq!(
            close_wait(server.addr.port()),
            0,
            "sockets left in CLOSE-WAIT"
        );
        assert!(
            server.output().matches("shard exit (panicked").count() >= CRASHES,
            "{}",
            server.output()
        );
    }
}
