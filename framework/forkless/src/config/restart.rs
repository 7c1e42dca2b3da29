//! How a shard that died is restarted: the numbers of the policy
//! (`coordinator/policy.rs` decides with them).

use std::time::Duration;

/// The restart policy of every shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Pause before the first restart.
    pub backoff_start: Duration,
    /// Longest pause between restarts.
    pub backoff_cap: Duration,
    /// Deaths of one shard allowed within `window` before giving up.
    pub max_restarts: u32,
    /// The crash-loop window.
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            backoff_start: Duration::from_millis(10),
            backoff_cap: Duration::from_secs(5),
            max_restarts: 5,
            window: Duration::from_secs(30),
        }
    }
}
