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
//!
//! A watched future polled inside another (a connection's task inside the
//! shard function's poll, a `Watched` nested in a `Watched`) is timed by
//! the outermost one only, so one long poll is one stall, logged once.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::ShardCounters;
use crate::clock::coarse_now;

thread_local! {
    static WATCH: RefCell<Option<(Arc<ShardCounters>, Option<Duration>)>> = const { RefCell::new(None) };
    /// Whether a watched poll is running on this thread (the outer one of
    /// nested ones).
    static TIMING: Cell<bool> = const { Cell::new(false) };
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
        if TIMING.replace(true) {
            // The outer watched poll times this one too.
            return self.project().inner.poll(cx);
        }
        let _outer = Outer;
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

/// Clears [`TIMING`] when the outermost watched poll ends, unwinding too.
struct Outer;

impl Drop for Outer {
    fn drop(&mut self) {
        TIMING.set(false);
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    /// Polls `future` once on this thread, with the detector watching.
    fn poll_once(future: impl Future<Output = ()>, counters: &Arc<ShardCounters>) {
        start(counters.clone(), Some(Duration::from_millis(25)));
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_ready());
        WATCH.with(|watch| *watch.borrow_mut() = None);
    }

    #[test]
    fn one_long_poll_is_one_stall_however_deeply_it_is_watched() {
        let counters = Arc::new(ShardCounters::default());
        let long = || std::thread::sleep(Duration::from_millis(60));
        poll_once(Watched::new(Watched::new(async move { long() })), &counters);
        assert_eq!(counters.snapshot().stalls, 1);
        poll_once(Watched::new(async move { long() }), &counters);
        assert_eq!(counters.snapshot().stalls, 2);
        // A short poll is none; the outer flag is cleared after each.
        poll_once(Watched::new(Watched::new(async {})), &counters);
        assert_eq!(counters.snapshot().stalls, 2);
        assert!(!TIMING.get());
    }
}
