//! A load generator for tests that change a server under load (reload,
//! upgrade): keep-alive clients and new-connection clients on threads of
//! their own, each request checked, every failure kept with what went wrong.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Load running against one address; [`Load::finish`] stops it.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Tally>>,
}

/// What one client (or all of them) saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests answered `200`.
    pub ok: u64,
    /// Connections the server closed after a response (`Connection: close`).
    pub closed_by_server: u64,
    /// Every failed request: what happened.
    pub failures: Vec<String>,
    /// Failed requests that got neither a response nor a close within the
    /// request timeout (counted in `failures` too).
    pub hung: u64,
}

/// Why one request failed.
struct Failure {
    what: String,
    /// No answer and no close within the timeout.
    hung: bool,
}

impl Failure {
    fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            hung: false,
        }
    }

    fn io(doing: &str, e: &std::io::Error) -> Self {
        let hung = matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        );
        Self {
            what: format!("{doing}: {e}"),
            hung,
        }
    }
}

impl Load {
    /// Starts `keep_alive` clients that reuse their connection for request
    /// after request, and `fresh` clients that open a new connection for
    /// every request, all sending `GET path` to `addr`.
    pub fn start(addr: SocketAddr, path: &str, keep_alive: usize, fresh: usize) -> Load {
        Self::with_timeout(addr, path, keep_alive, fresh, REQUEST_TIMEOUT)
    }

    /// [`Load::start`] with each request (connect, send, response) allowed
    /// `timeout` before it counts as hung.
    pub fn with_timeout(
        addr: SocketAddr,
        path: &str,
        keep_alive: usize,
        fresh: usize,
        timeout: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::with_capacity(keep_alive + fresh);
        for i in 0..keep_alive + fresh {
            let stop = stop.clone();
            let reuse = i < keep_alive;
            let head = format!(
                "GET {path} HTTP/1.1\r\nHost: load\r\n{}\r\n",
                if reuse { "" } else { "Connection: close\r\n" }
            );
            let client = std::thread::Builder::new()
                .name(format!("load-{i}"))
                .stack_size(128 * 1024)
                .spawn(move || run_client(addr, head.as_bytes(), reuse, timeout, &stop))
                .expect("start a load client thread");
            clients.push(client);
        }
        Load { stop, clients }
    }

    /// Stops every client and adds up what they saw.
    pub fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Release);
        let mut total = Tally::default();
        for client in self.clients {
            let tally = client.join().unwrap_or_else(|_| Tally {
                failures: vec!["a load client panicked".into()],
                ..Tally::default()
            });
            total.ok += tally.ok;
            total.closed_by_server += tally.closed_by_server;
            total.failures.extend(tally.failures);
            total.hung += tally.hung;
        }
        total
    }
}

fn run_client(
    addr: SocketAddr,
    head: &[u8],
    reuse: bool,
    timeout: Duration,
    stop: &AtomicBool,
) -> Tally {
    let mut tally = Tally::default();
    let mut connection: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Acquire) {
        let reader = match connection.as_mut() {
            Some(reader) => reader,
            None => match open(addr, timeout) {
                Ok(stream) => connection.insert(BufReader::new(stream)),
                Err(e) => {
                    let failure = Failure::io("connect", &e);
                    tally.hung += u64::from(failure.hung);
                    tally.failures.push(failure.what);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        match exchange(reader, head) {
            Ok((200, keep)) => {
                tally.ok += 1;
                if !(reuse && keep) {
                    if reuse {
                        tally.closed_by_server += 1;
                    }
                    connection = None;
                }
            }
            Ok((status, _)) => {
                tally.failures.push(format!("status {status}"));
                connection = None;
            }
            Err(failure) => {
                tally.hung += u64::from(failure.hung);
                tally.failures.push(failure.what);
                connection = None;
            }
        }
    }
    tally
}

fn open(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends one request and reads its response: the status, and whether the
/// connection stays open.
fn exchange(reader: &mut BufReader<TcpStream>, head: &[u8]) -> Result<(u16, bool), Failure> {
    reader
        .get_mut()
        .write_all(head)
        .map_err(|e| Failure::io("send", &e))?;
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => return Err(Failure::new("closed before the response")),
        Ok(_) => {}
        Err(e) => return Err(Failure::io("read the status line", &e)),
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Failure::new(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    let mut keep = true;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(Failure::new("closed inside the response head")),
            Ok(_) => {}
            Err(e) => return Err(Failure::io("read the head", &e)),
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Failure::new(format!("bad header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .parse()
                .map_err(|_| Failure::new(format!("bad content-length {value:?}")))?;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep = false;
        }
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| Failure::io("read the body", &e))?;
    Ok((status, keep))
}
