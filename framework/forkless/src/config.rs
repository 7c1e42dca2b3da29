//! Runtime configuration: what the command line sets, or code sets directly.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

mod limits;
mod restart;

pub(crate) use limits::Limits;
pub use restart::RestartPolicy;

/// The `io_memory` each shard asks for when not told otherwise: 256 KiB.
///
/// The arena holds DMA buffers for file I/O; sockets never use it. glommio's
/// own default (10 MiB) is charged three times per shard (once per ring),
/// locked and resident from the start: most of a shard's idle memory, and at
/// 10 MiB a single shard would not fit the 8 MiB memlock limit most
/// distributions and systemd give. At 256 KiB a shard locks 768 KiB, 9
/// shards fit 8 MiB untouched (smaller arenas let up to 18 fit), and an app
/// doing heavy file I/O raises it with [`Config::io_memory`](crate::Config::io_memory).
pub(crate) const DEFAULT_IO_MEMORY: usize = 256 << 10;

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

/// Whether and how each request is logged (`--access-log`).
///
/// ```
/// use forkless::{AccessLog, Config};
///
/// let config = Config::default().access_log(AccessLog::Json);
/// assert_eq!(config.get_access_log(), AccessLog::Json);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AccessLog {
    /// No access log (the default): no formatting, no write.
    #[default]
    Off,
    /// One `access shard=N method=.. path=.. status=..` line per request.
    Text,
    /// One JSON object per request.
    Json,
}

/// The app's own arguments (`#[shard_main(args = T)]`,
/// [`CommandLine::args`](crate::CommandLine::args)), shared by every shard.
#[derive(Clone)]
pub(crate) struct AppArgs(pub(crate) Arc<dyn Any + Send + Sync>);

impl fmt::Debug for AppArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppArgs(..)")
    }
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
    pub(crate) share_port: bool,
    pub(crate) io_memory: usize,
    /// Every HTTP limit of a connection, as the shards apply them.
    pub(crate) http: Limits,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) log_format: LogFormat,
    pub(crate) bus_capacity: usize,
    pub(crate) spin_before_park: Duration,
    pub(crate) bus_spin: Duration,
    pub(crate) restart: RestartPolicy,
    pub(crate) stall_threshold: Option<Duration>,
    pub(crate) admin: Option<SocketAddr>,
    /// The binary a SIGUSR2 upgrade starts; `None`: the one running.
    pub(crate) upgrade_binary: Option<std::path::PathBuf>,
    pub(crate) upgrade_timeout: Duration,
    /// HTTPS on every listener: the certificate chain and key files.
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) access_log: AccessLog,
    /// The app's own arguments, if it declared some.
    pub(crate) app_args: Option<AppArgs>,
    /// Whether `Runtime::run` installs the log subscriber (a command line
    /// parsed by forkless asks for it).
    pub(crate) install_log: bool,
}

/// The PEM files a TLS listener serves: a certificate chain (leaf first)
/// and its private key; read at start and again at every reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
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
            share_port: false,
            io_memory: DEFAULT_IO_MEMORY,
            http: Limits::default(),
            shutdown_timeout: Duration::from_secs(30),
            log_format: LogFormat::Text,
            bus_capacity: 1024,
            spin_before_park: Duration::ZERO,
            bus_spin: Duration::ZERO,
            restart: RestartPolicy::default(),
            stall_threshold: Some(Duration::from_millis(25)),
            admin: None,
            upgrade_binary: None,
            upgrade_timeout: Duration::from_secs(30),
            tls: None,
            access_log: AccessLog::Off,
            app_args: None,
            install_log: false,
        }
    }
}

impl Config {
    /// Serves HTTPS on every listen address with this certificate chain and
    /// key (PEM); `None` (the default) serves plain HTTP. The files are read
    /// at start (a bad one fails the start) and again on every reload
    /// (SIGHUP, `POST /reload`); see `docs/https.md`.
    pub fn tls(mut self, files: Option<TlsFiles>) -> Self {
        self.tls = files;
        self
    }

    /// Logs every request (shard, method, path, status, bytes, duration,
    /// peer) as text or JSON on stdout, or not at all (the default).
    pub fn access_log(mut self, format: AccessLog) -> Self {
        self.access_log = format;
        self
    }

    /// The access log's format.
    pub fn get_access_log(&self) -> AccessLog {
        self.access_log
    }

    /// Hands the app's own arguments to every shard, where
    /// [`Shard::args`](crate::Shard::args) reads them back.
    ///
    /// ```
    /// use forkless::Config;
    ///
    /// #[derive(Debug, PartialEq)]
    /// struct AppArgs { greeting: String }
    ///
    /// let config = Config::default().app_args(AppArgs { greeting: "hi".into() });
    /// assert_eq!(config.get_app_args::<AppArgs>().map(|a| a.greeting.as_str()), Some("hi"));
    /// ```
    pub fn app_args<T: Any + Send + Sync>(mut self, args: T) -> Self {
        self.app_args = Some(AppArgs(Arc::new(args)));
        self
    }

    /// The app's own arguments, if they are a `T`.
    pub fn get_app_args<T: Any>(&self) -> Option<&T> {
        self.app_args.as_ref()?.0.downcast_ref()
    }

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

    /// Lets the listen addresses be shared with another process that
    /// already listens on them with SO_REUSEPORT (the kernel then spreads
    /// connections over both). Off by default: binding a port another live
    /// process holds fails with "address in use", so a second copy started
    /// by mistake does not take a share of the traffic. Inherited sockets
    /// (socket activation, a binary upgrade) are never checked.
    pub fn share_port(mut self, share: bool) -> Self {
        self.share_port = share;
        self
    }

    /// Sets each shard's io_uring buffer arena (DMA buffers for file I/O;
    /// sockets do not use it), default 256 KiB; shrunk to fit
    /// `RLIMIT_MEMLOCK`. It is locked and resident three times over (once
    /// per ring), so it is most of an idle shard's memory: raise it only
    /// for heavy file I/O.
    pub fn io_memory(mut self, bytes: usize) -> Self {
        self.io_memory = bytes;
        self
    }

    /// How long a request head may take from its first byte; past it the
    /// request gets `408` and the connection closes. Also how long a new
    /// connection may send nothing before it is closed. Default 30 s.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.http.header_read_timeout = timeout;
        self
    }

    /// How long a keep-alive connection may sit idle between a response and
    /// the next request before it is closed. Default 75 s.
    pub fn keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.http.keep_alive_timeout = timeout;
        self
    }

    /// The longest request head (request line and headers) in bytes; a
    /// longer one gets `431`. Default 32 KiB. At most 100 header lines.
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.http.max_header_size = bytes;
        self
    }

    /// The largest request body [`read_body_default`](crate::http::read_body_default)
    /// accepts; a larger one gets `413`. Default 1 MiB.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.http.max_body_size = bytes;
        self
    }

    /// How long a request body may stall while the handler waits for it;
    /// also the grace before [`body_min_rate`](Self::body_min_rate) applies.
    /// Past it, reading the body fails (`408`). Default 60 s.
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.http.body_read_timeout = timeout;
        self
    }

    /// The slowest a request body may arrive, in bytes/s, once the body
    /// read timeout's grace is used up; `0` checks stalls only. Default 240.
    pub fn body_min_rate(mut self, bytes_per_second: u64) -> Self {
        self.http.body_min_rate = bytes_per_second;
        self
    }

    /// How long a client may take no response bytes before the connection is
    /// closed. Default 60 s.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.http.send_timeout = timeout;
        self
    }

    /// The most open connections per shard; a shard at the limit answers new
    /// ones `503` and closes them. Default 10,000.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.http.max_connections = connections;
        self
    }

    /// How long a graceful shutdown waits for in-flight requests.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The binary a binary upgrade (SIGUSR2) starts, with this process's
    /// arguments. Default: the path this process was started from, so
    /// installing the new build over it and sending SIGUSR2 upgrades.
    pub fn upgrade_binary(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.upgrade_binary = path;
        self
    }

    /// How long a binary upgrade waits for the new process to report every
    /// shard listening, and a rolling reload for each new incarnation to
    /// listen, before giving up and keeping the old one serving; default 30 s.
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade_timeout = timeout;
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
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// A task poll longer than this is logged and counted as a stall
    /// (default 25 ms); `None` turns the stall detector off.
    pub fn stall_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.stall_threshold = threshold;
        self
    }

    /// Serves the admin endpoint (`/livez`, `/readyz`, `/metrics`,
    /// `/status`) on `addr`, off the shards, or not at all (`None`, the
    /// default). Port 0 picks a free port; the process prints
    /// `admin on http://IP:PORT` once it listens.
    ///
    /// ```
    /// use forkless::Config;
    ///
    /// let config = Config::default().admin(Some("127.0.0.1:9090".parse().unwrap()));
    /// assert_eq!(config.get_admin(), Some("127.0.0.1:9090".parse().unwrap()));
    /// ```
    pub fn admin(mut self, addr: Option<SocketAddr>) -> Self {
        self.admin = addr;
        self
    }

    /// The admin endpoint's address, if it is on.
    pub fn get_admin(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// How long a bus receive (`recv`) or a `call` waiting for its reply
    /// polls in place before parking its task. Default zero. A few
    /// microseconds turn a round trip between two busy shards from a trip
    /// through each executor's loop (several microseconds) into a few hundred
    /// nanoseconds, but every other task of the shard waits while it spins:
    /// use it for shards that mostly talk over the bus.
    pub fn bus_spin(mut self, spin: Duration) -> Self {
        self.bus_spin = spin;
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

/// Like [`parse_duration`], but zero is refused: a timeout of nothing would
/// cut off every client.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout.is_zero() {
        return Err(format!("a timeout must be longer than zero, got `{text}`"));
    }
    Ok(timeout)
}

/// Parses a byte count: `65536`, `64k`, `64KiB`, `1m`, `1MiB` (k and m are
/// 1024 and 1024 x 1024, as in nginx).
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("expected a size like `65536`, `64k` or `1m`, got `{text}`"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown size unit `{other}` (use k, m or g)")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("size `{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(64 * 1024));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1m"), Ok(1024 * 1024));
        assert_eq!(parse_size("2MB"), Ok(2 * 1024 * 1024));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1t").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert_eq!(parse_timeout("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("0").is_err());
    }

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
