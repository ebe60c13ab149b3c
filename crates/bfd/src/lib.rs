//! Sans-IO BFD (RFC 5880) and its UDP driver for single-hop sessions
//! (RFC 5881).
//!
//! - [`packet`]: the Control packet codec and its reception checks;
//! - [`session`]: one session's state machine, driven from outside with
//!   `handle_packet` / `handle_timeout` / `poll_transmit` / `poll_timeout`
//!   / `poll_event`, no I/O and no clock;
//! - `driver` (feature `driver`, on by default): the tokio UDP driver
//!   (RFC 5881: port 3784, TTL 255), which runs any number of sessions and
//!   reports their state changes.
//!
//! Bidirectional Forwarding Detection tells a routing protocol within a
//! second that its neighbour is gone, where the BGP hold timer takes 90 s.

#[cfg(feature = "driver")]
pub mod driver;
pub mod packet;
pub mod session;

#[cfg(feature = "driver")]
pub use driver::{Bfd, DriverError, PeerEvent, SessionSpec, SessionStatus};
pub use packet::{ControlPacket, DecodeError, Diagnostic, State, decode};
pub use session::{ConfigError, Event, PacketError, Session, SessionConfig};
