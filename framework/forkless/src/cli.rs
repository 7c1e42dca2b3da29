//! The standard command line of every forkless binary.
//!
//! Contract:
//! - every standard option has a flag (`--shards`), an environment variable
//!   named after it (`FORKLESS_SHARDS`; a list takes a comma-separated
//!   list) and a key of the `--config` file (`shards = 4`; the HTTP limits
//!   under `[limits]`, the TLS files under `[tls]`, the app's own arguments
//!   under `[app]`), in that order of precedence, over the default;
//! - a bad file value or an unknown key is a one-line error naming the file,
//!   the line and the key (`file.rs`); `--print-config` shows every value
//!   and where it came from (`print.rs`);
//! - the app's own arguments (`clap::Args`) join the same command line
//!   (`args.rs`), and [`CommandLine`] gives a hand-written `Runtime` all of it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};

use crate::config::RestartPolicy;
use crate::config::{LogFormat, Shards, parse_duration, parse_size, parse_timeout};
use crate::top::TopArgs;
use crate::{AccessLog, Config, Error};

mod args;
mod command_line;
mod env;
mod file;
mod print;

pub use args::AppArgsSpec;
pub use command_line::CommandLine;

/// The app's defaults, filled in by `#[shard_main]`.
#[derive(Clone, Copy, Debug)]
pub struct MainOptions {
    /// Program name for `--help` (the package name).
    pub name: &'static str,
    /// Version for `--version`.
    pub version: &'static str,
    /// One-line description for `--help` (the package's `description`).
    pub about: Option<&'static str>,
    /// `listen = "..."` from the attribute.
    pub default_listen: Option<&'static str>,
    /// `shards = N` from the attribute.
    pub default_shards: Option<usize>,
    /// `args = T` from the attribute: the app's own arguments.
    pub args: Option<AppArgsSpec>,
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Invocation {
    /// Run the shards (no subcommand).
    Serve(Box<Config>),
    /// `top`: watch a running process through its admin endpoint.
    Top(TopArgs),
    /// `--print-config`: the text to print before exiting 0.
    Print(String),
}

/// The `--admin` help: the route list of `admin/mod.rs`.
const ADMIN_HELP: &str = "Serve the admin endpoint on this address (off the shards): \
GET / (a live web dashboard), /livez, /readyz, /status, /metrics; POST /reload (rolling reload), POST /upgrade \
(binary upgrade). Port 0 picks one. Off by default";

#[derive(Args, Debug)]
struct Cli {
    /// A TOML file of options: the same keys as the flags (`shards = 4`,
    /// `[limits]`, `[tls]`) and an `[app]` table; flags and environment
    /// variables take precedence over it.
    #[arg(long, value_name = "PATH")]
    config: Option<std::path::PathBuf>,

    /// Print the effective configuration, with where each value came from,
    /// and exit.
    #[arg(long)]
    print_config: bool,

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

    /// One line per request on stdout (shard, method, path, status, bytes,
    /// duration, peer).
    #[arg(long, value_enum, default_value_t = AccessLog::Off)]
    access_log: AccessLog,

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

    #[arg(long, value_name = "IP:PORT", help = ADMIN_HELP)]
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
    /// Both files or neither: one alone (possible from the environment or
    /// the file, which clap's `requires` does not see) is refused.
    fn files(self) -> Result<Option<crate::TlsFiles>, Error> {
        match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(crate::TlsFiles { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(Error::config("--tls-cert needs --tls-key too")),
            (None, Some(_)) => Err(Error::config("--tls-key needs --tls-cert too")),
        }
    }
}

/// Parses the process's arguments; `--help`, `--version` and usage errors
/// print and exit as clap does (0 for help, 2 for a usage error), and so
/// does a bad `--config` file (2).
pub(crate) fn parse(options: &MainOptions) -> Invocation {
    match try_parse(options, std::env::args_os(), true) {
        Ok(invocation) => invocation,
        Err(Failure::Clap(error)) => error.exit(),
        Err(Failure::Config(error)) => {
            crate::log::fatal(options.name, &error);
            std::process::exit(2)
        }
    }
}

/// Why the command line did not parse.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A usage error, `--help` or `--version`: clap prints and exits.
    Clap(clap::Error),
    /// The `--config` file or a combination of values is wrong.
    Config(Error),
}

impl From<clap::Error> for Failure {
    fn from(error: clap::Error) -> Self {
        Failure::Clap(error)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Config(error)
    }
}

/// Parses `args` (the first is the program name), the environment and the
/// `--config` file, without exiting.
pub(crate) fn try_parse<I, T>(
    options: &MainOptions,
    args: I,
    with_top: bool,
) -> Result<Invocation, Failure>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = command(options, with_top);
    let file = match file::path(&args) {
        Some(path) => Some(file::load(&path, &command, &app_ids(options))?),
        None => None,
    };
    if let Some(file) = &file {
        command = file.apply(command);
    }
    let matches = command.clone().try_get_matches_from(args)?;
    if let Some(("top", top)) = matches.subcommand() {
        return Ok(Invocation::Top(TopArgs::from_arg_matches(top)?));
    }
    let cli = Cli::from_arg_matches(&matches)?;
    if cli.print_config {
        let shown = print::Shown {
            name: options.name,
            command: &command,
            matches: &matches,
            file: file.as_ref(),
            app: &app_ids(options),
        };
        return Ok(Invocation::Print(shown.render()));
    }
    let mut config = cli.into_config()?;
    if let Some(spec) = &options.args {
        config.app_args = Some(spec.read(&matches)?);
    }
    Ok(Invocation::Serve(Box::new(config)))
}

fn parse_positive_size(text: &str) -> Result<usize, String> {
    match parse_size(text)? {
        0 => Err("the size must be at least 1 byte".into()),
        bytes => Ok(bytes),
    }
}

/// The whole command: the standard options with their environment
/// variables, the app's own under a heading of their own, and `top`.
fn command(options: &MainOptions, with_top: bool) -> Command {
    let shards_default = options
        .default_shards
        .map_or_else(|| "max".to_owned(), |n| n.to_string());
    let listen_default = options.default_listen.unwrap_or("127.0.0.1:8080");
    let about = match options.about {
        Some(about) if !about.trim().is_empty() => about.to_owned(),
        _ => format!("{}: a forkless server", options.name),
    };
    let command = Command::new(options.name).version(options.version);
    let mut command = env::add(Cli::augment_args(command))
        .mut_arg("shards", |arg: Arg| arg.default_value(shards_default))
        .mut_arg("listen", |arg: Arg| arg.default_value(listen_default));
    if let Some(spec) = &options.args {
        command = spec.augment(command.next_help_heading("App options"));
    }
    // After the flattened structs, whose doc comments would replace it.
    command = command.about(about);
    if with_top {
        let top = TopArgs::augment_args(Command::new("top"))
            .about("Watch a running process's shards live, through its --admin endpoint");
        command = command
            .subcommand(top)
            .args_conflicts_with_subcommands(true)
            .disable_help_subcommand(true);
    }
    command
}

/// The ids of the app's own arguments in a parsed command.
fn app_ids(options: &MainOptions) -> Vec<String> {
    options.args.map_or_else(Vec::new, |spec| spec.ids())
}

/// The matches' raw values of `id`, as given.
fn raw_values(matches: &ArgMatches, id: &str) -> Vec<String> {
    matches
        .get_raw(id)
        .map(|values| {
            values
                .map(|value| value.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Cli {
    fn into_config(self) -> Result<Config, Error> {
        let mut config = Config::default()
            .shards(self.shards.unwrap_or_default())
            .listen(self.listen)
            .log_format(self.log_format)
            .access_log(self.access_log)
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
            .tls(self.tls.files()?);
        config.install_log = true;
        Ok(config)
    }
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
