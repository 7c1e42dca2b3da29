//! One `GET /status` over a plain `TcpStream`, and the document it answers.
//!
//! The admin endpoint answers one request per connection with
//! `Connection: close` and a `Content-Length`, so reading to the end of the
//! stream is the whole answer. Every step has a deadline.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Longest the connect, the write and each read of one poll may take.
pub(super) const TIMEOUT: Duration = Duration::from_secs(2);

/// Largest answer read (a `/status` of 1024 shards is well under it).
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// The process-wide part of `/status` and its per-shard table.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Status {
    pub(super) pid: u64,
    pub(super) ready: bool,
    pub(super) stopping: bool,
    pub(super) uptime_seconds: f64,
    /// The whole process's p99 latency over the last second, in ms.
    pub(super) p99_ms: Option<f64>,
    pub(super) table: Vec<Row>,
}

/// One shard's row of `/status`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Row {
    pub(super) shard: u64,
    pub(super) cpu: Option<u64>,
    pub(super) state: String,
    pub(super) incarnation: u64,
    pub(super) restarts: u64,
    pub(super) requests_per_second: f64,
    /// p99 latency over the last second, in ms (`None`: no request).
    pub(super) p99_ms: Option<f64>,
    pub(super) connections_open: u64,
    pub(super) bus_queue_depth: u64,
    pub(super) stalls: u64,
    pub(super) handler_panics: u64,
}

/// Why a poll failed; its Display is one line naming the address.
#[derive(Debug)]
pub(super) enum FetchError {
    /// No connection, or it broke or timed out.
    Unreachable(SocketAddr, std::io::Error),
    /// Something answered, but not a `/status` document.
    BadAnswer(SocketAddr, String),
}

impl FetchError {
    /// Why the process cannot be reached, in a few words ("connection
    /// refused"), or `None` when something answered.
    pub(super) fn unreachable_because(&self) -> Option<String> {
        match self {
            Self::Unreachable(_, error) => Some(match error.kind() {
                std::io::ErrorKind::WouldBlock => "timed out".to_owned(),
                kind => kind.to_string(),
            }),
            Self::BadAnswer(..) => None,
        }
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(addr, error) => write!(
                f,
                "cannot reach the admin endpoint at {addr}: {error}; \
                 is the process running with --admin {addr}?"
            ),
            Self::BadAnswer(addr, why) => write!(
                f,
                "{addr} did not answer GET /status as a forkless admin endpoint: {why}"
            ),
        }
    }
}

/// Asks `addr` for `GET /status`.
pub(super) fn status(addr: SocketAddr) -> Result<Status, FetchError> {
    let answer = get(addr, "/status").map_err(|e| FetchError::Unreachable(addr, e))?;
    parse_answer(&answer).map_err(|why| FetchError::BadAnswer(addr, why))
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer)?;
    Ok(answer)
}

/// The `Status` in a whole HTTP answer (status line, headers, JSON body).
fn parse_answer(answer: &[u8]) -> Result<Status, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no complete head")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("it answered `{status_line}`"));
    }
    let body: Value = serde_json::from_slice(&answer[split + 4..])
        .map_err(|e| format!("the body is not JSON: {e}"))?;
    parse_status(&body).ok_or_else(|| "the JSON has no `table` of shards".to_owned())
}

fn parse_status(body: &Value) -> Option<Status> {
    let table = body.get("table")?.as_array()?;
    Some(Status {
        pid: uint(body, "pid"),
        ready: body.get("ready").and_then(Value::as_bool).unwrap_or(false),
        stopping: body
            .get("stopping")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        uptime_seconds: float(body, "uptime_seconds"),
        p99_ms: body.get("p99_ms").and_then(Value::as_f64),
        table: table
            .iter()
            .map(|row| Row {
                shard: uint(row, "shard"),
                cpu: row.get("cpu").and_then(Value::as_u64),
                state: row
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned(),
                incarnation: uint(row, "incarnation"),
                restarts: uint(row, "restarts"),
                requests_per_second: float(row, "requests_per_second"),
                p99_ms: row.get("p99_ms").and_then(Value::as_f64),
                connections_open: uint(row, "connections_open"),
                bus_queue_depth: uint(row, "bus_queue_depth"),
                stalls: uint(row, "stalls"),
                handler_panics: uint(row, "handler_panics"),
            })
            .collect(),
    })
}

fn uint(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn float(value: &Value, key: &str) -> f64 {
    value.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_answer_parses_into_rows() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n\
            {\"pid\": 7, \"ready\": true, \"stopping\": false, \"uptime_seconds\": 3.5,\
             \"table\": [{\"shard\": 0, \"cpu\": null, \"state\": \"listening\",\
             \"incarnation\": 2, \"restarts\": 1, \"requests_per_second\": 12.5,\
             \"p99_ms\": 0.25,\
             \"connections_open\": 3, \"bus_queue_depth\": 4, \"stalls\": 5,\
             \"handler_panics\": 6}]}";
        let status = parse_answer(answer).expect("a status");
        assert_eq!(status.pid, 7);
        assert!(status.ready);
        assert_eq!(status.table.len(), 1);
        let row = &status.table[0];
        assert_eq!(row.cpu, None);
        assert_eq!(row.state, "listening");
        assert_eq!(row.incarnation, 2);
        assert_eq!(row.requests_per_second, 12.5);
        assert_eq!(row.p99_ms, Some(0.25));
        assert_eq!(status.p99_ms, None, "an older process has no p99");
        assert_eq!(row.handler_panics, 6);
    }

    #[test]
    fn other_answers_are_refused_with_why() {
        let not_found = parse_answer(b"HTTP/1.1 404 Not Found\r\n\r\nnot found");
        assert_eq!(
            not_found,
            Err("it answered `HTTP/1.1 404 Not Found`".into())
        );
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n\r\n{}").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn a_closed_port_is_unreachable_and_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let error = status(addr).expect_err("nothing listens");
        assert!(matches!(error, FetchError::Unreachable(..)));
        assert_eq!(
            error.unreachable_because().as_deref(),
            Some("connection refused")
        );
        assert!(error.to_string().contains(&addr.to_string()));
    }
}
