//! The live monitor end to end: `hello top --once` against a running
//! `hello` prints the process line, one row per shard and a totals row;
//! against a closed port it exits 1 with one line naming the address.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use forkless_tests::{Server, app_binary};

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
    }
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
