//! Keeping every shard's cache consistent: the invalidation protocol over
//! the bus.
//!
//! A delete or an update of a code runs, on whichever shard took the
//! request:
//!
//! 1. the statement, committed in the database (autocommit);
//! 2. [`everywhere`]: invalidate the code in this shard's cache, then a
//!    `bus.call` of [`Invalidate`] to every other shard at once; each
//!    shard's [`serve`] task drops the code from its cache, bumps its
//!    cache's generation and replies;
//! 3. only when every shard replied, the `204` (or `200`).
//!
//! So once a client has its answer, no shard holds the old URL, and no
//! shard can put it back: a redirect that read the old row before the
//! commit and fills its cache after the invalidation finds the generation
//! moved and skips the fill (`cache.rs`). A redirect that started before
//! the delete was acknowledged may still answer with the old URL; that is
//! the usual order of overlapping requests, and it is never cached.
//!
//! A shard that is not running (between a crash and its restart) is
//! counted as done: its cache died with it and the next incarnation starts
//! empty. A shard that does not answer within [`ACK_TIMEOUT`] makes the
//! request fail with `503` saying the change is stored but not yet
//! confirmed everywhere: the client retries (both are idempotent). A
//! statement that fails with `503` may still have committed (the limit
//! passed while it was on its way), so the code is invalidated everywhere
//! then too, best effort.
//!
//! Rolling reload: the new incarnation of a shard owns its bus inbox from
//! its start but replies to invalidations only after `Shard::inherit`
//! returned, which the old incarnation hands over only after it switched its
//! cache off for good (`main.rs`); so an acknowledgement from a shard under
//! reload covers the cache of both incarnations.

use std::time::Duration;

use forkless::ShardId;
use forkless::bus::{Bus, CallError};

use crate::state;

/// Longest a delete or update waits for a shard's acknowledgement.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// "Forget this code": the one message of the protocol, replied with `()`.
#[derive(Clone, Debug)]
pub(crate) struct Invalidate {
    pub(crate) code: String,
}

/// A shard that did not acknowledge in time.
#[derive(Debug)]
pub(crate) struct Unconfirmed(pub(crate) Vec<ShardId>);

/// Invalidates `code` in every shard's cache, this one first; `Ok` once
/// every running shard acknowledged.
pub(crate) async fn everywhere(bus: &Bus<Invalidate, ()>, code: &str) -> Result<(), Unconfirmed> {
    state::invalidate(code);
    let me = bus.id();
    let calls = (0..bus.count())
        .map(ShardId::new)
        .filter(|&id| id != me)
        .map(|to| async move {
            let message = Invalidate {
                code: code.to_owned(),
            };
            match bus.call_within(to, message, ACK_TIMEOUT).await {
                // Not running, or stopped meanwhile: its cache is gone.
                Ok(()) | Err(CallError::Closed(_) | CallError::NoReply) => None,
                Err(_) => Some(to),
            }
        });
    let missing: Vec<ShardId> = futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Unconfirmed(missing))
    }
}

/// Answers the other shards' invalidations, for the life of the shard.
pub(crate) async fn serve(bus: Bus<Invalidate, ()>) {
    loop {
        let envelope = bus.recv().await;
        let (_from, message, reply) = envelope.into_parts();
        state::invalidate(&message.code);
        reply.send(());
    }
}
