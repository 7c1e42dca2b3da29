//! systemd integration: the notify protocol (`Type=notify`: `READY=1`,
//! `STOPPING=1`, `WATCHDOG=1`) and socket activation (`LISTEN_FDS`).
//!
//! Both are read from the environment once, by the coordinator, and are
//! no-ops when systemd did not set them up. The variables are removed after
//! reading (as `sd_listen_fds(1)` does) so child processes do not inherit
//! them by mistake.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// First inherited descriptor, by the socket-activation convention.
const LISTEN_FDS_START: RawFd = 3;

/// Where to send notify messages, if systemd asked for them.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
    /// `NOTIFY_SOCKET` as it was set, for a binary upgrade's new process.
    pub(crate) target: String,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub(crate) fn from_env() -> Option<Self> {
        Self::from_var("NOTIFY_SOCKET")
    }

    /// From the variable `var`, read like `NOTIFY_SOCKET`.
    pub(crate) fn from_var(var: &str) -> Option<Self> {
        let target = std::env::var_os(var)?;
        let target = target.to_str()?.to_owned();
        remove_env(var);
        let address = match target.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(&target).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Self {
            socket,
            address,
            target,
        })
    }

    /// Sends one notify message, e.g. `READY=1`. Failures are logged, never
    /// fatal: the service works without its supervisor's bookkeeping.
    pub(crate) fn notify(&self, state: &str) {
        if let Err(error) = self.socket.send_to_addr(state.as_bytes(), &self.address) {
            tracing::warn!(%error, state, "could not notify systemd");
        }
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is set
/// for this process (`WATCHDOG_PID` absent or ours).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    remove_env("WATCHDOG_USEC");
    remove_env("WATCHDOG_PID");
    parse_watchdog(&usec, pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: &str, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    let usec: u64 = usec.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// One socket handed over with `LISTEN_FDS`, with its `LISTEN_FDNAMES` name
/// (`"unknown"` when none was given).
#[derive(Debug)]
pub(crate) struct Inherited {
    pub(crate) listener: TcpListener,
    pub(crate) name: String,
}

/// The listening sockets systemd (or a forkless process upgrading to this
/// one) handed over with `LISTEN_FDS`/`LISTEN_PID`, in order; empty when
/// there are none.
pub(crate) fn listen_fds() -> io::Result<Vec<Inherited>> {
    let (Ok(count), pid) = (std::env::var("LISTEN_FDS"), std::env::var("LISTEN_PID")) else {
        return Ok(Vec::new());
    };
    let pid = pid.ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    remove_env("LISTEN_FDS");
    remove_env("LISTEN_PID");
    remove_env("LISTEN_FDNAMES");
    let Some(count) = parse_listen_fds(&count, pid.as_deref(), std::process::id()) else {
        return Ok(Vec::new());
    };
    let mut names = names.split(':');
    (0..count)
        .map(|i| {
            let name = names
                .next()
                .filter(|n| !n.is_empty())
                .unwrap_or("unknown")
                .to_owned();
            let fd = LISTEN_FDS_START + i;
            // SAFETY: F_GETFD only reads the descriptor's flags.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("LISTEN_FDS names descriptor {fd}, but it is not open"),
                ));
            }
            // SAFETY: by the socket-activation protocol, descriptors
            // 3..3+LISTEN_FDS are open and passed to this process, which
            // takes ownership of each exactly once, here.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let socket = socket2::Socket::from(owned);
            if socket.r#type()? != socket2::Type::STREAM || !socket.is_listener()? {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("inherited descriptor {fd} is not a listening TCP socket"),
                ));
            }
            socket.set_cloexec(true)?;
            socket.set_nonblocking(true)?;
            Ok(Inherited {
                listener: TcpListener::from(socket),
                name,
            })
        })
        .collect()
}

fn parse_listen_fds(count: &str, pid: Option<&str>, me: u32) -> Option<i32> {
    if pid?.trim().parse::<u32>().ok() != Some(me) {
        return None;
    }
    count
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|&n| n > 0 && n < 1024)
}

pub(super) fn remove_env(name: &str) {
    // SAFETY: called by the coordinator before it starts any shard thread;
    // forkless reads no environment concurrently at that point.
    unsafe { std::env::remove_var(name) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_interval_is_half_the_timeout_for_this_process_only() {
        assert_eq!(
            parse_watchdog("2000000", None, 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            parse_watchdog("2000000", Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(parse_watchdog("2000000", Some("8"), 7), None);
        assert_eq!(parse_watchdog("0", None, 7), None);
        assert_eq!(parse_watchdog("soon", None, 7), None);
    }

    #[test]
    fn listen_fds_need_our_pid_and_a_sane_count() {
        assert_eq!(parse_listen_fds("2", Some("42"), 42), Some(2));
        assert_eq!(parse_listen_fds("2", Some("43"), 42), None);
        assert_eq!(parse_listen_fds("2", None, 42), None);
        assert_eq!(parse_listen_fds("0", Some("42"), 42), None);
        assert_eq!(parse_listen_fds("-1", Some("42"), 42), None);
        assert_eq!(parse_listen_fds("x", Some("42"), 42), None);
    }
}
