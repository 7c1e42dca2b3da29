//! axum-hello: the hello app written as an axum `Router`, served on every
//! core by forkless.
//!
//! Run with: `cargo run --release -p axum-hello` (then `curl -i http://127.0.0.1:8080/`).
//! `--shards N`, `--listen IP:PORT` and `--help` work as in every forkless binary.
//!
//! It answers like `apps/hello`: `GET /` is `Hello World`, other methods on
//! `/` are `405`, other paths `404 not found`; and, since it is axum, `HEAD /`
//! is answered like `GET /` without the body, and a `405` lists the allowed
//! methods in `allow`.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use forkless::prelude::*;

#[shard_main(listen = "127.0.0.1:8080")]
async fn main(shard: Shard) -> Result<(), forkless::Error> {
    shard.serve_tower(app()).await
}

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "Hello World\n" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
}
