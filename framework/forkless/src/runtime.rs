//! Running shards from code, without `#[shard_main]`.

use std::future::Future;

use crate::admin::{self, Action};
use crate::app::{ShardOutcome, starter};
use crate::coordinator::{AdminStart, AppCoordinator};
use crate::{Config, Coordinator, Error, Shard};

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
pub struct Runtime {
    config: Config,
    coordinator: Option<AppCoordinator>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("coordinator", &self.coordinator.is_some())
            .finish()
    }
}

impl Runtime {
    /// A runtime for `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            coordinator: None,
        }
    }

    /// Runs `f` on a thread of its own once the shards are started: the
    /// place for Node-"primary" code that messages shards and hears from
    /// them through [`Coordinator::bus`]. The runtime does not wait for it
    /// to return; its `recv` calls return `None` once the runtime ended.
    ///
    /// ```no_run
    /// use forkless::{Config, Coordinator, Runtime, Shard, ShardId};
    ///
    /// Runtime::new(Config::default().listen([]))
    ///     .coordinator(|coordinator: Coordinator| {
    ///         let bus = coordinator.bus::<String>();
    ///         while let Some(envelope) = bus.recv() {
    ///             println!("{:?} says {}", envelope.from, envelope.msg);
    ///         }
    ///     })
    ///     .run(|shard: Shard| async move {
    ///         let _ = shard.bus::<String>().to_coordinator(format!("hi from {}", shard.id())).await;
    ///     })
    ///     .expect("ran");
    /// ```
    pub fn coordinator(mut self, f: impl FnOnce(Coordinator) + Send + 'static) -> Self {
        self.coordinator = Some(Box::new(f));
        self
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
        if self.config.install_log {
            crate::log::init(self.config.log_format);
        }
        crate::coordinator::run(
            self.config,
            starter(shard_fn),
            self.coordinator,
            Some(admin_start()),
        )
    }
}

/// Starts the admin endpoint, its reload and upgrade requests handed to the
/// coordinator.
fn admin_start() -> AdminStart {
    Box::new(|listener, board, coordinator| {
        let server = admin::start(
            listener,
            board,
            Box::new(move |action| match action {
                Action::Reload => coordinator.reload(),
                Action::Upgrade => coordinator.upgrade(),
            }),
        )?;
        Ok(Box::new(server))
    })
}
