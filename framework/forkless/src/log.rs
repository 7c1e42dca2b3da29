//! Log lines: `tracing` to stdout, each tagged with the shard that wrote it
//! (every shard thread runs inside a `shard{id=N}` span).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::LogFormat;

/// Installs the subscriber; a no-op when the app installed its own.
/// `RUST_LOG` filters as usual (default `info`).
pub(crate) fn init(format: LogFormat) {
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
