//! CPU-heavy and blocking work, off the shards.
//!
//! A shard runs every connection it holds on one thread: a request that
//! computes for 5 ms holds up every other request of that shard for 5 ms
//! (the stall detector reports it). [`offload`] runs such work on a small
//! pool of worker threads instead and lets the shard serve on while it runs;
//! the request that asked for it awaits the result.
//!
//! The workers run at a lower scheduling priority (nice 10) than the shards:
//! when a shard and a worker want the same CPU, the shard gets it at once
//! and most of the time, so light requests keep their latency while heavy
//! ones share what is left (about a tenth of a busy CPU, all of an idle one).
//! This is what a thread-per-core server needs where a work-stealing runtime
//! would move the other requests to another thread: they cannot move, so
//! the heavy work does.
//!
//! There is one pool per process, started on first use, with one worker per
//! CPU the process may use. Jobs wait in a queue of 4,096 entries; past
//! that, `offload` waits for room, which slows the shards' heavy requests
//! down instead of letting the queue grow without bound.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use futures::channel::oneshot;

/// Jobs that may wait for a worker before `offload` waits for room.
const QUEUE: usize = 4096;

/// How much lower the workers' priority is than the shards' (nice value).
const NICENESS: libc::c_int = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Runs `work` on the offload pool and resolves to what it returns; see the
/// module docs. A panic in `work` resumes in the awaiting task (in a request
/// handler: a `500` for that request, as any handler panic).
///
/// `work` runs on another thread, so it and its result must be `Send`; it
/// cannot touch the shard's `!Send` state. Use it for computation (hashing,
/// compression, image work, a big JSON document) and for blocking calls of
/// libraries without async support.
///
/// ```no_run
/// use forkless::prelude::*;
///
/// #[shard_main]
/// async fn main(shard: Shard) -> Result<(), forkless::Error> {
///     shard
///         .serve(|_request: Request| async {
///             // ~5 ms of CPU, while this shard keeps answering others.
///             let digest = forkless::offload(|| {
///                 (0..2_000_000u64).fold(0u64, |h, i| h.rotate_left(5) ^ i)
///             })
///             .await;
///             format!("{digest:x}\n")
///         })
///         .await
/// }
/// ```
pub async fn offload<F, R>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (done, result) = oneshot::channel::<Result<R, Box<dyn Any + Send>>>();
    let job: Job = Box::new(move || {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(work));
        // The asker may have gone (its request was cancelled): nothing to do.
        let _ = done.send(outcome);
    });
    match pool() {
        Some(jobs) => {
            // The pool's receiving side lives in a static, so sending only
            // fails if it is gone, which it never is: run it here then.
            if let Err(flume::SendError(job)) = jobs.send_async(job).await {
                job();
            }
        }
        None => run_alone(job),
    }
    match result.await {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // Only if a worker thread died outside the job's guard.
        Err(oneshot::Canceled) => panic!("an offload worker ended before finishing the job"),
    }
}

/// The queue of the process's offload pool, starting its workers on first
/// use; `None` when no worker could start.
fn pool() -> Option<&'static flume::Sender<Job>> {
    static POOL: OnceLock<(flume::Sender<Job>, flume::Receiver<Job>, usize)> = OnceLock::new();
    let (jobs, _, workers) = POOL.get_or_init(|| {
        let (jobs, queue) = flume::bounded::<Job>(QUEUE);
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let mut started = 0;
        for index in 0..workers {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("forkless-offload-{index}"))
                .spawn(move || work(&queue));
            match spawned {
                Ok(_) => started += 1,
                Err(error) => tracing::warn!(%error, "cannot start an offload worker"),
            }
        }
        if started == 0 {
            tracing::error!("no offload worker could start; each job gets a thread of its own");
        }
        (jobs, queue, started)
    });
    (*workers > 0).then_some(jobs)
}

/// Without a pool: a thread for this one job, or (failing that too) here.
fn run_alone(job: Job) {
    let job = std::sync::Arc::new(std::sync::Mutex::new(Some(job)));
    let spawned = std::thread::Builder::new()
        .name("forkless-offload".into())
        .spawn({
            let job = job.clone();
            move || take(&job).map(|job| job())
        });
    if spawned.is_err()
        && let Some(job) = take(&job)
    {
        job();
    }
}

fn take(job: &std::sync::Mutex<Option<Job>>) -> Option<Job> {
    job.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

fn work(queue: &flume::Receiver<Job>) {
    // SAFETY: setpriority on this thread (a Linux thread id is a valid
    // PRIO_PROCESS target and names only this thread).
    let lowered =
        unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICENESS) };
    if lowered != 0 {
        tracing::debug!("offload worker runs at normal priority (setpriority failed)");
    }
    while let Ok(job) = queue.recv() {
        job();
    }
}
