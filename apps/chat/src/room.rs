//! Room and user names, and the shard that owns each room.

use std::fmt;
use std::sync::Arc;

use forkless::ShardId;

/// The longest room name, in bytes.
pub(crate) const MAX_ROOM: usize = 64;

/// The longest user name, in bytes.
pub(crate) const MAX_NAME: usize = 32;

/// A valid room name: 1 to [`MAX_ROOM`] of `A-Z a-z 0-9 - _ .`. Cheap to
/// clone and `Send`, so it travels on the bus.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RoomName(Arc<str>);

impl RoomName {
    /// Checks a path segment (taken as is: no percent-decoding, since no
    /// valid name needs any).
    pub(crate) fn parse(segment: &str) -> Result<RoomName, NameError> {
        check(segment, MAX_ROOM)?;
        Ok(RoomName(segment.into()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The shard that sequences this room: FNV-1a (64 bit) of the name, mod
    /// `shards`. Fixed, so every shard agrees.
    pub(crate) fn owner(&self, shards: usize) -> ShardId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in self.0.as_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // The remainder is below `shards`, so it fits a usize.
        ShardId::new((hash % shards.max(1) as u64) as usize)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a user name from `?name=`: same alphabet as rooms, 1 to [`MAX_NAME`].
pub(crate) fn user_name(name: &str) -> Result<String, NameError> {
    check(name, MAX_NAME)?;
    Ok(name.to_owned())
}

fn check(name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max {
        return Err(NameError::TooLong(max));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

/// Why a room or user name was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NameError {
    Empty,
    TooLong(usize),
    BadCharacter,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("empty name"),
            NameError::TooLong(max) => write!(f, "name longer than {max} bytes"),
            NameError::BadCharacter => {
                f.write_str("names use only letters, digits, '-', '_' and '.'")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(RoomName::parse("lobby").is_ok());
        assert!(RoomName::parse("a-b_c.9").is_ok());
        assert_eq!(RoomName::parse(""), Err(NameError::Empty));
        assert_eq!(RoomName::parse("a b"), Err(NameError::BadCharacter));
        assert_eq!(RoomName::parse("%41"), Err(NameError::BadCharacter));
        assert_eq!(RoomName::parse("caf\u{e9}"), Err(NameError::BadCharacter));
        let long = "x".repeat(MAX_ROOM + 1);
        assert_eq!(RoomName::parse(&long), Err(NameError::TooLong(MAX_ROOM)));
        assert!(user_name(&"n".repeat(MAX_NAME)).is_ok());
        assert!(user_name(&"n".repeat(MAX_NAME + 1)).is_err());
    }

    #[test]
    fn every_shard_agrees_on_the_owner() {
        let room = RoomName::parse("lobby").expect("valid");
        let owner = room.owner(4);
        assert!(owner.get() < 4);
        assert_eq!(room.owner(4), owner);
        assert_eq!(room.owner(1), ShardId::new(0));
    }
}
