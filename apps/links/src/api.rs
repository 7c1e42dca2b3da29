//! The HTTP API: routing, the handlers, and JSON answers (errors too).

use std::rc::Rc;

use forkless::bus::Bus;
use forkless::http::{HeaderValue, Method, header, read_body};
use forkless::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::code;
use crate::db::{self, DbError, Pool};
use crate::hits;
use crate::invalidate::{self, Invalidate, Unconfirmed};
use crate::state;

/// The largest request body (`{"url": ...}` with the longest URL fits).
pub(crate) const MAX_BODY: usize = 8 * 1024;

/// How many fresh codes a create tries before it gives up (each collides
/// with odds of links / 62^7).
const CODE_ATTEMPTS: usize = 5;

/// What every handler of one shard shares.
pub(crate) struct App {
    pub(crate) shard: Shard,
    pub(crate) pool: Pool,
    pub(crate) bus: Bus<Invalidate, ()>,
    /// `LINKS_BASE_URL`: what `short_url` starts with; otherwise
    /// `http://` and the request's `Host`.
    pub(crate) base_url: Option<String>,
}

#[derive(Deserialize)]
struct NewUrl {
    url: String,
}

/// Routes one request.
pub(crate) async fn route(app: Rc<App>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    match (segments.as_slice(), &method) {
        (["links"], &Method::POST) => create(&app, request).await,
        (["links"], _) => method_not_allowed("POST"),
        (["links", code], &Method::DELETE) => with_code(code, |c| delete(&app, c)).await,
        (["links", code], &Method::PUT) => {
            let code = (*code).to_owned();
            with_code(&code, |c| update(&app, c, request)).await
        }
        (["links", _], _) => method_not_allowed("PUT, DELETE"),
        (["links", code, "stats"], &Method::GET) => with_code(code, |c| stats(&app, c)).await,
        (["links", _, "stats"], _) => method_not_allowed("GET"),
        ([""], _) => error(
            StatusCode::NOT_FOUND,
            "no such route; POST /links to shorten",
        ),
        ([code], &Method::GET | &Method::HEAD) => {
            let count = method == Method::GET;
            with_code(code, |c| redirect(&app, c, count)).await
        }
        ([_], _) => method_not_allowed("GET, HEAD"),
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// Runs `handler` with `code` if it is well formed, `400` otherwise.
async fn with_code<'a, F, Fut>(code: &'a str, handler: F) -> Response
where
    F: FnOnce(&'a str) -> Fut,
    Fut: Future<Output = Response>,
{
    if code::is_code(code) {
        handler(code).await
    } else {
        let message = format!(
            "malformed code: {} letters and digits expected",
            code::CODE_LEN
        );
        error(StatusCode::BAD_REQUEST, &message)
    }
}

/// `GET /{code}`: `301` to its URL, from this shard's cache or the table.
async fn redirect(app: &App, code: &str, count: bool) -> Response {
    let url = match state::lookup(code) {
        Some(url) => url,
        None => {
            // Taken before the read: a later invalidation voids the fill.
            let generation = state::generation();
            let found: Result<Option<String>, _> =
                db::find(&app.pool, |s| &s.lookup, &[&code]).await;
            match found {
                Ok(Some(url)) => {
                    let url: Rc<str> = url.into();
                    state::fill(generation, code, url.clone());
                    url
                }
                Ok(None) => return error(StatusCode::NOT_FOUND, "no such code"),
                Err(failure) => return db_error(&failure),
            }
        }
    };
    if count {
        hits::count(code);
    }
    let Ok(location) = HeaderValue::from_str(&url) else {
        // Stored URLs are normalized ASCII; this is a row written by hand.
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stored URL is not a valid header",
        );
    };
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// `POST /links`: a new code for the URL in the body.
async fn create(app: &App, request: Request) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .map(str::to_owned);
    let url = match read_url(request).await {
        Ok(url) => url,
        Err(response) => return response,
    };
    for _ in 0..CODE_ATTEMPTS {
        let code = match code::random() {
            Ok(code) => code,
            Err(failure) => {
                let message = format!("no randomness for a code: {failure}");
                return error(StatusCode::INTERNAL_SERVER_ERROR, &message);
            }
        };
        let inserted = db::find::<String>(&app.pool, |s| &s.insert, &[&code, &url])
            .await
            .map(|row| row.is_some());
        match inserted {
            Ok(true) => {
                let short_url = short_url(app.base_url.as_deref(), host.as_deref(), &code);
                let mut response = json_response(
                    StatusCode::CREATED,
                    &json!({"code": code, "url": url, "short_url": short_url}),
                );
                if let Ok(location) = HeaderValue::from_str(&format!("/links/{code}/stats")) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                return response;
            }
            // Taken: draw another.
            Ok(false) => continue,
            Err(failure) => return db_error(&failure),
        }
    }
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no free code found; try again",
    )
}

/// `PUT /links/{code}`: points the code at a new URL.
async fn update(app: &App, code: &str, request: Request) -> Response {
    let url = match read_url(request).await {
        Ok(url) => url,
        Err(response) => return response,
    };
    let updated = db::find::<String>(&app.pool, |s| &s.update, &[&code, &url])
        .await
        .map(|row| row.is_some());
    match updated {
        Ok(true) => match invalidate::everywhere(&app.bus, code).await {
            Ok(()) => json_response(StatusCode::OK, &json!({"code": code, "url": url})),
            Err(unconfirmed) => unconfirmed_error(&unconfirmed, "updated"),
        },
        Ok(false) => error(StatusCode::NOT_FOUND, "no such code"),
        Err(failure) => changed_maybe(app, code, &failure).await,
    }
}

/// A failed update or delete may still commit (a timeout while the
/// statement was on its way): the code is invalidated everywhere anyway,
/// best effort, so a cache does not keep a URL the table no longer has.
async fn changed_maybe(app: &App, code: &str, failure: &DbError) -> Response {
    if matches!(failure, DbError::Unavailable(_)) {
        let _ = invalidate::everywhere(&app.bus, code).await;
    }
    db_error(failure)
}

/// `DELETE /links/{code}`: `204` once no shard can redirect it any more.
async fn delete(app: &App, code: &str) -> Response {
    let deleted = db::with_conn(&app.pool, async |conn| {
        conn.client.execute(&conn.statements.delete, &[&code]).await
    })
    .await;
    match deleted {
        Ok(0) => error(StatusCode::NOT_FOUND, "no such code"),
        Ok(_) => match invalidate::everywhere(&app.bus, code).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(unconfirmed) => unconfirmed_error(&unconfirmed, "deleted"),
        },
        Err(failure) => changed_maybe(app, code, &failure).await,
    }
}

/// `GET /links/{code}/stats`: the stored count plus every shard's
/// unflushed one (see `hits.rs`).
async fn stats(app: &App, code: &str) -> Response {
    let owned = code.to_owned();
    let unflushed = app
        .shard
        .map_reduce(
            move |_shard: Shard| async move { hits::unflushed(&owned) },
            0u64,
            |sum, n| sum + n,
        )
        .await;
    // A shard that could not answer holds at most a second of counts:
    // report the rest rather than fail.
    let unflushed = unflushed.unwrap_or_else(|_| hits::unflushed(code));
    let stored: Result<Option<i64>, _> = db::find(&app.pool, |s| &s.hits, &[&code]).await;
    match stored {
        Ok(Some(stored)) => {
            let hits = u64::try_from(stored).unwrap_or(0) + unflushed;
            json_response(StatusCode::OK, &json!({"code": code, "hits": hits}))
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no such code"),
        Err(failure) => db_error(&failure),
    }
}

/// The normalized URL of a `{"url": ...}` body, or the error answer.
async fn read_url(request: Request) -> Result<String, Response> {
    let body = read_body(request, MAX_BODY).await.map_err(|failure| {
        let status = failure.into_response().status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("body larger than {MAX_BODY} bytes")
        } else {
            "could not read the body".to_owned()
        };
        error(status, &message)
    })?;
    let new: NewUrl = serde_json::from_slice(&body).map_err(|failure| {
        let message = format!("body must be JSON {{\"url\": \"...\"}}: {failure}");
        error(StatusCode::BAD_REQUEST, &message)
    })?;
    code::normalize_url(&new.url)
        .map_err(|failure| error(StatusCode::BAD_REQUEST, &failure.to_string()))
}

/// `base` (or `http://` + the request's `Host`) and `/code`.
fn short_url(base: Option<&str>, host: Option<&str>, code: &str) -> String {
    match base {
        Some(base) => format!("{}/{code}", base.trim_end_matches('/')),
        None => format!("http://{}/{code}", host.unwrap_or("localhost")),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, format!("{body}\n")).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn db_error(failure: &DbError) -> Response {
    let status = match failure {
        DbError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        DbError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = error(status, &failure.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn unconfirmed_error(unconfirmed: &Unconfirmed, what: &str) -> Response {
    let shards: Vec<String> = unconfirmed
        .0
        .iter()
        .map(|id| id.get().to_string())
        .collect();
    let message = format!(
        "{what} in the database, but shard(s) {} did not confirm dropping it from their cache \
         within {} s; retry",
        shards.join(", "),
        invalidate::ACK_TIMEOUT.as_secs()
    );
    error(StatusCode::SERVICE_UNAVAILABLE, &message)
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::short_url;

    #[test]
    fn short_urls_use_the_base_or_the_host() {
        assert_eq!(
            short_url(Some("https://sho.rt/"), Some("ignored"), "abc1234"),
            "https://sho.rt/abc1234"
        );
        assert_eq!(
            short_url(None, Some("127.0.0.1:8080"), "abc1234"),
            "http://127.0.0.1:8080/abc1234"
        );
        assert_eq!(short_url(None, None, "abc1234"), "http://localhost/abc1234");
    }
}
