//! The snapshot doctor diagnoses: plain data, one field per source, each
//! either gathered or [`Unavailable`] with the reason. Tests build these by
//! hand; [`crate::gather`] reads them from a live node.
//!
//! It also holds the derived views every check needs (a node's plan and
//! exports, the pool or block of an address), computed with the agent's
//! own pure functions.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use tabby_agent::exports::{NodeExports, node_exports};
use tabby_agent::peers::{BgpResources, PlanError, PlanSettings, SpeakerPlan, speaker_plan};
use tabby_ipam::{Block, BlockAffinity};
use tabby_model::bgp_peer::SecretKeyRef;
use tabby_model::{IpPool, Node};
use tabby_speaker::control::{NeighborStatus, RouteStatus, Summary};

use crate::finding::Unavailable;

/// Everything doctor looks at on one node.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The node's name (its Node resource).
    pub node: String,
    /// Resources and IPAM state from the datastore.
    pub cluster: Result<ClusterState, Unavailable>,
    /// The agent's sessions and routes, from its control socket.
    pub agent: Result<AgentState, Unavailable>,
    /// The kernel's main routing table.
    pub kernel: Result<KernelState, Unavailable>,
    /// Forwarding and reverse-path filter settings.
    pub sysctls: Result<Sysctls, Unavailable>,
}

impl Snapshot {
    /// The parts that could not be gathered.
    pub fn unchecked(&self) -> Vec<Unavailable> {
        [
            self.cluster.as_ref().err(),
            self.agent.as_ref().err(),
            self.kernel.as_ref().err(),
            self.sysctls.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }
}

/// What the datastore holds.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// Nodes, BGPConfigurations, BGPPeers, BGPFilters.
    pub resources: BgpResources,
    /// Every IPPool.
    pub pools: Vec<IpPool>,
    /// Every IPAM block.
    pub blocks: Vec<Block>,
    /// Every node's block affinities.
    pub affinities: Vec<BlockAffinity>,
    /// `tabby ipam check`'s report, or why it could not run.
    pub ipam: Option<Result<tabby_ipam::Report, String>>,
}

/// Doctor never reads secrets: a password reference is assumed to resolve,
/// so a peer with a password is planned like the agent plans it.
struct SecretsAssumed;

impl tabby_agent::peers::SecretSource for SecretsAssumed {
    fn password(&self, _secret: &SecretKeyRef) -> Result<String, String> {
        Ok("doctor-does-not-read-secrets".to_owned())
    }
}

impl ClusterState {
    /// The Node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.resources
            .nodes
            .iter()
            .find(|n| n.metadata.name == name)
    }

    /// A node's BGP addresses (IPv4 first).
    pub fn addresses(node: &Node) -> Vec<IpAddr> {
        node.spec
            .bgp
            .as_ref()
            .map(|b| {
                b.ipv4_address
                    .iter()
                    .chain(b.ipv6_address.iter())
                    .map(|a| a.addr)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The node whose BGP address is `addr`.
    pub fn node_at(&self, addr: IpAddr) -> Option<&Node> {
        self.resources
            .nodes
            .iter()
            .find(|n| Self::addresses(n).contains(&addr))
    }

    /// The speaker configuration the agent of `node` computes.
    pub fn plan(&self, node: &str) -> Result<SpeakerPlan, PlanError> {
        let settings = PlanSettings {
            node: node.to_owned(),
            control_socket: PathBuf::from("/dev/null"),
            fib: true,
            graceful_restart: true,
        };
        speaker_plan(&self.resources, &settings, &SecretsAssumed)
    }

    /// What `node` announces (blocks, borrowed addresses, service CIDRs).
    pub fn exports(&self, node: &str) -> NodeExports {
        node_exports(
            node,
            &self.pools,
            &self.blocks,
            &self.affinities,
            &self.resources.default_configuration(),
        )
    }

    /// The pool containing `ip`: an enabled one first.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&IpPool> {
        let mut hits: Vec<&IpPool> = self
            .pools
            .iter()
            .filter(|p| p.spec.cidr.net().contains(&ip))
            .collect();
        hits.sort_by_key(|p| p.spec.disabled);
        hits.first().copied()
    }

    /// The block containing `ip`.
    pub fn block_of(&self, ip: IpAddr) -> Option<&Block> {
        self.blocks.iter().find(|b| b.cidr.contains(&ip))
    }

    /// True when `net` lies inside some pool.
    pub fn in_a_pool(&self, net: &IpNet) -> bool {
        self.pools.iter().any(|p| p.spec.cidr.net().contains(net))
    }
}

/// What the agent's speaker reports.
#[derive(Debug, Clone, Default)]
pub struct AgentState {
    /// Every configured neighbour and its session.
    pub neighbors: Vec<NeighborStatus>,
    /// The Loc-RIB, every path.
    pub routes: Vec<RouteStatus>,
    /// The speaker's AS and router id, when it answered.
    pub summary: Option<Summary>,
}

impl AgentState {
    /// The neighbour at `addr`.
    pub fn neighbor(&self, addr: IpAddr) -> Option<&NeighborStatus> {
        self.neighbors.iter().find(|n| n.address == addr)
    }
}

/// The kernel's main routing table and interfaces.
#[derive(Debug, Clone, Default)]
pub struct KernelState {
    /// Every IPv4 and IPv6 route of the main table.
    pub routes: Vec<KernelRoute>,
    /// Every interface of the namespace.
    pub links: Vec<KernelLink>,
    /// tabby's NAT table (`inet tabby-nat`); `None` when nft could not be
    /// asked.
    pub nat: Option<NatTable>,
}

/// What tabby's nftables NAT table holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatTable {
    /// The table exists.
    pub present: bool,
    /// Source prefixes it masquerades (sets `masq-v4`, `masq-v6`).
    pub masquerade: Vec<IpNet>,
}

impl NatTable {
    /// Reads `nft list table inet tabby-nat` output: the elements of the
    /// `masq-v4` and `masq-v6` sets (single addresses become /32 or /128;
    /// ranges are skipped).
    pub fn parse(text: &str) -> NatTable {
        let mut masquerade = Vec::new();
        let mut in_masq = false;
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with("set ") {
                in_masq = l.starts_with("set masq-v4") || l.starts_with("set masq-v6");
                continue;
            }
            if !in_masq {
                continue;
            }
            if let Some(rest) = l.strip_prefix("elements = {") {
                let body = rest.trim_end_matches('}');
                for e in body.split(',') {
                    let e = e.trim().trim_end_matches('}').trim();
                    if let Ok(n) = e.parse::<IpNet>() {
                        masquerade.push(n);
                    } else if let Ok(ip) = e.parse::<IpAddr>() {
                        masquerade.push(IpNet::from(ip));
                    }
                }
            }
            if l == "}" {
                in_masq = false;
            }
        }
        NatTable {
            present: true,
            masquerade,
        }
    }
}

/// One interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelLink {
    /// Its name.
    pub name: String,
    /// Its kind (`veth`, `vxlan`, `ipip`, ...), `None` for physical ones.
    pub kind: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Operationally up (`IFF_RUNNING`): a candidate of the MTU detection.
    pub running: bool,
    /// Its addresses with their prefix lengths.
    pub addresses: Vec<IpNet>,
}

impl KernelState {
    /// The interface named `name`.
    pub fn link(&self, name: &str) -> Option<&KernelLink> {
        self.links.iter().find(|l| l.name == name)
    }

    /// True when an interface holds `ip`.
    pub fn has_address(&self, ip: IpAddr) -> bool {
        self.links
            .iter()
            .any(|l| l.addresses.iter().any(|a| a.addr() == ip))
    }

    /// Routes whose destination is exactly `net`.
    pub fn exact(&self, net: &IpNet) -> Vec<&KernelRoute> {
        self.routes
            .iter()
            .filter(|r| r.destination == *net)
            .collect()
    }

    /// The route the kernel picks for `ip` (longest prefix, then lowest
    /// metric is not modelled: the first of the longest).
    pub fn lookup(&self, ip: IpAddr) -> Option<&KernelRoute> {
        self.routes
            .iter()
            .filter(|r| r.destination.contains(&ip))
            .max_by_key(|r| r.destination.prefix_len())
    }
}

/// What a kernel route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelRouteKind {
    /// Forwards.
    Unicast,
    /// Drops silently.
    Blackhole,
    /// Drops with an ICMP error (unreachable, prohibit).
    Reject,
    /// Anything else.
    Other,
}

/// One next hop of a kernel route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelNextHop {
    /// The gateway, if any.
    pub gateway: Option<IpAddr>,
    /// The outgoing interface's name, if known.
    pub device: Option<String>,
}

/// One kernel route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    /// Destination.
    pub destination: IpNet,
    /// Kernel protocol number (201 is tabby's).
    pub protocol: u8,
    /// Unicast or a drop.
    pub kind: KernelRouteKind,
    /// Next hops of a unicast route.
    pub next_hops: Vec<KernelNextHop>,
}

impl KernelRoute {
    /// True for a route tabby made.
    pub fn is_tabby(&self) -> bool {
        self.protocol == tabby_dataplane::TABBY_PROTOCOL
    }

    /// The route as `ip route` prints it.
    pub fn describe(&self) -> String {
        let mut s = match self.kind {
            KernelRouteKind::Blackhole => format!("blackhole {}", self.destination),
            KernelRouteKind::Reject => format!("unreachable {}", self.destination),
            _ => self.destination.to_string(),
        };
        for h in &self.next_hops {
            if let Some(g) = h.gateway {
                s.push_str(&format!(" via {g}"));
            }
            if let Some(d) = &h.device {
                s.push_str(&format!(" dev {d}"));
            }
        }
        s.push_str(&format!(" proto {}", protocol_name(self.protocol)));
        s
    }
}

/// The name `ip route` uses for a protocol number.
pub fn protocol_name(p: u8) -> String {
    match p {
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        12 => "bird".into(),
        16 => "dhcp".into(),
        186 => "bgp".into(),
        188 => "ospf".into(),
        196 => "static (FRR)".into(),
        201 => "tabby".into(),
        n => n.to_string(),
    }
}

/// Kernel parameters of the node's network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sysctls {
    /// `net.ipv4.ip_forward`.
    pub ipv4_forward: Option<bool>,
    /// `net.ipv6.conf.all.forwarding`.
    pub ipv6_forward: Option<bool>,
    /// `net.ipv4.conf.<if>.rp_filter` for `all`, `default` and every interface.
    pub rp_filter: BTreeMap<String, u8>,
}

impl Sysctls {
    /// The mode the kernel applies on `interface`: the greater of
    /// `conf.all` and `conf.<interface>` (Linux's rule for rp_filter).
    pub fn effective_rp_filter(&self, interface: &str) -> Option<u8> {
        let all = self.rp_filter.get("all").copied();
        let one = self.rp_filter.get(interface).copied();
        match (all, one) {
            (None, None) => None,
            (a, o) => Some(a.unwrap_or(0).max(o.unwrap_or(0))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// nft's output is read, never trusted.
        #[test]
        fn any_nft_text_parses(text in "(set masq-v4 \\{\n|elements = \\{ |[0-9./:, a-f]{0,40}|\\}\n|\n){0,12}") {
            let t = NatTable::parse(&text);
            proptest::prop_assert!(t.present);
        }

        /// `--route` arguments: any string is an answer or a typed error.
        #[test]
        fn any_route_argument_parses_or_is_refused(text in ".{0,40}") {
            let _ = text.parse::<crate::route::RouteTarget>();
        }
    }
}
