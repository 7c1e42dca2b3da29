//! PostgreSQL: the schema and its migration, one small connection pool per
//! shard, the prepared statements, and what a failure answers.
//!
//! - **Migrations once, under a lock.** [`migrate`] runs at start, before
//!   any shard, on a connection of its own: `CREATE TABLE IF NOT EXISTS`
//!   between `pg_advisory_lock` and `pg_advisory_unlock`, so processes
//!   starting together (replicas, the old and new binary of an upgrade)
//!   neither race nor fail on each other's half-made table.
//! - **A pool per shard.** deadpool with a manager of our own ([`Manager`])
//!   whose connections' driver tasks run on the shard that made them
//!   (`forkless::spawn`): the socket is read and written on the shard, one
//!   cross-thread wake per answer instead of two with the driver on
//!   `tokio::spawn` (ARCHITECTURE.md, "tokio on a shard"). Nothing is
//!   shared between shards; each holds at most [`pool_size`] connections.
//! - **Prepared statements.** Every connection prepares the app's few
//!   statements once, when it is made ([`Statements`]), so a request sends
//!   only `Bind`/`Execute`.
//! - **Bounded waits.** Every database step of a request (a connection from
//!   the pool, a new connection, the query) runs under [`DB_TIMEOUT`] on the
//!   shard's timer; past it, or when the server is gone, the request gets
//!   `503` with a JSON error ([`DbError`]). A broken connection is dropped
//!   when it goes back to the pool, and the next request makes a new one:
//!   when the database is back, the app is too, with no restart.

use std::fmt;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio_postgres::types::{FromSqlOwned, ToSql};
use tokio_postgres::{Client, NoTls, Statement};

/// Longest a request waits for the database, all steps together.
pub(crate) const DB_TIMEOUT: Duration = Duration::from_millis(1500);

/// Longest a new connection may take to be made (inside [`DB_TIMEOUT`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections all shards together hold at most by default (each shard
/// gets its share, at least 1, at most 4).
const TOTAL_CONNECTIONS: usize = 32;

/// The advisory lock key the migration holds ("links" in ASCII).
const MIGRATION_LOCK: i64 = 0x6c_69_6e_6b_73;

/// The schema: idempotent, run at every start.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS links (
    code text PRIMARY KEY,
    url text NOT NULL,
    hits bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
)";

/// Connections per shard: `LINKS_POOL_SIZE` if set, otherwise an even share
/// of [`TOTAL_CONNECTIONS`] between 1 and 4.
pub(crate) fn pool_size(shards: usize) -> usize {
    std::env::var("LINKS_POOL_SIZE")
        .ok()
        .and_then(|text| text.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| (TOTAL_CONNECTIONS / shards.max(1)).clamp(1, 4))
}

/// Where to connect, for messages: host(s), port and database, never the
/// password.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}:{port}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("(default)")
    )
}

/// Connects once (within `timeout`) and brings the schema up to date under
/// the migration lock.
pub(crate) async fn migrate(
    config: &tokio_postgres::Config,
    timeout: Duration,
) -> Result<(), tokio_postgres::Error> {
    let mut config = config.clone();
    config.connect_timeout(timeout);
    let (client, connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let migrated = client.batch_execute(SCHEMA).await;
    // Unlocked in any case (closing the session would unlock it too).
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    drop(client);
    let _ = driver.await;
    migrated?;
    unlocked.map(|_| ())
}

/// The statements every pooled connection prepares when it is made.
#[derive(Debug)]
pub(crate) struct Statements {
    /// `$1` code, `$2` url: one row back unless the code is taken.
    pub(crate) insert: Statement,
    /// `$1` code: the url.
    pub(crate) lookup: Statement,
    /// `$1` code, `$2` url: one row back if the code exists.
    pub(crate) update: Statement,
    /// `$1` code: rows deleted.
    pub(crate) delete: Statement,
    /// `$1` code: the stored hit count.
    pub(crate) hits: Statement,
    /// `$1` codes, `$2` counts: adds each count to its code's hits.
    pub(crate) add_hits: Statement,
}

/// A pooled connection and its statements.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) statements: Statements,
}

/// Makes connections whose driver runs on the shard that asked for them.
#[derive(Debug)]
pub(crate) struct Manager {
    config: tokio_postgres::Config,
}

pub(crate) type Pool = managed::Pool<Manager>;

/// A pool of at most `size` connections to `config`, for one shard. Makes
/// no connection until the first request needs one.
pub(crate) fn pool(config: &tokio_postgres::Config, size: usize) -> Result<Pool, String> {
    let mut config = config.clone();
    config.connect_timeout(CONNECT_TIMEOUT);
    managed::Pool::builder(Manager { config })
        .max_size(size)
        .build()
        .map_err(|e| format!("cannot build the connection pool: {e}"))
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        // On this shard: the socket is polled here, not on a tokio thread.
        forkless::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "database connection ended");
            }
        })
        .detach();
        let statements = Statements {
            insert: client
                .prepare(
                    "INSERT INTO links (code, url) VALUES ($1, $2) \
                     ON CONFLICT (code) DO NOTHING RETURNING code",
                )
                .await?,
            lookup: client
                .prepare("SELECT url FROM links WHERE code = $1")
                .await?,
            update: client
                .prepare("UPDATE links SET url = $2 WHERE code = $1 RETURNING code")
                .await?,
            delete: client.prepare("DELETE FROM links WHERE code = $1").await?,
            hits: client
                .prepare("SELECT hits FROM links WHERE code = $1")
                .await?,
            add_hits: client
                .prepare(
                    "UPDATE links SET hits = links.hits + batch.n \
                     FROM unnest($1::text[], $2::int8[]) AS batch(code, n) \
                     WHERE links.code = batch.code",
                )
                .await?,
        };
        Ok(Conn { client, statements })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<tokio_postgres::Error> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

/// Why a database step failed, and what the client is told.
#[derive(Debug)]
pub(crate) enum DbError {
    /// The server is down, unreachable, shutting down, or slower than
    /// [`DB_TIMEOUT`]: `503`, try again.
    Unavailable(String),
    /// The server refused the statement (a bug or a schema mismatch): `500`.
    Failed(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Unavailable(why) => write!(f, "database unavailable: {why}"),
            DbError::Failed(why) => write!(f, "database error: {why}"),
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(error: tokio_postgres::Error) -> DbError {
        let text = one_line(&error);
        match error.code().map(|state| state.code()) {
            // No SQLSTATE: I/O, a closed connection, a failed connect.
            None => DbError::Unavailable(text),
            // Connection exceptions, shutdown, cannot connect now, too many
            // connections.
            Some(code) if code.starts_with("08") || code.starts_with("57P") || code == "53300" => {
                DbError::Unavailable(text)
            }
            Some(_) => DbError::Failed(text),
        }
    }
}

impl From<managed::PoolError<tokio_postgres::Error>> for DbError {
    fn from(error: managed::PoolError<tokio_postgres::Error>) -> DbError {
        match error {
            managed::PoolError::Backend(error) => error.into(),
            other => DbError::Unavailable(other.to_string()),
        }
    }
}

/// Runs `step` (which takes a connection from `pool`) under [`DB_TIMEOUT`].
pub(crate) async fn with_conn<T, F>(pool: &Pool, step: F) -> Result<T, DbError>
where
    F: AsyncFnOnce(&Conn) -> Result<T, tokio_postgres::Error>,
{
    let work = async {
        let conn = pool.get().await?;
        step(&conn).await.map_err(DbError::from)
    };
    match forkless::time::timeout(DB_TIMEOUT, work).await {
        Some(result) => result,
        None => Err(DbError::Unavailable(format!(
            "no answer within {} ms",
            DB_TIMEOUT.as_millis()
        ))),
    }
}

/// The first column of the row `statement` (one of [`Statements`]) finds
/// with `params`, if any, under [`DB_TIMEOUT`].
pub(crate) async fn find<T: FromSqlOwned>(
    pool: &Pool,
    statement: fn(&Statements) -> &Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<T>, DbError> {
    with_conn(pool, async |conn| {
        let row = conn
            .client
            .query_opt(statement(&conn.statements), params)
            .await?;
        row.map(|row| row.try_get(0)).transpose()
    })
    .await
}

/// An error and its causes on one line.
pub(crate) fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text.replace('\n', " ")
}
