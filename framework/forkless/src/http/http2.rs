//! HTTP/2 on a connection: hyper's HTTP/2 server over the connection's
//! stream (the plain socket for h2c, the TLS stream for ALPN `h2`), on the
//! shard's own executor and timer.
//!
//! Contract:
//!
//! - **Chosen above, once** (`connection.rs`): by ALPN `h2` after a TLS
//!   handshake, or on a plaintext connection when its first bytes are the
//!   client preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (recognised by the
//!   I/O, `io.rs`, only where the fast path declines a head). The bytes read
//!   before that are replayed to hyper first ([`H2Io`]).
//! - **Streams run on this shard.** hyper spawns one task per stream through
//!   [`ShardExecutor`] (a local task: handlers, their futures and their
//!   bodies may be `!Send`); its sleeps are the shard's timer
//!   (`shard/timer.rs`). A panic in a stream's task ends that stream only
//!   (it is reset); a handler panic is answered `500` on its stream
//!   (`service.rs`); the connection and its other streams carry on.
//! - **Limits** ([`Http2::new`], defaults in `limits.rs`): concurrent streams,
//!   header list size (the HTTP/1 head limit, `--max-header-size`), flow
//!   control windows, keep-alive pings with a timeout, and the resets a
//!   client may cause (rapid reset) before it gets `GOAWAY` with
//!   `ENHANCE_YOUR_CALM`. A header block that outgrows the header list limit
//!   (a CONTINUATION flood) ends the connection. A connection that brings no
//!   stream within the header read timeout, or has none open for the
//!   keep-alive timeout, is sent `GOAWAY` and closed.
//! - **Draining** (`drain.rs`): when the shard stops, hyper's
//!   `graceful_shutdown` sends `GOAWAY`; streams in flight finish, then the
//!   connection closes.
//!
//! Every response carries `x-shard` (`service.rs`); hyper drops the
//! connection-specific headers HTTP/2 forbids (`Connection: close` while
//! draining). Nothing here blocks the shard.

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, IoSlice};
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use futures::FutureExt;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::server::conn::http2;

use super::Handler;
use super::drain::{Drain, Phase};
use super::limits::{
    H2_MAX_CONCURRENT_STREAMS, H2_MAX_LOCAL_ERROR_RESET_STREAMS,
    H2_MAX_PENDING_ACCEPT_RESET_STREAMS, H2_PING_INTERVAL, H2_PING_TIMEOUT, H2_WINDOW, Limits,
};
use super::requests::{Requests, Tracked};
use super::service::ShardService;
use super::transport::Transport;
use crate::shard::ShardCounters;
use crate::shard::timer::{ShardSleep, ShardTimer};

/// The client connection preface of HTTP/2 (RFC 9113, section 3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's HTTP/2 executor on a shard: each stream's future becomes a local
/// task of the current shard, under `catch_unwind` (a panic ends that
/// stream, never the shard).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ShardExecutor;

impl<F: Future + 'static> hyper::rt::Executor<F> for ShardExecutor {
    fn execute(&self, future: F) {
        crate::spawn(async move {
            if AssertUnwindSafe(future).catch_unwind().await.is_err() {
                tracing::error!("an HTTP/2 stream panicked; that stream was reset");
            }
        })
        .detach();
    }
}

/// HTTP/2 on a shard: hyper's server configured with the shard's limits;
/// see the module docs and `limits.rs` for each default.
pub(crate) struct Http2 {
    builder: http2::Builder<ShardExecutor>,
    limits: Limits,
}

impl Http2 {
    pub(crate) fn new(limits: &Limits) -> Self {
        let mut builder = http2::Builder::new(ShardExecutor);
        builder
            .timer(ShardTimer)
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX))
            .initial_stream_window_size(H2_WINDOW)
            .initial_connection_window_size(H2_WINDOW)
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS);
        Self {
            builder,
            limits: *limits,
        }
    }

    /// Serves a connection in HTTP/2 until it closes: `replay` holds the
    /// bytes already read from `stream` (the preface, for h2c).
    pub(crate) async fn serve<H: Handler, S: Transport>(
        &self,
        stream: S,
        replay: Bytes,
        service: ShardService<H>,
        counters: Arc<ShardCounters>,
        requests: &Rc<Requests>,
        drain: &Drain<'_>,
    ) {
        let io = H2Io {
            stream,
            replay,
            counters,
        };
        let service = H2Service {
            inner: service,
            requests: requests.clone(),
        };
        let conn = self.builder.serve_connection(io, service);
        let served = AssertUnwindSafe(drive(conn, &self.limits, requests, drain))
            .catch_unwind()
            .await;
        match served {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "HTTP/2 connection ended with an error"),
            Err(_) => tracing::error!("HTTP/2 connection task panicked; connection closed"),
        }
    }
}

/// Drives hyper's connection: `GOAWAY` (hyper's graceful shutdown) once
/// the shard stops or the connection idles out; then streams in flight
/// finish and the connection closes.
async fn drive<H: Handler, S: Transport>(
    conn: http2::Connection<H2Io<S>, H2Service<H>, ShardExecutor>,
    limits: &Limits,
    requests: &Requests,
    drain: &Drain<'_>,
) -> hyper::Result<()> {
    let mut conn = pin!(conn);
    let mut idle = Idle {
        sleep: ShardSleep::new(Instant::now() + limits.header_read_timeout),
        seen: 0,
    };
    let mut shutting = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if shutting {
            return Poll::Pending;
        }
        let stopped = drain.poll(cx) != Phase::Serving;
        if !stopped && !idle.poll(cx, requests, limits) {
            return Poll::Pending;
        }
        if !stopped {
            tracing::debug!("HTTP/2 connection idle; sending GOAWAY");
        }
        shutting = true;
        conn.as_mut().graceful_shutdown();
        conn.as_mut().poll(cx)
    })
    .await
}

/// The idle check of one HTTP/2 connection: idle when, at the end of a
/// period, no stream is open and none began during it (so the connection
/// idled one to two periods). The first period is the header read timeout
/// (for the preface and the first stream), the later ones the keep-alive
/// timeout. One shard-timer entry, reset each period.
struct Idle {
    sleep: ShardSleep,
    /// Streams begun by the start of the current period.
    seen: u64,
}

impl Idle {
    /// Whether the connection idled out; registers the waker otherwise.
    fn poll(&mut self, cx: &mut Context<'_>, requests: &Requests, limits: &Limits) -> bool {
        while Pin::new(&mut self.sleep).poll(cx).is_ready() {
            let begun = requests.heads();
            if requests.open() == 0 && begun == self.seen {
                return true;
            }
            self.seen = begun;
            self.sleep.reset(Instant::now() + limits.keep_alive_timeout);
        }
        false
    }
}

/// hyper's view of the connection's stream: first the bytes read before
/// HTTP/2 was recognised, then the stream itself. Writes go straight to the
/// stream (hyper's HTTP/2 buffers its frames and flushes once per poll).
pub(crate) struct H2Io<S> {
    stream: S,
    replay: Bytes,
    counters: Arc<ShardCounters>,
}

// The stream is never pinned: it is only reached through `&mut`.
impl<S> Unpin for H2Io<S> {}

impl<S: Transport> Read for H2Io<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        // Through a stack buffer: hyper's is uninitialised (no `unsafe` here).
        let mut chunk = [0u8; 16 * 1024];
        let want = buf.remaining().min(chunk.len());
        let n = std::task::ready!(this.stream.poll_read(cx, &mut chunk[..want]))?;
        this.counters.received(n);
        buf.put_slice(&chunk[..n]);
        Poll::Ready(Ok(()))
    }
}

impl<S: Transport> Write for H2Io<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = std::task::ready!(this.stream.poll_write(cx, buf))?;
        this.counters.sent(written);
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let buf = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        self.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every write went to the stream already.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream.poll_close(cx)
    }
}

/// The connection's service over HTTP/2: each call is one stream, counted
/// as a request begun (for the idle check), then served as on HTTP/1.
pub(crate) struct H2Service<H> {
    inner: ShardService<H>,
    requests: Rc<Requests>,
}

impl<H: Handler> hyper::service::Service<http::Request<hyper::body::Incoming>> for H2Service<H> {
    type Response = http::Response<Tracked>;
    type Error = Infallible;
    type Future =
        <ShardService<H> as hyper::service::Service<http::Request<hyper::body::Incoming>>>::Future;

    fn call(&self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        self.requests.head_passed();
        self.inner.call(request)
    }
}
