//! One server per port: every shard's listener sets SO_REUSEPORT so that all shards
//! share a port, but the kernel lets *any* process of the same user join that group,
//! and would then split new connections between the two servers without a word. So
//! before the shards bind, the process claims each TCP address it will listen on:
//!
//! 1. a lock: an abstract Unix socket named after the address
//!    (`@shardcast/tcp/127.0.0.1:1935`). Binding it fails while another process holds
//!    it, the kernel frees it when the holder exits (even by SIGKILL), it needs no
//!    file or directory (nothing stale after a crash, nothing `PrivateTmp` hides), and
//!    it lives in the network namespace, exactly like the port. It is held for the
//!    life of the process, so two servers starting at the same moment cannot both pass
//!    step 2 before either binds;
//! 2. a probe: a TCP socket bound to the address *without* SO_REUSEPORT (with
//!    SO_REUSEADDR, so connections of a previous run in TIME_WAIT do not count), then
//!    closed. It fails if any socket listens on an overlapping address, whoever owns it
//!    (another shardcast, or another server using SO_REUSEPORT), including a wildcard
//!    bind against a specific one.
//!
//! A probe held open instead of closed would not work: a bound socket without
//! SO_REUSEPORT keeps our own shards from joining the port. A lock file under the state
//! directory would name the directory, not the port: two instances with different
//! working directories would both get theirs.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    UnixAddr,
};

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("address in use: another shardcast holds port {port}")]
    Locked { addr: SocketAddr, port: u16 },
    #[error("address in use: another process listens on port {port}")]
    InUse { addr: SocketAddr, port: u16 },
    #[error("cannot check port {port} ({addr}): {source}")]
    Probe {
        addr: SocketAddr,
        port: u16,
        #[source]
        source: io::Error,
    },
}

/// Held for the life of the process: no other shardcast can claim the address.
#[derive(Debug)]
pub struct PortClaim {
    addr: SocketAddr,
    _lock: OwnedFd,
}

impl PortClaim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Claim a TCP address this process is about to listen on (see the module note).
pub fn claim_tcp(addr: SocketAddr) -> Result<PortClaim, ClaimError> {
    let port = addr.port();
    let probe_err = |e: Errno| ClaimError::Probe {
        addr,
        port,
        source: io::Error::from_raw_os_error(e as i32),
    };
    let lock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(probe_err)?;
    let name =
        UnixAddr::new_abstract(format!("shardcast/tcp/{addr}").as_bytes()).map_err(probe_err)?;
    match bind(std::os::fd::AsRawFd::as_raw_fd(&lock), &name) {
        Ok(()) => {}
        Err(Errno::EADDRINUSE) => return Err(ClaimError::Locked { addr, port }),
        Err(e) => return Err(probe_err(e)),
    }
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let probe =
        socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(probe_err)?;
    setsockopt(&probe, sockopt::ReuseAddr, &true).map_err(probe_err)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&probe);
    let bound = match addr {
        SocketAddr::V4(v4) => bind(fd, &SockaddrIn::from(v4)),
        SocketAddr::V6(v6) => bind(fd, &SockaddrIn6::from(v6)),
    };
    drop(probe);
    match bound {
        Ok(()) => Ok(PortClaim { addr, _lock: lock }),
        Err(Errno::EADDRINUSE) => Err(ClaimError::InUse { addr, port }),
        Err(e) => Err(probe_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    fn free_addr() -> SocketAddr {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn a_second_claim_fails_until_the_first_is_dropped() {
        let addr = free_addr();
        let first = claim_tcp(addr).unwrap();
        let err = claim_tcp(addr).unwrap_err();
        assert!(matches!(err, ClaimError::Locked { .. }), "{err}");
        assert!(
            err.to_string()
                .ends_with(&format!("holds port {}", addr.port())),
            "{err}"
        );
        drop(first);
        claim_tcp(addr).unwrap();
    }

    #[test]
    fn a_foreign_listener_with_so_reuseport_is_found() {
        let addr = free_addr();
        let other = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        setsockopt(&other, sockopt::ReusePort, &true).unwrap();
        let SocketAddr::V4(v4) = addr else {
            unreachable!()
        };
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&other),
            &SockaddrIn::from(v4),
        )
        .unwrap();
        nix::sys::socket::listen(&other, nix::sys::socket::Backlog::new(8).unwrap()).unwrap();
        let err = claim_tcp(addr).unwrap_err();
        assert!(matches!(err, ClaimError::InUse { .. }), "{err}");
        // A wildcard bind on the same port overlaps it too.
        let wildcard = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
        assert!(matches!(
            claim_tcp(wildcard).unwrap_err(),
            ClaimError::InUse { .. }
        ));
        drop(other);
        // Our own SO_REUSEPORT listeners can bind after a claim.
        let _claim = claim_tcp(addr).unwrap();
        let ours = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        setsockopt(&ours, sockopt::ReusePort, &true).unwrap();
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&ours),
            &SockaddrIn::from(v4),
        )
        .unwrap();
    }
}
