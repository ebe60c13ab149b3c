//! The other two stored IPAM objects, `BlockAffinity` and `IPAMHandle`, and
//! the datastore key layout of all three.
//!
//! Keys (all under [`ROOT`]):
//!
//! | object | key |
//! |---|---|
//! | block | `/tabby/ipam/v1/blocks/ipv4/10.0.0.0-26`, `/tabby/ipam/v1/blocks/ipv6/fd00::-122` |
//! | affinity | `/tabby/ipam/v1/affinities/<node>/ipv4/10.0.0.0-26` |
//! | handle | `/tabby/ipam/v1/handles/<handle id>` |
//!
//! Affinities are keyed by node first so one node's blocks are one prefix
//! listing; blocks by family so a claim lists only its family.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Prefix of every IPAM key.
pub const ROOT: &str = "/tabby/ipam/v1/";

/// `ipv4` or `ipv6`.
pub fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "ipv4",
        IpNet::V6(_) => "ipv6",
    }
}

fn cidr_key_part(net: &IpNet) -> String {
    format!("{}-{}", net.network(), net.prefix_len())
}

/// Parses `10.0.0.0-26` back into a network.
pub fn parse_cidr_key_part(s: &str) -> Option<IpNet> {
    let (ip, len) = s.rsplit_once('-')?;
    format!("{ip}/{len}").parse().ok()
}

/// Key of the block for `cidr`.
pub fn block_key(cidr: &IpNet) -> String {
    format!("{ROOT}blocks/{}/{}", family(cidr), cidr_key_part(cidr))
}

/// Prefix of every block of one family (`ipv4`/`ipv6`), or all (`None`).
pub fn blocks_prefix(family: Option<&str>) -> String {
    match family {
        Some(f) => format!("{ROOT}blocks/{f}/"),
        None => format!("{ROOT}blocks/"),
    }
}

/// Key of `host`'s affinity for `cidr`.
pub fn affinity_key(host: &str, cidr: &IpNet) -> String {
    format!(
        "{ROOT}affinities/{host}/{}/{}",
        family(cidr),
        cidr_key_part(cidr)
    )
}

/// Prefix of `host`'s affinities (one family, or all), or every
/// affinity when `host` is `None`.
pub fn affinities_prefix(host: Option<&str>, family: Option<&str>) -> String {
    match (host, family) {
        (Some(h), Some(f)) => format!("{ROOT}affinities/{h}/{f}/"),
        (Some(h), None) => format!("{ROOT}affinities/{h}/"),
        (None, _) => format!("{ROOT}affinities/"),
    }
}

/// Key of a handle.
pub fn handle_key(handle: &str) -> String {
    format!("{ROOT}handles/{handle}")
}

/// Prefix of every handle.
pub fn handles_prefix() -> String {
    format!("{ROOT}handles/")
}

/// The state of a node's claim on a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    /// Claimed; the block may not exist yet (phase one of a claim).
    Pending,
    /// The block exists and is affine to the node.
    Confirmed,
    /// Being released.
    PendingDeletion,
}

impl AffinityState {
    /// Calico's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityState::Pending => "pending",
            AffinityState::Confirmed => "confirmed",
            AffinityState::PendingDeletion => "pendingDeletion",
        }
    }
}

/// `BlockAffinity`: node `host` claims block `cidr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockAffinity {
    /// The node.
    pub host: String,
    /// The block.
    pub cidr: IpNet,
    /// Where the claim stands.
    pub state: AffinityState,
}

/// `IPAMHandle`: how many addresses one handle holds in each block, so a
/// release by handle knows which blocks to visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handle {
    /// The handle id (`k8s-pod-network.<containerID>`,
    /// `ipip-tunnel-addr-<node>`).
    pub handle_id: String,
    /// Block CIDR (`10.0.0.0/26`) to the number of addresses held there.
    pub block: BTreeMap<String, u32>,
}

/// The handle id of a pod's addresses, as Calico's CNI plugin names it.
pub fn workload_handle(container_id: &str) -> String {
    format!("k8s-pod-network.{container_id}")
}

/// The handle id of a node's IPIP tunnel address.
pub fn ipip_tunnel_handle(node: &str) -> String {
    format!("ipip-tunnel-addr-{node}")
}

/// The handle id of a node's VXLAN tunnel address (IPv4).
pub fn vxlan_tunnel_handle(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
}

/// True for handle ids that name a pod (their addresses should appear in
/// a WorkloadEndpoint; `ipam check` reports those that do not).
pub fn is_workload_handle(handle: &str) -> bool {
    handle.starts_with("k8s-pod-network.")
}

/// Checks a node name or handle id before it becomes part of a key.
pub fn check_key_part(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.len() > 253 {
        return Err(format!("{what} {s:?} is longer than 253 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_graphic()) || *c == '/' || *c == '*')
    {
        return Err(format!(
            "{what} {s:?} contains {c:?}: use printable ASCII without '/', '*' or spaces"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let v4: IpNet = "10.0.0.64/26".parse().expect("v4");
        assert_eq!(block_key(&v4), "/tabby/ipam/v1/blocks/ipv4/10.0.0.64-26");
        let v6: IpNet = "fd00::40/122".parse().expect("v6");
        assert_eq!(block_key(&v6), "/tabby/ipam/v1/blocks/ipv6/fd00::40-122");
        assert_eq!(parse_cidr_key_part("fd00::40-122"), Some(v6));
        assert_eq!(
            affinity_key("node-1", &v4),
            "/tabby/ipam/v1/affinities/node-1/ipv4/10.0.0.64-26"
        );
        assert!(check_key_part("node", "a/b").is_err());
        assert!(check_key_part("node", "").is_err());
        assert!(check_key_part("handle", "k8s-pod-network.abc").is_ok());
    }
}
