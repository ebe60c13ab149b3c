//! tabby's resource model: the Calico-compatible resources users write
//! (`projectcalico.org/v3` and `crd.projectcalico.org/v1`), their defaults
//! and validation rules, Calico's selector language, manifest files
//! (multi-document YAML/JSON and `List`s), and typed storage of resources
//! over the datastore trait (key layout, resource versions, create /
//! replace / delete semantics).
//!
//! Does not hold: datastore backends (`tabby-datastore`), IPAM's internal
//! objects (blocks, affinities, handles: `tabby-ipam`), or anything that
//! acts on resources (the agent).
//!
//! Every error a user sees names the document (file, index, kind and name)
//! and the field path (`spec.peerIP`, `spec.exportV4[1].cidr`).

pub mod address;
pub mod asn;
pub mod bgp_configuration;
pub mod bgp_filter;
pub mod bgp_peer;
pub mod document;
pub mod duration;
pub mod error;
pub mod ip_reservation;
pub mod ipam_config;
pub mod ippool;
pub mod labels;
pub mod meta;
pub mod node;
pub mod resource;
pub mod selector;
pub mod workload_endpoint;

pub use address::{Cidr, InterfaceAddress, IpAddress, PeerAddress};
pub use asn::AsNumber;
pub use bgp_configuration::{BgpConfiguration, BgpConfigurationSpec};
pub use bgp_filter::{BgpFilter, BgpFilterSpec};
pub use bgp_peer::{BgpPeer, BgpPeerSpec};
pub use document::{ManifestEntry, parse_manifest};
pub use error::{DocumentError, DocumentRef, FieldError, ValidationError};
pub use ip_reservation::{IpReservation, IpReservationSpec};
pub use ipam_config::{IpamConfiguration, IpamConfigurationSpec};
pub use ippool::{AllowedUse, AssignmentMode, EncapMode, IpPool, IpPoolSpec};
pub use meta::ObjectMeta;
pub use node::{Node, NodeBgpSpec, NodeSpec};
pub use resource::{Kind, Object, Resource, ResourceSpec};
pub use selector::Selector;
pub use workload_endpoint::{WorkloadEndpoint, WorkloadEndpointSpec};
#[cfg(feature = "store")]
pub mod store;
#[cfg(feature = "store")]
pub use store::{ResourceStore, StoreError, WriteMode};
