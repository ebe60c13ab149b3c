//! tabby's CNI plugin (spec 0.3.0 to 1.1.0) and its IPAM plugin.
//!
//! The same `tabby` binary, installed as `/opt/cni/bin/tabby`, is the main
//! plugin (a veth per pod, Calico's routed wiring, addresses from tabby's
//! IPAM); under the name `tabby-ipam` it is an IPAM plugin other CNI plugins
//! can delegate to.
//!
//! Layers, outermost first:
//! - [`plugin`]: the command dispatcher (environment + stdin to stdout +
//!   exit status), independent of datastores and netlink;
//! - [`env`], [`config`], [`result`], [`error`], [`version`]: the
//!   specification's types, parsed once with errors naming the field;
//! - [`naming`]: names derived from a container (host veth, IPAM handle);
//! - [`node`]: the backend that does the work (datastore, IPAM, dataplane);
//! - [`process`]: stdin, stdout, exit status;
//! - [`service`]: the node-local service the plugin forwards to when one
//!   runs (the datastore kept open), with the direct path as fallback;
//! - [`trace`]: phase timings on stderr (`TABBY_CNI_TRACE=1`).

pub mod addresses;
pub mod config;
pub mod env;
pub mod error;
pub mod naming;
pub mod node;
pub mod plugin;
pub mod process;
pub mod result;
pub mod service;
pub mod trace;
pub mod version;
pub mod wiring;

pub use error::{CniError, ErrorCode};
pub use plugin::{Backend, Outcome, Role};
pub use process::run_process;
pub use version::CniVersion;
