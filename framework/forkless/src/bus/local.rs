//! The shard-local half of the bus for one message type: this shard's
//! producers (one ring per target, made on first send) and consumers (one
//! ring per sender), with round-robin receiving.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::{Either, select};

use super::mesh::Mesh;
use super::ring::{RingLoad, Wake};
use super::{Envelope, Origin, TrySendError};
use crate::ShardId;
use crate::shard::ShardCounters;

struct Outgoing<M, R> {
    producer: rtrb::Producer<Envelope<M, R>>,
    /// Parked senders waiting for room in this ring.
    space: Arc<Wake>,
    /// Incarnation of the receiver this ring was made for.
    incarnation: u32,
    /// That incarnation's wake.
    inbox: Arc<Wake>,
    load: Arc<RingLoad>,
}

struct Incoming<M, R> {
    consumer: rtrb::Consumer<Envelope<M, R>>,
    space: Arc<Wake>,
    load: Arc<RingLoad>,
}

pub(crate) struct LocalEnd<M, R> {
    pub(crate) me: ShardId,
    /// This incarnation's number: the rings it takes are made for it.
    incarnation: u32,
    /// What this incarnation parks on when its inbox is empty.
    inbox: Arc<Wake>,
    pub(crate) mesh: Arc<Mesh<M, R>>,
    out: RefCell<Vec<Option<Outgoing<M, R>>>>,
    inbound: RefCell<Vec<Incoming<M, R>>>,
    cursor: Cell<usize>,
    /// This shard's counters (messages sent and received).
    pub(crate) counters: Arc<ShardCounters>,
    /// How long a receive or reply wait polls in place before parking.
    pub(crate) spin: Duration,
}

impl<M: Send + 'static, R: Send + 'static> LocalEnd<M, R> {
    /// The bus end of incarnation `incarnation` of shard `me`.
    pub(crate) fn new(
        me: ShardId,
        incarnation: u32,
        mesh: Arc<Mesh<M, R>>,
        counters: Arc<ShardCounters>,
    ) -> Self {
        let targets = mesh.slots.len();
        let inbox = mesh
            .slots
            .get(me.get())
            .map_or_else(|| Arc::new(Wake::default()), |slot| slot.inbox(incarnation));
        Self {
            me,
            incarnation,
            inbox,
            mesh,
            out: RefCell::new((0..targets).map(|_| None).collect()),
            inbound: RefCell::new(Vec::new()),
            cursor: Cell::new(0),
            counters,
            spin: Duration::ZERO,
        }
    }

    /// Polls in place for up to `spin` before a receive or a reply wait
    /// parks its task; see [`Config::bus_spin`](crate::Config::bus_spin).
    pub(crate) fn with_spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    pub(crate) fn envelope(&self, msg: M, reply: Option<oneshot::Sender<R>>) -> Envelope<M, R> {
        Envelope::new(Origin::Shard(self.me), msg, reply)
    }

    /// Pushes without waiting; on `Full` the envelope comes back whole.
    pub(crate) fn try_push(
        &self,
        to: ShardId,
        envelope: Envelope<M, R>,
    ) -> Result<(), TrySendError<Envelope<M, R>>> {
        let Some(slot) = self.mesh.slots.get(to.get()) else {
            return Err(TrySendError::Closed(envelope));
        };
        if !slot.is_open() {
            return Err(TrySendError::Closed(envelope));
        }
        let incarnation = slot.incarnation();
        let mut out = self.out.borrow_mut();
        let Some(entry) = out.get_mut(to.get()) else {
            return Err(TrySendError::Closed(envelope));
        };
        let outgoing = match entry {
            Some(outgoing) if outgoing.incarnation == incarnation => outgoing,
            _ => {
                let (producer, consumer) = rtrb::RingBuffer::new(self.mesh.capacity);
                let space = Arc::new(Wake::default());
                let load = Arc::new(RingLoad::default());
                slot.adopt(incarnation, self.me, consumer, space.clone(), load.clone());
                entry.insert(Outgoing {
                    producer,
                    space,
                    incarnation,
                    inbox: slot.inbox(incarnation),
                    load,
                })
            }
        };
        match outgoing.producer.push(envelope) {
            Ok(()) => {
                outgoing.load.pushed();
                self.counters.bus_sent();
                outgoing.inbox.notify();
                Ok(())
            }
            Err(rtrb::PushError::Full(envelope)) => Err(TrySendError::Full(envelope)),
        }
    }

    /// Pushes, waiting for room; `Err` gives the envelope back when the
    /// receiver is not running. The slot wakes a push parked on a full
    /// ring when that ring's incarnation stops owning the inbox, and the
    /// re-check after parking sees the change (see `mesh.rs`).
    pub(crate) async fn push(
        &self,
        to: ShardId,
        envelope: Envelope<M, R>,
    ) -> Result<(), Envelope<M, R>> {
        let mut pending = Some(envelope);
        std::future::poll_fn(|cx| {
            let Some(envelope) = pending.take() else {
                return Poll::Ready(Ok(()));
            };
            match self.try_push(to, envelope) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(TrySendError::Closed(envelope)) => Poll::Ready(Err(envelope)),
                Err(TrySendError::Full(envelope)) => {
                    self.park_for_space(to, cx);
                    // Room may have appeared before the park was visible.
                    match self.try_push(to, envelope) {
                        Ok(()) => Poll::Ready(Ok(())),
                        Err(TrySendError::Closed(envelope)) => Poll::Ready(Err(envelope)),
                        Err(TrySendError::Full(envelope)) => {
                            pending = Some(envelope);
                            Poll::Pending
                        }
                    }
                }
            }
        })
        .await
    }

    fn park_for_space(&self, to: ShardId, cx: &mut Context<'_>) {
        if let Some(Some(outgoing)) = self.out.borrow().get(to.get()) {
            outgoing.space.park(cx.waker());
        }
    }

    /// The next message, if one is waiting: rings round-robin, then the
    /// coordinator's queue.
    pub(crate) fn try_recv(&self) -> Option<Envelope<M, R>> {
        let slot = self.mesh.slots.get(self.me.get())?;
        if slot.has_fresh() {
            let mut inbound = self.inbound.borrow_mut();
            for (_from, consumer, space, load) in slot.take_fresh(self.incarnation) {
                inbound.push(Incoming {
                    consumer,
                    space,
                    load,
                });
            }
        }
        let inbound = &mut *self.inbound.borrow_mut();
        let count = inbound.len();
        let start = self.cursor.get();
        for step in 0..count {
            let index = (start + step) % count;
            let ring = &mut inbound[index];
            if let Ok(envelope) = ring.consumer.pop() {
                ring.load.popped();
                self.counters.bus_received();
                ring.space.notify();
                self.cursor.set(index + 1);
                return Some(envelope);
            }
        }
        let envelope = slot.from_coordinator.1.try_recv().ok()?;
        self.counters.bus_received();
        Some(envelope)
    }

    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Envelope<M, R>> {
        if let Some(envelope) = spin(self.spin, || self.try_recv()) {
            return Poll::Ready(envelope);
        }
        if self.mesh.slots.get(self.me.get()).is_none() {
            return Poll::Pending;
        }
        self.inbox.park(cx.waker());
        match self.try_recv() {
            Some(envelope) => {
                self.inbox.unpark();
                Poll::Ready(envelope)
            }
            None => Poll::Pending,
        }
    }

    /// Waits for a reply from shard `from`, giving up (`None`) when it stops.
    pub(crate) async fn reply<T>(
        &self,
        from: ShardId,
        mut reply: oneshot::Receiver<T>,
    ) -> Option<T> {
        wait_reply(&self.mesh, from, &mut reply, self.spin).await
    }
}

/// Waits for `reply`, or `None` once shard `from` is not running.
pub(crate) async fn wait_reply<M, R, T>(
    mesh: &Mesh<M, R>,
    from: ShardId,
    reply: &mut oneshot::Receiver<T>,
    spin_for: Duration,
) -> Option<T> {
    match spin(spin_for, || reply.try_recv().transpose()) {
        Some(Ok(answer)) => return Some(answer),
        Some(Err(oneshot::Canceled)) => return None,
        None => {}
    }
    loop {
        let listener = mesh.closed.listen();
        if !mesh
            .slots
            .get(from.get())
            .is_some_and(|slot| slot.is_open())
        {
            return reply.try_recv().ok().flatten();
        }
        match select(pin!(&mut *reply), pin!(listener)).await {
            Either::Left((answer, _)) => return answer.ok(),
            Either::Right(((), _)) => continue,
        }
    }
}

/// Calls `poll` until it yields a value or `duration` passes (at once when
/// zero): a busy wait that answers without a trip through the executor.
fn spin<T>(duration: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    let value = poll();
    if value.is_some() || duration.is_zero() {
        return value;
    }
    let until = Instant::now() + duration;
    loop {
        for _ in 0..64 {
            std::hint::spin_loop();
            if let Some(value) = poll() {
                return Some(value);
            }
        }
        if Instant::now() >= until {
            return None;
        }
    }
}

/// Makes a future from a poll function over a shared end.
pub(crate) fn recv<M: Send + 'static, R: Send + 'static>(
    end: &LocalEnd<M, R>,
) -> impl Future<Output = Envelope<M, R>> + '_ {
    std::future::poll_fn(move |cx| end.poll_recv(cx))
}
