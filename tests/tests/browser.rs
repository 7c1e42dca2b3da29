//! The chat page in a real browser: headless Chromium, driven through
//! chromedriver's WebDriver HTTP API (JSON over HTTP, spoken here with std
//! sockets). Two windows join one room; a message typed in one shows up in
//! the other.
//!
//! Skips (and says so) when `chromium` or `chromedriver` is missing, except
//! under CI (`CI` set), where `.ci/run` installs them and their absence fails.

use forkless_tests::browser::{Driver, Session, browser};
use forkless_tests::{Server, app_binary};

/// Opens the chat page in the current window and joins `room` as `name`.
fn join(session: &Session<'_>, server: &Server, room: &str, name: &str) -> String {
    session.open(&format!("http://{}/", server.addr));
    session.type_into("#room", room);
    session.type_into("#name", name);
    session.click("#connect");
    session.wait_for_text("#status", &format!("in room {room} as {name}"))
}

#[test]
fn two_browser_windows_chat_through_the_page() {
    let Some((chromium, chromedriver)) = browser("two_browser_windows_chat_through_the_page")
    else {
        return;
    };
    let server = Server::start(&app_binary("chat"), &["--shards", "2", "--no-pin"]);
    let driver = Driver::start(&chromedriver);
    let session = Session::new(&driver, &chromium);

    let alice = session.current_window();
    let status = join(&session, &server, "browser", "alice");
    assert!(status.contains("(shard "), "{status}");
    let bob = session.new_window();
    session.switch_to(&bob);
    join(&session, &server, "browser", "bob");
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
