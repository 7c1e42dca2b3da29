use forkless::Shard;

#[forkless::shard_main]
async fn serve(shard: Shard)
where
    String: Clone,
{
    let _ = shard;
}
