use forkless::Shard;

#[derive(clap::Args)]
struct AppArgs {}

#[forkless::shard_main(args = AppArgs, args = AppArgs)]
async fn main(shard: Shard) {
    let _ = shard;
}
