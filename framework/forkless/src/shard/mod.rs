//! Shards, the bottom layer: one single-threaded glommio executor per core,
//! and what each incarnation of a shard is made of.
//!
//! Contract: everything here belongs to one shard and is `!Send` (its
//! executor, its timer, its latch, its tasks), except the few tables other
//! threads read: [`ShardCounters`] (written by their shard only) and the
//! balance table (`balance.rs`: open connections per shard, for hand-offs).
//! This layer knows nothing of the bus, the coordinator or HTTP: the layers
//! above give a shard thread its body (`thread.rs`) and read its reports
//! (`control.rs`). The handle apps hold, [`Shard`](crate::Shard), is the
//! facade over every layer (`app/shard.rs`).

pub(crate) mod balance;
pub(crate) mod control;
mod core;
mod counters;
pub(crate) mod cpus;
pub(crate) mod crash;
pub(crate) mod handoff;
mod id;
pub(crate) mod latch;
pub(crate) mod listener;
pub(crate) mod preflight;
pub(crate) mod stall;
mod task;
pub(crate) mod thread;
pub(crate) mod timer;
pub(crate) mod tokio_rt;

pub(crate) use core::ShardCore;
pub use counters::{CounterSnapshot, ShardCounters};
pub use id::ShardId;
pub use task::{JoinHandle, spawn};
