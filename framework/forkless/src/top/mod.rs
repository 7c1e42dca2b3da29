//! `top`: the live per-shard monitor every forkless binary carries, what
//! `pm2 monit` is to PM2.
//!
//! `hello top --admin 127.0.0.1:9090` asks the running process's admin
//! endpoint for `GET /status` once a second and redraws the per-shard table
//! (shard, cpu, state, incarnation, restarts, requests/s, p99 latency, open
//! connections, bus queue depth, stalls, handler panics) with a totals row
//! under it. `q`, `Esc` or Ctrl-C quits and gives the terminal back as it
//! was. `--once` prints one frame as plain text and exits, for scripts;
//! `--plain` prints a plain frame every second without taking the terminal
//! (for a log, a pipe or a test) until it is killed.
//!
//! **Contract.** It is a client of the admin endpoint only: it starts no
//! shard, needs no io_uring and touches nothing of the process it watches
//! beyond one `GET /status` per second (one connection each, as the admin
//! endpoint answers one request per connection). Every network wait is
//! bounded ([`fetch::TIMEOUT`]). Exit codes: `0` after `q` or a frame printed
//! by `--once`; `1` when `--once` cannot reach the endpoint (one line naming
//! the address), the terminal cannot be set up or stdout is closed. The live
//! and plain monitors never exit on an unreachable endpoint (the process not
//! started yet, restarting, or gone): the frame says so in words, with no
//! stale figure shown as current, and the next answer brings the table back.

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
    #[arg(long, conflicts_with = "plain")]
    once: bool,

    /// Print a plain-text frame every second, without taking the terminal
    /// (for logs and pipes), until killed.
    #[arg(long)]
    plain: bool,
}

/// Runs the monitor; `name` is the program's name for messages.
pub(crate) fn run(name: &str, args: &TopArgs) -> ExitCode {
    let result = if args.once {
        let status = match fetch::status(args.admin) {
            Ok(status) => status,
            Err(error) => {
                eprintln!("{name} top: {error}");
                return ExitCode::FAILURE;
            }
        };
        let seen = frame::Seen {
            status: Some(status),
            problem: None,
        };
        write_frame(&frame::render(name, args.admin, &seen))
    } else if args.plain {
        plain(name, args.admin)
    } else {
        screen::run(name, args.admin)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name} top: cannot write to the terminal: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `lines` and a blank line to stdout.
fn write_frame(lines: &[String]) -> std::io::Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// `--plain`: a frame a second on stdout, each after a blank line, until
/// stdout closes.
fn plain(name: &str, admin: SocketAddr) -> std::io::Result<()> {
    let mut seen = frame::Seen::default();
    loop {
        let started = std::time::Instant::now();
        seen.polled(fetch::status(admin), std::time::SystemTime::now());
        let mut lines = frame::render(name, admin, &seen);
        lines.push(String::new());
        write_frame(&lines)?;
        std::thread::sleep(screen::REFRESH.saturating_sub(started.elapsed()));
    }
}
