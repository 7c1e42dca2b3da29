//! The command line every peer server takes (included by each peer with
//! `#[path]`), shaped like a forkless binary's so the HTTP bench starts them
//! all the same way:
//!
//! - `--threads N`: worker threads (default: the CPUs this process may use);
//! - `--listen IP:PORT`: address to serve (default `127.0.0.1:8080`; port 0
//!   picks a free port);
//!
//! and, once serving, each peer prints `listening on http://IP:PORT` on stdout.

use std::net::SocketAddr;
use std::process::exit;

/// What a peer was asked to do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Args {
    /// Worker threads (or processes, for Node).
    pub(crate) threads: usize,
    /// Address to serve.
    pub(crate) listen: SocketAddr,
}

/// Parses `std::env::args()`; prints a one-line error and exits 2 on bad input.
pub(crate) fn parse() -> Args {
    match parse_from(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            eprintln!("usage: [--threads N] [--listen IP:PORT]");
            exit(2);
        }
    }
}

fn parse_from(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or(format!("{word} needs a value"));
        match word.as_str() {
            "--threads" => {
                let text = value()?;
                args.threads = match text.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("--threads takes a positive number, not {text:?}")),
                };
            }
            "--listen" => {
                let text = value()?;
                args.listen = text
                    .parse()
                    .map_err(|_| format!("--listen takes IP:PORT, not {text:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}
