use forkless::Shard;

#[forkless::shard_main(shards = -4)]
async fn main(shard: Shard) {
    let _ = shard;
}
