//! A shard function with another name and both options: it stays a
//! top-level item that the rest of the crate can still name.

use forkless::Shard;

#[forkless::shard_main(listen = "127.0.0.1:0", shards = 2)]
async fn serve(shard: Shard) -> Result<(), String> {
    if shard.count() == 2 {
        Ok(())
    } else {
        Err(format!("expected 2 shards, got {}", shard.count()))
    }
}

/// `serve` is still an ordinary function.
#[allow(dead_code)]
fn still_callable(shard: Shard) -> impl std::future::Future<Output = Result<(), String>> {
    serve(shard)
}
