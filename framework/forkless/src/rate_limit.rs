//! A log line that may repeat many times a second (an accept that fails
//! while descriptors run out) goes out at most once a second, with a count
//! of the ones held back.
//!
//! Contract: pure (the caller passes `now`); one [`RateLimited`] per source
//! of lines, owned by the thread or shard that logs them, so no lock.

use std::time::{Duration, Instant};

/// Lines held back for at least this long after one goes out.
const EVERY: Duration = Duration::from_secs(1);

/// At most one log line per second, counting what it held back.
#[derive(Debug, Default)]
pub(crate) struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// `Some(lines held back since the last one)` when a line may go out now.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_held_back() {
        let start = Instant::now();
        let mut limit = RateLimited::default();
        assert_eq!(limit.allow(start), Some(0));
        for ms in [1, 20, 500, 999] {
            assert_eq!(limit.allow(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(limit.allow(start + Duration::from_millis(1000)), Some(4));
        assert_eq!(limit.allow(start + Duration::from_millis(1001)), None);
        assert_eq!(limit.allow(start + Duration::from_millis(3000)), Some(1));
        assert_eq!(limit.allow(start + Duration::from_millis(4500)), Some(0));
    }
}
