//! What passes between a shard incarnation and the coordinator: the
//! commands it receives and the reports it sends.
//!
//! Contract: both kinds are plain values that cross threads (`Send`). A
//! report names the incarnation it comes from, so the coordinator can tell a
//! replaced incarnation's exit from its successor's. Sending a report never
//! blocks and never fails loudly: once the coordinator is gone there is
//! nobody left to tell.

use std::sync::Arc;

use super::ShardId;

/// What the coordinator tells a shard incarnation.
#[derive(Debug)]
pub(crate) enum Command {
    /// Stop accepting and finish what is in flight.
    Stop,
    /// Serve this connection, accepted for a shard that is down.
    Adopt(std::net::TcpStream),
    /// Every shard has drained (or this incarnation was replaced): its
    /// remaining tasks (bus receivers, `run_on` jobs) may end.
    Release,
}

/// What a shard incarnation tells the coordinator.
#[derive(Debug)]
pub(crate) enum Report {
    /// The shard's executor runs and its function started.
    Online,
    /// The shard accepts connections.
    Listening,
    /// Told to stop, its shard function returned: it has no connection
    /// left, but keeps serving the bus until [`Command::Release`].
    Drained,
    /// The shard's thread is about to end.
    Exited(Exit),
}

/// How a shard incarnation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Its function returned `Ok`/`()`.
    Returned,
    /// Its function returned an error, or its executor could not start.
    Failed(String),
    /// Its thread panicked outside any request guard.
    Panicked(String),
}

/// Where one incarnation's reports go (the coordinator's event channel).
#[derive(Clone)]
pub(crate) struct Reporter {
    shard: ShardId,
    incarnation: u32,
    sink: Arc<dyn Fn(ShardId, u32, Report) + Send + Sync>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("shard", &self.shard)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    pub(crate) fn new(
        shard: ShardId,
        incarnation: u32,
        sink: Arc<dyn Fn(ShardId, u32, Report) + Send + Sync>,
    ) -> Self {
        Self {
            shard,
            incarnation,
            sink,
        }
    }

    pub(crate) fn report(&self, report: Report) {
        (self.sink)(self.shard, self.incarnation, report);
    }
}
