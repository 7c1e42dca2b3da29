//! The app's side of the coordinator (Node's "primary"): message any shard,
//! receive what shards send it, ask for a shutdown.
//!
//! A [`Coordinator`] is `Send + Sync + Clone` and works from any thread: its
//! blocking methods suit the thread [`Runtime::coordinator`](crate::Runtime::coordinator)
//! starts, and async variants suit an executor of your own.

use std::fmt;
use std::sync::Arc;

use super::Event;
use super::lifecycle::{LifecycleEvents, Subscribers};
use crate::bus::CoordinatorBus;
use crate::bus::mesh::Registry;

/// A handle on the coordinator, for app code that runs beside the shards.
#[derive(Clone)]
pub struct Coordinator {
    registry: Arc<Registry>,
    events: flume::Sender<Event>,
    done: flume::Receiver<()>,
    subscribers: Arc<Subscribers>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("shards", &self.registry.shards())
            .finish()
    }
}

impl Coordinator {
    pub(crate) fn new(
        registry: Arc<Registry>,
        events: flume::Sender<Event>,
        done: flume::Receiver<()>,
        subscribers: Arc<Subscribers>,
    ) -> Self {
        Self {
            registry,
            events,
            done,
            subscribers,
        }
    }

    /// A stream of every shard's lifecycle events (`fork`, `online`,
    /// `listening`, `disconnect`, `exit`), like Node's `cluster.on(...)`:
    /// first the latest 1,024 already recorded, then each as it happens.
    /// Each call makes a new subscriber.
    pub fn events(&self) -> LifecycleEvents {
        self.subscribers.subscribe()
    }

    /// How many shards run (as [`Shard::count`](crate::Shard::count)).
    pub fn count(&self) -> usize {
        self.registry.shards()
    }

    /// How many shards run.
    #[deprecated(note = "renamed to `Coordinator::count`, as on `Shard`")]
    pub fn shards(&self) -> usize {
        self.count()
    }

    /// The coordinator's end of the bus for one-way messages `M`.
    pub fn bus<M: Send + 'static>(&self) -> CoordinatorBus<M> {
        self.bus_with_reply::<M, ()>()
    }

    /// The coordinator's end of the bus for messages `M` with replies `R`.
    pub fn bus_with_reply<M: Send + 'static, R: Send + 'static>(&self) -> CoordinatorBus<M, R> {
        CoordinatorBus::new(self.registry.mesh::<M, R>(), self.done.clone())
    }

    /// Asks for a rolling reload, as SIGHUP does; `false` once the
    /// coordinator is gone.
    pub(crate) fn reload(&self) -> bool {
        self.events.send(Event::Reload).is_ok()
    }

    /// Asks for a binary upgrade, as SIGUSR2 does; `false` once the
    /// coordinator is gone.
    pub(crate) fn upgrade(&self) -> bool {
        self.events.send(Event::Upgrade).is_ok()
    }

    /// Starts a graceful shutdown, as SIGTERM does.
    pub fn shutdown(&self) {
        let _ = self.events.send(Event::Shutdown);
    }

    /// Whether the runtime has ended (every shard stopped).
    pub fn is_done(&self) -> bool {
        self.done.is_disconnected()
    }
}
