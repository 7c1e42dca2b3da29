//! Shard identity.

use std::fmt;

/// The identity of one shard: `0..count`, stable across restarts of that shard.
///
/// ```
/// use forkless::ShardId;
///
/// let id = ShardId::new(3);
/// assert_eq!(id.get(), 3);
/// assert_eq!(id.to_string(), "3");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(usize);

impl ShardId {
    /// The shard with index `index`.
    pub const fn new(index: usize) -> Self {
        Self(index)
    }

    /// The index of this shard, `0..count`.
    pub const fn get(self) -> usize {
        self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<ShardId> for usize {
    fn from(id: ShardId) -> usize {
        id.0
    }
}
