//! `top`: the live per-shard monitor every forkless binary carries, what
//! `pm2 monit` is to PM2.
//!
//! `hello top --admin 127.0.0.1:9090` asks the running process's admin
//! endpoint for `GET /status` once a second and redraws the per-shard table
//! (shard, cpu, state, incarnation, restarts, requests/s, open connections,
//! bus queue depth, stalls, handler panics) with a totals row under it. `q`,
//! `Esc` or Ctrl-C quits and gives the terminal back as it was.
//! `--once` prints one frame as plain text and exits, for scripts and tests.
//!
//! **Contract.** It is a client of the admin endpoint only: it starts no
//! shard, needs no io_uring and touches nothing of the process it watches
//! beyond one `GET /status` per second (one connection each, as the admin
//! endpoint answers one request per connection). Every network wait is
//! bounded ([`fetch::TIMEOUT`]). Exit codes: `0` after `q` or a frame printed
//! by `--once`; `1` when the endpoint cannot be reached at start (one line
//! naming the address) or the terminal cannot be set up. Once the monitor
//! runs, an unreachable endpoint (the process restarting, or gone) is shown
//! in the frame and polled again, not an exit.

mod fetch;
mod frame;
mod screen;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;

/// The `top` subcommand's flags.
#[derive(Args, Debug)]
pub(crate) struct TopArgs {
    /// The admin endpoint of the running process (its `--admin` address).
    #[arg(long, value_name = "IP:PORT")]
    admin: SocketAddr,

    /// Print one frame as plain text and exit (no full-screen mode).
    #[arg(long)]
    once: bool,
}

/// Runs the monitor; `name` is the program's name for messages.
pub(crate) fn run(name: &str, args: &TopArgs) -> ExitCode {
    let status = match fetch::status(args.admin) {
        Ok(status) => status,
        Err(error) => {
            eprintln!("{name} top: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = if args.once {
        let mut text = frame::render(name, args.admin, &status, None).join("\n");
        text.push('\n');
        std::io::stdout().lock().write_all(text.as_bytes())
    } else {
        screen::run(name, args.admin, status)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name} top: cannot draw on the terminal: {error}");
            ExitCode::FAILURE
        }
    }
}
