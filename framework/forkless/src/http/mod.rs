//! HTTP on every shard: hyper 1.x over glommio.
//!
//! Each shard accepts on its own listeners and serves each connection in its
//! own task with hyper's HTTP/1.1 server: keep-alive, pipelined requests
//! answered in order and flushed together, a header read timeout. Every
//! request runs under `catch_unwind`: a panicking handler answers that one
//! request with `500` and closes that connection; the shard and all its other
//! connections keep serving. Every response carries `x-shard`.

mod body;
mod handler;
mod io;
mod response;
mod server;
pub(crate) mod timer;

pub use body::{Body, BoxError};
pub use handler::Handler;
pub use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
pub use hyper::body::Incoming;
pub use response::IntoResponse;
pub(crate) use server::serve;

/// A request as a handler receives it; the body streams in.
pub type Request = http::Request<Incoming>;

/// A response as a handler builds it.
pub type Response = http::Response<Body>;
