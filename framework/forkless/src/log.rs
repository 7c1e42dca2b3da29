//! Log lines: `tracing` to stdout, each tagged with the shard that wrote it
//! (every shard thread runs inside a `shard{id=N}` span).
//!
//! In `--log-format json` every line the process prints is one JSON
//! object, including the lines scripts read: `listening on` and `admin on`
//! (see [`announce`]) and the last error before a failed exit ([`fatal`]).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use crate::LogFormat;

/// Whether the process logs JSON (set once, by [`init`]).
static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the subscriber; a no-op when the app installed its own.
/// `RUST_LOG` filters as usual (default `info`).
pub(crate) fn init(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    // glommio warns, in several lines per shard, when it cannot register its
    // buffers under the memlock limit; the coordinator says it once instead.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,glommio_ng::sys::uring=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

/// Whether log lines are JSON.
pub(crate) fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Prints the line scripts look for, `{what} {url}` (`listening on
/// http://127.0.0.1:8080`), on stdout at once; in JSON mode as
/// `{"message":"listening on","url":"http://..."}`: scripts read `url`.
pub(crate) fn announce(out: &mut impl Write, what: &str, url: &str) {
    let _ = if is_json() {
        let line = serde_json::json!({ "level": "INFO", "message": what, "url": url });
        writeln!(out, "{line}")
    } else {
        writeln!(out, "{what} {url}")
    };
}

/// Prints the error a binary exits with on stderr: `{name}: {error}`, or
/// a JSON object with `level`, `message` and `program` in JSON mode.
pub(crate) fn fatal(name: &str, error: &dyn std::fmt::Display) {
    if is_json() {
        let line = serde_json::json!({
            "level": "ERROR",
            "program": name,
            "message": error.to_string(),
        });
        eprintln!("{line}");
    } else {
        eprintln!("{name}: {error}");
    }
}
