#[forkless::shard_main]
struct App;
