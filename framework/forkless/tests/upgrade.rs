//! HTTP upgrades in a real runtime, with a raw TCP client: the `101` and the
//! socket handover, bytes pipelined right after the request head, declined
//! upgrades, timeouts that no longer apply, a panicking upgrade task, and
//! shutdown with upgraded connections open.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::pin;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use forkless::http::upgrade::{self, UpgradeError, Upgraded};
use forkless::http::{HeaderValue, IntoResponse, Request, Response, StatusCode, header};
use forkless::{Config, Coordinator, Error, LifecycleKind, Runtime, Shard, Shards};
use futures::future::{Either, select};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use socket2::{Domain, Socket, Type};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A runtime serving [`handler`] on its own thread.
struct Running {
    addr: SocketAddr,
    stop: mpsc::Sender<()>,
    done: mpsc::Receiver<Result<(), Error>>,
    thread: Option<JoinHandle<()>>,
    /// Holds the port (bound, not listening) for the test's lifetime.
    _reserved: Socket,
}

impl Running {
    fn start(shards: usize, config: Config) -> Running {
        // Bound with SO_REUSEPORT and never listening: reserves a free port
        // that the shards bind too, and takes no connections.
        let reserved = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        reserved.set_reuse_address(true).expect("SO_REUSEADDR");
        reserved.set_reuse_port(true).expect("SO_REUSEPORT");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        reserved.bind(&any.into()).expect("bind");
        let addr = reserved
            .local_addr()
            .expect("local address")
            .as_socket()
            .expect("an IP address");
        let config = config
            .shards(Shards::Count(shards))
            .listen([addr])
            .pin(false);
        let (stop, stop_rx) = mpsc::channel::<()>();
        let (listening, listening_rx) = mpsc::channel();
        let runtime = Runtime::new(config).coordinator(move |coordinator: Coordinator| {
            let events = coordinator.events();
            let mut serving = 0;
            while serving < shards {
                match events.recv_timeout(Duration::from_secs(20)) {
                    Some(event) if event.kind == LifecycleKind::Listening => serving += 1,
                    Some(_) => {}
                    None => break,
                }
            }
            let _ = listening.send(());
            let _ = stop_rx.recv_timeout(Duration::from_secs(60));
            coordinator.shutdown();
        });
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let _ = done_tx.send(runtime.run(serve));
        });
        listening_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("every shard listens within 20 s");
        Running {
            addr,
            stop,
            done,
            thread: Some(thread),
            _reserved: reserved,
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream
    }

    /// Shuts the runtime down; returns how long it took to end (at most 20 s).
    fn shutdown(&mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.send(());
        let outcome = self
            .done
            .recv_timeout(Duration::from_secs(20))
            .expect("the runtime ended within 20 s");
        outcome.expect("the runtime ended cleanly");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        started.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop.send(());
            let _ = self.done.recv_timeout(Duration::from_secs(20));
        }
    }
}

async fn serve(shard: Shard) -> Result<(), Error> {
    let this = shard.clone();
    shard
        .serve(move |request| handler(this.clone(), request))
        .await
}

/// `/echo`: upgrade to an echo protocol; `/polite`: echo, and say `bye` on
/// shutdown; `/panic`: an upgrade task that panics on its first byte;
/// `/decline`: asks for the upgrade, answers `200`; anything else: `200`
/// with what `upgrade::on` said.
async fn handler(shard: Shard, mut request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let registered = match path.as_str() {
        "/echo" => upgrade::on(&mut request, echo),
        "/polite" => upgrade::on(&mut request, move |io| polite(shard, io)),
        "/panic" => upgrade::on(&mut request, |mut io: Upgraded| async move {
            let mut byte = [0u8; 1];
            let _ = io.read(&mut byte).await;
            panic!("upgrade task panics on purpose");
        }),
        "/decline" => {
            let registered = upgrade::on(&mut request, echo);
            return format!("declined ({registered:?})\n").into_response();
        }
        _ => {
            let registered = upgrade::on(&mut request, echo);
            let again = upgrade::on(&mut request, echo);
            return format!("plain: {registered:?} then {again:?}\n").into_response();
        }
    };
    match registered {
        Ok(()) => {
            let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("echo"));
            response
        }
        Err(error) => (StatusCode::UPGRADE_REQUIRED, error.to_string()).into_response(),
    }
}

async fn echo(mut io: Upgraded) {
    echo_ref(&mut io).await;
}

async fn polite(shard: Shard, mut io: Upgraded) {
    let stopped = matches!(
        select(pin!(echo_ref(&mut io)), pin!(shard.stopping())).await,
        Either::Right(_)
    );
    if stopped {
        let _ = io.write_all(b"bye\n").await;
        let _ = io.close().await;
    }
}

async fn echo_ref(io: &mut Upgraded) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = io.read(&mut buf).await {
        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

fn upgrade_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
}

/// Reads a response head; returns the status and the headers (lower case).
fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end();
        if line.is_empty() {
            return (status, headers);
        }
        let (name, value) = line.split_once(':').expect("name: value");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Reads one `200` response with a `content-length` body.
fn read_text(reader: &mut BufReader<TcpStream>) -> String {
    let (status, headers) = read_head(reader);
    assert_eq!(status, 200);
    let length: usize = header(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the body");
    String::from_utf8(body).expect("utf-8")
}

fn read_exactly(reader: &mut BufReader<TcpStream>, n: usize) -> String {
    let mut bytes = vec![0; n];
    reader.read_exact(&mut bytes).expect("echoed bytes");
    String::from_utf8(bytes).expect("utf-8")
}

/// Whether the server closed the connection (EOF or reset) within 5 s.
fn closed(reader: &mut BufReader<TcpStream>) -> bool {
    let mut sink = [0u8; 256];
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        match reader.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_101_hands_the_socket_over_with_the_bytes_sent_after_the_head() {
    for shards in [1, 2] {
        let running = Running::start(shards, Config::default());
        let mut stream = running.connect();
        // The head and the first bytes of the new protocol in one write.
        let first = format!("{}early bytes|", upgrade_request("/echo"));
        stream.write_all(first.as_bytes()).expect("write");
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader);
        assert_eq!(status, 101);
        assert_eq!(header(&headers, "upgrade"), Some("echo"));
        let shard: usize = header(&headers, "x-shard")
            .and_then(|v| v.parse().ok())
            .expect("the 101 carries x-shard");
        assert!(shard < shards);
        assert_eq!(read_exactly(&mut reader, 12), "early bytes|");
        for round in 0..3 {
            let text = format!("round {round}");
            reader.get_mut().write_all(text.as_bytes()).expect("write");
            assert_eq!(read_exactly(&mut reader, text.len()), text);
        }
    }
}

#[test]
fn a_declined_upgrade_keeps_serving_http_in_order() {
    let running = Running::start(1, Config::default());
    let mut stream = running.connect();
    let pipelined = format!(
        "{}{}",
        upgrade_request("/decline"),
        "GET /plain HTTP/1.1\r\nHost: test\r\n\r\n"
    );
    stream.write_all(pipelined.as_bytes()).expect("write");
    let mut reader = BufReader::new(stream);
    assert_eq!(read_text(&mut reader), "declined (Ok(()))\n");
    assert_eq!(
        read_text(&mut reader),
        format!(
            "plain: {:?} then {:?}\n",
            Err::<(), _>(UpgradeError::NotRequested),
            Err::<(), _>(UpgradeError::NotRequested)
        )
    );
    // An upgrade request whose handler registers twice: the second is refused.
    reader
        .get_mut()
        .write_all(upgrade_request("/twice").as_bytes())
        .expect("write");
    assert_eq!(
        read_text(&mut reader),
        format!(
            "plain: {:?} then {:?}\n",
            Ok::<(), UpgradeError>(()),
            Err::<(), _>(UpgradeError::Gone)
        )
    );
    // Still HTTP: and still upgradable.
    reader
        .get_mut()
        .write_all(upgrade_request("/echo").as_bytes())
        .expect("write");
    assert_eq!(read_head(&mut reader).0, 101);
    reader.get_mut().write_all(b"ping").expect("write");
    assert_eq!(read_exactly(&mut reader, 4), "ping");
}

#[test]
fn http_timeouts_no_longer_cut_an_upgraded_connection() {
    let config = Config::default()
        .header_read_timeout(Duration::from_millis(200))
        .keep_alive_timeout(Duration::from_millis(200))
        .send_timeout(Duration::from_millis(200));
    let running = Running::start(1, config);
    let mut stream = running.connect();
    stream
        .write_all(upgrade_request("/echo").as_bytes())
        .expect("write");
    let mut reader = BufReader::new(stream);
    assert_eq!(read_head(&mut reader).0, 101);
    // Silent for longer than every HTTP timeout, then still echoed.
    std::thread::sleep(Duration::from_millis(800));
    reader.get_mut().write_all(b"still here").expect("write");
    assert_eq!(read_exactly(&mut reader, 10), "still here");
    // A half-sent head on a plain connection is still cut (the limits hold
    // for HTTP).
    let mut plain = running.connect();
    plain.write_all(b"GET / HTTP/1.1\r\n").expect("write");
    let mut plain = BufReader::new(plain);
    assert_eq!(read_head(&mut plain).0, 408);
}

#[test]
fn a_panicking_upgrade_task_closes_only_its_connection() {
    let running = Running::start(1, Config::default());
    let mut survivor = running.connect();
    survivor
        .write_all(upgrade_request("/echo").as_bytes())
        .expect("write");
    let mut survivor = BufReader::new(survivor);
    assert_eq!(read_head(&mut survivor).0, 101);

    let mut doomed = running.connect();
    doomed
        .write_all(upgrade_request("/panic").as_bytes())
        .expect("write");
    let mut doomed = BufReader::new(doomed);
    assert_eq!(read_head(&mut doomed).0, 101);
    doomed.get_mut().write_all(b"x").expect("write");
    assert!(
        closed(&mut doomed),
        "the panicking task's connection closes"
    );

    // The shard lives on: the other upgraded connection and new requests.
    survivor.get_mut().write_all(b"alive").expect("write");
    assert_eq!(read_exactly(&mut survivor, 5), "alive");
    let mut fresh = running.connect();
    fresh
        .write_all(b"GET /plain HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("write");
    let mut fresh = BufReader::new(fresh);
    assert!(read_text(&mut fresh).starts_with("plain"));
}

#[test]
fn shutdown_ends_upgraded_connections_within_the_grace() {
    // Grace: half the shutdown timeout.
    let config = Config::default().shutdown_timeout(Duration::from_secs(2));
    let mut running = Running::start(2, config);
    let open = |path: &str| {
        let mut stream = running.connect();
        stream
            .write_all(upgrade_request(path).as_bytes())
            .expect("write");
        let mut reader = BufReader::new(stream);
        assert_eq!(read_head(&mut reader).0, 101);
        reader
    };
    // One task that ignores shutdown, one that says goodbye.
    let mut deaf = open("/echo");
    let mut polite = open("/polite");
    polite.get_mut().write_all(b"hi").expect("write");
    assert_eq!(read_exactly(&mut polite, 2), "hi");

    let took = running.shutdown();
    assert!(
        took < Duration::from_millis(1900),
        "the shard waited {took:?} for its upgraded connections"
    );
    assert_eq!(read_exactly(&mut polite, 4), "bye\n");
    assert!(closed(&mut polite));
    assert!(closed(&mut deaf), "the deaf task's socket is closed");
}
