use forkless::Shard;

#[forkless::shard_main(listen = 8080)]
async fn main(shard: Shard) {
    let _ = shard;
}
