//! HTTPS (`--tls-cert`, `--tls-key`): curl at 1, 2 and 4 shards (h2 and http/1.1 by ALPN); session
//! resumption whichever shard answers (TLS 1.3 tickets, TLS 1.2 session
//! IDs), across a rolling reload and a binary upgrade; certificate reload
//! without a restart; the handshake timeout; one-line errors for bad files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forkless_tests::tls::{Ca, Leaf, TlsClient, TlsResponse};
use forkless_tests::{SHARD_COUNTS, Server, closed_within, connect, post_at, wait_for};

const TESTAPP: &str = env!("CARGO_BIN_EXE_forkless-testapp");

/// A directory of this test's own, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("forkless-https-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a test directory");
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(shards: usize, cert: &Path, key: &Path, extra: &[&str]) -> Server {
    let mut command = Command::new(TESTAPP);
    command.args(["--listen", "127.0.0.1:0", "--shards", &shards.to_string()]);
    command
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key);
    if shards > 2 {
        command.arg("--no-pin");
    }
    command.args(extra);
    let server = Server::start_command(command);
    let line = format!("listening on https://{}", server.addr);
    wait_for("the https:// start-up line", Duration::from_secs(5), || {
        server.output().contains(&line)
    });
    server
}

fn get(client: &TlsClient, addr: SocketAddr, path: &str) -> TlsResponse {
    let response = client
        .get(addr, path)
        .unwrap_or_else(|e| panic!("GET {path} over TLS: {e}"));
    assert_eq!(response.status, 200, "{response:?}");
    response
}

fn shard_of(response: &TlsResponse) -> String {
    response
        .header("x-shard")
        .unwrap_or_else(|| panic!("no x-shard: {response:?}"))
        .to_owned()
}

#[test]
fn curl_gets_https_at_1_2_and_4_shards() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let ca = Ca::new();
    let dir = Dir::new("curl");
    let (cert, key) = ca.leaf("curl").write(&dir.0);
    let ca_file = dir.0.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca.pem");
    for shards in SHARD_COUNTS {
        let server = start(shards, &cert, &key, &[]);
        let port = server.addr.port();
        // ALPN: curl offers h2 first and gets it; asked for HTTP/1.1, that.
        for (flag, status_line) in [("--http2", "HTTP/2 200"), ("--http1.1", "HTTP/1.1 200")] {
            let output = Command::new("curl")
                .args(["-sS", "-i", flag, "--max-time", "10", "--cacert"])
                .arg(&ca_file)
                .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
                .arg(format!("https://localhost:{port}/"))
                .output()
                .expect("run curl");
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{shards} shards, {flag}: {}\n{}",
                String::from_utf8_lossy(&output.stderr),
                server.output()
            );
            assert!(text.starts_with(status_line), "{flag}: {text}");
            assert!(text.contains("x-shard: "), "{text}");
            assert!(text.ends_with("ok\n"), "{text}");
        }
    }
}

/// A full handshake on one shard, then new connections until one lands on
/// another shard: it must resume.
fn resumes_on_another_shard(server: &Server, client: &TlsClient) {
    let first = get(client, server.addr, "/");
    assert!(!first.resumed, "the first handshake is a full one");
    assert_eq!(first.alpn.as_deref(), Some(&b"http/1.1"[..]), "ALPN");
    let issuer = shard_of(&first);
    for _ in 0..400 {
        let next = get(client, server.addr, "/");
        assert!(next.resumed, "a handshake did not resume: {next:?}");
        if shard_of(&next) != issuer {
            return;
        }
    }
    panic!("400 connections all landed on shard {issuer}");
}

#[test]
fn sessions_resume_whichever_shard_answers() {
    let ca = Ca::new();
    let dir = Dir::new("resume");
    let (cert, key) = ca.leaf("resume").write(&dir.0);
    for shards in [2, 4] {
        let server = start(shards, &cert, &key, &[]);
        // TLS 1.3 tickets.
        resumes_on_another_shard(&server, &ca.client(false));
        // TLS 1.2 session IDs (the session cache).
        resumes_on_another_shard(&server, &ca.client(true));
    }
}

#[test]
fn sessions_resume_across_a_rolling_reload() {
    let ca = Ca::new();
    let dir = Dir::new("reload-resume");
    let (cert, key) = ca.leaf("reload").write(&dir.0);
    let server = start(2, &cert, &key, &[]);
    let client = ca.client(false);
    assert!(!get(&client, server.addr, "/").resumed);
    let boot = get(&client, server.addr, "/boot").body;
    server.signal(libc::SIGHUP);
    wait_for("the reload to finish", Duration::from_secs(20), || {
        server.output().contains("rolling reload done")
    });
    let after = get(&client, server.addr, "/boot");
    assert_ne!(after.body, boot, "a new incarnation answers");
    assert!(after.resumed, "did not resume after the reload: {after:?}");
}

/// Ends a process this test did not start (the upgrade's new process).
struct Reaper(libc::pid_t);

impl Drop for Reaper {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid read from the server it names.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[test]
fn sessions_resume_across_a_binary_upgrade() {
    let ca = Ca::new();
    let dir = Dir::new("upgrade-resume");
    let (cert, key) = ca.leaf("upgrade").write(&dir.0);
    let mut server = start(2, &cert, &key, &[]);
    let client = ca.client(false);
    let first = get(&client, server.addr, "/pid");
    assert!(!first.resumed);
    server.signal(libc::SIGUSR2);
    let Some(exit) = server.wait_exit(Duration::from_secs(20)) else {
        panic!(
            "the old process did not exit after the upgrade:\n{}",
            server.output()
        );
    };
    assert!(exit.success(), "{exit:?}\n{}", server.output());
    let after = get(&client, server.addr, "/pid");
    let new_pid: libc::pid_t = after.body.trim().parse().expect("a pid");
    let _reaper = Reaper(new_pid);
    assert_ne!(after.body, first.body, "the new process answers");
    assert!(after.resumed, "did not resume after the upgrade: {after:?}");
    // SAFETY: kill(2) on the new server's pid.
    unsafe { libc::kill(new_pid, libc::SIGTERM) };
}

#[test]
fn certificates_reload_without_a_restart_and_a_broken_one_is_refused() {
    let ca = Ca::new();
    let dir = Dir::new("cert-reload");
    let (one, two) = (ca.leaf("one"), ca.leaf("two"));
    let (cert, key) = one.write(&dir.0);
    let mut command = Command::new(TESTAPP);
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--admin",
        "127.0.0.1:0",
    ]);
    command
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    let server = Server::start_command(command);
    let admin = server.admin_addr();
    let client = ca.client(false);
    assert_eq!(get(&client, server.addr, "/").cert, one.der);

    // A request in flight on an open connection while the files change.
    let mut open = client.open(server.addr).expect("a connection");
    two.write(&dir.0);
    let slow = std::thread::spawn(move || open.get("/slow"));
    std::thread::sleep(Duration::from_millis(50));
    server.signal(libc::SIGHUP);
    wait_for("the certificate reload", Duration::from_secs(10), || {
        server.output().contains("TLS certificate reloaded")
    });
    let answered = slow
        .join()
        .expect("the slow request's thread")
        .expect("the open connection was answered");
    assert_eq!(answered.status, 200);
    assert_eq!(answered.body, "slow\n");
    assert_eq!(
        answered.cert, one.der,
        "the open connection keeps its session"
    );
    // A fresh client (no session to resume) sees the new certificate.
    assert_eq!(get(&ca.client(false), server.addr, "/").cert, two.der);
    wait_for("the reload to finish", Duration::from_secs(20), || {
        server.output().contains("rolling reload done")
    });

    // A broken certificate, through POST /reload: the current one stays.
    std::fs::write(&cert, "not a certificate\n").expect("break cert.pem");
    assert_eq!(post_at(admin, "/reload").status, 202);
    wait_for("the refused reload", Duration::from_secs(10), || {
        server.output().contains("TLS certificate not reloaded")
    });
    let output = server.output();
    assert!(
        output.contains(&format!(
            "--tls-cert {}: holds no certificate",
            cert.display()
        )),
        "{output}"
    );
    assert_eq!(get(&ca.client(false), server.addr, "/").cert, two.der);
}

#[test]
fn a_silent_or_stalled_handshake_is_cut_at_the_header_timeout() {
    let ca = Ca::new();
    let dir = Dir::new("handshake-timeout");
    let (cert, key) = ca.leaf("timeout").write(&dir.0);
    let server = start(2, &cert, &key, &["--header-read-timeout", "1s"]);
    let began = Instant::now();
    let mut silent = connect(server.addr);
    let mut stalled = connect(server.addr);
    // The first bytes of a ClientHello record, and then nothing.
    std::io::Write::write_all(&mut stalled, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("send part of a ClientHello");
    // Others are served meanwhile.
    let client = ca.client(false);
    assert_eq!(get(&client, server.addr, "/").body, "ok\n");
    for (what, stream) in [("silent", &mut silent), ("stalled", &mut stalled)] {
        assert!(
            closed_within(stream, Duration::from_secs(5)),
            "the {what} client was not cut off"
        );
    }
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "cut before the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(get(&client, server.addr, "/").body, "ok\n");
}

/// Runs the app with `cert` and `key`: it must exit at once with one line
/// on stderr; that line.
fn start_error(cert: &Path, key: &Path) -> String {
    let mut child = Command::new(TESTAPP)
        .args(["--listen", "127.0.0.1:0", "--shards", "1"])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the app");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the app did not exit on a bad certificate");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0].to_owned()
}

#[test]
fn bad_certificate_files_are_one_line_start_errors() {
    let ca = Ca::new();
    let dir = Dir::new("bad-files");
    let (cert, key) = ca.leaf("good").write(&dir.0);
    let other = ca.leaf("other");
    let missing = dir.0.join("missing.pem");

    let line = start_error(&missing, &key);
    assert!(
        line.contains(&format!(
            "--tls-cert {}: cannot read the file",
            missing.display()
        )),
        "{line}"
    );
    let line = start_error(&cert, &missing);
    assert!(
        line.contains(&format!(
            "--tls-key {}: cannot read the file",
            missing.display()
        )),
        "{line}"
    );

    let garbage = dir.0.join("garbage.pem");
    std::fs::write(&garbage, "hello\n").expect("write garbage.pem");
    let line = start_error(&garbage, &key);
    assert!(line.contains("holds no certificate"), "{line}");
    let line = start_error(&cert, &garbage);
    assert!(line.contains("holds no private key"), "{line}");

    let other_key = dir.0.join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).expect("write other-key.pem");
    let line = start_error(&cert, &other_key);
    assert!(
        line.contains(&format!(
            "--tls-key {}: the key does not match the certificate in {}",
            other_key.display(),
            cert.display()
        )),
        "{line}"
    );

    let expired: Leaf = ca.leaf_with("expired", |params| {
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let expired_dir = dir.0.join("expired");
    std::fs::create_dir_all(&expired_dir).expect("a directory");
    let (expired_cert, expired_key) = expired.write(&expired_dir);
    let line = start_error(&expired_cert, &expired_key);
    assert!(
        line.contains(&format!(
            "--tls-cert {}: the certificate expired on 2020-01-01 00:00:00 UTC",
            expired_cert.display()
        )),
        "{line}"
    );
}

#[test]
fn the_connection_limit_holds_over_tls() {
    let ca = Ca::new();
    let dir = Dir::new("limit");
    let (cert, key) = ca.leaf("limit").write(&dir.0);
    let server = start(1, &cert, &key, &["--max-connections", "3"]);
    let client = ca.client(false);
    let mut kept = Vec::new();
    for _ in 0..3 {
        let mut open = client
            .open(server.addr)
            .expect("a connection under the limit");
        assert_eq!(open.get("/").expect("answered").status, 200);
        kept.push(open);
    }
    // Past the limit: closed before the handshake completes.
    assert!(
        client.get(server.addr, "/").is_err(),
        "a fourth connection was served past --max-connections 3"
    );
    drop(kept.pop());
    wait_for("a slot to free up", Duration::from_secs(5), || {
        client.get(server.addr, "/").is_ok()
    });
    for open in &mut kept {
        assert_eq!(open.get("/").expect("still served").status, 200);
    }
}

/// A `wss://` client of the chat app over the test client's TLS session.
type Wss =
    tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>;

fn next_chat_message(ws: &mut Wss) -> serde_json::Value {
    loop {
        match ws.read().expect("a frame") {
            tungstenite::Message::Text(text) => {
                let frame: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                if frame["kind"] == "message" {
                    return frame;
                }
            }
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[test]
fn websockets_work_over_tls_across_shards() {
    let ca = Ca::new();
    let dir = Dir::new("wss");
    let (cert, key) = ca.leaf("wss").write(&dir.0);
    let mut command = Command::new(forkless_tests::app_binary("chat"));
    command.args(["--listen", "127.0.0.1:0", "--shards", "2", "--no-pin"]);
    command
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    let server = Server::start_command(command);
    let client = ca.client(false);
    let join = |name: &str| -> (Wss, String) {
        let stream = client
            .open(server.addr)
            .expect("a TLS connection")
            .into_stream();
        let url = format!(
            "wss://localhost:{}/ws/lobby?name={name}",
            server.addr.port()
        );
        let (ws, response) = tungstenite::client(url.as_str(), stream).expect("the handshake");
        assert_eq!(response.status(), 101);
        let shard = response
            .headers()
            .get("x-shard")
            .and_then(|v| v.to_str().ok())
            .expect("the 101 carries x-shard")
            .to_owned();
        (ws, shard)
    };
    let (mut first, first_shard) = join("ann");
    // A second client on the other shard, so the message crosses the bus.
    let mut second = None;
    for k in 0..200 {
        let (ws, shard) = join(&format!("bob{k}"));
        if shard != first_shard {
            second = Some(ws);
            break;
        }
    }
    let mut second = second.expect("a client on the other shard");
    first
        .send(tungstenite::Message::text("hello over wss"))
        .expect("send");
    for ws in [&mut first, &mut second] {
        let frame = next_chat_message(ws);
        assert_eq!(frame["text"], "hello over wss");
        assert_eq!(frame["from"], "ann");
    }
}
