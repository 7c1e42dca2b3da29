//! The HTTP limits every connection is held to, and their defaults (where
//! each number comes from). `http/limits.rs` applies them.

use std::time::Duration;

/// The HTTP limits of every connection; part of [`Config`](crate::Config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) keep_alive_timeout: Duration,
    pub(crate) max_header_size: usize,
    pub(crate) max_body_size: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) body_min_rate: u64,
    pub(crate) send_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// Default header read timeout: hyper's.
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default keep-alive timeout: nginx's `keepalive_timeout`, longer than the
/// 60 s idle timeout of common load balancers, so they close first.
const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default maximum request head: nginx's `large_client_header_buffers` (4 x 8k).
const DEFAULT_MAX_HEADER_SIZE: usize = 32 * 1024;
/// Default body limit of `read_body_default`: nginx's `client_max_body_size`.
const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;
/// Default body read timeout: nginx's `client_body_timeout`.
const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default minimum body rate in bytes/s: Kestrel's `MinRequestBodyDataRate`.
const DEFAULT_BODY_MIN_RATE: u64 = 240;
/// Default send timeout: nginx's `send_timeout`.
const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default open connections per shard.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            body_min_rate: DEFAULT_BODY_MIN_RATE,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}
