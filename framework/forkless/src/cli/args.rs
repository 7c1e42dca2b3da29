//! The app's own arguments: a `clap::Args` type merged into the standard
//! command line (its flags, `--help`, its `#[arg(env = ..)]` variables and
//! the `[app]` table of the `--config` file), parsed once in `main` and
//! shared, read-only, by every shard (`Shard::args`).

use std::sync::Arc;

use clap::{ArgMatches, Args, Command};

use crate::config::AppArgs;

/// How to add a `clap::Args` type to the command line and read it back:
/// what `#[shard_main(args = T)]` passes to the runtime.
///
/// ```
/// #[derive(clap::Args, Debug)]
/// struct AppArgs {
///     /// Largest value stored, in bytes.
///     #[arg(long, default_value_t = 1024)]
///     max_value_size: usize,
/// }
///
/// let spec = forkless::__private::AppArgsSpec::of::<AppArgs>();
/// # let _ = spec;
/// ```
#[derive(Clone, Copy)]
pub struct AppArgsSpec {
    augment: fn(Command) -> Command,
    parse: fn(&ArgMatches) -> Result<AppArgs, clap::Error>,
}

impl std::fmt::Debug for AppArgsSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppArgsSpec(..)")
    }
}

impl AppArgsSpec {
    /// The spec of `T`.
    pub fn of<T: Args + Send + Sync + 'static>() -> Self {
        Self {
            augment: T::augment_args,
            parse: |matches| {
                let args = T::from_arg_matches(matches)?;
                Ok(AppArgs(Arc::new(args)))
            },
        }
    }

    /// `command` with the app's arguments added.
    pub(crate) fn augment(&self, command: Command) -> Command {
        (self.augment)(command)
    }

    /// The app's arguments out of the parsed command line.
    pub(crate) fn read(&self, matches: &ArgMatches) -> Result<AppArgs, clap::Error> {
        (self.parse)(matches)
    }

    /// The ids of the app's arguments (the `[app]` keys of the file).
    pub(crate) fn ids(&self) -> Vec<String> {
        (self.augment)(Command::new("app"))
            .get_arguments()
            .map(|arg| arg.get_id().to_string())
            .collect()
    }
}
