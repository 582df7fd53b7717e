//! `[limits]`: what one client may cost the server. Connection admission (a global
//! limit, a limit per client IP, an accept rate per IP, and the IPs exempt from the
//! per-IP limits) and the timeouts of the connection phases that had none of their own.
//!
//! The schema, its defaults and its validation live here; the admission logic is
//! `server::admission`, and the drivers read the timeouts. Timeouts that already had a
//! home stay there: `streams.idle_timeout_ms` (publisher input),
//! `streams.send_stall_timeout_ms` (viewer writes), `hls.blocking_timeout_ms`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections open at once over every port and shard; refused beyond it. Unset:
    /// 90% of the open-files limit at start (the rest stays free for recordings and
    /// the accept of a connection that is then refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Connections one client IP (an IPv6 /64) may hold open on one shard; 0 =
    /// unlimited; default 64.
    pub max_connections_per_ip: u32,
    /// New connections one client IP may open per second on one shard, sustained;
    /// 0 = unlimited; default 20.
    pub accept_rate_per_ip: u32,
    /// Connections one client IP may open at once above the rate; default 40.
    pub accept_burst_per_ip: u32,
    /// IPs and CIDRs exempt from the per-IP limits (not from `max_connections`);
    /// default loopback (`127.0.0.0/8`, `::1`).
    pub allow: Vec<Cidr>,
    /// An RTMP connection must finish the handshake, connect and a publish or play
    /// within this long of its start (and start a new one within this long of the end
    /// of the last one); default 10000.
    pub rtmp_handshake_timeout_ms: u64,
    /// An HTTP request head must arrive whole within this long: of the accept for a
    /// connection's first request, of its first byte on a kept-alive one. A slow
    /// trickle is cut off, not only an idle socket; default 10000.
    pub http_head_timeout_ms: u64,
    /// A kept-alive HTTP connection with no request for this long is closed; default
    /// 30000.
    pub http_keepalive_timeout_ms: u64,
    /// Peer input one shard holds in memory over all its connections (RTMP partial
    /// messages and undecoded bytes); past it, the connections holding the most are
    /// closed. Each connection is also capped at twice `rtmp.max_message_bytes`.
    /// 0 = no shard-wide cap; default 128 MiB.
    pub max_buffered_input_bytes_per_shard: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: None,
            max_connections_per_ip: 64,
            accept_rate_per_ip: 20,
            accept_burst_per_ip: 40,
            allow: vec![
                Cidr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8)
                    .expect("127.0.0.0/8 is a valid network"),
                Cidr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128)
                    .expect("::1/128 is a valid network"),
            ],
            rtmp_handshake_timeout_ms: 10_000,
            http_head_timeout_ms: 10_000,
            http_keepalive_timeout_ms: 30_000,
            max_buffered_input_bytes_per_shard: 128 << 20,
        }
    }
}

fn invalid(key: &str, value: impl fmt::Display, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("limits.{key}"),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// `validate`'s range check, for a key of this section.
fn check<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<(), ConfigError> {
    super::validate::check_range(&format!("limits.{key}"), value, range, what)
}

const MS: &str = "a whole number of milliseconds";
const COUNT: &str = "a count (0 = unlimited)";

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(n) = self.max_connections {
            check("max_connections", n, 1..=10_000_000, "a count")?;
        }
        check(
            "max_connections_per_ip",
            self.max_connections_per_ip,
            0..=1_000_000,
            COUNT,
        )?;
        check(
            "accept_rate_per_ip",
            self.accept_rate_per_ip,
            0..=1_000_000,
            "connections per second (0 = unlimited)",
        )?;
        if self.accept_rate_per_ip > 0 {
            check(
                "accept_burst_per_ip",
                self.accept_burst_per_ip,
                1..=1_000_000,
                "a count (with accept_rate_per_ip set)",
            )?;
        }
        check(
            "rtmp_handshake_timeout_ms",
            self.rtmp_handshake_timeout_ms,
            1000..=120_000,
            MS,
        )?;
        check(
            "http_head_timeout_ms",
            self.http_head_timeout_ms,
            1000..=120_000,
            MS,
        )?;
        check(
            "http_keepalive_timeout_ms",
            self.http_keepalive_timeout_ms,
            1000..=3_600_000,
            MS,
        )?;
        if self.max_buffered_input_bytes_per_shard != 0 {
            check(
                "max_buffered_input_bytes_per_shard",
                self.max_buffered_input_bytes_per_shard,
                (1 << 20)..=(64 << 30),
                "bytes (or 0 for no limit)",
            )?;
        }
        Ok(())
    }

    /// Whether `ip` is on the allow list.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip))
    }

    /// The global connection limit in force, given the process's open-files limit.
    pub fn effective_max_connections(&self, open_files: u64) -> u64 {
        match self.max_connections {
            Some(n) => u64::from(n),
            None => (open_files / 10 * 9).max(1),
        }
    }
}

/// An IP network written `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a single
/// host). Host bits below the prefix must be zero, so a typo in the prefix is caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= bits).then(|| Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what an IPv4 client looks like on
    /// a socket bound to `::`) match as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

const CIDR_EXPECTED: &str =
    "an IP address or a network such as \"10.0.0.0/8\" or \"2001:db8::/32\"";

impl FromStr for Cidr {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| invalid("allow", format!("\"{text}\""), why);
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad(CIDR_EXPECTED.into()))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix =
            match prefix {
                None => bits,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(|| {
                    bad(format!("{CIDR_EXPECTED}, with a prefix from 0 to {bits}"))
                })?,
            };
        let cidr = Cidr::new(addr, prefix).ok_or_else(|| bad(CIDR_EXPECTED.into()))?;
        if cidr.addr != addr {
            return Err(bad(format!(
                "a network address without host bits; did you mean \"{cidr}\"?"
            )));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == bits {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e: ConfigError| match e {
            ConfigError::Invalid {
                value, expected, ..
            } => serde::de::Error::custom(format!("{value}: expected {expected}")),
            other => serde::de::Error::custom(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_valid_and_exempt_only_loopback() {
        let limits = LimitsConfig::default();
        limits.validate().unwrap();
        assert!(limits.allows(ip("127.0.0.1")));
        assert!(limits.allows(ip("127.9.9.9")));
        assert!(limits.allows(ip("::1")));
        assert!(limits.allows(ip("::ffff:127.0.0.1")));
        assert!(!limits.allows(ip("10.0.0.1")));
        assert!(!limits.allows(ip("::2")));
        assert_eq!(limits.effective_max_connections(20_000), 18_000);
        assert_eq!(limits.effective_max_connections(0), 1);
    }

    #[test]
    fn cidrs_parse_match_and_print_canonically() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        assert!(!net.contains(ip("10.2.0.0")));
        assert_eq!(net.to_string(), "10.1.0.0/16");
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(host.to_string(), "192.0.2.7");
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("::1")));
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        let err = |s: &str| s.parse::<Cidr>().unwrap_err().to_string();
        assert!(err("10.0.0.1/8").contains("did you mean \"10.0.0.0/8\""));
        assert!(err("10.0.0.0/33").contains("prefix from 0 to 32"));
        assert!(err("localhost").starts_with("limits.allow = \"localhost\": expected"));
        assert!(err("::/129").contains("from 0 to 128"));
    }

    #[test]
    fn toml_round_trip_and_errors_name_the_key() {
        let text = "allow = [\"10.0.0.0/8\", \"::1\"]\nmax_connections = 500\n";
        let limits: LimitsConfig = toml::from_str(text).unwrap();
        assert_eq!(limits.max_connections, Some(500));
        assert_eq!(limits.allow.len(), 2);
        let back: LimitsConfig = toml::from_str(&toml::to_string(&limits).unwrap()).unwrap();
        assert_eq!(back, limits);
        let err = toml::from_str::<LimitsConfig>("allow = [\"10.0.0.1/8\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean"), "{err}");
        let bad = LimitsConfig {
            http_head_timeout_ms: 500,
            ..LimitsConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "limits.http_head_timeout_ms = 500: expected a whole number of milliseconds \
             from 1000 to 120000"
        );
        let bad = LimitsConfig {
            accept_burst_per_ip: 0,
            ..LimitsConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
