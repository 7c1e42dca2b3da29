//! greeter: a tonic gRPC service (unary `SayHello`, server-streaming
//! `SayHelloStream`) and gRPC health, served on every core by forkless
//! over HTTP/2 (h2c, or h2 over TLS with `--tls-cert`/`--tls-key`).
//!
//! Run with: cargo run --release -p greeter
//!
//! Then, with grpcurl (the service has no reflection; give it the schema
//! in `src/lib.rs`) or any tonic client: `greeter::GreeterClient`.
//! `--shards N`, `--listen IP:PORT` and `--help` work as in every forkless
//! binary.

use forkless::prelude::*;

#[shard_main(listen = "127.0.0.1:50051")]
async fn main(shard: Shard) -> Result<(), forkless::Error> {
    let shard_id = u32::try_from(shard.id().get()).unwrap_or(u32::MAX);
    let routes = greeter::routes(shard_id).await;
    shard.serve_tower(routes).await
}
