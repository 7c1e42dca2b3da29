//! What a shard serves: an async function from request to response.

use std::future::Future;

use super::{IntoResponse, Request};

/// An HTTP handler: any `Fn(Request) -> impl Future<Output = impl IntoResponse>`.
///
/// Handlers run on one shard and are never sent to another, so they and their
/// futures may be `!Send` and may hold shard-local state (`Rc`, `RefCell`).
/// Each shard builds its own handler, so nothing is shared by accident.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use forkless::http::{Handler, Request};
///
/// let hits = Rc::new(Cell::new(0u64));
/// let handler = move |_req: Request| {
///     let hits = hits.clone();
///     async move {
///         hits.set(hits.get() + 1);
///         format!("hit {} on this shard\n", hits.get())
///     }
/// };
/// fn assert_handler(_: impl Handler) {}
/// assert_handler(handler);
/// ```
pub trait Handler: 'static {
    /// What the handler returns.
    type Output: IntoResponse;
    /// The future answering one request.
    type Future: Future<Output = Self::Output> + 'static;

    /// Answers one request.
    fn call(&self, request: Request) -> Self::Future;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: IntoResponse,
{
    type Output = Fut::Output;
    type Future = Fut;

    fn call(&self, request: Request) -> Fut {
        self(request)
    }
}
