use forkless::Shard;

#[forkless::shard_main]
async fn serve<S: Default>(shard: Shard) {
    let _ = (shard, S::default());
}
