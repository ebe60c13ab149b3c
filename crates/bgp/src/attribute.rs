//! Path attributes (RFC 4271 §4.3, §5) and their RFC 7606 error handling.
//!
//! Owns [`PathAttributes`], the decoded attribute set shared (behind an
//! `Arc`) by every prefix an UPDATE carries, the value types it holds
//! ([`AsPath`], [`Community`], [`LargeCommunity`], ...), MP_REACH/MP_UNREACH
//! ([`MpReach`], [`MpUnreach`]), and the attribute-list codec including
//! AS4_PATH/AS4_AGGREGATOR reconciliation (RFC 6793 §4.2.3) for 2-octet
//! sessions. Framing of the UPDATE itself lives in [`crate::message`].
//!
//! Each attribute on the wire:
//! ```text
//!   0                   1
//!   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |  Attr. Flags  |Attr. Type Code|   flags: O T P E 0 0 0 0
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   (optional, transitive, partial,
//!  | Length (1 or 2 octets, E bit) |    extended length)
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |        Value (variable)       |
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::{AttributeIssue, DecodeError, EncodeError, ErrorAction, code, subcode};
use crate::message::CodecContext;
use crate::nlri::{
    Afi, Family, Ipv4Prefix, Ipv6Prefix, Prefix, Safi, decode_ipv4_nlri, decode_ipv6_nlri,
};

/// Attribute flag bits.
pub mod flag {
    /// Optional (1) or well-known (0).
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive.
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial: an optional transitive attribute passed on by a speaker
    /// that did not recognise it.
    pub const PARTIAL: u8 = 0x20;
    /// Extended length: the length field is two octets.
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Attribute type codes.
pub mod type_code {
    /// ORIGIN (RFC 4271).
    pub const ORIGIN: u8 = 1;
    /// AS_PATH (RFC 4271).
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP (RFC 4271).
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC (RFC 4271).
    pub const MULTI_EXIT_DISC: u8 = 4;
    /// LOCAL_PREF (RFC 4271).
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE (RFC 4271).
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR (RFC 4271).
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES (RFC 1997).
    pub const COMMUNITIES: u8 = 8;
    /// ORIGINATOR_ID (RFC 4456).
    pub const ORIGINATOR_ID: u8 = 9;
    /// CLUSTER_LIST (RFC 4456).
    pub const CLUSTER_LIST: u8 = 10;
    /// MP_REACH_NLRI (RFC 4760).
    pub const MP_REACH_NLRI: u8 = 14;
    /// MP_UNREACH_NLRI (RFC 4760).
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// AS4_PATH (RFC 6793).
    pub const AS4_PATH: u8 = 17;
    /// AS4_AGGREGATOR (RFC 6793).
    pub const AS4_AGGREGATOR: u8 = 18;
    /// LARGE_COMMUNITY (RFC 8092).
    pub const LARGE_COMMUNITY: u8 = 32;
}

/// The name of an attribute type code, for logs.
pub fn type_name(code: u8) -> &'static str {
    match code {
        type_code::ORIGIN => "ORIGIN",
        type_code::AS_PATH => "AS_PATH",
        type_code::NEXT_HOP => "NEXT_HOP",
        type_code::MULTI_EXIT_DISC => "MULTI_EXIT_DISC",
        type_code::LOCAL_PREF => "LOCAL_PREF",
        type_code::ATOMIC_AGGREGATE => "ATOMIC_AGGREGATE",
        type_code::AGGREGATOR => "AGGREGATOR",
        type_code::COMMUNITIES => "COMMUNITIES",
        type_code::ORIGINATOR_ID => "ORIGINATOR_ID",
        type_code::CLUSTER_LIST => "CLUSTER_LIST",
        type_code::MP_REACH_NLRI => "MP_REACH_NLRI",
        type_code::MP_UNREACH_NLRI => "MP_UNREACH_NLRI",
        type_code::AS4_PATH => "AS4_PATH",
        type_code::AS4_AGGREGATOR => "AS4_AGGREGATOR",
        type_code::LARGE_COMMUNITY => "LARGE_COMMUNITY",
        _ => "unknown",
    }
}

/// AS_TRANS (RFC 6793): stands in for a 4-octet AS on 2-octet sessions.
pub const AS_TRANS: u32 = 23456;

/// The ORIGIN attribute value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Origin {
    /// IGP (0): learned from an interior protocol or configured.
    #[default]
    Igp,
    /// EGP (1).
    Egp,
    /// INCOMPLETE (2): learned by some other means (redistribution).
    Incomplete,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Igp => "igp",
            Origin::Egp => "egp",
            Origin::Incomplete => "incomplete",
        })
    }
}

/// AS_PATH segment types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// AS_SET (1): unordered, counts as one AS in path length.
    Set,
    /// AS_SEQUENCE (2): ordered.
    Sequence,
    /// AS_CONFED_SEQUENCE (3, RFC 5065): not counted in path length.
    ConfedSequence,
    /// AS_CONFED_SET (4, RFC 5065): not counted in path length.
    ConfedSet,
}

impl SegmentKind {
    fn from_wire(v: u8) -> Option<Self> {
        Some(match v {
            1 => SegmentKind::Set,
            2 => SegmentKind::Sequence,
            3 => SegmentKind::ConfedSequence,
            4 => SegmentKind::ConfedSet,
            _ => return None,
        })
    }

    fn to_wire(self) -> u8 {
        match self {
            SegmentKind::Set => 1,
            SegmentKind::Sequence => 2,
            SegmentKind::ConfedSequence => 3,
            SegmentKind::ConfedSet => 4,
        }
    }
}

/// One AS_PATH segment.
///
/// ```text
///   +------------------------------+
///   | segment type (1 octet)       |
///   +------------------------------+
///   | segment length (1 octet)     |  number of ASes
///   +------------------------------+
///   | ASes (2 or 4 octets each)    |
///   +------------------------------+
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AsSegment {
    /// Segment type.
    pub kind: SegmentKind,
    /// AS numbers, leftmost first.
    pub asns: Vec<u32>,
}

/// An AS path: a list of segments, leftmost (most recent) first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    /// The segments.
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// An empty path (a locally originated route on iBGP).
    pub fn empty() -> Self {
        AsPath::default()
    }

    /// A path of one AS_SEQUENCE.
    pub fn from_sequence(asns: impl IntoIterator<Item = u32>) -> Self {
        let asns: Vec<u32> = asns.into_iter().collect();
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns,
            }],
        }
    }

    /// True when the path has no AS.
    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.asns.is_empty())
    }

    /// Path length for the decision process (RFC 4271 §9.1.2.2): each AS in
    /// a sequence counts one, an AS_SET counts one, confederation segments
    /// count zero.
    pub fn decision_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::Sequence => s.asns.len(),
                SegmentKind::Set => 1,
                SegmentKind::ConfedSequence | SegmentKind::ConfedSet => 0,
            })
            .sum()
    }

    /// The neighbouring AS: the leftmost AS of a leading AS_SEQUENCE
    /// (RFC 4271 §9.1.2.2 (c) compares MED only among paths with the same
    /// one).
    pub fn first_asn(&self) -> Option<u32> {
        let s = self
            .segments
            .iter()
            .find(|s| !matches!(s.kind, SegmentKind::ConfedSequence | SegmentKind::ConfedSet))?;
        match s.kind {
            SegmentKind::Sequence => s.asns.first().copied(),
            _ => None,
        }
    }

    /// How many times `asn` occurs anywhere in the path (loop detection).
    pub fn count(&self, asn: u32) -> usize {
        self.segments
            .iter()
            .flat_map(|s| s.asns.iter())
            .filter(|a| **a == asn)
            .count()
    }

    /// All AS numbers, leftmost first.
    pub fn asns(&self) -> impl Iterator<Item = u32> + '_ {
        self.segments.iter().flat_map(|s| s.asns.iter().copied())
    }

    /// Prepends `asn` `times` times to the leftmost AS_SEQUENCE (creating
    /// one if the path starts with a set or is empty).
    pub fn prepend(&mut self, asn: u32, times: usize) {
        if times == 0 {
            return;
        }
        match self.segments.first_mut() {
            Some(s) if s.kind == SegmentKind::Sequence => {
                s.asns.splice(0..0, std::iter::repeat_n(asn, times));
            }
            _ => self.segments.insert(
                0,
                AsSegment {
                    kind: SegmentKind::Sequence,
                    asns: vec![asn; times],
                },
            ),
        }
    }

    /// True when `prefix` is a prefix of this path's flattened AS list
    /// (Calico BGPFilter `asPathPrefix`).
    pub fn starts_with(&self, prefix: &[u32]) -> bool {
        let mut it = self.asns();
        prefix.iter().all(|a| it.next() == Some(*a))
    }

    fn has_4_octet(&self) -> bool {
        self.asns().any(|a| a > 0xffff)
    }

    /// Encodes the segments with 2- or 4-octet ASes, replacing 4-octet ASes
    /// by AS_TRANS when `four_octet` is false. Long segments are split at 255.
    fn encode_value(&self, four_octet: bool, out: &mut Vec<u8>) {
        for s in &self.segments {
            for chunk in s.asns.chunks(255) {
                out.push(s.kind.to_wire());
                out.push(chunk.len() as u8);
                for &a in chunk {
                    if four_octet {
                        out.extend_from_slice(&a.to_be_bytes());
                    } else {
                        let a16 = u16::try_from(a).unwrap_or(AS_TRANS as u16);
                        out.extend_from_slice(&a16.to_be_bytes());
                    }
                }
            }
        }
    }

    fn decode_value(mut buf: &[u8], four_octet: bool) -> Result<AsPath, String> {
        let width = if four_octet { 4 } else { 2 };
        let mut segments = Vec::new();
        while !buf.is_empty() {
            let [kind, count, rest @ ..] = buf else {
                return Err("segment header truncated".into());
            };
            let Some(kind) = SegmentKind::from_wire(*kind) else {
                return Err(format!("unknown segment type {kind}"));
            };
            if *count == 0 {
                return Err("segment with zero ASes".into());
            }
            let n = usize::from(*count) * width;
            let Some((body, rest)) = rest.split_at_checked(n) else {
                return Err(format!(
                    "segment of {count} ASes needs {n} octets, {} left",
                    rest.len()
                ));
            };
            let asns = if four_octet {
                body.chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                body.chunks_exact(2)
                    .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                    .collect()
            };
            segments.push(AsSegment { kind, asns });
            buf = rest;
        }
        Ok(AsPath { segments })
    }

    /// RFC 6793 §4.2.3: merges AS4_PATH into an AS_PATH received from a
    /// 2-octet speaker.
    fn reconcile(self, as4: AsPath) -> AsPath {
        let count = |p: &AsPath| p.decision_len() + p.confed_count();
        let (n, n4) = (count(&self), count(&as4));
        if n < n4 {
            return self;
        }
        // Keep the leading (n - n4) ASes of AS_PATH, then AS4_PATH.
        let mut keep = n - n4;
        let mut segments = Vec::new();
        for s in self.segments {
            if keep == 0 {
                break;
            }
            match s.kind {
                SegmentKind::Sequence | SegmentKind::ConfedSequence => {
                    let take = keep.min(s.asns.len());
                    keep -= take;
                    segments.push(AsSegment {
                        kind: s.kind,
                        asns: s.asns[..take].to_vec(),
                    });
                }
                SegmentKind::Set | SegmentKind::ConfedSet => {
                    keep -= 1;
                    segments.push(s);
                }
            }
        }
        let mut merged = AsPath { segments };
        for s in as4.segments {
            match (merged.segments.last_mut(), s.kind) {
                (Some(last), SegmentKind::Sequence) if last.kind == SegmentKind::Sequence => {
                    last.asns.extend(s.asns)
                }
                _ => merged.segments.push(s),
            }
        }
        merged
    }

    fn confed_count(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::ConfedSequence => s.asns.len(),
                SegmentKind::ConfedSet => 1,
                _ => 0,
            })
            .sum()
    }
}

impl fmt::Display for AsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.segments {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let (open, close) = match s.kind {
                SegmentKind::Sequence => ("", ""),
                SegmentKind::Set => ("{", "}"),
                SegmentKind::ConfedSequence => ("(", ")"),
                SegmentKind::ConfedSet => ("[", "]"),
            };
            f.write_str(open)?;
            for (i, a) in s.asns.iter().enumerate() {
                if i > 0 {
                    f.write_str(if s.kind == SegmentKind::Set { "," } else { " " })?;
                }
                write!(f, "{a}")?;
            }
            f.write_str(close)?;
        }
        Ok(())
    }
}

/// A standard community (RFC 1997): `AS:value` in 32 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// NO_EXPORT: not advertised outside the AS (or confederation).
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    /// NO_ADVERTISE: not advertised to any peer.
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    /// NO_EXPORT_SUBCONFED: not advertised to external peers, even within a
    /// confederation.
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);

    /// Builds `asn:value`.
    pub fn new(asn: u16, value: u16) -> Self {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Community::NO_EXPORT => f.write_str("no-export"),
            Community::NO_ADVERTISE => f.write_str("no-advertise"),
            Community::NO_EXPORT_SUBCONFED => f.write_str("no-export-subconfed"),
            Community(v) => write!(f, "{}:{}", v >> 16, v & 0xffff),
        }
    }
}

impl fmt::Debug for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a community string could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid community {0:?}: expected AS:VALUE (16-bit each), AS:V1:V2 (32-bit each, large) or a well-known name"
)]
pub struct CommunityParseError(pub String);

impl FromStr for Community {
    type Err = CommunityParseError;
    fn from_str(s: &str) -> Result<Self, CommunityParseError> {
        match s.to_ascii_lowercase().as_str() {
            "no-export" | "no_export" => return Ok(Community::NO_EXPORT),
            "no-advertise" | "no_advertise" => return Ok(Community::NO_ADVERTISE),
            "no-export-subconfed" | "no_export_subconfed" => {
                return Ok(Community::NO_EXPORT_SUBCONFED);
            }
            _ => {}
        }
        let err = || CommunityParseError(s.into());
        let (a, v) = s.split_once(':').ok_or_else(err)?;
        Ok(Community::new(
            a.parse().map_err(|_| err())?,
            v.parse().map_err(|_| err())?,
        ))
    }
}

/// A large community (RFC 8092): `global:local1:local2`, 32 bits each.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct LargeCommunity {
    /// Global administrator (an AS number).
    pub global: u32,
    /// First local data part.
    pub local1: u32,
    /// Second local data part.
    pub local2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

impl FromStr for LargeCommunity {
    type Err = CommunityParseError;
    fn from_str(s: &str) -> Result<Self, CommunityParseError> {
        let err = || CommunityParseError(s.into());
        let mut it = s.split(':').map(|p| p.parse::<u32>().map_err(|_| err()));
        let (Some(g), Some(l1), Some(l2), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(err());
        };
        Ok(LargeCommunity {
            global: g?,
            local1: l1?,
            local2: l2?,
        })
    }
}

/// The AGGREGATOR attribute: the AS and router that formed an aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Aggregator {
    /// The aggregating AS (4-octet after reconciliation).
    pub asn: u32,
    /// The aggregating router's BGP identifier / address.
    pub address: Ipv4Addr,
}

/// An optional transitive attribute we do not recognise, passed on with the
/// Partial bit set (RFC 4271 §5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    /// Flags as they will be sent: optional, transitive and, since we pass
    /// it on unrecognised, partial (RFC 4271 §5); the extended-length bit is
    /// chosen on encode.
    pub flags: u8,
    /// Type code.
    pub type_code: u8,
    /// Value octets.
    pub value: Vec<u8>,
}

/// The decoded path attributes of an UPDATE, except MP_REACH/MP_UNREACH
/// (which carry NLRI and live in [`crate::message::Update`]). One value is
/// shared by every prefix of the UPDATE; the RIB interns equal sets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct PathAttributes {
    /// ORIGIN (well-known mandatory).
    pub origin: Option<Origin>,
    /// AS_PATH (well-known mandatory), 4-octet after reconciliation.
    pub as_path: Option<AsPath>,
    /// NEXT_HOP for IPv4 NLRI (well-known mandatory when the UPDATE has
    /// IPv4 NLRI in its NLRI field).
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only; discarded when received over eBGP).
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE.
    pub atomic_aggregate: bool,
    /// AGGREGATOR, 4-octet after reconciliation.
    pub aggregator: Option<Aggregator>,
    /// COMMUNITIES.
    pub communities: Vec<Community>,
    /// LARGE_COMMUNITY.
    pub large_communities: Vec<LargeCommunity>,
    /// ORIGINATOR_ID (RFC 4456).
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST (RFC 4456), first entry most recent.
    pub cluster_list: Vec<Ipv4Addr>,
    /// Unrecognised optional transitive attributes.
    pub unknown: Vec<RawAttribute>,
    /// The next hop of MP_REACH_NLRI (IPv6 routes), kept with the other
    /// attributes so routes sharing it share one set. Not encoded by
    /// [`PathAttributes::encode`]; the UPDATE packer puts it in MP_REACH.
    pub mp_next_hop: Option<MpNextHop>,
}

/// The next hop carried in MP_REACH_NLRI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MpNextHop {
    /// Global next hop (IPv6, or IPv4 for RFC 8950).
    pub addr: IpAddr,
    /// IPv6 link-local next hop, if sent.
    pub link_local: Option<Ipv6Addr>,
}

impl PathAttributes {
    /// True when COMMUNITIES holds `c`.
    pub fn has_community(&self, c: Community) -> bool {
        self.communities.contains(&c)
    }

    /// The AS path, or an empty one when absent.
    pub fn as_path_or_empty(&self) -> &AsPath {
        static EMPTY: AsPath = AsPath {
            segments: Vec::new(),
        };
        self.as_path.as_ref().unwrap_or(&EMPTY)
    }

    /// Appends the attribute list (without MP_REACH/MP_UNREACH) for a
    /// session with context `ctx`. On 2-octet sessions AS_PATH and
    /// AGGREGATOR carry AS_TRANS and AS4_PATH/AS4_AGGREGATOR are added.
    pub fn encode(&self, ctx: &CodecContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let wk = flag::TRANSITIVE;
        let opt_t = flag::OPTIONAL | flag::TRANSITIVE;
        let opt = flag::OPTIONAL;
        let mut scratch = Vec::new();
        if let Some(o) = self.origin {
            put_attr(out, wk, type_code::ORIGIN, &[o as u8])?;
        }
        if let Some(p) = &self.as_path {
            scratch.clear();
            p.encode_value(ctx.four_octet_as, &mut scratch);
            put_attr(out, wk, type_code::AS_PATH, &scratch)?;
        }
        if let Some(nh) = self.next_hop {
            put_attr(out, wk, type_code::NEXT_HOP, &nh.octets())?;
        }
        if let Some(m) = self.med {
            put_attr(out, opt, type_code::MULTI_EXIT_DISC, &m.to_be_bytes())?;
        }
        if let Some(lp) = self.local_pref {
            put_attr(out, wk, type_code::LOCAL_PREF, &lp.to_be_bytes())?;
        }
        if self.atomic_aggregate {
            put_attr(out, wk, type_code::ATOMIC_AGGREGATE, &[])?;
        }
        if let Some(ag) = self.aggregator {
            scratch.clear();
            if ctx.four_octet_as {
                scratch.extend_from_slice(&ag.asn.to_be_bytes());
            } else {
                let a16 = u16::try_from(ag.asn).unwrap_or(AS_TRANS as u16);
                scratch.extend_from_slice(&a16.to_be_bytes());
            }
            scratch.extend_from_slice(&ag.address.octets());
            put_attr(out, opt_t, type_code::AGGREGATOR, &scratch)?;
        }
        if !self.communities.is_empty() {
            scratch.clear();
            for c in &self.communities {
                scratch.extend_from_slice(&c.0.to_be_bytes());
            }
            put_attr(out, opt_t, type_code::COMMUNITIES, &scratch)?;
        }
        if let Some(id) = self.originator_id {
            put_attr(out, opt, type_code::ORIGINATOR_ID, &id.octets())?;
        }
        if !self.cluster_list.is_empty() {
            scratch.clear();
            for c in &self.cluster_list {
                scratch.extend_from_slice(&c.octets());
            }
            put_attr(out, opt, type_code::CLUSTER_LIST, &scratch)?;
        }
        if !ctx.four_octet_as {
            if let Some(p) = self.as_path.as_ref().filter(|p| p.has_4_octet()) {
                scratch.clear();
                p.encode_value(true, &mut scratch);
                put_attr(out, opt_t, type_code::AS4_PATH, &scratch)?;
            }
            if let Some(ag) = self.aggregator.filter(|a| a.asn > 0xffff) {
                scratch.clear();
                scratch.extend_from_slice(&ag.asn.to_be_bytes());
                scratch.extend_from_slice(&ag.address.octets());
                put_attr(out, opt_t, type_code::AS4_AGGREGATOR, &scratch)?;
            }
        }
        if !self.large_communities.is_empty() {
            scratch.clear();
            for c in &self.large_communities {
                scratch.extend_from_slice(&c.global.to_be_bytes());
                scratch.extend_from_slice(&c.local1.to_be_bytes());
                scratch.extend_from_slice(&c.local2.to_be_bytes());
            }
            put_attr(out, opt_t, type_code::LARGE_COMMUNITY, &scratch)?;
        }
        for u in &self.unknown {
            put_attr(out, (u.flags & 0xe0) | flag::PARTIAL, u.type_code, &u.value)?;
        }
        Ok(())
    }
}

/// Appends one attribute, choosing the length field width.
pub(crate) fn put_attr(
    out: &mut Vec<u8>,
    flags: u8,
    type_code: u8,
    value: &[u8],
) -> Result<(), EncodeError> {
    if let Ok(len) = u8::try_from(value.len()) {
        out.extend_from_slice(&[flags & !flag::EXTENDED_LENGTH, type_code, len]);
    } else if let Ok(len) = u16::try_from(value.len()) {
        out.extend_from_slice(&[flags | flag::EXTENDED_LENGTH, type_code]);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        return Err(EncodeError::AttributeTooLong {
            type_code,
            len: value.len(),
        });
    }
    out.extend_from_slice(value);
    Ok(())
}

/// MP_REACH_NLRI (RFC 4760 §3): reachable prefixes of one family with
/// their next hop.
///
/// ```text
///   +---------------------------------------------------------+
///   | Address Family Identifier (2 octets)                    |
///   +---------------------------------------------------------+
///   | Subsequent Address Family Identifier (1 octet)          |
///   +---------------------------------------------------------+
///   | Length of Next Hop Network Address (1 octet)            |
///   +---------------------------------------------------------+
///   | Network Address of Next Hop (variable)                  |
///   +---------------------------------------------------------+
///   | Reserved (1 octet)                                      |
///   +---------------------------------------------------------+
///   | Network Layer Reachability Information (variable)       |
///   +---------------------------------------------------------+
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpReach {
    /// The family (only families the codec supports are decoded).
    pub family: Family,
    /// The next hop (global address; IPv4 allowed for RFC 8950).
    pub next_hop: IpAddr,
    /// The IPv6 link-local next hop, when 32 octets were sent.
    pub link_local: Option<Ipv6Addr>,
    /// The prefixes.
    pub nlri: Vec<Prefix>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4): withdrawn prefixes of one family.
///
/// ```text
///   +---------------------------------------------------------+
///   | Address Family Identifier (2 octets)                    |
///   +---------------------------------------------------------+
///   | Subsequent Address Family Identifier (1 octet)          |
///   +---------------------------------------------------------+
///   | Withdrawn Routes (variable)                             |
///   +---------------------------------------------------------+
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpUnreach {
    /// The family.
    pub family: Family,
    /// The withdrawn prefixes.
    pub withdrawn: Vec<Prefix>,
}

impl MpReach {
    /// Appends the attribute (header included).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut v = Vec::with_capacity(64);
        let (afi, safi) = self.family.afi_safi();
        v.extend_from_slice(&afi.0.to_be_bytes());
        v.push(safi.0);
        match (self.next_hop, self.link_local) {
            (IpAddr::V4(a), _) => {
                v.push(4);
                v.extend_from_slice(&a.octets());
            }
            (IpAddr::V6(a), None) => {
                v.push(16);
                v.extend_from_slice(&a.octets());
            }
            (IpAddr::V6(a), Some(ll)) => {
                v.push(32);
                v.extend_from_slice(&a.octets());
                v.extend_from_slice(&ll.octets());
            }
        }
        v.push(0);
        for p in &self.nlri {
            p.encode(&mut v);
        }
        put_attr(out, flag::OPTIONAL, type_code::MP_REACH_NLRI, &v)
    }
}

impl MpUnreach {
    /// Appends the attribute (header included).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut v = Vec::with_capacity(64);
        let (afi, safi) = self.family.afi_safi();
        v.extend_from_slice(&afi.0.to_be_bytes());
        v.push(safi.0);
        for p in &self.withdrawn {
            p.encode(&mut v);
        }
        put_attr(out, flag::OPTIONAL, type_code::MP_UNREACH_NLRI, &v)
    }
}

/// The outcome of decoding an attribute list.
pub(crate) struct DecodedAttributes {
    pub attrs: PathAttributes,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
}

fn nlri_for(family: Family, buf: &[u8]) -> Result<Vec<Prefix>, String> {
    match family {
        Family::Ipv4Unicast => {
            let mut v: Vec<Ipv4Prefix> = Vec::new();
            decode_ipv4_nlri(buf, &mut v).map_err(|e| e.to_string())?;
            Ok(v.into_iter().map(Prefix::V4).collect())
        }
        Family::Ipv6Unicast => {
            let mut v: Vec<Ipv6Prefix> = Vec::new();
            decode_ipv6_nlri(buf, &mut v).map_err(|e| e.to_string())?;
            Ok(v.into_iter().map(Prefix::V6).collect())
        }
    }
}

fn u32_at(v: &[u8]) -> u32 {
    u32::from_be_bytes([v[0], v[1], v[2], v[3]])
}

/// Decodes the path attribute field of an UPDATE. Non-fatal problems are
/// pushed to `issues`; fatal ones return `Err`.
pub(crate) fn decode_attributes(
    mut buf: &[u8],
    ctx: &CodecContext,
    issues: &mut Vec<AttributeIssue>,
) -> Result<DecodedAttributes, DecodeError> {
    let mut attrs = PathAttributes::default();
    let mut mp_reach = None;
    let mut mp_unreach = None;
    let mut as4_path: Option<AsPath> = None;
    let mut as4_aggregator: Option<Aggregator> = None;
    // Bitmap of type codes seen, for duplicate detection.
    let mut seen = [0u64; 4];
    let issue = |issues: &mut Vec<AttributeIssue>, action, type_code, reason: String| {
        issues.push(AttributeIssue {
            action,
            type_code,
            reason,
        });
    };
    while !buf.is_empty() {
        let (flags, tc, value, rest) = match split_attr(buf) {
            Ok(x) => x,
            Err(reason) => {
                // RFC 7606 §4: an attribute overrunning the attribute field
                // makes the whole UPDATE treat-as-withdraw. The type code
                // is the one we could read, if any.
                let tc = buf.get(1).copied().unwrap_or(0);
                issue(issues, ErrorAction::TreatAsWithdraw, tc, reason);
                break;
            }
        };
        buf = rest;
        let word = usize::from(tc / 64);
        let bit = 1u64 << (tc % 64);
        let duplicate = seen[word] & bit != 0;
        seen[word] |= bit;
        if duplicate {
            if tc == type_code::MP_REACH_NLRI || tc == type_code::MP_UNREACH_NLRI {
                return Err(DecodeError::reset(
                    code::UPDATE_MESSAGE,
                    subcode::update::MALFORMED_ATTRIBUTE_LIST,
                    Vec::new(),
                    format!("{} appears more than once", type_name(tc)),
                )
                .with_attribute(tc));
            }
            // RFC 7606 §3 (g): keep the first, discard the rest.
            issue(
                issues,
                ErrorAction::AttributeDiscard,
                tc,
                "duplicate attribute, all but the first discarded".into(),
            );
            continue;
        }
        let class = flags & (flag::OPTIONAL | flag::TRANSITIVE);
        let class_is = |want: u8| class == want;
        let wk = flag::TRANSITIVE;
        let opt_t = flag::OPTIONAL | flag::TRANSITIVE;
        let opt = flag::OPTIONAL;
        let len = value.len();
        match tc {
            type_code::ORIGIN => match (class_is(wk), value) {
                (true, [0]) => attrs.origin = Some(Origin::Igp),
                (true, [1]) => attrs.origin = Some(Origin::Egp),
                (true, [2]) => attrs.origin = Some(Origin::Incomplete),
                (false, _) => issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_flags(flags)),
                _ => issue(
                    issues,
                    ErrorAction::TreatAsWithdraw,
                    tc,
                    format!("invalid value {value:?} (length {len})"),
                ),
            },
            type_code::AS_PATH => {
                if !class_is(wk) {
                    issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_flags(flags));
                    continue;
                }
                match AsPath::decode_value(value, ctx.four_octet_as) {
                    Ok(p) => attrs.as_path = Some(p),
                    Err(e) => issue(issues, ErrorAction::TreatAsWithdraw, tc, e),
                }
            }
            type_code::NEXT_HOP => match (class_is(wk), value) {
                (true, [a, b, c, d]) => {
                    let nh = Ipv4Addr::new(*a, *b, *c, *d);
                    if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                        issue(
                            issues,
                            ErrorAction::TreatAsWithdraw,
                            tc,
                            format!("invalid next hop {nh}"),
                        );
                    } else {
                        attrs.next_hop = Some(nh);
                    }
                }
                (false, _) => issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_flags(flags)),
                _ => issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_len(len, "4")),
            },
            type_code::MULTI_EXIT_DISC => match (class_is(opt), len) {
                (true, 4) => attrs.med = Some(u32_at(value)),
                (false, _) => issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_flags(flags)),
                _ => issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_len(len, "4")),
            },
            type_code::LOCAL_PREF => {
                if ctx.ebgp {
                    // RFC 7606 §7.5: ignored from external peers.
                    issue(
                        issues,
                        ErrorAction::AttributeDiscard,
                        tc,
                        "received from an external peer".into(),
                    );
                    continue;
                }
                match (class_is(wk), len) {
                    (true, 4) => attrs.local_pref = Some(u32_at(value)),
                    (false, _) => issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_flags(flags)),
                    _ => issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_len(len, "4")),
                }
            }
            type_code::ATOMIC_AGGREGATE => match (class_is(wk), len) {
                (true, 0) => attrs.atomic_aggregate = true,
                (false, _) => issue(issues, ErrorAction::AttributeDiscard, tc, bad_flags(flags)),
                _ => issue(issues, ErrorAction::AttributeDiscard, tc, bad_len(len, "0")),
            },
            type_code::AGGREGATOR => {
                let want = if ctx.four_octet_as { 8 } else { 6 };
                match (class_is(opt_t), len) {
                    (true, 6) if want == 6 => {
                        attrs.aggregator = Some(Aggregator {
                            asn: u32::from(u16::from_be_bytes([value[0], value[1]])),
                            address: Ipv4Addr::new(value[2], value[3], value[4], value[5]),
                        })
                    }
                    (true, 8) if want == 8 => {
                        attrs.aggregator = Some(Aggregator {
                            asn: u32_at(value),
                            address: Ipv4Addr::new(value[4], value[5], value[6], value[7]),
                        })
                    }
                    (false, _) => {
                        issue(issues, ErrorAction::AttributeDiscard, tc, bad_flags(flags))
                    }
                    _ => issue(
                        issues,
                        ErrorAction::AttributeDiscard,
                        tc,
                        bad_len(len, if want == 8 { "8" } else { "6" }),
                    ),
                }
            }
            type_code::COMMUNITIES => {
                if !class_is(opt_t) {
                    issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_flags(flags));
                } else if len == 0 || len % 4 != 0 {
                    issue(
                        issues,
                        ErrorAction::TreatAsWithdraw,
                        tc,
                        bad_len(len, "a non-zero multiple of 4"),
                    );
                } else {
                    attrs.communities = value
                        .chunks_exact(4)
                        .map(|c| Community(u32_at(c)))
                        .collect();
                }
            }
            type_code::LARGE_COMMUNITY => {
                if !class_is(opt_t) {
                    issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_flags(flags));
                } else if len == 0 || len % 12 != 0 {
                    issue(
                        issues,
                        ErrorAction::TreatAsWithdraw,
                        tc,
                        bad_len(len, "a non-zero multiple of 12"),
                    );
                } else {
                    attrs.large_communities = value
                        .chunks_exact(12)
                        .map(|c| LargeCommunity {
                            global: u32_at(c),
                            local1: u32_at(&c[4..]),
                            local2: u32_at(&c[8..]),
                        })
                        .collect();
                }
            }
            type_code::ORIGINATOR_ID => {
                if ctx.ebgp {
                    issue(
                        issues,
                        ErrorAction::AttributeDiscard,
                        tc,
                        "received from an external peer".into(),
                    );
                    continue;
                }
                match (class_is(opt), len) {
                    (true, 4) => attrs.originator_id = Some(Ipv4Addr::from(u32_at(value))),
                    (false, _) => issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_flags(flags)),
                    _ => issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_len(len, "4")),
                }
            }
            type_code::CLUSTER_LIST => {
                if ctx.ebgp {
                    issue(
                        issues,
                        ErrorAction::AttributeDiscard,
                        tc,
                        "received from an external peer".into(),
                    );
                    continue;
                }
                if !class_is(opt) {
                    issue(issues, ErrorAction::TreatAsWithdraw, tc, bad_flags(flags));
                } else if len == 0 || len % 4 != 0 {
                    issue(
                        issues,
                        ErrorAction::TreatAsWithdraw,
                        tc,
                        bad_len(len, "a non-zero multiple of 4"),
                    );
                } else {
                    attrs.cluster_list = value
                        .chunks_exact(4)
                        .map(|c| Ipv4Addr::from(u32_at(c)))
                        .collect();
                }
            }
            type_code::MP_REACH_NLRI => mp_reach = decode_mp_reach(flags, value)?,
            type_code::MP_UNREACH_NLRI => mp_unreach = decode_mp_unreach(flags, value)?,
            type_code::AS4_PATH => {
                if ctx.four_octet_as {
                    // RFC 6793 §4.1: a NEW speaker ignores AS4_PATH from a NEW speaker.
                    continue;
                }
                if !class_is(opt_t) {
                    issue(issues, ErrorAction::AttributeDiscard, tc, bad_flags(flags));
                    continue;
                }
                match AsPath::decode_value(value, true) {
                    Ok(p) => as4_path = Some(p),
                    Err(e) => issue(issues, ErrorAction::AttributeDiscard, tc, e),
                }
            }
            type_code::AS4_AGGREGATOR => {
                if ctx.four_octet_as {
                    continue;
                }
                match (class_is(opt_t), len) {
                    (true, 8) => {
                        as4_aggregator = Some(Aggregator {
                            asn: u32_at(value),
                            address: Ipv4Addr::new(value[4], value[5], value[6], value[7]),
                        })
                    }
                    (false, _) => {
                        issue(issues, ErrorAction::AttributeDiscard, tc, bad_flags(flags))
                    }
                    _ => issue(issues, ErrorAction::AttributeDiscard, tc, bad_len(len, "8")),
                }
            }
            _ => {
                if flags & flag::OPTIONAL == 0 {
                    let mut data = vec![flags, tc];
                    data.extend_from_slice(value);
                    return Err(DecodeError::reset(
                        code::UPDATE_MESSAGE,
                        subcode::update::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                        data,
                        format!("unrecognized well-known attribute type {tc}"),
                    )
                    .with_attribute(tc));
                }
                if flags & flag::TRANSITIVE != 0 {
                    attrs.unknown.push(RawAttribute {
                        flags: (flags & (flag::OPTIONAL | flag::TRANSITIVE)) | flag::PARTIAL,
                        type_code: tc,
                        value: value.to_vec(),
                    });
                }
                // Unknown optional non-transitive: quietly ignored (RFC 4271 §5).
            }
        }
    }
    // RFC 6793 §4.2.3 reconciliation for 2-octet sessions.
    if !ctx.four_octet_as {
        let agg_is_trans = attrs.aggregator.map(|a| a.asn == AS_TRANS);
        match agg_is_trans {
            Some(false) => {
                // AGGREGATOR carries a real AS: AS4_AGGREGATOR and AS4_PATH
                // are ignored.
                as4_path = None;
            }
            Some(true) => {
                if let Some(a4) = as4_aggregator {
                    attrs.aggregator = Some(a4);
                }
            }
            None => {}
        }
        if let Some(p4) = as4_path {
            attrs.as_path = attrs.as_path.take().map(|p| p.reconcile(p4));
        }
    }
    Ok(DecodedAttributes {
        attrs,
        mp_reach,
        mp_unreach,
    })
}

fn bad_flags(flags: u8) -> String {
    format!("attribute flags {flags:#04x} conflict with the attribute's definition")
}

fn bad_len(len: usize, want: &str) -> String {
    format!("length {len}, expected {want}")
}

/// One attribute split off a buffer: flags, type code, value, rest.
type SplitAttr<'a> = (u8, u8, &'a [u8], &'a [u8]);

/// Splits one attribute off the front of `buf`.
fn split_attr(buf: &[u8]) -> Result<SplitAttr<'_>, String> {
    let [flags, tc, rest @ ..] = buf else {
        return Err("attribute header truncated".into());
    };
    let (len, rest) = if flags & flag::EXTENDED_LENGTH != 0 {
        let [a, b, rest @ ..] = rest else {
            return Err(format!("attribute type {tc}: extended length truncated"));
        };
        (usize::from(u16::from_be_bytes([*a, *b])), rest)
    } else {
        let [a, rest @ ..] = rest else {
            return Err(format!("attribute type {tc}: length truncated"));
        };
        (usize::from(*a), rest)
    };
    let Some((value, rest)) = rest.split_at_checked(len) else {
        return Err(format!(
            "attribute type {tc} length {len} overruns the attribute field ({} octets left)",
            rest.len()
        ));
    };
    Ok((*flags, *tc, value, rest))
}

fn mp_error(tc: u8, afi_safi: Option<(Afi, Safi)>, detail: String) -> DecodeError {
    let mut e = DecodeError::reset(
        code::UPDATE_MESSAGE,
        subcode::update::OPTIONAL_ATTRIBUTE_ERROR,
        Vec::new(),
        format!("{}: {detail}", type_name(tc)),
    )
    .with_attribute(tc);
    if let Some((afi, safi)) = afi_safi {
        e.action = ErrorAction::AfiSafiDisable { afi, safi };
    }
    e
}

fn decode_mp_reach(flags: u8, value: &[u8]) -> Result<Option<MpReach>, DecodeError> {
    let tc = type_code::MP_REACH_NLRI;
    let [a0, a1, safi, nh_len, rest @ ..] = value else {
        return Err(mp_error(
            tc,
            None,
            format!("value of {} octets too short", value.len()),
        ));
    };
    let (afi, safi) = (Afi(u16::from_be_bytes([*a0, *a1])), Safi(*safi));
    if flags & (flag::OPTIONAL | flag::TRANSITIVE) != flag::OPTIONAL {
        return Err(mp_error(tc, Some((afi, safi)), bad_flags(flags)));
    }
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        // A family we did not negotiate: ignored (RFC 4760 §7).
        return Ok(None);
    };
    let nh_len = usize::from(*nh_len);
    let Some((nh, rest)) = rest.split_at_checked(nh_len) else {
        return Err(mp_error(
            tc,
            Some((afi, safi)),
            format!("next hop length {nh_len} overruns"),
        ));
    };
    let (next_hop, link_local) = match nh.len() {
        4 => (IpAddr::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])), None),
        16 => (IpAddr::V6(ipv6_at(nh)), None),
        32 => (IpAddr::V6(ipv6_at(nh)), Some(ipv6_at(&nh[16..]))),
        n => {
            return Err(mp_error(
                tc,
                Some((afi, safi)),
                format!("invalid next hop length {n}"),
            ));
        }
    };
    let [_reserved, nlri @ ..] = rest else {
        return Err(mp_error(
            tc,
            Some((afi, safi)),
            "reserved octet missing".into(),
        ));
    };
    let nlri = nlri_for(family, nlri).map_err(|e| mp_error(tc, Some((afi, safi)), e))?;
    Ok(Some(MpReach {
        family,
        next_hop,
        link_local,
        nlri,
    }))
}

fn decode_mp_unreach(flags: u8, value: &[u8]) -> Result<Option<MpUnreach>, DecodeError> {
    let tc = type_code::MP_UNREACH_NLRI;
    let [a0, a1, safi, rest @ ..] = value else {
        return Err(mp_error(
            tc,
            None,
            format!("value of {} octets too short", value.len()),
        ));
    };
    let (afi, safi) = (Afi(u16::from_be_bytes([*a0, *a1])), Safi(*safi));
    if flags & (flag::OPTIONAL | flag::TRANSITIVE) != flag::OPTIONAL {
        return Err(mp_error(tc, Some((afi, safi)), bad_flags(flags)));
    }
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        return Ok(None);
    };
    let withdrawn = nlri_for(family, rest).map_err(|e| mp_error(tc, Some((afi, safi)), e))?;
    Ok(Some(MpUnreach { family, withdrawn }))
}

fn ipv6_at(v: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&v[..16]);
    Ipv6Addr::from(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_path_length_counts_set_as_one() {
        let p = AsPath {
            segments: vec![
                AsSegment {
                    kind: SegmentKind::Sequence,
                    asns: vec![65001, 65002],
                },
                AsSegment {
                    kind: SegmentKind::Set,
                    asns: vec![1, 2, 3],
                },
            ],
        };
        assert_eq!(p.decision_len(), 3);
        assert_eq!(p.first_asn(), Some(65001));
        assert_eq!(p.to_string(), "65001 65002 {1,2,3}");
        let mut q = p.clone();
        q.prepend(64512, 2);
        assert_eq!(q.to_string(), "64512 64512 65001 65002 {1,2,3}");
        assert!(q.starts_with(&[64512, 64512, 65001]));
    }

    #[test]
    fn as4_reconciliation_rfc6793() {
        // 2-octet AS_PATH: 100 AS_TRANS AS_TRANS ; AS4_PATH: 200000 300000
        let p = AsPath::from_sequence([100, AS_TRANS, AS_TRANS]);
        let p4 = AsPath::from_sequence([200_000, 300_000]);
        assert_eq!(p.reconcile(p4).to_string(), "100 200000 300000");
        // AS4_PATH longer than AS_PATH is ignored.
        let p = AsPath::from_sequence([AS_TRANS]);
        let p4 = AsPath::from_sequence([200_000, 300_000]);
        assert_eq!(p.reconcile(p4).to_string(), "23456");
    }

    #[test]
    fn communities_parse_and_print() {
        let c: Community = "65000:100".parse().expect("parse");
        assert_eq!(c, Community::new(65000, 100));
        assert_eq!(c.to_string(), "65000:100");
        assert_eq!(
            "no-export".parse::<Community>().expect("parse"),
            Community::NO_EXPORT
        );
        assert!("65536:1".parse::<Community>().is_err());
        let l: LargeCommunity = "4200000000:1:2".parse().expect("parse");
        assert_eq!(l.to_string(), "4200000000:1:2");
        assert!("1:2".parse::<LargeCommunity>().is_err());
    }
}
