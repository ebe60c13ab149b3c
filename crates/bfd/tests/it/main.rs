//! Tests of the BFD crate, in one binary: codec properties, the session
//! state machine on a virtual clock, the UDP driver in namespaces and
//! interop with real BFD daemons.

mod codec;
mod driver;
mod interop;
mod net;
mod session;
