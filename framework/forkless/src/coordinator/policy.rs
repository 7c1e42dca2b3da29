//! When to restart a shard that died: a pure state machine, tested without
//! threads.
//!
//! A shard that dies is restarted after a backoff that starts at
//! `backoff_start` and doubles with each death inside the crash-loop window,
//! up to `backoff_cap`. More than `max_restarts` deaths of one shard within
//! `window` is a crash loop: the process gives up (shuts down gracefully and
//! exits non-zero, so systemd or Kubernetes restart it whole).

use std::time::Instant;

use crate::config::RestartPolicy;

/// What to do about a death.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Restart at this instant.
    RestartAt(Instant),
    /// Too many deaths in the window: stop everything.
    GiveUp { deaths: u32 },
}

/// The death history of one shard.
#[derive(Clone, Debug, Default)]
pub(crate) struct Deaths {
    recent: Vec<Instant>,
}

impl Deaths {
    /// Records a death at `now` and decides.
    pub(crate) fn record(&mut self, policy: &RestartPolicy, now: Instant) -> Verdict {
        self.recent
            .retain(|&at| now.saturating_duration_since(at) < policy.window);
        self.recent.push(now);
        let deaths = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if deaths > policy.max_restarts {
            return Verdict::GiveUp { deaths };
        }
        let doublings = deaths.saturating_sub(1).min(30);
        let backoff = policy
            .backoff_start
            .saturating_mul(1 << doublings)
            .min(policy.backoff_cap);
        Verdict::RestartAt(now + backoff)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            backoff_start: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(50),
            max_restarts: 3,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut deaths = Deaths::default();
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..3)
            .map(|i| {
                let now = t0 + Duration::from_millis(i);
                match deaths.record(&policy(), now) {
                    Verdict::RestartAt(at) => at - now,
                    Verdict::GiveUp { .. } => panic!("gave up too early"),
                }
            })
            .collect();
        assert_eq!(waits, [10, 20, 40].map(Duration::from_millis).to_vec());
        let mut capped = Deaths::default();
        let generous = RestartPolicy {
            max_restarts: 100,
            ..policy()
        };
        let mut last = Duration::ZERO;
        for i in 0..10 {
            if let Verdict::RestartAt(at) = capped.record(&generous, t0 + Duration::from_millis(i))
            {
                last = at - (t0 + Duration::from_millis(i));
            }
        }
        assert_eq!(last, Duration::from_millis(50));
    }

    #[test]
    fn too_many_deaths_in_the_window_give_up() {
        let mut deaths = Deaths::default();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(matches!(
                deaths.record(&policy(), t0 + Duration::from_millis(i)),
                Verdict::RestartAt(_)
            ));
        }
        assert_eq!(
            deaths.record(&policy(), t0 + Duration::from_millis(4)),
            Verdict::GiveUp { deaths: 4 }
        );
    }

    #[test]
    fn deaths_outside_the_window_are_forgotten() {
        let mut deaths = Deaths::default();
        let t0 = Instant::now();
        for i in 0..3 {
            deaths.record(&policy(), t0 + Duration::from_secs(i));
        }
        // The first death is now 10 s old: out of the window.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            deaths.record(&policy(), later),
            Verdict::RestartAt(later + Duration::from_millis(40))
        );
    }
}
