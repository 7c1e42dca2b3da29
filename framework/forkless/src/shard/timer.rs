//! `hyper::rt::Timer` on the shard's glommio timers.
//!
//! hyper wants `Send + Sync` sleeps; glommio timers are `!Send`. Instead of
//! pretending, each shard keeps one queue of deadlines (a binary heap of weak
//! entries) driven by a single glommio task that sleeps until the earliest
//! one. A [`ShardSleep`] is an `Arc` of its deadline and waker, so it is
//! honestly `Send + Sync`; creating, resetting and dropping one never touches
//! the reactor. `reset` to a later deadline (what hyper does for every request
//! on a keep-alive connection) is one atomic store: the stale heap entry is
//! re-queued lazily when it comes due. A sleep dropped early (a request
//! answered within its `forkless::time::timeout`) leaves a dead entry behind;
//! dead entries are swept whenever the heap has doubled since the last
//! sweep, so the heap stays within about twice the live sleeps.
//!
//! A sleep created on a thread that is not running a shard never fires.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{self, Rc};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use hyper::rt::{Sleep, Timer};

/// The [`Timer`] given to hyper on every shard.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ShardTimer;

impl Timer for ShardTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(ShardSleep::new(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<ShardSleep>() {
            Some(ours) => ours.get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// Nanoseconds since the queue's epoch.
    deadline: AtomicU64,
    fired: AtomicBool,
    waker: AtomicWaker,
}

/// One pending deadline; see the module docs.
#[derive(Debug)]
pub(crate) struct ShardSleep {
    shared: Arc<Shared>,
}

impl ShardSleep {
    pub(crate) fn new(deadline: Instant) -> Self {
        let shared = Arc::new(Shared {
            deadline: AtomicU64::new(0),
            fired: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let sleep = Self { shared };
        sleep.arm(deadline);
        sleep
    }

    /// A sleep until `deadline`, or `None` when this thread runs no shard
    /// (where a sleep would never fire).
    pub(crate) fn on_shard(deadline: Instant) -> Option<Self> {
        if QUEUE.with(|queue| queue.borrow().is_none()) {
            return None;
        }
        Some(Self::new(deadline))
    }

    /// Moves the deadline; a later one than before is one atomic store.
    pub(crate) fn reset(&mut self, deadline: Instant) {
        self.arm(deadline);
    }

    fn arm(&self, deadline: Instant) {
        QUEUE.with(|queue| {
            let queue = queue.borrow();
            let Some(queue) = queue.as_ref() else {
                return;
            };
            let at = queue.ticks(deadline);
            let previous = self.shared.deadline.swap(at, Ordering::Relaxed);
            let was_fired = self.shared.fired.swap(false, Ordering::Relaxed);
            // A later deadline than the queued one is re-queued when the old
            // entry comes due; anything else needs an entry of its own.
            if was_fired || previous == 0 || at < previous {
                queue.push(at, Arc::downgrade(&self.shared));
            }
        });
    }
}

impl Sleep for ShardSleep {}

impl Future for ShardSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.fired.load(Ordering::Relaxed) {
            return Poll::Ready(());
        }
        self.shared.waker.register(cx.waker());
        if self.shared.fired.load(Ordering::Relaxed) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

thread_local! {
    static QUEUE: RefCell<Option<Rc<Queue>>> = const { RefCell::new(None) };
}

/// Starts this shard's timer queue; call once, inside the shard's executor.
pub(crate) fn start() {
    let queue = Rc::new(Queue {
        epoch: Instant::now(),
        heap: RefCell::new(BinaryHeap::new()),
        armed: Cell::new(u64::MAX),
        rearm: Cell::new(false),
        driver: RefCell::new(None),
        compact_at: Cell::new(COMPACT_MIN),
    });
    super::spawn(drive(Rc::downgrade(&queue))).detach();
    QUEUE.with(|q| *q.borrow_mut() = Some(queue));
}

/// Stops this shard's timer queue; pending sleeps never fire.
pub(crate) fn stop() {
    QUEUE.with(|q| q.borrow_mut().take());
}

struct Queue {
    epoch: Instant,
    heap: RefCell<BinaryHeap<HeapEntry>>,
    /// The deadline the driver is currently sleeping towards.
    armed: Cell<u64>,
    /// Set when an entry earlier than `armed` was queued.
    rearm: Cell<bool>,
    driver: RefCell<Option<Waker>>,
    /// Heap length at which entries of dropped sleeps are swept out.
    compact_at: Cell<usize>,
}

/// The smallest heap worth sweeping.
const COMPACT_MIN: usize = 1024;

/// Ordered by deadline only, so ordering never looks through the `Weak`.
struct HeapEntry {
    at: Reverse<u64>,
    shared: Weak<Shared>,
}

impl PartialEq for HeapEntry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for HeapEntry {}
impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl Queue {
    /// Nanoseconds from the epoch, never 0 (0 means "not armed").
    fn ticks(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
    }

    fn push(&self, at: u64, shared: Weak<Shared>) {
        {
            let mut heap = self.heap.borrow_mut();
            heap.push(HeapEntry {
                at: Reverse(at),
                shared,
            });
            // A sleep dropped before its deadline (a request answered within
            // its timeout) leaves its entry until the deadline comes. Sweep
            // those whenever the heap has doubled since the last sweep, so
            // it stays within twice the live sleeps (amortized O(1) a push).
            if heap.len() >= self.compact_at.get() {
                heap.retain(|entry| entry.shared.strong_count() > 0);
                self.compact_at.set((heap.len() * 2).max(COMPACT_MIN));
            }
        }
        if at < self.armed.get() {
            self.armed.set(at);
            self.rearm.set(true);
            if let Some(driver) = self.driver.borrow_mut().take() {
                driver.wake();
            }
        }
    }

    /// Fires everything due at `now`; returns the next deadline, if any.
    fn fire_due(&self, now: u64) -> Option<u64> {
        let mut heap = self.heap.borrow_mut();
        while let Some(top) = heap.peek() {
            let at = top.at.0;
            if at > now {
                return Some(at);
            }
            let Some(entry) = heap.pop() else { break };
            let Some(shared) = entry.shared.upgrade() else {
                continue;
            };
            let deadline = shared.deadline.load(Ordering::Relaxed);
            if deadline > now {
                heap.push(HeapEntry {
                    at: Reverse(deadline),
                    shared: entry.shared,
                });
            } else if !shared.fired.swap(true, Ordering::Relaxed) {
                // Due, whichever entry brought it here: a deadline moved a
                // little later may pass before its stale entry is popped.
                shared.waker.wake();
            }
        }
        None
    }
}

async fn drive(queue: rc::Weak<Queue>) {
    loop {
        let Some(strong) = queue.upgrade() else {
            return;
        };
        let now = strong.ticks(Instant::now());
        let next = strong.fire_due(now);
        strong.armed.set(next.unwrap_or(u64::MAX));
        let wait = next.map(|at| Duration::from_nanos(at.saturating_sub(now)));
        drop(strong);
        Rearm {
            queue: queue.clone(),
            sleep: wait.map(|d| Box::pin(glommio::timer::sleep(d))),
        }
        .await;
    }
}

/// Resolves when the armed deadline passes or an earlier one is queued.
struct Rearm<S> {
    queue: rc::Weak<Queue>,
    sleep: Option<Pin<Box<S>>>,
}

impl<S: Future<Output = ()>> Future for Rearm<S> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(sleep) = self.sleep.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(());
        }
        let Some(queue) = self.queue.upgrade() else {
            return Poll::Ready(());
        };
        if queue.rearm.replace(false) {
            return Poll::Ready(());
        }
        *queue.driver.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Queue {
        Queue {
            epoch: Instant::now(),
            heap: RefCell::new(BinaryHeap::new()),
            armed: Cell::new(u64::MAX),
            rearm: Cell::new(false),
            driver: RefCell::new(None),
            compact_at: Cell::new(COMPACT_MIN),
        }
    }

    fn shared(deadline: u64) -> Arc<Shared> {
        Arc::new(Shared {
            deadline: AtomicU64::new(deadline),
            fired: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    #[test]
    fn a_deadline_moved_later_is_requeued_then_fires() {
        let queue = queue();
        let sleep = shared(100);
        queue.push(100, Arc::downgrade(&sleep));
        sleep.deadline.store(150, Ordering::Relaxed);
        assert_eq!(queue.fire_due(120), Some(150));
        assert!(!sleep.fired.load(Ordering::Relaxed));
        assert_eq!(queue.fire_due(150), None);
        assert!(sleep.fired.load(Ordering::Relaxed));
    }

    #[test]
    fn a_deadline_moved_later_fires_even_when_both_passed_before_the_stale_entry_popped() {
        let queue = queue();
        let sleep = shared(100);
        queue.push(100, Arc::downgrade(&sleep));
        sleep.deadline.store(101, Ordering::Relaxed);
        assert_eq!(queue.fire_due(200), None);
        assert!(sleep.fired.load(Ordering::Relaxed));
    }

    #[test]
    fn dropped_sleeps_are_skipped() {
        let queue = queue();
        let sleep = shared(100);
        queue.push(100, Arc::downgrade(&sleep));
        drop(sleep);
        assert_eq!(queue.fire_due(200), None);
        assert!(queue.heap.borrow().is_empty());
    }

    #[test]
    fn entries_of_dropped_sleeps_are_swept_as_the_heap_grows() {
        let queue = queue();
        let live: Vec<_> = (0..100).map(|i| shared(1_000_000 + i)).collect();
        for sleep in &live {
            queue.push(1_000_000, Arc::downgrade(sleep));
        }
        // A million requests answered well within their timeouts.
        for i in 0..1_000_000u64 {
            let dropped = shared(2_000_000 + i);
            queue.push(2_000_000 + i, Arc::downgrade(&dropped));
        }
        let len = queue.heap.borrow().len();
        assert!(
            len < 3 * COMPACT_MIN,
            "{len} entries kept for 100 live sleeps"
        );
        // The live ones are all still there and fire.
        let next = queue.fire_due(1_000_100);
        assert!(next.is_none_or(|at| at >= 2_000_000), "{next:?}");
        assert!(live.iter().all(|s| s.fired.load(Ordering::Relaxed)));
    }
}
