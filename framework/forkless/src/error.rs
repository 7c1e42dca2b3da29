//! The error type of the runtime: what failed and what to do about it.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::ShardId;

/// Why the runtime could not start or stopped with a failure.
///
/// Its `Display` is one line meant for an operator: what happened and,
/// where there is one, the fix.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

#[derive(Debug)]
pub(crate) enum ErrorKind {
    /// The machine cannot run shards (io_uring, memlock): already a full sentence.
    Preflight(String),
    /// A listener could not be bound.
    Bind { addr: SocketAddr, source: io::Error },
    /// A shard's function returned an error or its thread died.
    Shard { shard: ShardId, message: String },
    /// Invalid configuration.
    Config(String),
    /// The TLS certificate or key cannot be used: already a full sentence
    /// naming the file.
    Tls(String),
    /// A second signal or the shutdown deadline ended the process early.
    ShutdownForced,
    /// Any other I/O failure, with what was being done.
    Io {
        context: &'static str,
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self { kind }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config(message.into()))
    }

    pub(crate) fn io(context: &'static str, source: io::Error) -> Self {
        Self::new(ErrorKind::Io { context, source })
    }

    /// Whether the process was stopped by force rather than gracefully.
    pub fn is_forced_shutdown(&self) -> bool {
        matches!(self.kind, ErrorKind::ShutdownForced)
    }

    pub(crate) fn shard(shard: ShardId, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Shard {
            shard,
            message: message.into(),
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Preflight(message) => f.write_str(message),
            ErrorKind::Bind { addr, source } if source.kind() == io::ErrorKind::AddrInUse => {
                write!(
                    f,
                    "cannot listen on {addr}: the address is in use by another process; stop it, choose another --listen, or pass --share-port to share it on purpose"
                )
            }
            ErrorKind::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ErrorKind::Shard { shard, message } => write!(f, "shard {shard} failed: {message}"),
            ErrorKind::Config(message) => write!(f, "invalid configuration: {message}"),
            ErrorKind::Tls(message) => f.write_str(message),
            ErrorKind::ShutdownForced => f.write_str(
                "shutdown forced before in-flight work finished (second signal or --shutdown-timeout)",
            ),
            ErrorKind::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Bind { source, .. } | ErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
