//! HTTPS in the tests: certificates made on the spot (rcgen) and a rustls
//! client that says whether each connection resumed a session and which
//! certificate the server presented.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, StreamOwned};

use crate::connect;

/// A test certificate authority.
pub struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A leaf certificate for `localhost` and 127.0.0.1, with its key, as PEM.
#[derive(Debug)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new() -> Ca {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "forkless test CA");
        let cert = params.self_signed(&key).expect("the CA certificate");
        Ca { key, cert }
    }

    /// The CA certificate as PEM (for `curl --cacert`).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf named `name` (its common name), valid now.
    pub fn leaf(&self, name: &str) -> Leaf {
        self.leaf_with(name, |_| {})
    }

    /// A leaf whose parameters `adjust` changes (validity, say).
    pub fn leaf_with(&self, name: &str, adjust: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = KeyPair::generate().expect("a leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        adjust(&mut params);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("the leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client that trusts this CA, resuming sessions (TLS 1.3 tickets,
    /// or with `tls12` TLS 1.2 session IDs only).
    pub fn client(&self, tls12: bool) -> TlsClient {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.der().clone())
            .expect("the CA as a root");
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = Resumption::in_memory_sessions(256)
            .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsClient {
            config: Arc::new(config),
        }
    }
}

impl Default for Ca {
    fn default() -> Self {
        Ca::new()
    }
}

impl Leaf {
    /// Writes the certificate and key as `cert.pem` and `key.pem` in `dir`.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert.pem");
        std::fs::write(&key, &self.key_pem).expect("write key.pem");
        (cert, key)
    }
}

/// A rustls client with its session cache.
#[derive(Debug)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
}

/// A response over TLS, with what the handshake did.
pub struct TlsResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The handshake resumed a session.
    pub resumed: bool,
    /// The leaf certificate the server presented (DER).
    pub cert: Vec<u8>,
    /// The protocol ALPN settled on.
    pub alpn: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .field("resumed", &self.resumed)
            .field("cert_bytes", &self.cert.len())
            .field("alpn", &self.alpn.as_deref().map(String::from_utf8_lossy))
            .finish()
    }
}

impl TlsResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTPS connection.
#[derive(Debug)]
pub struct TlsConnection {
    stream: BufReader<StreamOwned<ClientConnection, std::net::TcpStream>>,
}

impl TlsClient {
    /// Opens a connection and runs its handshake.
    pub fn open(&self, addr: SocketAddr) -> std::io::Result<TlsConnection> {
        let name = ServerName::try_from("localhost").expect("a server name");
        let conn =
            ClientConnection::new(self.config.clone(), name).map_err(std::io::Error::other)?;
        let mut stream = StreamOwned::new(conn, connect(addr));
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsConnection {
            stream: BufReader::new(stream),
        })
    }

    /// `GET path` on a new connection.
    pub fn get(&self, addr: SocketAddr, path: &str) -> std::io::Result<TlsResponse> {
        self.open(addr)?.get(path)
    }
}

impl TlsConnection {
    /// The TLS stream itself (for a WebSocket client, say).
    pub fn into_stream(self) -> StreamOwned<ClientConnection, std::net::TcpStream> {
        self.stream.into_inner()
    }

    /// Sends `GET path` and reads the response (`Content-Length` framed).
    pub fn get(&mut self, path: &str) -> std::io::Result<TlsResponse> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let stream = self.stream.get_mut();
        stream.write_all(request.as_bytes())?;
        stream.flush()?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line)?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body)?;
        let conn = &self.stream.get_ref().conn;
        Ok(TlsResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
            cert: conn
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|c: &CertificateDer<'_>| c.to_vec())
                .unwrap_or_default(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        })
    }
}
