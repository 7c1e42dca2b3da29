//! A test app for the end-to-end tests: routes that misbehave on purpose.
//!
//! Run with: `cargo run -p forkless-tests --bin forkless-testapp -- --listen 127.0.0.1:0`
//!
//! Routes: `/` (ok), `/echo/{text}` (answers `text`), `/panic` (the handler
//! panics), `/slow` (answers after 300 ms), `/boot` (a token that changes
//! when the shard restarts), `/pid` (the process id), `/panics` (this shard's handler-panic count),
//! `/upload` (reads the body with `read_body_default`, or with
//! `read_body(request, N)` for `/upload?limit=N`, and answers its length),
//! `/big/{n}` (answers `n` bytes), `/open` (this shard's open connections).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use forkless::http::{read_body, read_body_default};
use forkless::prelude::*;

#[shard_main(listen = "127.0.0.1:0")]
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
