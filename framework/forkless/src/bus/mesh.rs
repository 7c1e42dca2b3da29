//! The shared half of the bus: one [`Mesh`] per message type, with one
//! [`Slot`] per receiving shard. Everything here is `Send + Sync`; the
//! shard-local halves live in `local.rs`.
//!
//! Rings are per (sender, receiver) pair and made on first use: the sender
//! creates the ring, keeps the producer and hands the consumer to the
//! receiver's slot (`fresh`). A slot's `open` flag says whether its shard is
//! running; senders check it before every push, so a stopped shard answers
//! `Closed` even when its tasks were leaked with its thread.
//!
//! A sender parked on a full ring waits for its receiver to make room, which
//! a stopped incarnation never does. So the slot also keeps each ring's
//! "room available" wake (`senders`), and when an incarnation stops owning
//! the inbox (it retires, or a newer one is activated) the wakes of its
//! rings are notified: the senders re-check and see `Closed`, or the newer
//! incarnation. No wake is lost: a sender parks (a `SeqCst` fence) before
//! its last check of `open` and the generation, and the lifecycle change
//! stores them before notifying (a `SeqCst` fence), so one of the two sees
//! the other; a ring adopted after the wakes were taken was made under the
//! same lock, after the change, so its sender sees the change. Only ring
//! creation and lifecycle changes touch this list, never a push or a pop.
//!
//! Each ring also has a [`RingLoad`]: messages pushed (counted by its
//! sender) and popped (counted by its receiver), each on its own cache line
//! with a single writer, so the admin endpoint can read a shard's queue
//! depth from any thread without asking the shard.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_utils::CachePadded;
use event_listener::Event;
use futures::task::AtomicWaker;

use super::Envelope;
use crate::ShardId;

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

/// Messages pushed into and popped from one ring; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct RingLoad {
    pushed: CachePadded<AtomicU64>,
    popped: CachePadded<AtomicU64>,
}

impl RingLoad {
    /// The sender pushed one message (the sender's thread only).
    pub(crate) fn pushed(&self) {
        let pushed = self.pushed.load(Ordering::Relaxed);
        self.pushed.store(pushed + 1, Ordering::Relaxed);
    }

    /// The receiver popped one message (the receiver's thread only).
    pub(crate) fn popped(&self) {
        let popped = self.popped.load(Ordering::Relaxed);
        self.popped.store(popped + 1, Ordering::Relaxed);
    }

    /// Messages waiting in the ring, as far as any thread can tell.
    fn queued(&self) -> u64 {
        let popped = self.popped.load(Ordering::Relaxed);
        self.pushed.load(Ordering::Relaxed).saturating_sub(popped)
    }
}

/// Wakes one side of a ring: the receiver when it parked on an empty inbox,
/// or a sender that parked on a full ring.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    waiting: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    /// Registers the current task; the caller must re-check its condition
    /// after this (the `SeqCst` fence pairs with [`Wake::notify`]).
    pub(crate) fn park(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
        self.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Wakes the parked side, if any. Call after publishing.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Marks the parked side as running again.
    pub(crate) fn unpark(&self) {
        self.waiting.store(false, Ordering::Relaxed);
    }
}

/// Whether a shard runs, and which incarnation owns its inbox (its number):
/// read by senders on every send.
#[derive(Debug, Default)]
struct Liveness {
    open: AtomicBool,
    generation: AtomicU64,
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
    inboxes: Mutex<Vec<(u64, Arc<Wake>)>>,
    live: CachePadded<Liveness>,
    /// Rings made by senders since their receiver last looked, with the
    /// incarnation each was made for.
    fresh: Mutex<Vec<(u64, FreshRing<M, R>)>>,
    has_fresh: AtomicBool,
    /// The loads of every ring into this shard's current incarnation.
    loads: Mutex<Vec<Arc<RingLoad>>>,
    /// The "room available" wake of every ring into this shard, with the
    /// incarnation it was made for; see the module docs.
    senders: Mutex<Vec<(u64, Arc<Wake>)>>,
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
    fn new(shards: usize, capacity: usize, state: &RegistryState, closed: Arc<Event>) -> Self {
        let slots = (0..shards)
            .map(|i| Slot {
                inboxes: Mutex::new(Vec::new()),
                live: CachePadded::new(Liveness {
                    open: AtomicBool::new(state.open.get(i).copied().unwrap_or(false)),
                    generation: AtomicU64::new(state.owner.get(i).copied().map_or(0, u64::from)),
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
}

impl<M, R> Slot<M, R> {
    pub(crate) fn is_open(&self) -> bool {
        self.live.open.load(Ordering::Acquire)
    }

    /// The incarnation that owns the inbox; rings of an older one are stale.
    pub(crate) fn generation(&self) -> u64 {
        self.live.generation.load(Ordering::Acquire)
    }

    /// The wake incarnation `generation` parks on (made on first use).
    pub(crate) fn inbox(&self, generation: u64) -> Arc<Wake> {
        let mut inboxes = lock(&self.inboxes);
        if let Some((_, wake)) = inboxes.iter().find(|(g, _)| *g == generation) {
            return wake.clone();
        }
        let wake = Arc::new(Wake::default());
        inboxes.push((generation, wake.clone()));
        wake
    }

    /// Hands a new ring from `from` to incarnation `generation` of this
    /// slot's shard.
    pub(crate) fn adopt(
        &self,
        generation: u64,
        from: ShardId,
        consumer: rtrb::Consumer<Envelope<M, R>>,
        space: Arc<Wake>,
        load: Arc<RingLoad>,
    ) {
        lock(&self.loads).push(load.clone());
        lock(&self.senders).push((generation, space.clone()));
        lock(&self.fresh).push((generation, (from, consumer, space, load)));
        self.has_fresh.store(true, Ordering::Release);
        self.inbox(generation).notify();
    }

    /// Rings handed to incarnation `generation` since it last looked.
    pub(crate) fn take_fresh(&self, generation: u64) -> Vec<FreshRing<M, R>> {
        if !self.has_fresh.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut fresh = lock(&self.fresh);
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut *fresh)
            .into_iter()
            .partition(|(g, _)| *g == generation);
        // Rings of another incarnation stay for it.
        self.has_fresh.store(!others.is_empty(), Ordering::Relaxed);
        *fresh = others;
        mine.into_iter().map(|(_, ring)| ring).collect()
    }

    /// Wakes the current incarnation's receiver (after a coordinator send).
    pub(crate) fn notify_current(&self) {
        self.inbox(self.generation()).notify();
    }

    pub(crate) fn has_fresh(&self) -> bool {
        self.has_fresh.load(Ordering::Acquire)
    }

    /// Wakes the senders parked on the rings of the incarnations `stale`
    /// picks, and forgets those rings: call after storing the lifecycle
    /// change that makes their sends end (see the module docs).
    fn wake_senders(&self, stale: impl Fn(u64) -> bool) {
        let woken: Vec<Arc<Wake>> = {
            let mut senders = lock(&self.senders);
            let (woken, kept) = std::mem::take(&mut *senders)
                .into_iter()
                .partition(|(g, _)| stale(*g));
            *senders = kept;
            woken.into_iter().map(|(_, wake)| wake).collect()
        };
        for wake in woken {
            wake.notify();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The number of every shard's first incarnation (the coordinator counts
/// from it). Until the coordinator starts a shard, its inbox belongs to
/// this incarnation: what other shards send it meanwhile waits there.
pub(crate) const FIRST_INCARNATION: u32 = 1;

/// Open/close of shards, applied to every mesh of a runtime.
trait Lifecycle: Send + Sync {
    /// Incarnation `incarnation` owns `shard`'s inbox from now on.
    fn activate(&self, shard: ShardId, incarnation: u32);

    /// Incarnation `incarnation` of `shard` ended; when it owned the inbox
    /// (`owner`), the shard is closed.
    fn retire(&self, shard: ShardId, incarnation: u32, owner: bool);

    /// Messages waiting for `shard` in this mesh.
    fn queued(&self, shard: ShardId) -> u64;
}

impl<M: Send + 'static, R: Send + 'static> Lifecycle for Mesh<M, R> {
    fn activate(&self, shard: ShardId, incarnation: u32) {
        if let Some(slot) = self.slots.get(shard.get()) {
            slot.live
                .generation
                .store(u64::from(incarnation), Ordering::Release);
            slot.live.open.store(true, Ordering::Release);
            // Senders waiting on an older incarnation's full ring send to
            // this one instead, as a new send would.
            let generation = u64::from(incarnation);
            slot.wake_senders(|g| g != generation);
        }
    }

    fn retire(&self, shard: ShardId, incarnation: u32, owner: bool) {
        let Some(slot) = self.slots.get(shard.get()) else {
            return;
        };
        let generation = u64::from(incarnation);
        if owner {
            slot.live.open.store(false, Ordering::Release);
            lock(&slot.loads).clear();
        }
        // What was made for it is useless now.
        lock(&slot.fresh).retain(|(g, _)| *g != generation);
        lock(&slot.inboxes).retain(|(g, _)| *g != generation);
        // Nobody makes room in its rings any more: their waiting senders
        // re-check, and see `Closed` (or a newer incarnation).
        slot.wake_senders(|g| g == generation);
    }

    fn queued(&self, shard: ShardId) -> u64 {
        let Some(slot) = self.slots.get(shard.get()) else {
            return 0;
        };
        let rings: u64 = lock(&slot.loads).iter().map(|load| load.queued()).sum();
        rings + slot.from_coordinator.0.len() as u64
    }
}

struct Entry {
    typed: Arc<dyn Any + Send + Sync>,
    lifecycle: Arc<dyn Lifecycle>,
}

/// Every mesh of one runtime, by message type.
pub(crate) struct Registry {
    shards: usize,
    capacity: usize,
    state: Mutex<RegistryState>,
    closed: Arc<Event>,
}

struct RegistryState {
    meshes: HashMap<TypeId, Entry>,
    open: Vec<bool>,
    /// The incarnation of each shard that owns its inbox.
    owner: Vec<u32>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("shards", &self.shards)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry for `shards` shards, each open to senders from the start
    /// and owned by its [`FIRST_INCARNATION`].
    pub(crate) fn new(shards: usize, capacity: usize) -> Self {
        Self {
            shards,
            capacity: capacity.max(1),
            state: Mutex::new(RegistryState {
                meshes: HashMap::new(),
                open: vec![true; shards],
                // The coordinator starts shards one after another, and a
                // shard may send at once (a broadcast at start): it can reach
                // a shard not activated yet. Rings are made for the owner
                // the slot names, so that owner must be the incarnation that
                // will start: with a placeholder no incarnation has, the ring
                // would go to nobody and its messages be lost.
                owner: vec![FIRST_INCARNATION; shards],
            }),
            closed: Arc::new(Event::new()),
        }
    }

    pub(crate) fn shards(&self) -> usize {
        self.shards
    }

    /// The mesh of `(M, R)`, made on first use.
    pub(crate) fn mesh<M: Send + 'static, R: Send + 'static>(&self) -> Arc<Mesh<M, R>> {
        let mut state = lock(&self.state);
        let key = TypeId::of::<(M, R)>();
        if let Some(entry) = state.meshes.get(&key)
            && let Ok(mesh) = entry.typed.clone().downcast::<Mesh<M, R>>()
        {
            return mesh;
        }
        let mesh = Arc::new(Mesh::<M, R>::new(
            self.shards,
            self.capacity,
            &state,
            self.closed.clone(),
        ));
        state.meshes.insert(
            key,
            Entry {
                typed: mesh.clone(),
                lifecycle: mesh.clone(),
            },
        );
        mesh
    }

    /// Messages waiting for `shard`, over every message type: in its rings
    /// from other shards and in its queue from the coordinator.
    pub(crate) fn queued(&self, shard: ShardId) -> u64 {
        let state = lock(&self.state);
        state
            .meshes
            .values()
            .map(|entry| entry.lifecycle.queued(shard))
            .sum()
    }

    /// Hands `shard`'s inbox to its incarnation `incarnation`: messages
    /// sent from now on reach that incarnation (on a rolling reload, the
    /// one before keeps what was already queued for it).
    pub(crate) fn activate(&self, shard: ShardId, incarnation: u32) {
        let mut state = lock(&self.state);
        if let Some(owner) = state.owner.get_mut(shard.get()) {
            *owner = incarnation;
        }
        if let Some(open) = state.open.get_mut(shard.get()) {
            *open = true;
        }
        for entry in state.meshes.values() {
            entry.lifecycle.activate(shard, incarnation);
        }
    }

    /// Incarnation `incarnation` of `shard` ended: when it still owned the
    /// inbox, the shard is closed (senders see `Closed`, waiting calls give
    /// up) until the next [`activate`](Self::activate).
    pub(crate) fn retire(&self, shard: ShardId, incarnation: u32) {
        let mut state = lock(&self.state);
        let owner = state.owner.get(shard.get()) == Some(&incarnation);
        if owner && let Some(open) = state.open.get_mut(shard.get()) {
            *open = false;
        }
        for entry in state.meshes.values() {
            entry.lifecycle.retire(shard, incarnation, owner);
        }
        drop(state);
        if owner {
            self.closed.notify(usize::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    use super::*;
    use crate::bus::{LocalEnd, Origin};
    use crate::shard::ShardCounters;

    #[test]
    fn queue_depth_counts_what_waits_for_a_shard() {
        let registry = Registry::new(2, 8);
        let mesh = registry.mesh::<u32, ()>();
        let (one, two) = (ShardId::new(0), ShardId::new(1));
        let counters = [
            Arc::new(ShardCounters::default()),
            Arc::new(ShardCounters::default()),
        ];
        let sender = LocalEnd::new(one, FIRST_INCARNATION, mesh.clone(), counters[0].clone());
        let receiver = LocalEnd::new(two, FIRST_INCARNATION, mesh.clone(), counters[1].clone());
        for n in 0..3 {
            assert!(sender.try_push(two, sender.envelope(n, None)).is_ok());
        }
        let from_coordinator = Envelope::new(Origin::Coordinator, 9, None);
        assert!(
            mesh.slots[1]
                .from_coordinator
                .0
                .try_send(from_coordinator)
                .is_ok()
        );
        assert_eq!(registry.queued(two), 4);
        assert_eq!(registry.queued(one), 0);

        assert_eq!(receiver.try_recv().map(|e| e.msg), Some(0));
        assert_eq!(registry.queued(two), 3);
        assert_eq!(counters[0].snapshot().bus_sent, 3);
        assert_eq!(counters[1].snapshot().bus_received, 1);

        // A stopped shard's rings are gone with it; an older incarnation
        // ending changes nothing.
        registry.activate(two, 2);
        registry.retire(two, 1);
        assert_eq!(
            registry.queued(two),
            3,
            "incarnation 1 did not own the inbox"
        );
        registry.retire(two, 2);
        assert_eq!(
            registry.queued(two),
            1,
            "only the coordinator's queue is left"
        );
    }

    #[test]
    fn a_send_to_a_shard_not_started_yet_waits_for_its_first_incarnation() {
        // Shards start one after another: shard 0 may send before the
        // coordinator has even activated shard 1.
        let registry = Registry::new(2, 8);
        let (one, two) = (ShardId::new(0), ShardId::new(1));
        let counters = || Arc::new(ShardCounters::default());
        registry.activate(one, FIRST_INCARNATION);
        let mesh = registry.mesh::<u32, ()>();
        let sender = LocalEnd::new(one, FIRST_INCARNATION, mesh.clone(), counters());
        assert!(sender.try_push(two, sender.envelope(1, None)).is_ok());

        registry.activate(two, FIRST_INCARNATION);
        let receiver = LocalEnd::new(two, FIRST_INCARNATION, mesh.clone(), counters());
        assert_eq!(receiver.try_recv().map(|e| e.msg), Some(1));

        // The sender's ring and wake, made before the receiver existed, are
        // the ones it reads and parks on.
        let woken = Arc::new(Woken::default());
        let waker = futures::task::waker(woken.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(receiver.poll_recv(&mut cx).is_pending());
        assert!(sender.try_push(two, sender.envelope(2, None)).is_ok());
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "the parked receiver was woken"
        );
        assert_eq!(receiver.try_recv().map(|e| e.msg), Some(2));
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Woken(AtomicU64);

    impl futures::task::ArcWake for Woken {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A push in flight: `Err` gives the envelope back.
    type Push<'a> = Pin<Box<dyn Future<Output = Result<(), Envelope<u32, ()>>> + 'a>>;

    /// A `push` of `msg` from `sender` to `to` on a full ring, polled once:
    /// it waits, and the `Woken` counts its wake-ups.
    fn parked_push(sender: &LocalEnd<u32, ()>, to: ShardId, msg: u32) -> (Push<'_>, Arc<Woken>) {
        let woken = Arc::new(Woken::default());
        let waker = futures::task::waker(woken.clone());
        let mut push = Box::pin(sender.push(to, sender.envelope(msg, None)));
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(push.as_mut().poll(&mut cx).is_pending(), "the ring is full");
        (push, woken)
    }

    fn poll_once<T>(future: Pin<&mut (dyn Future<Output = T> + '_)>) -> Poll<T> {
        let waker = futures::task::noop_waker();
        future.poll(&mut std::task::Context::from_waker(&waker))
    }

    #[test]
    fn a_send_waiting_for_room_is_woken_and_fails_when_its_receiver_stops() {
        let registry = Registry::new(2, 1);
        let mesh = registry.mesh::<u32, ()>();
        let (one, two) = (ShardId::new(0), ShardId::new(1));
        let counters = || Arc::new(ShardCounters::default());
        registry.activate(one, 1);
        registry.activate(two, 1);
        let sender = LocalEnd::new(one, 1, mesh.clone(), counters());
        assert!(sender.try_push(two, sender.envelope(1, None)).is_ok());
        let (mut push, woken) = parked_push(&sender, two, 2);

        registry.retire(two, 1);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "the stop woke it");
        match poll_once(push.as_mut()) {
            Poll::Ready(Err(envelope)) => assert_eq!(envelope.msg, 2),
            other => panic!(
                "expected Closed with the message, got {:?}",
                other.is_ready()
            ),
        }
    }

    #[test]
    fn a_send_waiting_for_room_goes_to_the_next_incarnation() {
        for restart in [false, true] {
            let registry = Registry::new(2, 1);
            let mesh = registry.mesh::<u32, ()>();
            let (one, two) = (ShardId::new(0), ShardId::new(1));
            let counters = || Arc::new(ShardCounters::default());
            registry.activate(one, 1);
            registry.activate(two, 1);
            let sender = LocalEnd::new(one, 1, mesh.clone(), counters());
            let old = LocalEnd::new(two, 1, mesh.clone(), counters());
            assert!(sender.try_push(two, sender.envelope(1, None)).is_ok());
            let (mut push, woken) = parked_push(&sender, two, 2);

            // A restart (the old one dies, then the new one starts) or a
            // rolling reload (the new one starts while the old one runs).
            if restart {
                registry.retire(two, 1);
            }
            registry.activate(two, 2);
            assert!(woken.0.load(Ordering::SeqCst) >= 1, "restart {restart}");
            assert!(
                matches!(poll_once(push.as_mut()), Poll::Ready(Ok(()))),
                "restart {restart}: sent to the new incarnation"
            );
            let new = LocalEnd::new(two, 2, mesh.clone(), counters());
            assert_eq!(new.try_recv().map(|e| e.msg), Some(2));
            if !restart {
                assert_eq!(
                    old.try_recv().map(|e| e.msg),
                    Some(1),
                    "the old one keeps its own"
                );
            }
        }
    }

    #[test]
    fn two_incarnations_of_one_shard_each_get_what_was_sent_to_them() {
        let registry = Registry::new(2, 8);
        let mesh = registry.mesh::<u32, ()>();
        let (one, two) = (ShardId::new(0), ShardId::new(1));
        let counters = || Arc::new(ShardCounters::default());
        registry.activate(two, 1);
        let sender = LocalEnd::new(one, 1, mesh.clone(), counters());
        let old = LocalEnd::new(two, 1, mesh.clone(), counters());
        assert!(sender.try_push(two, sender.envelope(1, None)).is_ok());

        // A rolling reload: incarnation 2 starts while 1 still runs.
        registry.activate(two, 2);
        let new = LocalEnd::new(two, 2, mesh.clone(), counters());
        assert!(sender.try_push(two, sender.envelope(2, None)).is_ok());
        // The old one takes only its own ring, even looking first.
        assert_eq!(old.try_recv().map(|e| e.msg), Some(1));
        assert_eq!(old.try_recv().map(|e| e.msg), None);
        assert_eq!(new.try_recv().map(|e| e.msg), Some(2));

        // The old one ending leaves the new one's inbox open.
        registry.retire(two, 1);
        assert!(sender.try_push(two, sender.envelope(3, None)).is_ok());
        assert_eq!(new.try_recv().map(|e| e.msg), Some(3));
    }
}
