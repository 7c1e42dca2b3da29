#[forkless::shard_main]
async fn serve(&self) {}
