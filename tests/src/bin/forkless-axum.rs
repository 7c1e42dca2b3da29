//! An axum test app for the end-to-end tests: an unmodified axum `Router`
//! with state, extractors and tower-http middleware, served by forkless.
//!
//! Run with: `cargo run -p forkless-tests --bin forkless-axum -- --listen 127.0.0.1:0`
//!
//! Routes: `/` (ok), `/users/{id}` (a numeric path parameter), `/search?q=&n=`
//! (query), `POST /json` (a JSON body, answered in JSON), `POST /upload`
//! (the body's length; tower-http's `RequestBodyLimitLayer` at 64 KiB), `/big`
//! (9,000 bytes, gzipped when asked by tower-http's `CompressionLayer`), `/shard` (the `ShardId` extractor), `/context` (the
//! `ShardContext` extractor), `/extension` (`Extension<ShardContext>`),
//! `/hits` (a per-shard counter in the router's state), `/slow` (answers
//! after 300 ms), `/too-slow` (never answers in time: the forkless timeout
//! layer answers `504` after 500 ms), `/panic` (the handler panics),
//! `/bus/{to}` (asks shard `to` over the bus, with the state's `SendBus`),
//! `/ctx-bus/{to}` (the same through `ShardContext::bus_with_reply`),
//! `/tokio-timeout` (sleeps 5 s behind tower-http's `TimeoutLayer` of 200 ms,
//! which sleeps on tokio's timer: `504`). Around all: tower-http's `TraceLayer`,
//! `CorsLayer` and `CompressionLayer`, and tower's `ConcurrencyLimitLayer`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use forkless::bus::SendBus;
use forkless::http::{ShardContext, TimeoutLayer};
use forkless::{Shard, ShardId, shard_main};
use serde::Deserialize;
use serde_json::{Value, json};
use tower::limit::ConcurrencyLimitLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

/// A question over the bus: who asks.
struct Ping(ShardId);

#[derive(Clone)]
struct AppState {
    /// Requests this shard served on `/hits`: per shard, since every shard
    /// builds its own state.
    hits: Arc<AtomicU64>,
    bus: SendBus<Ping, String>,
}

#[shard_main(listen = "127.0.0.1:0")]
async fn main(shard: Shard) -> Result<(), forkless::Error> {
    // Answer pings from any shard (the bus's own `!Send` side, as usual).
    let bus = shard.bus_with_reply::<Ping, String>();
    let me = shard.id();
    let answers = bus.clone();
    forkless::spawn(async move {
        loop {
            let request = answers.recv().await;
            let Ping(from) = request.msg;
            request.reply(format!("shard {me} answered shard {from}\n"));
        }
    })
    .detach();

    let state = AppState {
        hits: Arc::new(AtomicU64::new(0)),
        bus: bus.into(),
    };
    shard.serve_tower(app(state)).await
}

fn app(state: AppState) -> Router {
    let tokio_timeout = Router::new()
        .route(
            "/tokio-timeout",
            get(|| async {
                forkless::time::sleep(Duration::from_secs(5)).await;
                "never\n"
            }),
        )
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_millis(200),
        ));
    Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route("/users/{id}", get(user))
        .route("/search", get(search))
        .route("/json", post(echo_json))
        .route(
            "/upload",
            post(|body: Bytes| async move { format!("{}\n", body.len()) })
                .layer(RequestBodyLimitLayer::new(64 * 1024)),
        )
        .route("/big", get(|| async { "forkless ".repeat(1000) }))
        .route(
            "/shard",
            get(|id: ShardId| async move { format!("{id}\n") }),
        )
        .route("/context", get(context))
        .route(
            "/extension",
            get(|Extension(ctx): Extension<ShardContext>| async move { format!("{}\n", ctx.id()) }),
        )
        .route("/hits", get(hits))
        .route("/slow", get(slow))
        .route("/too-slow", get(too_slow))
        .route("/panic", get(panic))
        .route("/bus/{to}", get(ask))
        .route("/ctx-bus/{to}", get(ask_through_context))
        .merge(tokio_timeout)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_millis(500),
        ))
        .layer(CompressionLayer::new())
        .layer(CorsLayer::permissive())
        .layer(ConcurrencyLimitLayer::new(64))
        .layer(TraceLayer::new_for_http())
}

async fn user(Path(id): Path<u64>) -> String {
    format!("user {id}\n")
}

#[derive(Deserialize)]
struct Search {
    q: String,
    #[serde(default = "one")]
    n: u32,
}

fn one() -> u32 {
    1
}

async fn search(Query(search): Query<Search>) -> String {
    format!("{} x{}\n", search.q, search.n)
}

async fn echo_json(id: ShardId, Json(body): Json<Value>) -> Json<Value> {
    Json(json!({ "got": body, "shard": id.get() }))
}

async fn context(ctx: ShardContext) -> String {
    format!("{} of {}\n", ctx.id(), ctx.count())
}

async fn hits(State(state): State<AppState>) -> String {
    format!("{}\n", state.hits.fetch_add(1, Ordering::Relaxed) + 1)
}

async fn slow() -> &'static str {
    forkless::time::sleep(Duration::from_millis(300)).await;
    "slow\n"
}

async fn too_slow() -> &'static str {
    forkless::time::sleep(Duration::from_secs(30)).await;
    "too late\n"
}

async fn panic() -> &'static str {
    panic!("the /panic route panics on purpose")
}

async fn ask(
    State(state): State<AppState>,
    id: ShardId,
    Path(to): Path<usize>,
) -> Result<String, StatusCode> {
    state
        .bus
        .call(ShardId::new(to), Ping(id))
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
}

async fn ask_through_context(
    ctx: ShardContext,
    Path(to): Path<usize>,
) -> Result<String, StatusCode> {
    ctx.bus_with_reply::<Ping, String>()
        .call(ShardId::new(to), Ping(ctx.id()))
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
}
