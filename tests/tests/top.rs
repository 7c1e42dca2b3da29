//! The live monitor end to end: `hello top --once` against a running
//! `hello` prints the process line, one row per shard (with its p99) and a
//! totals row; against a closed port it exits 1 with one line naming the
//! address. `hello top --plain` (the live monitor without the terminal)
//! says in words when the process is gone, shows none of its figures as
//! current, keeps polling and comes back with the process.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use forkless_tests::{Server, Watched, app_binary};

/// Runs `hello top` with `args`, killed if it takes longer than 10 s.
fn top(args: &[&str]) -> Output {
    let mut child = Command::new(app_binary("hello"))
        .arg("top")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hello top");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("poll hello top").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hello top {args:?} ran for more than 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("hello top's output")
}

#[test]
fn once_prints_a_row_per_shard_and_totals() {
    let server = Server::start(
        &app_binary("hello"),
        &["--shards", "2", "--admin", "127.0.0.1:0"],
    );
    let admin = server.admin_addr();
    for _ in 0..4 {
        assert_eq!(server.get("/").status, 200);
    }
    let output = top(&["--admin", &admin.to_string(), "--once"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let first: Vec<&str> = stdout.lines().next().unwrap_or("").split(" | ").collect();
    assert_eq!(first[0], format!("hello pid {}", server.pid()), "{stdout}");
    assert_eq!(first[1], "2 shards", "{stdout}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for shard in ["0", "1"] {
        let row = rows.iter().find(|r| r.first() == Some(&shard));
        let row = row.unwrap_or_else(|| panic!("no row for shard {shard} in:\n{stdout}"));
        assert!(row.contains(&"listening"), "{stdout}");
        // The p99 column: a figure in ms for a shard that served in the
        // last second, `-` for one that did not.
        assert!(
            row.iter().any(|c| *c == "-" || c.ends_with("ms")),
            "{stdout}"
        );
    }
    let header = rows.iter().find(|r| r.first() == Some(&"shard"));
    assert!(header.is_some_and(|h| h.contains(&"p99")), "{stdout}");
    assert!(!rows.iter().any(|r| r.first() == Some(&"2")), "{stdout}");
    assert!(rows.iter().any(|r| r.first() == Some(&"total")), "{stdout}");
    // No terminal control codes in the plain frame.
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
}

#[test]
fn a_closed_port_is_one_line_naming_it_and_exit_1() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let output = top(&["--admin", &addr, "--once"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
}

/// `hello --shards 2 --admin 127.0.0.1:PORT`.
fn hello_on(admin: u16) -> Server {
    let admin = format!("127.0.0.1:{admin}");
    Server::start(
        &app_binary("hello"),
        &["--shards", "2", "--no-pin", "--admin", &admin],
    )
}

#[test]
fn plain_top_says_the_process_is_gone_and_recovers_when_it_is_back() {
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let admin = format!("127.0.0.1:{port}");
    let mut command = Command::new(app_binary("hello"));
    command.args(["top", "--plain", "--admin", &admin]);
    let top = Watched::start(command);
    let wait = Duration::from_secs(10);

    // Never reachable yet: said so, and it keeps trying.
    let mut at = top.wait_for_text(0, "! process gone: connection refused at ", wait);
    let server = hello_on(port);
    at = top.wait_for_text(at, "| 2 shards | ready |", wait);
    at = top.wait_for_text(at, "listening", wait);

    // Gone after having answered.
    drop(server);
    let gone = top.wait_for_text(at, "! process gone: connection refused at ", wait);
    let frame_start = top.output()[..gone].rfind("hello pid ").expect("a frame");
    at = top.wait_for_text(gone, "\n\n", wait);
    let frame = top.output()[frame_start..at].to_owned();
    assert!(frame.contains("| gone |"), "{frame}");
    assert!(!frame.contains("ready"), "no stale readiness: {frame}");
    assert!(!frame.contains("listening"), "no stale state: {frame}");
    assert!(frame.contains(" UTC; retrying every second"), "{frame}");

    // Back: the table returns.
    let _server = hello_on(port);
    top.wait_for_text(at, "| 2 shards | ready |", wait);
}
