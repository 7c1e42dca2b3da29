//! TLS over a connection's [`Socket`]: a [`Transport`] that the I/O above
//! (`io.rs`: buffers, the framing gate, deadlines, the fast path, hyper)
//! uses as it uses the plain socket.
//!
//! Contract:
//!
//! - **rustls's sans-I/O connection over the shard's socket**: ciphertext
//!   moves with `read_tls`/`write_tls` through [`Wire`], which turns the
//!   socket's non-blocking polls into `io::Read`/`io::Write` (pending is
//!   `WouldBlock`, with the task's waker stored), then
//!   `process_new_packets`. No tokio, no extra task, no extra copy beyond
//!   rustls's own record buffers.
//! - **The handshake runs first** ([`accept`]), bounded by the header read
//!   timeout, and by the drain grace once the shard stops: a silent or
//!   slow client holds its connection slot no longer than a slow request
//!   head would.
//! - **A write is reported only once it is on the wire**: plaintext is
//!   encrypted into rustls's buffer and sent; if the socket blocks, the
//!   write stays pending and, when retried with the same bytes (as
//!   `send.rs` retries), reports them once rustls's buffer is sent. So
//!   the send buffer's stall clock and send timeout cover TLS output too,
//!   and nothing sits unsent in rustls's buffer when the I/O thinks it is
//!   done.
//! - **Reads** return plaintext, or `Ok(0)` at the end of the stream
//!   (`close_notify`, or a peer that closed without one: the HTTP framing
//!   above tells a truncated request). A TLS error answers with its alert
//!   when the socket takes it, and fails the read.
//! - **Close** sends `close_notify`, then shuts the socket's write side.
//! - **Upgrades** (`101`, WebSockets): the stream, session and all, goes
//!   to the upgrade task ([`Upgraded`]), still on this shard's socket.

use std::io::{self, Read as _, Write as _};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{Either, select};
use rustls::{ServerConfig, ServerConnection};

use super::drain::DRAIN_GRACE;
use super::socket::Socket;
use super::transport::Transport;
use super::upgrade::Upgraded;
use crate::shard::ShardCounters;
use crate::shard::latch::Latch;

/// A TLS server connection over a socket; see the module docs.
pub(crate) struct TlsStream {
    socket: Socket,
    tls: ServerConnection,
    /// The socket's read side ended.
    eof: bool,
    /// Plaintext bytes of the caller's buffer encrypted and not yet all sent.
    accepted: usize,
    /// `close_notify` was queued.
    closing: bool,
}

/// The socket as `io::Read`/`io::Write` for rustls, within one poll.
struct Wire<'a, 'b> {
    socket: &'a mut Socket,
    cx: &'a mut Context<'b>,
}

impl io::Read for Wire<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.socket.poll_read(self.cx, buf) {
            Poll::Ready(done) => done,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl io::Write for Wire<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.socket.poll_write(self.cx, buf) {
            Poll::Ready(done) => done,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs the handshake on a new connection; `None` if it failed, took
/// longer than `timeout`, or was still going [`DRAIN_GRACE`] after the
/// shard stopped (the socket is then closed).
pub(crate) async fn accept(
    socket: Socket,
    config: &Arc<ServerConfig>,
    timeout: Duration,
    stopping: &Latch,
) -> Option<TlsStream> {
    let tls = match ServerConnection::new(config.clone()) {
        Ok(tls) => tls,
        Err(error) => {
            tracing::warn!(%error, "cannot start a TLS connection; closed");
            return None;
        }
    };
    let mut stream = TlsStream {
        socket,
        tls,
        eof: false,
        accepted: 0,
        closing: false,
    };
    let handshake = std::future::poll_fn(|cx| stream.poll_handshake(cx));
    let bounded = crate::time::timeout(timeout, handshake);
    // As an idle connection gets the drain grace for its next request
    // (`drain.rs`), a handshake under way at the stop gets it to finish.
    let stopped = async {
        stopping.wait().await;
        crate::time::sleep(DRAIN_GRACE).await;
    };
    match select(pin!(bounded), pin!(stopped)).await {
        Either::Left((Some(Ok(())), _)) => {}
        Either::Left((Some(Err(error)), _)) => {
            tracing::debug!(%error, "TLS handshake failed; closed");
            return None;
        }
        Either::Left((None, _)) => {
            tracing::debug!(
                ?timeout,
                "TLS handshake not finished within the header read timeout; closed"
            );
            return None;
        }
        Either::Right(_) => {
            tracing::debug!("TLS handshake not finished within the drain grace; closed");
            return None;
        }
    }
    Some(stream)
}

impl TlsStream {
    /// The protocol ALPN settled on, if the client offered any.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls.alpn_protocol()
    }

    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.raw_fd()
    }

    pub(crate) fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.socket.peer_addr()
    }

    /// An upgraded connection's write (`futures::io::AsyncWrite`
    /// semantics): takes the bytes once earlier output was sent, and sends
    /// what it can; the rest goes with [`poll_flush_tls`](Self::poll_flush_tls).
    pub(crate) fn poll_write_buffered(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // One write's records at most wait in rustls's buffer.
        ready!(self.poll_flush_tls(cx))?;
        let n = self.tls.writer().write(buf)?;
        match self.poll_flush_tls(cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            _ => Poll::Ready(Ok(n)),
        }
    }

    /// Sends what rustls holds; ready once all of it went.
    pub(crate) fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            let mut wire = Wire {
                socket: &mut self.socket,
                cx,
            };
            match self.tls.write_tls(&mut wire) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads ciphertext once and processes it: ready when something
    /// happened (records processed, or the end of the stream).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut wire = Wire {
            socket: &mut self.socket,
            cx,
        };
        match self.tls.read_tls(&mut wire) {
            Ok(0) => {
                self.eof = true;
                Poll::Ready(Ok(()))
            }
            Ok(_) => match self.tls.process_new_packets() {
                Ok(_) => Poll::Ready(Ok(())),
                Err(error) => {
                    // The alert rustls queued, if the socket takes it now.
                    let _ = self.poll_flush_tls(cx);
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)))
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_flush_tls(cx))?;
            if !self.tls.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            ready!(self.poll_fill(cx))?;
        }
    }
}

impl Transport for TlsStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.eof {
                return Poll::Ready(Ok(0));
            }
            if self.tls.wants_write() {
                // What reading queued (a key update's answer) goes out now;
                // if the socket is full it goes with the next write.
                let _ = self.poll_flush_tls(cx);
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.accepted == 0 {
            ready!(self.poll_flush_tls(cx))?;
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            self.accepted = self.tls.writer().write(buf)?;
            if self.accepted == 0 {
                return Poll::Ready(Ok(0));
            }
        }
        ready!(self.poll_flush_tls(cx))?;
        // Retried with the same bytes (the module docs): at most all of them.
        Poll::Ready(Ok(std::mem::take(&mut self.accepted).min(buf.len())))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.closing {
            self.closing = true;
            self.tls.send_close_notify();
        }
        ready!(self.poll_flush_tls(cx))?;
        self.socket.poll_close(cx)
    }

    fn into_upgraded(self, unread: Bytes, counters: Arc<ShardCounters>) -> io::Result<Upgraded> {
        Ok(Upgraded::new_tls(self, unread, counters))
    }
}
