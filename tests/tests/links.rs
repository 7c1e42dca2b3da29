//! The `links` app end to end against a private PostgreSQL
//! (`forkless_tests::services`): the API at 1 and 4 shards; at 4 shards,
//! every shard's cache warmed and then no shard redirecting a code once its
//! delete (or update) was acknowledged, hit counts from every shard adding
//! up (the last ones written at shutdown, none lost in a rolling reload);
//! and the database stopped mid-run: `503` at once for what needs it,
//! cached redirects still served, and everything back when it is. And a
//! database unreachable at start: one line, exit 1.
//!
//! Requests on fresh connections land on whichever shard the kernel picks
//! (each answer's `x-shard` says which); the per-shard checks hold one
//! keep-alive connection on each shard. Skipped, saying so, when
//! PostgreSQL is not installed (`.ci/run` installs it).

use std::collections::HashSet;
use std::io::BufReader;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use forkless_tests::services::Postgres;
use forkless_tests::{
    BinaryResponse, Response, Server, app_binary, read_response, request, request_with_body, send,
    wait_for,
};
use serde_json::Value;

/// The shard count of the cross-shard checks.
const SHARDS: usize = 4;

/// Longest a request that needs a stopped database may take to fail
/// (the app's limit is 1.5 s).
const FAIL_FAST: Duration = Duration::from_secs(3);

fn links(postgres: &Postgres, shards: usize) -> Server {
    let mut command = Command::new(app_binary("links"));
    command
        .args(["--listen", "127.0.0.1:0", "--no-pin"])
        .args(["--shards", &shards.to_string()])
        .args(["--database-url", &postgres.url()]);
    Server::start_command(command)
}

fn json(response: &BinaryResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|e| {
        panic!(
            "{} with a body that is not JSON ({e}): {:?}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )
    })
}

/// `POST /links` for `url` on a fresh connection: the new code.
fn create(server: &Server, url: &str) -> String {
    let body = serde_json::json!({ "url": url }).to_string();
    let response = server.fetch("POST", "/links", body.as_bytes());
    assert_eq!(
        response.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    let created = json(&response);
    let code = created["code"].as_str().expect("a code").to_owned();
    assert_eq!(created["url"], url);
    let short = created["short_url"].as_str().expect("a short_url");
    assert!(short.ends_with(&format!("/{code}")), "{short}");
    code
}

/// One keep-alive connection on each shard, by shard id.
fn connection_per_shard(server: &Server, shards: usize) -> Vec<BufReader<TcpStream>> {
    (0..shards)
        .map(|shard| {
            let (stream, _) = server
                .connect_to_shard(&shard.to_string())
                .unwrap_or_else(|| panic!("no connection landed on shard {shard}"));
            stream
        })
        .collect()
}

/// `method path` on a held connection.
fn on(stream: &mut BufReader<TcpStream>, method: &str, path: &str) -> Response {
    let bytes = if method == "GET" {
        request(method, path, &[])
    } else {
        request_with_body(method, path, &[], b"")
    };
    send(stream.get_mut(), &bytes);
    read_response(stream).unwrap_or_else(|| panic!("{method} {path}: connection closed"))
}

/// `GET /{code}` on every shard's connection answers `status` (and, for a
/// `301`, `location`).
fn every_shard_redirects(
    streams: &mut [BufReader<TcpStream>],
    code: &str,
    status: u16,
    location: Option<&str>,
) {
    for (shard, stream) in streams.iter_mut().enumerate() {
        let response = on(stream, "GET", &format!("/{code}"));
        assert_eq!(response.header("x-shard"), Some(shard.to_string().as_str()));
        assert_eq!(
            (response.status, response.header("location")),
            (status, location),
            "GET /{code} on shard {shard}: {}",
            response.body
        );
    }
}

/// The `hits` of `/links/{code}/stats` on a fresh connection.
fn hits(server: &Server, code: &str) -> u64 {
    let response = server.fetch("GET", &format!("/links/{code}/stats"), b"");
    assert_eq!(response.status, 200);
    let stats = json(&response);
    assert_eq!(stats["code"], code);
    stats["hits"].as_u64().expect("numeric hits")
}

/// Every route and every error of the API.
fn api(server: &Server) {
    let code = create(server, "https://example.com/a?b=c");
    let redirect = server.get(&format!("/{code}"));
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.header("location"),
        Some("https://example.com/a?b=c")
    );
    // Normalized on the way in: the Location is always a valid header.
    let unicode = create(server, "https://example.com/caf%C3%A9");
    assert_eq!(
        server.get(&format!("/{unicode}")).header("location"),
        Some("https://example.com/caf%C3%A9")
    );
    let body = serde_json::json!({"url": "http://b\u{fc}cher.example/\u{e9}"}).to_string();
    let created = json(&server.fetch("POST", "/links", body.as_bytes()));
    assert_eq!(created["url"], "http://xn--bcher-kva.example/%C3%A9");

    for (body, why) in [
        (r#"{"url": "ftp://example.com/"}"#, "scheme"),
        (r#"{"url": "/relative"}"#, "absolute"),
        (r#"{"url": "http://exa mple.com/"}"#, "absolute"),
        (r#"{"link": "http://example.com/"}"#, "JSON"),
        ("not json", "JSON"),
    ] {
        let response = server.fetch("POST", "/links", body.as_bytes());
        assert_eq!(response.status, 400, "{body}");
        let error = json(&response)["error"]
            .as_str()
            .expect("an error")
            .to_owned();
        assert!(error.contains(why), "{body}: {error}");
    }
    let long = format!(r#"{{"url": "http://example.com/{}"}}"#, "a".repeat(2100));
    assert_eq!(server.fetch("POST", "/links", long.as_bytes()).status, 400);
    let huge = format!(r#"{{"url": "http://example.com/{}"}}"#, "a".repeat(20_000));
    let response = server.fetch("POST", "/links", huge.as_bytes());
    assert_eq!(response.status, 413);
    assert!(json(&response)["error"].is_string());

    assert_eq!(server.get("/zzzzzzz").status, 404);
    for malformed in ["/abc", "/abcdefgh", "/abc-def", "/links/abc/stats"] {
        let response = server.fetch("GET", malformed, b"");
        assert_eq!(response.status, 400, "{malformed}");
        assert!(json(&response)["error"].is_string());
    }
    assert_eq!(server.fetch("POST", &format!("/{code}"), b"").status, 405);
    assert_eq!(server.fetch("GET", "/links", b"").status, 405);

    let moved = server.fetch(
        "PUT",
        &format!("/links/{code}"),
        br#"{"url": "https://example.org/"}"#,
    );
    assert_eq!(moved.status, 200);
    assert_eq!(json(&moved)["url"], "https://example.org/");
    assert_eq!(
        server.get(&format!("/{code}")).header("location"),
        Some("https://example.org/")
    );
    let missing = server.fetch(
        "PUT",
        "/links/zzzzzzz",
        br#"{"url": "https://example.org/"}"#,
    );
    assert_eq!(missing.status, 404);

    assert_eq!(server.fetch("GET", "/links/zzzzzzz/stats", b"").status, 404);
    wait_for("two hits counted", Duration::from_secs(5), || {
        hits(server, &code) == 2
    });

    assert_eq!(
        server
            .fetch("DELETE", &format!("/links/{code}"), b"")
            .status,
        204
    );
    assert_eq!(server.get(&format!("/{code}")).status, 404);
    assert_eq!(
        server
            .fetch("DELETE", &format!("/links/{code}"), b"")
            .status,
        404
    );
    assert_eq!(
        server
            .fetch("GET", &format!("/links/{code}/stats"), b"")
            .status,
        404
    );
}

#[test]
fn api_at_1_and_4_shards_and_no_stale_redirect_after_a_delete() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    for shards in [1, SHARDS] {
        api(&links(&postgres, shards));
    }

    let server = links(&postgres, SHARDS);
    // Created through whichever shards the connections land on.
    let mut creators = HashSet::new();
    let codes: Vec<String> = (0..24)
        .map(|i| {
            let body = serde_json::json!({ "url": format!("https://example.com/{i}") });
            let response = server.fetch("POST", "/links", body.to_string().as_bytes());
            assert_eq!(response.status, 201);
            creators.insert(response.header("x-shard").expect("x-shard").to_owned());
            json(&response)["code"].as_str().expect("a code").to_owned()
        })
        .collect();
    assert!(
        creators.len() > 1,
        "every create landed on shard {creators:?}"
    );

    // Every shard's cache holds every code ...
    let mut streams = connection_per_shard(&server, SHARDS);
    for (i, code) in codes.iter().enumerate() {
        let location = format!("https://example.com/{i}");
        every_shard_redirects(&mut streams, code, 301, Some(&location));
    }
    // ... and once a delete or update through any shard is acknowledged,
    // no shard answers from it.
    let mut deleters = HashSet::new();
    for (i, code) in codes.iter().enumerate() {
        if i % 4 == 0 {
            let path = format!("/links/{code}");
            let moved = server.fetch("PUT", &path, br#"{"url": "https://example.org/moved"}"#);
            assert_eq!(moved.status, 200);
            every_shard_redirects(&mut streams, code, 301, Some("https://example.org/moved"));
        }
        let deleted = server.fetch("DELETE", &format!("/links/{code}"), b"");
        assert_eq!(deleted.status, 204);
        deleters.insert(deleted.header("x-shard").expect("x-shard").to_owned());
        every_shard_redirects(&mut streams, code, 404, None);
    }
    assert!(
        deleters.len() > 1,
        "every delete landed on shard {deleters:?}"
    );

    // Redirects on every shard add up, flushed or not.
    let code = create(&server, "https://example.com/counted");
    for _ in 0..25 {
        every_shard_redirects(
            &mut streams,
            &code,
            301,
            Some("https://example.com/counted"),
        );
    }
    let expected = 25 * SHARDS as u64;
    wait_for("every shard's hits counted", Duration::from_secs(5), || {
        hits(&server, &code) == expected
    });
    // Written to the table within a flush or two, and still exact.
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..SHARDS {
        assert_eq!(hits(&server, &code), expected);
    }
    let output = server.output();
    assert!(!output.contains("panicked"), "{output}");

    // Redirects just before a SIGTERM are written by the last flush.
    every_shard_redirects(
        &mut streams,
        &code,
        301,
        Some("https://example.com/counted"),
    );
    let mut server = server;
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        server.output()
    );
    let server = links(&postgres, 1);
    assert_eq!(hits(&server, &code), expected + SHARDS as u64);
}

#[test]
fn a_stopped_database_gives_503_at_once_and_the_app_recovers() {
    let Some(mut postgres) = Postgres::start() else {
        return;
    };
    let server = links(&postgres, SHARDS);
    let cached = create(&server, "https://example.com/cached");
    let uncached = create(&server, "https://example.com/uncached");
    let mut streams = connection_per_shard(&server, SHARDS);
    every_shard_redirects(
        &mut streams,
        &cached,
        301,
        Some("https://example.com/cached"),
    );

    postgres.pause();
    let timed = |method: &str, path: &str, body: &[u8]| {
        let start = Instant::now();
        let response = server.fetch(method, path, body);
        let took = start.elapsed();
        assert!(took < FAIL_FAST, "{method} {path} took {took:?}");
        response
    };
    for _ in 0..SHARDS {
        for (method, path, body) in [
            (
                "POST",
                "/links".to_owned(),
                &br#"{"url": "https://example.com/new"}"#[..],
            ),
            ("GET", format!("/{uncached}"), b""),
            ("GET", format!("/links/{cached}/stats"), b""),
            ("DELETE", format!("/links/{uncached}"), b""),
        ] {
            let response = timed(method, &path, body);
            assert_eq!(response.status, 503, "{method} {path}");
            let error = json(&response)["error"]
                .as_str()
                .expect("an error")
                .to_owned();
            assert!(error.contains("database unavailable"), "{error}");
        }
    }
    // Cached codes still redirect, on every shard, and are counted.
    every_shard_redirects(
        &mut streams,
        &cached,
        301,
        Some("https://example.com/cached"),
    );

    postgres.resume();
    wait_for("a create to succeed again", Duration::from_secs(10), || {
        server
            .fetch("POST", "/links", br#"{"url": "https://example.com/back"}"#)
            .status
            == 201
    });
    let redirect = server.get(&format!("/{uncached}"));
    assert_eq!(redirect.status, 301);
    // One warm-up and one during the outage per shard: none lost while
    // the database was away.
    wait_for("the outage's hits counted", Duration::from_secs(5), || {
        hits(&server, &cached) == 2 * SHARDS as u64
    });
    assert_eq!(
        server
            .fetch("DELETE", &format!("/links/{uncached}"), b"")
            .status,
        204
    );
    let output = server.output();
    assert!(!output.contains("panicked"), "{output}");
}

#[test]
fn hits_and_caches_survive_a_rolling_reload() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let mut server = links(&postgres, SHARDS);
    let counted = create(&server, "https://example.com/counted");
    let other = create(&server, "https://example.com/other");
    let mut streams = connection_per_shard(&server, SHARDS);
    for _ in 0..3 {
        every_shard_redirects(
            &mut streams,
            &counted,
            301,
            Some("https://example.com/counted"),
        );
    }
    every_shard_redirects(&mut streams, &other, 301, Some("https://example.com/other"));
    drop(streams);

    // Every shard replaced: unflushed hits go to the successor or are
    // written by the predecessor at its end; none lost.
    server.signal(libc::SIGHUP);
    wait_for("the reload to finish", Duration::from_secs(20), || {
        server.output().contains("rolling reload done")
    });
    wait_for(
        "the hits from before the reload",
        Duration::from_secs(5),
        || hits(&server, &counted) == 3 * SHARDS as u64,
    );
    // The new incarnations cache and invalidate as the old ones did.
    let mut streams = connection_per_shard(&server, SHARDS);
    every_shard_redirects(&mut streams, &other, 301, Some("https://example.com/other"));
    assert_eq!(
        server
            .fetch("DELETE", &format!("/links/{other}"), b"")
            .status,
        204
    );
    every_shard_redirects(&mut streams, &other, 404, None);
    let output = server.output();
    assert!(!output.contains("panicked"), "{output}");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn an_unreachable_database_at_start_is_one_line_and_exit_1() {
    let port = forkless_tests::services::free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    for args in [
        vec!["--database-url".to_owned(), url.clone()],
        vec![format!("--database-url={url}")],
    ] {
        let output = Command::new(app_binary("links"))
            .args(["--listen", "127.0.0.1:0"])
            .args(&args)
            .env_remove("DATABASE_URL")
            .output()
            .expect("run links");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "links: cannot use the database at 127.0.0.1:{port}/postgres"
            )) && stderr.contains("Connection refused"),
            "{stderr}"
        );
    }
    let output = Command::new(app_binary("links"))
        .env_remove("DATABASE_URL")
        .output()
        .expect("run links");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--database-url"), "{stderr}");
}
