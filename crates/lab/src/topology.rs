//! The topology file: what a lab is made of (routers, nodes, clients, links,
//! segments, the resource manifests and patches to apply, the checks), as
//! typed structs parsed from YAML, with errors that name the field path, and
//! the cross-reference validation (every name a link or check uses exists,
//! names are unique, addresses parse).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::TopologyError;

/// A whole lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The lab id: prefixes every namespace and names the state directory
    /// (`/run/tabby-lab/<name>`). Lower-case letters, digits and `-`, at most
    /// 16 characters.
    pub name: String,
    /// Routers: FRR, BIRD 2, BIRD 1.6 or `tabby bgpd`.
    #[serde(default)]
    pub routers: Vec<Router>,
    /// Cluster nodes, each running `tabby agent`.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// Hosts outside the cluster (no agent), e.g. a client behind a leaf.
    #[serde(default)]
    pub clients: Vec<Client>,
    /// Point-to-point links (a veth pair between two hosts).
    #[serde(default)]
    pub links: Vec<Link>,
    /// L2 segments (a bridge in a namespace of its own) joining several hosts.
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// Resource manifests applied to the lab's datastore, in order (paths
    /// relative to the topology file).
    #[serde(default)]
    pub manifests: Vec<String>,
    /// JSON merge patches applied after the manifests, in order (what the
    /// seed did with `calicoctl patch` / `kubectl patch`).
    #[serde(default)]
    pub patches: Vec<Patch>,
    /// What `tabby lab verify` checks.
    #[serde(default)]
    pub checks: Vec<Check>,
}

/// The router implementations a lab can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouterKind {
    /// FRR: zebra, plus ospfd and/or bgpd.
    Frr,
    /// BIRD 2 (`/opt/bird2/usr/sbin/bird`).
    Bird2,
    /// BIRD 1.6 (`bird`).
    Bird,
    /// `tabby bgpd`.
    TabbyBgpd,
}

/// A router.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Router {
    /// Unique host name.
    pub name: String,
    /// The implementation.
    pub kind: RouterKind,
    /// Its AS number (needed with `bgp`).
    #[serde(rename = "as", default)]
    pub asn: Option<u32>,
    /// Router id; defaults to its first interface address.
    #[serde(default, rename = "routerId")]
    pub router_id: Option<Ipv4Addr>,
    /// OSPF on every interface (FRR config generated from the topology).
    #[serde(default)]
    pub ospf: Option<Ospf>,
    /// BGP (FRR config generated from the topology).
    #[serde(default)]
    pub bgp: Option<Bgp>,
    /// A config file (relative to the topology file) used instead of a
    /// generated one; `{{dir}}` in it is replaced by the router's state
    /// directory (for control sockets and logs). Required for every kind
    /// but `frr`.
    #[serde(default)]
    pub config: Option<String>,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<StaticRoute>,
    /// Addresses put on its loopback (e.g. a /32 its BGP peers use).
    #[serde(default)]
    pub loopbacks: Vec<Ipv4Net>,
}

/// OSPF settings of a generated FRR config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ospf {
    /// The area every interface is in.
    #[serde(default = "default_area")]
    pub area: Ipv4Addr,
    /// Also announce BGP-learned routes into OSPF (`redistribute bgp`).
    #[serde(default, rename = "redistributeBgp")]
    pub redistribute_bgp: bool,
}

fn default_area() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}

/// BGP settings of a generated FRR config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bgp {
    /// The neighbours.
    #[serde(default)]
    pub neighbors: Vec<Neighbor>,
    /// Also announce OSPF-learned routes into BGP (`redistribute ospf`).
    #[serde(default, rename = "redistributeOspf")]
    pub redistribute_ospf: bool,
}

/// A BGP neighbour of a generated config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbor {
    /// Its address.
    pub address: Ipv4Addr,
    /// Its AS number.
    #[serde(rename = "as")]
    pub asn: u32,
    /// Treat it as a route-reflector client.
    #[serde(default, rename = "routeReflectorClient")]
    pub route_reflector_client: bool,
}

/// A node's role (recorded as the `node-role.kubernetes.io/<role>` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A control-plane node.
    Master,
    /// A worker.
    #[default]
    Worker,
}

/// A cluster node: a namespace running `tabby agent`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The node name (and `kubernetes.io/hostname`).
    pub name: String,
    /// Its AS number (`tabby agent --as`); the manifests may set it instead.
    #[serde(rename = "as", default)]
    pub asn: Option<u32>,
    /// Master or worker.
    #[serde(default)]
    pub role: Role,
    /// Labels set on the Node resource after the agent registered it.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its BGP address with prefix length (`tabby agent --ip`); must be one
    /// of its link/segment addresses.
    pub address: Ipv4Net,
    /// Default gateway.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Further static routes.
    #[serde(default)]
    pub routes: Vec<StaticRoute>,
    /// Pods created on this node through the CNI plugin.
    #[serde(default)]
    pub pods: Vec<Pod>,
}

/// A pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    /// Unique on its node; checks name it `node/pod`.
    pub name: String,
    /// Serve HTTP on this port inside the pod (a tiny web server).
    #[serde(default)]
    pub http: Option<u16>,
}

/// A host outside the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Unique host name.
    pub name: String,
    /// Default gateway.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Further static routes.
    #[serde(default)]
    pub routes: Vec<StaticRoute>,
}

/// A static route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    /// Destination.
    pub to: Ipv4Net,
    /// Next hop.
    pub via: Ipv4Addr,
}

/// One end of a link or one member of a segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The router, node or client.
    pub host: String,
    /// Its address on this link, with prefix length.
    pub address: Ipv4Net,
}

/// A point-to-point link.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Exactly two ends.
    pub ends: Vec<Endpoint>,
}

/// An L2 segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Unique segment name.
    pub name: String,
    /// The hosts plugged in.
    pub members: Vec<Endpoint>,
}

/// A JSON merge patch of one resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// Resource kind as `tabby patch` takes it (e.g. `bgpconfig`, `ippool`).
    pub kind: String,
    /// Resource name.
    pub name: String,
    /// The merge patch.
    pub patch: serde_json::Value,
    /// Apply it once the agents are up and have registered their nodes
    /// (needed to patch a Node, as the seeds do with `calicoctl patch node`).
    #[serde(default, rename = "afterAgents")]
    pub after_agents: bool,
}

/// A check `tabby lab verify` runs. Targets are host names or `node/pod`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Check {
    /// `from` pings `to`.
    Ping {
        /// Source host or pod.
        from: String,
        /// Destination host or pod.
        to: String,
    },
    /// `from` fetches `http://<to>:<port>/` and gets a 200.
    Http {
        /// Source host or pod.
        from: String,
        /// A pod with `http` set.
        to: String,
    },
    /// Every BGP session of a node is Established.
    Sessions {
        /// The node.
        node: String,
        /// How many sessions it must have.
        count: usize,
    },
    /// Packets from `from` to `to` pass the hosts `via`, in that order
    /// (hops found by pings with a growing TTL, as traceroute does).
    Path {
        /// Source host or pod.
        from: String,
        /// Destination host or pod.
        to: String,
        /// Hosts (usually routers) the path must pass, in order.
        via: Vec<String>,
    },
    /// A host's kernel routes the pod blocks of `nodes` with routing
    /// protocol `proto` (e.g. `ospf` on a spine: the underlay carries them).
    Routes {
        /// The host (usually a router).
        host: String,
        /// The nodes whose blocks it must route.
        nodes: Vec<String>,
        /// The kernel route protocol (`ip route show proto ...`), e.g. `ospf`, `bgp`, `bird`.
        proto: String,
        /// The gateway every one of those routes must use, if given.
        #[serde(default)]
        via: Option<Ipv4Addr>,
        /// How every one of those routes must forward, if given: `native`
        /// (not through a tunnel device), `ipip` (`dev tunl0`) or `vxlan`
        /// (`dev vxlan.calico`); the evidence says which each one used.
        #[serde(default)]
        encapsulation: Option<RouteEncapsulation>,
    },
    /// A router's BGP table holds exactly the pod blocks of `nodes` plus
    /// `also`, each block with exactly one path.
    LearnsBlocks {
        /// An FRR router.
        router: String,
        /// The nodes whose blocks it must learn (and no others).
        nodes: Vec<String>,
        /// Further prefixes it must learn (e.g. service CIDRs).
        #[serde(default)]
        also: Vec<Ipv4Net>,
    },
}

/// How a kernel route toward a pod block forwards (Calico's pool modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteEncapsulation {
    /// Straight to the next hop, no tunnel device.
    Native,
    /// Through `tunl0`.
    Ipip,
    /// Through `vxlan.calico`.
    Vxlan,
}

impl RouteEncapsulation {
    /// Which one a route line (`ip -o route`) uses.
    pub fn of_route_line(line: &str) -> RouteEncapsulation {
        let line = format!("{line} ");
        if line.contains(" dev tunl0 ") {
            RouteEncapsulation::Ipip
        } else if line.contains(" dev vxlan.calico ") {
            RouteEncapsulation::Vxlan
        } else {
            RouteEncapsulation::Native
        }
    }

    /// Lower-case name, as in the topology file.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteEncapsulation::Native => "native",
            RouteEncapsulation::Ipip => "ipip",
            RouteEncapsulation::Vxlan => "vxlan",
        }
    }
}

impl Check {
    /// A one-line description.
    pub fn describe(&self) -> String {
        match self {
            Check::Ping { from, to } => format!("ping {from} -> {to}"),
            Check::Http { from, to } => format!("http {from} -> {to}"),
            Check::Sessions { node, count } => {
                format!("{node}: {count} BGP session(s) Established")
            }
            Check::Path { from, to, via } => {
                format!("path {from} -> {to} passes [{}]", via.join(", "))
            }
            Check::Routes {
                host,
                nodes,
                proto,
                via,
                encapsulation,
            } => format!(
                "{host} routes the blocks of [{}] by {proto}{}{}",
                nodes.join(", "),
                via.map(|v| format!(" via {v}")).unwrap_or_default(),
                encapsulation
                    .map(|e| format!(", {}", e.as_str()))
                    .unwrap_or_default()
            ),
            Check::LearnsBlocks {
                router,
                nodes,
                also,
            } => {
                let also: Vec<String> = also.iter().map(ToString::to_string).collect();
                format!(
                    "{router} learns exactly the blocks of [{}]{}",
                    nodes.join(", "),
                    if also.is_empty() {
                        String::new()
                    } else {
                        format!(" + [{}]", also.join(", "))
                    }
                )
            }
        }
    }
}

/// What kind of thing a host name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// A router.
    Router,
    /// A cluster node.
    Node,
    /// A client.
    Client,
}

impl Topology {
    /// Parses and validates a topology; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Topology, TopologyError> {
        let mut failed_at: Option<String> = None;
        let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, Topology>(de).map_err(|e| {
                failed_at = Some(e.path().to_string());
                e.into_inner()
            })
        });
        let topology = parsed.map_err(|e| TopologyError::Parse {
            file: file.to_owned(),
            field: failed_at.unwrap_or_else(|| ".".to_owned()),
            message: e.to_string(),
        })?;
        topology
            .validate()
            .map_err(|(field, message)| TopologyError::Invalid {
                file: file.to_owned(),
                field,
                message,
            })?;
        Ok(topology)
    }

    /// Every host name with its kind.
    pub fn hosts(&self) -> BTreeMap<&str, HostKind> {
        let mut m = BTreeMap::new();
        for r in &self.routers {
            m.insert(r.name.as_str(), HostKind::Router);
        }
        for n in &self.nodes {
            m.insert(n.name.as_str(), HostKind::Node);
        }
        for c in &self.clients {
            m.insert(c.name.as_str(), HostKind::Client);
        }
        m
    }

    /// The interfaces of `host`, in creation order: (link/segment
    /// description, interface name, address).
    pub fn interfaces(&self, host: &str) -> Vec<(String, Ipv4Net)> {
        let mut v = Vec::new();
        for l in &self.links {
            for e in l.ends.iter().filter(|e| e.host == host) {
                v.push((format!("eth{}", v.len()), e.address));
            }
        }
        for s in &self.segments {
            for e in s.members.iter().filter(|e| e.host == host) {
                v.push((format!("eth{}", v.len()), e.address));
            }
        }
        v
    }

    /// Checks names and cross-references: `(field path, message)` on error.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: String, message: String| Err((field, message));
        if self.name.is_empty()
            || self.name.len() > 16
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return bad(
                "name".into(),
                format!(
                    "{:?}: 1 to 16 characters of a-z, 0-9 and '-' (it prefixes namespace names)",
                    self.name
                ),
            );
        }
        let mut seen = BTreeSet::new();
        let names = self
            .routers
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("routers[{i}].name"), &r.name))
            .chain(
                self.nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("nodes[{i}].name"), &n.name)),
            )
            .chain(
                self.clients
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("clients[{i}].name"), &c.name)),
            )
            .chain(
                self.segments
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("segments[{i}].name"), &s.name)),
            );
        for (field, name) in names {
            if name.is_empty()
                || name.len() > 32
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return bad(
                    field,
                    format!("{name:?}: 1 to 32 characters of letters, digits, '-' and '_'"),
                );
            }
            if !seen.insert(name.clone()) {
                return bad(field, format!("{name:?} is used twice"));
            }
        }
        let hosts = self.hosts();
        for (i, l) in self.links.iter().enumerate() {
            if l.ends.len() != 2 {
                return bad(
                    format!("links[{i}].ends"),
                    format!("a link has exactly 2 ends, not {}", l.ends.len()),
                );
            }
            for (j, e) in l.ends.iter().enumerate() {
                if !hosts.contains_key(e.host.as_str()) {
                    return bad(
                        format!("links[{i}].ends[{j}].host"),
                        format!("no router, node or client is named {:?}", e.host),
                    );
                }
            }
        }
        for (i, s) in self.segments.iter().enumerate() {
            for (j, e) in s.members.iter().enumerate() {
                if !hosts.contains_key(e.host.as_str()) {
                    return bad(
                        format!("segments[{i}].members[{j}].host"),
                        format!("no router, node or client is named {:?}", e.host),
                    );
                }
            }
        }
        for (i, r) in self.routers.iter().enumerate() {
            if r.kind != RouterKind::Frr && r.config.is_none() {
                return bad(
                    format!("routers[{i}].config"),
                    format!("a {:?} router needs a config file", r.kind),
                );
            }
            if r.kind != RouterKind::Frr && (r.ospf.is_some() || r.bgp.is_some()) {
                return bad(
                    format!("routers[{i}].kind"),
                    "ospf/bgp are generated for frr only; give a config file".into(),
                );
            }
            if r.bgp.is_some() && r.asn.is_none() && r.config.is_none() {
                return bad(
                    format!("routers[{i}].as"),
                    "bgp needs the router's AS".into(),
                );
            }
            if self.interfaces(&r.name).is_empty() {
                return bad(
                    format!("routers[{i}]"),
                    format!("{} is on no link or segment", r.name),
                );
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !self
                .interfaces(&n.name)
                .iter()
                .any(|(_, a)| *a == n.address)
            {
                return bad(
                    format!("nodes[{i}].address"),
                    format!(
                        "{} is not one of {}'s link or segment addresses",
                        n.address, n.name
                    ),
                );
            }
            let mut pods = BTreeSet::new();
            for (j, p) in n.pods.iter().enumerate() {
                if p.name.is_empty()
                    || p.name.len() > 16
                    || !p
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-')
                {
                    return bad(
                        format!("nodes[{i}].pods[{j}].name"),
                        format!("{:?}: 1 to 16 letters, digits or '-'", p.name),
                    );
                }
                if !pods.insert(&p.name) {
                    return bad(
                        format!("nodes[{i}].pods[{j}].name"),
                        format!("{:?} is used twice on {}", p.name, n.name),
                    );
                }
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            if self.interfaces(&c.name).is_empty() {
                return bad(
                    format!("clients[{i}]"),
                    format!("{} is on no link or segment", c.name),
                );
            }
        }
        for (i, c) in self.checks.iter().enumerate() {
            let target = |field: &str, t: &str| -> Result<(), (String, String)> {
                if self.resolve_target(t).is_none() {
                    return Err((
                        format!("checks[{i}].{field}"),
                        format!("{t:?} is neither a host nor a node/pod"),
                    ));
                }
                Ok(())
            };
            match c {
                Check::Ping { from, to } => {
                    target("ping.from", from)?;
                    target("ping.to", to)?;
                }
                Check::Http { from, to } => {
                    target("http.from", from)?;
                    match self.resolve_target(to) {
                        Some(Target::Pod { pod, .. }) if pod.http.is_some() => {}
                        _ => {
                            return bad(
                                format!("checks[{i}].http.to"),
                                format!("{to:?} is not a pod with `http` set"),
                            );
                        }
                    }
                }
                Check::Sessions { node, .. } => {
                    if hosts.get(node.as_str()) != Some(&HostKind::Node) {
                        return bad(
                            format!("checks[{i}].sessions.node"),
                            format!("no node is named {node:?}"),
                        );
                    }
                }
                Check::Path { from, to, via } => {
                    target("path.from", from)?;
                    target("path.to", to)?;
                    for (j, h) in via.iter().enumerate() {
                        if !hosts.contains_key(h.as_str()) {
                            return bad(
                                format!("checks[{i}].path.via[{j}]"),
                                format!("no router, node or client is named {h:?}"),
                            );
                        }
                    }
                }
                Check::Routes { host, nodes, .. } => {
                    if !hosts.contains_key(host.as_str()) {
                        return bad(
                            format!("checks[{i}].routes.host"),
                            format!("no router, node or client is named {host:?}"),
                        );
                    }
                    for (j, n) in nodes.iter().enumerate() {
                        if hosts.get(n.as_str()) != Some(&HostKind::Node) {
                            return bad(
                                format!("checks[{i}].routes.nodes[{j}]"),
                                format!("no node is named {n:?}"),
                            );
                        }
                    }
                }
                Check::LearnsBlocks { router, nodes, .. } => {
                    match self.routers.iter().find(|r| &r.name == router) {
                        Some(r) if r.kind == RouterKind::Frr => {}
                        _ => {
                            return bad(
                                format!("checks[{i}].learnsBlocks.router"),
                                format!("no FRR router is named {router:?}"),
                            );
                        }
                    }
                    for (j, n) in nodes.iter().enumerate() {
                        if hosts.get(n.as_str()) != Some(&HostKind::Node) {
                            return bad(
                                format!("checks[{i}].learnsBlocks.nodes[{j}]"),
                                format!("no node is named {n:?}"),
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Resolves a check target: a host name or `node/pod`.
    pub fn resolve_target<'a>(&'a self, t: &str) -> Option<Target<'a>> {
        if let Some((node, pod)) = t.split_once('/') {
            let n = self.nodes.iter().find(|n| n.name == node)?;
            let p = n.pods.iter().find(|p| p.name == pod)?;
            return Some(Target::Pod { node: n, pod: p });
        }
        let kind = *self.hosts().get(t)?;
        Some(Target::Host {
            name: self.hosts().into_keys().find(|h| *h == t)?,
            kind,
        })
    }
}

/// A resolved check target.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A router, node or client.
    Host {
        /// Its name.
        name: &'a str,
        /// What it is.
        kind: HostKind,
    },
    /// A pod.
    Pod {
        /// Its node.
        node: &'a Node,
        /// The pod.
        pod: &'a Pod,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_encapsulation_is_read_from_the_device() {
        use RouteEncapsulation::{Ipip, Native, Vxlan};
        assert_eq!(
            RouteEncapsulation::of_route_line("10.244.1.0/26 via 10.20.1.85 dev eth0 proto tabby"),
            Native
        );
        assert_eq!(
            RouteEncapsulation::of_route_line(
                "10.244.1.0/26 via 10.30.0.5 dev tunl0 proto tabby onlink"
            ),
            Ipip
        );
        assert_eq!(
            RouteEncapsulation::of_route_line(
                "10.244.1.0/26 via 10.244.1.0 dev vxlan.calico onlink"
            ),
            Vxlan
        );
        let c: Check = serde_saphyr::from_str(
            "routes: {host: n1, nodes: [n2], proto: tabby, encapsulation: native}",
        )
        .expect("check");
        assert!(c.describe().ends_with(", native"), "{}", c.describe());
        assert!(
            serde_saphyr::from_str::<Check>(
                "routes: {host: n1, nodes: [n2], proto: tabby, encapsulation: gre}"
            )
            .is_err()
        );
    }

    const GOOD: &str = r"
name: t1
routers:
  - {name: r1, kind: frr, as: 65001, bgp: {neighbors: [{address: 10.0.0.1, as: 65000}]}}
nodes:
  - name: n1
    address: 10.0.0.1/31
    gateway: 10.0.0.0
    pods: [{name: web, http: 80}, {name: p}]
clients:
  - {name: c1, gateway: 10.0.1.0}
links:
  - ends: [{host: r1, address: 10.0.0.0/31}, {host: n1, address: 10.0.0.1/31}]
  - ends: [{host: r1, address: 10.0.1.0/31}, {host: c1, address: 10.0.1.1/31}]
patches:
  - {kind: bgpconfig, name: default, patch: {spec: {nodeToNodeMeshEnabled: false}}}
checks:
  - http: {from: c1, to: n1/web}
  - ping: {from: n1/p, to: c1}
  - sessions: {node: n1, count: 1}
  - learnsBlocks: {router: r1, nodes: [n1], also: [10.96.0.0/12]}
  - path: {from: c1, to: n1/web, via: [r1]}
  - routes: {host: r1, nodes: [n1], proto: bgp, via: 10.0.0.1}
";

    fn err(text: &str) -> (String, String) {
        match Topology::parse(text, "t.yaml") {
            Err(TopologyError::Parse { field, message, .. })
            | Err(TopologyError::Invalid { field, message, .. }) => (field, message),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("parsed: {text}"),
        }
    }

    #[test]
    fn parses_a_good_topology() {
        let t = Topology::parse(GOOD, "t.yaml").expect("parse");
        assert_eq!(t.routers[0].kind, RouterKind::Frr);
        assert_eq!(t.nodes[0].pods.len(), 2);
        assert_eq!(t.checks.len(), 6);
        assert_eq!(
            t.interfaces("r1")
                .iter()
                .map(|(i, a)| format!("{i} {a}"))
                .collect::<Vec<_>>(),
            ["eth0 10.0.0.0/31", "eth1 10.0.1.0/31"]
        );
        assert_eq!(t.patches[0].patch["spec"]["nodeToNodeMeshEnabled"], false);
    }

    #[test]
    fn a_bad_address_is_named_by_its_path() {
        let text = GOOD.replace(
            "{host: r1, address: 10.0.1.0/31}",
            "{host: r1, address: 10.0.1.300/31}",
        );
        let (field, _) = err(&text);
        assert_eq!(field, "links[1].ends[0].address");
    }

    #[test]
    fn an_unknown_router_kind_is_named_by_its_path() {
        let (field, message) = err(&GOOD.replace("kind: frr", "kind: junos"));
        assert_eq!(field, "routers[0].kind");
        assert!(message.contains("junos"), "{message}");
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let (field, message) = err(&GOOD.replace("gateway: 10.0.0.0", "gatewy: 10.0.0.0"));
        assert!(field.starts_with("nodes[0]"), "{field}");
        assert!(message.contains("gatewy"), "{message}");
    }

    #[test]
    fn a_link_to_a_missing_host_is_named() {
        let (field, message) = err(&GOOD.replace("{host: n1, address", "{host: n9, address"));
        assert_eq!(field, "links[0].ends[1].host");
        assert!(message.contains("n9"), "{message}");
    }

    #[test]
    fn a_node_address_not_on_its_links_is_refused() {
        let (field, _) = err(&GOOD.replace("address: 10.0.0.1/31\n", "address: 10.9.0.1/31\n"));
        assert_eq!(field, "nodes[0].address");
    }

    #[test]
    fn a_check_naming_a_missing_pod_is_refused() {
        let (field, _) = err(&GOOD.replace("to: n1/web", "to: n1/nope"));
        assert_eq!(field, "checks[0].http.to");
    }

    #[test]
    fn a_path_through_a_missing_host_is_refused() {
        let (field, _) = err(&GOOD.replace("via: [r1]", "via: [r1, r7]"));
        assert_eq!(field, "checks[4].path.via[1]");
    }

    #[test]
    fn an_unknown_check_is_named() {
        let (field, message) = err(&GOOD.replace("  - path:", "  - traceroute:"));
        assert!(field.starts_with("checks[4]"), "{field}");
        assert!(message.contains("traceroute"), "{message}");
    }

    #[test]
    fn a_bad_lab_name_is_refused() {
        let (field, _) = err(&GOOD.replace("name: t1", "name: T_1"));
        assert_eq!(field, "name");
    }

    #[test]
    fn a_non_frr_router_needs_a_config() {
        let (field, _) = err(&GOOD.replace(
            "{name: r1, kind: frr, as: 65001, bgp: {neighbors: [{address: 10.0.0.1, as: 65000}]}}",
            "{name: r1, kind: bird2}",
        ));
        assert_eq!(field, "routers[0].config");
    }
}
