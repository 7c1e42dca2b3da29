//! One measurement of one server: throughput and CPU per request in a mode,
//! memory idle and with 1,000 open connections, exec to first answer, and
//! (forkless only) how connections and requests spread over shards.
//!
//! Each function starts its own server and kills it before returning.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::loadgen::{self, Edge, Load, ParsedResponse};
use super::server::{Binaries, Launch, Peer, Running};
use super::wrk::Wrk;
use super::{proc, stats};

/// How long one blocking read or write of the harness may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests per write in the pipelined mode.
pub const PIPELINE_DEPTH: usize = 16;

/// Open connections of the memory measurement.
pub const HELD_CONNECTIONS: usize = 1000;

/// How the server and the load are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Server on CPU 0 with one shard/worker, load on CPU 1, one request at a time per connection.
    PerCore,
    /// Server on every CPU, load unpinned.
    Machine,
    /// As `PerCore`, with 16 requests per write.
    Pipelined,
}

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 3] = [Mode::PerCore, Mode::Machine, Mode::Pipelined];

    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Mode::PerCore => "per core",
            Mode::Machine => "whole machine",
            Mode::Pipelined => "pipelined x16, per core",
        }
    }
}

/// What every measurement needs to know.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Where the servers are.
    pub binaries: Binaries,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Whether `wrk` runs (else the built-in generator does the non-pipelined load).
    pub wrk: bool,
    /// Length of each measured window.
    pub window: Duration,
    /// Unmeasured load before it.
    pub warmup: Duration,
    /// Connections of the non-pipelined per-core load.
    pub connections: usize,
}

impl Setup {
    /// Whether server and load can get a CPU each.
    fn pinned(&self) -> bool {
        self.cpus >= 2
    }
}

/// Throughput, latency and CPU cost of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Requests per second.
    pub rate: f64,
    /// Median latency (of a batch of 16 when pipelined).
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Server CPU time (user + system, all threads and child processes)
    /// divided by the requests answered in the same window.
    pub cpu_per_request: Duration,
    /// Server CPU time over the window's wall time: 1.0 is one CPU kept
    /// busy. Below ~0.9 per core, something else (the load generator, other
    /// processes on the machine) bounded the requests/s, not the server.
    pub cpu_use: f64,
    /// Errors the load saw.
    pub errors: u64,
}

/// Runs `mode`'s load against a fresh `peer`.
pub fn throughput(
    setup: &Setup,
    peer: Peer,
    mode: Mode,
    interrupted: &dyn Fn() -> bool,
) -> Result<Throughput, String> {
    let per_core = mode != Mode::Machine;
    let launch = Launch {
        threads: if per_core { 1 } else { setup.cpus },
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cpu0: per_core && setup.pinned(),
        no_pin: false,
    };
    let (mut server, addr) = Running::start(peer.name(), setup.binaries.command(peer, launch)?)?;
    check_answers(addr).map_err(|e| format!("{}: {e}", peer.name()))?;
    let load_cpu = (per_core && setup.pinned()).then_some(1);
    let pid = server.pid();
    let result = if mode != Mode::Pipelined && setup.wrk {
        let (threads, connections) = if per_core {
            (1, setup.connections)
        } else {
            (setup.cpus, setup.connections * 2)
        };
        let mut wrk = Wrk {
            addr,
            threads,
            connections,
            seconds: setup.warmup.as_secs().max(1),
            cpu: load_cpu,
            https: false,
        };
        wrk.run(interrupted)?;
        wrk.seconds = setup.window.as_secs().max(1);
        let before = proc::cpu_time(pid);
        let started = Instant::now();
        let report = wrk.run(interrupted)?;
        let cpu = proc::cpu_time(pid).saturating_sub(before);
        let wall = started.elapsed();
        Throughput {
            rate: report.rate,
            p50: report.p50,
            p99: report.p99,
            cpu_per_request: per_request(cpu, report.requests),
            cpu_use: cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
            errors: report.errors,
        }
    } else {
        let depth = if mode == Mode::Pipelined {
            PIPELINE_DEPTH
        } else {
            1
        };
        let connections = match mode {
            Mode::Pipelined => setup.connections / 2,
            Mode::PerCore => setup.connections,
            Mode::Machine => setup.connections * 2,
        };
        let load = Load {
            addr,
            connections,
            threads: if per_core { 1 } else { setup.cpus },
            depth,
            warmup: setup.warmup,
            duration: setup.window,
            cpu: load_cpu,
        };
        let mut cpu_at_start = Duration::ZERO;
        let mut cpu = Duration::ZERO;
        let mut report = loadgen::run(&load, &mut |edge| match edge {
            Edge::Start => cpu_at_start = proc::cpu_time(pid),
            Edge::End => cpu = proc::cpu_time(pid).saturating_sub(cpu_at_start),
        })?;
        let p50 = stats::quantile(&mut report.latencies_ns, 0.5).unwrap_or(0);
        let p99 = stats::quantile(&mut report.latencies_ns, 0.99).unwrap_or(0);
        Throughput {
            rate: report.rate(),
            p50: Duration::from_nanos(p50),
            p99: Duration::from_nanos(p99),
            cpu_per_request: per_request(cpu, report.requests),
            cpu_use: cpu.as_secs_f64() / report.window.as_secs_f64().max(1e-9),
            errors: report.errors,
        }
    };
    if !server.alive() {
        return Err(format!(
            "{} died under load; its output ends with:\n{}",
            peer.name(),
            server.output_tail()
        ));
    }
    Ok(result)
}

fn per_request(cpu: Duration, requests: u64) -> Duration {
    if requests == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(cpu.as_secs_f64() / requests as f64)
}

/// Resident memory of one server with one shard/worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    /// Idle, once serving, no connection yet (KiB).
    pub idle_kib: u64,
    /// With [`HELD_CONNECTIONS`] open keep-alive connections, each of which
    /// was answered once (KiB).
    pub loaded_kib: u64,
}

impl Memory {
    /// Growth per open connection, in bytes.
    pub fn per_connection_bytes(&self) -> f64 {
        (self.loaded_kib as f64 - self.idle_kib as f64) * 1024.0 / HELD_CONNECTIONS as f64
    }
}

/// Idle RSS and RSS with 1,000 open connections, one shard/worker on CPU 0.
pub fn memory(setup: &Setup, peer: Peer) -> Result<Memory, String> {
    let launch = Launch {
        threads: 1,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cpu0: setup.pinned(),
        no_pin: false,
    };
    let (server, addr) = Running::start(peer.name(), setup.binaries.command(peer, launch)?)?;
    std::thread::sleep(Duration::from_millis(200));
    let idle_kib = proc::rss_kib(server.pid());
    let mut held = Vec::with_capacity(HELD_CONNECTIONS);
    for i in 0..HELD_CONNECTIONS {
        let mut stream =
            connect(addr).map_err(|e| format!("{}: connection {i}: {e}", peer.name()))?;
        let response =
            get(&mut stream).map_err(|e| format!("{}: connection {i}: {e}", peer.name()))?;
        if response.status != 200 {
            return Err(format!(
                "{}: connection {i} got {}",
                peer.name(),
                response.status
            ));
        }
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    let loaded_kib = proc::rss_kib(server.pid());
    drop(held);
    Ok(Memory {
        idle_kib,
        loaded_kib,
    })
}

/// Start-up of one server with one shard/worker per CPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Startup {
    /// From spawning the process to the first `200`.
    pub first_answer: Duration,
    /// Resident memory soon after (KiB), all CPUs' shards/workers.
    pub idle_kib: u64,
}

/// Execs `peer` on a free port and polls it until it answers.
pub fn startup(setup: &Setup, peer: Peer) -> Result<Startup, String> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?;
    let launch = Launch {
        threads: setup.cpus,
        listen: addr,
        cpu0: false,
        no_pin: false,
    };
    let command = setup.binaries.command(peer, launch)?;
    let started = Instant::now();
    let mut server = Running::spawn(peer.name(), command)?;
    let first_answer = loop {
        let answered = TcpStream::connect_timeout(&addr, Duration::from_millis(100))
            .and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                get(&mut stream)
            })
            .is_ok_and(|response| response.status == 200);
        if answered {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(10) || !server.alive() {
            return Err(format!(
                "{} did not answer within 10 s of exec; its output ends with:\n{}",
                peer.name(),
                server.output_tail()
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    std::thread::sleep(Duration::from_millis(200));
    Ok(Startup {
        first_answer,
        idle_kib: proc::rss_kib(server.pid()),
    })
}

/// Where forkless's connections and requests landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// Connections per shard, by shard id.
    pub connections: Vec<u64>,
    /// Requests answered per shard during the window, by shard id.
    pub requests: Vec<u64>,
    /// Connections whose responses carried no usable `x-shard`.
    pub untagged: u64,
}

/// Opens each of `connection_counts` connections to a fresh `hello
/// --shards shards` and drives them one request at a time for the window,
/// counting by `x-shard`.
pub fn balance(
    setup: &Setup,
    shards: usize,
    connection_counts: &[usize],
) -> Result<Vec<Balance>, String> {
    let launch = Launch {
        threads: shards,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cpu0: false,
        no_pin: shards > setup.cpus,
    };
    let command = setup.binaries.command(Peer::Forkless, launch)?;
    let (_server, addr) = Running::start("forkless", command)?;
    let mut results = Vec::new();
    for &connections in connection_counts {
        let load = Load {
            addr,
            connections,
            threads: setup.cpus,
            depth: 1,
            warmup: Duration::from_millis(200),
            duration: setup.window.min(Duration::from_secs(2)),
            cpu: None,
        };
        let report = loadgen::run(&load, &mut |_| {})?;
        let mut balance = Balance {
            connections: vec![0; shards],
            requests: vec![0; shards],
            untagged: 0,
        };
        for tally in &report.connections {
            match tally.shard.and_then(|s| usize::try_from(s).ok()) {
                Some(shard) if shard < shards => {
                    balance.connections[shard] += 1;
                    balance.requests[shard] += tally.responses;
                }
                _ => balance.untagged += 1,
            }
        }
        results.push(balance);
    }
    Ok(results)
}

/// Fails unless `GET /` answers `200` and `GET /nope` answers `404`.
fn check_answers(addr: SocketAddr) -> Result<(), String> {
    for (path, want) in [("/", 200), ("/nope", 404)] {
        let mut stream = connect(addr)?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("sending GET {path}: {e}"))?;
        let response = read_response(&mut stream).map_err(|e| format!("GET {path}: {e}"))?;
        if response.status != want {
            return Err(format!(
                "GET {path} answered {}, not {want}",
                response.status
            ));
        }
    }
    Ok(())
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    Ok(stream)
}

/// Sends `GET /` and reads one response.
fn get(stream: &mut TcpStream) -> std::io::Result<ParsedResponse> {
    let addr = stream.peer_addr()?;
    stream.write_all(&loadgen::request_batch(addr, 1))?;
    read_response(stream).map_err(std::io::Error::other)
}

/// Reads one complete response (bounded by the socket's read timeout).
fn read_response(stream: &mut TcpStream) -> Result<ParsedResponse, String> {
    let mut input = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(response) = loadgen::parse_response(&input)? {
            return Ok(response);
        }
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("reading a response: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        input.extend_from_slice(&buf[..n]);
        if input.len() > 1 << 20 {
            return Err("response larger than 1 MiB".into());
        }
    }
}
