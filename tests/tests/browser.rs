//! The chat page in a real browser: headless Chromium, driven through
//! chromedriver's WebDriver HTTP API (JSON over HTTP, spoken here with std
//! sockets). Two windows join one room; a message typed in one shows up in
//! the other.
//!
//! Skips (and says so) when `chromium` or `chromedriver` is missing, except
//! under CI (`CI` set), where `.ci/run` installs them and their absence fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use forkless_tests::{Server, app_binary};
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
struct Driver {
    child: Child,
    addr: SocketAddr,
    profile: PathBuf,
}

impl Driver {
    fn start(chromedriver: &PathBuf) -> Driver {
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
        let profile = std::env::temp_dir().join(format!("forkless-chat-{}", std::process::id()));
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
struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl<'a> Session<'a> {
    fn new(driver: &'a Driver, chromium: &PathBuf) -> Session<'a> {
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
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
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

    fn open(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    fn element(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        found[ELEMENT].as_str().expect("an element").to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
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

    fn click(&self, css: &str) {
        let element = self.element(css);
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(&json!({})),
        );
    }

    fn text_of(&self, css: &str) -> String {
        let element = self.element(css);
        let text = self.command("GET", &format!("/element/{element}/text"), None);
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Waits (at most 15 s) until the text of `css` contains `wanted`.
    fn wait_for_text(&self, css: &str, wanted: &str) -> String {
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

    fn current_window(&self) -> String {
        let handle = self.command("GET", "/window", None);
        handle.as_str().expect("a window handle").to_owned()
    }

    fn new_window(&self) -> String {
        let made = self.command("POST", "/window/new", Some(&json!({ "type": "window" })));
        made["handle"].as_str().expect("a window handle").to_owned()
    }

    fn switch_to(&self, handle: &str) {
        self.command("POST", "/window", Some(&json!({ "handle": handle })));
    }

    /// Opens the chat page in the current window and joins `room` as `name`.
    fn join(&self, server: &Server, room: &str, name: &str) -> String {
        self.open(&format!("http://{}/", server.addr));
        self.type_into("#room", room);
        self.type_into("#name", name);
        self.click("#connect");
        self.wait_for_text("#status", &format!("in room {room} as {name}"))
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
fn http(
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

#[test]
fn two_browser_windows_chat_through_the_page() {
    let chromium = find(&["chromium", "chromium-browser"]);
    let chromedriver = find(&["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium and chromedriver must be installed under CI (.ci/run does it)"
        );
        eprintln!(
            "SKIPPED two_browser_windows_chat_through_the_page: chromium or chromedriver \
             is not installed (apt-get install -y chromium chromium-driver)"
        );
        return;
    };
    let server = Server::start(&app_binary("chat"), &["--shards", "2", "--no-pin"]);
    let driver = Driver::start(&chromedriver);
    let session = Session::new(&driver, &chromium);

    let alice = session.current_window();
    let status = session.join(&server, "browser", "alice");
    assert!(status.contains("(shard "), "{status}");
    let bob = session.new_window();
    session.switch_to(&bob);
    session.join(&server, "browser", "bob");
    session.type_into("#text", "hello from bob");
    session.click("#send");
    session.wait_for_text("#log", "bob: hello from bob");

    session.switch_to(&alice);
    let log = session.wait_for_text("#log", "bob: hello from bob");
    assert!(log.contains("bob joined"), "alice saw bob join: {log}");
    // And back: alice answers, bob sees it.
    session.type_into("#text", "hi bob");
    session.click("#send");
    session.switch_to(&bob);
    session.wait_for_text("#log", "alice: hi bob");
}
