//! The fast path against hyper: the same response, encoded by both, must
//! come out as the same bytes (apart from the `date` value).

use std::cell::RefCell;
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::executor::block_on;
use futures::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::rt::ReadBufCursor;

use super::*;
use crate::http::IntoResponse;
use http::Response;

/// One side of an in-memory connection for hyper: reads `input`, then the
/// end of the stream; keeps what hyper writes.
struct Wire {
    input: Vec<u8>,
    at: usize,
    /// Reads that found nothing left: the first few wait (so hyper writes
    /// its answer), then the stream ends.
    idle: usize,
    output: Rc<RefCell<Vec<u8>>>,
}

impl hyper::rt::Read for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at == self.input.len() && self.idle < 8 {
            self.idle += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = buf.remaining().min(self.input.len() - self.at);
        buf.put_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.borrow_mut().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What hyper's server writes answering `method /` with `make()`.
fn through_hyper(method: &str, make: Make) -> String {
    let output = Rc::new(RefCell::new(Vec::new()));
    let wire = Wire {
        input: format!("{method} / HTTP/1.1\r\nhost: x\r\n\r\n").into_bytes(),
        at: 0,
        idle: 0,
        output: output.clone(),
    };
    let service = hyper::service::service_fn(move |_| async move { Ok::<_, Infallible>(make()) });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None);
    // A response hyper refuses to write ends the connection with an error.
    let _ = block_on(builder.serve_connection(wire, service));
    let written = output.borrow().clone();
    without_date(&written)
}

/// How the fast path left the connection after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    KeepAlive,
    Close,
    /// The body failed or did not match its length: closed mid-response.
    Abort,
}

/// What the fast path writes answering `method /` with `make()`.
fn through_fast(method: &str, make: Make) -> (String, After) {
    let (mut parts, body) = make().into_parts();
    let mut out = Vec::new();
    let length = BodyLength::of(&body);
    let encoded = encode_head(&mut parts, method == "HEAD", length, &mut out);
    let after = if encoded.last {
        After::Close
    } else {
        After::KeepAlive
    };
    if encoded.framing == Framing::Empty {
        return (without_date(&out), after);
    }
    let mut body = pin!(body);
    let mut written = 0u64;
    let complete = loop {
        let Some(frame) = block_on(body.frame()) else {
            break encode_end(&encoded.framing, written, &mut out).is_ok();
        };
        match frame.map(|frame| encode_frame(&encoded.framing, frame, &mut written, &mut out)) {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break false,
        }
    };
    (
        without_date(&out),
        if complete { after } else { After::Abort },
    )
}

/// The bytes as text, with the `date` line's value blanked.
fn without_date(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    text.split("\r\n")
        .map(|line| {
            if line.starts_with("date: ") {
                "date: <now>"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn frames(parts: &'static [&'static str]) -> Body {
    let frames = parts
        .iter()
        .map(|part| Ok::<_, Infallible>(Frame::data(Bytes::from_static(part.as_bytes()))));
    Body::new(StreamBody::new(stream::iter(frames)))
}

fn with_trailers() -> Body {
    let mut fields = HeaderMap::new();
    fields.insert("x-checksum", HeaderValue::from_static("abc"));
    fields.insert("x-other", HeaderValue::from_static("dropped"));
    let frames = [
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"data"))),
        Ok(Frame::trailers(fields)),
    ];
    Body::new(StreamBody::new(stream::iter(frames)))
}

fn header(response: &mut Response<Body>, name: &'static str, value: &'static str) {
    response
        .headers_mut()
        .append(name, HeaderValue::from_static(value));
}

/// Makes one response to encode.
type Make = fn() -> Response<Body>;

/// Responses covering every rule of the encoder.
const CASES: &[(&str, Make)] = &[
    ("text", || "Hello World\n".into_response()),
    ("empty", || Response::new(Body::empty())),
    ("created", || {
        (StatusCode::CREATED, "made\n").into_response()
    }),
    ("not found", || {
        (StatusCode::NOT_FOUND, "no\n").into_response()
    }),
    ("server error", || {
        (StatusCode::INTERNAL_SERVER_ERROR, "oops\n").into_response()
    }),
    ("unknown status", || {
        let mut response = "odd\n".into_response();
        *response.status_mut() = StatusCode::from_u16(599).unwrap_or(StatusCode::OK);
        response
    }),
    ("no content with a body", || {
        (StatusCode::NO_CONTENT, "ignored").into_response()
    }),
    ("not modified with headers", || {
        let mut response = (StatusCode::NOT_MODIFIED, "ignored").into_response();
        header(&mut response, "etag", "\"v1\"");
        header(&mut response, "content-length", "7");
        response
    }),
    ("repeated headers", || {
        let mut response = "cookies\n".into_response();
        header(&mut response, "set-cookie", "a=1");
        header(&mut response, "x-multi", "one");
        header(&mut response, "set-cookie", "b=2");
        header(&mut response, "x-multi", "two");
        response
    }),
    ("own content-length", || {
        let mut response = Response::new(Body::from("12345"));
        header(&mut response, "content-length", "5");
        response
    }),
    ("own content-length on an empty body", || {
        let mut response = Response::new(Body::empty());
        header(&mut response, "content-length", "0");
        response
    }),
    ("stream", || {
        Response::new(frames(&["one ", "", "two ", "three\n"]))
    }),
    ("empty stream", || Response::new(frames(&[]))),
    ("stream with a length", || {
        let mut response = Response::new(frames(&["ab", "cd"]));
        header(&mut response, "content-length", "4");
        response
    }),
    ("stream shorter than its length", || {
        let mut response = Response::new(frames(&["ab"]));
        header(&mut response, "content-length", "4");
        response
    }),
    ("stream with trailers", || {
        let mut response = Response::new(with_trailers());
        header(&mut response, "trailer", "x-checksum");
        response
    }),
    ("trailers not announced", || Response::new(with_trailers())),
    ("own transfer-encoding", || {
        let mut response = Response::new(frames(&["zip"]));
        header(&mut response, "transfer-encoding", "gzip");
        response
    }),
    ("own transfer-encoding on a full body", || {
        let mut response = Response::new(Body::from("full"));
        header(&mut response, "transfer-encoding", "chunked");
        response
    }),
    ("closing", || {
        let mut response = "bye\n".into_response();
        header(&mut response, "connection", "keep-alive");
        header(&mut response, "connection", "close");
        response
    }),
    ("own date", || {
        let mut response = "dated\n".into_response();
        header(&mut response, "date", "Sun, 06 Nov 1994 08:49:37 GMT");
        response
    }),
    ("informational", || {
        (StatusCode::EARLY_HINTS, "hints").into_response()
    }),
    ("switching protocols", || {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        header(&mut response, "upgrade", "websocket");
        response
    }),
    ("custom reason", || {
        let mut response = "reason\n".into_response();
        response
            .extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b"Fine Thanks"));
        response
    }),
    ("HTTP/1.0 stream", || {
        let mut response = Response::new(frames(&["old"]));
        *response.version_mut() = Version::HTTP_10;
        response
    }),
];

#[test]
fn every_response_is_written_as_hyper_writes_it() {
    for method in ["GET", "HEAD"] {
        for (case, make) in CASES {
            let hyper = through_hyper(method, *make);
            let (fast, after) = through_fast(method, *make);
            if after == After::Abort {
                // Both leave the client an incomplete response: hyper drops
                // what it buffered, the fast path stops mid-body.
                assert!(
                    fast.starts_with(&hyper),
                    "{method} {case}:\nhyper: {hyper:?}\nfast:  {fast:?}"
                );
            } else {
                assert_eq!(fast, hyper, "{method} {case}");
            }
        }
    }
}

#[test]
fn a_closing_response_ends_the_connection_and_a_plain_one_does_not() {
    let (_, after) = through_fast("GET", || "x".into_response());
    assert_eq!(after, After::KeepAlive);
    let (_, after) = through_fast("GET", || {
        let mut response = "x".into_response();
        header(&mut response, "connection", "Keep-Alive, Close");
        response
    });
    assert_eq!(after, After::Close);
    let (_, after) = through_fast("GET", || {
        let mut response = Response::new(frames(&["ab"]));
        header(&mut response, "content-length", "4");
        response
    });
    assert_eq!(after, After::Abort);
}

#[test]
fn the_date_is_an_imf_fixdate() {
    let mut out = Vec::new();
    extend_date(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.len(), 29, "{text}");
    assert!(text.ends_with(" GMT"), "{text}");
    assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
}

#[test]
fn simple_gets_and_heads_are_taken() {
    let head = b"GET /path?q=1 HTTP/1.1\r\nHost: x\r\nX-Many: a\r\nx-many: b\r\n\r\n";
    let mut pipelined = head.to_vec();
    pipelined.extend_from_slice(b"GET /next HTTP/1.1\r\n");
    let Some((request, len)) = parse(&pipelined, 1024) else {
        panic!("a plain GET is taken");
    };
    assert_eq!(len, head.len(), "only the first head is taken");
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.uri(), "/path?q=1");
    assert_eq!(request.version(), Version::HTTP_11);
    assert_eq!(request.headers()["host"], "x");
    let many: Vec<_> = request.headers().get_all("x-many").iter().collect();
    assert_eq!(many, ["a", "b"]);
    assert!(http_body::Body::is_end_stream(request.body()));

    for taken in [
        &b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: keep-alive\r\n\r\n",
    ] {
        assert!(
            parse(taken, 1024).is_some(),
            "{}",
            String::from_utf8_lossy(taken)
        );
    }
}

#[test]
fn everything_else_goes_to_hyper() {
    for head in [
        &b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nhost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nte: trailers\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\n",
        // What the gate refuses, it answers itself.
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: \r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a/b\r\n\r\n",
        b"GET host:80 HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET * HTTP/1.1\r\nhost: x\r\n\r\n",
    ] {
        assert!(
            parse(head, 1024).is_none(),
            "{}",
            String::from_utf8_lossy(head)
        );
    }
    let long = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(2000));
    assert!(
        parse(long.as_bytes(), 1024).is_none(),
        "over the head limit"
    );
}
