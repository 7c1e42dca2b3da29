//! A test app for supervision and shutdown: a route that kills its shard
//! from a background task, slow and hanging routes.
//!
//! Run with: `cargo run -p forkless-tests --bin forkless-supervised -- --listen 127.0.0.1:0`
//!
//! Routes: `/` (ok), `/boot` (a token that changes when the shard restarts),
//! `/crash` (answers, then a background task panics and takes the shard
//! down), `/slow/{ms}` (answers after `ms` milliseconds), `/block/{ms}`
//! (blocks its shard's thread for `ms` milliseconds), `/hang` (never
//! answers). With `FORKLESS_TEST_CRASH_AT_START=1` every shard panics as
//! soon as it starts (a crash loop); with `FORKLESS_TEST_CRASH_ANEW=1` every
//! incarnation after the first does (a reload whose new code fails). With
//! `FORKLESS_TEST_RESTART_DELAY_MS=N` every incarnation after the first
//! waits `N` ms before it listens (a long, known restart or reload window).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use forkless::prelude::*;

#[shard_main(listen = "127.0.0.1:0")]
async fn main(shard: Shard) -> Result<(), forkless::Error> {
    if std::env::var_os("FORKLESS_TEST_CRASH_AT_START").is_some() {
        panic!("shard {} fails at start on purpose", shard.id());
    }
    let anew = shard.incarnation() > 1;
    if anew && std::env::var_os("FORKLESS_TEST_CRASH_ANEW").is_some() {
        panic!(
            "shard {} fails in its new incarnation on purpose",
            shard.id()
        );
    }
    if let Some(delay) = restart_delay().filter(|_| anew) {
        forkless::time::sleep(delay).await;
    }
    let boot = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    shard
        .serve(move |request: Request| async move {
            let path = request.uri().path();
            if let Some(ms) = path.strip_prefix("/block/") {
                // Blocks the whole shard: what the stall detector reports.
                let Ok(ms) = ms.parse::<u64>() else {
                    return (StatusCode::BAD_REQUEST, "bad duration\n").into_response();
                };
                std::thread::sleep(Duration::from_millis(ms));
                return "blocked\n".into_response();
            }
            if let Some(ms) = path.strip_prefix("/slow/") {
                let Ok(ms) = ms.parse::<u64>() else {
                    return (StatusCode::BAD_REQUEST, "bad duration\n").into_response();
                };
                forkless::time::sleep(Duration::from_millis(ms)).await;
                return "slow\n".into_response();
            }
            match path {
                "/" => "ok\n".into_response(),
                "/boot" => format!("{boot}\n").into_response(),
                "/crash" => {
                    forkless::spawn(async {
                        forkless::time::sleep(Duration::from_millis(20)).await;
                        panic!("a background task panics on purpose");
                    })
                    .detach();
                    "crashing\n".into_response()
                }
                "/hang" => {
                    std::future::pending::<()>().await;
                    "never\n".into_response()
                }
                _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
            }
        })
        .await
}

/// With `FORKLESS_TEST_RESTART_DELAY_MS`, how long a shard's later
/// incarnations wait before serving.
fn restart_delay() -> Option<Duration> {
    let ms = std::env::var("FORKLESS_TEST_RESTART_DELAY_MS").ok()?;
    ms.parse().ok().map(Duration::from_millis)
}
