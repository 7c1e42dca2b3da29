//! Reading a whole request body, within limits.
//!
//! [`read_body`] collects a request's body into one [`Bytes`], up to a size
//! limit: a body whose `Content-Length` is over the limit is refused before
//! a byte of it is read (and before hyper sends `100 Continue`); any other is
//! counted as it streams and refused as soon as it passes the limit. While it
//! reads, the shard's body timeouts apply (`--body-read-timeout`,
//! `--body-min-rate`). Its error, [`BodyError`], is a response: return it
//! from a handler (`?` works) and the client gets `413`, `408` or `400`, with
//! `Connection: close` since the rest of the body is left unread.
//!
//! [`read_body_default`] uses the shard's configured limit
//! (`--max-body-size`, default 1 MiB).

use std::cell::Cell;
use std::error::Error as StdError;
use std::fmt;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, HeaderValue};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::limits::BodyTimedOut;
use super::{IntoResponse, Request, Response, StatusCode};

thread_local! {
    /// This shard's `--max-body-size`, set when it starts serving.
    static DEFAULT_LIMIT: Cell<usize> = const { Cell::new(1024 * 1024) };
}

pub(crate) fn set_default_limit(limit: usize) {
    DEFAULT_LIMIT.with(|default| default.set(limit));
}

/// Why a request body could not be read whole.
///
/// As a response: `413 Payload Too Large`, `408 Request Timeout` or
/// `400 Bad Request`, each with `Connection: close`.
///
/// ```
/// use forkless::http::{BodyError, IntoResponse};
///
/// let response = BodyError::TooLarge { limit: 1024 }.into_response();
/// assert_eq!(response.status(), 413);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is longer than `limit` bytes (declared or counted).
    TooLarge {
        /// The limit it passed.
        limit: usize,
    },
    /// The body stalled for the body read timeout, or arrived slower than
    /// the minimum rate.
    TimedOut,
    /// The body is not valid HTTP/1.1 framing (a broken chunked encoding),
    /// or the connection ended before the body did.
    Malformed(MalformedBody),
}

/// Why a body could not be read: what the HTTP layer reported (its
/// `Display` says it; [`source`](StdError::source) goes deeper).
#[derive(Debug)]
pub struct MalformedBody(hyper::Error);

impl fmt::Display for MalformedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for MalformedBody {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge { limit } => {
                write!(
                    f,
                    "the request body is larger than the limit of {limit} bytes"
                )
            }
            BodyError::TimedOut => f.write_str(
                "the request body stalled or arrived below the minimum rate (body read timeout)",
            ),
            BodyError::Malformed(error) => write!(f, "the request body could not be read: {error}"),
        }
    }
}

impl StdError for BodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            BodyError::Malformed(error) => Some(error),
            _ => None,
        }
    }
}

impl BodyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut => StatusCode::REQUEST_TIMEOUT,
            BodyError::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn from_hyper(error: hyper::Error) -> Self {
        let mut source = error.source();
        while let Some(cause) = source {
            if cause.is::<BodyTimedOut>()
                || cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return BodyError::TimedOut;
            }
            source = cause.source();
        }
        BodyError::Malformed(MalformedBody(error))
    }
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), format!("{self}\n")).into_response();
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// Reads the whole body of `request`, refusing one longer than `limit`
/// bytes; see the module docs.
///
/// ```no_run
/// use forkless::http::{BodyError, Request, read_body};
///
/// async fn upload(request: Request) -> Result<String, BodyError> {
///     let body = read_body(request, 1024 * 1024).await?;
///     Ok(format!("{} bytes\n", body.len()))
/// }
/// ```
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, BodyError> {
    let mut body = request.into_body();
    let declared = body.size_hint().lower();
    if declared > limit as u64 {
        return Err(BodyError::TooLarge { limit });
    }
    let mut collected = Collected::Empty;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::from_hyper)?;
        // Trailers are not part of the bytes.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(BodyError::TooLarge { limit });
        }
        collected.push(data, declared);
    }
    Ok(collected.into_bytes())
}

/// [`read_body`] with the shard's configured limit (`--max-body-size`,
/// [`Config::max_body_size`](crate::Config::max_body_size); 1 MiB by default).
///
/// ```no_run
/// use forkless::http::{BodyError, Request, read_body_default};
///
/// async fn echo(request: Request) -> Result<Vec<u8>, BodyError> {
///     Ok(read_body_default(request).await?.to_vec())
/// }
/// ```
pub async fn read_body_default(request: Request) -> Result<Bytes, BodyError> {
    read_body(request, DEFAULT_LIMIT.with(Cell::get)).await
}

/// The body so far: a body that arrives in one frame is never copied.
enum Collected {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Collected {
    fn push(&mut self, data: Bytes, declared: u64) {
        *self = match std::mem::replace(self, Collected::Empty) {
            Collected::Empty => Collected::One(data),
            Collected::One(first) => {
                let capacity = usize::try_from(declared)
                    .unwrap_or(0)
                    .max(first.len() + data.len());
                let mut many = BytesMut::with_capacity(capacity);
                many.extend_from_slice(&first);
                many.extend_from_slice(&data);
                Collected::Many(many)
            }
            Collected::Many(mut many) => {
                many.extend_from_slice(&data);
                Collected::Many(many)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Collected::Empty => Bytes::new(),
            Collected::One(bytes) => bytes,
            Collected::Many(many) => many.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_answer_with_their_status_and_close() {
        for (error, status) in [
            (BodyError::TooLarge { limit: 10 }, 413),
            (BodyError::TimedOut, 408),
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[CONNECTION], "close");
        }
        assert!(
            BodyError::TooLarge { limit: 10 }
                .to_string()
                .contains("10 bytes")
        );
    }

    #[test]
    fn frames_are_joined_and_a_single_frame_is_kept_whole() {
        let mut one = Collected::Empty;
        one.push(Bytes::from_static(b"abc"), 3);
        assert_eq!(one.into_bytes(), "abc");
        let mut many = Collected::Empty;
        for part in ["ab", "cd", "e"] {
            many.push(Bytes::from_static(part.as_bytes()), 0);
        }
        assert_eq!(many.into_bytes(), "abcde");
        assert_eq!(Collected::Empty.into_bytes(), "");
    }
}
