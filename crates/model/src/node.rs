//! `Node`: a cluster node as the BGP side sees it: its AS number, BGP
//! addresses (with the subnet, e.g. `10.0.11.1/31`), route-reflector cluster
//! id, tunnel addresses, and labels (which `BGPPeer` and `IPPool` selectors
//! match).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::address::{InterfaceAddress, IpAddress};
use crate::asn::AsNumber;
use crate::error::Problems;
use crate::resource::Object;

/// The node resource.
pub type Node = Object<NodeSpec>;

/// The label every Kubernetes node carries with its host name; tabby
/// treats it as present on a Node that does not set it, so the selectors
/// users copy from Kubernetes (`kubernetes.io/hostname == "k-w1"`) match.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// `Node.spec.bgp`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBgpSpec {
    /// The node's own AS (overrides the BGPConfiguration default).
    #[serde(default, rename = "asNumber", skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    /// IPv4 address (and subnet) used for BGP.
    #[serde(
        default,
        rename = "ipv4Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<InterfaceAddress>,
    /// IPv6 address (and subnet) used for BGP.
    #[serde(
        default,
        rename = "ipv6Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<InterfaceAddress>,
    /// IPIP tunnel address.
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<IpAddress>,
    /// Route-reflector cluster id (dotted quad); set on route reflectors.
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<String>,
}

/// A reference to the node in an orchestrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchRef {
    /// Node name in the orchestrator.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    /// Orchestrator, e.g. `k8s`.
    pub orchestrator: String,
}

/// One of the node's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    /// The address, optionally with its subnet.
    pub address: InterfaceAddress,
    /// What it is (`CalicoNodeIP`, `InternalIP`, `ExternalIP`).
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// `Node.spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// BGP settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    /// IPv4 VXLAN tunnel address.
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<IpAddress>,
    /// IPv6 VXLAN tunnel address.
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_vxlan_tunnel_addr: Option<IpAddress>,
    /// MAC of the IPv4 VXLAN device.
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<String>,
    /// MAC of the IPv6 VXLAN device.
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr_v6: Option<String>,
    /// Orchestrator references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orch_refs: Vec<OrchRef>,
    /// The node's addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    /// WireGuard settings (accepted and kept, not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<serde_json::Value>,
}

impl NodeSpec {
    /// Checks the spec.
    pub fn check(&self, problems: &mut Problems) {
        if let Some(bgp) = &self.bgp {
            if bgp == &NodeBgpSpec::default() {
                problems.push(
                    "spec.bgp",
                    "spec.bgp is empty: set at least one field or remove it",
                );
            }
            if let Some(a) = bgp.ipv4_address {
                if !a.addr.is_ipv4() {
                    problems.push(
                        "spec.bgp.ipv4Address",
                        format!("{a} is not an IPv4 address"),
                    );
                }
            }
            if let Some(a) = bgp.ipv6_address {
                if a.addr.is_ipv4() {
                    problems.push(
                        "spec.bgp.ipv6Address",
                        format!("{a} is not an IPv6 address"),
                    );
                }
            }
            if let Some(a) = bgp.ipv4_ipip_tunnel_addr {
                if !a.0.is_ipv4() {
                    problems.push(
                        "spec.bgp.ipv4IPIPTunnelAddr",
                        format!("{a} is not an IPv4 address"),
                    );
                }
            }
            if let Some(id) = &bgp.route_reflector_cluster_id {
                if id.parse::<Ipv4Addr>().is_err() {
                    problems.push(
                        "spec.bgp.routeReflectorClusterID",
                        format!("\"{id}\" is not a cluster id: write it as an IPv4 address, e.g. 244.0.0.1"),
                    );
                }
            }
        }
        if let Some(a) = self.ipv4_vxlan_tunnel_addr {
            if !a.0.is_ipv4() {
                problems.push(
                    "spec.ipv4VXLANTunnelAddr",
                    format!("{a} is not an IPv4 address"),
                );
            }
        }
        if let Some(a) = self.ipv6_vxlan_tunnel_addr {
            if a.0.is_ipv4() {
                problems.push(
                    "spec.ipv6VXLANTunnelAddr",
                    format!("{a} is not an IPv6 address"),
                );
            }
        }
    }
}

impl Node {
    /// The labels selectors are matched against: the node's labels plus
    /// `kubernetes.io/hostname: <name>` when the node does not set it.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.metadata.labels.clone();
        l.entry(HOSTNAME_LABEL.to_string())
            .or_insert_with(|| self.metadata.name.clone());
        l
    }
}
