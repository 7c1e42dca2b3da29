//! The forkless bus between two shards of a real [`Runtime`] (no listener):
//! shard 0 on CPU 0 drives, shard 1 on CPU 1 answers or counts.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use forkless::bus::{Bus, Envelope, TrySendError};
use forkless::{Config, Runtime, Shard, ShardId, Shards};

use super::{
    Clock, CpuMeter, Latencies, Rate, RoundTripPlan, RoundTrips, STOP, Sending, ThroughputPlan,
    WakePlan,
};

/// How a round trip is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundTripKind {
    /// `bus.call(peer, n)`, answered with `envelope.reply(n)`.
    Call,
    /// `bus.send(peer, n)` one way and `bus.send(back, n)` the other, each side on `recv`.
    SendBack,
    /// `try_send` one way and back, each side spinning on `try_recv` inside
    /// its task (never yielding to the executor): the cost of the bus's
    /// queues alone, without glommio's scheduling and wake-ups.
    BusyPoll,
}

/// Spins on `try_recv` without yielding to the executor.
fn spin_recv<M: Send + 'static, R: Send + 'static>(bus: &Bus<M, R>) -> Envelope<M, R> {
    loop {
        if let Some(envelope) = bus.try_recv() {
            return envelope;
        }
        std::hint::spin_loop();
    }
}

/// `try_send`, spinning while the queue is full.
fn spin_send<M: Send + 'static, R: Send + 'static>(
    bus: &Bus<M, R>,
    to: ShardId,
    msg: M,
) -> Result<(), String> {
    let mut msg = msg;
    loop {
        match bus.try_send(to, msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => msg = back,
            Err(e) => return Err(e.to_string()),
        }
        std::hint::spin_loop();
    }
}

/// How the sender of a throughput run pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendKind {
    /// `bus.send(peer, n).await` for every message.
    Send,
    /// `bus.try_send(peer, n)`, falling back to `send(..).await` when full.
    TrySend,
    /// `try_send` spinning while full, the receiver spinning on `try_recv`,
    /// neither yielding to the executor: the bus's queues alone.
    BusyPoll,
}

/// Runs `body` on both shards of a two-shard runtime and returns what one of them stored.
fn run_pair<T, F, Fut>(spin: Option<Duration>, body: F) -> T
where
    T: Send + 'static,
    F: Fn(Shard, Arc<Mutex<Option<T>>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    run_pair_with(spin, Duration::ZERO, body)
}

/// [`run_pair`] with [`Config::bus_spin`] set too.
fn run_pair_with<T, F, Fut>(spin: Option<Duration>, bus_spin: Duration, body: F) -> T
where
    T: Send + 'static,
    F: Fn(Shard, Arc<Mutex<Option<T>>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    let mut config = Config::default()
        .shards(Shards::Count(2))
        .listen([])
        .bus_spin(bus_spin);
    if let Some(spin) = spin {
        config = config.spin_before_park(spin);
    }
    let result = Arc::new(Mutex::new(None));
    let body = Arc::new(body);
    let shared = result.clone();
    Runtime::new(config)
        .run(move |shard: Shard| body(shard, shared.clone()))
        .expect("the benchmark's shards ran");
    let stored = result.lock().unwrap_or_else(PoisonError::into_inner).take();
    stored.expect("a shard stored the result")
}

fn store<T>(slot: &Mutex<Option<T>>, value: T) {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
}

fn peer(shard: &Shard) -> ShardId {
    ShardId::new(1 - shard.id().get())
}

/// Round trips between shard 0 and shard 1.
pub fn round_trip(plan: RoundTripPlan, spin: Option<Duration>, kind: RoundTripKind) -> Latencies {
    round_trip_with(plan, spin, Duration::ZERO, kind)
}

/// [`round_trip`] with [`Config::bus_spin`] set: `recv` and `call` poll in
/// place for up to `bus_spin` before parking.
pub fn round_trip_with(
    plan: RoundTripPlan,
    spin: Option<Duration>,
    bus_spin: Duration,
    kind: RoundTripKind,
) -> Latencies {
    run_pair_with(spin, bus_spin, move |shard, result| async move {
        let bus = shard.bus_with_reply::<u64, u64>();
        let peer = peer(&shard);
        if shard.id().get() == 1 {
            loop {
                let envelope = match kind {
                    RoundTripKind::BusyPoll => spin_recv(&bus),
                    _ => bus.recv().await,
                };
                let n = envelope.msg;
                if n == STOP {
                    return Ok(());
                }
                match kind {
                    RoundTripKind::Call => envelope.reply(n),
                    RoundTripKind::SendBack => {
                        bus.send(peer, n).await.map_err(|e| e.to_string())?
                    }
                    RoundTripKind::BusyPoll => spin_send(&bus, peer, n)?,
                }
            }
        }
        let mut trips = RoundTrips::start(plan);
        let mut n = 0;
        loop {
            n += 1;
            match kind {
                RoundTripKind::Call => {
                    bus.call(peer, n).await.map_err(|e| e.to_string())?;
                }
                RoundTripKind::SendBack => {
                    bus.send(peer, n).await.map_err(|e| e.to_string())?;
                    bus.recv().await;
                }
                RoundTripKind::BusyPoll => {
                    spin_send(&bus, peer, n)?;
                    spin_recv(&bus);
                }
            }
            if !trips.record() {
                break;
            }
        }
        bus.send(peer, STOP).await.map_err(|e| e.to_string())?;
        store(&result, trips.finish());
        Ok(())
    })
}

/// One-way throughput from shard 0 to shard 1: from shard 0's first send
/// to shard 1 having counted the last message.
pub fn throughput(plan: ThroughputPlan, spin: Option<Duration>, kind: SendKind) -> Rate {
    let clock = Clock::new();
    let started = Arc::new(AtomicU64::new(0));
    run_pair(spin, move |shard, result| {
        let started = started.clone();
        async move {
            let bus = shard.bus::<u64>();
            let peer = peer(&shard);
            if shard.id().get() == 1 {
                let mut messages = 0u64;
                loop {
                    let envelope = match kind {
                        SendKind::BusyPoll => spin_recv(&bus),
                        _ => bus.recv().await,
                    };
                    if envelope.msg == STOP {
                        break;
                    }
                    messages += 1;
                }
                let elapsed = clock.now() - started.load(Ordering::Acquire);
                store(
                    &result,
                    Rate {
                        messages,
                        elapsed: Duration::from_nanos(elapsed),
                    },
                );
                return Ok(());
            }
            let mut sending = Sending::start(plan);
            started.store(clock.now(), Ordering::Release);
            while let Some(n) = sending.next_message() {
                match kind {
                    SendKind::Send => bus.send(peer, n).await.map_err(|e| e.to_string())?,
                    SendKind::TrySend => match bus.try_send(peer, n) {
                        Ok(()) => {}
                        Err(TrySendError::Full(n)) => {
                            bus.send(peer, n).await.map_err(|e| e.to_string())?;
                        }
                        Err(e) => return Err(e.to_string()),
                    },
                    SendKind::BusyPoll => spin_send(&bus, peer, n)?,
                }
            }
            bus.send(peer, STOP).await.map_err(|e| e.to_string())
        }
    })
}

/// Wake-up of a parked shard: shard 0 sleeps `pause`, then sends its clock;
/// shard 1, parked in `recv`, subtracts it from its own.
pub fn wake(plan: WakePlan, spin: Option<Duration>) -> Latencies {
    let clock = Clock::new();
    run_pair(spin, move |shard, result| async move {
        let bus = shard.bus::<u64>();
        let peer = peer(&shard);
        if shard.id().get() == 1 {
            let cpu = CpuMeter::start();
            let mut samples = Vec::with_capacity(plan.samples);
            loop {
                let sent = bus.recv().await.msg;
                if sent == STOP {
                    break;
                }
                samples.push(clock.now() - sent);
            }
            let mut latencies = Latencies::new(samples);
            latencies.cpu_share = Some(cpu.finish());
            store(&result, latencies);
            return Ok(());
        }
        for _ in 0..plan.samples {
            glommio::timer::sleep(plan.pause).await;
            bus.send(peer, clock.now())
                .await
                .map_err(|e| e.to_string())?;
        }
        bus.send(peer, STOP).await.map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// CPU use of an idle shard: shard 1 waits in `recv` while shard 0 sleeps
/// `idle`, then sends it a stop. No samples; only [`Latencies::cpu_share`].
pub fn idle(idle: Duration, spin: Option<Duration>) -> Latencies {
    run_pair(spin, move |shard, result| async move {
        let bus = shard.bus::<u64>();
        if shard.id().get() == 1 {
            let cpu = CpuMeter::start();
            while bus.recv().await.msg != STOP {}
            let mut latencies = Latencies::new(Vec::new());
            latencies.cpu_share = Some(cpu.finish());
            store(&result, latencies);
            return Ok(());
        }
        glommio::timer::sleep(idle).await;
        bus.send(peer(&shard), STOP)
            .await
            .map_err(|e| e.to_string())
    })
}
