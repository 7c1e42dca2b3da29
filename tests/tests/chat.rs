//! The `chat` app end to end, with blocking WebSocket clients (tungstenite
//! over std sockets): one order for every client of a room whatever shard
//! it is on, slow clients dropped without slowing the room, HTTP posts,
//! close codes for bad frames, and shutdown.

use std::collections::HashSet;
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use forkless_tests::{
    IO_TIMEOUT, SHARD_COUNTS, Server, app_binary, connect, read_binary_response, request_with_body,
    send,
};
use serde_json::Value;
use socket2::{Domain, Socket, Type};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

fn chat(shards: usize) -> Server {
    let shards = shards.to_string();
    Server::start(&app_binary("chat"), &["--shards", &shards, "--no-pin"])
}

/// A connected client: its socket, the shard that holds it and its name.
struct Client {
    ws: WebSocket<TcpStream>,
    shard: String,
    name: String,
}

/// Joins `room` as `name` over `stream` and waits for the welcome frame.
fn join_over(stream: TcpStream, addr: SocketAddr, room: &str, name: &str) -> Client {
    let url = format!("ws://{addr}/ws/{room}?name={name}");
    let (mut ws, response) = tungstenite::client(url.as_str(), stream).expect("the handshake");
    assert_eq!(response.status(), 101);
    let shard = response
        .headers()
        .get("x-shard")
        .and_then(|v| v.to_str().ok())
        .expect("the 101 carries x-shard")
        .to_owned();
    let welcome = next_json(&mut ws);
    assert_eq!(welcome["kind"], "welcome");
    assert_eq!(welcome["name"], name);
    assert_eq!(welcome["shard"].to_string(), shard);
    Client {
        ws,
        shard,
        name: name.to_owned(),
    }
}

fn join(server: &Server, room: &str, name: &str) -> Client {
    join_over(server.connect(), server.addr, room, name)
}

/// The next text frame, as JSON (reads block at most [`IO_TIMEOUT`]).
fn next_json(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read().expect("a frame") {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads until `count` chat messages came (join and leave notes skipped);
/// returns them as (seq, from, text).
fn messages(ws: &mut WebSocket<TcpStream>, count: usize) -> Vec<(u64, String, String)> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let frame = next_json(ws);
        if frame["kind"] == "message" {
            got.push((
                frame["seq"].as_u64().expect("seq"),
                frame["from"].as_str().expect("from").to_owned(),
                frame["text"].as_str().expect("text").to_owned(),
            ));
        }
    }
    got
}

/// The close frame's code, or `None` when the socket closed without one;
/// reads at most 20 s.
fn close_code(ws: &mut WebSocket<TcpStream>) -> Option<CloseCode> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server did not close the socket: {e}")
            }
            Err(_) => return None,
        }
    }
    panic!("the socket was still open after 20 s");
}

/// splitmix64: a seeded, reproducible choice of senders.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        usize::try_from((z ^ (z >> 31)) % n as u64).expect("below n")
    }
}

/// Opens clients of `room` until `count` are kept, keeping fewer than half
/// of them on any one shard when there are 3 shards or more, so they sit on
/// at least `min(3, shards)` shards (at most 400 tries; the others close).
fn spread_clients(server: &Server, shards: usize, room: &str, count: usize) -> Vec<Client> {
    let per_shard = if shards >= 3 { (count - 1) / 2 } else { count };
    let mut clients: Vec<Client> = Vec::new();
    for attempt in 0..400 {
        if clients.len() == count {
            break;
        }
        let client = join(server, room, &format!("c{attempt}"));
        let on_shard = clients.iter().filter(|c| c.shard == client.shard).count();
        if on_shard < per_shard {
            clients.push(client);
        } else {
            let mut client = client;
            let _ = client.ws.close(None);
        }
    }
    assert_eq!(clients.len(), count, "could not spread {count} clients");
    clients
}

#[test]
fn every_client_sees_the_same_order_across_shards() {
    const CLIENTS: usize = 20;
    const MESSAGES: usize = 100;
    for shards in SHARD_COUNTS {
        let server = chat(shards);
        let mut clients = spread_clients(&server, shards, "order", CLIENTS);
        let holding: HashSet<&str> = clients.iter().map(|c| c.shard.as_str()).collect();
        assert!(
            holding.len() >= shards.min(3),
            "clients on {holding:?} of {shards} shards"
        );

        // 100 messages from random clients, sent back to back.
        let mut rng = Rng(u64::try_from(shards).expect("small"));
        let mut sent = Vec::new();
        for k in 0..MESSAGES {
            let client = &mut clients[rng.below(CLIENTS)];
            let text = format!("m{k} from {}", client.name);
            client
                .ws
                .send(Message::text(text.clone()))
                .expect("send a message");
            sent.push((client.name.clone(), text));
        }

        let seen: Vec<Vec<(u64, String, String)>> = std::thread::scope(|scope| {
            let readers: Vec<_> = clients
                .iter_mut()
                .map(|client| scope.spawn(|| messages(&mut client.ws, MESSAGES)))
                .collect();
            readers
                .into_iter()
                .map(|reader| reader.join().expect("a reader"))
                .collect()
        });
        let first = &seen[0];
        for (i, other) in seen.iter().enumerate() {
            assert_eq!(
                other, first,
                "client {i} saw another order at {shards} shards"
            );
        }
        // All 100, each once, numbered in order, each sender's in its order.
        let mut texts: Vec<&str> = first.iter().map(|(_, _, t)| t.as_str()).collect();
        assert!(first.windows(2).all(|w| w[0].0 < w[1].0), "seq increases");
        for client in &clients {
            let mine: Vec<&str> = sent
                .iter()
                .filter(|(from, _)| *from == client.name)
                .map(|(_, text)| text.as_str())
                .collect();
            let got: Vec<&str> = first
                .iter()
                .filter(|(_, from, _)| *from == client.name)
                .map(|(_, _, text)| text.as_str())
                .collect();
            assert_eq!(got, mine, "{}'s messages keep their order", client.name);
        }
        texts.sort_unstable();
        let mut expected: Vec<&str> = sent.iter().map(|(_, t)| t.as_str()).collect();
        expected.sort_unstable();
        assert_eq!(texts, expected);
    }
}

/// POSTs `body` to `/rooms/{room}` on `stream` (kept alive); the status and body.
fn post_on(reader: &mut BufReader<TcpStream>, room: &str, body: &[u8]) -> (u16, Vec<u8>) {
    send(
        reader.get_mut(),
        &request_with_body("POST", &format!("/rooms/{room}?name=poster"), &[], body),
    );
    let response = read_binary_response(reader).expect("a response");
    (response.status, response.body)
}

/// Joins over a socket with a 4 KiB receive buffer (for clients that do
/// not read: the server's sends back up at once).
fn join_small_buffer(server: &Server, room: &str, name: &str) -> Client {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .connect_timeout(&server.addr.into(), IO_TIMEOUT)
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    join_over(stream, server.addr, room, name)
}

#[test]
fn a_client_that_never_reads_is_dropped_and_the_room_goes_on() {
    const MESSAGES: usize = 700;
    let server = chat(2);
    // The slow client: a small receive buffer, and it never reads.
    let mut slow = join_small_buffer(&server, "busy", "slow");
    let mut fast: Vec<Client> = (0..3)
        .map(|i| join(&server, "busy", &format!("fast{i}")))
        .collect();

    let text = "x".repeat(4000);
    let started = Instant::now();
    let seen: Vec<Vec<(u64, String, String)>> = std::thread::scope(|scope| {
        let readers: Vec<_> = fast
            .iter_mut()
            .map(|client| scope.spawn(|| messages(&mut client.ws, MESSAGES)))
            .collect();
        let mut poster = BufReader::new(server.connect());
        for _ in 0..MESSAGES {
            let (status, _) = post_on(&mut poster, "busy", text.as_bytes());
            assert_eq!(status, 202);
        }
        readers
            .into_iter()
            .map(|reader| reader.join().expect("a reader"))
            .collect()
    });
    let took = started.elapsed();
    for got in &seen {
        assert_eq!(got.len(), MESSAGES);
        assert_eq!(got, &seen[0]);
    }
    // Not held back by the slow one (~0.4 s here).
    assert!(
        took < Duration::from_secs(10),
        "the fast clients took {took:?} for {MESSAGES} messages"
    );
    // The slow one was cut off: a close frame saying why, or a closed socket.
    let code = close_code(&mut slow.ws);
    assert!(
        code.is_none() || code == Some(CloseCode::Policy),
        "slow client closed with {code:?}"
    );
    // Its leave reached the others.
    let mut left = false;
    for _ in 0..50 {
        let frame = next_json(&mut fast[0].ws);
        if frame["kind"] == "leave" && frame["from"] == "slow" {
            left = true;
            break;
        }
    }
    assert!(left, "the others saw the slow client leave");
}

#[test]
fn http_posts_reach_websocket_clients() {
    let server = chat(2);
    let mut client = join(&server, "mixed", "reader");
    let mut poster = BufReader::new(server.connect());
    let (status, body) = post_on(&mut poster, "mixed", b"hello from curl");
    assert_eq!(status, 202);
    let answer: Value = serde_json::from_slice(&body).expect("JSON");
    let got = messages(&mut client.ws, 1);
    assert_eq!(
        got,
        vec![(
            answer["seq"].as_u64().expect("seq"),
            "poster".to_owned(),
            "hello from curl".to_owned()
        )]
    );

    // What HTTP refuses.
    assert_eq!(post_on(&mut poster, "bad%20room", b"x").0, 400);
    assert_eq!(post_on(&mut poster, "mixed", &[0xff, 0xfe]).0, 400);
    let too_big = vec![b'a'; 16 * 1024 + 1];
    let status = server.fetch("POST", "/rooms/mixed", &too_big).status;
    assert_eq!(status, 413);
    let plain = server.get("/ws/mixed");
    assert_eq!(plain.status, 426);
    assert_eq!(plain.header("upgrade"), Some("websocket"));
    assert!(plain.header("x-shard").is_some());
    let page = server.get("/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("new WebSocket("));
}

#[test]
fn bad_frames_and_names_get_clear_answers() {
    let server = chat(2);
    let mut binary = join(&server, "rules", "bin");
    binary
        .ws
        .send(Message::binary(vec![1, 2, 3]))
        .expect("send");
    assert_eq!(close_code(&mut binary.ws), Some(CloseCode::Unsupported));

    let mut big = join(&server, "rules", "big");
    let _ = big.ws.send(Message::text("y".repeat(16 * 1024 + 1)));
    assert_eq!(close_code(&mut big.ws), Some(CloseCode::Size));

    // A bad room name is refused before the upgrade.
    let url = format!("ws://{}/ws/no%20spaces", server.addr);
    match tungstenite::client(url.as_str(), connect(server.addr)) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 400);
        }
        other => panic!("expected a 400, got {:?}", other.map(|(_, r)| r.status())),
    }
    // The room still works.
    let mut ok = join(&server, "rules", "ok");
    ok.ws.send(Message::text("still fine")).expect("send");
    assert_eq!(messages(&mut ok.ws, 1)[0].2, "still fine");
}

#[test]
fn shutdown_says_going_away() {
    let mut server = chat(2);
    let mut clients: Vec<Client> = (0..4)
        .map(|i| join(&server, "bye", &format!("c{i}")))
        .collect();
    server.signal(libc::SIGTERM);
    for client in &mut clients {
        assert_eq!(close_code(&mut client.ws), Some(CloseCode::Away));
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_ping_flood_costs_bounded_memory() {
    const PINGS: usize = 400_000;
    let server = chat(2);
    // The flooder never reads, so every pong it is owed stays with the server.
    let mut flooder = join_small_buffer(&server, "flood", "flooder");
    let before = rss_kib(server.pid());
    let payload = vec![b'p'; 120];
    let mut sent = 0;
    for _ in 0..PINGS {
        if flooder
            .ws
            .write(Message::Ping(payload.clone().into()))
            .is_err()
        {
            break;
        }
        // Flushed in batches, as a flooding client writes.
        if sent % 64 == 0 && flooder.ws.flush().is_err() {
            break;
        }
        sent += 1;
    }
    let grown = rss_kib(server.pid()).saturating_sub(before);
    // Bounded per client: the write buffer cap plus the socket's buffers.
    assert!(
        grown < 16 * 1024,
        "the server grew {grown} KiB after {sent} pings from a client that never reads"
    );
    // The room goes on for others.
    let mut other = join(&server, "flood", "other");
    let mut poster = BufReader::new(server.connect());
    let (status, _) = post_on(&mut poster, "flood", b"still here");
    assert_eq!(status, 202);
    let got = messages(&mut other.ws, 1);
    assert_eq!(got[0].2, "still here");
}
