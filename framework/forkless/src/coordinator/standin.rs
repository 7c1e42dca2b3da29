//! Accepting for a shard that does not: the stand-in.
//!
//! Every shard's listening sockets belong to the coordinator and stay open
//! while the shard is down, so the kernel keeps steering a share of new
//! connections to them. Left alone, those would wait in the queue until the
//! shard is back (a crash-loop backoff can take seconds) or forever (a shard
//! whose function returned, or never serves HTTP). So while a shard has no
//! listening incarnation, a stand-in thread accepts on its sockets and hands
//! each connection to the coordinator, which passes it to a shard that
//! listens ([`Command::Adopt`](super::Command::Adopt)). When the shard
//! listens again the stand-in stops; it only accepts after `poll(2)` says a
//! connection waits, so stopping it leaves the queue to the shard whole.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Event;
use crate::ShardId;
use crate::rate_limit::RateLimited;

/// How long the stand-in waits after a failed accept (out of descriptors,
/// say) before it polls again; nginx waits 500 ms.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A running stand-in; dropping it stops it.
#[derive(Debug)]
pub(super) struct StandIn {
    /// Closed to wake the thread and stop it.
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Accepts on `sockets` (descriptors of shard `shard`'s sockets) and
    /// sends each connection to `events` as [`Event::Orphan`].
    pub(super) fn start(
        shard: ShardId,
        sockets: Vec<TcpListener>,
        events: flume::Sender<Event>,
    ) -> io::Result<Self> {
        for socket in &sockets {
            socket.set_nonblocking(true)?;
        }
        let (wake, woken) = UnixStream::pair()?;
        let thread = std::thread::Builder::new()
            .name(format!("forkless-standin-{shard}"))
            .spawn(move || run(shard, &sockets, &woken, &events))?;
        Ok(Self {
            wake: Some(wake),
            thread: Some(thread),
        })
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(shard: ShardId, sockets: &[TcpListener], woken: &UnixStream, events: &flume::Sender<Event>) {
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| s.as_raw_fd())
        .chain([woken.as_raw_fd()])
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let Ok(count) = libc::nfds_t::try_from(fds.len()) else {
        return;
    };
    // Out of descriptors, accept fails as fast as it is retried.
    let mut errors = RateLimited::default();
    loop {
        // SAFETY: `fds` is a valid array of `count` pollfds for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), count, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds.last().is_some_and(|wake| wake.revents != 0) {
            return;
        }
        for (socket, fd) in sockets.iter().zip(&fds) {
            if fd.revents == 0 {
                continue;
            }
            loop {
                match socket.accept() {
                    Ok((stream, _)) => {
                        if events.send(Event::Orphan(shard, stream)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        if let Some(suppressed) = errors.allow(Instant::now()) {
                            tracing::warn!(
                                shard = shard.get(),
                                %error,
                                suppressed,
                                "stand-in accept failed; retrying"
                            );
                        }
                        std::thread::sleep(ACCEPT_BACKOFF);
                        break;
                    }
                }
            }
        }
    }
}
