//! What the I/O adapter and the service of one connection tell each other.
//!
//! The adapter counts the request heads it let through to hyper; the service
//! counts the calls hyper makes and, through [`Tracked`] response bodies, the
//! responses hyper finished writing. Requests the fast path answers
//! (`fast.rs`) are counted the same way, without hyper. Heads let through minus responses
//! finished is the number of requests open on the connection: when it is
//! zero the connection is idle (the client's time), otherwise the handler or
//! the response is (not the client's time).
//!
//! A refused head reaches hyper as a stand-in, and the service answers the
//! call with the same index with the refusal. hyper calls the service once
//! per head, in order, so indexes match.
//!
//! An upgrade request answered with `101` switches the connection: the
//! service records it here (with the handler's upgrade task), so the adapter
//! keeps its gate paused and the connection task hands the socket over.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::framing::Rejection;
use super::upgrade::UpgradeTask;
use super::{Body, BoxError};

/// The request bookkeeping of one connection; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    heads: Cell<u64>,
    calls: Cell<u64>,
    answered: Cell<u64>,
    refused: Cell<Option<(u64, Rejection)>>,
    linger: Cell<bool>,
    draining: Cell<bool>,
    switched: Cell<bool>,
    upgrade: RefCell<Option<UpgradeTask>>,
    /// The client's address, noted only for the access log.
    peer: Cell<Option<std::net::SocketAddr>>,
}

impl Requests {
    /// The shard is stopping: every response from now on closes the
    /// connection.
    pub(crate) fn drain(&self) {
        self.draining.set(true);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Notes the client's address (for the access log).
    pub(crate) fn set_peer(&self, peer: Option<std::net::SocketAddr>) {
        self.peer.set(peer);
    }

    /// The client's address, if it was noted.
    pub(crate) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer.get()
    }

    /// The adapter let a head through.
    pub(crate) fn head_passed(&self) {
        self.heads.set(self.heads.get() + 1);
    }

    /// Heads let through so far (HTTP/2: streams begun).
    pub(crate) fn heads(&self) -> u64 {
        self.heads.get()
    }

    /// The fast path took a head (hyper never sees it): counted as let
    /// through and called, so later heads keep their indexes.
    pub(crate) fn fast_head(&self) {
        self.head_passed();
        self.calls.set(self.calls.get() + 1);
    }

    /// The fast path finished a response.
    pub(crate) fn fast_answered(&self) {
        self.answered.set(self.answered.get() + 1);
    }

    /// The adapter replaced the next head with a stand-in for `rejection`.
    pub(crate) fn refuse(&self, rejection: Rejection) {
        self.refused.set(Some((self.heads.get(), rejection)));
        self.head_passed();
    }

    /// hyper called the service: the refusal to answer with, if this call is
    /// the stand-in.
    pub(crate) fn call(&self) -> Option<Rejection> {
        let index = self.calls.get();
        self.calls.set(index + 1);
        match self.refused.get() {
            Some((refused, rejection)) if refused == index => Some(rejection),
            _ => None,
        }
    }

    /// Requests let through whose responses hyper has not finished.
    pub(crate) fn open(&self) -> u64 {
        self.heads.get().saturating_sub(self.answered.get())
    }

    /// Whether any response was finished on this connection.
    pub(crate) fn answered_any(&self) -> bool {
        self.answered.get() > 0
    }

    /// Asks the connection to read and discard what the client still sends
    /// after the last response, so the client reads that response rather
    /// than a reset (nginx's lingering close).
    pub(crate) fn linger(&self) {
        self.linger.set(true);
    }

    /// Whether [`linger`](Self::linger) was asked for.
    pub(crate) fn wants_linger(&self) -> bool {
        self.linger.get()
    }

    /// An upgrade request was answered with `101`: HTTP ends on this
    /// connection; `task` (if the handler registered one) gets the socket.
    pub(crate) fn switch(&self, task: Option<UpgradeTask>) {
        self.switched.set(true);
        *self.upgrade.borrow_mut() = task;
    }

    /// Whether a `101` was answered (see [`switch`](Self::switch)).
    pub(crate) fn switched(&self) -> bool {
        self.switched.get()
    }

    /// The upgrade task to hand the socket to, once.
    pub(crate) fn take_upgrade(&self) -> Option<UpgradeTask> {
        self.upgrade.borrow_mut().take()
    }
}

/// A response body that marks its response finished when hyper drops it
/// (after the last frame, or at once for an empty body).
#[derive(Debug)]
pub(crate) struct Tracked {
    body: Body,
    requests: Rc<Requests>,
}

impl Tracked {
    pub(crate) fn new(body: Body, requests: Rc<Requests>) -> Self {
        Self { body, requests }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let answered = &self.requests.answered;
        answered.set(answered.get() + 1);
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_head_is_answered_at_its_own_index() {
        let requests = Rc::new(Requests::default());
        requests.head_passed();
        requests.refuse(Rejection::HostMissing);
        assert_eq!(requests.open(), 2);
        assert_eq!(requests.call(), None);
        assert_eq!(requests.call(), Some(Rejection::HostMissing));
        drop(Tracked::new(Body::empty(), requests.clone()));
        assert_eq!(requests.open(), 1);
        assert!(requests.answered_any());
    }
}
