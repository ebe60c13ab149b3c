//! The BFD Control packet (RFC 5880 §4.1): its wire codec and the reception
//! checks of §6.8.6 that need nothing but the packet itself.
//!
//! Owns: [`ControlPacket`] (the parsed form), [`State`], [`Diagnostic`],
//! [`decode`] and [`ControlPacket::encode`], and [`DecodeError`]. It does
//! not own the checks that need a session (whether "Your Discriminator"
//! names one of ours): the session ([`crate::session`]) and the demultiplexer
//! in the driver do those.
//!
//! Authentication (§4.2-§4.4, §6.7) is not implemented: a packet with the
//! A bit set is rejected with [`DecodeError::AuthenticationUnsupported`],
//! which is what §6.8.6 asks of a session that has no authentication
//! configured. The Echo function and Demand mode are not implemented either:
//! tabby always sends Required Min Echo RX Interval 0 and the D bit clear.
//!
//! Decoding never panics on any input (a fuzz target checks this).

use std::fmt;

/// The BFD protocol version this codec speaks (RFC 5880 §4.1).
pub const VERSION: u8 = 1;

/// Length of a Control packet without an authentication section.
pub const PACKET_LEN: usize = 24;

/// Session states as carried in the Sta field (RFC 5880 §4.1, §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// AdminDown (0): the session is held down by an operator.
    AdminDown,
    /// Down (1): the session is down or has just been created.
    Down,
    /// Init (2): the remote end has been heard from, the three-way
    /// handshake is under way.
    Init,
    /// Up (3): the session is established.
    Up,
}

impl State {
    /// The 2-bit wire value.
    pub fn to_bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    /// Parses the 2-bit wire value (only the low two bits are looked at).
    pub fn from_bits(bits: u8) -> State {
        match bits & 0b11 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// Diagnostic codes (RFC 5880 §4.1): why the sender's session last left Up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Diagnostic {
    /// 0: No Diagnostic.
    None,
    /// 1: Control Detection Time Expired (no packet from the peer for a
    /// detection time).
    ControlDetectionTimeExpired,
    /// 2: Echo Function Failed.
    EchoFunctionFailed,
    /// 3: Neighbor Signaled Session Down.
    NeighborSignaledDown,
    /// 4: Forwarding Plane Reset.
    ForwardingPlaneReset,
    /// 5: Path Down.
    PathDown,
    /// 6: Concatenated Path Down.
    ConcatenatedPathDown,
    /// 7: Administratively Down.
    AdministrativelyDown,
    /// 8: Reverse Concatenated Path Down.
    ReverseConcatenatedPathDown,
    /// 9-31: reserved for future use; kept so that it round-trips.
    Reserved(u8),
}

impl Diagnostic {
    /// The 5-bit wire value.
    pub fn to_bits(self) -> u8 {
        match self {
            Diagnostic::None => 0,
            Diagnostic::ControlDetectionTimeExpired => 1,
            Diagnostic::EchoFunctionFailed => 2,
            Diagnostic::NeighborSignaledDown => 3,
            Diagnostic::ForwardingPlaneReset => 4,
            Diagnostic::PathDown => 5,
            Diagnostic::ConcatenatedPathDown => 6,
            Diagnostic::AdministrativelyDown => 7,
            Diagnostic::ReverseConcatenatedPathDown => 8,
            Diagnostic::Reserved(v) => v & 0x1f,
        }
    }

    /// Parses the 5-bit wire value (only the low five bits are looked at).
    pub fn from_bits(bits: u8) -> Diagnostic {
        match bits & 0x1f {
            0 => Diagnostic::None,
            1 => Diagnostic::ControlDetectionTimeExpired,
            2 => Diagnostic::EchoFunctionFailed,
            3 => Diagnostic::NeighborSignaledDown,
            4 => Diagnostic::ForwardingPlaneReset,
            5 => Diagnostic::PathDown,
            6 => Diagnostic::ConcatenatedPathDown,
            7 => Diagnostic::AdministrativelyDown,
            8 => Diagnostic::ReverseConcatenatedPathDown,
            v => Diagnostic::Reserved(v),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diagnostic::None => f.write_str("no diagnostic"),
            Diagnostic::ControlDetectionTimeExpired => {
                f.write_str("control detection time expired")
            }
            Diagnostic::EchoFunctionFailed => f.write_str("echo function failed"),
            Diagnostic::NeighborSignaledDown => f.write_str("neighbor signaled session down"),
            Diagnostic::ForwardingPlaneReset => f.write_str("forwarding plane reset"),
            Diagnostic::PathDown => f.write_str("path down"),
            Diagnostic::ConcatenatedPathDown => f.write_str("concatenated path down"),
            Diagnostic::AdministrativelyDown => f.write_str("administratively down"),
            Diagnostic::ReverseConcatenatedPathDown => {
                f.write_str("reverse concatenated path down")
            }
            Diagnostic::Reserved(v) => write!(f, "reserved diagnostic {v}"),
        }
    }
}

/// A BFD Control packet without authentication (RFC 5880 §4.1).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       My Discriminator                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      Your Discriminator                       |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Desired Min TX Interval                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                   Required Min RX Interval                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                 Required Min Echo RX Interval                 |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// Intervals are in microseconds, as on the wire. The Version (always 1),
/// Length (always 24), A (always clear) and M (always clear) fields are not
/// stored: [`decode`] rejects anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ControlPacket {
    /// Diag: why the sender's session last changed state.
    pub diagnostic: Diagnostic,
    /// Sta: the sender's session state.
    pub state: State,
    /// P: the sender asks for a packet with the Final bit (a Poll Sequence).
    pub poll: bool,
    /// F: the answer to a Poll.
    pub final_: bool,
    /// C: the sender's BFD does not share fate with its control plane.
    pub control_plane_independent: bool,
    /// D: the sender wants to run in Demand mode.
    pub demand: bool,
    /// Detect Mult: the sender's detection time multiplier (never 0).
    pub detect_mult: u8,
    /// My Discriminator: the sender's discriminator for this session
    /// (never 0).
    pub my_discriminator: u32,
    /// Your Discriminator: the receiver's discriminator as the sender knows
    /// it, or 0 if it does not know it yet.
    pub your_discriminator: u32,
    /// Desired Min TX Interval, µs.
    pub desired_min_tx: u32,
    /// Required Min RX Interval, µs (0: do not send me periodic packets).
    pub required_min_rx: u32,
    /// Required Min Echo RX Interval, µs (0: no Echo packets).
    pub required_min_echo_rx: u32,
}

/// Why a received datagram was discarded (RFC 5880 §6.8.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The datagram is shorter than the 24-octet mandatory section.
    #[error("BFD packet truncated: {len} octets, need at least 24")]
    Truncated {
        /// Length of the datagram.
        len: usize,
    },
    /// The Vers field is not 1.
    #[error("BFD packet field Vers: version {0} is not supported (only 1)")]
    UnsupportedVersion(u8),
    /// The Length field is below the minimum (24, or 26 with the A bit).
    #[error("BFD packet field Length: {length} is less than the minimum {minimum}")]
    LengthTooSmall {
        /// The Length field.
        length: u8,
        /// The minimum for this packet.
        minimum: u8,
    },
    /// The Length field is larger than the datagram.
    #[error("BFD packet field Length: {length} is more than the {available} octets received")]
    LengthBeyondDatagram {
        /// The Length field.
        length: u8,
        /// Octets in the datagram.
        available: usize,
    },
    /// The Detect Mult field is 0.
    #[error("BFD packet field Detect Mult is 0")]
    ZeroDetectMult,
    /// The M (Multipoint) bit is set.
    #[error("BFD packet field M (Multipoint) is set")]
    Multipoint,
    /// The My Discriminator field is 0.
    #[error("BFD packet field My Discriminator is 0")]
    ZeroMyDiscriminator,
    /// Your Discriminator is 0 but the sender's state is Init or Up, so the
    /// packet cannot be matched to a session.
    #[error("BFD packet field Your Discriminator is 0 while Sta is {state}")]
    ZeroYourDiscriminator {
        /// The sender's state.
        state: State,
    },
    /// The A bit is set: tabby does not implement BFD authentication, and
    /// §6.8.6 discards authenticated packets on a session without it.
    #[error(
        "BFD packet field A (Authentication Present) is set: BFD authentication is not supported"
    )]
    AuthenticationUnsupported,
}

/// Decodes one Control packet from a UDP payload and runs the packet-only
/// reception checks of RFC 5880 §6.8.6, in its order.
pub fn decode(datagram: &[u8]) -> Result<ControlPacket, DecodeError> {
    let Some(head) = datagram.first_chunk::<PACKET_LEN>() else {
        return Err(DecodeError::Truncated {
            len: datagram.len(),
        });
    };
    let version = head[0] >> 5;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let flags = head[1];
    let auth = flags & 0x04 != 0;
    let length = head[3];
    let minimum = if auth { 26 } else { 24 };
    if length < minimum {
        return Err(DecodeError::LengthTooSmall { length, minimum });
    }
    if usize::from(length) > datagram.len() {
        return Err(DecodeError::LengthBeyondDatagram {
            length,
            available: datagram.len(),
        });
    }
    let detect_mult = head[2];
    if detect_mult == 0 {
        return Err(DecodeError::ZeroDetectMult);
    }
    if flags & 0x01 != 0 {
        return Err(DecodeError::Multipoint);
    }
    let word = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let my_discriminator = word(4);
    if my_discriminator == 0 {
        return Err(DecodeError::ZeroMyDiscriminator);
    }
    let state = State::from_bits(flags >> 6);
    let your_discriminator = word(8);
    if your_discriminator == 0 && matches!(state, State::Init | State::Up) {
        return Err(DecodeError::ZeroYourDiscriminator { state });
    }
    if auth {
        return Err(DecodeError::AuthenticationUnsupported);
    }
    Ok(ControlPacket {
        diagnostic: Diagnostic::from_bits(head[0]),
        state,
        poll: flags & 0x20 != 0,
        final_: flags & 0x10 != 0,
        control_plane_independent: flags & 0x08 != 0,
        demand: flags & 0x02 != 0,
        detect_mult,
        my_discriminator,
        your_discriminator,
        desired_min_tx: word(12),
        required_min_rx: word(16),
        required_min_echo_rx: word(20),
    })
}

impl ControlPacket {
    /// Encodes the packet (24 octets, no authentication section).
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut out = [0u8; PACKET_LEN];
        out[0] = (VERSION << 5) | self.diagnostic.to_bits();
        out[1] = (self.state.to_bits() << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.control_plane_independent) << 3)
            | (u8::from(self.demand) << 1);
        out[2] = self.detect_mult;
        out[3] = PACKET_LEN as u8;
        out[4..8].copy_from_slice(&self.my_discriminator.to_be_bytes());
        out[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        out[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        out[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        out[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ControlPacket {
        ControlPacket {
            diagnostic: Diagnostic::None,
            state: State::Down,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 1,
            your_discriminator: 0,
            desired_min_tx: 1_000_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        }
    }

    #[test]
    fn known_bytes() {
        // Up, Poll, mult 3, discriminators 0x11223344 / 0x55667788,
        // 300 ms / 300 ms / 0, diag 3.
        let bytes = [
            0x23, 0xe0, 3, 24, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0, 0x04, 0x93, 0xe0,
            0, 0x04, 0x93, 0xe0, 0, 0, 0, 0,
        ];
        let p = decode(&bytes).expect("decodes");
        assert_eq!(p.state, State::Up);
        assert_eq!(p.diagnostic, Diagnostic::NeighborSignaledDown);
        assert!(p.poll && !p.final_);
        assert_eq!(p.detect_mult, 3);
        assert_eq!(p.my_discriminator, 0x1122_3344);
        assert_eq!(p.your_discriminator, 0x5566_7788);
        assert_eq!(p.desired_min_tx, 300_000);
        assert_eq!(p.required_min_rx, 300_000);
        assert_eq!(p.encode(), bytes);
    }

    #[test]
    fn reception_checks() {
        let good = sample().encode();
        assert_eq!(decode(&good[..23]), Err(DecodeError::Truncated { len: 23 }));
        let mut b = good;
        b[0] = 2 << 5;
        assert_eq!(decode(&b), Err(DecodeError::UnsupportedVersion(2)));
        let mut b = good;
        b[3] = 20;
        assert!(matches!(
            decode(&b),
            Err(DecodeError::LengthTooSmall { .. })
        ));
        let mut b = good;
        b[3] = 25;
        assert!(matches!(
            decode(&b),
            Err(DecodeError::LengthBeyondDatagram { .. })
        ));
        let mut b = good;
        b[2] = 0;
        assert_eq!(decode(&b), Err(DecodeError::ZeroDetectMult));
        let mut b = good;
        b[1] |= 1;
        assert_eq!(decode(&b), Err(DecodeError::Multipoint));
        let mut b = good;
        b[4..8].fill(0);
        assert_eq!(decode(&b), Err(DecodeError::ZeroMyDiscriminator));
        let mut b = good;
        b[1] = (State::Up.to_bits() << 6) | (b[1] & 0x3f);
        assert_eq!(
            decode(&b),
            Err(DecodeError::ZeroYourDiscriminator { state: State::Up })
        );
        let mut b = good.to_vec();
        b[1] |= 0x04;
        b[3] = 26;
        b.extend_from_slice(&[1, 2]);
        assert_eq!(decode(&b), Err(DecodeError::AuthenticationUnsupported));
        // A longer Length than 24 without authentication is accepted; the
        // extra octets are ignored.
        let mut b = good.to_vec();
        b[3] = 28;
        b.extend_from_slice(&[0; 4]);
        assert_eq!(decode(&b), Ok(sample()));
    }
}
