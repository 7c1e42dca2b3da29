//! hyper's I/O traits over a glommio `TcpStream`, with writes batched per
//! wake-up of the connection task.
//!
//! Reads land in a receive buffer owned by the connection (zeroed once, when
//! the connection opens) through glommio's unbuffered stream, which tries a
//! plain non-blocking `recv` before it involves the ring; the bytes are then
//! copied into hyper's uninitialised read buffer with `put_slice`. No
//! zero-filling per read and no `unsafe`.
//!
//! Writes are collected in an output buffer and sent when the connection
//! task is about to wait ([`Flush`] wraps the connection future), when the
//! buffer passes [`HIGH_WATER`], and before the write side is shut down. So
//! all the responses hyper produces in one wake-up (pipelined requests) leave
//! in one `send`, and hyper's own `pipeline_flush` (which can drop a `400`
//! answering a malformed request: the bytes stay in its buffer when the
//! connection closes) is not needed.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use futures::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use hyper::rt::{Read, ReadBufCursor, Write};

/// Receive buffer per connection: a burst of pipelined requests.
const RECV_BUFFER: usize = 8 * 1024;

/// Buffered output above which writes go out before more is accepted.
const HIGH_WATER: usize = 64 * 1024;

struct Inner {
    stream: TcpStream,
    /// Received bytes not yet handed to hyper: `recv[start..end]`.
    recv: Box<[u8]>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// How much of `out` has been sent.
    sent: usize,
}

impl Inner {
    /// Sends buffered output until all of it is gone or the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    fn buffered(&self) -> usize {
        self.out.len() - self.sent
    }
}

/// The half of a connection hyper drives.
pub(crate) struct Io {
    inner: Rc<RefCell<Inner>>,
}

/// Wraps the connection future: sends buffered output whenever the future
/// waits, and once more when it ends.
pub(crate) struct Flush<F: Future> {
    inner: Rc<RefCell<Inner>>,
    future: F,
    done: Option<F::Output>,
}

impl<F: Future> Flush<F> {
    /// Pairs with an [`Io`] from [`split`].
    pub(crate) fn new(handle: FlushHandle, future: F) -> Self {
        Self {
            inner: handle.inner,
            future,
            done: None,
        }
    }
}

/// Ties a [`Flush`] to the [`Io`] it flushes.
pub(crate) struct FlushHandle {
    inner: Rc<RefCell<Inner>>,
}

/// Splits a stream into hyper's side and the flushing side.
pub(crate) fn split(stream: TcpStream) -> (Io, FlushHandle) {
    let inner = Rc::new(RefCell::new(Inner {
        stream,
        recv: vec![0; RECV_BUFFER].into_boxed_slice(),
        start: 0,
        end: 0,
        out: Vec::new(),
        sent: 0,
    }));
    (
        Io {
            inner: inner.clone(),
        },
        FlushHandle { inner },
    )
}

impl<F: Future + Unpin> Future for Flush<F>
where
    F::Output: Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if this.done.is_none()
            && let Poll::Ready(output) = Pin::new(&mut this.future).poll(cx)
        {
            this.done = Some(output);
        }
        let sent = this.inner.borrow_mut().poll_send(cx);
        match (this.done.take(), sent) {
            // The connection is over; a peer that stopped reading gets nothing more.
            (Some(output), Poll::Ready(_)) => Poll::Ready(output),
            (Some(output), Poll::Pending) => {
                this.done = Some(output);
                Poll::Pending
            }
            (None, Poll::Ready(Ok(()))) | (None, Poll::Pending) => Poll::Pending,
            // The socket failed: hyper will see it on its next read or write.
            (None, Poll::Ready(Err(_))) => Poll::Pending,
        }
    }
}

impl Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let inner = &mut *self.inner.borrow_mut();
        if inner.start == inner.end {
            let n = ready!(Pin::new(&mut inner.stream).poll_read(cx, &mut inner.recv))?;
            inner.start = 0;
            inner.end = n;
        }
        let n = (inner.end - inner.start).min(buf.remaining());
        buf.put_slice(&inner.recv[inner.start..inner.start + n]);
        inner.start += n;
        Poll::Ready(Ok(()))
    }
}

impl Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.inner.borrow_mut();
        if inner.buffered() >= HIGH_WATER {
            ready!(inner.poll_send(cx))?;
        }
        let mut accepted = 0;
        for buf in bufs {
            inner.out.extend_from_slice(buf);
            accepted += buf.len();
        }
        Poll::Ready(Ok(accepted))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sent when the connection task waits; see the module docs.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.inner.borrow_mut();
        ready!(inner.poll_send(cx))?;
        Pin::new(&mut inner.stream).poll_close(cx)
    }
}
