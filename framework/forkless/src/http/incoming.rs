//! The body of a request as a handler receives it.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// A request's body, streaming in: empty, or hyper's body of the request.
///
/// A request the fast path answered (`fast.rs`: a `GET` or `HEAD` without a
/// body) carries an empty one; every other request carries hyper's. Read it
/// whole with [`read_body`](super::read_body), or frame by frame as any
/// [`http_body::Body`].
///
/// ```
/// use forkless::http::Incoming;
///
/// fn assert_body<B: http_body::Body<Data = bytes::Bytes> + Send + 'static>() {}
/// assert_body::<Incoming>();
/// ```
pub struct Incoming {
    kind: Kind,
}

enum Kind {
    Empty,
    Hyper(hyper::body::Incoming),
}

impl Incoming {
    /// A body with no bytes.
    pub(crate) const fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    /// hyper's body of a request.
    pub(crate) fn hyper(body: hyper::body::Incoming) -> Self {
        Self {
            kind: Kind::Hyper(body),
        }
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Empty => f.write_str("Incoming(empty)"),
            Kind::Hyper(body) => body.fmt(f),
        }
    }
}

impl http_body::Body for Incoming {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Hyper(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Hyper(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn an_empty_body_ends_at_once() {
        let body = Incoming::empty();
        assert!(http_body::Body::is_end_stream(&body));
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(0));
        let collected = futures::executor::block_on(body.collect()).map(|c| c.to_bytes());
        assert_eq!(collected.ok().as_deref(), Some(&b""[..]));
    }
}
