//! One connection, from the moment it was admitted to its close.
//!
//! Contract:
//!
//! - **The protocol is chosen once, here, above the I/O** ([`Protocol`]):
//!   on a TLS listener after the handshake (`tls.rs`) from what ALPN
//!   settled on ([`Protocol::negotiated`]): `h2` is HTTP/2 (`http2.rs`),
//!   anything else HTTP/1.1, starting on the fast path (`fast.rs`) and
//!   handed to hyper's HTTP/1 server at the first head the fast path does
//!   not take. A connection whose first bytes are HTTP/2's preface (h2c with
//!   prior knowledge) is recognised where the fast path declines that head
//!   and goes to HTTP/2 with the bytes read so far. The I/O below (`io.rs`:
//!   the receive buffer, the framing gate, the deadlines, batched writes)
//!   serves HTTP/1 and is generic over the stream (`transport.rs`); HTTP/2
//!   reads and writes the same stream through hyper's HTTP/2 server.
//! - **One drain policy** (`drain.rs`) watches the shard's stop for
//!   whichever protocol serves: stop, close idle, grace for one more request.
//! - **Panics cost this connection only.** Each protocol runs under
//!   `catch_unwind`; a panic closes the connection and is logged (on
//!   HTTP/2, a panicking stream costs that stream only: `http2.rs`).
//! - **A refused request closes lingering** ([`Conn::linger`]): the client
//!   reads that answer rather than a reset; not past the start of a
//!   shutdown.
//! - **An upgrade stays in this task:** after a `101` the task takes the
//!   socket back from hyper and runs the handler's upgrade task on it
//!   (under `catch_unwind`). On shutdown it has [`Shared::upgrade_grace`] to
//!   end by itself; then it is dropped and its socket closed.
//!
//! Nothing here blocks the shard; the connection's future is `!Send` and
//! stays on its shard. It imports the layers below it (fast path, I/O,
//! drain, service, upgrade), never the accept loop (`server.rs`).

use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::select;
use hyper::server::conn::http1;

use super::Handler;
use super::drain::{Drain, Phase};
use super::fast::{self, FastEnd};
use super::flush::{self, Ended};
use super::http2;
use super::io::{self, Conn, Io};
use super::limits::Limits;
use super::requests::Requests;
use super::service::{App, ShardService};
use super::socket::Socket;
use super::tls;
use super::transport::Transport;
use super::upgrade::{UpgradeTask, Upgraded};
use crate::shard::ShardCounters;
use crate::shard::latch::Latch;

/// What every connection of a shard shares.
pub(crate) struct Shared<H> {
    pub(crate) app: Rc<App<H>>,
    pub(crate) counters: Arc<ShardCounters>,
    pub(crate) builder: http1::Builder,
    /// hyper's HTTP/2 server with the shard's limits (`http2.rs`).
    pub(crate) http2: http2::Http2,
    pub(crate) stopping: Latch,
    pub(crate) limits: Limits,
    /// How long upgraded connections may run on after a shutdown began.
    pub(crate) upgrade_grace: Duration,
    /// HTTPS: every connection starts with a TLS handshake (`tls.rs`).
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

/// The protocol a connection speaks, chosen once when it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// HTTP/1.1: the fast path, then hyper's HTTP/1 from the first head
    /// the fast path does not take. A plaintext connection whose first
    /// bytes are HTTP/2's preface (h2c with prior knowledge) is recognised
    /// there (`io.rs`, where the fast path declines a head) and goes to
    /// HTTP/2 with the bytes read so far.
    Http1,
    /// HTTP/2 (`http2.rs`): hyper's HTTP/2 server on the shard's executor.
    Http2,
}

impl Protocol {
    /// A TLS connection's protocol, from what ALPN settled on: the one
    /// place it is chosen. `h2` and `http/1.1` are offered (`Tls::load`);
    /// a client that offered no ALPN speaks HTTP/1.1 (or sends the
    /// HTTP/2 preface, recognised as on a plaintext connection).
    fn negotiated(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(crate::tls::ALPN_H2) => Protocol::Http2,
            Some(crate::tls::ALPN_HTTP1) | None => Protocol::Http1,
            // Never negotiated: rustls settles only on a protocol offered.
            Some(_) => Protocol::Http1,
        }
    }
}

/// Serves one admitted connection until it closes. `closing` is called
/// once the connection stops counting as open for the hand-off (it only
/// lingers from then on); the caller still counts it until this returns.
pub(crate) async fn serve<H: Handler>(stream: Socket, shared: &Shared<H>, closing: impl FnOnce()) {
    // Responses are flushed whole; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    // getpeername(2) only for the access log.
    let peer = shared
        .app
        .access
        .as_ref()
        .and_then(|_| stream.peer_addr().ok());
    match &shared.tls {
        None => serve_protocol(stream, Protocol::Http1, shared, peer, closing).await,
        Some(config) => {
            // The handshake may take the header read timeout, like a head.
            let timeout = shared.limits.header_read_timeout;
            let Some(stream) = tls::accept(stream, config, timeout, &shared.stopping).await else {
                return;
            };
            let protocol = Protocol::negotiated(stream.alpn_protocol());
            serve_protocol(stream, protocol, shared, peer, closing).await;
        }
    }
}

/// Serves a connection in its protocol, then closes it (lingering when a
/// refused request asks for it).
async fn serve_protocol<H: Handler, S: Transport>(
    stream: S,
    protocol: Protocol,
    shared: &Shared<H>,
    peer: Option<std::net::SocketAddr>,
    closing: impl FnOnce(),
) {
    let requests = Rc::new(Requests::default());
    requests.set_peer(peer);
    let drain = Drain::new(&shared.stopping, &requests);
    let (conn, linger) = match protocol {
        Protocol::Http1 => match serve_http1(stream, shared, &requests, &drain).await {
            Some(ended) => ended,
            // Upgraded (the socket went to the upgrade task), or HTTP/2.
            None => return,
        },
        Protocol::Http2 => {
            return serve_http2(stream, Bytes::new(), shared, &requests, &drain).await;
        }
    };
    if linger {
        // Closing: no longer a connection to balance against.
        closing();
        // Not past the start of a shutdown: that would only delay it.
        let _ = select(pin!(conn.linger()), pin!(shared.stopping.wait())).await;
    }
}

/// HTTP/1.1: the fast path, then hyper if a head asks for it. The
/// connection back, with whether to close lingering; `None` once an upgrade
/// task took the socket.
async fn serve_http1<H: Handler, S: Transport>(
    stream: S,
    shared: &Shared<H>,
    requests: &Rc<Requests>,
    drain: &Drain<'_>,
) -> Option<(Conn<S>, bool)> {
    let (io, conn) = io::split(
        stream,
        shared.limits,
        requests.clone(),
        shared.counters.clone(),
    );
    let fast = fast::serve(&conn, &shared.app, requests, drain);
    let fast = AssertUnwindSafe(flush::drive(&conn, Box::pin(fast)))
        .catch_unwind()
        .await;
    match fast {
        Ok(Ended::Done(FastEnd::Hyper)) => serve_hyper(io, conn, shared, requests, drain).await,
        Ok(Ended::Done(FastEnd::Http2)) => {
            match conn.into_stream(io) {
                Some((stream, received)) => {
                    serve_http2(stream, received, shared, requests, drain).await;
                }
                None => tracing::error!("HTTP/2 connection still shared; closed"),
            }
            None
        }
        Ok(Ended::Done(FastEnd::Closed)) => Some((conn, requests.wants_linger())),
        Ok(Ended::SendTimedOut) => Some((conn, false)),
        Err(_) => {
            tracing::error!("connection task panicked; connection closed");
            Some((conn, false))
        }
    }
}

/// HTTP/2 until the connection closes; `replay` holds the bytes already
/// read (the preface, for h2c).
async fn serve_http2<H: Handler, S: Transport>(
    stream: S,
    replay: Bytes,
    shared: &Shared<H>,
    requests: &Rc<Requests>,
    drain: &Drain<'_>,
) {
    let service = ShardService::new(shared.app.clone(), requests.clone());
    let counters = shared.counters.clone();
    shared
        .http2
        .serve(stream, replay, service, counters, requests, drain)
        .await;
}

/// Serves the rest of a connection with hyper, from the first request the
/// fast path did not take.
async fn serve_hyper<H: Handler, S: Transport>(
    io: Io<S>,
    conn: Conn<S>,
    shared: &Shared<H>,
    requests: &Rc<Requests>,
    drain: &Drain<'_>,
) -> Option<(Conn<S>, bool)> {
    let service = ShardService::new(shared.app.clone(), requests.clone());
    let mut hyper_conn = shared.builder.serve_connection(io, service);
    let served = AssertUnwindSafe(flush::drive(
        &conn,
        Box::pin(drive_hyper(&mut hyper_conn, drain)),
    ))
    .catch_unwind()
    .await;
    if let Ok(Ended::Done(Ok(()))) = served
        && let Some(task) = requests.take_upgrade()
    {
        // hyper stopped at the `101` (sent by now) without shutting the socket.
        let parts = hyper_conn.into_parts();
        match conn.into_upgraded(parts.io, parts.read_buf) {
            Some(upgraded) => run_upgraded(task, upgraded, shared).await,
            None => tracing::error!("upgraded connection still shared; closed"),
        }
        return None;
    }
    drop(hyper_conn);
    let linger = match served {
        Ok(Ended::Done(Ok(()))) => requests.wants_linger(),
        Ok(Ended::Done(Err(error))) => {
            tracing::debug!(%error, "connection ended with an error");
            // hyper answered a request it could not parse itself.
            error.is_parse() || requests.wants_linger()
        }
        Ok(Ended::SendTimedOut) => false,
        Err(_) => {
            tracing::error!("connection task panicked; connection closed");
            false
        }
    };
    Some((conn, linger))
}

/// Drives hyper's connection under the drain policy: once the grace is
/// over, hyper finishes the request in flight, if any, and closes. After a
/// `101`, ends without shutting the socket (hyper's manual upgrade).
async fn drive_hyper<H: Handler, S: Transport>(
    conn: &mut http1::Connection<Io<S>, ShardService<H>>,
    drain: &Drain<'_>,
) -> hyper::Result<()> {
    let mut shutting = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = Pin::new(&mut *conn).poll(cx) {
            return Poll::Ready(result);
        }
        if shutting || drain.poll(cx) != Phase::Over {
            return Poll::Pending;
        }
        shutting = true;
        Pin::new(&mut *conn).graceful_shutdown();
        Pin::new(&mut *conn).poll(cx)
    })
    .await
}

/// Runs the handler's upgrade task on a switched connection: a panic closes
/// this connection only; on shutdown, the task gets the grace period and is
/// then dropped (closing the socket).
async fn run_upgraded<H>(task: UpgradeTask, upgraded: Upgraded, shared: &Shared<H>) {
    tracing::debug!("connection upgraded");
    let run = AssertUnwindSafe(async move { task.run(upgraded).await }).catch_unwind();
    let grace = async {
        shared.stopping.wait().await;
        crate::time::sleep(shared.upgrade_grace).await;
    };
    match select(pin!(run), pin!(grace)).await {
        futures::future::Either::Left((Ok(()), _)) => {
            tracing::debug!("upgraded connection ended");
        }
        futures::future::Either::Left((Err(_), _)) => {
            shared.counters.handler_panic();
            tracing::error!("upgrade task panicked; connection closed");
        }
        futures::future::Either::Right(((), _)) => tracing::debug!(
            grace = ?shared.upgrade_grace,
            "upgraded connection still open after the shutdown grace; closed"
        ),
    }
}
