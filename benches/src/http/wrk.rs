//! Running `wrk` (the non-pipelined load) and reading its report.
//!
//! `wrk --latency` prints the requests it completed, the rate, and the
//! latency distribution; [`parse`] takes those, plus its error counts.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One `wrk` run.
#[derive(Debug, Clone, Copy)]
pub struct Wrk {
    /// Server address.
    pub addr: SocketAddr,
    /// `-t`: load threads.
    pub threads: usize,
    /// `-c`: open connections.
    pub connections: usize,
    /// `-d`, whole seconds (wrk's resolution).
    pub seconds: u64,
    /// Pin wrk to this CPU (`taskset -c`).
    pub cpu: Option<usize>,
    /// Over TLS (`https://`).
    pub https: bool,
}

/// What `wrk` reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkReport {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second.
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Socket errors plus non-2xx/3xx responses.
    pub errors: u64,
}

/// Whether `wrk` can be run.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl Wrk {
    /// Runs wrk to completion (killed if it overruns by 20 s, or when
    /// `interrupted` returns true) and parses its report.
    pub fn run(&self, interrupted: &dyn Fn() -> bool) -> Result<WrkReport, String> {
        let mut command = match self.cpu {
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset.args(["-c", &cpu.to_string(), "wrk"]);
                taskset
            }
            None => Command::new("wrk"),
        };
        command
            .args(["-t", &self.threads.to_string()])
            .args(["-c", &self.connections.max(self.threads).to_string()])
            .args(["-d", &format!("{}s", self.seconds)])
            .args(["--timeout", "5s", "--latency"])
            .arg(format!(
                "{}://{}/",
                if self.https { "https" } else { "http" },
                self.addr
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run wrk: {e} (install it: apt-get install -y wrk)"))?;
        let deadline = Instant::now() + Duration::from_secs(self.seconds + 20);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline && !interrupted() => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("wrk overran its deadline or was interrupted".into());
                }
                Err(e) => return Err(format!("waiting for wrk: {e}")),
            }
        }
        let output = child
            .wait_with_output()
            .map_err(|e| format!("reading wrk's output: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "wrk failed ({}): {}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        parse(&stdout)
    }
}

/// Parses the report of `wrk --latency`.
pub fn parse(output: &str) -> Result<WrkReport, String> {
    let mut requests = None;
    let mut rate = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = 0;
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => p50 = parse_duration(value),
            ["99%", value] => p99 = parse_duration(value),
            [count, "requests", "in", ..] => requests = count.parse().ok(),
            ["Requests/sec:", value] => rate = value.parse().ok(),
            ["Non-2xx", "or", "3xx", "responses:", count] => errors += count.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    match (requests, rate, p50, p99) {
        (Some(requests), Some(rate), Some(p50), Some(p99)) => Ok(WrkReport {
            requests,
            rate,
            p50,
            p99,
            errors,
        }),
        _ => Err(format!("cannot read wrk's report:\n{output}")),
    }
}

/// A wrk duration: `812.42us`, `1.98ms`, `1.20s`, `2.00m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 1s test @ http://127.0.0.1:40001/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.53us  101.20us   4.01ms   90.00%
    Req/Sec   104.11k     2.01k  108.00k    70.00%
  Latency Distribution
     50%  598.00us
     75%  640.00us
     90%  700.00us
     99%    1.02ms
  103622 requests in 1.00s, 11.56MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec: 103580.21
Transfer/sec:     11.55MB
";

    #[test]
    fn reads_a_wrk_report() {
        let report = parse(REPORT).expect("a report");
        assert_eq!(report.requests, 103_622);
        assert!((report.rate - 103_580.21).abs() < 1e-6);
        assert!(close(report.p50, Duration::from_micros(598)));
        assert!(close(report.p99, Duration::from_micros(1020)));
        assert_eq!(report.errors, 7);
    }

    #[test]
    fn refuses_a_truncated_report() {
        assert!(parse("Running 1s test @ http://127.0.0.1:1/\n").is_err());
    }

    /// Within a nanosecond (the text is decimal, the sum binary).
    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) <= Duration::from_nanos(1)
    }

    #[test]
    fn reads_wrk_durations() {
        let read = |text| parse_duration(text).expect("a duration");
        assert!(close(read("812.42us"), Duration::from_nanos(812_420)));
        assert!(close(read("2ms"), Duration::from_millis(2)));
        assert!(close(read("1.5s"), Duration::from_millis(1500)));
        assert!(close(read("1.00m"), Duration::from_secs(60)));
        assert_eq!(parse_duration("12"), None);
        assert_eq!(parse_duration("3parsecs"), None);
    }
}
