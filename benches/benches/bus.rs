//! Cross-shard messaging, side by side: round trip, one-way throughput and
//! wake-up of a parked receiver, between CPU 0 and CPU 1, over
//!
//! - raw atomics between two pinned threads (the hardware floor),
//! - a plain flume channel between two glommio executors,
//! - the forkless bus between two shards.
//!
//! Each measurement runs `REPS` times, interleaved (A B C A B C ...), and the
//! tables give the median over repetitions (of each repetition's median/p99).
//!
//! Run with: `cargo bench -p forkless-benches --bench bus`

use std::time::{Duration, Instant};

use forkless_benches::bus::shards::{RoundTripKind, SendKind};
use forkless_benches::bus::{
    Latencies, Rate, RoundTripPlan, ThroughputPlan, WakePlan, channel, raw, shards,
};

const REPS: usize = 5;
const SPIN: Option<Duration> = Some(Duration::from_millis(10));

const ROUND_TRIPS: RoundTripPlan = RoundTripPlan {
    warmup: 2_000,
    samples: 100_000,
    max_time: Duration::from_millis(1200),
};
const THROUGHPUT: ThroughputPlan = ThroughputPlan {
    messages: 50_000_000,
    max_time: Duration::from_millis(800),
};
const IDLE: Duration = Duration::from_millis(500);
const WAKES: WakePlan = WakePlan {
    samples: 250,
    pause: Duration::from_millis(1),
};

/// One line of a table: a name and how to run one repetition.
struct Case<T> {
    name: &'static str,
    run: Box<dyn Fn() -> T>,
    results: Vec<T>,
}

fn case<T>(name: &'static str, run: impl Fn() -> T + 'static) -> Case<T> {
    Case {
        name,
        run: Box::new(run),
        results: Vec::new(),
    }
}

/// Runs every case `REPS` times, interleaved; cases whose name lacks the
/// command line's filter (`cargo bench --bench bus -- flume`) are skipped.
/// Returns how busy the machine was meanwhile with work that is not ours.
fn measure<T>(cases: &mut Vec<Case<T>>) -> Interference {
    if let Some(filter) = filter() {
        cases.retain(|case| case.name.contains(&filter));
    }
    let before = CpuTicks::now();
    for _ in 0..REPS {
        for case in cases.iter_mut() {
            let result = (case.run)();
            case.results.push(result);
        }
    }
    CpuTicks::now().since(&before)
}

/// The command line's filter: the first argument that is not a flag.
fn filter() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with('-'))
}

/// CPU time counters of the machine and of this process, in clock ticks.
struct CpuTicks {
    busy: u64,
    steal: u64,
    own: u64,
    at: Instant,
}

/// Share of the machine's CPUs used by other processes, and stolen by the hypervisor.
struct Interference {
    others: f64,
    steal: f64,
}

impl CpuTicks {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| cpu.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let busy = field(0) + field(1) + field(2) + field(5) + field(6);
        let own_stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after_name = own_stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let own_fields: Vec<u64> = after_name
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // utime and stime are fields 14 and 15 of /proc/<pid>/stat.
        let own =
            own_fields.get(11).copied().unwrap_or(0) + own_fields.get(12).copied().unwrap_or(0);
        Self {
            busy,
            steal: field(7),
            own,
            at: Instant::now(),
        }
    }

    fn since(&self, earlier: &CpuTicks) -> Interference {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let capacity = (self.at - earlier.at).as_secs_f64() * hz * cpus;
        let others = self.busy.saturating_sub(earlier.busy) as f64
            - self.own.saturating_sub(earlier.own) as f64;
        Interference {
            others: (others / capacity).max(0.0),
            steal: self.steal.saturating_sub(earlier.steal) as f64 / capacity,
        }
    }
}

impl Interference {
    fn print(&self) {
        let warning = if self.others > 0.05 || self.steal > 0.05 {
            " **(noisy: treat these numbers with care)**"
        } else {
            ""
        };
        println!(
            "\nOther processes used {:.0}% of the CPUs during these measurements, \
             the hypervisor stole {:.0}%.{warning}",
            self.others * 100.0,
            self.steal * 100.0
        );
    }
}

// Line names (the goals look some of them up).
const RAW_RT: &str = "raw atomics, spinning threads";
const FLUME_PARKED: &str = "flume + glommio, parked";
const FLUME_SPIN: &str = "flume + glommio, spin 10 ms";
const CALL_PARKED: &str = "forkless bus `call`, parked";
const CALL_SPIN: &str = "forkless bus `call`, spin 10 ms";
const SEND_BACK_SPIN: &str = "forkless bus `send` + `send` back, spin 10 ms";
const CALL_BUS_SPIN: &str = "forkless bus `call`, `bus_spin(50 us)`, spin 10 ms";
const QUEUES_ONLY: &str = "forkless bus queues only: `try_send` + `try_recv` spinning in the task";
const RAW_RING: &str = "raw SPSC ring, index published every message";
const RAW_RING_BATCHED: &str = "raw SPSC ring, index published every 32 messages";
const SEND_PARKED: &str = "forkless bus `send`, parked";
const SEND_SPIN: &str = "forkless bus `send`, spin 10 ms";
const TRY_SEND_PARKED: &str = "forkless bus `try_send`, parked";
const TRY_SEND_SPIN: &str = "forkless bus `try_send`, spin 10 ms";

fn main() {
    let started = Instant::now();
    print_machine();

    let mut round_trips = vec![
        case(RAW_RT, || raw::round_trip(ROUND_TRIPS)),
        case(FLUME_PARKED, || channel::round_trip(ROUND_TRIPS, None)),
        case(FLUME_SPIN, || channel::round_trip(ROUND_TRIPS, SPIN)),
        case(CALL_PARKED, || {
            shards::round_trip(ROUND_TRIPS, None, RoundTripKind::Call)
        }),
        case(CALL_SPIN, || {
            shards::round_trip(ROUND_TRIPS, SPIN, RoundTripKind::Call)
        }),
        case(SEND_BACK_SPIN, || {
            shards::round_trip(ROUND_TRIPS, SPIN, RoundTripKind::SendBack)
        }),
        case(CALL_BUS_SPIN, || {
            shards::round_trip_with(
                ROUND_TRIPS,
                SPIN,
                Duration::from_micros(50),
                RoundTripKind::Call,
            )
        }),
        case(QUEUES_ONLY, || {
            shards::round_trip(ROUND_TRIPS, None, RoundTripKind::BusyPoll)
        }),
    ];
    let rt_noise = measure(&mut round_trips);

    let mut throughputs = vec![
        case(RAW_RING, || raw::throughput(THROUGHPUT, 1)),
        case(RAW_RING_BATCHED, || raw::throughput(THROUGHPUT, 32)),
        case(FLUME_PARKED, || channel::throughput(THROUGHPUT, None)),
        case(FLUME_SPIN, || channel::throughput(THROUGHPUT, SPIN)),
        case(SEND_PARKED, || {
            shards::throughput(THROUGHPUT, None, SendKind::Send)
        }),
        case(SEND_SPIN, || {
            shards::throughput(THROUGHPUT, SPIN, SendKind::Send)
        }),
        case(TRY_SEND_PARKED, || {
            shards::throughput(THROUGHPUT, None, SendKind::TrySend)
        }),
        case(TRY_SEND_SPIN, || {
            shards::throughput(THROUGHPUT, SPIN, SendKind::TrySend)
        }),
        case(QUEUES_ONLY, || {
            shards::throughput(THROUGHPUT, None, SendKind::BusyPoll)
        }),
    ];
    let tp_noise = measure(&mut throughputs);

    let mut wakes = vec![
        case("raw futex (`thread::park` / `unpark`)", || raw::wake(WAKES)),
        case(FLUME_PARKED, || channel::wake(WAKES, None)),
        case("forkless bus, parked", || shards::wake(WAKES, None)),
        case(FLUME_SPIN, || channel::wake(WAKES, SPIN)),
        case("forkless bus, spin 10 ms", || shards::wake(WAKES, SPIN)),
        case(
            "forkless shard idle for 0.5 s (no messages), parked",
            || shards::idle(IDLE, None),
        ),
        case(
            "forkless shard idle for 0.5 s (no messages), spin 10 ms",
            || shards::idle(IDLE, SPIN),
        ),
    ];
    let wake_noise = measure(&mut wakes);

    let rt = print_round_trips(&round_trips);
    rt_noise.print();
    let tp = print_throughputs(&throughputs);
    tp_noise.print();
    print_wakes(&wakes);
    wake_noise.print();
    if filter().is_none() {
        print_goals(&rt, &tp);
    }
    println!(
        "\n({REPS} interleaved repetitions of each line; whole run {:.0} s)",
        started.elapsed().as_secs_f64()
    );
}

fn print_machine() {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "# forkless bus benchmark\n\nCPUs: {cpus}, Linux {}, load average at start: {}; \
         sender on CPU 0, receiver on CPU 1.",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Median of `values` (sorted in place).
fn median_f64(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Median over repetitions of one quantile of each repetition.
fn over_reps(results: &[Latencies], q: f64) -> (f64, f64, f64) {
    if results.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut values: Vec<f64> = results
        .iter()
        .map(|l| l.quantile(q).as_nanos() as f64)
        .collect();
    let median = median_f64(&mut values);
    (median, values[0], values[values.len() - 1])
}

fn fmt_nanos(nanos: f64) -> String {
    if nanos < 1_000.0 {
        format!("{nanos:.0} ns")
    } else if nanos < 1_000_000.0 {
        format!("{:.1} us", nanos / 1e3)
    } else {
        format!("{:.2} ms", nanos / 1e6)
    }
}

fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.1} M/s", per_sec / 1e6)
    } else {
        format!("{:.0} k/s", per_sec / 1e3)
    }
}

/// One line of a table: its value (median over repetitions) and its ratio
/// to the raw line of the same repetition (median over repetitions: the raw
/// floor moves when the hypervisor moves the vCPUs).
struct Line {
    name: &'static str,
    value: f64,
    to_raw: f64,
}

/// The lines of one table, by name.
struct Summary(Vec<Line>);

impl Summary {
    fn get(&self, name: &str) -> &Line {
        const MISSING: Line = Line {
            name: "(none)",
            value: f64::NAN,
            to_raw: f64::NAN,
        };
        self.0.iter().find(|l| l.name == name).unwrap_or(&MISSING)
    }

    /// The best (lowest or highest) line among those named.
    fn best(&self, names: &[&str], lowest: bool) -> &Line {
        let mut matching = self
            .0
            .iter()
            .filter(|l| names.contains(&l.name) && !l.value.is_nan());
        let first = matching.next().unwrap_or(self.get("(none)"));
        matching.fold(first, |best, line| {
            if (lowest && line.value < best.value) || (!lowest && line.value > best.value) {
                line
            } else {
                best
            }
        })
    }
}

/// Median over repetitions of `value(case rep) / value(raw rep)`.
fn ratio_to_raw(per_rep: &[f64], raw_per_rep: Option<&[f64]>) -> f64 {
    let Some(raw) = raw_per_rep else {
        return f64::NAN;
    };
    let mut ratios: Vec<f64> = per_rep.iter().zip(raw).map(|(v, r)| v / r).collect();
    if ratios.is_empty() {
        return f64::NAN;
    }
    median_f64(&mut ratios)
}

fn print_round_trips(cases: &[Case<Latencies>]) -> Summary {
    println!("\n## Round trip (send + reply), CPU 0 <-> CPU 1\n");
    println!(
        "| transport | median | p99 | median, min-max over reps | samples/rep | median / raw (same rep) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let rep_medians = |case: &Case<Latencies>| -> Vec<f64> {
        case.results
            .iter()
            .map(|l| l.quantile(0.5).as_nanos() as f64)
            .collect()
    };
    let raw = cases
        .iter()
        .find(|case| case.name.starts_with("raw"))
        .map(rep_medians);
    let mut summary = Vec::new();
    for case in cases {
        let (median, low, high) = over_reps(&case.results, 0.5);
        let (p99, _, _) = over_reps(&case.results, 0.99);
        let samples = case.results.iter().map(Latencies::len).min().unwrap_or(0);
        let to_raw = ratio_to_raw(&rep_medians(case), raw.as_deref());
        println!(
            "| {} | {} | {} | {}-{} | {samples} | {to_raw:.1}x |",
            case.name,
            fmt_nanos(median),
            fmt_nanos(p99),
            fmt_nanos(low),
            fmt_nanos(high),
        );
        summary.push(Line {
            name: case.name,
            value: median,
            to_raw,
        });
    }
    Summary(summary)
}

fn print_throughputs(cases: &[Case<Rate>]) -> Summary {
    println!("\n## One-way throughput, u64 messages, CPU 0 -> CPU 1\n");
    println!("| transport | messages/s | min-max over reps | messages/rep | / raw (same rep) |");
    println!("|---|---:|---:|---:|---:|");
    let rates =
        |case: &Case<Rate>| -> Vec<f64> { case.results.iter().map(Rate::per_sec).collect() };
    let raw = cases
        .iter()
        .find(|case| case.name.starts_with("raw"))
        .map(rates);
    let mut summary = Vec::new();
    for case in cases {
        let mut per_rep = rates(case);
        let to_raw = ratio_to_raw(&per_rep, raw.as_deref());
        let rate = median_f64(&mut per_rep);
        let messages = case.results.iter().map(|r| r.messages).min().unwrap_or(0);
        println!(
            "| {} | {} | {}-{} | {messages} | {to_raw:.2}x |",
            case.name,
            fmt_rate(rate),
            fmt_rate(per_rep[0]),
            fmt_rate(per_rep[per_rep.len() - 1]),
        );
        summary.push(Line {
            name: case.name,
            value: rate,
            to_raw,
        });
    }
    Summary(summary)
}

fn print_wakes(cases: &[Case<Latencies>]) {
    println!(
        "\n## Wake-up of a parked receiver (a message every {} ms; send -> receiver running)\n",
        WAKES.pause.as_millis()
    );
    println!("| transport | median | p99 | receiver's CPU use |");
    println!("|---|---:|---:|---:|");
    for case in cases {
        let (median, _, _) = over_reps(&case.results, 0.5);
        let (p99, _, _) = over_reps(&case.results, 0.99);
        let mut cpu: Vec<f64> = case.results.iter().filter_map(|l| l.cpu_share).collect();
        let cpu = median_f64(&mut cpu) * 100.0;
        let (median, p99) = if case.results.iter().all(Latencies::is_empty) {
            ("-".to_owned(), "-".to_owned())
        } else {
            (fmt_nanos(median), fmt_nanos(p99))
        };
        println!(
            "| {} | {median} | {p99} | {cpu:.prec$}% |",
            case.name,
            prec = if cpu < 10.0 { 1 } else { 0 }
        );
    }
}

fn print_goals(rt: &Summary, tp: &Summary) {
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let raw = rt.get(RAW_RT);
    let best_rt = rt.best(
        &[CALL_PARKED, CALL_SPIN, SEND_BACK_SPIN, CALL_BUS_SPIN],
        true,
    );
    let queues = rt.get(QUEUES_ONLY);
    let best_tp = tp.best(
        &[SEND_PARKED, SEND_SPIN, TRY_SEND_PARKED, TRY_SEND_SPIN],
        false,
    );
    println!("\n## Goals (issue 3)\n");
    println!(
        "- round trip within 3x raw ping-pong (raw {}): best awaited forkless round trip ({}) \
         {} = {:.1}x raw -> {}; the bus's queues alone (no executor) {} = {:.1}x raw",
        fmt_nanos(raw.value),
        best_rt.name,
        fmt_nanos(best_rt.value),
        best_rt.to_raw,
        verdict(best_rt.to_raw <= 3.0),
        fmt_nanos(queues.value),
        queues.to_raw,
    );
    println!(
        "- >= 20 M messages/s one way: best awaited forkless ({}) {} -> {}; \
         the bus's queues alone {}",
        best_tp.name,
        fmt_rate(best_tp.value),
        verdict(best_tp.value >= 20e6),
        fmt_rate(tp.get(QUEUES_ONLY).value),
    );
    let faster = |bus: &Line, flume: &Line| flume.value / bus.value;
    println!(
        "- ahead of plain flume + glommio, round trip: parked {:.2}x faster ({} vs {}), \
         spinning {:.2}x faster ({} vs {})",
        faster(rt.get(CALL_PARKED), rt.get(FLUME_PARKED)),
        fmt_nanos(rt.get(CALL_PARKED).value),
        fmt_nanos(rt.get(FLUME_PARKED).value),
        faster(rt.get(CALL_SPIN), rt.get(FLUME_SPIN)),
        fmt_nanos(rt.get(CALL_SPIN).value),
        fmt_nanos(rt.get(FLUME_SPIN).value),
    );
    let more = |bus: &Line, flume: &Line| bus.value / flume.value;
    println!(
        "- ahead of plain flume + glommio, throughput: parked {:.1}x (`send` {} vs {}), \
         spinning {:.1}x (`send` {} vs {})",
        more(tp.get(SEND_PARKED), tp.get(FLUME_PARKED)),
        fmt_rate(tp.get(SEND_PARKED).value),
        fmt_rate(tp.get(FLUME_PARKED).value),
        more(tp.get(SEND_SPIN), tp.get(FLUME_SPIN)),
        fmt_rate(tp.get(SEND_SPIN).value),
        fmt_rate(tp.get(FLUME_SPIN).value),
    );
}
