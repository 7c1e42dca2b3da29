use forkless::Shard;

struct Failed;

#[forkless::shard_main]
async fn main(shard: Shard) -> Result<(), Failed> {
    let _ = shard;
    Err(Failed)
}
