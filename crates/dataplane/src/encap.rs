//! Encapsulation of pod traffic between nodes, Calico's way: the pure
//! per-route decision (native, IPIP or VXLAN) from a pool's `ipipMode` /
//! `vxlanMode` and the node's own subnets, Calico's device names and
//! numbers, the kernel routes a tunnel uses, and the programming of the
//! tunnel devices (`tunl0`, `vxlan.calico`) and of VXLAN peers (a
//! permanent neighbour entry and an FDB entry per remote VTEP).
//!
//! The node agent and `bgpd`'s FIB sync both decide with
//! [`route_encapsulation`], so the routes the speaker installs for IPIP
//! pools and the ones the agent installs for VXLAN pools follow one rule.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::link::{IpipTunnel, MacAddr, Vxlan};
use crate::netlink::Netlink;
use crate::route::{NextHop, Route, RouteKind};
use crate::{Error, Result};

/// Calico's IPIP device (the kernel's fallback `ipip` device).
pub const IPIP_DEVICE: &str = "tunl0";
/// Calico's IPv4 VXLAN device.
pub const VXLAN_DEVICE: &str = "vxlan.calico";
/// Calico's IPv6 VXLAN device.
pub const VXLAN_V6_DEVICE: &str = "vxlan-v6.calico";
/// Calico's IPv4 VXLAN network identifier.
pub const VXLAN_VNI: u32 = 4096;
/// Calico's IPv6 VXLAN network identifier.
pub const VXLAN_V6_VNI: u32 = 6096;
/// The VXLAN UDP port (IANA's, Calico's default).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes IPIP adds to a packet (the outer IPv4 header).
pub const IPIP_OVERHEAD: u32 = 20;
/// Bytes VXLAN over IPv4 adds (outer IPv4, UDP, VXLAN, inner Ethernet).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Bytes VXLAN over IPv6 adds (outer IPv6, UDP, VXLAN, inner Ethernet).
pub const VXLAN_V6_OVERHEAD: u32 = 70;

/// A pool's `ipipMode` or `vxlanMode`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum EncapMode {
    /// No encapsulation.
    #[default]
    Never,
    /// Encapsulate toward every node.
    Always,
    /// Encapsulate only toward nodes outside this node's own subnet.
    CrossSubnet,
}

/// How one route toward a pod block is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encapsulation {
    /// Routed natively via the next hop.
    Native,
    /// Via `tunl0`, IPv4 in IPv4, to the next hop.
    Ipip,
    /// Via the VXLAN device to the remote node's VTEP.
    Vxlan,
}

/// True when `next_hop` lies in one of `own_subnets` (the subnets of this
/// node's own addresses, `spec.bgp.ipv4Address` / `ipv6Address`): the
/// CrossSubnet test ("same subnet": reachable without a router).
pub fn same_subnet(own_subnets: &[IpNet], next_hop: IpAddr) -> bool {
    own_subnets.iter().any(|s| s.contains(&next_hop))
}

/// The encapsulation of a route toward a block of a pool with these modes
/// whose next hop (the owning node's address) is `next_hop`, as Calico
/// does it: a VXLAN pool encapsulates always, or with CrossSubnet only
/// when the next hop is outside this node's subnets; an IPIP pool the
/// same, for IPv4 next hops only (IPIP carries IPv4; an IPv6 next hop is
/// routed natively); `Never` for both is native.
pub fn route_encapsulation(
    ipip: EncapMode,
    vxlan: EncapMode,
    own_subnets: &[IpNet],
    next_hop: IpAddr,
) -> Encapsulation {
    let tunnel_unless_same = |tunnel| {
        if same_subnet(own_subnets, next_hop) {
            Encapsulation::Native
        } else {
            tunnel
        }
    };
    match (vxlan, ipip) {
        (EncapMode::Always, _) => Encapsulation::Vxlan,
        (EncapMode::CrossSubnet, _) => tunnel_unless_same(Encapsulation::Vxlan),
        (EncapMode::Never, _) if next_hop.is_ipv6() => Encapsulation::Native,
        (EncapMode::Never, EncapMode::Always) => Encapsulation::Ipip,
        (EncapMode::Never, EncapMode::CrossSubnet) => tunnel_unless_same(Encapsulation::Ipip),
        (EncapMode::Never, EncapMode::Never) => Encapsulation::Native,
    }
}

/// `<destination> via <next_hop> dev <device> onlink`: the route through a
/// tunnel device (`tunl0` with the remote node's address, the VXLAN device
/// with the remote VTEP's tunnel address) or, natively, through the
/// underlay interface.
pub fn onlink_route(destination: IpNet, next_hop: IpAddr, device: u32) -> Route {
    Route::multipath(
        destination,
        vec![NextHop::via(next_hop).with_device(device).with_onlink()],
    )
}

/// True for a route made by [`onlink_route`] (unicast, every next hop a
/// gateway on-link) whose devices are not `except` (the node agent's
/// tunnel routes are these, minus `bgpd`'s IPIP routes via `tunl0`).
pub fn is_onlink_route(r: &Route, except: Option<u32>) -> bool {
    r.kind == RouteKind::Unicast
        && !r.next_hops.is_empty()
        && r.next_hops
            .iter()
            .all(|h| h.gateway.is_some() && h.onlink && (except.is_none() || h.device != except))
}

/// A remote node's VTEP, as its Node resource records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VxlanPeer {
    /// The node's underlay address (the FDB entry's destination).
    pub node_ip: IpAddr,
    /// Its VXLAN tunnel address (`ipv4VXLANTunnelAddr`).
    pub tunnel_address: IpAddr,
    /// Its VXLAN device's MAC (`vxlanTunnelMACAddr`).
    pub mac: MacAddrOrd,
}

/// A [`MacAddr`] that sorts (peers are kept in sorted sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddrOrd(pub [u8; 6]);

impl From<MacAddr> for MacAddrOrd {
    fn from(m: MacAddr) -> Self {
        MacAddrOrd(m.0)
    }
}

impl From<MacAddrOrd> for MacAddr {
    fn from(m: MacAddrOrd) -> Self {
        MacAddr(m.0)
    }
}

/// This node's VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    /// Device name ([`VXLAN_DEVICE`]).
    pub name: String,
    /// VNI ([`VXLAN_VNI`]).
    pub vni: u32,
    /// This node's underlay address (the outer source).
    pub local: IpAddr,
    /// The underlay interface.
    pub underlay: Option<u32>,
    /// This node's VTEP MAC (`vxlanTunnelMACAddr`).
    pub mac: MacAddr,
    /// This node's tunnel address, put on the device as a /32 (/128).
    pub address: IpAddr,
    /// MTU; the underlay's minus [`VXLAN_OVERHEAD`] when `None`.
    pub mtu: Option<u32>,
}

/// What [`Netlink::reconcile_vxlan_peers`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerReport {
    /// Neighbour and FDB entries written.
    pub written: usize,
    /// Stale entries removed.
    pub removed: usize,
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

impl Netlink {
    /// Makes sure `tunl0` exists, is up, and holds exactly `address` as a
    /// /32 (none when `None`); returns its index. A kernel without IPIP
    /// gives [`Error::KernelLacks`] and changes nothing.
    pub fn ensure_ipip_device(
        &mut self,
        address: Option<Ipv4Addr>,
        mtu: Option<u32>,
    ) -> Result<u32> {
        let index = self.ensure_ipip(&IpipTunnel {
            name: IPIP_DEVICE.into(),
            local: None,
            mtu,
        })?;
        self.set_only_addresses(
            index,
            &address
                .map(|a| host_net(a.into()))
                .into_iter()
                .collect::<Vec<_>>(),
        )?;
        self.set_up(index)?;
        Ok(index)
    }

    /// Makes sure the VXLAN device exists as `dev` says (kept if it
    /// already does: no interruption), is up and holds exactly its tunnel
    /// address; returns its index.
    pub fn ensure_vxlan_device(&mut self, dev: &VxlanDevice) -> Result<u32> {
        let index = self.ensure_vxlan(&Vxlan {
            name: dev.name.clone(),
            vni: dev.vni,
            local: Some(dev.local),
            underlay: dev.underlay,
            port: VXLAN_PORT,
            learning: false,
            mtu: dev.mtu,
            mac: Some(dev.mac),
        })?;
        self.set_only_addresses(index, &[host_net(dev.address)])?;
        self.set_up(index)?;
        Ok(index)
    }

    /// Deletes the link `name` if it exists (a tunnel device no pool needs
    /// any more); routes through it go with it.
    pub fn delete_link_named(&mut self, name: &str) -> Result<bool> {
        match self.link(name)? {
            Some(l) => {
                self.delete_link(l.index)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Leaves exactly `wanted` on link `index` (IPv6 link-local addresses
    /// are kept).
    pub fn set_only_addresses(&mut self, index: u32, wanted: &[IpNet]) -> Result<()> {
        let have = self.addresses(index)?;
        for a in &have {
            let link_local = matches!(a.addr(), IpAddr::V6(v6) if v6.is_unicast_link_local());
            if !wanted.contains(a) && !link_local {
                self.delete_address(index, *a)?;
            }
        }
        for w in wanted {
            if !have.contains(w) {
                self.add_address(index, *w)?;
            }
        }
        Ok(())
    }

    /// The index of the interface holding `ip` (the underlay of a node
    /// address), if any.
    pub fn link_with_address(&mut self, ip: IpAddr) -> Result<Option<u32>> {
        for l in self.links()? {
            if self.addresses(l.index)?.iter().any(|a| a.addr() == ip) {
                return Ok(Some(l.index));
            }
        }
        Ok(None)
    }

    /// Brings the permanent neighbour and FDB entries of VXLAN link
    /// `index` to `peers`: per peer, `tunnel address -> MAC` (ARP/NDP) and
    /// `MAC -> node address` (FDB); permanent entries of other peers are
    /// removed, learned ones left to the kernel.
    pub fn reconcile_vxlan_peers(&mut self, index: u32, peers: &[VxlanPeer]) -> Result<PeerReport> {
        let mut report = PeerReport::default();
        for n in self.neighbours(index)? {
            if !n.permanent {
                continue;
            }
            let wanted = peers
                .iter()
                .any(|p| p.tunnel_address == n.ip && n.mac == Some(p.mac.into()));
            if !wanted {
                self.delete_neighbour(index, n.ip)?;
                report.removed += 1;
            }
        }
        for f in self.fdb(index)? {
            let Some(remote) = f.remote else { continue };
            if !f.permanent {
                continue;
            }
            let wanted = peers
                .iter()
                .any(|p| p.node_ip == remote && MacAddr::from(p.mac) == f.mac);
            if !wanted {
                self.delete_fdb(index, f.mac, remote)?;
                report.removed += 1;
            }
        }
        for p in peers {
            if p.tunnel_address.is_ipv4() != p.node_ip.is_ipv4() {
                return Err(Error::Invalid {
                    field: "vxlan peer".into(),
                    reason: format!(
                        "tunnel address {} and node address {} are of different families",
                        p.tunnel_address, p.node_ip
                    ),
                });
            }
            self.replace_neighbour(index, p.tunnel_address, p.mac.into())?;
            self.replace_fdb(index, p.mac.into(), p.node_ip)?;
            report.written += 2;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EncapMode::{Always, CrossSubnet, Never};
    use Encapsulation::{Ipip, Native, Vxlan};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn subnets() -> Vec<IpNet> {
        vec![
            "10.20.0.0/23".parse().expect("v4 subnet"),
            "fd00:20::/64".parse().expect("v6 subnet"),
        ]
    }

    /// (ipipMode, vxlanMode, next hop, expected) for one address family.
    fn check(cases: &[(EncapMode, EncapMode, &str, Encapsulation)]) {
        for (ipip, vxlan, nh, want) in cases {
            assert_eq!(
                route_encapsulation(*ipip, *vxlan, &subnets(), ip(nh)),
                *want,
                "ipipMode {ipip:?} vxlanMode {vxlan:?} next hop {nh}"
            );
        }
    }

    // Same subnet: 10.20.1.85 is in 10.20.0.0/23 (the seed's nodes);
    // different subnet: 10.30.0.5.
    #[test]
    fn ipv4_every_mode_same_and_different_subnet() {
        check(&[
            (Never, Never, "10.20.1.85", Native),
            (Never, Never, "10.30.0.5", Native),
            (Always, Never, "10.20.1.85", Ipip),
            (Always, Never, "10.30.0.5", Ipip),
            (CrossSubnet, Never, "10.20.1.85", Native),
            (CrossSubnet, Never, "10.30.0.5", Ipip),
            (Never, Always, "10.20.1.85", Vxlan),
            (Never, Always, "10.30.0.5", Vxlan),
            (Never, CrossSubnet, "10.20.1.85", Native),
            (Never, CrossSubnet, "10.30.0.5", Vxlan),
        ]);
    }

    #[test]
    fn ipv6_every_mode_same_and_different_subnet() {
        // IPIP carries IPv4 only: an IPv6 next hop stays native.
        check(&[
            (Never, Never, "fd00:20::5", Native),
            (Never, Never, "fd00:30::5", Native),
            (Always, Never, "fd00:20::5", Native),
            (Always, Never, "fd00:30::5", Native),
            (CrossSubnet, Never, "fd00:20::5", Native),
            (CrossSubnet, Never, "fd00:30::5", Native),
            (Never, Always, "fd00:20::5", Vxlan),
            (Never, Always, "fd00:30::5", Vxlan),
            (Never, CrossSubnet, "fd00:20::5", Native),
            (Never, CrossSubnet, "fd00:30::5", Vxlan),
        ]);
    }

    #[test]
    fn the_subnet_boundary_is_the_node_address_prefix() {
        // 10.20.0.0/23 ends at 10.20.1.255.
        check(&[
            (CrossSubnet, Never, "10.20.1.255", Native),
            (CrossSubnet, Never, "10.20.2.0", Ipip),
            (CrossSubnet, Never, "10.19.255.255", Ipip),
        ]);
        // A node address without a subnet (/32): nothing is "same subnet".
        let host: Vec<IpNet> = vec!["10.20.1.84/32".parse().expect("net")];
        assert_eq!(
            route_encapsulation(CrossSubnet, Never, &host, ip("10.20.1.85")),
            Ipip
        );
        assert_eq!(
            route_encapsulation(Never, CrossSubnet, &[], ip("10.20.1.85")),
            Vxlan
        );
    }

    #[test]
    fn an_ipv4_subnet_never_matches_an_ipv6_next_hop() {
        let v4only: Vec<IpNet> = vec!["10.20.0.0/23".parse().expect("net")];
        assert_eq!(
            route_encapsulation(Never, CrossSubnet, &v4only, ip("fd00:20::5")),
            Vxlan
        );
    }

    #[test]
    fn onlink_routes_are_recognised_and_the_excepted_device_is_not() {
        let r = onlink_route("10.244.1.0/26".parse().expect("net"), ip("10.20.1.85"), 7);
        assert!(is_onlink_route(&r, None));
        assert!(is_onlink_route(&r, Some(3)));
        assert!(!is_onlink_route(&r, Some(7)));
        let plain = Route::via("10.244.1.0/26".parse().expect("net"), ip("10.20.1.85"));
        assert!(!is_onlink_route(&plain, None));
        assert!(!is_onlink_route(
            &Route::blackhole("10.244.1.0/26".parse().expect("net")),
            None
        ));
    }
}
