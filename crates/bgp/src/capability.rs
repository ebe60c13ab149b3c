//! BGP capabilities (RFC 5492) carried in the OPEN message.
//!
//! Owns the [`Capability`] type and its encoding. Capabilities we understand
//! are parsed (multiprotocol RFC 4760, route refresh RFC 2918, 4-octet AS
//! RFC 6793, graceful restart RFC 4724, extended message RFC 8654, enhanced
//! route refresh RFC 7313); every other one is kept as
//! [`Capability::Unknown`] and ignored. Negotiation (which capabilities both
//! sides share) lives in [`crate::fsm`].
//!
//! ```text
//!   +------------------------------+
//!   | Capability Code (1 octet)    |
//!   +------------------------------+
//!   | Capability Length (1 octet)  |
//!   +------------------------------+
//!   | Capability Value (variable)  |
//!   ~                              ~
//!   +------------------------------+
//! ```

use crate::error::{DecodeError, EncodeError, code, subcode};
use crate::nlri::{Afi, Family, Safi};

/// Capability codes (IANA "Capability Codes" registry).
pub mod capability_code {
    /// Multiprotocol Extensions (RFC 4760).
    pub const MULTIPROTOCOL: u8 = 1;
    /// Route Refresh (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 2;
    /// Extended Message (RFC 8654).
    pub const EXTENDED_MESSAGE: u8 = 6;
    /// Graceful Restart (RFC 4724).
    pub const GRACEFUL_RESTART: u8 = 64;
    /// Support for 4-octet AS numbers (RFC 6793).
    pub const FOUR_OCTET_AS: u8 = 65;
    /// Enhanced Route Refresh (RFC 7313).
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
}

/// One address family in the graceful restart capability.
///
/// ```text
///   +--------------------------------------------------+
///   | Address Family Identifier (16 bits)              |
///   +--------------------------------------------------+
///   | Subsequent Address Family Identifier (8 bits)    |
///   +--------------------------------------------------+
///   | Flags for Address Family (8 bits)                |
///   +--------------------------------------------------+
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GracefulRestartFamily {
    /// AFI.
    pub afi: Afi,
    /// SAFI.
    pub safi: Safi,
    /// True when forwarding state was preserved (the F bit).
    pub forwarding_preserved: bool,
}

/// The graceful restart capability value (RFC 4724 §3).
///
/// ```text
///   +--------------------------------------------------+
///   | Restart Flags (4 bits)                           |
///   +--------------------------------------------------+
///   | Restart Time in seconds (12 bits)                |
///   +--------------------------------------------------+
///   | (AFI, SAFI, Flags) repeated                      |
///   +--------------------------------------------------+
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// The R bit: the sender has restarted.
    pub restarting: bool,
    /// The N bit (RFC 8538): notification messages are covered.
    pub notification: bool,
    /// Restart time in seconds (0..=4095).
    pub restart_time: u16,
    /// The families whose routes are preserved.
    pub families: Vec<GracefulRestartFamily>,
}

/// A capability advertised in OPEN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// Multiprotocol extensions for one AFI/SAFI (RFC 4760 §8).
    ///
    /// ```text
    ///   0       7      15      23      31
    ///   +-------+-------+-------+-------+
    ///   |      AFI      | Res.  | SAFI  |
    ///   +-------+-------+-------+-------+
    /// ```
    Multiprotocol {
        /// AFI.
        afi: Afi,
        /// SAFI.
        safi: Safi,
    },
    /// Route refresh (RFC 2918), empty value.
    RouteRefresh,
    /// Enhanced route refresh (RFC 7313), empty value.
    EnhancedRouteRefresh,
    /// Extended message (RFC 8654), empty value: messages up to 65535 octets.
    ExtendedMessage,
    /// Graceful restart (RFC 4724): parsed and kept.
    GracefulRestart(GracefulRestart),
    /// 4-octet AS number support (RFC 6793), carrying the speaker's AS.
    FourOctetAs(u32),
    /// Any other capability, kept verbatim and otherwise ignored.
    Unknown {
        /// Capability code.
        code: u8,
        /// Value octets.
        value: Vec<u8>,
    },
}

impl Capability {
    /// The multiprotocol capability for a family we support.
    pub fn multiprotocol(family: Family) -> Self {
        let (afi, safi) = family.afi_safi();
        Capability::Multiprotocol { afi, safi }
    }

    /// The capability code.
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol { .. } => capability_code::MULTIPROTOCOL,
            Capability::RouteRefresh => capability_code::ROUTE_REFRESH,
            Capability::EnhancedRouteRefresh => capability_code::ENHANCED_ROUTE_REFRESH,
            Capability::ExtendedMessage => capability_code::EXTENDED_MESSAGE,
            Capability::GracefulRestart(_) => capability_code::GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => capability_code::FOUR_OCTET_AS,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Parses one capability value. Malformed known capabilities are an
    /// OPEN error (RFC 4271 §6.2 subcode 0 is unspecific; we use
    /// Unsupported Capability with the offending capability as data, as
    /// RFC 5492 §5 suggests for capabilities that cannot be handled).
    pub fn decode(code: u8, value: &[u8]) -> Result<Capability, DecodeError> {
        let bad = |what: &str| {
            let mut data = vec![code, value.len() as u8];
            data.extend_from_slice(value);
            DecodeError::reset(
                code::OPEN_MESSAGE,
                subcode::open::UNSUPPORTED_CAPABILITY,
                data,
                format!(
                    "malformed {what} capability (code {code}, {} octets)",
                    value.len()
                ),
            )
        };
        Ok(match code {
            capability_code::MULTIPROTOCOL => match value {
                [a0, a1, _reserved, safi] => Capability::Multiprotocol {
                    afi: Afi(u16::from_be_bytes([*a0, *a1])),
                    safi: Safi(*safi),
                },
                _ => return Err(bad("multiprotocol")),
            },
            capability_code::ROUTE_REFRESH if value.is_empty() => Capability::RouteRefresh,
            capability_code::ENHANCED_ROUTE_REFRESH if value.is_empty() => {
                Capability::EnhancedRouteRefresh
            }
            capability_code::EXTENDED_MESSAGE if value.is_empty() => Capability::ExtendedMessage,
            capability_code::FOUR_OCTET_AS => match value {
                [a, b, c, d] => Capability::FourOctetAs(u32::from_be_bytes([*a, *b, *c, *d])),
                _ => return Err(bad("4-octet AS")),
            },
            capability_code::GRACEFUL_RESTART => {
                let [f0, f1, rest @ ..] = value else {
                    return Err(bad("graceful restart"));
                };
                if rest.len() % 4 != 0 {
                    return Err(bad("graceful restart"));
                }
                let families = rest
                    .chunks_exact(4)
                    .map(|c| GracefulRestartFamily {
                        afi: Afi(u16::from_be_bytes([c[0], c[1]])),
                        safi: Safi(c[2]),
                        forwarding_preserved: c[3] & 0x80 != 0,
                    })
                    .collect();
                Capability::GracefulRestart(GracefulRestart {
                    restarting: f0 & 0x80 != 0,
                    notification: f0 & 0x40 != 0,
                    restart_time: u16::from_be_bytes([f0 & 0x0f, *f1]),
                    families,
                })
            }
            _ => Capability::Unknown {
                code,
                value: value.to_vec(),
            },
        })
    }

    /// Appends code, length and value.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.push(self.code());
        out.push(0);
        match self {
            Capability::Multiprotocol { afi, safi } => {
                out.extend_from_slice(&afi.0.to_be_bytes());
                out.push(0);
                out.push(safi.0);
            }
            Capability::RouteRefresh
            | Capability::EnhancedRouteRefresh
            | Capability::ExtendedMessage => {}
            Capability::FourOctetAs(asn) => out.extend_from_slice(&asn.to_be_bytes()),
            Capability::GracefulRestart(gr) => {
                let mut flags = (gr.restart_time.min(0x0fff) >> 8) as u8;
                if gr.restarting {
                    flags |= 0x80;
                }
                if gr.notification {
                    flags |= 0x40;
                }
                out.push(flags);
                out.push(gr.restart_time as u8);
                for f in &gr.families {
                    out.extend_from_slice(&f.afi.0.to_be_bytes());
                    out.push(f.safi.0);
                    out.push(if f.forwarding_preserved { 0x80 } else { 0 });
                }
            }
            Capability::Unknown { value, .. } => out.extend_from_slice(value),
        }
        let len = out.len() - start - 2;
        let Ok(len8) = u8::try_from(len) else {
            out.truncate(start);
            return Err(EncodeError::CapabilityTooLong {
                code: self.code(),
                len,
            });
        };
        out[start + 1] = len8;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_round_trip() {
        let caps = [
            Capability::multiprotocol(Family::Ipv4Unicast),
            Capability::multiprotocol(Family::Ipv6Unicast),
            Capability::RouteRefresh,
            Capability::EnhancedRouteRefresh,
            Capability::ExtendedMessage,
            Capability::FourOctetAs(4_200_000_000),
            Capability::GracefulRestart(GracefulRestart {
                restarting: true,
                notification: false,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi: Afi::IPV4,
                    safi: Safi::UNICAST,
                    forwarding_preserved: true,
                }],
            }),
            Capability::Unknown {
                code: 73,
                value: b"host".to_vec(),
            },
        ];
        for c in caps {
            let mut buf = Vec::new();
            c.encode(&mut buf).expect("encode");
            assert_eq!(usize::from(buf[1]), buf.len() - 2);
            assert_eq!(Capability::decode(buf[0], &buf[2..]).expect("decode"), c);
        }
    }

    #[test]
    fn four_octet_as_bytes() {
        // RFC 6793 §3: code 65, length 4, AS 65550.
        let c = Capability::decode(65, &[0, 1, 0, 14]).expect("decode");
        assert_eq!(c, Capability::FourOctetAs(65550));
        let e = Capability::decode(65, &[0, 1]).expect_err("short");
        assert_eq!(
            e.notification.subcode,
            subcode::open::UNSUPPORTED_CAPABILITY
        );
    }
}
