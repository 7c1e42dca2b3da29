//! Admission: whether a shard takes a new connection, and the count of the
//! connections it holds.
//!
//! Contract:
//!
//! - A shard at its connection limit still accepts, answers `503` (with
//!   `x-shard`) and closes at once ([`Admission::refuse`]), so clients learn
//!   why instead of waiting in the backlog, and the shard keeps serving the
//!   connections it has. At most [`MAX_REFUSING`] refusals are answered at
//!   once, each within [`REFUSE_TIME`]; beyond, connections are closed
//!   without an answer.
//! - Every served connection is counted from admission to close
//!   ([`OpenGuard`]): in the shard's counters, in the balance table (until
//!   it starts closing), and for shutdown, which waits for the count to
//!   reach zero ([`Admission::drained`]).
//!
//! Nothing here blocks: refusals run in tasks of their own. This module
//! knows nothing of HTTP beyond the fixed `503`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use http::header::HeaderValue;

use crate::ShardId;
use crate::shard::ShardCounters;
use crate::shard::balance::Balance;

/// Longest a refused connection may take to receive its `503`.
const REFUSE_TIME: Duration = Duration::from_secs(1);

/// Most refused connections a shard spends a task on at once; beyond, they
/// are closed without an answer.
const MAX_REFUSING: usize = 64;

/// A shard's connection limit and count.
pub(crate) struct Admission {
    limit: usize,
    counters: Arc<ShardCounters>,
    open: OpenConnections,
    /// The `503` for connections past the limit.
    busy: Rc<[u8]>,
    refusing: Rc<Cell<usize>>,
}

impl Admission {
    pub(crate) fn new(limit: usize, counters: Arc<ShardCounters>, shard: &HeaderValue) -> Self {
        Self {
            limit,
            counters,
            open: OpenConnections::default(),
            busy: busy_response(shard),
            refusing: Rc::new(Cell::new(0)),
        }
    }

    /// Whether a new connection is past the limit.
    pub(crate) fn is_full(&self) -> bool {
        self.open.count.get() >= self.limit
    }

    /// How many connections are open.
    pub(crate) fn open(&self) -> usize {
        self.open.count.get()
    }

    /// Counts a connection as open until the guard drops.
    pub(crate) fn enter<'a>(&'a self, balance: &'a Balance, me: ShardId) -> OpenGuard<'a> {
        self.open.enter(&self.counters, balance, me)
    }

    /// Ready once no connection is open.
    pub(crate) async fn drained(&self) {
        self.open.drained().await;
    }

    /// At the limit on a TLS listener: closed at once. Its client could not
    /// read a plain `503`, and a handshake only to refuse would spend the
    /// CPU the limit protects.
    pub(crate) fn refuse_tls(&self, stream: std::net::TcpStream) {
        self.counters.connection_refused();
        tracing::debug!(
            limit = self.limit,
            "connection limit reached; closing a new TLS connection"
        );
        drop(stream);
    }

    /// Answers a connection past the limit with `503` and closes it; past
    /// [`MAX_REFUSING`] refusals at once, just closes it.
    pub(crate) fn refuse(&self, stream: TcpStream) {
        self.counters.connection_refused();
        if self.refusing.get() >= MAX_REFUSING {
            tracing::debug!("connection limit reached; closing a new connection");
            return;
        }
        tracing::debug!(
            limit = self.limit,
            "connection limit reached; answering 503"
        );
        self.refusing.set(self.refusing.get() + 1);
        let refusing = self.refusing.clone();
        let answer = self.busy.clone();
        crate::spawn(async move {
            let _ = crate::time::timeout(REFUSE_TIME, say_and_close(stream, answer)).await;
            refusing.set(refusing.get() - 1);
        })
        .detach();
    }
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

pub(crate) struct OpenGuard<'a> {
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
    pub(crate) fn closing(&mut self) {
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
