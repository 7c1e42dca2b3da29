//! Keys: one percent-encoded path segment, decoded to bytes, and the shard
//! that owns each.

use bytes::Bytes;
use forkless::ShardId;
use forkless::prelude::*;

/// The longest key, in bytes once decoded.
pub(crate) const MAX_KEY: usize = 256;

/// A decoded, valid key: 1 to [`MAX_KEY`] bytes, any bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key(pub(crate) Bytes);

/// Why a path segment is not a key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyError {
    Empty,
    BadEncoding,
    TooLong,
}

impl Key {
    /// Decodes a percent-encoded path segment (`%2F` is a byte of the key,
    /// not a separator).
    pub(crate) fn decode(segment: &str) -> Result<Key, KeyError> {
        let raw = segment.as_bytes();
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        // Every encoded byte takes at least one character of the segment.
        if raw.len() > 3 * MAX_KEY {
            return Err(KeyError::TooLong);
        }
        let mut key = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'%' {
                let high = raw.get(i + 1).and_then(hex).ok_or(KeyError::BadEncoding)?;
                let low = raw.get(i + 2).and_then(hex).ok_or(KeyError::BadEncoding)?;
                key.push(high << 4 | low);
                i += 3;
            } else {
                key.push(raw[i]);
                i += 1;
            }
        }
        if key.len() > MAX_KEY {
            return Err(KeyError::TooLong);
        }
        Ok(Key(key.into()))
    }

    /// The shard that owns this key: FNV-1a (64 bit) of its bytes, mod
    /// `shards`. Fixed, so every shard (and every run) agrees.
    pub(crate) fn owner(&self, shards: usize) -> ShardId {
        // The remainder is below `shards`, so it fits a usize.
        ShardId::new((fnv1a(&self.0) % shards as u64) as usize)
    }
}

/// The value of one hex digit.
fn hex(digit: &u8) -> Option<u8> {
    char::from(*digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// 64-bit FNV-1a: tiny, fixed, and spreads short keys well.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl IntoResponse for KeyError {
    fn into_response(self) -> Response {
        match self {
            KeyError::Empty => (StatusCode::BAD_REQUEST, "empty key\n").into_response(),
            KeyError::BadEncoding => {
                (StatusCode::BAD_REQUEST, "badly percent-encoded key\n").into_response()
            }
            KeyError::TooLong => {
                let message = format!("key longer than {MAX_KEY} bytes\n");
                (StatusCode::URI_TOO_LONG, message).into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(
            Key::decode("a%2Fb%20c").map(|k| k.0),
            Ok(Bytes::from("a/b c"))
        );
        assert_eq!(Key::decode("%e2%82%ac").map(|k| k.0), Ok(Bytes::from("€")));
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!(Key::decode(""), Err(KeyError::Empty));
        assert_eq!(Key::decode("a%2"), Err(KeyError::BadEncoding));
        assert_eq!(Key::decode("%zz"), Err(KeyError::BadEncoding));
        assert_eq!(Key::decode("%+1"), Err(KeyError::BadEncoding));
        assert_eq!(
            Key::decode(&"k".repeat(MAX_KEY + 1)),
            Err(KeyError::TooLong)
        );
        assert!(Key::decode(&"%41".repeat(MAX_KEY)).is_ok());
        assert_eq!(
            Key::decode(&"%41".repeat(MAX_KEY + 1)),
            Err(KeyError::TooLong)
        );
    }

    #[test]
    fn owners_are_fixed_and_in_range() {
        // The published FNV-1a test vectors: every process agrees on owners.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        let key = Key::decode("greeting").expect("a key");
        assert_eq!(key.owner(1), ShardId::new(0));
        for shards in 1..9 {
            for i in 0..100 {
                let key = Key::decode(&format!("key{i}")).expect("a key");
                assert!(key.owner(shards).get() < shards);
            }
        }
    }
}
