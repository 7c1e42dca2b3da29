//! Even connections across shards: accept-side hand-off.
//!
//! The kernel spreads new connections over the shards' SO_REUSEPORT sockets
//! by a hash of their addresses, which evens out only over many connections:
//! 64 connections on 2 shards split 40/24 as easily as 32/32, and a shard
//! with 40 keep-alive connections does two thirds of the work for as long as
//! they stay open. So a shard that accepts a connection while it holds
//! clearly more than the least loaded shard hands it over the bus to that
//! shard, which serves it as if it had accepted it. Only the surplus moves
//! (a few per cent of connections), and a connection moves before its first
//! byte is read, so nothing but one cross-shard message is paid for it.
//!
//! "Holds" counts open connections plus those handed to it and not yet
//! taken, from a table every shard writes its own row of (atomics: a
//! connection opening or closing is one add, and reading the table is one
//! load per shard). Only shards that serve HTTP take hand-offs.

use std::sync::atomic::{AtomicIsize, AtomicU8, Ordering};

use crossbeam_utils::CachePadded;

use crate::ShardId;

/// How many more connections than the least loaded shard a shard keeps
/// before handing new ones over: one, or 1/16 of the least loaded shard's,
/// whichever is more (max/min stays under 1.07 from 16 connections a shard).
fn slack(least: isize) -> isize {
    (least / 16).max(1)
}

/// One shard's row.
#[derive(Debug, Default)]
struct Row {
    /// Open connections, over every incarnation of the shard.
    open: AtomicIsize,
    /// Connections handed to it and not taken yet.
    incoming: AtomicIsize,
    /// Incarnations of it that serve HTTP and take hand-offs: one bit per
    /// incarnation's parity (at most two overlap, in a rolling reload), so
    /// an incarnation that died without saying so is cleared by [`Balance::retire`].
    serving: AtomicU8,
}

/// The connection table of one runtime; see the module docs.
#[derive(Debug)]
pub(crate) struct Balance {
    rows: Box<[CachePadded<Row>]>,
}

impl Balance {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            rows: (0..shards)
                .map(|_| CachePadded::new(Row::default()))
                .collect(),
        }
    }

    fn row(&self, shard: ShardId) -> Option<&Row> {
        self.rows.get(shard.get()).map(|row| &**row)
    }

    /// An incarnation of `shard` starts (`true`) or stops (`false`) taking
    /// connections.
    pub(crate) fn serving(&self, shard: ShardId, incarnation: u32, serving: bool) {
        if let Some(row) = self.row(shard) {
            let bit = 1u8 << (incarnation & 1);
            if serving {
                row.serving.fetch_or(bit, Ordering::AcqRel);
            } else {
                row.serving.fetch_and(!bit, Ordering::AcqRel);
            }
        }
    }

    /// An incarnation of `shard` ended, maybe by a panic that skipped its
    /// own [`serving`](Self::serving)`(false)`: it takes no more hand-offs.
    pub(crate) fn retire(&self, shard: ShardId, incarnation: u32) {
        self.serving(shard, incarnation, false);
    }

    pub(crate) fn opened(&self, shard: ShardId) {
        if let Some(row) = self.row(shard) {
            row.open.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn closed(&self, shard: ShardId) {
        if let Some(row) = self.row(shard) {
            row.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// An incarnation of `shard` ended with `open` connections still counted
    /// (a thread that died does not close what it held).
    pub(crate) fn forget(&self, shard: ShardId, open: u64) {
        if let Some(row) = self.row(shard) {
            row.open.fetch_sub(
                isize::try_from(open).unwrap_or(isize::MAX),
                Ordering::Relaxed,
            );
        }
    }

    /// A connection is handed to `to`.
    pub(crate) fn handed(&self, to: ShardId) {
        if let Some(row) = self.row(to) {
            row.incoming.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `shard` took a connection handed to it (or it never arrived).
    pub(crate) fn taken(&self, shard: ShardId) {
        if let Some(row) = self.row(shard) {
            row.incoming.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Where `me`'s newly accepted connection should go: `None` to keep it.
    pub(crate) fn pick(&self, me: ShardId) -> Option<ShardId> {
        let load =
            |row: &Row| row.open.load(Ordering::Relaxed) + row.incoming.load(Ordering::Relaxed);
        let mine = load(self.row(me)?);
        let (least, at) = self
            .rows
            .iter()
            .enumerate()
            .filter(|(i, row)| *i != me.get() && row.serving.load(Ordering::Relaxed) != 0)
            .map(|(i, row)| (load(row), i))
            .min()?;
        (mine > least + slack(least)).then(|| ShardId::new(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(i: usize) -> ShardId {
        ShardId::new(i)
    }

    #[test]
    fn only_the_surplus_over_the_least_loaded_serving_shard_moves() {
        let balance = Balance::new(3);
        for i in 0..3 {
            balance.serving(shard(i), 1, true);
        }
        assert_eq!(balance.pick(shard(0)), None, "all even");
        balance.opened(shard(0));
        assert_eq!(
            balance.pick(shard(0)),
            None,
            "one ahead is within the slack"
        );
        balance.opened(shard(0));
        assert_eq!(balance.pick(shard(0)), Some(shard(1)));
        // Handed over but not taken yet counts for the receiver.
        balance.handed(shard(1));
        assert_eq!(balance.pick(shard(0)), Some(shard(2)));
        balance.handed(shard(2));
        assert_eq!(balance.pick(shard(0)), None);
        balance.taken(shard(1));
        balance.opened(shard(1));
        assert_eq!(balance.pick(shard(0)), None);
        // A shard that does not serve takes nothing.
        balance.serving(shard(1), 1, false);
        balance.serving(shard(2), 1, false);
        balance.closed(shard(1));
        assert_eq!(balance.pick(shard(0)), None);
    }

    #[test]
    fn an_incarnation_that_died_serving_takes_no_hand_offs() {
        let balance = Balance::new(2);
        balance.serving(shard(0), 1, true);
        balance.serving(shard(1), 1, true);
        for _ in 0..4 {
            balance.opened(shard(0));
        }
        assert_eq!(balance.pick(shard(0)), Some(shard(1)));
        // Incarnation 1 panicked without `serving(false)`; the next one
        // starts but does not serve yet.
        balance.retire(shard(1), 1);
        assert_eq!(balance.pick(shard(0)), None);
        // A rolling reload: incarnation 2 serves, then 1 retires.
        balance.serving(shard(1), 1, true);
        balance.serving(shard(1), 2, true);
        balance.retire(shard(1), 1);
        assert_eq!(balance.pick(shard(0)), Some(shard(1)));
    }

    #[test]
    fn the_slack_grows_with_the_load() {
        let balance = Balance::new(2);
        balance.serving(shard(0), 1, true);
        balance.serving(shard(1), 1, true);
        for _ in 0..160 {
            balance.opened(shard(1));
        }
        for _ in 0..170 {
            balance.opened(shard(0));
        }
        assert_eq!(balance.pick(shard(0)), None, "170 vs 160: within 1/16");
        balance.opened(shard(0));
        assert_eq!(balance.pick(shard(0)), Some(shard(1)));
    }
}
