//! HTTP on every shard: hyper 1.x over glommio.
//!
//! Each shard accepts on its own listeners and serves each connection in its
//! own task: keep-alive, pipelined requests answered in order and flushed
//! together. Plain `GET` and `HEAD` requests without a body are parsed and
//! answered by a fast path of forkless's own, written byte for byte as hyper
//! writes them (`fast.rs`); the first request of any other kind hands the
//! connection to hyper's HTTP/1.1 server for the rest of its life. Every request runs under
//! `catch_unwind`: a panicking handler answers that one request with `500`
//! and closes that connection; the shard and all its other connections keep
//! serving. Every response carries `x-shard`.
//!
//! HTTP/2 is served too, by hyper's HTTP/2 server on the shard's own
//! executor: chosen by ALPN `h2` over TLS, or on a plaintext listener by the
//! client preface (h2c with prior knowledge), with limits on streams,
//! headers, windows and resets (rapid reset), `GOAWAY` on shutdown and
//! reload, and a handler panic costing one stream (docs/http2.md).
//!
//! Bad clients meet limits, each with a flag and a [`Config`](crate::Config)
//! method (see `limits.rs` for when each applies): request heads are checked
//! for ambiguous framing before hyper sees them (`400` and close, as nginx
//! and Envoy do), are bounded in size (`431`) and time (`408`); idle
//! keep-alive connections, stalled or trickling bodies and clients that stop
//! reading are cut off; each shard holds at most so many connections (`503`
//! beyond). [`read_body`] reads a whole body within a size limit (`413`).
//!
//! Two ways to answer requests, served by the same connection machinery
//! (limits, `x-shard`, counters, panic isolation, graceful shutdown):
//!
//! - a [`Handler`], with [`Shard::serve`](crate::Shard::serve): an async
//!   function of a [`Request`]; it may be `!Send` and hold shard-local state
//!   (`Rc`, `RefCell`) with no locks;
//! - any tower `Service`, with [`Shard::serve_tower`](crate::Shard::serve_tower):
//!   an unmodified axum `Router` with its layers. Each request carries a
//!   [`ShardContext`] (the shard's id and a `Send` handle on its bus); the
//!   forkless cargo feature `axum` makes it, and [`ShardId`](crate::ShardId),
//!   axum extractors, and brings tokio's timer to the shards (one helper
//!   thread) for middleware such as tower-http's `TimeoutLayer`;
//!   [`TimeoutLayer`] and [`crate::time`] do the same on the shard's clock.
//!
//! ```no_run
//! use axum::Router;
//! use axum::routing::get;
//! use forkless::prelude::*;
//!
//! #[shard_main(listen = "127.0.0.1:3000")]
//! async fn main(shard: Shard) -> Result<(), forkless::Error> {
//!     let app = Router::new().route(
//!         "/",
//!         get(|axum::Extension(ctx): axum::Extension<forkless::http::ShardContext>| async move {
//!             format!("hello from shard {}\n", ctx.id())
//!         }),
//!     );
//!     shard.serve_tower(app).await
//! }
//! ```
//!
//! [`upgrade`] hands a connection switched by `101 Switching Protocols`
//! (a WebSocket) to a task of the handler's, on the same shard.

mod accept;
mod access;
mod admission;
mod body;
mod body_read;
mod connection;
pub(crate) mod context;
mod drain;
mod fast;
mod fast_parse;
mod flush;
mod framing;
mod handler;
mod http2;
#[cfg(feature = "tokio")]
mod hyper_upgrade;
mod incoming;
mod io;
pub(crate) mod limits;
mod recv;
mod requests;
mod response;
mod send;
mod server;
mod service;
mod socket;
mod timeout;
mod tls;
pub(crate) mod tower;
mod transport;
pub mod upgrade;

pub use body::{Body, BoxError};
pub use body_read::{BodyError, MalformedBody, read_body, read_body_default};
pub use context::ShardContext;
pub use handler::Handler;
pub use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
pub use incoming::Incoming;
pub use response::IntoResponse;
pub(crate) use server::serve;
pub use timeout::{Timeout, TimeoutFuture, TimeoutLayer};
pub use tower::RequestBody;

/// A request as a handler receives it; the body ([`Incoming`]) streams in.
pub type Request = http::Request<Incoming>;

/// A response as a handler builds it.
pub type Response = http::Response<Body>;
