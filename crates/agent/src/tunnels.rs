//! Encapsulation on this node: Calico's IPIP and VXLAN pool modes.
//!
//! Owns, as calico-node and Felix do:
//!
//! - **tunnel addresses**: while an enabled IPv4 pool usable by this node
//!   for tunnels has `ipipMode` (`vxlanMode`) other than Never, the node
//!   holds one address from such a pool under the IPAM handle
//!   `ipip-tunnel-addr-<node>` (`vxlan-tunnel-addr-<node>`), attributes
//!   `node` and `type: ipipTunnelAddress` (`vxlanTunnelAddress`), recorded
//!   in its Node as `spec.bgp.ipv4IPIPTunnelAddr` (`spec.ipv4VXLANTunnelAddr`);
//!   VXLAN also gets a MAC (`spec.vxlanTunnelMACAddr`, random, locally
//!   administered). When the mode goes back to Never everywhere the
//!   address is released and the field cleared ([`ensure_tunnel_addresses`]);
//! - **the decisions**, pure: the speaker's FIB rules for IPIP pools
//!   ([`fib_encapsulation`]: `via <node> dev tunl0 onlink`, or native with
//!   CrossSubnet inside this node's subnet) and the VXLAN plan from the
//!   datastore ([`vxlan_plan`]: per remote node a peer entry, per remote
//!   block a route via its VTEP's tunnel address, or natively via its
//!   address with CrossSubnet inside this node's subnet);
//! - **the kernel** ([`apply_kernel`]): `tunl0` with its /32, the
//!   `vxlan.calico` device (VNI 4096, port 4789, learning off, the Node's
//!   MAC) with its /32, its neighbour and FDB entries, and the VXLAN
//!   pools' routes (`proto tabby`, on-link). A kernel without IPIP is
//!   reported ([`DeviceState::KernelLacks`]) and IPIP pools are then
//!   routed natively.
//!
//! Routes of VXLAN pools are never the speaker's (its FIB leaves them), as
//! Calico's BIRD leaves them to Felix.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use tabby_dataplane::encap::{
    EncapMode as DpMode, Encapsulation, IPIP_DEVICE, IPIP_OVERHEAD, VXLAN_DEVICE, VXLAN_OVERHEAD,
    VXLAN_V6_DEVICE, VXLAN_V6_OVERHEAD, VXLAN_V6_VNI, VXLAN_VNI, VxlanDevice, VxlanPeer,
    is_onlink_route, onlink_route, route_encapsulation,
};
use tabby_dataplane::{Error as DpError, MacAddr, Netlink, Route, RouteTable};
use tabby_ipam::{AssignRequest, Block, Ipam};
use tabby_model::store::ResourceStore;
use tabby_model::{
    AllowedUse, EncapMode, IpAddress, IpPool, Kind, Node, Resource, ValidationError,
};
use tabby_speaker::config::{EncapsulatedPool, FibEncapsulation};

use crate::AgentError;
use crate::mtu::MtuPlan;

/// A tunnel type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelKind {
    /// IPv4 in IPv4 over `tunl0`.
    Ipip,
    /// VXLAN over `vxlan.calico`.
    Vxlan,
    /// IPv6 VXLAN over `vxlan-v6.calico`.
    VxlanV6,
}

impl TunnelKind {
    /// Every kind.
    pub const ALL: [TunnelKind; 3] = [TunnelKind::Ipip, TunnelKind::Vxlan, TunnelKind::VxlanV6];

    /// True for the IPv6 kind.
    pub fn is_v6(self) -> bool {
        self == TunnelKind::VxlanV6
    }

    /// Calico's IPAM handle for the node's tunnel address.
    pub fn handle(self, node: &str) -> String {
        match self {
            TunnelKind::Ipip => tabby_ipam::records::ipip_tunnel_handle(node),
            TunnelKind::Vxlan => tabby_ipam::records::vxlan_tunnel_handle(node),
            TunnelKind::VxlanV6 => format!("vxlan-v6-tunnel-addr-{node}"),
        }
    }

    /// Calico's `type` attribute of the allocation.
    pub fn attribute_type(self) -> &'static str {
        match self {
            TunnelKind::Ipip => "ipipTunnelAddress",
            TunnelKind::Vxlan => "vxlanTunnelAddress",
            TunnelKind::VxlanV6 => "vxlanV6TunnelAddress",
        }
    }

    /// The pool's mode for this kind.
    pub fn mode(self, pool: &IpPool) -> EncapMode {
        match self {
            TunnelKind::Ipip => pool.spec.ipip_mode(),
            TunnelKind::Vxlan | TunnelKind::VxlanV6 => pool.spec.vxlan_mode(),
        }
    }

    /// The Node's tunnel address field for this kind.
    pub fn node_address(self, node: &Node) -> Option<IpAddr> {
        match self {
            TunnelKind::Ipip => node
                .spec
                .bgp
                .as_ref()
                .and_then(|b| b.ipv4_ipip_tunnel_addr)
                .map(|a| a.0),
            TunnelKind::Vxlan => node.spec.ipv4_vxlan_tunnel_addr.map(|a| a.0),
            TunnelKind::VxlanV6 => node.spec.ipv6_vxlan_tunnel_addr.map(|a| a.0),
        }
    }

    fn set_node_address(self, node: &mut Node, addr: Option<IpAddr>) {
        let addr = addr.map(IpAddress);
        match self {
            TunnelKind::Ipip => {
                let bgp = node.spec.bgp.get_or_insert_with(Default::default);
                bgp.ipv4_ipip_tunnel_addr = addr;
                if *bgp == Default::default() {
                    node.spec.bgp = None;
                }
            }
            TunnelKind::Vxlan => node.spec.ipv4_vxlan_tunnel_addr = addr,
            TunnelKind::VxlanV6 => node.spec.ipv6_vxlan_tunnel_addr = addr,
        }
    }

    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Ipip => "ipip",
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::VxlanV6 => "vxlan-v6",
        }
    }
}

/// The dataplane's spelling of a pool mode.
pub fn dataplane_mode(m: EncapMode) -> DpMode {
    match m {
        EncapMode::Never => DpMode::Never,
        EncapMode::Always => DpMode::Always,
        EncapMode::CrossSubnet => DpMode::CrossSubnet,
    }
}

/// The pools `node` takes its `kind` tunnel address from: enabled pools
/// of the kind's family (IPv4; IPv6 for [`TunnelKind::VxlanV6`]) with that
/// mode on that the node may use for tunnels (`nodeSelector`,
/// `allowedUses`).
pub fn tunnel_pools<'a>(kind: TunnelKind, pools: &'a [IpPool], node: &Node) -> Vec<&'a IpPool> {
    let labels = node.selector_labels();
    pools
        .iter()
        .filter(|p| p.spec.cidr.is_ipv6() == kind.is_v6() && kind.mode(p) != EncapMode::Never)
        .filter(|p| tabby_ipam::Pool::from_resource(p).usable_by(&labels, AllowedUse::Tunnel))
        .collect()
}

/// This node's own subnets (from `spec.bgp.ipv4Address` / `ipv6Address`):
/// what CrossSubnet calls "the same subnet".
pub fn own_subnets(node: &Node) -> Vec<IpNet> {
    let Some(bgp) = &node.spec.bgp else {
        return Vec::new();
    };
    [bgp.ipv4_address, bgp.ipv6_address]
        .into_iter()
        .flatten()
        .map(|a| a.subnet())
        .collect()
}

/// The speaker's FIB rules: every pool with IPIP or VXLAN on (disabled
/// pools too: their blocks are still routed). `ipip_usable` says whether
/// `tunl0` works on this node; without it IPIP pools are routed natively.
pub fn fib_encapsulation(
    pools: &[IpPool],
    subnets: &[IpNet],
    ipip_usable: bool,
) -> Option<FibEncapsulation> {
    let pools: Vec<EncapsulatedPool> = pools
        .iter()
        .filter(|p| {
            p.spec.ipip_mode() != EncapMode::Never || p.spec.vxlan_mode() != EncapMode::Never
        })
        .map(|p| EncapsulatedPool {
            cidr: p.spec.cidr.network(),
            ipip_mode: dataplane_mode(p.spec.ipip_mode()),
            vxlan_mode: dataplane_mode(p.spec.vxlan_mode()),
        })
        .collect();
    (!pools.is_empty()).then(|| FibEncapsulation {
        pools,
        subnets: subnets.to_vec(),
        ipip: ipip_usable,
    })
}

/// A route the agent programs toward a remote block of a VXLAN pool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VxlanRoute {
    /// The block.
    pub destination: IpNet,
    /// The remote VTEP's tunnel address (VXLAN) or the node's address
    /// (native, CrossSubnet inside this node's subnet).
    pub via: IpAddr,
    /// Which of the two.
    pub encapsulation: Encapsulation,
}

/// This node's VXLAN state, computed from the datastore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanPlan {
    /// This node's own VTEP: (node address, tunnel address, MAC); `None`
    /// when no VXLAN pool applies or it is not allocated yet.
    pub local: Option<(IpAddr, IpAddr, MacAddr)>,
    /// Every other node with a complete VTEP.
    pub peers: Vec<VxlanPeer>,
    /// Routes toward other nodes' blocks of VXLAN pools, and /32s toward
    /// addresses a node borrowed from a block it does not own.
    pub routes: Vec<VxlanRoute>,
    /// The IPv4 VXLAN pools' CIDRs: every route toward them is the
    /// agent's (the speaker leaves them).
    pub pools: Vec<IpNet>,
    /// Why some block got no route (its node has no address, or no VTEP yet).
    pub skipped: Vec<String>,
}

/// A node's address, tunnel address and MAC of one family, when all are
/// set.
fn vtep(node: &Node, v6: bool) -> Option<(IpAddr, IpAddr, MacAddr)> {
    let bgp = node.spec.bgp.as_ref()?;
    let (ip, tunnel, mac) = if v6 {
        (
            bgp.ipv6_address?,
            node.spec.ipv6_vxlan_tunnel_addr?,
            node.spec.vxlan_tunnel_mac_addr_v6.as_deref()?,
        )
    } else {
        (
            bgp.ipv4_address?,
            node.spec.ipv4_vxlan_tunnel_addr?,
            node.spec.vxlan_tunnel_mac_addr.as_deref()?,
        )
    };
    Some((ip.addr, tunnel.0, mac.parse().ok()?))
}

/// A node's address of one family.
fn node_address(node: &Node, v6: bool) -> Option<IpAddr> {
    let bgp = node.spec.bgp.as_ref()?;
    if v6 {
        bgp.ipv6_address
    } else {
        bgp.ipv4_address
    }
    .map(|a| a.addr)
}

/// The VXLAN plan of node `me` for one family (`vxlan.calico` over IPv4,
/// `vxlan-v6.calico` over IPv6): peers and routes from the other nodes'
/// Node resources and IPAM blocks, Felix's way. With no pool of the
/// family in VXLAN mode the plan is empty (and everything is removed).
pub fn vxlan_plan(
    me: &Node,
    nodes: &[Node],
    pools: &[IpPool],
    blocks: &[Block],
    v6: bool,
) -> VxlanPlan {
    let vxlan_pools: Vec<&IpPool> = pools
        .iter()
        .filter(|p| p.spec.cidr.is_ipv6() == v6 && p.spec.vxlan_mode() != EncapMode::Never)
        .collect();
    if vxlan_pools.is_empty() {
        return VxlanPlan::default();
    }
    let subnets = own_subnets(me);
    let name = me.metadata.name.as_str();
    let by_name: BTreeMap<&str, &Node> = nodes
        .iter()
        .map(|n| (n.metadata.name.as_str(), n))
        .collect();
    let mut plan = VxlanPlan {
        local: vtep(me, v6),
        pools: vxlan_pools.iter().map(|p| p.spec.cidr.network()).collect(),
        ..VxlanPlan::default()
    };
    plan.peers = nodes
        .iter()
        .filter(|n| n.metadata.name != name)
        .filter_map(|n| vtep(n, v6))
        .map(|(node_ip, tunnel_address, mac)| VxlanPeer {
            node_ip,
            tunnel_address,
            mac: mac.into(),
        })
        .collect();
    plan.peers.sort();
    for b in blocks {
        let Some(pool) = vxlan_pools
            .iter()
            .find(|p| p.spec.cidr.network().contains(&b.cidr))
        else {
            continue;
        };
        let mode = dataplane_mode(pool.spec.vxlan_mode());
        let owner = b.host();
        // The block toward its owner; then every address borrowed from it
        // by a third node, as a /32 toward the borrower (Felix's
        // remote-workload routes; the borrower announces the same /32 over
        // BGP for BGP pools).
        let mut targets: Vec<(IpNet, &str)> = Vec::new();
        if let Some(o) = owner.filter(|o| *o != name) {
            targets.push((b.cidr, o));
        }
        for (ip, attr, _) in b.allocated() {
            let Some(borrower) = attr.and_then(|a| a.secondary.get("node")) else {
                continue;
            };
            if Some(borrower.as_str()) != owner && borrower != name {
                targets.push((IpNet::from(ip), borrower.as_str()));
            }
        }
        for (destination, target) in targets {
            let Some(node) = by_name.get(target) else {
                plan.skipped
                    .push(format!("{destination}: node {target} is not registered"));
                continue;
            };
            let Some(node_ip) = node_address(node, v6) else {
                plan.skipped.push(format!(
                    "{destination}: node {target} has no {} address",
                    if v6 { "IPv6" } else { "IPv4" }
                ));
                continue;
            };
            match route_encapsulation(DpMode::Never, mode, &subnets, node_ip) {
                Encapsulation::Vxlan => match vtep(node, v6) {
                    Some((_, tunnel, _)) => plan.routes.push(VxlanRoute {
                        destination,
                        via: tunnel,
                        encapsulation: Encapsulation::Vxlan,
                    }),
                    None => plan.skipped.push(format!(
                        "{destination}: node {target} has no VXLAN tunnel address or MAC yet"
                    )),
                },
                other => plan.routes.push(VxlanRoute {
                    destination,
                    via: node_ip,
                    encapsulation: other,
                }),
            }
        }
    }
    plan.routes.sort();
    plan
}

/// How a tunnel device stands on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceState {
    /// No pool needs it.
    #[default]
    Off,
    /// Needed, but this node's tunnel address is not allocated yet.
    Pending,
    /// Up with its address.
    Up,
    /// The kernel cannot create it (IPIP without `CONFIG_NET_IPIP`): the
    /// pools' routes are native.
    KernelLacks,
    /// Programming it failed (see the log); retried at the next reconcile.
    Failed,
}

impl DeviceState {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Off => "off",
            DeviceState::Pending => "pending",
            DeviceState::Up => "up",
            DeviceState::KernelLacks => "kernel-lacks",
            DeviceState::Failed => "failed",
        }
    }

    /// Every state (for metrics).
    pub const ALL: [DeviceState; 5] = [
        DeviceState::Off,
        DeviceState::Pending,
        DeviceState::Up,
        DeviceState::KernelLacks,
        DeviceState::Failed,
    ];
}

/// What the kernel should have for tunnels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelTunnels {
    /// IPIP is needed; with this node's tunnel address once allocated.
    pub ipip: Option<Option<Ipv4Addr>>,
    /// This node's IPv4 address (its interface is the underlay).
    pub node_ip: Option<IpAddr>,
    /// The IPv4 VXLAN plan.
    pub vxlan: VxlanPlan,
    /// Whether any IPv4 pool needs VXLAN on this node.
    pub vxlan_wanted: bool,
    /// The IPv6 VXLAN plan.
    pub vxlan_v6: VxlanPlan,
    /// Whether any IPv6 pool needs VXLAN on this node.
    pub vxlan_v6_wanted: bool,
    /// The detected MTUs ([`crate::mtu::pod_mtu`]): each device gets the
    /// host MTU minus its overhead. `None`: the underlay interface's MTU
    /// minus the overhead.
    pub mtu: Option<MtuPlan>,
}

/// What [`apply_kernel`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelTunnelsOutcome {
    /// `tunl0`.
    pub ipip: DeviceState,
    /// `vxlan.calico`.
    pub vxlan: DeviceState,
    /// `vxlan-v6.calico`.
    pub vxlan_v6: DeviceState,
    /// VXLAN pool routes (via the devices and native, both families) in
    /// the kernel.
    pub vxlan_routes: usize,
    /// What went wrong, one line each.
    pub errors: Vec<String>,
}

/// Brings `tunl0`, `vxlan.calico`, the VXLAN peers and the VXLAN pools'
/// routes to `want`. Never fails as a whole: each part's failure is
/// reported in the outcome and the other parts still go on.
pub fn apply_kernel(nl: &mut Netlink, want: &KernelTunnels) -> KernelTunnelsOutcome {
    let mut out = KernelTunnelsOutcome {
        ipip: apply_ipip(
            nl,
            want.ipip,
            want.node_ip,
            want.mtu.as_ref().map(|m| m.tunnel_mtu(TunnelKind::Ipip)),
        ),
        ..Default::default()
    };
    for v6 in [false, true] {
        let (plan, wanted, device, kind) = if v6 {
            (
                &want.vxlan_v6,
                want.vxlan_v6_wanted,
                VXLAN_V6_DEVICE,
                TunnelKind::VxlanV6,
            )
        } else {
            (
                &want.vxlan,
                want.vxlan_wanted,
                VXLAN_DEVICE,
                TunnelKind::Vxlan,
            )
        };
        let mtu = want.mtu.as_ref().map(|m| m.tunnel_mtu(kind));
        let state = match apply_vxlan(nl, plan, wanted, v6, mtu) {
            Ok((state, routes)) => {
                out.vxlan_routes += routes;
                state
            }
            Err(e) => {
                out.errors.push(format!("{device}: {e}"));
                DeviceState::Failed
            }
        };
        if v6 {
            out.vxlan_v6 = state;
        } else {
            out.vxlan = state;
        }
    }
    out
}

fn apply_ipip(
    nl: &mut Netlink,
    want: Option<Option<Ipv4Addr>>,
    node_ip: Option<IpAddr>,
    mtu: Option<u32>,
) -> DeviceState {
    let Some(address) = want else {
        // tunl0 cannot be deleted (the module's fallback device): it only
        // loses the tunnel address.
        if let Ok(Some(l)) = nl.link(IPIP_DEVICE)
            && let Err(e) = nl.set_only_addresses(l.index, &[])
        {
            tracing::warn!("{IPIP_DEVICE}: cannot remove the tunnel address: {e}");
        }
        return DeviceState::Off;
    };
    let mtu = mtu.or_else(|| {
        node_ip
            .and_then(|ip| underlay_mtu(nl, ip))
            .map(|m| m.saturating_sub(IPIP_OVERHEAD))
    });
    match nl.ensure_ipip_device(address, mtu) {
        Ok(_) if address.is_none() => DeviceState::Pending,
        Ok(_) => DeviceState::Up,
        Err(DpError::KernelLacks { .. }) => DeviceState::KernelLacks,
        Err(e) => {
            tracing::error!("{IPIP_DEVICE}: {e}");
            DeviceState::Failed
        }
    }
}

/// The MTU of the interface holding `ip`.
fn underlay_mtu(nl: &mut Netlink, ip: IpAddr) -> Option<u32> {
    let index = nl.link_with_address(ip).ok()??;
    nl.link_by_index(index).ok()?.map(|l| l.mtu)
}

fn apply_vxlan(
    nl: &mut Netlink,
    plan: &VxlanPlan,
    wanted: bool,
    v6: bool,
    mtu: Option<u32>,
) -> Result<(DeviceState, usize), DpError> {
    let (device, vni, overhead) = if v6 {
        (VXLAN_V6_DEVICE, VXLAN_V6_VNI, VXLAN_V6_OVERHEAD)
    } else {
        (VXLAN_DEVICE, VXLAN_VNI, VXLAN_OVERHEAD)
    };
    let ipip_index = nl
        .link(IPIP_DEVICE)?
        .filter(|l| l.kind.as_deref() == Some("ipip"))
        .map(|l| l.index);
    let (state, desired) = match (&plan.local, wanted) {
        (Some((node_ip, tunnel, mac)), true) => {
            let underlay = nl.link_with_address(*node_ip)?;
            let mtu = match (mtu, underlay) {
                (Some(m), _) => Some(m),
                (None, Some(i)) => nl.link_by_index(i)?.map(|l| l.mtu.saturating_sub(overhead)),
                (None, None) => None,
            };
            let index = nl.ensure_vxlan_device(&VxlanDevice {
                name: device.into(),
                vni,
                local: *node_ip,
                underlay,
                mac: *mac,
                address: *tunnel,
                mtu,
            })?;
            let report = nl.reconcile_vxlan_peers(index, &plan.peers)?;
            if report.removed > 0 {
                tracing::info!(removed = report.removed, "VXLAN peer entries removed");
            }
            let mut desired = Vec::new();
            for r in &plan.routes {
                match (r.encapsulation, underlay) {
                    (Encapsulation::Vxlan, _) => {
                        desired.push(onlink_route(r.destination, r.via, index))
                    }
                    (_, Some(u)) => desired.push(onlink_route(r.destination, r.via, u)),
                    (_, None) => tracing::warn!(
                        "no interface holds {node_ip}: native route to {} skipped",
                        r.destination
                    ),
                }
            }
            (DeviceState::Up, desired)
        }
        (None, true) => {
            // The address or MAC is not allocated yet: nothing to route
            // through; a device left from before keeps its entries.
            (DeviceState::Pending, Vec::new())
        }
        (_, false) => {
            if nl.delete_link_named(device)? {
                tracing::info!("{device} deleted: no pool of its family uses VXLAN");
            }
            (DeviceState::Off, Vec::new())
        }
    };
    let count = desired.len();
    let owns =
        |r: &Route| r.destination.addr().is_ipv6() == v6 && agent_owns(r, ipip_index, &plan.pools);
    let report = nl.reconcile_routes_owned(RouteTable::MAIN, &desired, owns)?;
    if report.added + report.replaced + report.deleted > 0 {
        tracing::info!(
            added = report.added,
            replaced = report.replaced,
            deleted = report.deleted,
            "VXLAN pool routes reconciled"
        );
    }
    for (r, proto) in &report.conflicts {
        tracing::warn!(
            "VXLAN pool route {} held by protocol {proto}",
            r.destination
        );
    }
    if let Some((r, e)) = report.failures.first() {
        return Err(DpError::Invalid {
            field: format!("route {}", r.destination),
            reason: e.to_string(),
        });
    }
    Ok((state, count))
}

/// True for a `proto tabby` route the agent's VXLAN reconcile owns: an
/// on-link gateway route not through `tunl0` (the agent makes only
/// those), or any gateway route toward a VXLAN pool (one the speaker
/// installed before the pool turned to VXLAN is taken over and replaced).
pub fn agent_owns(r: &Route, ipip_device: Option<u32>, vxlan_pools: &[IpNet]) -> bool {
    let in_vxlan_pool = vxlan_pools.iter().any(|p| p.contains(&r.destination))
        && r.kind == tabby_dataplane::RouteKind::Unicast
        && !r.next_hops.is_empty()
        && r.next_hops.iter().all(|h| h.gateway.is_some());
    is_onlink_route(r, ipip_device) || in_vxlan_pool
}

/// A random locally administered unicast MAC (a new VTEP's).
fn random_mac() -> Result<MacAddr, AgentError> {
    use std::io::Read;
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(AgentError::Runtime)?;
    b[0] = (b[0] & 0xfe) | 0x02;
    Ok(MacAddr(b))
}

/// What [`ensure_tunnel_addresses`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelAddressChanges {
    /// Addresses allocated (kind, address).
    pub allocated: Vec<(TunnelKind, IpAddr)>,
    /// Addresses released (kind, addresses).
    pub released: Vec<(TunnelKind, Vec<IpAddr>)>,
    /// The VXLAN MAC was generated.
    pub mac_generated: bool,
}

/// Allocates, keeps or releases this node's tunnel addresses (and the
/// VXLAN MAC) as the pools require, recording them in the Node. An
/// address is kept while it is in one of the kind's pools and its handle
/// holds it; otherwise it is released and a new one taken.
pub async fn ensure_tunnel_addresses(
    store: &ResourceStore,
    ipam: &Ipam,
    me: &Node,
    pools: &[IpPool],
) -> Result<TunnelAddressChanges, AgentError> {
    let name = me.metadata.name.clone();
    let mut changes = TunnelAddressChanges::default();
    let mut node_fields: Vec<(TunnelKind, Option<IpAddr>)> = Vec::new();
    for kind in TunnelKind::ALL {
        let usable = tunnel_pools(kind, pools, me);
        let handle = kind.handle(&name);
        let held = ipam.addresses_of(&handle).await.map_err(ipam_error)?;
        let current = kind.node_address(me);
        if usable.is_empty() {
            if !held.is_empty() {
                let gone = ipam.release_handle(&handle).await.map_err(ipam_error)?;
                changes.released.push((kind, gone));
            }
            if current.is_some() {
                node_fields.push((kind, None));
            }
            continue;
        }
        let valid = current.filter(|a| {
            held.contains(a) && usable.iter().any(|p| p.spec.cidr.network().contains(a))
        });
        if let Some(a) = valid {
            if held.len() > 1 {
                // Keep exactly the recorded one.
                for extra in held.iter().filter(|h| **h != a) {
                    let req = tabby_ipam::ReleaseRequest {
                        ip: *extra,
                        sequence: None,
                        handle: Some(handle.clone()),
                    };
                    let env = tabby_ipam::resources::load_environment(ipam.datastore())
                        .await
                        .map_err(ipam_error)?;
                    ipam.release(&env, &[req]).await.map_err(ipam_error)?;
                }
            }
            continue;
        }
        if !held.is_empty() {
            let gone = ipam.release_handle(&handle).await.map_err(ipam_error)?;
            changes.released.push((kind, gone));
        }
        let env = tabby_ipam::resources::load_environment(ipam.datastore())
            .await
            .map_err(ipam_error)?;
        let mut attributes = BTreeMap::new();
        attributes.insert("node".to_owned(), name.clone());
        attributes.insert("type".to_owned(), kind.attribute_type().to_owned());
        let req = AssignRequest {
            node: name.clone(),
            node_labels: me.selector_labels(),
            handle: handle.clone(),
            attributes,
            num_v4: usize::from(!kind.is_v6()),
            num_v6: usize::from(kind.is_v6()),
            use_: AllowedUse::Tunnel,
            pools: usable.iter().map(|p| p.metadata.name.clone()).collect(),
        };
        let assigned = ipam.auto_assign(&env, &req).await.map_err(ipam_error)?;
        let got = if kind.is_v6() {
            &assigned.v6
        } else {
            &assigned.v4
        };
        let Some((addr, _)) = got.first() else {
            return Err(AgentError::Tunnel(format!(
                "no {} tunnel address could be allocated for {name}",
                kind.as_str()
            )));
        };
        changes.allocated.push((kind, *addr));
        node_fields.push((kind, Some(*addr)));
    }
    let missing = |m: &Option<String>| m.as_deref().is_none_or(|m| m.parse::<MacAddr>().is_err());
    let mut new_mac = None;
    let mut new_mac_v6 = None;
    if !tunnel_pools(TunnelKind::Vxlan, pools, me).is_empty()
        && missing(&me.spec.vxlan_tunnel_mac_addr)
    {
        changes.mac_generated = true;
        new_mac = Some(random_mac()?.to_string());
    }
    if !tunnel_pools(TunnelKind::VxlanV6, pools, me).is_empty()
        && missing(&me.spec.vxlan_tunnel_mac_addr_v6)
    {
        changes.mac_generated = true;
        new_mac_v6 = Some(random_mac()?.to_string());
    }
    if node_fields.is_empty() && new_mac.is_none() && new_mac_v6.is_none() {
        return Ok(changes);
    }
    store
        .update_with(Kind::Node, None, &name, |old| {
            let Resource::Node(n) = old else {
                return Err(ValidationError::single("kind", "not a Node"));
            };
            let mut n = n.clone();
            for (kind, addr) in &node_fields {
                kind.set_node_address(&mut n, *addr);
            }
            if let Some(m) = &new_mac {
                n.spec.vxlan_tunnel_mac_addr = Some(m.clone());
            }
            if let Some(m) = &new_mac_v6 {
                n.spec.vxlan_tunnel_mac_addr_v6 = Some(m.clone());
            }
            Ok(Resource::Node(n))
        })
        .await?;
    Ok(changes)
}

fn ipam_error(e: tabby_ipam::IpamError) -> AgentError {
    AgentError::Tunnel(format!("IPAM: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one resource a YAML document holds.
    fn resource(yaml: &str) -> Resource {
        tabby_model::parse_manifest("test", yaml)
            .expect("manifest")
            .pop()
            .expect("one")
            .resource
    }

    fn node_from(yaml: &str) -> Node {
        match resource(yaml) {
            Resource::Node(n) => n,
            other => panic!("not a node: {other:?}"),
        }
    }

    fn pool(name: &str, cidr: &str, ipip: &str, vxlan: &str) -> IpPool {
        pool_with(name, cidr, ipip, vxlan, "")
    }

    fn pool_with(name: &str, cidr: &str, ipip: &str, vxlan: &str, extra: &str) -> IpPool {
        let yaml = format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}, ipipMode: {ipip}, vxlanMode: {vxlan}{extra}}}\n"
        );
        match resource(&yaml) {
            Resource::IpPool(p) => p,
            other => panic!("not a pool: {other:?}"),
        }
    }

    fn node(name: &str, ip: &str, vtep: Option<(&str, &str)>) -> Node {
        let mut spec = format!("{{bgp: {{ipv4Address: {ip}}}");
        if let Some((t, m)) = vtep {
            spec.push_str(&format!(
                ", ipv4VXLANTunnelAddr: {t}, vxlanTunnelMACAddr: \"{m}\""
            ));
        }
        spec.push('}');
        node_from(&format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        ))
    }

    fn block(cidr: &str, host: &str) -> Block {
        Block::new(cidr.parse().expect("cidr"), Some(host))
    }

    fn cluster() -> Vec<Node> {
        vec![
            node("a", "10.1.0.1/24", Some(("10.90.0.1", "02:00:00:00:00:0a"))),
            node(
                "b",
                "10.1.0.2/24",
                Some(("10.90.0.65", "02:00:00:00:00:0b")),
            ),
            node(
                "c",
                "10.2.0.3/24",
                Some(("10.90.0.129", "02:00:00:00:00:0c")),
            ),
            node("d", "10.2.0.4/24", None),
        ]
    }

    fn blocks() -> Vec<Block> {
        vec![
            block("10.90.0.0/26", "a"),
            block("10.90.0.64/26", "b"),
            block("10.90.0.128/26", "c"),
            block("10.90.0.192/26", "d"),
            block("10.91.0.0/26", "b"),
        ]
    }

    fn routes(plan: &VxlanPlan) -> Vec<(String, String, Encapsulation)> {
        plan.routes
            .iter()
            .map(|r| {
                (
                    r.destination.to_string(),
                    r.via.to_string(),
                    r.encapsulation,
                )
            })
            .collect()
    }

    #[test]
    fn vxlan_always_routes_every_remote_block_via_its_vtep() {
        let nodes = cluster();
        let pools = vec![
            pool("vx", "10.90.0.0/16", "Never", "Always"),
            pool("plain", "10.91.0.0/16", "Never", "Never"),
        ];
        let plan = vxlan_plan(&nodes[0], &nodes, &pools, &blocks(), false);
        assert_eq!(
            routes(&plan),
            vec![
                (
                    "10.90.0.64/26".into(),
                    "10.90.0.65".into(),
                    Encapsulation::Vxlan
                ),
                (
                    "10.90.0.128/26".into(),
                    "10.90.0.129".into(),
                    Encapsulation::Vxlan
                ),
            ]
        );
        // d has no VTEP yet: its block waits; the plain pool is BGP's.
        assert_eq!(plan.skipped.len(), 1, "{:?}", plan.skipped);
        assert!(plan.skipped[0].contains("10.90.0.192/26"));
        assert_eq!(plan.peers.len(), 2);
        assert_eq!(
            plan.local.map(|l| l.1.to_string()),
            Some("10.90.0.1".to_owned())
        );
    }

    #[test]
    fn vxlan_cross_subnet_is_native_inside_the_subnet() {
        let nodes = cluster();
        let pools = vec![pool("vx", "10.90.0.0/16", "Never", "CrossSubnet")];
        let plan = vxlan_plan(&nodes[0], &nodes, &pools, &blocks(), false);
        assert_eq!(
            routes(&plan),
            vec![
                (
                    "10.90.0.64/26".into(),
                    "10.1.0.2".into(),
                    Encapsulation::Native
                ),
                (
                    "10.90.0.128/26".into(),
                    "10.90.0.129".into(),
                    Encapsulation::Vxlan
                ),
            ]
        );
        // d is in the other subnet and has no VTEP: skipped, not native.
        assert_eq!(plan.skipped.len(), 1);
    }

    #[test]
    fn borrowed_addresses_get_host_routes_toward_the_borrower() {
        use tabby_ipam::AllocationAttribute;
        let nodes = cluster();
        let pools = vec![pool("vx", "10.90.0.0/16", "Never", "Always")];
        let attr = |node: &str| AllocationAttribute {
            handle_id: Some(format!("k8s-pod-network.{node}")),
            secondary: [("node".to_owned(), node.to_owned())].into(),
        };
        // b's block: one address of b's own, one borrowed by c, one by a
        // (this node: its pod route is the CNI plugin's).
        let mut bb = block("10.90.0.64/26", "b");
        for (ip, n) in [
            ("10.90.0.66", "b"),
            ("10.90.0.67", "c"),
            ("10.90.0.68", "a"),
        ] {
            assert!(bb.assign_ip(ip.parse().expect("ip"), attr(n)));
        }
        // a's own block, an address borrowed by c: a /32 beats a's blackhole.
        let mut ab = block("10.90.0.0/26", "a");
        assert!(ab.assign_ip("10.90.0.9".parse().expect("ip"), attr("c")));
        let plan = vxlan_plan(&nodes[0], &nodes, &pools, &[ab, bb], false);
        assert_eq!(
            routes(&plan),
            vec![
                (
                    "10.90.0.9/32".into(),
                    "10.90.0.129".into(),
                    Encapsulation::Vxlan
                ),
                (
                    "10.90.0.64/26".into(),
                    "10.90.0.65".into(),
                    Encapsulation::Vxlan
                ),
                (
                    "10.90.0.67/32".into(),
                    "10.90.0.129".into(),
                    Encapsulation::Vxlan
                ),
            ]
        );
    }

    #[test]
    fn ipv6_vxlan_uses_the_v6_addresses_vtep_and_pools() {
        let v6node = |name: &str, ip: &str, tunnel: &str, mac: &str| {
            node_from(&format!(
                "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{bgp: {{ipv4Address: 10.1.0.1/24, ipv6Address: \"{ip}\"}}, ipv6VXLANTunnelAddr: \"{tunnel}\", vxlanTunnelMACAddrV6: \"{mac}\"}}\n"
            ))
        };
        let nodes = vec![
            v6node("a", "fd00:1::1/64", "fd00:90::", "02:00:00:00:00:1a"),
            v6node("b", "fd00:1::2/64", "fd00:90::40", "02:00:00:00:00:1b"),
            v6node("c", "fd00:2::3/64", "fd00:90::80", "02:00:00:00:00:1c"),
        ];
        let pools = vec![
            pool("v4", "10.90.0.0/16", "Never", "Always"),
            pool("v6", "\"fd00:90::/48\"", "Never", "CrossSubnet"),
        ];
        let blocks = vec![
            block("fd00:90::40/122", "b"),
            block("fd00:90::80/122", "c"),
            block("10.90.0.64/26", "b"),
        ];
        let plan = vxlan_plan(&nodes[0], &nodes, &pools, &blocks, true);
        assert_eq!(
            routes(&plan),
            vec![
                (
                    "fd00:90::40/122".into(),
                    "fd00:1::2".into(),
                    Encapsulation::Native
                ),
                (
                    "fd00:90::80/122".into(),
                    "fd00:90::80".into(),
                    Encapsulation::Vxlan
                ),
            ]
        );
        assert_eq!(
            plan.pools,
            vec!["fd00:90::/48".parse::<IpNet>().expect("net")]
        );
        assert_eq!(plan.peers.len(), 2);
        assert_eq!(
            plan.local.map(|l| (l.0.to_string(), l.1.to_string())),
            Some(("fd00:1::1".to_owned(), "fd00:90::".to_owned()))
        );
        // The IPv4 plan sees no v4 VTEP on these nodes: its block waits.
        let v4 = vxlan_plan(&nodes[0], &nodes, &pools, &blocks, false);
        assert!(v4.routes.is_empty() && v4.skipped.len() == 1, "{v4:?}");
        assert_eq!(
            tunnel_pools(TunnelKind::VxlanV6, &pools, &nodes[0]).len(),
            1
        );
        assert_eq!(TunnelKind::VxlanV6.handle("a"), "vxlan-v6-tunnel-addr-a");
    }

    #[test]
    fn no_vxlan_pool_means_an_empty_plan() {
        let nodes = cluster();
        let pools = vec![pool("ip", "10.90.0.0/16", "CrossSubnet", "Never")];
        assert_eq!(
            vxlan_plan(&nodes[0], &nodes, &pools, &blocks(), false),
            VxlanPlan::default()
        );
    }

    #[test]
    fn fib_rules_list_encapsulated_pools_with_the_node_subnets() {
        let pools = vec![
            pool("ip", "10.90.0.0/16", "CrossSubnet", "Never"),
            pool("vx", "10.92.0.0/16", "Never", "Always"),
            pool("plain", "10.91.0.0/16", "Never", "Never"),
        ];
        let subnets = own_subnets(&cluster()[0]);
        assert_eq!(subnets, vec!["10.1.0.0/24".parse::<IpNet>().expect("net")]);
        let rules = fib_encapsulation(&pools, &subnets, false).expect("rules");
        assert_eq!(rules.pools.len(), 2);
        assert_eq!(rules.pools[0].ipip_mode, DpMode::CrossSubnet);
        assert_eq!(rules.pools[1].vxlan_mode, DpMode::Always);
        assert!(!rules.ipip);
        assert_eq!(fib_encapsulation(&pools[2..], &subnets, true), None);
    }

    #[test]
    fn tunnel_pools_follow_mode_selector_and_allowed_uses() {
        let me = cluster()[0].clone();
        let selected_out = pool_with(
            "other",
            "10.93.0.0/16",
            "Always",
            "Never",
            ", nodeSelector: \"rack == 'x'\"",
        );
        let pools = vec![
            pool("ip", "10.90.0.0/16", "CrossSubnet", "Never"),
            pool("vx", "10.92.0.0/16", "Never", "Always"),
            selected_out,
        ];
        let names = |k| -> Vec<String> {
            tunnel_pools(k, &pools, &me)
                .iter()
                .map(|p| p.metadata.name.clone())
                .collect()
        };
        assert_eq!(names(TunnelKind::Ipip), vec!["ip".to_owned()]);
        assert_eq!(names(TunnelKind::Vxlan), vec!["vx".to_owned()]);
    }

    #[test]
    fn the_agent_owns_its_onlink_routes_and_vxlan_pool_routes_only() {
        let pools = vec!["10.90.0.0/16".parse::<IpNet>().expect("net")];
        let block: IpNet = "10.90.0.64/26".parse().expect("net");
        let other: IpNet = "10.91.0.64/26".parse().expect("net");
        let gw: IpAddr = "10.1.0.2".parse().expect("ip");
        // Its own: on-link, not via tunl0 (index 5).
        assert!(agent_owns(&onlink_route(other, gw, 3), Some(5), &pools));
        assert!(!agent_owns(&onlink_route(other, gw, 5), Some(5), &pools));
        // A speaker gateway route: only inside a VXLAN pool.
        assert!(agent_owns(&Route::via(block, gw), Some(5), &pools));
        assert!(!agent_owns(&Route::via(other, gw), Some(5), &pools));
        // Never blackholes or device routes (the agent's blackholes and the
        // CNI plugin's pod routes).
        assert!(!agent_owns(&Route::blackhole(block), None, &pools));
        assert!(!agent_owns(
            &Route::dev("10.90.0.65/32".parse().expect("net"), 4),
            None,
            &pools
        ));
    }

    #[test]
    fn handles_and_attributes_are_calicos() {
        assert_eq!(TunnelKind::Ipip.handle("n1"), "ipip-tunnel-addr-n1");
        assert_eq!(TunnelKind::Vxlan.handle("n1"), "vxlan-tunnel-addr-n1");
        assert_eq!(TunnelKind::Vxlan.attribute_type(), "vxlanTunnelAddress");
        let mac = random_mac().expect("mac");
        assert_eq!(mac.0[0] & 0x03, 0x02, "locally administered unicast");
    }
}
