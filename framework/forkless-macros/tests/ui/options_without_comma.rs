use forkless::Shard;

#[forkless::shard_main(listen = "127.0.0.1:8080" shards = 4)]
async fn main(shard: Shard) {
    let _ = shard;
}
