//! The whole-node diagnosis ([`diagnose`]): a pure function from a
//! [`Snapshot`] to a [`Report`]. Each check is a function of its own that
//! adds findings (and a line to `passed` when all is well); the pitfalls
//! they look for are the ones the seeds' operators hit with Calico:
//! sessions that never come up (wrong AS, nobody listening), a node left
//! with no session at all, the mesh kept next to ToR peerings (seed 003),
//! route-reflector cluster ids (seed 004), forwarding and rp_filter
//! (seed 000/002), pools over the node network (seed 004), IPAM leaks,
//! missing blackholes, and learned routes whose next hop does not resolve
//! (seed 003).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tabby_agent::mtu::{EncapsulationsInUse, HostInterface, IfacePattern, MtuPlan, pod_mtu};
use tabby_agent::peers::{PeerOrigin, PlanError, SpeakerPlan};
use tabby_ipam::AffinityState;
use tabby_model::Node;

use crate::finding::{Check, Finding, Report, Severity};
use crate::session::{LocalSide, explain_session};
use crate::snapshot::{AgentState, ClusterState, KernelRouteKind, KernelState, Snapshot, Sysctls};

/// Fix for IPAM problems, shared with the route explanation.
pub const IPAM_FIX: &str = "tabby ipam check -o /tmp/ipam-report.json, then tabby ipam release --from-report /tmp/ipam-report.json";

/// Diagnoses the whole node.
pub fn diagnose(s: &Snapshot) -> Report {
    let mut out = Findings::default();
    let cluster = s.cluster.as_ref().ok();
    let mut me: Option<&Node> = None;
    let mut plan: Option<SpeakerPlan> = None;
    if let Some(c) = cluster {
        let agent_id = s
            .agent
            .as_ref()
            .ok()
            .and_then(|a| a.summary.as_ref())
            .map(|m| m.router_id);
        (me, plan) = registration(&mut out, c, &s.node, agent_id);
        pools(&mut out, c);
        ipam(&mut out, c);
        mesh_with_external_peers(&mut out, c);
        if let (Some(me), Some(plan)) = (me, plan.as_ref()) {
            route_reflectors(&mut out, c, me, plan);
            no_sessions(&mut out, c, me, plan);
        }
    }
    if let Ok(agent) = &s.agent {
        sessions(&mut out, agent, cluster, me, plan.as_ref());
    }
    if let Ok(sys) = &s.sysctls {
        forwarding(&mut out, sys, me);
        if let Ok(k) = &s.kernel {
            rp_filter(&mut out, sys, k);
        }
    }
    if let (Some(c), Ok(k)) = (cluster, &s.kernel) {
        blackholes(&mut out, c, &s.node, k);
        if let Some(me) = me {
            node_address(&mut out, me, k);
            encapsulation(&mut out, c, me, k);
        }
    }
    if let Ok(k) = &s.kernel {
        mtu(&mut out, cluster, k);
        if let Some(c) = cluster {
            nat(&mut out, c, k);
        }
    }
    if let (Some(c), Ok(agent)) = (cluster, &s.agent) {
        announcements(&mut out, c, &s.node, agent);
        if let (Some(me), Some(plan)) = (me, plan.as_ref()) {
            export_filters(&mut out, c, me, plan);
        }
    }
    if let (Ok(agent), Ok(k)) = (&s.agent, &s.kernel) {
        learned_routes(&mut out, cluster, &s.node, agent, k);
    }
    if let (Some(c), Some(me), Ok(k)) = (cluster, me, &s.kernel) {
        vxlan_routes(&mut out, c, me, k);
    }
    Report::new(s.node.clone(), out.findings, out.passed, s.unchecked())
}

/// Findings and passed lines being collected.
#[derive(Default)]
struct Findings {
    findings: Vec<Finding>,
    passed: Vec<String>,
}

impl Findings {
    fn add(&mut self, f: Finding) {
        self.findings.push(f);
    }

    fn pass(&mut self, line: String) {
        self.passed.push(line);
    }
}

fn registration<'c>(
    out: &mut Findings,
    c: &'c ClusterState,
    node: &str,
    agent_router_id: Option<std::net::Ipv4Addr>,
) -> (Option<&'c Node>, Option<SpeakerPlan>) {
    let Some(me) = c.node(node) else {
        // The agent that answered says who it is by its router id.
        let running = agent_router_id
            .and_then(|id| c.node_at(IpAddr::V4(id)))
            .map(|n| n.metadata.name.clone());
        out.add(Finding::new(
            Severity::Error,
            Check::NodeRegistration,
            format!("Node {node}"),
            format!("no Node resource named {node} in the datastore"),
            "the agent registers its node when it starts: it has not run against this datastore, or runs under another --nodename",
            match running {
                Some(r) => format!(
                    "the agent at this socket runs node {r} (its router id is {r}'s address): tabby doctor --nodename {r}"
                ),
                None => format!(
                    "start `tabby agent --nodename {node}` with this datastore, or give doctor the agent's name with --nodename"
                ),
            },
        ));
        return (None, None);
    };
    match c.plan(node) {
        Ok(plan) => {
            for w in &plan.warnings {
                out.add(Finding::new(
                    Severity::Warning,
                    Check::ResourceWarning,
                    "resources",
                    w.clone(),
                    "the agent skips or ignores this setting (its log says the same)",
                    "correct the resource field the message names (tabby get ... -o yaml, tabby apply)",
                ));
            }
            let addrs: Vec<String> = ClusterState::addresses(me)
                .iter()
                .map(IpAddr::to_string)
                .collect();
            out.pass(format!(
                "Node {node} registered: {}, AS {}",
                addrs.join(", "),
                plan.config.as_number
            ));
            (Some(me), Some(plan))
        }
        Err(e) => {
            let fix = match &e {
                PlanError::NoRouterId(_) => format!(
                    "start the agent with --ip ADDRESS/LEN (env IP) or set spec.bgp.ipv4Address on Node {node}"
                ),
                PlanError::BadClusterId { .. } => format!(
                    "set spec.bgp.routeReflectorClusterID on Node {node} to an IPv4 address such as 244.0.0.1, or remove it"
                ),
                _ => format!("start `tabby agent --nodename {node}`"),
            };
            out.add(Finding::new(
                Severity::Error,
                Check::NodeRegistration,
                format!("Node {node}"),
                e.to_string(),
                "the agent cannot compute this node's BGP configuration, so it runs no session",
                fix,
            ));
            (Some(me), None)
        }
    }
}

fn sessions(
    out: &mut Findings,
    agent: &AgentState,
    cluster: Option<&ClusterState>,
    me: Option<&Node>,
    plan: Option<&SpeakerPlan>,
) {
    let passive = |addr: IpAddr| {
        plan.is_some_and(|p| {
            p.config
                .peers
                .iter()
                .any(|peer| peer.address == addr && peer.passive)
        })
    };
    let local = me.map(|node| LocalSide {
        node,
        as_number: plan.map_or_else(
            || cluster.map_or(64512, |c| c.resources.node_as(node)),
            |p| p.config.as_number,
        ),
        passive_toward: &passive,
    });
    let mut up = 0;
    for n in &agent.neighbors {
        if n.state == "Established" {
            up += 1;
            continue;
        }
        if n.graceful_restart.as_deref() == Some("restarting") {
            out.add(Finding::new(
                Severity::Warning,
                Check::SessionDown,
                format!("peer {}", n.address),
                format!("peer {} is restarting (graceful restart)", n.address),
                format!(
                    "its BGP speaker went away; its {} routes are kept (stale) until it is back or the restart time runs out",
                    n.stale_routes
                ),
                format!(
                    "nothing if it comes back; otherwise check the speaker at {}",
                    n.address
                ),
            ));
            continue;
        }
        out.add(explain_session(n, cluster, local.as_ref()));
    }
    for n in agent
        .neighbors
        .iter()
        .filter(|n| n.state == "Established" && n.prefixes_received > n.prefixes_accepted)
    {
        // Only where a BGPFilter is in play: without one, the rejected
        // routes are AS-path loops (this node's AS already in the path),
        // normal when routers send routes back.
        let filters: Vec<String> = match (cluster, me) {
            (Some(c), Some(me)) => {
                let names = crate::session::bgppeers_toward(c, me, n.address);
                c.resources
                    .peers
                    .iter()
                    .filter(|p| names.contains(&p.metadata.name))
                    .flat_map(|p| p.spec.filters.iter().cloned())
                    .collect()
            }
            _ => Vec::new(),
        };
        if filters.is_empty() {
            continue;
        }
        let by = format!(
            "BGPFilter {}, or AS-path loop detection",
            filters.join(", ")
        );
        out.add(Finding::new(
            Severity::Info,
            Check::RouteFiltered,
            format!("peer {}", n.address),
            format!(
                "{} of the {} prefixes received from {} are rejected on import ({by})",
                n.prefixes_received - n.prefixes_accepted,
                n.prefixes_received,
                n.address
            ),
            "the first matching import rule decides; rejected routes are neither used nor installed",
            format!(
                "tabby bgp --socket SOCKET routes shows what was kept; change BGPFilter {} if more should be",
                filters.join(", ")
            ),
        ));
    }
    if !agent.neighbors.is_empty() && up == agent.neighbors.len() {
        out.pass(format!(
            "{up} of {} BGP sessions Established",
            agent.neighbors.len()
        ));
    }
    if let Some(plan) = plan {
        for p in &plan.config.peers {
            if agent.neighbor(p.address).is_none() {
                out.add(Finding::new(
                    Severity::Warning,
                    Check::SessionNotConfigured,
                    format!("peer {}", p.address),
                    format!(
                        "the resources give this node a session with {} (AS {}, {}) but the agent has none",
                        p.address,
                        p.as_number,
                        p.description.as_deref().unwrap_or("configured")
                    ),
                    "the agent has not applied the latest resources, or skipped the peer (a password secret it cannot read, a configuration it refused: its log says which)",
                    "look at the agent's log for 'refusing the generated BGP configuration'; the agent re-reads every 30 s",
                ));
            }
        }
    }
}

fn no_sessions(out: &mut Findings, c: &ClusterState, me: &Node, plan: &SpeakerPlan) {
    if !plan.config.peers.is_empty() {
        return;
    }
    let name = &me.metadata.name;
    let mesh = c
        .resources
        .default_configuration()
        .node_to_node_mesh_enabled();
    let rr = me
        .spec
        .bgp
        .as_ref()
        .and_then(|b| b.route_reflector_cluster_id.as_deref())
        .is_some_and(|s| !s.is_empty());
    let others = c
        .resources
        .nodes
        .iter()
        .filter(|n| n.metadata.name != *name && !ClusterState::addresses(n).is_empty())
        .count();
    if mesh && !rr && others == 0 {
        out.pass(format!(
            "{name} is the only node and has no external peer: no session needed"
        ));
        return;
    }
    let cause = if rr {
        format!(
            "{name} is a route reflector (spec.bgp.routeReflectorClusterID), so it leaves the node-to-node mesh, and no BGPPeer selects it"
        )
    } else if !mesh {
        format!(
            "nodeToNodeMeshEnabled is false in BGPConfiguration default and no BGPPeer selects {name} (by node, nodeSelector or peerSelector)"
        )
    } else {
        "the other nodes have no BGP address of this node's family".to_owned()
    };
    let labels: Vec<String> = me
        .selector_labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    out.add(Finding::new(
        Severity::Error,
        Check::NoSessions,
        format!("Node {name}"),
        format!("{name} has no BGP session: its pods are announced to nobody and it learns no route"),
        cause,
        format!(
            "apply a BGPPeer whose nodeSelector matches {name} (its labels: {}) with the peerIP and asNumber of its router, or set nodeToNodeMeshEnabled: true",
            if labels.is_empty() { "none".to_owned() } else { labels.join(", ") }
        ),
    ));
}

fn mesh_with_external_peers(out: &mut Findings, c: &ClusterState) {
    if !c
        .resources
        .default_configuration()
        .node_to_node_mesh_enabled()
    {
        return;
    }
    let nodes: Vec<&Node> = c
        .resources
        .nodes
        .iter()
        .filter(|n| !ClusterState::addresses(n).is_empty())
        .collect();
    if nodes.len() < 2 {
        return;
    }
    let mut routers = BTreeSet::new();
    for n in &nodes {
        let Ok(plan) = c.plan(&n.metadata.name) else {
            return;
        };
        let external: Vec<IpAddr> = plan
            .config
            .peers
            .iter()
            // eBGP routers (seed 003's ToRs); an iBGP router next to the
            // mesh is a deliberate design (seed 000's reflectors).
            .filter(|p| {
                plan.origins.get(&p.address) != Some(&PeerOrigin::Mesh)
                    && c.node_at(p.address).is_none()
                    && p.as_number != plan.config.as_number
            })
            .map(|p| p.address)
            .collect();
        if external.is_empty() {
            return;
        }
        routers.extend(external);
    }
    let routers: Vec<String> = routers.iter().map(IpAddr::to_string).collect();
    out.add(Finding::new(
        Severity::Info,
        Check::MeshWithExternalPeers,
        "BGPConfiguration default",
        format!(
            "nodeToNodeMeshEnabled is on and every node also peers with an eBGP router ({})",
            routers.join(", ")
        ),
        "with Calico's BIRD this leaks every mesh-learned path to the routers (seed 003: 32 paths for 4 blocks); tabby announces only a node's own blocks (one path per block at the routers), but as the routers carry every block anyway, the mesh sessions are redundant",
        "tabby patch bgpconfiguration default -p '{\"spec\":{\"nodeToNodeMeshEnabled\":false}}'",
    ));
}

fn cluster_id(n: &Node) -> Option<&str> {
    n.spec
        .bgp
        .as_ref()
        .and_then(|b| b.route_reflector_cluster_id.as_deref())
        .filter(|s| !s.is_empty())
}

fn route_reflectors(out: &mut Findings, c: &ClusterState, me: &Node, plan: &SpeakerPlan) {
    let Some(my_id) = cluster_id(me) else {
        return;
    };
    let name = &me.metadata.name;
    let my_as = plan.config.as_number;
    let mut non_clients = Vec::new();
    let mut clients = 0;
    for p in plan.config.peers.iter().filter(|p| p.as_number == my_as) {
        if p.route_reflector_client {
            clients += 1;
        }
        let Some(remote) = c.node_at(p.address) else {
            continue;
        };
        match cluster_id(remote) {
            Some(id) if id != my_id => out.add(Finding::new(
                Severity::Warning,
                Check::RouteReflector,
                format!("Node {} spec.bgp.routeReflectorClusterID", remote.metadata.name),
                format!(
                    "route reflectors {name} (cluster id {my_id}) and {} (cluster id {id}) peer with different cluster ids",
                    remote.metadata.name
                ),
                "a route reflector treats same-AS peers with another cluster id as its clients, so these two reflect everything into each other as clients; the reflectors of one cluster should share an id (seed 004)",
                format!(
                    "tabby patch node {} -p '{{\"spec\":{{\"bgp\":{{\"routeReflectorClusterID\":\"{my_id}\"}}}}}}'",
                    remote.metadata.name
                ),
            )),
            Some(_) => non_clients.push(remote.metadata.name.clone()),
            None => {}
        }
    }
    if clients == 0 && !non_clients.is_empty() {
        out.add(Finding::new(
            Severity::Warning,
            Check::RouteReflector,
            format!("Node {name}"),
            format!(
                "route reflector {name} has no client: its same-AS peers ({}) have its cluster id {my_id} too",
                non_clients.join(", ")
            ),
            "peers with the same cluster id are fellow reflectors, not clients: routes between them are not reflected, so a node meant as a client learns nothing through this reflector",
            "remove routeReflectorClusterID from the nodes meant as clients: tabby patch node NAME -p '{\"spec\":{\"bgp\":{\"routeReflectorClusterID\":\"\"}}}'",
        ));
    }
}

fn forwarding(out: &mut Findings, sys: &Sysctls, me: Option<&Node>) {
    match sys.ipv4_forward {
        Some(false) => out.add(Finding::new(
            Severity::Error,
            Check::Forwarding,
            "sysctl net.ipv4.ip_forward",
            "IPv4 forwarding is off (net.ipv4.ip_forward = 0)",
            "the node drops every packet it should route: to its pods from other nodes and from outside, and from its pods outward",
            "sysctl -w net.ipv4.ip_forward=1, and net.ipv4.ip_forward = 1 in /etc/sysctl.d/ to keep it (the agent turns it on when it starts; something turned it off since)",
        )),
        Some(true) => out.pass("IPv4 forwarding on".to_owned()),
        None => {}
    }
    let v6 = me.is_some_and(|n| ClusterState::addresses(n).iter().any(IpAddr::is_ipv6));
    if v6 && sys.ipv6_forward == Some(false) {
        out.add(Finding::new(
            Severity::Error,
            Check::Forwarding,
            "sysctl net.ipv6.conf.all.forwarding",
            "IPv6 forwarding is off on a node with an IPv6 BGP address",
            "IPv6 pod traffic through this node is dropped",
            "sysctl -w net.ipv6.conf.all.forwarding=1 (and in /etc/sysctl.d/)",
        ));
    }
}

fn rp_filter(out: &mut Findings, sys: &Sysctls, k: &KernelState) {
    let tabby: Vec<_> = k
        .routes
        .iter()
        .filter(|r| {
            r.is_tabby() && r.kind == KernelRouteKind::Unicast && r.destination.addr().is_ipv4()
        })
        .filter(|r| r.next_hops.iter().any(|h| h.gateway.is_some()))
        .collect();
    let devices: BTreeSet<&str> = tabby
        .iter()
        .flat_map(|r| r.next_hops.iter().filter_map(|h| h.device.as_deref()))
        .collect();
    let ecmp = tabby.iter().any(|r| r.next_hops.len() > 1);
    if !(ecmp || devices.len() > 1) {
        return;
    }
    let strict: Vec<&str> = devices
        .iter()
        .copied()
        .filter(|d| sys.effective_rp_filter(d) == Some(1))
        .collect();
    if strict.is_empty() {
        out.pass("rp_filter is not strict on the interfaces routes leave by".to_owned());
        return;
    }
    out.add(Finding::new(
        Severity::Warning,
        Check::RpFilter,
        format!("sysctl net.ipv4.conf.{{all,{}}}.rp_filter", strict.join(",")),
        format!(
            "strict reverse-path filtering (rp_filter = 1) on {} while routes are asymmetric ({})",
            strict.join(", "),
            if ecmp { "ECMP next hops" } else { "routes leave by several interfaces" }
        ),
        "a packet arriving on an interface that is not the best way back to its source is dropped, which asymmetric paths produce",
        format!(
            "sysctl -w net.ipv4.conf.all.rp_filter=2 and net.ipv4.conf.<if>.rp_filter=2 for {} (loose; seed 000 sets 0)",
            strict.join(", ")
        ),
    ));
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn pools(out: &mut Findings, c: &ClusterState) {
    if c.pools.is_empty() {
        out.add(Finding::new(
            Severity::Warning,
            Check::Pools,
            "IPPools",
            "there is no IPPool",
            "pods get no address: CNI ADD fails",
            "tabby apply -f a manifest with an IPPool (spec.cidr, e.g. 10.244.0.0/16)",
        ));
        return;
    }
    let live: Vec<_> = c.pools.iter().filter(|p| !p.spec.disabled).collect();
    let mut bad = false;
    for (i, a) in live.iter().enumerate() {
        for b in &live[i + 1..] {
            if overlaps(&a.spec.cidr.net(), &b.spec.cidr.net()) {
                bad = true;
                out.add(Finding::new(
                    Severity::Error,
                    Check::Pools,
                    format!("IPPool {}", b.metadata.name),
                    format!(
                        "IPPools {} ({}) and {} ({}) overlap",
                        a.metadata.name,
                        a.spec.cidr.net(),
                        b.metadata.name,
                        b.spec.cidr.net()
                    ),
                    "two pools can hand out blocks over the same addresses",
                    format!(
                        "change spec.cidr of one of them, or set spec.disabled: true on IPPool {}",
                        b.metadata.name
                    ),
                ));
            }
        }
    }
    for p in &c.pools {
        let net = p.spec.cidr.net();
        let size = p.spec.block_size();
        if size < net.prefix_len() {
            bad = true;
            out.add(Finding::new(
                Severity::Error,
                Check::Pools,
                format!("IPPool {} spec.blockSize", p.metadata.name),
                format!(
                    "IPPool {}: blocks of /{size} do not fit in {net}",
                    p.metadata.name
                ),
                "no block can be carved out of the pool, so no pod gets an address from it",
                format!(
                    "set spec.blockSize to {} or more, or widen spec.cidr",
                    net.prefix_len()
                ),
            ));
        }
        if p.spec.disabled {
            continue;
        }
        for n in &c.resources.nodes {
            let Some(bgp) = &n.spec.bgp else { continue };
            for a in bgp.ipv4_address.iter().chain(bgp.ipv6_address.iter()) {
                let subnet = a.subnet();
                if overlaps(&net, &subnet) {
                    bad = true;
                    out.add(Finding::new(
                        Severity::Error,
                        Check::Pools,
                        format!("IPPool {}", p.metadata.name),
                        format!(
                            "IPPool {} ({net}) overlaps node {}'s network {subnet}",
                            p.metadata.name, n.metadata.name
                        ),
                        "pod blocks and their blackholes would take over addresses of the node network (seed 004 had to move its pods off the LAN's range)",
                        format!(
                            "give the pool a spec.cidr outside the node networks (create the new pool, then set spec.disabled: true on IPPool {})",
                            p.metadata.name
                        ),
                    ));
                }
            }
        }
    }
    if !bad {
        out.pass(format!(
            "{} IPPool(s), no overlap, blocks fit",
            c.pools.len()
        ));
    }
}

fn ipam(out: &mut Findings, c: &ClusterState) {
    match &c.ipam {
        None => {}
        Some(Err(e)) => out.add(Finding::new(
            Severity::Warning,
            Check::Ipam,
            "IPAM",
            format!("the IPAM check could not run: {e}"),
            "IPAM state could not be read completely",
            "run tabby ipam check to see the error",
        )),
        Some(Ok(report)) => {
            if report.problems.is_empty() {
                out.pass(format!(
                    "IPAM consistent: {} blocks, {} allocated addresses",
                    report.checked.blocks, report.checked.allocations
                ));
                return;
            }
            let mut by_kind: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for p in &report.problems {
                let kind = serde_json::to_value(p)
                    .ok()
                    .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| "problem".to_owned());
                by_kind.entry(kind).or_default().push(p.describe());
            }
            for (kind, items) in by_kind {
                let shown: Vec<&str> = items.iter().take(3).map(String::as_str).collect();
                let more = items.len().saturating_sub(shown.len());
                out.add(Finding::new(
                    Severity::Warning,
                    Check::Ipam,
                    format!("IPAM {kind}"),
                    format!(
                        "{} x {kind}: {}{}",
                        items.len(),
                        shown.join("; "),
                        if more > 0 { format!("; and {more} more") } else { String::new() }
                    ),
                    "addresses or blocks held by nothing (a pod deleted without CNI DEL, an interrupted claim) are lost to new pods; inconsistent records confuse allocation",
                    IPAM_FIX,
                ));
            }
        }
    }
}

fn blackholes(out: &mut Findings, c: &ClusterState, node: &str, k: &KernelState) {
    let mine: Vec<IpNet> = c
        .affinities
        .iter()
        .filter(|a| a.host == node && a.state == AffinityState::Confirmed)
        .map(|a| a.cidr.trunc())
        .collect();
    let mut ok = 0;
    for block in &mine {
        let here = k.exact(block);
        if here
            .iter()
            .any(|r| r.is_tabby() && r.kind == KernelRouteKind::Blackhole)
        {
            ok += 1;
            continue;
        }
        let other = here.iter().find(|r| !r.is_tabby());
        let (cause, fix) = match other {
            Some(r) => (
                format!("the kernel route `{}` holds the prefix; tabby never replaces a route it did not make", r.describe()),
                format!("ip route del {} proto {} (the agent then adds its blackhole)", block, r.protocol),
            ),
            None => (
                "the agent adds it when it reconciles (within a second of a change: a block claimed just now may not have it yet; every 30 s otherwise); without it, traffic to an unused address of the block follows the default route and loops between this node and its router".to_owned(),
                "check that `tabby agent` runs here (tabby node status) and its log for 'blackhole routes'".to_owned(),
            ),
        };
        out.add(Finding::new(
            Severity::Error,
            Check::Blackhole,
            format!("block {block}"),
            format!("local block {block} has no `blackhole {block} proto tabby` route"),
            cause,
            fix,
        ));
    }
    if !mine.is_empty() && ok == mine.len() {
        out.pass(format!(
            "{ok} local block(s), each with its blackhole route"
        ));
    }
}

fn learned_routes(
    out: &mut Findings,
    cluster: Option<&ClusterState>,
    node: &str,
    agent: &AgentState,
    k: &KernelState,
) {
    let local: BTreeSet<IpNet> = cluster
        .map(|c| c.exports(node).blackholes.into_iter().collect())
        .unwrap_or_default();
    let mut by_prefix: BTreeMap<IpNet, Vec<&tabby_speaker::control::RouteStatus>> = BTreeMap::new();
    for r in agent.routes.iter().filter(|r| r.peer.is_some()) {
        if let Ok(net) = r.prefix.parse::<IpNet>() {
            by_prefix.entry(net).or_default().push(r);
        }
    }
    let mut installed = 0;
    for (prefix, paths) in by_prefix {
        if local.contains(&prefix) {
            continue;
        }
        // Pod routes only: service CIDRs of other nodes are not installed.
        if cluster.is_some_and(|c| !c.in_a_pool(&prefix)) {
            continue;
        }
        let usable = paths.iter().find(|p| p.best && !p.unresolved);
        match usable {
            Some(best) => {
                let here = k.exact(&prefix);
                if here
                    .iter()
                    .any(|r| r.is_tabby() && r.kind == KernelRouteKind::Unicast)
                {
                    installed += 1;
                    continue;
                }
                let peer = best.peer.map_or_else(String::new, |p| p.to_string());
                match here.iter().find(|r| !r.is_tabby()) {
                    Some(other) => out.add(Finding::new(
                        Severity::Error,
                        Check::RouteShadowed,
                        format!("route {prefix}"),
                        format!(
                            "{prefix} learned from {peer} is not installed: the kernel route `{}` holds the prefix",
                            other.describe()
                        ),
                        "tabby never replaces a kernel route of another protocol",
                        format!("ip route del {prefix} proto {} if it is stale", other.protocol),
                    )),
                    None => out.add(Finding::new(
                        Severity::Error,
                        Check::RouteNotInKernel,
                        format!("route {prefix}"),
                        format!(
                            "{prefix} is the best path (from {peer}, next hop {}) but the kernel has no `proto tabby` route for it",
                            best.next_hop.map_or_else(|| "none".to_owned(), |n| n.to_string())
                        ),
                        "the speaker's FIB sync has not installed it (it installs best paths whose next hop resolves)",
                        "look at the agent's log for FIB errors; `ip route show proto tabby` shows what is installed",
                    )),
                }
            }
            None => {
                let Some(p) = paths.iter().find(|p| p.unresolved) else {
                    continue;
                };
                let nh = p
                    .next_hop
                    .map_or_else(|| "none".to_owned(), |n| n.to_string());
                let peer = p.peer.map_or_else(String::new, |a| a.to_string());
                out.add(Finding::new(
                    Severity::Error,
                    Check::NextHopUnreachable,
                    format!("route {prefix}"),
                    format!(
                        "{prefix} from {peer} has next hop {nh}, which this node cannot reach, so it is not used"
                    ),
                    "the next hop is not on a connected subnet and no kernel route leads to it (seed 003: mesh peers behind different leaves)",
                    format!(
                        "peer with the router in front of {nh} instead (a BGPPeer with its peerIP, and nodeToNodeMeshEnabled: false), or add a route toward {nh}"
                    ),
                ));
            }
        }
    }
    if installed > 0 {
        out.pass(format!(
            "{installed} learned pod route(s) installed in the kernel (proto tabby)"
        ));
    }
}

fn node_address(out: &mut Findings, me: &Node, k: &KernelState) {
    if k.links.is_empty() {
        return;
    }
    let Some(bgp) = &me.spec.bgp else { return };
    let name = &me.metadata.name;
    for (field, a) in [
        ("ipv4Address", bgp.ipv4_address),
        ("ipv6Address", bgp.ipv6_address),
    ] {
        let Some(a) = a else { continue };
        if k.has_address(a.addr) {
            continue;
        }
        out.add(Finding::new(
            Severity::Error,
            Check::NodeAddress,
            format!("Node {name} spec.bgp.{field}"),
            format!("{name}'s BGP address {} is on none of this node's interfaces", a.addr),
            "the agent registered it from --ip or autodetection (the default route's interface, else the first found); peers then connect to an address this node does not hold, and other nodes send this node's pod traffic there",
            format!(
                "start the agent with --ip ADDRESS/LEN (env IP) or IP_AUTODETECTION_METHOD=interface=NAME or cidr=CIDR; it rewrites spec.bgp.{field}"
            ),
        ));
    }
}

fn encapsulation(out: &mut Findings, c: &ClusterState, me: &Node, k: &KernelState) {
    use tabby_dataplane::encap::{IPIP_DEVICE, VXLAN_DEVICE};
    use tabby_model::EncapMode;
    if k.links.is_empty() {
        return;
    }
    let labels = me.selector_labels();
    // Does this node need a tunnel toward another node in `mode`?
    let my_subnet = me
        .spec
        .bgp
        .as_ref()
        .and_then(|b| b.ipv4_address)
        .map(|a| a.subnet());
    let others: Vec<IpAddr> = c
        .resources
        .nodes
        .iter()
        .filter(|n| n.metadata.name != me.metadata.name)
        .filter_map(|n| n.spec.bgp.as_ref().and_then(|b| b.ipv4_address))
        .map(|a| a.addr)
        .collect();
    let needs = |mode: EncapMode| match mode {
        EncapMode::Never => false,
        EncapMode::Always => !others.is_empty(),
        EncapMode::CrossSubnet => others
            .iter()
            .any(|o| my_subnet.is_none_or(|s| !s.contains(o))),
    };
    for p in c.pools.iter().filter(|p| {
        !p.spec.disabled && !p.spec.cidr.is_ipv6() && p.spec.node_selector().matches(&labels)
    }) {
        let name = &p.metadata.name;
        if needs(p.spec.ipip_mode()) && k.link(IPIP_DEVICE).is_none() {
            out.add(Finding::new(
                Severity::Warning,
                Check::Encapsulation,
                format!("IPPool {name} spec.ipipMode"),
                format!(
                    "IPPool {name} has ipipMode {} but this node has no {IPIP_DEVICE}",
                    p.spec.ipip_mode().as_str()
                ),
                "the kernel lacks IPIP (CONFIG_NET_IPIP; the agent's log says so) or the agent has not made the device: pod traffic is routed natively, which routers that do not know the pod blocks drop",
                format!(
                    "use vxlanMode instead of ipipMode on IPPool {name} (tabby patch ippool {name} -p '{{\"spec\":{{\"ipipMode\":\"Never\",\"vxlanMode\":\"{}\"}}}}'), or a kernel with IPIP (modprobe ipip)",
                    p.spec.ipip_mode().as_str()
                ),
            ));
        }
        if needs(p.spec.vxlan_mode()) && k.link(VXLAN_DEVICE).is_none() {
            out.add(Finding::new(
                Severity::Warning,
                Check::Encapsulation,
                format!("IPPool {name} spec.vxlanMode"),
                format!(
                    "IPPool {name} has vxlanMode {} but this node has no {VXLAN_DEVICE}",
                    p.spec.vxlan_mode().as_str()
                ),
                "the agent makes the device when it reconciles; without it the pool's routes to other nodes are missing",
                "check that `tabby agent` runs here and its log for 'vxlan'",
            ));
        }
    }
}

/// The pod MTU the agent detects on this node (its function, Calico's
/// default interface pattern), when the pools are known.
pub fn detected_mtu(c: &ClusterState, k: &KernelState) -> MtuPlan {
    let interfaces: Vec<HostInterface> = k
        .links
        .iter()
        .map(|l| HostInterface::new(&l.name, l.mtu, l.running))
        .collect();
    pod_mtu(
        &interfaces,
        &IfacePattern::default(),
        EncapsulationsInUse::from_pools(&c.pools),
    )
}

fn mtu(out: &mut Findings, cluster: Option<&ClusterState>, k: &KernelState) {
    let pod_mtu = k
        .links
        .iter()
        .filter(|l| l.name.starts_with("tby"))
        .map(|l| l.mtu)
        .max();
    let Some(pod_mtu) = pod_mtu else { return };
    // Without an interface matching the pattern the agent falls back to
    // Felix's 1460: a guess, not a finding (the path check still runs).
    let detected = cluster
        .map(|c| detected_mtu(c, k))
        .filter(|d| d.host_interface.is_some());
    if let Some(d) = detected.as_ref().filter(|d| pod_mtu > d.pod_mtu) {
        out.add(Finding::new(
            Severity::Warning,
            Check::Mtu,
            "pod MTU",
            format!("pods use MTU {pod_mtu} but this node's pod MTU is {d}"),
            "pod packets larger than the underlay minus the tunnel overhead are fragmented or, with DF set (TCP), dropped unless ICMP 'fragmentation needed' gets back: connections stall",
            format!(
                "leave \"mtu\" out of the CNI network configuration (/etc/cni/net.d) or set it to 0, so the plugin uses the MTU tabby agent detects ({}), or set \"mtu\": {}; then recreate the pods",
                tabby_agent::mtu::DEFAULT_MTU_FILE,
                d.pod_mtu
            ),
        ));
        return;
    }
    let egress = k
        .routes
        .iter()
        .filter(|r| r.is_tabby() && r.kind == KernelRouteKind::Unicast)
        .flat_map(|r| r.next_hops.iter())
        .filter(|h| h.gateway.is_some())
        .filter_map(|h| h.device.as_deref())
        .filter(|d| !d.starts_with("tby"))
        .filter_map(|d| k.link(d))
        .min_by_key(|l| l.mtu);
    let Some(path) = egress else {
        if let Some(d) = detected {
            out.pass(format!("pod MTU {pod_mtu} fits this node's pod MTU {d}"));
        }
        return;
    };
    if pod_mtu <= path.mtu {
        let detected = detected
            .map(|d| format!(" and the detected pod MTU {d}"))
            .unwrap_or_default();
        out.pass(format!(
            "pod MTU {pod_mtu} fits the path to other nodes ({} MTU {}){detected}",
            path.name, path.mtu
        ));
        return;
    }
    out.add(Finding::new(
        Severity::Warning,
        Check::Mtu,
        "pod MTU",
        format!(
            "pods use MTU {pod_mtu} but routes to other nodes leave by {} with MTU {}",
            path.name, path.mtu
        ),
        "pod packets larger than the path are fragmented or, with DF set (TCP), dropped unless ICMP 'fragmentation needed' gets back: connections stall (seed 000 set 1370 over ZeroTier)",
        format!(
            "set \"mtu\": {} in the CNI network configuration (/etc/cni/net.d) and recreate the pods (with \"mtu\" left out the plugin uses what tabby agent detects, {}, which counts only interfaces matching Calico's mtuIfacePattern)",
            path.mtu,
            tabby_agent::mtu::DEFAULT_MTU_FILE
        ),
    ));
}

fn announcements(out: &mut Findings, c: &ClusterState, node: &str, agent: &AgentState) {
    let expected: BTreeSet<IpNet> = c.exports(node).originate.into_iter().collect();
    let actual: BTreeSet<IpNet> = agent
        .routes
        .iter()
        .filter(|r| r.peer.is_none())
        .filter_map(|r| r.prefix.parse().ok())
        .collect();
    let missing: Vec<String> = expected.difference(&actual).map(IpNet::to_string).collect();
    let extra: Vec<String> = actual.difference(&expected).map(IpNet::to_string).collect();
    if !missing.is_empty() {
        out.add(Finding::new(
            Severity::Warning,
            Check::Announcements,
            format!("node {node} announcements"),
            format!("this node should announce {} but its speaker does not", missing.join(", ")),
            "the agent has not applied the latest IPAM state (it re-reads within a second of every datastore change, and every 30 s)",
            "if a pod was just created, run doctor again; otherwise check that `tabby agent` runs and reaches the datastore (its log)",
        ));
    }
    if !extra.is_empty() {
        out.add(Finding::new(
            Severity::Warning,
            Check::Announcements,
            format!("node {node} announcements"),
            format!("this node announces {}, which it should not", extra.join(", ")),
            "a block released, or a pool turned disableBGPExport, that the agent has not applied yet",
            "check that `tabby agent` runs and reaches the datastore (its log)",
        ));
    }
    if missing.is_empty() && extra.is_empty() && !expected.is_empty() {
        out.pass(format!(
            "the speaker announces the {} prefix(es) this node should",
            expected.len()
        ));
    }
}

fn export_filters(out: &mut Findings, c: &ClusterState, me: &Node, plan: &SpeakerPlan) {
    use tabby_bgp::policy::{PeerType, RouteSource};
    let own = c.exports(&me.metadata.name).originate;
    for p in &plan.config.peers {
        let pt = if p.as_number == plan.config.as_number {
            PeerType::Ibgp
        } else {
            PeerType::Ebgp
        };
        let mut kept = Vec::new();
        let mut by = None;
        for net in own
            .iter()
            .filter(|n| n.addr().is_ipv4() == p.address.is_ipv4())
        {
            let Some(prefix) = crate::route::to_prefix(net) else {
                continue;
            };
            if crate::route::rejects(&p.export, prefix, RouteSource::Local, pt) {
                kept.push(net.to_string());
                if by.is_none() {
                    by = crate::route::rejecting_filter(
                        c,
                        &crate::session::bgppeers_toward(c, me, p.address),
                        prefix,
                        RouteSource::Local,
                        pt,
                        true,
                    );
                }
            }
        }
        if kept.is_empty() {
            continue;
        }
        let by = by.unwrap_or_else(|| "an export filter".to_owned());
        out.add(Finding::new(
            Severity::Warning,
            Check::RouteFiltered,
            by.clone(),
            format!(
                "{by} keeps {} from peer {}: it has no route to these pods through this node",
                kept.join(", "),
                p.address
            ),
            "the first matching BGPFilter rule decides, and a Reject rule matches this node's own blocks",
            format!("change the rule (exportV4/exportV6) in {by} if the pods should be reachable from {}", p.address),
        ));
    }
}

fn nat(out: &mut Findings, c: &ClusterState, k: &KernelState) {
    use tabby_dataplane::nat::NAT_TABLE;
    let Some(table) = &k.nat else { return };
    let pools: Vec<_> = c
        .pools
        .iter()
        .filter(|p| p.spec.nat_outgoing && !p.spec.disabled)
        .collect();
    if pools.is_empty() {
        return;
    }
    let mut ok = 0;
    for p in &pools {
        let net = p.spec.cidr.net();
        if table.present && table.masquerade.iter().any(|m| m.contains(&net)) {
            ok += 1;
            continue;
        }
        let name = &p.metadata.name;
        out.add(Finding::new(
            Severity::Error,
            Check::Nat,
            format!("IPPool {name} spec.natOutgoing"),
            if table.present {
                format!("IPPool {name} ({net}) has natOutgoing but the NAT table {NAT_TABLE} does not masquerade it")
            } else {
                format!("IPPool {name} ({net}) has natOutgoing but there is no NAT table {NAT_TABLE}")
            },
            "pod traffic leaving the pools keeps the pod address as source, so replies from outside the cluster never come back",
            "the agent writes the table when the pools change and every 30 s, unless it runs with --no-nat: check its log for 'NAT table' (nft must be installed)",
        ));
    }
    if ok == pools.len() {
        out.pass(format!(
            "NAT table masquerades the {ok} natOutgoing pool(s)"
        ));
    }
}

/// Other nodes' blocks in VXLAN pools: routed by the agent from the
/// datastore toward each owner's VTEP (BGP plays no part).
fn vxlan_routes(out: &mut Findings, c: &ClusterState, me: &Node, k: &KernelState) {
    use tabby_model::EncapMode;
    if me.spec.ipv4_vxlan_tunnel_addr.is_none() {
        return;
    }
    let labels = me.selector_labels();
    let mut ok = 0;
    let mut missing = Vec::new();
    for b in &c.blocks {
        let Some(owner) = b.host() else { continue };
        if owner == me.metadata.name || b.cidr.addr().is_ipv6() {
            continue;
        }
        let Some(pool) = c.pool_of(b.cidr.addr()) else {
            continue;
        };
        if pool.spec.disabled
            || pool.spec.vxlan_mode() == EncapMode::Never
            || !pool.spec.node_selector().matches(&labels)
        {
            continue;
        }
        if c.node(owner)
            .is_none_or(|n| n.spec.ipv4_vxlan_tunnel_addr.is_none())
        {
            continue;
        }
        if k.exact(&b.cidr)
            .iter()
            .any(|r| r.is_tabby() && r.kind == KernelRouteKind::Unicast)
        {
            ok += 1;
        } else {
            missing.push(format!("{} (node {owner})", b.cidr));
        }
    }
    if !missing.is_empty() {
        out.add(Finding::new(
            Severity::Error,
            Check::RouteNotInKernel,
            "VXLAN routes",
            format!("no tabby route for {}", missing.join(", ")),
            "the agent programs a VXLAN pool's routes from the datastore (via vxlan.calico to the owner's VTEP, natively inside the subnet with CrossSubnet); these are missing",
            "check that `tabby agent` runs here and its log for 'vxlan'",
        ));
    } else if ok > 0 {
        out.pass(format!(
            "{ok} VXLAN route(s) to other nodes' blocks installed"
        ));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::finding::{Status, Unavailable};
    use crate::snapshot::{KernelLink, KernelNextHop, KernelRoute};
    use tabby_ipam::{Block, BlockAffinity};
    use tabby_model::{Resource, parse_manifest};
    use tabby_speaker::control::{NeighborStatus, RouteStatus};

    pub(crate) fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// Resources from YAML, plus the given IPAM blocks (owner, cidr).
    pub(crate) fn cluster(yaml: &str, blocks: &[(&str, &str)]) -> ClusterState {
        let mut c = ClusterState::default();
        for e in parse_manifest("test.yaml", yaml).expect("manifest") {
            match e.resource {
                Resource::Node(n) => c.resources.nodes.push(n),
                Resource::BgpConfiguration(b) => c.resources.configurations.push(b),
                Resource::BgpPeer(p) => c.resources.peers.push(p),
                Resource::BgpFilter(f) => c.resources.filters.push(f),
                Resource::IpPool(p) => c.pools.push(p),
                _ => {}
            }
        }
        for (owner, cidr) in blocks {
            c.blocks.push(Block::new(net(cidr), Some(owner)));
            c.affinities.push(BlockAffinity {
                host: (*owner).into(),
                cidr: net(cidr),
                state: AffinityState::Confirmed,
            });
        }
        c.ipam = Some(Ok(tabby_ipam::Report::default()));
        c
    }

    pub(crate) fn neighbor(addr: &str, asn: u32, state: &str, err: Option<&str>) -> NeighborStatus {
        serde_json::from_value(serde_json::json!({
            "address": addr, "port": 179, "asNumber": asn, "sessionType": "iBGP",
            "state": state, "uptimeSecs": 75, "routerId": null, "holdTime": null,
            "lastError": err, "prefixesReceived": 0, "prefixesAccepted": 0,
            "prefixesAdvertised": 0, "routeReflectorClient": false,
            "description": "node-to-node mesh"
        }))
        .expect("neighbor")
    }

    pub(crate) fn rib(prefix: &str, peer: Option<&str>, nh: &str, unresolved: bool) -> RouteStatus {
        serde_json::from_value(serde_json::json!({
            "prefix": prefix, "nextHop": nh, "asPath": "", "origin": "IGP",
            "med": null, "localPref": 100, "communities": [], "largeCommunities": [],
            "originatorId": null, "clusterList": [], "best": !unresolved,
            "unresolved": unresolved, "multipath": false, "peer": peer, "stale": false
        }))
        .expect("route")
    }

    pub(crate) fn kroute(
        dest: &str,
        proto: u8,
        kind: KernelRouteKind,
        via: &[(&str, &str)],
    ) -> KernelRoute {
        KernelRoute {
            destination: net(dest),
            protocol: proto,
            kind,
            next_hops: via
                .iter()
                .map(|(g, d)| KernelNextHop {
                    gateway: (!g.is_empty()).then(|| ip(g)),
                    device: Some((*d).to_owned()),
                })
                .collect(),
        }
    }

    pub(crate) fn link(name: &str, mtu: u32, addrs: &[&str]) -> KernelLink {
        KernelLink {
            name: name.to_owned(),
            kind: None,
            mtu,
            up: true,
            running: true,
            addresses: addrs.iter().map(|a| net(a)).collect(),
        }
    }

    pub(crate) const TWO_NODES: &str = "\
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: a, labels: {rack: r1}}
spec: {bgp: {ipv4Address: 10.0.0.1/24}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: b}
spec: {bgp: {ipv4Address: 10.0.0.2/24}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16}
";

    /// Node a of a healthy two-node mesh.
    pub(crate) fn healthy_with(yaml: &str) -> Snapshot {
        let cluster = cluster(yaml, &[("a", "10.244.1.0/26"), ("b", "10.244.2.0/26")]);
        Snapshot {
            node: "a".into(),
            cluster: Ok(cluster),
            agent: Ok(AgentState {
                neighbors: vec![neighbor("10.0.0.2", 64512, "Established", None)],
                routes: vec![
                    rib("10.244.1.0/26", None, "0.0.0.0", false),
                    rib("10.244.2.0/26", Some("10.0.0.2"), "10.0.0.2", false),
                ],
                summary: None,
            }),
            kernel: Ok(KernelState {
                routes: vec![
                    kroute("10.0.0.0/24", 2, KernelRouteKind::Unicast, &[("", "eth0")]),
                    kroute("10.244.1.0/26", 201, KernelRouteKind::Blackhole, &[]),
                    kroute(
                        "10.244.2.0/26",
                        201,
                        KernelRouteKind::Unicast,
                        &[("10.0.0.2", "eth0")],
                    ),
                ],
                nat: Some(crate::snapshot::NatTable::default()),
                links: vec![
                    link("lo", 65536, &["127.0.0.1/8"]),
                    link("eth0", 1500, &["10.0.0.1/24"]),
                    link("tby0123456789a", 1500, &[]),
                ],
            }),
            sysctls: Ok(Sysctls {
                ipv4_forward: Some(true),
                ipv6_forward: Some(false),
                rp_filter: BTreeMap::from([("all".into(), 0), ("eth0".into(), 1)]),
            }),
        }
    }

    pub(crate) fn healthy() -> Snapshot {
        healthy_with(TWO_NODES)
    }

    /// One more YAML document (after a `---`) of the given kind.
    pub(crate) fn doc(kind: &str, metadata: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {metadata}\nspec: {spec}\n"
        )
    }

    /// [`TWO_NODES`] followed by the given documents.
    pub(crate) fn two_nodes_and(docs: &[String]) -> String {
        format!("{TWO_NODES}{}", docs.concat())
    }

    /// The BGPConfiguration that turns the node-to-node mesh off.
    pub(crate) fn mesh_off() -> String {
        doc(
            "BGPConfiguration",
            "{name: default}",
            "{nodeToNodeMeshEnabled: false}",
        )
    }

    pub(crate) fn peer(name: &str, spec: &str) -> String {
        doc("BGPPeer", &format!("{{name: {name}}}"), spec)
    }

    pub(crate) fn filter(name: &str, spec: &str) -> String {
        doc("BGPFilter", &format!("{{name: {name}}}"), spec)
    }

    /// The snapshot's agent part, which the tests' snapshots always have.
    pub(crate) fn agent(s: &mut Snapshot) -> &mut AgentState {
        s.agent.as_mut().expect("agent part")
    }

    /// The snapshot's kernel part, which the tests' snapshots always have.
    pub(crate) fn kernel(s: &mut Snapshot) -> &mut KernelState {
        s.kernel.as_mut().expect("kernel part")
    }

    /// The snapshot's sysctls, which the tests' snapshots always have.
    pub(crate) fn sysctls(s: &mut Snapshot) -> &mut Sysctls {
        s.sysctls.as_mut().expect("sysctls part")
    }

    fn only(r: &Report, check: Check) -> Finding {
        let f = r.of(check);
        assert_eq!(f.len(), 1, "{check:?}: {:#?}", r.findings);
        f[0].clone()
    }

    #[test]
    fn a_healthy_node_has_no_finding() {
        let r = diagnose(&healthy());
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
        assert_eq!(r.status, Status::Healthy);
        assert!(
            r.passed
                .iter()
                .any(|p| p.contains("1 of 1 BGP sessions Established")),
            "{:?}",
            r.passed
        );
        assert!(
            r.passed.iter().any(|p| p.contains("blackhole")),
            "{:?}",
            r.passed
        );
        assert!(
            r.passed.iter().any(|p| p.contains("1 learned pod route")),
            "{:?}",
            r.passed
        );
    }

    #[test]
    fn unregistered_node() {
        let mut s = healthy();
        s.node = "c".into();
        let f = only(&diagnose(&s), Check::NodeRegistration);
        assert!(f.problem.contains("no Node resource named c"), "{f:?}");
        assert!(f.fix.contains("--nodename c"), "{f:?}");
        // The agent's router id names the node it runs.
        let a = agent(&mut s);
        a.summary = Some(
            serde_json::from_value(serde_json::json!({
                "asNumber": 64512, "routerId": "10.0.0.1", "locRibPrefixes": 2,
                "locRibPaths": 2, "peers": 1, "established": 1, "uptimeSecs": 9,
                "fibRoutes": 1
            }))
            .expect("summary"),
        );
        let f = only(&diagnose(&s), Check::NodeRegistration);
        assert!(f.fix.contains("tabby doctor --nodename a"), "{f:?}");
    }

    #[test]
    fn wrong_as_toward_a_router_names_the_bgppeer_and_the_as() {
        let yaml = two_nodes_and(&[peer("tor", "{peerIP: 10.0.0.254, asNumber: 65002}")]);
        let mut s = healthy_with(&yaml);
        agent(&mut s).neighbors.push(neighbor(
            "10.0.0.254",
            65002,
            "Active",
            Some("sent NOTIFICATION 2/2 (OPEN Message Error / Bad Peer AS): peer AS 65001, expected 65002"),
        ));
        let r = diagnose(&s);
        let f = only(&r, Check::SessionDown);
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.subject.contains("10.0.0.254") && f.subject.contains("BGPPeer tor"),
            "{f:?}"
        );
        assert!(
            f.cause.contains("AS 65001") && f.cause.contains("65002"),
            "{f:?}"
        );
        assert!(
            f.fix.contains("spec.asNumber: 65001 in BGPPeer tor"),
            "{f:?}"
        );
        assert_eq!(r.status, Status::Problems);
    }

    #[test]
    fn router_refusing_our_as_names_the_node_as_field() {
        let yaml = two_nodes_and(&[peer("tor", "{peerIP: 10.0.0.254, asNumber: 65002}")]);
        let mut s = healthy_with(&yaml);
        let a = agent(&mut s);
        a.neighbors.push(neighbor(
            "10.0.0.254",
            65002,
            "Idle",
            Some("received NOTIFICATION 2/2 (OPEN Message Error / Bad Peer AS)"),
        ));
        let f = only(&diagnose(&s), Check::SessionDown);
        assert!(f.cause.contains("this node uses AS 64512"), "{f:?}");
        assert!(f.fix.contains("set Node a spec.bgp.asNumber"), "{f:?}");
        assert!(f.fix.contains("remote-as 64512"), "{f:?}");
    }

    #[test]
    fn mesh_peer_waiting_for_the_other_node() {
        // a (10.0.0.1) is passive toward b (10.0.0.2): b connects.
        let mut s = healthy();
        agent(&mut s).neighbors[0] = neighbor("10.0.0.2", 64512, "Active", None);
        let f = only(&diagnose(&s), Check::SessionDown);
        assert!(f.subject.contains("node b"), "{f:?}");
        assert!(f.cause.contains("waits for 10.0.0.2"), "{f:?}");
        assert!(f.fix.contains("node b's agent"), "{f:?}");
    }

    #[test]
    fn connection_refused_says_nothing_listens() {
        let mut s = healthy();
        agent(&mut s).neighbors[0] = neighbor(
            "10.0.0.2",
            64512,
            "Active",
            Some("connect: Connection refused (os error 111)"),
        );
        let f = only(&diagnose(&s), Check::SessionDown);
        assert!(f.fix.contains("nothing listens on 10.0.0.2:179"), "{f:?}");
    }

    #[test]
    fn a_node_with_no_session_at_all() {
        let yaml = two_nodes_and(&[mesh_off()]);
        let mut s = healthy_with(&yaml);
        let a = agent(&mut s);
        a.neighbors.clear();
        a.routes.truncate(1);
        kernel(&mut s).routes.truncate(2);
        let r = diagnose(&s);
        let f = only(&r, Check::NoSessions);
        assert!(f.cause.contains("nodeToNodeMeshEnabled is false"), "{f:?}");
        assert!(f.fix.contains("rack=r1"), "{f:?}");
        assert!(r.of(Check::SessionNotConfigured).is_empty());
    }

    #[test]
    fn mesh_kept_while_every_node_peers_with_a_router_is_a_note() {
        let yaml = two_nodes_and(&[
            peer("a-tor", "{node: a, peerIP: 10.0.0.253, asNumber: 65011}"),
            peer("b-tor", "{node: b, peerIP: 10.0.0.254, asNumber: 65012}"),
        ]);
        let mut s = healthy_with(&yaml);
        let a = agent(&mut s);
        a.neighbors
            .push(neighbor("10.0.0.253", 65011, "Established", None));
        let r = diagnose(&s);
        let f = only(&r, Check::MeshWithExternalPeers);
        assert_eq!(f.severity, Severity::Info);
        assert!(f.fix.contains("nodeToNodeMeshEnabled\":false"), "{f:?}");
        assert_eq!(r.status, Status::Healthy, "a note is not a problem");
        // Same-AS routers (seed 000's reflectors beside the mesh): no note.
        let ibgp = yaml
            .replace("asNumber: 65011", "asNumber: 64512")
            .replace("asNumber: 65012", "asNumber: 64512");
        let mut s = healthy_with(&ibgp);
        let a = agent(&mut s);
        a.neighbors
            .push(neighbor("10.0.0.253", 64512, "Established", None));
        assert!(diagnose(&s).of(Check::MeshWithExternalPeers).is_empty());
        // Only one node with a router: no note.
        let yaml = two_nodes_and(&[peer(
            "a-tor",
            "{node: a, peerIP: 10.0.0.253, asNumber: 65011}",
        )]);
        let mut s = healthy_with(&yaml);
        agent(&mut s)
            .neighbors
            .push(neighbor("10.0.0.253", 65011, "Established", None));
        assert!(diagnose(&s).of(Check::MeshWithExternalPeers).is_empty());
    }

    #[test]
    fn route_reflectors_with_different_cluster_ids() {
        let yaml = "\
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: a, labels: {route-reflector: 'true'}}
spec: {bgp: {ipv4Address: 10.0.0.1/24, routeReflectorClusterID: 244.0.0.1}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: b, labels: {route-reflector: 'true'}}
spec: {bgp: {ipv4Address: 10.0.0.2/24, routeReflectorClusterID: 244.0.0.2}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rrs}
spec: {nodeSelector: route-reflector == 'true', peerSelector: route-reflector == 'true'}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16}
";
        let f = only(&diagnose(&healthy_with(yaml)), Check::RouteReflector);
        assert!(
            f.problem.contains("244.0.0.1") && f.problem.contains("244.0.0.2"),
            "{f:?}"
        );
        assert!(f.fix.contains("tabby patch node b"), "{f:?}");
        // Same id on both and no client: the RR reflects nothing.
        let same = yaml.replace("244.0.0.2", "244.0.0.1");
        let f = only(&diagnose(&healthy_with(&same)), Check::RouteReflector);
        assert!(f.problem.contains("has no client"), "{f:?}");
    }

    #[test]
    fn forwarding_off() {
        let mut s = healthy();
        sysctls(&mut s).ipv4_forward = Some(false);
        let r = diagnose(&s);
        let f = only(&r, Check::Forwarding);
        assert_eq!(f.subject, "sysctl net.ipv4.ip_forward");
        assert!(f.fix.contains("sysctl -w net.ipv4.ip_forward=1"), "{f:?}");
        assert_eq!(r.status.exit_code(), 1);
    }

    #[test]
    fn strict_rp_filter_with_ecmp() {
        let mut s = healthy();
        kernel(&mut s).routes[2] = kroute(
            "10.244.2.0/26",
            201,
            KernelRouteKind::Unicast,
            &[("10.0.0.2", "eth0"), ("10.0.1.2", "eth1")],
        );
        let f = only(&diagnose(&s), Check::RpFilter);
        assert!(f.problem.contains("eth0"), "{f:?}");
        assert!(f.fix.contains("rp_filter=2"), "{f:?}");
        // Loose on all: the max is 2, not strict.
        sysctls(&mut s).rp_filter.insert("all".into(), 2);
        assert!(diagnose(&s).of(Check::RpFilter).is_empty());
    }

    #[test]
    fn pools_that_overlap_do_not_fit_or_cover_the_node_network() {
        let yaml = two_nodes_and(&[doc(
            "IPPool",
            "{name: lan}",
            "{cidr: 10.0.0.0/16, blockSize: 26}",
        )]);
        let r = diagnose(&healthy_with(&yaml));
        let f = r.of(Check::Pools);
        assert!(
            f.iter()
                .any(|f| f.problem.contains("overlaps node a's network 10.0.0.0/24")),
            "{f:#?}"
        );
        let mut c = cluster(TWO_NODES, &[]);
        let mut small = c.pools[0].clone();
        small.metadata.name = "small".into();
        small.spec.cidr = "10.244.1.0/27".parse().expect("cidr");
        small.spec.block_size = Some(26);
        c.pools.push(small);
        let mut s = healthy();
        s.cluster = Ok(c);
        let r = diagnose(&s);
        let f = r.of(Check::Pools);
        assert!(
            f.iter().any(|f| f.problem.contains("pods")
                && f.problem.contains("small")
                && f.problem.contains("overlap")),
            "{f:#?}"
        );
        assert!(
            f.iter()
                .any(|f| f.problem.contains("blocks of /26 do not fit")),
            "{f:#?}"
        );
    }

    #[test]
    fn ipam_problems_are_grouped_with_the_release_command() {
        let mut s = healthy();
        if let Ok(c) = &mut s.cluster {
            c.ipam = Some(Ok(tabby_ipam::Report {
                problems: vec![tabby_ipam::Problem::LeakedAddress {
                    ip: ip("10.244.1.5"),
                    handle: Some("k8s-pod-network.x".into()),
                    block: net("10.244.1.0/26"),
                    sequence: 3,
                }],
                ..Default::default()
            }));
        }
        let f = only(&diagnose(&s), Check::Ipam);
        assert!(f.problem.contains("1 x leakedAddress: 10.244.1.5"), "{f:?}");
        assert!(f.fix.contains("release --from-report"), "{f:?}");
    }

    #[test]
    fn a_local_block_without_blackhole() {
        let mut s = healthy();
        kernel(&mut s).routes.remove(1);
        let f = only(&diagnose(&s), Check::Blackhole);
        assert!(f.subject.contains("10.244.1.0/26"), "{f:?}");
        // Held by a static route instead.
        kernel(&mut s).routes.push(kroute(
            "10.244.1.0/26",
            4,
            KernelRouteKind::Unicast,
            &[("10.0.0.9", "eth0")],
        ));
        let f = only(&diagnose(&s), Check::Blackhole);
        assert!(f.cause.contains("proto static"), "{f:?}");
        assert!(
            f.fix.contains("ip route del 10.244.1.0/26 proto 4"),
            "{f:?}"
        );
    }

    #[test]
    fn learned_route_with_an_unreachable_next_hop() {
        let mut s = healthy();
        agent(&mut s).routes[1] = rib("10.244.2.0/26", Some("10.0.0.2"), "10.3.33.1", true);
        kernel(&mut s).routes.remove(2);
        let f = only(&diagnose(&s), Check::NextHopUnreachable);
        assert!(f.problem.contains("next hop 10.3.33.1"), "{f:?}");
        assert!(f.fix.contains("BGPPeer"), "{f:?}");
    }

    #[test]
    fn learned_route_missing_or_shadowed_in_the_kernel() {
        let mut s = healthy();
        kernel(&mut s).routes.remove(2);
        let f = only(&diagnose(&s), Check::RouteNotInKernel);
        assert!(f.problem.contains("10.244.2.0/26"), "{f:?}");
        kernel(&mut s).routes.push(kroute(
            "10.244.2.0/26",
            4,
            KernelRouteKind::Unicast,
            &[("10.0.0.9", "eth0")],
        ));
        let f = only(&diagnose(&s), Check::RouteShadowed);
        assert!(f.problem.contains("proto static"), "{f:?}");
    }

    #[test]
    fn parts_not_gathered_make_the_report_incomplete() {
        let mut s = healthy();
        s.agent = Err(Unavailable {
            part: "agent".into(),
            source: "/run/tabby/agent.sock".into(),
            reason: "connection refused".into(),
            hint: "is `tabby agent` running?".into(),
        });
        let r = diagnose(&s);
        assert_eq!(r.status, Status::Incomplete, "{:#?}", r.findings);
        assert_eq!(r.unchecked.len(), 1);
    }

    #[test]
    fn node_address_on_no_interface() {
        let mut s = healthy();
        kernel(&mut s).links[1].addresses = vec![net("172.17.0.1/16")];
        let f = only(&diagnose(&s), Check::NodeAddress);
        assert_eq!(f.subject, "Node a spec.bgp.ipv4Address");
        assert!(
            f.fix.contains("IP_AUTODETECTION_METHOD=interface="),
            "{f:?}"
        );
    }

    #[test]
    fn an_ipip_pool_without_tunl0() {
        let yaml = TWO_NODES.replace(
            "spec: {cidr: 10.244.0.0/16}",
            "spec: {cidr: 10.244.0.0/16, ipipMode: CrossSubnet}",
        );
        // Both nodes in one subnet: CrossSubnet never tunnels.
        assert!(
            diagnose(&healthy_with(&yaml))
                .of(Check::Encapsulation)
                .is_empty()
        );
        let yaml = yaml.replace("ipv4Address: 10.0.0.2/24", "ipv4Address: 10.0.1.2/24");
        let f = only(&diagnose(&healthy_with(&yaml)), Check::Encapsulation);
        assert!(
            f.problem.contains("ipipMode CrossSubnet") && f.problem.contains("tunl0"),
            "{f:?}"
        );
        assert!(f.fix.contains("vxlanMode"), "{f:?}");
        let mut s = healthy_with(&yaml);
        kernel(&mut s).links.push(link("tunl0", 1480, &[]));
        assert!(diagnose(&s).of(Check::Encapsulation).is_empty());
    }

    #[test]
    fn pods_with_a_larger_mtu_than_the_path() {
        // The underlay itself is smaller: the detected MTU says so.
        let mut s = healthy();
        kernel(&mut s).links[1].mtu = 1420;
        let f = only(&diagnose(&s), Check::Mtu);
        assert!(
            f.problem.contains("pods use MTU 1500")
                && f.problem
                    .contains("pod MTU is 1420 (host MTU 1420 from eth0, no encapsulation in use)"),
            "{f:?}"
        );
        assert!(
            f.fix.contains("\"mtu\": 1420") && f.fix.contains("/var/lib/calico/mtu"),
            "{f:?}"
        );
        // A path through an interface the detection does not count (a
        // ZeroTier-like zt0 at 1370, seed 000): the path check says so.
        let mut s = healthy();
        let k = kernel(&mut s);
        k.links.push(link("zt0", 1370, &["10.9.0.1/24"]));
        k.routes[2].next_hops[0].device = Some("zt0".into());
        let f = only(&diagnose(&s), Check::Mtu);
        assert!(
            f.problem.contains("MTU 1500") && f.problem.contains("zt0 with MTU 1370"),
            "{f:?}"
        );
        assert!(f.fix.contains("\"mtu\": 1370"), "{f:?}");
    }

    #[test]
    fn the_mtu_check_expects_what_the_agent_detects() {
        let vxlan = TWO_NODES.replace(
            "spec: {cidr: 10.244.0.0/16}",
            "spec: {cidr: 10.244.0.0/16, vxlanMode: CrossSubnet}",
        );
        // Pods at 1500 on a VXLAN node: 50 bytes too many, even while every
        // route is native (CrossSubnet inside one subnet).
        let mut s = healthy_with(&vxlan);
        let f = only(&diagnose(&s), Check::Mtu);
        assert!(
            f.problem
                .contains("pod MTU is 1450 (host MTU 1500 from eth0, minus 50 for VXLAN)"),
            "{f:?}"
        );
        assert!(f.fix.contains("\"mtu\": 1450"), "{f:?}");
        // What the plugin gets from the agent's file: healthy.
        kernel(&mut s).links[2].mtu = 1450;
        let r = diagnose(&s);
        assert!(r.of(Check::Mtu).is_empty(), "{:?}", r.findings);
        assert!(
            r.passed
                .iter()
                .any(|p| p.contains("pod MTU 1450 fits the path to other nodes (eth0 MTU 1500) and the detected pod MTU 1450 (host MTU 1500 from eth0, minus 50 for VXLAN)")),
            "{:?}",
            r.passed
        );
        // The same as the agent's function on the same interfaces.
        let c = s.cluster.as_ref().expect("cluster");
        let k = s.kernel.as_ref().expect("kernel");
        assert_eq!(detected_mtu(c, k).pod_mtu, 1450);
        // An interface that is down does not count; neither does loopback.
        let mut s = healthy_with(&vxlan);
        let k = kernel(&mut s);
        k.links.push(KernelLink {
            running: false,
            ..link("eth1", 1000, &[])
        });
        k.links[2].mtu = 1450;
        assert!(diagnose(&s).of(Check::Mtu).is_empty());
        // Smaller pods are fine.
        let mut s = healthy_with(&vxlan);
        kernel(&mut s).links[2].mtu = 1400;
        assert!(diagnose(&s).of(Check::Mtu).is_empty());
        // No interface matching the pattern (a bond): the agent's 1460
        // fallback is no finding; the path still is.
        let mut s = healthy();
        kernel(&mut s).links[1].name = "bond0".into();
        kernel(&mut s).routes[2].next_hops[0].device = Some("bond0".into());
        let r = diagnose(&s);
        assert!(r.of(Check::Mtu).is_empty(), "{:?}", r.findings);
        kernel(&mut s).links[1].mtu = 1400;
        let f = only(&diagnose(&s), Check::Mtu);
        assert!(f.problem.contains("bond0 with MTU 1400"), "{f:?}");
    }

    #[test]
    fn announcements_that_differ_from_the_ipam_state() {
        let mut s = healthy();
        agent(&mut s).routes[0] = rib("10.244.9.0/26", None, "0.0.0.0", false);
        let r = diagnose(&s);
        let f = r.of(Check::Announcements);
        assert_eq!(f.len(), 2, "{f:#?}");
        assert!(
            f[0].problem.contains("should announce 10.244.1.0/26"),
            "{f:#?}"
        );
        assert!(f[1].problem.contains("announces 10.244.9.0/26"), "{f:#?}");
    }

    #[test]
    fn an_export_filter_keeping_own_blocks_from_a_peer() {
        let yaml = two_nodes_and(&[
            filter(
                "quiet",
                "{exportV4: [{action: Reject, matchOperator: In, cidr: 10.244.0.0/16}]}",
            ),
            peer(
                "tor",
                "{peerIP: 10.0.0.254, asNumber: 65000, filters: [quiet]}",
            ),
        ]);
        let mut s = healthy_with(&yaml);
        agent(&mut s)
            .neighbors
            .push(neighbor("10.0.0.254", 65000, "Established", None));
        let f = only(&diagnose(&s), Check::RouteFiltered);
        assert_eq!(f.subject, "BGPFilter quiet (on BGPPeer tor)");
        assert!(
            f.problem
                .contains("keeps 10.244.1.0/26 from peer 10.0.0.254"),
            "{f:?}"
        );
    }

    #[test]
    fn a_nat_outgoing_pool_without_its_masquerade() {
        let yaml = TWO_NODES.replace(
            "spec: {cidr: 10.244.0.0/16}",
            "spec: {cidr: 10.244.0.0/16, natOutgoing: true}",
        );
        let f = only(&diagnose(&healthy_with(&yaml)), Check::Nat);
        assert!(
            f.problem.contains("there is no NAT table inet tabby-nat"),
            "{f:?}"
        );
        let mut s = healthy_with(&yaml);
        let k = kernel(&mut s);
        k.nat = Some(crate::snapshot::NatTable::parse(
            "table inet tabby-nat {\n\tset masq-v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.244.0.0/16, 10.9.9.9 }\n\t}\n\n\tset pools-v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.250.0.0/16 }\n\t}\n}\n",
        ));
        let r = diagnose(&s);
        assert!(r.of(Check::Nat).is_empty(), "{:#?}", r.findings);
        assert!(
            r.passed
                .iter()
                .any(|p| p.contains("masquerades the 1 natOutgoing")),
            "{:?}",
            r.passed
        );
        if let Ok(k) = &s.kernel {
            assert_eq!(
                k.nat.as_ref().map(|n| n.masquerade.clone()),
                Some(vec![net("10.244.0.0/16"), net("10.9.9.9/32")])
            );
        }
    }

    #[test]
    fn vxlan_routes_to_other_nodes_blocks() {
        let yaml = TWO_NODES
            .replace(
                "spec: {cidr: 10.244.0.0/16}",
                "spec: {cidr: 10.244.0.0/16, vxlanMode: Always}",
            )
            .replace(
                "spec: {bgp: {ipv4Address: 10.0.0.1/24}}",
                "spec: {bgp: {ipv4Address: 10.0.0.1/24}, ipv4VXLANTunnelAddr: 10.244.1.0}",
            )
            .replace(
                "spec: {bgp: {ipv4Address: 10.0.0.2/24}}",
                "spec: {bgp: {ipv4Address: 10.0.0.2/24}, ipv4VXLANTunnelAddr: 10.244.2.0}",
            );
        let mut s = healthy_with(&yaml);
        let k = kernel(&mut s);
        k.links.push(link("vxlan.calico", 1450, &["10.244.1.0/32"]));
        k.links[2].mtu = 1450;
        let r = diagnose(&s);
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
        assert!(
            r.passed.iter().any(|p| p.contains("1 VXLAN route")),
            "{:?}",
            r.passed
        );
        kernel(&mut s).routes.remove(2);
        agent(&mut s).routes.truncate(1);
        let f = only(&diagnose(&s), Check::RouteNotInKernel);
        assert!(f.problem.contains("10.244.2.0/26 (node b)"), "{f:?}");
    }

    #[test]
    fn routes_rejected_on_import_are_a_note() {
        // Without a filter: loop detection, not worth a word.
        let mut s = healthy();
        let a = agent(&mut s);
        a.neighbors[0].prefixes_received = 5;
        a.neighbors[0].prefixes_accepted = 3;
        assert!(diagnose(&s).findings.is_empty());
        let yaml = two_nodes_and(&[
            filter(
                "some",
                "{importV4: [{action: Reject, matchOperator: In, cidr: 10.99.0.0/16}]}",
            ),
            peer(
                "tor",
                "{peerIP: 10.0.0.254, asNumber: 65000, filters: [some]}",
            ),
        ]);
        let mut s = healthy_with(&yaml);
        let a = agent(&mut s);
        let mut tor = neighbor("10.0.0.254", 65000, "Established", None);
        tor.prefixes_received = 5;
        tor.prefixes_accepted = 3;
        a.neighbors.push(tor);
        let r = diagnose(&s);
        let f = only(&r, Check::RouteFiltered);
        assert_eq!(f.severity, Severity::Info);
        assert!(
            f.problem
                .contains("2 of the 5 prefixes received from 10.0.0.2"),
            "{f:?}"
        );
        assert_eq!(r.status, Status::Healthy);
    }
}
