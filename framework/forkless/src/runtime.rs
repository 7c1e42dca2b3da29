//! Running shards from code, without `#[shard_main]`.

use std::future::Future;

use crate::entry::ShardOutcome;
use crate::{Config, Error, Shard};

/// Starts the shards described by a [`Config`] and supervises them.
///
/// `#[shard_main]` builds one from the command line; tests and embedders
/// build one directly.
///
/// ```no_run
/// use forkless::{Config, Runtime, Shard, Shards};
///
/// let config = Config::default()
///     .shards(Shards::Count(2))
///     .listen(["127.0.0.1:0".parse().unwrap()]);
/// Runtime::new(config)
///     .run(|shard: Shard| async move {
///         shard.serve(|_req| async { "hi\n" }).await
///     })
///     .expect("the server ran");
/// ```
#[derive(Debug)]
pub struct Runtime {
    config: Config,
}

impl Runtime {
    /// A runtime for `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// Runs `shard_fn` on every shard and blocks until every shard has ended:
    /// after each returned, after a graceful shutdown (SIGINT/SIGTERM), or
    /// when one failed (then the others are stopped and the error returned).
    pub fn run<F, Fut>(self, shard_fn: F) -> Result<(), Error>
    where
        F: Fn(Shard) -> Fut + Send + Clone + 'static,
        Fut: Future + 'static,
        Fut::Output: ShardOutcome,
    {
        crate::panic::install_hook();
        crate::coordinator::run(self.config, shard_fn)
    }
}
