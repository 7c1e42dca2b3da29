//! A connection's I/O over its [`Socket`] (non-blocking syscalls, readiness
//! from the shard's epoll instance: `socket.rs`): reads pass the framing
//! gate, writes are batched per wake-up of the connection task, and the
//! connection's timeouts are enforced here; hyper's I/O traits on top.
//!
//! A connection starts on the fast path (`fast.rs`): heads are offered to
//! [`fast::parse`] before the gate, and a request it takes is
//! handed to the fast path ([`Conn::poll_head`]) instead of released to
//! hyper; its bytes never reach hyper. The first head it does not take
//! switches the connection to hyper for good, from that head on, and
//! everything below applies to hyper's reads.
//!
//! Reads land in a receive buffer owned by the connection (zeroed once, when
//! the connection opens). The [`Gate`] then
//! decides which bytes hyper may see: whole request heads that passed the
//! strict framing checks, and the bodies behind them. A partial head stays
//! in the buffer (which grows up to the head size limit) until it is whole;
//! a refused head is replaced by the gate's stand-in (see `framing.rs`). The
//! passed bytes are copied into hyper's uninitialised read buffer with
//! `put_slice`. No zero-filling per read and no `unsafe`.
//!
//! Writes are collected in an output buffer and sent when the connection
//! task is about to wait ([`Flush`] wraps the connection future), when the
//! buffer passes [`HIGH_WATER`], and before the write side is shut down. So
//! all the responses hyper produces in one wake-up (pipelined requests) leave
//! in one `send`, and hyper's own `pipeline_flush` (which can drop a `400`
//! answering a malformed request: the bytes stay in its buffer when the
//! connection closes) is not needed.
//!
//! Timeouts (see `limits.rs` for which applies when): a read that blocks
//! asks the [`ReadClock`] for a deadline; a send that blocks starts the send
//! timeout. [`Flush`] sleeps until the earliest deadline on the shard's timer
//! and polls hyper again when it passes, so the blocked read can act: close
//! an idle connection (hyper sees the end of the stream), refuse a late head
//! (`408`, through the stand-in), or fail a stalled body read with
//! [`io::ErrorKind::TimedOut`]. A passed send deadline ends the connection.
//!
//! Upgrades: after an upgrade request the gate pauses (see `framing.rs`) and
//! reads return `Pending` without touching the socket. When that request's
//! response is done and was not a `101`, [`Flush`] resumes the gate and
//! wakes the task, so the held bytes are read as the next request. After a
//! `101`, hyper ends the connection and [`Conn::into_upgraded`] hands the
//! socket and the held bytes to the upgrade task: none of the timeouts here
//! apply to it any more.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::rt::{Read, ReadBufCursor, Write};

use super::Request;
use super::accept::into_glommio;
use super::fast_parse;
use super::framing::{Gate, Rejection, STAND_IN, Step};
use super::limits::{Limits, Progress, ReadClock, Verdict, Waiting};
use super::recv::RecvBuffer;
use super::requests::Requests;
use super::socket::Socket;
use super::upgrade::Upgraded;
use crate::shard::ShardCounters;
use crate::shard::timer::ShardSleep;

/// Output buffer capacity an idle connection may keep.
const OUT_KEEP: usize = 4 * 1024;

/// Buffered output above which writes go out before more is accepted.
const HIGH_WATER: usize = 64 * 1024;

/// Longest a lingering close waits for the client to stop sending.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Most bytes a lingering close reads and discards.
const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// The error a body read gets when the body stalls or trickles in too slowly.
#[derive(Debug)]
pub(crate) struct BodyTimedOut;

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body stalled or arrived below the minimum rate")
    }
}

impl std::error::Error for BodyTimedOut {}

struct Inner {
    stream: Socket,
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
    /// How much of [`STAND_IN`] hyper has been given, once a head is refused.
    stand_in: Option<usize>,
    clock: ReadClock,
    /// hyper's last read blocked on the socket and was not retried yet.
    read_blocked: bool,
    /// When the blocked read gives up, if it has a deadline.
    read_deadline: Option<Instant>,
    out: Vec<u8>,
    /// How much of `out` has been sent.
    sent: usize,
    /// Since when sending made no progress.
    send_blocked: Option<Instant>,
    limits: Limits,
    requests: Rc<Requests>,
    discarded: usize,
    /// The shard's byte counters.
    counters: Arc<ShardCounters>,
}

impl Inner {
    /// Sends buffered output until all of it is gone or the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut progressed = false;
        while self.sent < self.out.len() {
            match self.stream.poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.sent += n;
                    self.counters.sent(n);
                    progressed = true;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    if progressed || self.send_blocked.is_none() {
                        self.send_blocked = Some(Instant::now());
                    }
                    return Poll::Pending;
                }
            }
        }
        self.out.clear();
        self.sent = 0;
        self.send_blocked = None;
        Poll::Ready(Ok(()))
    }

    fn buffered(&self) -> usize {
        self.out.len() - self.sent
    }

    fn send_deadline(&self) -> Option<Instant> {
        self.send_blocked
            .map(|since| since + self.limits.send_timeout)
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
        if self.out.capacity() > OUT_KEEP && self.buffered() == 0 {
            self.out = Vec::new();
            self.sent = 0;
        }
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
                // After an upgrade request: [`Flush`] resumes the gate (and
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
    /// now. When that passes, [`Flush`] polls hyper and the read acts.
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
    /// The client closed, or the connection idled out.
    End,
}

/// The half of a connection hyper drives.
pub(crate) struct Io {
    inner: Rc<RefCell<Inner>>,
}

/// The connection task's handle on the same connection: drives hyper with
/// [`Flush`] and closes lingering.
pub(crate) struct Conn {
    inner: Rc<RefCell<Inner>>,
}

/// Splits a stream into hyper's side and the connection task's side.
pub(crate) fn split(
    stream: Socket,
    limits: Limits,
    requests: Rc<Requests>,
    counters: Arc<ShardCounters>,
) -> (Io, Conn) {
    let inner = Rc::new(RefCell::new(Inner {
        stream,
        recv: RecvBuffer::default(),
        eof: false,
        gate: Gate::new(limits.max_header_size),
        fast: true,
        fast_request: None,
        stand_in: None,
        clock: ReadClock::default(),
        read_blocked: false,
        read_deadline: None,
        out: Vec::new(),
        sent: 0,
        send_blocked: None,
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

impl Conn {
    /// Wraps the connection future; see [`Flush`].
    pub(crate) fn drive<F: Future>(&self, future: F) -> Flush<F> {
        Flush {
            inner: self.inner.clone(),
            future,
            done: None,
            sleep: None,
        }
    }

    /// The fast path's next request; see [`Next`].
    pub(crate) fn poll_head(&self, cx: &mut Context<'_>) -> Poll<io::Result<Next>> {
        self.inner.borrow_mut().poll_head(cx)
    }

    /// Appends to the output, which [`Flush`] sends when the task waits.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        f(&mut self.inner.borrow_mut().out)
    }

    /// Ready when the output is below [`HIGH_WATER`] (sending some if not).
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.inner.borrow_mut();
        if inner.buffered() >= HIGH_WATER {
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

    /// After hyper ended the connection on a `101`: the socket, with the
    /// bytes hyper read past the head (`read_buf`) and those the gate held,
    /// for the upgrade task. `None` if hyper's half is still shared.
    pub(crate) fn into_upgraded(self, io: Io, read_buf: Bytes) -> Option<Upgraded> {
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
        match inner.stream.into_std() {
            Ok(stream) => Some(Upgraded::new(into_glommio(stream), unread, inner.counters)),
            Err(error) => {
                tracing::debug!(%error, "cannot hand an upgraded connection over");
                None
            }
        }
    }
}

/// How a driven connection ended.
#[derive(Debug)]
pub(crate) enum Ended<T> {
    /// The connection future finished and its output was sent.
    Done(T),
    /// The client took no bytes for the send timeout.
    SendTimedOut,
}

/// Wraps the connection future: sends buffered output whenever the future
/// waits and once more when it ends, and wakes it when a deadline passes.
pub(crate) struct Flush<F: Future> {
    inner: Rc<RefCell<Inner>>,
    future: F,
    done: Option<F::Output>,
    sleep: Option<ShardSleep>,
}

impl<F: Future + Unpin> Future for Flush<F>
where
    F::Output: Unpin,
{
    type Output = Ended<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // A passed read deadline polls hyper again so the read can act on it.
        for _ in 0..3 {
            if this.done.is_none()
                && let Poll::Ready(output) = Pin::new(&mut this.future).poll(cx)
            {
                this.done = Some(output);
            }
            let mut inner = this.inner.borrow_mut();
            if this.done.is_none() && inner.resume_declined_upgrade() {
                // hyper reads again only when woken.
                cx.waker().wake_by_ref();
            }
            let sent = inner.poll_send(cx);
            if let Some(output) = this.done.take() {
                // Over; a peer that stopped reading gets nothing more.
                if sent.is_ready() {
                    return Poll::Ready(Ended::Done(output));
                }
                this.done = Some(output);
                inner.read_deadline = None;
                inner.read_blocked = false;
            }
            // A failed send: hyper sees the error on its next read or write.
            inner.refresh_read_deadline();
            let (read, send) = (inner.read_deadline, inner.send_deadline());
            let Some(deadline) = earliest(read, send) else {
                return Poll::Pending;
            };
            let now = Instant::now();
            if send.is_some_and(|send| send <= now) {
                tracing::debug!("client stopped reading the response; closing");
                return Poll::Ready(Ended::SendTimedOut);
            }
            if deadline > now {
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        sleep.reset(deadline);
                        sleep
                    }
                    None => this.sleep.insert(ShardSleep::new(deadline)),
                };
                if Pin::new(sleep).poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            inner.read_deadline = None;
        }
        Poll::Pending
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.inner.borrow_mut().poll_read_into(cx, &mut buf)
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
        // Take at most up to the high-water mark (hyper writes the rest
        // later), so a large body is never copied whole into `out`.
        let mut room = HIGH_WATER.saturating_sub(inner.buffered());
        let mut accepted = 0;
        for buf in bufs {
            let n = buf.len().min(room);
            inner.out.extend_from_slice(&buf[..n]);
            accepted += n;
            room -= n;
            if room == 0 {
                break;
            }
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
        inner.stream.poll_close(cx)
    }
}
