//! The hardware floor: two threads pinned to [`CPUS`] that spin on atomics,
//! each on its own cache line. No executor, no queue, no wake-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use super::{
    CPUS, Clock, CpuMeter, Latencies, Padded, Rate, RoundTripPlan, RoundTrips, STOP, Sending,
    ThroughputPlan, WakePlan, pin_current_thread,
};

/// Spins until `cell` holds something other than `last`, and returns it.
fn wait_change(cell: &AtomicU64, last: u64) -> u64 {
    loop {
        let value = cell.load(Ordering::Acquire);
        if value != last {
            return value;
        }
        std::hint::spin_loop();
    }
}

/// Ping-pong over two cache-line-padded `AtomicU64`s: thread 0 writes `ping`,
/// thread 1 echoes it into `pong`.
pub fn round_trip(plan: RoundTripPlan) -> Latencies {
    let ping = Arc::new(Padded::new(AtomicU64::new(0)));
    let pong = Arc::new(Padded::new(AtomicU64::new(0)));
    let echo = {
        let (ping, pong) = (ping.clone(), pong.clone());
        thread::spawn(move || {
            pin_current_thread(CPUS[1]);
            let mut last = 0;
            loop {
                last = wait_change(&ping, last);
                if last == STOP {
                    return;
                }
                pong.store(last, Ordering::Release);
            }
        })
    };
    let pinger = thread::spawn(move || {
        pin_current_thread(CPUS[0]);
        let mut trips = RoundTrips::start(plan);
        let mut n = 0;
        loop {
            n += 1;
            ping.store(n, Ordering::Release);
            wait_change(&pong, n - 1);
            if !trips.record() {
                break;
            }
        }
        ping.store(STOP, Ordering::Release);
        trips.finish()
    });
    let latencies = pinger.join().expect("the pinging thread panicked");
    echo.join().expect("the echoing thread panicked");
    latencies
}

/// A bounded single-producer single-consumer ring of `u64`s: each side keeps
/// a cached copy of the other's index and publishes its own every `batch`
/// messages (1: after every message, as `rtrb` and the bus do).
struct Ring {
    slots: Box<[AtomicU64]>,
    /// Messages taken by the consumer.
    head: Padded<AtomicU64>,
    /// Messages pushed by the producer.
    tail: Padded<AtomicU64>,
}

const RING_CAPACITY: u64 = 1024;

/// One-way throughput through the raw SPSC ring (`Ring`), thread 0 producing, thread 1
/// consuming, each publishing its index every `batch` messages.
pub fn throughput(plan: ThroughputPlan, batch: u64) -> Rate {
    assert!(batch > 0 && RING_CAPACITY.is_multiple_of(batch));
    let ring = Arc::new(Ring {
        slots: (0..RING_CAPACITY).map(|_| AtomicU64::new(0)).collect(),
        head: Padded::new(AtomicU64::new(0)),
        tail: Padded::new(AtomicU64::new(0)),
    });
    let consumer = {
        let ring = ring.clone();
        thread::spawn(move || {
            pin_current_thread(CPUS[1]);
            let (mut head, mut tail, mut count) = (0u64, 0u64, 0u64);
            loop {
                while head == tail {
                    tail = ring.tail.load(Ordering::Acquire);
                    std::hint::spin_loop();
                }
                let value = ring.slots[(head % RING_CAPACITY) as usize].load(Ordering::Relaxed);
                head += 1;
                if head.is_multiple_of(batch) || head == tail {
                    ring.head.store(head, Ordering::Release);
                }
                if value == STOP {
                    return (count, std::time::Instant::now());
                }
                count += 1;
            }
        })
    };
    let producer = thread::spawn(move || {
        pin_current_thread(CPUS[0]);
        let mut sending = Sending::start(plan);
        let (mut tail, mut head) = (0u64, 0u64);
        let mut push = |value: u64, flush: bool| {
            while tail - head == RING_CAPACITY {
                head = ring.head.load(Ordering::Acquire);
                std::hint::spin_loop();
            }
            ring.slots[(tail % RING_CAPACITY) as usize].store(value, Ordering::Relaxed);
            tail += 1;
            if flush || tail.is_multiple_of(batch) {
                ring.tail.store(tail, Ordering::Release);
            }
        };
        while let Some(n) = sending.next_message() {
            push(n, false);
        }
        push(STOP, true);
        sending.started()
    });
    let started = producer.join().expect("the producing thread panicked");
    let (messages, ended) = consumer.join().expect("the consuming thread panicked");
    Rate {
        messages,
        elapsed: ended - started,
    }
}

/// Wake-up of a parked thread: thread 1 sleeps in `thread::park` (a futex);
/// thread 0 stores its clock and calls `unpark` once per pause.
pub fn wake(plan: WakePlan) -> Latencies {
    let clock = Clock::new();
    let sent_at = Arc::new(Padded::new(AtomicU64::new(0)));
    let sleeper = {
        let sent_at = sent_at.clone();
        thread::spawn(move || {
            pin_current_thread(CPUS[1]);
            let cpu = CpuMeter::start();
            let mut samples = Vec::with_capacity(plan.samples);
            let mut last = 0;
            loop {
                let value = sent_at.load(Ordering::Acquire);
                if value == last {
                    thread::park();
                    continue;
                }
                if value == STOP {
                    break;
                }
                samples.push(clock.now() - value);
                last = value;
            }
            let mut latencies = Latencies::new(samples);
            latencies.cpu_share = Some(cpu.finish());
            latencies
        })
    };
    let waker = {
        let target = sleeper.thread().clone();
        thread::spawn(move || {
            pin_current_thread(CPUS[0]);
            for _ in 0..plan.samples {
                thread::sleep(plan.pause);
                sent_at.store(clock.now(), Ordering::Release);
                target.unpark();
            }
            thread::sleep(plan.pause);
            sent_at.store(STOP, Ordering::Release);
            target.unpark();
        })
    };
    waker.join().expect("the waking thread panicked");
    sleeper.join().expect("the sleeping thread panicked")
}
