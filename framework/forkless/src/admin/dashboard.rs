//! `GET /`: the live web dashboard, what PM2's web dashboard is to PM2.
//!
//! Contract: three static files compiled into the binary
//! (`dashboard.html`, `dashboard.css`, `dashboard.js`, served at `/`,
//! `/dashboard.css` and `/dashboard.js`); nothing is fetched from anywhere
//! but this admin endpoint. The page polls `GET /status` once a second and
//! draws per-shard charts of requests/s, p99 latency, open connections,
//! bus queue depth, restarts and stalls, one row per shard, and the
//! lifecycle timeline from `/status`'s `events`; its two buttons `POST
//! /reload` and `POST /upgrade` after a confirmation and show the answer.
//!
//! Every answer carries `Cache-Control: no-store` (as every admin answer
//! does) and `X-Content-Type-Options: nosniff`; the page carries a
//! [`POLICY`] that allows scripts, styles and connections from this origin
//! only (no inline script, no `eval`), and no framing.

use super::server::Answer;

/// The page's `Content-Security-Policy`.
pub(crate) const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const HTML: &str = include_str!("dashboard.html");
const CSS: &str = include_str!("dashboard.css");
const JS: &str = include_str!("dashboard.js");

/// The dashboard's files by path: `/`, `/dashboard.css`, `/dashboard.js`.
pub(crate) fn file(path: &str) -> Option<Answer> {
    let (content_type, body) = match path {
        "/" => ("text/html; charset=utf-8", HTML),
        "/dashboard.css" => ("text/css; charset=utf-8", CSS),
        "/dashboard.js" => ("text/javascript; charset=utf-8", JS),
        _ => return None,
    };
    let mut headers = vec![
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ];
    if path == "/" {
        headers.push(("content-security-policy", POLICY));
    }
    Some(Answer {
        status: 200,
        content_type,
        body: body.as_bytes().to_vec(),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_files_of_its_own_origin() {
        let page = file("/").expect("the page");
        assert!(page.headers.contains(&("content-security-policy", POLICY)));
        for text in [HTML, CSS, JS] {
            assert!(!text.contains("http://"), "an absolute URL");
            assert!(!text.contains("https://"), "an absolute URL");
            assert!(!text.contains("//cdn"), "a CDN");
        }
        assert!(HTML.contains("src=\"/dashboard.js\""));
        assert!(HTML.contains("href=\"/dashboard.css\""));
        assert!(
            !HTML.contains("<script>"),
            "no inline script: the policy forbids it"
        );
        assert!(
            !HTML.contains("style=\""),
            "no inline style: the policy forbids it"
        );
        assert_eq!(
            file("/dashboard.js").map(|a| a.content_type),
            Some("text/javascript; charset=utf-8")
        );
        assert!(file("/other").is_none());
    }
}
