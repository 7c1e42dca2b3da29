//! The coordinator's end of the bus: any thread (the app's coordinator
//! code, Node's "primary") sends to shards and receives what they send it.
//!
//! Contract: `Send + Sync + Clone`; its blocking methods block the calling
//! thread (never a shard's), the `_async` ones suit an executor of the
//! caller's. Messages from the coordinator to a shard go through one
//! bounded flume channel per shard and type; shards reach the coordinator
//! through one unbounded channel per type.

use std::fmt;
use std::sync::Arc;

use futures::channel::oneshot;

use super::mesh::Mesh;
use super::{BroadcastError, CallError, Envelope, Origin, SendError, TrySendError};
use crate::ShardId;

/// The coordinator's end of the bus for one message type.
pub struct CoordinatorBus<M, R = ()> {
    mesh: Arc<Mesh<M, R>>,
    done: flume::Receiver<()>,
}

impl<M, R> Clone for CoordinatorBus<M, R> {
    fn clone(&self) -> Self {
        Self {
            mesh: self.mesh.clone(),
            done: self.done.clone(),
        }
    }
}

impl<M, R> fmt::Debug for CoordinatorBus<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinatorBus")
            .field("message", &std::any::type_name::<M>())
            .finish()
    }
}

impl<M, R> CoordinatorBus<M, R> {
    pub(crate) fn new(mesh: Arc<Mesh<M, R>>, done: flume::Receiver<()>) -> Self {
        Self { mesh, done }
    }
}

impl<M: Send + 'static, R: Send + 'static> CoordinatorBus<M, R> {
    fn envelope(msg: M, reply: Option<oneshot::Sender<R>>) -> Envelope<M, R> {
        Envelope::new(Origin::Coordinator, msg, reply)
    }

    /// Sends without waiting: `Full` when the shard's queue from the
    /// coordinator is full, `Closed` when the shard is not running.
    pub fn try_send(&self, to: ShardId, msg: M) -> Result<(), TrySendError<M>> {
        let Some(slot) = self.mesh.slots.get(to.get()).filter(|s| s.is_open()) else {
            return Err(TrySendError::Closed(msg));
        };
        match slot.from_coordinator.0.try_send(Self::envelope(msg, None)) {
            Ok(()) => {
                slot.notify_current();
                Ok(())
            }
            Err(flume::TrySendError::Full(envelope)) => Err(TrySendError::Full(envelope.msg)),
            Err(flume::TrySendError::Disconnected(envelope)) => {
                Err(TrySendError::Closed(envelope.msg))
            }
        }
    }

    /// Sends, blocking this thread while the shard's queue is full.
    pub fn send(&self, to: ShardId, msg: M) -> Result<(), SendError<M>> {
        self.push(to, Self::envelope(msg, None))
            .map_err(|envelope| SendError(envelope.msg))
    }

    fn push(&self, to: ShardId, envelope: Envelope<M, R>) -> Result<(), Envelope<M, R>> {
        let Some(slot) = self.mesh.slots.get(to.get()).filter(|s| s.is_open()) else {
            return Err(envelope);
        };
        slot.from_coordinator
            .0
            .send(envelope)
            .map_err(flume::SendError::into_inner)?;
        slot.notify_current();
        Ok(())
    }

    /// Sends a copy to every shard; `Err` lists the shards not running.
    pub fn broadcast(&self, msg: M) -> Result<(), BroadcastError<M>>
    where
        M: Clone,
    {
        let mut undelivered = Vec::new();
        for to in (0..self.mesh.slots.len()).map(ShardId::new) {
            if let Err(SendError(copy)) = self.send(to, msg.clone()) {
                undelivered.push((to, copy));
            }
        }
        if undelivered.is_empty() {
            Ok(())
        } else {
            Err(BroadcastError { undelivered })
        }
    }

    /// Sends `msg` to shard `to` and blocks until it replies (see
    /// [`Bus::call`](crate::bus::Bus::call) for the errors).
    pub fn call(&self, to: ShardId, msg: M) -> Result<R, CallError<M>> {
        let (sender, mut receiver) = oneshot::channel();
        self.push(to, Self::envelope(msg, Some(sender)))
            .map_err(|envelope| CallError::Closed(envelope.msg))?;
        futures::executor::block_on(super::wait_reply(
            &self.mesh,
            to,
            &mut receiver,
            std::time::Duration::ZERO,
        ))
        .ok_or(CallError::NoReply)
    }

    /// The next message a shard sent to the coordinator; blocks, and returns
    /// `None` once the runtime has ended.
    pub fn recv(&self) -> Option<Envelope<M, R>> {
        flume::Selector::new()
            .recv(&self.mesh.to_coordinator.1, Result::ok)
            .recv(&self.done, |_| None)
            .wait()
    }

    /// Like [`CoordinatorBus::recv`], for async code.
    pub async fn recv_async(&self) -> Option<Envelope<M, R>> {
        use futures::future::{Either, select};
        let message = self.mesh.to_coordinator.1.recv_async();
        let done = self.done.recv_async();
        match select(std::pin::pin!(message), std::pin::pin!(done)).await {
            Either::Left((message, _)) => message.ok(),
            Either::Right(_) => None,
        }
    }

    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Option<Envelope<M, R>> {
        self.mesh.to_coordinator.1.try_recv().ok()
    }
}
