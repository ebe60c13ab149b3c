//! `tabby doctor`: explains what is wrong on a node and what to change.
//!
//! The diagnosis is a pure function over a [`Snapshot`] of everything the
//! node's routing depends on: the resources and IPAM state in the
//! datastore, the agent's sessions and Loc-RIB (from its control socket),
//! the kernel's main routing table with each route's protocol, and the
//! forwarding and reverse-path sysctls. Gathering the snapshot is the thin
//! I/O layer ([`gather`]); everything else is deterministic and unit-tested
//! with constructed snapshots:
//!
//! - [`diagnose`]: the whole-node check (`tabby doctor`), one typed
//!   [`Finding`] per problem, each saying what is wrong, why, and which
//!   resource field or command fixes it;
//! - [`explain_route`]: why this node has or has not got a route to one
//!   pod address or block (`tabby doctor --route`), step by step from the
//!   pool to the kernel.
//!
//! The rules the agent applies are not re-implemented here: the expected
//! sessions come from `tabby-agent`'s [`speaker_plan`] and the expected
//! announcements from its [`node_exports`], the same functions the agent
//! runs, so doctor and agent cannot disagree about what should be.
//!
//! [`speaker_plan`]: tabby_agent::peers::speaker_plan
//! [`node_exports`]: tabby_agent::exports::node_exports

pub mod checks;
pub mod finding;
pub mod gather;
pub mod render;
pub mod route;
pub mod session;
pub mod snapshot;

pub use checks::diagnose;
pub use finding::{Check, Finding, Report, Severity, Status, Unavailable};
pub use gather::{GatherOptions, gather};
pub use route::{RouteReport, RouteTarget, TraceStep, explain_route};
pub use snapshot::{
    AgentState, ClusterState, KernelLink, KernelNextHop, KernelRoute, KernelRouteKind, KernelState,
    NatTable, Snapshot, Sysctls,
};
