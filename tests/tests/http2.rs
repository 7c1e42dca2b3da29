//! HTTP/2: h2c with prior knowledge and h2 over TLS by ALPN (with
//! `http/1.1` still negotiated for a client that offers only that), 100
//! concurrent streams on one connection, a handler panic costing one
//! stream, an axum router, GOAWAY on SIGTERM and on a rolling reload with
//! streams in flight finished, GOAWAY for an idle connection, and the
//! floods: rapid reset (CVE-2023-44487) and CONTINUATION.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use forkless_tests::tls::Ca;
use forkless_tests::{IO_TIMEOUT, SHARD_COUNTS, Server, connect};
use h2::client::SendRequest;

const TESTAPP: &str = env!("CARGO_BIN_EXE_forkless-testapp");
const AXUM: &str = env!("CARGO_BIN_EXE_forkless-axum");

fn start(binary: &str, shards: usize, extra: &[&str]) -> Server {
    let shards = shards.to_string();
    let mut args = vec!["--shards", shards.as_str()];
    if shards != "1" {
        args.push("--no-pin");
    }
    args.extend_from_slice(extra);
    Server::start(binary.as_ref(), &args)
}

/// Runs `future` on a tokio runtime of its own, bounded by 20 s.
fn run<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(20), future)
                .await
                .expect("the HTTP/2 exchange took longer than 20 s")
        })
}

/// An h2c connection with prior knowledge; its driver runs as a task whose
/// handle says how the connection ended.
async fn h2c(
    addr: SocketAddr,
) -> (
    SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    (send, tokio::spawn(conn))
}

/// A response: status, `x-shard`, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    shard: Option<String>,
    body: String,
}

async fn send(
    client: &SendRequest<Bytes>,
    method: &str,
    path: &str,
    body: Option<Bytes>,
) -> Result<Answer, h2::Error> {
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(()).expect("a request");
    let mut client = client.clone().ready().await?;
    let (response, mut stream) = client.send_request(request, body.is_none())?;
    if let Some(body) = body {
        stream.send_data(body, true)?;
    }
    let response = response.await?;
    let status = response.status().as_u16();
    let shard = response
        .headers()
        .get("x-shard")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        shard,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

async fn get(client: &SendRequest<Bytes>, path: &str) -> Answer {
    send(client, "GET", path, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path} over HTTP/2: {e}"))
}

#[test]
fn h2c_serves_100_concurrent_streams_and_a_panic_costs_one_stream() {
    for shards in SHARD_COUNTS {
        let server = start(TESTAPP, shards, &[]);
        run(async {
            let (client, _conn) = h2c(server.addr).await;
            let first = get(&client, "/").await;
            assert_eq!((first.status, first.body.as_str()), (200, "ok\n"));
            let shard: usize = first
                .shard
                .as_deref()
                .and_then(|s| s.parse().ok())
                .expect("x-shard on an HTTP/2 response");
            assert!(shard < shards, "x-shard {shard} at {shards} shards");

            // 100 at once, each on its own stream of the one connection.
            let all = (0..100).map(|i| {
                let client = client.clone();
                async move { (i, get(&client, &format!("/echo/{i}")).await) }
            });
            for (i, answer) in futures::future::join_all(all).await {
                assert_eq!(answer.status, 200, "stream {i}: {answer:?}");
                assert_eq!(answer.body, i.to_string(), "stream {i}");
                assert_eq!(answer.shard.as_deref(), first.shard.as_deref());
            }

            let panicked = get(&client, "/panic").await;
            assert_eq!(panicked.status, 500, "{panicked:?}");
            let after = get(&client, "/").await;
            assert_eq!(after.status, 200, "the stream after a panic: {after:?}");
        });
    }
}

#[test]
fn axum_routers_work_over_h2c_and_request_bodies_keep_their_limit() {
    let server = start(AXUM, 2, &["--max-body-size", "1024"]);
    run(async {
        let (client, _conn) = h2c(server.addr).await;
        let root = get(&client, "/").await;
        assert_eq!((root.status, root.body.as_str()), (200, "ok\n"));
        assert!(root.shard.is_some(), "x-shard from an axum router");
        let user = get(&client, "/users/7").await;
        assert_eq!(user.status, 200, "{user:?}");
        assert!(user.body.contains('7'), "{user:?}");
        let json = send(
            &client,
            "POST",
            "/json",
            Some(Bytes::from_static(br#"{"a":1}"#)),
        )
        .await
        .expect("POST /json");
        assert_eq!(json.status, 200, "{json:?}");
        assert!(json.body.contains(r#""got":{"a":1}"#), "{json:?}");
        // Over `--max-body-size`: refused with 413 (or the stream reset).
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(4096));
        match send(&client, "POST", "/json", Some(Bytes::from(big))).await {
            Ok(answer) => assert_eq!(answer.status, 413, "{answer:?}"),
            Err(error) => assert!(error.is_reset(), "{error}"),
        }
        let after = get(&client, "/").await;
        assert_eq!(after.status, 200, "the connection after a refused body");
    });
}

/// A directory of this test's own, removed when dropped.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn h2_over_tls_by_alpn_and_http1_for_a_client_that_offers_only_it() {
    let dir = std::env::temp_dir().join(format!("forkless-http2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a test directory");
    let dir = Dir(dir);
    let ca = Ca::new();
    let (cert, key) = ca.leaf("h2").write(&dir.0);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = start(TESTAPP, 2, &["--tls-cert", &cert, "--tls-key", &key]);

    // A client that offers only http/1.1 gets it.
    let http1 = ca.client(false);
    let response = http1.get(server.addr, "/").expect("GET / over TLS");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // One that offers h2 first gets HTTP/2.
    let mut config = (*http1.config).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    run(async {
        let tcp = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (client, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
        tokio::spawn(conn);
        let answer = get(&client, "/echo/tls").await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "tls"));
        assert!(answer.shard.is_some(), "x-shard over h2 and TLS");
    });
}

/// Five slow streams are in flight when `signal` arrives: each is
/// answered, then the connection ends cleanly (GOAWAY) within `within`.
async fn streams_finish_after(server: &Server, signal: i32, within: Duration) {
    let (client, conn) = h2c(server.addr).await;
    let slow = (0..5).map(|_| {
        let client = client.clone();
        async move { get(&client, "/slow").await }
    });
    let slow = tokio::spawn(futures::future::join_all(slow));
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.signal(signal);
    for answer in slow.await.expect("the slow requests") {
        assert_eq!((answer.status, answer.body.as_str()), (200, "slow\n"));
    }
    let ended = tokio::time::timeout(within, conn)
        .await
        .expect("the connection ended after GOAWAY");
    assert!(matches!(ended, Ok(Ok(()))), "ended with {ended:?}");
}

#[test]
fn sigterm_sends_goaway_and_streams_in_flight_finish() {
    let mut server = start(TESTAPP, 1, &[]);
    run(streams_finish_after(
        &server,
        libc::SIGTERM,
        Duration::from_secs(5),
    ));
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exited after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_rolling_reload_sends_goaway_and_streams_in_flight_finish() {
    let server = start(TESTAPP, 2, &[]);
    // The old incarnation drains: GOAWAY, then the connection ends.
    run(streams_finish_after(
        &server,
        libc::SIGHUP,
        Duration::from_secs(10),
    ));
    // The new incarnations serve.
    run(async {
        let (client, _conn) = h2c(server.addr).await;
        assert_eq!(get(&client, "/").await.status, 200);
    });
}

#[test]
fn an_idle_connection_is_sent_goaway_and_closed() {
    let server = start(
        TESTAPP,
        1,
        &["--keep-alive-timeout", "1s", "--header-read-timeout", "1s"],
    );
    run(async {
        let (client, conn) = h2c(server.addr).await;
        assert_eq!(get(&client, "/").await.status, 200);
        let started = Instant::now();
        // Idle for one to two keep-alive periods, then GOAWAY and the end.
        let ended = tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the idle connection was closed");
        assert!(matches!(ended, Ok(Ok(()))), "ended with {ended:?}");
        assert!(started.elapsed() >= Duration::from_millis(900));
    });
}

/// Raw HTTP/2 frames, for clients no library would be.
mod frame {
    pub(super) const HEADERS: u8 = 1;
    pub(super) const RST_STREAM: u8 = 3;
    pub(super) const SETTINGS: u8 = 4;
    pub(super) const GOAWAY: u8 = 7;
    pub(super) const CONTINUATION: u8 = 9;
    pub(super) const END_STREAM: u8 = 1;
    pub(super) const END_HEADERS: u8 = 4;
    pub(super) const ENHANCE_YOUR_CALM: u32 = 0xb;

    pub(super) fn put(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// `GET /` to `localhost` in HPACK: static-table indexes, and
    /// `:authority` as a literal without indexing.
    pub(super) const GET: &[u8] = b"\x82\x86\x84\x01\x09localhost";

    /// Reads frames until a GOAWAY (its error code) or the end of the
    /// stream (`None`).
    pub(super) fn goaway(stream: &mut impl std::io::Read) -> Option<u32> {
        let mut head = [0u8; 9];
        loop {
            stream.read_exact(&mut head).ok()?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).ok()?;
            if head[3] == GOAWAY && len >= 8 {
                return Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
    }
}

/// A raw h2c connection that has sent its preface and SETTINGS.
fn raw_h2c(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame::put(&mut out, frame::SETTINGS, 0, 0, &[]);
    stream.write_all(&out).expect("send the preface");
    stream
}

/// Writes `chunks` of frames until the server stops taking them; the bytes
/// written. The reader thread gets the GOAWAY meanwhile.
fn flood(
    stream: &TcpStream,
    mut chunk: impl FnMut(usize) -> Option<Vec<u8>>,
) -> (usize, Option<u32>) {
    let mut reader = stream.try_clone().expect("clone the stream");
    reader
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("a read timeout");
    let goaway = std::thread::spawn(move || frame::goaway(&mut reader));
    let mut writer = stream.try_clone().expect("clone the stream");
    writer.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut written = 0;
    let mut i = 0;
    while let Some(bytes) = chunk(i) {
        if writer.write_all(&bytes).is_err() {
            break;
        }
        written += bytes.len();
        i += 1;
    }
    let code = goaway.join().expect("the reader thread");
    (written, code)
}

#[test]
fn rapid_reset_ends_in_goaway_while_other_connections_are_served() {
    let server = start(TESTAPP, 1, &[]);
    let started = Instant::now();
    let stream = raw_h2c(server.addr);
    // 100,000 streams opened and reset at once, 1,000 per write.
    let (_, code) = flood(&stream, |batch| {
        (batch < 100).then(|| {
            let mut out = Vec::new();
            for i in 0..1000u32 {
                let id = 2 * (batch as u32 * 1000 + i) + 1;
                let flags = frame::END_HEADERS | frame::END_STREAM;
                frame::put(&mut out, frame::HEADERS, flags, id, frame::GET);
                frame::put(&mut out, frame::RST_STREAM, 0, id, &8u32.to_be_bytes());
            }
            out
        })
    });
    assert_eq!(
        code,
        Some(frame::ENHANCE_YOUR_CALM),
        "a rapid-reset client gets GOAWAY(ENHANCE_YOUR_CALM)"
    );
    // The shard (the only one) serves others all along.
    run(async {
        let (client, _conn) = h2c(server.addr).await;
        assert_eq!(get(&client, "/").await.status, 200);
    });
    assert_eq!(server.get("/").status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_continuation_flood_is_cut_off() {
    let server = start(TESTAPP, 1, &[]);
    let stream = raw_h2c(server.addr);
    // A header block that never ends: HEADERS without END_HEADERS, then
    // CONTINUATION frames of literal headers, 16 KiB each, up to 64 MiB.
    let field = b"\x00\x01a\x01b";
    let (written, code) = flood(&stream, |i| {
        (i < 4096).then(|| {
            let payload: Vec<u8> = field.iter().copied().cycle().take(16 * 1024).collect();
            let mut out = Vec::new();
            if i == 0 {
                frame::put(&mut out, frame::HEADERS, 0, 1, frame::GET);
            }
            frame::put(&mut out, frame::CONTINUATION, 0, 1, &payload);
            out
        })
    });
    // h2 allows the CONTINUATION frames the header list limit needs, and a
    // few more; then GOAWAY (its code depends on where the block broke off).
    assert!(code.is_some(), "no GOAWAY for the flood");
    assert!(
        written < 8 * 1024 * 1024,
        "the server took {written} bytes of one header block"
    );
    let mut rest = Vec::new();
    let mut reader = stream;
    reader
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("a read timeout");
    match reader.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the flooding connection is still open: {e}"),
    }
    assert_eq!(server.get("/").status, 200, "the shard serves on");
}
