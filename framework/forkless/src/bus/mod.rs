//! The cross-shard bus: typed messages between shards and the coordinator.
//!
//! - **Typed, moved, never serialized.** A [`Bus<M, R>`] carries values of
//!   type `M` (and replies of type `R` for [`Bus::call`]); each `(M, R)` pair
//!   has its own queues, made on first use. `M` and `R` must be `Send`.
//! - **Ordered per pair.** Messages from one shard to another arrive in the
//!   order they were sent: each (sender, receiver) pair has its own
//!   single-producer single-consumer ring. Across senders there is no order.
//! - **Bounded, with backpressure.** Each ring holds
//!   [`Config::bus_capacity`](crate::Config::bus_capacity) messages.
//!   [`Bus::try_send`] returns `Full(msg)` when it is full; [`Bus::send`]
//!   waits for room. Every error gives the message back.
//! - **Shards not started yet wait.** Every shard's queues are open from
//!   the moment the runtime starts: a message sent to a shard whose thread
//!   has not started yet (a broadcast at start) waits for it, subject to
//!   the same capacity.
//! - **Stopped shards fail fast.** A send to a shard that is not running
//!   returns `Closed(msg)`; a [`Bus::call`] whose receiver stops (or drops the
//!   request, e.g. because its handler panicked) returns
//!   [`CallError::NoReply`] instead of hanging. A message accepted just
//!   before its receiver stopped is lost with it.
//! - **A send waiting for room never outlives its receiver.** When the
//!   shard it waits on stops (returns, panics, or is replaced by a rolling
//!   reload), a [`Bus::send`] waiting on a full queue ends as a new send
//!   would at that moment: `Closed(msg)` while the shard is down (between
//!   a death and its restart too), or into the queue of the shard's next
//!   incarnation when that one already runs. It never waits for a restart.
//! - **Idle shards sleep.** A receiver with nothing to do parks its executor;
//!   a sender wakes it only when it is parked. With
//!   [`Config::spin_before_park`](crate::Config::spin_before_park) a shard
//!   spins a little before parking, trading CPU for wake-up latency.
//! - **Calls are bounded in time.** A [`Bus::call`] that gets no reply
//!   within [`DEFAULT_CALL_TIMEOUT`] (30 s; [`Bus::call_within`] sets
//!   another) returns [`CallError::TimedOut`]: a call to a message type no
//!   task on the target receives fails instead of waiting for ever.
//! - **One receiving task per type and shard.** [`Bus::recv`] may be called
//!   from any task of the shard, but only the most recent waiter is woken:
//!   give each message type one receive loop per shard.
//!
//! - **`Send` where it must be.** A [`Bus`] is `!Send`: it belongs to its
//!   shard. Code that must be `Send` (an axum handler, a tower layer) uses a
//!   [`SendBus`] made from it, whose futures are `Send` and which checks at
//!   run time that it stays on its shard.
//!
//! The coordinator is addressable too: shards send to it with
//! [`Bus::to_coordinator`], and it sends to any shard through
//! [`Coordinator::bus`](crate::Coordinator::bus).
//!
//! ```no_run
//! use forkless::{Shard, ShardId};
//!
//! async fn ping_pong(shard: Shard) {
//!     let bus = shard.bus_with_reply::<u64, u64>();
//!     if shard.id() == ShardId::new(0) {
//!         let doubled = bus.call(ShardId::new(1), 21).await.expect("shard 1 replies");
//!         assert_eq!(doubled, 42);
//!     } else {
//!         let request = bus.recv().await;
//!         let n = request.msg;
//!         request.reply(n * 2);
//!     }
//! }
//! ```

mod coordinator_end;
mod ends;
mod error;
mod local;
#[cfg(all(test, loom))]
mod loom_tests;
pub(crate) mod mesh;
mod registry;
mod ring;
mod send;
mod sync;

use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::oneshot;

/// How long [`Bus::call`] waits for a reply before it returns
/// [`CallError::TimedOut`]: long enough for any request a shard answers
/// (a slow one belongs in [`offload`](crate::offload)), short enough that
/// a call to a message type no task receives fails instead of hanging.
/// [`Bus::call_within`] takes a limit of its own.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub use coordinator_end::CoordinatorBus;
pub(crate) use ends::ShardBus;
pub use error::{BroadcastError, CallError, RunError, SendError, TrySendError};
pub use send::SendBus;

use crate::ShardId;
pub(crate) use local::{LocalEnd, wait_reply};

/// Who sent a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A shard.
    Shard(ShardId),
    /// The coordinator.
    Coordinator,
}

/// A received message, with its sender and (for a call) the way to reply.
pub struct Envelope<M, R = ()> {
    /// Who sent it.
    pub from: Origin,
    /// The message.
    pub msg: M,
    reply: Reply<R>,
}

/// The reply half of a received call; replying to a plain message does nothing.
pub struct Reply<R> {
    sender: Option<oneshot::Sender<R>>,
}

impl<R> Reply<R> {
    /// Answers the call. Dropping a `Reply` unanswered makes the caller's
    /// [`Bus::call`] return [`CallError::NoReply`].
    pub fn send(mut self, reply: R) {
        if let Some(sender) = self.sender.take() {
            // The caller may have given up waiting; that is not an error here.
            let _ = sender.send(reply);
        }
    }

    /// Whether the sender waits for a reply (the message came from `call`).
    pub fn is_expected(&self) -> bool {
        self.sender.is_some()
    }
}

impl<M, R> Envelope<M, R> {
    pub(crate) fn new(from: Origin, msg: M, reply: Option<oneshot::Sender<R>>) -> Self {
        Self {
            from,
            msg,
            reply: Reply { sender: reply },
        }
    }

    /// Answers the call this message came from (no-op for a plain message).
    pub fn reply(self, reply: R) {
        self.reply.send(reply);
    }

    /// Splits into sender, message and reply half.
    pub fn into_parts(self) -> (Origin, M, Reply<R>) {
        (self.from, self.msg, self.reply)
    }
}

impl<M: fmt::Debug, R> fmt::Debug for Envelope<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("from", &self.from)
            .field("msg", &self.msg)
            .field("call", &self.reply.is_expected())
            .finish()
    }
}

impl<R> fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("expected", &self.is_expected())
            .finish()
    }
}

/// This shard's handle on the queues of message type `M` (replies `R`).
///
/// Get one with [`Shard::bus`](crate::Shard::bus); clones share the same
/// queues. `!Send`: it belongs to its shard.
pub struct Bus<M, R = ()> {
    end: Rc<LocalEnd<M, R>>,
}

impl<M, R> Clone for Bus<M, R> {
    fn clone(&self) -> Self {
        Self {
            end: self.end.clone(),
        }
    }
}

impl<M, R> fmt::Debug for Bus<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("shard", &self.end.me)
            .field("message", &std::any::type_name::<M>())
            .finish()
    }
}

impl<M: Send + 'static, R: Send + 'static> Bus<M, R> {
    pub(crate) fn new(end: Rc<LocalEnd<M, R>>) -> Self {
        Self { end }
    }

    /// Waits for the answer to something sent to `to` on `receiver`, as a
    /// [`call`](Self::call) does: `None` when `to` stopped first.
    pub(crate) async fn wait_reply<T>(
        &self,
        to: ShardId,
        receiver: &mut oneshot::Receiver<T>,
    ) -> Option<T> {
        wait_reply(&self.end.mesh, to, receiver, self.end.spin).await
    }

    /// The shard this handle belongs to (as [`Shard::id`](crate::Shard::id)).
    pub fn id(&self) -> ShardId {
        self.end.me
    }

    /// How many shards there are (valid targets are `0..count()`, as
    /// [`Shard::count`](crate::Shard::count)).
    pub fn count(&self) -> usize {
        self.end.mesh.slots.len()
    }

    /// The shard this handle belongs to.
    #[deprecated(note = "renamed to `Bus::id`")]
    pub fn shard(&self) -> ShardId {
        self.id()
    }

    /// How many shards there are.
    #[deprecated(note = "renamed to `Bus::count`")]
    pub fn shards(&self) -> usize {
        self.count()
    }

    /// Sends without waiting: `Full(msg)` when the queue to `to` is full,
    /// `Closed(msg)` when `to` is not running (or not a shard of this runtime).
    pub fn try_send(&self, to: ShardId, msg: M) -> Result<(), TrySendError<M>> {
        self.end
            .try_push(to, self.end.envelope(msg, None))
            .map_err(|e| match e {
                TrySendError::Full(envelope) => TrySendError::Full(envelope.msg),
                TrySendError::Closed(envelope) => TrySendError::Closed(envelope.msg),
            })
    }

    /// Sends, waiting while the queue to `to` is full. `Err` gives the
    /// message back when `to` is not running, or stops while this waits
    /// (see the module docs). Cancel-safe in the sense that a dropped future
    /// either sent the message or did not.
    pub async fn send(&self, to: ShardId, msg: M) -> Result<(), SendError<M>> {
        self.end
            .push(to, self.end.envelope(msg, None))
            .await
            .map_err(|envelope| SendError(envelope.msg))
    }

    /// Sends a copy to every other shard, waiting for room where needed.
    pub async fn broadcast(&self, msg: M) -> Result<(), BroadcastError<M>>
    where
        M: Clone,
    {
        let me = self.id();
        let mut undelivered = Vec::new();
        let targets: Vec<ShardId> = (0..self.count())
            .map(ShardId::new)
            .filter(|&id| id != me)
            .collect();
        let last = targets.len().saturating_sub(1);
        let mut original = Some(msg);
        for (i, to) in targets.into_iter().enumerate() {
            let copy = if i == last {
                original.take()
            } else {
                original.clone()
            };
            let Some(copy) = copy else { break };
            if let Err(SendError(copy)) = self.send(to, copy).await {
                undelivered.push((to, copy));
            }
        }
        if undelivered.is_empty() {
            Ok(())
        } else {
            Err(BroadcastError { undelivered })
        }
    }

    /// Sends `msg` to shard `to` and waits for its reply, at most
    /// [`DEFAULT_CALL_TIMEOUT`] (room in the queue included).
    ///
    /// `Closed(msg)` when `to` is not running (or stops while the request
    /// waits for room); `NoReply` when the receiver dropped the request
    /// without replying or stopped meanwhile; `TimedOut` when no reply came
    /// in time, most often because no task on `to` receives `M` (see
    /// [`Bus::recv`]).
    pub async fn call(&self, to: ShardId, msg: M) -> Result<R, CallError<M>> {
        self.call_within(to, msg, DEFAULT_CALL_TIMEOUT).await
    }

    /// [`Bus::call`] with a time limit of its own: `TimedOut` when no reply
    /// came within `limit`.
    ///
    /// ```no_run
    /// # async fn example(bus: forkless::bus::Bus<u64, u64>) {
    /// use std::time::Duration;
    /// use forkless::ShardId;
    /// use forkless::bus::CallError;
    ///
    /// match bus.call_within(ShardId::new(1), 7, Duration::from_millis(100)).await {
    ///     Ok(answer) => println!("{answer}"),
    ///     Err(CallError::TimedOut) => println!("shard 1 is slow to answer"),
    ///     Err(other) => println!("{other}"),
    /// }
    /// # }
    /// ```
    pub async fn call_within(
        &self,
        to: ShardId,
        msg: M,
        limit: Duration,
    ) -> Result<R, CallError<M>> {
        let call = async {
            let (sender, receiver) = oneshot::channel();
            self.end
                .push(to, self.end.envelope(msg, Some(sender)))
                .await
                .map_err(|envelope| CallError::Closed(envelope.msg))?;
            self.end.reply(to, receiver).await.ok_or(CallError::NoReply)
        };
        crate::time::timeout(limit, call)
            .await
            .unwrap_or(Err(CallError::TimedOut))
    }

    /// The next message for this shard, from any shard or the coordinator.
    pub async fn recv(&self) -> Envelope<M, R> {
        local::recv(&self.end).await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Option<Envelope<M, R>> {
        self.end.try_recv()
    }

    /// Sends to the coordinator (read there with
    /// [`CoordinatorBus::recv`](crate::CoordinatorBus::recv)), waiting while
    /// its queue is full.
    pub async fn to_coordinator(&self, msg: M) -> Result<(), SendError<M>> {
        let envelope = self.end.envelope(msg, None);
        self.end
            .mesh
            .to_coordinator
            .0
            .send_async(envelope)
            .await
            .map_err(|e| SendError(e.into_inner().msg))?;
        self.end.counters.bus_sent();
        Ok(())
    }
}
