//! From resources to the speaker's desired configuration: a pure function
//! ([`speaker_plan`]) with Calico's semantics, so that the rules users rely
//! on are unit-tested one by one.
//!
//! Rules (as calico-node's confd templates for BIRD apply them):
//!
//! - **AS**: the node's `spec.bgp.asNumber`, else the `default`
//!   BGPConfiguration's `asNumber`, else 64512. Remote nodes likewise.
//! - **Node-to-node mesh** (`nodeToNodeMeshEnabled`, default on): one
//!   session to every other node with a BGP address of the same family,
//!   unless either end is a route reflector (`routeReflectorClusterID`).
//!   Only one side connects: a node is *passive* toward every node whose
//!   address is greater **as text** (Calico's Go template compares the
//!   strings; comparing numerically would leave both sides passive against
//!   a Calico node for pairs such as 10.0.0.9 / 10.0.0.10).
//! - **BGPPeer**: applies to this node when `node` names it, or
//!   `nodeSelector` matches its labels, or neither is set (a *global*
//!   peer). The remote side is `peerIP` (with `asNumber`, default our AS)
//!   or every node matched by `peerSelector` (their own AS, each of their
//!   BGP addresses). A peer at one of this node's own addresses is skipped.
//!   With `peerSelector`, the nodes it selects peer back with the nodes of
//!   the local side (Calico's `reversePeering: Auto`, the default;
//!   `Manual` turns it off), so one BGPPeer configures both ends.
//! - **Route reflection**: on a node with a cluster id, every same-AS peer
//!   whose node has an empty or different cluster id is a route-reflector
//!   client; same cluster id is plain iBGP.
//! - Per peer: `password.secretKeyRef` (resolved by the caller, see
//!   [`SecretSource`]), `keepaliveTime` (hold time three times it, at least
//!   the default 90 s), `sourceAddress` (`UseNodeIP`, the default, binds
//!   the node's address), `ttlSecurity` (GTSM hops), eBGP multihop TTL 64
//!   otherwise (Calico's template sets `multihop` for every peer),
//!   `numAllowedLocalASNumbers`, `nextHopMode`/`keepOriginalNextHop`,
//!   `filters` (BGPFilters in the order listed; their rules concatenated,
//!   first match wins, no match accepts).
//! - A BGPPeer session between two cluster nodes (the remote address is
//!   a Node's) is one-directional like the mesh: the node with the lower
//!   address (as text) waits, as Calico's mesh does. Calico's BIRD
//!   connects from both ends for BGPPeers; a BIRD peer still connects from
//!   its side, so nothing is lost.
//! - Exports: a node announces only what it originates (its blocks,
//!   borrowed addresses, service CIDRs) to every peer; routes learned
//!   from peers are passed on only by a route reflector, to same-AS peers.
//!   This is the design's "never re-advertise iBGP-learned routes except
//!   as an RR", and it also keeps a node from being transit between two
//!   upstream routers; Calico's BIRD re-announced every pool route it
//!   learned (seed 003's 32 paths at the ToR with the mesh on). A rule
//!   `{action: Reject, source: RemotePeers}` after the user's filters
//!   does it, so a BGPFilter that accepts explicitly still wins.
//! - The same remote address from two sources: the first wins (BGPPeers in
//!   name order, then the mesh) and a warning names the loser.
//!
//! - **Graceful restart** (RFC 4724, on unless turned off in
//!   [`PlanSettings`], as Calico's BIRD has `graceful restart` on): every
//!   session advertises it with a restart time of 120 s, BGPPeer
//!   `maxRestartTime` for that peer's sessions and BGPConfiguration
//!   `nodeMeshMaxRestartTime` for the mesh's (clamped to 1..=4095 s, the
//!   capability's 12 bits, with a warning). Peers keep this node's routes
//!   while its agent restarts, and the restarted speaker adopts the
//!   learned routes it left in the kernel.
//!
//! - **BFD** (a tabby extension; Calico has no BFD field): BGPPeer
//!   annotations `tabby.io/bfd: "true"`, `tabby.io/bfd-interval-ms`
//!   (default 300) and `tabby.io/bfd-multiplier` (default 3) turn on BFD
//!   for that peer's sessions (see [`bfd_annotations`]). The same
//!   annotations on BGPConfiguration `default` turn it on for the
//!   node-to-node mesh, for the mesh peers on one of this node's own
//!   subnets (BFD here is single hop, RFC 5881: a peer behind a router
//!   would never answer; a warning counts the ones left out). Annotations
//!   leave the manifest valid for Calico, which ignores them.
//!
//! Not applied yet (a warning says so when set): `localASNumber`,
//! `reachableBy`, `localWorkloadSelector`, and BGPFilter `interface`
//! rules and large communities.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use tabby_bgp::policy::{Action, RouteSource, Rule};
use tabby_model::bgp_configuration::{BindMode, DEFAULT_BGP_CONFIGURATION};
use tabby_model::bgp_filter::{BgpFilterRule, FilterAction};
use tabby_model::bgp_peer::{
    NextHopMode as ModelNextHop, ReversePeering, SecretKeyRef, SourceAddress,
};
use tabby_model::{BgpConfiguration, BgpConfigurationSpec, BgpFilter, BgpPeer, Node};
use tabby_speaker::config::{
    BgpdConfig, DEFAULT_HOLD_TIME, GracefulRestartSettings, NextHopMode, PeerConfig,
};

/// Calico's default AS number.
pub const DEFAULT_AS: u32 = 64512;

/// Where a session comes from; shown as the type column of
/// `tabby node status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerOrigin {
    /// The node-to-node mesh.
    Mesh,
    /// A BGPPeer without `node`/`nodeSelector`.
    Global,
    /// A BGPPeer with `node` or `nodeSelector`.
    NodeSpecific,
}

impl PeerOrigin {
    /// Calico's wording (`calicoctl node status`).
    pub fn as_str(self) -> &'static str {
        match self {
            PeerOrigin::Mesh => "node-to-node mesh",
            PeerOrigin::Global => "global",
            PeerOrigin::NodeSpecific => "node specific",
        }
    }
}

/// Resolves a BGPPeer's `password.secretKeyRef` to the password.
pub trait SecretSource {
    /// The secret's value, or why there is none.
    fn password(&self, secret: &SecretKeyRef) -> Result<String, String>;
}

/// No secrets at all: every password reference fails with a message.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn password(&self, secret: &SecretKeyRef) -> Result<String, String> {
        Err(format!(
            "secret {}/{}: no secrets directory configured (--secrets-dir)",
            secret.name, secret.key
        ))
    }
}

/// Secrets as files `<dir>/<secret name>/<key>` (the layout of a
/// Kubernetes secret volume); a trailing newline is removed.
#[derive(Debug, Clone)]
pub struct SecretsDir(pub PathBuf);

impl SecretSource for SecretsDir {
    fn password(&self, secret: &SecretKeyRef) -> Result<String, String> {
        let path = self.0.join(&secret.name).join(&secret.key);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("secret {}: {e}", path.display()))?;
        Ok(text.trim_end_matches(['\n', '\r']).to_owned())
    }
}

/// The resources the plan is computed from.
#[derive(Debug, Clone, Default)]
pub struct BgpResources {
    /// Every Node.
    pub nodes: Vec<Node>,
    /// Every BGPConfiguration (`default`, `node.<name>`).
    pub configurations: Vec<BgpConfiguration>,
    /// Every BGPPeer.
    pub peers: Vec<BgpPeer>,
    /// Every BGPFilter.
    pub filters: Vec<BgpFilter>,
}

impl BgpResources {
    fn configuration(&self, name: &str) -> Option<&BgpConfigurationSpec> {
        self.configurations
            .iter()
            .find(|c| c.metadata.name == name)
            .map(|c| &c.spec)
    }

    /// The `default` BGPConfiguration's spec (empty when absent).
    pub fn default_configuration(&self) -> BgpConfigurationSpec {
        self.configuration(DEFAULT_BGP_CONFIGURATION)
            .cloned()
            .unwrap_or_default()
    }

    /// The cluster-wide AS.
    pub fn global_as(&self) -> u32 {
        self.configuration(DEFAULT_BGP_CONFIGURATION)
            .and_then(|c| c.as_number)
            .map_or(DEFAULT_AS, |a| a.0)
    }

    /// A node's AS (its own, else the cluster's).
    pub fn node_as(&self, node: &Node) -> u32 {
        node.spec
            .bgp
            .as_ref()
            .and_then(|b| b.as_number)
            .map_or_else(|| self.global_as(), |a| a.0)
    }
}

/// What the node needs from the plan besides resources.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// This node's name.
    pub node: String,
    /// The speaker's control socket.
    pub control_socket: PathBuf,
    /// Program learned routes into the kernel.
    pub fib: bool,
    /// Advertise graceful restart on every session (and adopt the kernel
    /// routes a previous run left, on start).
    pub graceful_restart: bool,
}

/// BGPPeer annotation turning BFD on (`"true"`) for its sessions.
pub const BFD_ANNOTATION: &str = "tabby.io/bfd";
/// BGPPeer annotation: BFD interval, milliseconds.
pub const BFD_INTERVAL_ANNOTATION: &str = "tabby.io/bfd-interval-ms";
/// BGPPeer annotation: BFD detect multiplier.
pub const BFD_MULTIPLIER_ANNOTATION: &str = "tabby.io/bfd-multiplier";

/// BFD settings of a BGPPeer from its annotations: (on, interval ms,
/// multiplier). A value that does not parse is ignored with a warning
/// naming the annotation.
pub fn bfd_annotations(
    bp: &BgpPeer,
    warnings: &mut Vec<String>,
) -> (bool, Option<u32>, Option<u8>) {
    bfd_settings(
        &format!("BGPPeer {}", bp.metadata.name),
        &bp.metadata.annotations,
        warnings,
    )
}

/// BFD settings from the BFD annotations of the resource `owner` (its kind
/// and name, for the warnings): (on, interval ms, multiplier).
fn bfd_settings(
    owner: &str,
    a: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> (bool, Option<u32>, Option<u8>) {
    let on = match a.get(BFD_ANNOTATION).map(|v| v.trim()) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            warnings.push(format!(
                "{owner}: annotation {BFD_ANNOTATION}: {other:?} is not \"true\" or \"false\"; BFD stays off"
            ));
            false
        }
    };
    let interval = a.get(BFD_INTERVAL_ANNOTATION).and_then(|v| {
        match v.trim().parse::<u32>() {
            Ok(ms) if ms >= 1 => Some(ms),
            _ => {
                warnings.push(format!(
                    "{owner}: annotation {BFD_INTERVAL_ANNOTATION}: {v:?} is not a number of milliseconds (1 or more); 300 is used"
                ));
                None
            }
        }
    });
    let multiplier = a.get(BFD_MULTIPLIER_ANNOTATION).and_then(|v| {
        match v.trim().parse::<u8>() {
            Ok(m) if m >= 1 => Some(m),
            _ => {
                warnings.push(format!(
                    "{owner}: annotation {BFD_MULTIPLIER_ANNOTATION}: {v:?} is not a multiplier (1..=255); 3 is used"
                ));
                None
            }
        }
    });
    (on, interval, multiplier)
}

/// Calico's graceful-restart time when none is set, seconds.
pub const DEFAULT_RESTART_TIME: u16 = 120;

/// A Calico restart time as the capability's seconds (1..=4095); a
/// warning when it had to be clamped.
fn restart_time(
    what: &str,
    d: &tabby_model::duration::GoDuration,
    warnings: &mut Vec<String>,
) -> GracefulRestartSettings {
    let secs = d.duration().as_secs();
    let clamped = secs.clamp(1, 4095);
    if clamped != secs {
        warnings.push(format!(
            "{what}: {secs} s is outside 1..=4095 s (12 bits in the graceful restart capability); {clamped} s is used"
        ));
    }
    GracefulRestartSettings {
        restart_time: u16::try_from(clamped).unwrap_or(4095),
        stale_routes_time: None,
        selection_deferral_time: None,
        notification: false,
    }
}

/// The speaker configuration for one node and what it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerPlan {
    /// The configuration (`tabby bgpd`'s format); `originate` is empty
    /// (exports are computed separately, see [`crate::exports`]).
    pub config: BgpdConfig,
    /// Where each neighbour came from.
    pub origins: BTreeMap<IpAddr, PeerOrigin>,
    /// Things the user set that were skipped or not applied, one sentence each.
    pub warnings: Vec<String>,
}

/// Why no plan can be made for the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The Node resource does not exist (yet).
    #[error("node {0} is not registered (no Node resource)")]
    UnknownNode(String),
    /// The node has no IPv4 BGP address, which the router id is made from.
    #[error(
        "node {0} has no spec.bgp.ipv4Address: the BGP router id is taken from it (set --ip or IP)"
    )]
    NoRouterId(String),
    /// The node's cluster id is not an IPv4 address.
    #[error("node {node}: spec.bgp.routeReflectorClusterID {value:?} is not an IPv4 address")]
    BadClusterId {
        /// The node.
        node: String,
        /// The value.
        value: String,
    },
}

/// A node's BGP addresses (IPv4 first).
fn node_addresses(node: &Node) -> Vec<IpAddr> {
    let Some(bgp) = &node.spec.bgp else {
        return Vec::new();
    };
    bgp.ipv4_address
        .iter()
        .chain(bgp.ipv6_address.iter())
        .map(|a| a.addr)
        .collect()
}

fn cluster_id(node: &Node) -> Option<&str> {
    node.spec
        .bgp
        .as_ref()
        .and_then(|b| b.route_reflector_cluster_id.as_deref())
        .filter(|s| !s.is_empty())
}

/// Calico's mesh direction: passive toward a node whose address is
/// greater as text.
pub fn mesh_passive(local: IpAddr, remote: IpAddr) -> bool {
    remote.to_string() > local.to_string()
}

/// Computes the speaker configuration of node `settings.node`.
pub fn speaker_plan(
    res: &BgpResources,
    settings: &PlanSettings,
    secrets: &dyn SecretSource,
) -> Result<SpeakerPlan, PlanError> {
    let me = res
        .nodes
        .iter()
        .find(|n| n.metadata.name == settings.node)
        .ok_or_else(|| PlanError::UnknownNode(settings.node.clone()))?;
    let my_v4 = me
        .spec
        .bgp
        .as_ref()
        .and_then(|b| b.ipv4_address)
        .and_then(|a| match a.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| PlanError::NoRouterId(settings.node.clone()))?;
    let my_addrs = node_addresses(me);
    let my_as = res.node_as(me);
    let my_cluster = match cluster_id(me) {
        Some(c) => Some(c.parse::<Ipv4Addr>().map_err(|_| PlanError::BadClusterId {
            node: settings.node.clone(),
            value: c.to_owned(),
        })?),
        None => None,
    };
    let global = res.default_configuration();
    let port = res
        .configuration(&format!("node.{}", settings.node))
        .and_then(|c| c.listen_port)
        .or(global.listen_port)
        .unwrap_or(179);
    // `bindMode: NodeIP`: listen on the node's BGP addresses only.
    let listen = if global.bind_mode == Some(BindMode::NodeIp) {
        my_addrs.iter().map(|a| SocketAddr::new(*a, port)).collect()
    } else {
        let mut l = vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))];
        if my_addrs.iter().any(IpAddr::is_ipv6) {
            l.push(SocketAddr::from(([0u16; 8], port)));
        }
        l
    };

    let mut warnings = Vec::new();
    for (field, set) in [
        ("communities", !global.communities.is_empty()),
        (
            "prefixAdvertisements",
            !global.prefix_advertisements.is_empty(),
        ),
        ("ignoredInterfaces", !global.ignored_interfaces.is_empty()),
        (
            "localWorkloadPeeringIPV4",
            global.local_workload_peering_ipv4.is_some(),
        ),
        (
            "localWorkloadPeeringIPV6",
            global.local_workload_peering_ipv6.is_some(),
        ),
    ] {
        if set {
            warnings.push(format!(
                "BGPConfiguration default: spec.{field} is not supported by tabby yet and is ignored"
            ));
        }
    }
    let mut out: Vec<(PeerConfig, PeerOrigin)> = Vec::new();
    let source_for = |remote: IpAddr| {
        my_addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == remote.is_ipv4())
    };

    // Explicit BGPPeers, in name order.
    let mut peers: Vec<&BgpPeer> = res.peers.iter().collect();
    peers.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let my_labels = me.selector_labels();
    for bp in peers {
        let s = &bp.spec;
        let name = &bp.metadata.name;
        let origin = if s.node.is_some() || s.node_selector.is_some() {
            PeerOrigin::NodeSpecific
        } else {
            PeerOrigin::Global
        };
        // Does the BGPPeer's local side (node / nodeSelector / every node) select `n`?
        let local_side = |n: &Node| match (&s.node, &s.node_selector) {
            (Some(name), _) => n.metadata.name == *name,
            (None, Some(sel)) => sel.matches(&n.selector_labels()),
            (None, None) => true,
        };
        // Remote ends: (address, port, AS, the remote node if it is one).
        let mut remotes: Vec<(IpAddr, Option<u16>, u32, Option<&Node>)> = Vec::new();
        if local_side(me) {
            if let Some(ip) = &s.peer_ip {
                let as_number = s.as_number.map_or(my_as, |a| a.0);
                let node = res
                    .nodes
                    .iter()
                    .find(|n| node_addresses(n).contains(&ip.ip));
                remotes.push((ip.ip, ip.port, as_number, node));
            } else if let Some(sel) = &s.peer_selector {
                for n in &res.nodes {
                    if n.metadata.name == settings.node || !sel.matches(&n.selector_labels()) {
                        continue;
                    }
                    for addr in node_addresses(n) {
                        remotes.push((addr, None, res.node_as(n), Some(n)));
                    }
                }
            }
        }
        // Reverse peering (Calico's `reversePeering: Auto`, the default):
        // a node picked by `peerSelector` peers back with every node of
        // the local side, so one BGPPeer configures both ends.
        if let Some(sel) = &s.peer_selector
            && s.reverse_peering != Some(ReversePeering::Manual)
            && sel.matches(&my_labels)
        {
            for n in &res.nodes {
                if n.metadata.name == settings.node || !local_side(n) {
                    continue;
                }
                for addr in node_addresses(n) {
                    if !remotes.iter().any(|r| r.0 == addr) {
                        remotes.push((addr, None, res.node_as(n), Some(n)));
                    }
                }
            }
        }
        if remotes.is_empty() {
            continue;
        }
        let password = match &s.password {
            Some(p) => match &p.secret_key_ref {
                Some(r) => match secrets.password(r) {
                    Ok(pw) => Some(pw),
                    Err(e) => {
                        warnings.push(format!("BGPPeer {name}: skipped, password: {e}"));
                        continue;
                    }
                },
                None => None,
            },
            None => None,
        };
        let (import, export) = match filter_rules(res, &s.filters) {
            Ok(r) => r,
            Err(e) => {
                warnings.push(format!("BGPPeer {name}: skipped, {e}"));
                continue;
            }
        };
        for (field, set) in [
            ("localASNumber", s.local_as_number.is_some()),
            ("reachableBy", s.reachable_by.is_some()),
            ("localWorkloadSelector", s.local_workload_selector.is_some()),
        ] {
            if set {
                warnings.push(format!(
                    "BGPPeer {name}: spec.{field} is not supported by tabby yet and is ignored"
                ));
            }
        }
        let keepalive = s
            .keepalive_time
            .as_ref()
            .map(|d| d.duration().as_secs())
            .filter(|k| *k > 0)
            .map(|k| u16::try_from(k.min(u64::from(u16::MAX / 3))).unwrap_or(u16::MAX / 3));
        let next_hop_mode = if s.keep_original_next_hop {
            NextHopMode::Keep
        } else {
            match s.next_hop_mode {
                None | Some(ModelNextHop::Auto) => NextHopMode::Auto,
                Some(ModelNextHop::SelfAddress) => NextHopMode::SelfAddress,
                Some(ModelNextHop::Keep) => NextHopMode::Keep,
            }
        };
        let allow_own_as = s
            .num_allowed_local_as_numbers
            .map_or(0, |n| u8::try_from(n.clamp(0, 255)).unwrap_or(u8::MAX));
        let (bfd, bfd_interval_ms, bfd_multiplier) = bfd_annotations(bp, &mut warnings);
        let peer_restart = s
            .max_restart_time
            .as_ref()
            .filter(|_| settings.graceful_restart)
            .map(|d| {
                restart_time(
                    &format!("BGPPeer {name}: spec.maxRestartTime"),
                    d,
                    &mut warnings,
                )
            });
        for (addr, port, as_number, remote_node) in remotes {
            if my_addrs.contains(&addr) {
                continue;
            }
            let remote_cluster = remote_node.and_then(cluster_id);
            let rr_client = match my_cluster {
                Some(c) => {
                    as_number == my_as
                        && remote_cluster.and_then(|r| r.parse::<Ipv4Addr>().ok()) != Some(c)
                }
                None => false,
            };
            let ebgp = as_number != my_as;
            let mut p = base_peer(addr, as_number, origin);
            p.graceful_restart = peer_restart.clone();
            p.bfd = bfd;
            p.bfd_interval_ms = bfd_interval_ms;
            p.bfd_multiplier = bfd_multiplier;
            p.port = port.filter(|p| *p != 179);
            p.password = password.clone();
            p.keepalive_time = keepalive;
            p.hold_time = keepalive
                .map(|k| u32::from(k) * 3)
                .filter(|h| *h > u32::from(DEFAULT_HOLD_TIME))
                .map(|h| u16::try_from(h).unwrap_or(u16::MAX));
            p.source_address = match s.source_address {
                Some(SourceAddress::None) => None,
                _ => source_for(addr),
            };
            p.ttl_security = s.ttl_security.filter(|h| *h > 0);
            p.multihop = (ebgp && p.ttl_security.is_none()).then_some(64);
            p.allow_own_as = allow_own_as;
            p.next_hop_mode = next_hop_mode;
            p.route_reflector_client = rr_client;
            // Between two cluster nodes, only one side connects (the mesh's
            // rule); see the module doc.
            if remote_node.is_some()
                && let Some(local) = source_for(addr)
            {
                p.passive = mesh_passive(local, addr);
            }
            p.import = import.clone();
            p.export = export.clone();
            out.push((p, origin));
        }
    }

    // The node-to-node mesh.
    if global.node_to_node_mesh_enabled() && my_cluster.is_none() {
        let password = match global
            .node_mesh_password
            .as_ref()
            .and_then(|p| p.secret_key_ref.as_ref())
        {
            Some(r) => match secrets.password(r) {
                Ok(pw) => Some(Some(pw)),
                Err(e) => {
                    warnings.push(format!("node-to-node mesh: skipped, nodeMeshPassword: {e}"));
                    None
                }
            },
            None => Some(None),
        };
        let mesh_restart = global
            .node_mesh_max_restart_time
            .as_ref()
            .filter(|_| settings.graceful_restart)
            .map(|d| {
                restart_time(
                    "BGPConfiguration default: spec.nodeMeshMaxRestartTime",
                    d,
                    &mut warnings,
                )
            });
        let no_annotations = BTreeMap::new();
        let (mesh_bfd, mesh_bfd_interval, mesh_bfd_multiplier) = bfd_settings(
            &format!("BGPConfiguration {DEFAULT_BGP_CONFIGURATION}"),
            res.configurations
                .iter()
                .find(|c| c.metadata.name == DEFAULT_BGP_CONFIGURATION)
                .map_or(&no_annotations, |c| &c.metadata.annotations),
            &mut warnings,
        );
        let my_subnets = crate::tunnels::own_subnets(me);
        let mut beyond_bfd = 0;
        if let Some(password) = password {
            let mut others: Vec<&Node> = res
                .nodes
                .iter()
                .filter(|n| n.metadata.name != settings.node && cluster_id(n).is_none())
                .collect();
            others.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            for n in others {
                for addr in node_addresses(n) {
                    let Some(local) = source_for(addr) else {
                        continue;
                    };
                    if my_addrs.contains(&addr) {
                        continue;
                    }
                    let mut p = base_peer(addr, res.node_as(n), PeerOrigin::Mesh);
                    p.passive = mesh_passive(local, addr);
                    p.source_address = Some(local);
                    p.password = password.clone();
                    p.multihop = (p.as_number != my_as).then_some(64);
                    p.graceful_restart = mesh_restart.clone();
                    if mesh_bfd {
                        if my_subnets.iter().any(|net| net.contains(&addr)) {
                            p.bfd = true;
                            p.bfd_interval_ms = mesh_bfd_interval;
                            p.bfd_multiplier = mesh_bfd_multiplier;
                        } else {
                            beyond_bfd += 1;
                        }
                    }
                    out.push((p, PeerOrigin::Mesh));
                }
            }
        }
        if beyond_bfd > 0 {
            warnings.push(format!(
                "BGPConfiguration {DEFAULT_BGP_CONFIGURATION}: annotation {BFD_ANNOTATION}: {beyond_bfd} mesh peer(s) are not on this node's subnets and run without BFD (single hop only)"
            ));
        }
    }

    let mut origins = BTreeMap::new();
    let mut peers_out = Vec::new();
    for (p, origin) in out {
        if let Some(first) = origins.get(&p.address) {
            if *first == origin {
                continue;
            }
            warnings.push(format!(
                "{} peer {} is already configured as a {} peer; the {} one is used",
                origin.as_str(),
                p.address,
                PeerOrigin::as_str(*first),
                PeerOrigin::as_str(*first),
            ));
            continue;
        }
        origins.insert(p.address, origin);
        let mut p = p;
        // A node is never transit: it announces what it originates, and
        // only a route reflector passes routes learned from peers on (to
        // its iBGP peers, by the speaker's reflection rules). Appended
        // after the user's filters, which may still accept more.
        if my_cluster.is_none() || p.as_number != my_as {
            let mut only_own = Rule::new(Action::Reject);
            only_own.source = Some(RouteSource::RemotePeers);
            p.export.push(only_own);
        }
        peers_out.push(p);
    }
    let mut config = BgpdConfig {
        as_number: my_as,
        router_id: my_v4,
        listen,
        peers: Vec::new(),
        originate: Vec::new(),
        fib: settings.fib,
        control_socket: settings.control_socket.clone(),
        cluster_id: my_cluster,
        encapsulation: None,
        graceful_restart: settings
            .graceful_restart
            .then_some(GracefulRestartSettings {
                restart_time: DEFAULT_RESTART_TIME,
                stale_routes_time: None,
                selection_deferral_time: None,
                notification: false,
            }),
    };
    // A neighbour the speaker would refuse is left out with a warning, so
    // one bad BGPPeer never blocks every other change.
    for p in peers_out {
        match speaker_accepts(&config, &p) {
            Ok(()) => config.peers.push(p),
            Err(e) => {
                origins.remove(&p.address);
                warnings.push(format!("peer {}: skipped: {e}", p.address));
            }
        }
    }
    Ok(SpeakerPlan {
        config,
        origins,
        warnings,
    })
}

/// Checks one neighbour with the speaker's own validation.
fn speaker_accepts(base: &BgpdConfig, peer: &PeerConfig) -> Result<(), String> {
    let mut one = base.clone();
    one.peers = vec![peer.clone()];
    let text = serde_json::to_string(&one).map_err(|e| e.to_string())?;
    BgpdConfig::parse(&text, "generated")
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn base_peer(address: IpAddr, as_number: u32, origin: PeerOrigin) -> PeerConfig {
    PeerConfig {
        address,
        as_number,
        port: None,
        passive: false,
        route_reflector_client: false,
        next_hop_mode: NextHopMode::Auto,
        allow_own_as: 0,
        multihop: None,
        hold_time: None,
        keepalive_time: None,
        connect_retry_time: Some(5),
        password: None,
        ttl_security: None,
        source_address: None,
        import: Vec::new(),
        export: Vec::new(),
        bfd: false,
        bfd_interval_ms: None,
        bfd_multiplier: None,
        same_family_only: true,
        description: Some(origin.as_str().to_owned()),
        graceful_restart: None,
    }
}

/// The import and export rules of the named BGPFilters, in order.
fn filter_rules(res: &BgpResources, names: &[String]) -> Result<(Vec<Rule>, Vec<Rule>), String> {
    let mut import = Vec::new();
    let mut export = Vec::new();
    for name in names {
        let f = res
            .filters
            .iter()
            .find(|f| &f.metadata.name == name)
            .ok_or_else(|| format!("BGPFilter {name} does not exist"))?;
        for (list, rules, is_import) in [
            ("importV4", &f.spec.import_v4, true),
            ("importV6", &f.spec.import_v6, true),
            ("exportV4", &f.spec.export_v4, false),
            ("exportV6", &f.spec.export_v6, false),
        ] {
            let out = if is_import { &mut import } else { &mut export };
            for (i, r) in rules.iter().enumerate() {
                out.push(filter_rule(r).map_err(|e| format!("BGPFilter {name} {list}[{i}]: {e}"))?);
            }
        }
    }
    Ok((import, export))
}

/// One BGPFilter rule as a `tabby-bgp` policy rule.
pub fn filter_rule(r: &BgpFilterRule) -> Result<Rule, String> {
    if r.interface.is_some() {
        return Err("interface rules are not supported by tabby yet".into());
    }
    let mut v = serde_json::Map::new();
    let action = match r.action {
        FilterAction::Accept => Action::Accept,
        FilterAction::Reject => Action::Reject,
    };
    v.insert("action".into(), json(&action)?);
    if let Some(c) = &r.cidr {
        v.insert("cidr".into(), c.to_string().into());
    }
    if let Some(m) = &r.match_operator {
        v.insert("matchOperator".into(), json(m)?);
    }
    if let Some(pl) = &r.prefix_length {
        let mut m = serde_json::Map::new();
        for (k, x) in [("min", pl.min), ("max", pl.max)] {
            if let Some(x) = x {
                m.insert(k.into(), x.into());
            }
        }
        v.insert("prefixLength".into(), m.into());
    }
    if let Some(s) = &r.source {
        v.insert("source".into(), json(s)?);
    }
    if let Some(t) = &r.peer_type {
        v.insert("peerType".into(), json(t)?);
    }
    if let Some(c) = &r.communities {
        if c.values.iter().any(|x| x.split(':').count() != 2) {
            return Err("large communities are not supported in filters yet".into());
        }
        v.insert("communities".into(), c.values.clone().into());
    }
    if let Some(p) = &r.as_path_prefix {
        v.insert(
            "asPathPrefix".into(),
            p.iter().map(|a| a.0).collect::<Vec<u32>>().into(),
        );
    }
    let mut add = Vec::new();
    let mut prepend = Vec::new();
    for op in &r.operations {
        if let Some(c) = &op.add_community {
            if c.value.split(':').count() != 2 {
                return Err("adding large communities is not supported yet".into());
            }
            add.push(c.value.clone());
        }
        if let Some(p) = &op.prepend_as_path {
            prepend.extend(p.prefix.iter().map(|a| a.0));
        }
    }
    if !add.is_empty() {
        v.insert("addCommunity".into(), add.into());
    }
    if !prepend.is_empty() {
        v.insert("prependASPath".into(), prepend.into());
    }
    serde_json::from_value(serde_json::Value::Object(v)).map_err(|e| e.to_string())
}

fn json<T: serde::Serialize>(x: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(x).map_err(|e| e.to_string())
}

/// Every distinct peer address of the plan, for checks.
pub fn peer_addresses(plan: &SpeakerPlan) -> BTreeSet<IpAddr> {
    plan.config.peers.iter().map(|p| p.address).collect()
}

#[cfg(test)]
mod tests {
    use tabby_model::{Resource, parse_manifest};

    use super::*;

    /// Resources from a YAML manifest, as `tabby apply` would take them.
    fn resources(yaml: &str) -> BgpResources {
        let entries = parse_manifest("test.yaml", yaml).expect("valid manifest");
        let mut r = BgpResources::default();
        for e in entries {
            match e.resource {
                Resource::Node(n) => r.nodes.push(n),
                Resource::BgpConfiguration(c) => r.configurations.push(c),
                Resource::BgpPeer(p) => r.peers.push(p),
                Resource::BgpFilter(f) => r.filters.push(f),
                other => panic!("unexpected {:?}", other.kind()),
            }
        }
        r
    }

    fn node(name: &str, ip: &str, extra: &str) -> String {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n{extra_meta}spec:\n  bgp:\n    ipv4Address: {ip}\n{extra_bgp}",
            extra_meta = extra
                .lines()
                .filter(|l| l.starts_with("  labels") || l.starts_with("    "))
                .filter(|l| !l.trim_start().starts_with("asNumber")
                    && !l.trim_start().starts_with("routeReflectorClusterID"))
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            extra_bgp = extra
                .lines()
                .filter(|l| l.trim_start().starts_with("asNumber")
                    || l.trim_start().starts_with("routeReflectorClusterID"))
                .map(|l| format!("    {}\n", l.trim()))
                .collect::<String>(),
        )
    }

    fn plan(res: &BgpResources, name: &str) -> SpeakerPlan {
        speaker_plan(
            res,
            &PlanSettings {
                node: name.into(),
                control_socket: "/tmp/x.sock".into(),
                fib: true,
                graceful_restart: true,
            },
            &NoSecrets,
        )
        .expect("plan")
    }

    fn peer<'a>(p: &'a SpeakerPlan, addr: &str) -> &'a PeerConfig {
        let a: IpAddr = addr.parse().expect("ip");
        p.config
            .peers
            .iter()
            .find(|x| x.address == a)
            .unwrap_or_else(|| panic!("no peer {addr} in {:?}", peer_addresses(p)))
    }

    fn addrs(p: &SpeakerPlan) -> Vec<String> {
        peer_addresses(p).iter().map(ToString::to_string).collect()
    }

    const BGPCONF_NO_MESH: &str = "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n  nodeToNodeMeshEnabled: false\n  asNumber: 64600\n";

    #[test]
    fn defaults_are_calicos() {
        let res = resources(&(node("a", "10.0.0.1/24", "") + &node("b", "10.0.0.2/24", "")));
        let p = plan(&res, "a");
        assert_eq!(p.config.as_number, 64512);
        assert_eq!(p.config.router_id, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.config.listen, vec!["0.0.0.0:179".parse().expect("addr")]);
        assert_eq!(p.config.cluster_id, None);
        assert!(p.config.fib);
        let b = peer(&p, "10.0.0.2");
        assert_eq!(b.as_number, 64512);
        assert_eq!(b.source_address, Some("10.0.0.1".parse().expect("ip")));
        assert_eq!(p.origins.values().collect::<Vec<_>>(), [&PeerOrigin::Mesh]);
        assert_eq!(b.description.as_deref(), Some("node-to-node mesh"));
    }

    #[test]
    fn mesh_is_one_directional_lower_address_passive() {
        let res = resources(
            &(node("a", "10.0.0.1/24", "")
                + &node("b", "10.0.0.2/24", "")
                + &node("c", "10.0.0.3/24", "")),
        );
        let a = plan(&res, "a");
        let b = plan(&res, "b");
        let c = plan(&res, "c");
        assert!(peer(&a, "10.0.0.2").passive && peer(&a, "10.0.0.3").passive);
        assert!(!peer(&b, "10.0.0.1").passive && peer(&b, "10.0.0.3").passive);
        assert!(!peer(&c, "10.0.0.1").passive && !peer(&c, "10.0.0.2").passive);
        // Exactly one side of each pair connects.
        for (x, y, px, py) in [
            ("10.0.0.1", "10.0.0.2", &a, &b),
            ("10.0.0.1", "10.0.0.3", &a, &c),
            ("10.0.0.2", "10.0.0.3", &b, &c),
        ] {
            assert_ne!(peer(px, y).passive, peer(py, x).passive, "{x} <-> {y}");
        }
    }

    #[test]
    fn mesh_direction_compares_addresses_as_text_like_calico() {
        // 10.0.0.10 < 10.0.0.9 as text: Calico's .9 node is passive toward
        // nothing here and the .10 node is passive toward .9; tabby agrees.
        assert!(mesh_passive(
            "10.0.0.10".parse().expect("ip"),
            "10.0.0.9".parse().expect("ip")
        ));
        assert!(!mesh_passive(
            "10.0.0.9".parse().expect("ip"),
            "10.0.0.10".parse().expect("ip")
        ));
    }

    #[test]
    fn mesh_off_means_no_mesh_peers() {
        let res = resources(
            &(BGPCONF_NO_MESH.to_owned()
                + &node("a", "10.0.0.1/24", "")
                + &node("b", "10.0.0.2/24", "")),
        );
        let p = plan(&res, "a");
        assert!(p.config.peers.is_empty());
        assert_eq!(p.config.as_number, 64600);
    }

    #[test]
    fn per_node_as_for_local_and_remote() {
        let res = resources(
            &(node("a", "10.0.0.1/24", "asNumber: 65001")
                + &node("b", "10.0.0.2/24", "asNumber: 65002")
                + &node("c", "10.0.0.3/24", "")),
        );
        let p = plan(&res, "a");
        assert_eq!(p.config.as_number, 65001);
        assert_eq!(peer(&p, "10.0.0.2").as_number, 65002);
        assert_eq!(peer(&p, "10.0.0.3").as_number, 64512);
        // eBGP mesh sessions are multihop like Calico's template.
        assert_eq!(peer(&p, "10.0.0.2").multihop, Some(64));
    }

    #[test]
    fn route_reflectors_leave_the_mesh_and_reflect_to_other_clusters() {
        let yaml = node("a", "10.0.0.1/24", "")
            + &node("b", "10.0.0.2/24", "")
            + &node(
                "rr1",
                "10.0.0.11/24",
                "  labels:\n    route-reflector: \"true\"\nrouteReflectorClusterID: 224.0.0.1",
            )
            + &node(
                "rr2",
                "10.0.0.12/24",
                "  labels:\n    route-reflector: \"true\"\nrouteReflectorClusterID: 224.0.0.1",
            )
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: peer-with-rr}\nspec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n";
        let res = resources(&yaml);
        // A client: mesh to the other client only, plus both RRs.
        let a = plan(&res, "a");
        assert_eq!(addrs(&a), ["10.0.0.2", "10.0.0.11", "10.0.0.12"]);
        assert_eq!(
            a.origins[&"10.0.0.2".parse::<IpAddr>().expect("ip")],
            PeerOrigin::Mesh
        );
        assert_eq!(
            a.origins[&"10.0.0.11".parse::<IpAddr>().expect("ip")],
            PeerOrigin::NodeSpecific
        );
        assert!(!peer(&a, "10.0.0.11").route_reflector_client);
        // An RR: no mesh; the other RR (same cluster) is plain iBGP; clients are RR clients.
        let rr = plan(&res, "rr1");
        assert_eq!(rr.config.cluster_id, Some(Ipv4Addr::new(224, 0, 0, 1)));
        assert_eq!(addrs(&rr), ["10.0.0.1", "10.0.0.2", "10.0.0.12"]);
        assert!(peer(&rr, "10.0.0.1").route_reflector_client);
        assert!(peer(&rr, "10.0.0.2").route_reflector_client);
        assert!(!peer(&rr, "10.0.0.12").route_reflector_client);
        // Node-to-node BGPPeer sessions are one-directional like the mesh.
        // Exactly one end of each pair connects.
        let b = plan(&res, "b");
        let rr2 = plan(&res, "rr2");
        for (x, y, px, py) in [
            ("10.0.0.1", "10.0.0.11", &a, &rr),
            ("10.0.0.2", "10.0.0.11", &b, &rr),
            ("10.0.0.12", "10.0.0.11", &rr2, &rr),
        ] {
            assert_ne!(peer(px, y).passive, peer(py, x).passive, "{x} <-> {y}");
        }
        assert!(
            peer(&a, "10.0.0.11").passive,
            "10.0.0.1 < 10.0.0.11 as text"
        );
    }

    #[test]
    fn learned_routes_are_passed_on_only_by_route_reflectors_to_ibgp() {
        let only_own = |p: &PeerConfig| {
            p.export.last().is_some_and(|r| {
                r.action == Action::Reject && r.source == Some(RouteSource::RemotePeers)
            })
        };
        let yaml = node("a", "10.0.0.1/24", "asNumber: 65001")
            + &node("b", "10.0.0.2/24", "")
            + &node("rr", "10.0.0.11/24", "routeReflectorClusterID: 1.1.1.1")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 10.0.9.1, asNumber: 65100}\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: clients}\nspec: {node: rr, peerSelector: all(), reversePeering: Manual}\n";
        let res = resources(&yaml);
        let a = plan(&res, "a");
        assert!(a.config.peers.iter().all(only_own), "{:?}", a.config.peers);
        let rr = plan(&res, "rr");
        assert!(
            only_own(peer(&rr, "10.0.9.1")),
            "eBGP from an RR: own routes only"
        );
        assert!(peer(&rr, "10.0.0.2").route_reflector_client);
        assert!(!only_own(peer(&rr, "10.0.0.2")), "the RR reflects to iBGP");
        assert!(
            only_own(peer(&rr, "10.0.0.1")),
            "eBGP node: own routes only"
        );
    }

    #[test]
    fn reverse_peering_manual_configures_one_end_only() {
        let yaml = BGPCONF_NO_MESH.to_owned()
            + &node("a", "10.0.0.1/24", "")
            + &node("r", "10.0.0.11/24", "  labels:\n    rr: \"yes\"")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: to-rr}\nspec:\n  node: a\n  peerSelector: rr == 'yes'\n  reversePeering: Manual\n";
        let res = resources(&yaml);
        assert_eq!(addrs(&plan(&res, "a")), ["10.0.0.11"]);
        assert!(plan(&res, "r").config.peers.is_empty());
        let auto = yaml.replace("  reversePeering: Manual\n", "");
        assert_eq!(addrs(&plan(&resources(&auto), "r")), ["10.0.0.1"]);
    }

    #[test]
    fn rr_clients_only_in_the_same_as() {
        let yaml = node("rr", "10.0.0.11/24", "routeReflectorClusterID: 1.1.1.1")
            + &node("x", "10.0.0.2/24", "asNumber: 65002")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: all}\nspec:\n  peerSelector: all()\n";
        let p = plan(&resources(&yaml), "rr");
        assert!(!peer(&p, "10.0.0.2").route_reflector_client);
        assert_eq!(peer(&p, "10.0.0.2").as_number, 65002);
    }

    #[test]
    fn bgppeer_node_and_node_selector_pick_local_nodes() {
        let yaml = BGPCONF_NO_MESH.to_owned()
            + &node("a", "10.0.0.1/24", "  labels:\n    region: WDS")
            + &node("b", "10.0.0.2/24", "  labels:\n    region: Global")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: wds}\nspec:\n  nodeSelector: region == 'WDS'\n  peerIP: 10.0.0.254\n  asNumber: 64600\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: only-b}\nspec:\n  node: b\n  peerIP: 10.0.0.253\n  asNumber: 65000\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec:\n  peerIP: 10.0.0.252:1179\n  asNumber: 65100\n";
        let res = resources(&yaml);
        let a = plan(&res, "a");
        assert_eq!(addrs(&a), ["10.0.0.252", "10.0.0.254"]);
        assert_eq!(
            a.origins[&"10.0.0.252".parse::<IpAddr>().expect("ip")],
            PeerOrigin::Global
        );
        assert_eq!(
            a.origins[&"10.0.0.254".parse::<IpAddr>().expect("ip")],
            PeerOrigin::NodeSpecific
        );
        assert_eq!(peer(&a, "10.0.0.252").port, Some(1179));
        assert_eq!(peer(&a, "10.0.0.252").as_number, 65100);
        let b = plan(&res, "b");
        assert_eq!(addrs(&b), ["10.0.0.252", "10.0.0.253"]);
        assert_eq!(peer(&b, "10.0.0.253").as_number, 65000);
    }

    #[test]
    fn kubernetes_hostname_label_matches_by_default() {
        let yaml = BGPCONF_NO_MESH.to_owned()
            + &node("k-master", "10.0.0.1/24", "")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: m}\nspec:\n  nodeSelector: kubernetes.io/hostname == \"k-master\"\n  peerIP: 10.0.0.254\n  asNumber: 65011\n";
        let p = plan(&resources(&yaml), "k-master");
        assert_eq!(addrs(&p), ["10.0.0.254"]);
    }

    #[test]
    fn peer_at_own_address_is_skipped() {
        let yaml = node("a", "10.0.0.1/24", "")
            + &node("b", "10.0.0.2/24", "")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: self}\nspec:\n  peerIP: 10.0.0.1\n  asNumber: 64512\n";
        let res = resources(&yaml);
        let a = plan(&res, "a");
        assert_eq!(addrs(&a), ["10.0.0.2"]);
        // b peers with a through the BGPPeer (it wins over the mesh entry).
        let b = plan(&res, "b");
        assert_eq!(addrs(&b), ["10.0.0.1"]);
        assert_eq!(
            b.origins[&"10.0.0.1".parse::<IpAddr>().expect("ip")],
            PeerOrigin::Global
        );
        assert!(
            b.warnings.iter().any(|w| w.contains("10.0.0.1")),
            "{:?}",
            b.warnings
        );
    }

    #[test]
    fn session_options_are_mapped() {
        let yaml = BGPCONF_NO_MESH.to_owned()
            + &node("a", "10.0.0.1/24", "")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec:\n  peerIP: 10.0.1.1\n  asNumber: 65000\n  keepaliveTime: 40s\n  ttlSecurity: 1\n  numAllowedLocalASNumbers: 2\n  nextHopMode: Self\n  sourceAddress: None\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor2}\nspec:\n  peerIP: 10.0.1.2\n  asNumber: 65000\n  keepaliveTime: 10s\n  keepOriginalNextHop: true\n";
        let p = plan(&resources(&yaml), "a");
        let t = peer(&p, "10.0.1.1");
        assert_eq!(t.keepalive_time, Some(40));
        assert_eq!(t.hold_time, Some(120));
        assert_eq!(t.ttl_security, Some(1));
        assert_eq!(t.multihop, None);
        assert_eq!(t.allow_own_as, 2);
        assert_eq!(t.next_hop_mode, NextHopMode::SelfAddress);
        assert_eq!(t.source_address, None);
        let t2 = peer(&p, "10.0.1.2");
        assert_eq!(t2.keepalive_time, Some(10));
        assert_eq!(t2.hold_time, None);
        assert_eq!(t2.next_hop_mode, NextHopMode::Keep);
        assert_eq!(t2.multihop, Some(64));
        assert_eq!(t2.source_address, Some("10.0.0.1".parse().expect("ip")));
        // The whole config is one the speaker accepts.
        let text = serde_json::to_string(&p.config).expect("json");
        BgpdConfig::parse(&text, "plan").expect("speaker accepts the plan");
    }

    #[test]
    fn graceful_restart_is_on_with_calicos_restart_times() {
        let yaml = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n  nodeMeshMaxRestartTime: 30s\n".to_owned()
            + &node("a", "10.0.0.1/24", "")
            + &node("b", "10.0.0.2/24", "")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec:\n  peerIP: 10.0.1.1\n  asNumber: 65000\n  maxRestartTime: 2h\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor2}\nspec:\n  peerIP: 10.0.1.2\n  asNumber: 65000\n";
        let res = resources(&yaml);
        let p = plan(&res, "a");
        let global = p.config.graceful_restart.as_ref().expect("on by default");
        assert_eq!(global.restart_time, DEFAULT_RESTART_TIME);
        let time = |addr: &str| {
            p.config
                .graceful_restart_for(peer(&p, addr))
                .map(|g| g.restart_time)
        };
        assert_eq!(time("10.0.0.2"), Some(30), "mesh: nodeMeshMaxRestartTime");
        assert_eq!(time("10.0.1.1"), Some(4095), "maxRestartTime, clamped");
        assert_eq!(time("10.0.1.2"), Some(120), "default");
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("BGPPeer tor: spec.maxRestartTime: 7200 s")),
            "{:?}",
            p.warnings
        );
        BgpdConfig::parse(&serde_json::to_string(&p.config).expect("json"), "plan")
            .expect("speaker accepts the plan");
        // Turned off: no capability anywhere.
        let off = speaker_plan(
            &res,
            &PlanSettings {
                node: "a".into(),
                control_socket: "/tmp/x".into(),
                fib: true,
                graceful_restart: false,
            },
            &NoSecrets,
        )
        .expect("plan");
        assert!(!off.config.any_graceful_restart());
    }

    #[test]
    fn bfd_comes_from_bgppeer_annotations() {
        let yaml = BGPCONF_NO_MESH.to_owned()
            + &node("a", "10.0.0.1/24", "")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\n  annotations: {tabby.io/bfd: \"true\", tabby.io/bfd-interval-ms: \"100\", tabby.io/bfd-multiplier: \"5\"}\nspec: {peerIP: 10.0.1.1, asNumber: 65000}\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor2\n  annotations: {tabby.io/bfd: \"yes\", tabby.io/bfd-interval-ms: \"0\"}\nspec: {peerIP: 10.0.1.2, asNumber: 65000}\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor3}\nspec: {peerIP: 10.0.1.3, asNumber: 65000}\n";
        let p = plan(&resources(&yaml), "a");
        let t = peer(&p, "10.0.1.1");
        assert!(t.bfd);
        assert_eq!(t.bfd_interval_ms, Some(100));
        assert_eq!(t.bfd_multiplier, Some(5));
        let t2 = peer(&p, "10.0.1.2");
        assert!(!t2.bfd);
        assert_eq!(t2.bfd_interval_ms, None);
        assert!(!peer(&p, "10.0.1.3").bfd);
        for needle in [
            "BGPPeer tor2: annotation tabby.io/bfd: \"yes\"",
            "BGPPeer tor2: annotation tabby.io/bfd-interval-ms: \"0\"",
        ] {
            assert!(
                p.warnings.iter().any(|w| w.contains(needle)),
                "{needle}: {:?}",
                p.warnings
            );
        }
        BgpdConfig::parse(&serde_json::to_string(&p.config).expect("json"), "plan")
            .expect("speaker accepts the plan");
    }

    #[test]
    fn bfd_on_the_mesh_comes_from_the_default_bgpconfiguration_for_peers_on_own_subnets() {
        let conf = "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n  annotations: {tabby.io/bfd: \"true\", tabby.io/bfd-interval-ms: \"150\"}\nspec: {}\n";
        let nodes = node("a", "10.0.0.1/24", "")
            + &node("b", "10.0.0.2/24", "")
            + &node("c", "10.9.0.3/24", "");
        let p = plan(&resources(&(conf.to_owned() + &nodes)), "a");
        let b = peer(&p, "10.0.0.2");
        assert!(b.bfd, "same subnet: BFD on");
        assert_eq!(b.bfd_interval_ms, Some(150));
        assert_eq!(b.bfd_multiplier, None, "default multiplier");
        let c = peer(&p, "10.9.0.3");
        assert!(!c.bfd, "behind a router: no single-hop BFD");
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("BGPConfiguration default")
                    && w.contains("1 mesh peer(s) are not on this node's subnets")),
            "{:?}",
            p.warnings
        );
        BgpdConfig::parse(&serde_json::to_string(&p.config).expect("json"), "plan")
            .expect("speaker accepts the plan");
        // Without the annotation the mesh has no BFD and no warning.
        let plain = plan(&resources(&nodes), "a");
        assert!(!peer(&plain, "10.0.0.2").bfd);
        assert!(plain.warnings.is_empty(), "{:?}", plain.warnings);
        // A bad value is named, BFD stays off.
        let bad = conf.replace("\"true\"", "\"on\"");
        let p = plan(&resources(&(bad + &nodes)), "a");
        assert!(!peer(&p, "10.0.0.2").bfd);
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("BGPConfiguration default: annotation tabby.io/bfd: \"on\"")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn passwords_come_from_secrets_and_missing_ones_skip_the_peer() {
        let dir = std::env::temp_dir().join(format!("tabby-agent-secrets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bgp")).expect("dir");
        std::fs::write(dir.join("bgp").join("tor"), "s3cret\n").expect("write");
        let yaml = BGPCONF_NO_MESH.to_owned()
            + &node("a", "10.0.0.1/24", "")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec:\n  peerIP: 10.0.1.1\n  asNumber: 65000\n  password:\n    secretKeyRef: {name: bgp, key: tor}\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor2}\nspec:\n  peerIP: 10.0.1.2\n  asNumber: 65000\n  password:\n    secretKeyRef: {name: bgp, key: missing}\n";
        let res = resources(&yaml);
        let settings = PlanSettings {
            node: "a".into(),
            control_socket: "/tmp/x".into(),
            fib: true,
            graceful_restart: true,
        };
        let p = speaker_plan(&res, &settings, &SecretsDir(dir.clone())).expect("plan");
        assert_eq!(peer(&p, "10.0.1.1").password.as_deref(), Some("s3cret"));
        assert_eq!(addrs(&p), ["10.0.1.1"]);
        assert!(
            p.warnings.iter().any(|w| w.contains("tor2")),
            "{:?}",
            p.warnings
        );
        let none = speaker_plan(&res, &settings, &NoSecrets).expect("plan");
        assert!(none.config.peers.is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn filters_become_policy_in_order() {
        let yaml = BGPCONF_NO_MESH.to_owned()
            + &node("a", "10.0.0.1/24", "")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata: {name: f1}\nspec:\n  exportV4:\n  - {action: Accept, cidr: 10.244.0.0/16, matchOperator: In, operations: [{addCommunity: {value: \"65000:100\"}}, {prependASPath: {prefix: [65000]}}]}\n  - {action: Reject}\n  importV4:\n  - {action: Reject, cidr: 0.0.0.0/0, matchOperator: Equal}\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec:\n  peerIP: 10.0.1.1\n  asNumber: 65000\n  filters: [f1]\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: bad}\nspec:\n  peerIP: 10.0.1.2\n  asNumber: 65000\n  filters: [nope]\n";
        let p = plan(&resources(&yaml), "a");
        let t = peer(&p, "10.0.1.1");
        assert_eq!(t.export.len(), 3, "two rules + never transit");
        assert_eq!(t.export[0].action, Action::Accept);
        assert_eq!(t.export[0].add_community.len(), 1);
        assert_eq!(t.export[0].prepend_as_path, vec![65000]);
        assert_eq!(t.export[1].action, Action::Reject);
        assert_eq!(t.import.len(), 1);
        assert_eq!(addrs(&p), ["10.0.1.1"]);
        assert!(
            p.warnings.iter().any(|w| w.contains("BGPFilter nope")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn bind_mode_node_ip_and_unsupported_fields_warn() {
        let yaml = "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n  bindMode: NodeIP\n  listenPort: 1790\n  prefixAdvertisements: [{cidr: 10.0.0.0/8, communities: [\"65000:1\"]}]\n".to_owned()
            + &node("a", "10.0.0.1/24", "");
        let p = plan(&resources(&yaml), "a");
        assert_eq!(
            p.config.listen,
            vec!["10.0.0.1:1790".parse().expect("addr")]
        );
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("spec.prefixAdvertisements")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn a_peer_the_speaker_would_refuse_is_skipped_alone() {
        let yaml = BGPCONF_NO_MESH.to_owned()
            + &node("a", "10.0.0.1/24", "")
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: good}\nspec: {peerIP: 10.0.1.1, asNumber: 65000}\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: huge-keepalive}\nspec: {peerIP: 10.0.1.2, asNumber: 65000, keepaliveTime: 100000s}\n"
            + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: multicast}\nspec: {peerIP: 224.0.0.5, asNumber: 65000}\n";
        let p = plan(&resources(&yaml), "a");
        assert_eq!(addrs(&p), ["10.0.1.1", "10.0.1.2"]);
        assert!(peer(&p, "10.0.1.2").keepalive_time < peer(&p, "10.0.1.2").hold_time);
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("224.0.0.5") && w.contains("address")),
            "{:?}",
            p.warnings
        );
        assert!(
            !p.origins
                .contains_key(&"224.0.0.5".parse::<IpAddr>().expect("ip"))
        );
        let text = serde_json::to_string(&p.config).expect("json");
        BgpdConfig::parse(&text, "plan").expect("the whole plan is accepted");
    }

    #[test]
    fn listen_port_and_errors() {
        let yaml = "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {listenPort: 1790}\n".to_owned()
            + &node("a", "10.0.0.1/24", "")
            + "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: nobgp}\nspec: {}\n";
        let res = resources(&yaml);
        assert_eq!(plan(&res, "a").config.listen[0].port(), 1790);
        let settings = |n: &str| PlanSettings {
            node: n.into(),
            control_socket: "/tmp/x".into(),
            fib: true,
            graceful_restart: true,
        };
        assert_eq!(
            speaker_plan(&res, &settings("ghost"), &NoSecrets),
            Err(PlanError::UnknownNode("ghost".into()))
        );
        assert_eq!(
            speaker_plan(&res, &settings("nobgp"), &NoSecrets),
            Err(PlanError::NoRouterId("nobgp".into()))
        );
        // A node without a BGP address is not meshed with.
        assert!(plan(&res, "a").config.peers.is_empty());
    }
}
