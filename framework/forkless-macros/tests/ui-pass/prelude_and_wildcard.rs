//! Through the prelude, with a `_` pattern and a trailing comma.

use forkless::prelude::*;

#[shard_main(shards = 1, listen = "127.0.0.1:0",)]
async fn main(_: Shard) {}
