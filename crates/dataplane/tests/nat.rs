//! Outgoing NAT against the real kernel and nftables, in namespaces the test
//! creates: a "pod" behind a "node" talks to an "outside" host that reports
//! the source address it sees. Run as root.

use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;
use tabby_dataplane::{Netns as DpNetns, nat};
use tabby_testbed::{Netns, veth, wait_until};

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

/// Connects from `from` to `to:8080` and returns what the server said
/// (the peer address it saw), or `None` if the connection failed.
fn seen_source(from: &Netns, to: &str) -> Option<String> {
    // A few attempts, so a slow machine does not fail the test; a wrong
    // address is returned as soon as it is seen.
    (0..3).find_map(|_| connect_once(from, to))
}

fn connect_once(from: &Netns, to: &str) -> Option<String> {
    let out = from
        .command("socat")
        .args(["-T", "2", "-", &format!("TCP:{to}:8080,connect-timeout=2")])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

#[test]
fn nat_outgoing_masquerades_only_traffic_leaving_the_pools() {
    let pod = Netns::new("dp-natpod").expect("pod");
    let node = Netns::new("dp-natnode").expect("node");
    let outside = Netns::new("dp-natout").expect("outside");
    veth(
        &pod,
        "eth0",
        Some("10.244.0.2/24"),
        &node,
        "pod0",
        Some("10.244.0.1/24"),
    )
    .expect("pod veth");
    veth(
        &node,
        "eth1",
        Some("172.16.5.1/24"),
        &outside,
        "eth0",
        Some("172.16.5.2/24"),
    )
    .expect("outside veth");
    pod.ip(["route", "add", "default", "via", "10.244.0.1"])
        .expect("pod default");
    node.sysctl("net.ipv4.ip_forward=1").expect("forwarding");
    // The outside host can route back to the pool (so un-NATed traffic works
    // too), and owns an address inside another, non-NAT pool.
    outside
        .ip(["route", "add", "10.244.0.0/16", "via", "172.16.5.1"])
        .expect("route back");
    outside
        .ip(["addr", "add", "10.245.0.9/32", "dev", "lo"])
        .expect("pool address");
    node.ip(["route", "add", "10.245.0.9/32", "via", "172.16.5.2"])
        .expect("node route");
    let _server = outside
        .spawn(outside.command("socat").args([
            "TCP-LISTEN:8080,fork,reuseaddr",
            "SYSTEM:echo $SOCAT_PEERADDR",
        ]))
        .expect("server");
    wait_until(Duration::from_secs(10), "server listening", || {
        connect_once(&node, "172.16.5.2").is_some()
    })
    .expect("server up");

    assert_eq!(
        seen_source(&pod, "172.16.5.2").as_deref(),
        Some("10.244.0.2"),
        "before NAT"
    );

    let node_ns = DpNetns::named(node.name()).expect("ns");
    let pools = nat::NatPools {
        masquerade: vec![net("10.244.0.0/16")],
        all: vec![net("10.244.0.0/16"), net("10.245.0.0/16")],
    };
    node_ns
        .run(|| nat::apply(&pools))
        .expect("thread")
        .expect("apply");
    // Applying again replaces the table (no duplicate rules).
    node_ns
        .run(|| nat::apply(&pools))
        .expect("thread")
        .expect("apply again");
    let rules = node
        .exec("nft", ["list", "table", "inet", "tabby-nat"])
        .expect("list");
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert_eq!(rules.matches("masquerade").count(), 2, "{rules}");
    // Nothing leaked into the test's own namespace.
    let own = Command::new("nft")
        .args(["list", "table", "inet", "tabby-nat"])
        .output()
        .expect("nft");
    assert!(
        !own.status.success(),
        "NAT table created outside the node namespace"
    );

    assert_eq!(
        seen_source(&pod, "172.16.5.2").as_deref(),
        Some("172.16.5.1"),
        "traffic leaving the pools is masqueraded to the node address"
    );
    assert_eq!(
        seen_source(&pod, "10.245.0.9").as_deref(),
        Some("10.244.0.2"),
        "traffic to another pool keeps the pod address"
    );

    node_ns.run(nat::remove).expect("thread").expect("remove");
    node_ns
        .run(nat::remove)
        .expect("thread")
        .expect("remove twice is fine");
    assert_eq!(
        seen_source(&pod, "172.16.5.2").as_deref(),
        Some("10.244.0.2"),
        "after removal"
    );
}
