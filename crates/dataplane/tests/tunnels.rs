//! Tunnels against the real kernel, in namespaces the tests create: VXLAN
//! between two "nodes" with static neighbour and FDB entries (learning off)
//! passes traffic; IPIP (`tunl0`) either passes traffic or, on a kernel
//! without IPIP, fails with the typed error saying so. Run as root.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use tabby_dataplane::{Error, IpipTunnel, MacAddr, Netns as DpNetns, NextHop, Route, Vxlan};
use tabby_testbed::{Netns, veth};

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}
fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn tx_packets(ns: &Netns, dev: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/tx_packets");
    let out = ns.exec("cat", [path.as_str()]).expect("stats");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("number")
}

#[test]
fn vxlan_passes_traffic_between_two_namespaces() {
    let n1 = Netns::new("dp-vx1").expect("node1");
    let n2 = Netns::new("dp-vx2").expect("node2");
    veth(
        &n1,
        "eth0",
        Some("172.16.1.1/24"),
        &n2,
        "eth0",
        Some("172.16.1.2/24"),
    )
    .expect("underlay");
    let macs: [MacAddr; 2] = [
        "02:74:62:00:00:01".parse().expect("mac"),
        "02:74:62:00:00:02".parse().expect("mac"),
    ];
    let underlay = [ip("172.16.1.1"), ip("172.16.1.2")];
    // Calico's layout: the vxlan device holds the node's tunnel address
    // (the first of its block); a remote block is routed onlink via the
    // remote tunnel address, which has a static ARP entry and an FDB entry
    // pointing at the remote node's underlay address.
    let tunnel_addr = [ip("10.96.1.0"), ip("10.96.2.0")];
    let blocks = [net("10.96.1.0/26"), net("10.96.2.0/26")];
    let nss = [&n1, &n2];
    let mut idx = [0u32; 2];
    for i in 0..2 {
        let ns = DpNetns::named(nss[i].name()).expect("ns");
        let mut nl = ns.netlink().expect("netlink");
        let eth0 = nl.link_index("eth0").expect("eth0");
        let dev = nl
            .create_vxlan(&Vxlan {
                name: "vxlan.tabby".into(),
                vni: 4096,
                local: Some(underlay[i]),
                underlay: Some(eth0),
                port: 4789,
                learning: false,
                mtu: Some(1450),
                mac: Some(macs[i]),
            })
            .expect("create vxlan");
        idx[i] = dev;
        let l = nl.require_link("vxlan.tabby").expect("link");
        assert_eq!(
            (l.kind.as_deref(), l.mtu, l.mac),
            (Some("vxlan"), 1450, Some(macs[i]))
        );
        nl.add_address(dev, IpNet::new(tunnel_addr[i], 32).expect("net"))
            .expect("address");
        nl.set_up(dev).expect("up");
    }
    // Without neighbour/FDB entries and with learning off, nothing crosses.
    let remote_ok = |from: &Netns, to: IpAddr| from.ping(&to.to_string(), 3);
    for i in 0..2 {
        let j = 1 - i;
        let ns = DpNetns::named(nss[i].name()).expect("ns");
        let mut nl = ns.netlink().expect("netlink");
        nl.add_route(&Route::multipath(
            blocks[j],
            vec![
                NextHop::via(tunnel_addr[j])
                    .with_device(idx[i])
                    .with_onlink(),
            ],
        ))
        .expect("route to remote block");
    }
    assert!(
        !remote_ok(&n1, tunnel_addr[1]),
        "traffic crossed with no FDB entry"
    );
    for i in 0..2 {
        let j = 1 - i;
        let ns = DpNetns::named(nss[i].name()).expect("ns");
        let mut nl = ns.netlink().expect("netlink");
        nl.replace_neighbour(idx[i], tunnel_addr[j], macs[j])
            .expect("arp entry");
        nl.replace_fdb(idx[i], macs[j], underlay[j])
            .expect("fdb entry");
    }
    {
        // Read back through the API, and an unchanged ensure keeps the device.
        let ns = DpNetns::named(n1.name()).expect("ns");
        let mut nl = ns.netlink().expect("netlink");
        let fdb = nl.fdb(idx[0]).expect("fdb");
        assert!(
            fdb.iter()
                .any(|e| e.mac == macs[1] && e.remote == Some(underlay[1]) && e.permanent),
            "{fdb:?}"
        );
        let neigh = nl.neighbours(idx[0]).expect("neighbours");
        assert!(
            neigh
                .iter()
                .any(|n| n.ip == tunnel_addr[1] && n.mac == Some(macs[1]) && n.permanent),
            "{neigh:?}"
        );
        let (_, have) = nl.vxlan("vxlan.tabby").expect("read").expect("is vxlan");
        assert_eq!(
            (have.vni, have.port, have.local, have.learning),
            (4096, 4789, Some(underlay[0]), false)
        );
        let again = nl.ensure_vxlan(&have).expect("ensure unchanged");
        assert_eq!(
            again, idx[0],
            "an unchanged device must be kept, not recreated"
        );
        assert!(
            nl.vxlan("eth0").expect("read").is_none(),
            "a veth is not vxlan"
        );
    }
    let fdb = n1
        .exec("bridge", ["fdb", "show", "dev", "vxlan.tabby"])
        .expect("fdb");
    let fdb = String::from_utf8_lossy(&fdb.stdout).into_owned();
    assert!(
        fdb.contains("02:74:62:00:00:02 dst 172.16.1.2 self permanent"),
        "{fdb}"
    );
    let before = tx_packets(&n1, "vxlan.tabby");
    assert!(remote_ok(&n1, tunnel_addr[1]), "no traffic over vxlan");
    // An address inside the remote block, reached through the onlink route.
    n2.ip(["addr", "add", "10.96.2.5/32", "dev", "lo"])
        .expect("pod-like address");
    assert!(
        remote_ok(&n1, ip("10.96.2.5")),
        "remote block not reachable over vxlan"
    );
    assert!(
        tx_packets(&n1, "vxlan.tabby") > before,
        "packets did not use the vxlan device"
    );
    let details = n1
        .ip_stdout(["-d", "link", "show", "vxlan.tabby"])
        .expect("show");
    assert!(
        details.contains("vxlan id 4096") && details.contains("nolearning"),
        "{details}"
    );

    // Removing the FDB entry cuts the path again.
    let ns = DpNetns::named(n1.name()).expect("ns");
    let mut nl = ns.netlink().expect("netlink");
    nl.delete_fdb(idx[0], macs[1], underlay[1])
        .expect("delete fdb");
    nl.delete_neighbour(idx[0], tunnel_addr[1])
        .expect("delete neighbour");
    assert!(
        !remote_ok(&n1, ip("10.96.2.5")),
        "traffic crossed after the FDB entry went"
    );
}

/// Whether this kernel can make an ipip device, observed with iproute2
/// (independently of the code under test).
fn kernel_has_ipip() -> bool {
    let probe = Netns::new("dp-ipprobe").expect("probe");
    probe
        .ip(["link", "add", "tby-probe", "type", "ipip"])
        .is_ok()
        || probe.ip(["link", "show", "tunl0"]).is_ok()
}

#[test]
fn ipip_tunl0_passes_traffic_or_reports_missing_kernel_support() {
    let n1 = Netns::new("dp-ip1").expect("node1");
    let n2 = Netns::new("dp-ip2").expect("node2");
    veth(
        &n1,
        "eth0",
        Some("172.16.2.1/24"),
        &n2,
        "eth0",
        Some("172.16.2.2/24"),
    )
    .expect("underlay");
    let spec = IpipTunnel {
        name: "tunl0".into(),
        local: None,
        mtu: Some(1480),
    };
    let ns1 = DpNetns::named(n1.name()).expect("ns");
    let mut nl1 = ns1.netlink().expect("netlink");
    let supported = kernel_has_ipip();
    let result = nl1.ensure_ipip(&spec);
    if !supported {
        // This kernel (no CONFIG_NET_IPIP): the error must say exactly that.
        let err = result.expect_err("ipip cannot work on this kernel");
        assert!(
            matches!(
                err,
                Error::KernelLacks {
                    kind: "ipip",
                    config: "CONFIG_NET_IPIP",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("no ipip support") && text.contains("CONFIG_NET_IPIP"),
            "{text}"
        );
        assert!(
            nl1.link("tunl0").expect("lookup").is_none(),
            "half-made device left"
        );
        return;
    }
    // A kernel with IPIP: node addresses on tunl0, remote blocks onlink via
    // the remote node's underlay address, traffic crosses encapsulated.
    let underlay = [Ipv4Addr::new(172, 16, 2, 1), Ipv4Addr::new(172, 16, 2, 2)];
    let tun_addr = [ip("10.97.1.1"), ip("10.97.2.1")];
    let blocks = [net("10.97.1.0/24"), net("10.97.2.0/24")];
    let nss = [&n1, &n2];
    for i in 0..2 {
        let j = 1 - i;
        let ns = DpNetns::named(nss[i].name()).expect("ns");
        let mut nl = ns.netlink().expect("netlink");
        let t = nl.ensure_ipip(&spec).expect("tunl0");
        assert_eq!(nl.require_link("tunl0").expect("tunl0").mtu, 1480);
        nl.add_address(t, IpNet::new(tun_addr[i], 32).expect("net"))
            .expect("address");
        nl.set_up(t).expect("up");
        nl.add_route(&Route::multipath(
            blocks[j],
            vec![
                NextHop::via(IpAddr::V4(underlay[j]))
                    .with_device(t)
                    .with_onlink(),
            ],
        ))
        .expect("route via tunl0");
    }
    let before = tx_packets(&n1, "tunl0");
    assert!(n1.ping("10.97.2.1", 3), "no traffic over ipip");
    assert!(
        tx_packets(&n1, "tunl0") > before,
        "packets did not use tunl0"
    );
}
