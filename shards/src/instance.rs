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
//! 2. a look at the kernel's table of listening sockets (`/proc/self/net/tcp` and
//!    `tcp6`, this network namespace): any socket in LISTEN on the same port and an
//!    overlapping address (the same one, or a wildcard on either side), whoever owns
//!    it (another shardcast, another server using SO_REUSEPORT), is a conflict.
//!
//! The obvious probe, a bind without SO_REUSEPORT, does not work: it also fails on
//! connections of a previous run still in TIME_WAIT (accepted sockets inherit the
//! listener's options, and ours have no SO_REUSEADDR, so even a SO_REUSEADDR probe
//! conflicts with them), which would stop every restart for a minute. A probe held
//! open would keep our own shards out. A lock file under the state directory would
//! name the directory, not the port: two instances with different working
//! directories would both get theirs.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};

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
    match listener_on(addr) {
        Ok(None) => {}
        Ok(Some(_)) => return Err(ClaimError::InUse { addr, port }),
        Err(e) => {
            // Without /proc the lock still keeps a second shardcast out.
            tracing::warn!(%addr, error = %e, "cannot read the listening sockets; only another shardcast is checked for");
        }
    }
    Ok(PortClaim { addr, _lock: lock })
}

/// A socket listening on `addr`'s port at an address overlapping `addr`, if any.
fn listener_on(addr: SocketAddr) -> io::Result<Option<SocketAddr>> {
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(t) => t,
            // No IPv6 in this kernel or namespace.
            Err(e) if e.kind() == io::ErrorKind::NotFound && table.ends_with('6') => continue,
            Err(e) => return Err(e),
        };
        let found = text
            .lines()
            .skip(1)
            .filter_map(parse_listener)
            .find(|l| l.port() == addr.port() && overlaps(l.ip(), addr.ip()));
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// TCP state 0x0A is LISTEN (include/net/tcp_states.h).
const TCP_LISTEN: &str = "0A";

/// The local address of a `/proc/net/tcp{,6}` line in LISTEN state. Addresses are
/// printed as 32-bit words in host byte order, ports in hex.
fn parse_listener(line: &str) -> Option<SocketAddr> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    if state != TCP_LISTEN {
        return None;
    }
    let (ip_hex, port_hex) = local.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in ip_hex.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether two listening addresses take the same connections: equal, or a wildcard
/// (`0.0.0.0` for IPv4; `::`, dual-stack, for both).
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let (a, b) = (a.to_canonical(), b.to_canonical());
    let v6_any = |ip: IpAddr| ip.is_ipv6() && ip.is_unspecified();
    let v4_any_over =
        |any: IpAddr, other: IpAddr| any.is_ipv4() && any.is_unspecified() && other.is_ipv4();
    a == b || v6_any(a) || v6_any(b) || v4_any_over(a, b) || v4_any_over(b, a)
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
    fn listen_lines_parse_in_host_byte_order() {
        let v4 = "   0: 0100007F:0793 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1";
        assert_eq!(parse_listener(v4), Some("127.0.0.1:1939".parse().unwrap()));
        let tw = "   1: 0100007F:0793 0100007F:D3A2 06 00000000:00000000 03:00000000 00000000     0        0 0 3";
        assert_eq!(parse_listener(tw), None);
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2 1";
        assert_eq!(parse_listener(v6), Some("[::1]:8080".parse().unwrap()));
        let any = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(overlaps(any("0.0.0.0"), any("127.0.0.1")));
        assert!(overlaps(any("::"), any("10.0.0.1")));
        assert!(overlaps(any("::ffff:127.0.0.1"), any("127.0.0.1")));
        assert!(!overlaps(any("0.0.0.0"), any("::1")));
        assert!(!overlaps(any("127.0.0.1"), any("127.0.0.2")));
    }

    #[test]
    fn connections_left_in_time_wait_do_not_count() {
        use std::io::Read;
        let addr = free_addr();
        let SocketAddr::V4(v4) = addr else {
            unreachable!()
        };
        // Like a shard's listener: SO_REUSEPORT, no SO_REUSEADDR.
        let listener = reuseport_listener(v4);
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = nix::sys::socket::accept(std::os::fd::AsRawFd::as_raw_fd(&listener))
            .map(|fd| (fd, ()))
            .unwrap();
        // The server closes first, so its side goes to TIME_WAIT.
        nix::unistd::close(accepted).unwrap();
        let mut c = client;
        let _ = c.read(&mut [0u8; 1]);
        drop(c);
        drop(listener);
        claim_tcp(addr).expect("TIME_WAIT connections of a previous run are no conflict");
    }

    fn reuseport_listener(v4: std::net::SocketAddrV4) -> OwnedFd {
        use nix::sys::socket::{listen, setsockopt, sockopt, Backlog, SockaddrIn};
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4)).unwrap();
        listen(&fd, Backlog::new(8).unwrap()).unwrap();
        fd
    }

    #[test]
    fn a_foreign_listener_with_so_reuseport_is_found() {
        let addr = free_addr();
        let SocketAddr::V4(v4) = addr else {
            unreachable!()
        };
        let other = reuseport_listener(v4);
        let err = claim_tcp(addr).unwrap_err();
        assert!(matches!(err, ClaimError::InUse { .. }), "{err}");
        // A wildcard bind on the same port overlaps it too.
        let wildcard = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
        assert!(matches!(
            claim_tcp(wildcard).unwrap_err(),
            ClaimError::InUse { .. }
        ));
        drop(other);
        // Our own SO_REUSEPORT listeners can listen after a claim.
        let _claim = claim_tcp(addr).unwrap();
        let _ours = [reuseport_listener(v4), reuseport_listener(v4)];
    }
}
