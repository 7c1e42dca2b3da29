//! Listening sockets: built by hand so every shard can share one port.
//!
//! Every socket gets SO_REUSEPORT (the kernel spreads new connections over the
//! shards' sockets) and SO_REUSEADDR (a restarted process can bind while old
//! connections sit in TIME_WAIT), and a backlog as deep as the kernel allows.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Accept queue length asked for; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 4096;

/// Binds a non-blocking, SO_REUSEPORT listening socket on `addr`.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Whether another socket already listens on `addr` (a probe bind without
/// SO_REUSEPORT fails with "address in use"; SO_REUSEADDR keeps
/// connections in TIME_WAIT from counting).
pub(crate) fn is_taken(addr: SocketAddr) -> io::Result<bool> {
    let probe = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    probe.set_reuse_address(true)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sockets_share_a_resolved_port() {
        let first =
            bind("127.0.0.1:0".parse().expect("literal address")).expect("bind an ephemeral port");
        let addr = first.local_addr().expect("local address");
        assert_ne!(addr.port(), 0);
        let second = bind(addr).expect("a second SO_REUSEPORT socket on the same port");
        assert_eq!(second.local_addr().expect("local address"), addr);
    }

    #[test]
    fn a_port_someone_listens_on_is_taken() {
        let first =
            bind("127.0.0.1:0".parse().expect("literal address")).expect("bind an ephemeral port");
        let addr = first.local_addr().expect("local address");
        assert!(is_taken(addr).expect("probe"));
        drop(first);
        assert!(!is_taken(addr).expect("probe"));
    }
}
