//! The fast path's head parser: whether the fast path (`fast.rs`) takes a
//! request head, and the request it makes of it.
//!
//! Contract: pure and synchronous (no I/O, no clocks); a head is taken only
//! if the framing gate (`framing.rs`) would pass it, so declining is always
//! safe (the gate then parses the head as usual). Called by the connection's
//! I/O (`io.rs`) while it is on the fast path; it imports nothing of the
//! connection.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri, Version};

use super::framing::{MAX_HEADERS, valid_host};
use super::{Incoming, Request};

/// The request whose head starts `input`, and the head's length, if the
/// fast path takes it (see the module docs); `None` for a partial head and
/// for anything the framing gate would refuse (a missing or repeated
/// `Host`, a repeated `Content-Length`, a head over `max_head`...), which
/// the gate then answers as usual.
pub(crate) fn parse(input: &[u8], max_head: usize) -> Option<(Request, usize)> {
    let method = if input.starts_with(b"GET ") {
        Method::GET
    } else if input.starts_with(b"HEAD ") {
        Method::HEAD
    } else {
        return None;
    };
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(input, &mut slots) {
        Ok(httparse::Status::Complete(len)) if parsed.version == Some(1) && len <= max_head => len,
        _ => return None,
    };
    let target = parsed.path?;
    if !target.starts_with('/') {
        return None;
    }
    // One copy of the head; the target and header values are views of it.
    let head = Bytes::copy_from_slice(&input[..len]);
    let view = |part: &[u8]| {
        let at = part.as_ptr() as usize - input.as_ptr() as usize;
        head.slice(at..at + part.len())
    };
    let uri = Uri::from_maybe_shared(view(target.as_bytes())).ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let (mut hosts, mut lengths) = (0, 0);
    for line in parsed.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).ok()?;
        let takes = match name {
            header::HOST => {
                hosts += 1;
                valid_host(line.value)
            }
            header::CONTENT_LENGTH => {
                lengths += 1;
                !line.value.is_empty() && line.value.iter().all(|&b| b == b'0')
            }
            // `te: trailers` lets hyper send trailers; the fast path never does.
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT | header::TE => false,
            header::CONNECTION => !tokens(line.value)
                .any(|t| t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"upgrade")),
            _ => true,
        };
        if !takes {
            return None;
        }
        let value = HeaderValue::from_maybe_shared(view(line.value)).ok()?;
        headers.append(name, value);
    }
    if hosts != 1 || lengths > 1 {
        return None;
    }
    let mut request = Request::new(Incoming::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some((request, len))
}

/// The comma-separated tokens of a header value, trimmed.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}
