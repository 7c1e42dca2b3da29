//! peer-floor-epoll: the floor of the HTTP bench on epoll. No framework, no
//! runtime: one thread per shard, each with its own `SO_REUSEPORT`
//! listener and epoll instance, answering forkless `hello`'s bytes
//! (`../floor.rs`).
//!
//! Run with: `cargo run --release -p peer-floor-epoll -- --threads 1 --listen 127.0.0.1:0`
//!
//! Per request, what the kernel cannot spare: connections are registered
//! once, edge-triggered, for input and output; a readable connection is
//! read until a read comes back short (the socket was drained, so the next
//! arrival raises a new edge: no `recv` that ends in `EAGAIN`), every
//! complete request of the buffer is answered, and the answers leave in one
//! `send`. So a request costs about one `recv`, one `send` and a share of
//! an `epoll_wait`.

#[path = "../../args.rs"]
mod args;
#[path = "../../floor.rs"]
mod floor;

use std::io;
use std::os::fd::RawFd;
use std::process::ExitCode;

use floor::{Answers, MAX_INPUT, MAX_OUTPUT, check};

/// The listener's token in epoll events (connections use their descriptor).
const LISTENER: u64 = u64::MAX;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// Receive buffer a connection starts with; grows to [`MAX_INPUT`].
const INPUT: usize = 4096;

fn main() -> ExitCode {
    let args = args::parse();
    match floor::run(args.threads, args.listen, serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot serve {}: {e}", args.listen);
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct Conn {
    input: Vec<u8>,
    /// Bytes of `input` received and not yet answered.
    filled: usize,
    out: Vec<u8>,
    /// Bytes of `out` already sent.
    sent: usize,
    /// Close once `out` is sent.
    closing: bool,
    /// Reading stopped while `out` is over [`MAX_OUTPUT`].
    paused: bool,
}

/// What to do with a connection after handling its event.
#[derive(Debug, PartialEq, Eq)]
enum After {
    Keep,
    Close,
}

fn serve(shard: usize, listener: RawFd) -> io::Result<()> {
    // SAFETY: epoll_create1 takes no pointers.
    let epoll = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    add(epoll, listener, libc::EPOLLIN as u32, LISTENER)?;
    let mut answers = Answers::new(shard);
    let mut conns: Vec<Option<Box<Conn>>> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    loop {
        // SAFETY: `events` is a live buffer of EVENTS entries.
        let ready =
            unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), EVENTS as libc::c_int, -1) };
        let ready = match check(ready) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        answers.refresh();
        for event in &events[..ready] {
            let (token, flags) = (event.u64, event.events);
            if token == LISTENER {
                accept(epoll, listener, &mut conns);
                continue;
            }
            let fd = token as RawFd;
            let Some(Some(conn)) = conns.get_mut(fd as usize) else {
                continue;
            };
            if handle(fd, conn, flags, &answers) == After::Close {
                conns[fd as usize] = None;
                // SAFETY: closing a descriptor this loop accepted and owns;
                // closing also removes it from the epoll set.
                unsafe { libc::close(fd) };
            }
        }
    }
}

fn add(epoll: RawFd, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: `event` is live for the call.
    check(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) }).map(drop)
}

/// Accepts every pending connection (the listener is level-triggered).
fn accept(epoll: RawFd, listener: RawFd, conns: &mut Vec<Option<Box<Conn>>>) {
    loop {
        // SAFETY: null address pointers: the peer address is not wanted.
        let fd = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            // EAGAIN: all taken; anything else (EMFILE, ECONNABORTED): try
            // again on the next event.
            return;
        }
        let flags = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if add(epoll, fd, flags, fd as u64).is_err() {
            // SAFETY: the descriptor just accepted, owned here.
            unsafe { libc::close(fd) };
            continue;
        }
        let index = fd as usize;
        if conns.len() <= index {
            conns.resize_with(index + 1, || None);
        }
        conns[index] = Some(Box::new(Conn {
            input: vec![0; INPUT],
            filled: 0,
            out: Vec::new(),
            sent: 0,
            closing: false,
            paused: false,
        }));
    }
}

fn handle(fd: RawFd, conn: &mut Conn, flags: u32, answers: &Answers) -> After {
    if flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
        return After::Close;
    }
    let readable = flags & libc::EPOLLIN as u32 != 0 || conn.paused;
    if readable && read(fd, conn, answers) == After::Close {
        return After::Close;
    }
    loop {
        if flush(fd, conn) == After::Close {
            return After::Close;
        }
        if conn.sent < conn.out.len() {
            // The rest leaves on the next EPOLLOUT edge.
            return After::Keep;
        }
        if conn.closing {
            return After::Close;
        }
        if !conn.paused {
            return After::Keep;
        }
        // Output drained: read what waited (its edge was consumed).
        conn.paused = false;
        if read(fd, conn, answers) == After::Close {
            return After::Close;
        }
    }
}

/// Reads until a read comes back short (or the output is over its bound),
/// answering every complete request into `out`.
fn read(fd: RawFd, conn: &mut Conn, answers: &Answers) -> After {
    while !conn.closing {
        if conn.out.len() - conn.sent > MAX_OUTPUT {
            conn.paused = true;
            return After::Keep;
        }
        if conn.filled == conn.input.len() {
            if conn.input.len() >= MAX_INPUT {
                // `answer` refuses heads past MAX_HEAD < MAX_INPUT first.
                return After::Close;
            }
            let grown = (conn.input.len() * 2).min(MAX_INPUT);
            conn.input.resize(grown, 0);
        }
        let space = conn.input.len() - conn.filled;
        // SAFETY: recv writes at most `space` bytes into the unfilled tail
        // of `input`, a live buffer.
        let n = unsafe { libc::recv(fd, conn.input[conn.filled..].as_mut_ptr().cast(), space, 0) };
        let n = match n {
            0 => return After::Close,
            1.. => n as usize,
            _ => {
                let error = io::Error::last_os_error();
                return match error.kind() {
                    io::ErrorKind::WouldBlock => After::Keep,
                    io::ErrorKind::Interrupted => continue,
                    _ => After::Close,
                };
            }
        };
        conn.filled += n;
        let done = floor::answer(&conn.input[..conn.filled], &mut conn.out, answers);
        conn.input.copy_within(done.consumed..conn.filled, 0);
        conn.filled -= done.consumed;
        conn.closing = done.close;
        if n < space {
            // Drained: the next arrival raises a new edge.
            return After::Keep;
        }
    }
    After::Keep
}

/// Sends what `out` holds, in as few `send`s as the socket allows.
fn flush(fd: RawFd, conn: &mut Conn) -> After {
    while conn.sent < conn.out.len() {
        let rest = &conn.out[conn.sent..];
        // SAFETY: send reads `rest.len()` bytes from `rest`, a live slice.
        let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
        match n {
            0.. => conn.sent += n as usize,
            _ => {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::WouldBlock => return After::Keep,
                    io::ErrorKind::Interrupted => {}
                    _ => return After::Close,
                }
            }
        }
    }
    conn.out.clear();
    conn.sent = 0;
    After::Keep
}
