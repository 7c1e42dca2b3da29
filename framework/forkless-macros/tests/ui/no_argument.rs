#[forkless::shard_main]
async fn main() {}
