//! Real services for the tests that call them: a private PostgreSQL, a
//! private Redis and a plain HTTP peer, each started by the test and stopped
//! when dropped.
//!
//! - **PostgreSQL**: an `initdb` cluster in a temporary directory (trust
//!   authentication, user `postgres`), served by the `postgres` binary of
//!   the newest `/usr/lib/postgresql/*/bin` on a free 127.0.0.1 port and on a
//!   Unix socket in that directory. PostgreSQL refuses to run as root, so
//!   under root it runs as the `postgres` user the Debian package creates.
//! - **Redis**: `redis-server` on a free 127.0.0.1 port (and a Unix socket),
//!   nothing saved to disk.
//! - **HTTP peer**: a thread answering every `GET` with `peer`, keep-alive.
//!
//! [`Postgres::start`] and [`Redis::start`] return `None`, having printed
//! why, when the binaries are missing (`apt-get install postgresql
//! redis-server`; `.ci/run` installs them). Every wait is bounded; a service
//! that does not come up fails the test with what it printed.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a service may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A free port on 127.0.0.1 (bound and released: another process could
/// take it in between, which a test then reports as a failed start).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind 127.0.0.1:0")
}

/// A fresh directory under the temporary directory, removed by its owner.
fn temp_dir(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "forkless-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// Ends `child`: SIGTERM, then SIGKILL if it is still there after 10 s.
fn stop(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on a child we started and have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What a child printed so far, for a failure message.
fn output_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

/// The uid and gid of `user`, if it exists.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let name = CString::new(user).ok()?;
    // SAFETY: getpwnam(3) with a NUL-terminated name; the record it returns
    // is read at once, before any other call could overwrite it.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    // SAFETY: non-null, so it points to a valid passwd record.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

/// The newest PostgreSQL's binaries directory.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Starts `postgres` on the cluster in `dir` (made by `initdb`), on `port`.
fn spawn_postgres(bin: &Path, dir: &Path, port: u16, ids: Option<(u32, u32)>) -> Child {
    let mut postgres = Command::new(bin.join("postgres"));
    postgres
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off", "-c", "max_connections=200"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = ids {
        postgres.uid(uid).gid(gid);
    }
    postgres.spawn().expect("start postgres")
}

/// A private PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    child: Child,
    dir: PathBuf,
    bin: PathBuf,
    /// The `postgres` user's uid and gid when running as root.
    ids: Option<(u32, u32)>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

impl Postgres {
    /// Creates a cluster and starts it; `None` (after saying why) when
    /// PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = postgres_bin() else {
            eprintln!(
                "skipped: no PostgreSQL (/usr/lib/postgresql/*/bin/initdb); \
                 apt-get install postgresql"
            );
            return None;
        };
        // SAFETY: geteuid(2) has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        let ids = if as_root {
            Some(user_ids("postgres").expect(
                "running as root, PostgreSQL needs the `postgres` user its package creates",
            ))
        } else {
            None
        };
        let dir = temp_dir("postgres");
        if let Some((uid, gid)) = ids {
            let path = CString::new(dir.as_os_str().as_encoded_bytes()).expect("a plain path");
            // SAFETY: chown(2) on a NUL-terminated path we just created.
            let rc = unsafe { libc::chown(path.as_ptr(), uid, gid) };
            assert_eq!(rc, 0, "chown {} to postgres", dir.display());
        }
        let as_owner = |command: &mut Command| {
            if let Some((uid, gid)) = ids {
                command.uid(uid).gid(gid);
            }
        };
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null());
        as_owner(&mut initdb);
        let init = initdb.output().expect("run initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = free_port();
        let mut server = Postgres {
            child: spawn_postgres(&bin, &dir, port, ids),
            dir,
            bin,
            ids,
            port,
        };
        server.wait_ready();
        Some(server)
    }

    /// Waits (bounded) until the server accepts connections.
    fn wait_ready(&mut self) {
        let ready = self.bin.join("pg_isready");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let probe = Command::new(&ready)
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status();
            if probe.is_ok_and(|status| status.success()) {
                return;
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                panic!("postgres did not start: {}", output_of(&mut self.child));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server as an outage would, its clients disconnected at
    /// once (PostgreSQL's fast shutdown, SIGINT); [`resume`](Self::resume)
    /// starts it again on the same port and data.
    pub fn pause(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on a child we started and have not reaped.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            assert!(Instant::now() < deadline, "postgres did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again after [`pause`](Self::pause) and waits for it.
    pub fn resume(&mut self) {
        self.child = spawn_postgres(&self.bin, &self.dir, self.port, self.ids);
        self.wait_ready();
    }

    /// A tokio-postgres connection string over TCP.
    pub fn tcp_config(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// A tokio-postgres connection string over the Unix socket.
    pub fn unix_config(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.display(),
            self.port
        )
    }

    /// The same server as a `postgres://` URL over TCP.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Redis server.
#[derive(Debug)]
pub struct Redis {
    child: Child,
    dir: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

impl Redis {
    /// Starts `redis-server`; `None` (after saying why) when it is not
    /// installed.
    pub fn start() -> Option<Redis> {
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .map(Path::new)
            .find(|path| path.exists());
        let Some(binary) = binary else {
            eprintln!("skipped: no redis-server; apt-get install redis-server");
            return None;
        };
        let dir = temp_dir("redis");
        let port = free_port();
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--unixsocket")
            .arg(dir.join("redis.sock"))
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start redis-server");
        let mut server = Redis { child, dir, port };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if server.ping() {
                return Some(server);
            }
            if Instant::now() >= deadline || matches!(server.child.try_wait(), Ok(Some(_))) {
                panic!(
                    "redis-server did not start: {}",
                    output_of(&mut server.child)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// A `redis://` URL over TCP.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A `redis+unix://` URL over the Unix socket.
    pub fn unix_url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain HTTP/1.1 server on a thread: every request gets `200` with the
/// body `peer`, on keep-alive connections. Stops accepting when dropped.
#[derive(Debug)]
pub struct HttpPeer {
    /// Its address on 127.0.0.1.
    pub addr: SocketAddr,
    stopping: Arc<AtomicBool>,
}

impl HttpPeer {
    /// Binds a free port and starts answering.
    pub fn start() -> HttpPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the HTTP peer");
        let addr = listener.local_addr().expect("the peer's address");
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || answer_peer(stream));
                }
            }
        });
        HttpPeer { addr, stopping }
    }

    /// Its base URL, `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Answers the body-less requests of one connection until it closes.
fn answer_peer(stream: TcpStream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // The head, up to its empty line.
        let mut saw_request = false;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => saw_request = true,
            }
        }
        if saw_request
            && writer
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npeer")
                .is_err()
        {
            return;
        }
    }
}
