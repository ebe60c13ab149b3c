//! The tokio runtime around `tabby-bgp`: listeners and connectors, real
//! timers for the sans-IO session FSM, TCP MD5 and GTSM socket options,
//! per-peer tasks, the central RIB task, the control socket, and the
//! `tabby bgpd` daemon built from them.
//!
//! Protocol decisions (what to send, which path is best, what a malformed
//! UPDATE means) belong to `tabby-bgp`; this crate moves bytes and time.

pub mod config;
pub mod control;
pub mod daemon;
pub mod fib;
pub mod nexthop;
pub mod peer;
pub mod routing;
pub mod sockopt;
