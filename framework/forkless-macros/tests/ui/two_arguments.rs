use forkless::Shard;

#[forkless::shard_main]
async fn main(shard: Shard, greeting: String) {
    let _ = (shard, greeting);
}
