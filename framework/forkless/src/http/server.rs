//! The accept loop and the connection task of one shard.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{Either, select};
use glommio::net::{TcpListener, TcpStream};
use http::header::{CONNECTION, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use hyper::server::conn::http1;

use super::io::{self, Flush, Io};
use super::timer::ShardTimer;
use super::{Body, Handler, IntoResponse, Request};
use crate::Error;
use crate::shard::latch::Latch;
use crate::shard::{Shard, ShardCounters, listener};

static X_SHARD: HeaderName = HeaderName::from_static("x-shard");

/// Pause after an accept error (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// What every connection of a shard shares.
struct Ctx<H> {
    handler: H,
    shard_header: HeaderValue,
    counters: Arc<ShardCounters>,
    builder: http1::Builder,
    stopping: Latch,
    open: OpenConnections,
}

/// Serves `handler` on `listeners` until the shard stops, then waits for open
/// connections to finish.
pub(crate) async fn serve<H: Handler>(
    shard: &Shard,
    listeners: Vec<std::net::TcpListener>,
    handler: H,
) -> Result<(), Error> {
    let listeners: Vec<TcpListener> = listeners.into_iter().map(listener::into_glommio).collect();

    let config = shard.config();
    let mut builder = http1::Builder::new();
    builder
        .timer(ShardTimer)
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    let ctx = Rc::new(Ctx {
        handler,
        shard_header: HeaderValue::from(shard.id().get()),
        counters: Arc::clone(shard.counters_arc()),
        builder,
        stopping: shard.latch().clone(),
        open: OpenConnections::default(),
    });

    tracing::debug!(listeners = listeners.len(), "serving");
    futures::future::join_all(listeners.into_iter().map(|l| accept_loop(l, ctx.clone()))).await;
    tracing::debug!(
        open = ctx.open.count.get(),
        "stopped accepting; finishing open connections"
    );
    ctx.open.drained().await;
    Ok(())
}

async fn accept_loop<H: Handler>(listener: TcpListener, ctx: Rc<Ctx<H>>) {
    let mut stop = pin!(ctx.stopping.wait());
    loop {
        let accepted = match select(pin!(listener.accept()), stop.as_mut()).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(_) => return,
        };
        match accepted {
            Ok(stream) => {
                crate::spawn(connection(stream, ctx.clone())).detach();
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed; retrying");
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn connection<H: Handler>(stream: TcpStream, ctx: Rc<Ctx<H>>) {
    let _open = ctx.open.enter(&ctx.counters);
    // Responses are flushed whole; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let service = ShardService { ctx: ctx.clone() };
    let (io, flush) = io::split(stream);
    let conn = ctx.builder.serve_connection(io, service);
    let served = AssertUnwindSafe(Flush::new(flush, Box::pin(drive(conn, &ctx.stopping))))
        .catch_unwind()
        .await;
    match served {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "connection ended with an error"),
        Err(_) => tracing::error!("connection task panicked; connection closed"),
    }
}

/// Serves one connection; on shutdown, lets the request in flight finish
/// (its response carries `Connection: close`) and closes an idle one.
async fn drive<H: Handler>(
    conn: http1::Connection<Io, ShardService<H>>,
    stopping: &Latch,
) -> hyper::Result<()> {
    let mut conn = pin!(conn);
    match select(conn.as_mut(), pin!(stopping.wait())).await {
        Either::Left((result, _)) => result,
        Either::Right(((), _)) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// hyper's view of the app's handler: adds `x-shard`, catches panics.
struct ShardService<H> {
    ctx: Rc<Ctx<H>>,
}

impl<H: Handler> hyper::service::Service<Request> for ShardService<H> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>>>>;

    fn call(&self, request: Request) -> Self::Future {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let answered = AssertUnwindSafe(async { ctx.handler.call(request).await })
                .catch_unwind()
                .await;
            let mut response = match answered {
                Ok(output) => output.into_response(),
                Err(_) => {
                    ctx.counters.handler_panic();
                    tracing::error!("handler panicked; answered 500 and closing the connection");
                    internal_error()
                }
            };
            ctx.counters.request();
            response
                .headers_mut()
                .insert(X_SHARD.clone(), ctx.shard_header.clone());
            Ok(response)
        })
    }
}

fn internal_error() -> Response<Body> {
    let mut response =
        (StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n").into_response();
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Counts a shard's open connections and lets shutdown wait for zero.
#[derive(Default)]
struct OpenConnections {
    count: Cell<usize>,
    waiter: Cell<Option<Waker>>,
}

struct OpenGuard<'a> {
    open: &'a OpenConnections,
    counters: &'a ShardCounters,
}

impl OpenConnections {
    fn enter<'a>(&'a self, counters: &'a ShardCounters) -> OpenGuard<'a> {
        self.count.set(self.count.get() + 1);
        counters.connection_opened();
        OpenGuard {
            open: self,
            counters,
        }
    }

    async fn drained(&self) {
        std::future::poll_fn(|cx| {
            if self.count.get() == 0 {
                Poll::Ready(())
            } else {
                self.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        let left = self.open.count.get() - 1;
        self.open.count.set(left);
        self.counters.connection_closed();
        if left == 0
            && let Some(waiter) = self.open.waiter.take()
        {
            waiter.wake();
        }
    }
}
