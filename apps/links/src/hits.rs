//! Hit counts, batched per shard: each redirect adds one to a shard-local
//! map (no database write on the redirect path), and the shard writes the
//! whole map in one statement every [`FLUSH_EVERY`] and when it stops.
//!
//! - **One statement per flush**: `UPDATE ... FROM unnest($codes, $counts)`,
//!   whatever the number of codes.
//! - **Nothing lost while the database is down**: a failed flush puts its
//!   counts back, and the next one carries them. Lost only with the shard
//!   itself (a panic, a kill) or when the last flush at shutdown fails.
//! - **Reads are exact up to a flush in flight** ([`unflushed`]): a stats
//!   read adds every shard's unflushed count of the code (gathered over
//!   the bus) to the stored one, so it counts every redirect answered
//!   before it without writing anything. A batch that a shard is writing
//!   at that very moment may be counted twice, once in the table and once
//!   as unflushed; never zero times. The next read is exact again.
//! - **Across a rolling reload** the replaced incarnation hands its
//!   unflushed counts to its successor ([`take_pending`], [`adopt`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use crate::db::{self, DbError, Pool};

/// How often each shard writes its counts.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Counts by code.
pub(crate) type Counts = HashMap<String, u64>;

#[derive(Default)]
struct Hits {
    /// Counted since the last flush began.
    pending: RefCell<Counts>,
    /// Being written by the flush under way.
    flushing: RefCell<Counts>,
    busy: Cell<bool>,
}

thread_local! {
    static HITS: Hits = Hits::default();
}

/// Counts one redirect of `code`.
pub(crate) fn count(code: &str) {
    HITS.with(|hits| {
        let mut pending = hits.pending.borrow_mut();
        match pending.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                pending.insert(code.to_owned(), 1);
            }
        }
    });
}

/// This shard's redirects of `code` not yet in the table (pending, and
/// being written).
pub(crate) fn unflushed(code: &str) -> u64 {
    HITS.with(|hits| {
        let pending = hits.pending.borrow().get(code).copied().unwrap_or(0);
        let flushing = hits.flushing.borrow().get(code).copied().unwrap_or(0);
        pending + flushing
    })
}

/// Takes the pending counts (to hand to a successor).
pub(crate) fn take_pending() -> Counts {
    HITS.with(|hits| hits.pending.take())
}

/// Adds counts handed over by a predecessor (or put back).
pub(crate) fn adopt(counts: Counts) {
    HITS.with(|hits| {
        let mut pending = hits.pending.borrow_mut();
        for (code, n) in counts {
            *pending.entry(code).or_insert(0) += n;
        }
    });
}

/// Writes the pending counts in one statement; on failure they go back to
/// pending. Does nothing while another flush of this shard is under way.
pub(crate) async fn flush(pool: &Pool) -> Result<(), DbError> {
    let batch = HITS.with(|hits| {
        if hits.busy.get() || hits.pending.borrow().is_empty() {
            return None;
        }
        hits.busy.set(true);
        let batch = hits.pending.take();
        *hits.flushing.borrow_mut() = batch.clone();
        Some(batch)
    });
    let Some(batch) = batch else { return Ok(()) };
    let (codes, counts): (Vec<&str>, Vec<i64>) = batch
        .iter()
        .map(|(code, &n)| (code.as_str(), i64::try_from(n).unwrap_or(i64::MAX)))
        .unzip();
    let written = db::with_conn(pool, async |conn| {
        conn.client
            .execute(&conn.statements.add_hits, &[&codes, &counts])
            .await
    })
    .await;
    HITS.with(|hits| {
        hits.flushing.borrow_mut().clear();
        hits.busy.set(false);
    });
    match written {
        Ok(_) => Ok(()),
        Err(error) => {
            adopt(batch);
            Err(error)
        }
    }
}

/// Whether a flush of this shard is under way.
pub(crate) fn flushing() -> bool {
    HITS.with(|hits| hits.busy.get())
}

/// Flushes every [`FLUSH_EVERY`], for the life of the shard; a failure is
/// logged (at most once a minute of failures) and retried at the next tick.
pub(crate) async fn flush_periodically(pool: Pool) {
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        forkless::time::sleep(FLUSH_EVERY).await;
        match flush(&pool).await {
            Ok(()) => failing_since = None,
            Err(error) => {
                let now = std::time::Instant::now();
                if failing_since.is_none_or(|since| now - since >= Duration::from_secs(60)) {
                    tracing::warn!(%error, "hit counts not written yet; retrying every second");
                    failing_since = Some(now);
                }
            }
        }
    }
}

/// The last flush of a stopping shard: waits (a bounded time) for a flush
/// under way, then writes what is left.
pub(crate) async fn flush_at_exit(pool: &Pool) {
    for _ in 0..40 {
        if !flushing() {
            break;
        }
        forkless::time::sleep(Duration::from_millis(50)).await;
    }
    if let Err(error) = flush(pool).await {
        let lost: u64 = HITS.with(|hits| hits.pending.borrow().values().sum());
        tracing::warn!(%error, lost, "hit counts lost at shutdown");
    }
}
