//! The web dashboard on the admin port (`GET /` on `--admin`): a plain HTTP
//! check of what it serves (types, no-store, a strict Content-Security-Policy,
//! nothing fetched from outside), and the page in headless Chromium at 2
//! and 4 shards: one row per shard, requests/s that move under load, a
//! reload button that reloads, and a page that says when the process is gone.
//!
//! Set `DASHBOARD_SCREENSHOT=docs/dashboard.png` to have the browser test
//! write a screenshot of the 4-shard page under load there (it then runs
//! about 30 s longer to fill the charts).

use std::net::SocketAddr;
use std::time::Duration;

use forkless_tests::browser::{Driver, Session, browser};
use forkless_tests::load::Load;
use forkless_tests::{Server, app_binary, get_at, wait_for};
use serde_json::Value;

fn hello(shards: usize) -> Server {
    let shards = shards.to_string();
    Server::start(
        &app_binary("hello"),
        &["--shards", &shards, "--no-pin", "--admin", "127.0.0.1:0"],
    )
}

fn status(admin: SocketAddr) -> Value {
    let answer = get_at(admin, "/status");
    assert_eq!(answer.status, 200, "{answer:?}");
    serde_json::from_str(&answer.body).expect("/status is JSON")
}

#[test]
fn the_page_and_its_files_are_served_with_a_strict_policy_and_nothing_external() {
    let server = hello(2);
    let admin = server.admin_addr();
    let page = get_at(admin, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let policy = page.header("content-security-policy").expect("a policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert!(page.body.contains("<table id=\"shards\""), "{}", page.body);

    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let answer = get_at(admin, path);
        assert_eq!(answer.status, 200, "{path}");
        let content_type = answer.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        for scheme in ["http://", "https://", "//cdn", "ws://", "wss://"] {
            assert!(!answer.body.contains(scheme), "{path} names {scheme}");
        }
    }
    // Every src= and href= of the page is a path of this origin.
    for attribute in ["src=\"", "href=\""] {
        for (at, _) in page.body.match_indices(attribute) {
            let value = &page.body[at + attribute.len()..];
            assert!(value.starts_with('/'), "{attribute}{value:.40}");
        }
    }
}

#[test]
fn the_dashboard_in_chromium_follows_load_and_reloads_at_2_and_4_shards() {
    let test = "the_dashboard_in_chromium_follows_load_and_reloads_at_2_and_4_shards";
    let Some((chromium, chromedriver)) = browser(test) else {
        return;
    };
    let driver = Driver::start(&chromedriver);
    let session = Session::new(&driver, &chromium);
    session.resize(1280, 860);
    for shards in [2, 4] {
        let server = hello(shards);
        let admin = server.admin_addr();
        session.open(&format!("http://{admin}/"));
        session.wait_for_text("#link", "live");
        wait_for("one row per shard", Duration::from_secs(10), || {
            session.count("#shards tbody tr.shard") == shards
        });
        session.wait_for_text(&format!("#shard-{} .state", shards - 1), "listening");

        let load = Load::start(server.addr, "/", shards, shards);
        let moving = |shard: usize| {
            let css = format!("#shard-{shard} .m-requests_per_second .value");
            let text = session.text_of(&css);
            text.trim_end_matches("/s").parse::<f64>().unwrap_or(0.0) > 0.0
        };
        wait_for(
            "requests/s above 0 on every row",
            Duration::from_secs(20),
            || (0..shards).all(moving),
        );
        let p99 = session.text_of("#shard-0 .m-p99_ms .value");
        assert!(p99.ends_with(" ms"), "p99 shows a figure: {p99:?}");

        session.click("#reload");
        session.accept_dialog();
        session.wait_for_text("#answer", "POST /reload: 202");
        wait_for("every shard reloaded", Duration::from_secs(30), || {
            status(admin)["reloads"].as_u64() == Some(shards as u64)
        });
        session.wait_for_text("#events", "rolling reload started");

        if shards == 4
            && let Some(path) = std::env::var_os("DASHBOARD_SCREENSHOT")
        {
            std::thread::sleep(Duration::from_secs(30));
            std::fs::write(&path, session.screenshot()).expect("write the screenshot");
        }
        let tally = load.finish();
        assert!(tally.ok > 0, "the load got answers");

        // The process gone: the page says so instead of showing it live.
        drop(server);
        session.wait_for_text("#link", "process gone");
    }
}
