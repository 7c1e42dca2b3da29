//! The mixed load: one request in ten burns ~5 ms of CPU (`GET /work`), the
//! rest are hello world (`GET /`); what matters is the latency of the light
//! requests while the heavy ones run. Thread-per-core is weakest here: a
//! shard that computes holds up its other connections, where a
//! work-stealing runtime moves them to another thread. forkless `hello`
//! sends `/work` to `forkless::offload`; the tokio+hyper peer computes it in
//! its handler, on the work-stealing runtime.
//!
//! Closed-loop clients on threads of their own (blocking sockets, keep-alive
//! connections), each choosing heavy or light at random (a fixed seed per
//! client), so every server sees the same sequence of requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::measure::Setup;
use super::server::{Launch, Peer, Running};
use super::stats;

/// Clients (each one keep-alive connection).
pub const CLIENTS: usize = 32;

/// One request in this many is heavy.
pub const HEAVY_EVERY: u64 = 10;

/// The peers that serve `/work`.
pub const PEERS: [Peer; 2] = [Peer::Forkless, Peer::TokioHyper];

/// What one mixed run saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mixed {
    /// Light requests answered per second.
    pub light_rate: f64,
    /// Heavy requests answered per second.
    pub heavy_rate: f64,
    /// Median latency of the light requests.
    pub light_p50: Duration,
    /// 99th percentile latency of the light requests.
    pub light_p99: Duration,
    /// Requests that failed.
    pub errors: u64,
}

#[derive(Default)]
struct Tally {
    /// Latencies of the light requests, in nanoseconds.
    light: Vec<u64>,
    heavy: u64,
    errors: u64,
}

/// Runs the mixed load against `peer` on the whole machine.
pub fn run(setup: &Setup, peer: Peer) -> Result<Mixed, String> {
    let launch = Launch {
        threads: setup.cpus,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cpu0: false,
        no_pin: false,
    };
    let command = setup.binaries.command(peer, launch)?;
    let (_server, addr): (Running, SocketAddr) = Running::start(peer.name(), command)?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let measuring = measuring.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("mixed-{i}"))
                .spawn(move || client(addr, i as u64 + 1, &measuring, &stop))
                .map_err(|e| format!("cannot start a load thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(setup.warmup);
    measuring.store(true, Ordering::Release);
    let started = Instant::now();
    std::thread::sleep(setup.window);
    measuring.store(false, Ordering::Release);
    let window = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    let mut total = Tally::default();
    for client in clients {
        let tally = client.join().map_err(|_| "a load thread panicked")?;
        total.light.extend(tally.light);
        total.heavy += tally.heavy;
        total.errors += tally.errors;
    }
    if total.light.is_empty() {
        return Err(format!("{}: no light request was answered", peer.name()));
    }
    let light_count = total.light.len() as f64;
    let mut at = |q: f64| Duration::from_nanos(stats::quantile(&mut total.light, q).unwrap_or(0));
    let (light_p50, light_p99) = (at(0.50), at(0.99));
    Ok(Mixed {
        light_rate: light_count / window,
        heavy_rate: total.heavy as f64 / window,
        light_p50,
        light_p99,
        errors: total.errors,
    })
}

fn client(addr: SocketAddr, seed: u64, measuring: &AtomicBool, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut connection: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Acquire) {
        // xorshift64: the same sequence for every server.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let heavy = state.is_multiple_of(HEAVY_EVERY);
        let reader = match connection.as_mut() {
            Some(reader) => reader,
            None => match TcpStream::connect(addr) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    connection.insert(BufReader::new(stream))
                }
                Err(_) => {
                    tally.errors += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let path = if heavy { "/work" } else { "/" };
        let sent = Instant::now();
        match exchange(reader, path) {
            Ok(200) => {
                if measuring.load(Ordering::Acquire) {
                    if heavy {
                        tally.heavy += 1;
                    } else {
                        let took = sent.elapsed().as_nanos();
                        tally.light.push(u64::try_from(took).unwrap_or(u64::MAX));
                    }
                }
            }
            Ok(_) | Err(()) => {
                tally.errors += 1;
                connection = None;
            }
        }
    }
    tally
}

/// One request on a keep-alive connection; the response's status.
fn exchange(reader: &mut BufReader<TcpStream>, path: &str) -> Result<u16, ()> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    reader
        .get_mut()
        .write_all(head.as_bytes())
        .map_err(|_| ())?;
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(|_| ())? == 0 {
        return Err(());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(())?;
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|_| ())? == 0 {
            return Err(());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(|_| ())?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|_| ())?;
    Ok(status)
}
