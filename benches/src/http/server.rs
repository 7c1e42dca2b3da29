//! The servers under test and the guard that runs one.
//!
//! Every server is started in a process group of its own, so that killing
//! it ([`Running`]'s `Drop`, also on errors and panics) takes its children
//! (Node's workers) too. Its stdout and stderr are drained by two threads
//! for as long as it lives (forkless logs to stdout: an undrained pipe would
//! block it), keeping the last few KiB for error messages.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a server may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How much of a server's output is kept for error messages.
const TAIL_BYTES: usize = 4096;

/// A server the bench compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// `apps/hello`, release build.
    Forkless,
    /// `peer-tokio-hyper`: hyper 1.x on tokio's multi-thread runtime.
    TokioHyper,
    /// `peer-actix-web`.
    ActixWeb,
    /// `peer-may-minihttp`.
    MayMinihttp,
    /// `benches/peers/node/cluster.js` under `node`.
    NodeCluster,
    /// `peer-floor-uring`: no framework, raw io_uring (the floor).
    FloorUring,
    /// `peer-floor-epoll`: no framework, raw epoll.
    FloorEpoll,
}

impl Peer {
    /// Every peer, in table order.
    pub const ALL: [Peer; 7] = [
        Peer::Forkless,
        Peer::TokioHyper,
        Peer::ActixWeb,
        Peer::MayMinihttp,
        Peer::NodeCluster,
        Peer::FloorUring,
        Peer::FloorEpoll,
    ];

    /// The floor every ratio to "the floor" is taken to.
    pub const FLOOR: Peer = Peer::FloorUring;

    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Forkless => "forkless",
            Peer::TokioHyper => "tokio+hyper",
            Peer::ActixWeb => "actix-web",
            Peer::MayMinihttp => "may-minihttp",
            Peer::NodeCluster => "node cluster",
            Peer::FloorUring => "floor io_uring",
            Peer::FloorEpoll => "floor epoll",
        }
    }

    /// The cargo package that builds it (none for Node).
    pub fn package(self) -> Option<&'static str> {
        match self {
            Peer::Forkless => Some("hello"),
            Peer::TokioHyper => Some("peer-tokio-hyper"),
            Peer::ActixWeb => Some("peer-actix-web"),
            Peer::MayMinihttp => Some("peer-may-minihttp"),
            Peer::NodeCluster => None,
            Peer::FloorUring => Some("peer-floor-uring"),
            Peer::FloorEpoll => Some("peer-floor-epoll"),
        }
    }
}

/// Where the binaries and the Node script are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `target/release`.
    pub release_dir: PathBuf,
    /// forkless `hello` as it ships: the static binary `cargo static -p
    /// hello` builds (`target/x86_64-unknown-linux-gnu/release/hello`).
    pub forkless: PathBuf,
    /// `node`, if found on `PATH`.
    pub node: Option<PathBuf>,
    /// The cluster script.
    pub node_script: PathBuf,
}

/// How to start a server.
#[derive(Debug, Clone, Copy)]
pub struct Launch {
    /// Shards, worker threads or worker processes.
    pub threads: usize,
    /// Address (port 0: the server picks).
    pub listen: SocketAddr,
    /// Run it on CPU 0 only (`taskset -c 0`).
    pub cpu0: bool,
    /// forkless only: do not pin shards (`--no-pin`).
    pub no_pin: bool,
}

impl Binaries {
    /// The command that starts `peer` as `launch` says.
    pub fn command(&self, peer: Peer, launch: Launch) -> Result<Command, String> {
        let program = match peer.package() {
            Some(_) if peer == Peer::Forkless => self.forkless.clone(),
            Some(package) => self.release_dir.join(package),
            None => self
                .node
                .clone()
                .ok_or("node is not installed: the Node cluster peer is skipped")?,
        };
        let mut args: Vec<String> = Vec::new();
        if peer == Peer::NodeCluster {
            args.push(self.node_script.display().to_string());
        }
        let count = if peer == Peer::Forkless {
            "--shards"
        } else {
            "--threads"
        };
        args.extend([count.to_owned(), launch.threads.to_string()]);
        args.extend(["--listen".to_owned(), launch.listen.to_string()]);
        if peer == Peer::Forkless && launch.no_pin {
            args.push("--no-pin".to_owned());
        }
        let mut command = if launch.cpu0 {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", "0"]).arg(&program);
            taskset
        } else {
            Command::new(&program)
        };
        command.args(&args);
        Ok(command)
    }
}

/// A running server; killed (with its process group) when dropped.
#[derive(Debug)]
pub struct Running {
    child: Child,
    name: &'static str,
    tail: Arc<Mutex<Vec<u8>>>,
    listening: mpsc::Receiver<SocketAddr>,
}

impl Running {
    /// Spawns `command` in a process group of its own, without waiting.
    pub fn spawn(name: &'static str, mut command: Command) -> Result<Running, String> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", command.get_program()))?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        let (found, listening) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let tail = tail.clone();
            std::thread::spawn(move || drain_lines(stdout, &tail, &found));
        }
        if let Some(stderr) = child.stderr.take() {
            let tail = tail.clone();
            std::thread::spawn(move || drain(stderr, &tail));
        }
        Ok(Running {
            child,
            name,
            tail,
            listening,
        })
    }

    /// Spawns `command` and waits (bounded) for its `listening on` line.
    pub fn start(name: &'static str, command: Command) -> Result<(Running, SocketAddr), String> {
        let mut running = Running::spawn(name, command)?;
        let addr = running.wait_listening(START_TIMEOUT)?;
        Ok((running, addr))
    }

    /// Waits at most `timeout` for the `listening on http://IP:PORT` line.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<SocketAddr, String> {
        match self.listening.recv_timeout(timeout) {
            Ok(addr) => Ok(addr),
            Err(_) => {
                let exited = self.child.try_wait().ok().flatten();
                Err(format!(
                    "{} printed no `listening on` line within {timeout:?}{}; its output ends with:\n{}",
                    self.name,
                    exited.map_or(String::new(), |s| format!(" (it exited: {s})")),
                    self.output_tail()
                ))
            }
        }
    }

    /// The process id (of the server itself: `taskset` execs it).
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last few KiB it printed.
    pub fn output_tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&tail).into_owned()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created for this child.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keep(tail: &Mutex<Vec<u8>>, bytes: &[u8]) {
    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
    tail.extend_from_slice(bytes);
    if tail.len() > TAIL_BYTES {
        let cut = tail.len() - TAIL_BYTES;
        tail.drain(..cut);
    }
}

fn drain_lines(output: impl Read, tail: &Mutex<Vec<u8>>, found: &mpsc::Sender<SocketAddr>) {
    let mut reader = BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                keep(tail, &line);
                if let Some(addr) = listening_addr(&String::from_utf8_lossy(&line)) {
                    let _ = found.send(addr);
                }
            }
        }
    }
}

fn drain(mut output: impl Read, tail: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = output.read(&mut buf) {
        if n == 0 {
            return;
        }
        keep(tail, &buf[..n]);
    }
}

/// The address of a `listening on http://IP:PORT` (or `https://`) line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line
        .split_once("listening on http://")
        .or_else(|| line.split_once("listening on https://"))?;
    let addr = rest.split(|c: char| c.is_whitespace() || c == '/').next()?;
    addr.parse().ok()
}

/// `node` on `PATH`, if any.
pub fn find_node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("node"))
        .find(|candidate| Path::new(candidate).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_of_a_listening_line() {
        let addr = Some(SocketAddr::from(([127, 0, 0, 1], 4242)));
        assert_eq!(listening_addr("listening on http://127.0.0.1:4242\n"), addr);
        assert_eq!(
            listening_addr("2026-11-26 INFO shard=0 listening on http://127.0.0.1:4242/ now"),
            addr
        );
        assert_eq!(
            listening_addr("listening on https://127.0.0.1:4242\n"),
            addr
        );
        assert_eq!(listening_addr("listening on http://nowhere\n"), None);
        assert_eq!(listening_addr("starting\n"), None);
    }
}
