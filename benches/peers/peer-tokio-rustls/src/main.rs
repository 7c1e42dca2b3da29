//! peer-tokio-rustls: `GET /` answered `Hello World` by hyper 1.x over
//! tokio-rustls (rustls on ring, as forkless) on tokio's multi-thread
//! runtime: the HTTPS and HTTP/2 baseline of the TLS bench
//! (`benches/benches/tls.rs`). ALPN offers `h2` and `http/1.1`; without
//! `--tls-cert` it serves cleartext HTTP/1.1 and h2c with prior knowledge.
//! One rustls `ServerConfig` for every connection, so its ticketer and
//! session cache are shared, as forkless shares one across shards.
//!
//! Run with: `cargo run --release -p peer-tokio-rustls -- --threads 1
//! --listen 127.0.0.1:0 --tls-cert cert.pem --tls-key key.pem`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

struct Args {
    threads: usize,
    listen: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            eprintln!("usage: [--threads N] [--listen IP:PORT] [--tls-cert PEM --tls-key PEM]");
            return ExitCode::from(2);
        }
    };
    let acceptor = match &args.tls {
        Some((cert, key)) => match acceptor(cert, key) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args.listen, acceptor)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot serve {}: {e}", args.listen);
            ExitCode::FAILURE
        }
    }
}

fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 8443));
    let (mut cert, mut key) = (None, None);
    while let Some(word) = words.next() {
        let value = words.next().ok_or(format!("{word} needs a value"))?;
        match word.as_str() {
            "--threads" => {
                threads = match value.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("--threads takes a positive number, not {value:?}")),
                }
            }
            "--listen" => {
                listen = value
                    .parse()
                    .map_err(|_| format!("--listen takes IP:PORT, not {value:?}"))?;
            }
            "--tls-cert" => cert = Some(PathBuf::from(value)),
            "--tls-key" => key = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok(Args {
        threads,
        listen,
        tls,
    })
}

fn acceptor(cert: &PathBuf, key: &PathBuf) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("the ticketer: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve(addr: SocketAddr, tls: Option<TlsAcceptor>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{}", listener.local_addr()?);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service_fn(hello))
                        .await;
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service_fn(hello))
                        .await;
                }
            }
        });
    }
}

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => (StatusCode::OK, "Hello World\n"),
        (_, "/") => (StatusCode::METHOD_NOT_ALLOWED, ""),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}
