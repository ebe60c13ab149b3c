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
//! - [`graceful_restart`]: RFC 4724 decisions and timers (stale routes of a
//!   restarting peer, selection deferral of a restarting speaker).
//!
//! A driver (the `tabby-speaker` crate) wires them together like this:
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::Instant;
//! use tabby_bgp::*;
//!
//! let now = Instant::now();
//! let mut rib = Rib::new(RibConfig::new(64512, Ipv4Addr::new(10, 0, 0, 1)));
//! let peer = rib.add_peer(PeerConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 65002));
//! rib.originate("10.244.1.0/26".parse().unwrap(), PathAttributes::default());
//!
//! let mut session = Session::new(SessionConfig::new(64512, Ipv4Addr::new(10, 0, 0, 1), 65002));
//! session.handle_input(now, Input::ManualStart);
//! while let Some(event) = session.poll_event() {
//!     match event {
//!         Event::Connect => { /* open a TCP connection, then Input::TcpConnected */ }
//!         Event::Established(n) => {
//!             rib.peer_up(peer, PeerUp::new(&n, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
//!             for bytes in rib.take_updates(peer).unwrap() {
//!                 session.send_raw(now, bytes);
//!             }
//!         }
//!         Event::Update(u) => {
//!             for issue in &u.issues { eprintln!("RFC 7606: {issue}"); }
//!             rib.apply_update(peer, &u);
//!         }
//!         Event::Down(reason) => { eprintln!("down: {reason}"); rib.peer_down(peer); }
//!         _ => {}
//!     }
//! }
//! // Bytes read from the socket go in with `Input::Data`; bytes to write come
//! // from `poll_transmit`; `poll_timeout` says when to call `handle_timeout`.
//! while let Some(bytes) = session.poll_transmit() { let _ = bytes; }
//! assert_eq!(session.state(), State::Connect);
//! ```

pub mod attribute;
pub mod capability;
pub mod decision;
pub mod error;
pub mod fsm;
pub mod graceful_restart;
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
