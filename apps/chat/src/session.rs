//! One WebSocket client: the task that runs on its upgraded connection.
//!
//! The client joins its room on this shard, gets a `welcome` frame, and
//! then every message of the room in order; each text frame it sends is
//! posted to the room. The session ends, with a close frame saying why, when:
//!
//! | why | close code |
//! |---|---|
//! | the client closed | (its own code, echoed) |
//! | it fell [`CAPACITY`] messages behind, or owes more than [`MAX_WRITE_BUFFER`] bytes of pongs | `1008` policy violation ("too slow") |
//! | it sent a binary frame | `1003` unsupported data |
//! | it sent a message over [`MAX_MESSAGE`] bytes | `1009` message too big |
//! | it sent text that is not UTF-8 | `1007` invalid payload |
//! | it broke the protocol (e.g. unmasked frames) | `1002` protocol error |
//! | the server shuts down | `1001` going away |
//!
//! Then it leaves the room (the others see a `leave`).
//!
//! Memory per client is bounded whatever it sends: its outbox ([`CAPACITY`]
//! frames of at most [`MAX_MESSAGE`] bytes, shared with the room, so
//! usually much less), tungstenite's write buffer ([`MAX_WRITE_BUFFER`],
//! 49 KiB), its read buffer (one frame of at most [`MAX_MESSAGE`]) and the
//! kernel's send buffer (128 KiB).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use forkless::Shard;
use forkless::http::upgrade::Upgraded;
use futures::future::select_all;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use socket2::SockRef;
use tungstenite::Message;
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use crate::hub::{Event, Hub, Post};
use crate::outbox::{CAPACITY, Outbox};
use crate::room::RoomName;

/// The largest message a client may send, in bytes.
pub(crate) const MAX_MESSAGE: usize = 16 * 1024;

/// The kernel's send buffer per client (Linux doubles it). Fixed, so that
/// the kernel cannot soak up megabytes for a client that does not read
/// (autotuning grows it to `tcp_wmem`'s maximum, 4 MiB by default): what a
/// slow client is behind stays in its outbox, where it is counted.
const SEND_BUFFER: usize = 64 * 1024;

/// What tungstenite gathers before it writes to the socket.
const WRITE_BUFFER: usize = 32 * 1024;

/// The most tungstenite may hold for a client that does not take what it
/// is sent (tungstenite's own default has no bound: a client that sends
/// pings and never reads the pongs would grow it forever). One whole
/// largest message fits beside the write buffer; past it the client is
/// dropped as too slow.
const MAX_WRITE_BUFFER: usize = WRITE_BUFFER + MAX_MESSAGE + 1024;

/// Longest the server waits to send its close frame, and then for the
/// client's answer.
const CLOSE_TIME: Duration = Duration::from_secs(2);

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The client closed, or the connection broke: nothing more to say.
    Gone,
    TooSlow,
    Binary,
    TooBig,
    NotUtf8,
    Protocol,
    Shutdown,
}

impl End {
    fn close_frame(&self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            End::Gone => return None,
            End::TooSlow => (
                CloseCode::Policy,
                format!("too slow: more than {CAPACITY} messages behind"),
            ),
            End::Binary => (
                CloseCode::Unsupported,
                "binary frames are not supported".into(),
            ),
            End::TooBig => (CloseCode::Size, format!("message over {MAX_MESSAGE} bytes")),
            End::NotUtf8 => (CloseCode::Invalid, "text is not UTF-8".into()),
            End::Protocol => (CloseCode::Protocol, "WebSocket protocol error".into()),
            End::Shutdown => (CloseCode::Away, "server shutting down".into()),
        };
        Some(CloseFrame {
            code,
            reason: reason.into(),
        })
    }
}

type Sender = WebSocketSender<Upgraded>;
type Receiver = WebSocketReceiver<Upgraded>;

/// Runs one client of `room` called `name`; see the module docs.
pub(crate) async fn run(shard: Shard, hub: Rc<Hub>, room: RoomName, name: String, io: Upgraded) {
    if let Err(error) = SockRef::from(&io).set_send_buffer_size(SEND_BUFFER) {
        tracing::debug!(%error, "cannot bound the send buffer");
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (mut sender, mut receiver) = ws.split();
    let welcome = json!({
        "kind": "welcome",
        "room": room.as_str(),
        "name": name,
        "shard": hub.shard().get(),
    })
    .to_string();
    let (id, outbox) = hub.join(&room, welcome.into());
    tracing::debug!(%room, %name, "client joined");
    let _ = hub.post(event(&room, Event::Join, &name, "")).await;

    let end = {
        let sessions: Vec<Pin<Box<dyn Future<Output = End> + '_>>> = vec![
            Box::pin(read(&mut receiver, &hub, &room, &name)),
            Box::pin(write(&mut sender, &outbox)),
            Box::pin(async {
                outbox.overflowed().await;
                End::TooSlow
            }),
            Box::pin(async {
                shard.stopping().await;
                End::Shutdown
            }),
        ];
        select_all(sessions).await.0
    };
    hub.leave(&room, id);
    tracing::debug!(%room, %name, ?end, "client left");
    if let Some(frame) = end.close_frame() {
        let closing = async {
            if sender.close(Some(frame)).await.is_ok() {
                // Wait for the client's close frame, then the end.
                while receiver.next().await.is_some_and(|item| item.is_ok()) {}
            }
        };
        let _ = forkless::time::timeout(CLOSE_TIME, closing).await;
    }
    if !matches!(end, End::Shutdown) {
        let _ = hub.post(event(&room, Event::Leave, &name, "")).await;
    }
}

fn event(room: &RoomName, event: Event, name: &str, text: &str) -> Post {
    Post {
        room: room.clone(),
        event,
        from: name.to_owned(),
        text: text.to_owned(),
    }
}

/// Posts the client's text frames until it closes or breaks a rule.
async fn read(receiver: &mut Receiver, hub: &Hub, room: &RoomName, name: &str) -> End {
    while let Some(item) = receiver.next().await {
        match item {
            Ok(Message::Text(text)) => {
                if let Err(error) = hub.post(event(room, Event::Message, name, &text)).await {
                    tracing::warn!(owner = %error.0, "room owner not running; message dropped");
                }
            }
            Ok(Message::Binary(_)) => return End::Binary,
            // Pings are answered, and a close is echoed, by tungstenite.
            Ok(_) => {}
            // Pongs it is owed pile up because it does not read.
            Err(tungstenite::Error::WriteBufferFull(_)) => return End::TooSlow,
            Err(tungstenite::Error::Capacity(_)) => return End::TooBig,
            Err(tungstenite::Error::Utf8(_)) => return End::NotUtf8,
            Err(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                return End::Gone;
            }
            Err(tungstenite::Error::Protocol(_)) => return End::Protocol,
            Err(_) => return End::Gone,
        }
    }
    End::Gone
}

/// Sends the client its queued frames, as fast as it takes them.
async fn write(sender: &mut Sender, outbox: &Outbox) -> End {
    while let Some(frames) = outbox.next_batch().await {
        for frame in frames {
            if sender.feed(Message::Text(frame)).await.is_err() {
                return End::Gone;
            }
        }
        if sender.flush().await.is_err() {
            return End::Gone;
        }
    }
    End::TooSlow
}
