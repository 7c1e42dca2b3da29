//! hello: the forkless hello-world server, on every core.
//!
//! Run with: `cargo run --release -p hello` (then `curl -i http://127.0.0.1:8080/`).
//! `--shards N`, `--listen IP:PORT` and `--help` work as in every forkless binary.

use forkless::prelude::*;

#[shard_main(listen = "127.0.0.1:8080")]
async fn main(shard: Shard) -> Result<(), forkless::Error> {
    shard.serve(hello).await
}

async fn hello(request: Request) -> Response {
    match (request.method(), request.uri().path()) {
        (&forkless::http::Method::GET, "/") => "Hello World\n".into_response(),
        (_, "/") => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
