//! Strict request framing, checked on the raw bytes before hyper sees them.
//!
//! hyper follows RFC 9112 and accepts some requests whose framing a proxy in
//! front of it could read differently (request smuggling): both
//! `Content-Length` and `Transfer-Encoding` (hyper drops the length and
//! closes afterwards), a repeated `Content-Length` with equal values,
//! `Transfer-Encoding: chunked, chunked` or repeated, and an HTTP/1.1 request
//! without `Host`. nginx and Envoy reject all of these with `400`; so does
//! the [`Gate`], and it refuses what nginx refuses of the request line and
//! `Host` that hyper passes on: a `Host` that is not `host[:port]`
//! (`Host: a b`, a 10 KB one), an authority-form target (`GET host:80`)
//! other than for `CONNECT`, and `*` other than for `OPTIONS`.
//!
//! The gate sits in the I/O adapter and sees every byte before hyper does.
//! It releases a request head only once the whole head has arrived and passed
//! the checks, then follows the body's framing (a length, or the chunked
//! grammar exactly as hyper's decoder reads it) to know where the next head
//! starts. A head that fails is never shown to hyper: the adapter hands hyper
//! a stand-in head instead, and the service answers that request with the
//! rejection's status and `Connection: close` (so it carries `x-shard` like
//! every other response, and earlier pipelined requests are answered first).
//!
//! The same holding back enforces the head size limit (`431`): hyper never
//! buffers more than one head's worth of bytes.
//!
//! A request hyper treats as a possible upgrade (HTTP/1.1 with an `Upgrade`
//! header, or `CONNECT`: the same rule as hyper's) **pauses** the gate after
//! its body: what follows may be another protocol (a WebSocket's first
//! frames), so it is neither parsed nor shown to hyper until the answer is
//! known. The connection [`resume`](Gate::resume)s the gate when the answer
//! was not `101 Switching Protocols`; after a `101` the held bytes go to the
//! upgraded stream instead (see `upgrade.rs`).
//!
//! Pure and synchronous: no I/O, no clocks.

use std::mem::MaybeUninit;

use http::StatusCode;

/// Most header lines a request head may carry (hyper's own default).
pub(crate) const MAX_HEADERS: usize = 100;

/// What hyper sees in place of a rejected head: a request without a body,
/// which the service answers with the rejection (see the module docs).
pub(crate) const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: forkless.invalid\r\n\r\n";

/// The largest `Content-Length` hyper accepts.
const MAX_CONTENT_LENGTH: u64 = u64::MAX - 2;

/// Why a request was refused before it reached the handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The head does not parse as HTTP/1.x.
    Malformed,
    /// A header line continues the previous one (obs-fold).
    ObsoleteLineFolding,
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndTransferEncoding,
    /// More than one `Content-Length` line.
    LengthRepeated,
    /// A `Content-Length` that is not a plain decimal number.
    LengthInvalid,
    /// More than one `Transfer-Encoding` line.
    TransferEncodingRepeated,
    /// A `Transfer-Encoding` that does not end in exactly one `chunked`.
    TransferEncodingNotChunked,
    /// `Transfer-Encoding` in an HTTP/1.0 request.
    TransferEncodingInHttp10,
    /// An HTTP/1.1 request without `Host`.
    HostMissing,
    /// More than one `Host` line.
    HostRepeated,
    /// A `Host` that is not `host[:port]` (see [`valid_host`]).
    HostInvalid,
    /// A request target in a form its method may not use: authority-form
    /// (`host:port`) other than for `CONNECT`, `*` other than for `OPTIONS`.
    TargetForm,
    /// The head is longer than the configured maximum.
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// The head did not arrive within the header read timeout.
    HeadTimeout,
}

impl Rejection {
    /// The status the request is answered with.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Rejection::HeadTooLarge | Rejection::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Rejection::HeadTimeout => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The response body: what was wrong, in one line.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed request head\n",
            Rejection::ObsoleteLineFolding => "obsolete line folding in a header\n",
            Rejection::LengthAndTransferEncoding => {
                "both Content-Length and Transfer-Encoding: the body's length is ambiguous\n"
            }
            Rejection::LengthRepeated => "more than one Content-Length header\n",
            Rejection::LengthInvalid => "Content-Length is not a decimal number\n",
            Rejection::TransferEncodingRepeated => "more than one Transfer-Encoding header\n",
            Rejection::TransferEncodingNotChunked => {
                "Transfer-Encoding must end in a single `chunked`\n"
            }
            Rejection::TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request\n",
            Rejection::HostMissing => "an HTTP/1.1 request needs a Host header\n",
            Rejection::HostRepeated => "more than one Host header\n",
            Rejection::HostInvalid => "the Host header is not a host name with an optional port\n",
            Rejection::TargetForm => {
                "the request target must be a path (`*` only for OPTIONS, host:port only for CONNECT)\n"
            }
            Rejection::HeadTooLarge => "request head too large\n",
            Rejection::TooManyHeaders => "too many header lines\n",
            Rejection::HeadTimeout => "request head not received in time\n",
        }
    }
}

/// What the gate decided about the bytes at the start of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A complete request head of this many bytes passed.
    Head(usize),
    /// This many bytes of a request body pass.
    Body(usize),
    /// The input ends inside a request head: wait for more bytes.
    NeedMore,
    /// The gate is paused after an upgrade request: hold everything.
    Paused,
    /// The request head at the start of the input is refused.
    Reject(Rejection),
}

/// Follows one connection's request stream; see the module docs.
#[derive(Debug)]
pub(crate) struct Gate {
    state: State,
    max_head: usize,
    /// How much of the current partial head was searched for its end.
    searched: usize,
    /// The current request asked for an upgrade: pause after its body.
    upgrade: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a request head.
    Head,
    /// Inside a body of known length: this many bytes to go.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Everything passes unchecked: a chunked body that hyper will refuse
    /// (and then close the connection), so the framing no longer matters.
    Open,
    /// A head was refused; nothing more passes.
    Closed,
    /// After an upgrade request: nothing passes until [`Gate::resume`].
    Paused,
}

/// hyper's chunked decoder states (`proto/h1/decode.rs`), with the size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
}

impl Gate {
    /// A gate for heads of at most `max_head` bytes.
    pub(crate) fn new(max_head: usize) -> Self {
        Self {
            state: State::Head,
            max_head,
            searched: 0,
            upgrade: false,
        }
    }

    /// Whether the gate holds everything after an upgrade request.
    pub(crate) fn is_paused(&self) -> bool {
        self.state == State::Paused
    }

    /// The upgrade request was answered without switching protocols: the
    /// held bytes are the next request head.
    pub(crate) fn resume(&mut self) {
        if self.state == State::Paused {
            self.state = State::Head;
        }
    }

    /// Where the stream goes once the current request's body has ended.
    fn after_body(&mut self) -> State {
        if std::mem::take(&mut self.upgrade) {
            State::Paused
        } else {
            State::Head
        }
    }

    /// Whether the next bytes start a request head.
    pub(crate) fn at_head(&self) -> bool {
        self.state == State::Head
    }

    /// Whether the gate is inside a request body.
    pub(crate) fn in_body(&self) -> bool {
        matches!(self.state, State::Length(_) | State::Chunked(_))
    }

    /// Whether a head was refused (nothing more passes).
    pub(crate) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Stops the gate: nothing more passes.
    pub(crate) fn close(&mut self) {
        self.state = State::Closed;
    }

    /// At a head boundary, whether `input` may hold a whole head: false
    /// only while a head that came in pieces still lacks its blank line
    /// (the same cheap test [`step`](Self::step) makes before parsing).
    pub(crate) fn may_hold_head(&self, input: &[u8]) -> bool {
        self.state == State::Head
            && (self.searched == 0 || has_head_end(&input[self.searched.saturating_sub(2)..]))
    }

    /// The fast path took the head at the start of the input (one the gate
    /// would pass, without a body): the next bytes start a new head.
    pub(crate) fn head_taken(&mut self) {
        self.searched = 0;
    }

    /// The most bytes a head may have.
    pub(crate) fn max_head(&self) -> usize {
        self.max_head
    }

    /// Decides about the start of `input`: the bytes received and not yet
    /// released, in order. Call again with the rest after `Head` or `Body`.
    pub(crate) fn step(&mut self, input: &[u8]) -> Step {
        if input.is_empty() {
            return Step::NeedMore;
        }
        match self.state {
            State::Head => self.head(input),
            State::Length(left) => {
                let n = usize::try_from(left).map_or(input.len(), |left| left.min(input.len()));
                let left = left - n as u64;
                self.state = if left == 0 {
                    self.after_body()
                } else {
                    State::Length(left)
                };
                Step::Body(n)
            }
            State::Chunked(chunk) => self.chunked(chunk, input),
            State::Open => Step::Body(input.len()),
            State::Closed => Step::NeedMore,
            State::Paused => Step::Paused,
        }
    }

    fn head(&mut self, input: &[u8]) -> Step {
        // A head that came in pieces is parsed again only once its end is
        // in sight, so a trickle costs one scan per byte, not one parse.
        if self.searched > 0 && !has_head_end(&input[self.searched.saturating_sub(2)..]) {
            self.searched = input.len();
            return self.partial(input);
        }
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        match request.parse_with_uninit_headers(input, &mut slots) {
            Ok(httparse::Status::Complete(len)) => {
                self.searched = 0;
                if len > self.max_head {
                    return Step::Reject(Rejection::HeadTooLarge);
                }
                let http10 = request.version == Some(0);
                if !target_fits(request.method, request.path) {
                    return Step::Reject(Rejection::TargetForm);
                }
                match check(request.headers, http10) {
                    Ok(body) => {
                        self.upgrade = wants_upgrade(&request);
                        self.state = match body {
                            State::Head => self.after_body(),
                            body => body,
                        };
                        Step::Head(len)
                    }
                    Err(rejection) => Step::Reject(rejection),
                }
            }
            Ok(httparse::Status::Partial) => {
                self.searched = input.len();
                self.partial(input)
            }
            Err(httparse::Error::TooManyHeaders) => Step::Reject(Rejection::TooManyHeaders),
            Err(_) if has_obs_fold(input) => Step::Reject(Rejection::ObsoleteLineFolding),
            Err(_) => Step::Reject(Rejection::Malformed),
        }
    }

    fn partial(&self, input: &[u8]) -> Step {
        if input.len() > self.max_head {
            Step::Reject(Rejection::HeadTooLarge)
        } else {
            Step::NeedMore
        }
    }

    /// Follows hyper's chunked grammar over `input`; data is skipped whole.
    fn chunked(&mut self, mut chunk: Chunk, input: &[u8]) -> Step {
        let mut at = 0;
        while at < input.len() {
            if let Chunk::Data(left) = chunk {
                let n = usize::try_from(left).map_or(input.len() - at, |l| l.min(input.len() - at));
                at += n;
                let left = left - n as u64;
                chunk = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            let byte = input[at];
            at += 1;
            let next = match (chunk, byte) {
                (Chunk::Start, _) => hex(byte).map(|d| Chunk::Size(u64::from(d))),
                (Chunk::Size(size), b'\t' | b' ') => Some(Chunk::SizeLws(size)),
                (Chunk::Size(size), b';') => Some(Chunk::Extension(size)),
                (Chunk::Size(size), b'\r') => Some(Chunk::SizeLf(size)),
                (Chunk::Size(size), _) => hex(byte).and_then(|d| {
                    let size = size.checked_mul(16)?.checked_add(u64::from(d))?;
                    Some(Chunk::Size(size))
                }),
                (Chunk::SizeLws(size), b'\t' | b' ') => Some(Chunk::SizeLws(size)),
                (Chunk::SizeLws(size), b';') => Some(Chunk::Extension(size)),
                (Chunk::SizeLws(size), b'\r') => Some(Chunk::SizeLf(size)),
                (Chunk::Extension(size), b'\r') => Some(Chunk::SizeLf(size)),
                (Chunk::Extension(_), b'\n') => None,
                (Chunk::Extension(size), _) => Some(Chunk::Extension(size)),
                (Chunk::SizeLf(0), b'\n') => Some(Chunk::EndCr),
                (Chunk::SizeLf(size), b'\n') => Some(Chunk::Data(size)),
                (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
                (Chunk::DataLf, b'\n') => Some(Chunk::Start),
                (Chunk::Trailer, b'\r') => Some(Chunk::TrailerLf),
                (Chunk::Trailer, _) => Some(Chunk::Trailer),
                (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
                (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
                (Chunk::EndCr, _) => Some(Chunk::Trailer),
                (Chunk::EndLf, b'\n') => {
                    self.state = self.after_body();
                    return Step::Body(at);
                }
                _ => None,
            };
            match next {
                Some(next) => chunk = next,
                None => {
                    // hyper fails this body and closes the connection after it.
                    self.state = State::Open;
                    return Step::Body(input.len());
                }
            }
        }
        self.state = State::Chunked(chunk);
        Step::Body(input.len())
    }
}

/// Checks the framing headers of a parsed head; returns where the body goes.
fn check(headers: &[httparse::Header<'_>], http10: bool) -> Result<State, Rejection> {
    let mut length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut hosts = 0usize;
    for header in headers {
        let name = header.name.as_bytes();
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                if !valid_host(header.value) {
                    return Err(Rejection::HostInvalid);
                }
                hosts += 1;
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if length.is_some() {
                    return Err(Rejection::LengthRepeated);
                }
                length = Some(parse_length(header.value).ok_or(Rejection::LengthInvalid)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if transfer_encoding.is_some() {
                    return Err(Rejection::TransferEncodingRepeated);
                }
                transfer_encoding = Some(header.value);
            }
            _ => {}
        }
    }
    if length.is_some() && transfer_encoding.is_some() {
        return Err(Rejection::LengthAndTransferEncoding);
    }
    if hosts > 1 {
        return Err(Rejection::HostRepeated);
    }
    if hosts == 0 && !http10 {
        return Err(Rejection::HostMissing);
    }
    if let Some(codings) = transfer_encoding {
        if http10 {
            return Err(Rejection::TransferEncodingInHttp10);
        }
        if !ends_in_single_chunked(codings) {
            return Err(Rejection::TransferEncodingNotChunked);
        }
        return Ok(State::Chunked(Chunk::Start));
    }
    Ok(match length {
        Some(0) | None => State::Head,
        Some(n) => State::Length(n),
    })
}

/// Longest `Host` value taken: a DNS name is at most 253 bytes, and a
/// port, brackets or a trailing dot fit in what is left.
const MAX_HOST: usize = 263;

/// Whether `value` is a `Host` as RFC 9110 has it (`uri-host [":" port]`,
/// RFC 3986's grammar): a registered name (unreserved, `%`-escapes,
/// sub-delims) or a bracketed IP literal, then digits after a `:`. Empty
/// is allowed (a target without an authority). Spaces, `/`, `\`, `@`,
/// control bytes and anything over [`MAX_HOST`] bytes are not: nginx
/// refuses them too.
pub(crate) fn valid_host(value: &[u8]) -> bool {
    if value.len() > MAX_HOST {
        return false;
    }
    let (host, port) = match value.first() {
        Some(b'[') => match value.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &value[1..end];
                let fits = |b: &u8| b.is_ascii_hexdigit() || b":.vV".contains(b) || sub_delim(*b);
                if literal.is_empty() || !literal.iter().all(fits) {
                    return false;
                }
                (&[][..], &value[end + 1..])
            }
            None => return false,
        },
        _ => match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        },
    };
    let name = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b) || sub_delim(b));
    let port = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    name && port
}

fn sub_delim(b: u8) -> bool {
    b"!$&'()*+,;=".contains(&b)
}

/// Whether `target` is a form `method` may use (RFC 9112 section 3.2):
/// origin-form (`/path`) or absolute-form (`scheme://...`) for every
/// method, `*` for `OPTIONS`; `CONNECT`'s authority-form is hyper's to
/// check.
fn target_fits(method: Option<&str>, target: Option<&str>) -> bool {
    let (Some(method), Some(target)) = (method, target) else {
        return false;
    };
    if method == "CONNECT" || target.starts_with('/') {
        return true;
    }
    if target == "*" {
        return method == "OPTIONS";
    }
    target.split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    })
}

/// Whether hyper treats the request as a possible upgrade: `CONNECT`, or
/// HTTP/1.1 with an `Upgrade` header (the last `Upgrade` line decides, as
/// in hyper's `role.rs`).
fn wants_upgrade(request: &httparse::Request<'_, '_>) -> bool {
    let http11 = request.version == Some(1);
    let mut wants = request.method == Some("CONNECT");
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("upgrade") {
            wants = http11;
        }
    }
    wants
}

/// A plain decimal number, as hyper reads `Content-Length` (no sign, no list).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    let mut n = 0u64;
    for &byte in value {
        if !byte.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    (n <= MAX_CONTENT_LENGTH).then_some(n)
}

/// `chunked`, or codings ending in exactly one `chunked`, none empty.
fn ends_in_single_chunked(value: &[u8]) -> bool {
    let codings = value.split(|&b| b == b',').map(|c| c.trim_ascii());
    let mut chunked = 0usize;
    let mut last_is_chunked = false;
    for coding in codings {
        if coding.is_empty() {
            return false;
        }
        last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
        chunked += usize::from(last_is_chunked);
    }
    last_is_chunked && chunked == 1
}

/// Whether `bytes` hold the blank line that ends a head (CRLF or bare LF).
fn has_head_end(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| b == b'\n') {
        rest = &rest[at + 1..];
        match rest {
            [b'\n', ..] | [b'\r', b'\n', ..] => return true,
            _ => {}
        }
    }
    false
}

/// Whether a header line starts with a space or tab (a folded continuation).
fn has_obs_fold(head: &[u8]) -> bool {
    head.windows(2)
        .any(|pair| pair[0] == b'\n' && (pair[1] == b' ' || pair[1] == b'\t'))
}

fn hex(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
