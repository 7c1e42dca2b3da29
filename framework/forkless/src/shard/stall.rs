//! The stall detector: a shard whose task runs too long without yielding
//! holds up every other connection of that shard. Every task the framework
//! runs (the shard function, connections, bus jobs, [`crate::spawn`]) is
//! polled through [`Watched`], which times each poll; one longer than the
//! threshold (default 25 ms, as Seastar) is logged with the shard's tag and
//! counted in [`ShardCounters`](super::ShardCounters).
//!
//! Polls are timed with the coarse clock (`clock.rs`), to a tick: a stall
//! is reported within a tick of its threshold.
//!
//! The check runs when the long poll returns: a task that never yields
//! (an infinite loop) is not reported by this detector.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::ShardCounters;
use crate::clock::coarse_now;

thread_local! {
    static WATCH: RefCell<Option<(Arc<ShardCounters>, Option<Duration>)>> = const { RefCell::new(None) };
}

/// Starts watching this thread's polls; a `None` threshold turns the
/// reports off (the counters still say whether a poll is running, for the
/// systemd watchdog).
pub(crate) fn start(counters: Arc<ShardCounters>, threshold: Option<Duration>) {
    WATCH.with(|watch| *watch.borrow_mut() = Some((counters, threshold)));
}

pin_project_lite::pin_project! {
    /// A future whose polls are timed; see the module docs.
    pub(crate) struct Watched<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Watched<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // To a tick (1 to 10 ms): plenty for a threshold of tens of ms.
        let started = coarse_now();
        WATCH.with(|watch| {
            if let Some((counters, _)) = &*watch.borrow() {
                counters.poll_started(started);
            }
        });
        let output = self.project().inner.poll(cx);
        let took = coarse_now().saturating_duration_since(started);
        WATCH.with(|watch| {
            let watch = watch.borrow();
            let Some((counters, threshold)) = &*watch else {
                return;
            };
            counters.poll_ended();
            if let Some(threshold) = threshold
                && took > *threshold
            {
                counters.stall();
                tracing::warn!(
                    took_ms = took.as_millis(),
                    threshold_ms = threshold.as_millis(),
                    "stall: a task ran without yielding for longer than the threshold; \
                     every other connection of this shard waited (offload CPU-heavy work)"
                );
            }
        });
        output
    }
}
