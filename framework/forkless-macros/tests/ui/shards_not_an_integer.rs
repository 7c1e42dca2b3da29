use forkless::Shard;

#[forkless::shard_main(shards = "max")]
async fn main(shard: Shard) {
    let _ = shard;
}
