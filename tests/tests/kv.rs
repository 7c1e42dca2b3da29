//! The `kv` app end to end: random keys written through random shards (each
//! request on a fresh connection, so on whichever shard the kernel picks) and
//! read back through others, at 1, 2 and 4 shards.
//!
//! Every key response names the shard that answered (`x-shard`) and the
//! key's owner (`x-kv-owner`), so the test knows exactly what `/stats` must
//! say: keys per owner, requests per answering shard, and forwards.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Write};
use std::thread;

use forkless_tests::{
    BinaryResponse, SHARD_COUNTS, Server, app_binary, read_binary_response, request,
    request_with_body,
};
use serde_json::Value;

/// The largest value the app stores.
const MAX_VALUE: usize = 1024 * 1024;

/// Client threads issuing requests at once.
const CLIENTS: usize = 8;

fn kv(shards: usize) -> Server {
    let shards = shards.to_string();
    Server::start(&app_binary("kv"), &["--shards", &shards])
}

/// splitmix64: a seeded, reproducible source of keys and values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("below n")
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

/// `count` distinct keys, half readable and half arbitrary bytes (slashes,
/// percent signs, NULs, non-UTF-8), each with a value of up to 4 KiB.
fn random_entries(rng: &mut Rng, count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(count);
    while entries.len() < count {
        let key = if rng.below(2) == 0 {
            format!("key-{}-{}", entries.len(), rng.next()).into_bytes()
        } else {
            let len = 1 + rng.below(24);
            rng.bytes(len)
        };
        if seen.insert(key.clone()) {
            let len = rng.below(4097);
            entries.push((key, rng.bytes(len)));
        }
    }
    entries
}

/// The `/kv/{key}` path of `key`: every byte but the unreserved ones encoded.
fn path(key: &[u8]) -> String {
    let mut path = String::from("/kv/");
    for &byte in key {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

/// Runs `f` on every item from [`CLIENTS`] threads; the results keep the
/// items' order.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let chunk = items.len().div_ceil(CLIENTS).max(1);
    thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|chunk| scope.spawn(|| chunk.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a client thread"))
            .collect()
    })
}

/// What the test expects `/stats` to say, built from the key responses.
#[derive(Default)]
struct Tally {
    /// Per shard: key requests it answered, and how many it forwarded.
    requests: HashMap<usize, (u64, u64)>,
}

impl Tally {
    /// Counts one key response; returns (answering shard, owner).
    fn count(&mut self, response: &BinaryResponse) -> (usize, usize) {
        let shard = shard_header(response, "x-shard");
        let owner = shard_header(response, "x-kv-owner");
        let entry = self.requests.entry(shard).or_default();
        entry.0 += 1;
        entry.1 += u64::from(shard != owner);
        (shard, owner)
    }
}

fn shard_header(response: &BinaryResponse, name: &str) -> usize {
    response
        .header(name)
        .unwrap_or_else(|| panic!("no {name} header in {response:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("a numeric {name} in {response:?}"))
}

fn stats(server: &Server) -> Value {
    let response = server.fetch("GET", "/stats", b"");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    serde_json::from_slice(&response.body).expect("/stats is JSON")
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{value} is not a count"))
}

/// Checks `/stats` against the keys each shard owns and the tally.
fn assert_stats(server: &Server, shards: usize, owned: &HashMap<usize, usize>, tally: &Tally) {
    let stats = stats(server);
    let per_shard = stats["shards"].as_array().expect("a shards array");
    let ids: Vec<u64> = per_shard.iter().map(|s| number(&s["shard"])).collect();
    let expected_ids: Vec<u64> = (0..shards as u64).collect();
    assert_eq!(ids, expected_ids, "one entry per shard, in order: {stats}");
    for (id, entry) in per_shard.iter().enumerate() {
        let keys = owned.get(&id).copied().unwrap_or(0);
        let (requests, forwarded) = tally.requests.get(&id).copied().unwrap_or((0, 0));
        assert_eq!(number(&entry["keys"]), keys as u64, "shard {id}: {stats}");
        assert_eq!(number(&entry["requests"]), requests, "shard {id}: {stats}");
        assert_eq!(
            number(&entry["forwarded"]),
            forwarded,
            "shard {id}: {stats}"
        );
    }
    let keys: usize = owned.values().sum();
    let requests: u64 = tally.requests.values().map(|r| r.0).sum();
    assert_eq!(number(&stats["keys"]), keys as u64, "{stats}");
    assert_eq!(number(&stats["requests"]), requests, "{stats}");
}

/// Writes `count` random keys through random shards, reads them back through
/// other fresh connections, replaces and deletes some, and checks `/stats`
/// after each step.
fn round_trip(shards: usize, count: usize, seed: u64) {
    let server = kv(shards);
    let mut rng = Rng(seed);
    let entries = random_entries(&mut rng, count);
    let mut tally = Tally::default();
    let mut owner_of = HashMap::new();

    // Write every key, each on a fresh connection.
    let written = in_parallel(&entries, |(key, value)| {
        server.fetch("PUT", &path(key), value)
    });
    let mut write_shard = Vec::with_capacity(count);
    for ((key, _), response) in entries.iter().zip(&written) {
        assert_eq!(response.status, 201, "PUT {key:?}: {response:?}");
        let (shard, owner) = tally.count(response);
        assert!(shard < shards && owner < shards, "{response:?}");
        owner_of.insert(key.clone(), owner);
        write_shard.push(shard);
    }

    // Read every key back through other fresh connections.
    let read = in_parallel(&entries, |(key, _)| server.fetch("GET", &path(key), b""));
    let mut elsewhere = 0;
    for (i, ((key, value), response)) in entries.iter().zip(&read).enumerate() {
        assert_eq!(response.status, 200, "GET {key:?}: {response:?}");
        assert!(response.body == *value, "GET {key:?}: the value changed");
        let (shard, owner) = tally.count(response);
        assert_eq!(owner, owner_of[key], "the owner of {key:?} moved");
        elsewhere += usize::from(shard != write_shard[i]);
    }
    let forwarded: u64 = tally.requests.values().map(|r| r.1).sum();
    if shards > 1 {
        assert!(
            elsewhere > 0,
            "every key was read on the shard it was written on"
        );
        assert!(forwarded > 0, "no request was forwarded to its owner");
    } else {
        assert_eq!(forwarded, 0);
    }
    let mut owned: HashMap<usize, usize> = HashMap::new();
    for owner in owner_of.values() {
        *owned.entry(*owner).or_default() += 1;
    }
    assert_eq!(owned.len(), shards, "some shard owns no key: {owned:?}");
    assert_stats(&server, shards, &owned, &tally);

    // Replace every tenth value.
    let replaced: Vec<(Vec<u8>, Vec<u8>)> = entries
        .iter()
        .step_by(10)
        .map(|(key, _)| {
            let len = rng.below(4097);
            (key.clone(), rng.bytes(len))
        })
        .collect();
    for response in in_parallel(&replaced, |(key, value)| {
        server.fetch("PUT", &path(key), value)
    }) {
        assert_eq!(response.status, 204, "{response:?}");
        tally.count(&response);
    }
    for ((key, value), response) in replaced.iter().zip(in_parallel(&replaced, |(key, _)| {
        server.fetch("GET", &path(key), b"")
    })) {
        assert_eq!(response.status, 200, "GET {key:?}: {response:?}");
        assert!(response.body == *value, "GET {key:?}: not the new value");
        tally.count(&response);
    }

    // Delete every other key; a deleted key is gone, deleting it again is 404.
    let (deleted, kept): (Vec<_>, Vec<_>) =
        entries.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let deleted: Vec<&Vec<u8>> = deleted.into_iter().map(|(_, (key, _))| key).collect();
    for (status, method) in [(204, "DELETE"), (404, "GET"), (404, "DELETE")] {
        for response in in_parallel(&deleted, |key| server.fetch(method, &path(key), b"")) {
            assert_eq!(response.status, status, "{method}: {response:?}");
            tally.count(&response);
        }
    }
    for key in &deleted {
        *owned.get_mut(&owner_of[*key]).expect("an owner") -= 1;
    }
    // The kept keys are untouched (values replaced above are checked there).
    let replaced_keys: HashSet<&Vec<u8>> = replaced.iter().map(|(key, _)| key).collect();
    let kept: Vec<_> = kept
        .into_iter()
        .map(|(_, entry)| entry)
        .filter(|(key, _)| !replaced_keys.contains(key))
        .collect();
    for ((key, value), response) in kept.iter().zip(in_parallel(&kept, |(key, _)| {
        server.fetch("GET", &path(key), b"")
    })) {
        assert_eq!(response.status, 200, "GET {key:?}: {response:?}");
        assert!(response.body == *value, "GET {key:?}: the value changed");
        tally.count(&response);
    }
    assert_stats(&server, shards, &owned, &tally);
}

#[test]
fn two_thousand_keys_through_random_shards_at_four_shards() {
    round_trip(4, 2000, 0x6b76_0004);
}

#[test]
fn keys_through_random_shards_at_one_and_two_shards() {
    for shards in SHARD_COUNTS.into_iter().filter(|&s| s < 4) {
        round_trip(shards, 500, 0x6b76_0000 + shards as u64);
    }
}

/// Sends `bytes` from another thread (ignoring write errors: the server may
/// answer and close before reading it all) and reads the response.
fn send_large(server: &Server, bytes: Vec<u8>) -> BinaryResponse {
    let mut writer = server.connect();
    let mut reader = BufReader::new(writer.try_clone().expect("clone the stream"));
    let sending = thread::spawn(move || {
        let _ = writer.write_all(&bytes);
        writer
    });
    let response = read_binary_response(&mut reader).expect("a response");
    drop(sending.join().expect("the writer thread"));
    response
}

#[test]
fn values_up_to_one_mib_are_stored_and_larger_ones_refused() {
    let server = kv(2);
    let mut rng = Rng(0x6b76_1111);
    let big = rng.bytes(MAX_VALUE);
    for key in ["big-a", "big-b", "big-c", "big-d"] {
        let path = path(key.as_bytes());
        let response = send_large(&server, request_with_body("PUT", &path, &[], &big));
        assert_eq!(response.status, 201, "{response:?}");
        let response = server.fetch("GET", &path, b"");
        assert_eq!(response.status, 200);
        assert!(response.body == big, "the 1 MiB value changed");
    }

    let bigger = rng.bytes(MAX_VALUE + 1);
    let response = send_large(
        &server,
        request_with_body("PUT", "/kv/bigger", &[], &bigger),
    );
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(server.fetch("GET", "/kv/bigger", b"").status, 404);

    // Without a Content-Length the limit holds while the body streams in.
    let mut chunked = request(
        "PUT",
        "/kv/bigger-chunked",
        &[("Transfer-Encoding", "chunked")],
    );
    for chunk in bigger.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let response = send_large(&server, chunked);
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(server.fetch("GET", "/kv/bigger-chunked", b"").status, 404);
}

#[test]
fn bad_keys_paths_and_methods() {
    let server = kv(2);
    let status = |method: &str, path: &str| server.fetch(method, path, b"").status;
    assert_eq!(status("GET", "/kv/"), 400, "empty key");
    assert_eq!(status("GET", "/kv/%zz"), 400, "bad percent-encoding");
    assert_eq!(status("GET", "/kv/a%2"), 400, "truncated percent-encoding");
    assert_eq!(status("GET", &format!("/kv/{}", "k".repeat(257))), 414);
    assert_eq!(status("GET", &format!("/kv/{}", "k".repeat(256))), 404);
    assert_eq!(status("GET", &format!("/kv/{}", "%6B".repeat(256))), 404);
    assert_eq!(status("GET", "/kv"), 404);
    assert_eq!(status("GET", "/kv/a/b"), 404);
    assert_eq!(status("GET", "/"), 404);
    assert_eq!(status("GET", "/nope"), 404);

    let response = server.fetch("POST", "/kv/a", b"value");
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, PUT, DELETE"));
    let response = server.fetch("PUT", "/stats", b"");
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET"));

    // `%2F` is part of the key, not a separator; hex digits in either case.
    assert_eq!(server.fetch("PUT", "/kv/a%2Fb", b"slash").status, 201);
    let response = server.fetch("GET", "/kv/a%2fb", b"");
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, &b"slash"[..])
    );
    assert_eq!(status("GET", "/kv/a"), 404);

    // An empty value is a value.
    assert_eq!(server.fetch("PUT", "/kv/empty", b"").status, 201);
    let response = server.fetch("GET", "/kv/empty", b"");
    assert_eq!((response.status, response.body.len()), (200, 0));
}
