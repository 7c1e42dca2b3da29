//! Where each shard's listening sockets come from: bound here (the first
//! one of every address resolves port 0 for all shards), or inherited from
//! systemd or a parent process (`LISTEN_FDS`).

use std::net::{SocketAddr, TcpListener};

use crate::Error;
use crate::error::ErrorKind;
use crate::shard::{self, ListenSpec};

/// Where the shards' listeners for one address come from.
#[derive(Debug)]
pub(super) enum ListenSource {
    /// Each shard binds its own SO_REUSEPORT socket on this address.
    Bind(SocketAddr),
    /// Every shard shares one inherited socket without SO_REUSEPORT (one
    /// accept queue); each gets its own descriptor of it.
    Shared(TcpListener, SocketAddr),
}

impl ListenSource {
    pub(super) fn addr(&self) -> SocketAddr {
        match self {
            ListenSource::Bind(addr) | ListenSource::Shared(_, addr) => *addr,
        }
    }

    /// What one (re)started shard gets.
    pub(super) fn spec(&self) -> Result<ListenSpec, Error> {
        Ok(match self {
            ListenSource::Bind(addr) => ListenSpec {
                addr: *addr,
                prebound: None,
            },
            ListenSource::Shared(listener, addr) => ListenSpec {
                addr: *addr,
                prebound: Some(
                    listener
                        .try_clone()
                        .map_err(|e| Error::io("cannot share an inherited listener", e))?,
                ),
            },
        })
    }
}

/// Binds the first socket of every address (resolving port 0 once) and
/// returns them for shard 0, with where every other shard's come from.
pub(super) fn prebind(addrs: &[SocketAddr]) -> Result<(Vec<ListenSpec>, Vec<ListenSource>), Error> {
    let mut specs = Vec::with_capacity(addrs.len());
    let mut sources = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let listener = shard::listener::bind(addr)
            .map_err(|source| Error::new(ErrorKind::Bind { addr, source }))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read a listener's address", e))?;
        sources.push(ListenSource::Bind(local));
        specs.push(ListenSpec {
            addr: local,
            prebound: Some(listener),
        });
    }
    Ok((specs, sources))
}

/// Takes over inherited listening sockets: shard 0 gets each one; the
/// others bind their own when it has SO_REUSEPORT, else share it.
pub(super) fn adopt(
    inherited: Vec<TcpListener>,
) -> Result<(Vec<ListenSpec>, Vec<ListenSource>), Error> {
    let mut specs = Vec::with_capacity(inherited.len());
    let mut sources = Vec::with_capacity(inherited.len());
    for listener in inherited {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read an inherited listener's address", e))?;
        let reuse_port = socket2::SockRef::from(&listener)
            .reuse_port()
            .unwrap_or(false);
        let source = if reuse_port {
            ListenSource::Bind(addr)
        } else {
            let shared = listener
                .try_clone()
                .map_err(|e| Error::io("cannot share an inherited listener", e))?;
            ListenSource::Shared(shared, addr)
        };
        sources.push(source);
        specs.push(ListenSpec {
            addr,
            prebound: Some(listener),
        });
    }
    Ok((specs, sources))
}
