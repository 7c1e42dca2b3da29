//! A shard function called `main`, returning `Result<(), std::io::Error>`,
//! with its attributes and visibility kept.

use forkless::Shard;

fn check(shard: &Shard) -> std::io::Result<()> {
    match shard.count() {
        0 => Err(std::io::Error::other("no shards")),
        _ => Ok(()),
    }
}

/// Returns `Ok(())` on every shard.
#[forkless::shard_main(listen = "127.0.0.1:0")]
#[allow(clippy::unused_async)]
pub async fn main(shard: Shard) -> Result<(), std::io::Error> {
    check(&shard)?;
    Ok(())
}
