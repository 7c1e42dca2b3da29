//! Turning what a handler returns into a response.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use super::Body;

/// Anything a handler may return.
///
/// Text becomes `200 OK` with `content-type: text/plain; charset=utf-8`;
/// a `(StatusCode, T)` pair sets the status; `Result<T, E>` answers with
/// whichever side it holds, so `?` works in handlers.
///
/// ```
/// use forkless::http::{IntoResponse, StatusCode};
///
/// let response = (StatusCode::NOT_FOUND, "no such key\n").into_response();
/// assert_eq!(response.status(), 404);
/// ```
pub trait IntoResponse {
    /// Builds the response.
    fn into_response(self) -> Response<Body>;
}

impl<B: Into<Body>> IntoResponse for Response<B> {
    fn into_response(self) -> Response<Body> {
        self.map(Into::into)
    }
}

impl IntoResponse for StatusCode {
    fn into_response(self) -> Response<Body> {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = self;
        response
    }
}

impl<T: IntoResponse> IntoResponse for (StatusCode, T) {
    fn into_response(self) -> Response<Body> {
        let mut response = self.1.into_response();
        *response.status_mut() = self.0;
        response
    }
}

impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response<Body> {
        match self {
            Ok(ok) => ok.into_response(),
            Err(err) => err.into_response(),
        }
    }
}

impl IntoResponse for Infallible {
    fn into_response(self) -> Response<Body> {
        match self {}
    }
}

fn text(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response<Body> {
        text(self.into())
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response<Body> {
        text(self.into())
    }
}

impl IntoResponse for Bytes {
    fn into_response(self) -> Response<Body> {
        Response::new(self.into())
    }
}

impl IntoResponse for Vec<u8> {
    fn into_response(self) -> Response<Body> {
        Response::new(self.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_answer_with_either_side() {
        let ok: Result<&'static str, StatusCode> = Ok("fine");
        assert_eq!(ok.into_response().status(), StatusCode::OK);
        let err: Result<&'static str, StatusCode> = Err(StatusCode::BAD_GATEWAY);
        assert_eq!(err.into_response().status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn text_gets_a_content_type() {
        let response = String::from("x").into_response();
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
