//! hyper's own upgrades (`hyper::upgrade::on`) for tower services, such as
//! axum's `WebSocketUpgrade` (cargo feature `tokio`).
//!
//! axum takes hyper's `OnUpgrade` from the request, answers `101`, and in a
//! task on `tokio::spawn` awaits a `hyper::upgrade::Upgraded`: a `Send`
//! stream that task reads and writes from a tokio thread. forkless's
//! connections cannot give one (their socket belongs to the shard; see
//! `upgrade.rs`), so for a request that asks for an upgrade the tower
//! adapter bridges:
//!
//! 1. An in-memory pipe (`tokio::io::duplex`) and, on the shard, a second
//!    hyper connection served over one end `with_upgrades`. A minimal
//!    upgrade request head written into the other end makes that connection
//!    hand its service a real `OnUpgrade`, which goes into the client's
//!    request before the tower service sees it.
//! 2. The tower service answers as it would under hyper; its answer decides
//!    the inner connection's: `101` if the service switched protocols, `400`
//!    (and the bridge is gone) otherwise.
//! 3. On `101`, forkless's own upgrade path takes the client's socket after
//!    the response is sent (`upgrade::on`) and a task on the shard copies
//!    bytes both ways between it and the pipe, whose other end is now the
//!    service's `Upgraded`. When either side closes, the other is shut.
//!
//! Cost: only requests with an `Upgrade` header take this path; an upgraded
//! connection pays one in-memory copy each way.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{Either, select};
use futures::io::{AsyncReadExt as _, AsyncWriteExt as _};
use http_body_util::Empty;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

use super::upgrade::{self, Upgraded};
use super::{Request, Response};

/// The pipe's buffer each way.
const PIPE: usize = 64 * 1024;

/// What the inner connection reads: the smallest request hyper upgrades.
const HEAD: &[u8] =
    b"GET / HTTP/1.1\r\nhost: forkless\r\nconnection: upgrade\r\nupgrade: forkless-bridge\r\n\r\n";

/// The longest inner `101` head the bridge skips before copying.
const MAX_HEAD: usize = 8 * 1024;

/// Whether `request` asks for an upgrade hyper would grant.
pub(crate) fn asks(request: &Request) -> bool {
    request.extensions().get::<OnUpgrade>().is_some()
}

/// Answers `request` with `answer` (the tower service's call), its
/// `OnUpgrade` replaced by one that works off the shard; see the module
/// docs.
pub(crate) async fn serve<F, Fut>(mut request: Request, answer: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let (mut ours, theirs) = tokio::io::duplex(PIPE);
    let (offer, offered) = oneshot::channel::<OnUpgrade>();
    let (decide, decision) = oneshot::channel::<bool>();
    let offer = Cell::new(Some(offer));
    let decision = Cell::new(Some(decision));
    let inner = hyper::service::service_fn(move |mut inner: hyper::Request<_>| {
        let on_upgrade = inner.extensions_mut().remove::<OnUpgrade>();
        let (offer, decision) = (offer.take(), decision.take());
        async move {
            let switched = match (on_upgrade, offer, decision) {
                (Some(on_upgrade), Some(offer), Some(decision)) => {
                    offer.send(on_upgrade).is_ok() && decision.await == Ok(true)
                }
                _ => false,
            };
            Ok::<_, Infallible>(inner_answer(switched))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(theirs), inner)
        .with_upgrades();
    crate::shard::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upgrade bridge ended");
        }
    })
    .detach();
    let on_upgrade = match ours.write_all(HEAD).await {
        Ok(()) => offered.await.ok(),
        Err(_) => None,
    };
    let Some(on_upgrade) = on_upgrade else {
        tracing::error!("the upgrade bridge did not start; answering without it");
        return answer(request).await;
    };
    if let Err(error) = upgrade::on(&mut request, move |client| pump(client, ours)) {
        tracing::debug!(%error, "no upgrade bridge");
        return answer(request).await;
    }
    request.extensions_mut().insert(on_upgrade);
    let response = answer(request).await;
    let _ = decide.send(response.status() == http::StatusCode::SWITCHING_PROTOCOLS);
    response
}

/// The inner connection's answer: `101` when the service switched.
fn inner_answer(switched: bool) -> hyper::Response<Empty<Bytes>> {
    let mut response = hyper::Response::new(Empty::new());
    if switched {
        *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        headers.insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static("forkless-bridge"),
        );
    } else {
        *response.status_mut() = http::StatusCode::BAD_REQUEST;
    }
    response
}

/// Copies between the client's socket and the pipe until either closes,
/// after skipping the inner connection's own `101` head.
async fn pump(client: Upgraded, mut ours: DuplexStream) {
    let mut head = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    let body = loop {
        match ours.read(&mut head[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        if let Some(end) = head[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if filled == head.len() {
            tracing::error!("upgrade bridge: the inner head is too long; closed");
            return;
        }
    };
    let early = head[body..filled].to_vec();
    let (mut client_read, mut client_write) = client.split();
    let (mut our_read, mut our_write) = tokio::io::split(ours);
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = client_read.read(&mut buf).await {
            if n == 0 || our_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        // The service reads the end of the stream.
        let _ = our_write.shutdown().await;
    };
    let down = async {
        if !early.is_empty() && client_write.write_all(&early).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = our_read.read(&mut buf).await {
            if n == 0 || client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.close().await;
    };
    // Once the service is done, so is the client's connection; once the
    // client is done, the service still gets to finish writing.
    if let Either::Left(((), down)) = select(pin!(up), pin!(down)).await {
        down.await;
    }
}
