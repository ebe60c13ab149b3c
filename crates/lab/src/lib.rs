//! Lab topologies: a YAML topology built on one machine from network
//! namespaces, with real routers (FRR, BIRD, `tabby bgpd`), one `tabby
//! agent` per node and pods created through the CNI plugin, then verified
//! by its checks and taken down by PID and namespace name.
//!
//! - [`topology`]: the file format, parsed into typed structs with errors
//!   naming the field path.
//! - [`build`]: `up`, `down`, `status`.
//! - [`verify`](mod@verify): the checks.
//! - [`state`]: the state file under `/run/tabby-lab/<lab>` and the
//!   process primitives.
//! - [`frr`]: FRR configs generated from the topology.

pub mod build;
pub mod error;
pub mod frr;
pub mod state;
pub mod topology;
pub mod verify;

pub use build::{DownReport, RestartReport, down, list, load_topology, restart_agent, status, up};
pub use error::{LabError, TopologyError};
pub use state::State;
pub use topology::Topology;
pub use verify::{CheckResult, verify};
