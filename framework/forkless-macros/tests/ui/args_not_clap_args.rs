use forkless::Shard;

struct AppArgs;

#[forkless::shard_main(args = AppArgs)]
async fn main(shard: Shard) {
    let _ = shard;
}
