//! Where each shard's listening sockets come from, and who keeps them.
//!
//! The coordinator binds (or inherits) every shard's sockets before any shard
//! starts and keeps them for the life of the process: each incarnation of a
//! shard gets descriptors of its own of the same sockets. So a restarted or
//! reloaded shard accepts from the very queue its predecessor did (nothing
//! waiting in it is lost), and a binary upgrade hands the same sockets on to
//! the next process.
//!
//! Bound here: one SO_REUSEPORT socket per shard and address, the first
//! resolving port 0 for the others. Inherited (`LISTEN_FDS`, from systemd or
//! from the forkless process this one upgrades): SO_REUSEPORT sockets of one
//! address are dealt out to the shards in turn (a shard may get several when
//! the previous process ran more shards; shards left without one bind a new
//! one on that address), and a socket without SO_REUSEPORT is shared by every
//! shard (one accept queue).

use std::net::{SocketAddr, TcpListener};

use super::systemd::Inherited;
use crate::Error;
use crate::error::ErrorKind;
use crate::shard;

/// The `LISTEN_FDNAMES` name of the admin socket in a binary upgrade.
pub(super) const ADMIN_NAME: &str = "forkless-admin";

/// The `LISTEN_FDNAMES` name of a serving socket in a binary upgrade.
pub(super) const HTTP_NAME: &str = "forkless-http";

/// Every listening socket of the process.
#[derive(Debug)]
pub(super) struct Sockets {
    /// Per shard: its sockets, over every address.
    pub(super) shards: Vec<Vec<TcpListener>>,
    /// The addresses served, resolved, in order.
    pub(super) addrs: Vec<SocketAddr>,
    /// An inherited admin socket.
    pub(super) admin: Option<TcpListener>,
}

/// Binds one socket per shard on every address; an address another
/// process already listens on is refused unless `share` says otherwise.
pub(super) fn bind(addrs: &[SocketAddr], shards: usize, share: bool) -> Result<Sockets, Error> {
    let mut sockets = Sockets {
        shards: (0..shards).map(|_| Vec::new()).collect(),
        addrs: Vec::with_capacity(addrs.len()),
        admin: None,
    };
    for &addr in addrs {
        if !share && addr.port() != 0 {
            let taken = shard::listener::is_taken(addr)
                .map_err(|source| Error::new(ErrorKind::Bind { addr, source }))?;
            if taken {
                let source = std::io::Error::from(std::io::ErrorKind::AddrInUse);
                return Err(Error::new(ErrorKind::Bind { addr, source }));
            }
        }
        let first = bind_one(addr)?;
        let resolved = first
            .local_addr()
            .map_err(|e| Error::io("cannot read a listener's address", e))?;
        sockets.addrs.push(resolved);
        let mut first = Some(first);
        for owned in &mut sockets.shards {
            let socket = match first.take() {
                Some(socket) => socket,
                None => bind_one(resolved)?,
            };
            owned.push(socket);
        }
    }
    Ok(sockets)
}

/// Takes over inherited sockets; see the module docs.
pub(super) fn adopt(inherited: Vec<Inherited>, shards: usize) -> Result<Sockets, Error> {
    let mut sockets = Sockets {
        shards: (0..shards).map(|_| Vec::new()).collect(),
        addrs: Vec::new(),
        admin: None,
    };
    // By address, in the order they came.
    let mut groups: Vec<(SocketAddr, Vec<TcpListener>)> = Vec::new();
    for Inherited { listener, name } in inherited {
        if name == ADMIN_NAME {
            sockets.admin = Some(listener);
            continue;
        }
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read an inherited listener's address", e))?;
        match groups.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, group)) => group.push(listener),
            None => groups.push((addr, vec![listener])),
        }
    }
    for (addr, group) in groups {
        sockets.addrs.push(addr);
        let shared = group
            .iter()
            .any(|l| !socket2::SockRef::from(l).reuse_port().unwrap_or(false));
        if shared {
            for owned in &mut sockets.shards {
                owned.push(dup(&group[0])?);
            }
            continue;
        }
        let dealt = group.len();
        for (i, socket) in group.into_iter().enumerate() {
            if let Some(owned) = sockets.shards.get_mut(i % shards.max(1)) {
                owned.push(socket);
            }
        }
        for owned in sockets.shards.iter_mut().skip(dealt) {
            owned.push(bind_one(addr)?);
        }
    }
    Ok(sockets)
}

/// Binds the admin address.
pub(super) fn bind_admin(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).map_err(|e| {
        Error::config(format!(
            "cannot listen on the admin address {addr}: {e}; choose another --admin"
        ))
    })
}

/// A descriptor of `socket` for one incarnation of a shard.
pub(super) fn dup(socket: &TcpListener) -> Result<TcpListener, Error> {
    socket
        .try_clone()
        .map_err(|e| Error::io("cannot duplicate a listening socket", e))
}

fn bind_one(addr: SocketAddr) -> Result<TcpListener, Error> {
    shard::listener::bind(addr).map_err(|source| Error::new(ErrorKind::Bind { addr, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inherited(listener: TcpListener) -> Inherited {
        Inherited {
            listener,
            name: HTTP_NAME.to_owned(),
        }
    }

    #[test]
    fn every_shard_gets_a_socket_per_address_on_one_resolved_port() {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
        let sockets = bind(&[any, any], 3, false).expect("bind");
        assert_eq!(sockets.addrs.len(), 2);
        assert_ne!(sockets.addrs[0].port(), 0);
        for owned in &sockets.shards {
            let ports: Vec<u16> = owned
                .iter()
                .map(|l| l.local_addr().expect("addr").port())
                .collect();
            assert_eq!(ports, [sockets.addrs[0].port(), sockets.addrs[1].port()]);
        }
    }

    #[test]
    fn inherited_sockets_are_dealt_out_and_missing_ones_bound() {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
        let old = bind(&[any], 3, false).expect("bind");
        let port = old.addrs[0];
        let handed: Vec<Inherited> = old.shards.into_iter().flatten().map(inherited).collect();

        // Three sockets to two shards: one shard accepts on two of them.
        let fewer = adopt(handed, 2).expect("adopt");
        assert_eq!(fewer.addrs, [port]);
        let counts: Vec<usize> = fewer.shards.iter().map(Vec::len).collect();
        assert_eq!(counts, [2, 1]);

        // Three sockets to four shards: the fourth binds its own.
        let handed: Vec<Inherited> = fewer.shards.into_iter().flatten().map(inherited).collect();
        let more = adopt(handed, 4).expect("adopt");
        let counts: Vec<usize> = more.shards.iter().map(Vec::len).collect();
        assert_eq!(counts, [1, 1, 1, 1]);
        assert_eq!(more.shards[3][0].local_addr().expect("addr"), port);
    }

    #[test]
    fn a_socket_without_reuseport_is_shared_and_the_admin_socket_set_apart() {
        let plain = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = plain.local_addr().expect("addr");
        let admin = TcpListener::bind("127.0.0.1:0").expect("bind");
        let handed = vec![
            inherited(plain),
            Inherited {
                listener: admin,
                name: ADMIN_NAME.to_owned(),
            },
        ];
        let sockets = adopt(handed, 2).expect("adopt");
        assert!(sockets.admin.is_some());
        assert_eq!(sockets.addrs, [port]);
        for owned in &sockets.shards {
            assert_eq!(owned.len(), 1);
            assert_eq!(owned[0].local_addr().expect("addr"), port);
        }
    }
}
