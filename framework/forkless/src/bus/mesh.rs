//! One [`Mesh`] per message type: the queues of that type between every
//! pair of shards, and between the shards and the coordinator, with one
//! [`Slot`] per receiving shard.
//!
//! Contract:
//! - **Shared, `Send + Sync`.** Every shard of a runtime (and the
//!   coordinator) holds the same mesh; the shard-local halves are in
//!   `local.rs`. Nothing here blocks but short, uncontended locks.
//! - **Rings made on first use, by their sender.** The sender creates the
//!   ring for the incarnation that owns the receiver's inbox, keeps the
//!   producer and hands the consumer to the receiver's slot
//!   ([`Slot::adopt`]); only that incarnation takes it
//!   ([`Slot::take_fresh`]).
//! - **Liveness on every send.** A slot's open flag and owning incarnation
//!   are read by senders before every push, so a stopped shard answers
//!   `Closed` even when its tasks were leaked with its thread, and a ring
//!   made for an older incarnation is replaced.
//! - **A waiting sender never outlives its receiver.** A sender parked on
//!   a full ring waits for its receiver to make room, which a stopped
//!   incarnation never does. So the slot keeps each ring's "room
//!   available" wake, and when an incarnation stops owning the inbox (it
//!   retires, or a newer one is activated) those wakes are notified: the
//!   senders re-check and see `Closed`, or the newer incarnation.
//!
//! No such wake is lost: a sender parks (a `SeqCst` fence, `ring.rs`)
//! before its last check of the open flag and the incarnation, and the
//! lifecycle change stores them before notifying (a `SeqCst` fence), so
//! one of the two sees the other; a ring adopted after the wakes were taken
//! was made under the same lock, after the change, so its sender sees the
//! change. Only ring creation and lifecycle changes touch this list, never
//! a push or a pop.

use std::sync::Arc;

use crossbeam_utils::CachePadded;
use event_listener::Event;

use super::Envelope;
use super::ring::{RingLoad, Wake};
use super::sync::{AtomicBool, AtomicU32, Mutex, Ordering, lock};
use crate::ShardId;

// The registry was part of this file; `coordinator/` and `admin/` still
// name it by this path.
pub(crate) use super::registry::{FIRST_INCARNATION, Registry};

/// A channel of envelopes (to and from the coordinator).
type Channel<M, R> = (
    flume::Sender<Envelope<M, R>>,
    flume::Receiver<Envelope<M, R>>,
);

/// A ring handed from its sender to its receiver, with the sender's
/// "room available" wake.
pub(crate) type FreshRing<M, R> = (
    ShardId,
    rtrb::Consumer<Envelope<M, R>>,
    Arc<Wake>,
    Arc<RingLoad>,
);

/// Whether a shard runs, and which incarnation owns its inbox: read by
/// senders on every send.
#[derive(Debug)]
struct Liveness {
    open: AtomicBool,
    incarnation: AtomicU32,
}

/// One receiving shard's end of a mesh.
///
/// During a rolling reload two incarnations of the shard run at once, so
/// what the receiver takes and parks on is per incarnation: rings are made
/// for the incarnation that owned the inbox when they were made (and only
/// it takes them), and each incarnation parks on a [`Wake`] of its own,
/// which the senders of its rings notify. An old incarnation keeps
/// receiving what was sent to it; nothing sent to the new one reaches it.
pub(crate) struct Slot<M, R> {
    /// Per incarnation: its receiver, parked on an empty inbox.
    inboxes: Mutex<Vec<(u32, Arc<Wake>)>>,
    live: CachePadded<Liveness>,
    /// Rings made by senders since their receiver last looked, with the
    /// incarnation each was made for.
    fresh: Mutex<Vec<(u32, FreshRing<M, R>)>>,
    has_fresh: AtomicBool,
    /// The loads of every ring into this shard's current incarnation.
    loads: Mutex<Vec<Arc<RingLoad>>>,
    /// The "room available" wake of every ring into this shard, with the
    /// incarnation it was made for; see the module docs.
    senders: Mutex<Vec<(u32, Arc<Wake>)>>,
    /// Messages from the coordinator (any thread may send).
    pub(crate) from_coordinator: Channel<M, R>,
}

/// All the queues of one message type.
pub(crate) struct Mesh<M, R> {
    pub(crate) slots: Vec<Slot<M, R>>,
    pub(crate) capacity: usize,
    /// Messages from shards to the coordinator.
    pub(crate) to_coordinator: Channel<M, R>,
    /// Fired when any shard closes, so waiting calls can give up.
    pub(crate) closed: Arc<Event>,
}

impl<M: Send + 'static, R: Send + 'static> Mesh<M, R> {
    /// A mesh of `shards` shards, shard `i` open as `open[i]` says and
    /// owned by incarnation `owner[i]` (closed and 0 past either list).
    pub(crate) fn new(
        shards: usize,
        capacity: usize,
        open: &[bool],
        owner: &[u32],
        closed: Arc<Event>,
    ) -> Self {
        let slots = (0..shards)
            .map(|i| Slot {
                inboxes: Mutex::new(Vec::new()),
                live: CachePadded::new(Liveness {
                    open: AtomicBool::new(open.get(i).copied().unwrap_or(false)),
                    incarnation: AtomicU32::new(owner.get(i).copied().unwrap_or(0)),
                }),
                fresh: Mutex::new(Vec::new()),
                has_fresh: AtomicBool::new(false),
                loads: Mutex::new(Vec::new()),
                senders: Mutex::new(Vec::new()),
                from_coordinator: flume::bounded(capacity),
            })
            .collect();
        Self {
            slots,
            capacity,
            to_coordinator: flume::bounded(capacity),
            closed,
        }
    }

    /// Incarnation `incarnation` owns `shard`'s inbox from now on.
    pub(crate) fn activate(&self, shard: ShardId, incarnation: u32) {
        if let Some(slot) = self.slots.get(shard.get()) {
            slot.live.incarnation.store(incarnation, Ordering::Release);
            slot.live.open.store(true, Ordering::Release);
            // Senders waiting on an older incarnation's full ring send to
            // this one instead, as a new send would.
            slot.wake_senders(|i| i != incarnation);
        }
    }

    /// Incarnation `incarnation` of `shard` ended; when it owned the inbox
    /// (`owner`), the shard is closed.
    pub(crate) fn retire(&self, shard: ShardId, incarnation: u32, owner: bool) {
        let Some(slot) = self.slots.get(shard.get()) else {
            return;
        };
        if owner {
            slot.live.open.store(false, Ordering::Release);
            lock(&slot.loads).clear();
        }
        // What was made for it is useless now.
        lock(&slot.fresh).retain(|(i, _)| *i != incarnation);
        lock(&slot.inboxes).retain(|(i, _)| *i != incarnation);
        // Nobody makes room in its rings any more: their waiting senders
        // re-check, and see `Closed` (or a newer incarnation).
        slot.wake_senders(|i| i == incarnation);
    }

    /// Messages waiting for `shard` in this mesh.
    pub(crate) fn queued(&self, shard: ShardId) -> u64 {
        let Some(slot) = self.slots.get(shard.get()) else {
            return 0;
        };
        let rings: u64 = lock(&slot.loads).iter().map(|load| load.queued()).sum();
        rings + slot.from_coordinator.0.len() as u64
    }
}

impl<M, R> Slot<M, R> {
    pub(crate) fn is_open(&self) -> bool {
        self.live.open.load(Ordering::Acquire)
    }

    /// The incarnation that owns the inbox; rings of an older one are stale.
    pub(crate) fn incarnation(&self) -> u32 {
        self.live.incarnation.load(Ordering::Acquire)
    }

    /// The wake incarnation `incarnation` parks on (made on first use).
    pub(crate) fn inbox(&self, incarnation: u32) -> Arc<Wake> {
        let mut inboxes = lock(&self.inboxes);
        if let Some((_, wake)) = inboxes.iter().find(|(i, _)| *i == incarnation) {
            return wake.clone();
        }
        let wake = Arc::new(Wake::default());
        inboxes.push((incarnation, wake.clone()));
        wake
    }

    /// Hands a new ring from `from` to incarnation `incarnation` of this
    /// slot's shard.
    pub(crate) fn adopt(
        &self,
        incarnation: u32,
        from: ShardId,
        consumer: rtrb::Consumer<Envelope<M, R>>,
        space: Arc<Wake>,
        load: Arc<RingLoad>,
    ) {
        lock(&self.loads).push(load.clone());
        lock(&self.senders).push((incarnation, space.clone()));
        lock(&self.fresh).push((incarnation, (from, consumer, space, load)));
        self.has_fresh.store(true, Ordering::Release);
        self.inbox(incarnation).notify();
    }

    /// Rings handed to incarnation `incarnation` since it last looked.
    pub(crate) fn take_fresh(&self, incarnation: u32) -> Vec<FreshRing<M, R>> {
        if !self.has_fresh.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut fresh = lock(&self.fresh);
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut *fresh)
            .into_iter()
            .partition(|(i, _)| *i == incarnation);
        // Rings of another incarnation stay for it.
        self.has_fresh.store(!others.is_empty(), Ordering::Relaxed);
        *fresh = others;
        mine.into_iter().map(|(_, ring)| ring).collect()
    }

    /// Wakes the current incarnation's receiver (after a coordinator send).
    pub(crate) fn notify_current(&self) {
        self.inbox(self.incarnation()).notify();
    }

    pub(crate) fn has_fresh(&self) -> bool {
        self.has_fresh.load(Ordering::Acquire)
    }

    /// Wakes the senders parked on the rings of the incarnations `stale`
    /// picks, and forgets those rings: call after storing the lifecycle
    /// change that makes their sends end (see the module docs).
    fn wake_senders(&self, stale: impl Fn(u32) -> bool) {
        let woken: Vec<Arc<Wake>> = {
            let mut senders = lock(&self.senders);
            let (woken, kept) = std::mem::take(&mut *senders)
                .into_iter()
                .partition(|(i, _)| stale(*i));
            *senders = kept;
            woken.into_iter().map(|(_, wake)| wake).collect()
        };
        for wake in woken {
            wake.notify();
        }
    }
}
