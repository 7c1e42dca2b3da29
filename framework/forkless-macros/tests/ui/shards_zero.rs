use forkless::Shard;

#[forkless::shard_main(shards = 0)]
async fn main(shard: Shard) {
    let _ = shard;
}
