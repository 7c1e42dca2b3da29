//! hello: the forkless hello-world server, on every core.
//!
//! Run with: `cargo run --release -p hello` (then `curl -i http://127.0.0.1:8080/`).
//! `--shards N`, `--listen IP:PORT` and `--help` work as in every forkless binary.
//!
//! Routes: `GET /` answers `Hello World`; `GET /work` computes for about 5 ms
//! (the heavy request of the mixed benchmark) on the offload pool, so the
//! shard keeps answering `/` meanwhile (see docs/cpu-heavy-work.md).

use forkless::prelude::*;

#[shard_main(listen = "127.0.0.1:8080")]
async fn main(shard: Shard) -> Result<(), forkless::Error> {
    shard.serve(hello).await
}

async fn hello(request: Request) -> Response {
    match (request.method(), request.uri().path()) {
        (&forkless::http::Method::GET, "/") => "Hello World\n".into_response(),
        (&forkless::http::Method::GET, "/work") => {
            let result = forkless::offload(|| burn(WORK_ROUNDS)).await;
            format!("{result:x}\n").into_response()
        }
        (_, "/") => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// Rounds of [`burn`] in `GET /work`: about 5 ms of one CPU here. The
/// benchmark's peers use the same loop and count.
const WORK_ROUNDS: u64 = 2_500_000;

/// CPU work that no compiler can skip: a xorshift chain.
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
