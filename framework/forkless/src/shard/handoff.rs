//! One shard's hand-off slot: how an incarnation a rolling reload replaces
//! gives its shard-local state to its successor while both run.
//!
//! Contract:
//! - One [`Handoff`] per shard, made by the coordinator and shared by every
//!   incarnation of that shard (`Arc`, the one thing here that crosses
//!   threads). It holds at most one value in flight, as `Box<dyn Any + Send>`.
//! - A successor [`ask`](Handoff::ask)s only its live predecessor, and only
//!   one that said it will hand over ([`replaced`](Handoff::replaced)); it
//!   then [`receive`](Handoff::receive)s the value, or `None` once the
//!   predecessor's thread ends ([`ended`](Handoff::ended)) or it
//!   [`withdraw`](Handoff::withdraw)s (its wait is bounded by the caller).
//! - [`hand_over`](Handoff::hand_over) succeeds once per ask, and only while
//!   the asking successor still waits: a value is never left where nobody
//!   will take it (it comes back instead), so the predecessor knows whether
//!   it still owns its state.
//! - Waiting is cross-thread (`event_listener`), cancel-safe, never blocks
//!   a thread.

use std::any::Any;
use std::sync::{Mutex, MutexGuard};

use event_listener::Event;

/// A value in flight from one incarnation to the next.
pub(crate) type State = Box<dyn Any + Send>;

/// One shard's hand-off slot; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    inner: Mutex<Inner>,
    changed: Event,
}

#[derive(Default)]
struct Inner {
    /// Incarnations whose threads run.
    running: Vec<u32>,
    /// Incarnations waiting in (or done with) `replaced`: they hand over.
    willing: Vec<u32>,
    /// A successor's request: `(successor, predecessor)`.
    asked: Option<(u32, u32)>,
    /// The value handed to this successor, not taken yet.
    handed: Option<(u32, State)>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("running", &self.running)
            .field("willing", &self.willing)
            .field("asked", &self.asked)
            .field("handed", &self.handed.as_ref().map(|(to, _)| to))
            .finish()
    }
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Incarnation `number`'s thread starts.
    pub(crate) fn started(&self, number: u32) {
        self.lock().running.push(number);
    }

    /// Incarnation `number`'s thread ended: whoever waits on it stops.
    pub(crate) fn ended(&self, number: u32) {
        let mut inner = self.lock();
        inner.running.retain(|&n| n != number);
        inner.willing.retain(|&n| n != number);
        if inner
            .asked
            .is_some_and(|(to, from)| to == number || from == number)
        {
            inner.asked = None;
        }
        if inner.handed.as_ref().is_some_and(|(to, _)| *to == number) {
            inner.handed = None;
        }
        drop(inner);
        self.changed.notify(usize::MAX);
    }

    /// Successor `me` asks `predecessor` for its state; `false` when the
    /// predecessor does not run or never said it hands over.
    pub(crate) fn ask(&self, me: u32, predecessor: u32) -> bool {
        let mut inner = self.lock();
        if !inner.running.contains(&predecessor) || !inner.willing.contains(&predecessor) {
            return false;
        }
        inner.asked = Some((me, predecessor));
        drop(inner);
        self.changed.notify(usize::MAX);
        true
    }

    /// Waits for the value handed to `me`; `None` once `predecessor` ended
    /// without handing anything over.
    pub(crate) async fn receive(&self, me: u32, predecessor: u32) -> Option<State> {
        loop {
            let listener = self.changed.listen();
            {
                let mut inner = self.lock();
                if inner.handed.as_ref().is_some_and(|(to, _)| *to == me) {
                    return inner.handed.take().map(|(_, state)| state);
                }
                if !inner.running.contains(&predecessor) {
                    return None;
                }
            }
            listener.await;
        }
    }

    /// `me` gives up waiting: the value if it was handed just now, and no
    /// hand-over succeeds after this.
    pub(crate) fn withdraw(&self, me: u32) -> Option<State> {
        let mut inner = self.lock();
        if inner.asked.is_some_and(|(to, _)| to == me) {
            inner.asked = None;
        }
        match inner.handed.take() {
            Some((to, state)) if to == me => Some(state),
            other => {
                inner.handed = other;
                None
            }
        }
    }

    /// Incarnation `me` will hand over: resolves once a successor asks it.
    pub(crate) async fn replaced(&self, me: u32) {
        {
            let mut inner = self.lock();
            if !inner.willing.contains(&me) {
                inner.willing.push(me);
            }
        }
        loop {
            let listener = self.changed.listen();
            if self.lock().asked.is_some_and(|(_, from)| from == me) {
                return;
            }
            listener.await;
        }
    }

    /// `me` hands `state` to the successor that asked it; the value comes
    /// back when none asks (any more).
    pub(crate) fn hand_over<T: Send + 'static>(&self, me: u32, state: T) -> Result<(), T> {
        let mut inner = self.lock();
        let Some((to, _)) = inner.asked.filter(|&(_, from)| from == me) else {
            return Err(state);
        };
        inner.asked = None;
        inner.willing.retain(|&n| n != me);
        inner.handed = Some((to, Box::new(state)));
        drop(inner);
        self.changed.notify(usize::MAX);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        futures::executor::block_on(future)
    }

    #[test]
    fn the_state_goes_from_the_old_incarnation_to_the_new_one() {
        let slot = Handoff::default();
        slot.started(1);
        // Not willing yet: nothing to ask.
        assert!(!slot.ask(2, 1));
        std::thread::scope(|scope| {
            let old = scope.spawn(|| {
                block_on(slot.replaced(1));
                slot.hand_over(1, 41_u32).is_ok()
            });
            while !slot.lock().willing.contains(&1) {
                std::thread::yield_now();
            }
            slot.started(2);
            assert!(slot.ask(2, 1));
            let got = block_on(slot.receive(2, 1)).expect("a value");
            assert_eq!(got.downcast_ref::<u32>(), Some(&41));
            assert!(old.join().expect("the old incarnation"));
        });
        // Once only.
        assert!(slot.hand_over(1, 0_u32).is_err());
    }

    #[test]
    fn a_predecessor_that_ends_gives_nothing() {
        let slot = Handoff::default();
        slot.started(1);
        slot.lock().willing.push(1);
        assert!(slot.ask(2, 1));
        slot.ended(1);
        assert!(block_on(slot.receive(2, 1)).is_none());
        // A successor that does not exist cannot be asked for.
        assert!(!slot.ask(3, 1));
    }

    #[test]
    fn a_withdrawn_ask_refuses_the_hand_over() {
        let slot = Handoff::default();
        slot.started(1);
        slot.lock().willing.push(1);
        assert!(slot.ask(2, 1));
        assert!(slot.withdraw(2).is_none());
        assert_eq!(slot.hand_over(1, 7_u32), Err(7));
    }
}
