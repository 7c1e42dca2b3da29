//! The accept loop and the connection task of one shard.
//!
//! A shard at its connection limit still accepts, answers `503` (with
//! `x-shard`) and closes at once, so clients learn why instead of waiting in
//! the backlog, and the shard keeps serving the connections it has. A
//! connection whose last answer refused a request closes lingering (see
//! `Conn::linger`), so the client reads that answer rather than a reset.
//!
//! A connection switched by a `101` stays in its task: the task takes the
//! socket back from hyper and runs the handler's upgrade task on it (under
//! `catch_unwind`), still counted as an open connection. On shutdown the
//! upgrade task has [`Ctx::upgrade_grace`] to end by itself; then it is
//! dropped and its socket closed.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures::future::{Either, select};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use http::header::HeaderValue;
use hyper::server::conn::http1;

use super::Handler;
use super::accept::{Acceptor, into_glommio};
use super::fast::{self, FastEnd};
use super::io::{self, Conn, Ended, Io};
use super::limits::Limits;
use super::requests::Requests;
use super::service::{App, ShardService};
use super::socket::Socket;
use super::upgrade::{UpgradeTask, Upgraded};
use crate::Error;
use crate::ShardId;
use crate::bus::{Bus, ShardBus};
use crate::shard::balance::Balance;
use crate::shard::latch::Latch;
use crate::shard::timer::ShardTimer;
use crate::shard::{ShardCore, ShardCounters};

/// Pause after an accept error (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// How long a keep-alive connection may still bring its next request once
/// its shard stops (that request is answered with `Connection: close`);
/// after it, an idle connection is closed. Closing the moment the stop
/// arrives would race a client that is sending its next request right then:
/// it would see its connection reset.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// hyper's own read buffer limit (its default); raised for larger heads.
const HYPER_MAX_BUF: usize = 8192 + 4096 * 100;

/// Longest a refused connection may take to receive its `503`.
const REFUSE_TIME: Duration = Duration::from_secs(1);

/// Most refused connections a shard spends a task on at once; beyond, they
/// are closed without an answer.
const MAX_REFUSING: usize = 64;

/// Longest an upgraded connection may outlive the start of a shutdown (and
/// at most half the shutdown timeout).
const MAX_UPGRADE_GRACE: Duration = Duration::from_secs(5);

/// What every connection of a shard shares.
struct Ctx<H> {
    app: Rc<App<H>>,
    counters: Arc<ShardCounters>,
    builder: http1::Builder,
    stopping: Latch,
    open: OpenConnections,
    limits: Limits,
    /// The `503` for connections past the limit.
    busy: Rc<[u8]>,
    refusing: Cell<usize>,
    /// How long upgraded connections may run on after a shutdown began.
    upgrade_grace: Duration,
    me: ShardId,
    /// Open connections per shard (`shard/balance.rs`).
    balance: Arc<Balance>,
    /// Connections handed between shards.
    handoff: Bus<Handoff>,
}

/// A connection one shard accepted and hands to another (`balance.rs`). It
/// counts as incoming for its target until it is taken or dropped, so one
/// lost with a crashed incarnation's queue does not count for ever.
struct Handoff {
    stream: Option<std::net::TcpStream>,
    balance: Arc<Balance>,
    to: ShardId,
}

impl Handoff {
    fn new(stream: std::net::TcpStream, balance: &Arc<Balance>, to: ShardId) -> Self {
        balance.handed(to);
        Self {
            stream: Some(stream),
            balance: balance.clone(),
            to,
        }
    }

    fn take(mut self) -> Option<std::net::TcpStream> {
        self.stream.take()
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.balance.taken(self.to);
    }
}

/// Serves `handler` on `listeners` (and on connections the coordinator
/// hands over through `adopted`) until the shard stops, then waits for open
/// connections to finish.
pub(crate) async fn serve<H: Handler>(
    shard: &ShardCore,
    bus: &ShardBus,
    listeners: Vec<std::net::TcpListener>,
    adopted: Option<flume::Receiver<std::net::TcpStream>>,
    handler: H,
) -> Result<(), Error> {
    let listeners = listeners
        .into_iter()
        .map(Acceptor::new)
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io("cannot watch a listening socket", e))?;

    let limits = shard.config.http;
    super::body_read::set_default_limit(limits.max_body_size);
    let mut builder = http1::Builder::new();
    // The I/O adapter keeps the header, keep-alive, body and send timeouts
    // (io.rs, limits.rs) and shows hyper only whole, checked heads.
    builder
        .timer(ShardTimer)
        .header_read_timeout(None)
        .max_buf_size(HYPER_MAX_BUF.max(limits.max_header_size.saturating_add(16 * 1024)))
        .keep_alive(true);
    let shard_header = HeaderValue::from(shard.id.get());
    let incarnation = shard.incarnation;
    let ctx = Rc::new(Ctx {
        busy: busy_response(&shard_header),
        app: Rc::new(App {
            handler,
            shard_header,
            counters: Arc::clone(&shard.counters),
        }),
        counters: Arc::clone(&shard.counters),
        builder,
        stopping: shard.stopping.clone(),
        open: OpenConnections::default(),
        limits,
        refusing: Cell::new(0),
        upgrade_grace: (shard.config.shutdown_timeout / 2).min(MAX_UPGRADE_GRACE),
        me: shard.id,
        balance: shard.balance.clone(),
        handoff: bus.framework_bus::<Handoff>(),
    });

    tracing::debug!(listeners = listeners.len(), "serving");
    let handoffs = crate::spawn(take_handoffs(ctx.clone()));
    ctx.balance.serving(ctx.me, incarnation, true);
    shard.report_listening();
    let adopted = adopted.map(|adopted| {
        let ctx = ctx.clone();
        crate::spawn(async move {
            let mut stop = pin!(ctx.stopping.wait());
            loop {
                let stream = match select(pin!(adopted.recv_async()), stop.as_mut()).await {
                    Either::Left((Ok(stream), _)) => stream,
                    Either::Left((Err(_), _)) | Either::Right(_) => return,
                };
                admit(stream, &ctx);
            }
        })
    });
    futures::future::join_all(listeners.into_iter().map(|l| accept_loop(l, ctx.clone()))).await;
    ctx.balance.serving(ctx.me, incarnation, false);
    handoffs.await;
    if let Some(adopted) = adopted {
        adopted.await;
    }
    tracing::debug!(
        open = ctx.open.count.get(),
        "stopped accepting; finishing open connections"
    );
    ctx.open.drained().await;
    Ok(())
}

async fn accept_loop<H: Handler>(listener: Acceptor, ctx: Rc<Ctx<H>>) {
    let mut stop = pin!(ctx.stopping.wait());
    loop {
        let accepted = match select(pin!(listener.accept()), stop.as_mut()).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(_) => return,
        };
        match accepted {
            Ok(stream) => place(stream, &ctx),
            Err(error) => {
                tracing::warn!(%error, "accept failed; retrying");
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// A connection this shard accepted: handed to a shard with clearly fewer
/// connections (`balance.rs`), or served here.
fn place<H: Handler>(stream: std::net::TcpStream, ctx: &Rc<Ctx<H>>) {
    let balance = &ctx.balance;
    let stream = match balance.pick(ctx.me) {
        Some(target) => match ctx
            .handoff
            .try_send(target, Handoff::new(stream, balance, target))
        {
            Ok(()) => return,
            Err(refused) => refused.into_inner().take(),
        },
        None => Some(stream),
    };
    if let Some(stream) = stream {
        admit(stream, ctx);
    }
}

/// Serves what other shards hand over until the shard stops; then serves
/// what is already on its way (each closes after one answer: draining).
async fn take_handoffs<H: Handler>(ctx: Rc<Ctx<H>>) {
    let mut stop = pin!(ctx.stopping.wait());
    while let Either::Left((envelope, _)) = select(pin!(ctx.handoff.recv()), stop.as_mut()).await {
        if let Some(stream) = envelope.msg.take() {
            admit(stream, &ctx);
        }
    }
    while let Some(envelope) = ctx.handoff.try_recv() {
        if let Some(stream) = envelope.msg.take() {
            admit(stream, &ctx);
        }
    }
}

/// Serves a new connection, or refuses it at the connection limit.
fn admit<H: Handler>(stream: std::net::TcpStream, ctx: &Rc<Ctx<H>>) {
    if ctx.open.count.get() >= ctx.limits.max_connections {
        refuse(into_glommio(stream), ctx);
        return;
    }
    match Socket::new(stream) {
        Ok(socket) => crate::spawn(connection(socket, ctx.clone())).detach(),
        Err(error) => tracing::warn!(%error, "cannot watch a new connection; closed"),
    }
}

async fn connection<H: Handler>(stream: Socket, ctx: Rc<Ctx<H>>) {
    let mut open = ctx.open.enter(&ctx.counters, &ctx.balance, ctx.me);
    // Responses are flushed whole; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let requests = Rc::new(Requests::default());
    let (io, conn) = io::split(stream, ctx.limits, requests.clone(), ctx.counters.clone());
    let fast = fast::serve(&conn, &ctx.app, &requests, &ctx.stopping);
    let fast = AssertUnwindSafe(conn.drive(Box::pin(fast)))
        .catch_unwind()
        .await;
    let (conn, linger) = match fast {
        Ok(Ended::Done(FastEnd::Hyper)) => match serve_hyper(io, conn, &ctx, &requests).await {
            Some(ended) => ended,
            // Upgraded: the socket went to the upgrade task.
            None => return,
        },
        Ok(Ended::Done(FastEnd::Closed)) => (conn, requests.wants_linger()),
        Ok(Ended::SendTimedOut) => (conn, false),
        Err(_) => {
            tracing::error!("connection task panicked; connection closed");
            (conn, false)
        }
    };
    if linger {
        // Closing: no longer a connection to balance against.
        open.closing();
        // Not past the start of a shutdown: that would only delay it.
        let _ = select(pin!(conn.linger()), pin!(ctx.stopping.wait())).await;
    }
    drop(open);
}

/// Serves the rest of a connection with hyper, from the first request the
/// fast path did not take. The connection back, with whether to close
/// lingering; `None` once an upgrade task took the socket.
async fn serve_hyper<H: Handler>(
    io: Io,
    conn: Conn,
    ctx: &Ctx<H>,
    requests: &Rc<Requests>,
) -> Option<(Conn, bool)> {
    let service = ShardService::new(ctx.app.clone(), requests.clone());
    let mut hyper_conn = ctx.builder.serve_connection(io, service);
    let served =
        AssertUnwindSafe(conn.drive(Box::pin(drive(&mut hyper_conn, &ctx.stopping, requests))))
            .catch_unwind()
            .await;
    if let Ok(Ended::Done(Ok(()))) = served
        && let Some(task) = requests.take_upgrade()
    {
        // hyper stopped at the `101` (sent by now) without shutting the socket.
        let parts = hyper_conn.into_parts();
        match conn.into_upgraded(parts.io, parts.read_buf) {
            Some(upgraded) => run_upgraded(task, upgraded, ctx).await,
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

/// Serves one connection. When the shard stops, every response from then
/// on carries `Connection: close`; a connection still open after
/// [`DRAIN_GRACE`] finishes the request in flight, if any, and closes.
/// After a `101`, ends without shutting the socket (hyper's manual upgrade).
async fn drive<H: Handler>(
    conn: &mut http1::Connection<Io, ShardService<H>>,
    stopping: &Latch,
    requests: &Requests,
) -> hyper::Result<()> {
    if let Either::Left((result, _)) = select(&mut *conn, pin!(stopping.wait())).await {
        return result;
    }
    requests.drain();
    let grace = pin!(crate::time::sleep(DRAIN_GRACE));
    if let Either::Left((result, _)) = select(&mut *conn, grace).await {
        return result;
    }
    Pin::new(&mut *conn).graceful_shutdown();
    conn.await
}

/// Runs the handler's upgrade task on a switched connection: a panic closes
/// this connection only; on shutdown, the task gets the grace period and is
/// then dropped (closing the socket).
async fn run_upgraded<H>(task: UpgradeTask, upgraded: Upgraded, ctx: &Ctx<H>) {
    tracing::debug!("connection upgraded");
    let run = AssertUnwindSafe(async move { task.run(upgraded).await }).catch_unwind();
    let grace = async {
        ctx.stopping.wait().await;
        crate::time::sleep(ctx.upgrade_grace).await;
    };
    match select(pin!(run), pin!(grace)).await {
        Either::Left((Ok(()), _)) => tracing::debug!("upgraded connection ended"),
        Either::Left((Err(_), _)) => {
            ctx.counters.handler_panic();
            tracing::error!("upgrade task panicked; connection closed");
        }
        Either::Right(((), _)) => tracing::debug!(
            grace = ?ctx.upgrade_grace,
            "upgraded connection still open after the shutdown grace; closed"
        ),
    }
}

/// Answers a connection past the limit with `503` and closes it; past
/// [`MAX_REFUSING`] refusals at once, just closes it.
fn refuse<H: 'static>(stream: TcpStream, ctx: &Rc<Ctx<H>>) {
    ctx.counters.connection_refused();
    if ctx.refusing.get() >= MAX_REFUSING {
        tracing::debug!("connection limit reached; closing a new connection");
        return;
    }
    tracing::debug!(
        limit = ctx.limits.max_connections,
        "connection limit reached; answering 503"
    );
    ctx.refusing.set(ctx.refusing.get() + 1);
    let ctx = ctx.clone();
    crate::spawn(async move {
        let answer = ctx.busy.clone();
        let _ = crate::time::timeout(REFUSE_TIME, say_and_close(stream, answer)).await;
        ctx.refusing.set(ctx.refusing.get() - 1);
    })
    .detach();
}

async fn say_and_close(mut stream: TcpStream, answer: Rc<[u8]>) {
    if stream.write_all(&answer).await.is_err() || stream.close().await.is_err() {
        return;
    }
    // Read the request we will not serve, so closing does not reset the
    // connection before the client has read the answer.
    let mut sink = [0u8; 1024];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

fn busy_response(shard: &HeaderValue) -> Rc<[u8]> {
    let body = "too many connections on this shard; retry later\n";
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
         content-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nx-shard: ",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(shard.as_bytes());
    answer.extend_from_slice(b"\r\n\r\n");
    answer.extend_from_slice(body.as_bytes());
    answer.into()
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
    balance: &'a Balance,
    me: ShardId,
    /// Still counted in the connection table.
    balanced: bool,
}

impl OpenGuard<'_> {
    /// The connection is closing (lingering): it stops counting for the
    /// hand-off, though the shard still waits for it on shutdown.
    fn closing(&mut self) {
        if std::mem::take(&mut self.balanced) {
            self.balance.closed(self.me);
        }
    }
}

impl OpenConnections {
    fn enter<'a>(
        &'a self,
        counters: &'a ShardCounters,
        balance: &'a Balance,
        me: ShardId,
    ) -> OpenGuard<'a> {
        self.count.set(self.count.get() + 1);
        counters.connection_opened();
        balance.opened(me);
        OpenGuard {
            open: self,
            counters,
            balance,
            me,
            balanced: true,
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
        self.closing();
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
