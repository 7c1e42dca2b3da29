//! Rolling reload (SIGHUP, `POST /reload`) and binary upgrade (SIGUSR2)
//! under real load: 64 keep-alive and 64 new-connection clients, and not
//! one failed or reset request.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use forkless_tests::load::{Load, Tally};
use forkless_tests::{Server, get_at, wait_for};

const TESTAPP: &str = env!("CARGO_BIN_EXE_forkless-testapp");
const SUPERVISED: &str = env!("CARGO_BIN_EXE_forkless-supervised");

/// Clients of each kind, as the issue asks.
const CLIENTS: usize = 64;

/// How long each run keeps the load on.
const LOAD_TIME: Duration = Duration::from_secs(5);

fn start(shards: usize, extra: &[&str]) -> (Server, SocketAddr) {
    start_app(TESTAPP, shards, extra, &[])
}

fn start_app(
    binary: &str,
    shards: usize,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Server, SocketAddr) {
    let mut command = Command::new(binary);
    command.envs(env.iter().copied());
    command.args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    command.args(["--shards", &shards.to_string()]);
    if shards > 2 {
        command.arg("--no-pin");
    }
    command.args(extra);
    let server = Server::start_command(command);
    let admin = server.admin_addr();
    (server, admin)
}

fn status(admin: SocketAddr) -> serde_json::Value {
    let response = get_at(admin, "/status");
    assert_eq!(response.status, 200, "{}", response.body);
    serde_json::from_str(&response.body).expect("/status is JSON")
}

/// Waits until the log says `times` reloads are done.
fn wait_for_reloads(server: &Server, times: usize) {
    wait_for("the reload to finish", Duration::from_secs(20), || {
        server.output().matches("rolling reload done").count() >= times
    });
}

/// Whether every shard has been reloaded `times` times and listens.
fn reloaded(admin: SocketAddr, times: u64) -> bool {
    let status = status(admin);
    let Some(table) = status["table"].as_array() else {
        return false;
    };
    table
        .iter()
        .all(|row| row["reloads"].as_u64() == Some(times) && row["state"] == "listening")
}

fn assert_clean(tally: &Tally, output: &str) {
    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed; first ones: {:?}\nserver output:\n{output}",
        tally.failures.len(),
        tally.ok + tally.failures.len() as u64,
        &tally.failures[..tally.failures.len().min(10)]
    );
    assert!(tally.ok > 1000, "only {} requests went through", tally.ok);
}

#[test]
fn two_rolling_reloads_under_load_fail_no_request() {
    for shards in [2, 4] {
        let (mut server, admin) = start(shards, &[]);
        let began = Instant::now();
        let load = Load::start(server.addr, "/", CLIENTS, CLIENTS);

        std::thread::sleep(Duration::from_millis(800));
        server.signal(libc::SIGHUP);
        wait_for_reloads(&server, 1);
        assert!(reloaded(admin, 1));
        // The second one through the admin endpoint.
        let answer = forkless_tests::post_at(admin, "/reload");
        assert_eq!(answer.status, 202, "{}", answer.body);
        wait_for_reloads(&server, 2);
        assert!(reloaded(admin, 2));
        std::thread::sleep(LOAD_TIME.saturating_sub(began.elapsed()));
        let tally = load.finish();
        assert_clean(&tally, &server.output());

        let status = status(admin);
        for row in status["table"].as_array().expect("a table") {
            assert_eq!(row["incarnation"], 3, "{row}");
            assert_eq!(row["restarts"], 0, "{row}");
        }
        let output = server.output();
        assert_eq!(output.matches("rolling reload done").count(), 2, "{output}");
        server.signal(libc::SIGTERM);
        let exit = server
            .wait_exit(Duration::from_secs(10))
            .expect("exits after SIGTERM");
        assert!(exit.success(), "{exit:?}\n{}", server.output());
    }
}

#[test]
fn each_new_incarnation_starts_afresh_and_a_second_reload_is_refused_with_409() {
    let env = [("FORKLESS_TEST_RESTART_DELAY_MS", "700")];
    let (server, admin) = start_app(SUPERVISED, 2, &[], &env);
    let before = server.get("/boot").body;
    server.signal(libc::SIGHUP);
    // Shard 0's new incarnation takes 700 ms to listen: the reload runs.
    std::thread::sleep(Duration::from_millis(100));
    let refused = forkless_tests::post_at(admin, "/reload");
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(
        refused.body,
        "rolling reload not started: a rolling reload is in progress\n"
    );
    wait_for("the refusal in the log", Duration::from_secs(5), || {
        server
            .output()
            .contains("rolling reload not started: a rolling reload is in progress")
    });
    // Meanwhile the old incarnations serve.
    assert_eq!(server.get("/").status, 200);
    wait_for_reloads(&server, 1);
    assert!(reloaded(admin, 1));
    // Shard-local state started afresh in every new incarnation.
    for _ in 0..4 {
        assert_ne!(server.get("/boot").body, before);
    }
}

#[test]
fn a_new_incarnation_that_fails_or_never_listens_leaves_the_old_one_serving() {
    /// Environment, extra flags, and what the log says.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: [Case; 2] = [
        (
            &[("FORKLESS_TEST_CRASH_ANEW", "1")],
            &[],
            "rolling reload stopped: its new incarnation ended before it listened",
        ),
        (
            &[("FORKLESS_TEST_RESTART_DELAY_MS", "5000")],
            &["--upgrade-timeout", "300ms"],
            "rolling reload stopped: its new incarnation did not listen within 300ms",
        ),
    ];
    for (env, args, logged) in cases {
        let (server, admin) = start_app(SUPERVISED, 2, args, env);
        let boots: Vec<String> = (0..8).map(|_| server.get("/boot").body).collect();
        server.signal(libc::SIGHUP);
        wait_for(logged, Duration::from_secs(10), || {
            server.output().contains(logged)
        });
        let status = status(admin);
        assert_eq!(status["ready"], true, "{status}");
        for row in status["table"].as_array().expect("a table") {
            assert_eq!(row["state"], "listening", "{row}");
            assert_eq!(row["incarnation"], 1, "{row}");
        }
        for _ in 0..8 {
            let boot = server.get("/boot").body;
            assert!(boots.contains(&boot), "served by a new incarnation");
        }
    }
}

/// Ends a process this test did not start (the upgrade's new process).
struct Reaper(libc::pid_t);

impl Drop for Reaper {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid read from the server it names.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks the pid exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn a_binary_upgrade_under_load_hands_over_without_failures() {
    let (mut server, admin) = start(2, &[]);
    let old_pid = server.pid();
    let before = get_at(server.addr, "/pid").body;
    assert_eq!(before.trim(), old_pid.to_string());
    let load = Load::start(server.addr, "/", CLIENTS, CLIENTS);

    let began = Instant::now();
    std::thread::sleep(Duration::from_millis(800));
    server.signal(libc::SIGUSR2);
    let Some(exit) = server.wait_exit(Duration::from_secs(20)) else {
        panic!(
            "the old process did not exit after the upgrade:\n{}",
            server.output()
        );
    };
    assert!(exit.success(), "{exit:?}\n{}", server.output());
    // The new process carries the load to the end.
    std::thread::sleep(LOAD_TIME.saturating_sub(began.elapsed()));
    let tally = load.finish();
    let output = server.output();

    let new_pid: libc::pid_t = get_at(server.addr, "/pid")
        .body
        .trim()
        .parse()
        .expect("a pid");
    let _reaper = Reaper(new_pid);
    assert_ne!(new_pid, old_pid);
    assert!(!alive(old_pid), "the old process is gone");
    assert_clean(&tally, &output);
    // The admin socket came along: the new process answers it.
    assert_eq!(status(admin)["pid"], new_pid, "{output}");
    assert!(
        output.contains("binary upgrade: the new process serves"),
        "{output}"
    );

    // SAFETY: kill(2) on the new server's pid.
    unsafe { libc::kill(new_pid, libc::SIGTERM) };
    wait_for("the new process to exit", Duration::from_secs(10), || {
        !alive(new_pid)
    });
}

#[test]
fn a_broken_new_binary_leaves_the_old_process_serving() {
    let (server, admin) = start(2, &["--upgrade-binary", "/bin/false"]);
    let pid = server.pid();
    server.signal(libc::SIGUSR2);
    wait_for("the rollback in the log", Duration::from_secs(10), || {
        server
            .output()
            .contains("binary upgrade failed: the new process exited with status 1")
    });
    for _ in 0..10 {
        let answer = get_at(server.addr, "/pid");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body.trim(), pid.to_string());
    }
    assert!(
        status(admin)["ready"].as_bool().unwrap_or(false),
        "still ready"
    );
    // Another attempt is allowed once the first one failed.
    server.signal(libc::SIGUSR2);
    wait_for("the second rollback", Duration::from_secs(10), || {
        server.output().matches("binary upgrade failed").count() == 2
    });
    assert_eq!(get_at(server.addr, "/").status, 200);
}
