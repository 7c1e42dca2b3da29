//! Headless Chromium driven through chromedriver's WebDriver HTTP API
//! (JSON over HTTP, spoken here with std sockets), for the tests of the
//! pages forkless serves: the chat app's page, the admin dashboard.
//!
//! [`browser`] finds the two programs (or skips the test outside CI);
//! [`Driver`] runs chromedriver on a free port and [`Session`] one browser,
//! both torn down when dropped. Every command has a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The WebDriver element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where an executable named one of `names` is on `PATH`.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// chromedriver on a free port; killed (with its browsers) when dropped.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    addr: SocketAddr,
    profile: PathBuf,
}

impl Driver {
    /// Starts chromedriver and waits (at most 20 s) until it is ready.
    pub fn start(chromedriver: &Path) -> Driver {
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address")
        };
        let child = Command::new(chromedriver)
            .arg(format!("--port={}", addr.port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let nth = STARTED.fetch_add(1, Ordering::Relaxed);
        let profile =
            std::env::temp_dir().join(format!("forkless-browser-{}-{nth}", std::process::id()));
        let driver = Driver {
            child,
            addr,
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, status)) = http(addr, "GET", "/status", None, Duration::from_secs(2))
                && status["value"]["ready"] == true
            {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One browser session; deleted (closing Chromium) when dropped.
#[derive(Debug)]
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl<'a> Session<'a> {
    /// A headless Chromium session.
    pub fn new(driver: &'a Driver, chromium: &Path) -> Session<'a> {
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--no-first-run",
                        format!("--user-data-dir={}", driver.profile.display()),
                    ],
                },
            }},
        });
        let (status, answer) = http(
            driver.addr,
            "POST",
            "/session",
            Some(&capabilities),
            Duration::from_secs(60),
        )
        .expect("create a session");
        assert_eq!(status, 200, "new session: {answer}");
        let id = answer["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Session { driver, id }
    }

    /// A WebDriver command of this session; its `value`.
    pub fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.id);
        let (status, answer) = http(
            self.driver.addr,
            method,
            &path,
            body,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    /// Loads `url` in the current window.
    pub fn open(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The first element matching `css` (fails the test if none).
    pub fn element(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        found[ELEMENT].as_str().expect("an element").to_owned()
    }

    /// Clears the field `css` and types `text` into it.
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.command(
            "POST",
            &format!("/element/{element}/clear"),
            Some(&json!({})),
        );
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(&json!({ "text": text })),
        );
    }

    /// Clicks the element `css`.
    pub fn click(&self, css: &str) {
        let element = self.element(css);
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(&json!({})),
        );
    }

    /// The rendered text of the element `css`.
    pub fn text_of(&self, css: &str) -> String {
        let element = self.element(css);
        let text = self.command("GET", &format!("/element/{element}/text"), None);
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Waits (at most 15 s) until the text of `css` contains `wanted`.
    pub fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.text_of(css);
            if text.contains(wanted) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {wanted:?}; it shows {text:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The current window's handle.
    pub fn current_window(&self) -> String {
        let handle = self.command("GET", "/window", None);
        handle.as_str().expect("a window handle").to_owned()
    }

    /// Opens a new window; its handle.
    pub fn new_window(&self) -> String {
        let made = self.command("POST", "/window/new", Some(&json!({ "type": "window" })));
        made["handle"].as_str().expect("a window handle").to_owned()
    }

    /// Makes the window `handle` the current one.
    pub fn switch_to(&self, handle: &str) {
        self.command("POST", "/window", Some(&json!({ "handle": handle })));
    }

    /// How many elements match `css` now.
    pub fn count(&self, css: &str) -> usize {
        let found = self.command(
            "POST",
            "/elements",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        found.as_array().map_or(0, Vec::len)
    }

    /// Accepts the `confirm()` (or `alert()`) dialog the page shows,
    /// waiting for it at most 10 s.
    pub fn accept_dialog(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let path = format!("/session/{}/alert/accept", self.id);
        loop {
            let (status, answer) = http(
                self.driver.addr,
                "POST",
                &path,
                Some(&json!({})),
                Duration::from_secs(10),
            )
            .expect("accept the dialog");
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "no dialog to accept: {answer}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets the window's size in CSS pixels.
    pub fn resize(&self, width: u32, height: u32) {
        let size = json!({ "width": width, "height": height });
        self.command("POST", "/window/rect", Some(&size));
    }

    /// A PNG screenshot of the current window.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", None);
        decode_base64(encoded.as_str().expect("a base64 screenshot"))
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.id);
        let _ = http(
            self.driver.addr,
            "DELETE",
            &path,
            None,
            Duration::from_secs(10),
        );
    }
}

/// One HTTP/1.1 exchange with `Connection: close`: the status and the JSON body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    stream.write_all(&request)?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    // chromedriver keeps the connection open: read by the framing.
    let mut chunked = false;
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            }
            chunked |= name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked");
        }
    }
    let bytes = if chunked {
        dechunk(&mut reader)?
    } else if let Some(length) = length {
        let mut bytes = vec![0; length];
        reader.read_exact(&mut bytes)?;
        bytes
    } else {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        bytes
    };
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)?
    };
    Ok((status, value))
}

/// Reads a chunked body to its last chunk.
fn dechunk(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(data);
        }
        data.extend_from_slice(&chunk[..size]);
    }
}

/// Standard base64 (with or without padding) to bytes; WebDriver sends
/// screenshots that way.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:?}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|c| *c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut word = 0u32;
        for (i, digit) in chunk.iter().enumerate() {
            word |= u32::from(*digit) << (18 - 6 * i);
        }
        let bytes = word.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// Chromium and chromedriver, when both are installed. Under CI (`CI`
/// set), where `.ci/run` installs them, their absence fails the test;
/// elsewhere the test says it skips (naming `test`) and gets `None`.
pub fn browser(test: &str) -> Option<(PathBuf, PathBuf)> {
    let chromium = find(&["chromium", "chromium-browser"]);
    let chromedriver = find(&["chromedriver"]);
    if let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) {
        return Some((chromium, chromedriver));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium and chromedriver must be installed under CI (.ci/run does it)"
    );
    eprintln!(
        "SKIPPED {test}: chromium or chromedriver is not installed \
         (apt-get install -y chromium chromium-driver)"
    );
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(super::decode_base64("aGVsbG8="), b"hello");
        assert_eq!(super::decode_base64("aGVsbG8"), b"hello");
        assert_eq!(super::decode_base64("aGk="), b"hi");
        assert_eq!(super::decode_base64("YWJj"), b"abc");
    }
}
