//! The pod wiring against the real kernel: a "node" namespace and pod
//! namespaces made here, `wiring::attach` run inside the node namespace as
//! the plugin would be, then traffic checked with ping. Runs as root.
//! Addresses: pods in 10.98.0.0/24 and fd00:98::/64, the node's own address
//! 10.99.0.1 on the node's uplink; all inside the test's namespaces.

use std::net::IpAddr;

use tabby_cni::wiring::{self, PodInterface};
use tabby_dataplane as dp;
use tabby_testbed::Netns;

/// A node namespace with forwarding on, an address of its own on `up0` (a
/// veth whose peer stays in the node: this kernel has no dummy devices) and
/// a default route out of it, as a real host has.
fn node() -> Netns {
    let n = Netns::new("cniw-node").expect("node netns");
    n.sysctl("net.ipv4.ip_forward=1").expect("forwarding");
    n.sysctl("net.ipv6.conf.all.forwarding=1")
        .expect("v6 forwarding");
    n.ip(["link", "add", "up0", "type", "veth", "peer", "name", "up1"])
        .expect("uplink");
    n.ip(["link", "set", "up1", "up"]).expect("up1");
    n.addr_add("up0", "10.99.0.1/24").expect("addr");
    n.ip(["route", "add", "default", "dev", "up0"])
        .expect("default");
    n
}

fn attach(
    node: &Netns,
    pod: &Netns,
    host_if: &str,
    addrs: &[IpAddr],
) -> Result<wiring::Attached, String> {
    let node_ns = dp::Netns::named(node.name()).expect("open node ns");
    let pod_ns = dp::Netns::named(pod.name()).expect("open pod ns");
    node_ns
        .run(|| {
            let mut nl = dp::Netlink::open().map_err(|e| e.to_string())?;
            wiring::attach(
                &mut nl,
                &pod_ns,
                None,
                &PodInterface {
                    host_ifname: host_if,
                    pod_ifname: "eth0",
                    mtu: 1400,
                    queues: 1,
                    addresses: addrs,
                },
            )
            .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn pods_reach_the_host_and_each_other_and_detach_cleans_up() {
    let node = node();
    let a = Netns::new("cniw-a").expect("pod a");
    let b = Netns::new("cniw-b").expect("pod b");
    let att = attach(&node, &a, "tbytesta000001", &[ip("10.98.0.2")]).expect("attach a");
    assert_eq!(att.host_mac, wiring::HOST_MAC);
    attach(&node, &b, "tbytestb000001", &[ip("10.98.0.3")]).expect("attach b");

    let routes = node
        .ip_stdout(["route", "show", "10.98.0.2"])
        .expect("routes");
    assert!(routes.contains("dev tbytesta000001"), "{routes}");
    let link = a.ip_stdout(["link", "show", "eth0"]).expect("link");
    assert!(link.contains("mtu 1400"), "{link}");
    let addr = a.ip_stdout(["addr", "show", "eth0"]).expect("addr");
    assert!(addr.contains("10.98.0.2/32"), "{addr}");
    let pod_routes = a.ip_stdout(["route"]).expect("pod routes");
    assert!(
        pod_routes.contains("default via 169.254.1.1 dev eth0"),
        "{pod_routes}"
    );
    let proxy = node
        .exec("sysctl", ["-n", "net.ipv4.conf.tbytesta000001.proxy_arp"])
        .expect("sysctl");
    assert_eq!(String::from_utf8_lossy(&proxy.stdout).trim(), "1");

    assert!(a.ping("10.99.0.1", 2), "pod a cannot reach the host");
    assert!(a.ping("10.98.0.3", 2), "pod a cannot reach pod b");
    assert!(b.ping("10.98.0.2", 2), "pod b cannot reach pod a");

    // Attaching again (a retried ADD) replaces the old pair.
    attach(&node, &a, "tbytesta000001", &[ip("10.98.0.2")]).expect("re-attach a");
    assert!(
        a.ping("10.99.0.1", 2),
        "pod a lost the host after re-attach"
    );

    let node_ns = dp::Netns::named(node.name()).expect("node ns");
    let removed = node_ns
        .run(|| {
            let mut nl = dp::Netlink::open().expect("netlink");
            let first = wiring::detach(&mut nl, "tbytesta000001").expect("detach");
            let second = wiring::detach(&mut nl, "tbytesta000001").expect("detach again");
            (first, second)
        })
        .expect("run");
    assert_eq!(removed, (true, false));
    let routes = node
        .ip_stdout(["route", "show", "10.98.0.2"])
        .expect("routes");
    assert!(routes.trim().is_empty(), "host route left behind: {routes}");
    assert!(
        a.ip(["link", "show", "eth0"]).is_err(),
        "pod end left behind"
    );
}

#[test]
fn dual_stack_pod_reaches_the_host_over_ipv6() {
    let node = node();
    node.ip(["-6", "addr", "add", "fd00:99::1/64", "dev", "up0", "nodad"])
        .expect("v6 addr");
    node.ip(["-6", "route", "add", "default", "dev", "up0"])
        .expect("v6 default");
    let a = Netns::new("cniw-6").expect("pod");
    attach(
        &node,
        &a,
        "tbytest6000001",
        &[ip("10.98.0.9"), ip("fd00:98::9")],
    )
    .expect("attach");
    let addr = a.ip_stdout(["-6", "addr", "show", "eth0"]).expect("addr");
    assert!(addr.contains("fd00:98::9/128"), "{addr}");
    let r = a.ip_stdout(["-6", "route"]).expect("routes");
    assert!(r.contains("default via fe80::1 dev eth0"), "{r}");
    assert!(
        a.ping("fd00:99::1", 3),
        "pod cannot reach the host over IPv6"
    );
    assert!(
        a.ping("10.99.0.1", 2),
        "pod cannot reach the host over IPv4"
    );
}

#[test]
fn name_clash_in_the_pod_fails_and_leaves_nothing_behind() {
    let node = node();
    let pod = Netns::new("cniw-clash").expect("pod");
    pod.ip(["link", "add", "eth0", "type", "veth", "peer", "name", "x0"])
        .expect("clash");
    let err = attach(&node, &pod, "tbytestc000001", &[ip("10.98.0.7")]).expect_err("clash");
    assert!(err.contains("create veth"), "{err}");
    let links = node.ip_stdout(["link"]).expect("links");
    assert!(
        !links.contains("tbytestc000001"),
        "host veth left behind: {links}"
    );
}
