//! IP address management, the way Calico's users know it: pools split into
//! blocks, blocks claimed by nodes (block affinity), addresses handed out
//! from a node's own blocks, tracked by handle, released by handle or by
//! address, and checked for leaks and damage.
//!
//! Owns the stored IPAM objects ([`Block`], [`BlockAffinity`], [`Handle`])
//! and their key layout ([`records`]), allocation and release
//! ([`Ipam`]), and `ipam check` / `ipam release --from-report`
//! ([`check`]). Does not own the resources it reads (IPPool,
//! IPAMConfiguration, IPReservation: `tabby-model`), storage backends
//! (`tabby-datastore`), or anything that touches the kernel.
//!
//! Every multi-key change is one datastore transaction with
//! compare-and-swap on each key it read, retried on conflict; see
//! [`allocation`] for the claim protocol and ARCHITECTURE.md for the whole
//! picture.

pub mod allocation;
pub mod block;
pub mod check;
pub mod pool;
pub mod records;
pub mod resources;
pub mod usage;

pub use allocation::{AssignRequest, Assigned, ClaimPause, Ipam, ReleaseRequest};
pub use block::{AllocationAttribute, Block, ReleaseResult};
pub use check::{Problem, Report};
pub use pool::{Environment, IpamConfig, Pool};
pub use records::{AffinityState, BlockAffinity, Handle};

use tabby_datastore::DatastoreError;

/// What went wrong in an IPAM operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    /// The datastore failed (unreachable, or a conflict that outlived every
    /// retry).
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
    /// No enabled pool of the family selects the node for this use.
    #[error("no enabled {family} pool allows {use_} addresses on node {node}")]
    NoPools {
        /// The node.
        node: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// What the addresses were for.
        use_: String,
    },
    /// The node's blocks are full and it may not (or cannot) claim or
    /// borrow more.
    #[error("no free {family} addresses for node {node}: {reason}")]
    Exhausted {
        /// The node.
        node: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// Which limit was hit.
        reason: String,
    },
    /// A requested address is already allocated.
    #[error("{ip} is already allocated")]
    AddressInUse {
        /// The address.
        ip: std::net::IpAddr,
    },
    /// A requested address is in no pool.
    #[error("{ip} is not in any IP pool")]
    NotInPool {
        /// The address.
        ip: std::net::IpAddr,
    },
    /// A node name, handle id or attribute cannot be stored.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// `node`, `handle`, ...
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A stored IPAM object does not decode.
    #[error("{key}: stored object is damaged: {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// The decode error.
        reason: String,
    },
    /// A report file cannot be read or is not a report.
    #[error("report: {0}")]
    Report(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, IpamError>;
