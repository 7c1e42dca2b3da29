//! The rooms of one shard, and how a message reaches every client of a room
//! in the same order whatever shard each client is on.
//!
//! Every room has an **owner** shard ([`RoomName::owner`]). A post goes to
//! the owner (over the bus, or straight into its queue when local); the
//! owner's one **sequencer** task numbers the room's messages (`seq` 0, 1,
//! 2, ...), delivers each to its own clients and broadcasts it to every
//! other shard, one message after the other. Each shard delivers a room's
//! messages to its local clients in `seq` order: the bus keeps the order of
//! one sender to one receiver, and a message that still arrives early is
//! held until the ones before it came. So every client sees the same
//! sequence (from the point it joined).
//!
//! Why an owner: two shards broadcasting on their own could interleave
//! differently at different receivers. An owner per room spreads the
//! sequencing work over the shards.
//!
//! Two message types, two sets of bus queues: posts (to owners) and
//! deliveries (from owners). The delivery receiver never waits (a client
//! queue that is full drops its client instead), so a sequencer waiting for
//! room on a delivery queue always gets it: no cycle of shards waiting on
//! each other. Posts wait for room in the owner's queue (backpressure).
//!
//! A shard keeps state only for rooms with local clients, plus, as owner,
//! the next number of every room it ever sequenced (a few bytes per room,
//! for as long as it runs).
//!
//! An owner numbers from 0 again after a restart; its deliveries carry an
//! **epoch** (random per start), and a receiver that sees a new epoch for a
//! room starts over from that message.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::rc::Rc;

use forkless::bus::{Bus, Reply};
use forkless::{Shard, ShardId};
use futures::channel::oneshot;
use serde_json::json;
use tungstenite::Utf8Bytes;

use crate::outbox::Outbox;
use crate::room::RoomName;

/// Posts waiting for the local sequencer, at most.
const QUEUE: usize = 1024;

/// Early deliveries a room holds while waiting for a missing one; beyond,
/// the gap is given up (cannot happen while the bus keeps its order).
const MAX_EARLY: usize = 4096;

/// What happens in a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Message,
    Join,
    Leave,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::Message => "message",
            Event::Join => "join",
            Event::Leave => "leave",
        }
    }
}

/// A post, on its way to the room's owner.
#[derive(Debug)]
pub(crate) struct Post {
    pub(crate) room: RoomName,
    pub(crate) event: Event,
    pub(crate) from: String,
    pub(crate) text: String,
}

/// A sequenced message, from the owner to every shard.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    room: RoomName,
    epoch: u64,
    seq: u64,
    /// The JSON text frame, made once by the owner.
    frame: Utf8Bytes,
}

/// Who waits for the number a post gets.
enum Ack {
    None,
    Bus(Reply<u64>),
    Local(oneshot::Sender<u64>),
}

struct Queued {
    post: Post,
    ack: Ack,
}

/// The post could not be sequenced (its owner is not running).
#[derive(Debug)]
pub(crate) struct Unposted(pub(crate) ShardId);

/// One shard's rooms; see the module docs.
pub(crate) struct Hub {
    me: ShardId,
    shards: usize,
    epoch: u64,
    posts: Bus<Post, u64>,
    deliveries: Bus<Delivery>,
    queue: flume::Sender<Queued>,
    /// Rooms with clients on this shard.
    rooms: RefCell<HashMap<RoomName, Room>>,
    /// Rooms this shard owns: the next number of each.
    next_seq: RefCell<HashMap<RoomName, u64>>,
    next_client: Cell<u64>,
    guests: Cell<u64>,
}

#[derive(Default)]
struct Room {
    clients: BTreeMap<u64, Rc<Outbox>>,
    /// The owner's epoch and the next number to deliver.
    expected: Option<(u64, u64)>,
    early: BTreeMap<u64, Utf8Bytes>,
}

impl Hub {
    /// Makes this shard's hub and starts its tasks (the sequencer and the
    /// two bus receivers).
    pub(crate) fn start(shard: &Shard) -> Rc<Hub> {
        let (queue, queued) = flume::bounded(QUEUE);
        let hub = Rc::new(Hub {
            me: shard.id(),
            shards: shard.count(),
            epoch: RandomState::new().hash_one(shard.id().get()),
            posts: shard.bus_with_reply(),
            deliveries: shard.bus(),
            queue,
            rooms: RefCell::default(),
            next_seq: RefCell::default(),
            next_client: Cell::new(0),
            guests: Cell::new(0),
        });
        forkless::spawn(sequence(hub.clone(), queued)).detach();
        forkless::spawn(receive_posts(hub.clone())).detach();
        forkless::spawn(receive_deliveries(hub.clone())).detach();
        hub
    }

    pub(crate) fn shard(&self) -> ShardId {
        self.me
    }

    /// A name for a client that gave none: `guest-{shard}-{n}`.
    pub(crate) fn guest_name(&self) -> String {
        let n = self.guests.get();
        self.guests.set(n + 1);
        format!("guest-{}-{n}", self.me)
    }

    /// A new client of `room` on this shard, with `first` as the first frame
    /// of its queue; it gets every message delivered from now on.
    pub(crate) fn join(&self, room: &RoomName, first: Utf8Bytes) -> (u64, Rc<Outbox>) {
        let id = self.next_client.get();
        self.next_client.set(id + 1);
        let outbox = Rc::new(Outbox::default());
        // A fresh queue has room.
        let _ = outbox.push(first);
        let mut rooms = self.rooms.borrow_mut();
        let entry = rooms.entry(room.clone()).or_default();
        entry.clients.insert(id, outbox.clone());
        (id, outbox)
    }

    /// The client left (or was dropped).
    pub(crate) fn leave(&self, room: &RoomName, id: u64) {
        let mut rooms = self.rooms.borrow_mut();
        if let Some(entry) = rooms.get_mut(room) {
            entry.clients.remove(&id);
            if entry.clients.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Sends `post` to its room's owner without waiting for its number;
    /// a client's posts keep their order.
    pub(crate) async fn post(&self, post: Post) -> Result<(), Unposted> {
        let owner = post.room.owner(self.shards);
        if owner == self.me {
            let queued = Queued {
                post,
                ack: Ack::None,
            };
            return self
                .queue
                .send_async(queued)
                .await
                .map_err(|_| Unposted(owner));
        }
        self.posts
            .send(owner, post)
            .await
            .map_err(|_| Unposted(owner))
    }

    /// Sends `post` to its room's owner and waits for its number.
    pub(crate) async fn post_numbered(&self, post: Post) -> Result<u64, Unposted> {
        let owner = post.room.owner(self.shards);
        if owner == self.me {
            let (ack, number) = oneshot::channel();
            let queued = Queued {
                post,
                ack: Ack::Local(ack),
            };
            self.queue
                .send_async(queued)
                .await
                .map_err(|_| Unposted(owner))?;
            return number.await.map_err(|_| Unposted(owner));
        }
        self.posts
            .call(owner, post)
            .await
            .map_err(|_| Unposted(owner))
    }

    /// Numbers a post of a room this shard owns.
    fn number(&self, post: Post) -> (u64, Delivery) {
        let seq = {
            let mut next = self.next_seq.borrow_mut();
            let next = next.entry(post.room.clone()).or_insert(0);
            let seq = *next;
            *next += 1;
            seq
        };
        let frame = json!({
            "kind": post.event.as_str(),
            "room": post.room.as_str(),
            "seq": seq,
            "from": post.from,
            "text": post.text,
        })
        .to_string();
        let delivery = Delivery {
            room: post.room,
            epoch: self.epoch,
            seq,
            frame: frame.into(),
        };
        (seq, delivery)
    }

    /// Hands a delivery to this shard's clients of its room, in `seq` order.
    fn deliver(&self, delivery: Delivery) {
        if let Some(room) = self.rooms.borrow_mut().get_mut(&delivery.room) {
            room.accept(delivery.epoch, delivery.seq, delivery.frame);
        }
        // Otherwise no clients here.
    }
}

impl Room {
    /// Takes message `seq` of the owner's `epoch`: hands it and the held
    /// messages after it to the clients in order, holds it if it is early,
    /// drops it if it was handed over already.
    fn accept(&mut self, epoch: u64, seq: u64, frame: Utf8Bytes) {
        let next = match self.expected {
            Some((known, next)) if known == epoch => next,
            // The first message since clients joined here, or a restarted owner.
            _ => {
                self.early.clear();
                seq
            }
        };
        if seq < next {
            return;
        }
        self.early.insert(seq, frame);
        let mut next = next;
        if !self.early.contains_key(&next) {
            if self.early.len() <= MAX_EARLY {
                return;
            }
            tracing::warn!(missing = next, "giving up on a missing message");
            next = self.early.keys().next().copied().unwrap_or(seq);
        }
        while let Some(frame) = self.early.remove(&next) {
            self.fan_out(&frame);
            next += 1;
        }
        self.expected = Some((epoch, next));
    }

    /// Queues `frame` for every client; drops the clients that are too far behind.
    fn fan_out(&mut self, frame: &Utf8Bytes) {
        self.clients
            .retain(|_, outbox| outbox.push(frame.clone()).is_ok());
    }
}

/// The sequencer: numbers the posts of the rooms this shard owns, one at a
/// time, delivers them here and broadcasts them to every other shard.
async fn sequence(hub: Rc<Hub>, queued: flume::Receiver<Queued>) {
    while let Ok(Queued { post, ack }) = queued.recv_async().await {
        let (seq, delivery) = hub.number(post);
        match ack {
            Ack::None => {}
            Ack::Bus(reply) => reply.send(seq),
            Ack::Local(sender) => {
                let _ = sender.send(seq);
            }
        }
        if hub.shards > 1 {
            hub.deliver(delivery.clone());
            if let Err(error) = hub.deliveries.broadcast(delivery).await {
                tracing::warn!(%error, "a message did not reach every shard");
            }
        } else {
            hub.deliver(delivery);
        }
    }
}

/// Takes the posts other shards send to this owner into the sequencer's
/// queue (waiting for room: backpressure to the posting shard).
async fn receive_posts(hub: Rc<Hub>) {
    loop {
        let (_, post, reply) = hub.posts.recv().await.into_parts();
        let queued = Queued {
            post,
            ack: Ack::Bus(reply),
        };
        if hub.queue.send_async(queued).await.is_err() {
            return;
        }
    }
}

/// Hands the deliveries of other owners to this shard's clients; never waits.
async fn receive_deliveries(hub: Rc<Hub>) {
    loop {
        let delivery = hub.deliveries.recv().await.msg;
        hub.deliver(delivery);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_with_client() -> (Room, Rc<Outbox>) {
        let mut room = Room::default();
        let outbox = Rc::new(Outbox::default());
        room.clients.insert(0, outbox.clone());
        (room, outbox)
    }

    fn texts(outbox: &Outbox) -> Vec<String> {
        futures::executor::block_on(outbox.next_batch())
            .unwrap_or_default()
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect()
    }

    #[test]
    fn fan_out_drops_only_the_slow_client() {
        let (mut room, fast) = room_with_client();
        let slow = Rc::new(Outbox::default());
        room.clients.insert(1, slow.clone());
        for i in 0..crate::outbox::CAPACITY + 1 {
            room.fan_out(&Utf8Bytes::from(i.to_string()));
            // The fast client keeps up.
            if i % 10 == 0 {
                assert!(!texts(&fast).is_empty());
            }
        }
        assert_eq!(room.clients.len(), 1);
        assert!(room.clients.contains_key(&0));
        assert_eq!(futures::executor::block_on(slow.next_batch()), None);
    }

    #[test]
    fn messages_are_handed_over_in_sequence() {
        let (mut room, client) = room_with_client();
        let frame = |s: &'static str| Utf8Bytes::from_static(s);
        // Joined at 5; 7 and 6 arrive early, 5 twice.
        room.accept(1, 5, frame("5"));
        room.accept(1, 7, frame("7"));
        assert_eq!(texts(&client), ["5"]);
        room.accept(1, 5, frame("5 again"));
        room.accept(1, 6, frame("6"));
        assert_eq!(texts(&client), ["6", "7"]);
        // A restarted owner numbers from 0 again, with a new epoch.
        room.accept(2, 0, frame("new 0"));
        room.accept(2, 1, frame("new 1"));
        assert_eq!(texts(&client), ["new 0", "new 1"]);
    }
}
