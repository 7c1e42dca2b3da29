//! A shard-local, set-once event that any number of tasks can wait on.
//!
//! `!Send` by design: it lives on one shard and costs no atomics. Waiting is
//! cancel-safe (dropping a [`Wait`] unregisters it) and re-polling a waiter
//! replaces its waker in place, so a waiter polled on every I/O event of a
//! connection does not grow anything.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// A set-once event; cheap to clone (an `Rc`).
#[derive(Clone, Default, Debug)]
pub(crate) struct Latch {
    inner: Rc<Inner>,
}

#[derive(Default, Debug)]
struct Inner {
    set: Cell<bool>,
    waiters: RefCell<Slab<Waker>>,
}

impl Latch {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Sets the latch and wakes every waiter. Setting twice is a no-op.
    pub(crate) fn set(&self) {
        if self.inner.set.replace(true) {
            return;
        }
        let waiters = std::mem::take(&mut *self.inner.waiters.borrow_mut());
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.inner.set.get()
    }

    /// A future that resolves once the latch is set.
    pub(crate) fn wait(&self) -> Wait {
        Wait {
            inner: self.inner.clone(),
            key: None,
        }
    }
}

/// Future returned by [`Latch::wait`].
#[derive(Debug)]
pub(crate) struct Wait {
    inner: Rc<Inner>,
    key: Option<usize>,
}

impl Future for Wait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.set.get() {
            self.key = None;
            return Poll::Ready(());
        }
        let mut waiters = self.inner.waiters.borrow_mut();
        match self.key {
            Some(key) => match waiters.get_mut(key) {
                Some(waker) => waker.clone_from(cx.waker()),
                None => {
                    drop(waiters);
                    self.key = None;
                    return self.poll(cx);
                }
            },
            None => {
                let key = waiters.insert(cx.waker().clone());
                drop(waiters);
                self.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(key) = self.key.take()
            && !self.inner.set.get()
        {
            self.inner.waiters.borrow_mut().try_remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;

    #[test]
    fn wakes_waiters_once_set_and_repolls_do_not_grow() {
        let latch = Latch::new();
        let mut wait = latch.wait();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..10 {
            assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        }
        assert_eq!(latch.inner.waiters.borrow().len(), 1);
        let other = latch.wait();
        drop(other);
        latch.set();
        assert!(Pin::new(&mut wait).poll(&mut cx).is_ready());
        assert!(latch.is_set());
        assert!(Pin::new(&mut latch.wait()).poll(&mut cx).is_ready());
    }

    #[test]
    fn dropped_waiter_unregisters() {
        let latch = Latch::new();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut wait = latch.wait();
        assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        drop(wait);
        assert!(latch.inner.waiters.borrow().is_empty());
    }
}
