//! A tower timeout layer on the shard's timer.
//!
//! tower-http's `TimeoutLayer` (and tower's) sleep on tokio's timer, which on
//! a shard needs the cargo feature `tokio` (on with `axum`): a helper
//! thread runs tokio's timer and wakes the shard. [`TimeoutLayer`] does the
//! same job on the shard's own timer, without that thread or its wake-ups,
//! and its futures are `Send`, so axum's `Router::layer` takes it. Swapping
//! is a one-line change of import:
//! `tower_http::timeout::TimeoutLayer` -> `forkless::http::TimeoutLayer`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::StatusCode;
use crate::shard::timer::ShardSleep;

/// Answers a request whose service has not responded within a time limit,
/// and drops the service's future (its work stops at its next `.await`).
///
/// The answer has the chosen status (`503 Service Unavailable` with
/// [`new`](Self::new)) and an empty body. Only the time to the response
/// head counts; streaming the body afterwards is not limited. A timeout made
/// off a shard never fires.
///
/// ```
/// use std::time::Duration;
/// use axum::Router;
/// use axum::routing::get;
/// use forkless::http::{StatusCode, TimeoutLayer};
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "quick\n" }))
///     .layer(TimeoutLayer::with_status_code(
///         StatusCode::GATEWAY_TIMEOUT,
///         Duration::from_secs(5),
///     ));
/// # let _ = app;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    status: StatusCode,
    timeout: Duration,
}

impl TimeoutLayer {
    /// Answers `503 Service Unavailable` after `timeout`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let layer = forkless::http::TimeoutLayer::new(Duration::from_secs(10));
    /// # let _ = layer;
    /// ```
    pub fn new(timeout: Duration) -> Self {
        Self::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout)
    }

    /// Answers `status` after `timeout` (the argument order of tower-http's
    /// `TimeoutLayer::with_status_code`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use forkless::http::{StatusCode, TimeoutLayer};
    ///
    /// let layer = TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(10));
    /// # let _ = layer;
    /// ```
    pub fn with_status_code(status: StatusCode, timeout: Duration) -> Self {
        Self { status, timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            status: self.status,
            timeout: self.timeout,
        }
    }
}

/// The service [`TimeoutLayer`] wraps around another.
///
/// ```
/// use std::time::Duration;
/// use forkless::http::{Timeout, TimeoutLayer};
/// use tower_layer::Layer;
///
/// # fn wrap<S>(service: S) -> Timeout<S> {
/// TimeoutLayer::new(Duration::from_secs(1)).layer(service)
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Timeout<S> {
    inner: S,
    status: StatusCode,
    timeout: Duration,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Timeout<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let deadline = Instant::now()
            .checked_add(self.timeout)
            .unwrap_or_else(crate::time::far_future);
        TimeoutFuture {
            inner: self.inner.call(request),
            sleep: ShardSleep::new(deadline),
            status: self.status,
        }
    }
}

pin_project! {
    /// The response future of [`Timeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        sleep: ShardSleep,
        status: StatusCode,
    }
}

impl<F> std::fmt::Debug for TimeoutFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeoutFuture")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = Result<http::Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(answered) = this.inner.poll(cx) {
            return Poll::Ready(answered);
        }
        if Pin::new(this.sleep).poll(cx).is_ready() {
            let mut response = http::Response::new(ResBody::default());
            *response.status_mut() = *this.status;
            return Poll::Ready(Ok(response));
        }
        Poll::Pending
    }
}
