#[forkless::shard_main]
async fn main(shard: &forkless::Shard) {
    let _ = shard;
}
