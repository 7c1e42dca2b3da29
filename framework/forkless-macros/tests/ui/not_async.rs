use forkless::Shard;

#[forkless::shard_main]
fn main(shard: Shard) {
    let _ = shard;
}
