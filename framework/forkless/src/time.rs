//! Time on a shard: sleeps and timeouts driven by the shard's own timer.
//!
//! The futures here are `Send` (each sleep is a deadline in the shard's
//! timer queue, see `shard/timer.rs`), so they also work where a `Send`
//! future is required, such as inside an axum handler or a tower layer
//! served with [`Shard::serve_tower`](crate::Shard::serve_tower). They must
//! be created on a shard: a sleep made on any other thread panics.
//!
//! tokio's timers (`tokio::time::sleep`) work on a shard too with the cargo
//! feature `tokio` (on with `axum`), through the helper threads of one
//! tokio runtime; without the feature they panic there. The timers here
//! cost no thread hop and stay the cheaper choice in code written for
//! forkless.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::shard::timer::ShardSleep;

/// Waits for `duration` without blocking the shard.
///
/// # Panics
///
/// When called outside a shard.
///
/// ```no_run
/// # async fn example() {
/// forkless::time::sleep(std::time::Duration::from_millis(10)).await;
/// # }
/// ```
pub async fn sleep(duration: Duration) {
    on_shard(duration).await;
}

/// Runs `future` for at most `duration`; `None` when the time ran out first.
///
/// # Panics
///
/// When called outside a shard.
///
/// ```no_run
/// # async fn example() {
/// use std::time::Duration;
/// let answer = forkless::time::timeout(Duration::from_secs(1), async { 42 }).await;
/// assert_eq!(answer, Some(42));
/// # }
/// ```
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Option<F::Output> {
    use futures::future::{Either, select};
    let future = std::pin::pin!(future);
    match select(future, on_shard(duration)).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

fn on_shard(duration: Duration) -> ShardSleep {
    let deadline = Instant::now()
        .checked_add(duration)
        .unwrap_or_else(far_future);
    ShardSleep::on_shard(deadline).unwrap_or_else(|| {
        panic!("forkless::time needs a shard: call it from code running on a forkless shard")
    })
}

/// A deadline nobody waits for (about 30 years away).
pub(crate) fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(86_400 * 365 * 30))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "forkless::time needs a shard")]
    fn a_sleep_off_a_shard_panics_rather_than_hangs() {
        futures::executor::block_on(sleep(Duration::from_millis(1)));
    }

    #[test]
    fn sleeps_and_timeouts_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&sleep(Duration::ZERO));
        assert_send(&timeout(Duration::ZERO, async { 1 }));
    }
}
