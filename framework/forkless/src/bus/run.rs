//! Running closures on other shards (Seastar's `submit_to`) and map-reduce
//! over all of them, on top of the bus: a closure travels as a message of an
//! internal type and runs as a task of the target shard.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures::FutureExt;
use futures::channel::oneshot;

use super::RunError;
use crate::{Shard, ShardId};

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

/// A closure bound for another shard.
pub(crate) struct Job(Box<dyn FnOnce(Shard) -> LocalFuture + Send>);

/// Runs the jobs other shards send to this one; spawned on every shard.
pub(crate) async fn serve_jobs(shard: Shard) {
    let jobs = shard.bus::<Job>();
    loop {
        let envelope = jobs.recv().await;
        let Job(job) = envelope.msg;
        let future = job(shard.clone());
        // A panicking job loses its own result only (its reply is dropped).
        crate::spawn(AssertUnwindSafe(future).catch_unwind().map(drop)).detach();
    }
}

impl Shard {
    /// Runs `f` on shard `to` and returns its result (Seastar's `submit_to`).
    ///
    /// The closure is sent to `to` and its future runs there as a task, so it
    /// may use `to`'s shard-local state; only the closure and the result
    /// cross shards. `Closed` when `to` is not running, `Lost` when the
    /// closure panicked or `to` stopped before it finished.
    ///
    /// ```no_run
    /// # async fn example(shard: forkless::Shard) -> Result<(), forkless::bus::RunError> {
    /// use forkless::ShardId;
    /// let cpu = shard.run_on(ShardId::new(1), |other| async move { other.cpu() }).await?;
    /// # let _ = cpu;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_on<F, Fut, T>(&self, to: ShardId, f: F) -> Result<T, RunError>
    where
        F: FnOnce(Shard) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        if to == self.id() {
            return AssertUnwindSafe(f(self.clone()))
                .catch_unwind()
                .await
                .map_err(|_| RunError::Lost(to));
        }
        let (sender, mut receiver) = oneshot::channel();
        let job = Job(Box::new(move |shard| {
            Box::pin(async move {
                let value = f(shard).await;
                let _ = sender.send(value);
            })
        }));
        let jobs = self.bus::<Job>();
        jobs.send(to, job).await.map_err(|_| RunError::Closed(to))?;
        super::local::wait_reply(&jobs.end.mesh, to, &mut receiver, jobs.end.spin)
            .await
            .ok_or(RunError::Lost(to))
    }

    /// Runs `map` on every shard at once (this one included) and folds the
    /// results in shard order with `reduce`, starting from `init`.
    ///
    /// ```no_run
    /// # async fn example(shard: forkless::Shard) -> Result<(), forkless::bus::RunError> {
    /// let requests = shard
    ///     .map_reduce(|s| async move { s.counters().snapshot().requests }, 0, |a, b| a + b)
    ///     .await?;
    /// # let _ = requests;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn map_reduce<F, Fut, T, A>(
        &self,
        map: F,
        init: A,
        mut reduce: impl FnMut(A, T) -> A,
    ) -> Result<A, RunError>
    where
        F: FnOnce(Shard) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let runs = (0..self.count()).map(|i| self.run_on(ShardId::new(i), map.clone()));
        let results = futures::future::join_all(runs).await;
        let mut acc = init;
        for result in results {
            acc = reduce(acc, result?);
        }
        Ok(acc)
    }
}
