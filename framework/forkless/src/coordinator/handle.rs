//! The app's side of the coordinator (Node's "primary"): message any shard,
//! receive what shards send it, ask for a shutdown.
//!
//! A [`Coordinator`] is `Send + Sync + Clone` and works from any thread: its
//! blocking methods suit the thread [`Runtime::coordinator`](crate::Runtime::coordinator)
//! starts, and async variants suit an executor of your own.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::lifecycle::{LifecycleEvents, Subscribers};
use super::{Event, Verdict};
use crate::bus::CoordinatorBus;
use crate::bus::mesh::Registry;

/// How long [`Coordinator::reload`] and [`Coordinator::upgrade`] wait for
/// the coordinator's verdict: it answers between two events, in
/// microseconds, unless its thread is stuck.
const VERDICT_WAIT: Duration = Duration::from_secs(2);

/// What became of a reload or an upgrade asked for through the handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asked {
    /// It starts; the log and `/status` show how it goes.
    Started,
    /// It does not start, for this reason (one is already running, the
    /// process is stopping, ...).
    Refused(&'static str),
    /// The request is queued, but the coordinator did not say in time
    /// whether it starts.
    Unanswered,
    /// The coordinator is gone: the process is exiting.
    Gone,
}

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

    /// Asks for a rolling reload, as SIGHUP does, and says whether it
    /// starts.
    pub(crate) fn reload(&self) -> Asked {
        self.ask(Event::Reload)
    }

    /// Asks for a binary upgrade, as SIGUSR2 does, and says whether it
    /// starts.
    pub(crate) fn upgrade(&self) -> Asked {
        self.ask(Event::Upgrade)
    }

    fn ask(&self, event: fn(Option<Verdict>) -> Event) -> Asked {
        let (verdict, answer) = flume::bounded(1);
        if self.events.send(event(Some(verdict))).is_err() {
            return Asked::Gone;
        }
        match answer.recv_timeout(VERDICT_WAIT) {
            Ok(Ok(())) => Asked::Started,
            Ok(Err(why)) => Asked::Refused(why),
            Err(flume::RecvTimeoutError::Timeout) => Asked::Unanswered,
            Err(flume::RecvTimeoutError::Disconnected) => Asked::Gone,
        }
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
