//! What the two sides of one ring share besides the ring itself: the
//! [`Wake`] one side parks on while the other makes progress, and the
//! [`RingLoad`] counts any thread may read.
//!
//! Contract:
//! - **No lost wake-up.** A side that parks (`park`, then checks its
//!   condition once more) is woken by the next [`Wake::notify`] that
//!   follows a change of that condition. Park on a receiver's inbox before
//!   its last look into its rings; notify it after each push. Park on a
//!   ring's room before the last try to push; notify it after each pop, and
//!   after each change of the receiver's liveness (`registry.rs`).
//! - **Cheap when nobody waits.** `notify` costs one `SeqCst` fence and the
//!   load of a flag that stays in the notifier's cache; only a parked side
//!   costs an atomic swap and a wake.
//! - **Spurious wakes are allowed.** A woken side re-checks; a side that
//!   parked and then found its condition met may get one extra wake later.
//! - Nothing here blocks or allocates.
//!
//! # Why the fences keep wake-ups from being lost
//!
//! The parking side P and the notifying side N do (a Dekker-style pair):
//!
//! ```text
//! P: waker.register; waiting.store(true); fence(SeqCst) [Fp]; check (pop / push / liveness)
//! N: publish (push / pop / liveness);     fence(SeqCst) [Fn]; waiting.load
//! ```
//!
//! `SeqCst` fences are totally ordered. If `Fp` comes before `Fn`, the store
//! of `true` is sequenced before `Fp`, so the load after `Fn` sees it (or a
//! later `false`, which only a wake or P's own `unpark` writes): N wakes P.
//! If `Fn` comes before `Fp`, what N published before `Fn` is visible to
//! P's check after `Fp`: P sees the change and does not sleep. Either way
//! P is not left asleep with its condition met. Without the fences both
//! sides could read the other's old value (store buffering), and P would
//! sleep on a message nobody wakes it for. The loom tests in
//! `loom_tests.rs` check this (and the liveness case) over every
//! interleaving of the real `LocalEnd` code.
//!
//! Only a parked side pays the swap: `notify` reads the flag with a plain
//! load first, and `swap(false)` makes exactly one notifier wake it.

use super::sync::{AtomicBool, AtomicU64, AtomicWaker, Ordering, fence};
use crossbeam_utils::CachePadded;

/// Wakes one side of a ring: the receiver when it parked on an empty inbox,
/// or a sender that parked on a full ring.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    waiting: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    /// Registers the current task; the caller must re-check its condition
    /// after this (the `SeqCst` fence pairs with [`Wake::notify`]).
    pub(crate) fn park(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
        self.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Wakes the parked side, if any. Call after publishing.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Marks the parked side as running again.
    pub(crate) fn unpark(&self) {
        self.waiting.store(false, Ordering::Relaxed);
    }
}

/// Messages pushed into and popped from one ring: each counter on its own
/// cache line with a single writer, so the admin endpoint can read a
/// shard's queue depth from any thread without asking the shard.
#[derive(Debug, Default)]
pub(crate) struct RingLoad {
    pushed: CachePadded<AtomicU64>,
    popped: CachePadded<AtomicU64>,
}

impl RingLoad {
    /// The sender pushed one message (the sender's thread only).
    pub(crate) fn pushed(&self) {
        let pushed = self.pushed.load(Ordering::Relaxed);
        self.pushed.store(pushed + 1, Ordering::Relaxed);
    }

    /// The receiver popped one message (the receiver's thread only).
    pub(crate) fn popped(&self) {
        let popped = self.popped.load(Ordering::Relaxed);
        self.popped.store(popped + 1, Ordering::Relaxed);
    }

    /// Messages waiting in the ring, as far as any thread can tell.
    pub(crate) fn queued(&self) -> u64 {
        let popped = self.popped.load(Ordering::Relaxed);
        self.pushed.load(Ordering::Relaxed).saturating_sub(popped)
    }
}
