//! http-bench: forkless `hello` against tokio+hyper, actix-web, may-minihttp,
//! Node cluster and the floor (no framework: raw io_uring, raw epoll), in
//! one interleaved run (every round measures every server in turn),
//! reporting medians over the rounds as markdown tables and an SVG chart,
//! then syscalls and io_uring submissions per request (`perf stat`).
//!
//! Run with: `cargo run --release -p forkless-benches --bin http-bench -- [--quick]`
//!
//! Options: `--quick` (1 round of 1 s windows, chart under `target/`),
//! `--rounds N`, `--seconds S` (measured window), `--chart PATH`,
//! `--no-build` (use the release binaries already built), `--only PHASES`
//! (a comma list of throughput, memory, mixed, balance, syscalls).
//! Needs `taskset` (util-linux) and, for the non-pipelined load, `wrk`
//! (`apt-get install -y wrk`; without it the built-in generator is used);
//! the Node peer runs when `node` is on `PATH`; syscalls are counted when
//! `perf` can count tracepoints (`apt-get install -y linux-perf`, as root).
//! See docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use forkless_benches::http::measure::{self, Mode, Setup};
use forkless_benches::http::results::Results;
use forkless_benches::http::server::{self, Binaries, Peer};
use forkless_benches::http::{chart, mixed, stats, syscalls, wrk};

/// Connections of the per-core non-pipelined load (whole machine: twice).
const CONNECTIONS: usize = 64;

/// forkless shard counts and connection counts of the balance measurement.
const BALANCE_SHARDS: [usize; 2] = [2, 4];
const BALANCE_CONNECTIONS: [usize; 2] = [128, 1000];

#[derive(Debug)]
struct Options {
    quick: bool,
    rounds: usize,
    seconds: u64,
    chart: Option<PathBuf>,
    build: bool,
    /// Phases to run (`--only`); all when empty.
    only: Vec<Phase>,
}

/// The parts of a run that `--only` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Throughput,
    Memory,
    Mixed,
    Balance,
    Syscalls,
}

impl Phase {
    const ALL: [(&str, Phase); 5] = [
        ("throughput", Phase::Throughput),
        ("memory", Phase::Memory),
        ("mixed", Phase::Mixed),
        ("balance", Phase::Balance),
        ("syscalls", Phase::Syscalls),
    ];
}

impl Options {
    fn runs(&self, phase: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&phase)
    }
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        rounds: 5,
        seconds: 5,
        chart: None,
        build: true,
        only: Vec::new(),
    };
    let mut rounds = None;
    let mut seconds = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let text = args.next().ok_or(format!("{name} needs a value"))?;
            text.parse()
                .ok()
                .filter(|&n: &u64| n > 0)
                .ok_or(format!("{name} takes a positive number, not {text:?}"))
        };
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--rounds" => rounds = Some(number("--rounds")?),
            "--seconds" => seconds = Some(number("--seconds")?),
            "--chart" => {
                options.chart = Some(args.next().ok_or("--chart needs a path")?.into());
            }
            "--no-build" => options.build = false,
            "--only" => {
                let list = args.next().ok_or("--only needs a list of phases")?;
                for word in list.split(',') {
                    let phase = Phase::ALL
                        .iter()
                        .find(|(name, _)| *name == word)
                        .ok_or(format!(
                            "--only takes throughput, memory, mixed, balance, syscalls; not {word:?}"
                        ))?;
                    options.only.push(phase.1);
                }
            }
            "--help" | "-h" => {
                return Err(
                    "usage: http-bench [--quick] [--rounds N] [--seconds S] [--chart PATH] [--no-build] \
                     [--only throughput,memory,mixed,balance,syscalls]"
                        .into(),
                );
            }
            // `cargo bench` passes --bench to harness-less targets.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if options.quick {
        options.rounds = 1;
        options.seconds = 1;
    }
    options.rounds = rounds.map_or(options.rounds, |n| n as usize);
    options.seconds = seconds.unwrap_or(options.seconds);
    Ok(options)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let options = parse_options()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupted.clone())
            .map_err(|e| format!("cannot watch signal {signal}: {e}"))?;
    }
    let stop = || interrupted.load(Ordering::Relaxed);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the benches crate has no parent directory")?
        .to_path_buf();
    if options.build {
        build(&root)?;
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let node = server::find_node();
    let binaries = Binaries {
        release_dir: release_dir(&root),
        forkless: static_hello(&root),
        node: node.clone(),
        node_script: root.join("benches/peers/node/cluster.js"),
    };
    let mut notes = Vec::new();
    let wrk = wrk::available();
    if !wrk {
        notes.push(
            "wrk was not found (install it: `apt-get install -y wrk`); the built-in load \
             generator ran the non-pipelined load instead."
                .to_owned(),
        );
    }
    if cpus >= 2 && !taskset_available() {
        return Err("taskset (util-linux) is needed to pin the per-core runs".into());
    }
    if cpus < 2 {
        notes.push(format!(
            "only {cpus} CPU: server and load share it (per-core runs are not pinned)."
        ));
    }
    let mut peers: Vec<Peer> = Peer::ALL.to_vec();
    if node.is_none() {
        peers.retain(|&p| p != Peer::NodeCluster);
        notes.push("node was not found: no Node cluster peer.".to_owned());
    }
    let setup = Setup {
        binaries,
        cpus,
        wrk,
        window: Duration::from_secs(options.seconds),
        warmup: Duration::from_secs(1),
        connections: CONNECTIONS,
    };

    let load_before = load_average();
    let started = Instant::now();
    let mut results = Results {
        peers: peers.clone(),
        ..Results::default()
    };
    for round in 0..options.rounds {
        eprintln!("round {}/{}", round + 1, options.rounds);
        // Each round starts with the next server, so no server is always
        // measured first (or right after the same neighbour).
        let order: Vec<Peer> = (0..peers.len())
            .map(|i| peers[(i + round) % peers.len()])
            .collect();
        for mode in Mode::ALL
            .into_iter()
            .filter(|_| options.runs(Phase::Throughput))
        {
            for &peer in &order {
                check(&stop)?;
                eprint!("  {:<24} {:<13}", mode.name(), peer.name());
                match measure::throughput(&setup, peer, mode, &stop) {
                    Ok(t) => {
                        eprintln!(
                            " {:>9} req/s, {:>6.2} us CPU/request, CPU use {:>4.0}%",
                            stats::rate(t.rate),
                            t.cpu_per_request.as_secs_f64() * 1e6,
                            t.cpu_use * 100.0
                        );
                        results
                            .throughput
                            .entry((mode, peer))
                            .or_default()
                            .insert(round, t);
                    }
                    Err(e) => fail(
                        &mut results,
                        round,
                        &format!("{} {}", mode.name(), peer.name()),
                        e,
                    ),
                }
            }
        }
        for &peer in order.iter().filter(|_| options.runs(Phase::Memory)) {
            check(&stop)?;
            eprintln!("  {:<24} {}", "memory", peer.name());
            match measure::memory(&setup, peer) {
                Ok(m) => results.memory.entry(peer).or_default().push(m),
                Err(e) => fail(&mut results, round, &format!("memory {}", peer.name()), e),
            }
            check(&stop)?;
            eprintln!("  {:<24} {}", "start-up", peer.name());
            match measure::startup(&setup, peer) {
                Ok(s) => results.startup.entry(peer).or_default().push(s),
                Err(e) => fail(&mut results, round, &format!("start-up {}", peer.name()), e),
            }
        }
        for i in (0..mixed::PEERS.len()).filter(|_| options.runs(Phase::Mixed)) {
            let peer = mixed::PEERS[(i + round) % mixed::PEERS.len()];
            check(&stop)?;
            eprint!("  {:<24} {:<13}", "mixed (1 in 10 heavy)", peer.name());
            match mixed::run(&setup, peer) {
                Ok(m) => {
                    eprintln!(
                        " light p99 {}, heavy {:.0}/s",
                        stats::latency(m.light_p99),
                        m.heavy_rate
                    );
                    results.mixed.entry(peer).or_default().push(m);
                }
                Err(e) => fail(&mut results, round, &format!("mixed {}", peer.name()), e),
            }
        }
        for shards in BALANCE_SHARDS
            .into_iter()
            .filter(|_| options.runs(Phase::Balance))
        {
            check(&stop)?;
            eprintln!("  {:<24} forkless {shards} shards", "balance");
            match measure::balance(&setup, shards, &BALANCE_CONNECTIONS) {
                Ok(runs) => {
                    for (connections, balance) in BALANCE_CONNECTIONS.into_iter().zip(runs) {
                        results
                            .balance
                            .entry((shards, connections))
                            .or_default()
                            .push(balance);
                    }
                }
                Err(e) => fail(&mut results, round, &format!("balance {shards} shards"), e),
            }
        }
    }
    match syscalls::probe().and_then(|()| {
        if options.runs(Phase::Syscalls) {
            Ok(())
        } else {
            Err("not asked for (--only)".into())
        }
    }) {
        Ok(()) => {
            for mode in [Mode::PerCore, Mode::Pipelined] {
                for &peer in &peers {
                    check(&stop)?;
                    eprint!(
                        "  {:<24} {:<13}",
                        format!("syscalls, {}", mode.name()),
                        peer.name()
                    );
                    match syscalls::measure(&setup, peer, mode) {
                        Ok(counts) => {
                            eprintln!(
                                " {:.2} syscalls/request, {:.2} io_uring_enter, {:.2} SQEs",
                                counts.per_request(counts.total),
                                counts.per_request(counts.enters),
                                counts.per_request(counts.submissions)
                            );
                            results
                                .syscalls
                                .entry((mode, peer))
                                .or_default()
                                .push(counts);
                        }
                        Err(e) => fail(
                            &mut results,
                            options.rounds - 1,
                            &format!("syscalls {} {}", mode.name(), peer.name()),
                            e,
                        ),
                    }
                }
            }
        }
        Err(why) => {
            eprintln!("  syscalls per request not counted: {why}");
            notes.push(format!("syscalls per request were not counted: {why}."));
        }
    }
    let load_after = load_average();

    let chart_path = options.chart.clone().unwrap_or_else(|| {
        if options.quick {
            root.join("target/http-bench-quick.svg")
        } else {
            root.join("docs/http-bench.svg")
        }
    });
    let date = utc_now();
    let title = format!(
        "forkless hello vs peers, {date}: medians of {} interleaved rounds of {} s",
        options.rounds, options.seconds
    );
    chart::draw(&chart_path, &title, &results.panels(), 3)?;

    println!("## HTTP ({date}, {cpus} CPUs)\n");
    println!(
        "Medians of {} interleaved rounds (every server once per mode per round), \
         {} s measured after 1 s of warm-up; load by {}; pipelined load by the \
         built-in generator ({} requests per write). Took {:.0} s; load average \
         {} before, {} after.\n",
        options.rounds,
        options.seconds,
        if wrk { "wrk" } else { "the built-in generator" },
        measure::PIPELINE_DEPTH,
        started.elapsed().as_secs_f64(),
        load_before,
        load_after
    );
    for note in &notes {
        println!("Note: {note}\n");
    }
    println!("### Throughput, latency and server CPU per request\n");
    println!("{}", results.throughput_table());
    println!("### Memory and start-up\n");
    println!("{}", results.memory_table(cpus));
    println!(
        "### Mixed load: 1 request in 10 burns ~5 ms of CPU (`GET /work`), whole machine, {} keep-alive clients\n",
        mixed::CLIENTS
    );
    println!("{}", results.mixed_table());
    println!("### forkless balance over shards (by `x-shard`)\n");
    println!("{}", results.balance_table());
    println!(
        "### Syscalls and io_uring submissions per request (per core, `perf stat` over one window of up to 3 s)\n"
    );
    println!("{}", results.syscalls_table());
    println!("### Goals (issue #6)\n");
    println!("{}", results.goals_table(cpus));
    println!("### Goals (issue #16: the floor)\n");
    println!("{}", results.floor_goals_table());
    if !results.failures.is_empty() {
        println!("### Failed measurements\n");
        for failure in &results.failures {
            println!("- {failure}");
        }
        println!();
    }
    println!("Chart: {}", chart_path.display());
    Ok(())
}

fn check(stop: &dyn Fn() -> bool) -> Result<(), String> {
    if stop() {
        Err("interrupted; every server it started has been killed".into())
    } else {
        Ok(())
    }
}

fn fail(results: &mut Results, round: usize, what: &str, error: String) {
    let line = format!("round {}: {what}: {}", round + 1, error.trim());
    eprintln!("\n    failed: {line}");
    results.failures.push(line.replace('\n', " / "));
}

/// Builds the Rust peers in release mode, and forkless `hello` as it ships
/// (`cargo static -p hello`: one statically linked binary).
fn build(root: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut peers = Command::new(&cargo);
    peers.current_dir(root).args(["build", "--release"]);
    for peer in Peer::ALL {
        if let Some(package) = peer.package().filter(|_| peer != Peer::Forkless) {
            peers.args(["-p", package]);
        }
    }
    let mut hello = Command::new(&cargo);
    hello.current_dir(root).args(["static", "-p", "hello"]);
    eprintln!("building the servers (release; forkless hello static)...");
    for mut command in [peers, hello] {
        let status = command
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building the servers failed ({status})"));
        }
    }
    Ok(())
}

/// Where `cargo static -p hello` puts the binary.
fn static_hello(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("x86_64-unknown-linux-gnu/release/hello")
}

/// `target/release`: next to this binary when it is a release build.
fn release_dir(root: &Path) -> PathBuf {
    let here = std::env::current_exe().ok();
    let dir = here.as_deref().and_then(Path::parent);
    match dir {
        Some(dir) if dir.file_name().is_some_and(|n| n == "release") => dir.to_path_buf(),
        _ => std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| root.join("target"), PathBuf::from)
            .join("release"),
    }
}

fn taskset_available() -> bool {
    Command::new("taskset")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The current UTC time, `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown date".into())
}
