//! links: a URL shortener on PostgreSQL, the real-world demo of forkless.
//!
//! Run with: `cargo run --release -p links -- --database-url postgres://user:pass@host/db`
//! (or with `DATABASE_URL` set), then
//!
//! ```sh
//! curl -i -X POST -d '{"url":"https://example.com/"}' http://127.0.0.1:8080/links  # 201 {"code":"aZ3k9Qx",...}
//! curl -i http://127.0.0.1:8080/aZ3k9Qx                # 301, Location: https://example.com/
//! curl http://127.0.0.1:8080/links/aZ3k9Qx/stats       # {"code":"aZ3k9Qx","hits":1}
//! curl -i -X PUT -d '{"url":"https://example.org/"}' http://127.0.0.1:8080/links/aZ3k9Qx  # 200
//! curl -i -X DELETE http://127.0.0.1:8080/links/aZ3k9Qx  # 204
//! ```
//!
//! `--shards N`, `--listen IP:PORT`, `--admin IP:PORT` and `--help` work as in
//! every forkless binary. Settings of the app: `--database-url` or
//! `DATABASE_URL` (a `postgres://` URL or a `key=value` string),
//! `LINKS_POOL_SIZE` (connections per shard; default an even share of 32,
//! 1 to 4), `LINKS_CACHE_SIZE` (codes cached per shard, default 4096, 0
//! for none), `LINKS_BASE_URL` (what `short_url` starts with; default
//! `http://` and the request's `Host`).
//!
//! | request | answers |
//! |---|---|
//! | `POST /links`, `{"url": "https://..."}` | `201` `{"code", "url", "short_url"}`; `400` for a body that is not that JSON or a URL that is not absolute `http(s)` of at most 2048 bytes; `413` over 8 KiB |
//! | `GET /{code}` (or `HEAD`) | `301` with `Location`; `404` unknown code; `400` malformed code (7 letters and digits) |
//! | `PUT /links/{code}`, `{"url": ...}` | `200` `{"code", "url"}`; `404` |
//! | `DELETE /links/{code}` | `204`; `404` |
//! | `GET /links/{code}/stats` | `200` `{"code", "hits"}`; `404` |
//!
//! Errors are JSON, `{"error": "..."}`. When the database is down or slower
//! than 1.5 s, what needs it answers `503` (with `Retry-After: 1`) at once,
//! while redirects of cached codes go on; when it is back, so is the app.
//!
//! How it is built (docs/databases.md walks through it):
//!
//! - at start, before any shard, one connection checks the database (one
//!   line and exit 1 when it is unreachable) and migrates the schema under
//!   an advisory lock (`db.rs`);
//! - each shard has its own small pool, connections whose drivers run on
//!   the shard, statements prepared once per connection (`db.rs`);
//! - each shard caches hot codes (`cache.rs`, `state.rs`); a delete or an
//!   update commits, then invalidates the code on every shard over the bus
//!   and waits for all of them before it answers (`invalidate.rs`);
//! - redirects are counted per shard and written in one statement a second
//!   and at shutdown; stats add every shard's unflushed count (`hits.rs`).
//!
//! `--database-url` is read here, before forkless parses the command line
//! (which does not take app flags yet): the process re-executes itself
//! with the flag moved into `DATABASE_URL`.

mod api;
mod cache;
mod code;
mod db;
mod hits;
mod invalidate;
mod state;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

/// The database every shard connects to, parsed once at start.
static DATABASE: OnceLock<tokio_postgres::Config> = OnceLock::new();

/// How long the check at start waits for the database.
const START_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    match take_database_url(&args) {
        Ok(Some((url, rest))) => return reexec(&url, &rest),
        Ok(None) => {}
        Err(message) => {
            eprintln!("links: {message}");
            return ExitCode::from(2);
        }
    }
    // `--help`, `--version` and `top` need no database.
    let needs_database = !args.iter().skip(1).any(|arg| {
        matches!(
            arg.to_str(),
            Some("--help" | "-h" | "--version" | "-V" | "top")
        )
    });
    if needs_database && let Err(message) = prepare_database() {
        eprintln!("links: {message}");
        return ExitCode::FAILURE;
    }
    serve::run()
}

/// `--database-url URL` or `--database-url=URL` out of `args`: the URL and
/// the other arguments.
fn take_database_url(args: &[OsString]) -> Result<Option<(OsString, Vec<OsString>)>, String> {
    let mut rest = Vec::with_capacity(args.len());
    let mut url = None;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let text = word.to_str().unwrap_or("");
        if text == "--database-url" {
            let value = words.next().ok_or("--database-url needs a value")?;
            url = Some(value.clone());
        } else if let Some(value) = text.strip_prefix("--database-url=") {
            url = Some(value.into());
        } else {
            rest.push(word.clone());
        }
    }
    Ok(url.map(|url| (url, rest)))
}

/// Runs this binary again with `rest` and `DATABASE_URL=url`.
fn reexec(url: &OsString, rest: &[OsString]) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("links: cannot find this program to pass --database-url on: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut command = std::process::Command::new(exe);
    if let Some(name) = rest.first() {
        command.arg0(name);
    }
    let error = command
        .args(rest.iter().skip(1))
        .env("DATABASE_URL", url)
        .exec();
    eprintln!("links: cannot restart with DATABASE_URL set: {error}");
    ExitCode::FAILURE
}

/// Reads `DATABASE_URL`, checks the database answers and migrates it.
fn prepare_database() -> Result<(), String> {
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        "no database: pass --database-url postgres://user@host/db or set DATABASE_URL".to_owned()
    })?;
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|error| format!("DATABASE_URL is not a PostgreSQL URL: {error}"))?;
    if config.get_application_name().is_none() {
        config.application_name("links");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a tokio runtime: {error}"))?;
    let where_ = db::describe(&config);
    runtime
        .block_on(async {
            tokio::time::timeout(START_TIMEOUT, db::migrate(&config, START_TIMEOUT)).await
        })
        .map_err(|_| {
            format!(
                "database at {where_} did not answer within {} s",
                START_TIMEOUT.as_secs()
            )
        })?
        .map_err(|error| {
            format!(
                "cannot use the database at {where_}: {}",
                db::one_line(&error)
            )
        })?;
    let _ = DATABASE.set(config);
    Ok(())
}

/// The shards: `#[shard_main]` in a module of its own, so that the `main`
/// above runs first and the generated one is called from it.
mod serve {
    use std::rc::Rc;

    use forkless::prelude::*;

    use crate::api::{self, App};
    use crate::{DATABASE, db, hits, invalidate, state};

    pub(crate) fn run() -> std::process::ExitCode {
        main()
    }

    #[shard_main(listen = "127.0.0.1:8080")]
    async fn main(shard: Shard) -> Result<(), String> {
        let config = DATABASE
            .get()
            .ok_or("the database was not prepared before the shards started")?;
        let pool = db::pool(config, db::pool_size(shard.count()))?;
        // A rolling reload: the predecessor's unflushed hits. It hands them
        // over only after switching its cache off, and this shard answers
        // invalidations only after this: see `invalidate.rs`.
        if let Some(counts) = shard.inherit::<hits::Counts>().await {
            hits::adopt(counts);
        }
        forkless::spawn(hand_over_when_replaced(shard.clone())).detach();
        let bus = shard.bus_with_reply::<invalidate::Invalidate, ()>();
        forkless::spawn(invalidate::serve(bus.clone())).detach();
        forkless::spawn(hits::flush_periodically(pool.clone())).detach();
        let app = Rc::new(App {
            shard: shard.clone(),
            pool: pool.clone(),
            bus,
            base_url: std::env::var("LINKS_BASE_URL").ok(),
        });
        let served = shard
            .serve(move |request| api::route(app.clone(), request))
            .await;
        hits::flush_at_exit(&pool).await;
        served.map_err(|error| error.to_string())
    }

    /// When a successor asks: the cache off for good, then the unflushed
    /// hits handed over (kept and flushed here if it gave up).
    async fn hand_over_when_replaced(shard: Shard) {
        shard.replaced().await;
        state::switch_off();
        if let Err(counts) = shard.hand_over(hits::take_pending()) {
            hits::adopt(counts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<OsString> {
        text.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn the_database_url_flag_is_taken_out() {
        assert_eq!(
            take_database_url(&words(
                "links --shards 2 --database-url postgres://h/d --listen x"
            )),
            Ok(Some((
                "postgres://h/d".into(),
                words("links --shards 2 --listen x")
            )))
        );
        assert_eq!(
            take_database_url(&words("links --database-url=postgres://h/d")),
            Ok(Some(("postgres://h/d".into(), words("links"))))
        );
        assert_eq!(take_database_url(&words("links --shards 2")), Ok(None));
        assert!(take_database_url(&words("links --database-url")).is_err());
    }
}
