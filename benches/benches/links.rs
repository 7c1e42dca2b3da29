//! `GET /{code}` of `apps/links` against the same app on axum + tokio's
//! multi-thread runtime + deadpool-postgres (`peer-links-axum`), side by
//! side in one run, against a private PostgreSQL the benchmark starts
//! (`forkless_tests::services`):
//!
//! - **cache hits**: 200 codes, every one in the server's cache after the
//!   warm-up (no database on the request path; hits counted in memory);
//! - **cache misses**: the same codes with the cache off
//!   (`LINKS_CACHE_SIZE=0`), so every request is a PostgreSQL query
//!   through the pool.
//!
//! links runs one shard, the peer one tokio worker (one core's worth each,
//! neither pinned); 16 client threads keep one keep-alive connection each
//! and send the next request when the answer came (closed loop). Each case
//! runs `REPS` times, interleaved; the table gives the median of the
//! repetitions' requests per second, p50 and p99, and the server's CPU time
//! per request (user + system, every thread of its process; PostgreSQL's
//! own CPU is not counted), with ratios against the axum peer.
//!
//! Run with: `cargo bench -p forkless-benches --bench links` (builds both
//! in release mode first; needs `postgresql` installed, says so and exits
//! otherwise).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use forkless_benches::http::proc::cpu_time;
use forkless_tests::services::Postgres;
use forkless_tests::{Server, connect, read_response, request, send};

const REPS: usize = 3;
const CODES: usize = 200;
const CLIENTS: usize = 16;
const WARMUP: Duration = Duration::from_millis(500);
const WINDOW: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Links,
    Axum,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Links => "links (forkless, 1 shard)",
            Peer::Axum => "axum + tokio (1 worker)",
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Sample {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    cpu_per_request: Duration,
    errors: u64,
}

fn build(package: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", package])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building {package} failed");
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/release/{package}"))
}

fn start(binary: &Path, peer: Peer, postgres: &Postgres, cache: bool) -> Server {
    let mut command = Command::new(binary);
    command
        .args(["--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", postgres.url())
        .env("LINKS_CACHE_SIZE", if cache { "4096" } else { "0" });
    match peer {
        Peer::Links => command.args(["--shards", "1", "--no-pin"]),
        Peer::Axum => command.args(["--threads", "1"]),
    };
    Server::start_command(command)
}

/// `CODES` new codes, created through links.
fn create_codes(server: &Server) -> Vec<String> {
    (0..CODES)
        .map(|i| {
            let body = format!(r#"{{"url": "https://example.com/{i}"}}"#);
            let response = server.fetch("POST", "/links", body.as_bytes());
            assert_eq!(response.status, 201, "create a code");
            let text = String::from_utf8_lossy(&response.body).into_owned();
            let start = text.find(r#""code":""#).expect("a code") + 8;
            text[start..start + 7].to_owned()
        })
        .collect()
}

/// The closed-loop load on `server`: every client cycles through `codes`.
fn load(server: &Server, codes: &Arc<Vec<String>>) -> Sample {
    let begin = Instant::now();
    let start = begin + WARMUP;
    let end = start + WINDOW;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let codes = codes.clone();
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut stream = BufReader::new(connect(addr));
                let mut times = Vec::new();
                let mut errors = 0u64;
                let mut i = client * 7;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let path = format!("/{}", codes[i % codes.len()]);
                    i += 1;
                    send(stream.get_mut(), &request("GET", &path, &[]));
                    let status = read_response(&mut stream).map_or(0, |r| r.status);
                    if sent >= start {
                        if status == 301 {
                            times.push(sent.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    if status == 0 {
                        stream = BufReader::new(connect(addr));
                    }
                }
                (times, errors)
            })
        })
        .collect();
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    let cpu_start = cpu_time(server.pid());
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let cpu = cpu_time(server.pid()).saturating_sub(cpu_start);
    let mut times = Vec::new();
    let mut errors = 0;
    for client in clients {
        let (mine, failed) = client.join().expect("a client thread");
        times.extend(mine);
        errors += failed;
    }
    times.sort();
    if times.is_empty() {
        return Sample {
            errors,
            ..Sample::default()
        };
    }
    let pick = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Sample {
        per_second: times.len() as f64 / WINDOW.as_secs_f64(),
        p50: pick(0.5),
        p99: pick(0.99),
        cpu_per_request: cpu / u32::try_from(times.len()).unwrap_or(u32::MAX),
        errors,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn us(seconds: f64) -> String {
    format!("{:.1} us", seconds * 1e6)
}

fn main() {
    let Some(postgres) = Postgres::start() else {
        eprintln!("links benchmark skipped: install postgresql");
        return;
    };
    let links = build("links");
    let axum = build("peer-links-axum");
    let codes = {
        let server = start(&links, Peer::Links, &postgres, true);
        Arc::new(create_codes(&server))
    };
    let peers = [Peer::Links, Peer::Axum];
    println!(
        "| GET /{{code}} | server | requests/s | p50 | p99 | server CPU/request | requests/s vs axum | CPU/request vs axum | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (case, cache) in [("cache hits", true), ("cache misses", false)] {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); peers.len()];
        for _ in 0..REPS {
            for (index, &peer) in peers.iter().enumerate() {
                let binary = if peer == Peer::Links { &links } else { &axum };
                let server = start(binary, peer, &postgres, cache);
                samples[index].push(load(&server, &codes));
            }
        }
        let summary: Vec<[f64; 5]> = samples
            .iter()
            .map(|reps| {
                [
                    median(reps.iter().map(|s| s.per_second).collect()),
                    median(reps.iter().map(|s| s.p50.as_secs_f64()).collect()),
                    median(reps.iter().map(|s| s.p99.as_secs_f64()).collect()),
                    median(
                        reps.iter()
                            .map(|s| s.cpu_per_request.as_secs_f64())
                            .collect(),
                    ),
                    reps.iter().map(|s| s.errors as f64).sum(),
                ]
            })
            .collect();
        let base = summary[1];
        for (peer, [rate, p50, p99, cpu, errors]) in peers.iter().zip(&summary) {
            println!(
                "| {case} | {} | {rate:.0} | {} | {} | {} | {:.2}x | {:.2}x | {errors} |",
                peer.name(),
                us(*p50),
                us(*p99),
                us(*cpu),
                rate / base[0],
                cpu / base[3],
            );
        }
    }
}
