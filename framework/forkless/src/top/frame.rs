//! One frame of the monitor as lines of plain text: a process line, the
//! per-shard table and its totals row. Pure, so `--once` and the live screen
//! print the same thing and tests need no terminal.

use std::fmt::Write;
use std::net::SocketAddr;

use super::fetch::{Row, Status};

/// The table's column titles, in order.
const HEADER: [&str; 10] = [
    "shard", "cpu", "state", "inc", "restarts", "req/s", "conns", "bus", "stalls", "panics",
];

/// Column widths (the state column is left-aligned, the others right).
const WIDTHS: [usize; 10] = [5, 4, 10, 4, 8, 9, 6, 5, 6, 6];

/// The lines of one frame of `status`, read from `admin`; `problem` (the
/// last poll failed) is shown above the table, which is then the last one
/// that arrived.
pub(super) fn render(
    name: &str,
    admin: SocketAddr,
    status: &Status,
    problem: Option<&str>,
) -> Vec<String> {
    let readiness = if status.stopping {
        "stopping"
    } else if status.ready {
        "ready"
    } else {
        "not ready"
    };
    let mut lines = vec![format!(
        "{name} pid {} | {} shards | {readiness} | up {} | admin {admin}",
        status.pid,
        status.table.len(),
        uptime(status.uptime_seconds),
    )];
    if let Some(problem) = problem {
        lines.push(format!("! {problem}"));
    }
    lines.push(String::new());
    lines.push(line(HEADER.map(str::to_owned)));
    lines.extend(status.table.iter().map(row));
    lines.push(totals(&status.table));
    lines
}

fn row(row: &Row) -> String {
    line([
        row.shard.to_string(),
        row.cpu
            .map_or_else(|| "-".to_owned(), |cpu| cpu.to_string()),
        row.state.clone(),
        row.incarnation.to_string(),
        row.restarts.to_string(),
        format!("{:.1}", row.requests_per_second),
        row.connections_open.to_string(),
        row.bus_queue_depth.to_string(),
        row.stalls.to_string(),
        row.handler_panics.to_string(),
    ])
}

fn totals(rows: &[Row]) -> String {
    let sum = |field: fn(&Row) -> u64| rows.iter().map(field).sum::<u64>().to_string();
    line([
        "total".to_owned(),
        String::new(),
        String::new(),
        String::new(),
        sum(|r| r.restarts),
        format!(
            "{:.1}",
            rows.iter().map(|r| r.requests_per_second).sum::<f64>()
        ),
        sum(|r| r.connections_open),
        sum(|r| r.bus_queue_depth),
        sum(|r| r.stalls),
        sum(|r| r.handler_panics),
    ])
}

fn line(cells: [String; 10]) -> String {
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
    use super::*;

    fn status() -> Status {
        let row = |shard, rate, conns| Row {
            shard,
            cpu: Some(shard),
            state: "listening".into(),
            incarnation: 1,
            requests_per_second: rate,
            connections_open: conns,
            ..Row::default()
        };
        Status {
            pid: 42,
            ready: true,
            stopping: false,
            uptime_seconds: 73.4,
            table: vec![row(0, 1.5, 2), row(1, 2.0, 3)],
        }
    }

    #[test]
    fn a_frame_has_the_process_line_a_row_per_shard_and_totals() {
        let admin = "127.0.0.1:9090".parse().expect("addr");
        let lines = render("hello", admin, &status(), None);
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
            ["0", "0", "listening", "1", "0", "1.5", "2", "0", "0", "0"]
        );
        assert_eq!(cells[1][0], "1");
        assert_eq!(cells[2], ["total", "0", "3.5", "5", "0", "0", "0"]);
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn a_failed_poll_shows_above_the_last_table() {
        let admin = "127.0.0.1:9090".parse().expect("addr");
        let lines = render("hello", admin, &status(), Some("cannot reach"));
        assert_eq!(lines[1], "! cannot reach");
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn uptime_reads_at_a_glance() {
        assert_eq!(uptime(9.9), "9s");
        assert_eq!(uptime(73.4), "1m13s");
        assert_eq!(uptime(3_725.0), "1h02m");
        assert_eq!(uptime(183_600.0), "2d03h");
    }
}
