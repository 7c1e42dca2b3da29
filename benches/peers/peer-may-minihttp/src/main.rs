//! peer-may-minihttp: the `hello` routes on may_minihttp (stackful
//! coroutines on N worker threads, a hand-rolled HTTP/1.1 codec that batches
//! pipelined responses), the pipelining peer of forkless in the HTTP bench.
//!
//! Run with: `cargo run --release -p peer-may-minihttp -- --threads 2 --listen 127.0.0.1:0`
//!
//! may_minihttp binds the address itself and does not report the port it
//! got, so port 0 is resolved here first (bind, read the port, close) and
//! the server then binds that port.

#[path = "../../args.rs"]
mod args;

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use may_minihttp::{HttpServer, HttpService, Request, Response};

#[derive(Debug, Clone, Copy)]
struct Hello;

impl HttpService for Hello {
    fn call(&mut self, request: Request, response: &mut Response) -> io::Result<()> {
        response.header("Content-Type: text/plain; charset=utf-8");
        match (request.method(), request.path()) {
            ("GET", "/") => response.body("Hello World\n"),
            (_, "/") => response.status_code(405, "Method Not Allowed").body(""),
            _ => response.status_code(404, "Not Found").body("not found\n"),
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = args::parse();
    may::config().set_workers(args.threads);
    let served = resolve(args.listen).and_then(|addr| {
        let server = HttpServer(Hello).start(addr)?;
        println!("listening on http://{addr}");
        server
            .join()
            .map_err(|_| io::Error::other("the accept coroutine panicked"))
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot serve {}: {e}", args.listen);
            ExitCode::FAILURE
        }
    }
}

/// `addr` with port 0 replaced by a port that was free a moment ago.
fn resolve(addr: SocketAddr) -> io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    std::net::TcpListener::bind(addr)?.local_addr()
}
