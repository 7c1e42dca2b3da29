use forkless::Shard;

#[forkless::shard_main(listen)]
async fn main(shard: Shard) {
    let _ = shard;
}
