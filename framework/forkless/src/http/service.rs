//! hyper's view of the app's handler on one connection.
//!
//! Every response leaves through here, so every response carries `x-shard`:
//! the handler's (a panic becomes `500` with `Connection: close`, a crash of
//! the shard before the handler answered `503` with `Connection: close`) and the
//! framework's own refusals of requests the framing gate stopped (`400`,
//! `408`, `431`, answered without calling the handler, then closed). Each
//! response body is [`Tracked`], so the connection knows when hyper finished
//! it. Every response is counted here too, by status class and latency (from
//! hyper calling the service to the response being handed back).
//!
//! An upgrade request gets an `Offer` for the handler to register its
//! upgrade task in (`upgrade::on`); when the answer is `101`, the service
//! records the switch in [`Requests`] for the connection task.

use std::convert::Infallible;
use std::future::{Future, poll_fn, ready};
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures::FutureExt;
use http::header::{CONNECTION, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::access::AccessLogger;
use super::requests::{Requests, Tracked};
use super::upgrade::Offer;
use super::{Body, Handler, Incoming, IntoResponse, Request};
use crate::shard::ShardCounters;
use crate::shard::crash;
use crate::shard::latch::Wait;

pub(crate) static X_SHARD: HeaderName = HeaderName::from_static("x-shard");

/// What every connection of a shard shares with its service.
pub(crate) struct App<H> {
    pub(crate) handler: H,
    pub(crate) shard_header: HeaderValue,
    pub(crate) counters: Arc<ShardCounters>,
    /// The access log, `None` when off (`access.rs`).
    pub(crate) access: Option<AccessLogger>,
}

/// The service of one connection.
pub(crate) struct ShardService<H> {
    app: Rc<App<H>>,
    requests: Rc<Requests>,
}

impl<H> ShardService<H> {
    pub(crate) fn new(app: Rc<App<H>>, requests: Rc<Requests>) -> Self {
        Self { app, requests }
    }
}

type Answer = Result<Response<Tracked>, Infallible>;

impl<H: Handler> hyper::service::Service<http::Request<hyper::body::Incoming>> for ShardService<H> {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer>>>;

    fn call(&self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let started = Instant::now();
        let app = self.app.clone();
        let requests = self.requests.clone();
        if let Some(rejection) = requests.call() {
            requests.linger();
            let response = closing(rejection.status(), rejection.message());
            let response = stamp(&app, &requests, response, started);
            return Box::pin(ready(Ok(track(response, &requests))));
        }
        let seen = (app.access.as_ref()).map(|log| log.seen(&request, requests.peer()));
        let mut request = request.map(Incoming::hyper);
        let offer = Offer::open(&mut request);
        Box::pin(async move {
            let response = answer(&app, &requests, request).await;
            if let Some(offer) = offer
                && response.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                requests.switch(offer.into_task());
            }
            let response = stamp(&app, &requests, response, started);
            if let (Some(log), Some(seen)) = (&app.access, seen) {
                let bytes = http_body::Body::size_hint(response.body())
                    .exact()
                    .unwrap_or(0);
                log.log(seen, response.status().as_u16(), bytes);
            }
            Ok(track(response, &requests))
        })
    }
}

/// The handler's answer to `request`: a panic becomes `500` with
/// `Connection: close`; an error answer that closes asks for a lingering
/// close (the request's body may be unread).
pub(crate) async fn answer<H: Handler>(
    app: &App<H>,
    requests: &Requests,
    request: Request,
) -> Response<Body> {
    // `call` itself runs inside too: a handler may panic before its future.
    let answered =
        unless_crashed(AssertUnwindSafe(async { app.handler.call(request).await }).catch_unwind())
            .await;
    let response = match answered {
        Some(Ok(output)) => output.into_response(),
        Some(Err(_)) => {
            app.counters.handler_panic();
            tracing::error!("handler panicked; answered 500 and closing the connection");
            closing(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
        }
        None => closing(
            StatusCode::SERVICE_UNAVAILABLE,
            "the shard serving this connection crashed; retry on a new connection\n",
        ),
    };
    if asks_to_close(&response)
        && (response.status().is_client_error() || response.status().is_server_error())
    {
        requests.linger();
    }
    response
}

/// `answer`'s output, or `None` when the shard's incarnation crashes before
/// it is ready (the handler's future is then dropped). The handler is
/// polled first and the crash latch only once the handler is pending, so a
/// handler that answers at once never touches it.
async fn unless_crashed<F: Future>(answer: F) -> Option<F::Output> {
    let mut answer = pin!(answer);
    let mut crashed: Option<Wait> = None;
    poll_fn(|cx| {
        if let Poll::Ready(output) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        let wait = match &mut crashed {
            Some(wait) => wait,
            None => match crash::latch() {
                Some(latch) => crashed.insert(latch.wait()),
                None => return Poll::Pending,
            },
        };
        Pin::new(wait).poll(cx).map(|()| None)
    })
    .await
}

/// Counts a response (status class, latency since `started`) and stamps
/// `x-shard`, and `Connection: close` once the shard is draining.
pub(crate) fn stamp<H>(
    app: &App<H>,
    requests: &Requests,
    mut response: Response<Body>,
    started: Instant,
) -> Response<Body> {
    app.counters
        .request(response.status().as_u16(), started.elapsed());
    let closing = requests.is_draining() && response.status() != StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(X_SHARD.clone(), app.shard_header.clone());
    if closing {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Tracks a response on its way through hyper (see [`Tracked`]).
fn track(response: Response<Body>, requests: &Rc<Requests>) -> Response<Tracked> {
    response.map(|body| Tracked::new(body, requests.clone()))
}

/// A text response that closes the connection.
pub(crate) fn closing(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = (status, text).into_response();
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

pub(crate) fn asks_to_close(response: &Response<Body>) -> bool {
    response.headers().get_all(CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_responses_say_so() {
        let response = closing(StatusCode::PAYLOAD_TOO_LARGE, "too large\n");
        assert_eq!(response.status(), 413);
        assert!(asks_to_close(&response));
        assert!(!asks_to_close(&"ok".into_response()));
        let mut listed = "x".into_response();
        listed
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade, Close"));
        assert!(asks_to_close(&listed));
    }
}
