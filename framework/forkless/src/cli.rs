//! The standard command line of every forkless binary.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Arg, Args, Command, FromArgMatches};

use crate::Config;
#[cfg(test)]
use crate::Error;
use crate::config::RestartPolicy;
use crate::config::{LogFormat, Shards, parse_duration, parse_size, parse_timeout};
use crate::top::TopArgs;

/// The app's defaults, filled in by `#[shard_main]`.
#[derive(Clone, Copy, Debug)]
pub struct MainOptions {
    /// Program name for `--help` (the package name).
    pub name: &'static str,
    /// Version for `--version`.
    pub version: &'static str,
    /// One-line description for `--help`.
    pub about: Option<&'static str>,
    /// `listen = "..."` from the attribute.
    pub default_listen: Option<&'static str>,
    /// `shards = N` from the attribute.
    pub default_shards: Option<usize>,
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Invocation {
    /// Run the shards (no subcommand).
    Serve(Box<Config>),
    /// `top`: watch a running process through its admin endpoint.
    Top(TopArgs),
}

#[derive(Args, Debug)]
struct Cli {
    /// Number of shards: `max` (one per CPU this process may use, honouring
    /// cgroup quotas) or a count; more shards than CPUs run unpinned.
    #[arg(long, value_name = "max|N")]
    shards: Option<Shards>,

    /// Address to listen on; repeat for several. Port 0 picks one free port
    /// shared by every shard.
    #[arg(long, value_name = "IP:PORT")]
    listen: Vec<SocketAddr>,

    /// Log line format on stdout.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Longest a request head may take from its first byte, then `408` and
    /// close; also how long a new connection may send nothing.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    header_read_timeout: Duration,

    /// Close a keep-alive connection idle this long between requests.
    #[arg(long, value_name = "DURATION", default_value = "75s", value_parser = parse_timeout)]
    keep_alive_timeout: Duration,

    /// Largest request head (request line and headers); larger gets `431`.
    #[arg(long, value_name = "BYTES", default_value = "32k", value_parser = parse_positive_size)]
    max_header_size: usize,

    /// Largest request body `read_body_default` accepts; larger gets `413`.
    #[arg(long, value_name = "BYTES", default_value = "1m", value_parser = parse_size)]
    max_body_size: usize,

    /// Longest a request body may stall while the handler reads it; also the
    /// grace before `--body-min-rate` applies. Then reading fails (`408`).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    body_read_timeout: Duration,

    /// Slowest a request body may arrive after the grace, in bytes/s; 0 checks stalls only.
    #[arg(long, value_name = "BYTES_PER_SEC", default_value = "240", value_parser = parse_size)]
    body_min_rate: usize,

    /// Close a connection whose client takes no response bytes for this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout)]
    send_timeout: Duration,

    /// Most open connections per shard; beyond it new ones get `503` and are closed.
    #[arg(long, value_name = "N", default_value = "10000", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// How long a graceful shutdown waits for in-flight requests before forcing exit.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// Do not pin shards to CPUs; let the OS schedule them.
    #[arg(long)]
    no_pin: bool,

    /// Listen on a port another process already listens on (with
    /// SO_REUSEPORT), sharing its connections; without it, that is refused
    /// with "address in use". Inherited sockets are never checked.
    #[arg(long)]
    share_port: bool,

    /// Deaths of one shard allowed within --restart-window before the
    /// process gives up (a crash loop: exit 1, so systemd or Kubernetes
    /// restart it whole).
    #[arg(long, value_name = "N", default_value = "5")]
    max_restarts: u32,

    /// The crash-loop window (see --max-restarts).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    restart_window: Duration,

    /// Serve /livez, /readyz, /metrics and /status on this address (off the
    /// shards); port 0 picks one. Off by default.
    #[arg(long, value_name = "IP:PORT")]
    admin: Option<SocketAddr>,

    /// The binary SIGUSR2 starts to take over the listening sockets (with
    /// these same arguments); default: the path this process was started from.
    #[arg(long, value_name = "PATH")]
    upgrade_binary: Option<std::path::PathBuf>,

    /// How long a binary upgrade (SIGUSR2) waits for the new process to
    /// serve, and a rolling reload (SIGHUP) for each new shard to listen,
    /// before giving up and keeping the old one serving.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    upgrade_timeout: Duration,

    #[command(flatten)]
    tls: TlsArgs,
}

/// HTTPS: both files, or neither.
#[derive(Args, Debug)]
struct TlsArgs {
    /// Serve HTTPS on every --listen address with this certificate chain
    /// (PEM, leaf first); needs --tls-key. Reloaded on SIGHUP and POST /reload.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

impl TlsArgs {
    fn files(self) -> Option<crate::TlsFiles> {
        Some(crate::TlsFiles {
            cert: self.tls_cert?,
            key: self.tls_key?,
        })
    }
}

/// Parses the process's arguments; `--help`, `--version` and usage errors
/// print and exit as clap does (0 for help, 2 for a usage error).
pub(crate) fn parse(options: &MainOptions) -> Invocation {
    let matches = command(options).get_matches();
    let invocation = match matches.subcommand() {
        Some(("top", top)) => TopArgs::from_arg_matches(top).map(Invocation::Top),
        _ => Cli::from_arg_matches(&matches)
            .map(|cli| Invocation::Serve(Box::new(cli.into_config()))),
    };
    invocation.unwrap_or_else(|error| error.exit())
}

/// Parses `args` (the first is the program name) without exiting.
#[cfg(test)]
fn try_parse<I, T>(options: &MainOptions, args: I) -> Result<Config, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command(options)
        .try_get_matches_from(args)
        .map_err(|e| Error::config(e.to_string()))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| Error::config(e.to_string()))?;
    Ok(cli.into_config())
}

fn parse_positive_size(text: &str) -> Result<usize, String> {
    match parse_size(text)? {
        0 => Err("the size must be at least 1 byte".into()),
        bytes => Ok(bytes),
    }
}

fn command(options: &MainOptions) -> Command {
    let shards_default = options
        .default_shards
        .map_or_else(|| "max".to_owned(), |n| n.to_string());
    let listen_default = options.default_listen.unwrap_or("127.0.0.1:8080");
    let mut command = Command::new(options.name).version(options.version);
    if let Some(about) = options.about {
        command = command.about(about);
    }
    let top = TopArgs::augment_args(Command::new("top"))
        .about("Watch a running process's shards live, through its --admin endpoint");
    Cli::augment_args(command)
        .mut_arg("shards", |arg: Arg| arg.default_value(shards_default))
        .mut_arg("listen", |arg: Arg| arg.default_value(listen_default))
        .subcommand(top)
        .args_conflicts_with_subcommands(true)
        .disable_help_subcommand(true)
}

impl Cli {
    fn into_config(self) -> Config {
        Config::default()
            .shards(self.shards.unwrap_or_default())
            .listen(self.listen)
            .log_format(self.log_format)
            .header_read_timeout(self.header_read_timeout)
            .keep_alive_timeout(self.keep_alive_timeout)
            .max_header_size(self.max_header_size)
            .max_body_size(self.max_body_size)
            .body_read_timeout(self.body_read_timeout)
            .body_min_rate(self.body_min_rate as u64)
            .send_timeout(self.send_timeout)
            .max_connections(self.max_connections as usize)
            .shutdown_timeout(self.shutdown_timeout)
            .pin(!self.no_pin)
            .share_port(self.share_port)
            .restart_policy(RestartPolicy {
                max_restarts: self.max_restarts,
                window: self.restart_window,
                ..RestartPolicy::default()
            })
            .admin(self.admin)
            .upgrade_binary(self.upgrade_binary)
            .upgrade_timeout(self.upgrade_timeout)
            .tls(self.tls.files())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: MainOptions = MainOptions {
        name: "app",
        version: "0.0.0",
        about: None,
        default_listen: Some("127.0.0.1:9000"),
        default_shards: Some(3),
    };

    #[test]
    fn app_defaults_apply_when_flags_are_absent() {
        let config = try_parse(&OPTIONS, ["app"]).expect("no flags parse");
        assert_eq!(config.get_shards(), Shards::Count(3));
        assert_eq!(
            config.get_listen(),
            &["127.0.0.1:9000".parse().expect("addr")]
        );
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(30));
        let defaults = Config::default();
        assert_eq!(
            config.http.keep_alive_timeout,
            defaults.http.keep_alive_timeout
        );
        assert_eq!(config.http.max_header_size, defaults.http.max_header_size);
        assert_eq!(config.http.max_body_size, defaults.http.max_body_size);
        assert_eq!(
            config.http.body_read_timeout,
            defaults.http.body_read_timeout
        );
        assert_eq!(config.http.body_min_rate, defaults.http.body_min_rate);
        assert_eq!(config.http.send_timeout, defaults.http.send_timeout);
        assert_eq!(config.http.max_connections, defaults.http.max_connections);
        assert_eq!(config.get_admin(), None);
    }

    #[test]
    fn limit_flags_set_the_limits() {
        let config = try_parse(
            &OPTIONS,
            [
                "app",
                "--keep-alive-timeout",
                "5s",
                "--max-header-size",
                "8k",
                "--max-body-size",
                "2m",
                "--body-read-timeout",
                "1s",
                "--body-min-rate",
                "1k",
                "--send-timeout",
                "3s",
                "--max-connections",
                "10",
            ],
        )
        .expect("flags parse");
        assert_eq!(config.http.keep_alive_timeout, Duration::from_secs(5));
        assert_eq!(config.http.max_header_size, 8 * 1024);
        assert_eq!(config.http.max_body_size, 2 * 1024 * 1024);
        assert_eq!(config.http.body_read_timeout, Duration::from_secs(1));
        assert_eq!(config.http.body_min_rate, 1024);
        assert_eq!(config.http.send_timeout, Duration::from_secs(3));
        assert_eq!(config.http.max_connections, 10);
        assert!(try_parse(&OPTIONS, ["app", "--max-connections", "0"]).is_err());
        assert!(try_parse(&OPTIONS, ["app", "--send-timeout", "0s"]).is_err());
        assert!(try_parse(&OPTIONS, ["app", "--max-header-size", "0"]).is_err());
    }

    #[test]
    fn flags_override_defaults() {
        let config = try_parse(
            &OPTIONS,
            [
                "app",
                "--shards",
                "max",
                "--listen",
                "127.0.0.1:0",
                "--listen",
                "[::1]:0",
                "--log-format",
                "json",
                "--header-read-timeout",
                "500ms",
                "--no-pin",
                "--admin",
                "127.0.0.1:0",
            ],
        )
        .expect("flags parse");
        assert_eq!(
            config.get_admin(),
            Some("127.0.0.1:0".parse().expect("addr"))
        );
        assert_eq!(config.get_shards(), Shards::Max);
        assert_eq!(config.get_listen().len(), 2);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.http.header_read_timeout, Duration::from_millis(500));
        assert!(!config.pin);
    }

    #[test]
    fn top_is_a_subcommand_with_its_own_flags() {
        let matches = command(&OPTIONS)
            .try_get_matches_from(["app", "top", "--admin", "127.0.0.1:9090", "--once"])
            .expect("top parses");
        let (name, top) = matches.subcommand().expect("a subcommand");
        assert_eq!(name, "top");
        assert!(TopArgs::from_arg_matches(top).is_ok());
        // Without a subcommand the server's flags parse as before.
        assert!(try_parse(&OPTIONS, ["app", "--admin", "127.0.0.1:0"]).is_ok());
        let usage = |args: &[&str]| command(&OPTIONS).try_get_matches_from(args).is_err();
        assert!(usage(&["app", "top"]), "top needs --admin");
        assert!(usage(&[
            "app",
            "--shards",
            "2",
            "top",
            "--admin",
            "127.0.0.1:1"
        ]));
        assert!(command(&OPTIONS).render_help().to_string().contains("top"));
    }

    #[test]
    fn tls_needs_both_files() {
        let config = try_parse(
            &OPTIONS,
            ["app", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
        )
        .expect("both files parse");
        let files = config.tls.expect("TLS on");
        assert_eq!(files.cert, std::path::Path::new("c.pem"));
        assert_eq!(files.key, std::path::Path::new("k.pem"));
        assert!(try_parse(&OPTIONS, ["app"]).expect("parses").tls.is_none());
        assert!(try_parse(&OPTIONS, ["app", "--tls-cert", "c.pem"]).is_err());
        assert!(try_parse(&OPTIONS, ["app", "--tls-key", "k.pem"]).is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert!(try_parse(&OPTIONS, ["app", "--shards", "0"]).is_err());
        assert!(try_parse(&OPTIONS, ["app", "--listen", "localhost"]).is_err());
        assert!(try_parse(&OPTIONS, ["app", "--unknown"]).is_err());
        assert!(try_parse(&OPTIONS, ["app", "--admin", "localhost:9000"]).is_err());
    }
}
