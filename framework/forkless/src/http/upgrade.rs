//! HTTP/1.1 connection upgrades (WebSocket and any other `Upgrade:`
//! protocol), for `!Send` handlers on `!Send` sockets.
//!
//! hyper's own upgrade machinery (`with_upgrades`) needs a `Send` socket,
//! and a glommio `TcpStream` is not. So forkless runs each connection with
//! hyper's manual upgrade path: when hyper has written a `101 Switching
//! Protocols`, its connection future ends without shutting the socket, and
//! the connection task takes the socket back (`into_parts`) together with
//! every byte the client sent after the request head.
//!
//! The contract, from the handler's side:
//!
//! 1. A request asking for an upgrade (HTTP/1.1 with an `Upgrade` header)
//!    reaches the handler like any other. The handler calls [`on`] with the
//!    task that will speak the new protocol, then returns its
//!    `101 Switching Protocols` response (with the headers the protocol
//!    needs, e.g. `Sec-WebSocket-Accept`). It goes through the service like
//!    every response, so it carries `x-shard`.
//! 2. Once the `101` is sent, the task runs with an [`Upgraded`] stream, on
//!    the same shard, in the connection's own task: it may be `!Send` and use
//!    shard-local state. The stream yields first the bytes the client sent
//!    right after its request head, then whatever arrives on the socket.
//! 3. Any other answer than `101` drops the task unrun, and the connection
//!    goes on serving HTTP (bytes sent after the request head are then read
//!    as the next request).
//!
//! What still applies after the switch: nothing of HTTP. The header, keep-
//! alive, body and send timeouts and the framing gate end with the `101`;
//! the upgraded protocol keeps its own time. The connection still counts
//! against `--max-connections` until the task ends. A panic in the task
//! closes that connection only (counted like a handler panic). On shutdown
//! the task should end by itself (watch [`Shard::stopping`](crate::Shard::stopping),
//! e.g. send a WebSocket close frame); a task still running half the shutdown
//! timeout (at most 5 s) after the shutdown began is dropped, which closes
//! its socket, so upgraded connections never hold a shard's exit hostage.
//!
//! ```
//! use forkless::http::upgrade::{self, Upgraded};
//! use forkless::http::{HeaderValue, IntoResponse, Request, Response, StatusCode, header};
//! use futures::io::{AsyncReadExt, AsyncWriteExt};
//!
//! /// `Upgrade: echo`: sends back every byte it receives.
//! async fn echo(mut request: Request) -> Response {
//!     let task = |mut io: Upgraded| async move {
//!         let mut buf = [0u8; 4096];
//!         while let Ok(n) = io.read(&mut buf).await {
//!             if n == 0 || io.write_all(&buf[..n]).await.is_err() {
//!                 break;
//!             }
//!         }
//!     };
//!     if let Err(error) = upgrade::on(&mut request, task) {
//!         return (StatusCode::UPGRADE_REQUIRED, error.to_string()).into_response();
//!     }
//!     let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
//!     let headers = response.headers_mut();
//!     headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
//!     headers.insert(header::UPGRADE, HeaderValue::from_static("echo"));
//!     response
//! }
//! # fn assert_handler(_: impl forkless::http::Handler) {}
//! # assert_handler(echo);
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use super::Request;
use super::tls::TlsStream;
use super::transport::Transport;
use crate::shard::ShardCounters;

/// Registers `task` to run on the connection of `request` once the handler
/// has answered it with `101 Switching Protocols`.
///
/// Call it before returning the response; the task runs after the `101` was
/// sent, with the raw connection. Any other answer drops the task unrun.
/// The handler still writes the `101` itself, with the headers its protocol
/// needs.
///
/// # Errors
///
/// [`UpgradeError::NotRequested`] when the request did not ask for an
/// upgrade (no `Upgrade` header, or HTTP/1.0); [`UpgradeError::Gone`] when
/// `on` was already called for it, or the request left the handler call
/// (another task or shard) that received it.
///
/// ```
/// use forkless::http::Request;
/// use forkless::http::upgrade::{self, UpgradeError, Upgraded};
///
/// async fn handler(mut request: Request) -> &'static str {
///     match upgrade::on(&mut request, |_io: Upgraded| async {}) {
///         Err(UpgradeError::NotRequested) => "plain HTTP\n",
///         _ => "would upgrade (with a 101)\n",
///     }
/// }
/// # fn assert_handler(_: impl forkless::http::Handler) {}
/// # assert_handler(handler);
/// ```
pub fn on<F, Fut>(request: &mut Request, task: F) -> Result<(), UpgradeError>
where
    F: FnOnce(Upgraded) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let Some(key) = request.extensions_mut().remove::<OfferKey>() else {
        return Err(
            if request
                .extensions()
                .get::<hyper::upgrade::OnUpgrade>()
                .is_some()
            {
                UpgradeError::Gone
            } else {
                UpgradeError::NotRequested
            },
        );
    };
    let slot = OFFERS.with(|offers| offers.borrow().get(&key.0).cloned());
    let Some(slot) = slot else {
        return Err(UpgradeError::Gone);
    };
    *slot.borrow_mut() = Some(UpgradeTask(Box::new(move |upgraded| {
        Box::pin(task(upgraded))
    })));
    Ok(())
}

/// Why [`on`] could not register an upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The request did not ask for an upgrade (HTTP/1.1 with `Upgrade`).
    NotRequested,
    /// `on` was already called for this request, or the request left the
    /// handler call (another task or shard) that received it.
    Gone,
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::NotRequested => {
                f.write_str("the request does not ask for a protocol upgrade (no Upgrade header)")
            }
            UpgradeError::Gone => f.write_str(
                "this request's upgrade was already taken, or the request left its handler",
            ),
        }
    }
}

impl std::error::Error for UpgradeError {}

/// The task registered with [`on`], waiting for the `101` to be sent.
pub(crate) struct UpgradeTask(Box<dyn FnOnce(Upgraded) -> LocalTask>);

/// A running upgrade task.
type LocalTask = Pin<Box<dyn Future<Output = ()>>>;

impl UpgradeTask {
    /// Starts the task on the upgraded connection.
    pub(crate) fn run(self, upgraded: Upgraded) -> LocalTask {
        (self.0)(upgraded)
    }
}

impl fmt::Debug for UpgradeTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UpgradeTask")
    }
}

type Slot = Rc<RefCell<Option<UpgradeTask>>>;

thread_local! {
    /// The upgrade requests whose handlers are running on this shard.
    static OFFERS: RefCell<HashMap<u64, Slot>> = RefCell::new(HashMap::new());
    static NEXT_KEY: Cell<u64> = const { Cell::new(0) };
}

/// What the service puts in an upgrade request's extensions (which must be
/// `Send + Sync`): the key of its slot in this shard's [`OFFERS`].
#[derive(Clone, Copy, Debug)]
struct OfferKey(u64);

/// The service's side of one upgrade request: its slot is registered while
/// the handler runs and removed when this is dropped.
#[derive(Debug)]
pub(crate) struct Offer {
    key: u64,
    slot: Slot,
}

impl Offer {
    /// Opens an offer when hyper treats `request` as an upgrade request.
    pub(crate) fn open(request: &mut Request) -> Option<Offer> {
        request.extensions().get::<hyper::upgrade::OnUpgrade>()?;
        let key = NEXT_KEY.with(|next| {
            let key = next.get();
            next.set(key.wrapping_add(1));
            key
        });
        let slot = Slot::default();
        OFFERS.with(|offers| offers.borrow_mut().insert(key, slot.clone()));
        request.extensions_mut().insert(OfferKey(key));
        Some(Offer { key, slot })
    }

    /// The task the handler registered, if any; call once the answer is `101`.
    pub(crate) fn into_task(self) -> Option<UpgradeTask> {
        self.slot.borrow_mut().take()
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        // `try_with`: the thread may be tearing down its locals.
        let _ = OFFERS.try_with(|offers| offers.borrow_mut().remove(&self.key));
    }
}

/// An upgraded connection: the raw socket after the `101` (on a TLS
/// listener, the connection's TLS session over it), as
/// [`futures::io::AsyncRead`] + [`AsyncWrite`].
///
/// Reads return the bytes the client sent right after its request head
/// first, then the socket's. Writes go straight to the socket (no
/// buffering: protocol libraries buffer their frames themselves; over TLS,
/// one write's records may wait for `poll_flush`).
/// `!Send`: it stays on its shard. Dropping it closes the connection.
/// [`AsFd`] gives the socket for options (e.g. `socket2::SockRef` to bound
/// the kernel's send buffer, so a slow reader's backlog stays in sight).
///
/// ```
/// use forkless::http::upgrade::Upgraded;
/// use futures::io::AsyncWriteExt;
///
/// async fn greet(mut io: Upgraded) -> std::io::Result<()> {
///     io.write_all(b"hello over the upgraded connection\n").await?;
///     io.close().await
/// }
/// # let _ = greet;
/// ```
pub struct Upgraded {
    stream: Stream,
    unread: Bytes,
    counters: Arc<ShardCounters>,
}

/// What an upgraded connection runs over.
enum Stream {
    Plain(TcpStream),
    /// On a TLS listener: the session goes on over the shard's socket.
    Tls(Box<TlsStream>),
}

impl Upgraded {
    pub(crate) fn new(stream: TcpStream, unread: Bytes, counters: Arc<ShardCounters>) -> Self {
        Self {
            stream: Stream::Plain(stream),
            unread,
            counters,
        }
    }

    pub(crate) fn new_tls(stream: TlsStream, unread: Bytes, counters: Arc<ShardCounters>) -> Self {
        Self {
            stream: Stream::Tls(Box::new(stream)),
            unread,
            counters,
        }
    }

    /// The client's address.
    ///
    /// ```
    /// # async fn example(io: forkless::http::upgrade::Upgraded) -> std::io::Result<()> {
    /// let client = io.peer_addr()?;
    /// println!("upgraded connection from {client}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match &self.stream {
            Stream::Plain(stream) => Ok(stream.peer_addr()?),
            Stream::Tls(stream) => stream.peer_addr(),
        }
    }

    /// Bytes the client sent after its request head that were not read yet.
    ///
    /// ```
    /// # fn example(io: &forkless::http::upgrade::Upgraded) {
    /// let early = io.unread().len();
    /// # let _ = early;
    /// # }
    /// ```
    pub fn unread(&self) -> &[u8] {
        &self.unread
    }
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded")
            .field("peer", &self.peer_addr().ok())
            .field("tls", &matches!(self.stream, Stream::Tls(_)))
            .field("unread", &self.unread.len())
            .finish()
    }
}

impl AsRawFd for Upgraded {
    fn as_raw_fd(&self) -> RawFd {
        match &self.stream {
            Stream::Plain(stream) => stream.as_raw_fd(),
            Stream::Tls(stream) => stream.raw_fd(),
        }
    }
}

impl AsFd for Upgraded {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to `self.stream`, which keeps it
        // open at least as long as this borrow of `self`.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.len());
            buf[..n].copy_from_slice(&this.unread[..n]);
            this.unread.advance(n);
            return Poll::Ready(Ok(n));
        }
        let read = match &mut this.stream {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Transport::poll_read(&mut **stream, cx, buf),
        };
        if let Poll::Ready(Ok(n)) = read {
            this.counters.received(n);
        }
        read
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = match &mut this.stream {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => stream.poll_write_buffered(cx, buf),
        };
        if let Poll::Ready(Ok(n)) = written {
            this.counters.sent(n);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => stream.poll_flush_tls(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(stream) => Pin::new(stream).poll_close(cx),
            Stream::Tls(stream) => Transport::poll_close(&mut **stream, cx),
        }
    }
}
