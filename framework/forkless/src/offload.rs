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
//! CPU of the process's budget (the count `--shards max` starts:
//! `shard::cpus`, the main thread's affinity mask capped by the cgroup
//! quota). First use is usually on a shard, whose thread is pinned to one
//! CPU and whose affinity new threads inherit, so each worker first resets
//! its own affinity to every CPU of the budget: the workers spread over the
//! machine, and a heavy request can run on any CPU a shard leaves idle.
//! Jobs wait in a queue of 4,096 entries; past that, `offload` waits for
//! room, which slows the shards' heavy requests down instead of letting the
//! queue grow without bound.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use futures::channel::oneshot;

use crate::shard::cpus;

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
        // The process's budget, not this (likely pinned) thread's one CPU.
        let budget = cpus::detect_process();
        let workers = budget.max_shards();
        let mut started = 0;
        for index in 0..workers {
            let queue = queue.clone();
            let cpus = budget.cpus.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("forkless-offload-{index}"))
                .spawn(move || work(&queue, &cpus));
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

fn work(queue: &flume::Receiver<Job>, budget: &[usize]) {
    // Spawned from a pinned shard thread, this thread starts pinned to that
    // shard's CPU: widen it to the whole budget.
    if let Err(error) = cpus::set_thread_affinity(budget) {
        tracing::warn!(%error, "an offload worker stays on the CPUs it inherited");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// The CPUs of a `Cpus_allowed_list` value (`0-3,6`).
    fn parse_cpu_list(list: &str) -> Vec<usize> {
        let mut cpus = Vec::new();
        for part in list.trim().split(',').filter(|p| !p.is_empty()) {
            let (from, to) = part.split_once('-').unwrap_or((part, part));
            if let (Ok(from), Ok(to)) = (from.parse::<usize>(), to.parse::<usize>()) {
                cpus.extend(from..=to);
            }
        }
        cpus
    }

    /// The `Cpus_allowed_list` of one thread of this process.
    fn thread_cpus(tid: libc::pid_t) -> Vec<usize> {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
            .expect("read the thread's status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("a Cpus_allowed_list line");
        parse_cpu_list(line)
    }

    /// Threads of this process whose name starts like the workers' (the
    /// kernel keeps 15 bytes of a thread name).
    fn offload_threads() -> Vec<libc::pid_t> {
        let mut tids = Vec::new();
        for entry in std::fs::read_dir("/proc/self/task")
            .expect("list threads")
            .flatten()
        {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.starts_with("forkless-offloa")
                && let Some(tid) = entry.file_name().to_str().and_then(|n| n.parse().ok())
            {
                tids.push(tid);
            }
        }
        tids
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-1\n"), vec![0, 1]);
        assert_eq!(parse_cpu_list("0,2-4,7"), vec![0, 2, 3, 4, 7]);
        assert_eq!(parse_cpu_list("3"), vec![3]);
    }

    /// Started from a thread pinned to one CPU (as a shard is), the pool
    /// still has one worker per CPU of the process's budget, and each
    /// worker may run on every CPU of it. Not timed: the jobs wait for each
    /// other (bounded), which only works if that many workers exist.
    #[test]
    fn the_pool_has_a_worker_per_cpu_of_the_budget_and_spans_it() {
        let budget = cpus::detect_process();
        let shard_cpu = budget.cpus[0];
        std::thread::spawn(move || {
            cpus::set_thread_affinity(&[shard_cpu]).expect("pin the would-be shard");
            assert!(pool().is_some(), "the pool starts");
        })
        .join()
        .expect("the pinned thread starts the pool");

        let workers = budget.max_shards();
        let jobs = pool().expect("the pool is running");
        let arrived = Arc::new((Mutex::new(0usize), Condvar::new()));
        let (report, reports) = std::sync::mpsc::channel();
        for _ in 0..workers {
            let arrived = arrived.clone();
            let report = report.clone();
            let job: Job = Box::new(move || {
                let (count, all_here) = &*arrived;
                let mut count = count.lock().unwrap_or_else(|e| e.into_inner());
                *count += 1;
                all_here.notify_all();
                let deadline = Instant::now() + Duration::from_secs(10);
                while *count < workers && Instant::now() < deadline {
                    count = all_here
                        .wait_timeout(count, Duration::from_millis(50))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                // SAFETY: gettid(2) has no preconditions.
                let tid = unsafe { libc::gettid() };
                let _ = report.send((tid, *count >= workers));
            });
            jobs.send(job).expect("queue a job");
        }
        let mut tids = Vec::new();
        for _ in 0..workers {
            let (tid, together) = reports
                .recv_timeout(Duration::from_secs(30))
                .expect("every job ran");
            assert!(
                together,
                "{workers} jobs did not run at once: fewer workers"
            );
            tids.push(tid);
        }
        tids.sort_unstable();
        tids.dedup();
        assert_eq!(tids.len(), workers, "each job on a worker of its own");

        let mut threads = offload_threads();
        threads.sort_unstable();
        assert_eq!(threads, tids, "one worker per CPU of {budget:?}, no more");
        for tid in threads {
            let allowed = thread_cpus(tid);
            assert_eq!(
                allowed, budget.cpus,
                "worker {tid} may use the whole budget"
            );
            if budget.cpus.len() > 1 {
                assert_ne!(allowed, vec![shard_cpu], "not confined to the shard's CPU");
            }
        }
    }
}
