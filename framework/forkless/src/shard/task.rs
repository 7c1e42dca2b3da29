//! Tasks on the current shard.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::task::Waker;

use slab::Slab;

use super::crash;
use super::stall::Watched;

/// A task spawned with [`spawn`]: await it for its output, or
/// [`detach`](JoinHandle::detach) it to let it run on its own. Dropping it
/// cancels the task.
#[derive(Debug)]
#[must_use = "a dropped JoinHandle cancels its task; call .detach() to let it run"]
pub struct JoinHandle<T> {
    task: glommio::Task<Option<T>>,
}

impl<T> JoinHandle<T> {
    /// Lets the task run to completion on its own.
    pub fn detach(self) {
        self.task.detach();
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match Pin::new(&mut self.task).poll(cx) {
            Poll::Ready(Some(output)) => Poll::Ready(output),
            // The task was dropped by its incarnation's teardown (or it
            // panicked): so is whoever awaits it, in the same teardown.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// Spawns a task on the current shard; it may be `!Send`.
///
/// A panic in a spawned task takes its whole shard incarnation down, in
/// order: its connections are answered or closed, every task it holds is
/// dropped and its descriptors and memory are freed; the coordinator then
/// restarts the shard after a backoff (and gives up, ending the process
/// non-zero, after too many deaths; see
/// [`RestartPolicy`](crate::RestartPolicy)). Catch what a task may panic
/// on (`futures::FutureExt::catch_unwind`) to keep the shard.
///
/// # Panics
///
/// When called outside a shard.
///
/// ```no_run
/// # async fn example() {
/// let handle = forkless::spawn(async { 1 + 1 });
/// assert_eq!(handle.await, 2);
/// # }
/// ```
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> JoinHandle<T> {
    JoinHandle {
        task: glommio::spawn_local(Watched::new(Contained::new(future))),
    }
}

thread_local! {
    /// The wakers of this shard's live tasks, so a teardown can reach the
    /// ones waiting on something.
    static TASKS: RefCell<Slab<Option<Waker>>> = const { RefCell::new(Slab::new()) };
    /// The incarnation is ending: every task drops its future when polled.
    static ENDING: Cell<bool> = const { Cell::new(false) };
}

/// No slot in [`TASKS`] yet.
const UNREGISTERED: usize = usize::MAX;

pin_project_lite::pin_project! {
    /// A task's future under `catch_unwind`, which the incarnation's
    /// teardown can drop (see `crash.rs`). Completes with `None` when it
    /// was dropped that way.
    pub(crate) struct Contained<F> {
        #[pin]
        inner: Option<F>,
        slot: usize,
        panicked: bool,
    }

    impl<F> PinnedDrop for Contained<F> {
        fn drop(this: Pin<&mut Self>) {
            let slot = *this.project().slot;
            unregister(slot);
        }
    }
}

impl<F> Contained<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self {
            inner: Some(inner),
            slot: UNREGISTERED,
            panicked: false,
        }
    }
}

fn unregister(slot: usize) {
    if slot != UNREGISTERED {
        // `try_with`: the thread may be tearing its locals down.
        let _ = TASKS.try_with(|tasks| tasks.borrow_mut().try_remove(slot));
    }
}

impl<F: Future> Future for Contained<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if ENDING.with(Cell::get) {
            // Dropping it may run code that panics: that ends nothing more.
            let mut inner = this.inner;
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| inner.set(None)));
            unregister(std::mem::replace(this.slot, UNREGISTERED));
            return Poll::Ready(None);
        }
        TASKS.with(|tasks| {
            let mut tasks = tasks.borrow_mut();
            match tasks.get_mut(*this.slot) {
                Some(Some(waker)) if waker.will_wake(cx.waker()) => {}
                Some(slot) => *slot = Some(cx.waker().clone()),
                None => *this.slot = tasks.insert(Some(cx.waker().clone())),
            }
        });
        if *this.panicked {
            // It stays, never polled again, until the teardown drops it.
            return Poll::Pending;
        }
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => {
                this.inner.set(None);
                unregister(std::mem::replace(this.slot, UNREGISTERED));
                Poll::Ready(Some(output))
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                *this.panicked = true;
                crash::record(crate::panic::message(payload.as_ref()));
                Poll::Pending
            }
        }
    }
}

/// Ends every task of this shard: each is woken and drops its future when
/// polled (closing the sockets it held). Called by the shard thread as its
/// incarnation ends; returns once none is left, or after `turns` turns of
/// the executor.
pub(crate) async fn drop_every_task(turns: usize) {
    ENDING.with(|ending| ending.set(true));
    for _ in 0..turns {
        let wakers: Vec<Waker> = TASKS.with(|tasks| {
            tasks
                .borrow_mut()
                .iter_mut()
                .filter_map(|(_, waker)| waker.take())
                .collect()
        });
        if wakers.is_empty() && TASKS.with(|tasks| tasks.borrow().is_empty()) {
            return;
        }
        wakers.into_iter().for_each(Waker::wake);
        // A turn of the executor: the woken tasks run meanwhile.
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}
