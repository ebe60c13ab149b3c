//! Address-like field values: CIDRs (`10.66.0.0/16`), addresses with an
//! optional prefix length (a Node's `ipv4Address: 10.0.11.1/31`), and BGP peer
//! addresses with an optional port (`peerIP: 10.0.0.1:1790`, `[fd00::1]:179`).
//!
//! Each type parses once when a document is read, keeps the text the user
//! wrote (so `get -o yaml` shows it back unchanged), and reports a clear
//! message when the text is wrong.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP network written as `address/prefix-length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(IpNet);

impl Cidr {
    /// The network as written (host bits may be set; see [`Cidr::is_masked`]).
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The network with host bits cleared.
    pub fn network(&self) -> IpNet {
        self.0.trunc()
    }

    /// True when no host bits are set (`10.0.0.0/8`, not `10.0.0.1/8`).
    pub fn is_masked(&self) -> bool {
        self.0.trunc() == self.0
    }

    /// True for an IPv6 network.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.0, IpNet::V6(_))
    }

    /// Prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// True when the two networks share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let (a, b) = (self.network(), other.network());
        a.contains(&b.network()) || b.contains(&a.network())
    }
}

impl From<IpNet> for Cidr {
    fn from(net: IpNet) -> Self {
        Cidr(net)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let Some((addr, len)) = t.split_once('/') else {
            return Err(format!(
                "invalid CIDR \"{s}\": missing \"/prefix-length\" (for example 10.66.0.0/16)"
            ));
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid CIDR \"{s}\": \"{addr}\" is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("invalid CIDR \"{s}\": prefix length must be 0..={max}"))?;
        IpNet::new(ip, len)
            .map(Cidr)
            .map_err(|e| format!("invalid CIDR \"{s}\": {e}"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IP address with an optional prefix length, as in a Node's
/// `bgp.ipv4Address: 10.0.11.1/31` (the address and the subnet it is on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterfaceAddress {
    /// The address itself.
    pub addr: IpAddr,
    /// The prefix length of the subnet, if given.
    pub prefix_len: Option<u8>,
}

impl InterfaceAddress {
    /// The subnet the address is on (a host route if no length was given).
    pub fn subnet(&self) -> IpNet {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        IpNet::new(self.addr, self.prefix_len.unwrap_or(max))
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(self.addr))
    }
}

impl FromStr for InterfaceAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        match t.split_once('/') {
            None => t
                .parse()
                .map(|addr| InterfaceAddress {
                    addr,
                    prefix_len: None,
                })
                .map_err(|_| format!("invalid IP address \"{s}\"")),
            Some(_) => {
                let c: Cidr = t.parse()?;
                Ok(InterfaceAddress {
                    addr: c.net().addr(),
                    prefix_len: Some(c.prefix_len()),
                })
            }
        }
    }
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len {
            Some(l) => write!(f, "{}/{l}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl Serialize for InterfaceAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InterfaceAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A plain IP address field (no prefix, no port), e.g. a tunnel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpAddress(pub IpAddr);

impl FromStr for IpAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse()
            .map(IpAddress)
            .map_err(|_| format!("invalid IP address \"{s}\""))
    }
}

impl fmt::Display for IpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for IpAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A BGP peer address: `10.0.0.1`, `10.0.0.1:1790`, `fd00::1` or
/// `[fd00::1]:1790` (Calico's `peerIP` with its optional port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    /// The peer's address.
    pub ip: IpAddr,
    /// The peer's TCP port, if not 179.
    pub port: Option<u16>,
}

impl FromStr for PeerAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(PeerAddress { ip, port: None });
        }
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (h, p) = rest
                .split_once("]:")
                .ok_or_else(|| format!("invalid peer address \"{s}\": expected [IPv6]:port"))?;
            (h, p)
        } else {
            t.rsplit_once(':')
                .ok_or_else(|| format!("invalid peer address \"{s}\": expected IP or IP:port"))?
        };
        let ip: IpAddr = host.parse().map_err(|_| {
            format!("invalid peer address \"{s}\": \"{host}\" is not an IP address")
        })?;
        if t.starts_with('[') != ip.is_ipv6() {
            return Err(format!(
                "invalid peer address \"{s}\": an IPv6 address with a port is written [address]:port"
            ));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid peer address \"{s}\": port must be 1..=65535"))?;
        Ok(PeerAddress {
            ip,
            port: Some(port),
        })
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.ip) {
            (None, ip) => write!(f, "{ip}"),
            (Some(p), IpAddr::V4(ip)) => write!(f, "{ip}:{p}"),
            (Some(p), IpAddr::V6(ip)) => write!(f, "[{ip}]:{p}"),
        }
    }
}

impl Serialize for PeerAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_errors_say_what_is_wrong() {
        assert!(
            "10.0.0.0"
                .parse::<Cidr>()
                .expect_err("must fail")
                .contains("missing \"/prefix-length\"")
        );
        assert!(
            "10.0.0.0/33"
                .parse::<Cidr>()
                .expect_err("must fail")
                .contains("0..=32")
        );
        assert!(
            "10.0.0/8"
                .parse::<Cidr>()
                .expect_err("must fail")
                .contains("not an IP address")
        );
        let c: Cidr = "10.66.1.0/16".parse().expect("parses");
        assert!(!c.is_masked());
        assert_eq!(c.network().to_string(), "10.66.0.0/16");
    }

    #[test]
    fn cidr_overlap() {
        let a: Cidr = "10.66.0.0/16".parse().expect("a");
        let b: Cidr = "10.66.4.0/24".parse().expect("b");
        let c: Cidr = "10.67.0.0/16".parse().expect("c");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }

    #[test]
    fn peer_address_forms() {
        let p: PeerAddress = "10.0.0.1:1790".parse().expect("v4 port");
        assert_eq!(p.port, Some(1790));
        let p: PeerAddress = "[fd00::1]:179".parse().expect("v6 port");
        assert_eq!(p.to_string(), "[fd00::1]:179");
        let p: PeerAddress = "fd00::1".parse().expect("v6");
        assert_eq!(p.port, None);
        assert!("10.0.0.1:0".parse::<PeerAddress>().is_err());
        assert!("10.0.0:179".parse::<PeerAddress>().is_err());
    }
}
