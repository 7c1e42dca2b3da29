//! A minimal HTTP/1.1 responder for the admin endpoint: one request per
//! connection, answered with `Connection: close`.
//!
//! Contract: probes get through whatever other clients do. One thread runs
//! the endpoint, event-driven: it waits in `poll(2)` on the listener, a
//! wake-up socket and every open connection (all non-blocking), so an idle
//! or slow client costs a slot and a few bytes, never a thread. Up to
//! [`MAX_CONNECTIONS`] are open at once; when a new one arrives at the cap,
//! the oldest connection that has sent nothing yet is closed to make room
//! (so 1,000 silent connections cannot hold `/livez` off), and only when
//! every slot is busy with a request in progress is the newcomer answered
//! `503`. A request head must arrive whole within [`READ_TIMEOUT`] and fit
//! in [`MAX_HEAD`] bytes (`408` and `431` otherwise, `400` when it does not
//! parse); the answer must leave within [`WRITE_TIMEOUT`]. A request body is
//! never read (the `POST` routes take none). The routes run on this thread
//! and must not block (they read counters and the board, or post an event).
//!
//! Stopping the server wakes the thread through the wake-up socket without
//! touching the listening socket itself, which a binary upgrade has handed
//! on to the next process.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::rate_limit::RateLimited;

/// Largest request head accepted.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// Most header lines in a request head.
const MAX_HEADERS: usize = 64;

/// How long a request head may take to arrive.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an answer may take to leave.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections open at once; beyond, the oldest silent one is closed.
pub(crate) const MAX_CONNECTIONS: usize = 4096;

/// After the answer, how long to read what the client still sends, so the
/// close does not reset the connection before the client read the answer.
const LINGER: Duration = Duration::from_millis(200);

/// Pause after an accept error (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A parsed request: all the routes need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The path, without the query.
    pub(crate) path: String,
    /// Sent by a browser on behalf of a page from another origin, or to a
    /// `Host` that is not an IP address or `localhost` (DNS rebinding): see
    /// [`foreign`]. The admin endpoint refuses such a request its `POST`s.
    pub(crate) foreign: bool,
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

/// The reason phrase of `status` (RFC 9110's), empty for a code without one.
fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("")
}

/// Why no request was read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadError {
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
            let header = |name: &str| {
                request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| std::str::from_utf8(h.value).unwrap_or("\u{fffd}"))
            };
            let foreign = foreign(header("host"), header("origin"), header("sec-fetch-site"));
            Ok(Some(Request {
                method: method.to_owned(),
                path: path.to_owned(),
                foreign,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Whether a browser sends a request on behalf of another site: its
/// `Origin` names another host than its `Host`, `Sec-Fetch-Site` says
/// `cross-site` or `same-site`, or its `Host` is a name other than
/// `localhost` (a page whose own name was made to resolve to the admin
/// address, DNS rebinding, would pass the origin check; so a browser must
/// reach the admin port by its address). Only requests with a browser's
/// marks (`Origin` or `Sec-Fetch-Site`) can be foreign: curl, probes and
/// scripts send neither, whatever `Host` they use.
pub(crate) fn foreign(host: Option<&str>, origin: Option<&str>, fetch_site: Option<&str>) -> bool {
    if origin.is_none() && fetch_site.is_none() {
        return false;
    }
    let host = host.unwrap_or("").trim();
    let other_origin = origin.is_some_and(|origin| {
        let origin = origin.trim();
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        !authority.is_some_and(|authority| authority.eq_ignore_ascii_case(host))
    });
    let other_site = fetch_site.is_some_and(|site| {
        let site = site.trim();
        site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site")
    });
    other_origin || other_site || !is_address(host)
}

/// `host` (with or without a port) is an IP address or `localhost`.
fn is_address(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        Some(rest) => {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// The running admin server; dropping it stops accepting.
#[derive(Debug)]
pub(crate) struct AdminServer {
    addr: SocketAddr,
    /// Written to (or closed) to wake the serving thread and stop it.
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Serves `listener` on a thread of its own, answering each request
    /// with `route`.
    pub(crate) fn start<F>(listener: TcpListener, route: F) -> io::Result<Self>
    where
        F: Fn(&Request) -> Answer + Send + 'static,
    {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (wake, woken) = UnixStream::pair()?;
        let thread = std::thread::Builder::new()
            .name("forkless-admin".into())
            .spawn(move || Endpoint::new(listener, woken).run(&route))?;
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

/// Where one connection is.
enum Phase {
    /// Reading the request head.
    Reading { head: Vec<u8> },
    /// Writing the answer: `sent` of `out` are gone.
    Writing { out: Vec<u8>, sent: usize },
    /// Answer sent and write side shut: reading what the client still
    /// sends, so the close does not reset the connection before the client
    /// read the answer.
    Lingering,
}

struct Conn {
    stream: TcpStream,
    accepted: Instant,
    deadline: Instant,
    phase: Phase,
}

impl Conn {
    /// Whether it has sent nothing yet (the first to go at the cap).
    fn silent(&self) -> bool {
        matches!(&self.phase, Phase::Reading { head } if head.is_empty())
    }

    /// Starts writing `answer`.
    fn answer(&mut self, answer: &Answer, head_only: bool, now: Instant) {
        self.phase = Phase::Writing {
            out: answer.to_bytes(head_only),
            sent: 0,
        };
        self.deadline = now + WRITE_TIMEOUT;
    }

    /// Moves on with what the socket allows; `false` once it is done with.
    fn progress(&mut self, route: &impl Fn(&Request) -> Answer, now: Instant) -> bool {
        loop {
            match &mut self.phase {
                Phase::Reading { head } => {
                    let mut chunk = [0u8; 4096];
                    let room = MAX_HEAD.saturating_sub(head.len()).clamp(1, chunk.len());
                    match (&self.stream).read(&mut chunk[..room]) {
                        Ok(0) => return false,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return false,
                    }
                    match parse_head(head) {
                        Ok(None) => {}
                        Ok(Some(request)) => {
                            let answer = route(&request);
                            self.answer(&answer, request.method == "HEAD", now);
                        }
                        Err(error) => self.answer(&refusal(&error), false, now),
                    }
                }
                Phase::Writing { out, sent } => {
                    match (&self.stream).write(&out[*sent..]) {
                        Ok(0) => return false,
                        Ok(n) => *sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return false,
                    }
                    if *sent == out.len() {
                        let _ = self.stream.shutdown(Shutdown::Write);
                        self.phase = Phase::Lingering;
                        self.deadline = now + LINGER;
                    }
                }
                Phase::Lingering => {
                    let mut sink = [0u8; 1024];
                    match (&self.stream).read(&mut sink) {
                        Ok(0) => return false,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return false,
                    }
                }
            }
        }
    }

    /// Its deadline passed: `false` once it is done with.
    fn expire(&mut self, route: &impl Fn(&Request) -> Answer, now: Instant) -> bool {
        match self.phase {
            Phase::Reading { .. } => {
                self.answer(&refusal(&HeadError::TimedOut), false, now);
                self.progress(route, now)
            }
            Phase::Writing { .. } | Phase::Lingering => false,
        }
    }

    fn events(&self) -> libc::c_short {
        match self.phase {
            Phase::Writing { .. } => libc::POLLOUT,
            Phase::Reading { .. } | Phase::Lingering => libc::POLLIN,
        }
    }
}

/// The answer to a head that could not be read.
fn refusal(error: &HeadError) -> Answer {
    match error {
        HeadError::TimedOut => Answer::text(408, "request head timed out\n"),
        HeadError::TooLarge => Answer::text(431, "request head too large\n"),
        HeadError::Malformed => Answer::text(400, "malformed request\n"),
    }
}

/// The serving thread's state.
struct Endpoint {
    listener: TcpListener,
    woken: UnixStream,
    conns: Vec<Conn>,
    /// After an accept error (out of descriptors), the listener rests until
    /// then.
    resting_until: Option<Instant>,
    accept_errors: RateLimited,
}

impl Endpoint {
    fn new(listener: TcpListener, woken: UnixStream) -> Self {
        Self {
            listener,
            woken,
            conns: Vec::new(),
            resting_until: None,
            accept_errors: RateLimited::default(),
        }
    }

    fn run(mut self, route: &impl Fn(&Request) -> Answer) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        loop {
            let now = Instant::now();
            self.expire(route, now);
            if self.resting_until.is_some_and(|until| now >= until) {
                self.resting_until = None;
            }
            fds.clear();
            fds.push(pollfd(self.woken.as_raw_fd(), libc::POLLIN));
            fds.push(pollfd(
                self.listener.as_raw_fd(),
                if self.resting_until.is_none() {
                    libc::POLLIN
                } else {
                    0
                },
            ));
            fds.extend(
                self.conns
                    .iter()
                    .map(|c| pollfd(c.stream.as_raw_fd(), c.events())),
            );
            let next = self
                .conns
                .iter()
                .map(|c| c.deadline)
                .chain(self.resting_until)
                .min();
            let timeout = next.map_or(-1, |at| {
                let wait = at.saturating_duration_since(now).as_millis() + 1;
                libc::c_int::try_from(wait).unwrap_or(libc::c_int::MAX)
            });
            let Ok(count) = libc::nfds_t::try_from(fds.len()) else {
                return;
            };
            // SAFETY: `fds` is a valid array of `count` pollfds for the whole call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), count, timeout) };
            if ready < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(
                    error = %io::Error::last_os_error(),
                    "admin endpoint: poll failed; the endpoint stops"
                );
                return;
            }
            if fds[0].revents != 0 {
                return;
            }
            let now = Instant::now();
            // Connections first (their indices match `fds[2..]`), then new ones.
            for index in (0..self.conns.len()).rev() {
                if fds[index + 2].revents != 0 && !self.conns[index].progress(route, now) {
                    self.conns.swap_remove(index);
                }
            }
            if fds[1].revents != 0 {
                self.accept(now);
            }
        }
    }

    fn expire(&mut self, route: &impl Fn(&Request) -> Answer, now: Instant) {
        for index in (0..self.conns.len()).rev() {
            let conn = &mut self.conns[index];
            if conn.deadline <= now && !conn.expire(route, now) {
                self.conns.swap_remove(index);
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    if let Some(suppressed) = self.accept_errors.allow(now) {
                        tracing::warn!(
                            %error,
                            suppressed,
                            "admin endpoint: accept failed; retrying"
                        );
                    }
                    self.resting_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.conns.len() >= MAX_CONNECTIONS && !self.make_room() {
                let busy = Answer::text(503, "too many admin connections; retry\n");
                let _ = (&stream).write(&busy.to_bytes(false));
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.conns.push(Conn {
                stream,
                accepted: now,
                deadline: now + READ_TIMEOUT,
                phase: Phase::Reading { head: Vec::new() },
            });
        }
    }

    /// Closes the oldest connection that has sent nothing; `false` when
    /// every one is busy with a request.
    fn make_room(&mut self) -> bool {
        let oldest = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.silent())
            .min_by_key(|(_, c)| c.accepted)
            .map(|(index, _)| index);
        match oldest {
            Some(index) => {
                self.conns.swap_remove(index);
                true
            }
            None => false,
        }
    }
}

fn pollfd(fd: libc::c_int, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

#[cfg(test)]
mod foreign_tests {
    use super::foreign;

    #[test]
    fn browsers_on_other_sites_and_rebound_names_are_foreign() {
        // curl, probes, scripts: no Origin, an address as Host.
        for host in [
            "127.0.0.1:9000",
            "localhost:9000",
            "[::1]:9000",
            "10.0.0.5",
            "LOCALHOST",
        ] {
            assert!(!foreign(Some(host), None, None), "{host}");
        }
        assert!(!foreign(None, None, None), "HTTP/1.0 without a Host");
        // The dashboard's own fetches.
        let same = Some("http://127.0.0.1:9000");
        assert!(!foreign(Some("127.0.0.1:9000"), same, Some("same-origin")));
        // Another page's.
        assert!(foreign(
            Some("127.0.0.1:9000"),
            Some("http://evil.example"),
            None
        ));
        assert!(foreign(Some("127.0.0.1:9000"), Some("null"), None));
        assert!(foreign(
            Some("127.0.0.1:9000"),
            Some("http://127.0.0.1:9001"),
            None
        ));
        assert!(foreign(Some("127.0.0.1:9000"), None, Some("cross-site")));
        assert!(foreign(Some("127.0.0.1:9000"), None, Some("same-site")));
        // DNS rebinding: the origin matches, the Host is a name.
        let rebound = Some("http://evil.example:9000");
        assert!(foreign(
            Some("evil.example:9000"),
            rebound,
            Some("same-origin")
        ));
        assert!(foreign(Some("evil.example"), None, Some("same-origin")));
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
        let from_page =
            b"POST /reload HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nOrigin: http://evil.example\r\n\r\n";
        assert!(
            parse_head(from_page)
                .expect("parses")
                .expect("whole")
                .foreign
        );
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

        // Silent connections fill every slot: a probe still gets its answer
        // (the oldest silent one makes room), and so does the next.
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS.min(200))
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        for _ in 0..3 {
            let answer = exchange(addr, b"GET /livez HTTP/1.1\r\n\r\n");
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        }
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
