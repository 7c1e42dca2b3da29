//! A minimal blocking HTTP/1.1 responder for the admin endpoint: one request
//! per connection, answered with `Connection: close`.
//!
//! One thread accepts; each connection is served on a short-lived thread of
//! its own, at most [`MAX_CONNECTIONS`] at once (more are answered `503` and
//! closed at once, by the accepting thread). A request head must arrive
//! whole within [`READ_TIMEOUT`] and fit in [`MAX_HEAD`] bytes (`408` and
//! `431` otherwise, `400` when it does not parse); the answer must leave
//! within [`WRITE_TIMEOUT`]. A request body is never read (the `POST` routes
//! take none). So a slow or hostile client holds one thread for a few
//! seconds at most, and never a shard.
//!
//! The accepting thread waits in `poll(2)` on the listener and on a wake-up
//! socket: stopping the server wakes it without touching the listening
//! socket itself, which a binary upgrade has handed on to the next process.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request head accepted.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// Most header lines in a request head.
const MAX_HEADERS: usize = 64;

/// How long a request head may take to arrive.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an answer may take to leave.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; beyond, `503`.
pub(crate) const MAX_CONNECTIONS: usize = 16;

/// After the answer, how long to read what the client still sends, so the
/// close does not reset the connection before the client read the answer.
const LINGER: Duration = Duration::from_millis(200);

/// How long the accepting thread spends answering `503` to one connection.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// Pause after an accept error (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A parsed request: all the routes need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The path, without the query.
    pub(crate) path: String,
}

/// An answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    /// Extra header lines, e.g. `("allow", "GET, HEAD")`.
    pub(crate) headers: Vec<(&'static str, &'static str)>,
}

impl Answer {
    /// A `text/plain` answer.
    pub(crate) fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
            headers: Vec::new(),
        }
    }

    /// The bytes on the wire; `head_only` leaves out the body (for `HEAD`).
    pub(crate) fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n\
             cache-control: no-store\r\nconnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Why no request was read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// The client closed before a whole head.
    Closed,
    TimedOut,
    TooLarge,
    Malformed,
}

/// Parses one request head from `buf`: `Ok(None)` while it is incomplete.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Request>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let (Some(method), Some(target)) = (request.method, request.path) else {
                return Err(HeadError::Malformed);
            };
            let path = target.split(['?', '#']).next().unwrap_or_default();
            Ok(Some(Request {
                method: method.to_owned(),
                path: path.to_owned(),
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Reads one request head within [`READ_TIMEOUT`].
fn read_head(stream: &mut TcpStream) -> Result<Request, HeadError> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| HeadError::Closed)?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::TimedOut);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Closed),
        }
        if let Some(request) = parse_head(&buf[..filled])? {
            return Ok(request);
        }
    }
}

/// The running admin server; dropping it stops accepting.
#[derive(Debug)]
pub(crate) struct AdminServer {
    addr: SocketAddr,
    /// Written to (or closed) to wake the accepting thread and stop it.
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Accepts on `listener` on a thread of its own, answering each request
    /// with `route`.
    pub(crate) fn start<F>(listener: TcpListener, route: F) -> io::Result<Self>
    where
        F: Fn(&Request) -> Answer + Send + Sync + 'static,
    {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (wake, woken) = UnixStream::pair()?;
        let thread = std::thread::Builder::new()
            .name("forkless-admin".into())
            .spawn(move || accept_loop(&listener, &woken, Arc::new(route)))?;
        Ok(Self {
            addr,
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        // Closing our end makes the other end readable (end of stream).
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until the listener has a connection (`true`) or the server stops.
fn wait_for_connection(listener: &TcpListener, woken: &UnixStream) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: woken.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfds for the whole call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents != 0 {
            return true;
        }
    }
}

fn accept_loop<F>(listener: &TcpListener, woken: &UnixStream, route: Arc<F>)
where
    F: Fn(&Request) -> Answer + Send + Sync + 'static,
{
    let active = Arc::new(AtomicUsize::new(0));
    while wait_for_connection(listener, woken) {
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "admin endpoint: accept failed; retrying");
                    std::thread::sleep(ACCEPT_BACKOFF);
                    break;
                }
            };
            // Accepted sockets do not inherit O_NONBLOCK; the timeouts apply.
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::AcqRel);
                let busy = Answer::text(503, "too many admin connections; retry\n");
                let _ = stream.set_write_timeout(Some(BUSY_WRITE_TIMEOUT));
                let _ = (&stream).write_all(&busy.to_bytes(false));
                continue;
            }
            let spawned = std::thread::Builder::new()
                .name("forkless-admin-conn".into())
                .spawn({
                    let route = route.clone();
                    let active = active.clone();
                    move || {
                        serve(stream, &*route);
                        active.fetch_sub(1, Ordering::AcqRel);
                    }
                });
            if let Err(error) = spawned {
                active.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(%error, "admin endpoint: cannot start a connection thread");
            }
        }
    }
}

/// Serves the one request of a connection.
fn serve(mut stream: TcpStream, route: &impl Fn(&Request) -> Answer) {
    let reply = match read_head(&mut stream) {
        Ok(request) => {
            let reply = route(&request);
            return answer(stream, &reply, request.method == "HEAD");
        }
        Err(HeadError::Closed) => return,
        Err(HeadError::TimedOut) => Answer::text(408, "request head timed out\n"),
        Err(HeadError::TooLarge) => Answer::text(431, "request head too large\n"),
        Err(HeadError::Malformed) => Answer::text(400, "malformed request\n"),
    };
    answer(stream, &reply, false);
}

/// Writes `reply`, closes the write side and lingers briefly.
fn answer(mut stream: TcpStream, reply: &Answer, head_only: bool) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    if stream.write_all(&reply.to_bytes(head_only)).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_with_or_without_a_query() {
        let head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let request = parse_head(head).expect("parses").expect("whole");
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/metrics");
        assert_eq!(parse_head(b"GET /livez HTTP/1.1\r\nHo"), Ok(None));
        assert_eq!(
            parse_head(b"GET\x01 / HTTP/1.1\r\n\r\n"),
            Err(HeadError::Malformed)
        );
    }

    #[test]
    fn oversized_heads_are_refused() {
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(MAX_HEAD, b'a');
        assert_eq!(parse_head(&head), Err(HeadError::TooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(head.as_bytes()), Err(HeadError::TooLarge));
    }

    /// Sends `bytes` on a fresh connection and reads the whole answer.
    fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = stream.write_all(bytes);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn a_real_socket_gets_answers_refusals_and_the_connection_cap() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = AdminServer::start(listener, |request: &Request| {
            Answer::text(200, format!("{} {}\n", request.method, request.path))
        })
        .expect("start");
        let addr = server.addr();
        let ok = exchange(addr, b"GET /livez?x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nGET /livez\n"), "{ok}");
        let head = exchange(addr, b"HEAD /livez HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let garbage = exchange(addr, b"\x00\x01\x02 nonsense\r\n\r\n");
        assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD + 100, b'a');
        let refused = exchange(addr, &huge);
        assert!(refused.starts_with("HTTP/1.1 431 "), "{refused}");

        // Idle connections hold every slot: the next one is turned away at once.
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        let busy = loop {
            let answer = exchange(addr, b"GET / HTTP/1.1\r\n\r\n");
            if answer.starts_with("HTTP/1.1 503 ") || Instant::now() > deadline {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(busy.starts_with("HTTP/1.1 503 "), "{busy}");
        drop(idle);

        // Dropping the server stops accepting.
        drop(server);
        assert!(TcpStream::connect(addr).is_err(), "still accepting");
    }

    #[test]
    fn answers_close_and_say_their_length() {
        let bytes = Answer::text(200, "ok\n").to_bytes(false);
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.contains("content-length: 3\r\n"));
        assert!(text.ends_with("\r\n\r\nok\n"));
        let head = Answer::text(200, "ok\n").to_bytes(true);
        assert!(head.ends_with(b"\r\n\r\n"));
    }
}
