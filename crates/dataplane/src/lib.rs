//! Kernel dataplane over netlink: routes, links, addresses, veth, namespaces,
//! sysctls, tunnels (and the encapsulation decision, [`encap`]), nftables NAT.
//!
//! Everything goes through a [`Netlink`] socket, opened in the caller's
//! namespace ([`Netlink::open`]) or in another one ([`Netns::netlink`],
//! which creates the socket on a thread of its own inside that namespace; the
//! socket then keeps working there from any thread). The API speaks tabby's
//! own types ([`Route`], [`NextHop`], [`RouteTable`], [`Link`],
//! [`VethPair`], ...); no rtnetlink type leaks out.
//!
//! Operations block; async callers run them on a blocking thread.

pub mod encap;
mod error;
mod link;
mod monitor;
pub mod nat;
mod netlink;
mod netns;
mod route;
mod route_text;
pub mod sysctl;

pub use error::{Error, KernelError, Result};
pub use link::{FdbEntry, IpipTunnel, Link, LinkChange, MacAddr, Neighbour, VethPair, Vxlan};
pub use monitor::{RouteEvent, RouteMonitor};
pub use netlink::Netlink;
pub use netns::{Netns, NetnsTask, NetnsWorker, Visitor, WorkerTask};
pub use route::{
    BatchReport, InstalledRoute, NextHop, ReconcileReport, Route, RouteChange, RouteKey, RouteKind,
    RouteTable, TABBY_PROTOCOL, is_already_gone,
};
pub use route_text::{format_route, parse_route};
