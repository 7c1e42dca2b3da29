//! What both floor peers (`peer-floor-epoll`, `peer-floor-uring`) share,
//! included by each with `#[path]`: the HTTP/1.1 they speak, the listeners
//! and the threads.
//!
//! Contract:
//!
//! - [`answer`] is pure: it parses every complete request head in its input
//!   and appends the answers, in order, to one output buffer (so a pipelined
//!   burst leaves in one send). It never panics on input, whatever the bytes.
//! - The bytes on the wire are forkless `hello`'s (`apps/hello`, the fast
//!   path of `framework/forkless/src/http/fast.rs`): the same status line,
//!   the same headers in the same order (`content-type`, `x-shard`,
//!   `content-length`, `date`), the same body, so every server of the bench
//!   moves the same bytes per request.
//! - Minimal but correct HTTP/1.1 for a hello world: keep-alive; `GET` and
//!   `HEAD` of `/` answer `200`, other methods of `/` `405`, other paths
//!   `404`; `Connection: close` or HTTP/1.0 closes after the answer; a
//!   request with a body (`Transfer-Encoding`, a non-zero `Content-Length`),
//!   a malformed head (`400`) or a head past [`MAX_HEAD`] (`431`) gets its
//!   answer and the connection closes. No request bodies are read.
//! - Bounded: a connection holds at most [`MAX_INPUT`] bytes of unparsed
//!   input and [`MAX_OUTPUT`] bytes of unsent answers; the peers close (or,
//!   on epoll, stop reading) past that.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::RawFd;
use std::time::{Duration, UNIX_EPOCH};

/// Largest request head taken (forkless's default limit is 16 KiB too).
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// Most unparsed bytes a connection keeps (a pipelined burst in flight).
pub(crate) const MAX_INPUT: usize = 64 * 1024;

/// Most unsent answer bytes a connection keeps.
pub(crate) const MAX_OUTPUT: usize = 1024 * 1024;

/// Headers parsed per request.
const MAX_HEADERS: usize = 32;

const BODY: &[u8] = b"Hello World\n";
const NOT_FOUND: &[u8] = b"not found\n";
const TEXT: &[u8] = b"content-type: text/plain; charset=utf-8\r\n";

/// What the answers of one call to [`answer`] need: the shard's id (for
/// `x-shard`) and the `date` of the current second, with the whole `200`
/// answer to `GET /` cached for that second.
#[derive(Debug)]
pub(crate) struct Answers {
    shard: Vec<u8>,
    second: u64,
    date: Vec<u8>,
    hello: Vec<u8>,
}

impl Answers {
    /// The answers of shard `shard`, dated now.
    pub(crate) fn new(shard: usize) -> Answers {
        let mut answers = Answers {
            shard: shard.to_string().into_bytes(),
            second: u64::MAX,
            date: Vec::new(),
            hello: Vec::new(),
        };
        answers.refresh();
        answers
    }

    /// Re-dates the answers if the second changed: one coarse clock read
    /// (vDSO, no syscall), a formatting once per second.
    pub(crate) fn refresh(&mut self) {
        let second = coarse_unix_seconds();
        if second == self.second {
            return;
        }
        self.second = second;
        self.date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second)).into_bytes();
        let mut hello = Vec::with_capacity(160);
        self.head(&mut hello, b"200 OK", true, BODY.len(), false);
        hello.extend_from_slice(BODY);
        self.hello = hello;
    }

    /// A status line and headers as forkless's fast path writes them.
    fn head(&self, out: &mut Vec<u8>, status: &[u8], text: bool, length: usize, close: bool) {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status);
        out.extend_from_slice(b"\r\n");
        if text {
            out.extend_from_slice(TEXT);
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"x-shard: ");
        out.extend_from_slice(&self.shard);
        out.extend_from_slice(b"\r\ncontent-length: ");
        out.extend_from_slice(length.to_string().as_bytes());
        out.extend_from_slice(b"\r\ndate: ");
        out.extend_from_slice(&self.date);
        out.extend_from_slice(b"\r\n\r\n");
    }

    fn write(&self, out: &mut Vec<u8>, answer: Answer, head_only: bool, close: bool) {
        let (status, text, body): (&[u8], bool, &[u8]) = match answer {
            Answer::Hello => (b"200 OK", true, BODY),
            Answer::NotFound => (b"404 Not Found", true, NOT_FOUND),
            Answer::NotAllowed => (b"405 Method Not Allowed", false, b""),
            Answer::BadRequest => (b"400 Bad Request", false, b""),
            Answer::TooLarge => (b"431 Request Header Fields Too Large", false, b""),
        };
        if answer == Answer::Hello && !head_only && !close {
            out.extend_from_slice(&self.hello);
            return;
        }
        self.head(out, status, text, body.len(), close);
        if !head_only {
            out.extend_from_slice(body);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Hello,
    NotFound,
    NotAllowed,
    BadRequest,
    TooLarge,
}

/// What [`answer`] did with its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answered {
    /// Bytes of input taken (complete requests); the rest is a partial head.
    pub(crate) consumed: usize,
    /// Requests answered.
    pub(crate) requests: usize,
    /// The connection must close once the output is sent (nothing after
    /// `consumed` may be read as a request).
    pub(crate) close: bool,
}

/// Parses every complete request head of `input` and appends each answer
/// to `out`, in order; stops at a partial head, or after an answer that
/// closes the connection.
pub(crate) fn answer(input: &[u8], out: &mut Vec<u8>, answers: &Answers) -> Answered {
    let mut done = Answered {
        consumed: 0,
        requests: 0,
        close: false,
    };
    while done.consumed < input.len() {
        let rest = &input[done.consumed..];
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let (answer, head_only, close, length) = match request.parse(rest) {
            Ok(httparse::Status::Complete(length)) => {
                let (answer, head_only, close) = route(&request);
                (answer, head_only, close, length)
            }
            Ok(httparse::Status::Partial) if rest.len() <= MAX_HEAD => break,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                (Answer::TooLarge, false, true, rest.len())
            }
            Err(_) => (Answer::BadRequest, false, true, rest.len()),
        };
        answers.write(out, answer, head_only, close);
        done.consumed += length;
        done.requests += 1;
        if close {
            done.close = true;
            break;
        }
    }
    done
}

/// The answer to one complete head, whether it is for `HEAD`, and whether
/// the connection closes after it.
fn route(request: &httparse::Request<'_, '_>) -> (Answer, bool, bool) {
    let mut close = request.version != Some(1);
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("connection") {
            close |= header
                .value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && header.value.trim_ascii() != b"0")
        {
            // A body this server does not read: answer and close.
            return (Answer::BadRequest, false, true);
        }
    }
    let method = request.method.unwrap_or("");
    let path = request.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    let head_only = method == "HEAD";
    let answer = match (method, path) {
        ("GET" | "HEAD", "/") => Answer::Hello,
        (_, "/") => Answer::NotAllowed,
        _ => Answer::NotFound,
    };
    (answer, head_only, close)
}

/// Seconds since the Unix epoch from the coarse clock.
fn coarse_unix_seconds() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec through the pointer,
    // which points to `now`, live for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0)
}

/// The result of a libc call that returns -1 on error.
pub(crate) fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// A non-blocking IPv4 listener with `SO_REUSEPORT` (every shard binds the
/// same port) and `TCP_NODELAY`, which accepted sockets inherit.
pub(crate) fn listen(addr: SocketAddrV4) -> io::Result<(RawFd, SocketAddrV4)> {
    // SAFETY: plain socket calls on a descriptor this function owns; every
    // pointer passed points to a live local of the size passed with it.
    unsafe {
        let fd = check(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let on: libc::c_int = 1;
        let size = size_of::<libc::c_int>() as libc::socklen_t;
        let on_ptr = (&raw const on).cast();
        for (level, option) in [
            (libc::SOL_SOCKET, libc::SO_REUSEADDR),
            (libc::SOL_SOCKET, libc::SO_REUSEPORT),
            (libc::IPPROTO_TCP, libc::TCP_NODELAY),
        ] {
            if let Err(e) = check(libc::setsockopt(fd, level, option, on_ptr, size)) {
                libc::close(fd);
                return Err(e);
            }
        }
        let mut raw = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut length = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bound = check(libc::bind(fd, (&raw const raw).cast(), length))
            .and_then(|_| check(libc::listen(fd, 4096)))
            .and_then(|_| check(libc::getsockname(fd, (&raw mut raw).cast(), &mut length)));
        if let Err(e) = bound {
            libc::close(fd);
            return Err(e);
        }
        let port = u16::from_be(raw.sin_port);
        Ok((fd, SocketAddrV4::new(*addr.ip(), port)))
    }
}

/// Binds one listener per shard on `addr` (port 0: the first one picks it,
/// the others take the same), prints `listening on`, and runs `serve(shard,
/// listener)` on a thread per shard, each pinned to a CPU of its own when
/// there are enough (as forkless pins its shards). Returns when a shard
/// fails.
pub(crate) fn run(
    threads: usize,
    addr: SocketAddr,
    serve: fn(usize, RawFd) -> io::Result<()>,
) -> io::Result<()> {
    let SocketAddr::V4(mut addr) = addr else {
        return Err(io::Error::other("the floor peers listen on IPv4 only"));
    };
    let mut listeners = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (fd, bound) = listen(addr)?;
        addr = bound;
        listeners.push(fd);
    }
    let cpus = affinity();
    let (failed, failure) = std::sync::mpsc::channel();
    for (shard, listener) in listeners.into_iter().enumerate() {
        let cpu = (threads <= cpus.len()).then(|| cpus[shard]);
        let failed = failed.clone();
        std::thread::Builder::new()
            .name(format!("floor-{shard}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    pin(cpu);
                }
                let error = match serve(shard, listener) {
                    Ok(()) => io::Error::other("a shard returned"),
                    Err(e) => e,
                };
                let _ = failed.send((shard, error));
            })?;
    }
    println!("listening on http://{addr}");
    match failure.recv() {
        Ok((shard, error)) => Err(io::Error::other(format!("shard {shard}: {error}"))),
        Err(_) => Err(io::Error::other("every shard ended")),
    }
}

/// The CPUs of this thread's affinity mask (the first 1024).
fn affinity() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain bits; sched_getaffinity writes at most its
    // size through the pointer, CPU_ISSET reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

fn pin(cpu: usize) {
    // SAFETY: as in `affinity`; CPU_SET writes within the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (String, Answered) {
        let answers = Answers::new(0);
        let mut out = Vec::new();
        let done = answer(input, &mut out, &answers);
        let text = String::from_utf8_lossy(&out)
            .replace(&String::from_utf8_lossy(&answers.date).into_owned(), "DATE");
        (text, done)
    }

    const HELLO: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n\
        x-shard: 0\r\ncontent-length: 12\r\ndate: DATE\r\n\r\nHello World\n";

    #[test]
    fn answers_hello_as_forkless_does() {
        let (out, done) = run(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(out, HELLO);
        assert_eq!((done.consumed, done.requests, done.close), (27, 1, false));
    }

    #[test]
    fn answers_a_pipelined_burst_in_order_and_keeps_a_partial_head() {
        let one = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let input = format!("{one}GET /nope HTTP/1.1\r\n\r\n{one}GET / HT");
        let (out, done) = run(input.as_bytes());
        let not_found = "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain; charset=utf-8\r\n\
            x-shard: 0\r\ncontent-length: 10\r\ndate: DATE\r\n\r\nnot found\n";
        assert_eq!(out, format!("{HELLO}{not_found}{HELLO}"));
        assert_eq!(done.requests, 3);
        assert_eq!(done.consumed, input.len() - "GET / HT".len());
        assert!(!done.close);
    }

    #[test]
    fn closes_on_request() {
        let (out, done) = run(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert!(out.contains("connection: close\r\n"), "{out}");
        assert_eq!((done.requests, done.close), (1, true));
        let (_, done) = run(b"GET / HTTP/1.0\r\n\r\n");
        assert!(done.close);
    }

    #[test]
    fn refuses_garbage_bodies_and_huge_heads_and_closes() {
        for input in [
            &b"\x00\x01 garbage\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let (out, done) = run(input);
            assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
            assert!(done.close);
        }
        let huge = format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(MAX_HEAD));
        let (out, done) = run(huge.as_bytes());
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(done.close);
        let (out, _) = run(b"DELETE / HTTP/1.1\r\n\r\n");
        assert!(
            out.starts_with(
                "HTTP/1.1 405 Method Not Allowed\r\nx-shard: 0\r\ncontent-length: 0\r\n"
            ),
            "{out}"
        );
        let (out, _) = run(b"HEAD / HTTP/1.1\r\n\r\n");
        assert!(out.ends_with("\r\n\r\n"), "no body for HEAD: {out}");
    }
}
