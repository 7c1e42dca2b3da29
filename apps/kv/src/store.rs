//! The shard-local half: each shard's map of the keys it owns, its counters,
//! and the task that serves the other shards' calls.
//!
//! Everything here lives in a `thread_local!`: a shard is one thread, so the
//! map needs no lock, and the `/stats` map-reduce (which runs a closure on
//! each shard) can reach it without being handed a reference.
//!
//! Across a rolling reload the map moves: the replaced incarnation hands it
//! to its successor when asked ([`hand_over_when_replaced`]), in one poll,
//! and from then on forwards every command to its own shard id over the
//! bus, which delivers to the successor ([`owns_map`] says which applies).

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

/// One shard's keys and values.
pub(crate) type Map = HashMap<Key, Bytes>;

#[derive(Default)]
struct Store {
    map: RefCell<Map>,
    /// The map went to the incarnation that replaced this one.
    handed_over: Cell<bool>,
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
/// ends with its shard). After a hand-over each goes on to the successor.
pub(crate) async fn serve_foreign(bus: Bus<Command, Outcome>) {
    loop {
        let call = bus.recv().await;
        let (_from, command, reply) = call.into_parts();
        if owns_map() {
            reply.send(apply(command));
        } else if let Ok(outcome) = bus.call(bus.id(), command).await {
            reply.send(outcome);
        }
        // Otherwise the reply is dropped: the caller sees the call fail
        // rather than an answer from a map that is not the owner's.
    }
}

/// Whether this incarnation still owns its map (it has not handed it over).
pub(crate) fn owns_map() -> bool {
    STORE.with(|store| !store.handed_over.get())
}

/// Takes the map the replaced incarnation handed over.
pub(crate) fn adopt(map: Map) {
    STORE.with(|store| *store.map.borrow_mut() = map);
}

/// Waits for a successor to ask for the map and hands it over, in one poll
/// (no command sees it half moved); keeps it if the successor gave up.
pub(crate) async fn hand_over_when_replaced(shard: Shard) {
    loop {
        shard.replaced().await;
        let handed = STORE.with(|store| {
            let map = store.map.take();
            match shard.hand_over(map) {
                Ok(()) => store.handed_over.set(true),
                Err(map) => *store.map.borrow_mut() = map,
            }
            store.handed_over.get()
        });
        if handed {
            return;
        }
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
