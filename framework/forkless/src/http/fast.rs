//! The fast path: simple requests answered without hyper.
//!
//! Most requests a server sees are an HTTP/1.1 `GET` or `HEAD` with no
//! body. For those, hyper's generality (its dispatcher, its own buffers, a
//! service call per request through boxed futures) costs more than the
//! request itself, and most of a pipelined burst's time. So each connection
//! starts on this path:
//!
//! - **Taking a request.** A head is offered to the fast path's parser
//!   (`fast_parse.rs`) before the framing gate (`framing.rs`) sees it; the
//!   fast path takes it only if it is an HTTP/1.1 `GET` or `HEAD` of an
//!   origin-form target, without a body (no `Transfer-Encoding`, a
//!   `Content-Length` of 0 if any), `Upgrade`, `Expect`, `TE`, or a
//!   `Connection` that closes or upgrades, and only if the gate would pass
//!   it (one `Host`, at most one `Content-Length`, within the head size
//!   limit). So each head is parsed once; any other goes through the gate,
//!   and from there to hyper.
//! - **Handing over.** The first head it does not take (or a refusal of the
//!   gate's) hands the connection to hyper for the rest of its life, from
//!   that head on: earlier responses were already written, in order, so
//!   hyper starts on a clean boundary. hyper's connection state is only
//!   built then: a connection that stays on this path never holds hyper's
//!   buffers.
//! - **Answering.** The handler is called exactly as on hyper's path
//!   (`service.rs`: panics become `500`, counters, `x-shard`, `Connection:
//!   close` while draining), and its response is written as hyper's encoder
//!   writes it ([`encode_head`]): the same status line, headers in the same
//!   order, `content-length` or chunked framing by the same rules (no body
//!   for `HEAD`, `204`, `304`), and a cached `date`.
//! - **Pipelining.** Heads that arrive together are answered one after the
//!   other into one output buffer, which leaves in one `send` when the
//!   connection task waits (`io.rs`).
//!
//! Timeouts, limits, draining and lingering closes are the connection's, as
//! on hyper's path (`connection.rs`, `drain.rs`, `io.rs`). Contract: the
//! fast path imports the connection's I/O and the drain watcher below it,
//! never the connection or the server above it; cancel-safe between
//! requests (dropping it mid-response drops that response).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Body as _, Frame};

use super::drain::{Drain, Phase};
#[cfg(test)]
use super::fast_parse::parse;
use super::fast_parse::tokens;
use super::io::{Conn, Next};
use super::requests::Requests;
use super::service::{self, App};
use super::transport::Transport;
use super::{Body, Handler};
use crate::clock::coarse_unix_seconds;
#[cfg(test)]
use http::HeaderMap;

/// How a connection's time on the fast path ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FastEnd {
    /// The connection is over (the client closed, it idled out, a response
    /// closed it, or writing failed).
    Closed,
    /// hyper serves the rest of the connection.
    Hyper,
    /// The connection opened with the HTTP/2 preface: HTTP/2 serves it.
    Http2,
}

/// Serves requests on the fast path until the connection ends or goes to
/// hyper. Once the shard stops, `drain` decides (`drain.rs`): every
/// response from then on closes the connection, and an idle one waits at
/// most for the grace for its next request.
pub(crate) async fn serve<H: Handler, S: Transport>(
    conn: &Conn<S>,
    app: &App<H>,
    requests: &Requests,
    drain: &Drain<'_>,
) -> FastEnd {
    let mut run = pin!(serve_requests(conn, app, requests, drain));
    poll_fn(|cx| {
        drain.poll(cx);
        run.as_mut().poll(cx)
    })
    .await
}

async fn serve_requests<H: Handler, S: Transport>(
    conn: &Conn<S>,
    app: &App<H>,
    requests: &Requests,
    drain: &Drain<'_>,
) -> FastEnd {
    loop {
        let next = poll_fn(|cx| {
            // The task's waker waits on the grace through `serve`'s poll.
            if drain.phase() == Phase::Over {
                return Poll::Ready(Ok(Next::End));
            }
            conn.poll_head(cx)
        })
        .await;
        let request = match next {
            Ok(Next::Request(request)) => request,
            Ok(Next::Hyper) => return FastEnd::Hyper,
            Ok(Next::Http2) => return FastEnd::Http2,
            Ok(Next::End) => return FastEnd::Closed,
            Err(error) => {
                tracing::debug!(%error, "connection ended with an error");
                return FastEnd::Closed;
            }
        };
        let head_only = request.method() == Method::HEAD;
        let seen = (app.access.as_ref()).map(|log| log.seen(&request, requests.peer()));
        let started = Instant::now();
        let response = service::answer(app, requests, request).await;
        let response = service::stamp(app, requests, response, started);
        let (mut parts, body) = response.into_parts();
        let length = BodyLength::of(&body);
        let encoded = conn.write(|out| encode_head(&mut parts, head_only, length, out));
        let status = parts.status.as_u16();
        let written = write_body(conn, body, encoded.framing).await;
        requests.fast_answered();
        if let (Some(log), Some(seen)) = (&app.access, seen) {
            log.log(seen, status, *written.as_ref().unwrap_or(&0));
        }
        if let Err(error) = written {
            tracing::debug!(%error, "response body failed; closing the connection");
            return FastEnd::Closed;
        }
        if encoded.last {
            if let Err(error) = poll_fn(|cx| conn.poll_shutdown(cx)).await {
                tracing::debug!(%error, "closing the connection failed");
            }
            return FastEnd::Closed;
        }
    }
}

/// What the response body says of its length (hyper's `BodyLength`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLength {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Known(u64),
    /// Unknown until it ends.
    Unknown,
}

impl BodyLength {
    fn of(body: &Body) -> Self {
        if body.is_end_stream() {
            BodyLength::None
        } else {
            body.size_hint()
                .exact()
                .map_or(BodyLength::Unknown, BodyLength::Known)
        }
    }
}

/// How the body follows the head on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body bytes (`HEAD`, `204`, `304`, or an empty body).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked (without trailers: the request did not ask for them).
    Chunked,
    /// Until the connection closes (an unknown length hyper cannot chunk).
    UntilClose,
}

/// A written response head: how its body follows and whether it is the
/// connection's last response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encoded {
    pub(crate) framing: Framing,
    pub(crate) last: bool,
}

/// Writes a response head to `out` as hyper's HTTP/1.1 server encoder
/// writes it for a keep-alive request (`proto/h1/role.rs`), and says how
/// the body follows. `head_only`: the request was `HEAD`.
pub(crate) fn encode_head(
    parts: &mut http::response::Parts,
    head_only: bool,
    length: BodyLength,
    out: &mut Vec<u8>,
) -> Encoded {
    let status = parts.status;
    let start = out.len();
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        // hyper cannot send a 1xx as the response: it answers a bare 500.
        out.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\n");
        if !head_only {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        finish_head(out, false);
        return Encoded {
            framing: Framing::Empty,
            last: true,
        };
    }
    let http10 = parts.version == Version::HTTP_10;
    let can_body = can_chunk(head_only, status);
    let can_length = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let mut last = status == StatusCode::SWITCHING_PROTOCOLS;

    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if !http10 && status == StatusCode::OK && reason.is_none() {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        match reason {
            Some(reason) => out.extend_from_slice(reason.as_bytes()),
            None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }

    let mut framing = None;
    let mut wrote_date = false;
    // A line whose values are joined with ", " (connection,
    // transfer-encoding, trailer, content-length) is open until the name changes.
    let mut open_line: Option<HeaderName> = None;
    let mut chunked_missing = false;
    for (name, value) in parts.headers.iter() {
        if open_line.as_ref() != Some(name) {
            close_line(out, &mut open_line, &mut chunked_missing);
        } else if *name == header::CONTENT_LENGTH {
            // Repeats of a length already written.
            continue;
        } else {
            out.extend_from_slice(b", ");
            out.extend_from_slice(value.as_bytes());
            if *name == header::CONNECTION && has_close(value) {
                last = true;
            }
            if *name == header::TRANSFER_ENCODING {
                chunked_missing = !ends_chunked(value);
            }
            continue;
        }
        match *name {
            header::CONTENT_LENGTH => {
                match length {
                    BodyLength::Known(n) => framing = Some(Framing::Length(n)),
                    BodyLength::Unknown => match parse_length(value) {
                        Some(n) => framing = Some(Framing::Length(n)),
                        None => {
                            tracing::warn!(?value, "invalid content-length in a response; closing");
                            return invalid(out, start);
                        }
                    },
                    BodyLength::None if head_only => framing = Some(Framing::Empty),
                    BodyLength::None => continue,
                }
                open(out, &mut open_line, name, value);
            }
            header::TRANSFER_ENCODING => {
                if http10 || !can_body {
                    continue;
                }
                framing = Some(Framing::Chunked);
                chunked_missing = !ends_chunked(value);
                open(out, &mut open_line, name, value);
            }
            header::CONNECTION => {
                last |= has_close(value);
                open(out, &mut open_line, name, value);
            }
            header::TRAILER => {
                if http10 || !can_body {
                    continue;
                }
                open(out, &mut open_line, name, value);
            }
            _ => {
                wrote_date |= *name == header::DATE;
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    close_line(out, &mut open_line, &mut chunked_missing);

    let mut framing = framing.unwrap_or_else(|| match length {
        BodyLength::Unknown if http10 || !can_body => Framing::UntilClose,
        BodyLength::Unknown => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
        BodyLength::None | BodyLength::Known(0) => {
            if can_length && !head_only {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Empty
        }
        BodyLength::Known(n) if can_length => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
            Framing::Length(n)
        }
        BodyLength::Known(_) => Framing::Empty,
    });
    if !can_body {
        framing = Framing::Empty;
    }
    last |= framing == Framing::UntilClose;
    finish_head(out, wrote_date);
    Encoded { framing, last }
}

/// hyper's `can_chunked`: whether the response may carry a body at all.
fn can_chunk(head_only: bool, status: StatusCode) -> bool {
    !(head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Starts a joined line with its first value.
fn open(
    out: &mut Vec<u8>,
    open_line: &mut Option<HeaderName>,
    name: &HeaderName,
    value: &HeaderValue,
) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    *open_line = Some(name.clone());
}

/// Ends the joined line, if one is open; a transfer-encoding line that
/// does not end in `chunked` gets it.
fn close_line(out: &mut Vec<u8>, open_line: &mut Option<HeaderName>, chunked_missing: &mut bool) {
    if let Some(name) = open_line.take() {
        if name == header::TRANSFER_ENCODING && std::mem::take(chunked_missing) {
            out.extend_from_slice(b", chunked");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A response head hyper would refuse to write: nothing of it is sent,
/// and the connection closes.
fn invalid(out: &mut Vec<u8>, start: usize) -> Encoded {
    out.truncate(start);
    Encoded {
        framing: Framing::Empty,
        last: true,
    }
}

/// The `date` line (unless the handler set one) and the blank line.
fn finish_head(out: &mut Vec<u8>, wrote_date: bool) {
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        extend_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn has_close(value: &HeaderValue) -> bool {
    tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close"))
}

fn ends_chunked(value: &HeaderValue) -> bool {
    tokens(value.as_bytes())
        .last()
        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
}

fn parse_length(value: &HeaderValue) -> Option<u64> {
    let text = value.to_str().ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Writes the body as `framing` says, waiting for room in the output
/// buffer as it goes. An error (the body failed, or did not match its
/// length) means the connection cannot go on.
async fn write_body<S: Transport>(conn: &Conn<S>, body: Body, framing: Framing) -> io::Result<u64> {
    if framing == Framing::Empty {
        return Ok(0);
    }
    let mut body = pin!(body);
    let mut written = 0u64;
    loop {
        poll_fn(|cx| conn.poll_room(cx)).await?;
        let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await else {
            return conn
                .write(|out| encode_end(&framing, written, out))
                .map(|()| written);
        };
        let frame = frame.map_err(io::Error::other)?;
        conn.write(|out| encode_frame(&framing, frame, &mut written, out))?;
    }
}

/// Writes one body frame as `framing` says (`written`: data bytes so far).
fn encode_frame(
    framing: &Framing,
    frame: Frame<Bytes>,
    written: &mut u64,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    // Trailers are dropped, as hyper does for a request without `te: trailers`.
    let Ok(data) = frame.into_data() else {
        return Ok(());
    };
    if data.is_empty() {
        return Ok(());
    }
    *written += data.len() as u64;
    if let Framing::Length(n) = framing
        && *written > *n
    {
        return Err(io::Error::other("response body longer than its length"));
    }
    if *framing == Framing::Chunked {
        // Writing to a `Vec` cannot fail.
        let _ = write!(out, "{:X}\r\n", data.len());
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(&data);
    }
    Ok(())
}

/// Ends a body that ran out of frames.
fn encode_end(framing: &Framing, written: u64, out: &mut Vec<u8>) -> io::Result<()> {
    match framing {
        Framing::Length(n) if written < *n => {
            Err(io::Error::other("response body shorter than its length"))
        }
        Framing::Chunked => {
            out.extend_from_slice(b"0\r\n\r\n");
            Ok(())
        }
        _ => Ok(()),
    }
}

thread_local! {
    /// The `date` value of the current second (one formatting per second).
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the current time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn extend_date(out: &mut Vec<u8>) {
    let second = coarse_unix_seconds();
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != second {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
            if let Ok(bytes) = <[u8; 29]>::try_from(text.as_bytes()) {
                *date = (second, bytes);
            }
        }
        out.extend_from_slice(&date.1);
    });
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
