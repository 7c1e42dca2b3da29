//! A test app for the end-to-end tests: routes that misbehave on purpose.
//!
//! Run with: `cargo run -p forkless-tests --bin forkless-testapp -- --listen 127.0.0.1:0`
//!
//! Routes: `/` (ok), `/echo/{text}` (answers `text`), `/panic` (the handler
//! panics), `/slow` (answers after 300 ms), `/boot` (a token that changes
//! when the shard restarts), `/pid` (the process id), `/panics` (this shard's handler-panic count),
//! `/upload` (reads the body with `read_body_default`, or with
//! `read_body(request, N)` for `/upload?limit=N`, and answers its length),
//! `/big/{n}` (answers `n` bytes), `/open` (this shard's open connections),
//! `/greeting` (the app flag `--greeting`, env `TESTAPP_GREETING`, as this
//! shard reads it).
//!
//! For the conformance tests, which pin down the bytes of responses:
//! `/status/{code}` (answers that status with a short body), `/headers`
//! (custom and repeated headers, an explicit `content-type`), `/stream/{n}`
//! (`n` chunks of unknown total length), `/stream-len/{n}` (the same chunks
//! with an explicit `content-length`), `/close` (sets `connection: close`
//! itself), `/method` (answers the method and HTTP version), `/query` (the
//! request target as the handler sees it) and `/host` (the `Host` header).

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use forkless::http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, SET_COOKIE,
};
use forkless::http::{Body, HeaderValue, read_body, read_body_default};
use forkless::prelude::*;
use http_body::Frame;
use http_body_util::StreamBody;

/// The test app's own flag, read on every shard.
#[derive(clap::Args, Debug)]
struct TestArgs {
    /// What `/greeting` answers.
    #[arg(long, env = "TESTAPP_GREETING", default_value = "hello")]
    greeting: String,
}

#[shard_main(listen = "127.0.0.1:0", args = TestArgs)]
async fn main(shard: Shard) -> Result<(), forkless::Error> {
    // Shard-local, `!Send` state that a restart would reset.
    let boot = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let served = Rc::new(Cell::new(0u64));
    let this = shard.clone();
    shard
        .serve(move |request: Request| {
            let served = served.clone();
            let shard = this.clone();
            async move {
                served.set(served.get() + 1);
                if let Some(response) = conformance(&request) {
                    return response;
                }
                let path = request.uri().path();
                if let Some(text) = path.strip_prefix("/echo/") {
                    return text.to_owned().into_response();
                }
                if let Some(size) = path.strip_prefix("/big/") {
                    return match size.parse::<usize>() {
                        Ok(size) => vec![b'x'; size].into_response(),
                        Err(_) => (StatusCode::BAD_REQUEST, "bad size\n").into_response(),
                    };
                }
                if path == "/upload" {
                    let limit = request
                        .uri()
                        .query()
                        .and_then(|q| q.strip_prefix("limit="))
                        .and_then(|n| n.parse().ok());
                    let body = match limit {
                        Some(limit) => read_body(request, limit).await,
                        None => read_body_default(request).await,
                    };
                    return body
                        .map(|bytes| format!("{}\n", bytes.len()))
                        .into_response();
                }
                match path {
                    "/" => "ok\n".into_response(),
                    "/panic" => panic!("the /panic route panics on purpose"),
                    "/slow" => {
                        forkless::time::sleep(Duration::from_millis(300)).await;
                        "slow\n".into_response()
                    }
                    "/boot" => format!("{boot}\n").into_response(),
                    "/pid" => format!("{}\n", std::process::id()).into_response(),
                    "/greeting" => match shard.args::<TestArgs>() {
                        Some(args) => format!("{}\n", args.greeting).into_response(),
                        None => (StatusCode::INTERNAL_SERVER_ERROR, "no args\n").into_response(),
                    },
                    "/served" => format!("{}\n", served.get()).into_response(),
                    "/open" => format!("{}\n", shard.counters().snapshot().connections_open)
                        .into_response(),
                    "/panics" => {
                        format!("{}\n", shard.counters().snapshot().handler_panics).into_response()
                    }
                    _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
                }
            }
        })
        .await
}

/// The routes of the conformance tests: each answers from the request head alone.
fn conformance(request: &Request) -> Option<Response> {
    let path = request.uri().path();
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse()
            .ok()
            .and_then(|code| StatusCode::from_u16(code).ok())
            .filter(|status| !status.is_informational());
        return Some(match status {
            Some(status) => (status, "status\n").into_response(),
            None => (StatusCode::BAD_REQUEST, "bad status\n").into_response(),
        });
    }
    if let Some(count) = path.strip_prefix("/stream/") {
        return Some(match count.parse() {
            Ok(count) => streamed(count).into_response(),
            Err(_) => (StatusCode::BAD_REQUEST, "bad count\n").into_response(),
        });
    }
    if let Some(count) = path.strip_prefix("/stream-len/") {
        return Some(match count.parse() {
            Ok(count) => {
                let length: usize = chunks(count).map(|chunk| chunk.len()).sum();
                let mut response = streamed(count).into_response();
                response
                    .headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(length));
                response
            }
            Err(_) => (StatusCode::BAD_REQUEST, "bad count\n").into_response(),
        });
    }
    let response = match path {
        "/headers" => {
            let mut response = "{}\n".into_response();
            let headers = response.headers_mut();
            let multi = HeaderName::from_static("x-multi");
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(
                HeaderName::from_static("x-single"),
                HeaderValue::from_static("one"),
            );
            headers.append(multi.clone(), HeaderValue::from_static("first"));
            headers.append(multi, HeaderValue::from_static("second"));
            headers.append(SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
            headers.append(SET_COOKIE, HeaderValue::from_static("b=2; HttpOnly"));
            response
        }
        "/close" => {
            let mut response = "closing\n".into_response();
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            response
        }
        "/method" => format!("{} {:?}\n", request.method(), request.version()).into_response(),
        "/query" => format!("{}\n", request.uri()).into_response(),
        "/host" => match request.headers().get(HOST) {
            Some(host) => Response::new(Body::from([host.as_bytes(), b"\n"].concat())),
            None => (StatusCode::BAD_REQUEST, "no host\n").into_response(),
        },
        _ => return None,
    };
    Some(response)
}

/// The chunks `/stream/{n}` and `/stream-len/{n}` answer: `chunk 0\n`, `chunk 1\n`, ...
fn chunks(count: usize) -> impl Iterator<Item = Bytes> {
    (0..count).map(|i| Bytes::from(format!("chunk {i}\n")))
}

/// A body of `count` chunks whose total length hyper is not told.
fn streamed(count: usize) -> Response {
    let frames = chunks(count).map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    Response::new(Body::new(StreamBody::new(futures::stream::iter(frames))))
}
