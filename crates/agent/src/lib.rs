//! The node agent (`tabby agent`): registers the node, turns the cluster's
//! resources into BGP sessions and announcements for an in-process
//! `tabby-speaker`, and keeps the node's kernel state (block blackholes,
//! NAT table, forwarding sysctls) in line; `tabby node status` reads its
//! sessions back.
//!
//! The decisions are pure functions with unit tests of their own:
//! [`peers::speaker_plan`] (resources to neighbours, Calico's rules) and
//! [`exports::node_exports`] (IPAM state to announcements and blackholes).
//! [`daemon`] is the loop that feeds them and applies their output;
//! [`registration`] writes the Node resource; [`status`] renders sessions;
//! [`tunnels`] owns IPIP and VXLAN (tunnel addresses, devices, VXLAN routes);
//! [`mtu`] detects the pod MTU (Felix's rule) and writes Calico's MTU file.

pub mod daemon;
pub mod exports;
pub mod mirror;
pub mod mtu;
pub mod peers;
pub mod registration;
pub mod status;
pub mod tunnels;

use std::path::PathBuf;

/// Why the agent stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The datastore failed.
    #[error("datastore: {0}")]
    Datastore(#[from] tabby_datastore::DatastoreError),
    /// Reading or writing resources failed.
    #[error("resources: {0}")]
    Store(#[from] tabby_model::StoreError),
    /// A kernel operation failed.
    #[error("kernel: {0}")]
    Dataplane(#[from] tabby_dataplane::Error),
    /// The Node resource could not be written.
    #[error("node registration: {0}")]
    Registration(String),
    /// The state directory could not be created.
    #[error("cannot create {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A tunnel address or device could not be set up.
    #[error("tunnel: {0}")]
    Tunnel(String),
    /// The datastore watch the agent follows ([`mirror::ClusterMirror`])
    /// stopped; the agent lists again.
    #[error("the datastore watch stopped")]
    WatchStopped,
    /// The runtime or a signal handler could not start.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}
