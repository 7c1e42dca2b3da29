//! Binary upgrade (SIGUSR2): start the new binary with this process's
//! listening sockets and learn whether it serves.
//!
//! The sockets travel the way systemd's socket activation hands them over:
//! open descriptors from 3 on, announced by `LISTEN_FDS`, `LISTEN_PID` and
//! `LISTEN_FDNAMES` (`forkless-http` for serving sockets, `forkless-admin`
//! for the admin one), so the new process needs nothing it would not need
//! under systemd. Until it reports, both processes accept on the same
//! sockets; no socket is ever closed, so no waiting connection is lost.
//!
//! The new process reports readiness the way it reports to systemd: a
//! `READY=1` datagram, sent to the socket named by `FORKLESS_UPGRADE_READY`
//! once every shard listens. The watcher thread here turns that, the new
//! process's exit, or the timeout into an event for the coordinator.
//!
//! HTTPS session-ticket keys (`tls/tickets.rs`) go along so clients
//! resume on the new process: written into a pipe whose read end is
//! handed over at the descriptor after the sockets (not counted in
//! `LISTEN_FDS`), its number in `FORKLESS_UPGRADE_TICKETS_FD`. The keys
//! never touch a file or the environment; the new process reads the pipe
//! at start ([`take_ticket_keys`]) and closes it.
//!
//! The child is started with `fork` and `execve` directly rather than
//! `std::process::Command`: `LISTEN_PID` must hold the child's own pid,
//! which only the child knows, so the child writes it into an environment
//! entry prepared before the fork. Between `fork` and `execve` the child
//! only calls async-signal-safe functions (`getpid`, `dup2`,
//! `sigprocmask`, `execve`, `_exit`) on memory prepared beforehand.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::{Duration, Instant};

use super::Event;

/// Names the socket a new process sends `READY=1` to.
pub(crate) const READY_ENV: &str = "FORKLESS_UPGRADE_READY";

/// Names the descriptor the session-ticket keys come through.
const TICKETS_ENV: &str = "FORKLESS_UPGRADE_TICKETS_FD";

/// Most bytes of ticket keys read from the pipe.
const MAX_TICKETS: usize = 4096;

/// Variables of this process a new one must not inherit as they are.
const NOT_INHERITED: [&str; 8] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    READY_ENV,
    TICKETS_ENV,
];

/// How long a stopped new process may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// How often the watcher looks whether the new process exited.
const POLL: Duration = Duration::from_millis(50);

/// What the new process gets.
pub(super) struct Launch<'a> {
    pub(super) program: &'a Path,
    pub(super) args: &'a [OsString],
    /// Descriptors to hand over, with their `LISTEN_FDNAMES` names.
    pub(super) sockets: Vec<(BorrowedFd<'a>, &'static str)>,
    /// Variables to set on top of this process's environment.
    pub(super) env: Vec<(String, String)>,
    /// HTTPS session-ticket keys to hand over (secret).
    pub(super) tickets: Option<&'a [u8]>,
}

/// A new process that has not reported yet.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) pid: libc::pid_t,
}

/// Starts the new process and a thread that reports on it to `events`:
/// [`Event::UpgradeReady`] or [`Event::UpgradeFailed`].
pub(super) fn start(
    launch: Launch<'_>,
    timeout: Duration,
    events: flume::Sender<Event>,
) -> io::Result<Pending> {
    let (socket, name) = ready_socket()?;
    let mut env = launch.env;
    env.push((READY_ENV.to_owned(), format!("@{name}")));
    let mut handed = launch.sockets.clone();
    // The pipe's read end, dropped here once the child has its own copy.
    let tickets = match launch.tickets {
        Some(keys) => {
            let pipe = tickets_pipe(keys)?;
            env.push((TICKETS_ENV.to_owned(), (3 + handed.len()).to_string()));
            Some(pipe)
        }
        None => None,
    };
    let listen_fds = handed.len();
    if let Some(pipe) = &tickets {
        handed.push((pipe.as_fd(), ""));
    }
    let pid = spawn(launch.program, launch.args, &handed, listen_fds, &env)?;
    drop(tickets);
    let watcher = std::thread::Builder::new()
        .name("forkless-upgrade".into())
        .spawn(move || {
            let event = match watch(pid, &socket, timeout) {
                Ok(()) => Event::UpgradeReady(pid),
                Err(why) => Event::UpgradeFailed(why),
            };
            let _ = events.send(event);
        });
    if let Err(error) = watcher {
        stop(pid);
        return Err(error);
    }
    Ok(Pending { pid })
}

/// A pipe holding `keys`, its write end closed: the read end.
fn tickets_pipe(keys: &[u8]) -> io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A few hundred bytes: far below the pipe's buffer, so this never blocks.
    let mut write = std::fs::File::from(write);
    io::Write::write_all(&mut write, keys)?;
    Ok(read)
}

/// The session-ticket keys the process this one upgrades handed over, if
/// any; the descriptor is closed and the variable removed either way.
pub(super) fn take_ticket_keys() -> Option<Vec<u8>> {
    let fd = std::env::var(TICKETS_ENV).ok()?;
    super::systemd::remove_env(TICKETS_ENV);
    let fd: i32 = fd.trim().parse().ok().filter(|&fd| fd >= 3)?;
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the upgrading process handed this descriptor to this one
    // (module docs), which takes it over exactly once, here.
    let pipe = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut keys = Vec::new();
    match io::Read::read_to_end(&mut io::Read::take(pipe, MAX_TICKETS as u64), &mut keys) {
        Ok(_) => Some(keys),
        Err(error) => {
            tracing::warn!(%error, "cannot read the session-ticket keys of the previous process");
            None
        }
    }
}

/// Asks a new process that will not take over to stop, and reaps it on a
/// thread of its own (killing it if it takes longer than [`STOP_GRACE`]).
pub(super) fn stop(pid: libc::pid_t) {
    // SAFETY: plain system calls on a pid this process started and has not
    // reaped, so it cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let reaper = std::thread::Builder::new()
        .name("forkless-upgrade-reaper".into())
        .spawn(move || {
            let deadline = Instant::now() + STOP_GRACE;
            while exited(pid).is_none() {
                if Instant::now() >= deadline {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    let mut status = 0;
                    // SAFETY: waits for our own child.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    return;
                }
                std::thread::sleep(POLL);
            }
        });
    if reaper.is_err() {
        tracing::warn!(pid, "cannot start a thread to reap the stopped upgrade");
    }
}

/// Waits for `READY=1` from `pid`: `Err` says why it will not come.
fn watch(pid: libc::pid_t, socket: &UnixDatagram, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(status) = exited(pid) {
            return Err(format!("the new process {status} before it was ready"));
        }
        let now = Instant::now();
        if now >= deadline {
            stop(pid);
            return Err(format!(
                "the new process was not ready within {timeout:?} (--upgrade-timeout); stopped it"
            ));
        }
        let _ = socket.set_read_timeout(Some(POLL.min(deadline - now)));
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]);
                if is_ready_from(&message, pid) {
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                stop(pid);
                return Err(format!("cannot hear from the new process: {e}; stopped it"));
            }
        }
    }
}

/// `READY=1`, and `MAINPID=` (when given) naming `pid`.
fn is_ready_from(message: &str, pid: libc::pid_t) -> bool {
    let mut ready = false;
    for line in message.lines() {
        if line == "READY=1" {
            ready = true;
        }
        if let Some(main) = line.strip_prefix("MAINPID=")
            && main.trim().parse::<libc::pid_t>().ok() != Some(pid)
        {
            return false;
        }
    }
    ready
}

/// How `pid` ended, if it did (and reaps it).
fn exited(pid: libc::pid_t) -> Option<String> {
    let mut status = 0;
    // SAFETY: waits, without blocking, for our own child.
    let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if reaped == 0 {
        return None;
    }
    if reaped < 0 {
        return Some("could not be waited for".to_owned());
    }
    Some(if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        "ended".to_owned()
    })
}

/// A datagram socket in the abstract namespace, named after this process.
fn ready_socket() -> io::Result<(UnixDatagram, String)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("forkless-upgrade-{}-{nanos}", std::process::id());
    let address = SocketAddr::from_abstract_name(name.as_bytes())?;
    Ok((UnixDatagram::bind_addr(&address)?, name))
}

/// Environment entry whose value the child fills with its own pid.
const PID_SLOT: &[u8] = b"LISTEN_PID=                    ";

/// Forks and executes `program` with `sockets` at descriptors 3, 4, ...;
/// the first `listen_fds` of them are announced in `LISTEN_FDS`.
fn spawn(
    program: &Path,
    args: &[OsString],
    sockets: &[(BorrowedFd<'_>, &'static str)],
    listen_fds: usize,
    env: &[(String, String)],
) -> io::Result<libc::pid_t> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    let path = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| invalid("the upgrade binary's path holds a NUL byte"))?;
    let mut argv = vec![path.clone()];
    for arg in args {
        argv.push(
            CString::new(arg.as_bytes()).map_err(|_| invalid("an argument holds a NUL byte"))?,
        );
    }
    let mut envp = Vec::new();
    for (key, value) in std::env::vars_os() {
        let key_bytes = key.as_bytes();
        if NOT_INHERITED.iter().any(|n| n.as_bytes() == key_bytes) {
            continue;
        }
        if env.iter().any(|(k, _)| k.as_bytes() == key_bytes) {
            continue;
        }
        let mut entry = key_bytes.to_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        if let Ok(entry) = CString::new(entry) {
            envp.push(entry);
        }
    }
    for (key, value) in env {
        envp.push(
            CString::new(format!("{key}={value}"))
                .map_err(|_| invalid("an environment value holds a NUL byte"))?,
        );
    }
    let names: Vec<&str> = sockets
        .iter()
        .take(listen_fds)
        .map(|(_, name)| *name)
        .collect();
    envp.push(CString::new(format!("LISTEN_FDS={listen_fds}")).map_err(|_| invalid("LISTEN_FDS"))?);
    envp.push(
        CString::new(format!("LISTEN_FDNAMES={}", names.join(":")))
            .map_err(|_| invalid("LISTEN_FDNAMES"))?,
    );
    // Filled in by the child; NUL-terminated like the CStrings.
    let mut pid_entry = PID_SLOT.to_vec();
    pid_entry.push(0);
    let pid_slot = pid_entry.as_mut_ptr();

    // Copies of the sockets above every target descriptor, so moving them
    // into place cannot overwrite one not moved yet. Close-on-exec: the
    // child's exec drops these copies and keeps the ones moved to 3, 4, ...
    let first_target: libc::c_int = 3;
    let above =
        first_target + i32::try_from(sockets.len()).map_err(|_| invalid("too many sockets"))?;
    let mut high = Vec::with_capacity(sockets.len());
    for (fd, _) in sockets {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor borrowed for this call.
        let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, above) };
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `copy` is a new descriptor owned by nobody else.
        high.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }
    let high_raw: Vec<libc::c_int> = high.iter().map(AsRawFd::as_raw_fd).collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(pid_slot.cast_const().cast());
    envp_ptrs.push(std::ptr::null());

    // SAFETY: the child runs only async-signal-safe calls on memory prepared
    // above (see the module docs) and leaves through execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child; see above. `pid_slot` points to PID_SLOT's
        // bytes and a NUL, whose value part has room for any pid.
        unsafe {
            write_pid(pid_slot.add(b"LISTEN_PID=".len()), libc::getpid());
            for (i, fd) in high_raw.iter().enumerate() {
                if libc::dup2(*fd, first_target + i as libc::c_int) < 0 {
                    libc::_exit(126);
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    drop(high);
    drop(pid_entry);
    Ok(pid)
}

/// Writes `pid` in decimal at `at`, then a NUL (the slot has room for both).
///
/// # Safety
///
/// `at` must point to at least 21 writable bytes.
unsafe fn write_pid(at: *mut u8, pid: libc::pid_t) {
    let mut digits = [0u8; 20];
    let mut n = pid.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: the caller promises room for 21 bytes; len <= 10.
        unsafe { *at.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above.
    unsafe { *at.add(len) = 0 };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_must_name_the_new_process() {
        assert!(is_ready_from("READY=1\nSTATUS=serving\nMAINPID=42", 42));
        assert!(is_ready_from("READY=1", 42));
        assert!(!is_ready_from("READY=1\nMAINPID=43", 42));
        assert!(!is_ready_from("WATCHDOG=1", 42));
    }

    #[test]
    fn the_pid_slot_takes_any_pid() {
        let mut slot = PID_SLOT.to_vec();
        slot.push(0);
        let at = "LISTEN_PID=".len();
        // SAFETY: the slot has 20 value bytes and a NUL after `at`.
        unsafe { write_pid(slot.as_mut_ptr().add(at), 4_194_304) };
        let text = std::ffi::CStr::from_bytes_until_nul(&slot)
            .expect("a NUL")
            .to_str()
            .expect("ASCII");
        assert_eq!(text, "LISTEN_PID=4194304");
    }
}
