//! Restart time of a dead shard: from the panic that kills shard 1 to the
//! moment its new incarnation listens again, in a real runtime with HTTP.
//! Reported with no backoff (the cost of the mechanism) and with the
//! default policy's first backoff (10 ms). Goal: < 50 ms.
//!
//! Run with: `cargo bench -p forkless-benches --bench restart`

use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use forkless::{
    Config, Coordinator, LifecycleKind, RestartPolicy, Runtime, Shard, ShardId, Shards,
};

const RESTARTS: usize = 20;

fn main() {
    println!("| policy | restarts | death -> listening, median | p90 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (name, backoff) in [
        ("no backoff", Duration::ZERO),
        ("default backoff", Duration::from_millis(10)),
    ] {
        let mut samples = measure(backoff);
        samples.sort();
        let pick = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        println!(
            "| {name} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            samples.len(),
            ms(pick(0.5)),
            ms(pick(0.9)),
            ms(pick(1.0))
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn measure(backoff: Duration) -> Vec<Duration> {
    let policy = RestartPolicy {
        backoff_start: backoff,
        backoff_cap: backoff,
        max_restarts: 10_000,
        window: Duration::from_secs(1),
    };
    let config = Config::default()
        .shards(Shards::Count(2))
        .listen(["127.0.0.1:0".parse().expect("literal address")])
        .restart_policy(policy);
    let deaths: Arc<Mutex<Vec<SystemTime>>> = Arc::default();
    let (result_tx, result_rx) = mpsc::channel();
    let runtime = Runtime::new(config).coordinator({
        let deaths = deaths.clone();
        move |coordinator: Coordinator| {
            let events = coordinator.events();
            let kill = coordinator.bus::<()>();
            let mut samples = Vec::with_capacity(RESTARTS);
            let mut incarnation = 1;
            // Wait for shard 1 to listen, kill it, time the way back.
            while samples.len() < RESTARTS {
                let Some(event) = events.recv_timeout(Duration::from_secs(10)) else {
                    break;
                };
                if event.shard != ShardId::new(1) || event.kind != LifecycleKind::Listening {
                    continue;
                }
                if event.incarnation > incarnation {
                    let died = deaths.lock().map(|d| d.last().copied()).ok().flatten();
                    if let Some(died) = died {
                        samples.push(event.at.duration_since(died).unwrap_or_default());
                    }
                    incarnation = event.incarnation;
                }
                std::thread::sleep(Duration::from_millis(20));
                let _ = kill.send(ShardId::new(1), ());
            }
            let _ = result_tx.send(samples);
            coordinator.shutdown();
        }
    });
    let outcome = runtime.run(move |shard: Shard| {
        let deaths = deaths.clone();
        async move {
            if shard.id() == ShardId::new(1) {
                let kill = shard.bus::<()>();
                forkless::spawn(async move {
                    let _ = kill.recv().await;
                    if let Ok(mut deaths) = deaths.lock() {
                        deaths.push(SystemTime::now());
                    }
                    panic!("killed by the restart benchmark");
                })
                .detach();
            }
            shard.serve(|_req| async { "ok\n" }).await
        }
    });
    if let Err(error) = outcome {
        eprintln!("runtime: {error}");
    }
    result_rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default()
}
