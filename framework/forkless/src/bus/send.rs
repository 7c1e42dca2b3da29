//! A `Send` face of a shard's bus, for code that must be `Send`.
//!
//! axum handlers, tower layers and anything else written for tokio must
//! produce `Send` futures, but a [`Bus`] is `!Send` (it belongs to its
//! shard). A [`SendBus`] wraps one so that it, and the futures of its
//! operations, are `Send`. That is honest because forkless never moves a
//! request's future off the shard that polls it; the wrapper checks the
//! thread on every use and panics, instead of misbehaving, if a `SendBus` or
//! one of its futures is used or dropped on another thread (which only code
//! that ships it to a thread of its own can do).

use std::fmt;
use std::future::Future;

use send_wrapper::SendWrapper;

use super::{BroadcastError, Bus, CallError, SendError, TrySendError};
use crate::ShardId;

/// This shard's bus for messages of type `M` (replies `R`), usable in `Send`
/// futures such as axum handlers; see the module docs.
///
/// Get one from a [`Bus`] (`SendBus::from(shard.bus::<M>())`, e.g. to keep
/// in an axum state) or, inside a request served by
/// [`Shard::serve_tower`](crate::Shard::serve_tower), from the request's
/// [`ShardContext`](crate::http::ShardContext). Use it on the shard it came
/// from: any use on another thread panics.
///
/// ```no_run
/// use forkless::bus::SendBus;
/// use forkless::{Shard, ShardId};
///
/// async fn example(shard: Shard) {
///     let bus: SendBus<String> = shard.bus::<String>().into();
///     // A `Send` future: fine in an axum handler.
///     let send = bus.send(ShardId::new(0), "hello".to_owned());
///     fn assert_send<T: Send>(_: &T) {}
///     assert_send(&send);
///     let _ = send.await;
/// }
/// ```
pub struct SendBus<M, R = ()> {
    id: ShardId,
    count: usize,
    bus: SendWrapper<Bus<M, R>>,
}

impl<M: Send + 'static, R: Send + 'static> From<Bus<M, R>> for SendBus<M, R> {
    fn from(bus: Bus<M, R>) -> Self {
        Self {
            id: bus.id(),
            count: bus.count(),
            bus: SendWrapper::new(bus),
        }
    }
}

impl<M, R> Clone for SendBus<M, R> {
    /// # Panics
    ///
    /// On a thread other than its shard's.
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            count: self.count,
            bus: self.bus.clone(),
        }
    }
}

impl<M, R> fmt::Debug for SendBus<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendBus")
            .field("shard", &self.id)
            .field("message", &std::any::type_name::<M>())
            .finish()
    }
}

impl<M: Send + 'static, R: Send + 'static> SendBus<M, R> {
    /// The shard this handle belongs to (as [`Bus::id`]).
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// How many shards there are (valid targets are `0..count()`).
    pub fn count(&self) -> usize {
        self.count
    }

    /// The shard this handle belongs to.
    #[deprecated(note = "renamed to `SendBus::id`")]
    pub fn shard(&self) -> ShardId {
        self.id
    }

    /// How many shards there are.
    #[deprecated(note = "renamed to `SendBus::count`")]
    pub fn shards(&self) -> usize {
        self.count
    }

    /// [`Bus::try_send`].
    ///
    /// # Panics
    ///
    /// On a thread other than its shard's.
    pub fn try_send(&self, to: ShardId, msg: M) -> Result<(), TrySendError<M>> {
        self.bus.try_send(to, msg)
    }

    /// [`Bus::send`], as a `Send` future.
    ///
    /// # Panics
    ///
    /// On a thread other than its shard's.
    pub fn send(
        &self,
        to: ShardId,
        msg: M,
    ) -> impl Future<Output = Result<(), SendError<M>>> + Send + 'static {
        let bus = (*self.bus).clone();
        SendWrapper::new(async move { bus.send(to, msg).await })
    }

    /// [`Bus::broadcast`], as a `Send` future.
    ///
    /// # Panics
    ///
    /// On a thread other than its shard's.
    pub fn broadcast(
        &self,
        msg: M,
    ) -> impl Future<Output = Result<(), BroadcastError<M>>> + Send + 'static
    where
        M: Clone,
    {
        let bus = (*self.bus).clone();
        SendWrapper::new(async move { bus.broadcast(msg).await })
    }

    /// [`Bus::call`], as a `Send` future.
    ///
    /// # Panics
    ///
    /// On a thread other than its shard's.
    pub fn call(
        &self,
        to: ShardId,
        msg: M,
    ) -> impl Future<Output = Result<R, CallError<M>>> + Send + 'static {
        let bus = (*self.bus).clone();
        SendWrapper::new(async move { bus.call(to, msg).await })
    }

    /// [`Bus::to_coordinator`], as a `Send` future.
    ///
    /// # Panics
    ///
    /// On a thread other than its shard's.
    pub fn to_coordinator(
        &self,
        msg: M,
    ) -> impl Future<Output = Result<(), SendError<M>>> + Send + 'static {
        let bus = (*self.bus).clone();
        SendWrapper::new(async move { bus.to_coordinator(msg).await })
    }
}
