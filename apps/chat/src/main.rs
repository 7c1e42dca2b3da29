//! chat: WebSocket chat rooms whose clients may sit on any shard.
//!
//! Run with: `cargo run --release -p chat`, then open
//! <http://127.0.0.1:8080/> in two browser windows, or:
//!
//! ```sh
//! websocat 'ws://127.0.0.1:8080/ws/lobby?name=alice'          # join, type lines
//! curl --data-binary 'hello' http://127.0.0.1:8080/rooms/lobby  # 202 {"room":"lobby","seq":N}
//! ```
//!
//! `--shards N`, `--listen IP:PORT` and `--help` work as in every forkless binary.
//!
//! | request | answers |
//! |---|---|
//! | `GET /` | a page to try it in a browser |
//! | `GET /ws/{room}?name={name}` (WebSocket handshake) | `101`, then the room's frames; `426` without an upgrade |
//! | `POST /rooms/{room}?name={name}`, body = text | `202` with the message's `seq`; `413` over 16 KiB, `400` if not UTF-8 |
//!
//! Room and user names: 1 to 64 (names: 32) of `A-Z a-z 0-9 - _ .`, else
//! `400`. Every frame the server sends is a JSON text:
//! `{"kind":"welcome","room","name","shard"}` first, then
//! `{"kind":"message"|"join"|"leave","room","seq","from","text"}` in the
//! room's order, the same for every client. Clients send text frames; see
//! `session.rs` for what closes a connection (slow clients, binary frames,
//! oversize messages) and with which code. `hub.rs` says how the order is
//! kept across shards: an owner shard per room numbers its messages.

mod hub;
mod outbox;
mod room;
mod session;

use std::rc::Rc;

use forkless::http::upgrade;
use forkless::http::{HeaderMap, HeaderValue, Method, header, read_body};
use forkless::prelude::*;
use serde_json::json;

use hub::{Event, Hub, Post};
use room::RoomName;
use session::MAX_MESSAGE;

/// The page at `/`: a room field, a message box and the log, in one file.
const PAGE: &str = include_str!("page.html");

#[shard_main(listen = "127.0.0.1:8080")]
async fn main(shard: Shard) -> Result<(), forkless::Error> {
    let hub = Hub::start(&shard);
    let this = shard.clone();
    shard
        .serve(move |request| route(this.clone(), hub.clone(), request))
        .await
}

async fn route(shard: Shard, hub: Rc<Hub>, request: Request) -> Response {
    let path = request.uri().path();
    if path == "/" {
        return match *request.method() {
            Method::GET | Method::HEAD => page(),
            _ => method_not_allowed("GET, HEAD"),
        };
    }
    if let Some(room) = path.strip_prefix("/ws/") {
        let room = RoomName::parse(room);
        return websocket(shard, hub, request, room);
    }
    if let Some(room) = path.strip_prefix("/rooms/") {
        let room = RoomName::parse(room);
        return post_message(hub, request, room).await;
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn page() -> Response {
    let mut response = PAGE.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// `GET /ws/{room}`: checks the WebSocket handshake and answers `101`; the
/// session runs once the `101` is sent.
fn websocket(
    shard: Shard,
    hub: Rc<Hub>,
    mut request: Request,
    room: Result<RoomName, room::NameError>,
) -> Response {
    if request.method() != Method::GET {
        return method_not_allowed("GET");
    }
    let room = match room {
        Ok(room) => room,
        Err(error) => return bad_request(format!("room: {error}\n")),
    };
    let name = match query_name(&request) {
        Some(Ok(name)) => name,
        Some(Err(error)) => return bad_request(format!("name: {error}\n")),
        None => hub.guest_name(),
    };
    let accept = match handshake(request.headers()) {
        Ok(accept) => accept,
        Err(refusal) => return refusal.into_response(),
    };
    let session = move |io| session::run(shard, hub, room, name, io);
    if let Err(error) = upgrade::on(&mut request, session) {
        return bad_request(format!("{error}\n"));
    }
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// Checks an RFC 6455 opening handshake; the `Sec-WebSocket-Accept` value.
fn handshake(headers: &HeaderMap) -> Result<HeaderValue, Refusal> {
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(Refusal::NotWebSocket);
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Refusal::NoConnectionUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refusal::Version);
    }
    // The key is 16 random bytes in base64: 24 characters.
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|key| key.len() == 24)
        .ok_or(Refusal::Key)?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept).map_err(|_| Refusal::Key)
}

/// What is wrong with a WebSocket handshake.
#[derive(Debug)]
enum Refusal {
    NotWebSocket,
    NoConnectionUpgrade,
    Version,
    Key,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, text, header) = match self {
            Refusal::NotWebSocket => (
                StatusCode::UPGRADE_REQUIRED,
                "this endpoint speaks WebSocket only\n",
                Some((header::UPGRADE, "websocket")),
            ),
            Refusal::NoConnectionUpgrade => (
                StatusCode::BAD_REQUEST,
                "Connection: Upgrade is missing\n",
                None,
            ),
            Refusal::Version => (
                StatusCode::UPGRADE_REQUIRED,
                "only WebSocket version 13 is spoken here\n",
                Some((header::SEC_WEBSOCKET_VERSION, "13")),
            ),
            Refusal::Key => (
                StatusCode::BAD_REQUEST,
                "bad or missing Sec-WebSocket-Key\n",
                None,
            ),
        };
        let mut response = (status, text).into_response();
        if let Some((name, value)) = header {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// Whether a comma-separated header lists `token` (any case).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// `POST /rooms/{room}`: posts the body as a message; answers its `seq`.
async fn post_message(
    hub: Rc<Hub>,
    request: Request,
    room: Result<RoomName, room::NameError>,
) -> Response {
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let room = match room {
        Ok(room) => room,
        Err(error) => return bad_request(format!("room: {error}\n")),
    };
    let from = match query_name(&request) {
        Some(Ok(name)) => name,
        Some(Err(error)) => return bad_request(format!("name: {error}\n")),
        None => "http".to_owned(),
    };
    let body = match read_body(request, MAX_MESSAGE).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return bad_request("the message is not UTF-8\n".into());
    };
    let post = Post {
        room: room.clone(),
        event: Event::Message,
        from,
        text,
    };
    match hub.post_numbered(post).await {
        Ok(seq) => {
            let body = json!({ "room": room.as_str(), "seq": seq }).to_string() + "\n";
            let mut response = (StatusCode::ACCEPTED, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => {
            let message = format!("the room's shard {} is not running\n", error.0);
            (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
        }
    }
}

/// The `name` query parameter, checked; `None` when absent.
fn query_name(request: &Request) -> Option<Result<String, room::NameError>> {
    let query = request.uri().query()?;
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("name="))?;
    Some(room::user_name(value))
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        headers
    }

    #[test]
    fn the_rfc_6455_example_handshake_is_accepted() {
        let accept = handshake(&upgrade_headers()).expect("accepted");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn bad_handshakes_are_refused_with_a_reason() {
        let mut old = upgrade_headers();
        old.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        let response = handshake(&old).expect_err("refused").into_response();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_VERSION], "13");

        let mut keyless = upgrade_headers();
        keyless.remove(header::SEC_WEBSOCKET_KEY);
        let response = handshake(&keyless).expect_err("refused").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);

        let response = handshake(&HeaderMap::new())
            .expect_err("refused")
            .into_response();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    }
}
