//! `apps/axum-hello` (an axum `Router` served by forkless) answers like
//! `apps/hello` (a forkless handler), at 1, 2 and 4 shards.

use std::io::BufReader;

use forkless_tests::{
    SHARD_COUNTS, Server, app_binary, read_response, request, request_with_body, send,
};

/// What the two apps must agree on for one request.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    body: String,
    content_type: Option<String>,
}

fn ask(server: &Server, shards: usize, method: &str, path: &str) -> Answer {
    let mut stream = BufReader::new(server.connect());
    let bytes = if method == "POST" || method == "PUT" {
        request_with_body(method, path, &[], b"x")
    } else {
        request(method, path, &[])
    };
    send(stream.get_mut(), &bytes);
    let response = read_response(&mut stream).expect("a response");
    let shard: usize = response
        .header("x-shard")
        .unwrap_or_else(|| panic!("{method} {path}: no x-shard"))
        .parse()
        .expect("a numeric x-shard");
    assert!(
        shard < shards,
        "{method} {path}: x-shard {shard} of {shards}"
    );
    Answer {
        status: response.status,
        content_type: response.header("content-type").map(str::to_owned),
        body: response.body,
    }
}

fn start(package: &str, shards: usize) -> Server {
    let shards = shards.to_string();
    let mut args = vec!["--shards", shards.as_str()];
    if shards == "4" {
        args.push("--no-pin");
    }
    Server::start(&app_binary(package), &args)
}

#[test]
fn axum_hello_answers_every_request_like_hello() {
    let requests = [
        ("GET", "/"),
        ("GET", "/nope"),
        ("GET", "/a/b/c?x=1"),
        ("POST", "/"),
        ("PUT", "/"),
        ("DELETE", "/"),
        ("DELETE", "/nope"),
    ];
    for shards in SHARD_COUNTS {
        let hello = start("hello", shards);
        let axum = start("axum-hello", shards);
        for (method, path) in requests {
            let expected = ask(&hello, shards, method, path);
            let got = ask(&axum, shards, method, path);
            assert_eq!(got, expected, "{method} {path} at {shards} shards");
        }
        let root = ask(&axum, shards, "GET", "/");
        assert_eq!((root.status, root.body.as_str()), (200, "Hello World\n"));
        assert_eq!(ask(&axum, shards, "GET", "/nope").status, 404);
        assert_eq!(ask(&axum, shards, "DELETE", "/").status, 405);
    }
}

#[test]
fn every_shard_serves_axum_hello_and_keep_alive_stays_on_one() {
    for shards in SHARD_COUNTS {
        let server = start("axum-hello", shards);
        let answers = server.per_shard("/", shards);
        assert!(answers.values().all(|body| body == "Hello World\n"));

        let mut stream = BufReader::new(server.connect());
        let mut first = None;
        for _ in 0..200 {
            send(stream.get_mut(), &request("GET", "/", &[]));
            let response = read_response(&mut stream).expect("a keep-alive response");
            assert_eq!(response.status, 200);
            let shard = response.header("x-shard").map(str::to_owned);
            assert_eq!(*first.get_or_insert(shard.clone()), shard);
        }
    }
}
