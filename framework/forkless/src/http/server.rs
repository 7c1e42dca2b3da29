//! The accept side of one shard: accept loops, the hand-off of
//! connections between shards, and admission; each admitted connection is
//! then served by its own task (`connection.rs`).
//!
//! Contract:
//!
//! - **Accepting never drops a queued connection.** Listeners are accepted
//!   from by readiness (`accept.rs`); when the shard stops, the loops end
//!   and what is still queued stays for whoever carries on.
//! - **Hand-off.** A connection accepted here goes to a shard with clearly
//!   fewer open connections (the balance table, `shard/balance.rs`) over
//!   the bus, or is served here; connections handed over (by other shards,
//!   or by the coordinator through `adopted`) are admitted like accepted
//!   ones. After the stop, hand-offs already on their way are still served
//!   (each closes after one answer: draining).
//! - **Admission** (`admission.rs`): at the connection limit a connection
//!   is answered `503` and closed.
//! - [`serve`] returns once every loop ended and every admitted connection
//!   closed. Nothing here blocks the shard; the accept loops are cancelled
//!   only by the stop latch.

use std::cell::RefCell;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{Either, select};
use http::header::HeaderValue;
use hyper::server::conn::http1;

use super::Handler;
use super::accept::{Acceptor, into_glommio};
use super::access::AccessLogger;
use super::admission::Admission;
use super::connection::{self, Shared};
use super::service::App;
use super::socket::Socket;
use crate::Error;
use crate::ShardId;
use crate::bus::{Bus, ShardBus};
use crate::rate_limit::RateLimited;
use crate::shard::ShardCore;
use crate::shard::balance::Balance;
use crate::shard::latch::Latch;
use crate::shard::timer::ShardTimer;

/// Pause after an accept error (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// hyper's own read buffer limit (its default); raised for larger heads.
const HYPER_MAX_BUF: usize = 8192 + 4096 * 100;

/// Longest an upgraded connection may outlive the start of a shutdown (and
/// at most half the shutdown timeout).
const MAX_UPGRADE_GRACE: Duration = Duration::from_secs(5);

/// What the accept side of a shard shares.
struct Ctx<H> {
    /// What its connections share.
    shared: Shared<H>,
    admission: Admission,
    stopping: Latch,
    me: ShardId,
    /// Open connections per shard (`shard/balance.rs`).
    balance: Arc<Balance>,
    /// Connections handed between shards.
    handoff: Bus<Handoff>,
    /// Accept errors (out of descriptors) repeat every backoff: logged at
    /// most once a second for the whole shard.
    accept_errors: RefCell<RateLimited>,
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
        admission: Admission::new(
            limits.max_connections,
            Arc::clone(&shard.counters),
            &shard_header,
        ),
        shared: Shared {
            app: Rc::new(App {
                handler,
                shard_header,
                counters: Arc::clone(&shard.counters),
                access: AccessLogger::new(shard.config.access_log, shard.id.get()),
            }),
            counters: Arc::clone(&shard.counters),
            builder,
            http2: super::http2::Http2::new(&limits),
            stopping: shard.stopping.clone(),
            limits,
            upgrade_grace: (shard.config.shutdown_timeout / 2).min(MAX_UPGRADE_GRACE),
            tls: shard.tls.clone(),
        },
        stopping: shard.stopping.clone(),
        me: shard.id,
        balance: shard.balance.clone(),
        handoff: bus.framework_bus::<Handoff>(),
        accept_errors: RefCell::default(),
    });
    tracing::debug!(listeners = listeners.len(), "serving");
    let handoffs = crate::spawn(take_handoffs(ctx.clone()));
    let access_flush = ctx.shared.app.access.is_some().then(|| {
        let app = ctx.shared.app.clone();
        crate::spawn(async move {
            loop {
                crate::time::sleep(super::access::FLUSH_EVERY).await;
                if let Some(log) = &app.access {
                    log.flush();
                }
            }
        })
    });
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
    if let Some(adopted) = adopted {
        adopted.await;
    }
    tracing::debug!(
        open = ctx.admission.open(),
        "stopped accepting; finishing open connections"
    );
    // Hand-offs another shard sent just before it saw this one stop are
    // still served (each closes after one answer) while the rest drains;
    // then what is left on its way, so none is stranded in the queue.
    ctx.admission.drained().await;
    drop(handoffs);
    // The last lines are written when the logger drops, with the app.
    drop(access_flush);
    take_waiting_handoffs(&ctx);
    ctx.admission.drained().await;
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
                let now = std::time::Instant::now();
                if let Some(suppressed) = ctx.accept_errors.borrow_mut().allow(now) {
                    tracing::warn!(%error, suppressed, "accept failed; retrying");
                }
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

/// Serves what other shards hand over, until `serve` drops it once this
/// shard has drained (connections that arrive while it stops close after
/// one answer, as every draining connection does).
async fn take_handoffs<H: Handler>(ctx: Rc<Ctx<H>>) {
    loop {
        let envelope = ctx.handoff.recv().await;
        if let Some(stream) = envelope.msg.take() {
            admit(stream, &ctx);
        }
    }
}

/// Serves the hand-offs already waiting in this shard's queue.
fn take_waiting_handoffs<H: Handler>(ctx: &Rc<Ctx<H>>) {
    while let Some(envelope) = ctx.handoff.try_recv() {
        if let Some(stream) = envelope.msg.take() {
            admit(stream, ctx);
        }
    }
}

/// Serves a new connection, or refuses it at the connection limit.
fn admit<H: Handler>(stream: std::net::TcpStream, ctx: &Rc<Ctx<H>>) {
    if ctx.admission.is_full() {
        if ctx.shared.tls.is_some() {
            ctx.admission.refuse_tls(stream);
        } else {
            ctx.admission.refuse(into_glommio(stream));
        }
        return;
    }
    match Socket::new(stream) {
        Ok(socket) => {
            let ctx = ctx.clone();
            crate::spawn(async move {
                let mut open = ctx.admission.enter(&ctx.balance, ctx.me);
                connection::serve(socket, &ctx.shared, || open.closing()).await;
                drop(open);
            })
            .detach();
        }
        Err(error) => tracing::warn!(%error, "cannot watch a new connection; closed"),
    }
}
