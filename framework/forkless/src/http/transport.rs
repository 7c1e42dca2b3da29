//! What a connection's I/O (`io.rs`) needs of the byte stream under it.
//!
//! Contract: non-blocking polls that register the task's waker when they
//! return `Pending`, as [`Socket`]'s do; a read of `Ok(0)` is the end of
//! the stream. Everything above the transport (receive and send buffers,
//! the framing gate, deadlines, the fast path and its parser, hyper) works
//! on bytes, so another stream (TLS over the socket) slots in here without
//! touching them. The I/O is generic over it: no dynamic dispatch.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::accept::into_glommio;
use super::socket::Socket;
use super::upgrade::Upgraded;
use crate::shard::ShardCounters;

/// A connection's byte stream; see the module docs.
pub(crate) trait Transport: 'static {
    /// Reads what the stream holds into `buf`, or waits for it.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;

    /// Sends what the stream takes of `buf`, or waits until it takes some.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;

    /// Shuts the write side (a second call is harmless).
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// The stream for an upgrade task after a `101`, with the bytes
    /// already received past the head (`unread`).
    fn into_upgraded(self, unread: Bytes, counters: Arc<ShardCounters>) -> io::Result<Upgraded>
    where
        Self: Sized;
}

impl Transport for Socket {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Socket::poll_read(self, cx, buf)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Socket::poll_write(self, cx, buf)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Socket::poll_close(self, cx)
    }

    fn into_upgraded(self, unread: Bytes, counters: Arc<ShardCounters>) -> io::Result<Upgraded> {
        Ok(Upgraded::new(
            into_glommio(self.into_std()?),
            unread,
            counters,
        ))
    }
}
