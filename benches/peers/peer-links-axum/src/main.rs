//! peer-links-axum: `GET /{code}` of `apps/links` written the usual tokio
//! way, the peer the links benchmark measures forkless against: axum on
//! tokio's multi-thread (work-stealing) runtime, a deadpool-postgres pool
//! (its connections' drivers on `tokio::spawn`, statements prepared once
//! per connection with `prepare_cached`), the same CLOCK cache
//! (`apps/links/src/cache.rs`, one per worker thread, as links keeps one
//! per shard) and the same batched hit counts (a map behind a mutex,
//! flushed every second in one statement).
//!
//! Only the redirect is served (the benchmark creates its codes through
//! links, which migrates the table); no invalidation: the benchmark
//! deletes nothing.
//!
//! Run with: `DATABASE_URL=postgres://postgres@127.0.0.1/postgres
//! cargo run --release -p peer-links-axum -- --threads 1 --listen 127.0.0.1:0`
//! (`LINKS_CACHE_SIZE=0` turns the cache off, as for links).

#[path = "../../args.rs"]
mod args;
// Only `get`, `generation` and `fill` are used here.
#[allow(dead_code)]
#[path = "../../../../apps/links/src/cache.rs"]
mod cache;

use std::cell::RefCell;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deadpool_postgres::{Manager, Pool};

/// Longest a request waits for the database (as links).
const DB_TIMEOUT: Duration = Duration::from_millis(1500);

thread_local! {
    static CACHE: RefCell<cache::Cache> = RefCell::new(cache::Cache::new(
        std::env::var("LINKS_CACHE_SIZE")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(4096),
    ));
}

#[derive(Clone)]
struct App {
    pool: Pool,
    hits: Arc<Mutex<HashMap<String, u64>>>,
}

fn main() -> ExitCode {
    let args = args::parse();
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("error: set DATABASE_URL");
        return ExitCode::from(2);
    };
    let config: tokio_postgres::Config = match url.parse() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: DATABASE_URL: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args.listen, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(addr: std::net::SocketAddr, config: tokio_postgres::Config) -> Result<(), String> {
    let manager = Manager::new(config, tokio_postgres::NoTls);
    let pool = Pool::builder(manager)
        .max_size(4)
        .build()
        .map_err(|e| format!("pool: {e}"))?;
    let app = App {
        pool,
        hits: Arc::default(),
    };
    tokio::spawn(flush_periodically(app.clone()));
    let router = Router::new()
        .route("/{code}", get(redirect))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{local}");
    axum::serve(listener, router)
        .await
        .map_err(|e| e.to_string())
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = format!("{{\"error\":\"{message}\"}}\n");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn redirect(State(app): State<App>, Path(code): Path<String>) -> Response {
    if code.len() != 7 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return error(StatusCode::BAD_REQUEST, "malformed code");
    }
    // As links does: the cached URL copied into the header value, no
    // `Rc` (which is not `Send`) held across an await.
    let cached = CACHE.with(|cache| {
        let url = cache.borrow_mut().get(&code)?;
        HeaderValue::from_str(&url).ok()
    });
    let location = match cached {
        Some(location) => location,
        None => {
            let generation = CACHE.with(|cache| cache.borrow().generation());
            let lookup = async {
                let client = app.pool.get().await.map_err(|e| e.to_string())?;
                let statement = client
                    .prepare_cached("SELECT url FROM links WHERE code = $1")
                    .await
                    .map_err(|e| e.to_string())?;
                let row = client
                    .query_opt(&statement, &[&code])
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(row.map(|row| row.get::<_, String>(0)))
            };
            match tokio::time::timeout(DB_TIMEOUT, lookup).await {
                Ok(Ok(Some(url))) => {
                    let Ok(location) = HeaderValue::from_str(&url) else {
                        return error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "stored URL is not a header",
                        );
                    };
                    // The task may have moved threads: this worker's cache.
                    CACHE.with(|cache| cache.borrow_mut().fill(generation, &code, url.into()));
                    location
                }
                Ok(Ok(None)) => return error(StatusCode::NOT_FOUND, "no such code"),
                Ok(Err(_)) | Err(_) => {
                    return error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
                }
            }
        }
    };
    *app.hits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(code)
        .or_insert(0) += 1;
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, location)],
    )
        .into_response()
}

/// Writes the counted hits every second, in one statement.
async fn flush_periodically(app: App) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let batch = std::mem::take(&mut *app.hits.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            continue;
        }
        let (codes, counts): (Vec<&str>, Vec<i64>) = batch
            .iter()
            .map(|(code, &n)| (code.as_str(), i64::try_from(n).unwrap_or(i64::MAX)))
            .unzip();
        let written = async {
            let client = app.pool.get().await.map_err(|e| e.to_string())?;
            client
                .execute(
                    "UPDATE links SET hits = links.hits + batch.n \
                     FROM unnest($1::text[], $2::int8[]) AS batch(code, n) \
                     WHERE links.code = batch.code",
                    &[&codes, &counts],
                )
                .await
                .map_err(|e| e.to_string())
        };
        if !matches!(tokio::time::timeout(DB_TIMEOUT, written).await, Ok(Ok(_))) {
            let mut hits = app.hits.lock().unwrap_or_else(|e| e.into_inner());
            for (code, n) in batch {
                *hits.entry(code).or_insert(0) += n;
            }
        }
    }
}
