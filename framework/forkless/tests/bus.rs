//! The bus in a real runtime, at 1, 2 and 4 shards (unpinned, so 4 shards
//! share this machine's cores).

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use forkless::bus::{CallError, Origin, RunError, TrySendError};
use forkless::{Config, Coordinator, Error, RestartPolicy, Runtime, Shard, ShardId, Shards};

const SHARD_COUNTS: [usize; 3] = [1, 2, 4];

fn config(shards: usize) -> Config {
    Config::default()
        .shards(Shards::Count(shards))
        .listen([])
        .pin(false)
}

/// Runs `runtime` with `shard_fn` on another thread; fails the test instead
/// of hanging when it does not end within 20 s.
fn run_bounded<F, Fut>(runtime: Runtime, shard_fn: F) -> Result<(), Error>
where
    F: Fn(Shard) -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (done, outcome) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(runtime.run(shard_fn));
    });
    outcome
        .recv_timeout(Duration::from_secs(20))
        .expect("the runtime ended within 20 s")
}

#[test]
fn messages_from_one_sender_arrive_in_order_under_concurrent_senders() {
    const PER_PAIR: u64 = 2_000;
    for shards in SHARD_COUNTS {
        let (report, reports) = mpsc::channel();
        run_bounded(
            Runtime::new(config(shards).bus_capacity(64)),
            move |shard: Shard| {
                let report = report.clone();
                async move {
                    let bus = shard.bus::<(usize, u64)>();
                    let me = shard.id().get();
                    let sender = {
                        let bus = bus.clone();
                        let count = shard.count();
                        forkless::spawn(async move {
                            for seq in 0..PER_PAIR {
                                for to in 0..count {
                                    bus.send(ShardId::new(to), (me, seq))
                                        .await
                                        .expect("running");
                                }
                            }
                        })
                    };
                    let mut next = vec![0u64; shard.count()];
                    for _ in 0..PER_PAIR * shard.count() as u64 {
                        let envelope = bus.recv().await;
                        let (from, seq) = envelope.msg;
                        assert_eq!(envelope.from, Origin::Shard(ShardId::new(from)));
                        assert_eq!(seq, next[from], "out of order from shard {from}");
                        next[from] += 1;
                    }
                    sender.await;
                    report.send((me, next)).expect("report");
                }
            },
        )
        .expect("ran");
        let reports: HashMap<usize, Vec<u64>> = reports.try_iter().collect();
        assert_eq!(reports.len(), shards);
        for received in reports.values() {
            assert!(received.iter().all(|&n| n == PER_PAIR));
        }
    }
}

#[test]
fn try_send_reports_full_with_the_message_and_send_waits_for_room() {
    for shards in SHARD_COUNTS {
        let (report, reports) = mpsc::channel();
        run_bounded(
            Runtime::new(config(shards).bus_capacity(4)),
            move |shard: Shard| {
                let report = report.clone();
                async move {
                    let bus = shard.bus::<u32>();
                    let last = ShardId::new(shard.count() - 1);
                    let gate = shard.bus::<&'static str>();
                    let receiver = (shard.id() == last).then(|| {
                        let (bus, gate) = (bus.clone(), gate.clone());
                        forkless::spawn(async move {
                            let _ = gate.recv().await;
                            for expected in 0..5 {
                                assert_eq!(bus.recv().await.msg, expected);
                            }
                        })
                    });
                    if shard.id() == ShardId::new(0) {
                        for n in 0..4 {
                            bus.try_send(last, n).expect("room for four");
                        }
                        match bus.try_send(last, 4) {
                            Err(TrySendError::Full(n)) => report.send(n).expect("report"),
                            other => panic!("expected Full(4), got {other:?}"),
                        }
                        // `send` waits until the receiver makes room.
                        let sent = forkless::spawn({
                            let bus = bus.clone();
                            async move { bus.send(last, 4).await }
                        });
                        gate.send(last, "drain").await.expect("gate");
                        sent.await.expect("sent after the receiver drained");
                    }
                    if let Some(receiver) = receiver {
                        receiver.await;
                    }
                }
            },
        )
        .expect("ran");
        assert_eq!(reports.try_iter().collect::<Vec<_>>(), vec![4]);
    }
}

#[test]
fn broadcast_reaches_every_other_shard_exactly_once() {
    for shards in SHARD_COUNTS {
        let (report, reports) = mpsc::channel();
        run_bounded(Runtime::new(config(shards)), move |shard: Shard| {
            let report = report.clone();
            async move {
                let bus = shard.bus::<usize>();
                bus.broadcast(shard.id().get()).await.expect("all running");
                let mut seen = Vec::new();
                for _ in 1..shard.count() {
                    seen.push(bus.recv().await.msg);
                }
                // Nothing more arrives: a second copy would be a duplicate.
                forkless::time::sleep(Duration::from_millis(50)).await;
                assert!(bus.try_recv().is_none(), "a duplicate arrived");
                seen.sort_unstable();
                report.send((shard.id().get(), seen)).expect("report");
            }
        })
        .expect("ran");
        let reports: HashMap<usize, Vec<usize>> = reports.try_iter().collect();
        assert_eq!(reports.len(), shards);
        for (me, seen) in reports {
            let others: Vec<usize> = (0..shards).filter(|&s| s != me).collect();
            assert_eq!(seen, others, "shard {me}");
        }
    }
}

/// Serves `(u64) -> u64` calls on this shard until `stop` arrives.
async fn serve_doubling(shard: Shard) {
    let bus = shard.bus_with_reply::<u64, u64>();
    loop {
        let envelope = bus.recv().await;
        if envelope.msg == u64::MAX {
            return;
        }
        let n = envelope.msg;
        envelope.reply(n * 2 + shard.id().get() as u64);
    }
}

#[test]
fn call_reaches_each_shard_and_run_on_returns_the_value() {
    // Also with `bus_spin`: receives and reply waits that poll in place first.
    let cases = SHARD_COUNTS.into_iter().flat_map(|shards| {
        [
            (shards, Duration::ZERO),
            (shards, Duration::from_micros(20)),
        ]
    });
    for (shards, spin) in cases {
        let (report, reports) = mpsc::channel();
        run_bounded(
            Runtime::new(config(shards).bus_spin(spin)),
            move |shard: Shard| {
                let report = report.clone();
                async move {
                    let server = forkless::spawn(serve_doubling(shard.clone()));
                    if shard.id() == ShardId::new(0) {
                        let bus = shard.bus_with_reply::<u64, u64>();
                        let mut answers = Vec::new();
                        for to in 0..shard.count() {
                            answers.push(bus.call(ShardId::new(to), 10).await.expect("a reply"));
                        }
                        let mut ids = Vec::new();
                        for to in 0..shard.count() {
                            let id = shard
                                .run_on(ShardId::new(to), |there| async move { there.id().get() })
                                .await
                                .expect("ran there");
                            ids.push(id);
                        }
                        let total = shard
                            .map_reduce(|s| async move { s.id().get() + 1 }, 0, |a, b| a + b)
                            .await
                            .expect("ran everywhere");
                        report.send((answers, ids, total)).expect("report");
                        for to in 0..shard.count() {
                            let _ = bus.send(ShardId::new(to), u64::MAX).await;
                        }
                    }
                    server.await;
                }
            },
        )
        .expect("ran");
        let (answers, ids, total) = reports.recv().expect("shard 0 reported");
        let expected: Vec<u64> = (0..shards as u64).map(|id| 20 + id).collect();
        assert_eq!(answers, expected);
        assert_eq!(ids, (0..shards).collect::<Vec<_>>());
        assert_eq!(total, shards * (shards + 1) / 2);
    }
}

#[test]
fn a_panicking_closure_or_handler_gives_an_error_not_a_hang() {
    for shards in SHARD_COUNTS {
        let (report, reports) = mpsc::channel();
        run_bounded(Runtime::new(config(shards)), move |shard: Shard| {
            let report = report.clone();
            async move {
                let last = ShardId::new(shard.count() - 1);
                let server = forkless::spawn({
                    let shard = shard.clone();
                    async move {
                        // A handler that drops the request (as a caught panic does).
                        let bus = shard.bus_with_reply::<u8, u8>();
                        let envelope = bus.recv().await;
                        drop(envelope);
                    }
                });
                if shard.id() == ShardId::new(0) {
                    let lost = shard
                        .run_on(last, |_| async move {
                            panic!("this closure panics on purpose");
                        })
                        .await;
                    let unanswered = shard.bus_with_reply::<u8, u8>().call(last, 1).await;
                    report
                        .send((lost, matches!(unanswered, Err(CallError::NoReply))))
                        .expect("report");
                }
                if shard.id() == last {
                    server.await;
                }
            }
        })
        .expect("ran");
        let (lost, no_reply) = reports.recv().expect("reported");
        assert_eq!(lost, Err::<(), _>(RunError::Lost(ShardId::new(shards - 1))));
        assert!(no_reply);
    }
}

#[test]
fn a_call_to_a_shard_that_dies_returns_no_reply() {
    for shards in [2, 4] {
        let (report, reports) = mpsc::channel();
        // No restarts: the first death stops the runtime with an error.
        let no_restarts = RestartPolicy {
            max_restarts: 0,
            ..RestartPolicy::default()
        };
        let runtime = Runtime::new(config(shards).restart_policy(no_restarts));
        let outcome = run_bounded(runtime, move |shard: Shard| {
            let report = report.clone();
            async move {
                let bus = shard.bus_with_reply::<u8, u8>();
                if shard.id() == ShardId::new(1) {
                    let _request = bus.recv().await;
                    // Outside any guard: this takes the whole shard down.
                    panic!("shard 1 dies on purpose");
                }
                if shard.id() == ShardId::new(0) {
                    let answer = bus.call(ShardId::new(1), 7).await;
                    report.send(answer.map(|_| ())).expect("report");
                    // Once its thread is gone, sends fail with the message back.
                    let mut closed = false;
                    for _ in 0..2000 {
                        if let Err(TrySendError::Closed(8)) = bus.try_send(ShardId::new(1), 8) {
                            closed = true;
                            break;
                        }
                        forkless::time::sleep(Duration::from_millis(1)).await;
                    }
                    report
                        .send(if closed {
                            Err(CallError::NoReply)
                        } else {
                            Ok(())
                        })
                        .expect("report");
                }
            }
        })
        .expect_err("a shard failed");
        assert!(outcome.to_string().contains("shard 1"), "{outcome}");
        assert_eq!(
            reports.recv().expect("call result"),
            Err(CallError::NoReply)
        );
        assert_eq!(
            reports.recv().expect("send result"),
            Err(CallError::NoReply)
        );
    }
}

#[test]
fn the_coordinator_and_shards_message_each_other() {
    for shards in SHARD_COUNTS {
        let (report, reports) = mpsc::channel();
        let runtime = Runtime::new(config(shards)).coordinator(move |coordinator: Coordinator| {
            let hellos = coordinator.bus::<String>();
            let mut heard = Vec::new();
            for _ in 0..coordinator.count() {
                let envelope = hellos.recv().expect("a hello");
                heard.push((envelope.from, envelope.msg));
            }
            let calls = coordinator.bus_with_reply::<u64, u64>();
            let answers: Vec<u64> = (0..coordinator.count())
                .map(|to| calls.call(ShardId::new(to), 1).expect("a reply"))
                .collect();
            report.send((heard, answers)).expect("report");
            coordinator.shutdown();
        });
        run_bounded(runtime, |shard: Shard| async move {
            let hello = format!("hello from {}", shard.id());
            shard
                .bus::<String>()
                .to_coordinator(hello)
                .await
                .expect("sent");
            let calls = shard.bus_with_reply::<u64, u64>();
            let envelope = calls.recv().await;
            assert_eq!(envelope.from, Origin::Coordinator);
            let n = envelope.msg;
            envelope.reply(n + shard.id().get() as u64);
            shard.stopping().await;
        })
        .expect("ran");
        let (mut heard, answers) = reports.recv().expect("the coordinator reported");
        heard.sort_by_key(|(from, _)| format!("{from:?}"));
        assert_eq!(heard.len(), shards);
        for (i, (from, msg)) in heard.iter().enumerate() {
            assert_eq!(*from, Origin::Shard(ShardId::new(i)));
            assert_eq!(msg, &format!("hello from {i}"));
        }
        assert_eq!(answers, (1..=shards as u64).collect::<Vec<_>>());
    }
}

/// What became of a send that waited for room when its receiver stopped.
#[derive(Debug, PartialEq, Eq)]
enum Waited {
    /// It failed with the message back.
    Closed(u32),
    /// It reached the receiver's next incarnation.
    Delivered,
}

#[test]
fn a_send_waiting_for_room_fails_when_its_receiver_stops() {
    for shards in [2, 4] {
        let (report, reports) = mpsc::channel();
        run_bounded(
            Runtime::new(config(shards).bus_capacity(2)),
            move |shard: Shard| {
                let report = report.clone();
                async move {
                    let bus = shard.bus::<u32>();
                    let stop = shard.bus::<()>();
                    let target = ShardId::new(1);
                    if shard.id() == target {
                        // Never takes a `u32`: its ring from shard 0 stays full.
                        let _ = stop.recv().await;
                        return;
                    }
                    if shard.id() != ShardId::new(0) {
                        return;
                    }
                    let mut n = 0;
                    while bus.try_send(target, n).is_ok() {
                        n += 1;
                    }
                    let waiting = forkless::spawn({
                        let bus = bus.clone();
                        async move { bus.send(target, 100).await }
                    });
                    // Let the send park on the full ring, then stop shard 1.
                    forkless::time::sleep(Duration::from_millis(20)).await;
                    stop.send(target, ()).await.expect("shard 1 runs");
                    let outcome = match waiting.await {
                        Ok(()) => Waited::Delivered,
                        Err(e) => Waited::Closed(e.into_inner()),
                    };
                    report.send((n, outcome)).expect("report");
                }
            },
        )
        .expect("ran");
        assert_eq!(
            reports.recv().expect("shard 0 reported"),
            (2, Waited::Closed(100)),
            "{shards} shards: the ring held two, and the waiting send got its message back"
        );
    }
}

#[test]
fn a_send_waiting_for_room_ends_when_its_receiver_restarts() {
    for shards in [2, 4] {
        let (report, reports) = mpsc::channel();
        let restarts = RestartPolicy {
            backoff_start: Duration::from_millis(5),
            ..RestartPolicy::default()
        };
        let runtime = Runtime::new(config(shards).bus_capacity(2).restart_policy(restarts));
        run_bounded(runtime, move |shard: Shard| {
            let report = report.clone();
            async move {
                let bus = shard.bus::<u32>();
                let crash = shard.bus::<()>();
                let target = ShardId::new(1);
                if shard.id() == target {
                    if shard.incarnation() == 1 {
                        // Never takes a `u32` before it dies.
                        let _ = crash.recv().await;
                        panic!("shard 1 dies on purpose");
                    }
                    // The next incarnation takes what reaches it, then ends.
                    let _ = report.send(Err(bus.recv().await.msg));
                    return;
                }
                if shard.id() != ShardId::new(0) {
                    return;
                }
                while bus.try_send(target, 0).is_ok() {}
                let waiting = forkless::spawn({
                    let bus = bus.clone();
                    async move { bus.send(target, 100).await }
                });
                forkless::time::sleep(Duration::from_millis(20)).await;
                crash.send(target, ()).await.expect("shard 1 runs");
                let outcome = match waiting.await {
                    Ok(()) => Waited::Delivered,
                    Err(e) => Waited::Closed(e.into_inner()),
                };
                let closed = matches!(outcome, Waited::Closed(_));
                let _ = report.send(Ok(outcome));
                // Failed while shard 1 was down: send again once it is back.
                let mut again = 100;
                if closed {
                    loop {
                        match bus.send(target, again).await {
                            Ok(()) => break,
                            Err(e) => again = e.into_inner(),
                        }
                        forkless::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
        })
        .expect("ran: a restarted shard is not a failure");
        let (outcomes, received): (Vec<_>, Vec<_>) = reports.try_iter().partition(Result::is_ok);
        assert!(
            matches!(outcomes[..], [Ok(Waited::Closed(100) | Waited::Delivered)]),
            "{shards} shards: {outcomes:?}"
        );
        assert_eq!(
            received,
            [Err(100)],
            "{shards} shards: the next incarnation got the message, not what the dead one held"
        );
    }
}
