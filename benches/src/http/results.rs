//! What an HTTP bench run collected, round by round, and how it is reported:
//! medians over the rounds, ratios to a peer taken within each round (so a
//! noisy round moves both sides), markdown tables, the goals of issue #6,
//! and the chart's panels.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::chart::Panel;
use super::measure::{Balance, Memory, Mode, Startup, Throughput};
use super::mixed::Mixed;
use super::server::Peer;
use super::stats;
use super::syscalls::Syscalls;

/// Everything measured, by round.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Servers that took part, in table order.
    pub peers: Vec<Peer>,
    /// `(mode, peer)` -> round -> measurement.
    pub throughput: BTreeMap<(Mode, Peer), BTreeMap<usize, Throughput>>,
    /// One entry per round.
    pub memory: BTreeMap<Peer, Vec<Memory>>,
    /// One entry per round.
    pub startup: BTreeMap<Peer, Vec<Startup>>,
    /// `(shards, connections)` -> one entry per round.
    pub balance: BTreeMap<(usize, usize), Vec<Balance>>,
    /// The mixed load, one entry per round.
    pub mixed: BTreeMap<Peer, Vec<Mixed>>,
    /// Syscalls per request, `(mode, peer)` -> one entry per counted run.
    pub syscalls: BTreeMap<(Mode, Peer), Vec<Syscalls>>,
    /// Measurements that failed, with why.
    pub failures: Vec<String>,
}

/// Medians of one `(mode, peer)` over the rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Requests per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Server CPU time per request.
    pub cpu_per_request: Duration,
    /// Server CPU time over wall time (1.0: one CPU busy).
    pub cpu_use: f64,
    /// Errors, summed over the rounds.
    pub errors: u64,
}

/// One line of the goals table.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// What issue #6 asks.
    pub goal: &'static str,
    /// What the run measured.
    pub measured: String,
    /// `Some(true)`: met; `Some(false)`: missed; `None`: not measured.
    pub met: Option<bool>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn median_duration(values: impl Iterator<Item = Duration>) -> Duration {
    let values: Vec<f64> = values.map(secs).collect();
    stats::median(&values).map_or(Duration::ZERO, Duration::from_secs_f64)
}

/// CPU time per request in microseconds, two decimals.
fn cpu_us(d: Duration) -> String {
    format!("{:.2} us", d.as_secs_f64() * 1e6)
}

impl Results {
    /// Medians of `peer` in `mode`, if it was measured at least once.
    pub fn summary(&self, mode: Mode, peer: Peer) -> Option<Summary> {
        let runs = self.throughput.get(&(mode, peer))?;
        if runs.is_empty() {
            return None;
        }
        let rates: Vec<f64> = runs.values().map(|t| t.rate).collect();
        Some(Summary {
            rate: stats::median(&rates).unwrap_or(0.0),
            p50: median_duration(runs.values().map(|t| t.p50)),
            p99: median_duration(runs.values().map(|t| t.p99)),
            cpu_per_request: median_duration(runs.values().map(|t| t.cpu_per_request)),
            cpu_use: stats::median(&runs.values().map(|t| t.cpu_use).collect::<Vec<_>>())
                .unwrap_or(0.0),
            errors: runs.values().map(|t| t.errors).sum(),
        })
    }

    /// Median over the rounds that measured both of `metric(peer) / metric(base)`.
    pub fn ratio(
        &self,
        mode: Mode,
        peer: Peer,
        base: Peer,
        metric: fn(&Throughput) -> f64,
    ) -> Option<f64> {
        let ours = self.throughput.get(&(mode, peer))?;
        let theirs = self.throughput.get(&(mode, base))?;
        let ratios: Vec<f64> = ours
            .iter()
            .filter_map(|(round, t)| {
                let b = metric(theirs.get(round)?);
                (b > 0.0).then(|| metric(t) / b)
            })
            .collect();
        stats::median(&ratios)
    }

    /// Median memory of `peer`.
    pub fn memory_median(&self, peer: Peer) -> Option<Memory> {
        let runs = self.memory.get(&peer).filter(|r| !r.is_empty())?;
        let idle: Vec<f64> = runs.iter().map(|m| m.idle_kib as f64).collect();
        let loaded: Vec<f64> = runs.iter().map(|m| m.loaded_kib as f64).collect();
        Some(Memory {
            idle_kib: stats::median(&idle).unwrap_or(0.0) as u64,
            loaded_kib: stats::median(&loaded).unwrap_or(0.0) as u64,
        })
    }

    /// Median growth per open connection of `peer`, in bytes.
    pub fn per_connection_median(&self, peer: Peer) -> Option<f64> {
        let runs = self.memory.get(&peer).filter(|r| !r.is_empty())?;
        let values: Vec<f64> = runs.iter().map(Memory::per_connection_bytes).collect();
        stats::median(&values)
    }

    /// Median start-up of `peer`.
    pub fn startup_median(&self, peer: Peer) -> Option<Startup> {
        let runs = self.startup.get(&peer).filter(|r| !r.is_empty())?;
        let idle: Vec<f64> = runs.iter().map(|s| s.idle_kib as f64).collect();
        Some(Startup {
            first_answer: median_duration(runs.iter().map(|s| s.first_answer)),
            idle_kib: stats::median(&idle).unwrap_or(0.0) as u64,
        })
    }

    /// Median over the rounds of max/min connections (`.0`) and requests
    /// (`.1`) per shard.
    pub fn balance_ratios(&self, shards: usize, connections: usize) -> (Option<f64>, Option<f64>) {
        let Some(runs) = self.balance.get(&(shards, connections)) else {
            return (None, None);
        };
        let of = |pick: fn(&Balance) -> &Vec<u64>| {
            let ratios: Vec<f64> = runs
                .iter()
                .map(|b| stats::max_min_ratio(pick(b)).unwrap_or(f64::INFINITY))
                .collect();
            stats::median(&ratios)
        };
        (of(|b| &b.connections), of(|b| &b.requests))
    }

    /// The throughput table.
    pub fn throughput_table(&self) -> String {
        let mut out = String::from(
            "| mode | server | requests/s | p50 | p99 | server CPU per request | server CPU use | CPU/request vs io_uring floor | CPU/request vs tokio+hyper | requests/s vs tokio+hyper | errors |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for mode in Mode::ALL {
            for &peer in &self.peers {
                let Some(s) = self.summary(mode, peer) else {
                    let _ = writeln!(
                        out,
                        "| {} | {} | - | - | - | - | - | - | - | - | - |",
                        mode.name(),
                        peer.name()
                    );
                    continue;
                };
                let floor_ratio = self.ratio(mode, peer, Peer::FLOOR, |t| secs(t.cpu_per_request));
                let cpu_ratio =
                    self.ratio(mode, peer, Peer::TokioHyper, |t| secs(t.cpu_per_request));
                let rate_ratio = self.ratio(mode, peer, Peer::TokioHyper, |t| t.rate);
                let ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {:.0}% | {} | {} | {} | {} |",
                    mode.name(),
                    peer.name(),
                    stats::rate(s.rate),
                    stats::latency(s.p50),
                    stats::latency(s.p99),
                    cpu_us(s.cpu_per_request),
                    s.cpu_use * 100.0,
                    ratio(floor_ratio),
                    ratio(cpu_ratio),
                    ratio(rate_ratio),
                    s.errors
                );
            }
        }
        out
    }

    /// The memory and start-up table.
    pub fn memory_table(&self, cpus: usize) -> String {
        let mut out = format!(
            "| server | idle RSS, 1 shard/worker | RSS with 1,000 open connections | per connection | idle RSS, {cpus} shards/workers | exec -> first answer, {cpus} shards/workers |\n\
             |---|---:|---:|---:|---:|---:|\n"
        );
        for &peer in &self.peers {
            let memory = self.memory_median(peer);
            let startup = self.startup_median(peer);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                peer.name(),
                memory.map_or("-".into(), |m| stats::mib(m.idle_kib as f64)),
                memory.map_or("-".into(), |m| stats::mib(m.loaded_kib as f64)),
                self.per_connection_median(peer)
                    .map_or("-".into(), |b| format!("{:.1} KiB", b / 1024.0)),
                startup.map_or("-".into(), |s| stats::mib(s.idle_kib as f64)),
                startup.map_or("-".into(), |s| format!(
                    "{:.1} ms",
                    secs(s.first_answer) * 1e3
                )),
            );
        }
        out
    }

    /// The balance table (forkless only).
    pub fn balance_table(&self) -> String {
        let mut out = String::from(
            "| shards | connections | connections per shard (last round) | max/min | requests per shard (last round) | max/min | no x-shard |\n\
             |---:|---:|---|---:|---|---:|---:|\n",
        );
        for (&(shards, connections), runs) in &self.balance {
            let Some(last) = runs.last() else { continue };
            let (conn_ratio, request_ratio) = self.balance_ratios(shards, connections);
            let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" / ");
            let ratio = |r: Option<f64>| {
                r.filter(|r| r.is_finite())
                    .map_or("-".into(), |r| format!("{r:.2}"))
            };
            let _ = writeln!(
                out,
                "| {shards} | {connections} | {} | {} | {} | {} | {} |",
                list(&last.connections),
                ratio(conn_ratio),
                list(&last.requests),
                ratio(request_ratio),
                last.untagged
            );
        }
        out
    }

    /// Medians of the mixed load of `peer`.
    pub fn mixed_median(&self, peer: Peer) -> Option<Mixed> {
        let runs = self.mixed.get(&peer).filter(|r| !r.is_empty())?;
        let median = |f: &dyn Fn(&Mixed) -> f64| {
            stats::median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
        };
        Some(Mixed {
            light_rate: median(&|m| m.light_rate),
            heavy_rate: median(&|m| m.heavy_rate),
            light_p50: Duration::from_secs_f64(median(&|m| secs(m.light_p50))),
            light_p99: Duration::from_secs_f64(median(&|m| secs(m.light_p99))),
            errors: runs.iter().map(|m| m.errors).sum(),
        })
    }

    /// The mixed load's table.
    pub fn mixed_table(&self) -> String {
        let mut out = String::from(
            "| server | light p50 | light p99 | light req/s | heavy req/s | errors |\n\
             |---|---:|---:|---:|---:|---:|\n",
        );
        for peer in super::mixed::PEERS {
            let Some(m) = self.mixed_median(peer) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                peer.name(),
                stats::latency(m.light_p50),
                stats::latency(m.light_p99),
                stats::rate(m.light_rate),
                stats::rate(m.heavy_rate),
                m.errors
            );
        }
        out
    }

    /// The goals of issue #6 (and the mission's HTTP goals) against this run.
    pub fn goals(&self, cpus: usize) -> Vec<Goal> {
        let mut goals = Vec::new();
        let cpu = self.ratio(Mode::PerCore, Peer::Forkless, Peer::TokioHyper, |t| {
            secs(t.cpu_per_request)
        });
        goals.push(Goal {
            goal: "CPU per request <= 0.85x tokio+hyper (per core, not pipelined)",
            measured: cpu.map_or("-".into(), |r| format!("{r:.2}x")),
            met: cpu.map(|r| r <= 0.85),
        });
        let pipelined = self.ratio(Mode::Pipelined, Peer::Forkless, Peer::MayMinihttp, |t| {
            t.rate
        });
        let pipelined_cpu = self.ratio(Mode::Pipelined, Peer::Forkless, Peer::MayMinihttp, |t| {
            secs(t.cpu_per_request)
        });
        goals.push(Goal {
            goal: "pipelined requests/s >= may-minihttp (per core)",
            measured: format!(
                "{} may-minihttp's requests/s; CPU per request {}",
                pipelined.map_or("-".into(), |r| format!("{r:.2}x")),
                pipelined_cpu.map_or("-".into(), |r| format!("{r:.2}x"))
            ),
            met: pipelined.map(|r| r >= 1.0),
        });
        let idle_one = self
            .memory_median(Peer::Forkless)
            .map(|m| m.idle_kib as f64);
        let idle_all = self
            .startup_median(Peer::Forkless)
            .map(|s| s.idle_kib as f64 / cpus.max(1) as f64);
        goals.push(Goal {
            goal: "idle RSS <= 4 MiB per shard",
            measured: format!(
                "1 shard: {}; {cpus} shards: {} per shard",
                idle_one.map_or("-".into(), stats::mib),
                idle_all.map_or("-".into(), stats::mib)
            ),
            met: idle_one
                .zip(idle_all)
                .map(|(a, b)| a <= 4096.0 && b <= 4096.0),
        });
        let ours = self.per_connection_median(Peer::Forkless);
        let tokio = self.per_connection_median(Peer::TokioHyper);
        goals.push(Goal {
            goal: "RSS per open connection no worse than tokio+hyper",
            measured: format!(
                "{} vs {}",
                ours.map_or("-".into(), |b| format!("{:.1} KiB", b / 1024.0)),
                tokio.map_or("-".into(), |b| format!("{:.1} KiB", b / 1024.0))
            ),
            // Within 5% counts as level: RSS moves in pages.
            met: ours.zip(tokio).map(|(a, b)| a <= b * 1.05 + 64.0),
        });
        let start = self.startup_median(Peer::Forkless).map(|s| s.first_answer);
        goals.push(Goal {
            goal: "exec to first answer < 10 ms with 2 shards",
            measured: start.map_or("-".into(), |d| {
                format!("{:.1} ms ({cpus} shards)", secs(d) * 1e3)
            }),
            met: start.map(|d| d < Duration::from_millis(10)),
        });
        let worst = self
            .balance
            .keys()
            .map(|&(s, c)| ((s, c), self.balance_ratios(s, c).0.unwrap_or(f64::INFINITY)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        goals.push(Goal {
            goal: "balance max/min <= 1.1 (2 and 4 shards, 128 and 1,000 connections)",
            measured: worst.map_or("-".into(), |((s, c), r)| {
                format!("worst {r:.2} ({s} shards, {c} connections)")
            }),
            met: worst.map(|(_, r)| r <= 1.1),
        });
        let light_ours = self.mixed_median(Peer::Forkless).map(|m| m.light_p99);
        let light_tokio = self.mixed_median(Peer::TokioHyper).map(|m| m.light_p99);
        goals.push(Goal {
            goal: "mixed load (1 in 10 burns ~5 ms): light p99 <= tokio+hyper's",
            measured: format!(
                "{} vs {}",
                light_ours.map_or("-".into(), stats::latency),
                light_tokio.map_or("-".into(), stats::latency)
            ),
            met: light_ours.zip(light_tokio).map(|(a, b)| a <= b),
        });
        for (peer, goal, factor) in [
            (
                Peer::TokioHyper,
                "per-core requests/s ahead of tokio+hyper",
                1.0,
            ),
            (
                Peer::ActixWeb,
                "per-core requests/s ahead of actix-web",
                1.0,
            ),
            (
                Peer::NodeCluster,
                "per-core requests/s >= 5x Node cluster",
                5.0,
            ),
        ] {
            let r = self.ratio(Mode::PerCore, Peer::Forkless, peer, |t| t.rate);
            goals.push(Goal {
                goal,
                measured: r.map_or("-".into(), |r| format!("{r:.2}x {}", peer.name())),
                met: r.map(|r| r >= factor),
            });
        }
        goals
    }

    /// Medians over the counted runs of `peer` in `mode`, per request.
    pub fn syscalls_median(&self, mode: Mode, peer: Peer) -> Option<[f64; 8]> {
        let runs = self.syscalls.get(&(mode, peer)).filter(|r| !r.is_empty())?;
        let column = |f: &dyn Fn(&Syscalls) -> u64| {
            let values: Vec<f64> = runs.iter().map(|c| c.per_request(f(c))).collect();
            stats::median(&values).unwrap_or(0.0)
        };
        let requests: Vec<f64> = runs.iter().map(|c| c.requests as f64).collect();
        Some([
            column(&|c| c.total),
            column(&|c| c.reads),
            column(&|c| c.writes),
            column(&|c| c.waits),
            column(&|c| c.enters),
            column(&|c| c.submissions),
            column(&|c| c.futex + c.other()),
            stats::median(&requests).unwrap_or(0.0),
        ])
    }

    /// Syscalls and io_uring submissions per request, per server.
    pub fn syscalls_table(&self) -> String {
        let mut out = String::from(
            "| mode | server | syscalls/request | recv + read | send + write | epoll waits | io_uring_enter | io_uring submissions (SQEs) | other (futex, ...) | requests counted |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for mode in [Mode::PerCore, Mode::Pipelined] {
            for &peer in &self.peers {
                let Some(m) = self.syscalls_median(mode, peer) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
                    mode.name(),
                    peer.name(),
                    m[0],
                    m[1],
                    m[2],
                    m[3],
                    m[4],
                    m[5],
                    m[6],
                    m[7]
                );
            }
        }
        out
    }

    /// The goals of issue #16 (the floor) against this run.
    pub fn floor_goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        let ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
        let plain = self.ratio(Mode::PerCore, Peer::Forkless, Peer::FLOOR, |t| {
            secs(t.cpu_per_request)
        });
        goals.push(Goal {
            goal: "plain, per core: CPU per request <= 1.05x the io_uring floor",
            measured: ratio(plain),
            met: plain.map(|r| r <= 1.05),
        });
        let rate = self.ratio(Mode::Pipelined, Peer::Forkless, Peer::MayMinihttp, |t| {
            t.rate
        });
        goals.push(Goal {
            goal: "pipelined x16, per core: requests/s >= may-minihttp's",
            measured: format!("{} may-minihttp's", ratio(rate)),
            met: rate.map(|r| r >= 1.0),
        });
        let piped = self.ratio(Mode::Pipelined, Peer::Forkless, Peer::FLOOR, |t| {
            secs(t.cpu_per_request)
        });
        goals.push(Goal {
            goal: "pipelined x16, per core: CPU per request <= 1.2x the io_uring floor",
            measured: ratio(piped),
            met: piped.map(|r| r <= 1.2),
        });
        let framework_peers = [
            Peer::TokioHyper,
            Peer::ActixWeb,
            Peer::MayMinihttp,
            Peer::NodeCluster,
        ];
        let worst = framework_peers
            .iter()
            .filter_map(|&p| {
                self.ratio(Mode::Machine, Peer::Forkless, p, |t| t.rate)
                    .map(|r| (p, r))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        goals.push(Goal {
            goal: "whole machine: requests/s ahead of every peer (floors aside)",
            measured: worst.map_or("-".into(), |(p, r)| {
                format!("{r:.2}x {} (the closest)", p.name())
            }),
            met: worst.map(|(_, r)| r >= 1.0),
        });
        let ours = self.mixed_median(Peer::Forkless);
        let tokio = self.mixed_median(Peer::TokioHyper);
        let heavy = ours
            .zip(tokio)
            .filter(|(_, t)| t.heavy_rate > 0.0)
            .map(|(o, t)| o.heavy_rate / t.heavy_rate);
        goals.push(Goal {
            goal: "mixed load: heavy requests/s >= 0.95x tokio+hyper's",
            measured: ratio(heavy),
            met: heavy.map(|r| r >= 0.95),
        });
        let light = ours
            .zip(tokio)
            .filter(|(_, t)| !t.light_p99.is_zero())
            .map(|(o, t)| secs(o.light_p99) / secs(t.light_p99));
        goals.push(Goal {
            goal: "mixed load: light p99 <= 1/10 of tokio+hyper's",
            measured: light.map_or("-".into(), |r| format!("{r:.3}x tokio+hyper's")),
            met: light.map(|r| r <= 0.1),
        });
        goals
    }

    /// The goals as a markdown table.
    pub fn goals_table(&self, cpus: usize) -> String {
        goals_markdown(self.goals(cpus))
    }

    /// The goals of issue #16 as a markdown table.
    pub fn floor_goals_table(&self) -> String {
        goals_markdown(self.floor_goals())
    }

    /// Chart panels: requests/s then CPU per request, one panel per mode.
    pub fn panels(&self) -> Vec<Panel> {
        let mut panels = Vec::new();
        for mode in Mode::ALL {
            panels.push(Panel {
                title: format!("{}: requests/s", mode.name()),
                format: stats::rate,
                bars: self.bars(mode, |s| s.rate),
            });
        }
        for mode in Mode::ALL {
            panels.push(Panel {
                title: format!("{}: server CPU us per request", mode.name()),
                format: |v| format!("{v:.2}"),
                bars: self.bars(mode, |s| secs(s.cpu_per_request) * 1e6),
            });
        }
        panels
    }

    fn bars(&self, mode: Mode, metric: fn(&Summary) -> f64) -> Vec<(String, Option<f64>)> {
        self.peers
            .iter()
            .map(|&peer| {
                (
                    peer.name().to_owned(),
                    self.summary(mode, peer).map(|s| metric(&s)),
                )
            })
            .collect()
    }
}

fn goals_markdown(goals: Vec<Goal>) -> String {
    let mut out = String::from("| goal | measured | status |\n|---|---|---|\n");
    for goal in goals {
        let status = match goal.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(out, "| {} | {} | {status} |", goal.goal, goal.measured);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64, cpu_us: u64) -> Throughput {
        Throughput {
            rate,
            p50: Duration::from_micros(100),
            p99: Duration::from_micros(300),
            cpu_per_request: Duration::from_micros(cpu_us),
            cpu_use: 1.0,
            errors: 0,
        }
    }

    #[test]
    fn ratios_pair_rounds_before_the_median() {
        let mut results = Results {
            peers: vec![Peer::Forkless, Peer::TokioHyper],
            ..Results::default()
        };
        // Round 1 is slow for both: the within-round ratio stays 0.5.
        let ours = [(0, run(100.0, 5)), (1, run(10.0, 50)), (2, run(100.0, 5))];
        let theirs = [(0, run(50.0, 10)), (1, run(5.0, 100)), (2, run(50.0, 10))];
        results
            .throughput
            .insert((Mode::PerCore, Peer::Forkless), ours.into_iter().collect());
        results.throughput.insert(
            (Mode::PerCore, Peer::TokioHyper),
            theirs.into_iter().collect(),
        );
        let cpu = results.ratio(Mode::PerCore, Peer::Forkless, Peer::TokioHyper, |t| {
            secs(t.cpu_per_request)
        });
        assert!((cpu.expect("a ratio") - 0.5).abs() < 1e-9);
        let goals = results.goals(2);
        assert_eq!(goals[0].met, Some(true));
        assert_eq!(goals[1].met, None, "may-minihttp was not measured");
        let table = results.throughput_table();
        assert!(table.contains("| per core | forkless | 100 |"), "{table}");
        assert!(table.contains("0.50x"), "{table}");
    }

    #[test]
    fn balance_takes_the_median_round() {
        let mut results = Results::default();
        let round = |a, b| Balance {
            connections: vec![a, b],
            requests: vec![a * 10, b * 10],
            untagged: 0,
        };
        results
            .balance
            .insert((2, 128), vec![round(64, 64), round(70, 58), round(80, 48)]);
        let (connections, requests) = results.balance_ratios(2, 128);
        assert!((connections.expect("a ratio") - 70.0 / 58.0).abs() < 1e-9);
        assert!((requests.expect("a ratio") - 70.0 / 58.0).abs() < 1e-9);
        assert!(
            results
                .balance_table()
                .contains("| 2 | 128 | 80 / 48 | 1.21 |")
        );
    }
}
