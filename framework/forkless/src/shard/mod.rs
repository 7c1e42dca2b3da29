//! Shards: one single-threaded glommio executor per core.
//!
//! A shard owns everything it touches: its executor, its listeners, its
//! connections, its handler state. Nothing here is `Send`; what crosses
//! shards goes through the coordinator (and, later, the bus). The [`Shard`]
//! handle is what the app's shard function receives; cloning it is cheap and
//! every clone refers to the same shard.

mod counters;
pub(crate) mod cpus;
mod id;
pub(crate) mod latch;
pub(crate) mod listener;
pub(crate) mod preflight;
pub(crate) mod stall;
pub(crate) mod thread;

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

pub use counters::{CounterSnapshot, ShardCounters};
pub use id::ShardId;
pub(crate) use preflight::DEFAULT_IO_MEMORY;

use crate::bus::Bus;
use crate::bus::mesh::Registry;
use crate::coordinator::Event;
use crate::http::Handler;
use crate::{Config, Error};
use latch::Latch;

/// The handle a shard function receives: who this shard is, and its services.
///
/// `!Send`: it belongs to its shard. Clone it freely within the shard.
///
/// ```no_run
/// use forkless::Shard;
///
/// #[forkless::shard_main]
/// async fn main(shard: Shard) {
///     let id = shard.id();
///     shard
///         .serve(move |_req| async move { format!("hello from shard {id}\n") })
///         .await
///         .expect("serve");
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Shard {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: ShardId,
    incarnation: u32,
    count: usize,
    cpu: Option<usize>,
    config: Arc<Config>,
    listen: RefCell<Option<Vec<std::net::TcpListener>>>,
    stopping: Latch,
    /// Connections the coordinator accepted for a shard that is down.
    adopted: RefCell<Option<flume::Receiver<std::net::TcpStream>>>,
    events: flume::Sender<Event>,
    counters: Arc<ShardCounters>,
    bus: Arc<Registry>,
    /// This shard's bus ends, one per message type.
    bus_ends: RefCell<HashMap<TypeId, Rc<dyn Any>>>,
}

pub(crate) struct ShardParts {
    pub(crate) id: ShardId,
    pub(crate) incarnation: u32,
    pub(crate) count: usize,
    pub(crate) cpu: Option<usize>,
    pub(crate) config: Arc<Config>,
    /// This incarnation's descriptors of the shard's listening sockets; the
    /// coordinator keeps the sockets across incarnations and processes.
    pub(crate) listen: Vec<std::net::TcpListener>,
    pub(crate) events: flume::Sender<Event>,
    pub(crate) counters: Arc<ShardCounters>,
    pub(crate) bus: Arc<Registry>,
}

impl Shard {
    pub(crate) fn new(
        parts: ShardParts,
        stopping: Latch,
        adopted: flume::Receiver<std::net::TcpStream>,
    ) -> Self {
        Self {
            inner: Rc::new(Inner {
                id: parts.id,
                incarnation: parts.incarnation,
                count: parts.count,
                cpu: parts.cpu,
                config: parts.config,
                listen: RefCell::new(Some(parts.listen)),
                stopping,
                adopted: RefCell::new(Some(adopted)),
                events: parts.events,
                counters: parts.counters,
                bus: parts.bus,
                bus_ends: RefCell::new(HashMap::new()),
            }),
        }
    }

    /// This shard's identity, `0..count()`.
    pub fn id(&self) -> ShardId {
        self.inner.id
    }

    /// Which incarnation of shard [`id`](Self::id) this is: 1 at first
    /// start, one more after every restart or rolling reload.
    pub fn incarnation(&self) -> u32 {
        self.inner.incarnation
    }

    /// How many shards this process runs.
    pub fn count(&self) -> usize {
        self.inner.count
    }

    /// The CPU this shard is pinned to, or `None` when unpinned.
    pub fn cpu(&self) -> Option<usize> {
        self.inner.cpu
    }

    /// The counters of this incarnation of the shard (the admin endpoint
    /// adds up every incarnation's).
    pub fn counters(&self) -> &ShardCounters {
        &self.inner.counters
    }

    /// The runtime configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Whether a shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.is_set()
    }

    /// Resolves when the process starts shutting down: the place for the
    /// shard's own shutdown work (Node's `'disconnect'` / shutdown message).
    ///
    /// Cancel-safe; any number of tasks may wait.
    pub fn stopping(&self) -> impl Future<Output = ()> + 'static {
        self.inner.stopping.wait()
    }

    /// This shard's handle on the bus for one-way messages of type `M`.
    /// See [`crate::bus`].
    pub fn bus<M: Send + 'static>(&self) -> Bus<M> {
        self.bus_with_reply::<M, ()>()
    }

    /// This shard's handle on the bus for messages of type `M` answered with
    /// replies of type `R` ([`Bus::call`]).
    pub fn bus_with_reply<M: Send + 'static, R: Send + 'static>(&self) -> Bus<M, R> {
        self.bus_counted(self.inner.counters.clone())
    }

    /// A bus for the framework's own traffic (connections handed between
    /// shards): its messages stay out of the shard's bus counters, which
    /// count the app's.
    pub(crate) fn framework_bus<M: Send + 'static>(&self) -> Bus<M> {
        self.bus_counted(Arc::new(ShardCounters::default()))
    }

    fn bus_counted<M: Send + 'static, R: Send + 'static>(
        &self,
        counters: Arc<ShardCounters>,
    ) -> Bus<M, R> {
        let key = TypeId::of::<(M, R)>();
        if let Some(end) = self.inner.bus_ends.borrow().get(&key)
            && let Ok(end) = end.clone().downcast::<crate::bus::LocalEnd<M, R>>()
        {
            return Bus::new(end);
        }
        let end = Rc::new(
            crate::bus::LocalEnd::new(
                self.id(),
                self.incarnation(),
                self.inner.bus.mesh::<M, R>(),
                counters,
            )
            .with_spin(self.inner.config.bus_spin),
        );
        self.inner.bus_ends.borrow_mut().insert(key, end.clone());
        Bus::new(end)
    }

    /// Serves HTTP with `handler` on every listen address until shutdown,
    /// then waits for in-flight requests to finish.
    ///
    /// Call it once per shard; a second call returns an error.
    pub async fn serve<H: Handler>(&self, handler: H) -> Result<(), Error> {
        let Some(listeners) = self.inner.listen.borrow_mut().take() else {
            return Err(Error::config("Shard::serve was called twice on one shard"));
        };
        if listeners.is_empty() {
            return Err(Error::config(
                "Shard::serve needs a listen address (--listen)",
            ));
        }
        crate::http::serve(self, listeners, handler).await
    }

    /// The runtime's bus registry (also home of the connection table).
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.inner.bus
    }

    pub(crate) fn counters_arc(&self) -> &Arc<ShardCounters> {
        &self.inner.counters
    }

    pub(crate) fn latch(&self) -> &Latch {
        &self.inner.stopping
    }

    /// Connections handed to this shard while another one is down (taken
    /// once, by the HTTP server).
    pub(crate) fn take_adopted(&self) -> Option<flume::Receiver<std::net::TcpStream>> {
        self.inner.adopted.borrow_mut().take()
    }

    /// Tells the coordinator this incarnation accepts connections.
    pub(crate) fn report_listening(&self) {
        self.report(Event::Listening(self.id(), self.incarnation()));
    }

    pub(crate) fn report(&self, event: Event) {
        // The coordinator outlives every shard; a closed channel means the
        // process is already exiting and there is nobody left to tell.
        let _ = self.inner.events.send(event);
    }
}
