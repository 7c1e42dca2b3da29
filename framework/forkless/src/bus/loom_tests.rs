//! Model tests of the bus's park/notify protocol (as tokio's
//! `sync/tests/loom_*.rs`): every interleaving of the real [`LocalEnd`],
//! [`Mesh`](super::mesh::Mesh) and [`Registry`] code, with the atomics,
//! fences, locks and wake cells of `sync.rs` swapped for loom's. A lost
//! wake-up shows as loom reporting a deadlock (a `block_on` nobody wakes).
//!
//! The rings (`rtrb`) are not modelled: loom runs every thread on one OS
//! thread, so a push or a pop is one indivisible step, seen at once. What
//! is checked is the protocol around them (`ring.rs`, `mesh.rs`).
//!
//! Run with (a release build keeps it short):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p forkless --release --lib --target-dir target/loom loom
//! ```

use std::sync::Arc;

use loom::future::block_on;
use loom::thread;

use super::local::recv;
use super::mesh::Mesh;
use super::registry::{FIRST_INCARNATION, Registry};
use super::{LocalEnd, TrySendError};
use crate::ShardId;
use crate::shard::ShardCounters;

const SENDER: usize = 0;
const RECEIVER: usize = 1;

/// Incarnation `incarnation` of shard `shard`'s end of `mesh`.
fn end(shard: usize, incarnation: u32, mesh: &Arc<Mesh<u32, ()>>) -> LocalEnd<u32, ()> {
    let counters = Arc::new(ShardCounters::default());
    LocalEnd::new(ShardId::new(shard), incarnation, mesh.clone(), counters)
}

/// Sends `msg` to the receiver, which must have room for it.
fn push_now(sender: &LocalEnd<u32, ()>, msg: u32) {
    let sent = sender.try_push(ShardId::new(RECEIVER), sender.envelope(msg, None));
    assert!(sent.is_ok(), "room for {msg}");
}

/// A send waiting for room, on its own thread: what it gave back, if it failed.
fn push_waiting(sender: LocalEnd<u32, ()>, msg: u32) -> thread::JoinHandle<Result<(), u32>> {
    thread::spawn(move || {
        let push = sender.push(ShardId::new(RECEIVER), sender.envelope(msg, None));
        block_on(push).map_err(|envelope| envelope.msg)
    })
}

/// Two running shards, a mesh of `capacity` and one end on each.
fn two_shards(capacity: usize) -> (Registry, Arc<Mesh<u32, ()>>, LocalEnd<u32, ()>) {
    let registry = Registry::new(2, capacity);
    for shard in [SENDER, RECEIVER] {
        registry.activate(ShardId::new(shard), FIRST_INCARNATION);
    }
    let mesh = registry.mesh::<u32, ()>();
    let sender = end(SENDER, FIRST_INCARNATION, &mesh);
    (registry, mesh, sender)
}

#[test]
fn loom_a_send_wakes_a_parked_receiver() {
    loom::model(|| {
        let (_registry, mesh, sender) = two_shards(4);
        let receiver = end(RECEIVER, FIRST_INCARNATION, &mesh);
        // The receiver already holds the ring: only the push and the park race.
        push_now(&sender, 0);
        assert_eq!(receiver.try_recv().map(|e| e.msg), Some(0));

        let sending = thread::spawn(move || push_now(&sender, 1));
        assert_eq!(block_on(recv(&receiver)).msg, 1);
        sending.join().expect("the sender ends");
    });
}

#[test]
fn loom_a_first_send_wakes_a_parked_receiver() {
    loom::model(|| {
        // The ring is made by this very send, and handed over as the
        // receiver parks.
        let (_registry, mesh, sender) = two_shards(4);
        let receiver = end(RECEIVER, FIRST_INCARNATION, &mesh);
        let sending = thread::spawn(move || push_now(&sender, 1));
        assert_eq!(block_on(recv(&receiver)).msg, 1);
        sending.join().expect("the sender ends");
    });
}

#[test]
fn loom_a_pop_wakes_a_sender_parked_on_a_full_ring() {
    loom::model(|| {
        let (_registry, mesh, sender) = two_shards(1);
        let receiver = end(RECEIVER, FIRST_INCARNATION, &mesh);
        push_now(&sender, 0);

        let sending = push_waiting(sender, 1);
        assert_eq!(block_on(recv(&receiver)).msg, 0);
        assert_eq!(block_on(recv(&receiver)).msg, 1);
        assert_eq!(sending.join().expect("the sender ends"), Ok(()));
    });
}

#[test]
fn loom_a_retiring_incarnation_fails_its_parked_senders() {
    loom::model(|| {
        let (registry, _mesh, sender) = two_shards(1);
        push_now(&sender, 0);

        let sending = push_waiting(sender, 1);
        registry.retire(ShardId::new(RECEIVER), FIRST_INCARNATION);
        assert_eq!(
            sending.join().expect("the sender ends"),
            Err(1),
            "Closed, with the message"
        );
    });
}

#[test]
fn loom_a_sender_parked_across_a_restart_fails_or_reaches_the_next_incarnation() {
    loom::model(|| {
        let (registry, mesh, sender) = two_shards(1);
        push_now(&sender, 0);

        let sending = push_waiting(sender, 1);
        let shard = ShardId::new(RECEIVER);
        registry.retire(shard, FIRST_INCARNATION);
        registry.activate(shard, FIRST_INCARNATION + 1);
        let next = end(RECEIVER, FIRST_INCARNATION + 1, &mesh);
        match sending.join().expect("the sender ends") {
            Ok(()) => assert_eq!(next.try_recv().map(|e| e.msg), Some(1)),
            Err(msg) => assert_eq!(msg, 1, "Closed while the shard was down"),
        }
    });
}

#[test]
fn loom_a_sender_parked_across_a_rolling_reload_reaches_the_new_incarnation() {
    loom::model(|| {
        let (registry, mesh, sender) = two_shards(1);
        let old = end(RECEIVER, FIRST_INCARNATION, &mesh);
        push_now(&sender, 0);

        let sending = push_waiting(sender, 1);
        registry.activate(ShardId::new(RECEIVER), FIRST_INCARNATION + 1);
        assert_eq!(sending.join().expect("the sender ends"), Ok(()));
        let new = end(RECEIVER, FIRST_INCARNATION + 1, &mesh);
        assert_eq!(new.try_recv().map(|e| e.msg), Some(1));
        assert_eq!(
            old.try_recv().map(|e| e.msg),
            Some(0),
            "the old one keeps its own"
        );
    });
}

#[test]
fn loom_a_full_ring_answers_full_not_closed() {
    // Not a race: the base the waiting-sender models start from.
    loom::model(|| {
        let (_registry, _mesh, sender) = two_shards(1);
        push_now(&sender, 0);
        let again = sender.try_push(ShardId::new(RECEIVER), sender.envelope(1, None));
        assert!(matches!(again, Err(TrySendError::Full(_))));
    });
}
