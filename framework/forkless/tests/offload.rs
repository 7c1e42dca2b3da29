//! `forkless::offload` in a real runtime: results come back, the shard keeps
//! running while a job blocks, a panicking job panics its awaiter only, and
//! the workers run at a lower priority than the shards.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::time::Duration;

use forkless::{Config, Runtime, Shard, Shards};
use futures::FutureExt;

/// The nice value of every `forkless-offload-*` thread of this process.
fn offload_niceness() -> Vec<i64> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return found;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        // Thread names are cut to 15 bytes: "forkless-offloa".
        if !comm.starts_with("forkless-offloa") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command (which ends with ')'): nice is the 17th.
        if let Some(nice) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(16))
            .and_then(|n| n.parse().ok())
        {
            found.push(nice);
        }
    }
    found
}

#[test]
fn offloaded_work_runs_beside_a_shard_that_keeps_running() {
    let (report, reports) = mpsc::channel::<String>();
    let runtime = Runtime::new(
        Config::default()
            .shards(Shards::Count(1))
            .listen([])
            .pin(false),
    );
    let (done, outcome) = mpsc::channel();
    std::thread::spawn(move || {
        let result = runtime.run(move |_shard: Shard| {
            let report = report.clone();
            async move {
                let answer = forkless::offload(|| 6 * 7).await;
                let _ = report.send(format!("answer {answer}"));

                // A job that blocks until this shard releases it: only a
                // shard that keeps running can.
                let (release, released) = mpsc::channel::<()>();
                let job = forkless::spawn(forkless::offload(move || {
                    released.recv_timeout(Duration::from_secs(10)).is_ok()
                }));
                forkless::time::sleep(Duration::from_millis(20)).await;
                let _ = release.send(());
                let _ = report.send(format!("released {}", job.await));

                let panicked = AssertUnwindSafe(forkless::offload(|| -> u32 {
                    panic!("an offloaded job panics on purpose")
                }))
                .catch_unwind()
                .await;
                let _ = report.send(format!("panicked {}", panicked.is_err()));
                let again = forkless::offload(|| 1).await;
                let _ = report.send(format!("after the panic {again}"));
            }
        });
        let _ = done.send(result.is_ok());
    });
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match reports.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the shard stopped reporting; saw {seen:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "answer 42",
            "released true",
            "panicked true",
            "after the panic 1"
        ]
    );
    let niceness = offload_niceness();
    assert!(!niceness.is_empty(), "offload workers run");
    assert!(niceness.iter().all(|&n| n == 10), "{niceness:?}");
    assert_eq!(outcome.recv_timeout(Duration::from_secs(20)), Ok(true));
}
