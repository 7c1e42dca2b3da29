//! Time on a shard: sleeps and timeouts driven by the shard's own reactor.

use std::future::Future;
use std::time::Duration;

/// Waits for `duration` without blocking the shard.
///
/// ```no_run
/// # async fn example() {
/// forkless::time::sleep(std::time::Duration::from_millis(10)).await;
/// # }
/// ```
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs `future` for at most `duration`; `None` when the time ran out first.
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
    let sleep = std::pin::pin!(glommio::timer::sleep(duration));
    match select(future, sleep).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}
