//! Per-call cost of tokio clients awaited on a forkless shard (cargo feature
//! `tokio`), side by side with the same clients in a plain tokio
//! multi-thread app, in one run: Redis `GET` and PostgreSQL `SELECT 1`
//! round trips, one caller (sequential) and 16 concurrent callers sharing
//! one connection, against a private PostgreSQL and Redis the benchmark
//! starts (`forkless_tests::services`).
//!
//! - **plain tokio**: a multi-thread runtime with one worker (one core's
//!   worth, as one shard); the connection's driver on `tokio::spawn`.
//! - **forkless, driver on shard**: one shard; the connection's driver task
//!   spawned on the shard (`forkless::spawn`), so its socket is read there.
//! - **forkless, driver on tokio**: one shard; the driver on `tokio::spawn`
//!   (what `redis::Client::get_multiplexed_async_connection` and
//!   deadpool-postgres do), so it runs on the runtime's helper threads.
//!
//! Each case runs `REPS` times, interleaved; the table gives the median of
//! the repetitions' p50, p99 and calls per second, and the process's CPU time
//! per call (user + system, every thread), with ratios against plain tokio.
//!
//! Run with: `cargo bench -p forkless-benches --bench services` (needs
//! `postgresql` and `redis-server` installed; says so and exits otherwise).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use forkless::{Config, Coordinator, Runtime, Shard, Shards};
use forkless_tests::services::{Postgres, Redis};
use redis::IntoConnectionInfo;

const REPS: usize = 3;
const WARMUP: usize = 500;
/// Calls of the sequential case.
const SEQUENTIAL: usize = 5_000;
/// Concurrent callers, and calls each makes.
const CALLERS: usize = 16;
const CALLS_EACH: usize = 500;

type SendFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// One caller's calls, answering each call's time.
type Caller = Pin<Box<dyn Future<Output = Vec<Duration>> + Send>>;

#[derive(Clone, Copy, PartialEq)]
enum Client {
    Redis,
    Postgres,
}

#[derive(Clone, Copy, PartialEq)]
enum Host {
    Plain,
    ShardDriver,
    TokioDriver,
}

impl Host {
    fn name(self) -> &'static str {
        match self {
            Host::Plain => "plain tokio",
            Host::ShardDriver => "forkless, driver on shard",
            Host::TokioDriver => "forkless, driver on tokio",
        }
    }
}

/// One case's repetition.
#[derive(Clone, Copy, Default)]
struct Sample {
    p50: Duration,
    p99: Duration,
    per_second: f64,
    cpu_per_call: Duration,
}

/// User + system CPU time of the whole process so far.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// A shared client of either kind.
#[derive(Clone)]
enum Conn {
    Redis(redis::aio::MultiplexedConnection),
    Postgres(Arc<tokio_postgres::Client>),
}

impl Conn {
    async fn open(client: Client, url: &str, spawn: fn(SendFuture)) -> Conn {
        match client {
            Client::Redis => {
                let info = url.into_connection_info().expect("a redis URL");
                let addr = url
                    .trim_start_matches("redis://")
                    .trim_end_matches('/')
                    .to_owned();
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .expect("connect to redis");
                stream.set_nodelay(true).expect("TCP_NODELAY");
                let (conn, driver) = redis::aio::MultiplexedConnection::new_with_config(
                    info.redis_settings(),
                    stream,
                    redis::AsyncConnectionConfig::default(),
                )
                .await
                .expect("a redis connection");
                spawn(Box::pin(driver));
                Conn::Redis(conn)
            }
            Client::Postgres => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to postgres");
                spawn(Box::pin(async move {
                    let _ = connection.await;
                }));
                Conn::Postgres(Arc::new(client))
            }
        }
    }

    async fn call(&mut self) {
        match self {
            Conn::Redis(conn) => {
                let _: Option<String> = redis::cmd("GET")
                    .arg("bench")
                    .query_async(conn)
                    .await
                    .expect("GET");
            }
            Conn::Postgres(client) => {
                let row = client.query_one("SELECT 1", &[]).await.expect("SELECT 1");
                let _: i32 = row.get(0);
            }
        }
    }
}

/// `callers` callers sharing `conn`, `calls` calls each: every call's time.
async fn callers(
    conn: Conn,
    callers: usize,
    calls: usize,
    spawn: fn(Caller) -> Waiter,
) -> Vec<Duration> {
    let waiters: Vec<Waiter> = (0..callers)
        .map(|_| {
            let mut conn = conn.clone();
            spawn(Box::pin(async move {
                let mut times = Vec::with_capacity(calls);
                for _ in 0..calls {
                    let start = Instant::now();
                    conn.call().await;
                    times.push(start.elapsed());
                }
                times
            }))
        })
        .collect();
    let mut times = Vec::with_capacity(callers * calls);
    for waiter in waiters {
        times.extend(waiter.await);
    }
    times
}

type Waiter = Pin<Box<dyn Future<Output = Vec<Duration>>>>;

/// Opens a connection, warms it up, and measures one case.
async fn run(
    client: Client,
    url: String,
    concurrent: bool,
    driver: fn(SendFuture),
    caller: fn(Caller) -> Waiter,
) -> Sample {
    let mut conn = Conn::open(client, &url, driver).await;
    for _ in 0..WARMUP {
        conn.call().await;
    }
    let (count, each) = if concurrent {
        (CALLERS, CALLS_EACH)
    } else {
        (1, SEQUENTIAL)
    };
    let cpu = cpu_time();
    let start = Instant::now();
    let mut times = callers(conn, count, each, caller).await;
    let elapsed = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu);
    times.sort();
    let pick = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    Sample {
        p50: pick(0.5),
        p99: pick(0.99),
        per_second: times.len() as f64 / elapsed.as_secs_f64(),
        cpu_per_call: cpu / times.len() as u32,
    }
}

fn tokio_driver(future: SendFuture) {
    tokio::spawn(future);
}

fn shard_driver(future: SendFuture) {
    forkless::spawn(future).detach();
}

fn tokio_caller(future: Caller) -> Waiter {
    let handle = tokio::spawn(future);
    Box::pin(async move { handle.await.unwrap_or_default() })
}

fn shard_caller(future: Caller) -> Waiter {
    Box::pin(forkless::spawn(future))
}

fn plain(client: Client, url: &str, concurrent: bool) -> Sample {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The callers are tokio tasks on the worker; this thread only waits.
    runtime.block_on(run(
        client,
        url.to_owned(),
        concurrent,
        tokio_driver,
        tokio_caller,
    ))
}

fn on_shard(client: Client, url: &str, concurrent: bool, host: Host) -> Sample {
    let config = Config::default()
        .shards(Shards::Count(1))
        .listen(["127.0.0.1:0".parse().expect("literal address")]);
    let (sample_tx, sample_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let runtime = Runtime::new(config).coordinator(move |coordinator: Coordinator| {
        let _ = done_rx.recv_timeout(Duration::from_secs(120));
        coordinator.shutdown();
    });
    let url = url.to_owned();
    let outcome = runtime.run(move |shard: Shard| {
        let url = url.clone();
        let sample_tx = sample_tx.clone();
        let done_tx = done_tx.clone();
        async move {
            let driver = match host {
                Host::ShardDriver => shard_driver,
                _ => tokio_driver,
            };
            let sample = run(client, url, concurrent, driver, shard_caller).await;
            let _ = sample_tx.send(sample);
            let _ = done_tx.send(());
            shard.serve(|_request| async { "ok\n" }).await
        }
    });
    if let Err(error) = outcome {
        eprintln!("runtime: {error}");
    }
    sample_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the shard's sample")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn us(d: f64) -> String {
    format!("{:.1} us", d * 1e6)
}

fn main() {
    let (Some(postgres), Some(redis)) = (Postgres::start(), Redis::start()) else {
        eprintln!("services benchmark skipped: install postgresql and redis-server");
        return;
    };
    let hosts = [Host::Plain, Host::ShardDriver, Host::TokioDriver];
    println!(
        "| client | callers | host | p50 | p99 | calls/s | CPU/call | p50 vs plain | calls/s vs plain | CPU/call vs plain |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (client, name, url) in [
        (Client::Redis, "Redis GET", redis.url()),
        (
            Client::Postgres,
            "PostgreSQL SELECT 1",
            postgres.tcp_config(),
        ),
    ] {
        for concurrent in [false, true] {
            let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); hosts.len()];
            for _ in 0..REPS {
                for (index, host) in hosts.iter().enumerate() {
                    let sample = match host {
                        Host::Plain => plain(client, &url, concurrent),
                        _ => on_shard(client, &url, concurrent, *host),
                    };
                    samples[index].push(sample);
                }
            }
            let summary: Vec<[f64; 4]> = samples
                .iter()
                .map(|reps| {
                    [
                        median(reps.iter().map(|s| s.p50.as_secs_f64()).collect()),
                        median(reps.iter().map(|s| s.p99.as_secs_f64()).collect()),
                        median(reps.iter().map(|s| s.per_second).collect()),
                        median(reps.iter().map(|s| s.cpu_per_call.as_secs_f64()).collect()),
                    ]
                })
                .collect();
            let base = summary[0];
            for (host, [p50, p99, rate, cpu]) in hosts.iter().zip(&summary) {
                println!(
                    "| {name} | {} | {} | {} | {} | {:.0} | {} | {:.2}x | {:.2}x | {:.2}x |",
                    if concurrent { CALLERS } else { 1 },
                    host.name(),
                    us(*p50),
                    us(*p99),
                    rate,
                    us(*cpu),
                    p50 / base[0],
                    rate / base[2],
                    cpu / base[3],
                );
            }
        }
    }
}
