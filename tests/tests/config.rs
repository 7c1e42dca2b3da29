//! The standard command line from outside: flag > env > file > default,
//! bad `--config` files, `--print-config`, the app's own flag on every
//! shard, `--help`, the access log and JSON-only output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forkless_tests::{Server, app_binary, wait_for};

fn testapp() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_forkless-testapp"))
}

/// A file `name` holding `text`, in a directory of this test process.
fn write_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("forkless-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the file");
    path
}

/// Runs `binary args` with `env` to its end (killed after 10 s): exit
/// code, stdout, stderr.
fn run(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut child = Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} {args:?} did not exit within 10 s", binary.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    (status.code(), out, err)
}

/// The line of `--print-config` output for `key`.
fn printed<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|line| line.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{text}"))
}

#[test]
fn flags_beat_env_beat_the_file_beat_defaults() {
    let file = write_file(
        "precedence.toml",
        "shards = 4\nlog_format = \"json\"\n[limits]\nmax_body_size = \"2m\"\nsend_timeout = \"9s\"\n",
    );
    let file = file.to_str().expect("utf-8 path");
    let env = [
        ("FORKLESS_CONFIG", file),
        ("FORKLESS_SHARDS", "3"),
        ("FORKLESS_MAX_BODY_SIZE", "3m"),
        ("FORKLESS_LISTEN", "127.0.0.1:7001,127.0.0.1:7002"),
    ];
    let (code, out, err) = run(&testapp(), &["--shards", "2", "--print-config"], &env);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(printed(&out, "shards"), "shards = \"2\"  # flag --shards");
    assert_eq!(
        printed(&out, "max_body_size"),
        "max_body_size = \"3m\"  # env FORKLESS_MAX_BODY_SIZE"
    );
    assert_eq!(
        printed(&out, "listen"),
        "listen = [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]  # env FORKLESS_LISTEN"
    );
    assert_eq!(
        printed(&out, "send_timeout"),
        format!("send_timeout = \"9s\"  # {file}:5")
    );
    assert_eq!(
        printed(&out, "log_format"),
        format!("log_format = \"json\"  # {file}:2")
    );
    assert_eq!(
        printed(&out, "keep_alive_timeout"),
        "keep_alive_timeout = \"75s\"  # default"
    );
    assert_eq!(printed(&out, "greeting"), "greeting = \"hello\"  # default");
}

#[test]
fn bad_files_are_one_line_naming_file_line_and_key() {
    let cases = [
        (
            "unknown.toml",
            "shards = 2\n[limits]\nmax_body = \"1m\"\n",
            ":3: key `limits.max_body`: unknown key",
        ),
        (
            "value.toml",
            "\n\nshutdown_timeout = \"soon\"\n",
            ":3: key `shutdown_timeout`: bad value `soon`",
        ),
        (
            "app.toml",
            "[app]\ngreting = \"hi\"\n",
            ":2: key `app.greting`: unknown key",
        ),
    ];
    for (name, text, expected) in cases {
        let file = write_file(name, text);
        let file = file.to_str().expect("utf-8 path");
        let (code, out, err) = run(&testapp(), &["--config", file], &[]);
        assert_eq!(code, Some(2), "{name}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(&format!("{file}{expected}")), "{name}: {err}");
    }
}

#[test]
fn help_opens_with_the_description_and_shows_env_and_app_flags() {
    let (code, out, _) = run(&testapp(), &["--help"], &[]);
    assert_eq!(code, Some(0));
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with("End-to-end tests"), "{out}");
    for wanted in [
        "[env: FORKLESS_SHARDS=]",
        "[env: FORKLESS_TLS_CERT=]",
        "POST /reload",
        "POST /upgrade",
        "App options:",
        "--greeting <GREETING>",
        "[env: TESTAPP_GREETING=]",
    ] {
        assert!(out.contains(wanted), "no `{wanted}` in:\n{out}");
    }
}

/// Shards, extra flags, environment, the greeting every shard must answer.
type Run<'a> = (usize, &'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn the_app_flag_reaches_every_shard_from_flag_env_and_file() {
    let file = write_file("greeting.toml", "[app]\ngreeting = \"from-file\"\n");
    let file = file.to_str().expect("utf-8 path");
    let runs: [Run; 3] = [
        (1, &["--greeting", "from-flag"], &[], "from-flag"),
        (2, &[], &[("TESTAPP_GREETING", "from-env")], "from-env"),
        (4, &["--config", file], &[], "from-file"),
    ];
    for (shards, args, env, expected) in runs {
        let mut command = Command::new(testapp());
        command
            .args(["--listen", "127.0.0.1:0", "--shards", &shards.to_string()])
            .args(args)
            .envs(env.iter().copied());
        let server = Server::start_command(command);
        let answers = server.per_shard("/greeting", shards);
        for (shard, body) in answers {
            assert_eq!(
                body,
                format!("{expected}\n"),
                "shard {shard} at {shards} shards"
            );
        }
    }
}

#[test]
fn kv_refuses_values_over_max_value_size() {
    let server = Server::start(
        &app_binary("kv"),
        &["--shards", "1", "--max-value-size", "1k"],
    );
    let response = server.fetch("PUT", "/kv/small", &[b'x'; 1024]);
    assert_eq!(response.status, 201);
    let response = server.fetch("PUT", "/kv/big", &[b'x'; 1025]);
    assert_eq!(response.status, 413);
}

/// Sends `GET /echo/{i}` on fresh connections: (shard, path) of each.
fn send_requests(server: &Server, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let path = format!("/echo/r{i}");
            let response = server.get(&path);
            assert_eq!(response.status, 200);
            let shard = response.header("x-shard").expect("x-shard").to_owned();
            (shard, path)
        })
        .collect()
}

#[test]
fn text_access_log_has_a_line_per_request_on_its_shard() {
    let server = Server::start(&testapp(), &["--shards", "2", "--access-log", "text"]);
    let sent = send_requests(&server, 20);
    // A request with a body goes through hyper: logged there too.
    let upload = server.fetch("POST", "/upload", b"abc");
    assert_eq!(upload.status, 200);
    let upload_shard = upload.header("x-shard").expect("x-shard").to_owned();
    wait_for("21 access lines", Duration::from_secs(5), || {
        server.output().matches(" access shard=").count() >= 21
    });
    let output = server.output();
    let hyper_line = format!(" access shard={upload_shard} peer=127.0.0.1:");
    assert!(
        output
            .lines()
            .any(|l| l.contains(&hyper_line) && l.contains(" method=POST path=/upload status=200 ")),
        "no access line for the POST:\n{output}"
    );
    for (shard, path) in &sent {
        let line = output
            .lines()
            .find(|line| line.contains(&format!(" path={path} ")))
            .unwrap_or_else(|| panic!("no access line for {path}:\n{output}"));
        assert!(
            line.contains(&format!(" access shard={shard} peer=127.0.0.1:")),
            "{line}"
        );
        assert!(line.contains(" method=GET "), "{line}");
        let bytes = path.len() - "/echo/".len();
        assert!(
            line.contains(&format!(" status=200 bytes={bytes} duration_us=")),
            "{line}"
        );
    }
}

#[test]
fn json_mode_prints_only_json_and_logs_requests_as_json() {
    let mut command = Command::new(testapp());
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--log-format",
        "json",
        "--access-log",
        "json",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut server = Server::start_command(command);
    let sent = send_requests(&server, 10);
    assert_eq!(
        forkless_tests::get_at(server.admin_addr(), "/livez").status,
        200,
        "the admin line is JSON too, and names the admin address"
    );
    server.signal(libc::SIGTERM);
    assert!(
        server.wait_exit(Duration::from_secs(10)).is_some(),
        "it exits"
    );
    let output = server.output();
    let lines: Vec<serde_json::Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let listening = lines
        .iter()
        .find(|line| line["message"] == "listening on")
        .expect("a listening line");
    assert_eq!(listening["url"], format!("http://{}", server.addr));
    for (shard, path) in &sent {
        let line = lines
            .iter()
            .find(|line| line["message"] == "access" && line["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no access line for {path}:\n{output}"));
        assert_eq!(line["shard"].to_string(), *shard, "{line}");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes"], path.len() - "/echo/".len());
        assert!(
            line["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:"))
        );
        assert!(line["duration_us"].is_u64());
    }
}

#[test]
fn the_example_file_loads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/forkless.example.toml");
    let example = example.to_str().expect("utf-8 path");
    let (code, out, err) = run(&testapp(), &["--config", example, "--print-config"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(printed(&out, "shards").ends_with(":5"), "{out}");
    assert!(
        printed(&out, "greeting").contains("forkless.example.toml"),
        "{out}"
    );
}
