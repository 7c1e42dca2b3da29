//! The shutdown barrier at simulated time: drained incarnations keep
//! serving the bus until every shard has drained; replaced ones are let go
//! at once.

use std::time::Duration;

use super::Input;
use super::driver::{Driver, exit_of, releases, stops};
use crate::shard::control::Exit;

const COUNTS: [usize; 3] = [1, 2, 4];

#[test]
fn drained_shards_are_released_together_once_every_shard_drained() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.feed(Input::Shutdown);
        assert_eq!(stops(&driver.take()).len(), shards);
        // All but the last drain: nobody is released, nobody exits.
        for shard in 0..shards - 1 {
            driver.drained(shard, 1);
            let held = driver.take();
            assert!(releases(&held).is_empty(), "{shards} shards: {held:?}");
            assert!(exit_of(&held).is_none());
        }
        driver.drained(shards - 1, 1);
        let released = driver.take();
        let all: Vec<_> = (0..shards).map(|s| (s, 1)).collect();
        assert_eq!(releases(&released), all, "{shards} shards");
        assert!(exit_of(&released).is_none(), "they have not exited yet");
        // Drained twice, or again after its release: nothing new.
        driver.drained(0, 1);
        assert!(releases(&driver.take()).is_empty());
        for shard in 0..shards {
            driver.exit(shard, 1, Exit::Returned);
        }
        assert!(matches!(exit_of(&driver.take()), Some(Ok(()))));
    }
}

#[test]
fn a_shard_that_exited_does_not_hold_the_barrier() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.feed(Input::Shutdown);
        driver.take();
        // Shard 0 dies (or returns without draining); the others drain.
        driver.panic(0, 1);
        for shard in 1..shards {
            driver.drained(shard, 1);
        }
        let released = driver.take();
        let rest: Vec<_> = (1..shards).map(|s| (s, 1)).collect();
        assert_eq!(releases(&released), rest, "{shards} shards");
    }
}

#[test]
fn the_deadline_forces_the_exit_while_a_shard_has_not_drained() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.feed(Input::Shutdown);
        for shard in 1..shards {
            driver.drained(shard, 1);
        }
        let held = driver.take();
        assert!(releases(&held).is_empty(), "shard 0 still drains");
        assert_eq!(driver.tick(), Some(Duration::from_secs(5)));
        let forced = driver.take();
        assert!(matches!(exit_of(&forced), Some(Err(e)) if e.is_forced_shutdown()));
        assert!(releases(&forced).is_empty());
    }
}

#[test]
fn a_replaced_incarnation_is_released_as_soon_as_it_drains() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.feed(Input::Reload);
        driver.take();
        driver.listen(0, 2);
        assert_eq!(stops(&driver.take()), [(0, 1)]);
        driver.drained(0, 1);
        assert_eq!(releases(&driver.take()), [(0, 1)], "{shards} shards");
        driver.exit(0, 1, Exit::Returned);
        let next = driver.take();
        assert_eq!(super::driver::spawns(&next).len(), usize::from(shards > 1));
    }
}

#[test]
fn a_shutdown_during_a_reload_holds_the_replaced_one_too() {
    for shards in COUNTS {
        let mut driver = Driver::serving(shards);
        driver.feed(Input::Reload);
        driver.listen(0, 2);
        driver.feed(Input::Shutdown);
        driver.take();
        // The replaced incarnation 1 and every current one must drain.
        driver.drained(0, 1);
        assert!(releases(&driver.take()).is_empty(), "{shards} shards");
        driver.drained(0, 2);
        for shard in 1..shards {
            driver.drained(shard, 1);
        }
        let mut released = releases(&driver.take());
        released.sort_unstable();
        let mut all: Vec<_> = (1..shards).map(|s| (s, 1)).collect();
        all.extend([(0, 1), (0, 2)]);
        all.sort_unstable();
        assert_eq!(released, all, "{shards} shards");
    }
}
