//! The machine side: a non-root user within an 8 MiB locked-memory limit
//! (the common default), and a clear one-line error when the limit is too low.
//!
//! These tests drop privileges with `setpriv`, so they run only as root;
//! anywhere else they say so and pass without checking.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use forkless_tests::{Server, app_binary};

/// `setpriv` to an unprivileged user with a locked-memory limit, or `None`
/// when this process cannot drop privileges (not root, or no
/// `setpriv`/`prlimit`). The kernel charges locked memory per user and
/// releases an exited process's share a little later, so each run gets a
/// user of its own: `slot` and this test process's pid pick it.
fn unprivileged(slot: u32, memlock: u64, binary: &Path) -> Option<Command> {
    let uid = 1_000_000 + std::process::id() * 8 + slot;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["setpriv", "prlimit"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().is_ok());
    if !root || !tools {
        eprintln!("skipped: needs root, setpriv and prlimit to drop privileges");
        return None;
    }
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "prlimit"])
        .arg(format!("--memlock={memlock}:{memlock}"))
        .arg("--")
        .arg(binary);
    Some(command)
}

/// A copy of `binary` that any user may run (the checkout may sit in a
/// directory only root can enter); removed when dropped.
struct PublicCopy {
    dir: PathBuf,
    binary: PathBuf,
}

impl PublicCopy {
    fn of(binary: &Path, name: &str) -> PublicCopy {
        let dir = std::env::temp_dir().join(format!("forkless-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a public directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("make it public");
        let copy = dir.join("app");
        std::fs::copy(binary, &copy).expect("copy the binary");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .expect("make it executable by anyone");
        PublicCopy { dir, binary: copy }
    }
}

impl Drop for PublicCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn shards_start_for_a_non_root_user_within_8_mib_of_locked_memory() {
    let copy = PublicCopy::of(&app_binary("hello"), "within-memlock");
    let hello = &copy.binary;
    for shards in [2u32, 4, 16] {
        let Some(mut command) = unprivileged(shards.ilog2(), 8 << 20, hello) else {
            return;
        };
        command.args(["--listen", "127.0.0.1:0", "--shards", &shards.to_string()]);
        let mut server = Server::start_command(command);
        let response = server.get("/");
        assert_eq!(response.status, 200);
        let output = server.output();
        assert!(
            !output.contains("WARN") && !output.contains("ERROR"),
            "warnings with {shards} shards:\n{output}"
        );
        server.signal(libc::SIGTERM);
        let status = server.wait_exit(Duration::from_secs(5)).expect("exits");
        assert_eq!(status.code(), Some(0));
    }
}

#[test]
fn too_little_locked_memory_is_a_one_line_error() {
    let copy = PublicCopy::of(&app_binary("hello"), "low-memlock");
    let hello = &copy.binary;
    let Some(mut command) = unprivileged(7, 64 << 10, hello) else {
        return;
    };
    let output = command
        .args(["--listen", "127.0.0.1:0", "--shards", "2"])
        .output()
        .expect("run hello");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].contains("memlock"), "unclear error: {stderr}");
    assert!(lines[0].contains("ulimit -l"), "no fix given: {stderr}");
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
}
