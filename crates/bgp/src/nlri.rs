//! Prefix types and NLRI encoding (RFC 4271 §4.3, RFC 4760 §5).
//!
//! Owns the compact, `Copy` prefix types used everywhere a route is keyed
//! (`Ipv4Prefix` is 8 bytes, `Ipv6Prefix` 17), the address family
//! identifiers, and the allocation-free NLRI field decoder. It does not know
//! about attributes or messages.
//!
//! ```text
//!   +---------------------------+
//!   |   Length (1 octet)        |
//!   +---------------------------+
//!   |   Prefix (variable)       |
//!   +---------------------------+
//! ```
//! An NLRI entry is a prefix length in bits followed by the minimum number of
//! octets holding that many bits; trailing bits must be ignored by the
//! receiver and are cleared by our types.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Address Family Identifier (IANA registry), as carried in capabilities and
/// MP_REACH/MP_UNREACH.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    /// IPv4 (1).
    pub const IPV4: Afi = Afi(1);
    /// IPv6 (2).
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent Address Family Identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    /// Unicast forwarding (1).
    pub const UNICAST: Safi = Safi(1);
    /// Multicast forwarding (2).
    pub const MULTICAST: Safi = Safi(2);
}

/// An address family the codec understands end to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 unicast (AFI 1, SAFI 1).
    Ipv4Unicast,
    /// IPv6 unicast (AFI 2, SAFI 1).
    Ipv6Unicast,
}

impl Family {
    /// The family for an AFI/SAFI pair, if we support it.
    pub fn from_afi_safi(afi: Afi, safi: Safi) -> Option<Family> {
        match (afi, safi) {
            (Afi::IPV4, Safi::UNICAST) => Some(Family::Ipv4Unicast),
            (Afi::IPV6, Safi::UNICAST) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    /// The AFI/SAFI pair of this family.
    pub fn afi_safi(self) -> (Afi, Safi) {
        match self {
            Family::Ipv4Unicast => (Afi::IPV4, Safi::UNICAST),
            Family::Ipv6Unicast => (Afi::IPV6, Safi::UNICAST),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Family::Ipv4Unicast => f.write_str("ipv4-unicast"),
            Family::Ipv6Unicast => f.write_str("ipv6-unicast"),
        }
    }
}

/// Why a prefix could not be built or parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrefixError {
    /// The prefix length exceeds the address width (32 or 128).
    #[error("prefix length {len} exceeds {max}")]
    LengthTooLong {
        /// The length given.
        len: u8,
        /// The maximum for the family.
        max: u8,
    },
    /// The NLRI field ended in the middle of a prefix.
    #[error("NLRI truncated: prefix of {len} bits needs {need} octets, {have} left")]
    Truncated {
        /// The prefix length read.
        len: u8,
        /// Octets needed.
        need: usize,
        /// Octets left in the field.
        have: usize,
    },
    /// Text that is not `address/length`.
    #[error("invalid prefix {0:?}: expected ADDRESS/LENGTH")]
    Syntax(String),
}

/// An IPv4 prefix: a 32-bit address with host bits cleared and a length.
/// 8 bytes, `Copy`, ordered by address then length.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    addr: u32,
    len: u8,
}

impl Ipv4Prefix {
    /// Builds a prefix, clearing host bits. Fails when `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 32 {
            return Err(PrefixError::LengthTooLong { len, max: 32 });
        }
        Ok(Self::from_bits(u32::from(addr), len))
    }

    /// Builds from address bits; `len` must be at most 32.
    #[inline]
    pub(crate) fn from_bits(addr: u32, len: u8) -> Self {
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        Ipv4Prefix {
            addr: addr & mask,
            len,
        }
    }

    /// The network address.
    pub fn addr(self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// The network address as a big-endian integer.
    pub fn addr_bits(self) -> u32 {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(self) -> u8 {
        self.len
    }

    /// True for the default route `0.0.0.0/0`.
    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// True when `other` lies inside this prefix (or equals it).
    pub fn contains(self, other: Ipv4Prefix) -> bool {
        other.len >= self.len && Self::from_bits(other.addr, self.len).addr == self.addr
    }

    /// True when the address lies inside this prefix.
    pub fn contains_addr(self, addr: Ipv4Addr) -> bool {
        Self::from_bits(u32::from(addr), self.len).addr == self.addr
    }

    /// Appends the NLRI encoding (length octet + significant octets).
    #[inline]
    pub fn encode(self, out: &mut Vec<u8>) {
        out.push(self.len);
        let n = usize::from(self.len).div_ceil(8);
        out.extend_from_slice(&self.addr.to_be_bytes()[..n]);
    }

    /// Octets the NLRI encoding takes.
    #[inline]
    pub fn encoded_len(self) -> usize {
        1 + usize::from(self.len).div_ceil(8)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

impl fmt::Debug for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::Syntax(s.into()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| PrefixError::Syntax(s.into()))?;
        let len: u8 = l.parse().map_err(|_| PrefixError::Syntax(s.into()))?;
        Ipv4Prefix::new(addr, len)
    }
}

/// An IPv6 prefix: a 128-bit address with host bits cleared and a length.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Prefix {
    addr: [u8; 16],
    len: u8,
}

impl Ipv6Prefix {
    /// Builds a prefix, clearing host bits. Fails when `len > 128`.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 128 {
            return Err(PrefixError::LengthTooLong { len, max: 128 });
        }
        Ok(Self::from_bits(u128::from(addr), len))
    }

    fn from_bits(addr: u128, len: u8) -> Self {
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        };
        Ipv6Prefix {
            addr: (addr & mask).to_be_bytes(),
            len,
        }
    }

    /// The network address.
    pub fn addr(self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr)
    }

    /// The prefix length in bits.
    pub fn len(self) -> u8 {
        self.len
    }

    /// True for the default route `::/0`.
    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// True when `other` lies inside this prefix (or equals it).
    pub fn contains(self, other: Ipv6Prefix) -> bool {
        other.len >= self.len
            && Self::from_bits(u128::from_be_bytes(other.addr), self.len).addr == self.addr
    }

    /// Appends the NLRI encoding.
    pub fn encode(self, out: &mut Vec<u8>) {
        out.push(self.len);
        let n = usize::from(self.len).div_ceil(8);
        out.extend_from_slice(&self.addr[..n]);
    }

    /// Octets the NLRI encoding takes.
    pub fn encoded_len(self) -> usize {
        1 + usize::from(self.len).div_ceil(8)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

impl fmt::Debug for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Ipv6Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::Syntax(s.into()))?;
        let addr: Ipv6Addr = a.parse().map_err(|_| PrefixError::Syntax(s.into()))?;
        let len: u8 = l.parse().map_err(|_| PrefixError::Syntax(s.into()))?;
        Ipv6Prefix::new(addr, len)
    }
}

/// A prefix of either family.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prefix {
    /// IPv4.
    V4(Ipv4Prefix),
    /// IPv6.
    V6(Ipv6Prefix),
}

impl Prefix {
    /// Builds a prefix from an address and length.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        match addr {
            IpAddr::V4(a) => Ipv4Prefix::new(a, len).map(Prefix::V4),
            IpAddr::V6(a) => Ipv6Prefix::new(a, len).map(Prefix::V6),
        }
    }

    /// The network address.
    pub fn addr(self) -> IpAddr {
        match self {
            Prefix::V4(p) => IpAddr::V4(p.addr()),
            Prefix::V6(p) => IpAddr::V6(p.addr()),
        }
    }

    /// The prefix length.
    pub fn len(self) -> u8 {
        match self {
            Prefix::V4(p) => p.len(),
            Prefix::V6(p) => p.len(),
        }
    }

    /// True for a default route.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The unicast family of this prefix.
    pub fn family(self) -> Family {
        match self {
            Prefix::V4(_) => Family::Ipv4Unicast,
            Prefix::V6(_) => Family::Ipv6Unicast,
        }
    }

    /// True when `other` is the same family and lies inside this prefix.
    pub fn contains(self, other: Prefix) -> bool {
        match (self, other) {
            (Prefix::V4(a), Prefix::V4(b)) => a.contains(b),
            (Prefix::V6(a), Prefix::V6(b)) => a.contains(b),
            _ => false,
        }
    }

    /// Appends the NLRI encoding.
    pub fn encode(self, out: &mut Vec<u8>) {
        match self {
            Prefix::V4(p) => p.encode(out),
            Prefix::V6(p) => p.encode(out),
        }
    }

    /// Octets the NLRI encoding takes.
    pub fn encoded_len(self) -> usize {
        match self {
            Prefix::V4(p) => p.encoded_len(),
            Prefix::V6(p) => p.encoded_len(),
        }
    }
}

impl From<Ipv4Prefix> for Prefix {
    fn from(p: Ipv4Prefix) -> Self {
        Prefix::V4(p)
    }
}

impl From<Ipv6Prefix> for Prefix {
    fn from(p: Ipv6Prefix) -> Self {
        Prefix::V6(p)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::V4(p) => p.fmt(f),
            Prefix::V6(p) => p.fmt(f),
        }
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        if s.contains(':') {
            s.parse().map(Prefix::V6)
        } else {
            s.parse().map(Prefix::V4)
        }
    }
}

/// Decodes an IPv4 NLRI field (withdrawn routes, NLRI, or the NLRI of an
/// IPv4 MP_REACH/MP_UNREACH) into `out`. One allocation at most (the `Vec`
/// growing); no allocation per prefix.
pub fn decode_ipv4_nlri(mut buf: &[u8], out: &mut Vec<Ipv4Prefix>) -> Result<(), PrefixError> {
    // Most prefixes in a full table are /24 (4 octets on the wire).
    out.reserve(buf.len() / 4);
    while let [len, rest @ ..] = buf {
        let len = *len;
        if len > 32 {
            return Err(PrefixError::LengthTooLong { len, max: 32 });
        }
        let n = usize::from(len).div_ceil(8);
        let Some((bytes, rest)) = rest.split_at_checked(n) else {
            return Err(PrefixError::Truncated {
                len,
                need: n,
                have: rest.len(),
            });
        };
        let mut a = [0u8; 4];
        a[..n].copy_from_slice(bytes);
        out.push(Ipv4Prefix::from_bits(u32::from_be_bytes(a), len));
        buf = rest;
    }
    Ok(())
}

/// Decodes an IPv6 NLRI field into `out`.
pub fn decode_ipv6_nlri(mut buf: &[u8], out: &mut Vec<Ipv6Prefix>) -> Result<(), PrefixError> {
    while let [len, rest @ ..] = buf {
        let len = *len;
        if len > 128 {
            return Err(PrefixError::LengthTooLong { len, max: 128 });
        }
        let n = usize::from(len).div_ceil(8);
        let Some((bytes, rest)) = rest.split_at_checked(n) else {
            return Err(PrefixError::Truncated {
                len,
                need: n,
                have: rest.len(),
            });
        };
        let mut a = [0u8; 16];
        a[..n].copy_from_slice(bytes);
        out.push(Ipv6Prefix::from_bits(u128::from_be_bytes(a), len));
        buf = rest;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_prefix_is_compact_and_clears_host_bits() {
        assert_eq!(std::mem::size_of::<Ipv4Prefix>(), 8);
        let p: Ipv4Prefix = "10.1.2.3/24".parse().expect("parse");
        assert_eq!(p.to_string(), "10.1.2.0/24");
        assert!(p.contains("10.1.2.128/25".parse().expect("parse")));
        assert!(!p.contains("10.1.0.0/16".parse().expect("parse")));
        assert!(Ipv4Prefix::new(Ipv4Addr::LOCALHOST, 33).is_err());
    }

    #[test]
    fn nlri_decode_rfc_examples() {
        // 10.0.0.0/8, 192.168.1.0/24, 0.0.0.0/0, 172.16.0.0/12
        let wire = [8, 10, 24, 192, 168, 1, 0, 12, 172, 16];
        let mut v = Vec::new();
        decode_ipv4_nlri(&wire, &mut v).expect("decode");
        let s: Vec<String> = v.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            s,
            ["10.0.0.0/8", "192.168.1.0/24", "0.0.0.0/0", "172.16.0.0/12"]
        );
        let mut enc = Vec::new();
        for p in &v {
            p.encode(&mut enc);
        }
        assert_eq!(enc, wire);
    }

    #[test]
    fn nlri_decode_errors() {
        let mut v = Vec::new();
        assert_eq!(
            decode_ipv4_nlri(&[33, 1, 2, 3, 4, 5], &mut v),
            Err(PrefixError::LengthTooLong { len: 33, max: 32 })
        );
        assert_eq!(
            decode_ipv4_nlri(&[24, 1, 2], &mut v),
            Err(PrefixError::Truncated {
                len: 24,
                need: 3,
                have: 2
            })
        );
        let mut v6 = Vec::new();
        decode_ipv6_nlri(&[64, 0xfd, 0, 0, 0, 0, 0, 0, 1], &mut v6).expect("decode");
        assert_eq!(v6[0].to_string(), "fd00:0:0:1::/64");
    }
}
