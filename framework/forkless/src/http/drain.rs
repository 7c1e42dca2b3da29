//! The drain policy: what a connection does once its shard stops. One
//! watcher per connection, used by every protocol the connection speaks
//! (the fast path, hyper's HTTP/1, and HTTP/2, where the stop sends
//! `GOAWAY` at once and streams in flight finish: `http2.rs`).
//!
//! Contract:
//!
//! - **Stop.** When the shard's stop latch is set, the connection's
//!   [`Requests`] are marked draining: every response from then on carries
//!   `Connection: close` (`service.rs`), so a request in flight is answered
//!   and the connection closes after it.
//! - **Grace.** For [`DRAIN_GRACE`] from the stop, an idle keep-alive
//!   connection may still bring one more request (answered with
//!   `Connection: close`): closing at once would race a client that sends
//!   just as the stop arrives, and it would see a reset.
//! - **Over.** After the grace an idle connection closes; a request in
//!   flight is still finished.
//!
//! [`Drain::poll`] never blocks and is cancel-safe: it only registers the
//! task's waker with the stop latch and, once stopped, with the grace timer
//! (on the shard's timer; no clock read until the stop).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::{Duration, Instant};

use super::requests::Requests;
use crate::shard::latch::{Latch, Wait};
use crate::shard::timer::ShardSleep;

/// How long a keep-alive connection may still bring its next request once
/// its shard stops (that request is answered with `Connection: close`);
/// after it, an idle connection is closed. Closing the moment the stop
/// arrives would race a client that is sending its next request right then:
/// it would see its connection reset.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Where a connection is in its shard's stop; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The shard serves.
    Serving,
    /// The shard stopped: responses close the connection, and an idle one
    /// may still bring one more request.
    Grace,
    /// The grace passed: an idle connection closes.
    Over,
}

/// One connection's drain watcher.
pub(crate) struct Drain<'a> {
    requests: &'a Requests,
    stop: RefCell<Wait>,
    grace: RefCell<Option<ShardSleep>>,
    phase: Cell<Phase>,
}

impl<'a> Drain<'a> {
    pub(crate) fn new(stopping: &Latch, requests: &'a Requests) -> Self {
        Self {
            requests,
            stop: RefCell::new(stopping.wait()),
            grace: RefCell::new(None),
            phase: Cell::new(Phase::Serving),
        }
    }

    /// Moves through the phases as the stop and the grace come, waking the
    /// task at each; returns the phase now.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Phase {
        if self.phase.get() == Phase::Serving {
            if Pin::new(&mut *self.stop.borrow_mut()).poll(cx).is_pending() {
                return Phase::Serving;
            }
            self.requests.drain();
            *self.grace.borrow_mut() = Some(ShardSleep::new(Instant::now() + DRAIN_GRACE));
            self.phase.set(Phase::Grace);
        }
        if self.phase.get() == Phase::Grace {
            if let Some(grace) = self.grace.borrow_mut().as_mut()
                && Pin::new(grace).poll(cx).is_pending()
            {
                return Phase::Grace;
            }
            self.phase.set(Phase::Over);
        }
        Phase::Over
    }

    /// The phase as of the last [`poll`](Self::poll).
    pub(crate) fn phase(&self) -> Phase {
        self.phase.get()
    }
}
