//! `BGPConfiguration`: cluster-wide BGP settings (`default`) and per-node
//! overrides (`node.<nodename>`).
//!
//! Defaults follow Calico and are returned by accessors rather than written
//! into the stored resource: AS 64512, node-to-node mesh on, port 179.

use serde::{Deserialize, Serialize};

use crate::address::{Cidr, IpAddress};
use crate::asn::AsNumber;
use crate::bgp_peer::BgpPassword;
use crate::duration::GoDuration;
use crate::error::Problems;
use crate::resource::Object;

/// The BGP configuration resource.
pub type BgpConfiguration = Object<BgpConfigurationSpec>;

/// Name of the cluster-wide BGP configuration.
pub const DEFAULT_BGP_CONFIGURATION: &str = "default";

/// One service CIDR to advertise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceCidr {
    /// The range.
    pub cidr: Cidr,
}

/// A named BGP community value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Community {
    /// Name used by `prefixAdvertisements`.
    pub name: String,
    /// `aa:nn` (standard) or `aa:nn:mm` (large) community.
    pub value: String,
}

/// Communities to attach to a prefix this cluster advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixAdvertisement {
    /// The advertised prefix.
    pub cidr: Cidr,
    /// Community values or names from `communities`.
    #[serde(default)]
    pub communities: Vec<String>,
}

/// Which address the BGP listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindMode {
    /// The wildcard address.
    None,
    /// The node's own IP.
    #[serde(rename = "NodeIP")]
    NodeIp,
}

/// Whether LoadBalancer IPs are advertised as one aggregate or per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceLoadBalancerAggregation {
    /// Aggregate.
    Enabled,
    /// One route per address.
    Disabled,
}

/// `BGPConfiguration.spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfigurationSpec {
    /// Log level of the BGP speaker: Debug, Info, Warning, Error, Fatal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    /// Whether every node peers with every other node (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// Default AS number of nodes (default 64512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    /// Service cluster IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<ServiceCidr>,
    /// Service external IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<ServiceCidr>,
    /// Service LoadBalancer IP ranges to advertise.
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<ServiceCidr>,
    /// Aggregation of LoadBalancer routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_load_balancer_aggregation: Option<ServiceLoadBalancerAggregation>,
    /// Named community values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    /// Communities attached to advertised prefixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    /// TCP port of the BGP listener (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// TCP MD5 password of mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BgpPassword>,
    /// Graceful-restart time of mesh sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<GoDuration>,
    /// Listener bind mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<BindMode>,
    /// Interfaces whose addresses are never exported (`*` wildcards allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_interfaces: Vec<String>,
    /// IPv4 address local workloads peer with.
    #[serde(
        default,
        rename = "localWorkloadPeeringIPV4",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_workload_peering_ipv4: Option<IpAddress>,
    /// IPv6 address local workloads peer with.
    #[serde(
        default,
        rename = "localWorkloadPeeringIPV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_workload_peering_ipv6: Option<IpAddress>,
}

const LOG_LEVELS: [&str; 6] = ["Debug", "Info", "Warning", "Error", "Fatal", "None"];

/// Checks a community value: `aa:nn` with 16-bit parts or `aa:nn:mm` with
/// 32-bit parts.
pub fn check_community_value(v: &str) -> Result<(), String> {
    let parts: Vec<&str> = v.split(':').collect();
    let ok = match parts.len() {
        2 => parts.iter().all(|p| p.parse::<u16>().is_ok()),
        3 => parts.iter().all(|p| p.parse::<u32>().is_ok()),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid community \"{v}\": expected aa:nn (0..=65535 each) or a large community aa:nn:mm"
        ))
    }
}

impl BgpConfigurationSpec {
    /// AS number, defaulted to 64512.
    pub fn as_number(&self) -> AsNumber {
        self.as_number.unwrap_or(AsNumber::DEFAULT)
    }

    /// Whether the node-to-node mesh is on (default true).
    pub fn node_to_node_mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled.unwrap_or(true)
    }

    /// BGP listen port (default 179).
    pub fn listen_port(&self) -> u16 {
        self.listen_port.unwrap_or(179)
    }

    /// Checks the spec; `name` decides which fields are allowed (the mesh
    /// switch and AS number are cluster-wide, only on `default`).
    pub fn check(&self, name: &str, problems: &mut Problems) {
        if let Some(level) = &self.log_severity_screen {
            if !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
                problems.push(
                    "spec.logSeverityScreen",
                    format!(
                        "unknown log level \"{level}\": use one of {}",
                        LOG_LEVELS.join(", ")
                    ),
                );
            }
        }
        if name != DEFAULT_BGP_CONFIGURATION {
            if !name.starts_with("node.") {
                problems.push(
                    "metadata.name",
                    format!(
                        "a BGPConfiguration is named \"default\" (cluster-wide) or \"node.<nodename>\", not \"{name}\""
                    ),
                );
            }
            if self.node_to_node_mesh_enabled.is_some() {
                problems.push(
                    "spec.nodeToNodeMeshEnabled",
                    "only the \"default\" BGPConfiguration may set nodeToNodeMeshEnabled",
                );
            }
            if self.as_number.is_some() {
                problems.push(
                    "spec.asNumber",
                    "only the \"default\" BGPConfiguration may set asNumber (set a node's AS in Node spec.bgp.asNumber)",
                );
            }
        }
        if self.listen_port == Some(0) {
            problems.push("spec.listenPort", "port must be 1..=65535");
        }
        for (i, c) in self.communities.iter().enumerate() {
            if c.name.is_empty() {
                problems.push(format!("spec.communities[{i}].name"), "name must be set");
            }
            if let Err(e) = check_community_value(&c.value) {
                problems.push(format!("spec.communities[{i}].value"), e);
            }
        }
        for (i, p) in self.prefix_advertisements.iter().enumerate() {
            for (j, c) in p.communities.iter().enumerate() {
                let named = self.communities.iter().any(|n| &n.name == c);
                if !named && check_community_value(c).is_err() {
                    problems.push(
                        format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                        format!(
                            "\"{c}\" is neither a community value (aa:nn or aa:nn:mm) nor a name defined in spec.communities"
                        ),
                    );
                }
            }
        }
        for (field, list) in [
            ("serviceClusterIPs", &self.service_cluster_ips),
            ("serviceExternalIPs", &self.service_external_ips),
            ("serviceLoadBalancerIPs", &self.service_load_balancer_ips),
        ] {
            for (i, c) in list.iter().enumerate() {
                if !c.cidr.is_masked() {
                    problems.push(
                        format!("spec.{field}[{i}].cidr"),
                        format!("{} has host bits set: write {}", c.cidr, c.cidr.network()),
                    );
                }
            }
        }
        for (i, ifname) in self.ignored_interfaces.iter().enumerate() {
            if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ']) {
                problems.push(
                    format!("spec.ignoredInterfaces[{i}]"),
                    format!("\"{ifname}\" is not an interface name (1..=15 characters, no '/' or spaces; '*' matches any)"),
                );
            }
        }
        if let Some(p) = &self.node_mesh_password {
            p.check("spec.nodeMeshPassword", problems);
        }
        if let Some(a) = self.local_workload_peering_ipv4 {
            if !a.0.is_ipv4() {
                problems.push("spec.localWorkloadPeeringIPV4", "must be an IPv4 address");
            }
        }
        if let Some(a) = self.local_workload_peering_ipv6 {
            if !a.0.is_ipv6() {
                problems.push("spec.localWorkloadPeeringIPV6", "must be an IPv6 address");
            }
        }
    }
}
