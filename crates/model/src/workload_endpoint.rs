//! `WorkloadEndpoint`: one pod interface (namespaced), written by the CNI
//! plugin and read by `ipam check` and the agent.

use serde::{Deserialize, Serialize};

use crate::address::{Cidr, IpAddress};
use crate::error::Problems;
use crate::resource::Object;

/// The workload endpoint resource.
pub type WorkloadEndpoint = Object<WorkloadEndpointSpec>;

/// `WorkloadEndpoint.spec`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    /// Orchestrator, e.g. `k8s`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub orchestrator: String,
    /// Workload id in the orchestrator.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload: String,
    /// Node the endpoint is on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Container runtime id.
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    /// Pod name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// Endpoint (interface inside the pod), e.g. `eth0`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// Service account of the pod.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    /// The pod's addresses (/32 or /128).
    #[serde(default, rename = "ipNetworks", skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<Cidr>,
    /// IPv4 gateway seen by the pod.
    #[serde(
        default,
        rename = "ipv4Gateway",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_gateway: Option<IpAddress>,
    /// IPv6 gateway seen by the pod.
    #[serde(
        default,
        rename = "ipv6Gateway",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_gateway: Option<IpAddress>,
    /// Profiles (namespace, service account) applied to the endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Host-side interface name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    /// MAC of the pod's interface.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Named ports (accepted and kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<serde_json::Value>,
}

impl WorkloadEndpointSpec {
    /// Checks the spec.
    pub fn check(&self, problems: &mut Problems) {
        if self.node.is_empty() {
            problems.push("spec.node", "node must be set");
        }
        if self.interface_name.len() > 15 {
            problems.push(
                "spec.interfaceName",
                format!("\"{}\" is longer than 15 characters", self.interface_name),
            );
        }
    }
}
