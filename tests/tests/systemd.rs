//! systemd integration end to end: the notify protocol against a real
//! `AF_UNIX` datagram socket, and socket activation with an inherited
//! listener.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use forkless_tests::{Server, app_binary};

/// A datagram socket for `NOTIFY_SOCKET` in a directory of its own (the
/// directory, the socket's path, the socket), reads bounded to 100 ms.
fn notify_socket(tag: &str) -> (std::path::PathBuf, std::path::PathBuf, UnixDatagram) {
    let dir = std::env::temp_dir().join(format!("forkless-notify-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    (dir, path, socket)
}

/// Receives notify datagrams until `until` is seen or 10 s pass.
fn collect_until(socket: &UnixDatagram, until: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buffer) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
                let done = message.lines().any(|line| line == until);
                seen.push(message);
                if done {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    panic!("no {until:?} within 10 s; got {seen:?}");
}

#[test]
fn ready_watchdog_and_stopping_arrive_in_order() {
    let (dir, path, socket) = notify_socket("ready");

    let mut command = Command::new(app_binary("hello"));
    command
        .args(["--listen", "127.0.0.1:0", "--shards", "2"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000");
    let mut server = Server::start_command(command);

    let mut seen = Vec::new();
    collect_until(&socket, "READY=1", &mut seen);
    assert_eq!(server.get("/").status, 200);
    // Two watchdog pings (every 100 ms) after READY.
    let before = seen.len();
    collect_until(&socket, "WATCHDOG=1", &mut seen);
    collect_until(&socket, "WATCHDOG=1", &mut seen);
    assert!(seen.len() >= before + 2);

    server.signal(libc::SIGTERM);
    collect_until(&socket, "STOPPING=1", &mut seen);
    let status = server.wait_exit(Duration::from_secs(5)).expect("exited");
    assert_eq!(status.code(), Some(0));

    let position = |wanted: &str| {
        seen.iter()
            .position(|m| m.lines().any(|line| line == wanted))
            .unwrap_or_else(|| panic!("no {wanted} in {seen:?}"))
    };
    assert!(position("READY=1") < position("WATCHDOG=1"));
    assert!(position("WATCHDOG=1") < position("STOPPING=1"));
    assert!(seen[position("READY=1")].contains(&format!("MAINPID={}", server.pid())));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_inherited_listener_is_served_instead_of_binding() {
    for reuse_port in [false, true] {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a socket");
        socket.set_reuse_port(reuse_port).expect("SO_REUSEPORT");
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("literal");
        socket.bind(&addr.into()).expect("bind");
        socket.listen(128).expect("listen");
        let listener = std::net::TcpListener::from(socket);
        let addr = listener.local_addr().expect("local address");
        let fd = listener.as_raw_fd();

        // The shell's pid is the app's pid after `exec`, as LISTEN_PID wants.
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
            .arg(app_binary("hello"))
            .args(["--shards", "2"]);
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork
        // and exec. Descriptor 3 must survive exec: dup2 onto it clears
        // close-on-exec, and when the listener already is 3, clear it here.
        unsafe {
            command.pre_exec(move || {
                let ok = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0) >= 0
                } else {
                    libc::dup2(fd, 3) >= 0
                };
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let server = Server::start_command(command);
        assert_eq!(
            server.addr, addr,
            "served on the inherited socket's address"
        );
        drop(listener);
        let shards: std::collections::HashSet<Option<String>> = std::thread::scope(|scope| {
            let clients: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        (0..25)
                            .map(|_| {
                                let response = server.get("/");
                                assert_eq!(response.status, 200);
                                response.header("x-shard").map(str::to_owned)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            clients
                .into_iter()
                .flat_map(|c| c.join().expect("a client thread"))
                .collect()
        });
        if reuse_port {
            // Shard 0 took the inherited socket, shard 1 bound its own.
            assert_eq!(shards.len(), 2, "both shards serve");
        } else {
            // One shared queue: whichever shard is free takes the next
            // connection, so light load may all land on one shard.
            assert!(!shards.is_empty());
        }
        assert!(server.output().contains("LISTEN_FDS"));
    }
}

#[test]
fn reload_and_upgrade_speak_the_notify_protocol() {
    let (dir, path, socket) = notify_socket("upgrade");

    let mut command = Command::new(env!("CARGO_BIN_EXE_forkless-testapp"));
    command
        .args(["--listen", "127.0.0.1:0", "--shards", "2"])
        .env("NOTIFY_SOCKET", &path);
    let mut server = Server::start_command(command);
    let mut seen = Vec::new();
    collect_until(&socket, "READY=1", &mut seen);

    // A rolling reload is bracketed by RELOADING=1 and READY=1.
    server.signal(libc::SIGHUP);
    collect_until(&socket, "RELOADING=1", &mut seen);
    let reloading = seen.last().cloned().unwrap_or_default();
    assert!(
        reloading.lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok())),
        "{reloading}"
    );
    collect_until(&socket, "READY=1", &mut seen);

    // An upgrade: the new process says READY=1 with its own MAINPID, the old
    // one hands MAINPID over and exits without STOPPING=1.
    let old = server.pid();
    server.signal(libc::SIGUSR2);
    let mut new_pid = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buffer = [0u8; 4096];
    while new_pid.is_none() && Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buffer) {
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            if message.lines().count() == 1
                && let Some(pid) = message.strip_prefix("MAINPID=")
            {
                new_pid = pid.trim().parse::<i32>().ok();
            }
            seen.push(message);
        }
    }
    let new_pid = new_pid.unwrap_or_else(|| panic!("no MAINPID hand-over in {seen:?}"));
    assert_ne!(new_pid, old);
    assert!(
        seen.iter()
            .any(|m| m.contains("READY=1") && m.contains(&format!("MAINPID={new_pid}"))),
        "the new process said READY=1: {seen:?}"
    );
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the old process exits");
    assert_eq!(status.code(), Some(0));
    let after_upgrade = seen.len();

    // The new process is the service now: STOPPING=1 comes from it.
    // SAFETY: kill(2) on the pid the new process announced.
    unsafe { libc::kill(new_pid, libc::SIGTERM) };
    collect_until(&socket, "STOPPING=1", &mut seen);
    assert!(
        seen[..after_upgrade]
            .iter()
            .all(|m| !m.contains("STOPPING=1")),
        "the old process must not say STOPPING=1: {seen:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    // SAFETY: signal 0 only checks whether the pid exists.
    while unsafe { libc::kill(new_pid, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
