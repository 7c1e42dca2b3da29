//! Tasks on the current shard.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::stall::Watched;

/// A task spawned with [`spawn`]: await it for its output, or
/// [`detach`](JoinHandle::detach) it to let it run on its own. Dropping it
/// cancels the task.
#[derive(Debug)]
#[must_use = "a dropped JoinHandle cancels its task; call .detach() to let it run"]
pub struct JoinHandle<T> {
    task: glommio::Task<T>,
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
        Pin::new(&mut self.task).poll(cx)
    }
}

/// Spawns a task on the current shard; it may be `!Send`.
///
/// A panic in a spawned task takes its whole shard incarnation down: the
/// coordinator restarts the shard after a backoff (and gives up, ending the
/// process non-zero, after too many deaths; see
/// [`RestartPolicy`](crate::RestartPolicy)). Catch what a task may panic on
/// (`futures::FutureExt::catch_unwind`).
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
        task: glommio::spawn_local(Watched::new(future)),
    }
}
