//! Short codes and the URLs they stand for: what is valid, and making new
//! codes. Pure (the randomness comes in as bytes), tested below.
//!
//! - A **code** is [`CODE_LEN`] characters of `[0-9A-Za-z]`: URL-safe in a
//!   path without escaping, 62^7 (3.5 * 10^12) of them, so a random one
//!   collides with an existing one only in a very full table (the insert
//!   retries then, `db::insert`).
//! - A **URL** is an absolute `http` or `https` URL with a host, at most
//!   [`MAX_URL_LEN`] bytes. It is stored (and sent in `Location`) in its
//!   normalized form as the WHATWG URL parser writes it: ASCII only
//!   (non-ASCII hosts in punycode, the rest percent-encoded), so it is
//!   always a valid header value.

use std::fmt;

/// Characters in a code.
pub(crate) const CODE_LEN: usize = 7;

/// The longest URL accepted, in bytes (before and after normalizing).
pub(crate) const MAX_URL_LEN: usize = 2048;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Whether `text` is a well-formed code (it may still name no link).
pub(crate) fn is_code(text: &str) -> bool {
    text.len() == CODE_LEN && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A new code from `random` bytes, or `None` when they ran out first (the
/// caller draws more). Bytes of 248 and above are skipped, so every
/// character is equally likely (248 = 4 * 62).
pub(crate) fn from_random(random: &[u8]) -> Option<String> {
    let code: String = random
        .iter()
        .filter(|&&b| b < 248)
        .take(CODE_LEN)
        .map(|&b| char::from(ALPHABET[usize::from(b % 62)]))
        .collect();
    (code.len() == CODE_LEN).then_some(code)
}

/// A new random code, from the operating system's generator.
pub(crate) fn random() -> Result<String, getrandom::Error> {
    loop {
        // 16 bytes: fewer than 7 usable ones happens with odds of ~1e-12.
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        if let Some(code) = from_random(&bytes) {
            return Ok(code);
        }
    }
}

/// Why a URL was refused (the text of the `400`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UrlError {
    TooLong,
    Unparsable(String),
    Scheme(String),
    NoHost,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::TooLong => write!(f, "url longer than {MAX_URL_LEN} bytes"),
            UrlError::Unparsable(why) => write!(f, "url is not an absolute URL: {why}"),
            UrlError::Scheme(scheme) => {
                write!(f, "url scheme must be http or https, not {scheme:?}")
            }
            UrlError::NoHost => write!(f, "url has no host"),
        }
    }
}

/// Checks `text` and returns the URL in its normalized form.
pub(crate) fn normalize_url(text: &str) -> Result<String, UrlError> {
    if text.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    // The parser strips surrounding spaces and drops tabs and newlines:
    // refuse them instead, what was asked is not what would be stored.
    if text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(UrlError::Unparsable(
            "contains spaces or control characters".into(),
        ));
    }
    let url = url::Url::parse(text).map_err(|e| UrlError::Unparsable(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(url.scheme().to_owned()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    let normalized = String::from(url);
    if normalized.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_seven_alphanumerics() {
        assert!(is_code("abc1234"));
        assert!(is_code("ZZZZZZZ"));
        assert!(!is_code("abc123"));
        assert!(!is_code("abc12345"));
        assert!(!is_code("abc-123"));
        assert!(!is_code("abc%123"));
        assert!(!is_code("abcdéf"));
        assert!(!is_code(""));
    }

    #[test]
    fn random_bytes_map_evenly_onto_the_alphabet() {
        assert_eq!(
            from_random(&[0, 1, 61, 62, 123, 247, 10]).as_deref(),
            Some("01z0zzA")
        );
        // Bytes of 248 and above are skipped, not folded.
        assert_eq!(
            from_random(&[248, 255, 0, 0, 0, 0, 0, 0, 0]).as_deref(),
            Some("0000000")
        );
        assert_eq!(from_random(&[250; 16]), None);
        assert_eq!(from_random(&[1; 6]), None);
        let code = random().expect("the OS generator");
        assert!(is_code(&code), "{code}");
        assert_ne!(code, random().expect("the OS generator"));
    }

    #[test]
    fn urls_are_checked_and_normalized() {
        assert_eq!(
            normalize_url("https://example.com").as_deref(),
            Ok("https://example.com/")
        );
        assert_eq!(
            normalize_url("HTTP://Example.COM/a b").map_err(|_| ()),
            Err(())
        );
        assert_eq!(
            normalize_url("http://example.com/caf\u{e9}?q=\u{e9}").as_deref(),
            Ok("http://example.com/caf%C3%A9?q=%C3%A9")
        );
        assert_eq!(
            normalize_url("http://b\u{fc}cher.example/").as_deref(),
            Ok("http://xn--bcher-kva.example/")
        );
        assert_eq!(
            normalize_url("ftp://example.com/"),
            Err(UrlError::Scheme("ftp".into()))
        );
        assert_eq!(
            normalize_url("javascript:alert(1)"),
            Err(UrlError::Scheme("javascript".into()))
        );
        assert!(matches!(
            normalize_url("/relative"),
            Err(UrlError::Unparsable(_))
        ));
        assert!(matches!(
            normalize_url(" http://example.com"),
            Err(UrlError::Unparsable(_))
        ));
        assert!(matches!(
            normalize_url("http://exa\nmple.com"),
            Err(UrlError::Unparsable(_))
        ));
        let long = format!("http://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(normalize_url(&long), Err(UrlError::TooLong));
    }
}
