//! peer-tokio-hyper: the `hello` routes on hyper 1.x over tokio's
//! multi-thread (work-stealing) runtime, the baseline forkless is measured
//! against in the HTTP bench.
//!
//! Run with: `cargo run --release -p peer-tokio-hyper -- --threads 2 --listen 127.0.0.1:0`

#[path = "../../args.rs"]
mod args;

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

fn main() -> ExitCode {
    let args = args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args.listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot serve {}: {e}", args.listen);
            ExitCode::FAILURE
        }
    }
}

async fn serve(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: drop this one, go on.
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() == Method::GET && request.uri().path() == "/work" {
        // Computed in the handler: the work-stealing runtime moves the
        // worker's other tasks to the other workers meanwhile.
        let result = format!("{:x}\n", burn(WORK_ROUNDS));
        return Ok(Response::new(Full::new(Bytes::from(result))));
    }
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => (StatusCode::OK, "Hello World\n"),
        (_, "/") => (StatusCode::METHOD_NOT_ALLOWED, ""),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// Rounds of [`burn`] in `GET /work`, as in forkless `hello`: ~5 ms.
const WORK_ROUNDS: u64 = 2_500_000;

/// The same xorshift chain as forkless `hello`'s `/work`.
fn burn(rounds: u64) -> u64 {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    std::hint::black_box(x)
}
