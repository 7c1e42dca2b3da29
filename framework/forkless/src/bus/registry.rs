//! The [`Registry`]: every mesh of one runtime, by message type, and each
//! shard's liveness (is it open, which incarnation owns its inbox).
//!
//! Contract:
//! - **One mesh per `(M, R)`, made on first use** by whoever asks first (a
//!   shard or the coordinator); every later ask gets the same mesh.
//! - **Liveness is applied to every mesh.** [`Registry::activate`] and
//!   [`Registry::retire`] (called by the coordinator as incarnations start
//!   and end) update every mesh made so far, and a mesh made later starts
//!   from the same state: a type first used after a restart sees it.
//! - **Shards start open.** Until the coordinator starts a shard, its inbox
//!   belongs to its [`FIRST_INCARNATION`], so what is sent to it meanwhile
//!   waits for it.
//! - **A retired owner wakes its waiters.** Retiring the incarnation that
//!   owns a shard's inbox closes the shard, wakes the senders parked on its
//!   rings (`mesh.rs`) and the calls waiting on its replies.
//! - Every method takes one short lock; none waits for a shard.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use event_listener::Event;

use super::mesh::Mesh;
use super::sync::{Mutex, lock};
use crate::ShardId;

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
        Mesh::activate(self, shard, incarnation);
    }

    fn retire(&self, shard: ShardId, incarnation: u32, owner: bool) {
        Mesh::retire(self, shard, incarnation, owner);
    }

    fn queued(&self, shard: ShardId) -> u64 {
        Mesh::queued(self, shard)
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
            &state.open,
            &state.owner,
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

#[cfg(all(test, not(loom)))]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::Poll;

    use super::*;
    use crate::bus::{Envelope, LocalEnd, Origin};
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
