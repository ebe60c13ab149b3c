//! Codec errors and the RFC 7606 / RFC 4271 §6 error actions.
//!
//! Owns [`DecodeError`] (a message that ends the session, carrying the
//! NOTIFICATION to send), [`AttributeIssue`] (a non-fatal UPDATE error and
//! the RFC 7606 action it calls for) and [`EncodeError`]. The NOTIFICATION
//! message itself lives in [`crate::message`].

use std::fmt;

use crate::message::Notification;
use crate::nlri::{Afi, Safi};

/// NOTIFICATION error codes (RFC 4271 §4.5, RFC 7313).
pub mod code {
    /// Message Header Error.
    pub const MESSAGE_HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN_MESSAGE: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE_MESSAGE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH: u8 = 7;
}

/// NOTIFICATION error subcodes, grouped by error code.
pub mod subcode {
    /// Message Header Error subcodes.
    pub mod header {
        /// Connection Not Synchronized (marker not all ones).
        pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
        /// Bad Message Length.
        pub const BAD_MESSAGE_LENGTH: u8 = 2;
        /// Bad Message Type.
        pub const BAD_MESSAGE_TYPE: u8 = 3;
    }
    /// OPEN Message Error subcodes.
    pub mod open {
        /// Unsupported Version Number.
        pub const UNSUPPORTED_VERSION: u8 = 1;
        /// Bad Peer AS.
        pub const BAD_PEER_AS: u8 = 2;
        /// Bad BGP Identifier.
        pub const BAD_BGP_IDENTIFIER: u8 = 3;
        /// Unsupported Optional Parameter.
        pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
        /// Unacceptable Hold Time.
        pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
        /// Unsupported Capability (RFC 5492).
        pub const UNSUPPORTED_CAPABILITY: u8 = 7;
    }
    /// UPDATE Message Error subcodes.
    pub mod update {
        /// Malformed Attribute List.
        pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
        /// Unrecognized Well-known Attribute.
        pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
        /// Missing Well-known Attribute.
        pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
        /// Attribute Flags Error.
        pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
        /// Attribute Length Error.
        pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
        /// Invalid ORIGIN Attribute.
        pub const INVALID_ORIGIN: u8 = 6;
        /// Invalid NEXT_HOP Attribute.
        pub const INVALID_NEXT_HOP: u8 = 8;
        /// Optional Attribute Error.
        pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
        /// Invalid Network Field.
        pub const INVALID_NETWORK_FIELD: u8 = 10;
        /// Malformed AS_PATH.
        pub const MALFORMED_AS_PATH: u8 = 11;
    }
    /// Finite State Machine Error subcodes (RFC 6608).
    pub mod fsm {
        /// Unspecified.
        pub const UNSPECIFIED: u8 = 0;
        /// Receive Unexpected Message in OpenSent State.
        pub const UNEXPECTED_IN_OPENSENT: u8 = 1;
        /// Receive Unexpected Message in OpenConfirm State.
        pub const UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
        /// Receive Unexpected Message in Established State.
        pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
    }
    /// Cease subcodes (RFC 4486, RFC 8538).
    pub mod cease {
        /// Maximum Number of Prefixes Reached.
        pub const MAX_PREFIXES: u8 = 1;
        /// Administrative Shutdown.
        pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
        /// Peer De-configured.
        pub const PEER_DECONFIGURED: u8 = 3;
        /// Administrative Reset.
        pub const ADMINISTRATIVE_RESET: u8 = 4;
        /// Connection Rejected.
        pub const CONNECTION_REJECTED: u8 = 5;
        /// Other Configuration Change.
        pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
        /// Connection Collision Resolution.
        pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
        /// Out of Resources.
        pub const OUT_OF_RESOURCES: u8 = 8;
        /// Hard Reset (RFC 8538).
        pub const HARD_RESET: u8 = 9;
        /// BFD Down (RFC 9384): the BFD session protecting this BGP
        /// session went down.
        pub const BFD_DOWN: u8 = 10;
    }
}

/// What RFC 7606 (or RFC 4271 §6) says to do about an error in a message.
/// Ordered from the mildest to the most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ErrorAction {
    /// The malformed attribute is dropped; the UPDATE is otherwise used
    /// (RFC 7606 §2 "attribute discard").
    AttributeDiscard,
    /// Every route the UPDATE announces is handled as withdrawn
    /// (RFC 7606 §2 "treat-as-withdraw").
    TreatAsWithdraw,
    /// The address family is disabled for the session (RFC 4760 §7); a
    /// speaker that cannot disable one family resets the session instead.
    AfiSafiDisable {
        /// The family's AFI.
        afi: Afi,
        /// The family's SAFI.
        safi: Safi,
    },
    /// The session is reset with a NOTIFICATION.
    SessionReset,
}

impl fmt::Display for ErrorAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorAction::AttributeDiscard => f.write_str("attribute-discard"),
            ErrorAction::TreatAsWithdraw => f.write_str("treat-as-withdraw"),
            ErrorAction::AfiSafiDisable { afi, safi } => {
                write!(f, "afi-safi-disable(afi {}, safi {})", afi.0, safi.0)
            }
            ErrorAction::SessionReset => f.write_str("session-reset"),
        }
    }
}

/// A non-fatal error found in one path attribute of an UPDATE (RFC 7606).
/// The decoded [`crate::message::Update`] lists these; the caller logs them
/// and applies [`crate::message::Update::action`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeIssue {
    /// The action RFC 7606 prescribes.
    pub action: ErrorAction,
    /// The attribute type code (e.g. 2 for AS_PATH).
    pub type_code: u8,
    /// What was wrong, for the log.
    pub reason: String,
}

impl fmt::Display for AttributeIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (RFC 7606) attribute type {} ({}): {}",
            self.action,
            self.type_code,
            crate::attribute::type_name(self.type_code),
            self.reason
        )
    }
}

/// A message that cannot be accepted: the session must be reset (or, for
/// [`ErrorAction::AfiSafiDisable`], the family disabled) and
/// [`DecodeError::notification`] sent to the peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail} (send NOTIFICATION {}/{}, {action})", notification.code, notification.subcode)]
pub struct DecodeError {
    /// The NOTIFICATION to send before closing.
    pub notification: Notification,
    /// The action that applies (`SessionReset` or `AfiSafiDisable`).
    pub action: ErrorAction,
    /// The offending attribute type code, when the error is in one attribute.
    pub attribute: Option<u8>,
    /// A description for the log.
    pub detail: String,
}

impl DecodeError {
    /// A session-reset error with a NOTIFICATION of `code`/`subcode`/`data`.
    pub fn reset(code: u8, subcode: u8, data: Vec<u8>, detail: impl Into<String>) -> Self {
        DecodeError {
            notification: Notification::new(code, subcode, data),
            action: ErrorAction::SessionReset,
            attribute: None,
            detail: detail.into(),
        }
    }

    /// Names the offending attribute.
    pub fn with_attribute(mut self, type_code: u8) -> Self {
        self.attribute = Some(type_code);
        self
    }
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The message would exceed the negotiated maximum size.
    #[error("message of {len} octets exceeds the maximum of {max}")]
    TooLong {
        /// Octets the message would need.
        len: usize,
        /// The maximum allowed (4096, or 65535 with RFC 8654).
        max: usize,
    },
    /// An attribute value is too long for its length field.
    #[error("attribute type {type_code} value of {len} octets is too long")]
    AttributeTooLong {
        /// The attribute type code.
        type_code: u8,
        /// Its value length.
        len: usize,
    },
    /// An optional parameter or capability is too long.
    #[error("capability {code} of {len} octets is too long")]
    CapabilityTooLong {
        /// The capability code.
        code: u8,
        /// Its length.
        len: usize,
    },
}
