//! What an app holds: the [`Shard`] handle, a facade over every layer
//! below (the shard itself, the bus, the coordinator's commands, HTTP), and
//! the body every shard thread runs (`start.rs`).
//!
//! Contract: a `Shard` is `!Send` and belongs to one incarnation of one
//! shard; clones are cheap and refer to the same incarnation. Everything an
//! app can ask of its shard is a method of [`Shard`], listed in one file
//! (`shard.rs`); the layers below never see a `Shard`, only the parts of it
//! they need.

mod run_on;
mod shard;
mod start;

pub use shard::Shard;
pub use start::ShardOutcome;
pub(crate) use start::starter;
