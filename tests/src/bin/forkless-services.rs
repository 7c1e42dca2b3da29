//! A test app that awaits tokio clients on every shard: tokio-postgres,
//! deadpool-postgres, redis and reqwest, with `tokio::spawn`,
//! `spawn_blocking`, tokio's timer and DNS, in a forkless handler or in an
//! axum `Router` (with a `WebSocketUpgrade` echo and tower-http's
//! `ServeDir`).
//!
//! Run with: `SERVICES_PG='host=127.0.0.1 port=5432 user=postgres'
//! SERVICES_PG_UNIX='host=/run/postgresql user=postgres'
//! SERVICES_REDIS=redis://127.0.0.1:6379/ SERVICES_PEER=http://127.0.0.1:8000/
//! cargo run -p forkless-tests --bin forkless-services -- --listen 127.0.0.1:0`
//! (`SERVICES_MODE=axum` serves the axum router; `SERVICES_STATIC=DIR` is what
//! `/static/` serves there).
//!
//! Routes in both modes: `/pg/{n}` (`SELECT n + 1` over TCP, the connection
//! task spawned on the shard), `/pg-unix/{n}` (the same over the Unix socket,
//! the connection task on `tokio::spawn`), `/pool/{n}` (through a
//! deadpool-postgres pool), `/redis/{n}` (`SET` then `GET`), `/redis-unix/{n}`
//! (over the Unix socket), `/http` (reqwest `GET` of the peer), `/spawn` and
//! `/blocking` (the thread `tokio::spawn` and `spawn_blocking` ran on, and
//! whether it was the handler's), `/sleep` (a 20 ms tokio sleep: the ms it
//! took), `/dns` (how many addresses `localhost` resolves to). Forkless mode
//! only: `/on-shard-task/{n}` (a redis `GET` in a task spawned on the shard).
//! Axum mode only: `/ws` (a WebSocket echo through axum's `WebSocketUpgrade`),
//! `/static/...` (`ServeDir`).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::routing::get;
use forkless::http::{IntoResponse, Request, Response, StatusCode};
use forkless::{Shard, shard_main};
use redis::AsyncCommands;
use tower_http::services::ServeDir;

/// The clients one shard holds.
struct Clients {
    pg: tokio_postgres::Client,
    pg_unix: tokio_postgres::Client,
    pool: deadpool_postgres::Pool,
    redis: redis::aio::MultiplexedConnection,
    redis_unix: redis::aio::MultiplexedConnection,
    http: reqwest::Client,
    peer: String,
    shard: usize,
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("set {name}"))
}

impl Clients {
    async fn connect(shard: usize) -> Result<Clients, String> {
        let pg_config = env("SERVICES_PG")?;
        let (pg, connection) = tokio_postgres::connect(&pg_config, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("postgres: {e}"))?;
        // The connection task on the shard: its socket's reads and writes
        // happen here, not on a tokio thread.
        forkless::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("postgres connection ended: {error}");
            }
        })
        .detach();
        let (pg_unix, connection) =
            tokio_postgres::connect(&env("SERVICES_PG_UNIX")?, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("postgres over the Unix socket: {e}"))?;
        tokio::spawn(connection);
        let pool = pool(&pg_config)?;
        let redis = redis_connection(&env("SERVICES_REDIS")?).await?;
        let redis_unix = match std::env::var("SERVICES_REDIS_UNIX") {
            Ok(url) => redis_connection(&url).await?,
            Err(_) => redis.clone(),
        };
        Ok(Clients {
            pg,
            pg_unix,
            pool,
            redis,
            redis_unix,
            http: reqwest::Client::new(),
            peer: env("SERVICES_PEER")?,
            shard,
        })
    }

    /// The answer to `path`, or what went wrong.
    async fn answer(&self, path: &str) -> Result<String, String> {
        let (route, arg) = match path.trim_start_matches('/').split_once('/') {
            Some((route, arg)) => (route, arg),
            None => (path.trim_start_matches('/'), ""),
        };
        let number = || {
            arg.parse::<i64>()
                .map_err(|_| format!("{arg}: not a number"))
        };
        match route {
            "pg" => select_plus_one(&self.pg, number()?).await,
            "pg-unix" => select_plus_one(&self.pg_unix, number()?).await,
            "pool" => {
                let client = self.pool.get().await.map_err(|e| e.to_string())?;
                select_plus_one(&client, number()?).await
            }
            "redis" => set_get(self.redis.clone(), self.shard, number()?).await,
            "redis-unix" => set_get(self.redis_unix.clone(), self.shard, number()?).await,
            "http" => {
                let response = self
                    .http
                    .get(&self.peer)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                response.text().await.map_err(|e| e.to_string())
            }
            "spawn" => {
                let here = std::thread::current().id();
                let there = tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    thread_of(here)
                });
                there.await.map_err(|e| e.to_string())
            }
            "blocking" => {
                let here = std::thread::current().id();
                tokio::task::spawn_blocking(move || thread_of(here))
                    .await
                    .map_err(|e| e.to_string())
            }
            "sleep" => {
                let start = Instant::now();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(start.elapsed().as_millis().to_string())
            }
            "dns" => {
                let addrs = tokio::net::lookup_host("localhost:80")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(addrs.count().to_string())
            }
            _ => Err(format!("no route {path}")),
        }
    }
}

fn pool(config: &str) -> Result<deadpool_postgres::Pool, String> {
    let config: tokio_postgres::Config = config.parse().map_err(|e| format!("{e}"))?;
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .build()
        .map_err(|e| format!("pool: {e}"))
}

async fn redis_connection(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("redis {url}: {e}"))?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("redis {url}: {e}"))
}

async fn select_plus_one(client: &tokio_postgres::Client, n: i64) -> Result<String, String> {
    let row = client
        .query_one("SELECT $1::int8 + 1", &[&n])
        .await
        .map_err(|e| e.to_string())?;
    let sum: i64 = row.try_get(0).map_err(|e| e.to_string())?;
    Ok(sum.to_string())
}

async fn set_get(
    mut redis: redis::aio::MultiplexedConnection,
    shard: usize,
    n: i64,
) -> Result<String, String> {
    let key = format!("k:{shard}:{n}");
    let () = redis.set(&key, n).await.map_err(|e| e.to_string())?;
    let value: i64 = redis.get(&key).await.map_err(|e| e.to_string())?;
    Ok(value.to_string())
}

/// The current thread's name, and whether it is the thread `caller` names.
fn thread_of(caller: std::thread::ThreadId) -> String {
    let current = std::thread::current();
    format!(
        "{} same={}",
        current.name().unwrap_or("?"),
        current.id() == caller
    )
}

fn reply(answer: Result<String, String>) -> Response {
    match answer {
        Ok(body) => body.into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error).into_response(),
    }
}

#[shard_main(listen = "127.0.0.1:0")]
async fn main(shard: Shard) -> Result<(), String> {
    let clients = Arc::new(Clients::connect(shard.id().get()).await?);
    if std::env::var("SERVICES_MODE").is_ok_and(|mode| mode == "axum") {
        return shard
            .serve_tower(router(clients))
            .await
            .map_err(|e| e.to_string());
    }
    shard
        .serve(move |request: Request| {
            let clients = clients.clone();
            async move {
                let path = request.uri().path().to_owned();
                if let Some(n) = path.strip_prefix("/on-shard-task/") {
                    let n = n.to_owned();
                    // A task of its own on this shard, awaiting a tokio client.
                    let task =
                        forkless::spawn(
                            async move { clients.answer(&format!("/redis/{n}")).await },
                        );
                    return reply(task.await);
                }
                reply(clients.answer(&path).await)
            }
        })
        .await
        .map_err(|e| e.to_string())
}

fn router(clients: Arc<Clients>) -> Router {
    let mut router = Router::new()
        .route("/ws", get(websocket))
        .route("/{route}", get(axum_answer))
        .route("/{route}/{arg}", get(axum_answer));
    if let Ok(dir) = std::env::var("SERVICES_STATIC") {
        router = router.nest_service("/static", ServeDir::new(dir));
    }
    router.with_state(clients)
}

async fn axum_answer(
    State(clients): State<Arc<Clients>>,
    uri: axum::http::Uri,
) -> axum::response::Response {
    match clients.answer(uri.path()).await {
        Ok(body) => axum::response::IntoResponse::into_response(body),
        Err(error) => {
            axum::response::IntoResponse::into_response((StatusCode::INTERNAL_SERVER_ERROR, error))
        }
    }
}

async fn websocket(upgrade: WebSocketUpgrade) -> axum::response::Response {
    upgrade.on_upgrade(echo)
}

/// Sends back every text and binary message until the client closes.
async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let echoed = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) => break,
            _ => continue,
        };
        if socket.send(echoed).await.is_err() {
            break;
        }
    }
}
