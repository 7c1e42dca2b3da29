//! What every layer above knows of the shard incarnation it runs on.
//!
//! Contract: one [`ShardCore`] per incarnation, made on its thread and
//! shared there by `Rc` (`!Send`); nothing in it crosses shards except the
//! atomics it points to (counters, the balance table), which the
//! coordinator and the admin endpoint read.

use std::sync::Arc;

use super::balance::Balance;
use super::control::{Report, Reporter};
use super::handoff::Handoff;
use super::latch::Latch;
use super::{ShardCounters, ShardId};
use crate::Config;

/// One running incarnation of a shard, as the bus, HTTP and the app's
/// [`Shard`](crate::Shard) handle see it.
#[derive(Debug)]
pub(crate) struct ShardCore {
    pub(crate) id: ShardId,
    pub(crate) incarnation: u32,
    /// How many shards the process runs.
    pub(crate) count: usize,
    pub(crate) cpu: Option<usize>,
    pub(crate) config: Arc<Config>,
    pub(crate) counters: Arc<ShardCounters>,
    /// Set once the coordinator says stop (or is gone).
    pub(crate) stopping: Latch,
    /// Open connections per shard, for the accept-side hand-off.
    pub(crate) balance: Arc<Balance>,
    pub(crate) reporter: Reporter,
    /// The shard's hand-off slot, shared by all its incarnations.
    pub(crate) handoff: Arc<Handoff>,
    /// The incarnation a rolling reload is replacing with this one, still
    /// running when this one started (`None` at first start or a restart).
    pub(crate) predecessor: Option<u32>,
    /// HTTPS: the process's one TLS configuration, shared by every shard.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

impl ShardCore {
    /// Tells the coordinator this incarnation accepts connections.
    pub(crate) fn report_listening(&self) {
        self.reporter.report(Report::Listening);
    }
}
