//! A shard function called `main`, returning `()`.

use forkless::Shard;

/// Runs on every shard: nothing to serve here, so every shard returns at
/// once and the process exits 0.
#[forkless::shard_main(listen = "127.0.0.1:0")]
async fn main(shard: Shard) {
    assert!(shard.id().get() < shard.count());
}
