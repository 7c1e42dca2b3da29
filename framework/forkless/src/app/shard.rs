//! The [`Shard`] handle: every method an app can call on its shard, in one
//! place.
//!
//! | method | what | layer it reaches |
//! |---|---|---|
//! | [`id`](Shard::id), [`count`](Shard::count), [`incarnation`](Shard::incarnation), [`cpu`](Shard::cpu) | who and where this shard is | shard |
//! | [`config`](Shard::config), [`counters`](Shard::counters) | the runtime's configuration, this incarnation's counters | shard |
//! | [`is_stopping`](Shard::is_stopping), [`stopping`](Shard::stopping) | whether, or when, shutdown (or this incarnation's replacement) began | coordinator's commands |
//! | [`bus`](Shard::bus), [`bus_with_reply`](Shard::bus_with_reply) | typed messages to other shards and the coordinator | bus |
//! | [`run_on`](Shard::run_on), [`map_reduce`](Shard::map_reduce) | run a closure on another shard, or on all | bus |
//! | [`serve`](Shard::serve), [`serve_tower`](Shard::serve_tower) | HTTP on every listen address | http |
//! | [`inherit`](Shard::inherit), [`replaced`](Shard::replaced), [`hand_over`](Shard::hand_over) | shard-local state handed from a replaced incarnation to its successor (rolling reload) | shard (`handoff.rs`) |
//!
//! Naming: "this shard" is [`Shard::id`] everywhere ([`Bus::shard`](crate::bus::Bus::shard),
//! [`ShardContext::id`](crate::http::ShardContext::id)); "how many shards" is
//! [`Shard::count`] ([`Bus::shards`](crate::bus::Bus::shards),
//! [`ShardContext::shards`](crate::http::ShardContext::shards),
//! [`Coordinator::shards`](crate::Coordinator::shards)).

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use tower_service::Service;

use super::run_on;
use crate::bus::{Bus, RunError, ShardBus};
use crate::http::{BoxError, Handler, RequestBody};
use crate::shard::{ShardCore, ShardCounters, ShardId};
use crate::{Config, Error};

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
    core: Rc<ShardCore>,
    bus: Rc<ShardBus>,
    /// This incarnation's listening sockets, until `serve` takes them.
    listen: RefCell<Option<Vec<std::net::TcpListener>>>,
    /// Connections the coordinator accepted for a shard that is down.
    adopted: RefCell<Option<flume::Receiver<std::net::TcpStream>>>,
}

impl Shard {
    pub(crate) fn new(
        core: Rc<ShardCore>,
        bus: Rc<ShardBus>,
        listen: Vec<std::net::TcpListener>,
        adopted: flume::Receiver<std::net::TcpStream>,
    ) -> Self {
        Self {
            inner: Rc::new(Inner {
                core,
                bus,
                listen: RefCell::new(Some(listen)),
                adopted: RefCell::new(Some(adopted)),
            }),
        }
    }

    /// This shard's identity, `0..count()`.
    pub fn id(&self) -> ShardId {
        self.inner.core.id
    }

    /// Which incarnation of shard [`id`](Self::id) this is: 1 at first
    /// start, one more after every restart or rolling reload.
    pub fn incarnation(&self) -> u32 {
        self.inner.core.incarnation
    }

    /// How many shards this process runs.
    pub fn count(&self) -> usize {
        self.inner.core.count
    }

    /// The CPU this shard is pinned to, or `None` when unpinned.
    pub fn cpu(&self) -> Option<usize> {
        self.inner.core.cpu
    }

    /// The counters of this incarnation of the shard (the admin endpoint
    /// adds up every incarnation's).
    pub fn counters(&self) -> &ShardCounters {
        &self.inner.core.counters
    }

    /// The runtime configuration.
    pub fn config(&self) -> &Config {
        &self.inner.core.config
    }

    /// The app's own arguments, declared with `#[shard_main(args = T)]` or
    /// [`CommandLine::args`](crate::CommandLine::args): the same values on
    /// every shard. `None` when the app declared none or `T` is another type.
    ///
    /// ```no_run
    /// use forkless::prelude::*;
    ///
    /// #[derive(clap::Args, Debug)]
    /// struct AppArgs {
    ///     /// The greeting to answer with.
    ///     #[arg(long, default_value = "hello")]
    ///     greeting: String,
    /// }
    ///
    /// #[shard_main(args = AppArgs)]
    /// async fn main(shard: Shard) -> Result<(), forkless::Error> {
    ///     let greeting = shard.args::<AppArgs>().map_or("hello", |a| &a.greeting).to_owned();
    ///     shard
    ///         .serve(move |_req: Request| {
    ///             let greeting = greeting.clone();
    ///             async move { greeting }
    ///         })
    ///         .await
    /// }
    /// ```
    pub fn args<T: std::any::Any>(&self) -> Option<&T> {
        self.config().get_app_args()
    }

    /// Whether a shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.inner.core.stopping.is_set()
    }

    /// Resolves when the process starts shutting down: the place for the
    /// shard's own shutdown work (Node's `'disconnect'` / shutdown message).
    ///
    /// Cancel-safe; any number of tasks may wait.
    pub fn stopping(&self) -> impl Future<Output = ()> + 'static {
        self.inner.core.stopping.wait()
    }

    /// This shard's handle on the bus for one-way messages of type `M`.
    /// See [`crate::bus`].
    pub fn bus<M: Send + 'static>(&self) -> Bus<M> {
        self.inner.bus.bus::<M, ()>()
    }

    /// This shard's handle on the bus for messages of type `M` answered with
    /// replies of type `R` ([`Bus::call`]).
    pub fn bus_with_reply<M: Send + 'static, R: Send + 'static>(&self) -> Bus<M, R> {
        self.inner.bus.bus::<M, R>()
    }

    /// Runs `f` on shard `to` and returns its result (Seastar's `submit_to`).
    ///
    /// The closure is sent to `to` and its future runs there as a task, so it
    /// may use `to`'s shard-local state; only the closure and the result
    /// cross shards. `Closed` when `to` is not running, `Lost` when the
    /// closure panicked or `to` stopped before it finished.
    ///
    /// ```no_run
    /// # async fn example(shard: forkless::Shard) -> Result<(), forkless::bus::RunError> {
    /// use forkless::ShardId;
    /// let cpu = shard.run_on(ShardId::new(1), |other| async move { other.cpu() }).await?;
    /// # let _ = cpu;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_on<F, Fut, T>(&self, to: ShardId, f: F) -> Result<T, RunError>
    where
        F: FnOnce(Shard) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        run_on::run_on(self, to, f).await
    }

    /// Runs `map` on every shard at once (this one included) and folds the
    /// results in shard order with `reduce`, starting from `init`.
    ///
    /// ```no_run
    /// # async fn example(shard: forkless::Shard) -> Result<(), forkless::bus::RunError> {
    /// let requests = shard
    ///     .map_reduce(|s| async move { s.counters().snapshot().requests }, 0, |a, b| a + b)
    ///     .await?;
    /// # let _ = requests;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn map_reduce<F, Fut, T, A>(
        &self,
        map: F,
        init: A,
        mut reduce: impl FnMut(A, T) -> A,
    ) -> Result<A, RunError>
    where
        F: FnOnce(Shard) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let runs = (0..self.count()).map(|i| self.run_on(ShardId::new(i), map.clone()));
        let results = futures::future::join_all(runs).await;
        let mut acc = init;
        for result in results {
            acc = reduce(acc, result?);
        }
        Ok(acc)
    }

    /// The state the incarnation this one replaces hands over, if any: on
    /// the new incarnation of a rolling reload, before it serves.
    ///
    /// Asks the predecessor (only when a reload started this incarnation
    /// and the predecessor still runs and waits in [`replaced`](Self::replaced))
    /// and waits for its [`hand_over`](Self::hand_over). `None` at first
    /// start, after a crash, when the predecessor never calls `replaced`,
    /// ends without handing anything over, hands over another type, or
    /// takes longer than half `--upgrade-timeout` (the reload's wait for
    /// this incarnation to listen). Call it before serving and before
    /// receiving on the bus: messages for this shard queue for this
    /// incarnation meanwhile. See the "shard-local state" section of
    /// `docs/operations.md` for the whole pattern.
    ///
    /// ```no_run
    /// use std::collections::HashMap;
    ///
    /// # async fn example(shard: forkless::Shard) {
    /// let map: HashMap<String, String> = shard.inherit().await.unwrap_or_default();
    /// # let _ = map;
    /// # }
    /// ```
    pub async fn inherit<T: Send + 'static>(&self) -> Option<T> {
        let core = &self.inner.core;
        let predecessor = core.predecessor?;
        let me = core.incarnation;
        if !core.handoff.ask(me, predecessor) {
            return None;
        }
        let wait = core.config.upgrade_timeout / 2;
        let received = crate::time::timeout(wait, core.handoff.receive(me, predecessor)).await;
        let state = match received {
            Some(state) => state,
            // Too late: nothing may be handed over any more.
            None => core.handoff.withdraw(me),
        }?;
        state.downcast::<T>().ok().map(|state| *state)
    }

    /// Resolves when a successor (the new incarnation of a rolling reload)
    /// asks this incarnation for its state; answer with
    /// [`hand_over`](Self::hand_over) at once, in the same poll (no
    /// `.await` between), so no work sees the state half moved.
    ///
    /// Waiting in `replaced` is what makes this incarnation one that hands
    /// over: [`inherit`](Self::inherit) on a successor gives up at once on
    /// a predecessor that never waited here. Cancel-safe; it may resolve
    /// at most once per successor.
    ///
    /// ```no_run
    /// use std::cell::RefCell;
    /// use std::collections::HashMap;
    /// use std::rc::Rc;
    ///
    /// # async fn example(shard: forkless::Shard) {
    /// let map: Rc<RefCell<HashMap<String, String>>> = Rc::default();
    /// let (this, state) = (shard.clone(), map.clone());
    /// forkless::spawn(async move {
    ///     this.replaced().await;
    ///     let taken = std::mem::take(&mut *state.borrow_mut());
    ///     if this.hand_over(taken).is_ok() {
    ///         // From now on the successor owns the state: forward work to
    ///         // `this.id()` over the bus, which reaches the successor.
    ///     }
    /// })
    /// .detach();
    /// # }
    /// ```
    pub async fn replaced(&self) {
        let core = &self.inner.core;
        core.handoff.replaced(core.incarnation).await;
    }

    /// Hands `state` to the successor that asked for it (after
    /// [`replaced`](Self::replaced) resolved); once.
    ///
    /// `Err(state)` gives it back when no successor waits for it any more
    /// (none asked, it gave up, or it already got a value): this
    /// incarnation still owns it. After `Ok`, this incarnation must not use
    /// the state: send work for it to [`id`](Self::id) over the bus, which
    /// delivers to the successor (the owner of the shard's inbox).
    ///
    /// ```no_run
    /// # async fn example(shard: forkless::Shard) {
    /// shard.replaced().await;
    /// match shard.hand_over(vec![1_u8, 2, 3]) {
    ///     Ok(()) => { /* forward from now on */ }
    ///     Err(_kept) => { /* still ours */ }
    /// }
    /// # }
    /// ```
    pub fn hand_over<T: Send + 'static>(&self, state: T) -> Result<(), T> {
        let core = &self.inner.core;
        core.handoff.hand_over(core.incarnation, state)
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
        let adopted = self.inner.adopted.borrow_mut().take();
        crate::http::serve(
            &self.inner.core,
            &self.inner.bus,
            listeners,
            adopted,
            handler,
        )
        .await
    }

    /// Serves HTTP with a tower `Service` on every listen address until
    /// shutdown, then waits for in-flight requests to finish; an unmodified
    /// axum `Router` (with its layers) is one.
    ///
    /// Like [`serve`](Shard::serve), but for a tower service, which each
    /// request gets a clone of (see [`crate::http`]'s tower section). The
    /// request's extensions hold a [`ShardContext`](crate::http::ShardContext).
    /// Call it once per shard.
    ///
    /// ```no_run
    /// use axum::Router;
    /// use axum::routing::get;
    /// use forkless::prelude::*;
    ///
    /// #[shard_main(listen = "127.0.0.1:3000")]
    /// async fn main(shard: Shard) -> Result<(), forkless::Error> {
    ///     // Built on every shard: each shard has its own router and state.
    ///     let app = Router::new().route("/", get(|| async { "Hello World\n" }));
    ///     shard.serve_tower(app).await
    /// }
    /// ```
    pub async fn serve_tower<S, B>(&self, service: S) -> Result<(), Error>
    where
        S: Service<http::Request<RequestBody>, Response = http::Response<B>> + Clone + 'static,
        S::Error: Into<BoxError>,
        S::Future: 'static,
        B: http_body::Body + 'static,
        B::Error: Into<BoxError>,
    {
        let _entered = crate::http::context::enter(self.id(), &self.inner.bus);
        let handler = crate::http::tower::handler(service, &self.inner.core);
        self.serve(handler).await
    }
}
