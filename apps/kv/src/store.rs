//! The shard-local half: each shard's map of the keys it owns, its counters,
//! and the task that serves the other shards' calls.
//!
//! Everything here lives in a `thread_local!`: a shard is one thread, so the
//! map needs no lock, and the `/stats` map-reduce (which runs a closure on
//! each shard) can reach it without being handed a reference.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use bytes::Bytes;
use forkless::ShardId;
use forkless::bus::Bus;
use forkless::http::{HeaderValue, header};
use forkless::prelude::*;

use crate::key::Key;

/// One operation on a key, run by the key's owner. Crosses shards by move:
/// `Bytes` shares the value's buffer, nothing is copied.
#[derive(Debug)]
pub(crate) enum Command {
    Get(Key),
    Put(Key, Bytes),
    Delete(Key),
}

/// What the owner answers.
#[derive(Debug)]
pub(crate) enum Outcome {
    Value(Bytes),
    Created,
    Replaced,
    Deleted,
    NotFound,
}

/// One shard's counts, as `/stats` reports them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShardStats {
    pub(crate) shard: usize,
    /// Keys this shard owns.
    pub(crate) keys: usize,
    /// Key requests that arrived on this shard over HTTP.
    pub(crate) requests: u64,
    /// Of those, the ones forwarded to another shard.
    pub(crate) forwarded: u64,
}

#[derive(Default)]
struct Store {
    map: RefCell<HashMap<Key, Bytes>>,
    requests: Cell<u64>,
    forwarded: Cell<u64>,
}

thread_local! {
    static STORE: Store = Store::default();
}

impl Command {
    pub(crate) fn key(&self) -> &Key {
        match self {
            Command::Get(key) | Command::Put(key, _) | Command::Delete(key) => key,
        }
    }
}

/// Runs `command` on this shard's map; only the key's owner may call it.
pub(crate) fn apply(command: Command) -> Outcome {
    STORE.with(|store| {
        let mut map = store.map.borrow_mut();
        match command {
            Command::Get(key) => map
                .get(&key)
                .cloned()
                .map_or(Outcome::NotFound, Outcome::Value),
            // A compact copy: the body may be a view into a larger read buffer.
            Command::Put(key, value) => match map.insert(key, Bytes::copy_from_slice(&value)) {
                None => Outcome::Created,
                Some(_) => Outcome::Replaced,
            },
            Command::Delete(key) => match map.remove(&key) {
                Some(_) => Outcome::Deleted,
                None => Outcome::NotFound,
            },
        }
    })
}

/// Serves the commands other shards forward to this one, forever (the task
/// ends with its shard).
pub(crate) async fn serve_foreign(bus: Bus<Command, Outcome>) {
    loop {
        let call = bus.recv().await;
        let (_from, command, reply) = call.into_parts();
        reply.send(apply(command));
    }
}

pub(crate) fn count_request() {
    STORE.with(|store| store.requests.set(store.requests.get() + 1));
}

pub(crate) fn count_forward() {
    STORE.with(|store| store.forwarded.set(store.forwarded.get() + 1));
}

/// This shard's counts.
pub(crate) fn stats(shard: ShardId) -> ShardStats {
    STORE.with(|store| ShardStats {
        shard: shard.get(),
        keys: store.map.borrow().len(),
        requests: store.requests.get(),
        forwarded: store.forwarded.get(),
    })
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        match self {
            Outcome::Value(value) => {
                let mut response = value.into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                response
            }
            Outcome::Created => StatusCode::CREATED.into_response(),
            Outcome::Replaced | Outcome::Deleted => StatusCode::NO_CONTENT.into_response(),
            Outcome::NotFound => (StatusCode::NOT_FOUND, "no such key\n").into_response(),
        }
    }
}
