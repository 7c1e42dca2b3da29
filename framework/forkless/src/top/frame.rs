//! One frame of the monitor as lines of plain text: a process line, the
//! per-shard table and its totals row. Pure, so `--once`, `--plain` and the
//! live screen print the same thing and tests need no terminal.
//!
//! [`Seen`] is what the monitor knows: the last `/status` that arrived and
//! what went wrong with the polls since. When the process cannot be reached
//! (connection refused, no answer) the frame says so in words ("process
//! gone: connection refused at 07:12:03 UTC") and the table keeps only its
//! shard and cpu columns: no state or figure of a process that is not
//! there is shown as if it were current. The next answer brings it back.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::SystemTime;

use super::fetch::{FetchError, Row, Status};

/// The table's column titles, in order.
const HEADER: [&str; 11] = [
    "shard", "cpu", "state", "inc", "restarts", "req/s", "p99", "conns", "bus", "stalls", "panics",
];

/// Column widths (the state column is left-aligned, the others right).
const WIDTHS: [usize; 11] = [5, 4, 10, 4, 8, 9, 9, 6, 5, 6, 6];

/// What went wrong with the polls since the last answer.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Problem {
    /// Nothing answers: the process is gone (or stuck); since when.
    Gone { why: String, since: SystemTime },
    /// Something answered, but not with a `/status`.
    BadAnswer(String),
}

/// What the monitor knows.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Seen {
    /// The last `/status` that arrived.
    pub(super) status: Option<Status>,
    pub(super) problem: Option<Problem>,
}

impl Seen {
    /// Takes in the outcome of one poll made at `now`.
    pub(super) fn polled(&mut self, outcome: Result<Status, FetchError>, now: SystemTime) {
        match outcome {
            Ok(status) => {
                self.status = Some(status);
                self.problem = None;
            }
            Err(error) => {
                self.problem = match (error.unreachable_because(), self.problem.take()) {
                    // Still gone: since the first failed poll.
                    (Some(why), Some(Problem::Gone { since, .. })) => {
                        Some(Problem::Gone { why, since })
                    }
                    (Some(why), _) => Some(Problem::Gone { why, since: now }),
                    (None, _) => Some(Problem::BadAnswer(error.to_string())),
                }
            }
        }
    }

    fn gone(&self) -> bool {
        matches!(self.problem, Some(Problem::Gone { .. }))
    }
}

/// The lines of one frame of what was `seen` at `admin`.
pub(super) fn render(name: &str, admin: SocketAddr, seen: &Seen) -> Vec<String> {
    let mut lines = Vec::new();
    let gone = seen.gone();
    match &seen.status {
        Some(status) => {
            let readiness = if gone {
                "gone"
            } else if status.stopping {
                "stopping"
            } else if status.ready {
                "ready"
            } else {
                "not ready"
            };
            lines.push(format!(
                "{name} pid {} | {} shards | {readiness} | up {} | admin {admin}",
                status.pid,
                status.table.len(),
                uptime(status.uptime_seconds),
            ));
        }
        None => lines.push(format!("{name} | admin {admin}")),
    }
    match &seen.problem {
        Some(Problem::Gone { why, since }) => {
            let what = if why == "timed out" {
                "process not answering"
            } else {
                "process gone"
            };
            lines.push(format!(
                "! {what}: {why} at {} UTC; retrying every second",
                clock(*since)
            ));
        }
        Some(Problem::BadAnswer(why)) => lines.push(format!("! {why}")),
        None => {}
    }
    if let Some(status) = &seen.status {
        lines.push(String::new());
        lines.push(line(HEADER.map(str::to_owned)));
        lines.extend(status.table.iter().map(|r| row(r, gone)));
        lines.push(totals(status, gone));
    }
    lines
}

fn p99(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}ms"))
}

/// One shard's row; `cleared` keeps only its shard and cpu.
fn row(row: &Row, cleared: bool) -> String {
    let mut cells = [
        row.shard.to_string(),
        row.cpu
            .map_or_else(|| "-".to_owned(), |cpu| cpu.to_string()),
        row.state.clone(),
        row.incarnation.to_string(),
        row.restarts.to_string(),
        format!("{:.1}", row.requests_per_second),
        p99(row.p99_ms),
        row.connections_open.to_string(),
        row.bus_queue_depth.to_string(),
        row.stalls.to_string(),
        row.handler_panics.to_string(),
    ];
    if cleared {
        for cell in &mut cells[2..] {
            *cell = "-".to_owned();
        }
    }
    line(cells)
}

fn totals(status: &Status, cleared: bool) -> String {
    let rows = &status.table;
    let sum = |field: fn(&Row) -> u64| rows.iter().map(field).sum::<u64>().to_string();
    let mut cells = [
        "total".to_owned(),
        String::new(),
        String::new(),
        String::new(),
        sum(|r| r.restarts),
        format!(
            "{:.1}",
            rows.iter().map(|r| r.requests_per_second).sum::<f64>()
        ),
        p99(status.p99_ms),
        sum(|r| r.connections_open),
        sum(|r| r.bus_queue_depth),
        sum(|r| r.stalls),
        sum(|r| r.handler_panics),
    ];
    if cleared {
        for cell in &mut cells[4..] {
            *cell = "-".to_owned();
        }
    }
    line(cells)
}

fn line(cells: [String; 11]) -> String {
    let mut out = String::new();
    for (i, (cell, width)) in cells.iter().zip(WIDTHS).enumerate() {
        if i > 0 {
            out.push_str("  ");
        }
        // The state column reads better left-aligned.
        let _ = if i == 2 {
            write!(out, "{cell:<width$}")
        } else {
            write!(out, "{cell:>width$}")
        };
    }
    out.trim_end().to_owned()
}

/// `at` as `HH:MM:SS` in UTC.
fn clock(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}")
}

/// `73.4` seconds as `1m13s`; days show as `2d03h`.
fn uptime(seconds: f64) -> String {
    let total = seconds.max(0.0) as u64;
    let (d, h, m, s) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn status() -> Status {
        let row = |shard, rate, conns| Row {
            shard,
            cpu: Some(shard),
            state: "listening".into(),
            incarnation: 1,
            requests_per_second: rate,
            p99_ms: Some(0.25),
            connections_open: conns,
            ..Row::default()
        };
        Status {
            pid: 42,
            ready: true,
            stopping: false,
            uptime_seconds: 73.4,
            p99_ms: Some(1.5),
            table: vec![row(0, 1.5, 2), row(1, 2.0, 3)],
        }
    }

    fn seen() -> Seen {
        Seen {
            status: Some(status()),
            problem: None,
        }
    }

    fn admin() -> SocketAddr {
        "127.0.0.1:9090".parse().expect("addr")
    }

    fn refused() -> FetchError {
        let error = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        FetchError::Unreachable(admin(), error)
    }

    #[test]
    fn a_frame_has_the_process_line_a_row_per_shard_and_totals() {
        let lines = render("hello", admin(), &seen());
        assert_eq!(
            lines[0],
            "hello pid 42 | 2 shards | ready | up 1m13s | admin 127.0.0.1:9090"
        );
        assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), HEADER);
        let cells: Vec<Vec<&str>> = lines[3..]
            .iter()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            cells[0],
            [
                "0",
                "0",
                "listening",
                "1",
                "0",
                "1.5",
                "0.25ms",
                "2",
                "0",
                "0",
                "0"
            ]
        );
        assert_eq!(cells[1][0], "1");
        assert_eq!(
            cells[2],
            ["total", "0", "3.5", "1.50ms", "5", "0", "0", "0"]
        );
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn a_bad_answer_shows_above_the_last_table() {
        let mut seen = seen();
        let odd = FetchError::BadAnswer(admin(), "it answered `HTTP/1.1 404`".into());
        seen.polled(Err(odd), SystemTime::now());
        let lines = render("hello", admin(), &seen);
        assert!(
            lines[1].starts_with("! 127.0.0.1:9090 did not answer"),
            "{lines:?}"
        );
        assert!(lines[0].contains("| ready |"), "still the last figures");
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn a_gone_process_is_said_in_words_with_its_figures_cleared_until_it_is_back() {
        let mut seen = seen();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 + 7 * 3600 + 12 * 60 + 3);
        seen.polled(Err(refused()), at);
        seen.polled(Err(refused()), at + Duration::from_secs(5));
        let lines = render("hello", admin(), &seen);
        assert!(lines[0].contains("| gone |"), "{lines:?}");
        assert_eq!(
            lines[1],
            "! process gone: connection refused at 07:12:03 UTC; retrying every second"
        );
        let text = lines.join(
            "
",
        );
        assert!(
            !text.contains("ready") && !text.contains("listening"),
            "{text}"
        );
        let first_row: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(first_row[..3], ["0", "0", "-"]);

        seen.polled(Ok(status()), at + Duration::from_secs(6));
        let lines = render("hello", admin(), &seen);
        assert!(lines[0].contains("| ready |"), "{lines:?}");
        assert_eq!(lines.len(), 6, "the problem line is gone");
    }

    #[test]
    fn never_reached_is_said_without_a_table() {
        let mut seen = Seen::default();
        seen.polled(Err(refused()), SystemTime::UNIX_EPOCH);
        let lines = render("hello", admin(), &seen);
        assert_eq!(
            lines,
            [
                "hello | admin 127.0.0.1:9090",
                "! process gone: connection refused at 00:00:00 UTC; retrying every second"
            ]
        );
    }

    #[test]
    fn uptime_reads_at_a_glance() {
        assert_eq!(uptime(9.9), "9s");
        assert_eq!(uptime(73.4), "1m13s");
        assert_eq!(uptime(3_725.0), "1h02m");
        assert_eq!(uptime(183_600.0), "2d03h");
    }
}
