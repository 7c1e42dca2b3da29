//! kv across a graceful shutdown and across rolling reloads (issue #13):
//! cross-shard work in flight at SIGTERM completes (the shutdown barrier),
//! and the shard-local maps survive every reload with no acknowledged write
//! lost and no stale read (the state hand-off).

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use forkless_tests::{
    BinaryResponse, IO_TIMEOUT, Server, app_binary, read_binary_response, request_with_body,
};

fn kv(shards: usize) -> Server {
    let shards = shards.to_string();
    let mut args = vec!["--shards", &shards, "--shutdown-timeout", "10s"];
    if shards != "1" && shards != "2" {
        args.push("--no-pin");
    }
    Server::start(&app_binary("kv"), &args)
}

/// The shard that owns `key` in kv: FNV-1a (64 bit) mod the shard count.
fn owner(key: &[u8], shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    usize::try_from(hash % shards as u64).expect("below shards")
}

/// One request on a fresh connection; `None` when the connection fails
/// (refused, reset or closed before a response): never a panic.
fn try_fetch(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Option<BinaryResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
    stream
        .write_all(&request_with_body(method, path, &[], body))
        .ok()?;
    read_binary_response(&mut BufReader::new(stream))
}

fn exit_code(server: &mut Server) -> Option<i32> {
    server
        .wait_exit(Duration::from_secs(20))
        .expect("the server exits after SIGTERM")
        .code()
}

/// 20 keep-alive connections spread over the shards, each with a `PUT`
/// for a key the next shard owns, bodies half sent at SIGTERM. The rest is
/// sent shard by shard, highest first, a pause between: without the
/// barrier each shard ends once its own connections are done, before the
/// next group's `PUT`s reach it. Every one must be answered 2xx, exit 0.
fn half_sent_puts_across_sigterm(shards: usize) {
    let mut server = kv(shards);
    let mut pending: Vec<(usize, String, BufReader<TcpStream>)> = Vec::new();
    let mut n = 0;
    while pending.len() < 20 {
        let mut stream = BufReader::new(server.connect());
        stream
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("send a GET");
        let response = read_binary_response(&mut stream).expect("a response");
        let shard: usize = response
            .header("x-shard")
            .and_then(|s| s.parse().ok())
            .expect("an x-shard header");
        let key = loop {
            let key = format!("barrier-{n}");
            n += 1;
            if owner(key.as_bytes(), shards) == (shard + 1) % shards {
                break key;
            }
        };
        let head = format!("PUT /kv/{key} HTTP/1.1\r\nHost: test\r\nContent-Length: 8\r\n\r\nhalf");
        stream
            .get_mut()
            .write_all(head.as_bytes())
            .expect("send the head and half the body");
        pending.push((shard, key, stream));
    }
    // Let every shard read its heads before the stop (sequencing, not timing).
    thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(300));
    pending.sort_by_key(|(shard, _, _)| std::cmp::Reverse(*shard));
    let mut ok = 0;
    let mut failures = Vec::new();
    let mut group = None;
    for (shard, key, mut stream) in pending {
        if group.is_some_and(|g| g != shard) {
            // Time for the shard just finished to end, were it not held.
            thread::sleep(Duration::from_millis(300));
        }
        group = Some(shard);
        let sent = stream.get_mut().write_all(b"-end");
        match (sent, read_binary_response(&mut stream)) {
            (Ok(()), Some(response)) if (200..300).contains(&response.status) => ok += 1,
            (_, response) => failures.push((
                shard,
                key,
                response.map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned())),
            )),
        }
    }
    let code = exit_code(&mut server);
    assert_eq!(
        ok,
        20,
        "{shards} shards: {} failed: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(3)],
        server.output()
    );
    assert_eq!(code, Some(0), "{}", server.output());
}

#[test]
fn cross_shard_puts_in_flight_at_sigterm_complete_at_two_shards() {
    half_sent_puts_across_sigterm(2);
}

#[test]
fn cross_shard_puts_in_flight_at_sigterm_complete_at_four_shards() {
    half_sent_puts_across_sigterm(4);
}

/// Writers on fresh connections while SIGTERM arrives: requests may be
/// refused once the listeners close, but none is answered `503` by the bus.
#[test]
fn sigterm_under_load_answers_no_bus_503() {
    for shards in [2, 4] {
        let mut server = kv(shards);
        let addr = server.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let stop = stop.clone();
                thread::spawn(move || {
                    let (mut answered, mut bus_503) = (0u64, Vec::new());
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let path = format!("/kv/load-{w}-{}", i % 64);
                        i += 1;
                        let Some(response) = try_fetch(addr, "PUT", &path, b"value") else {
                            continue;
                        };
                        answered += 1;
                        if response.status == 503 {
                            bus_503.push(String::from_utf8_lossy(&response.body).into_owned());
                        }
                    }
                    (answered, bus_503)
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(500));
        server.signal(libc::SIGTERM);
        let code = exit_code(&mut server);
        stop.store(true, Ordering::Relaxed);
        let mut answered = 0;
        let mut bus_503 = Vec::new();
        for writer in writers {
            let (a, b) = writer.join().expect("a writer thread");
            answered += a;
            bus_503.extend(b);
        }
        assert!(answered > 0, "no request was answered");
        assert!(
            bus_503.is_empty(),
            "{shards} shards: {} of {answered} answered 503: {:?}",
            bus_503.len(),
            &bus_503[..bus_503.len().min(3)]
        );
        assert_eq!(code, Some(0), "{}", server.output());
    }
}

/// What one writer knows of one of its keys.
#[derive(Default, Clone)]
struct Known {
    /// The last value whose `PUT` was acknowledged.
    acked: Option<String>,
    /// Values sent since then whose `PUT` got no answer (may or may not
    /// have been applied).
    unsure: Vec<String>,
}

impl Known {
    /// Whether `value` (`None`: 404) is a correct read of this key.
    fn allows(&self, value: Option<&str>) -> bool {
        match value {
            None => self.acked.is_none(),
            Some(value) => {
                self.acked.as_deref() == Some(value) || self.unsure.iter().any(|u| u == value)
            }
        }
    }
}

const KEYS_PER_WRITER: usize = 32;

/// One writer: `PUT`s its own keys with increasing values and reads back
/// another of its keys after each, on fresh connections; returns what it
/// knows and the wrong reads it saw.
fn writer(addr: SocketAddr, w: usize, stop: &AtomicBool) -> (Vec<Known>, Vec<String>, u64) {
    let mut known = vec![Known::default(); KEYS_PER_WRITER];
    let mut wrong = Vec::new();
    let mut seq = 0u64;
    let mut acked = 0;
    while !stop.load(Ordering::Relaxed) {
        let k = usize::try_from(seq).expect("fits") % KEYS_PER_WRITER;
        seq += 1;
        let value = format!("w{w}-{seq}");
        let path = format!("/kv/state-{w}-{k}");
        match try_fetch(addr, "PUT", &path, value.as_bytes()) {
            Some(r) if (200..300).contains(&r.status) => {
                known[k] = Known {
                    acked: Some(value),
                    unsure: Vec::new(),
                };
                acked += 1;
            }
            Some(r) if r.status >= 500 => {
                wrong.push(format!("PUT {path}: {}", r.status));
                known[k].unsure.push(value);
            }
            _ => known[k].unsure.push(value),
        }
        let r_key = (k * 7 + 3) % KEYS_PER_WRITER;
        let path = format!("/kv/state-{w}-{r_key}");
        if let Some(response) = try_fetch(addr, "GET", &path, b"") {
            check_read(&known[r_key], &path, &response, &mut wrong);
        }
    }
    (known, wrong, acked)
}

fn check_read(known: &Known, path: &str, response: &BinaryResponse, wrong: &mut Vec<String>) {
    let value = match response.status {
        200 => String::from_utf8_lossy(&response.body).into_owned(),
        404 => String::new(),
        status => {
            wrong.push(format!("GET {path}: {status}"));
            return;
        }
    };
    let read = (response.status == 200).then_some(value.as_str());
    if !known.allows(read) {
        wrong.push(format!(
            "GET {path}: read {read:?}, last acknowledged {:?}",
            known.acked
        ));
    }
}

/// 8 writers while SIGHUP arrives every 2 s for 10 s: every read during and
/// after returns the key's last acknowledged value.
fn writes_survive_reloads(shards: usize) {
    let mut server = kv(shards);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let stop = stop.clone();
            thread::spawn(move || writer(addr, w, &stop))
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_secs(2));
        server.signal(libc::SIGHUP);
    }
    // Let the last reload finish under load.
    forkless_tests::wait_for("the reloads to finish", Duration::from_secs(20), || {
        let output = server.output();
        output.matches("rolling reload done").count() >= 1
            && output.matches("reloading shard").count()
                == shards * output.matches("rolling reload done").count()
    });
    stop.store(true, Ordering::Relaxed);
    let mut wrong = Vec::new();
    let mut acked = 0;
    let mut all: HashMap<String, Known> = HashMap::new();
    for (w, writer) in writers.into_iter().enumerate() {
        let (known, seen, count) = writer.join().expect("a writer thread");
        wrong.extend(seen);
        acked += count;
        for (k, known) in known.into_iter().enumerate() {
            all.insert(format!("/kv/state-{w}-{k}"), known);
        }
    }
    let mut after = Vec::new();
    for (path, known) in &all {
        match try_fetch(addr, "GET", path, b"") {
            Some(response) => check_read(known, path, &response, &mut after),
            None => after.push(format!("GET {path}: no answer")),
        }
    }
    let reloads = server.output().matches("rolling reload done").count();
    server.signal(libc::SIGTERM);
    let code = exit_code(&mut server);
    assert!(reloads >= 2, "only {reloads} reloads ran");
    assert!(acked > 100, "only {acked} writes were acknowledged");
    assert!(
        wrong.is_empty() && after.is_empty(),
        "{shards} shards, {reloads} reloads, {acked} acknowledged writes: {} wrong during, {} after: {:?} {:?}",
        wrong.len(),
        after.len(),
        &wrong[..wrong.len().min(5)],
        &after[..after.len().min(5)],
    );
    assert_eq!(code, Some(0), "{}", server.output());
}

#[test]
fn writes_survive_rolling_reloads_at_four_shards() {
    writes_survive_reloads(4);
}

#[test]
fn writes_survive_rolling_reloads_at_two_shards() {
    writes_survive_reloads(2);
}
