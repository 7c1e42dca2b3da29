//! Serving any tower `Service` (an axum `Router`, say) on every shard.
//!
//! [`Shard::serve_tower`] adapts a tower service into a [`Handler`] and
//! serves it with [`Shard::serve`], so it gets everything a handler gets:
//! the same connection task, limits and timeouts, `x-shard` on every
//! response, per-shard counters, graceful shutdown, and a panic costing one
//! request (`500`), never the shard.
//!
//! - **One instance per shard.** Each shard runs the shard function, so each
//!   builds its own service (and its own state) on its own thread.
//! - **Cloned per request.** As hyper-util and axum do, each request gets a
//!   clone of the service, which is then driven to readiness and called. So
//!   the service must be `Clone` (an axum `Router` is: an `Arc`); it, its
//!   futures and its response bodies need not be `Send`.
//! - **Request in.** The service receives `http::Request<`[`RequestBody`]`>`:
//!   hyper's body, capped at `--max-body-size` (`413` beyond), with a [`ShardContext`] in
//!   its extensions.
//! - **Response out.** Any `http::Response<B>` whose body is an
//!   [`http_body::Body`] (any `Buf` data, an error convertible to
//!   [`BoxError`]). A service error is logged and answered with `500`.
//!
//! No tokio runtime runs on a shard: middleware that needs tokio's timers or
//! `tokio::spawn` (tower-http's `TimeoutLayer`, tower's `Buffer`,
//! `RateLimit`, `ServeDir`) panics on its first request. Use
//! [`TimeoutLayer`](super::TimeoutLayer) and [`crate::time`] instead.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::context::{self, ShardContext};
use super::service::closing;
use super::{
    Body, BodyError, BoxError, Handler, Incoming, IntoResponse, Request, Response, StatusCode,
};
use crate::{Error, Shard};

impl Shard {
    /// Serves HTTP with a tower `Service` on every listen address until
    /// shutdown, then waits for in-flight requests to finish; an unmodified
    /// axum `Router` (with its layers) is one.
    ///
    /// Like [`serve`](Shard::serve), but for a tower service, which each
    /// request gets a clone of (see [`crate::http`]'s tower section). The
    /// request's extensions hold a [`ShardContext`]. Call it once per shard.
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
        let _entered = context::enter(self);
        let handler = TowerHandler {
            service,
            context: ShardContext::of(self),
            body_limit: self.config().http.max_body_size,
        };
        self.serve(handler).await
    }
}

/// A tower service as a [`Handler`].
struct TowerHandler<S> {
    service: S,
    context: ShardContext,
    body_limit: usize,
}

impl<S, B> Handler for TowerHandler<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>> + Clone + 'static,
    S::Error: Into<BoxError>,
    S::Future: 'static,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Response;
    type Future = Answer<S, http::Request<RequestBody>>;

    fn call(&self, request: Request) -> Self::Future {
        if http_body::Body::size_hint(request.body()).lower() > self.body_limit as u64 {
            // It could never be read whole: refuse it before the service runs.
            let limit = self.body_limit;
            return Answer {
                state: State::Refused {
                    response: Some(BodyError::TooLarge { limit }.into_response()),
                },
            };
        }
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(self.context);
        let request = http::Request::from_parts(
            parts,
            RequestBody {
                inner: Limited::new(body, self.body_limit),
            },
        );
        Answer {
            state: State::Ready {
                service: self.service.clone(),
                request: Some(request),
            },
        }
    }
}

pin_project! {
    /// One request through a tower service: readiness, call, response.
    struct Answer<S, Req> where S: Service<Req> {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req> where S: Service<Req> {
        Refused { response: Option<Response> },
        Ready { service: S, request: Option<Req> },
        Called { #[pin] future: S::Future },
        Done,
    }
}

impl<S, B> Future for Answer<S, http::Request<RequestBody>>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Refused { response } => {
                    let response = response.take();
                    state.set(State::Done);
                    return Poll::Ready(
                        response.unwrap_or_else(|| failed("the refusal was already taken".into())),
                    );
                }
                StateProj::Ready { service, request } => {
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        state.set(State::Done);
                        return Poll::Ready(failed(error.into()));
                    }
                    let Some(request) = request.take() else {
                        state.set(State::Done);
                        return Poll::Ready(failed("request already taken".into()));
                    };
                    let future = service.call(request);
                    state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let answered = ready!(future.poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(match answered {
                        Ok(response) => response.map(into_body),
                        Err(error) => failed(error.into()),
                    });
                }
                StateProj::Done => panic!("a tower answer was polled after it completed"),
            }
        }
    }
}

/// Any body with `Buf` data as a forkless [`Body`]; `Bytes` data is not copied.
fn into_body<B>(body: B) -> Body
where
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    Body::new(
        body.map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))),
    )
}

/// The answer to a request whose service failed.
fn failed(error: BoxError) -> Response {
    tracing::error!(%error, "the tower service failed; answered 500 and closing the connection");
    closing(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
}

/// The request body a tower service receives: hyper's [`Incoming`], cut off
/// with an error past `--max-body-size`
/// ([`Config::max_body_size`](crate::Config::max_body_size)).
///
/// A request whose `Content-Length` is over the limit never reaches the
/// service: it is answered `413` with `Connection: close`, before a byte of
/// the body is read. A body without a length that passes the limit fails
/// with an error; axum's body extractors (`Bytes`, `String`, `Json`, ...)
/// answer it with `413` (`400` behind tower-http's `RequestBodyLimitLayer`).
/// axum's own `DefaultBodyLimit` (2 MB) applies as well: the lower wins.
///
/// ```
/// use forkless::http::RequestBody;
///
/// fn assert_body<B: http_body::Body<Data = bytes::Bytes> + Send + 'static>() {}
/// assert_body::<RequestBody>();
/// ```
#[derive(Debug)]
pub struct RequestBody {
    inner: Limited<Incoming>,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
