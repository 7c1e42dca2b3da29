use forkless::Shard;

#[forkless::shard_main]
const unsafe extern "C" fn main(shard: Shard) {
    let _ = shard;
}
