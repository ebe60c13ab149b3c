//! Sans-IO BGP-4: message codec, capabilities, attributes, session FSM,
//! RIBs, decision process, policy, route reflection. No sockets, no clock:
//! callers feed bytes and `Instant`s in and take bytes and events out.
//!
//! Layers, bottom up:
//! - [`nlri`], [`capability`], [`attribute`], [`message`], [`error`]: the
//!   wire codec (RFC 4271, 4760, 6793, 1997, 8092, 4456, 7606, 8203).
//! - [`rib`], [`decision`], [`policy`]: Adj-RIB-In / Loc-RIB / Adj-RIB-Out,
//!   best path and multipath, import/export rules, route reflection.
//! - [`fsm`]: one session's state machine (RFC 4271 §8), driven by inputs
//!   and `Instant`s, producing bytes and events.

pub mod attribute;
pub mod capability;
pub mod decision;
pub mod error;
pub mod fsm;
pub mod message;
pub mod nlri;
pub mod policy;
pub mod rib;

pub use attribute::{AsPath, Community, LargeCommunity, Origin, PathAttributes};
pub use capability::Capability;
pub use error::{AttributeIssue, DecodeError, EncodeError, ErrorAction};
pub use fsm::{Direction, Event, Input, Negotiated, Session, SessionConfig, State};
pub use message::{
    CodecContext, Message, Notification, Open, RouteRefresh, Update, UpdateBuilder, decode_message,
    frame_len,
};
pub use nlri::{Afi, Family, Ipv4Prefix, Ipv6Prefix, Prefix, Safi};
pub use rib::{PeerConfig, PeerId, PeerUp, Rib, RibConfig};
