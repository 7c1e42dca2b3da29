use forkless::Shard;

#[forkless::shard_main(listen = "localhost:8080")]
async fn main(shard: Shard) {
    let _ = shard;
}
