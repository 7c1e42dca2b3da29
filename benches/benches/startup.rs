//! Start-up and idle memory of `hello`: time from exec to the first answered
//! request, and resident memory once every shard serves, at 1, 2 and 4 shards.
//!
//! Run with: `cargo bench -p forkless-benches --bench startup`
//! (builds `hello` in release mode first).

use std::io::BufReader;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forkless_benches::http::proc::ticks;
use forkless_benches::{median, rss_kib};
use forkless_tests::{read_response, request, send};

const RUNS: usize = 15;

/// How long each run watches the idle process's CPU time.
const IDLE_WINDOW: Duration = Duration::from_millis(300);

fn main() {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "hello"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building hello failed");
    let hello = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/hello");

    println!(
        "| shards | exec -> first answer (median of {RUNS}) | idle RSS | idle CPU ({RUNS} x {} ms) |",
        IDLE_WINDOW.as_millis()
    );
    println!("|---:|---:|---:|---:|");
    for shards in [1usize, 2, 4] {
        let mut times = Vec::with_capacity(RUNS);
        let mut rss = Vec::with_capacity(RUNS);
        let mut idle_ticks = 0;
        for _ in 0..RUNS {
            let (elapsed, kib, idle) = start_once(&hello, shards);
            times.push(elapsed);
            rss.push(kib);
            idle_ticks += idle;
        }
        rss.sort_unstable();
        println!(
            "| {shards} | {:.1} ms | {:.1} MiB | {} ms |",
            median(&mut times).as_secs_f64() * 1e3,
            rss[rss.len() / 2] as f64 / 1024.0,
            idle_ticks * 10
        );
    }
}

/// Execs hello on a free port and polls it with requests until one is answered.
fn start_once(hello: &std::path::Path, shards: usize) -> (Duration, u64, u64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    let mut child = Command::new(hello)
        .args([
            "--shards",
            &shards.to_string(),
            "--listen",
            &addr.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("exec hello");
    let answered = loop {
        if let Ok(stream) = TcpStream::connect(addr) {
            let mut reader = BufReader::new(stream);
            send(reader.get_mut(), &request("GET", "/", &[]));
            if read_response(&mut reader).is_some_and(|r| r.status == 200) {
                break started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "hello never answered"
        );
        std::thread::sleep(Duration::from_micros(200));
    };
    std::thread::sleep(Duration::from_millis(50));
    let pid = i32::try_from(child.id()).expect("pid fits");
    let kib = rss_kib(pid).unwrap_or(0);
    // Idle: no traffic for a while; a parked shard uses no CPU.
    let before = ticks(pid);
    std::thread::sleep(IDLE_WINDOW);
    let idle = ticks(pid).saturating_sub(before);
    let _ = child.kill();
    let _ = child.wait();
    (answered, kib, idle)
}
