//! `tabby doctor --route ADDRESS|CIDR`: why this node has or has not got
//! a route to a pod address, one step at a time, as a network engineer
//! would look: which pool, which block, which node holds its affinity (or
//! borrowed the address), whether that node announces it (pools with
//! `disableBGPExport`, an unconfirmed affinity), whether a session and the
//! BGPFilters on both ends let it through, whether the agent's RIB has it
//! with a reachable next hop, and whether the kernel has it as
//! `proto tabby` or a route of another protocol wins.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tabby_agent::peers::SpeakerPlan;
use tabby_bgp::attribute::PathAttributes;
use tabby_bgp::policy::{PeerType, RouteContext, RouteSource, Verdict};
use tabby_model::Node;
use tabby_speaker::config::PeerConfig;
use tabby_speaker::control::NeighborStatus;

use crate::checks::IPAM_FIX;
use crate::finding::{Check, Finding, Severity, Status, Unavailable};
use crate::session::{LocalSide, bgppeers_toward, explain_session};
use crate::snapshot::{ClusterState, KernelRouteKind, Snapshot};

/// What `--route` asks about: an address (as a /32 or /128) or a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTarget {
    /// The prefix.
    pub net: IpNet,
    /// True when given as a bare address.
    pub address: bool,
}

/// Why a `--route` argument is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteTargetError {
    /// Neither an address nor a CIDR.
    #[error("--route {0:?}: not an IP address or CIDR (10.244.1.5, 10.244.1.0/26)")]
    Syntax(String),
    /// A CIDR with host bits set.
    #[error("--route {given}: host bits set, did you mean {network}?")]
    HostBits {
        /// What was given.
        given: String,
        /// The network.
        network: IpNet,
    },
}

impl FromStr for RouteTarget {
    type Err = RouteTargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(RouteTarget {
                net: IpNet::from(ip),
                address: true,
            });
        }
        let net: IpNet = s
            .parse()
            .map_err(|_| RouteTargetError::Syntax(s.to_owned()))?;
        if net.trunc() != net {
            return Err(RouteTargetError::HostBits {
                given: s.to_owned(),
                network: net.trunc(),
            });
        }
        Ok(RouteTarget {
            net,
            address: false,
        })
    }
}

impl std::fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.address {
            write!(f, "{}", self.net.addr())
        } else {
            write!(f, "{}", self.net)
        }
    }
}

/// How one step came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// As it should be.
    Ok,
    /// Where the route is lost.
    Problem,
    /// Context.
    Note,
}

/// One step of the explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceStep {
    /// `pool`, `block`, `owner`, `export`, `session`, `rib`, `kernel`.
    pub stage: String,
    /// How it came out.
    pub status: StepStatus,
    /// What doctor saw.
    pub text: String,
}

/// The answer to `--route`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteReport {
    /// The node asked about.
    pub node: String,
    /// The address or prefix.
    pub target: String,
    /// The outcome (exit status).
    pub status: Status,
    /// True when the kernel routes the target the way tabby intends.
    pub present: bool,
    /// One line: the route, or where it is lost.
    pub verdict: String,
    /// The steps, in order.
    pub trace: Vec<TraceStep>,
    /// The problems found on the way, with their fixes.
    pub findings: Vec<Finding>,
    /// Parts that could not be checked.
    pub unchecked: Vec<Unavailable>,
}

#[derive(Default)]
struct Trace {
    steps: Vec<TraceStep>,
    findings: Vec<Finding>,
}

impl Trace {
    fn step(&mut self, stage: &str, status: StepStatus, text: String) {
        self.steps.push(TraceStep {
            stage: stage.to_owned(),
            status,
            text,
        });
    }

    fn ok(&mut self, stage: &str, text: String) {
        self.step(stage, StepStatus::Ok, text);
    }

    fn note(&mut self, stage: &str, text: String) {
        self.step(stage, StepStatus::Note, text);
    }

    fn problem(&mut self, stage: &str, f: Finding) {
        self.step(stage, StepStatus::Problem, f.problem.clone());
        self.findings.push(f);
    }

    /// The problem of a route that the BGPFilter `by` rejects at `stage`
    /// (`import`, `export`): `what` says what happens to the route (it
    /// comes first so that it may borrow `by`), `rules`
    /// which rule lists to change (` (importV4/importV6)`, or empty).
    fn filtered(&mut self, stage: &str, what: String, by: String, rules: &str) {
        let fix = format!("change the rule{rules} in {by} or remove the filter from the BGPPeer");
        self.problem(
            stage,
            Finding::new(
                Severity::Error,
                Check::RouteFiltered,
                by,
                what,
                "the first matching BGPFilter rule decides; a Reject rule matches this prefix",
                fix,
            ),
        );
    }
}

pub(crate) fn to_prefix(net: &IpNet) -> Option<tabby_bgp::Prefix> {
    tabby_bgp::Prefix::new(net.addr(), net.prefix_len()).ok()
}

/// Which BGPFilter of the BGPPeers `names` rejects `prefix` (export or
/// import), as `BGPFilter f (on BGPPeer p)`.
pub(crate) fn rejecting_filter(
    c: &ClusterState,
    names: &[String],
    prefix: tabby_bgp::Prefix,
    source: RouteSource,
    peer_type: PeerType,
    export: bool,
) -> Option<String> {
    let attrs = PathAttributes::default();
    let ctx = RouteContext {
        prefix,
        attrs: &attrs,
        source,
        peer_type,
    };
    for bp in names {
        let Some(peer) = c.resources.peers.iter().find(|p| p.metadata.name == *bp) else {
            continue;
        };
        for fname in &peer.spec.filters {
            let Some(f) = c
                .resources
                .filters
                .iter()
                .find(|f| f.metadata.name == *fname)
            else {
                continue;
            };
            let (v4, v6) = if export {
                (&f.spec.export_v4, &f.spec.export_v6)
            } else {
                (&f.spec.import_v4, &f.spec.import_v6)
            };
            let rules: Vec<_> = v4
                .iter()
                .chain(v6.iter())
                .filter_map(|r| tabby_agent::peers::filter_rule(r).ok())
                .collect();
            if tabby_speaker::config::policy(&rules).evaluate(&ctx) == Verdict::Reject {
                return Some(format!("BGPFilter {fname} (on BGPPeer {bp})"));
            }
        }
    }
    None
}

/// True when `rules` (a peer's import or export list) reject `prefix`.
/// True when `peers` is not empty and the policy `rules_of` picks (import
/// or export) of every one of them, on a node in AS `local_as`, rejects
/// `prefix` from `source`.
fn every_policy_rejects(
    peers: &[&PeerConfig],
    local_as: u32,
    prefix: tabby_bgp::Prefix,
    source: RouteSource,
    rules_of: impl Fn(&PeerConfig) -> &[tabby_bgp::policy::Rule],
) -> bool {
    !peers.is_empty()
        && peers.iter().all(|p| {
            let peer_type = if p.as_number != local_as {
                PeerType::Ebgp
            } else {
                PeerType::Ibgp
            };
            rejects(rules_of(p), prefix, source, peer_type)
        })
}

pub(crate) fn rejects(
    rules: &[tabby_bgp::policy::Rule],
    prefix: tabby_bgp::Prefix,
    source: RouteSource,
    peer_type: PeerType,
) -> bool {
    let attrs = PathAttributes::default();
    let ctx = RouteContext {
        prefix,
        attrs: &attrs,
        source,
        peer_type,
    };
    tabby_speaker::config::policy(rules).evaluate(&ctx) == Verdict::Reject
}

fn peer_toward<'p>(plan: &'p SpeakerPlan, node: &Node, family_v4: bool) -> Option<&'p PeerConfig> {
    let addrs = ClusterState::addresses(node);
    plan.config
        .peers
        .iter()
        .find(|p| addrs.contains(&p.address) && p.address.is_ipv4() == family_v4)
}

/// The peers of a plan that can pass a route on: routers (not cluster
/// nodes) and route-reflector nodes (a plain node never passes on what it
/// learned), as `address (AS n)` or `address (route reflector node)`.
/// Why this node's session `n` is down, seen from this node (`me` in AS
/// `my_as`, whose plan says which peers it waits for).
fn explain_from_here(
    n: &NeighborStatus,
    c: &ClusterState,
    me: &Node,
    my_as: u32,
    my_plan: &SpeakerPlan,
) -> Finding {
    let passive = |a: IpAddr| {
        my_plan
            .config
            .peers
            .iter()
            .any(|p| p.address == a && p.passive)
    };
    let local = LocalSide {
        node: me,
        as_number: my_as,
        passive_toward: &passive,
    };
    explain_session(n, Some(c), Some(&local))
}

fn carriers(c: &ClusterState, plan: &SpeakerPlan) -> Vec<(IpAddr, String)> {
    plan.config
        .peers
        .iter()
        .filter_map(|p| match c.node_at(p.address) {
            None => Some((p.address, format!("{} (AS {})", p.address, p.as_number))),
            Some(n)
                if n.spec
                    .bgp
                    .as_ref()
                    .and_then(|b| b.route_reflector_cluster_id.as_deref())
                    .is_some_and(|id| !id.is_empty()) =>
            {
                Some((
                    p.address,
                    format!("{} (route reflector {})", p.address, n.metadata.name),
                ))
            }
            Some(_) => None,
        })
        .collect()
}

/// Explains this node's route to `target`.
pub fn explain_route(s: &Snapshot, target: &RouteTarget) -> RouteReport {
    if let Ok(c) = &s.cluster
        && !target.address
        && c.blocks
            .iter()
            .any(|b| target.net.contains(&b.cidr) && b.cidr.prefix_len() > target.net.prefix_len())
    {
        return explain_span(s, c, target);
    }
    let mut t = Trace::default();
    let ip = target.net.addr();
    let cluster = s.cluster.as_ref().ok();
    // The prefix tabby should install for the target, when known.
    let mut expected: Option<IpNet> = None;
    let mut local = false;
    let mut unallocated = false;
    let mut routers = Vec::new();
    let mut vxlan = false;
    if let Some(c) = cluster {
        let up = upstream(&mut t, c, s, target);
        (expected, local, unallocated, routers, vxlan) =
            (up.expected, up.local, up.unallocated, up.routers, up.vxlan);
    }
    // Not learned, but the routers in front of this node may carry it.
    let mut via_routers = false;
    let expected_net = expected.unwrap_or(target.net);
    let mut rib_ok = false;
    if vxlan {
        // The agent routes VXLAN pools from the datastore, as Felix does.
        rib_ok = true;
    } else if !local && let Ok(agent) = &s.agent {
        let paths: Vec<_> = agent
            .routes
            .iter()
            .filter(|r| r.peer.is_some())
            .filter(|r| {
                r.prefix.parse::<IpNet>().is_ok_and(|n| {
                    if expected.is_some() {
                        n == expected_net
                    } else {
                        n.contains(&ip)
                    }
                })
            })
            .collect();
        if let Some(best) = paths.iter().find(|p| p.best && !p.unresolved) {
            rib_ok = true;
            t.ok(
                "rib",
                format!(
                    "in the RIB: {} via {} from {} (best)",
                    best.prefix,
                    best.next_hop
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    best.peer.map_or_else(|| "-".to_owned(), |n| n.to_string())
                ),
            );
        } else if let Some(p) = paths.iter().find(|p| p.unresolved) {
            let nh = p
                .next_hop
                .map_or_else(|| "none".to_owned(), |n| n.to_string());
            t.problem(
                "rib",
                Finding::new(
                    Severity::Error,
                    Check::NextHopUnreachable,
                    format!("route {}", p.prefix),
                    format!("{} is in the RIB with next hop {nh}, which this node cannot reach, so it is not used", p.prefix),
                    "the next hop is not on a connected subnet and no kernel route leads to it (seed 003: mesh peers behind different leaves)",
                    format!("peer with the router in front of {nh} (a BGPPeer with its peerIP, and nodeToNodeMeshEnabled: false), or add a route toward {nh}"),
                ),
            );
        } else if t.findings.is_empty() && !routers.is_empty() {
            via_routers = true;
            t.note(
                "rib",
                format!("{expected_net} is not in this node's RIB: with no direct session, the routers carry it"),
            );
        } else if t.findings.is_empty() {
            t.problem(
                "rib",
                Finding::new(
                    Severity::Error,
                    Check::RouteNotLearned,
                    format!("route {expected_net}"),
                    format!("this node has not learned {expected_net}"),
                    "its owner announces it and nothing doctor can see rejects it: a router in between may filter it, or the session has only just come up",
                    format!("look along the path: `tabby bgp --socket ... routes` on the owner, `show bgp {expected_net}` on the routers between"),
                ),
            );
        } else {
            t.note(
                "rib",
                format!("{expected_net} is not in this node's RIB (see above)"),
            );
        }
    }
    let mut present = false;
    let local_block = local && !target.address;
    if let Ok(k) = &s.kernel
        && local_block
    {
        // A local block as a whole: its blackhole (the step above says
        // when it is missing); each pod has its own /32.
        if let Some(r) = k
            .exact(&expected_net)
            .into_iter()
            .find(|r| r.is_tabby() && r.kind == KernelRouteKind::Blackhole)
        {
            present = true;
            t.ok(
                "kernel",
                format!(
                    "{}: the block's drop route; its pods have /32 routes of their own",
                    r.describe()
                ),
            );
        }
    } else if let Ok(k) = &s.kernel {
        match k.lookup(ip) {
            Some(r) if r.is_tabby() && r.kind != KernelRouteKind::Blackhole => {
                present = true;
                t.ok(
                    "kernel",
                    format!("{} (what packets to {ip} take)", r.describe()),
                );
            }
            Some(r)
                if r.is_tabby()
                    && r.kind == KernelRouteKind::Blackhole
                    && local
                    && (!target.address || unallocated) =>
            {
                present = true;
                t.ok(
                    "kernel",
                    if target.address {
                        format!("{}: dropped here, as no pod has the address", r.describe())
                    } else {
                        format!(
                            "{}: the block's drop route; its pods have /32 routes of their own",
                            r.describe()
                        )
                    },
                );
            }
            Some(r) if !r.is_tabby() && r.destination.prefix_len() >= expected_net.prefix_len() => {
                t.problem(
                    "kernel",
                    Finding::new(
                        Severity::Error,
                        Check::RouteShadowed,
                        format!("kernel route {}", r.destination),
                        format!("packets to {ip} take `{}`, not tabby's route", r.describe()),
                        format!("a route of another protocol as specific as {expected_net} or more wins the lookup; tabby never replaces it"),
                        format!("ip route del {} proto {} if it is stale", r.destination, r.protocol),
                    ),
                );
            }
            Some(r)
                if via_routers
                    && r.kind == KernelRouteKind::Unicast
                    && r.next_hops
                        .iter()
                        .any(|h| h.gateway.is_some_and(|g| routers.contains(&g))) =>
            {
                present = true;
                t.ok(
                    "kernel",
                    format!(
                        "packets to {ip} take `{}` to a router this node peers with; from there the routers' tables decide (show ip route {expected_net} there)",
                        r.describe()
                    ),
                );
            }
            other => {
                let follows = other.map_or_else(
                    || "no route at all".to_owned(),
                    |r| format!("`{}`", r.describe()),
                );
                if via_routers {
                    let peers: Vec<String> = routers.iter().map(IpAddr::to_string).collect();
                    t.problem(
                        "kernel",
                        Finding::new(
                            Severity::Error,
                            Check::RouteNotLearned,
                            format!("route {expected_net}"),
                            format!(
                                "this node has not learned {expected_net}, and packets to {ip} follow {follows}, not one of its routers ({})",
                                peers.join(", ")
                            ),
                            "with no direct session the route must come from the routers, or a default route must lead to them",
                            format!(
                                "have the routers announce the pod blocks (or a default) to this node, or route the pool toward {}",
                                peers.join(" / ")
                            ),
                        ),
                    );
                } else if rib_ok || local {
                    t.problem(
                        "kernel",
                        Finding::new(
                            Severity::Error,
                            if local { Check::PodRoute } else { Check::RouteNotInKernel },
                            format!("route {expected_net}"),
                            format!("the kernel has no tabby route for {ip}: packets follow {follows}"),
                            if local {
                                "the pod's host route is made by CNI ADD; it is missing when ADD did not finish or the pod's veth was deleted"
                            } else if vxlan {
                                "the agent programs a VXLAN pool's routes from the datastore (via vxlan.calico, or natively inside the subnet with CrossSubnet)"
                            } else {
                                "the speaker's FIB sync has not installed the best path"
                            },
                            if local {
                                format!("recreate the pod (CNI DEL then ADD); `tabby ipam show --ip {ip}` shows who holds the address")
                            } else if vxlan {
                                "check that `tabby agent` runs here and its log for 'vxlan'; the owner needs its VTEP (spec.ipv4VXLANTunnelAddr, vxlanTunnelMACAddr on its Node)".to_owned()
                            } else {
                                "look at the agent's log for FIB errors; `ip route show proto tabby`".to_owned()
                            },
                        ),
                    );
                } else {
                    t.note(
                        "kernel",
                        format!("no tabby route for {ip}: packets follow {follows}"),
                    );
                }
            }
        }
    }
    let unchecked = s.unchecked();
    let verdict = if present && t.findings.is_empty() {
        format!("node {} routes {target}", s.node)
    } else if let Some(f) = t.findings.first() {
        format!(
            "route to {target} {}: {}",
            if present { "present, but" } else { "missing" },
            f.problem
        )
    } else {
        format!("route to {target}: could not be established from what was gathered")
    };
    let mut status = Status::of(&t.findings, &unchecked);
    if !present && status == Status::Healthy {
        status = Status::Incomplete;
    }
    RouteReport {
        node: s.node.clone(),
        target: target.to_string(),
        status,
        present,
        verdict,
        trace: t.steps,
        findings: t.findings,
        unchecked,
    }
}

/// A prefix wider than a block (a pool, say): one line per block inside
/// it, with its owner and whether this node routes it.
fn explain_span(s: &Snapshot, c: &ClusterState, target: &RouteTarget) -> RouteReport {
    let mut t = Trace::default();
    let mut blocks: Vec<_> = c
        .blocks
        .iter()
        .filter(|b| target.net.contains(&b.cidr))
        .collect();
    blocks.sort_by_key(|b| b.cidr);
    let mut unrouted = Vec::new();
    for b in &blocks {
        let owner = b.host().unwrap_or("no node");
        // Each block explained on its own, the way `--route BLOCK` does.
        let one = explain_route(
            s,
            &RouteTarget {
                net: b.cidr,
                address: false,
            },
        );
        let how = one
            .trace
            .iter()
            .rev()
            .find(|st| st.stage == "kernel")
            .map_or_else(|| one.verdict.clone(), |st| st.text.clone());
        if one.present && one.findings.is_empty() {
            t.ok("block", format!("{} (node {owner}): {how}", b.cidr));
        } else {
            unrouted.push(b.cidr.to_string());
            let why = one
                .findings
                .first()
                .map_or_else(|| one.verdict.clone(), |f| f.problem.clone());
            t.step(
                "block",
                StepStatus::Problem,
                format!("{} (node {owner}): {why}", b.cidr),
            );
        }
    }
    if !unrouted.is_empty() {
        let first = unrouted[0].clone();
        t.findings.push(Finding::new(
            Severity::Warning,
            Check::RouteNotLearned,
            format!("{target}"),
            format!(
                "{} of the {} blocks in {target} are not routed here: {}",
                unrouted.len(),
                blocks.len(),
                unrouted.join(", ")
            ),
            "each line above gives the first reason; the explanation of one block has them all",
            format!("tabby doctor --route {first}"),
        ));
    }
    let unchecked = s.unchecked();
    let present = unrouted.is_empty() && s.kernel.is_ok();
    RouteReport {
        node: s.node.clone(),
        target: target.to_string(),
        status: Status::of(&t.findings, &unchecked),
        present,
        verdict: if present {
            format!(
                "node {} routes each of the {} blocks in {target}",
                s.node,
                blocks.len()
            )
        } else {
            format!(
                "{} of the {} blocks in {target} are not routed on node {}",
                unrouted.len(),
                blocks.len(),
                s.node
            )
        },
        trace: t.steps,
        findings: t.findings,
        unchecked,
    }
}

/// What the steps before the RIB found.
#[derive(Default)]
struct Upstream {
    /// The prefix that should carry the target.
    expected: Option<IpNet>,
    /// The target is in a block of this node.
    local: bool,
    /// The target is an address no pod holds.
    unallocated: bool,
    /// With no direct session toward the owner: this node's routers.
    routers: Vec<IpAddr>,
    /// The pool is VXLAN: its routes come from the datastore, not BGP.
    vxlan: bool,
}

impl Upstream {
    fn remote(expected: IpNet) -> Upstream {
        Upstream {
            expected: Some(expected),
            ..Upstream::default()
        }
    }
}

/// Pool, block, owner, export and session steps.
fn upstream(t: &mut Trace, c: &ClusterState, s: &Snapshot, target: &RouteTarget) -> Upstream {
    let ip = target.net.addr();
    match c.pool_of(ip) {
        Some(p) => {
            let mut flags = Vec::new();
            if p.spec.disabled {
                flags.push("disabled");
            }
            if p.spec.disable_bgp_export {
                flags.push("disableBGPExport");
            }
            t.ok(
                "pool",
                format!(
                    "IPPool {} ({}){}",
                    p.metadata.name,
                    p.spec.cidr.net(),
                    if flags.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", flags.join(", "))
                    }
                ),
            );
        }
        None => {
            t.problem(
                "pool",
                Finding::new(
                    Severity::Warning,
                    Check::RouteUnallocated,
                    format!("{ip}"),
                    format!("{ip} is in no IPPool: tabby does not route it"),
                    "tabby announces and installs only pool blocks (and service CIDRs)",
                    "check the address (kubectl get pod -o wide) and the pools (tabby get ippools)",
                ),
            );
            return Upstream::default();
        }
    }
    let Some(block) = c.block_of(ip) else {
        t.problem(
            "block",
            Finding::new(
                Severity::Warning,
                Check::RouteUnallocated,
                format!("{ip}"),
                format!("no IPAM block holds {ip}: no pod has this address"),
                "a block is claimed when a node's first pod in it is created; no route exists for addresses of no block",
                format!("check the pod's address; `tabby ipam show --ip {ip}`"),
            ),
        );
        return Upstream::default();
    };
    let owner = block.host().map(str::to_owned);
    let affinity = owner.as_deref().and_then(|o| {
        c.affinities
            .iter()
            .find(|a| a.host == o && a.cidr.trunc() == block.cidr)
            .map(|a| a.state)
    });
    t.ok(
        "block",
        format!(
            "block {}, affine to {}{}",
            block.cidr,
            owner
                .as_deref()
                .map_or_else(|| "no node".to_owned(), |o| format!("node {o}")),
            affinity.map_or_else(String::new, |a| format!(" ({})", a.as_str()))
        ),
    );
    let mut holder = owner.clone();
    let mut expected = block.cidr;
    let mut unallocated = false;
    if target.address {
        match block.allocation(ip) {
            Some((attr, _)) => {
                let borrower = attr
                    .secondary
                    .get("node")
                    .filter(|n| Some(*n) != owner.as_ref());
                let pod = match (attr.secondary.get("namespace"), attr.secondary.get("pod")) {
                    (Some(ns), Some(p)) => format!(" by pod {ns}/{p}"),
                    _ => attr
                        .handle_id
                        .as_deref()
                        .map_or_else(String::new, |h| format!(" to handle {h}")),
                };
                if let Some(b) = borrower {
                    t.note(
                        "owner",
                        format!(
                            "{ip} is borrowed{pod} by node {b}: it announces {ip}/{}",
                            target.net.prefix_len()
                        ),
                    );
                    holder = Some(b.clone());
                    expected = target.net;
                } else {
                    t.ok("owner", format!("{ip} is allocated{pod}"));
                }
            }
            None => {
                unallocated = true;
                t.note(
                    "owner",
                    format!(
                        "{ip} is not allocated (no pod has it); the block route still covers it"
                    ),
                );
            }
        }
    }
    let Some(holder) = holder else {
        t.problem(
            "owner",
            Finding::new(
                Severity::Warning,
                Check::RouteNotExported,
                format!("block {}", block.cidr),
                format!(
                    "block {} is affine to no node, so nobody announces it",
                    block.cidr
                ),
                "an affinity was released while addresses remain",
                IPAM_FIX,
            ),
        );
        return Upstream::remote(expected);
    };
    if holder == s.node {
        local_steps(t, s, block.cidr);
        return Upstream {
            expected: Some(expected),
            local: true,
            unallocated,
            routers: Vec::new(),
            vxlan: false,
        };
    }
    let Some(h) = c.node(&holder) else {
        t.problem(
            "owner",
            Finding::new(
                Severity::Error,
                Check::RouteNotExported,
                format!("Node {holder}"),
                format!("{expected} belongs to node {holder}, which has no Node resource"),
                "a deleted node's blocks are announced by nobody",
                IPAM_FIX,
            ),
        );
        return Upstream::remote(expected);
    };
    // VXLAN pools are routed by the agent from the datastore (the owner's
    // VTEP), not by BGP.
    if let Some(pool) = c
        .pool_of(ip)
        .filter(|p| p.spec.vxlan_mode() != tabby_model::EncapMode::Never && !p.spec.cidr.is_ipv6())
    {
        let vtep = h.spec.ipv4_vxlan_tunnel_addr.map(|a| a.0);
        match vtep {
            Some(v) => t.ok(
                "vxlan",
                format!(
                    "IPPool {} is vxlanMode {}: the agent routes {expected} from the datastore to node {holder}'s VTEP {v}, no BGP needed",
                    pool.metadata.name,
                    pool.spec.vxlan_mode().as_str()
                ),
            ),
            None => t.problem(
                "vxlan",
                Finding::new(
                    Severity::Error,
                    Check::Encapsulation,
                    format!("Node {holder} spec.ipv4VXLANTunnelAddr"),
                    format!("node {holder} has no VXLAN tunnel address, so no node can route {expected} to it"),
                    "the owner's agent allocates its VTEP address from a VXLAN pool when it starts and whenever the pools change",
                    format!("check that node {holder}'s agent runs and its log for 'tunnel address'"),
                ),
            ),
        }
        return Upstream {
            vxlan: true,
            ..Upstream::remote(expected)
        };
    }
    // Does the holder announce it?
    let exports = c.exports(&holder);
    if exports.originate.contains(&expected) {
        t.ok("export", format!("node {holder} announces {expected}"));
    } else if let Some(pool) = c
        .pools
        .iter()
        .find(|p| p.spec.disable_bgp_export && p.spec.cidr.net().contains(&expected))
    {
        let name = &pool.metadata.name;
        t.problem(
            "export",
            Finding::new(
                Severity::Error,
                Check::RouteNotExported,
                format!("IPPool {name}"),
                format!("node {holder} does not announce {expected}: IPPool {name} has disableBGPExport: true"),
                "blocks of a pool with disableBGPExport are never advertised, so no other node or router learns a route to its pods",
                format!("tabby patch ippool {name} -p '{{\"spec\":{{\"disableBGPExport\":false}}}}' (or route {} by other means)", pool.spec.cidr.net()),
            ),
        );
        return Upstream::remote(expected);
    } else {
        let state = c
            .affinities
            .iter()
            .find(|a| a.host == holder && a.cidr.trunc() == block.cidr)
            .map(|a| a.state.as_str());
        t.problem(
            "export",
            Finding::new(
                Severity::Error,
                Check::RouteNotExported,
                format!("block {}", block.cidr),
                format!(
                    "node {holder} does not announce {expected}: its affinity for block {} is {}",
                    block.cidr,
                    state.unwrap_or("missing")
                ),
                "a node announces only blocks whose affinity is confirmed (an interrupted claim leaves it pending)",
                IPAM_FIX,
            ),
        );
        return Upstream::remote(expected);
    }
    let routers = sessions_steps(t, c, s, h, expected);
    Upstream {
        routers,
        ..Upstream::remote(expected)
    }
}

fn local_steps(t: &mut Trace, s: &Snapshot, block: IpNet) {
    t.note(
        "local",
        format!("block {block} is this node's: its pods are routed locally"),
    );
    let Ok(k) = &s.kernel else { return };
    if k.exact(&block)
        .iter()
        .any(|r| r.is_tabby() && r.kind == KernelRouteKind::Blackhole)
    {
        t.ok("blackhole", format!("blackhole {block} proto tabby"));
    } else {
        t.problem(
            "blackhole",
            Finding::new(
                Severity::Error,
                Check::Blackhole,
                format!("block {block}"),
                format!("local block {block} has no blackhole route"),
                "traffic to unused addresses of the block follows the default route and loops",
                "check that `tabby agent` runs here; it adds the blackhole when it reconciles",
            ),
        );
    }
}

/// The session steps; returns this node's routers when only they can
/// carry the route (no direct session with the owner).
fn sessions_steps(
    t: &mut Trace,
    c: &ClusterState,
    s: &Snapshot,
    h: &Node,
    expected: IpNet,
) -> Vec<IpAddr> {
    let holder = &h.metadata.name;
    let Some(me) = c.node(&s.node) else {
        t.note(
            "session",
            format!("node {} is not registered: sessions not checked", s.node),
        );
        return Vec::new();
    };
    let (Ok(my_plan), Ok(h_plan)) = (c.plan(&s.node), c.plan(holder)) else {
        t.note(
            "session",
            "a BGP configuration could not be computed (see `tabby doctor`)".to_owned(),
        );
        return Vec::new();
    };
    let Some(prefix) = to_prefix(&expected) else {
        return Vec::new();
    };
    let v4 = expected.addr().is_ipv4();
    let h_as = h_plan.config.as_number;
    let my_as = my_plan.config.as_number;
    if let Some(mine) = peer_toward(&my_plan, h, v4) {
        // The holder's export toward us, then our import from it.
        if let Some(theirs) = peer_toward(&h_plan, me, v4) {
            let pt = if theirs.as_number != h_as {
                PeerType::Ebgp
            } else {
                PeerType::Ibgp
            };
            if rejects(&theirs.export, prefix, RouteSource::Local, pt) {
                let my_addr = theirs.address;
                let by = rejecting_filter(
                    c,
                    &bgppeers_toward(c, h, my_addr),
                    prefix,
                    RouteSource::Local,
                    pt,
                    true,
                )
                .unwrap_or_else(|| "an export filter".to_owned());
                t.filtered(
                    "export",
                    format!("node {holder} does not send {expected} to this node: {by} rejects it on export"),
                    by,
                    " (exportV4/exportV6)",
                );
                return Vec::new();
            }
        }
        let pt = if mine.as_number != my_as {
            PeerType::Ebgp
        } else {
            PeerType::Ibgp
        };
        if rejects(&mine.import, prefix, RouteSource::RemotePeers, pt) {
            let by = rejecting_filter(
                c,
                &bgppeers_toward(c, me, mine.address),
                prefix,
                RouteSource::RemotePeers,
                pt,
                false,
            )
            .unwrap_or_else(|| "an import filter".to_owned());
            t.filtered(
                "import",
                format!("this node drops {expected} from node {holder}: {by} rejects it on import"),
                by,
                " (importV4/importV6)",
            );
            return Vec::new();
        }
        let kind = my_plan
            .origins
            .get(&mine.address)
            .map_or("configured", |o| o.as_str());
        match &s.agent {
            Ok(agent) => match agent.neighbor(mine.address) {
                Some(n) if n.state == "Established" => {
                    t.ok(
                        "session",
                        format!(
                            "session with node {holder} ({}, {kind}) Established",
                            mine.address
                        ),
                    );
                }
                Some(n) => {
                    t.problem("session", explain_from_here(n, c, me, my_as, &my_plan));
                }
                None => t.note(
                    "session",
                    format!("the agent has no session with {} yet", mine.address),
                ),
            },
            Err(_) => t.note(
                "session",
                format!(
                    "session with node {holder} ({}, {kind}): agent not reachable",
                    mine.address
                ),
            ),
        }
        return Vec::new();
    }
    // No direct session: only routers or route reflectors can carry it.
    let my_addrs = ClusterState::addresses(me);
    let theirs: Vec<(IpAddr, String)> = carriers(c, &h_plan)
        .into_iter()
        .filter(|(a, _)| !my_addrs.contains(a))
        .collect();
    let h_addrs = ClusterState::addresses(h);
    let mut ours: Vec<(IpAddr, String)> = carriers(c, &my_plan)
        .into_iter()
        .filter(|(a, _)| !h_addrs.contains(a))
        .collect();
    if theirs.is_empty() || ours.is_empty() {
        let who = if theirs.is_empty() {
            format!("node {holder}")
        } else {
            format!("this node ({})", s.node)
        };
        t.problem(
            "session",
            Finding::new(
                Severity::Error,
                Check::RouteNoPath,
                format!("Node {holder}"),
                format!("no session can carry {expected} here: no direct session with node {holder}, and {who} peers with no router or route reflector"),
                "with the mesh off (or for a route reflector), routes between nodes travel only through BGPPeers, and a plain node never passes on what it learned",
                "set nodeToNodeMeshEnabled: true, or give both nodes a BGPPeer to their router (nodeSelector, peerIP, asNumber)",
            ),
        );
        return Vec::new();
    }
    // This node's own sessions toward them: at least one must be up.
    if let Ok(agent) = &s.agent {
        let up: Vec<(IpAddr, String)> = ours
            .iter()
            .filter(|(a, _)| agent.neighbor(*a).is_some_and(|n| n.state == "Established"))
            .cloned()
            .collect();
        if up.is_empty() {
            let down = ours.iter().find_map(|(a, _)| agent.neighbor(*a));
            match down {
                Some(n) => {
                    let mut f = explain_from_here(n, c, me, my_as, &my_plan);
                    f.problem = format!(
                        "{expected} can only come through routers or reflectors, and no session with them is up: {}",
                        f.problem
                    );
                    t.problem("session", f);
                }
                None => t.note(
                    "session",
                    "the agent has no session with the routers yet".to_owned(),
                ),
            }
            return Vec::new();
        }
        ours = up;
    }
    // This node's import from each of them.
    let imports: Vec<&PeerConfig> = my_plan
        .config
        .peers
        .iter()
        .filter(|p| p.address.is_ipv4() == v4 && ours.iter().any(|(a, _)| *a == p.address))
        .collect();
    if every_policy_rejects(&imports, my_as, prefix, RouteSource::RemotePeers, |p| {
        &p.import
    }) {
        let names: Vec<String> = imports
            .iter()
            .flat_map(|p| bgppeers_toward(c, me, p.address))
            .collect();
        let by = rejecting_filter(
            c,
            &names,
            prefix,
            RouteSource::RemotePeers,
            PeerType::Ebgp,
            false,
        )
        .or_else(|| {
            rejecting_filter(
                c,
                &names,
                prefix,
                RouteSource::RemotePeers,
                PeerType::Ibgp,
                false,
            )
        })
        .unwrap_or_else(|| "an import filter".to_owned());
        t.filtered(
            "import",
            format!("this node drops {expected} from its routers: {by} rejects it on import"),
            by,
            " (importV4/importV6)",
        );
        return Vec::new();
    }
    // The holder's export toward each of its routers.
    let toward: Vec<&PeerConfig> = h_plan
        .config
        .peers
        .iter()
        .filter(|p| p.address.is_ipv4() == v4 && theirs.iter().any(|(a, _)| *a == p.address))
        .collect();
    if every_policy_rejects(&toward, h_as, prefix, RouteSource::Local, |p| &p.export) {
        let names: Vec<String> = toward
            .iter()
            .flat_map(|p| bgppeers_toward(c, h, p.address))
            .collect();
        let by = rejecting_filter(c, &names, prefix, RouteSource::Local, PeerType::Ebgp, true)
            .or_else(|| {
                rejecting_filter(c, &names, prefix, RouteSource::Local, PeerType::Ibgp, true)
            })
            .unwrap_or_else(|| "an export filter".to_owned());
        t.filtered(
            "export",
            format!("node {holder} sends {expected} to none of its routers: {by} rejects it"),
            by,
            "",
        );
        return Vec::new();
    }
    t.note(
        "session",
        format!(
            "no direct session with node {holder}: {expected} comes through routers or reflectors (node {holder} peers with {}; this node with {})",
            theirs.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>().join(", "),
            ours.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>().join(", ")
        ),
    );
    ours.into_iter().map(|(a, _)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::tests::{
        TWO_NODES, agent, doc, filter, healthy, healthy_with, kernel, kroute, mesh_off, neighbor,
        peer, rib, two_nodes_and,
    };

    fn target(s: &str) -> RouteTarget {
        s.parse().expect("target")
    }

    /// The report's finding of `check`; panics with the report if none.
    fn finding(r: &RouteReport, check: Check) -> &Finding {
        r.findings
            .iter()
            .find(|f| f.check == check)
            .unwrap_or_else(|| panic!("no {check:?} finding: {r:#?}"))
    }

    #[test]
    fn targets_parse() {
        assert!(target("10.244.2.5").address);
        assert_eq!(target("10.244.2.0/26").net.to_string(), "10.244.2.0/26");
        assert!(matches!(
            "10.244.2.5/26".parse::<RouteTarget>(),
            Err(RouteTargetError::HostBits { .. })
        ));
        assert!(matches!(
            "nope".parse::<RouteTarget>(),
            Err(RouteTargetError::Syntax(_))
        ));
    }

    #[test]
    fn a_present_route_is_explained_step_by_step() {
        let r = explain_route(&healthy(), &target("10.244.2.0/26"));
        assert!(r.present, "{r:#?}");
        assert_eq!(r.status, Status::Healthy, "{r:#?}");
        let stages: Vec<&str> = r.trace.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(
            stages,
            ["pool", "block", "export", "session", "rib", "kernel"],
            "{r:#?}"
        );
        assert!(r.trace[3].text.contains("node-to-node mesh"), "{r:#?}");
        assert!(r.verdict.contains("routes 10.244.2.0/26"), "{r:#?}");
    }

    #[test]
    fn a_pool_with_disable_bgp_export_is_named() {
        let yaml = TWO_NODES.replace(
            "spec: {cidr: 10.244.0.0/16}",
            "spec: {cidr: 10.244.0.0/16, disableBGPExport: true}",
        );
        let mut s = healthy_with(&yaml);
        agent(&mut s).routes.truncate(1);
        kernel(&mut s).routes.truncate(2);
        let r = explain_route(&s, &target("10.244.2.0/26"));
        assert!(!r.present);
        assert_eq!(r.status, Status::Problems);
        let f = &r.findings[0];
        assert_eq!(f.check, Check::RouteNotExported);
        assert_eq!(f.subject, "IPPool pods");
        assert!(f.problem.contains("disableBGPExport: true"), "{f:?}");
        assert!(f.fix.contains("tabby patch ippool pods"), "{f:?}");
        assert!(r.verdict.contains("missing"), "{r:#?}");
    }

    #[test]
    fn an_export_filter_is_named() {
        let yaml = two_nodes_and(&[
            mesh_off(),
            filter(
                "no-pods",
                "{exportV4: [{action: Reject, matchOperator: In, cidr: 10.244.0.0/16}]}",
            ),
            peer(
                "b-to-a",
                "{node: b, peerIP: 10.0.0.1, asNumber: 64512, filters: [no-pods]}",
            ),
            peer("a-to-b", "{node: a, peerIP: 10.0.0.2, asNumber: 64512}"),
        ]);
        let mut s = healthy_with(&yaml);
        let a = agent(&mut s);
        a.routes.truncate(1);
        let r = explain_route(&s, &target("10.244.2.9"));
        let f = finding(&r, Check::RouteFiltered);
        assert!(
            f.subject.contains("BGPFilter no-pods (on BGPPeer b-to-a)"),
            "{f:?}"
        );
    }

    #[test]
    fn no_session_toward_anyone_that_carries_it() {
        let yaml = two_nodes_and(&[
            mesh_off(),
            peer("a-tor", "{node: a, peerIP: 10.0.0.254, asNumber: 65000}"),
        ]);
        let mut s = healthy_with(&yaml);
        agent(&mut s).routes.truncate(1);
        let r = explain_route(&s, &target("10.244.2.9"));
        let f = finding(&r, Check::RouteNoPath);
        assert!(f.problem.contains("node b peers with no router"), "{f:?}");
    }

    #[test]
    fn unreachable_next_hop_and_shadowing_routes() {
        let mut s = healthy();
        agent(&mut s).routes[1] = rib("10.244.2.0/26", Some("10.0.0.2"), "10.3.33.1", true);
        kernel(&mut s).routes.remove(2);
        let r = explain_route(&s, &target("10.244.2.9"));
        assert!(
            r.findings
                .iter()
                .any(|f| f.check == Check::NextHopUnreachable),
            "{r:#?}"
        );

        let mut s = healthy();
        kernel(&mut s).routes.push(kroute(
            "10.244.2.0/27",
            4,
            KernelRouteKind::Unicast,
            &[("10.0.0.9", "eth0")],
        ));
        let r = explain_route(&s, &target("10.244.2.9"));
        let f = finding(&r, Check::RouteShadowed);
        assert!(f.problem.contains("proto static"), "{f:?}");
        assert!(!r.present);
    }

    #[test]
    fn an_address_in_no_pool_or_block() {
        let r = explain_route(&healthy(), &target("192.0.2.1"));
        assert_eq!(r.findings[0].check, Check::RouteUnallocated);
        let r = explain_route(&healthy(), &target("10.244.9.1"));
        assert!(r.findings[0].problem.contains("no IPAM block"), "{r:#?}");
    }

    #[test]
    fn a_local_block_is_routed_here() {
        let r = explain_route(&healthy(), &target("10.244.1.0/26"));
        assert!(r.present, "{r:#?}");
        assert!(
            r.trace
                .iter()
                .any(|s| s.stage == "blackhole" && s.status == StepStatus::Ok),
            "{r:#?}"
        );
        // A free address of the block: the blackhole is the right answer.
        let r = explain_route(&healthy(), &target("10.244.1.7"));
        assert!(r.present && r.findings.is_empty(), "{r:#?}");
    }

    #[test]
    fn a_local_pod_needs_its_host_route() {
        let mut s = healthy();
        if let Ok(c) = &mut s.cluster {
            let attr = tabby_ipam::AllocationAttribute {
                handle_id: Some("k8s-pod-network.p".into()),
                secondary: [
                    ("namespace".to_owned(), "default".to_owned()),
                    ("pod".to_owned(), "web".to_owned()),
                ]
                .into(),
            };
            assert!(c.blocks[0].assign_ip("10.244.1.5".parse().expect("ip"), attr));
        }
        let r = explain_route(&s, &target("10.244.1.5"));
        let f = finding(&r, Check::PodRoute);
        assert!(f.fix.contains("recreate the pod"), "{f:?}");
        assert!(
            r.trace
                .iter()
                .any(|s| s.text.contains("allocated by pod default/web")),
            "{r:#?}"
        );
        kernel(&mut s).routes.push(kroute(
            "10.244.1.5/32",
            201,
            KernelRouteKind::Unicast,
            &[("", "tby0")],
        ));
        let r = explain_route(&s, &target("10.244.1.5"));
        assert!(r.present && r.findings.is_empty(), "{r:#?}");
    }

    #[test]
    fn behind_routers_a_default_toward_them_is_enough() {
        // Seed 003: mesh off, each node peers with its own leaf; the leaves
        // route the blocks among themselves, the node goes by its default.
        let yaml = two_nodes_and(&[
            mesh_off(),
            peer("a-leaf", "{node: a, peerIP: 10.0.0.253, asNumber: 65011}"),
            peer("b-leaf", "{node: b, peerIP: 10.0.0.254, asNumber: 65012}"),
        ]);
        let mut s = healthy_with(&yaml);
        let a = agent(&mut s);
        a.neighbors[0] = neighbor("10.0.0.253", 65011, "Established", None);
        a.routes.truncate(1);
        let k = kernel(&mut s);
        k.routes.truncate(2);
        k.routes.push(kroute(
            "0.0.0.0/0",
            3,
            KernelRouteKind::Unicast,
            &[("10.0.0.253", "eth0")],
        ));
        let r = explain_route(&s, &target("10.244.2.9"));
        assert!(r.present, "{r:#?}");
        assert_eq!(r.status, Status::Healthy, "{r:#?}");
        assert!(
            r.trace
                .iter()
                .any(|s| s.stage == "session"
                    && s.text.contains("comes through routers or reflectors")),
            "{r:#?}"
        );
        // A default toward something else: not learned, and not sent to a router.
        let k = kernel(&mut s);
        k.routes.pop();
        k.routes.push(kroute(
            "0.0.0.0/0",
            3,
            KernelRouteKind::Unicast,
            &[("10.0.0.99", "eth0")],
        ));
        let r = explain_route(&s, &target("10.244.2.9"));
        assert!(!r.present, "{r:#?}");
        let f = finding(&r, Check::RouteNotLearned);
        assert!(
            f.problem.contains("not one of its routers (10.0.0.253)"),
            "{f:?}"
        );
    }

    #[test]
    fn a_route_reflector_node_carries_it() {
        let yaml = two_nodes_and(&[
            doc(
                "Node",
                "{name: r, labels: {route-reflector: 'true'}}",
                "{bgp: {ipv4Address: 10.0.0.3/24, routeReflectorClusterID: 244.0.0.1}}",
            ),
            mesh_off(),
            peer(
                "to-rr",
                "{nodeSelector: \"!has(route-reflector)\", peerSelector: route-reflector == 'true'}",
            ),
        ]);
        let mut s = healthy_with(&yaml);
        let a = agent(&mut s);
        a.neighbors[0] = neighbor("10.0.0.3", 64512, "Established", None);
        a.routes[1] = rib("10.244.2.0/26", Some("10.0.0.3"), "10.0.0.2", false);
        let r = explain_route(&s, &target("10.244.2.9"));
        assert!(r.present && r.findings.is_empty(), "{r:#?}");
        assert!(
            r.trace
                .iter()
                .any(|s| s.text.contains("10.0.0.3 (route reflector r)")),
            "{r:#?}"
        );
    }

    #[test]
    fn behind_routers_with_every_router_session_down() {
        let yaml = two_nodes_and(&[
            mesh_off(),
            peer("a-leaf", "{node: a, peerIP: 10.0.0.253, asNumber: 65011}"),
            peer("b-leaf", "{node: b, peerIP: 10.0.0.254, asNumber: 65012}"),
        ]);
        let mut s = healthy_with(&yaml);
        let a = agent(&mut s);
        a.neighbors[0] = neighbor(
            "10.0.0.253",
            65011,
            "Idle",
            Some("received NOTIFICATION 6/2 (Cease / Administrative Shutdown)"),
        );
        a.routes.truncate(1);
        let k = kernel(&mut s);
        k.routes.truncate(2);
        k.routes.push(kroute(
            "0.0.0.0/0",
            3,
            KernelRouteKind::Unicast,
            &[("10.0.0.253", "eth0")],
        ));
        let r = explain_route(&s, &target("10.244.2.9"));
        assert!(!r.present, "{r:#?}");
        let f = finding(&r, Check::SessionDown);
        assert!(f.problem.contains("no session with them is up"), "{f:?}");
        assert!(f.subject.contains("BGPPeer a-leaf"), "{f:?}");
    }

    #[test]
    fn a_vxlan_pool_is_routed_from_the_datastore() {
        let yaml = TWO_NODES
            .replace(
                "spec: {cidr: 10.244.0.0/16}",
                "spec: {cidr: 10.244.0.0/16, vxlanMode: Always}",
            )
            .replace(
                "spec: {bgp: {ipv4Address: 10.0.0.2/24}}",
                "spec: {bgp: {ipv4Address: 10.0.0.2/24}, ipv4VXLANTunnelAddr: 10.244.2.0}",
            );
        let mut s = healthy_with(&yaml);
        let a = agent(&mut s);
        a.neighbors.clear();
        a.routes.truncate(1);
        kernel(&mut s).routes[2] = kroute(
            "10.244.2.0/26",
            201,
            KernelRouteKind::Unicast,
            &[("10.244.2.0", "vxlan.calico")],
        );
        let r = explain_route(&s, &target("10.244.2.9"));
        assert!(r.present && r.findings.is_empty(), "{r:#?}");
        assert!(
            r.trace
                .iter()
                .any(|s| s.stage == "vxlan" && s.text.contains("VTEP 10.244.2.0")),
            "{r:#?}"
        );
        // Without the owner's VTEP.
        let mut s = healthy_with(&TWO_NODES.replace(
            "spec: {cidr: 10.244.0.0/16}",
            "spec: {cidr: 10.244.0.0/16, vxlanMode: Always}",
        ));
        kernel(&mut s).routes.truncate(2);
        let r = explain_route(&s, &target("10.244.2.9"));
        let f = finding(&r, Check::Encapsulation);
        assert!(f.subject.contains("ipv4VXLANTunnelAddr"), "{f:?}");
    }

    #[test]
    fn a_whole_pool_is_one_line_per_block() {
        let r = explain_route(&healthy(), &target("10.244.0.0/16"));
        assert!(r.present && r.findings.is_empty(), "{r:#?}");
        assert_eq!(r.trace.len(), 2, "{r:#?}");
        assert!(
            r.trace[0]
                .text
                .starts_with("10.244.1.0/26 (node a): blackhole"),
            "{r:#?}"
        );
        let mut s = healthy();
        kernel(&mut s).routes.remove(2);
        let r = explain_route(&s, &target("10.244.0.0/16"));
        assert!(!r.present);
        assert!(
            r.findings[0].problem.contains("1 of the 2 blocks"),
            "{r:#?}"
        );
        assert!(
            r.findings[0].fix.contains("--route 10.244.2.0/26"),
            "{r:#?}"
        );
    }

    #[test]
    fn an_import_filter_toward_the_routers_is_named() {
        let yaml = two_nodes_and(&[
            mesh_off(),
            filter(
                "deaf",
                "{importV4: [{action: Reject, matchOperator: In, cidr: 10.244.0.0/16}]}",
            ),
            peer(
                "a-leaf",
                "{node: a, peerIP: 10.0.0.253, asNumber: 65011, filters: [deaf]}",
            ),
            peer("b-leaf", "{node: b, peerIP: 10.0.0.254, asNumber: 65012}"),
        ]);
        let mut s = healthy_with(&yaml);
        let a = agent(&mut s);
        a.neighbors[0] = neighbor("10.0.0.253", 65011, "Established", None);
        a.routes.truncate(1);
        let r = explain_route(&s, &target("10.244.2.9"));
        let f = finding(&r, Check::RouteFiltered);
        assert_eq!(f.subject, "BGPFilter deaf (on BGPPeer a-leaf)");
        assert!(f.problem.contains("on import"), "{f:?}");
    }
}
