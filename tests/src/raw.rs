//! A strict HTTP/1.1 client on raw bytes, for the conformance tests.
//!
//! It reads responses exactly as they come off the socket and fails the test
//! on anything a careful client would refuse: a line not ended by CRLF, a
//! malformed status line, a header name that is not a token, both
//! `content-length` and `transfer-encoding`, two lengths, a bad chunk. A
//! response's body is framed as RFC 9112 section 6.3 says: none for a
//! response to `HEAD` or with status 1xx, 204 or 304; else chunked when
//! `transfer-encoding` is `chunked`; else by `content-length`; else to the end
//! of the connection.
//!
//! Every read is bounded by [`IO_TIMEOUT`]; a test never hangs on a server
//! that says less than it should.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{IO_TIMEOUT, connect};

/// How long [`Connection::assert_quiet`] waits for stray bytes.
const QUIET: Duration = Duration::from_millis(100);

/// How a response's body was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body, by rule: a response to `HEAD`, or status 1xx, 204 or 304.
    None,
    /// `content-length` bytes.
    Length(u64),
    /// `transfer-encoding: chunked`; the body is the decoded data.
    Chunked,
    /// Neither: the body ran to the end of the connection.
    UntilClose,
}

/// One response, as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status line's version, e.g. `HTTP/1.1`.
    pub version: String,
    /// Status code.
    pub status: u16,
    /// The status line's reason phrase, as written.
    pub reason: String,
    /// Headers in wire order, names lower-cased, values without surrounding whitespace.
    pub headers: Vec<(String, String)>,
    /// How the body was delimited.
    pub framing: Framing,
    /// The body (decoded, when chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (lower case); fails the test when it is repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        let values = self.header_values(name);
        assert!(
            values.len() <= 1,
            "header {name} is repeated: {values:?} in {self:#?}"
        );
        values.first().copied()
    }

    /// Every value of header `name` (lower case), in wire order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The header names in wire order.
    pub fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

/// A client connection that writes raw requests and reads strict responses.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to `addr` with bounded reads and writes and no Nagle delay
    /// (so each write leaves as its own segment).
    pub fn open(addr: SocketAddr) -> Connection {
        let stream = connect(addr);
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Connection {
            reader: BufReader::new(stream),
        }
    }

    /// Writes all of `bytes` in one write.
    pub fn send(&mut self, bytes: &[u8]) {
        self.reader
            .get_mut()
            .write_all(bytes)
            .expect("write the request");
    }

    /// Writes `bytes` one byte at a time, pausing `pause` after each.
    pub fn trickle(&mut self, bytes: &[u8], pause: Duration) {
        for byte in bytes {
            self.send(std::slice::from_ref(byte));
            std::thread::sleep(pause);
        }
    }

    /// Sends `method path` with a `Host` header and reads its response.
    pub fn roundtrip(&mut self, method: &str, path: &str) -> Response {
        self.send(&crate::request(method, path, &[]));
        self.read(method)
    }

    /// Reads the next response to a request made with `method`.
    pub fn read(&mut self, method: &str) -> Response {
        self.next(method)
            .unwrap_or_else(|| panic!("the connection closed before a response to {method}"))
    }

    /// Reads the next response to a request made with `method`, or `None`
    /// when the connection closed cleanly before its first byte.
    pub fn next(&mut self, method: &str) -> Option<Response> {
        let status_line = self.line_or_eof()?;
        let (version, status, reason) = parse_status_line(&status_line);
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            headers.push(parse_header(&line));
        }
        let mut response = Response {
            version,
            status,
            reason,
            headers,
            framing: Framing::None,
            body: Vec::new(),
        };
        response.framing = framing(&response, method);
        response.body = match response.framing {
            Framing::None => Vec::new(),
            Framing::Length(length) => self.exact(length),
            Framing::Chunked => self.chunked(),
            Framing::UntilClose => self.until_close(),
        };
        Some(response)
    }

    /// Asserts the server closed the connection: nothing more was sent, and
    /// a read returns end of file.
    pub fn assert_closed(&mut self) {
        assert_eq!(self.reader.buffer(), b"", "bytes after the last response");
        let mut byte = [0u8; 1];
        match self.reader.get_mut().read(&mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("a byte after the last response: {:?}", byte[0] as char),
            Err(e) => panic!("no end of file after the last response: {e}"),
        }
    }

    /// Asserts the connection is open and silent: no stray bytes after the
    /// last response, none arriving within 100 ms, no end of file.
    pub fn assert_quiet(&mut self) {
        assert_eq!(self.reader.buffer(), b"", "bytes after the last response");
        let stream = self.reader.get_mut();
        stream.set_read_timeout(Some(QUIET)).expect("read timeout");
        let mut byte = [0u8; 1];
        let read = stream.read(&mut byte);
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        match read {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(0) => panic!("the server closed a connection it should keep"),
            Ok(_) => panic!(
                "a stray byte after the last response: {:?}",
                byte[0] as char
            ),
            Err(e) => panic!("the connection failed: {e}"),
        }
    }

    /// One CRLF-terminated line without its CRLF, or `None` at a clean end of file.
    fn line_or_eof(&mut self) -> Option<String> {
        let mut line = Vec::new();
        let read = self
            .reader
            .read_until(b'\n', &mut line)
            .expect("read a line");
        if read == 0 {
            return None;
        }
        let Some(line) = line.strip_suffix(b"\r\n") else {
            panic!(
                "a line not ended by CRLF: {:?}",
                String::from_utf8_lossy(&line)
            );
        };
        assert!(
            !line.contains(&b'\r'),
            "a bare CR in {:?}",
            String::from_utf8_lossy(line)
        );
        Some(String::from_utf8(line.to_vec()).expect("an ASCII line"))
    }

    fn line(&mut self) -> String {
        self.line_or_eof()
            .expect("the connection closed inside a response head")
    }

    fn exact(&mut self, length: u64) -> Vec<u8> {
        let mut body = vec![0; usize::try_from(length).expect("a body that fits memory")];
        self.reader.read_exact(&mut body).expect("read the body");
        body
    }

    fn chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.line();
            let size = line.split(';').next().unwrap_or_default();
            assert!(
                !size.is_empty() && size.bytes().all(|b| b.is_ascii_hexdigit()),
                "bad chunk size line {line:?}"
            );
            let size = u64::from_str_radix(size, 16).expect("a chunk size that fits u64");
            if size == 0 {
                break;
            }
            body.extend(self.exact(size));
            assert_eq!(self.line(), "", "chunk data not followed by CRLF");
        }
        // Trailer fields, up to the empty line.
        while !self.line().is_empty() {}
        body
    }

    fn until_close(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        self.reader
            .read_to_end(&mut body)
            .expect("a body delimited by the end of the connection");
        body
    }
}

/// `HTTP-version SP status-code SP [ reason-phrase ]`.
fn parse_status_line(line: &str) -> (String, u16, String) {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts
        .next()
        .unwrap_or_else(|| panic!("no SP after the status code in {line:?}"));
    assert!(
        matches!(version, "HTTP/1.0" | "HTTP/1.1"),
        "bad version in {line:?}"
    );
    assert!(
        code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()),
        "bad status code in {line:?}"
    );
    let status = code.parse().expect("three digits");
    (version.to_owned(), status, reason.to_owned())
}

/// `field-name ":" OWS field-value OWS`, the name a token.
fn parse_header(line: &str) -> (String, String) {
    let (name, value) = line
        .split_once(':')
        .unwrap_or_else(|| panic!("a header line without a colon: {line:?}"));
    assert!(
        !name.is_empty() && name.bytes().all(is_tchar),
        "a header name that is not a token: {line:?}"
    );
    let value = value.trim_matches([' ', '\t']);
    assert!(
        value
            .bytes()
            .all(|b| b == b'\t' || (b >= b' ' && b != 0x7f)),
        "a control character in {line:?}"
    );
    (name.to_ascii_lowercase(), value.to_owned())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How the body of `response` to a `method` request is delimited.
fn framing(response: &Response, method: &str) -> Framing {
    if method == "HEAD" || response.status < 200 || matches!(response.status, 204 | 304) {
        return Framing::None;
    }
    let encodings = response.header_values("transfer-encoding");
    let lengths = response.header_values("content-length");
    if !encodings.is_empty() {
        assert!(
            lengths.is_empty(),
            "both transfer-encoding and content-length: {response:#?}"
        );
        assert_eq!(
            encodings,
            ["chunked"],
            "an encoding this client does not read"
        );
        return Framing::Chunked;
    }
    match lengths.as_slice() {
        [] => Framing::UntilClose,
        [length] => {
            assert!(
                !length.is_empty() && length.bytes().all(|b| b.is_ascii_digit()),
                "bad content-length {length:?}"
            );
            Framing::Length(length.parse().expect("a content-length that fits u64"))
        }
        _ => panic!("more than one content-length: {lengths:?}"),
    }
}
