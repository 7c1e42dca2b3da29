//! Syscalls and io_uring submissions per request, per server, counted by
//! `perf stat` on kernel tracepoints (`raw_syscalls:sys_enter`, a few
//! `syscalls:sys_enter_*`, `io_uring:io_uring_submit_req`).
//!
//! Counting is separate from the timed runs (tracepoints cost a little per
//! syscall, which would move CPU per request): a fresh server is warmed up,
//! `perf stat` attaches to it (and, for Node, its workers) with its events
//! disabled, and is told through its control FIFO (`--control`) to count
//! exactly from the window's start to its end, over which the built-in
//! load generator counts the requests answered.
//!
//! Without `perf` (or without tracepoints: no tracefs, not root and
//! `perf_event_paranoid` > -1), [`probe`] says why and the bench goes on
//! without this table.

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::loadgen::{self, Edge, Load};
use super::measure::{Mode, PIPELINE_DEPTH, Setup};
use super::proc;
use super::server::{Launch, Peer, Running};

/// How long perf may take to answer a control command, or to exit.
const PERF_TIMEOUT: Duration = Duration::from_secs(10);

/// The events counted, and the column each adds to.
const EVENTS: [(&str, Column); 15] = [
    ("raw_syscalls:sys_enter", Column::Total),
    ("syscalls:sys_enter_io_uring_enter", Column::Enter),
    ("io_uring:io_uring_submit_req", Column::Submissions),
    ("syscalls:sys_enter_recvfrom", Column::Reads),
    ("syscalls:sys_enter_recvmsg", Column::Reads),
    ("syscalls:sys_enter_read", Column::Reads),
    ("syscalls:sys_enter_readv", Column::Reads),
    ("syscalls:sys_enter_sendto", Column::Writes),
    ("syscalls:sys_enter_sendmsg", Column::Writes),
    ("syscalls:sys_enter_write", Column::Writes),
    ("syscalls:sys_enter_writev", Column::Writes),
    ("syscalls:sys_enter_epoll_wait", Column::Waits),
    ("syscalls:sys_enter_epoll_pwait", Column::Waits),
    ("syscalls:sys_enter_epoll_pwait2", Column::Waits),
    ("syscalls:sys_enter_futex", Column::Futex),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Total,
    Enter,
    Submissions,
    Reads,
    Writes,
    Waits,
    Futex,
}

/// What one server did over one counted window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Syscalls {
    /// Requests answered in the window.
    pub requests: u64,
    /// Every syscall.
    pub total: u64,
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// io_uring submission queue entries the kernel took.
    pub submissions: u64,
    /// `recvfrom`, `recvmsg`, `read`, `readv`.
    pub reads: u64,
    /// `sendto`, `sendmsg`, `write`, `writev`.
    pub writes: u64,
    /// `epoll_wait`, `epoll_pwait`, `epoll_pwait2`.
    pub waits: u64,
    /// `futex`.
    pub futex: u64,
}

impl Syscalls {
    /// Syscalls that are none of the named ones.
    pub fn other(&self) -> u64 {
        self.total
            .saturating_sub(self.enters + self.reads + self.writes + self.waits + self.futex)
    }

    /// `count` per request answered.
    pub fn per_request(&self, count: u64) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            count as f64 / self.requests as f64
        }
    }
}

fn event_args() -> Vec<String> {
    EVENTS
        .iter()
        .flat_map(|(event, _)| ["-e".to_owned(), (*event).to_owned()])
        .collect()
}

/// Whether `perf stat` can count the tracepoints here; `Err` says why not
/// and what to install.
pub fn probe() -> Result<(), String> {
    let output = Command::new("perf")
        .args(["stat", "-x", ","])
        .args(event_args())
        .arg("true")
        .output()
        .map_err(|e| {
            format!(
                "perf is not installed ({e}): `apt-get install -y linux-perf` to count syscalls per request"
            )
        })?;
    let text = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !text.contains("raw_syscalls:sys_enter") {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!(
            "perf cannot count syscall tracepoints here ({}): run as root (or with \
             perf_event_paranoid -1) with tracefs mounted",
            first.trim()
        ));
    }
    Ok(())
}

/// Counts `peer`'s syscalls per request under `mode`'s load (per core or
/// pipelined; the whole-machine mode is not counted).
pub fn measure(setup: &Setup, peer: Peer, mode: Mode) -> Result<Syscalls, String> {
    let launch = Launch {
        threads: 1,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cpu0: setup.cpus >= 2,
        no_pin: false,
    };
    let (server, addr) = Running::start(peer.name(), setup.binaries.command(peer, launch)?)?;
    let (depth, connections) = if mode == Mode::Pipelined {
        (PIPELINE_DEPTH, setup.connections / 2)
    } else {
        (1, setup.connections)
    };
    let mut load = Load {
        addr,
        connections,
        threads: 1,
        depth,
        warmup: Duration::ZERO,
        duration: setup.warmup,
        cpu: (setup.cpus >= 2).then_some(1),
    };
    // Warm up first, so the counted server has every thread it will have.
    loadgen::run(&load, &mut |_| {})?;
    let pids: Vec<String> = proc::tree(server.pid())
        .into_iter()
        .map(|p| p.to_string())
        .collect();
    let mut perf = Perf::attach(&pids.join(","))?;
    load.warmup = Duration::from_millis(200);
    load.duration = setup.window.min(Duration::from_secs(3));
    let mut failed = None;
    let report = loadgen::run(&load, &mut |edge| {
        let command = match edge {
            Edge::Start => "enable",
            Edge::End => "disable",
        };
        if let Err(e) = perf.command(command) {
            failed.get_or_insert(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    let mut counts = perf.finish()?;
    counts.requests = report.requests;
    drop(server);
    Ok(counts)
}

/// A `perf stat` attached to a server, its events off until enabled.
struct Perf {
    child: Child,
    dir: PathBuf,
    control: std::fs::File,
    ack: OwnedFd,
}

impl Perf {
    fn attach(pids: &str) -> Result<Perf, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "forkless-bench-perf-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        let control_path = dir.join("ctl");
        let ack_path = dir.join("ack");
        for path in [&control_path, &ack_path] {
            mkfifo(path)?;
        }
        // Opened first, without blocking, so perf's open of it for writing
        // does not wait for us.
        let ack = open(&ack_path, libc::O_RDONLY | libc::O_NONBLOCK)?;
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-D", "-1", "--control"])
            .arg(format!(
                "fifo:{},{}",
                control_path.display(),
                ack_path.display()
            ))
            .args(event_args())
            .args(["-p", pids])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start perf: {e}"))?;
        let mut perf = Perf {
            child,
            dir,
            // Replaced below once perf has opened its end.
            control: std::fs::File::from(open(Path::new("/dev/null"), libc::O_WRONLY)?),
            ack,
        };
        let started = Instant::now();
        perf.control = loop {
            match open(&control_path, libc::O_WRONLY | libc::O_NONBLOCK) {
                Ok(fd) => break std::fs::File::from(fd),
                // ENXIO: perf has not opened it for reading yet.
                Err(_) if started.elapsed() < PERF_TIMEOUT => {
                    if !matches!(perf.child.try_wait(), Ok(None)) {
                        return Err(format!("perf exited at start: {}", perf.stderr()));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("perf never opened its control FIFO: {e}")),
            }
        };
        Ok(perf)
    }

    /// Sends `enable` or `disable` and waits for perf's `ack`.
    fn command(&mut self, command: &str) -> Result<(), String> {
        use std::io::Write;
        self.control
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("perf control: {e}"))?;
        let deadline = Instant::now() + PERF_TIMEOUT;
        let mut got = Vec::new();
        // perf answers "ack\n" (followed by a NUL).
        while !got.contains(&b'\n') {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("perf did not acknowledge {command:?}"));
            }
            let mut poll = libc::pollfd {
                fd: self.ack.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut poll, 1, left.as_millis().min(1000) as libc::c_int) };
            let mut byte = [0u8; 64];
            // SAFETY: reads at most 64 bytes into `byte`.
            let n = unsafe { libc::read(self.ack.as_raw_fd(), byte.as_mut_ptr().cast(), 64) };
            if n > 0 {
                got.extend_from_slice(&byte[..n as usize]);
            }
        }
        Ok(())
    }

    /// Stops perf (SIGINT) and parses what it counted.
    fn finish(mut self) -> Result<Syscalls, String> {
        let pid = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + PERF_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err("perf did not stop on SIGINT".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = self.stderr();
        parse(&text).ok_or_else(|| format!("no counts in perf's output: {}", text.trim()))
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mkfifo(path: &Path) -> Result<(), String> {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("bad path {path:?}"))?;
    // SAFETY: a NUL-terminated path that lives for the call.
    if unsafe { libc::mkfifo(name.as_ptr(), 0o600) } != 0 {
        return Err(format!(
            "mkfifo {path:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn open(path: &Path, flags: libc::c_int) -> Result<OwnedFd, String> {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("bad path {path:?}"))?;
    // SAFETY: a NUL-terminated path that lives for the call.
    let fd = unsafe { libc::open(name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "open {path:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Parses `perf stat -x ,` output: `count,unit,event,...` lines.
fn parse(text: &str) -> Option<Syscalls> {
    let mut counts = Syscalls::default();
    let mut seen = false;
    for line in text.lines() {
        let mut fields = line.split(',');
        let (Some(value), Some(_unit), Some(event)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(&(_, column)) = EVENTS.iter().find(|(name, _)| *name == event) else {
            continue;
        };
        seen = true;
        // "<not counted>": the event never fired while enabled.
        let value: u64 = value.trim().parse().unwrap_or(0);
        let slot = match column {
            Column::Total => &mut counts.total,
            Column::Enter => &mut counts.enters,
            Column::Submissions => &mut counts.submissions,
            Column::Reads => &mut counts.reads,
            Column::Writes => &mut counts.writes,
            Column::Waits => &mut counts.waits,
            Column::Futex => &mut counts.futex,
        };
        *slot += value;
    }
    seen.then_some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perf_csv_and_groups_events() {
        let text = "Events disabled\nEvents enabled\nEvents disabled\n\
            2000,,raw_syscalls:sys_enter,1928270,100.00,,\n\
            300,,syscalls:sys_enter_io_uring_enter,1928270,100.00,,\n\
            900,,io_uring:io_uring_submit_req,1928270,100.00,,\n\
            700,,syscalls:sys_enter_recvfrom,1928270,100.00,,\n\
            <not counted>,,syscalls:sys_enter_read,0,100.00,,\n\
            600,,syscalls:sys_enter_sendto,1928270,100.00,,\n\
            100,,syscalls:sys_enter_write,1928270,100.00,,\n\
            50,,syscalls:sys_enter_epoll_wait,1928270,100.00,,\n";
        let mut counts = parse(text).expect("counts");
        assert_eq!(
            (counts.total, counts.enters, counts.submissions),
            (2000, 300, 900)
        );
        assert_eq!((counts.reads, counts.writes, counts.waits), (700, 700, 50));
        assert_eq!(counts.other(), 2000 - 300 - 700 - 700 - 50);
        counts.requests = 1000;
        assert!((counts.per_request(counts.total) - 2.0).abs() < 1e-9);
        assert_eq!(parse("garbage\n"), None);
    }
}
