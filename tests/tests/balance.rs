//! Connection balance across shards: the kernel's SO_REUSEPORT hash alone
//! splits connections unevenly; with the accept-side hand-off every shard
//! holds within 10% of every other.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::TcpStream;
use std::process::Command;

use forkless_tests::{Server, connect, read_response, request, send};

const TESTAPP: &str = env!("CARGO_BIN_EXE_forkless-testapp");

/// Opens `count` keep-alive connections at once and asks each which shard
/// serves it; returns connections per shard (the connections stay open
/// until the end, so later ones see the earlier ones counted).
fn spread(server: &Server, count: usize) -> HashMap<String, usize> {
    let mut connections: Vec<TcpStream> = (0..count).map(|_| connect(server.addr)).collect();
    let mut per_shard = HashMap::new();
    let mut kept = Vec::with_capacity(count);
    for stream in &mut connections {
        send(stream, &request("GET", "/", &[]));
    }
    for stream in connections {
        let mut reader = BufReader::new(stream);
        let response = read_response(&mut reader).expect("an answer");
        assert_eq!(response.status, 200);
        let shard = response.header("x-shard").expect("x-shard").to_owned();
        *per_shard.entry(shard).or_insert(0) += 1;
        // Kept open: a closed connection would make room on its shard.
        kept.push(reader);
    }
    drop(kept);
    per_shard
}

#[test]
fn connections_spread_within_ten_percent_over_2_and_4_shards() {
    for shards in [2, 4] {
        for count in [128, 1000] {
            let mut command = Command::new(TESTAPP);
            command.args(["--listen", "127.0.0.1:0", "--shards", &shards.to_string()]);
            if shards > 2 {
                command.arg("--no-pin");
            }
            let server = Server::start_command(command);
            let per_shard = spread(&server, count);
            assert_eq!(per_shard.len(), shards, "{per_shard:?}");
            let most = per_shard.values().copied().max().unwrap_or(0);
            let least = per_shard.values().copied().min().unwrap_or(0);
            assert!(
                most * 10 <= least * 11,
                "{count} connections on {shards} shards: {per_shard:?}"
            );
        }
    }
}
