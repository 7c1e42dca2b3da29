//! What a tower service learns about the shard serving a request.
//!
//! [`Shard::serve_tower`](crate::Shard::serve_tower) inserts a
//! [`ShardContext`] into the extensions of every request. It is a small
//! `Copy + Send + Sync` value, so axum handlers (whose futures must be
//! `Send`) can take it: as `Extension<ShardContext>`, or with forkless's
//! `axum` feature directly as an extractor (`ctx: ShardContext`, or just
//! `id: ShardId`). Its [`bus`](ShardContext::bus) gives a [`SendBus`]: the
//! shard's bus in a form a `Send` future may hold.

use std::cell::RefCell;
use std::rc::Rc;

use crate::ShardId;
use crate::bus::{SendBus, ShardBus};
use crate::shard::ShardCore;

thread_local! {
    /// The bus of the shard serving tower services on this thread, while it
    /// does.
    static CURRENT: RefCell<Option<(ShardId, Rc<ShardBus>)>> = const { RefCell::new(None) };
}

/// The shard a request is served on: its id, the shard count, and its bus.
///
/// Found in the extensions of every request a tower service served with
/// [`Shard::serve_tower`](crate::Shard::serve_tower) receives.
///
/// ```
/// use forkless::http::ShardContext;
///
/// fn shard_of<B>(request: &http::Request<B>) -> Option<usize> {
///     request.extensions().get::<ShardContext>().map(|ctx| ctx.id().get())
/// }
/// # let _ = shard_of::<()>;
/// ```
///
/// In axum, take it as `Extension<ShardContext>`; with forkless's cargo
/// feature `axum`, `ShardContext` and [`ShardId`] are extractors themselves
/// (a request not served by `serve_tower` gets `500` from them):
///
/// ```
/// # #[cfg(feature = "axum")] {
/// use axum::Router;
/// use axum::routing::get;
/// use forkless::ShardId;
/// use forkless::http::ShardContext;
///
/// async fn who(id: ShardId) -> String {
///     format!("shard {id}\n")
/// }
///
/// async fn all(ctx: ShardContext) -> String {
///     format!("shard {} of {}\n", ctx.id(), ctx.count())
/// }
///
/// let app: Router = Router::new().route("/who", get(who)).route("/all", get(all));
/// # let _ = app;
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShardContext {
    id: ShardId,
    count: usize,
}

impl ShardContext {
    pub(crate) fn of(shard: &ShardCore) -> Self {
        Self {
            id: shard.id,
            count: shard.count,
        }
    }

    /// The shard serving this request.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// How many shards this process runs.
    pub fn count(&self) -> usize {
        self.count
    }

    /// This shard's bus for one-way messages of type `M`, as a `Send`
    /// handle (see [`SendBus`]).
    ///
    /// # Panics
    ///
    /// Outside a request served by [`Shard::serve_tower`](crate::Shard::serve_tower)
    /// on this context's shard.
    ///
    /// ```no_run
    /// use forkless::ShardId;
    /// use forkless::http::ShardContext;
    ///
    /// // e.g. the body of an axum handler taking `ctx: ShardContext`
    /// async fn tell_shard_zero(ctx: ShardContext) -> &'static str {
    ///     let note = format!("a request reached shard {}", ctx.id());
    ///     match ctx.bus::<String>().send(ShardId::new(0), note).await {
    ///         Ok(()) => "told\n",
    ///         Err(_) => "shard 0 is not running\n",
    ///     }
    /// }
    /// ```
    pub fn bus<M: Send + 'static>(&self) -> SendBus<M> {
        self.bus_with_reply::<M, ()>()
    }

    /// This shard's bus for messages of type `M` answered with `R`
    /// ([`SendBus::call`]).
    ///
    /// # Panics
    ///
    /// Outside a request served by [`Shard::serve_tower`](crate::Shard::serve_tower)
    /// on this context's shard.
    pub fn bus_with_reply<M: Send + 'static, R: Send + 'static>(&self) -> SendBus<M, R> {
        CURRENT.with(|current| match current.borrow().as_ref() {
            Some((id, bus)) if *id == self.id => bus.bus::<M, R>().into(),
            _ => panic!(
                "ShardContext::bus used off shard {}: use it inside a request \
                 served by Shard::serve_tower, on the shard that served it",
                self.id
            ),
        })
    }
}

/// Makes `bus` the bus of this thread's current shard until the guard drops.
pub(crate) fn enter(id: ShardId, bus: &Rc<ShardBus>) -> Entered {
    CURRENT.with(|current| *current.borrow_mut() = Some((id, bus.clone())));
    Entered(())
}

/// Clears the current shard when dropped.
pub(crate) struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        // `try_with`: the thread may be tearing its locals down.
        let _ = CURRENT.try_with(|current| current.borrow_mut().take());
    }
}

#[cfg(feature = "axum")]
mod axum {
    use axum_core::extract::FromRequestParts;
    use http::StatusCode;
    use http::request::Parts;

    use super::ShardContext;
    use crate::ShardId;

    /// What an extractor answers when the request carries no
    /// [`ShardContext`]: the service was not served by
    /// [`Shard::serve_tower`](crate::Shard::serve_tower).
    type Missing = (StatusCode, &'static str);

    const MISSING: Missing = (
        StatusCode::INTERNAL_SERVER_ERROR,
        "no ShardContext in the request: serve this service with Shard::serve_tower\n",
    );

    /// `ShardContext` as an axum extractor (forkless feature `axum`).
    impl<S: Send + Sync> FromRequestParts<S> for ShardContext {
        type Rejection = Missing;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Missing> {
            parts
                .extensions
                .get::<ShardContext>()
                .copied()
                .ok_or(MISSING)
        }
    }

    /// The serving shard's id as an axum extractor (forkless feature `axum`).
    impl<S: Send + Sync> FromRequestParts<S> for ShardId {
        type Rejection = Missing;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Missing> {
            parts
                .extensions
                .get::<ShardContext>()
                .map(ShardContext::id)
                .ok_or(MISSING)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_fits_in_request_extensions_and_send_futures() {
        fn assert_extension<T: Clone + Send + Sync + 'static>() {}
        assert_extension::<ShardContext>();
        fn assert_send<T: Send + Sync>() {}
        assert_send::<SendBus<String, u64>>();
    }

    #[test]
    #[should_panic(expected = "ShardContext::bus used off shard 3")]
    fn the_bus_of_a_context_off_its_shard_panics() {
        let ctx = ShardContext {
            id: ShardId::new(3),
            count: 4,
        };
        let _ = ctx.bus::<String>();
    }
}
