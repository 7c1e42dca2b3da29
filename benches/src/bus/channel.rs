//! The naive baseline: a `flume` channel pair between two glommio executors
//! pinned to [`CPUS`], with `send_async` / `recv_async`. A foreign wake-up
//! goes through glommio's foreign-wake queue and, when the executor sleeps,
//! its eventfd.

use std::future::Future;
use std::time::{Duration, Instant};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use super::{
    CPUS, Clock, CpuMeter, Latencies, Rate, RoundTripPlan, RoundTrips, STOP, Sending,
    ThroughputPlan, WakePlan,
};

/// The channel capacity (each direction).
pub const CAPACITY: usize = 1024;

/// Starts an executor pinned to `cpu`, spinning `spin` before it parks.
fn executor<T, F, Fut>(cpu: usize, spin: Option<Duration>, body: F) -> ExecutorJoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("bench-{cpu}"))
        .io_memory(64 << 10)
        .ring_depth(128);
    if let Some(spin) = spin {
        builder = builder.spin_before_park(spin);
    }
    builder.spawn(body).expect("start a glommio executor")
}

/// Ping-pong over two bounded flume channels.
pub fn round_trip(plan: RoundTripPlan, spin: Option<Duration>) -> Latencies {
    let (to_echo, from_pinger) = flume::bounded::<u64>(CAPACITY);
    let (to_pinger, from_echo) = flume::bounded::<u64>(CAPACITY);
    let echo = executor(CPUS[1], spin, move || async move {
        while let Ok(n) = from_pinger.recv_async().await {
            if to_pinger.send_async(n).await.is_err() {
                break;
            }
        }
    });
    let pinger = executor(CPUS[0], spin, move || async move {
        let mut trips = RoundTrips::start(plan);
        let mut n = 0;
        loop {
            n += 1;
            to_echo.send_async(n).await.expect("echo alive");
            from_echo.recv_async().await.expect("echo alive");
            if !trips.record() {
                break;
            }
        }
        trips.finish()
    });
    let latencies = pinger.join().expect("the pinging executor failed");
    echo.join().expect("the echoing executor failed");
    latencies
}

/// One-way: executor 0 sends with `send_async`, executor 1 counts with `recv_async`.
pub fn throughput(plan: ThroughputPlan, spin: Option<Duration>) -> Rate {
    let (tx, rx) = flume::bounded::<u64>(CAPACITY);
    let receiver = executor(CPUS[1], spin, move || async move {
        let mut count = 0u64;
        while let Ok(n) = rx.recv_async().await {
            if n == STOP {
                break;
            }
            count += 1;
        }
        (count, Instant::now())
    });
    let sender = executor(CPUS[0], spin, move || async move {
        let mut sending = Sending::start(plan);
        while let Some(n) = sending.next_message() {
            tx.send_async(n).await.expect("receiver alive");
        }
        tx.send_async(STOP).await.expect("receiver alive");
        sending.started()
    });
    let started = sender.join().expect("the sending executor failed");
    let (messages, ended) = receiver.join().expect("the receiving executor failed");
    Rate {
        messages,
        elapsed: ended - started,
    }
}

/// Wake-up of a parked executor: executor 0 sleeps `pause`, then sends its
/// clock; executor 1 (parked on `recv_async`) subtracts it from its own.
pub fn wake(plan: WakePlan, spin: Option<Duration>) -> Latencies {
    let clock = Clock::new();
    let (tx, rx) = flume::bounded::<u64>(CAPACITY);
    let receiver = executor(CPUS[1], spin, move || async move {
        let cpu = CpuMeter::start();
        let mut samples = Vec::with_capacity(plan.samples);
        while let Ok(sent) = rx.recv_async().await {
            if sent == STOP {
                break;
            }
            samples.push(clock.now() - sent);
        }
        let mut latencies = Latencies::new(samples);
        latencies.cpu_share = Some(cpu.finish());
        latencies
    });
    let sender = executor(CPUS[0], spin, move || async move {
        for _ in 0..plan.samples {
            glommio::timer::sleep(plan.pause).await;
            tx.send_async(clock.now()).await.expect("receiver alive");
        }
        tx.send_async(STOP).await.expect("receiver alive");
    });
    sender.join().expect("the sending executor failed");
    receiver.join().expect("the receiving executor failed")
}
