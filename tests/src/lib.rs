//! Test kit for the end-to-end tests: start a real forkless binary, find
//! its port, talk raw HTTP/1.1 to it, signal it, and always clean up.
//!
//! Every wait is bounded; a [`Server`] is killed when dropped.

pub mod browser;
pub mod load;
pub mod raw;
pub mod services;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long any single network read in a test may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The `target/<profile>` directory the running test binary lives in.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of an app binary of this workspace, built once per test process
/// with the same profile as the tests.
pub fn app_binary(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let dir = profile_dir();
    if !built.iter().any(|p| p == package) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(["build", "--quiet", "-p", package, "--bin", package]);
        // The environment of a top-level `cargo build`, without what cargo
        // sets for the test binary (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...):
        // ring's build script reruns when those change, and everything
        // above it (forkless, the app) would rebuild on every test run.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_for_the_test = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*name);
            if set_for_the_test {
                command.env_remove(&*name);
            }
        }
        if dir.file_name().is_some_and(|name| name == "release") {
            command.arg("--release");
        }
        let status = command.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p {package} failed");
        built.push(package.to_owned());
    }
    dir.join(package)
}

/// A running server process.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// The address its listener resolved to.
    pub addr: SocketAddr,
    output: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `binary` with `args` plus `--listen 127.0.0.1:0` and waits
    /// (at most 20 s) for its `listening on http://...` (or `https://`) line.
    pub fn start(binary: &Path, args: &[&str]) -> Server {
        let mut command = Command::new(binary);
        command.args(["--listen", "127.0.0.1:0"]).args(args);
        Server::start_command(command)
    }

    /// Starts a prepared command (which must make the server listen on a
    /// free port) and waits (at most 20 s) for its `listening on` line.
    pub fn start_command(mut command: Command) -> Server {
        let binary = PathBuf::from(command.get_program());
        let (found_tx, found_rx) = std::sync::mpsc::channel();
        let (mut child, output) = spawn_collected(&mut command, Some(found_tx));
        let addr = match found_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} printed no `listening on` line; output:\n{}",
                    binary.display(),
                    output.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
        };
        Server {
            child,
            addr,
            output,
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the process printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The admin endpoint's address, from the `admin on http://...` line a
    /// server started with `--admin IP:0` prints (waits at most 5 s for it).
    pub fn admin_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let output = self.output();
            let found = output
                .lines()
                .find_map(|line| announced_addr(line, "admin on"));
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no `admin on` line in:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Opens a connection with bounded reads and writes.
    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// `GET path` on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        let mut stream = self.connect();
        send(&mut stream, &request("GET", path, &[]));
        read_response(&mut BufReader::new(stream)).expect("a response")
    }

    /// `method path` with `body` (sent with a `Content-Length`, even when
    /// empty) on a fresh connection, so on whichever shard the kernel picks.
    pub fn fetch(&self, method: &str, path: &str, body: &[u8]) -> BinaryResponse {
        let mut stream = self.connect();
        send(&mut stream, &request_with_body(method, path, &[], body));
        read_binary_response(&mut BufReader::new(stream)).expect("a response")
    }

    /// The body of `GET path` from every shard, by `x-shard`, opening
    /// fresh connections until each of the `shards` answered (at most 2,000).
    pub fn per_shard(
        &self,
        path: &str,
        shards: usize,
    ) -> std::collections::HashMap<String, String> {
        let mut answers = std::collections::HashMap::new();
        for _ in 0..2000 {
            if answers.len() == shards {
                break;
            }
            let response = self.get(path);
            assert_eq!(response.status, 200, "GET {path}");
            let shard = response.header("x-shard").expect("x-shard").to_owned();
            answers.insert(shard, response.body);
        }
        assert_eq!(answers.len(), shards, "not every shard answered");
        answers
    }

    /// Opens fresh connections until one lands on `shard` (at most 2,000 tries).
    pub fn connect_to_shard(&self, shard: &str) -> Option<(BufReader<TcpStream>, Response)> {
        for _ in 0..2000 {
            let mut stream = BufReader::new(self.connect());
            send(stream.get_mut(), &request("GET", "/", &[]));
            let response = read_response(&mut stream).expect("a response");
            if response.header("x-shard") == Some(shard) {
                return Some((stream, response));
            }
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process that is not a server (a client such as `top --plain`): its
/// stdout and stderr are collected; killed when dropped.
#[derive(Debug)]
pub struct Watched {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Watched {
    /// Starts `command` with its output collected.
    pub fn start(mut command: Command) -> Watched {
        let (child, output) = spawn_collected(&mut command, None);
        Watched { child, output }
    }

    /// Everything it printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits at most `timeout` until what it printed after byte `from`
    /// contains `wanted`; the offset just past it. Fails the test naming
    /// `wanted` and showing the output otherwise.
    pub fn wait_for_text(&self, from: usize, wanted: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.output();
            if let Some(at) = output.get(from..).and_then(|rest| rest.find(wanted)) {
                return from + at + wanted.len();
            }
            assert!(
                Instant::now() < deadline,
                "no {wanted:?} within {timeout:?} in:\n{}",
                output.get(from..).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` with stdin closed and its stdout and stderr collected
/// into the returned buffer (`found` gets the `listening on` address).
fn spawn_collected(
    command: &mut Command,
    found: Option<std::sync::mpsc::Sender<SocketAddr>>,
) -> (Child, Arc<Mutex<String>>) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", command.get_program()));
    let output = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout = child.stdout.take().expect("piped stdout");
    collect(stderr, output.clone(), None);
    collect(stdout, output.clone(), found);
    (child, output)
}

fn collect(
    pipe: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
    found: Option<std::sync::mpsc::Sender<SocketAddr>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = &found
                && let Some(addr) = listening_addr(&line)
            {
                let _ = found.send(addr);
            }
            let mut output = output.lock().unwrap_or_else(|e| e.into_inner());
            output.push_str(&line);
            output.push('\n');
        }
    });
}

/// The address of a `listening on http://IP:PORT` line, or of its JSON
/// form (`--log-format json`): `{"message":"listening on","url":"http://..."}`.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    announced_addr(line, "listening on")
}

/// The address of a line announcing `what` (`listening on`, `admin on`),
/// in text (`admin on http://IP:PORT`) or JSON (`{"message":"admin on",
/// "url":"http://IP:PORT",..}`).
pub fn announced_addr(line: &str, what: &str) -> Option<SocketAddr> {
    let json;
    let url = match line
        .strip_prefix(what)
        .and_then(|rest| rest.strip_prefix(' '))
    {
        Some(url) => url,
        None if line.starts_with('{') => {
            json = serde_json::from_str::<serde_json::Value>(line).ok()?;
            if json["message"] != what {
                return None;
            }
            json["url"].as_str()?
        }
        None => return None,
    };
    let addr = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    addr.trim().parse().ok()
}

/// A connection with bounded reads and writes.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    stream
}

/// `GET path` at `addr` on a fresh connection (e.g. the admin endpoint).
pub fn get_at(addr: SocketAddr, path: &str) -> Response {
    let mut stream = connect(addr);
    send(&mut stream, &request("GET", path, &[]));
    read_response(&mut BufReader::new(stream)).expect("a response")
}

/// Polls `check` every 10 ms until it holds; fails the test naming `what`
/// after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `POST path` with an empty body at `addr` on a fresh connection.
pub fn post_at(addr: SocketAddr, path: &str) -> Response {
    let mut stream = connect(addr);
    send(
        &mut stream,
        &request("POST", path, &[("content-length", "0")]),
    );
    read_response(&mut BufReader::new(stream)).expect("a response")
}

/// The bytes of an HTTP/1.1 request with a `Host` header and `headers`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// Writes all of `bytes`.
pub fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).expect("write the request");
}

/// One parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One parsed response whose body may be any bytes.
#[derive(Debug, Clone)]
pub struct BinaryResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl BinaryResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The bytes of an HTTP/1.1 request with a `Host` header, `headers`, a
/// `Content-Length` header and `body`.
pub fn request_with_body(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let length = body.len().to_string();
    let mut all = headers.to_vec();
    all.push(("Content-Length", &length));
    let mut bytes = request(method, path, &all);
    bytes.extend_from_slice(body);
    bytes
}

/// Reads one response (Content-Length framed, or an empty body); `None`
/// when the connection closed before a status line.
pub fn read_response(reader: &mut BufReader<TcpStream>) -> Option<Response> {
    let response = read_binary_response(reader)?;
    Some(Response {
        status: response.status,
        headers: response.headers,
        body: String::from_utf8(response.body).expect("utf-8 body"),
    })
}

/// Reads one response like [`read_response`], keeping the body as bytes.
pub fn read_binary_response(reader: &mut BufReader<TcpStream>) -> Option<BinaryResponse> {
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).ok()? == 0 {
        return None;
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("a header has a colon");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| {
            v.parse::<usize>().expect("numeric content-length")
        });
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("read the body");
    Some(BinaryResponse {
        status,
        headers,
        body,
    })
}

/// Whether the peer closed `stream` (a read returns 0 or a reset) within `timeout`.
pub fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    let mut sink = [0u8; 1024];
    let deadline = Instant::now() + timeout;
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// The shard counts every test runs at.
pub const SHARD_COUNTS: [usize; 3] = [1, 2, 4];
