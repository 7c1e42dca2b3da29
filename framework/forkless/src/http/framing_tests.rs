use super::*;

/// Feeds `stream` to a gate `chunk` bytes at a time, the way the I/O
/// adapter does (unreleased bytes stay at the front); returns every step.
fn run(stream: &[u8], chunk: usize) -> Vec<Step> {
    let mut gate = Gate::new(1024);
    let mut steps = Vec::new();
    let (mut released, mut end) = (0, 0);
    while end < stream.len() {
        end = (end + chunk).min(stream.len());
        while released < end {
            let step = gate.step(&stream[released..end]);
            steps.push(step);
            match step {
                Step::Head(n) | Step::Body(n) => released += n,
                Step::NeedMore => break,
                Step::Paused | Step::Reject(_) => return steps,
            }
        }
    }
    steps.retain(|s| *s != Step::NeedMore);
    steps
}

/// The heads and bodies of `stream`, with runs of body bytes merged.
fn framed(stream: &[u8], chunk: usize) -> Vec<Step> {
    let mut merged: Vec<Step> = Vec::new();
    for step in run(stream, chunk) {
        match (merged.last_mut(), step) {
            (Some(Step::Body(total)), Step::Body(n)) => *total += n,
            _ => merged.push(step),
        }
    }
    merged
}

fn verdict(head: &str) -> Step {
    Gate::new(1024).step(head.as_bytes())
}

#[test]
fn a_plain_request_passes_whole() {
    let head = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(verdict(head), Step::Head(head.len()));
}

#[test]
fn pipelined_requests_pass_one_head_at_a_time() {
    let one = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let stream = format!("{one}{one}{one}");
    assert_eq!(
        framed(stream.as_bytes(), stream.len()),
        vec![Step::Head(one.len()); 3]
    );
}

#[test]
fn a_head_is_held_until_it_is_complete() {
    let head = "GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
    for chunk in 1..head.len() {
        assert_eq!(
            framed(head.as_bytes(), chunk),
            vec![Step::Head(head.len())],
            "chunk {chunk}"
        );
    }
}

#[test]
fn bare_lf_line_ends_and_leading_blank_lines_are_accepted_like_hyper() {
    let head = "GET / HTTP/1.1\nHost: x\n\n";
    assert_eq!(verdict(head), Step::Head(head.len()));
    let head = "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(verdict(head), Step::Head(head.len()));
}

#[test]
fn a_length_body_is_skipped_to_the_next_head() {
    let post = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n";
    let get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let stream = format!("{post}hello world{get}");
    for chunk in [1, 3, 7, stream.len()] {
        assert_eq!(
            framed(stream.as_bytes(), chunk),
            vec![
                Step::Head(post.len()),
                Step::Body(11),
                Step::Head(get.len())
            ],
            "chunk {chunk}"
        );
    }
}

#[test]
fn a_chunked_body_is_followed_like_hyper_reads_it() {
    let post = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = "5\r\nhello\r\nA;ext=1\r\n0123456789\r\n1 \r\n!\r\n0\r\nTrailer: t\r\n\r\n";
    let get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let stream = format!("{post}{body}{get}");
    for chunk in [1, 2, 5, stream.len()] {
        assert_eq!(
            framed(stream.as_bytes(), chunk),
            vec![
                Step::Head(post.len()),
                Step::Body(body.len()),
                Step::Head(get.len())
            ],
            "chunk {chunk}"
        );
    }
}

#[test]
fn a_broken_chunked_body_opens_the_gate_for_hyper_to_refuse() {
    let mut gate = Gate::new(1024);
    let post = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(gate.step(post.as_bytes()), Step::Head(post.len()));
    assert_eq!(gate.step(b"zz\r\n"), Step::Body(4));
    assert_eq!(gate.step(b"GET / HTTP/1.1\r\n\r\n"), Step::Body(18));
}

#[test]
fn gzip_then_chunked_and_http10_without_host_pass() {
    let head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
    assert_eq!(verdict(head), Step::Head(head.len()));
    let head = "GET / HTTP/1.0\r\n\r\n";
    assert_eq!(verdict(head), Step::Head(head.len()));
    let head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(verdict(head), Step::Head(head.len()));
}

#[test]
fn ambiguous_framing_is_rejected() {
    let cases = [
        (
            "Content-Length: 1\r\nTransfer-Encoding: chunked",
            Rejection::LengthAndTransferEncoding,
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 1",
            Rejection::LengthAndTransferEncoding,
        ),
        (
            "Content-Length: 1\r\nContent-Length: 1",
            Rejection::LengthRepeated,
        ),
        (
            "Content-Length: 1\r\nContent-Length: 2",
            Rejection::LengthRepeated,
        ),
        ("Content-Length: 1, 1", Rejection::LengthInvalid),
        ("Content-Length: +1", Rejection::LengthInvalid),
        ("Content-Length: -1", Rejection::LengthInvalid),
        ("Content-Length: ", Rejection::LengthInvalid),
        ("Content-Length: 0x10", Rejection::LengthInvalid),
        (
            "Content-Length: 99999999999999999999999",
            Rejection::LengthInvalid,
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            Rejection::TransferEncodingRepeated,
        ),
        (
            "Transfer-Encoding: chunked, chunked",
            Rejection::TransferEncodingNotChunked,
        ),
        (
            "Transfer-Encoding: gzip",
            Rejection::TransferEncodingNotChunked,
        ),
        (
            "Transfer-Encoding: chunked, gzip",
            Rejection::TransferEncodingNotChunked,
        ),
        (
            "Transfer-Encoding: , chunked",
            Rejection::TransferEncodingNotChunked,
        ),
        ("Transfer-Encoding: ", Rejection::TransferEncodingNotChunked),
        ("Host: y", Rejection::HostRepeated),
        ("X-Folded: a\r\n b", Rejection::ObsoleteLineFolding),
        ("X-Folded: a\r\n\tb", Rejection::ObsoleteLineFolding),
        ("Bad Name: v", Rejection::Malformed),
    ];
    for (headers, expected) in cases {
        let head = format!("POST / HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n");
        assert_eq!(verdict(&head), Step::Reject(expected), "for {headers:?}");
    }
}

#[test]
fn http11_needs_a_host_and_http10_no_transfer_encoding() {
    assert_eq!(
        verdict("GET / HTTP/1.1\r\n\r\n"),
        Step::Reject(Rejection::HostMissing)
    );
    assert_eq!(
        verdict("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Step::Reject(Rejection::TransferEncodingInHttp10)
    );
    assert_eq!(
        verdict("GARBAGE\x01 / HTTP/1.1\r\n\r\n"),
        Step::Reject(Rejection::Malformed)
    );
}

#[test]
fn hosts_and_targets_nginx_refuses_are_refused() {
    let host = |value: &str| verdict(&format!("GET / HTTP/1.1\r\nHost: {value}\r\n\r\n"));
    for good in [
        "example.com",
        "example.com:8080",
        "127.0.0.1:80",
        "[::1]:8080",
        "xn--bcher-kva.example",
        "a_b~c",
        "",
    ] {
        assert!(matches!(host(good), Step::Head(_)), "Host: {good}");
    }
    // Over the host limit, under this gate's head limit (a head over that
    // one is `431`).
    let long = "a".repeat(300);
    for bad in [
        "a b",
        "a/b",
        "a\\b",
        "user@host",
        "host:80:81",
        "host:8o",
        "host:123456",
        "[::1",
        "[]",
        "[::1]x",
        long.as_str(),
    ] {
        assert_eq!(
            host(bad),
            Step::Reject(Rejection::HostInvalid),
            "Host: {bad}"
        );
    }
    assert!(matches!(host(&"a".repeat(253)), Step::Head(_)));

    let target = |line: &str| verdict(&format!("{line} HTTP/1.1\r\nHost: x\r\n\r\n"));
    for good in [
        "GET /",
        "GET /a?b=c",
        "OPTIONS *",
        "GET http://x/y",
        "POST https://x:443/",
        "CONNECT x:443",
    ] {
        assert!(matches!(target(good), Step::Head(_)), "{good}");
    }
    for bad in [
        "GET host:80",
        "GET *",
        "POST *",
        "GET x",
        "GET ://x/",
        "GET 1a://x/",
    ] {
        assert_eq!(target(bad), Step::Reject(Rejection::TargetForm), "{bad}");
    }
    assert_eq!(Rejection::HostInvalid.status(), 400);
    assert_eq!(Rejection::TargetForm.status(), 400);
}

#[test]
fn oversized_heads_are_rejected_complete_or_not() {
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2000)
    );
    assert_eq!(verdict(&big), Step::Reject(Rejection::HeadTooLarge));
    let endless = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(2000));
    assert_eq!(verdict(&endless), Step::Reject(Rejection::HeadTooLarge));
    let mut gate = Gate::new(1024);
    let start = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(1000));
    assert_eq!(gate.step(start.as_bytes()), Step::NeedMore);
    let more = format!("{start}{}", "a".repeat(100));
    assert_eq!(
        gate.step(more.as_bytes()),
        Step::Reject(Rejection::HeadTooLarge)
    );
}

#[test]
fn too_many_header_lines_are_rejected() {
    let lines: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\n{lines}\r\n");
    let mut gate = Gate::new(64 * 1024);
    assert_eq!(
        gate.step(head.as_bytes()),
        Step::Reject(Rejection::TooManyHeaders)
    );
}

#[test]
fn head_end_search_sees_markers_split_across_reads() {
    assert!(has_head_end(b"a\r\n\r\n"));
    assert!(has_head_end(b"a\n\n"));
    assert!(has_head_end(b"\n\r\n"));
    assert!(!has_head_end(b"a\r\nb\r\n"));
    assert!(!has_head_end(b"\n\r"));
}

#[test]
fn rejections_map_to_their_statuses() {
    assert_eq!(Rejection::HeadTooLarge.status(), 431);
    assert_eq!(Rejection::TooManyHeaders.status(), 431);
    assert_eq!(Rejection::HeadTimeout.status(), 408);
    assert_eq!(Rejection::HostMissing.status(), 400);
    assert!(
        Rejection::LengthAndTransferEncoding
            .message()
            .ends_with('\n')
    );
}

#[test]
fn an_upgrade_request_pauses_the_gate_until_resumed() {
    let upgrade =
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let next = "GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    let stream = format!("{upgrade}\x01\x05hello{next}");
    let mut gate = Gate::new(1024);
    assert_eq!(gate.step(stream.as_bytes()), Step::Head(upgrade.len()));
    assert!(gate.is_paused());
    // The frame bytes after the head are held, not parsed.
    assert_eq!(gate.step(&stream.as_bytes()[upgrade.len()..]), Step::Paused);
    gate.resume();
    assert!(!gate.is_paused());
    assert_eq!(gate.step(next.as_bytes()), Step::Head(next.len()));
    assert!(gate.at_head());
}

#[test]
fn an_upgrade_request_with_a_body_pauses_after_the_body() {
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nUpgrade: thing\r\nContent-Length: 3\r\n\r\n";
    let stream = format!("{head}abcMORE");
    assert_eq!(
        run(stream.as_bytes(), stream.len()),
        vec![Step::Head(head.len()), Step::Body(3), Step::Paused]
    );
    let chunked =
        "POST /up HTTP/1.1\r\nHost: x\r\nUpgrade: thing\r\nTransfer-Encoding: chunked\r\n\r\n";
    let stream = format!("{chunked}3\r\nabc\r\n0\r\n\r\nMORE");
    let steps = framed(stream.as_bytes(), 1);
    assert_eq!(steps.last(), Some(&Step::Paused));
}

#[test]
fn hyper_rule_decides_what_is_an_upgrade() {
    for (head, pauses) in [
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            true,
        ),
        ("CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", true),
        ("GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n", false),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n",
            false,
        ),
    ] {
        let mut gate = Gate::new(1024);
        assert_eq!(
            gate.step(head.as_bytes()),
            Step::Head(head.len()),
            "{head:?}"
        );
        assert_eq!(gate.is_paused(), pauses, "{head:?}");
    }
}
