//! HTTPS, TLS handshakes and HTTP/2 per core, side by side in one run:
//! forkless `hello` against nginx (Debian's, one worker) and
//! `peer-tokio-rustls` (hyper + tokio-rustls on a one-worker tokio runtime),
//! all with the same certificate (ECDSA P-256), TLS 1.3 and 1.2, the same
//! key exchange (X25519) and the client's cipher order (AES-256-GCM first).
//!
//! Per core: each server runs on CPU 0 with one shard, worker process or
//! worker thread; the load runs on CPU 1. The figure is the server's CPU
//! time (user + system, every thread and process of it, from
//! `/proc/PID/stat`) per request or per handshake.
//!
//! - **HTTPS keep-alive**: `wrk -t1 -c64` over TLS.
//! - **Handshakes**: four client threads (rustls, as in the tests) each
//!   connecting, handshaking, sending `GET /`, reading the answer and
//!   closing, over and over: full handshakes (no session cache), then
//!   resumed ones (each client keeps its tickets; the share that resumed is
//!   printed).
//! - **HTTP/2**: `h2load -c4 -m100` (100 streams per connection), over TLS
//!   (ALPN `h2`) and cleartext h2c with prior knowledge.
//! - **Resumption across shards**: forkless with 2 shards; of the resumed
//!   attempts whose connection landed on a different shard than the one
//!   that issued the previous ticket (`x-shard`), the share that resumed.
//!
//! `REPS` interleaved rounds (`FORKLESS_BENCH_REPS` changes it); the
//! table gives medians and ratios.
//!
//! Run with: `cargo bench -p forkless-benches --bench tls` (needs `wrk`,
//! `nginx` and `h2load` from Debian's `nghttp2-client`; a missing tool
//! skips its column and says so).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use forkless_benches::http::h2load;
use forkless_benches::http::loadgen::pin_current_thread;
use forkless_benches::http::proc;
use forkless_benches::http::server::Running;
use forkless_benches::http::stats::median;
use forkless_benches::http::wrk::{self, Wrk};
use forkless_tests::tls::{Ca, TlsClient};
use rustls::client::Resumption;

const REPS: usize = 3;
/// Measured window of wrk and h2load, after a one-second warm-up.
const WINDOW_SECS: u64 = 4;
/// Measured window of each handshake case.
const HANDSHAKE_WINDOW: Duration = Duration::from_secs(3);
const CLIENT_THREADS: usize = 4;
/// Resumed attempts of the cross-shard case.
const CROSS_ATTEMPTS: usize = 400;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    Forkless,
    Nginx,
    TokioRustls,
}

impl Server {
    const ALL: [Server; 3] = [Server::Forkless, Server::Nginx, Server::TokioRustls];

    fn name(self) -> &'static str {
        match self {
            Server::Forkless => "forkless",
            Server::Nginx => "nginx",
            Server::TokioRustls => "tokio+hyper+rustls",
        }
    }
}

/// The measured cases, in table order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    KeepAlive,
    Full,
    Resumed,
    H2Tls,
    H2c,
}

impl Case {
    const ALL: [Case; 5] = [
        Case::KeepAlive,
        Case::Full,
        Case::Resumed,
        Case::H2Tls,
        Case::H2c,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::KeepAlive => "HTTPS keep-alive (wrk -c64), µs CPU/request",
            Case::Full => "full handshakes, µs CPU/handshake",
            Case::Resumed => "resumed handshakes, µs CPU/handshake",
            Case::H2Tls => "HTTP/2 over TLS (h2load -c4 -m100), µs CPU/request",
            Case::H2c => "h2c prior knowledge (h2load -c4 -m100), µs CPU/request",
        }
    }

    fn tls(self) -> bool {
        self != Case::H2c
    }
}

/// One measurement: server CPU per unit of work, and units per second.
#[derive(Clone, Copy, Debug)]
struct Sample {
    cpu_us: f64,
    rate: f64,
    /// Resumed handshakes: the share that did resume.
    resumed: Option<f64>,
}

struct Setup {
    /// Where the servers' binaries are (`target/<profile>`).
    release: PathBuf,
    dir: PathBuf,
    ca: Ca,
    cert: PathBuf,
    key: PathBuf,
    wrk: bool,
    nginx: bool,
    h2load: bool,
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The servers in this bench's own profile (release under `cargo bench`;
    // `--profile dev` for a quick check of the bench itself).
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .expect("the bench runs from target/<profile>/deps");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(name) => name.to_owned(),
        None => "release".to_owned(),
    };
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--quiet", "--profile", &profile])
        .args(["-p", "hello", "-p", "peer-tokio-rustls"])
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "building hello and peer-tokio-rustls failed"
    );
    let dir = std::env::temp_dir().join(format!("forkless-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let ca = Ca::new();
    let (cert, key) = ca.leaf("localhost").write(&dir);
    let setup = Setup {
        release: profile_dir,
        dir: dir.clone(),
        ca,
        cert,
        key,
        wrk: wrk::available(),
        nginx: tool("nginx", "-v"),
        h2load: tool("h2load", "--version"),
    };
    for (found, what) in [
        (
            setup.wrk,
            "wrk (apt-get install wrk): no HTTPS keep-alive column",
        ),
        (setup.nginx, "nginx (apt-get install nginx): no nginx row"),
        (
            setup.h2load,
            "h2load (apt-get install nghttp2-client): no HTTP/2 columns",
        ),
    ] {
        if !found {
            println!("missing {what}");
        }
    }
    let reps = std::env::var("FORKLESS_BENCH_REPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(REPS);
    let mut samples: Vec<(Server, Case, Sample)> = Vec::new();
    for rep in 0..reps {
        for server in Server::ALL {
            if server == Server::Nginx && !setup.nginx {
                continue;
            }
            for case in Case::ALL {
                match measure(&setup, server, case) {
                    Ok(Some(sample)) => {
                        eprintln!(
                            "round {rep}: {} / {:?}: {:.2} µs, {:.0}/s",
                            server.name(),
                            case,
                            sample.cpu_us,
                            sample.rate
                        );
                        samples.push((server, case, sample));
                    }
                    Ok(None) => {}
                    Err(e) => eprintln!("round {rep}: {} / {case:?}: {e}", server.name()),
                }
            }
        }
    }
    print_table(&samples, reps);
    match cross_shard_resumption(&setup) {
        Ok((resumed, crossed)) => println!(
            "\nresumption across shards (forkless, 2 shards): {resumed} of {crossed} resumed \
             handshakes that landed on another shard than the ticket's issuer resumed ({:.0}%)",
            100.0 * resumed as f64 / crossed.max(1) as f64
        ),
        Err(e) => println!("\nresumption across shards: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tool(name: &str, version_flag: &str) -> bool {
    Command::new(name)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Starts `server` with `threads` shards or workers, over TLS or cleartext;
/// on CPU 0 when `pinned`.
fn start(
    setup: &Setup,
    server: Server,
    threads: usize,
    tls: bool,
    pinned: bool,
) -> Result<(Running, SocketAddr), String> {
    let mut command = Command::new("taskset");
    command.args(["-c", if pinned { "0" } else { "0-1" }]);
    let listen = "127.0.0.1:0";
    let count = threads.to_string();
    let tls_args = [
        "--tls-cert".as_ref(),
        setup.cert.as_os_str(),
        "--tls-key".as_ref(),
        setup.key.as_os_str(),
    ];
    match server {
        Server::Forkless => {
            command
                .arg(setup.release.join("hello"))
                .args(["--shards", &count, "--listen", listen]);
            if tls {
                command.args(tls_args);
            }
            Running::start(server.name(), command)
        }
        Server::TokioRustls => {
            command.arg(setup.release.join("peer-tokio-rustls")).args([
                "--threads",
                &count,
                "--listen",
                listen,
            ]);
            if tls {
                command.args(tls_args);
            }
            Running::start(server.name(), command)
        }
        Server::Nginx => {
            let port = free_port()?;
            let conf = nginx_conf(setup, threads, port, tls)?;
            command
                .arg("nginx")
                .arg("-p")
                .arg(&setup.dir)
                .arg("-c")
                .arg(conf);
            let mut running = Running::spawn(server.name(), command)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if Instant::now() > deadline || !running.alive() {
                    return Err(format!("nginx did not start: {}", running.output_tail()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok((running, addr))
        }
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("a free port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("a free port: {e}"))
}

/// An nginx configuration answering `GET /` as hello does: keep-alive
/// without a request limit, no access log, TLS tickets and a shared
/// session cache (what nginx does across its workers by default).
fn nginx_conf(setup: &Setup, workers: usize, port: u16, tls: bool) -> Result<PathBuf, String> {
    let dir = setup.dir.display();
    let listen = if tls {
        format!(
            "listen 127.0.0.1:{port} ssl http2;\n        ssl_certificate {};\n        \
             ssl_certificate_key {};\n        ssl_protocols TLSv1.2 TLSv1.3;\n        \
             ssl_session_cache shared:SSL:10m;\n        ssl_session_tickets on;",
            setup.cert.display(),
            setup.key.display()
        )
    } else {
        format!("listen 127.0.0.1:{port} http2;")
    };
    let text = format!(
        "daemon off;\nmaster_process on;\nuser root;\nworker_processes {workers};\n\
         pid {dir}/nginx.pid;\nerror_log stderr warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n    access_log off;\n    keepalive_requests 100000000;\n    \
         http2_max_requests 100000000;\n    \
         client_body_temp_path {dir}/body;\n    proxy_temp_path {dir}/proxy;\n    \
         fastcgi_temp_path {dir}/fastcgi;\n    uwsgi_temp_path {dir}/uwsgi;\n    \
         scgi_temp_path {dir}/scgi;\n    server {{\n        {listen}\n        \
         location = / {{\n            default_type \"text/plain; charset=utf-8\";\n            \
         return 200 \"Hello World\\n\";\n        }}\n    }}\n}}\n"
    );
    let path = setup.dir.join(format!("nginx-{port}.conf"));
    std::fs::File::create(&path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

/// One case on one server, per core; `None` when its tool is missing.
fn measure(setup: &Setup, server: Server, case: Case) -> Result<Option<Sample>, String> {
    let tool_missing = match case {
        Case::KeepAlive => !setup.wrk,
        Case::H2Tls | Case::H2c => !setup.h2load,
        Case::Full | Case::Resumed => false,
    };
    if tool_missing {
        return Ok(None);
    }
    let (mut running, addr) = start(setup, server, 1, case.tls(), true)?;
    let pid = running.pid();
    let sample = match case {
        Case::KeepAlive => keep_alive(addr, pid)?,
        Case::Full => handshakes(setup, addr, pid, false)?,
        Case::Resumed => handshakes(setup, addr, pid, true)?,
        Case::H2Tls => h2load(addr, pid, true)?,
        Case::H2c => h2load(addr, pid, false)?,
    };
    if !running.alive() {
        return Err(format!("died under load: {}", running.output_tail()));
    }
    Ok(Some(sample))
}

fn per_unit(cpu: Duration, units: u64, wall: Duration) -> Sample {
    Sample {
        cpu_us: cpu.as_secs_f64() * 1e6 / units.max(1) as f64,
        rate: units as f64 / wall.as_secs_f64().max(1e-9),
        resumed: None,
    }
}

fn keep_alive(addr: SocketAddr, pid: i32) -> Result<Sample, String> {
    let mut wrk = Wrk {
        addr,
        threads: 1,
        connections: 64,
        seconds: 1,
        cpu: Some(1),
        https: true,
    };
    wrk.run(&|| false)?;
    wrk.seconds = WINDOW_SECS;
    let before = proc::cpu_time(pid);
    let started = Instant::now();
    let report = wrk.run(&|| false)?;
    if report.errors > 0 {
        return Err(format!("wrk counted {} errors", report.errors));
    }
    let cpu = proc::cpu_time(pid).saturating_sub(before);
    Ok(per_unit(cpu, report.requests, started.elapsed()))
}

/// A client that resumes sessions (`resume`) or makes every handshake a
/// full one.
fn client(setup: &Setup, resume: bool) -> TlsClient {
    let client = setup.ca.client(false);
    if resume {
        return client;
    }
    let mut config = (*client.config).clone();
    config.resumption = Resumption::disabled();
    TlsClient {
        config: Arc::new(config),
    }
}

/// Client threads on CPU 1 handshaking (and asking `GET /` once) for
/// `HANDSHAKE_WINDOW`.
fn handshakes(setup: &Setup, addr: SocketAddr, pid: i32, resume: bool) -> Result<Sample, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<TlsClient> = (0..CLIENT_THREADS).map(|_| client(setup, resume)).collect();
    // Warm up (and, resuming, take a first ticket).
    for client in &clients {
        let answer = client
            .get(addr, "/")
            .map_err(|e| format!("handshake: {e}"))?;
        if answer.status != 200 {
            return Err(format!("GET / answered {}", answer.status));
        }
    }
    let before = proc::cpu_time(pid);
    let started = Instant::now();
    let threads: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<(u64, u64), String> {
                pin_current_thread(1)?;
                let (mut done, mut resumed) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let answer = client
                        .get(addr, "/")
                        .map_err(|e| format!("handshake: {e}"))?;
                    done += 1;
                    resumed += u64::from(answer.resumed);
                }
                Ok((done, resumed))
            })
        })
        .collect();
    std::thread::sleep(HANDSHAKE_WINDOW);
    stop.store(true, Ordering::Relaxed);
    let (mut done, mut resumed) = (0, 0);
    for thread in threads {
        let (d, r) = thread.join().map_err(|_| "a client thread panicked")??;
        done += d;
        resumed += r;
    }
    let wall = started.elapsed();
    let cpu = proc::cpu_time(pid).saturating_sub(before);
    let mut sample = per_unit(cpu, done, wall);
    if resume {
        sample.resumed = Some(resumed as f64 / done.max(1) as f64);
    }
    Ok(sample)
}

fn h2load(addr: SocketAddr, pid: i32, tls: bool) -> Result<Sample, String> {
    let url = format!("{}://{addr}/", if tls { "https" } else { "http" });
    let child = Command::new("taskset")
        .args(["-c", "1", "h2load", "-t1", "-c4", "-m100"])
        .args(["--warm-up-time=1", &format!("-D{WINDOW_SECS}")])
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run h2load: {e}"))?;
    // The server's CPU over h2load's measured window only (after its
    // connections and warm-up second).
    std::thread::sleep(Duration::from_millis(1100));
    let before = proc::cpu_time(pid);
    let window = Duration::from_secs(WINDOW_SECS) - Duration::from_millis(200);
    std::thread::sleep(window);
    let cpu = proc::cpu_time(pid).saturating_sub(before);
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for h2load: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let report = h2load::parse(&text)
        .ok_or_else(|| format!("h2load: {text}{}", String::from_utf8_lossy(&output.stderr)))?;
    let expected = if tls { "h2" } else { "h2c" };
    if report.protocol != expected {
        return Err(format!("h2load spoke {}, not {expected}", report.protocol));
    }
    if report.succeeded == 0 {
        return Err(format!("h2load: no request succeeded: {text}"));
    }
    let rate = report.rate;
    Ok(Sample {
        cpu_us: cpu.as_secs_f64() * 1e6 / (rate * window.as_secs_f64()).max(1.0),
        rate,
        resumed: None,
    })
}

/// forkless at 2 shards: `(resumed, attempts)` over the resumed handshakes
/// whose connection landed on another shard than the previous one (the
/// issuer of the ticket the client offers: tickets are used newest first,
/// once each).
fn cross_shard_resumption(setup: &Setup) -> Result<(u64, u64), String> {
    let (_running, addr) = start(setup, Server::Forkless, 2, true, false)?;
    let client = client(setup, true);
    let first = client
        .get(addr, "/")
        .map_err(|e| format!("handshake: {e}"))?;
    let mut previous = first.header("x-shard").map(str::to_owned);
    let (mut resumed, mut crossed) = (0, 0);
    for _ in 0..CROSS_ATTEMPTS {
        let answer = client
            .get(addr, "/")
            .map_err(|e| format!("handshake: {e}"))?;
        let shard = answer.header("x-shard").map(str::to_owned);
        if shard != previous {
            crossed += 1;
            resumed += u64::from(answer.resumed);
        }
        previous = shard;
    }
    if crossed == 0 {
        return Err("no connection landed on another shard".into());
    }
    Ok((resumed, crossed))
}

fn print_table(samples: &[(Server, Case, Sample)], reps: usize) {
    let cell = |server: Server, case: Case| -> Option<(f64, f64, Option<f64>)> {
        let of: Vec<&Sample> = samples
            .iter()
            .filter(|(s, c, _)| *s == server && *c == case)
            .map(|(_, _, sample)| sample)
            .collect();
        let cpu = median(&of.iter().map(|s| s.cpu_us).collect::<Vec<_>>())?;
        let rate = median(&of.iter().map(|s| s.rate).collect::<Vec<_>>())?;
        let resumed = median(&of.iter().filter_map(|s| s.resumed).collect::<Vec<_>>());
        Some((cpu, rate, resumed))
    };
    println!("\n## TLS and HTTP/2 per core (medians of {reps} rounds)\n");
    println!(
        "| case | forkless | nginx | tokio+hyper+rustls | forkless / nginx | forkless / tokio |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for case in Case::ALL {
        let cells: Vec<Option<(f64, f64, Option<f64>)>> = Server::ALL
            .iter()
            .map(|&server| cell(server, case))
            .collect();
        let show = |c: &Option<(f64, f64, Option<f64>)>| match c {
            Some((cpu, rate, resumed)) => {
                let share =
                    resumed.map_or(String::new(), |r| format!(", {:.0}% resumed", r * 100.0));
                format!("{cpu:.2} ({rate:.0}/s{share})")
            }
            None => "n/a".to_owned(),
        };
        let ratio = |other: &Option<(f64, f64, Option<f64>)>| match (&cells[0], other) {
            (Some((ours, ..)), Some((theirs, ..))) if *theirs > 0.0 => {
                format!("{:.2}x", ours / theirs)
            }
            _ => "n/a".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            case.name(),
            show(&cells[0]),
            show(&cells[1]),
            show(&cells[2]),
            ratio(&cells[1]),
            ratio(&cells[2])
        );
    }
    println!("\nCPU per unit: lower is better; a ratio below 1.00x means forkless spends less.");
}
