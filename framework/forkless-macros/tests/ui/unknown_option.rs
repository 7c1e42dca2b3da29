use forkless::Shard;

#[forkless::shard_main(listen = "127.0.0.1:8080", port = 8080)]
async fn main(shard: Shard) {
    let _ = shard;
}
