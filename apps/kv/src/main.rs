//! kv: a sharded in-memory key-value store over HTTP, the showcase of the bus.
//!
//! Run with: `cargo run --release -p kv`, then
//!
//! ```sh
//! curl -X PUT --data-binary 'hello' http://127.0.0.1:8080/kv/greeting   # 201
//! curl -i http://127.0.0.1:8080/kv/greeting                             # 200 hello
//! curl http://127.0.0.1:8080/stats
//! ```
//!
//! `--shards N`, `--listen IP:PORT` and `--help` work as in every forkless
//! binary; kv adds `--max-value-size BYTES` (env `KV_MAX_VALUE_SIZE`, or
//! `max_value_size` in the `[app]` table of `--config`), default 1 MiB.
//!
//! | request | answers |
//! |---|---|
//! | `PUT /kv/{key}`, body = the value | `201` created, `204` replaced, `413` over `--max-value-size` |
//! | `GET /kv/{key}` | `200` with the value, `404` |
//! | `DELETE /kv/{key}` | `204` deleted, `404` |
//! | `GET /stats` | `200` with JSON: keys, requests and forwards per shard, and totals |
//!
//! `{key}` is one percent-encoded path segment of 1 to 256 bytes once decoded
//! (`400` when empty or badly encoded, `414` when longer). Other paths answer
//! `404`, other methods `405`.
//!
//! Every key has one **owner** shard: FNV-1a of the key, mod the shard count.
//! Only the owner touches its map (shard-local, no locks). A request that
//! lands on another shard is forwarded to the owner with `bus.call` and
//! answered with the owner's reply; each shard runs one task that serves the
//! calls of the others. `/stats` is a map-reduce over all shards. Responses to
//! key requests carry `x-kv-owner: <shard>` beside the framework's `x-shard`.
//!
//! A rolling reload (SIGHUP) keeps every map: each new incarnation inherits
//! its predecessor's map before it serves or receives on the bus, and the
//! predecessor, once it has handed the map over, forwards every command for
//! its keys over the bus to its own shard id, which reaches the new owner.
//! So no acknowledged write is lost and no read is stale across reloads.
//! On shutdown every shard keeps answering the bus until all have drained,
//! so a forwarded request in flight at SIGTERM is answered.

mod key;
mod store;

use forkless::bus::Bus;
use forkless::http::{HeaderValue, Method, header, read_body};
use forkless::prelude::*;
use serde_json::json;

use key::{Key, KeyError};
use store::{Command, Outcome, ShardStats};

/// kv's own command line, beside the standard options.
#[derive(clap::Args, Debug)]
struct KvArgs {
    /// Largest value a PUT may store, in bytes (`64k`, `1m` work too); a
    /// larger one gets `413`.
    #[arg(long, env = "KV_MAX_VALUE_SIZE", value_name = "BYTES", default_value = "1m", value_parser = parse_size)]
    max_value_size: usize,
}

/// `65536`, `64k`, `1m`: bytes, with k and m as 1024 and 1024 x 1024.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    let (number, scale) = match lower
        .strip_suffix('k')
        .or_else(|| lower.strip_suffix("kib"))
    {
        Some(number) => (number, 1024),
        None => match lower
            .strip_suffix('m')
            .or_else(|| lower.strip_suffix("mib"))
        {
            Some(number) => (number, 1024 * 1024),
            None => (lower.as_str(), 1),
        },
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("expected a size like `65536`, `64k` or `1m`, got `{text}`"))
}

/// The largest value a `PUT` may store, as `--max-value-size` says.
fn max_value(shard: &Shard) -> usize {
    shard
        .args::<KvArgs>()
        .map_or(1024 * 1024, |args| args.max_value_size)
}

#[shard_main(listen = "127.0.0.1:8080", args = KvArgs)]
async fn main(shard: Shard) -> Result<(), forkless::Error> {
    // First: the map of the incarnation a rolling reload replaces with this
    // one (commands for this shard queue for us meanwhile).
    if let Some(map) = shard.inherit::<store::Map>().await {
        store::adopt(map);
    }
    forkless::spawn(store::hand_over_when_replaced(shard.clone())).detach();
    let bus = shard.bus_with_reply::<Command, Outcome>();
    forkless::spawn(store::serve_foreign(bus.clone())).detach();
    let this = shard.clone();
    shard
        .serve(move |request| route(this.clone(), bus.clone(), request))
        .await
}

async fn route(shard: Shard, bus: Bus<Command, Outcome>, request: Request) -> Response {
    let path = request.uri().path();
    if path == "/stats" {
        return match *request.method() {
            Method::GET => stats(&shard).await,
            _ => method_not_allowed("GET"),
        };
    }
    match path.strip_prefix("/kv/") {
        Some(segment) if !segment.contains('/') => {
            let key = Key::decode(segment);
            key_request(shard, bus, request, key).await
        }
        _ => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// `GET`, `PUT` or `DELETE` one key: on this shard if it owns the key,
/// otherwise on the owner, over the bus.
async fn key_request(
    shard: Shard,
    bus: Bus<Command, Outcome>,
    request: Request,
    key: Result<Key, KeyError>,
) -> Response {
    store::count_request();
    let key = match key {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let command = match *request.method() {
        Method::GET => Command::Get(key),
        Method::DELETE => Command::Delete(key),
        Method::PUT => match read_body(request, max_value(&shard)).await {
            Ok(value) => Command::Put(key, value),
            Err(error) => return error.into_response(),
        },
        _ => return method_not_allowed("GET, PUT, DELETE"),
    };
    let owner = command.key().owner(shard.count());
    // After a hand-over the map is the successor's: the bus reaches it.
    let outcome = if owner == shard.id() && store::owns_map() {
        store::apply(command)
    } else {
        if owner != shard.id() {
            store::count_forward();
        }
        match bus.call(owner, command).await {
            Ok(outcome) => outcome,
            Err(error) => {
                let message = format!("shard {owner} did not answer: {error}\n");
                return (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
            }
        }
    };
    let mut response = outcome.into_response();
    response
        .headers_mut()
        .insert("x-kv-owner", HeaderValue::from(owner.get()));
    response
}

/// Every shard's counts, gathered with a map-reduce over the bus.
async fn stats(shard: &Shard) -> Response {
    let gathered = shard
        .map_reduce(
            |shard: Shard| async move { store::stats(shard.id()) },
            Vec::new(),
            |mut all: Vec<ShardStats>, one| {
                all.push(one);
                all
            },
        )
        .await;
    let mut shards = match gathered {
        Ok(shards) => shards,
        Err(error) => {
            let message = format!("stats incomplete: {error}\n");
            return (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
        }
    };
    shards.sort_by_key(|s| s.shard);
    let body = json!({
        "shards": shards.iter().map(|s| json!({
            "shard": s.shard,
            "keys": s.keys,
            "requests": s.requests,
            "forwarded": s.forwarded,
        })).collect::<Vec<_>>(),
        "keys": shards.iter().map(|s| s.keys).sum::<usize>(),
        "requests": shards.iter().map(|s| s.requests).sum::<u64>(),
        "forwarded": shards.iter().map(|s| s.forwarded).sum::<u64>(),
    });
    let mut response = format!("{body}\n").into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
