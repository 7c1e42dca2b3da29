//! Runtime configuration: what the command line sets, or code sets directly.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// How many shards to run.
///
/// ```
/// use forkless::Shards;
///
/// assert_eq!("max".parse::<Shards>(), Ok(Shards::Max));
/// assert_eq!("4".parse::<Shards>(), Ok(Shards::Count(4)));
/// assert!("0".parse::<Shards>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Shards {
    /// One per CPU this process may use: its affinity mask, capped by a
    /// cgroup CPU quota (a container's `--cpus` / Kubernetes `limits.cpu`).
    #[default]
    Max,
    /// Exactly this many; more than the CPUs available runs them unpinned.
    Count(usize),
}

impl FromStr for Shards {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Shards::Max);
        }
        match s.parse::<usize>() {
            Ok(0) => Err("the shard count must be at least 1".into()),
            Ok(n) => Ok(Shards::Count(n)),
            Err(_) => Err(format!("expected `max` or a number of shards, got `{s}`")),
        }
    }
}

impl fmt::Display for Shards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shards::Max => f.write_str("max"),
            Shards::Count(n) => write!(f, "{n}"),
        }
    }
}

/// How log lines are written to stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, each tagged with its shard.
    #[default]
    Text,
    /// One JSON object per line, with the shard in its span fields.
    Json,
}

/// Everything the runtime needs to start.
///
/// ```
/// use std::time::Duration;
/// use forkless::{Config, Shards};
///
/// let config = Config::default()
///     .shards(Shards::Count(2))
///     .listen(["127.0.0.1:0".parse().unwrap()])
///     .header_read_timeout(Duration::from_secs(5));
/// assert_eq!(config.get_shards(), Shards::Count(2));
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) shards: Shards,
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) pin: bool,
    pub(crate) io_memory: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) log_format: LogFormat,
    pub(crate) bus_capacity: usize,
    pub(crate) spin_before_park: Duration,
    pub(crate) restart: crate::RestartPolicy,
    pub(crate) stall_threshold: Option<Duration>,
}

/// The default listen address when neither the app nor the command line gives one.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));

impl Default for Config {
    fn default() -> Self {
        Self {
            shards: Shards::Max,
            listen: vec![DEFAULT_LISTEN],
            pin: true,
            io_memory: crate::shard::DEFAULT_IO_MEMORY,
            header_read_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            log_format: LogFormat::Text,
            bus_capacity: 1024,
            spin_before_park: Duration::ZERO,
            restart: crate::RestartPolicy::default(),
            stall_threshold: Some(Duration::from_millis(25)),
        }
    }
}

impl Config {
    /// Sets how many shards run.
    pub fn shards(mut self, shards: Shards) -> Self {
        self.shards = shards;
        self
    }

    /// Sets the addresses every shard listens on (port 0 picks one port for all).
    pub fn listen(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.listen = addrs.into_iter().collect();
        self
    }

    /// Pins each shard to its own CPU (the default) or lets the OS place them.
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Sets each shard's io_uring buffer arena; shrunk to fit `RLIMIT_MEMLOCK`.
    pub fn io_memory(mut self, bytes: usize) -> Self {
        self.io_memory = bytes;
        self
    }

    /// Closes a connection whose request head does not arrive in time.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long a graceful shutdown waits for in-flight requests.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Text or JSON log lines.
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.log_format = format;
        self
    }

    /// Messages each bus queue (one per sending and receiving shard pair and
    /// message type) holds before `try_send` says `Full`; default 1024.
    pub fn bus_capacity(mut self, messages: usize) -> Self {
        self.bus_capacity = messages.max(1);
        self
    }

    /// How long an idle shard spins before it parks: wake-ups (bus messages,
    /// I/O) within that window cost no sleep and no wake, for CPU spent
    /// spinning. Default zero: idle shards park at once.
    pub fn spin_before_park(mut self, spin: Duration) -> Self {
        self.spin_before_park = spin;
        self
    }

    /// How dead shards are restarted, and when to give up.
    pub fn restart_policy(mut self, policy: crate::RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// A task poll longer than this is logged and counted as a stall
    /// (default 25 ms); `None` turns the stall detector off.
    pub fn stall_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.stall_threshold = threshold;
        self
    }

    /// The configured shard count.
    pub fn get_shards(&self) -> Shards {
        self.shards
    }

    /// The configured listen addresses.
    pub fn get_listen(&self) -> &[SocketAddr] {
        &self.listen
    }
}

/// Parses `250ms`, `2s`, `1.5s`, `3m` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration like `500ms`, `2s` or `1m`, got `{text}`"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown duration unit `{other}` (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("duration `{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn shard_counts_parse() {
        assert_eq!("MAX".parse::<Shards>(), Ok(Shards::Max));
        assert!("-1".parse::<Shards>().is_err());
        assert!("many".parse::<Shards>().is_err());
    }
}
