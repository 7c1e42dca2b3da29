//! Accepting connections so that stopping never loses one.
//!
//! A shard's listening sockets outlive it: the coordinator keeps them across
//! restarts and rolling reloads of the shard, and hands them to the next
//! binary on an upgrade, so at a hand-over two incarnations (or two
//! processes) accept on the same socket for a moment and then the old one
//! stops. What the old one must not do is take a connection out of the queue
//! and then drop it.
//!
//! glommio's own accept is an io_uring request; dropping its listener while
//! one is in flight cancels it, and a connection the kernel completed just
//! before the cancel arrives is left in a descriptor nobody serves. So a
//! shard accepts the other way round: it waits for the socket to be
//! *readable* (`IORING_OP_POLL_ADD` through glommio's [`PollableFd`]), then
//! takes connections with non-blocking `accept4` calls until the queue is
//! empty. A readiness wait that is cancelled takes nothing from the queue,
//! so a shard that stops accepting leaves every waiting connection to the
//! incarnation (or process) that carries on. It costs what glommio's path
//! costs: glommio also tries a plain `accept` first and arms the ring only
//! when the queue is empty.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, IntoRawFd};

use glommio::io::PollableFd;
use glommio::net::TcpStream;

/// One listening socket of a shard; see the module docs.
#[derive(Debug)]
pub(crate) struct Acceptor {
    listener: PollableFd<TcpListener>,
}

impl Acceptor {
    /// Takes this incarnation's descriptor of a listening socket.
    pub(crate) fn new(listener: TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let listener = PollableFd::new(listener)?;
        Ok(Self { listener })
    }

    /// The next connection, waiting for one when the queue is empty.
    ///
    /// Cancel-safe: dropping the future while it waits takes nothing from
    /// the queue.
    pub(crate) async fn accept(&self) -> io::Result<std::net::TcpStream> {
        loop {
            match self.listener.get_ref().accept() {
                Ok((stream, _)) => return Ok(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.listener.readable().await?;
        }
    }
}

/// Hands an accepted (blocking, close-on-exec) socket to this shard's reactor.
pub(crate) fn into_glommio(stream: std::net::TcpStream) -> TcpStream {
    let fd = stream.into_raw_fd();
    // SAFETY: `fd` was just released by an owned, connected TCP socket, so it
    // is valid, open and owned by nobody else; glommio takes ownership.
    unsafe { TcpStream::from_raw_fd(fd) }
}
