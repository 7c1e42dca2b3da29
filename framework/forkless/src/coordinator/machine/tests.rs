//! The coordinator's decisions at simulated time: no threads, no sockets.

use std::time::Duration;

use super::driver::{Driver, exit_of, id, logged, settings, spawns, stops};
use super::{Action, Cause, Input, Notice};
use crate::Error;
use crate::shard::control::Exit;

const COUNTS: [usize; 3] = [1, 2, 4];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn notified(actions: &[Action<u32>], notice: Notice) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Notify(n) if *n == notice))
}

/// Every shard's incarnations (from `first` on) exit normally.
fn all_return(driver: &mut Driver, shards: usize, incarnation: u32) {
    for shard in 0..shards {
        driver.exit(shard, incarnation, Exit::Returned);
    }
}

#[test]
fn start_up_spawns_every_shard_and_announces_once_all_listen() {
    for shards in COUNTS {
        let mut driver = Driver::new(settings(shards));
        let started = driver.take();
        assert_eq!(
            spawns(&started),
            (0..shards).map(|s| (s, 1)).collect::<Vec<_>>()
        );
        for shard in 0..shards {
            driver.listen(shard, 1);
            let announced = driver.take().iter().any(|a| matches!(a, Action::Announce));
            assert_eq!(announced, shard + 1 == shards, "{shards} shards");
        }
        // Once only.
        driver.panic(0, 1);
        driver.tick();
        driver.listen(0, 2);
        assert!(!notified(&driver.take(), Notice::Ready { first: true }));
    }
}

#[test]
fn a_dead_shard_restarts_after_a_doubling_backoff() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.panic(0, 1);
        let died = driver.take();
        assert!(matches!(died[0], Action::Forget { incarnation: 1, .. }));
        assert!(
            died.iter()
                .any(|a| matches!(a, Action::StartStandIn(s) if *s == id(0)))
        );
        assert!(logged(&died, "restarting shard shard=0 backoff=10ms"));
        assert_eq!(driver.tick(), Some(ms(10)));
        let restarted = driver.take();
        assert!(matches!(
            restarted[..],
            [Action::Spawn {
                incarnation: 2,
                cause: Cause::Restart,
                ..
            }]
        ));
        driver.listen(0, 2);
        assert!(
            driver
                .take()
                .iter()
                .any(|a| matches!(a, Action::StopStandIn(_)))
        );
        driver.panic(0, 2);
        driver.take();
        assert_eq!(driver.tick(), Some(ms(20)));
        assert_eq!(spawns(&driver.take()), [(0, 3)]);
    }
}

#[test]
fn a_crash_loop_stops_the_process_with_an_error() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        for incarnation in 1..=3 {
            driver.panic(0, incarnation);
            driver.tick();
        }
        driver.take();
        driver.panic(0, 4);
        let gave_up = driver.take();
        assert!(logged(
            &gave_up,
            "crash loop: 4 deaths within 10s, last: boom"
        ));
        assert!(gave_up.iter().any(|a| matches!(a, Action::BeginStop)));
        assert!(notified(&gave_up, Notice::Stopping));
        assert_eq!(
            stops(&gave_up),
            (1..shards).map(|s| (s, 1)).collect::<Vec<_>>()
        );
        assert_eq!(exit_of(&gave_up).is_none(), shards > 1, "others finish");
        for shard in 1..shards {
            driver.exit(shard, 1, Exit::Returned);
        }
        let mut ended = gave_up;
        ended.extend(driver.take());
        let Some(Err(error)) = exit_of(&ended) else {
            panic!("no failed exit: {ended:?}");
        };
        assert!(error.to_string().contains("crash loop"), "{error}");
        assert!(!error.is_forced_shutdown());
    }
}

#[test]
fn a_reload_replaces_every_shard_one_at_a_time() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.feed(Input::Reload);
        let begun = driver.take();
        assert!(notified(&begun, Notice::Reloading));
        for shard in 0..shards {
            if shard > 0 {
                driver.exit(shard - 1, 1, Exit::Returned);
                let next = driver.take();
                assert!(matches!(next[0], Action::Forget { incarnation: 1, .. }));
                assert_eq!(spawns(&next), [(shard, 2)]);
            } else {
                assert_eq!(spawns(&begun), [(0, 2)]);
            }
            driver.listen(shard, 2);
            let listening = driver.take();
            assert_eq!(stops(&listening), [(shard, 1)]);
        }
        driver.exit(shards - 1, 1, Exit::Returned);
        let done = driver.take();
        assert!(logged(&done, "rolling reload done"));
        assert!(notified(&done, Notice::Ready { first: false }));
        // Nothing waits: no restart, no step deadline.
        assert_eq!(driver.machine.poll_timeout(), None);
    }
}

#[test]
fn a_reload_whose_new_incarnation_dies_keeps_the_old_one() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.feed(Input::Reload);
        driver.take();
        driver.panic(0, 2);
        let failed = driver.take();
        assert!(
            failed
                .iter()
                .any(|a| matches!(a, Action::Reinstate { incarnation: 1, .. }))
        );
        assert!(logged(
            &failed,
            "rolling reload stopped: its new incarnation ended before it listened: boom"
        ));
        assert!(notified(&failed, Notice::Ready { first: false }));
        assert!(stops(&failed).is_empty(), "the old one keeps serving");
        assert_eq!(driver.machine.poll_timeout(), None, "no restart");
        // A reload may start again, with the next number.
        driver.feed(Input::Reload);
        assert_eq!(spawns(&driver.take()), [(0, 3)]);
    }
}

#[test]
fn a_reload_whose_new_incarnation_is_late_keeps_the_old_one() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.feed(Input::Reload);
        driver.take();
        assert_eq!(driver.tick(), Some(Duration::from_secs(1)));
        let late = driver.take();
        assert_eq!(stops(&late), [(0, 2)]);
        assert!(logged(
            &late,
            "rolling reload stopped: its new incarnation did not listen within 1s (--upgrade-timeout)"
        ));
        // The late one finishes like a replaced incarnation: no restart.
        driver.exit(0, 2, Exit::Returned);
        let finished = driver.take();
        assert!(spawns(&finished).is_empty());
        assert!(logged(&finished, "replaced incarnation finished"));
    }
}

#[test]
fn a_reload_whose_new_incarnation_cannot_start_keeps_the_old_one() {
    let mut driver = Driver::serving(2);
    driver.feed(Input::Reload);
    driver.take();
    driver.feed(Input::SpawnFailed {
        shard: id(0),
        incarnation: 2,
        error: Error::config("no threads"),
    });
    let failed = driver.take();
    assert!(logged(&failed, "cannot start a new incarnation"));
    assert!(failed.iter().any(|a| matches!(a, Action::Reinstate { .. })));
    // The number is used again.
    driver.feed(Input::Reload);
    assert_eq!(spawns(&driver.take()), [(0, 2)]);
}

#[test]
fn a_replaced_incarnation_that_does_not_finish_in_time_is_left_behind() {
    let mut driver = Driver::serving(2);
    driver.feed(Input::Reload);
    driver.listen(0, 2);
    driver.take();
    assert_eq!(driver.tick(), Some(Duration::from_secs(5)));
    let moved_on = driver.take();
    assert!(logged(&moved_on, "the reload moves on"));
    assert_eq!(spawns(&moved_on), [(1, 2)]);
}

#[test]
fn reloads_and_upgrades_are_refused_while_one_runs_or_while_stopping() {
    let mut driver = Driver::serving(2);
    driver.feed(Input::Reload);
    driver.take();
    driver.feed(Input::Reload);
    driver.feed(Input::Upgrade);
    let refused = driver.take();
    assert!(logged(
        &refused,
        "rolling reload not started: a rolling reload is in progress"
    ));
    assert!(logged(
        &refused,
        "binary upgrade not started: a rolling reload is in progress"
    ));
    assert!(spawns(&refused).is_empty());

    let mut driver = Driver::serving(2);
    driver.feed(Input::Upgrade);
    driver.feed(Input::UpgradeStarted(42));
    driver.take();
    driver.feed(Input::Reload);
    driver.feed(Input::Upgrade);
    let refused = driver.take();
    assert!(logged(&refused, "a binary upgrade is in progress"));
    assert!(!refused.iter().any(|a| matches!(a, Action::LaunchUpgrade)));

    let mut driver = Driver::serving(2);
    driver.feed(Input::Shutdown);
    driver.take();
    driver.feed(Input::Reload);
    driver.feed(Input::Upgrade);
    let refused = driver.take();
    assert!(logged(
        &refused,
        "rolling reload not started: the process is shutting down"
    ));
    assert!(logged(
        &refused,
        "binary upgrade not started: the process is shutting down"
    ));
}

#[test]
fn a_graceful_shutdown_stops_everything_and_exits_zero() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.feed(Input::Signal(15));
        let stopping = driver.take();
        assert!(matches!(stopping[1], Action::BeginStop));
        assert!(notified(&stopping, Notice::Stopping));
        assert_eq!(
            stops(&stopping),
            (0..shards).map(|s| (s, 1)).collect::<Vec<_>>()
        );
        all_return(&mut driver, shards, 1);
        assert!(matches!(exit_of(&driver.take()), Some(Ok(()))));
    }
}

#[test]
fn a_second_signal_forces_the_exit() {
    let mut driver = Driver::serving(2);
    driver.feed(Input::Signal(15));
    driver.take();
    driver.feed(Input::Signal(2));
    let forced = driver.take();
    assert!(logged(&forced, "second signal: forcing exit"));
    let Some(Err(error)) = exit_of(&forced) else {
        panic!("no forced exit: {forced:?}");
    };
    assert!(error.is_forced_shutdown());
    // Nothing after the exit.
    driver.exit(0, 1, Exit::Returned);
    assert!(driver.take().is_empty());
    assert_eq!(driver.machine.poll_timeout(), None);
}

#[test]
fn the_shutdown_deadline_forces_the_exit() {
    let mut driver = Driver::serving(2);
    driver.at(ms(100));
    driver.feed(Input::Shutdown);
    driver.exit(0, 1, Exit::Returned);
    driver.take();
    assert_eq!(driver.tick(), Some(Duration::from_secs(5)));
    let forced = driver.take();
    assert!(logged(&forced, "shutdown deadline passed"));
    assert!(matches!(exit_of(&forced), Some(Err(e)) if e.is_forced_shutdown()));
}

#[test]
fn a_dead_shard_is_not_restarted_while_stopping() {
    let mut driver = Driver::serving(2);
    driver.feed(Input::Shutdown);
    driver.panic(0, 1);
    let died = driver.take();
    assert!(!died.iter().any(|a| matches!(a, Action::StartStandIn(_))));
    driver.exit(1, 1, Exit::Returned);
    let ended = driver.take();
    assert!(matches!(exit_of(&ended), Some(Err(e)) if e.to_string().contains("boom")));
}

#[test]
fn an_upgrade_that_fails_keeps_serving() {
    let mut driver = Driver::serving(2);
    driver.feed(Input::Upgrade);
    assert!(matches!(driver.take()[..], [Action::LaunchUpgrade]));
    driver.feed(Input::UpgradeStarted(42));
    // The watcher's timeout, or the new process's exit.
    driver.feed(Input::UpgradeFailed(
        "the new process was not ready within 1s".to_owned(),
    ));
    let failed = driver.take();
    assert!(logged(
        &failed,
        "binary upgrade failed: the new process was not ready"
    ));
    assert!(stops(&failed).is_empty());
    // A stale ready of the failed one does nothing; a new upgrade may start.
    driver.feed(Input::UpgradeReady(42));
    assert!(driver.take().is_empty());
    driver.feed(Input::Upgrade);
    assert!(matches!(driver.take()[..], [Action::LaunchUpgrade]));
}

#[test]
fn a_shutdown_during_an_upgrade_stops_the_new_process() {
    let mut driver = Driver::serving(2);
    driver.feed(Input::Upgrade);
    driver.feed(Input::UpgradeStarted(42));
    driver.feed(Input::Signal(15));
    let stopping = driver.take();
    assert!(
        stopping
            .iter()
            .any(|a| matches!(a, Action::StopUpgrade(42)))
    );
}

#[test]
fn an_upgrade_that_takes_over_drains_without_stopping_1() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.feed(Input::Upgrade);
        driver.feed(Input::UpgradeStarted(42));
        driver.feed(Input::UpgradeReady(7));
        assert!(
            driver
                .take()
                .iter()
                .all(|a| !matches!(a, Action::BeginStop))
        );
        driver.feed(Input::UpgradeReady(42));
        let handed = driver.take();
        assert!(notified(&handed, Notice::MainPid(42)));
        assert!(!notified(&handed, Notice::Stopping));
        assert!(handed.iter().any(|a| matches!(a, Action::StopAdmin)));
        assert!(handed.iter().any(|a| matches!(a, Action::BeginStop)));
        assert_eq!(stops(&handed).len(), shards);
        all_return(&mut driver, shards, 1);
        assert!(matches!(exit_of(&driver.take()), Some(Ok(()))));
    }
}

#[test]
fn orphans_go_to_listening_shards_in_turn() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.panic(0, 1);
        driver.take();
        for orphan in 0..6 {
            driver.feed(Input::Orphan {
                from: id(0),
                orphan,
            });
        }
        let adopted: Vec<(usize, u32)> = driver
            .take()
            .iter()
            .filter_map(|a| match a {
                Action::Adopt { shard, orphan, .. } => Some((shard.get(), *orphan)),
                _ => None,
            })
            .collect();
        if shards == 1 {
            // Nobody listens: they wait for the restart.
            assert!(adopted.is_empty());
            driver.tick();
            driver.listen(0, 2);
            let placed = driver.take();
            let waiting = placed
                .iter()
                .filter(|a| matches!(a, Action::Adopt { shard, .. } if shard.get() == 0))
                .count();
            assert_eq!(waiting, 6);
            continue;
        }
        let expected: Vec<(usize, u32)> = (0..6)
            .map(|orphan| (1 + orphan as usize % (shards - 1), orphan))
            .collect();
        assert_eq!(adopted, expected, "{shards} shards");
    }
}

#[test]
fn an_orphan_refused_by_an_ending_shard_goes_to_the_next() {
    let mut driver = Driver::serving(4);
    driver.panic(0, 1);
    driver.take();
    driver.feed(Input::Orphan {
        from: id(0),
        orphan: 9,
    });
    let first = driver.take();
    assert!(matches!(first[1], Action::Adopt { shard, orphan: 9, .. } if shard == id(1)));
    driver.feed(Input::AdoptRefused {
        shard: id(1),
        incarnation: 1,
        orphan: 9,
    });
    let retried = driver.take();
    assert!(matches!(retried[..], [Action::Adopt { shard, orphan: 9, .. }] if shard == id(2)));
}

#[test]
fn the_watchdog_is_withheld_while_a_shard_is_stuck() {
    let mut with_watchdog = settings(2);
    with_watchdog.watchdog = Some(Duration::from_secs(1));
    let mut driver = Driver::new(with_watchdog);
    driver.listen(0, 1);
    driver.listen(1, 1);
    driver.take();
    assert_eq!(driver.tick(), Some(Duration::from_secs(1)));
    assert!(notified(&driver.take(), Notice::Watchdog));
    driver.at(Duration::from_secs(2));
    driver.feed(Input::Timer {
        busy: vec![None, Some(Duration::from_secs(1))],
    });
    let stuck = driver.take();
    assert!(!notified(&stuck, Notice::Watchdog));
    assert!(logged(
        &stuck,
        "withholding the systemd watchdog ping shard=1"
    ));
}

#[test]
fn a_first_spawn_that_fails_ends_the_start_up() {
    let mut driver = Driver::new(settings(4));
    driver.take();
    driver.feed(Input::SpawnFailed {
        shard: id(1),
        incarnation: 1,
        error: Error::config("no threads"),
    });
    let failed = driver.take();
    assert!(matches!(failed[..], [Action::Exit(Err(_))]));
}

#[test]
fn a_restart_that_cannot_start_is_tried_again_and_counts_towards_the_crash_loop() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.panic(0, 1);
        driver.take();
        // Out of descriptors: the spawn of incarnation 2 fails, twice.
        for attempt in 0..2u64 {
            assert_eq!(driver.tick(), Some(ms(10 << attempt)));
            assert_eq!(spawns(&driver.take()), [(0, 2)]);
            driver.feed(Input::SpawnFailed {
                shard: id(0),
                incarnation: 2,
                error: crate::Error::io(
                    "cannot duplicate a listening socket",
                    std::io::Error::from_raw_os_error(libc::EMFILE),
                ),
            });
            let failed = driver.take();
            assert!(logged(&failed, "cannot restart shard"), "{failed:?}");
            assert!(exit_of(&failed).is_none(), "gave up too early: {failed:?}");
            assert!(stops(&failed).is_empty(), "the other shards keep serving");
        }
        // Descriptors are back: it serves again.
        assert_eq!(driver.tick(), Some(ms(40)));
        assert_eq!(spawns(&driver.take()), [(0, 2)]);
        driver.listen(0, 2);
        let back = driver.take();
        assert!(back.iter().any(|a| matches!(a, Action::StopStandIn(_))));
        // The failed restarts were deaths too: one more is a crash loop
        // (1 panic + 2 failed restarts + this one > 3 within the window).
        driver.panic(0, 2);
        let gave_up = driver.take();
        assert!(logged(&gave_up, "crash loop: 4 deaths"), "{gave_up:?}");
        assert!(gave_up.iter().any(|a| matches!(a, Action::BeginStop)));
    }
}
