//! Running closures on other shards (Seastar's `submit_to`) on top of the
//! bus: a closure travels as a message of an internal type and runs as a
//! task of the target shard, which is given its own [`Shard`].
//!
//! Contract: only the closure and its result cross shards; the future the
//! closure makes runs on the target and may use its shard-local state. A
//! panicking job loses its own result only.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures::FutureExt;
use futures::channel::oneshot;

use super::Shard;
use crate::ShardId;
use crate::bus::RunError;

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

/// A closure bound for another shard.
pub(super) struct Job(Box<dyn FnOnce(Shard) -> LocalFuture + Send>);

/// Runs the jobs other shards send to this one; spawned on every shard.
pub(super) async fn serve_jobs(shard: Shard) {
    let jobs = shard.bus::<Job>();
    loop {
        let envelope = jobs.recv().await;
        let Job(job) = envelope.msg;
        let future = job(shard.clone());
        // A panicking job loses its own result only (its reply is dropped).
        crate::spawn(AssertUnwindSafe(future).catch_unwind().map(drop)).detach();
    }
}

/// [`Shard::run_on`]: runs `f` on shard `to`, from `shard`.
pub(super) async fn run_on<F, Fut, T>(shard: &Shard, to: ShardId, f: F) -> Result<T, RunError>
where
    F: FnOnce(Shard) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    if to == shard.id() {
        return AssertUnwindSafe(f(shard.clone()))
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
    let jobs = shard.bus::<Job>();
    jobs.send(to, job).await.map_err(|_| RunError::Closed(to))?;
    jobs.wait_reply(to, &mut receiver)
        .await
        .ok_or(RunError::Lost(to))
}
