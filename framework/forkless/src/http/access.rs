//! The access log (`--access-log text|json`): one line per request on
//! stdout, with the shard, method, path (and query), status, body bytes,
//! duration and peer address.
//!
//! Contract:
//! - off (the default), a request costs one branch where it starts and one
//!   where it ends: no clock read, no copy of the path, no formatting;
//! - on, each shard formats into a buffer of its own and writes it with
//!   one `write(2)` on file descriptor 1 once it holds [`FLUSH_AT`] bytes,
//!   and at least every [`FLUSH_EVERY`] (`server.rs` ticks it) and when the
//!   shard ends: no lock is shared between shards (not even std's stdout
//!   lock), and a write of whole lines within `PIPE_BUF` (4 KiB) reaches a
//!   pipe whole, never interleaved with another shard's;
//! - `duration` runs from the request head being parsed to the response
//!   body written (fast path) or handed to hyper (hyper path); `bytes` is
//!   the body written (fast path) or its declared length (hyper path, `0`
//!   when streamed).
//!
//! Text: `2026-12-03T07:30:00.123Z access shard=1 peer=127.0.0.1:40000
//! method=GET path=/x status=200 bytes=2 duration_us=57`. JSON: the same
//! fields, `{"timestamp":..,"message":"access","shard":1,"peer":..,
//! "method":..,"path":..,"status":200,"bytes":2,"duration_us":57}`.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Method;

use crate::AccessLog;

/// A buffer this full is written out: whole lines, within `PIPE_BUF`.
const FLUSH_AT: usize = 3 * 1024;

/// The longest a line waits in the buffer.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A shard's access log, when it is on.
pub(crate) struct AccessLogger {
    json: bool,
    shard: usize,
    line: RefCell<Vec<u8>>,
}

impl Drop for AccessLogger {
    fn drop(&mut self) {
        self.flush();
    }
}

/// What the log needs of a request, taken before the handler consumes it.
pub(crate) struct Seen {
    method: Method,
    path: String,
    peer: Option<SocketAddr>,
    started: Instant,
}

impl AccessLogger {
    /// The logger of shard `shard`; `None` when the log is off.
    pub(crate) fn new(format: AccessLog, shard: usize) -> Option<Self> {
        let json = match format {
            AccessLog::Off => return None,
            AccessLog::Text => false,
            AccessLog::Json => true,
        };
        Some(Self {
            json,
            shard,
            line: RefCell::new(Vec::with_capacity(FLUSH_AT + 1024)),
        })
    }

    /// Notes what the line will say of `request`.
    pub(crate) fn seen<B>(&self, request: &http::Request<B>, peer: Option<SocketAddr>) -> Seen {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        Seen {
            method: request.method().clone(),
            path,
            peer,
            started: Instant::now(),
        }
    }

    /// Writes the line of a finished request.
    pub(crate) fn log(&self, seen: Seen, status: u16, bytes: u64) {
        let duration_us = seen.started.elapsed().as_micros();
        let Ok(mut line) = self.line.try_borrow_mut() else {
            return;
        };
        if line.len() >= FLUSH_AT {
            write_all(&line);
            line.clear();
        }
        let timestamp = rfc3339(SystemTime::now());
        let peer = seen.peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let _ = if self.json {
            // Written field by field: a `serde_json::Value` would allocate a
            // map per line. Only the path needs JSON escaping.
            let path = serde_json::Value::from(seen.path);
            writeln!(
                line,
                "{{\"timestamp\":\"{timestamp}\",\"message\":\"access\",\"shard\":{},\
                 \"peer\":\"{peer}\",\"method\":\"{}\",\"path\":{path},\"status\":{status},\
                 \"bytes\":{bytes},\"duration_us\":{duration_us}}}",
                self.shard,
                seen.method.as_str().escape_default(),
            )
        } else {
            writeln!(
                line,
                "{timestamp} access shard={} peer={peer} method={} path={} status={status} \
                 bytes={bytes} duration_us={duration_us}",
                self.shard,
                seen.method,
                seen.path.escape_debug(),
            )
        };
    }

    /// Writes out what the buffer holds.
    pub(crate) fn flush(&self) {
        if let Ok(mut line) = self.line.try_borrow_mut()
            && !line.is_empty()
        {
            write_all(&line);
            line.clear();
        }
    }
}

/// One `write(2)` on stdout (more only if the kernel took part of it).
fn write_all(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: fd 1 with a pointer and length of a live slice.
        let wrote = unsafe { libc::write(1, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(wrote) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n.min(bytes.len())..],
            Err(_) if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
            }
            Err(_) => return,
        }
    }
}

/// `2026-12-03T07:30:00.123Z`.
fn rfc3339(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The date of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_millis(951_782_400_123 + 86_400_000);
        assert_eq!(rfc3339(leap), "2000-03-01T00:00:00.123Z");
        let late = UNIX_EPOCH + Duration::from_secs(1_796_281_199);
        assert_eq!(rfc3339(late), "2026-12-03T06:59:59.000Z");
    }

    #[test]
    fn off_is_no_logger() {
        assert!(AccessLogger::new(AccessLog::Off, 0).is_none());
        assert!(AccessLogger::new(AccessLog::Text, 0).is_some());
    }
}
