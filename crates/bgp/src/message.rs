//! BGP messages (RFC 4271 §4): header framing, OPEN, UPDATE, NOTIFICATION,
//! KEEPALIVE, ROUTE-REFRESH, and the UPDATE packer.
//!
//! Owns the [`Message`] enum, [`decode_message`] / [`Message::encode`], the
//! stream framing helper [`frame_len`], and [`UpdateBuilder`] which groups
//! prefixes by attribute set into as few UPDATEs as fit the negotiated
//! message size. Attribute values live in [`crate::attribute`], capabilities
//! in [`crate::capability`], prefixes in [`crate::nlri`].
//!
//! Every message starts with this header:
//! ```text
//!   0                   1                   2                   3
//!   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |                                                               |
//!  +                                                               +
//!  |                           Marker (all ones)                   |
//!  +                                                               +
//!  |                                                               |
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |          Length               |      Type     |
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::attribute::{
    MpNextHop, MpReach, MpUnreach, PathAttributes, decode_attributes, type_code,
};
use crate::capability::Capability;
use crate::error::{AttributeIssue, DecodeError, EncodeError, ErrorAction, code, subcode};
use crate::nlri::{Afi, Family, Ipv4Prefix, Prefix, Safi, decode_ipv4_nlri};
use crate::rib::fast_hash::SeededState;

/// Length of the common header.
pub const HEADER_LEN: usize = 19;
/// Maximum message size without RFC 8654.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Maximum message size with the extended message capability (RFC 8654).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

/// Message type codes.
pub mod message_type {
    /// OPEN.
    pub const OPEN: u8 = 1;
    /// UPDATE.
    pub const UPDATE: u8 = 2;
    /// NOTIFICATION.
    pub const NOTIFICATION: u8 = 3;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 4;
    /// ROUTE-REFRESH (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 5;
}

/// What the codec must know about the session to decode and encode
/// messages: the negotiated capabilities that change the wire format, and
/// whether the peer is external (RFC 7606 discards LOCAL_PREF,
/// ORIGINATOR_ID and CLUSTER_LIST from external peers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CodecContext {
    /// Both sides advertised 4-octet AS support (RFC 6793).
    pub four_octet_as: bool,
    /// Both sides advertised the extended message capability (RFC 8654).
    pub extended_message: bool,
    /// The peer is in another AS.
    pub ebgp: bool,
}

impl CodecContext {
    /// The largest message this session may send or receive.
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

/// A BGP message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE (header only).
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

/// The OPEN message (RFC 4271 §4.2, RFC 5492).
///
/// ```text
///   0                   1                   2                   3
///   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///   +-+-+-+-+-+-+-+-+
///   |    Version    |
///   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///   |     My Autonomous System      |
///   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///   |           Hold Time           |
///   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///   |                         BGP Identifier                        |
///   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///   | Opt Parm Len  |
///   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///   |             Optional Parameters (Variable)                    |
///   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
/// Optional parameter type 2 holds capabilities; RFC 9072 extended
/// parameter lengths are accepted on decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// BGP version, always 4 after a successful decode.
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS for 4-octet ASes).
    pub my_as: u16,
    /// Proposed hold time in seconds (0, or at least 3).
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities, in the order received.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn` (the My AS field is AS_TRANS when `asn` does not
    /// fit 16 bits; the caller includes [`Capability::FourOctetAs`]).
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        Open {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(crate::attribute::AS_TRANS as u16),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: the 4-octet AS capability if present, else My AS.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    /// The AS in the 4-octet AS capability, if advertised.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }

    /// True when the capability with this code was advertised.
    pub fn has_capability(&self, code: u8) -> bool {
        self.capabilities.iter().any(|c| c.code() == code)
    }

    fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut params = Vec::new();
        if !self.capabilities.is_empty() {
            let mut caps = Vec::new();
            for c in &self.capabilities {
                c.encode(&mut caps)?;
            }
            // One optional parameter per capability keeps each under 255.
            // RFC 5492 allows either; some old speakers prefer one per cap.
            let mut rest = caps.as_slice();
            while !rest.is_empty() {
                let cap_len = 2 + usize::from(rest[1]);
                let (one, tail) = rest.split_at(cap_len);
                params.push(2);
                params.push(one.len() as u8);
                params.extend_from_slice(one);
                rest = tail;
            }
        }
        let len = u8::try_from(params.len()).map_err(|_| EncodeError::CapabilityTooLong {
            code: 0,
            len: params.len(),
        })?;
        out.push(len);
        out.extend_from_slice(&params);
        Ok(())
    }

    fn decode_body(body: &[u8]) -> Result<Open, DecodeError> {
        let bad_len = || {
            DecodeError::reset(
                code::MESSAGE_HEADER,
                subcode::header::BAD_MESSAGE_LENGTH,
                ((body.len() + HEADER_LEN) as u16).to_be_bytes().to_vec(),
                format!("OPEN body of {} octets is too short", body.len()),
            )
        };
        let [version, rest @ ..] = body else {
            return Err(bad_len());
        };
        if *version != 4 {
            return Err(DecodeError::reset(
                code::OPEN_MESSAGE,
                subcode::open::UNSUPPORTED_VERSION,
                4u16.to_be_bytes().to_vec(),
                format!("unsupported BGP version {version}"),
            ));
        }
        let [a0, a1, h0, h1, i0, i1, i2, i3, plen, rest @ ..] = rest else {
            return Err(bad_len());
        };
        let mut plen = usize::from(*plen);
        let mut rest = rest;
        let mut extended = false;
        // RFC 9072: Non-Ext OP Len 255 and Non-Ext OP Type 255 mark extended lengths.
        if plen == 255 && rest.first() == Some(&255) {
            let [_, l0, l1, tail @ ..] = rest else {
                return Err(open_params_error(
                    "extended optional parameters length truncated",
                ));
            };
            plen = usize::from(u16::from_be_bytes([*l0, *l1]));
            rest = tail;
            extended = true;
        }
        if rest.len() != plen {
            return Err(open_params_error(&format!(
                "optional parameters length {plen} but {} octets follow",
                rest.len()
            )));
        }
        let mut capabilities = Vec::new();
        while !rest.is_empty() {
            let (ptype, pval, tail) = if extended {
                let [t, l0, l1, tail @ ..] = rest else {
                    return Err(open_params_error("optional parameter header truncated"));
                };
                let l = usize::from(u16::from_be_bytes([*l0, *l1]));
                let Some((v, tail)) = tail.split_at_checked(l) else {
                    return Err(open_params_error("optional parameter overruns"));
                };
                (*t, v, tail)
            } else {
                let [t, l, tail @ ..] = rest else {
                    return Err(open_params_error("optional parameter header truncated"));
                };
                let Some((v, tail)) = tail.split_at_checked(usize::from(*l)) else {
                    return Err(open_params_error("optional parameter overruns"));
                };
                (*t, v, tail)
            };
            rest = tail;
            if ptype != 2 {
                return Err(DecodeError::reset(
                    code::OPEN_MESSAGE,
                    subcode::open::UNSUPPORTED_OPTIONAL_PARAMETER,
                    Vec::new(),
                    format!("unsupported optional parameter type {ptype}"),
                ));
            }
            let mut caps = pval;
            while !caps.is_empty() {
                let [c, l, tail @ ..] = caps else {
                    return Err(open_params_error("capability header truncated"));
                };
                let Some((v, tail)) = tail.split_at_checked(usize::from(*l)) else {
                    return Err(open_params_error(&format!("capability {c} overruns")));
                };
                capabilities.push(Capability::decode(*c, v)?);
                caps = tail;
            }
        }
        Ok(Open {
            version: 4,
            my_as: u16::from_be_bytes([*a0, *a1]),
            hold_time: u16::from_be_bytes([*h0, *h1]),
            bgp_id: Ipv4Addr::new(*i0, *i1, *i2, *i3),
            capabilities,
        })
    }
}

fn open_params_error(detail: &str) -> DecodeError {
    // RFC 4271 §6.2 has no better subcode for a malformed parameter list
    // than 0 (unspecific).
    DecodeError::reset(code::OPEN_MESSAGE, 0, Vec::new(), format!("OPEN: {detail}"))
}

/// The UPDATE message (RFC 4271 §4.3) as decoded.
///
/// ```text
///   +-----------------------------------------------------+
///   |   Withdrawn Routes Length (2 octets)                |
///   +-----------------------------------------------------+
///   |   Withdrawn Routes (variable)                       |
///   +-----------------------------------------------------+
///   |   Total Path Attribute Length (2 octets)            |
///   +-----------------------------------------------------+
///   |   Path Attributes (variable)                        |
///   +-----------------------------------------------------+
///   |   Network Layer Reachability Information (variable) |
///   +-----------------------------------------------------+
/// ```
/// Decoding allocates one `Vec` per field, never one per prefix; the
/// attributes are one `Arc` shared by every announced prefix.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Update {
    /// IPv4 prefixes in the Withdrawn Routes field.
    pub withdrawn: Vec<Ipv4Prefix>,
    /// Path attributes (MP_REACH/MP_UNREACH excluded).
    pub attributes: Arc<PathAttributes>,
    /// IPv4 prefixes in the NLRI field.
    pub nlri: Vec<Ipv4Prefix>,
    /// MP_REACH_NLRI, if present and of a supported family.
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI, if present and of a supported family.
    pub mp_unreach: Option<MpUnreach>,
    /// Non-fatal RFC 7606 errors found while decoding, for the log.
    pub issues: Vec<AttributeIssue>,
}

impl Update {
    /// The most severe RFC 7606 action among [`Update::issues`], if any.
    /// `TreatAsWithdraw` means every announced prefix must be handled as
    /// withdrawn; `AttributeDiscard` means the (already dropped)
    /// attributes were ignored and the UPDATE is otherwise valid.
    pub fn action(&self) -> Option<ErrorAction> {
        self.issues.iter().map(|i| i.action).max()
    }

    /// True when the routes this UPDATE announces must be treated as
    /// withdrawn (RFC 7606 §2).
    pub fn treat_as_withdraw(&self) -> bool {
        self.action() == Some(ErrorAction::TreatAsWithdraw)
    }

    /// Every prefix announced (NLRI field then MP_REACH).
    pub fn announced(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.nlri
            .iter()
            .map(|p| Prefix::V4(*p))
            .chain(self.mp_reach.iter().flat_map(|m| m.nlri.iter().copied()))
    }

    /// Every prefix withdrawn (Withdrawn Routes then MP_UNREACH).
    pub fn withdrawn_prefixes(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.withdrawn.iter().map(|p| Prefix::V4(*p)).chain(
            self.mp_unreach
                .iter()
                .flat_map(|m| m.withdrawn.iter().copied()),
        )
    }

    /// The family whose End-of-RIB marker (RFC 4724 §2) this is, if any.
    pub fn end_of_rib(&self) -> Option<Family> {
        let no_attrs = *self.attributes == PathAttributes::default();
        if !no_attrs
            || !self.nlri.is_empty()
            || !self.withdrawn.is_empty()
            || self.mp_reach.is_some()
        {
            return None;
        }
        match &self.mp_unreach {
            None => Some(Family::Ipv4Unicast),
            Some(u) if u.withdrawn.is_empty() => Some(u.family),
            Some(_) => None,
        }
    }

    /// The End-of-RIB marker for a family.
    pub fn end_of_rib_marker(family: Family) -> Update {
        let mp_unreach = match family {
            Family::Ipv4Unicast => None,
            f => Some(MpUnreach {
                family: f,
                withdrawn: Vec::new(),
            }),
        };
        Update {
            mp_unreach,
            ..Update::default()
        }
    }

    fn encode_body(&self, ctx: &CodecContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let wpos = out.len();
        out.extend_from_slice(&[0, 0]);
        for p in &self.withdrawn {
            p.encode(out);
        }
        let wlen = out.len() - wpos - 2;
        out[wpos..wpos + 2].copy_from_slice(&(wlen as u16).to_be_bytes());
        let apos = out.len();
        out.extend_from_slice(&[0, 0]);
        if let Some(r) = &self.mp_reach {
            r.encode(out)?;
        }
        if let Some(u) = &self.mp_unreach {
            u.encode(out)?;
        }
        self.attributes.encode(ctx, out)?;
        let alen = out.len() - apos - 2;
        let alen16 = u16::try_from(alen).map_err(|_| EncodeError::TooLong {
            len: alen,
            max: ctx.max_message_len(),
        })?;
        out[apos..apos + 2].copy_from_slice(&alen16.to_be_bytes());
        for p in &self.nlri {
            p.encode(out);
        }
        Ok(())
    }

    fn decode_body(body: &[u8], ctx: &CodecContext) -> Result<Update, DecodeError> {
        let malformed = |detail: String| {
            DecodeError::reset(
                code::UPDATE_MESSAGE,
                subcode::update::MALFORMED_ATTRIBUTE_LIST,
                Vec::new(),
                detail,
            )
        };
        let [w0, w1, rest @ ..] = body else {
            return Err(malformed("UPDATE shorter than 4 octets".into()));
        };
        let wlen = usize::from(u16::from_be_bytes([*w0, *w1]));
        let Some((wbuf, rest)) = rest.split_at_checked(wlen) else {
            return Err(malformed(format!(
                "withdrawn routes length {wlen} overruns the message ({} octets left)",
                rest.len()
            )));
        };
        let [a0, a1, rest @ ..] = rest else {
            return Err(malformed("total path attribute length missing".into()));
        };
        let alen = usize::from(u16::from_be_bytes([*a0, *a1]));
        let Some((abuf, nbuf)) = rest.split_at_checked(alen) else {
            return Err(malformed(format!(
                "total path attribute length {alen} overruns the message ({} octets left)",
                rest.len()
            )));
        };
        let network = |e: crate::nlri::PrefixError, field: &str| {
            DecodeError::reset(
                code::UPDATE_MESSAGE,
                subcode::update::INVALID_NETWORK_FIELD,
                Vec::new(),
                format!("{field}: {e}"),
            )
        };
        let mut withdrawn = Vec::new();
        decode_ipv4_nlri(wbuf, &mut withdrawn).map_err(|e| network(e, "withdrawn routes"))?;
        let mut nlri = Vec::new();
        decode_ipv4_nlri(nbuf, &mut nlri).map_err(|e| network(e, "NLRI"))?;
        let mut issues = Vec::new();
        let decoded = decode_attributes(abuf, ctx, &mut issues)?;
        let mut attrs = decoded.attrs;
        if let Some(r) = &decoded.mp_reach {
            attrs.mp_next_hop = Some(MpNextHop {
                addr: r.next_hop,
                link_local: r.link_local,
            });
        }
        // RFC 7606 §3 (d): missing well-known mandatory attributes.
        let reach_mp = decoded
            .mp_reach
            .as_ref()
            .is_some_and(|m| !m.nlri.is_empty());
        if !nlri.is_empty() || reach_mp {
            let flagged =
                |issues: &[AttributeIssue], tc: u8| issues.iter().any(|i| i.type_code == tc);
            let mut missing = Vec::new();
            if attrs.origin.is_none() && !flagged(&issues, type_code::ORIGIN) {
                missing.push(type_code::ORIGIN);
            }
            if attrs.as_path.is_none() && !flagged(&issues, type_code::AS_PATH) {
                missing.push(type_code::AS_PATH);
            }
            if !nlri.is_empty()
                && attrs.next_hop.is_none()
                && !flagged(&issues, type_code::NEXT_HOP)
            {
                missing.push(type_code::NEXT_HOP);
            }
            for tc in missing {
                issues.push(AttributeIssue {
                    action: ErrorAction::TreatAsWithdraw,
                    type_code: tc,
                    reason: "missing well-known mandatory attribute".into(),
                });
            }
        }
        Ok(Update {
            withdrawn,
            attributes: Arc::new(attrs),
            nlri,
            mp_reach: decoded.mp_reach,
            mp_unreach: decoded.mp_unreach,
            issues,
        })
    }
}

/// The NOTIFICATION message (RFC 4271 §4.5).
///
/// ```text
///   0                   1                   2                   3
///   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///   | Error code    | Error subcode |   Data (variable)             |
///   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Notification {
    /// Error code (see [`crate::error::code`]).
    pub code: u8,
    /// Error subcode (see [`crate::error::subcode`]).
    pub subcode: u8,
    /// Diagnostic data.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION with the given code, subcode and data.
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// A Cease NOTIFICATION carrying an RFC 8203/9003 shutdown
    /// communication (used with Administrative Shutdown or Reset). The text
    /// is cut at 255 octets on a character boundary.
    pub fn cease_with_message(subcode: u8, message: &str) -> Self {
        let mut end = message.len().min(255);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = vec![end as u8];
        data.extend_from_slice(&message.as_bytes()[..end]);
        Notification {
            code: code::CEASE,
            subcode,
            data,
        }
    }

    /// The RFC 8203 shutdown communication, when this is a Cease
    /// Administrative Shutdown/Reset carrying valid UTF-8 text.
    pub fn shutdown_communication(&self) -> Option<&str> {
        if self.code != code::CEASE
            || !matches!(
                self.subcode,
                subcode::cease::ADMINISTRATIVE_SHUTDOWN | subcode::cease::ADMINISTRATIVE_RESET
            )
        {
            return None;
        }
        let [len, text @ ..] = self.data.as_slice() else {
            return None;
        };
        let text = text.get(..usize::from(*len))?;
        std::str::from_utf8(text).ok()
    }

    /// Human-readable code and subcode names.
    pub fn describe(&self) -> (&'static str, &'static str) {
        use subcode::*;
        let c = match self.code {
            code::MESSAGE_HEADER => "Message Header Error",
            code::OPEN_MESSAGE => "OPEN Message Error",
            code::UPDATE_MESSAGE => "UPDATE Message Error",
            code::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            code::FSM => "Finite State Machine Error",
            code::CEASE => "Cease",
            code::ROUTE_REFRESH => "ROUTE-REFRESH Message Error",
            _ => "Unknown error code",
        };
        let s = match (self.code, self.subcode) {
            (code::MESSAGE_HEADER, header::CONNECTION_NOT_SYNCHRONIZED) => {
                "Connection Not Synchronized"
            }
            (code::MESSAGE_HEADER, header::BAD_MESSAGE_LENGTH) => "Bad Message Length",
            (code::MESSAGE_HEADER, header::BAD_MESSAGE_TYPE) => "Bad Message Type",
            (code::OPEN_MESSAGE, open::UNSUPPORTED_VERSION) => "Unsupported Version Number",
            (code::OPEN_MESSAGE, open::BAD_PEER_AS) => "Bad Peer AS",
            (code::OPEN_MESSAGE, open::BAD_BGP_IDENTIFIER) => "Bad BGP Identifier",
            (code::OPEN_MESSAGE, open::UNSUPPORTED_OPTIONAL_PARAMETER) => {
                "Unsupported Optional Parameter"
            }
            (code::OPEN_MESSAGE, open::UNACCEPTABLE_HOLD_TIME) => "Unacceptable Hold Time",
            (code::OPEN_MESSAGE, open::UNSUPPORTED_CAPABILITY) => "Unsupported Capability",
            (code::UPDATE_MESSAGE, update::MALFORMED_ATTRIBUTE_LIST) => "Malformed Attribute List",
            (code::UPDATE_MESSAGE, update::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE) => {
                "Unrecognized Well-known Attribute"
            }
            (code::UPDATE_MESSAGE, update::MISSING_WELL_KNOWN_ATTRIBUTE) => {
                "Missing Well-known Attribute"
            }
            (code::UPDATE_MESSAGE, update::ATTRIBUTE_FLAGS_ERROR) => "Attribute Flags Error",
            (code::UPDATE_MESSAGE, update::ATTRIBUTE_LENGTH_ERROR) => "Attribute Length Error",
            (code::UPDATE_MESSAGE, update::INVALID_ORIGIN) => "Invalid ORIGIN Attribute",
            (code::UPDATE_MESSAGE, update::INVALID_NEXT_HOP) => "Invalid NEXT_HOP Attribute",
            (code::UPDATE_MESSAGE, update::OPTIONAL_ATTRIBUTE_ERROR) => "Optional Attribute Error",
            (code::UPDATE_MESSAGE, update::INVALID_NETWORK_FIELD) => "Invalid Network Field",
            (code::UPDATE_MESSAGE, update::MALFORMED_AS_PATH) => "Malformed AS_PATH",
            (code::FSM, fsm::UNEXPECTED_IN_OPENSENT) => "Unexpected Message in OpenSent",
            (code::FSM, fsm::UNEXPECTED_IN_OPENCONFIRM) => "Unexpected Message in OpenConfirm",
            (code::FSM, fsm::UNEXPECTED_IN_ESTABLISHED) => "Unexpected Message in Established",
            (code::CEASE, cease::MAX_PREFIXES) => "Maximum Number of Prefixes Reached",
            (code::CEASE, cease::ADMINISTRATIVE_SHUTDOWN) => "Administrative Shutdown",
            (code::CEASE, cease::PEER_DECONFIGURED) => "Peer De-configured",
            (code::CEASE, cease::ADMINISTRATIVE_RESET) => "Administrative Reset",
            (code::CEASE, cease::CONNECTION_REJECTED) => "Connection Rejected",
            (code::CEASE, cease::OTHER_CONFIGURATION_CHANGE) => "Other Configuration Change",
            (code::CEASE, cease::CONNECTION_COLLISION_RESOLUTION) => {
                "Connection Collision Resolution"
            }
            (code::CEASE, cease::OUT_OF_RESOURCES) => "Out of Resources",
            (code::CEASE, cease::HARD_RESET) => "Hard Reset",
            (code::CEASE, cease::BFD_DOWN) => "BFD Down",
            (_, 0) => "Unspecific",
            _ => "Unknown subcode",
        };
        (c, s)
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, s) = self.describe();
        write!(f, "{}/{} ({c} / {s})", self.code, self.subcode)?;
        if let Some(m) = self.shutdown_communication() {
            write!(f, ": {m:?}")?;
        }
        Ok(())
    }
}

/// The ROUTE-REFRESH message (RFC 2918, RFC 7313 subtypes).
///
/// ```text
///   0       7      15      23      31
///   +-------+-------+-------+-------+
///   |      AFI      | Subt. | SAFI  |
///   +-------+-------+-------+-------+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    /// AFI.
    pub afi: Afi,
    /// Message subtype (RFC 7313): 0 request, 1 BoRR, 2 EoRR.
    pub subtype: u8,
    /// SAFI.
    pub safi: Safi,
}

impl RouteRefresh {
    /// A plain refresh request for a family.
    pub fn request(family: Family) -> Self {
        let (afi, safi) = family.afi_safi();
        RouteRefresh {
            afi,
            subtype: 0,
            safi,
        }
    }
}

impl Message {
    /// The message type code.
    pub fn message_type(&self) -> u8 {
        match self {
            Message::Open(_) => message_type::OPEN,
            Message::Update(_) => message_type::UPDATE,
            Message::Notification(_) => message_type::NOTIFICATION,
            Message::Keepalive => message_type::KEEPALIVE,
            Message::RouteRefresh(_) => message_type::ROUTE_REFRESH,
        }
    }

    /// Appends the encoded message (header included) to `out`.
    pub fn encode(&self, ctx: &CodecContext, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0xff; 16]);
        out.extend_from_slice(&[0, 0, self.message_type()]);
        let res = match self {
            Message::Open(o) => o.encode_body(out),
            Message::Update(u) => u.encode_body(ctx, out),
            Message::Notification(n) => {
                out.push(n.code);
                out.push(n.subcode);
                out.extend_from_slice(&n.data);
                Ok(())
            }
            Message::Keepalive => Ok(()),
            Message::RouteRefresh(r) => {
                out.extend_from_slice(&r.afi.0.to_be_bytes());
                out.push(r.subtype);
                out.push(r.safi.0);
                Ok(())
            }
        };
        if let Err(e) = res {
            out.truncate(start);
            return Err(e);
        }
        let len = out.len() - start;
        // OPEN, KEEPALIVE and NOTIFICATION are always limited to 4096 (RFC 8654 §3).
        let max = match self {
            Message::Update(_) | Message::RouteRefresh(_) => ctx.max_message_len(),
            _ => MAX_MESSAGE_LEN,
        };
        if len > max {
            out.truncate(start);
            return Err(EncodeError::TooLong { len, max });
        }
        out[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
        Ok(())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self, ctx: &CodecContext) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::new();
        self.encode(ctx, &mut v)?;
        Ok(v)
    }
}

/// Checks the header at the start of `buf` and returns the whole message's
/// length, or `None` when fewer than 19 octets are buffered. A bad marker,
/// length or type is a Message Header Error (RFC 4271 §6.1).
pub fn frame_len(buf: &[u8], ctx: &CodecContext) -> Result<Option<usize>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if header[..16].iter().any(|b| *b != 0xff) {
        return Err(DecodeError::reset(
            code::MESSAGE_HEADER,
            subcode::header::CONNECTION_NOT_SYNCHRONIZED,
            Vec::new(),
            "marker is not all ones",
        ));
    }
    let len = usize::from(u16::from_be_bytes([header[16], header[17]]));
    let ty = header[18];
    let min = match ty {
        message_type::OPEN => 29,
        message_type::UPDATE => 23,
        message_type::NOTIFICATION => 21,
        message_type::KEEPALIVE => 19,
        message_type::ROUTE_REFRESH => 23,
        _ => {
            return Err(DecodeError::reset(
                code::MESSAGE_HEADER,
                subcode::header::BAD_MESSAGE_TYPE,
                vec![ty],
                format!("unknown message type {ty}"),
            ));
        }
    };
    let max = match ty {
        message_type::UPDATE | message_type::ROUTE_REFRESH => ctx.max_message_len(),
        _ => MAX_MESSAGE_LEN,
    };
    let bad = match ty {
        message_type::KEEPALIVE => len != 19,
        message_type::ROUTE_REFRESH => len < min || len > max,
        _ => len < min || len > max,
    };
    if bad {
        return Err(DecodeError::reset(
            code::MESSAGE_HEADER,
            subcode::header::BAD_MESSAGE_LENGTH,
            (len as u16).to_be_bytes().to_vec(),
            format!("bad length {len} for message type {ty}"),
        ));
    }
    Ok(Some(len))
}

/// Decodes exactly one message (header included) from `buf`. Non-fatal
/// UPDATE errors come back inside [`Update::issues`]; an `Err` means the
/// session must be reset with [`DecodeError::notification`].
pub fn decode_message(buf: &[u8], ctx: &CodecContext) -> Result<Message, DecodeError> {
    let Some(len) = frame_len(buf, ctx)? else {
        return Err(DecodeError::reset(
            code::MESSAGE_HEADER,
            subcode::header::BAD_MESSAGE_LENGTH,
            (buf.len() as u16).to_be_bytes().to_vec(),
            format!("message of {} octets is shorter than the header", buf.len()),
        ));
    };
    if len != buf.len() {
        return Err(DecodeError::reset(
            code::MESSAGE_HEADER,
            subcode::header::BAD_MESSAGE_LENGTH,
            (len as u16).to_be_bytes().to_vec(),
            format!("header length {len} but {} octets given", buf.len()),
        ));
    }
    let body = &buf[HEADER_LEN..];
    Ok(match buf[18] {
        message_type::OPEN => Message::Open(Open::decode_body(body)?),
        message_type::UPDATE => Message::Update(Update::decode_body(body, ctx)?),
        message_type::NOTIFICATION => Message::Notification(Notification {
            code: body[0],
            subcode: body[1],
            data: body[2..].to_vec(),
        }),
        message_type::KEEPALIVE => Message::Keepalive,
        _ => Message::RouteRefresh(RouteRefresh {
            afi: Afi(u16::from_be_bytes([body[0], body[1]])),
            subtype: body[2],
            safi: Safi(body[3]),
        }),
    })
}

/// Packs route changes into as few UPDATE messages as fit the session's
/// maximum message size: withdrawals first, then announcements grouped by
/// attribute set (equal `Arc`s or equal values share UPDATEs). IPv4 uses
/// the classic fields; IPv6 uses MP_REACH/MP_UNREACH with the next hop from
/// [`PathAttributes::mp_next_hop`].
#[derive(Debug)]
pub struct UpdateBuilder {
    ctx: CodecContext,
    withdrawn: Vec<Prefix>,
    /// Attribute sets in first-seen order with their prefixes.
    groups: Vec<(Arc<PathAttributes>, Vec<Prefix>)>,
    /// Group index by `Arc` pointer (fast path: one lookup per prefix
    /// without hashing the attributes). Every pointer stays valid because
    /// `keep` or `groups` holds its `Arc`.
    by_ptr: HashMap<usize, usize, SeededState>,
    /// Group index by attribute value (equal sets in different `Arc`s).
    by_value: HashMap<Arc<PathAttributes>, usize, SeededState>,
    keep: Vec<Arc<PathAttributes>>,
}

impl UpdateBuilder {
    /// An empty builder for a session with context `ctx`.
    pub fn new(ctx: CodecContext) -> Self {
        UpdateBuilder {
            ctx,
            withdrawn: Vec::new(),
            groups: Vec::new(),
            by_ptr: HashMap::default(),
            by_value: HashMap::default(),
            keep: Vec::new(),
        }
    }

    /// Adds a withdrawal.
    pub fn withdraw(&mut self, prefix: Prefix) {
        self.withdrawn.push(prefix);
    }

    /// Adds an announcement of `prefix` with `attrs`.
    pub fn announce(&mut self, attrs: &Arc<PathAttributes>, prefix: Prefix) {
        let ptr = Arc::as_ptr(attrs) as usize;
        if let Some(&i) = self.by_ptr.get(&ptr) {
            self.groups[i].1.push(prefix);
            return;
        }
        let i = match self.by_value.get(attrs) {
            Some(&i) => {
                self.keep.push(attrs.clone());
                i
            }
            None => {
                let i = self.groups.len();
                self.groups.push((attrs.clone(), Vec::new()));
                self.by_value.insert(attrs.clone(), i);
                i
            }
        };
        self.by_ptr.insert(ptr, i);
        self.groups[i].1.push(prefix);
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.withdrawn.is_empty() && self.groups.is_empty()
    }

    /// Encodes everything into messages, each a complete UPDATE.
    pub fn build(self) -> Result<Vec<Vec<u8>>, EncodeError> {
        let mut out = Vec::new();
        let max = self.ctx.max_message_len();
        let (w4, w6): (Vec<Prefix>, Vec<Prefix>) = self
            .withdrawn
            .into_iter()
            .partition(|p| matches!(p, Prefix::V4(_)));
        // IPv4 withdrawals: header + 2 + withdrawn + 2.
        pack_chunks(&w4, max - HEADER_LEN - 4, |chunk| {
            let mut m = header(message_type::UPDATE);
            let pos = m.len();
            m.extend_from_slice(&[0, 0]);
            for p in chunk {
                p.encode(&mut m);
            }
            let wl = (m.len() - pos - 2) as u16;
            m[pos..pos + 2].copy_from_slice(&wl.to_be_bytes());
            m.extend_from_slice(&[0, 0]);
            finish(&mut m);
            out.push(m);
            Ok(())
        })?;
        // IPv6 withdrawals: header + 4 + MP_UNREACH (4 header + 3).
        pack_chunks(&w6, max - HEADER_LEN - 4 - 7, |chunk| {
            let u = MpUnreach {
                family: Family::Ipv6Unicast,
                withdrawn: chunk.to_vec(),
            };
            let mut m = header(message_type::UPDATE);
            m.extend_from_slice(&[0, 0, 0, 0]);
            let pos = m.len();
            u.encode(&mut m)?;
            let al = (m.len() - pos) as u16;
            m[pos - 2..pos].copy_from_slice(&al.to_be_bytes());
            finish(&mut m);
            out.push(m);
            Ok(())
        })?;
        let mut attr_buf = Vec::with_capacity(256);
        for (attrs, prefixes) in &self.groups {
            // Sort v4 before v6 in place; most groups are one family.
            let mut prefixes = std::borrow::Cow::Borrowed(prefixes.as_slice());
            if !prefixes.is_sorted_by_key(|p| matches!(p, Prefix::V6(_))) {
                prefixes
                    .to_mut()
                    .sort_by_key(|p| matches!(p, Prefix::V6(_)));
            }
            let split = prefixes.iter().position(|p| matches!(p, Prefix::V6(_)));
            let (p4, p6) = prefixes.split_at(split.unwrap_or(prefixes.len()));
            attr_buf.clear();
            attrs.encode(&self.ctx, &mut attr_buf)?;
            let room = max.saturating_sub(HEADER_LEN + 4 + attr_buf.len());
            if room < 64 {
                return Err(EncodeError::TooLong {
                    len: HEADER_LEN + 4 + attr_buf.len(),
                    max,
                });
            }
            pack_chunks(p4, room, |chunk| {
                let size = HEADER_LEN
                    + 4
                    + attr_buf.len()
                    + chunk.iter().map(|p| p.encoded_len()).sum::<usize>();
                let mut m = Vec::with_capacity(size);
                m.extend_from_slice(&[0xff; 16]);
                m.extend_from_slice(&[0, 0, message_type::UPDATE, 0, 0]);
                m.extend_from_slice(&(attr_buf.len() as u16).to_be_bytes());
                m.extend_from_slice(&attr_buf);
                for p in chunk {
                    p.encode(&mut m);
                }
                finish(&mut m);
                out.push(m);
                Ok(())
            })?;
            if !p6.is_empty() {
                let nh = attrs.mp_next_hop.unwrap_or(MpNextHop {
                    addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    link_local: None,
                });
                // MP_REACH overhead: 4 header + 2 AFI + 1 SAFI + 1 len + 32 nh + 1.
                pack_chunks(p6, room.saturating_sub(41), |chunk| {
                    let r = MpReach {
                        family: Family::Ipv6Unicast,
                        next_hop: nh.addr,
                        link_local: nh.link_local,
                        nlri: chunk.to_vec(),
                    };
                    let mut m = header(message_type::UPDATE);
                    m.extend_from_slice(&[0, 0, 0, 0]);
                    let pos = m.len();
                    r.encode(&mut m)?;
                    m.extend_from_slice(&attr_buf);
                    let al = (m.len() - pos) as u16;
                    m[pos - 2..pos].copy_from_slice(&al.to_be_bytes());
                    finish(&mut m);
                    out.push(m);
                    Ok(())
                })?;
            }
        }
        Ok(out)
    }
}

fn header(ty: u8) -> Vec<u8> {
    let mut m = Vec::with_capacity(256);
    m.extend_from_slice(&[0xff; 16]);
    m.extend_from_slice(&[0, 0, ty]);
    m
}

fn finish(m: &mut [u8]) {
    let len = m.len() as u16;
    m[16..18].copy_from_slice(&len.to_be_bytes());
}

/// Calls `emit` with consecutive runs of `prefixes` whose encodings fit `room`.
fn pack_chunks(
    prefixes: &[Prefix],
    room: usize,
    mut emit: impl FnMut(&[Prefix]) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let mut start = 0;
    let mut used = 0;
    for (i, p) in prefixes.iter().enumerate() {
        let l = p.encoded_len();
        if used + l > room && i > start {
            emit(&prefixes[start..i])?;
            start = i;
            used = 0;
        }
        used += l;
    }
    if start < prefixes.len() {
        emit(&prefixes[start..])?;
    }
    Ok(())
}
