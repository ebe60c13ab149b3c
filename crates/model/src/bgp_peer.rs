//! `BGPPeer`: a BGP session (or a set of them) between cluster nodes and a
//! remote speaker.
//!
//! `node` or `nodeSelector` pick the local nodes (neither = every node);
//! `peerIP` or `peerSelector` pick the remote side. Rules as Calico's:
//! `node`/`nodeSelector` and `peerIP`/`peerSelector` are mutually exclusive,
//! `asNumber` is not allowed with `peerSelector` (the peer nodes' own AS is
//! used), `keepOriginalNextHop` and `nextHopMode` are exclusive, and
//! `reachableBy` needs a `peerIP` of the same family.

use serde::{Deserialize, Serialize};

use crate::address::{IpAddress, PeerAddress};
use crate::asn::AsNumber;
use crate::duration::GoDuration;
use crate::error::Problems;
use crate::labels::check_resource_name;
use crate::resource::Object;
use crate::selector::Selector;

/// The BGP peer resource.
pub type BgpPeer = Object<BgpPeerSpec>;

/// A reference to a key of a Kubernetes secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    #[serde(default)]
    pub name: String,
    /// Key within the secret.
    #[serde(default)]
    pub key: String,
    /// Whether a missing secret is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// Where a BGP session's TCP MD5 password comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPassword {
    /// A key of a secret holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

impl BgpPassword {
    /// Checks the reference under `path`.
    pub fn check(&self, path: &str, problems: &mut Problems) {
        match &self.secret_key_ref {
            None => problems.push(
                path,
                "set secretKeyRef (name and key of the secret holding the password)",
            ),
            Some(r) => {
                if r.name.is_empty() {
                    problems.push(format!("{path}.secretKeyRef.name"), "name must be set");
                }
                if r.key.is_empty() {
                    problems.push(format!("{path}.secretKeyRef.key"), "key must be set");
                }
            }
        }
    }
}

/// How the next hop of routes sent to the peer is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextHopMode {
    /// The speaker's default behaviour.
    Auto,
    /// Always this node (next-hop-self).
    #[serde(rename = "Self")]
    SelfAddress,
    /// Never change the next hop.
    Keep,
}

/// Source address of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceAddress {
    /// Bind the node's IP.
    #[serde(rename = "UseNodeIP")]
    UseNodeIp,
    /// Let the kernel choose.
    None,
}

/// Whether the reverse session is configured automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReversePeering {
    /// Automatic.
    Auto,
    /// Manual.
    Manual,
}

/// `BGPPeer.spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    /// The one local node that peers (exclusive with `nodeSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The local nodes that peer (exclusive with `node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Selector>,
    /// Remote address, optionally with a port (exclusive with `peerSelector`).
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<PeerAddress>,
    /// Remote AS number.
    #[serde(default, rename = "asNumber", skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    /// Local AS number to use on this session instead of the node's.
    #[serde(
        default,
        rename = "localASNumber",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_as_number: Option<AsNumber>,
    /// Remote cluster nodes to peer with (exclusive with `peerIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<Selector>,
    /// Do not change the next hop of routes sent to this peer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_original_next_hop: bool,
    /// Next-hop handling (exclusive with `keepOriginalNextHop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<NextHopMode>,
    /// TCP MD5 password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPassword>,
    /// Source address of the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    /// Graceful-restart time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<GoDuration>,
    /// How many times the local AS may appear in received paths.
    #[serde(
        default,
        rename = "numAllowedLocalASNumbers",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_allowed_local_as_numbers: Option<i32>,
    /// GTSM: the number of hops allowed (TTL 255 - n accepted).
    #[serde(
        default,
        rename = "ttlSecurity",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_security: Option<u8>,
    /// The gateway through which the peer is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_by: Option<IpAddress>,
    /// Names of BGPFilter resources applied to this session, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// Local workloads that peer with the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_workload_selector: Option<Selector>,
    /// Reverse-peering behaviour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_peering: Option<ReversePeering>,
    /// BGP keepalive interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<GoDuration>,
}

impl BgpPeerSpec {
    /// Checks the spec (see the module doc for the rules).
    pub fn check(&self, problems: &mut Problems) {
        if let Some(node) = &self.node {
            if self.node_selector.is_some() {
                problems.push(
                    "spec.node",
                    "node and nodeSelector are mutually exclusive: set one of them",
                );
            }
            if let Err(e) = check_resource_name(node) {
                problems.push("spec.node", e);
            }
        }
        match (&self.peer_ip, &self.peer_selector) {
            (Some(_), Some(_)) => problems.push(
                "spec.peerIP",
                "peerIP and peerSelector are mutually exclusive: set one of them",
            ),
            (None, None) => problems.push(
                "spec",
                "set peerIP (a remote speaker) or peerSelector (other cluster nodes)",
            ),
            (Some(_), None) => {
                if self.as_number.is_none() {
                    problems.push("spec.asNumber", "asNumber is required with peerIP");
                }
            }
            (None, Some(_)) => {
                if self.as_number.is_some() {
                    problems.push(
                        "spec.asNumber",
                        "asNumber must be empty with peerSelector: each selected node's own AS is used",
                    );
                }
            }
        }
        if self.keep_original_next_hop && self.next_hop_mode.is_some() {
            problems.push(
                "spec.nextHopMode",
                "keepOriginalNextHop and nextHopMode are mutually exclusive (use nextHopMode: Keep)",
            );
        }
        if let Some(p) = &self.password {
            p.check("spec.password", problems);
        }
        if let Some(n) = self.num_allowed_local_as_numbers {
            if n < 0 {
                problems.push(
                    "spec.numAllowedLocalASNumbers",
                    format!("must be 0 or more, not {n}"),
                );
            }
        }
        if let Some(r) = self.reachable_by {
            match self.peer_ip {
                None => problems.push("spec.reachableBy", "reachableBy needs peerIP"),
                Some(p) if p.ip.is_ipv4() != r.0.is_ipv4() => problems.push(
                    "spec.reachableBy",
                    "reachableBy and peerIP must be the same address family",
                ),
                Some(_) => {}
            }
        }
        for (i, f) in self.filters.iter().enumerate() {
            if let Err(e) = check_resource_name(f) {
                problems.push(format!("spec.filters[{i}]"), e);
            }
        }
    }
}

impl BgpPeerSpec {
    /// True when `node` is one of this peering's local nodes: the one named
    /// by `node`, those matched by `nodeSelector`, or every node when
    /// neither is set.
    pub fn selects_local_node(&self, node: &crate::node::Node) -> bool {
        match (&self.node, &self.node_selector) {
            (Some(n), _) => n == &node.metadata.name,
            (None, Some(s)) => s.matches(&node.selector_labels()),
            (None, None) => true,
        }
    }

    /// True when `node` is a remote side of this peering (`peerSelector`).
    pub fn selects_peer_node(&self, node: &crate::node::Node) -> bool {
        self.peer_selector
            .as_ref()
            .is_some_and(|s| s.matches(&node.selector_labels()))
    }
}
