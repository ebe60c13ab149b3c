//! Calico's routed pod wiring, over `tabby-dataplane`:
//!
//! - a veth pair whose host end is named from the container
//!   ([`crate::naming::host_veth_name`]) with the fixed MAC
//!   `ee:ee:ee:ee:ee:ee`, and whose pod end (`CNI_IFNAME`) is created
//!   directly inside the pod's namespace; both with the configured MTU;
//! - in the pod: the addresses as /32 and /128, a link-scope route to
//!   169.254.1.1 and the default route via it; for IPv6 the default route
//!   via fe80::1;
//! - on the host: proxy ARP (so the host answers for 169.254.1.1), proxy
//!   NDP, fe80::1 on the host end for IPv6 pods, and a /32 (/128) route to
//!   each pod address through the host end, tagged `proto tabby`.
//!
//! No bridge, no gateway address shared between pods: every pod is one
//! routed host route, which the agent advertises as part of its block.
//!
//! The caller's thread stays in the node's namespace; the pod side is
//! programmed through a netlink socket opened inside the pod's namespace
//! (`tabby_dataplane::Netns::netlink`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tabby_dataplane::sysctl::{self, Family};
use tabby_dataplane::{self as dp, MacAddr, Netlink, Netns, NextHop, Route, VethPair};

/// The IPv4 gateway every pod routes through (answered by proxy ARP).
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The IPv6 gateway every pod routes through (a link-local address on the
/// host end of each pod's veth).
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The host end's MAC (Calico's), the same on every pod's veth so the pod's
/// neighbour entry for its gateway never changes.
pub const HOST_MAC: MacAddr = MacAddr([0xee; 6]);

/// One pod interface to build.
#[derive(Debug, Clone)]
pub struct PodInterface<'a> {
    /// Host end name (`tby…`).
    pub host_ifname: &'a str,
    /// Pod end name (`CNI_IFNAME`).
    pub pod_ifname: &'a str,
    /// MTU of both ends.
    pub mtu: u32,
    /// The pod's addresses (host prefixes: /32, /128).
    pub addresses: &'a [IpAddr],
}

/// What [`attach`] built, for the CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The host end's MAC.
    pub host_mac: MacAddr,
    /// The pod end's MAC.
    pub pod_mac: Option<MacAddr>,
}

/// A wiring step that failed, naming what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct WiringError {
    /// The step (`create veth tby… / eth0`, `pod default route`, ...).
    pub step: String,
    /// The dataplane's error.
    #[source]
    pub source: dp::Error,
}

fn at(step: impl Into<String>) -> impl FnOnce(dp::Error) -> WiringError {
    let step = step.into();
    move |source| WiringError { step, source }
}

/// The host route to a pod address.
fn host_route(addr: IpAddr, host_index: u32) -> Route {
    Route::dev(IpNet::from(addr), host_index)
}

/// Builds the pod's interface. On error everything this call created is
/// removed again (the host end, which takes the pod end and the host routes
/// with it). A host end left by an earlier attempt for the same container is
/// replaced. `pod_socket` is a netlink socket already open inside the pod's
/// namespace (a caller may open it on another thread while it does other
/// work), or `None` to open one here.
pub fn attach(
    host: &mut Netlink,
    netns: &Netns,
    pod_socket: Option<Netlink>,
    pod: &PodInterface<'_>,
) -> Result<Attached, WiringError> {
    let pair = VethPair {
        name: pod.host_ifname.to_owned(),
        peer: pod.pod_ifname.to_owned(),
        mtu: Some(pod.mtu),
        mac: Some(HOST_MAC),
        peer_mac: None,
    };
    let host_index = match host.create_veth(&pair, Some(netns)) {
        Ok(i) => i,
        Err(dp::Error::Kernel { source, .. }) if source.is_exists() => {
            // A leftover of an earlier ADD of this container (the runtime
            // retried, or the plugin died half way): start again from clean.
            if let Some(old) = host
                .link(pod.host_ifname)
                .map_err(at("look up old host veth"))?
            {
                host.delete_link(old.index)
                    .map_err(at("delete old host veth"))?;
            }
            host.create_veth(&pair, Some(netns)).map_err(at(format!(
                "create veth {} / {}",
                pod.host_ifname, pod.pod_ifname
            )))?
        }
        Err(e) => {
            return Err(at(format!(
                "create veth {} / {}",
                pod.host_ifname, pod.pod_ifname
            ))(e));
        }
    };
    match finish(host, host_index, netns, pod_socket, pod) {
        Ok(a) => Ok(a),
        Err(e) => {
            let _ = host.delete_link(host_index);
            Err(e)
        }
    }
}

fn finish(
    host: &mut Netlink,
    host_index: u32,
    netns: &Netns,
    pod_socket: Option<Netlink>,
    pod: &PodInterface<'_>,
) -> Result<Attached, WiringError> {
    let has_v6 = pod.addresses.iter().any(IpAddr::is_ipv6);
    let has_v4 = pod.addresses.iter().any(IpAddr::is_ipv4);
    let h = pod.host_ifname;
    if has_v4 {
        sysctl::set_proxy_arp(h, true).map_err(at(format!("proxy_arp on {h}")))?;
        // Answer ARP at once instead of after a random delay of up to 0.8 s.
        let delay = PathBuf::from(format!("/proc/sys/net/ipv4/neigh/{h}/proxy_delay"));
        sysctl::write(&delay, "0").map_err(at(format!("proxy_delay on {h}")))?;
    }
    if has_v6 {
        // fe80::1 must answer at once, not after duplicate address detection.
        let dad = sysctl::conf_path(Family::V6, h, "accept_dad").map_err(at("accept_dad path"))?;
        sysctl::write(&dad, "0").map_err(at(format!("accept_dad on {h}")))?;
        sysctl::set_proxy_ndp(h, true).map_err(at(format!("proxy_ndp on {h}")))?;
    }
    host.set_up(host_index).map_err(at(format!("set {h} up")))?;
    if has_v6 {
        let gw = IpNet::V6(Ipv6Net::new(GATEWAY_V6, 64).map_err(|e| at("fe80::1/64")(invalid(e)))?);
        host.add_address(host_index, gw)
            .map_err(at(format!("add fe80::1 to {h}")))?;
    }

    // The pod side, through a socket inside the pod's namespace.
    let mut podnl = match pod_socket {
        Some(s) => s,
        None => netns
            .netlink()
            .map_err(at("open netlink in the pod namespace"))?,
    };
    let p = pod.pod_ifname;
    let link = podnl
        .require_link(p)
        .map_err(at(format!("find {p} in the pod namespace")))?;
    if has_v6 {
        let dad = sysctl::conf_path(Family::V6, p, "accept_dad").map_err(at("accept_dad path"))?;
        netns
            .run(|| sysctl::write(&dad, "0"))
            .map_err(at("enter the pod namespace"))?
            .map_err(at(format!("accept_dad on {p}")))?;
    }
    podnl
        .set_up(link.index)
        .map_err(at(format!("set {p} up")))?;
    // The gateway's MAC is known (every host end has HOST_MAC): a permanent
    // neighbour entry saves the pod its first ARP/NDP exchange and works
    // even where proxy ARP would not answer (a host without a default route).
    if has_v4 {
        podnl
            .replace_neighbour(link.index, IpAddr::V4(GATEWAY_V4), HOST_MAC)
            .map_err(at(format!("pod neighbour {GATEWAY_V4}")))?;
    }
    if has_v6 {
        podnl
            .replace_neighbour(link.index, IpAddr::V6(GATEWAY_V6), HOST_MAC)
            .map_err(at(format!("pod neighbour {GATEWAY_V6}")))?;
    }
    for addr in pod.addresses {
        podnl
            .add_address(link.index, IpNet::from(*addr))
            .map_err(at(format!("add {addr} to {p}")))?;
    }
    if has_v4 {
        let gw = IpAddr::V4(GATEWAY_V4);
        podnl
            .replace_route(&Route::dev(IpNet::from(gw), link.index))
            .map_err(at(format!("pod route {GATEWAY_V4} dev {p}")))?;
        let default = Route::multipath(
            IpNet::V4(Ipv4Net::default()),
            vec![NextHop::via(gw).with_device(link.index)],
        );
        podnl
            .replace_route(&default)
            .map_err(at(format!("pod default route via {GATEWAY_V4}")))?;
    }
    if has_v6 {
        let default = Route::multipath(
            IpNet::V6(Ipv6Net::default()),
            vec![NextHop::via(IpAddr::V6(GATEWAY_V6)).with_device(link.index)],
        );
        podnl
            .replace_route(&default)
            .map_err(at(format!("pod default route via {GATEWAY_V6}")))?;
    }

    // Host routes last: once they exist, traffic flows to the pod.
    for addr in pod.addresses {
        host.replace_route(&host_route(*addr, host_index))
            .map_err(at(format!("host route {addr} dev {h}")))?;
    }
    Ok(Attached {
        host_mac: HOST_MAC,
        pod_mac: link.mac,
    })
}

/// Removes a pod's interface from the host side (the pod end and the host
/// routes go with it). Absent already is success.
pub fn detach(host: &mut Netlink, host_ifname: &str) -> Result<bool, WiringError> {
    match host
        .link(host_ifname)
        .map_err(at(format!("look up {host_ifname}")))?
    {
        Some(l) => match host.delete_link(l.index) {
            Ok(()) => Ok(true),
            Err(dp::Error::Kernel { source, .. }) if source.is_not_found() => Ok(false),
            Err(e) => Err(at(format!("delete {host_ifname}"))(e)),
        },
        None => Ok(false),
    }
}

/// Verifies what [`attach`] built; the error names the first thing missing.
pub fn check(host: &mut Netlink, netns: &Netns, pod: &PodInterface<'_>) -> Result<(), String> {
    let h = pod.host_ifname;
    let hl = host
        .link(h)
        .map_err(|e| format!("host veth {h}: {e}"))?
        .ok_or_else(|| format!("host veth {h} is missing"))?;
    if !hl.up {
        return Err(format!("host veth {h} is down"));
    }
    let routes = host.routes(None).map_err(|e| format!("host routes: {e}"))?;
    for addr in pod.addresses {
        let want = host_route(*addr, hl.index);
        if !routes.iter().any(|r| r.satisfies(&want)) {
            return Err(format!("host route {addr} dev {h} is missing"));
        }
    }
    let mut podnl = netns.netlink().map_err(|e| format!("pod namespace: {e}"))?;
    let p = pod.pod_ifname;
    let pl = podnl
        .link(p)
        .map_err(|e| format!("pod interface {p}: {e}"))?
        .ok_or_else(|| format!("pod interface {p} is missing"))?;
    if !pl.up {
        return Err(format!("pod interface {p} is down"));
    }
    let addrs = podnl
        .addresses(pl.index)
        .map_err(|e| format!("addresses of {p}: {e}"))?;
    for addr in pod.addresses {
        if !addrs.iter().any(|a| a.addr() == *addr) {
            return Err(format!("address {addr} is missing from {p}"));
        }
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> dp::Error {
    dp::Error::Invalid {
        field: "address".into(),
        reason: e.to_string(),
    }
}
