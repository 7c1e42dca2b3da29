//! Cheap clocks for hot paths that need no more than a few milliseconds of
//! precision: the stall detector times every task poll, and every response
//! carries a `date` to the second.
//!
//! The kernel's coarse clocks (`CLOCK_MONOTONIC_COARSE`,
//! `CLOCK_REALTIME_COARSE`) return the time of the last scheduler tick
//! (1 to 10 ms old) without reading the hardware counter, at a fraction of
//! the cost of `Instant::now()`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A reading of `clock`, or zero if the kernel refuses it.
fn read(clock: libc::clockid_t) -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec that outlives the call,
    // which only writes it.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Duration::ZERO;
    }
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(now.tv_nsec).unwrap_or(0);
    Duration::new(seconds, nanos)
}

/// The monotonic time, as of the last tick: at most a tick behind
/// `Instant::now()`, and never going backwards.
pub(crate) fn coarse_now() -> Instant {
    // An `Instant` and a coarse reading taken together, once; later
    // readings are placed relative to them.
    static BASE: OnceLock<(Instant, Duration)> = OnceLock::new();
    let (instant, coarse) =
        *BASE.get_or_init(|| (Instant::now(), read(libc::CLOCK_MONOTONIC_COARSE)));
    instant + read(libc::CLOCK_MONOTONIC_COARSE).saturating_sub(coarse)
}

/// Seconds since the Unix epoch, as of the last tick.
pub(crate) fn coarse_unix_seconds() -> u64 {
    read(libc::CLOCK_REALTIME_COARSE).as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn coarse_clocks_stay_within_a_tick_or_two_of_the_precise_ones() {
        let coarse = coarse_now();
        let precise = Instant::now();
        let apart =
            precise.saturating_duration_since(coarse) + coarse.saturating_duration_since(precise);
        assert!(apart < Duration::from_millis(50), "{apart:?}");
        std::thread::sleep(Duration::from_millis(30));
        assert!(coarse_now() > coarse, "the coarse clock moves");

        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        assert!(unix.abs_diff(coarse_unix_seconds()) <= 1);
    }
}
