//! Conformance: what responses look like on the wire, byte for byte, read by
//! a strict client (`forkless_tests::raw`) from the test app at 2 shards.
//!
//! These tests pin down today's behaviour (hyper's HTTP/1.1 server behind the
//! framework) so that any other path serving the same requests can be held
//! to exactly the same: status lines and reason phrases, which headers and
//! in which order, framing (length, chunked, none, until close), keep-alive
//! and closing, pipelining, and the odd corners of request syntax. Where the
//! current behaviour is surprising, the test says so in a comment.

use std::path::Path;
use std::time::Duration;

use forkless_tests::raw::{Connection, Framing, Response};
use forkless_tests::{Server, request, request_with_body};

/// The content type of text answers.
const TEXT: &str = "text/plain; charset=utf-8";

fn testapp() -> Server {
    Server::start(
        Path::new(env!("CARGO_BIN_EXE_forkless-testapp")),
        &["--shards", "2"],
    )
}

fn status_line(response: &Response) -> String {
    format!(
        "{} {} {}",
        response.version, response.status, response.reason
    )
}

/// Whether `date` has the IMF-fixdate shape: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn is_imf_fixdate(date: &str) -> bool {
    const SHAPE: &str = "Aaa, 00 Aaa 0000 00:00:00 GMT";
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    date.len() == SHAPE.len()
        && date.bytes().zip(SHAPE.bytes()).all(|(b, s)| match s {
            b'0' => b.is_ascii_digit(),
            b'A' | b'a' => b.is_ascii_alphabetic(),
            _ => b == s,
        })
        && DAYS.contains(&&date[..3])
        && MONTHS.contains(&&date[8..11])
}

/// What every final response carries: one `x-shard` naming a shard and one
/// `date` in IMF-fixdate form.
fn assert_stamped(response: &Response) {
    let shard = response.header("x-shard");
    assert!(
        matches!(shard, Some("0" | "1")),
        "x-shard {shard:?} in {response:#?}"
    );
    let date = response.header("date").expect("a date header");
    assert!(is_imf_fixdate(date), "date {date:?} is not IMF-fixdate");
}

/// Asserts the connection still serves: a GET right after parses as the next response.
fn assert_reusable(connection: &mut Connection) {
    let after = connection.roundtrip("GET", "/echo/after");
    assert_eq!(status_line(&after), "HTTP/1.1 200 OK");
    assert_eq!(after.text(), "after");
    connection.assert_quiet();
}

#[test]
fn get_is_framed_by_one_content_length_and_keeps_the_connection() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    for _ in 0..2 {
        let response = connection.roundtrip("GET", "/");
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
        assert_stamped(&response);
        // The exact header list, in hyper's order: the handler's, the
        // framework's `x-shard`, then hyper's length and date.
        assert_eq!(
            response.header_names(),
            ["content-type", "x-shard", "content-length", "date"]
        );
        assert_eq!(response.header("content-type"), Some(TEXT));
        assert_eq!(response.header("content-length"), Some("3"));
        assert_eq!(response.framing, Framing::Length(3));
        assert_eq!(response.text(), "ok\n");
    }
    connection.assert_quiet();
}

#[test]
fn head_answers_the_get_headers_without_a_body() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    for (path, length) in [("/", "3"), ("/big/1000", "1000")] {
        let get = connection.roundtrip("GET", path);
        let head = connection.roundtrip("HEAD", path);
        assert_stamped(&head);
        assert_eq!(status_line(&head), "HTTP/1.1 200 OK");
        assert_eq!(head.header_names(), get.header_names(), "HEAD {path}");
        assert_eq!(head.header("content-length"), Some(length), "HEAD {path}");
        assert_eq!(head.header("content-type"), get.header("content-type"));
        // Had the HEAD response carried body bytes, this GET would misparse.
        assert_reusable(&mut connection);
    }
}

#[test]
fn no_content_and_not_modified_drop_the_body_and_the_length() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    for (path, line) in [
        ("/status/204", "HTTP/1.1 204 No Content"),
        ("/status/304", "HTTP/1.1 304 Not Modified"),
    ] {
        let response = connection.roundtrip("GET", path);
        assert_eq!(status_line(&response), line);
        assert_stamped(&response);
        // hyper strips the handler's body and writes no content-length
        // (even for 304, where one would be allowed); the content-type stays.
        assert_eq!(response.header_names(), ["content-type", "x-shard", "date"]);
        assert_eq!(response.header("content-type"), Some(TEXT));
        assert_reusable(&mut connection);
    }
}

#[test]
fn statuses_carry_their_reason_phrase_and_keep_the_connection() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    for (path, line) in [
        ("/status/201", "HTTP/1.1 201 Created"),
        ("/status/404", "HTTP/1.1 404 Not Found"),
        ("/status/500", "HTTP/1.1 500 Internal Server Error"),
        // A code without a registered reason: hyper writes `<none>`.
        ("/status/599", "HTTP/1.1 599 <none>"),
    ] {
        let response = connection.roundtrip("GET", path);
        assert_eq!(status_line(&response), line);
        assert_stamped(&response);
        assert_eq!(
            response.header_names(),
            ["content-type", "x-shard", "content-length", "date"]
        );
        assert_eq!(response.framing, Framing::Length(7));
        assert_eq!(response.text(), "status\n");
    }
    // A handler's own 500 does not close the connection (a panic's does).
    assert_reusable(&mut connection);
}

#[test]
fn custom_headers_keep_every_repeated_value_in_order() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    let response = connection.roundtrip("GET", "/headers");
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert_stamped(&response);
    assert_eq!(
        response.header_names(),
        [
            "content-type",
            "x-single",
            "x-multi",
            "x-multi",
            "set-cookie",
            "set-cookie",
            "x-shard",
            "content-length",
            "date",
        ]
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-single"), Some("one"));
    assert_eq!(response.header_values("x-multi"), ["first", "second"]);
    assert_eq!(
        response.header_values("set-cookie"),
        ["a=1; Path=/", "b=2; HttpOnly"]
    );
    assert_eq!(response.text(), "{}\n");
    assert_reusable(&mut connection);
}

#[test]
fn a_stream_of_unknown_length_is_chunked_and_keeps_the_connection() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    let response = connection.roundtrip("GET", "/stream/5");
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert_stamped(&response);
    assert_eq!(
        response.header_names(),
        ["x-shard", "transfer-encoding", "date"]
    );
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.framing, Framing::Chunked);
    assert_eq!(
        response.text(),
        "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n"
    );
    assert_reusable(&mut connection);

    // HEAD of a stream: hyper writes neither transfer-encoding nor a length.
    let head = connection.roundtrip("HEAD", "/stream/5");
    assert_eq!(status_line(&head), "HTTP/1.1 200 OK");
    assert_eq!(head.header_names(), ["x-shard", "date"]);
    assert_reusable(&mut connection);
}

#[test]
fn a_stream_with_a_declared_length_is_framed_by_it() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    let response = connection.roundtrip("GET", "/stream-len/5");
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert_stamped(&response);
    assert_eq!(
        response.header_names(),
        ["content-length", "x-shard", "date"]
    );
    assert_eq!(response.framing, Framing::Length(40));
    assert_eq!(
        response.text(),
        "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n"
    );
    assert_reusable(&mut connection);

    let head = connection.roundtrip("HEAD", "/stream-len/5");
    assert_eq!(head.header("content-length"), Some("40"));
    assert_eq!(head.header("transfer-encoding"), None);
    assert_reusable(&mut connection);
}

#[test]
fn a_handler_that_asks_to_close_gets_the_connection_closed() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    let response = connection.roundtrip("GET", "/close");
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert_stamped(&response);
    assert_eq!(
        response.header_names(),
        [
            "content-type",
            "connection",
            "x-shard",
            "content-length",
            "date"
        ]
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.text(), "closing\n");
    connection.assert_closed();
}

#[test]
fn a_client_that_asks_to_close_gets_connection_close_and_the_end() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    connection.send(&request("GET", "/", &[("Connection", "close")]));
    let response = connection.read("GET");
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert_stamped(&response);
    assert_eq!(
        response.header_names(),
        [
            "content-type",
            "x-shard",
            "connection",
            "content-length",
            "date"
        ]
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.text(), "ok\n");
    connection.assert_closed();
}

#[test]
fn http_1_0_is_answered_in_1_0_and_closed() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    connection.send(b"GET / HTTP/1.0\r\n\r\n");
    let response = connection.read("GET");
    assert_eq!(status_line(&response), "HTTP/1.0 200 OK");
    assert_stamped(&response);
    // Closing is HTTP/1.0's default, so no `connection: close` is written.
    assert_eq!(
        response.header_names(),
        ["content-type", "x-shard", "content-length", "date"]
    );
    assert_eq!(response.framing, Framing::Length(3));
    assert_eq!(response.text(), "ok\n");
    connection.assert_closed();
}

#[test]
fn http_1_0_with_keep_alive_is_kept_alive() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    for _ in 0..2 {
        connection.send(b"GET /method HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = connection.read("GET");
        assert_eq!(status_line(&response), "HTTP/1.0 200 OK");
        assert_stamped(&response);
        assert_eq!(
            response.header_names(),
            [
                "content-type",
                "x-shard",
                "connection",
                "content-length",
                "date"
            ]
        );
        assert_eq!(response.header("connection"), Some("keep-alive"));
        assert_eq!(response.text(), "GET HTTP/1.0\n");
    }
    connection.assert_quiet();
}

#[test]
fn http_1_0_streams_are_delimited_by_closing() {
    let server = testapp();
    for keep_alive in [false, true] {
        let mut connection = Connection::open(server.addr);
        let head = if keep_alive {
            &b"GET /stream/3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"[..]
        } else {
            &b"GET /stream/3 HTTP/1.0\r\n\r\n"[..]
        };
        connection.send(head);
        let response = connection.read("GET");
        assert_eq!(status_line(&response), "HTTP/1.0 200 OK");
        assert_stamped(&response);
        // No chunked in HTTP/1.0: the body ends with the connection, even
        // when keep-alive was asked (hyper then still writes
        // `connection: keep-alive`, which this test leaves unasserted).
        assert_eq!(response.header("transfer-encoding"), None);
        assert_eq!(response.header("content-length"), None);
        assert_eq!(response.framing, Framing::UntilClose);
        assert_eq!(response.text(), "chunk 0\nchunk 1\nchunk 2\n");
        connection.assert_closed();
    }
}

#[test]
fn the_method_and_version_reach_the_handler() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    for method in ["GET", "DELETE", "PATCH"] {
        let response = connection.roundtrip(method, "/method");
        assert_eq!(response.text(), format!("{method} HTTP/1.1\n"));
    }
    connection.send(&request_with_body("PUT", "/method", &[], b""));
    assert_eq!(connection.read("PUT").text(), "PUT HTTP/1.1\n");
    // The handler sees HEAD as HEAD (not as GET): the length is that of
    // `HEAD HTTP/1.1\n`, the body it would have sent.
    let head = connection.roundtrip("HEAD", "/method");
    assert_eq!(head.header("content-length"), Some("14"));
    connection.assert_quiet();
}

#[test]
fn pipelined_requests_of_mixed_kinds_are_answered_in_order() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    let mut batch = request("GET", "/", &[]);
    batch.extend(request("HEAD", "/", &[]));
    batch.extend(request_with_body("POST", "/upload", &[], b"hello"));
    batch.extend(request("GET", "/stream/3", &[]));
    batch.extend(request("GET", "/echo/last", &[]));
    connection.send(&batch);

    let get = connection.read("GET");
    assert_eq!((get.framing, get.text()), (Framing::Length(3), "ok\n"));
    let head = connection.read("HEAD");
    assert_eq!(
        (head.framing, head.header("content-length")),
        (Framing::None, Some("3"))
    );
    let upload = connection.read("POST");
    assert_eq!((upload.framing, upload.text()), (Framing::Length(2), "5\n"));
    let stream = connection.read("GET");
    assert_eq!(
        (stream.framing, stream.text()),
        (Framing::Chunked, "chunk 0\nchunk 1\nchunk 2\n")
    );
    let last = connection.read("GET");
    assert_eq!((last.framing, last.text()), (Framing::Length(4), "last"));
    for response in [get, head, upload, stream, last] {
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
        assert_stamped(&response);
    }
    connection.assert_quiet();
}

#[test]
fn two_hundred_pipelined_gets_in_one_write_are_answered_in_order() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    let batch: Vec<u8> = (0..200)
        .flat_map(|i| request("GET", &format!("/echo/{i}"), &[]))
        .collect();
    connection.send(&batch);
    let mut shards = Vec::new();
    for i in 0..200 {
        let response = connection.read("GET");
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
        assert_stamped(&response);
        assert_eq!(response.text(), i.to_string(), "response {i} out of order");
        shards.push(response.header("x-shard").map(str::to_owned));
    }
    shards.dedup();
    assert_eq!(shards.len(), 1, "one connection, one shard");
    connection.assert_quiet();
}

#[test]
fn a_head_trickled_byte_by_byte_is_answered() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    connection.trickle(
        &request("GET", "/echo/trickled", &[("X-Slow", "yes")]),
        Duration::from_millis(2),
    );
    let response = connection.read("GET");
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert_stamped(&response);
    assert_eq!(response.text(), "trickled");

    // A body trickled after its head, too.
    connection.trickle(
        &request_with_body("POST", "/upload", &[], b"hello"),
        Duration::from_millis(1),
    );
    assert_eq!(connection.read("POST").text(), "5\n");
    assert_reusable(&mut connection);
}

#[test]
fn the_request_target_reaches_the_handler_as_sent() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    // Absolute form: the handler sees the whole URI, scheme and authority
    // included, whatever the Host header says.
    connection.send(b"GET http://example.com/query?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n");
    let absolute = connection.read("GET");
    assert_eq!(status_line(&absolute), "HTTP/1.1 200 OK");
    assert_eq!(absolute.text(), "http://example.com/query?x=1\n");

    // Origin form: path and query, percent-encoding untouched.
    let origin = connection.roundtrip("GET", "/query?a=1&b=%20x&c");
    assert_eq!(origin.text(), "/query?a=1&b=%20x&c\n");
    let bare = connection.roundtrip("GET", "/query");
    assert_eq!(bare.text(), "/query\n");
    connection.assert_quiet();
}

#[test]
fn options_asterisk_reaches_the_handler() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    // Not answered by the server itself: the handler gets path `*` and its
    // fallback route answers 404.
    let response = connection.roundtrip("OPTIONS", "*");
    assert_eq!(status_line(&response), "HTTP/1.1 404 Not Found");
    assert_stamped(&response);
    assert_eq!(response.header("allow"), None);
    assert_eq!(response.text(), "not found\n");
    assert_reusable(&mut connection);
}

#[test]
fn header_names_ignore_case_and_values_ignore_surrounding_whitespace() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    connection.send(b"GET /host HTTP/1.1\r\nhOsT: \t padded.example  \t\r\n\r\n");
    let host = connection.read("GET");
    assert_eq!(status_line(&host), "HTTP/1.1 200 OK");
    assert_eq!(host.text(), "padded.example\n");

    connection.send(b"POST /upload HTTP/1.1\r\nHOST: x\r\ncOnTeNt-LeNgTh:   5  \r\n\r\nhello");
    let upload = connection.read("POST");
    assert_eq!(status_line(&upload), "HTTP/1.1 200 OK");
    assert_eq!(upload.text(), "5\n");
    assert_reusable(&mut connection);
}

#[test]
fn sixty_request_headers_are_answered_normally() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    let names: Vec<String> = (0..60).map(|i| format!("X-Header-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "value")).collect();
    connection.send(&request("GET", "/echo/many", &headers));
    let response = connection.read("GET");
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert_eq!(response.text(), "many");
    assert_reusable(&mut connection);
}

#[test]
fn a_panicking_handler_gets_500_and_the_connection_closed() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    assert_eq!(connection.roundtrip("GET", "/").text(), "ok\n");
    let response = connection.roundtrip("GET", "/panic");
    assert_eq!(status_line(&response), "HTTP/1.1 500 Internal Server Error");
    assert_stamped(&response);
    assert_eq!(
        response.header_names(),
        [
            "content-type",
            "connection",
            "x-shard",
            "content-length",
            "date"
        ]
    );
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(response.text(), "internal server error\n");
    connection.assert_closed();
}

#[test]
fn expect_100_continue_gets_100_once_the_handler_reads_the_body() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    connection.send(&request(
        "POST",
        "/upload",
        &[("Expect", "100-continue"), ("Content-Length", "5")],
    ));
    let interim = connection.read("POST");
    assert_eq!(status_line(&interim), "HTTP/1.1 100 Continue");
    assert!(interim.headers.is_empty(), "{interim:#?}");
    connection.send(b"hello");
    let response = connection.read("POST");
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert_stamped(&response);
    assert_eq!(response.text(), "5\n");
    assert_reusable(&mut connection);
}

#[test]
fn expect_100_continue_gets_100_even_when_the_body_came_along() {
    let server = testapp();
    let mut connection = Connection::open(server.addr);
    connection.send(&request_with_body(
        "POST",
        "/upload",
        &[("Expect", "100-continue")],
        b"hello",
    ));
    let interim = connection.read("POST");
    assert_eq!(status_line(&interim), "HTTP/1.1 100 Continue");
    let response = connection.read("POST");
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
    assert_eq!(response.text(), "5\n");
    assert_reusable(&mut connection);
}
