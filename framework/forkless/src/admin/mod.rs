//! The admin endpoint (`--admin IP:PORT`): health for orchestrators,
//! Prometheus metrics and the per-shard status table, on a port of its own.
//!
//! Routes (`GET`, or `HEAD`, except the two `POST`s; other methods `405`,
//! other paths `404`):
//!
//! - `/`: the live web dashboard (`dashboard.rs`, with `/dashboard.css` and
//!   `/dashboard.js`): per-shard charts, the lifecycle timeline, reload and
//!   upgrade buttons, drawn from `/status` once a second.
//! - `/livez`: `200 ok` while the process runs.
//! - `/readyz`: `200` while every shard listens and no shutdown has begun;
//!   `503` (with the reason) from the first moment of a shutdown
//!   (SIGTERM/SIGINT, [`Coordinator::shutdown`](crate::Coordinator::shutdown),
//!   a failing shard), before any shard is told to stop, and while any shard
//!   is starting, restarting or down.
//! - `/metrics`: Prometheus text for the whole process, every per-shard
//!   series labelled `shard` (`metrics.rs`).
//! - `/status`: the per-shard table as JSON (`status.rs`).
//! - `POST /reload`: starts a rolling reload, as SIGHUP does (`202`).
//! - `POST /upgrade`: starts a binary upgrade, as SIGUSR2 does (`202`).
//!   Both only start the work: the coordinator logs how it goes, and
//!   `/status` shows each shard's new incarnation. One the coordinator
//!   refuses (a reload or an upgrade is already running, the process is
//!   stopping, no binary to upgrade to) is answered `409` with the reason;
//!   `503` once the process is exiting. A `POST` a browser sends for a
//!   page of another site, or through a host name rather than the admin
//!   address (DNS rebinding), is refused `403` (`server::foreign`).
//!
//! **It never runs on a shard.** The admin endpoint must answer while every
//! shard is stuck or restarting, so it runs on threads of its own and reads
//! what it reports from memory the shards and the coordinator share:
//! each shard's counters (atomics written by that shard only) and the
//! coordinator's [`Board`] (lifecycle state, updated on every lifecycle
//! event). A scrape never waits for a shard, and a busy scrape never slows
//! one down.
//!
//! **Why blocking threads and not a glommio executor with hyper.** An
//! executor would take io_uring rings and locked memory from the budget
//! `preflight.rs` sizes for the shards (a tight `RLIMIT_MEMLOCK` would fail
//! it), and would depend on the very machinery whose failure it must report.
//! Admin traffic is a probe or a scrape every few seconds, so a tiny HTTP/1.1
//! responder on std threads (`server.rs`: one request per connection,
//! `Connection: close`, bounded head size, read and write timeouts, a
//! bounded number of connections) does the job with no new dependency.

mod dashboard;
mod metrics;
mod server;
mod status;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub(crate) use server::AdminServer;
use server::{Answer, Request};
use status::Rates;

use crate::Error;
use crate::coordinator::Asked;
use crate::coordinator::board::Board;

/// What an operator can start through the admin endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// A rolling reload (`POST /reload`).
    Reload,
    /// A binary upgrade (`POST /upgrade`).
    Upgrade,
}

/// Hands an [`Action`] to the coordinator and says what became of it.
pub(crate) type Actions = Box<dyn Fn(Action) -> Asked + Send + Sync>;

/// Prints `admin on http://IP:PORT` on stdout and serves the admin routes
/// from `board` on `listener` until the returned server is dropped.
pub(crate) fn start(
    listener: TcpListener,
    board: Arc<Board>,
    actions: Actions,
) -> Result<AdminServer, Error> {
    let rates = Rates::new(Instant::now());
    let server = AdminServer::start(listener, move |request| {
        route(request, &board, &rates, &actions)
    })
    .map_err(|e| Error::io("cannot start the admin endpoint's thread", e))?;
    announce(server.addr());
    Ok(server)
}

fn announce(addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    crate::log::announce(&mut out, "admin on", &format!("http://{addr}"));
    let _ = out.flush();
    tracing::info!(%addr, "admin endpoint listening");
}

/// Answers one admin request.
fn route(request: &Request, board: &Board, rates: &Rates, actions: &Actions) -> Answer {
    let action = match request.path.as_str() {
        "/reload" => Some(Action::Reload),
        "/upgrade" => Some(Action::Upgrade),
        _ => None,
    };
    if let Some(action) = action {
        return start_action(request, action, actions);
    }
    let page = dashboard::file(&request.path);
    let known = ["/livez", "/readyz", "/metrics", "/status"];
    if page.is_none() && !known.contains(&request.path.as_str()) {
        return Answer::text(
            404,
            "not found: try / (the dashboard), /livez, /readyz, /metrics, /status, \
             POST /reload or POST /upgrade\n",
        );
    }
    if request.method != "GET" && request.method != "HEAD" {
        let mut answer = Answer::text(405, "method not allowed: use GET\n");
        answer.headers.push(("allow", "GET, HEAD"));
        return answer;
    }
    if let Some(page) = page {
        return page;
    }
    match request.path.as_str() {
        "/livez" => Answer::text(200, "ok\n"),
        "/readyz" => match board.not_ready_because() {
            None => Answer::text(200, "ready\n"),
            Some(why) => Answer::text(503, format!("not ready: {why}\n")),
        },
        "/metrics" => Answer {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            body: metrics::render(&board.view()).into_bytes(),
            headers: Vec::new(),
        },
        _ => {
            let document = status::render(&board.view(), rates, Instant::now(), SystemTime::now());
            let mut body = serde_json::to_vec_pretty(&document).unwrap_or_default();
            body.push(b'\n');
            Answer {
                status: 200,
                content_type: "application/json",
                body,
                headers: Vec::new(),
            }
        }
    }
}

fn start_action(request: &Request, action: Action, actions: &Actions) -> Answer {
    if request.method != "POST" {
        let mut answer = Answer::text(405, "method not allowed: use POST\n");
        answer.headers.push(("allow", "POST"));
        return answer;
    }
    let what = match action {
        Action::Reload => "rolling reload",
        Action::Upgrade => "binary upgrade",
    };
    if request.foreign {
        // A page of another site (or a rebound name) in an operator's
        // browser must not restart the service: `server::foreign`.
        return Answer::text(
            403,
            format!(
                "{what} refused: asked from another site's page or through a host name; \
                 POST from curl or the dashboard at the admin address\n"
            ),
        );
    }
    match actions(action) {
        Asked::Started => Answer::text(
            202,
            format!("{what} started; the log and /status show how it goes\n"),
        ),
        Asked::Unanswered => Answer::text(
            202,
            format!("{what} requested; the log and /status show whether it starts\n"),
        ),
        Asked::Refused(why) => Answer::text(409, format!("{what} not started: {why}\n")),
        Asked::Gone => Answer::text(503, "the process is exiting\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShardId;
    use crate::bus::mesh::Registry;
    use crate::coordinator::LifecycleKind;

    fn ask(method: &str, path: &str, board: &Board, actions: &Actions) -> Answer {
        let request = Request {
            method: method.into(),
            path: path.into(),
            foreign: false,
        };
        route(&request, board, &Rates::new(Instant::now()), actions)
    }

    fn get(path: &str, board: &Board) -> Answer {
        ask(
            "GET",
            path,
            board,
            &(Box::new(|_| Asked::Started) as Actions),
        )
    }

    #[test]
    fn another_sites_page_cannot_reload_or_upgrade() {
        let board = Board::new(Arc::new(Registry::new(1, 4)), vec![None]);
        let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = asked.clone();
        let actions: Actions = Box::new(move |_| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Asked::Started
        });
        for path in ["/reload", "/upgrade"] {
            let request = Request {
                method: "POST".into(),
                path: path.into(),
                foreign: true,
            };
            let answer = route(&request, &board, &Rates::new(Instant::now()), &actions);
            assert_eq!(answer.status, 403, "{path}");
        }
        assert!(
            !asked.load(std::sync::atomic::Ordering::SeqCst),
            "nothing started"
        );
    }

    #[test]
    fn reload_and_upgrade_are_posts_handed_to_the_coordinator() {
        let board = Board::new(Arc::new(Registry::new(1, 4)), vec![None]);
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let actions: Actions = Box::new(move |action| {
            let sent = tx.lock().map(|tx| tx.send(action).is_ok());
            if sent.unwrap_or(false) {
                Asked::Started
            } else {
                Asked::Gone
            }
        });
        assert_eq!(ask("POST", "/reload", &board, &actions).status, 202);
        assert_eq!(ask("POST", "/upgrade", &board, &actions).status, 202);
        let refused = ask("GET", "/reload", &board, &actions);
        assert_eq!(refused.status, 405);
        assert_eq!(refused.headers, [("allow", "POST")]);
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            [Action::Reload, Action::Upgrade]
        );
        let gone: Actions = Box::new(|_| Asked::Gone);
        assert_eq!(ask("POST", "/reload", &board, &gone).status, 503);
        let busy: Actions = Box::new(|_| Asked::Refused("a rolling reload is in progress"));
        let refused = ask("POST", "/upgrade", &board, &busy);
        assert_eq!(refused.status, 409);
        assert_eq!(
            refused.body,
            b"binary upgrade not started: a rolling reload is in progress\n"
        );
    }

    #[test]
    fn routes_answer_with_the_right_status() {
        let board = Board::new(Arc::new(Registry::new(1, 4)), vec![None]);
        assert_eq!(get("/livez", &board).status, 200);
        let not_ready = get("/readyz", &board);
        assert_eq!(not_ready.status, 503);
        assert_eq!(not_ready.body, b"not ready: shard 0 is down\n");
        board.record(ShardId::new(0), 1, &LifecycleKind::Fork);
        board.record(ShardId::new(0), 1, &LifecycleKind::Listening);
        assert_eq!(get("/readyz", &board).status, 200);
        let metrics = get("/metrics", &board);
        assert_eq!(metrics.status, 200);
        assert!(metrics.content_type.contains("version=0.0.4"));
        let status = get("/status", &board);
        let json: serde_json::Value = serde_json::from_slice(&status.body).expect("json");
        assert_eq!(json["shards"], 1);
        assert_eq!(get("/nope", &board).status, 404);
        let page = get("/", &board);
        assert_eq!(page.status, 200);
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        let started: Actions = Box::new(|_| Asked::Started);
        assert_eq!(ask("POST", "/", &board, &started).status, 405);
        let post = Request {
            method: "POST".into(),
            path: "/readyz".into(),
            foreign: false,
        };
        let refused = route(
            &post,
            &board,
            &Rates::new(Instant::now()),
            &(Box::new(|_| Asked::Started) as Actions),
        );
        assert_eq!(refused.status, 405);
        assert_eq!(refused.headers, [("allow", "GET, HEAD")]);
        board.begin_stop();
        assert_eq!(get("/readyz", &board).body, b"not ready: shutting down\n");
    }
}
