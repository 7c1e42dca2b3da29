use forkless::Shard;

#[forkless::shard_main]
async fn serve(shard: Shard) -> u16 {
    let _ = shard;
    8080
}
