//! What `#[shard_main]` expands to call: parse the command line, set up
//! logging, run the shards, turn the outcome into an exit code. The `top`
//! subcommand runs the live monitor (`top/`) instead of the shards.
//!
//! Exit codes: `0` after a clean run or graceful shutdown, `1` when the
//! runtime could not start or a shard failed, `2` for a usage error (clap),
//! `3` when a shutdown had to be forced (second signal or deadline).

use std::future::Future;
use std::process::ExitCode;

use crate::app::ShardOutcome;
use crate::cli::{Invocation, MainOptions};
use crate::{Runtime, Shard};

/// Exit code of a forced shutdown.
pub const EXIT_FORCED: u8 = 3;

/// The body of the `main` that `#[shard_main]` generates.
pub fn run_main<F, Fut>(options: MainOptions, shard_fn: F) -> ExitCode
where
    F: Fn(Shard) -> Fut + Send + Clone + 'static,
    Fut: Future + 'static,
    Fut::Output: ShardOutcome,
{
    let config = match crate::cli::parse(&options) {
        Invocation::Serve(config) => *config,
        Invocation::Top(args) => return crate::top::run(options.name, &args),
        Invocation::Print(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
    };
    // `Runtime::run` starts the logging the command line asked for.
    match Runtime::new(config).run(shard_fn) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is_forced_shutdown() => {
            crate::log::fatal(options.name, &error);
            ExitCode::from(EXIT_FORCED)
        }
        Err(error) => {
            crate::log::fatal(options.name, &error);
            ExitCode::FAILURE
        }
    }
}
