//! HTTPS: one rustls configuration for the whole process.
//!
//! Contract:
//!
//! - **One [`rustls::ServerConfig`] for every shard and incarnation**,
//!   made once at start by the coordinator ([`Tls::load`]) and shared by
//!   `Arc`. Its session-ticket keys (`tickets.rs`, TLS 1.3 tickets and TLS
//!   1.2 ticket extensions) and its session-ID cache (TLS 1.2) are the same
//!   whichever shard answers, so a client resumes on any shard, and across
//!   a rolling reload (the process, and so the configuration, stays).
//! - **Ticket keys survive a binary upgrade**: [`Tls::export_ticket_keys`]
//!   gives the bytes the coordinator hands to the new process with its
//!   sockets; the new one starts with them ([`Tls::load`]'s `inherited`).
//!   The session-ID cache is memory only: TLS 1.2 clients without tickets
//!   make a full handshake after an upgrade.
//! - **Certificates reload in place** ([`Tls::reload`], on SIGHUP and
//!   `POST /reload`): the files are read and checked again, and a good
//!   pair replaces the served one atomically ([`Resolver`]); handshakes
//!   from then on present it, open connections carry on. A bad pair is
//!   logged and the old one kept.
//! - **ALPN** offers [`ALPN_H2`], then [`ALPN_HTTP1`]; the connection (`http/connection.rs`)
//!   chooses its protocol from what was negotiated, in one place.
//! - The crypto provider is rustls's `ring` (no C++ toolchain or CMake,
//!   links into the static glibc binary, docs/https.md).

mod certs;
mod tickets;

use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;

use crate::Error;
use crate::config::TlsFiles;
use crate::error::ErrorKind;
use tickets::TicketKeys;

/// The ALPN name of HTTP/2 over TLS, offered first.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// The ALPN name of HTTP/1.1.
pub(crate) const ALPN_HTTP1: &[u8] = b"http/1.1";

/// TLS 1.2 sessions the session-ID cache holds (for the whole process).
const SESSION_CACHE: usize = 16 * 1024;

/// The process's TLS state; see the module docs.
#[derive(Debug)]
pub(crate) struct Tls {
    files: TlsFiles,
    config: Arc<rustls::ServerConfig>,
    resolver: Arc<Resolver>,
    tickets: Arc<TicketKeys>,
    provider: Arc<CryptoProvider>,
}

impl Tls {
    /// Reads and checks the files and builds the one configuration; with
    /// the ticket keys a previous process exported, if any (bytes that are
    /// not an export are ignored with a warning: fresh keys).
    pub(crate) fn load(files: &TlsFiles, inherited: Option<&[u8]>) -> Result<Tls, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let served = certs::load(files, &provider).map_err(|e| Error::new(ErrorKind::Tls(e)))?;
        let tickets = match inherited.map(TicketKeys::import) {
            Some(Some(keys)) => {
                tracing::debug!("session-ticket keys taken over from the previous process");
                keys
            }
            inherited => {
                if inherited.is_some() {
                    tracing::warn!(
                        "the previous process's session-ticket keys are unreadable; new keys (clients make a full handshake once)"
                    );
                }
                TicketKeys::new().ok_or_else(|| {
                    Error::new(ErrorKind::Tls(
                        "cannot make session-ticket keys: the system's random source failed"
                            .to_owned(),
                    ))
                })?
            }
        };
        let tickets = Arc::new(tickets);
        let resolver = Arc::new(Resolver {
            served: RwLock::new(served),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::Tls(format!("cannot configure TLS: {e}"))))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        config.ticketer = tickets.clone();
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        Ok(Tls {
            files: files.clone(),
            config: Arc::new(config),
            resolver,
            tickets,
            provider,
        })
    }

    /// The configuration every shard's handshakes use.
    pub(crate) fn server_config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }

    /// Reads the files again: a good pair is served from the next handshake
    /// on; a bad one is logged and the current one kept. Whether it changed.
    pub(crate) fn reload(&self) -> bool {
        match certs::load(&self.files, &self.provider) {
            Ok(served) => {
                *self
                    .resolver
                    .served
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = served;
                tracing::info!(
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded; new handshakes use it"
                );
                true
            }
            Err(why) => {
                tracing::error!("TLS certificate not reloaded, the current one stays: {why}");
                false
            }
        }
    }

    /// The live session-ticket keys, for the next process of a binary
    /// upgrade (secret: never logged, written to a file or the environment).
    pub(crate) fn export_ticket_keys(&self) -> Vec<u8> {
        self.tickets.export()
    }
}

/// The certificate handshakes present, swapped whole on reload.
#[derive(Debug)]
struct Resolver {
    served: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.served
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}
