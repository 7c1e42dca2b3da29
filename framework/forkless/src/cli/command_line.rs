//! [`CommandLine`]: the standard command line for a hand-written
//! [`Runtime`](crate::Runtime), the same one `#[shard_main]` parses.

use std::ffi::OsString;

use clap::Args;

use super::{AppArgsSpec, Failure, Invocation, MainOptions};
use crate::{Config, Error};

/// The standard command line (every flag, its environment variable, the
/// `--config` file, `--print-config`, `--help`), with the app's own
/// arguments, for a program that builds its [`Runtime`](crate::Runtime)
/// by hand. `parse` gives the [`Config`]; `Runtime::run` then starts the
/// logging it asks for, as `#[shard_main]` does.
///
/// ```no_run
/// use forkless::{CommandLine, Runtime, Shard};
///
/// #[derive(clap::Args, Debug)]
/// struct AppArgs {
///     /// What every response says.
///     #[arg(long, env = "GREETING", default_value = "hello")]
///     greeting: String,
/// }
///
/// fn main() {
///     let config = CommandLine::new("greeter")
///         .about("Says hello on every shard")
///         .version("1.0.0")
///         .args::<AppArgs>()
///         .parse();
///     Runtime::new(config)
///         .run(|shard: Shard| async move {
///             let greeting = shard.args::<AppArgs>().map_or("hello", |a| &a.greeting).to_owned();
///             shard.serve(move |_req| { let g = greeting.clone(); async move { g } }).await
///         })
///         .expect("the server ran");
/// }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct CommandLine {
    options: MainOptions,
}

impl CommandLine {
    /// The command line of the program `name` (shown in `--help`).
    pub fn new(name: &'static str) -> Self {
        Self {
            options: MainOptions {
                name,
                version: "",
                about: None,
                default_listen: None,
                default_shards: None,
                args: None,
            },
        }
    }

    /// The description `--help` opens with.
    pub fn about(mut self, about: &'static str) -> Self {
        self.options.about = Some(about);
        self
    }

    /// The version `--version` prints.
    pub fn version(mut self, version: &'static str) -> Self {
        self.options.version = version;
        self
    }

    /// The default `--listen` address (`IP:PORT`) instead of 127.0.0.1:8080.
    pub fn default_listen(mut self, addr: &'static str) -> Self {
        self.options.default_listen = Some(addr);
        self
    }

    /// The default `--shards` count instead of one per CPU.
    pub fn default_shards(mut self, shards: usize) -> Self {
        self.options.default_shards = Some(shards);
        self
    }

    /// Adds the app's own arguments, read back on every shard with
    /// [`Shard::args`](crate::Shard::args).
    pub fn args<T: Args + Send + Sync + 'static>(mut self) -> Self {
        self.options.args = Some(AppArgsSpec::of::<T>());
        self
    }

    /// Parses the process's arguments, environment and `--config` file.
    /// `--help`, `--version` and `--print-config` print and exit 0; a usage
    /// error or a bad file prints one line and exits 2.
    pub fn parse(self) -> Config {
        match super::try_parse(&self.options, std::env::args_os(), false) {
            Ok(Invocation::Serve(config)) => *config,
            Ok(Invocation::Print(text)) => {
                print!("{text}");
                std::process::exit(0)
            }
            Ok(Invocation::Top(_)) => unreachable!("CommandLine has no subcommand"),
            Err(Failure::Clap(error)) => error.exit(),
            Err(Failure::Config(error)) => {
                crate::log::fatal(self.options.name, &error);
                std::process::exit(2)
            }
        }
    }

    /// Parses `args` (the first is the program name) without exiting:
    /// `--help` and `--print-config` come back as errors carrying the text.
    ///
    /// ```
    /// use forkless::{CommandLine, Shards};
    ///
    /// let config = CommandLine::new("app").try_parse_from(["app", "--shards", "2"]).unwrap();
    /// assert_eq!(config.get_shards(), Shards::Count(2));
    /// assert!(CommandLine::new("app").try_parse_from(["app", "--nope"]).is_err());
    /// ```
    pub fn try_parse_from<I, T>(self, args: I) -> Result<Config, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        match super::try_parse(&self.options, args, false) {
            Ok(Invocation::Serve(config)) => Ok(*config),
            Ok(Invocation::Print(text)) => Err(Error::config(text)),
            Ok(Invocation::Top(_)) => Err(Error::config("CommandLine has no subcommand")),
            Err(Failure::Clap(error)) => Err(Error::config(error.to_string())),
            Err(Failure::Config(error)) => Err(error),
        }
    }
}
