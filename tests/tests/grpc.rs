//! gRPC: apps/greeter (a tonic service through `serve_tower`) answers a
//! tonic client over h2c at 1, 2 and 4 shards: a unary call, a
//! server-streaming call and a gRPC health check; and over TLS, where ALPN
//! picks h2.

use std::time::Duration;

use forkless_tests::tls::Ca;
use forkless_tests::{SHARD_COUNTS, Server, app_binary};
use greeter::{GreeterClient, HelloRequest};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[test]
fn tonic_unary_streaming_and_health_at_1_2_and_4_shards() {
    let binary = app_binary("greeter");
    for shards in SHARD_COUNTS {
        let shards_arg = shards.to_string();
        let mut args = vec!["--shards", shards_arg.as_str()];
        if shards > 2 {
            args.push("--no-pin");
        }
        let server = Server::start(&binary, &args);
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
            .expect("an endpoint");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), calls(endpoint, shards))
                .await
                .expect("the gRPC calls took longer than 20 s");
        });
    }
}

#[test]
fn tonic_over_tls_by_alpn() {
    let dir = std::env::temp_dir().join(format!("forkless-grpc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a test directory");
    let ca = Ca::new();
    let (cert, key) = ca.leaf("greeter").write(&dir);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let binary = app_binary("greeter");
    let server = Server::start(
        &binary,
        &["--shards", "2", "--tls-cert", &cert, "--tls-key", &key],
    );
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", server.addr))
        .expect("an endpoint")
        .tls_config(tls)
        .expect("the TLS configuration");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), calls(endpoint, 2))
            .await
            .expect("the gRPC calls took longer than 20 s");
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn calls(endpoint: tonic::transport::Endpoint, shards: usize) {
    let channel = endpoint.connect().await.expect("connect to greeter");
    let mut greeter = GreeterClient::new(channel.clone());

    let reply = greeter
        .say_hello(HelloRequest {
            name: "forkless".into(),
            count: 0,
        })
        .await
        .expect("SayHello")
        .into_inner();
    assert_eq!(reply.message, "Hello forkless!");
    assert!((reply.shard as usize) < shards, "{reply:?}");

    let mut stream = greeter
        .say_hello_stream(HelloRequest {
            name: "stream".into(),
            count: 5,
        })
        .await
        .expect("SayHelloStream")
        .into_inner();
    let mut got = Vec::new();
    while let Some(reply) = stream.message().await.expect("a streamed reply") {
        got.push(reply.message);
    }
    let want: Vec<String> = (1..=5).map(|i| format!("Hello stream! ({i}/5)")).collect();
    assert_eq!(got, want);

    let refused = greeter
        .say_hello_stream(HelloRequest {
            name: "many".into(),
            count: greeter::MAX_STREAMED + 1,
        })
        .await
        .expect_err("a count over the maximum is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    let mut health = HealthClient::new(channel);
    for service in ["", "greeter.Greeter"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}
