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
//! Shards run on glommio, not tokio. Middleware that sleeps on tokio's timer
//! (tower-http's `TimeoutLayer`, tower's `timeout` and `RateLimit`) or uses
//! `tokio::spawn` works with the cargo feature `tokio` (on with
//! `axum`): every shard then runs in the context of one tokio runtime of the
//! process, on helper threads (`shard/tokio_rt.rs`), so tokio clients work too.
//! With it, hyper's own upgrades (`hyper::upgrade::on`, so axum's
//! `WebSocketUpgrade`) work too, through a bridge (`hyper_upgrade.rs`). Without it, such middleware panics
//! on its first request. [`TimeoutLayer`](super::TimeoutLayer) and
//! [`crate::time`] use the shard's own clock and need no helper thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures::future::{Either, LocalBoxFuture};
use http_body::{Frame, SizeHint};
use http_body_util::Limited;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::context::ShardContext;
use super::service::closing;
use super::{
    Body, BodyError, BoxError, Handler, Incoming, IntoResponse, Request, Response, StatusCode,
};
use crate::shard::ShardCore;

/// `service` as a [`Handler`] for `shard`'s server: each request gets a
/// clone of the service and a [`ShardContext`] in its extensions.
pub(crate) fn handler<S, B>(service: S, shard: &ShardCore) -> impl Handler
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>> + Clone + 'static,
    S::Error: Into<BoxError>,
    S::Future: 'static,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    TowerHandler {
        service,
        context: ShardContext::of(shard),
        body_limit: shard.config.http.max_body_size,
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
    type Future = Either<Answer<S, http::Request<RequestBody>>, LocalBoxFuture<'static, Response>>;

    fn call(&self, request: Request) -> Self::Future {
        // hyper's own upgrade (axum's `WebSocketUpgrade`), bridged off the shard.
        #[cfg(feature = "tokio")]
        if super::hyper_upgrade::asks(&request) {
            let this = TowerHandler {
                service: self.service.clone(),
                context: self.context,
                body_limit: self.body_limit,
            };
            return Either::Right(Box::pin(super::hyper_upgrade::serve(
                request,
                move |request| this.answer(request),
            )));
        }
        Either::Left(self.answer(request))
    }
}

impl<S, B> TowerHandler<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>> + Clone + 'static,
    S::Error: Into<BoxError>,
    S::Future: 'static,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    /// One request through the service.
    fn answer(&self, request: Request) -> Answer<S, http::Request<RequestBody>> {
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

impl<S, Req, B> Future for Answer<S, Req>
where
    S: Service<Req, Response = http::Response<B>>,
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
    Body::new(BufBody { inner: body })
}

pin_project! {
    /// A body whose frames' data is turned into `Bytes`. Unlike
    /// `http_body_util::MapFrame`, it keeps the size hint (the data keeps
    /// its length), so hyper can still send a `Content-Length`.
    struct BufBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B: http_body::Body> http_body::Body for BufBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = ready!(self.project().inner.poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::future::{Ready, ready};
    use std::rc::Rc;

    use futures::executor::block_on;
    use http_body::Body as _;
    use http_body_util::{BodyExt, Full};

    use super::*;

    type Req = http::Request<()>;

    fn answer<S: Service<Req>>(service: S) -> Answer<S, Req> {
        Answer {
            state: State::Ready {
                service,
                request: Some(http::Request::new(())),
            },
        }
    }

    /// Answers with a body whose data is not `Bytes`; `Pending` from
    /// `poll_ready` the first `busy` times.
    #[derive(Clone)]
    struct Echo {
        busy: Rc<Cell<u32>>,
    }

    impl Service<Req> for Echo {
        type Response = http::Response<Full<VecDeque<u8>>>;
        type Error = Infallible;
        type Future = Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.busy.get() > 0 {
                self.busy.set(self.busy.get() - 1);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Req) -> Self::Future {
            let data: VecDeque<u8> = b"from a VecDeque".iter().copied().collect();
            ready(Ok(http::Response::new(Full::new(data))))
        }
    }

    #[test]
    fn a_service_is_driven_ready_then_called_and_any_buf_becomes_bytes() {
        let busy = Rc::new(Cell::new(3));
        let response = block_on(answer(Echo { busy: busy.clone() }));
        assert_eq!(busy.get(), 0, "poll_ready was asked until ready");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().size_hint().exact(), Some(15));
        let body = block_on(response.into_body().collect()).map(|c| c.to_bytes());
        assert_eq!(body.ok().as_deref(), Some(&b"from a VecDeque"[..]));
    }

    #[derive(Clone)]
    struct Failing {
        when_ready: bool,
    }

    impl Service<Req> for Failing {
        type Response = http::Response<Full<Bytes>>;
        type Error = std::io::Error;
        type Future = Ready<Result<Self::Response, std::io::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
            if self.when_ready {
                return Poll::Ready(Err(std::io::Error::other("not ready")));
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Req) -> Self::Future {
            ready(Err(std::io::Error::other("failed")))
        }
    }

    #[test]
    fn a_failing_service_answers_500_and_closes() {
        for when_ready in [true, false] {
            let response = block_on(answer(Failing { when_ready }));
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(response.headers()[http::header::CONNECTION], "close");
        }
    }
}
