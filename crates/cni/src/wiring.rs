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
use tabby_dataplane::{self as dp, LinkChange, MacAddr, Netlink, Netns, NextHop, Route, VethPair};

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
    /// TX/RX queues of each end.
    pub queues: u32,
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

/// Which address families a host end has been prepared for (its sysctls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Families {
    /// IPv4: proxy ARP answering at once.
    pub v4: bool,
    /// IPv6: proxy NDP, no duplicate address detection.
    pub v6: bool,
}

impl Families {
    /// The families of `addresses`.
    pub fn of(addresses: &[IpAddr]) -> Families {
        Families {
            v4: addresses.iter().any(IpAddr::is_ipv4),
            v6: addresses.iter().any(IpAddr::is_ipv6),
        }
    }
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
    let families = Families::of(pod.addresses);
    let end = create_host_end(host, netns, pod, None, families)?;
    match configure(host, end, families, netns, pod_socket, pod) {
        Ok(a) => Ok(a),
        Err(e) => {
            let _ = host.delete_link(end.index);
            Err(e)
        }
    }
}

/// What [`create_host_end`] made: the host end, and what is known of the
/// pod end without asking the pod's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostEnd {
    /// The host end's index.
    pub index: u32,
    /// The pod end's index in the pod's namespace (the host end's
    /// `IFLA_LINK`), if the kernel reported it.
    pub pod_index: Option<u32>,
    /// The pod end's MAC, if the caller chose it.
    pub pod_mac: Option<MacAddr>,
}

/// The first half of [`attach`], which needs no address yet (so a caller
/// can run it while IPAM works): creates the veth pair, the host end up, with
/// the pod end inside the pod's namespace, and prepares the host end for
/// `families`. `pod_mac` is the pod end's MAC (`None`: the kernel's
/// choice). On error nothing is left behind; on success the caller owns the
/// host end (delete it on a later failure).
pub fn create_host_end(
    host: &mut Netlink,
    netns: &Netns,
    pod: &PodInterface<'_>,
    pod_mac: Option<MacAddr>,
    families: Families,
) -> Result<HostEnd, WiringError> {
    let pair = VethPair {
        name: pod.host_ifname.to_owned(),
        peer: pod.pod_ifname.to_owned(),
        mtu: Some(pod.mtu),
        mac: Some(HOST_MAC),
        peer_mac: pod_mac,
        // The host end up inside the creating request (one round trip
        // less); the pod end goes up in the pod side's burst.
        up: true,
        queues: Some(pod.queues),
    };
    let created = match host.create_veth(&pair, Some(netns)) {
        Ok(link) => link,
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
    crate::trace::mark("veth-create");
    match prepare_host_end(pod.host_ifname, families) {
        Ok(()) => {
            crate::trace::mark("host-prepare");
            Ok(HostEnd {
                index: created.index,
                pod_index: created.linked,
                pod_mac,
            })
        }
        Err(e) => {
            let _ = host.delete_link(created.index);
            Err(e)
        }
    }
}

/// The host end's sysctls for `families`.
fn prepare_host_end(h: &str, families: Families) -> Result<(), WiringError> {
    if families.v4 {
        sysctl::set_proxy_arp(h, true).map_err(at(format!("proxy_arp on {h}")))?;
        // Answer ARP at once instead of after a random delay of up to 0.8 s.
        let delay = PathBuf::from(format!("/proc/sys/net/ipv4/neigh/{h}/proxy_delay"));
        sysctl::write(&delay, "0").map_err(at(format!("proxy_delay on {h}")))?;
    }
    if families.v6 {
        // fe80::1 must answer at once, not after duplicate address detection.
        let dad = sysctl::conf_path(Family::V6, h, "accept_dad").map_err(at("accept_dad path"))?;
        sysctl::write(&dad, "0").map_err(at(format!("accept_dad on {h}")))?;
        sysctl::set_proxy_ndp(h, true).map_err(at(format!("proxy_ndp on {h}")))?;
    }
    Ok(())
}

/// The second half of [`attach`], once the addresses are known: the pod
/// side (through `pod_socket`, a socket inside the pod's namespace, or one
/// opened here; the pod end is looked up there only if `end` does not know
/// its index and MAC) and the host routes. `prepared` says which families
/// [`create_host_end`] prepared the host end for; any other family of
/// `pod.addresses` is prepared here. The caller deletes the host end on
/// error.
pub fn configure(
    host: &mut Netlink,
    end: HostEnd,
    prepared: Families,
    netns: &Netns,
    pod_socket: Option<Netlink>,
    pod: &PodInterface<'_>,
) -> Result<Attached, WiringError> {
    let wanted = Families::of(pod.addresses);
    let (has_v4, has_v6) = (wanted.v4, wanted.v6);
    let h = pod.host_ifname;
    let host_index = end.index;
    prepare_host_end(
        h,
        Families {
            v4: has_v4 && !prepared.v4,
            v6: has_v6 && !prepared.v6,
        },
    )?;
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
    let (pod_index, pod_mac) = match (end.pod_index, end.pod_mac) {
        (Some(index), Some(mac)) => (index, Some(mac)),
        _ => {
            let link = podnl
                .require_link(p)
                .map_err(at(format!("find {p} in the pod namespace")))?;
            (link.index, link.mac)
        }
    };
    if has_v6 {
        let dad = sysctl::conf_path(Family::V6, p, "accept_dad").map_err(at("accept_dad path"))?;
        netns
            .run(|| sysctl::write(&dad, "0"))
            .map_err(at("enter the pod namespace"))?
            .map_err(at(format!("accept_dad on {p}")))?;
    }
    // One pipelined burst: up, the gateway's neighbour entry, the
    // addresses, the routes. The gateway's MAC is known (every host end has
    // HOST_MAC): a permanent neighbour entry saves the pod its first ARP/NDP
    // exchange and works even where proxy ARP would not answer (a host
    // without a default route).
    let mut changes = vec![LinkChange::Up(pod_index)];
    if has_v4 {
        changes.push(LinkChange::ReplaceNeighbour(
            pod_index,
            IpAddr::V4(GATEWAY_V4),
            HOST_MAC,
        ));
    }
    if has_v6 {
        changes.push(LinkChange::ReplaceNeighbour(
            pod_index,
            IpAddr::V6(GATEWAY_V6),
            HOST_MAC,
        ));
    }
    for addr in pod.addresses {
        changes.push(LinkChange::AddAddress(pod_index, IpNet::from(*addr)));
    }
    if has_v4 {
        let gw = IpAddr::V4(GATEWAY_V4);
        changes.push(LinkChange::ReplaceRoute(Route::dev(
            IpNet::from(gw),
            pod_index,
        )));
        changes.push(LinkChange::ReplaceRoute(Route::multipath(
            IpNet::V4(Ipv4Net::default()),
            vec![NextHop::via(gw).with_device(pod_index)],
        )));
    }
    if has_v6 {
        changes.push(LinkChange::ReplaceRoute(Route::multipath(
            IpNet::V6(Ipv6Net::default()),
            vec![NextHop::via(IpAddr::V6(GATEWAY_V6)).with_device(pod_index)],
        )));
    }
    podnl
        .apply_link_changes(&changes)
        .map_err(at(format!("configure {p} in the pod namespace")))?;
    crate::trace::mark("pod-side");

    // Host routes last: once they exist, traffic flows to the pod.
    let routes: Vec<LinkChange> = pod
        .addresses
        .iter()
        .map(|a| LinkChange::ReplaceRoute(host_route(*a, host_index)))
        .collect();
    host.apply_link_changes(&routes)
        .map_err(at(format!("host routes to {h}")))?;
    crate::trace::mark("host-routes");
    Ok(Attached {
        host_mac: HOST_MAC,
        pod_mac,
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
