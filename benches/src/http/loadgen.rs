//! A small closed-loop HTTP/1.1 load generator that can pipeline.
//!
//! Each load thread owns a share of the connections and drives them with one
//! level-triggered epoll loop: a connection writes `depth` `GET /` requests
//! in one `write`, waits until it has read `depth` complete responses, then
//! writes the next batch. A batch's latency is the time from its write to
//! its last response (with `depth` 1, the request's latency).
//!
//! Counting starts after the warm-up and stops at the end of the window, so
//! the caller can read the server's CPU time at the two edges
//! ([`Edge::Start`], [`Edge::End`]) and divide by the requests counted here.
//! Every wait is bounded; a connection the server closes or answers with
//! something that is not HTTP/1.1 counts as an error and is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long connecting one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a batch may wait for its responses before the run fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Server address.
    pub addr: SocketAddr,
    /// Open connections, spread over the threads.
    pub connections: usize,
    /// Load threads.
    pub threads: usize,
    /// Requests written per batch (1: no pipelining).
    pub depth: usize,
    /// Unmeasured time before the window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Pin every load thread to this CPU.
    pub cpu: Option<usize>,
}

/// The two edges of the measured window, reported to the caller as they pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Counting starts now.
    Start,
    /// Counting stopped.
    End,
}

/// One connection's share of the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionTally {
    /// The `x-shard` header of its responses, if any.
    pub shard: Option<u32>,
    /// Responses it read inside the window.
    pub responses: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// `200` responses completed inside the window.
    pub requests: u64,
    /// Length of the window.
    pub window: Duration,
    /// Batch latencies inside the window, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Non-`200` responses and connections lost (whole run).
    pub errors: u64,
    /// One entry per connection.
    pub connections: Vec<ConnectionTally>,
}

impl LoadReport {
    /// Requests per second over the window.
    pub fn rate(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }
}

/// Connects every connection, runs the warm-up and the window, and calls
/// `edge` at the window's start and end (from the calling thread).
pub fn run(load: &Load, edge: &mut dyn FnMut(Edge)) -> Result<LoadReport, String> {
    if load.connections == 0 || load.threads == 0 || load.depth == 0 {
        return Err("load needs at least one connection, thread and request".into());
    }
    let threads = load.threads.min(load.connections);
    let stop = Arc::new(AtomicBool::new(false));
    // Connect first (in the threads), then start everybody together.
    let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let share = load.connections / threads + usize::from(t < load.connections % threads);
        let load = load.clone();
        let stop = stop.clone();
        let barrier = barrier.clone();
        let handle = std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || drive(&load, share, &stop, &barrier))
            .map_err(|e| format!("cannot start a load thread: {e}"))?;
        handles.push(handle);
    }
    // Every thread reaches the barrier once (connected or not).
    barrier.wait();
    let begun = Instant::now();
    sleep_until(begun + load.warmup, &stop);
    edge(Edge::Start);
    sleep_until(begun + load.warmup + load.duration, &stop);
    edge(Edge::End);
    stop.store(true, Ordering::Relaxed);

    let mut report = LoadReport {
        window: load.duration,
        ..LoadReport::default()
    };
    let mut failure = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(part)) => {
                report.requests += part.requests;
                report.errors += part.errors;
                report.latencies_ns.extend(part.latencies_ns);
                report.connections.extend(part.connections);
            }
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a load thread panicked".into()),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Sleeps until `deadline` unless a thread gave up (`stop` set).
fn sleep_until(deadline: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

/// One connection of a load thread.
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    input: Vec<u8>,
    /// Responses still due for the batch in flight.
    due: usize,
    /// Bytes of the batch not written yet (a short write).
    unwritten: usize,
    sent_at: Instant,
    tally: ConnectionTally,
    open: bool,
}

/// One thread's connections and epoll loop.
fn drive(
    load: &Load,
    share: usize,
    stop: &AtomicBool,
    barrier: &std::sync::Barrier,
) -> Result<LoadReport, String> {
    let prepared = prepare(load, share);
    barrier.wait();
    let (epoll, mut connections) = match prepared {
        Ok(ready) => ready,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
    };
    let result = event_loop(load, &epoll, &mut connections, stop);
    if result.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    result
}

fn prepare(load: &Load, share: usize) -> Result<(OwnedFd, Vec<Connection>), String> {
    if let Some(cpu) = load.cpu {
        pin_current_thread(cpu)?;
    }
    // SAFETY: epoll_create1 takes no pointers; a non-negative result is a
    // new descriptor that we own from here on.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(format!(
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut connections = Vec::with_capacity(share);
    for index in 0..share {
        let stream = TcpStream::connect_timeout(&load.addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("connect to {}: {e}", load.addr))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, &stream, libc::EPOLLIN, index)?;
        connections.push(Connection {
            stream,
            input: Vec::with_capacity(16 * 1024),
            due: 0,
            unwritten: 0,
            sent_at: Instant::now(),
            tally: ConnectionTally::default(),
            open: true,
        });
    }
    Ok((epoll, connections))
}

fn event_loop(
    load: &Load,
    epoll: &OwnedFd,
    connections: &mut [Connection],
    stop: &AtomicBool,
) -> Result<LoadReport, String> {
    let batch = request_batch(load.addr, load.depth);
    let mut report = LoadReport::default();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let begun = Instant::now();
    let window_start = begun + load.warmup;
    let window_end = window_start + load.duration;
    for (index, connection) in connections.iter_mut().enumerate() {
        send_batch(epoll, connection, index, &batch, &mut report)?;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // SAFETY: `events` is a valid, writable buffer of `events.len()`
        // entries and `epoll` a live epoll descriptor.
        let ready = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                10,
            )
        };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {error}"));
        }
        let now = Instant::now();
        if now >= window_end {
            break;
        }
        let counting = now >= window_start;
        for event in &events[..ready as usize] {
            let index = event.u64 as usize;
            let Some(connection) = connections.get_mut(index) else {
                continue;
            };
            if !connection.open {
                continue;
            }
            if event.events & libc::EPOLLOUT as u32 != 0 && connection.unwritten > 0 {
                finish_write(epoll, connection, index, &batch, &mut report)?;
            }
            if event.events & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                read_responses(connection, &mut buf, counting, now, &mut report);
                if connection.open && connection.due == 0 && connection.unwritten == 0 {
                    send_batch(epoll, connection, index, &batch, &mut report)?;
                }
            }
        }
        let stalled = connections
            .iter()
            .any(|c| c.open && c.due > 0 && now.duration_since(c.sent_at) > STALL_TIMEOUT);
        if stalled {
            return Err(format!(
                "the server at {} left a batch unanswered for {STALL_TIMEOUT:?}",
                load.addr
            ));
        }
        if connections.iter().all(|c| !c.open) {
            return Err(format!(
                "the server at {} closed every connection",
                load.addr
            ));
        }
    }
    report.connections = connections.iter().map(|c| c.tally).collect();
    Ok(report)
}

/// Reads what is there and consumes every complete response.
fn read_responses(
    connection: &mut Connection,
    buf: &mut [u8],
    counting: bool,
    now: Instant,
    report: &mut LoadReport,
) {
    loop {
        match connection.stream.read(buf) {
            Ok(0) => {
                close(connection, report);
                return;
            }
            Ok(n) => connection.input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                close(connection, report);
                return;
            }
        }
    }
    let mut consumed = 0;
    while connection.due > 0 {
        match parse_response(&connection.input[consumed..]) {
            Ok(Some(response)) => {
                consumed += response.len;
                connection.due -= 1;
                if connection.tally.shard.is_none() {
                    connection.tally.shard = response.shard;
                }
                if response.status != 200 {
                    report.errors += 1;
                } else if counting {
                    report.requests += 1;
                    connection.tally.responses += 1;
                }
            }
            Ok(None) => break,
            Err(_) => {
                close(connection, report);
                return;
            }
        }
    }
    connection.input.drain(..consumed);
    if connection.due == 0 && counting {
        let latency = now.duration_since(connection.sent_at);
        report
            .latencies_ns
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }
}

fn close(connection: &mut Connection, report: &mut LoadReport) {
    connection.open = false;
    report.errors += 1;
    let _ = connection.stream.shutdown(std::net::Shutdown::Both);
}

fn send_batch(
    epoll: &OwnedFd,
    connection: &mut Connection,
    index: usize,
    batch: &[u8],
    report: &mut LoadReport,
) -> Result<(), String> {
    connection.sent_at = Instant::now();
    connection.due = batch_depth(batch);
    connection.unwritten = batch.len();
    finish_write(epoll, connection, index, batch, report)
}

/// Writes the rest of the batch; on a short write, waits for `EPOLLOUT`.
fn finish_write(
    epoll: &OwnedFd,
    connection: &mut Connection,
    index: usize,
    batch: &[u8],
    report: &mut LoadReport,
) -> Result<(), String> {
    let was_waiting = connection.unwritten < batch.len();
    while connection.unwritten > 0 {
        let from = batch.len() - connection.unwritten;
        match connection.stream.write(&batch[from..]) {
            Ok(0) => {
                close(connection, report);
                return Ok(());
            }
            Ok(n) => connection.unwritten -= n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let interest = libc::EPOLLIN | libc::EPOLLOUT;
                return epoll_ctl(
                    epoll,
                    libc::EPOLL_CTL_MOD,
                    &connection.stream,
                    interest,
                    index,
                );
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                close(connection, report);
                return Ok(());
            }
        }
    }
    if was_waiting {
        epoll_ctl(
            epoll,
            libc::EPOLL_CTL_MOD,
            &connection.stream,
            libc::EPOLLIN,
            index,
        )?;
    }
    Ok(())
}

fn epoll_ctl(
    epoll: &OwnedFd,
    op: i32,
    stream: &TcpStream,
    interest: i32,
    index: usize,
) -> Result<(), String> {
    let mut event = libc::epoll_event {
        events: interest as u32,
        u64: index as u64,
    };
    // SAFETY: both descriptors are live for the call and `event` is a valid
    // epoll_event the kernel only reads.
    let rc = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, stream.as_raw_fd(), &mut event) };
    if rc < 0 {
        return Err(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `depth` copies of a `GET /` for `addr`, to be written in one go.
pub fn request_batch(addr: SocketAddr, depth: usize) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n")
        .repeat(depth)
        .into_bytes()
}

/// How many requests a batch made by [`request_batch`] holds.
fn batch_depth(batch: &[u8]) -> usize {
    batch.windows(4).filter(|w| w == b"\r\n\r\n").count()
}

/// A complete response at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedResponse {
    /// Its status code.
    pub status: u16,
    /// Its `x-shard` header, if it has a numeric one.
    pub shard: Option<u32>,
    /// Bytes it takes (head and body).
    pub len: usize,
}

/// Parses one response from the start of `input`: `Ok(None)` while it is
/// incomplete. Only `Content-Length` framing is understood (every peer uses it
/// for a fixed body).
pub fn parse_response(input: &[u8]) -> Result<Option<ParsedResponse>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let mut body_len = None;
    let mut shard = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(header.value).unwrap_or("");
            body_len = Some(
                text.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("bad content-length {text:?}"))?,
            );
        } else if header.name.eq_ignore_ascii_case("x-shard") {
            shard = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not supported".into());
        }
    }
    let Some(body_len) = body_len else {
        return Err(format!("response {status} without content-length"));
    };
    let len = head_len + body_len;
    if input.len() < len {
        return Ok(None);
    }
    Ok(Some(ParsedResponse { status, shard, len }))
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is checked against the set's capacity by CPU_SET's caller
    // contract: we only pass small CPU numbers (0 and 1).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is valid for its size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "cannot pin the load generator to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_responses_one_by_one() {
        let one = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx-shard: 3\r\n\r\nHello World\n";
        let mut two = one.to_vec();
        two.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let first = parse_response(&two).expect("parses").expect("complete");
        assert_eq!(first.status, 200);
        assert_eq!(first.shard, Some(3));
        assert_eq!(first.len, one.len());
        let second = parse_response(&two[first.len..])
            .expect("parses")
            .expect("complete");
        assert_eq!(second.status, 404);
        assert_eq!(second.shard, None);
        assert_eq!(first.len + second.len, two.len());
    }

    #[test]
    fn waits_for_the_rest_of_a_response() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nHello World\n";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_frame() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn batches_hold_depth_requests() {
        let addr: SocketAddr = ([127, 0, 0, 1], 80).into();
        assert_eq!(batch_depth(&request_batch(addr, 16)), 16);
        assert_eq!(batch_depth(&request_batch(addr, 1)), 1);
    }
}
