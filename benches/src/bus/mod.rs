//! Cross-shard messaging benchmarks: the same three measurements (round trip,
//! one-way throughput, wake-up of a parked receiver) over three transports:
//!
//! - [`raw`]: two threads pinned to CPU 0 and CPU 1 spinning on atomics, the
//!   hardware floor (and a futex `park`/`unpark` for the wake-up);
//! - [`channel`]: a plain `flume` channel pair between two glommio executors;
//! - [`shards`]: the forkless bus between two shards.
//!
//! Every function runs one repetition and returns its raw result; the
//! `bus` bench interleaves repetitions and prints the tables.

pub mod channel;
pub mod raw;
pub mod shards;

use std::time::{Duration, Instant};

/// The message that tells a receiver to stop (never a payload).
pub const STOP: u64 = u64::MAX;

/// The CPUs the two ends run on.
pub const CPUS: [usize; 2] = [0, 1];

/// A value alone on its cache line (two lines: adjacent-line prefetch pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(T);

impl<T> Padded<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Self(value)
    }
}

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// How many round trips one repetition makes.
#[derive(Clone, Copy, Debug)]
pub struct RoundTripPlan {
    /// Round trips made and thrown away first.
    pub warmup: usize,
    /// Round trips timed after the warm-up.
    pub samples: usize,
    /// Stop early (with fewer samples) when this much time has passed.
    pub max_time: Duration,
}

/// How many messages one throughput repetition sends.
#[derive(Clone, Copy, Debug)]
pub struct ThroughputPlan {
    /// Messages to send.
    pub messages: u64,
    /// Stop early (with fewer messages) when this much time has passed.
    pub max_time: Duration,
}

/// How many wake-ups one repetition measures.
#[derive(Clone, Copy, Debug)]
pub struct WakePlan {
    /// Messages sent, each after a pause.
    pub samples: usize,
    /// The sender's pause before each message (long enough for the receiver to park).
    pub pause: Duration,
}

/// Latencies of one repetition, in nanoseconds, plus the CPU the measured side used.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    nanos: Vec<u64>,
    /// CPU time of the measured thread over wall time, when measured.
    pub cpu_share: Option<f64>,
}

impl Latencies {
    /// Wraps raw samples.
    pub fn new(nanos: Vec<u64>) -> Self {
        let mut nanos = nanos;
        nanos.sort_unstable();
        Self {
            nanos,
            cpu_share: None,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// The `q`-quantile (0.5 = median, 0.99 = p99); zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.nanos.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.nanos.len() - 1) as f64 * q).round() as usize;
        Duration::from_nanos(self.nanos[index.min(self.nanos.len() - 1)])
    }
}

/// Messages received in some time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    /// Messages the receiver counted.
    pub messages: u64,
    /// From the first send to the last receive.
    pub elapsed: Duration,
}

impl Rate {
    /// Messages per second.
    pub fn per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Times consecutive round trips: each sample is the time between two calls
/// of [`RoundTrips::record`], so one clock read is paid per round trip.
#[derive(Debug)]
pub struct RoundTrips {
    plan: RoundTripPlan,
    done: usize,
    samples: Vec<u64>,
    previous: Instant,
    deadline: Instant,
}

impl RoundTrips {
    /// Starts the clock.
    pub fn start(plan: RoundTripPlan) -> Self {
        let now = Instant::now();
        Self {
            plan,
            done: 0,
            samples: Vec::with_capacity(plan.samples),
            previous: now,
            deadline: now + plan.max_time,
        }
    }

    /// Records the round trip that just completed; `false` when enough were made.
    pub fn record(&mut self) -> bool {
        let now = Instant::now();
        let nanos = u64::try_from((now - self.previous).as_nanos()).unwrap_or(u64::MAX);
        self.previous = now;
        self.done += 1;
        if self.done > self.plan.warmup {
            self.samples.push(nanos);
        }
        self.samples.len() < self.plan.samples && now < self.deadline
    }

    /// The timed samples.
    pub fn finish(self) -> Latencies {
        Latencies::new(self.samples)
    }
}

/// The sender's side of a throughput run: says when to stop.
#[derive(Debug)]
pub struct Sending {
    plan: ThroughputPlan,
    sent: u64,
    started: Instant,
}

impl Sending {
    /// Starts the clock.
    pub fn start(plan: ThroughputPlan) -> Self {
        Self {
            plan,
            sent: 0,
            started: Instant::now(),
        }
    }

    /// When the first message was sent.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The next message to send, or `None` when done.
    pub fn next_message(&mut self) -> Option<u64> {
        if self.sent >= self.plan.messages
            || (self.sent.is_multiple_of(4096)
                && self.sent > 0
                && self.started.elapsed() > self.plan.max_time)
        {
            return None;
        }
        self.sent += 1;
        Some(self.sent)
    }
}

/// Nanoseconds since a base instant shared by two threads: the sender puts
/// its clock in the message, the receiver subtracts it from its own.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self(Instant::now())
    }

    /// Nanoseconds since the base (never [`STOP`]).
    pub fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(STOP - 1)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Measures the CPU share of the calling thread between `start` and `finish`.
#[derive(Debug)]
pub struct CpuMeter {
    cpu: Duration,
    wall: Instant,
}

impl CpuMeter {
    /// Starts measuring.
    pub fn start() -> Self {
        Self {
            cpu: thread_cpu_time(),
            wall: Instant::now(),
        }
    }

    /// CPU time used by this thread over the wall time that passed.
    pub fn finish(self) -> f64 {
        (thread_cpu_time() - self.cpu).as_secs_f64() / self.wall.elapsed().as_secs_f64()
    }
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Pins the calling thread to `cpu`.
///
/// # Panics
///
/// When the kernel refuses (the CPU is outside this process's affinity mask).
pub fn pin_current_thread(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `set`; cpus beyond its size are ignored.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        rc,
        0,
        "cannot pin a thread to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
}
