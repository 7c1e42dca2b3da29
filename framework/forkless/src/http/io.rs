//! A connection's I/O over its [`Socket`] (non-blocking syscalls, readiness
//! from the shard's epoll instance: `socket.rs`), shared by the protocols
//! above it: the fast path reads whole heads from it ([`Conn::poll_head`]),
//! hyper reads and writes through [`Io`] (hyper's I/O traits).
//!
//! Contract:
//!
//! - **Reads pass the framing gate.** Reads land in the connection's
//!   receive buffer (`recv.rs`). While the connection is on the fast path,
//!   each head is first offered to the fast path's parser (`fast_parse.rs`);
//!   a head it takes goes to the fast path, and its bytes never reach hyper.
//!   The first head it does not take switches the connection to hyper for
//!   good, and from then on the [`Gate`] decides which bytes hyper may see:
//!   whole request heads that passed the strict framing checks, and the
//!   bodies behind them. A partial head waits in the buffer until it is
//!   whole; a refused head is replaced by the gate's stand-in (see
//!   `framing.rs`). A connection whose first head the fast path declines
//!   and whose bytes are HTTP/2's client preface goes to HTTP/2 instead
//!   ([`Next::Http2`], [`Conn::into_stream`]): the gate never sees it.
//!   Passed bytes are copied into hyper's uninitialised read
//!   buffer with `put_slice`: no zero-filling per read and no `unsafe`.
//! - **Writes are batched.** What the protocols write is buffered
//!   (`send.rs`) and sent when the connection task is about to wait
//!   (`flush.rs`, through [`Conn::after_poll`]), when the buffer passes its
//!   high-water mark, and before the write side is shut down. hyper's own
//!   `pipeline_flush` (which can drop a `400` answering a malformed
//!   request: the bytes stay in its buffer when the connection closes) is
//!   not needed.
//! - **The connection owns its deadlines** (`limits.rs` for which applies
//!   when): a read that blocks asks the [`ReadClock`] for a deadline (what
//!   it waits for: [`Progress::waiting`]); a send that blocks starts the
//!   send timeout. When a read deadline passes, the read acts on its next
//!   poll: it closes an idle connection (the end of the stream), refuses a
//!   late head (`408`, through the stand-in), or fails a stalled body read
//!   with [`io::ErrorKind::TimedOut`]. The clock is read only when a read
//!   or send blocks (and at the first bytes of a partial head).
//! - **Upgrades.** After an upgrade request the gate pauses (see
//!   `framing.rs`) and reads return `Pending` without touching the socket.
//!   When that request's response is done and was not a `101`, the gate
//!   resumes and the task is woken, so the held bytes are read as the next
//!   request. After a `101`, [`Conn::into_upgraded`] hands the socket and
//!   the held bytes to the upgrade task: none of the timeouts here apply to
//!   it any more.
//!
//! Every poll here is non-blocking and cancel-safe (state lives in the
//! connection, not in the futures polling it). The I/O imports the pieces
//! below it (buffers, gate, clock, parser), never the fast path, the
//! connection or the server.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::rt::{Read, ReadBufCursor, Write};

use super::Request;
use super::fast_parse;
use super::framing::{Gate, Rejection, STAND_IN, Step};
use super::http2::PREFACE;
use super::limits::{BodyTimedOut, Limits, Progress, ReadClock, Verdict, Waiting};
use super::recv::RecvBuffer;
use super::requests::Requests;
use super::send::SendBuffer;
use super::socket::Socket;
use super::transport::Transport;
use super::upgrade::Upgraded;
use crate::shard::ShardCounters;

/// Longest a lingering close waits for the client to stop sending.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Most bytes a lingering close reads and discards.
const LINGER_BYTES: usize = 64 * 1024 * 1024;

struct Inner<S> {
    stream: S,
    /// Received bytes, and which of them passed the gate (`recv.rs`).
    recv: RecvBuffer,
    /// The peer closed its side, or the connection idled out.
    eof: bool,
    gate: Gate,
    /// Heads go to the fast path (`fast.rs`) until one it does not take:
    /// from then on, to hyper.
    fast: bool,
    /// A request the fast path parsed and has not taken yet.
    fast_request: Option<Request>,
    /// The connection opened with the HTTP/2 client preface (h2c with prior
    /// knowledge): the connection goes to HTTP/2 with what was received.
    http2: bool,
    /// How much of [`STAND_IN`] hyper has been given, once a head is refused.
    stand_in: Option<usize>,
    clock: ReadClock,
    /// hyper's last read blocked on the socket and was not retried yet.
    read_blocked: bool,
    /// When the blocked read gives up, if it has a deadline.
    read_deadline: Option<Instant>,
    /// Output not sent yet (`send.rs`).
    send: SendBuffer,
    limits: Limits,
    requests: Rc<Requests>,
    discarded: usize,
    /// The shard's byte counters.
    counters: Arc<ShardCounters>,
}

impl<S: Transport> Inner<S> {
    /// Sends buffered output until all of it is gone or the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (stream, counters) = (&mut self.stream, &self.counters);
        let write = |bytes: &[u8]| {
            let written = stream.poll_write(cx, bytes);
            if let Poll::Ready(Ok(n)) = written {
                counters.sent(n);
            }
            written
        };
        self.send.poll_send(write, Instant::now)
    }

    fn send_deadline(&self) -> Option<Instant> {
        self.send.deadline(self.limits.send_timeout)
    }

    /// Runs newly received bytes through the gate.
    fn admit(&mut self) {
        while self.recv.has_unpassed() {
            if self.fast_request.is_some() {
                // One fast request at a time: the rest waits its turn.
                return;
            }
            let input = self.recv.unpassed();
            if self.fast
                && self.gate.may_hold_head(input)
                && let Some((request, n)) = fast_parse::parse(input, self.gate.max_head())
            {
                // Checked as the gate would pass it (`fast::parse`), and
                // without a body the gate's state stays at the next head.
                self.gate.head_taken();
                self.recv.take(n);
                self.requests.fast_head();
                self.clock.on_head();
                self.fast_request = Some(request);
                return;
            }
            if self.fast && self.requests.heads() == 0 && input.first() == Some(&b'P') {
                // Only where the fast path declined the first head: HTTP/2's preface?
                if input.starts_with(PREFACE) {
                    self.http2 = true;
                    return;
                }
                if PREFACE.starts_with(input) {
                    self.clock.on_head_bytes(Instant::now);
                    return;
                }
            }
            match self.gate.step(input) {
                Step::Head(n) => {
                    // A whole head the fast path did not take: hyper's from here on.
                    self.fast = false;
                    self.recv.pass(n);
                    self.requests.head_passed();
                    self.clock.on_head();
                }
                Step::Body(n) => {
                    self.recv.pass(n);
                    self.clock.on_body_bytes(n);
                }
                Step::NeedMore => {
                    self.clock.on_head_bytes(Instant::now);
                    return;
                }
                Step::Paused => return,
                Step::Reject(rejection) => return self.refuse(rejection),
            }
        }
    }

    /// Drops the refused head and everything after it; hyper gets the stand-in.
    fn refuse(&mut self, rejection: Rejection) {
        tracing::debug!(?rejection, "request refused before the handler");
        self.recv.drop_unpassed();
        self.gate.close();
        self.fast = false;
        self.stand_in = Some(0);
        self.requests.refuse(rejection);
    }

    /// Between requests: gives back buffers a large body, response or
    /// pipelined burst grew, so an idle keep-alive connection holds the
    /// first receive buffer only.
    fn shrink(&mut self) {
        self.recv.shrink();
        self.send.shrink();
    }

    /// What a blocked read is waiting for (`limits.rs`).
    fn waiting(&self) -> Waiting {
        Progress {
            in_body: self.gate.in_body(),
            at_head: self.gate.at_head(),
            open_requests: self.requests.open(),
            partial_head: self.recv.has_unpassed(),
            served_before: self.requests.answered_any(),
        }
        .waiting()
    }

    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.read_deadline = None;
        self.read_blocked = false;
        self.clock.on_retry(Instant::now);
        loop {
            let passed = self.recv.passed();
            if !passed.is_empty() {
                let n = passed.len().min(buf.remaining());
                buf.put_slice(&passed[..n]);
                self.recv.hand_on(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(at) = self.stand_in.filter(|&at| at < STAND_IN.len()) {
                let n = (STAND_IN.len() - at).min(buf.remaining());
                buf.put_slice(&STAND_IN[at..at + n]);
                self.stand_in = Some(at + n);
                return Poll::Ready(Ok(()));
            }
            if self.gate.is_paused() {
                // After an upgrade request: the flush (`flush.rs`) resumes the gate (and
                // wakes the task) if the answer is not a `101`.
                return Poll::Pending;
            }
            if self.gate.is_closed() {
                // Refused or timed out: the answer hyper is writing closes
                // the connection; nothing more is read.
                return Poll::Pending;
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_receive(cx))?;
        }
    }

    /// The fast path's read: the next request it takes, or where the
    /// connection goes instead (see [`Next`]).
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Next>> {
        self.read_deadline = None;
        self.read_blocked = false;
        self.clock.on_retry(Instant::now);
        loop {
            if self.http2 {
                return Poll::Ready(Ok(Next::Http2));
            }
            if self.fast && self.fast_request.is_none() && self.recv.has_unpassed() {
                // Pipelined heads held back behind the last fast request.
                self.admit();
            }
            if let Some(request) = self.fast_request.take() {
                return Poll::Ready(Ok(Next::Request(request)));
            }
            if !self.fast {
                return Poll::Ready(Ok(Next::Hyper));
            }
            if self.eof {
                return Poll::Ready(Ok(Next::End));
            }
            ready!(self.poll_receive(cx))?;
        }
    }

    /// Reads once from the socket into the receive buffer and runs what
    /// arrived through the gate. Ready when the state changed (bytes, the
    /// end of the stream, a timeout acted on); pending while the read blocks
    /// within its deadline.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let spare = self.recv.spare(self.limits.max_header_size);
        match self.stream.poll_read(cx, spare) {
            Poll::Ready(Ok(0)) => self.eof = true,
            Poll::Ready(Ok(n)) => {
                self.recv.received(n);
                self.counters.received(n);
                self.admit();
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => {
                self.read_blocked = true;
                let waiting = self.waiting();
                if let Waiting::Idle { .. } = waiting {
                    self.shrink();
                }
                match self.clock.on_block(waiting, &self.limits, Instant::now()) {
                    Verdict::Until(deadline) => {
                        self.read_deadline = Some(deadline);
                        return Poll::Pending;
                    }
                    Verdict::Forever => return Poll::Pending,
                    Verdict::IdleExpired => {
                        tracing::trace!("idle connection timed out");
                        self.eof = true;
                    }
                    Verdict::HeadExpired => self.refuse(Rejection::HeadTimeout),
                    Verdict::BodyExpired => {
                        tracing::debug!("request body too slow; failing the body read");
                        self.gate.close();
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            BodyTimedOut,
                        )));
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// A read that blocked while a request was open is not retried by hyper
    /// when the connection goes idle: give it the idle (or head) deadline
    /// now. When that passes, the flush (`flush.rs`) polls hyper and the read acts.
    fn refresh_read_deadline(&mut self) {
        if !self.read_blocked || self.read_deadline.is_some() {
            return;
        }
        let waiting = self.waiting();
        if matches!(waiting, Waiting::Idle { .. } | Waiting::Head) {
            self.read_deadline = Some(
                match self.clock.on_block(waiting, &self.limits, Instant::now()) {
                    Verdict::Until(deadline) => deadline,
                    // Passed already: poll hyper at once.
                    _ => Instant::now(),
                },
            );
        }
    }

    /// Resumes a paused gate once the upgrade request was answered without
    /// switching protocols; returns whether it did.
    fn resume_declined_upgrade(&mut self) -> bool {
        if !self.gate.is_paused() || self.requests.open() > 0 || self.requests.switched() {
            return false;
        }
        self.gate.resume();
        self.admit();
        true
    }

    /// Reads and discards until the peer closes, for a lingering close.
    fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.eof && self.discarded < LINGER_BYTES {
            match self.stream.poll_read(cx, self.recv.scratch()) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.eof = true,
                Poll::Ready(Ok(n)) => {
                    self.discarded += n;
                    self.counters.received(n);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }
}

/// What the fast path's read found.
#[derive(Debug)]
// Moved once per request; a box would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next {
    /// A request for the fast path.
    Request(Request),
    /// A head the fast path does not take (or a refusal hyper answers):
    /// hyper serves the connection from here on.
    Hyper,
    /// The connection opened with the HTTP/2 preface: HTTP/2 serves it
    /// ([`Conn::into_stream`]).
    Http2,
    /// The client closed, or the connection idled out.
    End,
}

/// The half of a connection hyper drives.
pub(crate) struct Io<S = Socket> {
    inner: Rc<RefCell<Inner<S>>>,
}

/// The connection task's handle on the same connection: drives hyper with
/// the flush (`flush.rs`) and closes lingering.
pub(crate) struct Conn<S = Socket> {
    inner: Rc<RefCell<Inner<S>>>,
}

/// Splits a stream into hyper's side and the connection task's side.
pub(crate) fn split<S: Transport>(
    stream: S,
    limits: Limits,
    requests: Rc<Requests>,
    counters: Arc<ShardCounters>,
) -> (Io<S>, Conn<S>) {
    let inner = Rc::new(RefCell::new(Inner {
        stream,
        recv: RecvBuffer::default(),
        eof: false,
        gate: Gate::new(limits.max_header_size),
        fast: true,
        fast_request: None,
        http2: false,
        stand_in: None,
        clock: ReadClock::default(),
        read_blocked: false,
        read_deadline: None,
        send: SendBuffer::default(),
        limits,
        requests,
        discarded: 0,
        counters,
    }));
    (
        Io {
            inner: inner.clone(),
        },
        Conn { inner },
    )
}

impl<S: Transport> Conn<S> {
    /// A second handle on the connection, for the future that drives it
    /// (`flush.rs`); dropped before [`into_upgraded`](Self::into_upgraded).
    pub(crate) fn share(&self) -> Conn<S> {
        Conn {
            inner: self.inner.clone(),
        }
    }

    /// After the connection future was polled (`done`: it finished): resumes
    /// a declined upgrade (waking the task), sends buffered output, and says
    /// when the task must run again.
    pub(crate) fn after_poll(&self, cx: &mut Context<'_>, done: bool) -> Waits {
        let mut inner = self.inner.borrow_mut();
        if !done && inner.resume_declined_upgrade() {
            // hyper reads again only when woken.
            cx.waker().wake_by_ref();
        }
        let sent = inner.poll_send(cx);
        if done {
            // Over; a peer that stopped reading gets nothing more.
            if sent.is_ready() {
                return Waits::Finished;
            }
            inner.read_deadline = None;
            inner.read_blocked = false;
        }
        // A failed send: hyper sees the error on its next read or write.
        inner.refresh_read_deadline();
        let (read, send) = (inner.read_deadline, inner.send_deadline());
        let Some(deadline) = earliest(read, send) else {
            return Waits::Wake;
        };
        let now = Instant::now();
        if send.is_some_and(|send| send <= now) {
            tracing::debug!("client stopped reading the response; closing");
            return Waits::SendTimedOut;
        }
        if deadline > now {
            Waits::Until(deadline)
        } else {
            Waits::Passed
        }
    }

    /// The deadline [`after_poll`](Self::after_poll) returned passed (or
    /// it said [`Waits::Passed`]): the next poll of the connection future
    /// acts on the blocked read.
    pub(crate) fn deadline_passed(&self) {
        self.inner.borrow_mut().read_deadline = None;
    }

    /// The fast path's next request; see [`Next`].
    pub(crate) fn poll_head(&self, cx: &mut Context<'_>) -> Poll<io::Result<Next>> {
        self.inner.borrow_mut().poll_head(cx)
    }

    /// Appends to the output, which the flush (`flush.rs`) sends when the task waits.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        f(self.inner.borrow_mut().send.out())
    }

    /// Ready when the output is below its high-water mark (sending some if not).
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.inner.borrow_mut();
        if inner.send.is_full() {
            ready!(inner.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Sends all the output, then shuts the write side.
    pub(crate) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.inner.borrow_mut();
        ready!(inner.poll_send(cx))?;
        inner.stream.poll_close(cx)
    }

    /// After the last response: shuts the write side and reads what the
    /// client still sends until it closes (at most [`LINGER_TIME`] and
    /// [`LINGER_BYTES`]), so closing does not reset the connection before the
    /// client has read that response.
    pub(crate) async fn linger(&self) {
        let inner = self.inner.clone();
        let discard = std::future::poll_fn(move |cx| {
            let mut inner = inner.borrow_mut();
            if inner.eof {
                return Poll::Ready(());
            }
            // hyper has usually shut the write side already; twice is harmless.
            let _ = inner.stream.poll_close(cx);
            inner.poll_discard(cx)
        });
        let _ = crate::time::timeout(LINGER_TIME, discard).await;
    }
}

impl<S: Transport> Conn<S> {
    /// After the fast path saw the HTTP/2 preface ([`Next::Http2`]): the
    /// stream, with every byte received so far (the preface first), for
    /// HTTP/2. `None` if hyper's half is still shared.
    pub(crate) fn into_stream(self, io: Io<S>) -> Option<(S, Bytes)> {
        drop(io);
        let inner = Rc::try_unwrap(self.inner).ok()?.into_inner();
        let received = Bytes::copy_from_slice(inner.recv.held());
        Some((inner.stream, received))
    }

    /// After hyper ended the connection on a `101`: the socket, with the
    /// bytes hyper read past the head (`read_buf`) and those the gate held,
    /// for the upgrade task. `None` if hyper's half is still shared.
    pub(crate) fn into_upgraded(self, io: Io<S>, read_buf: Bytes) -> Option<Upgraded> {
        drop(io);
        let inner = Rc::try_unwrap(self.inner).ok()?.into_inner();
        let held = inner.recv.held();
        let unread = if read_buf.is_empty() {
            Bytes::copy_from_slice(held)
        } else {
            let mut all = Vec::with_capacity(read_buf.len() + held.len());
            all.extend_from_slice(&read_buf);
            all.extend_from_slice(held);
            Bytes::from(all)
        };
        match inner.stream.into_upgraded(unread, inner.counters) {
            Ok(upgraded) => Some(upgraded),
            Err(error) => {
                tracing::debug!(%error, "cannot hand an upgraded connection over");
                None
            }
        }
    }
}

/// What the connection needs once its future was polled; see
/// [`Conn::after_poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waits {
    /// The future is done and all its output was sent.
    Finished,
    /// Nothing to time: wait for the next wake-up.
    Wake,
    /// Wake up at this instant at the latest (a read or send deadline).
    Until(Instant),
    /// A read deadline passed already: poll the future again at once.
    Passed,
    /// The client took no bytes for the send timeout.
    SendTimedOut,
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<S: Transport> Read for Io<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.inner.borrow_mut().poll_read_into(cx, &mut buf)
    }
}

impl<S: Transport> Write for Io<S> {
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
        if inner.send.is_full() {
            ready!(inner.poll_send(cx))?;
        }
        // Take at most up to the high-water mark (hyper writes the rest
        // later), so a large body is never copied whole.
        Poll::Ready(Ok(inner.send.accept(bufs)))
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
        inner.stream.poll_close(cx)
    }
}
