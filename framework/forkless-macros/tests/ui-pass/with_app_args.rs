//! The app's own arguments: parsed from the command line (here, their
//! defaults) and read on every shard.

use forkless::Shard;

#[derive(clap::Args, Debug)]
struct AppArgs {
    /// A number the shards check.
    #[arg(long, default_value_t = 7)]
    answer: u32,
}

#[forkless::shard_main(listen = "127.0.0.1:0", shards = 2, args = AppArgs)]
async fn main(shard: Shard) -> Result<(), String> {
    match shard.args::<AppArgs>() {
        Some(args) if args.answer == 7 => Ok(()),
        other => Err(format!("expected the default answer 7, got {other:?}")),
    }
}
