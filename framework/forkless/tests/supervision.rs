//! Supervision in a real runtime: a shard that dies is restarted on its
//! CPU, its bus inbox works for the new incarnation, and subscribers see
//! the lifecycle events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use forkless::{Config, Coordinator, ExitReason, LifecycleKind, Runtime, Shard, ShardId, Shards};

#[test]
fn a_dead_shard_is_restarted_and_its_inbox_works_again() {
    for shards in [2, 4] {
        let died_once = Arc::new(AtomicBool::new(false));
        let (report, reports) = mpsc::channel();
        let events_seen = mpsc::channel();
        let (events_tx, events_rx) = events_seen;
        let runtime = Runtime::new(
            Config::default()
                .shards(Shards::Count(shards))
                .listen([])
                .pin(false),
        )
        .coordinator(move |coordinator: Coordinator| {
            let events = coordinator.events();
            while let Some(event) = events.recv_timeout(Duration::from_secs(20)) {
                let done = matches!(event.kind, LifecycleKind::Exit(ExitReason::Returned))
                    && event.shard == ShardId::new(0);
                let _ = events_tx.send(event);
                if done {
                    coordinator.shutdown();
                    return;
                }
            }
        });
        let (done, outcome) = mpsc::channel();
        std::thread::spawn(move || {
            let result = runtime.run(move |shard: Shard| {
                let died_once = died_once.clone();
                let report = report.clone();
                async move {
                    let bus = shard.bus_with_reply::<u32, u32>();
                    if shard.id() == ShardId::new(1) {
                        if !died_once.swap(true, Ordering::SeqCst) {
                            forkless::spawn(async { panic!("first incarnation dies") }).detach();
                            std::future::pending::<()>().await;
                        }
                        let envelope = bus.recv().await;
                        let n = envelope.msg;
                        envelope.reply(n + 1);
                        shard.stopping().await;
                    } else if shard.id() == ShardId::new(0) {
                        // Retry until the second incarnation answers.
                        let answer = loop {
                            match bus.call(ShardId::new(1), 41).await {
                                Ok(answer) => break answer,
                                Err(_) => forkless::time::sleep(Duration::from_millis(5)).await,
                            }
                        };
                        report.send(answer).expect("report");
                    } else {
                        shard.stopping().await;
                    }
                }
            });
            let _ = done.send(result);
        });
        outcome
            .recv_timeout(Duration::from_secs(20))
            .expect("the runtime ended")
            .expect("a clean run");
        assert_eq!(reports.recv().expect("shard 0 reported"), 42);

        let events: Vec<_> = events_rx
            .try_iter()
            .filter(|e| e.shard == ShardId::new(1))
            .collect();
        let kinds: Vec<(u32, String)> = events
            .iter()
            .map(|e| (e.incarnation, e.kind.to_string()))
            .collect();
        let position = |incarnation: u32, prefix: &str| {
            kinds
                .iter()
                .position(|(i, k)| *i == incarnation && k.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} of incarnation {incarnation} in {kinds:?}"))
        };
        assert!(position(1, "exit (panicked: first incarnation dies") < position(2, "fork"));
        assert!(position(2, "fork") < position(2, "online"));
    }
}
