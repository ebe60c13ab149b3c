//! The agent's IPIP programming, end to end in a VM (this machine's kernel
//! has no IPIP): three "nodes" on two subnets, a pool in `ipipMode:
//! CrossSubnet`, then `Always`, then `Never`, programmed through exactly
//! the code the running agent uses:
//!
//! - `tabby_agent::tunnels::apply_kernel` makes `tunl0` with the node's
//!   tunnel address (as each reconcile does);
//! - `tabby_agent::tunnels::fib_encapsulation` turns the pool resources
//!   and the Node's `ipv4Address` into the speaker's FIB rules;
//! - `tabby_speaker::fib::fib_action` (what the FIB thread calls for every
//!   learned route) decides each route, and the routes are applied in one
//!   batch (`Netlink::apply_routes`, as the FIB thread does).
//!
//! Pods (wired like the CNI plugin does) ping across: inside the subnet
//! natively (tunl0 counters still), across it through tunl0 (counters
//! move; the router between the subnets has no pod routes, so nothing
//! else could carry it). Run as root; `harness = false`: on the host this
//! binary boots the VM with itself inside and runs `--guest` there.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use ipnet::IpNet;
use tabby_agent::mtu::{EncapsulationsInUse, IfacePattern, host_interfaces, pod_mtu};
use tabby_agent::tunnels::{
    DeviceState, KernelTunnels, apply_kernel, fib_encapsulation, own_subnets,
};
use tabby_dataplane::{Netlink, Netns as DpNetns, NextHop, Route, RouteChange, sysctl};
use tabby_model::{IpPool, Node, Resource};
use tabby_speaker::fib::{FibAction, fib_action};
use tabby_testbed::vm::{Kernel, Vm};
use tabby_testbed::{Netns, veth};

const TEST: &str = "agent_ipip_cross_subnet_in_a_vm";
const CHECK: &str = "tabby-guest: check";
const CHECKS: &[&str] = &[
    "underlay",
    "tunl0",
    "tunl0-detected-mtu",
    "cross-subnet-routes",
    "same-subnet-native-ping",
    "cross-subnet-ipip-ping",
    "always-routes",
    "always-ipip-ping",
    "never-releases",
];

fn main() -> ExitCode {
    tabby_testbed::vm::test_main(TEST, host, guest)
}

fn host() {
    let kernel = Kernel::installed().expect("guest kernel (scripts/install-deps.sh unpacks it)");
    let me = std::env::current_exe().expect("own path");
    let ip = tabby_testbed::vm::host_ip().expect("iproute2 ip");
    let run = Vm::new(kernel)
        .module("ipip")
        .module("veth")
        .module("bridge")
        .program(&me, "/usr/local/bin/ipip-guest")
        .program(ip, "/usr/sbin/ip")
        .command(["ipip-guest", "--guest"])
        // The debug test binary (over 150 MB) is unpacked into the
        // guest's RAM: 512 MiB no longer holds it with the kernel.
        .memory_mib(1024)
        .env("RUST_BACKTRACE", "1")
        .timeout(Duration::from_secs(600))
        .run()
        .unwrap_or_else(|e| panic!("the VM did not run the guest: {e}"));
    println!(
        "vm: accel {} ({}), guest done at {:.2?}",
        run.accel, run.accel_reason, run.total_time
    );
    run.assert_checks_passed(CHECKS.iter().copied());
}

fn guest() -> ExitCode {
    match std::panic::catch_unwind(scenario) {
        Ok(()) => {
            println!("tabby-guest: all passed");
            ExitCode::SUCCESS
        }
        Err(_) => {
            println!("tabby-guest: scenario FAILED");
            ExitCode::FAILURE
        }
    }
}

fn check(name: &str) {
    println!("{CHECK} {name} ok");
}

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn netlink(ns: &Netns) -> Netlink {
    DpNetns::named(ns.name())
        .expect("open netns")
        .netlink()
        .expect("netlink")
}

fn resource(yaml: &str) -> Resource {
    tabby_model::parse_manifest("test", yaml)
        .expect("manifest")
        .pop()
        .expect("one document")
        .resource
}

fn pool(mode: &str) -> IpPool {
    match resource(&format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pods}}\nspec: {{cidr: 10.98.0.0/16, ipipMode: {mode}}}\n"
    )) {
        Resource::IpPool(p) => p,
        other => panic!("{other:?}"),
    }
}

fn node(name: &str, ip: &str) -> Node {
    match resource(&format!(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{bgp: {{ipv4Address: {ip}}}}}\n"
    )) {
        Resource::Node(n) => n,
        other => panic!("{other:?}"),
    }
}

fn counter(ns: &Netns, dev: &str, which: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/{which}");
    let out = ns.exec("cat", [path.as_str()]).expect("statistics");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("number")
}

/// One node: its namespace, a pod behind it, its Node resource, its block.
struct Host {
    ns: Netns,
    pod: Netns,
    pod_ip: IpAddr,
    underlay: IpAddr,
    node: Node,
    block: IpNet,
    tunnel: std::net::Ipv4Addr,
}

/// Wires a pod like the CNI plugin: /32 on eth0, default via 169.254.1.1
/// onlink, proxy ARP and a /32 route on the node side.
fn wire_pod(node: &Netns, pod: &Netns, pod_ip: IpAddr) {
    veth(node, "tbypod", None, pod, "eth0", None).expect("pod veth");
    let mut pnl = netlink(pod);
    let eth0 = pnl.link_index("eth0").expect("pod eth0");
    pnl.add_address(eth0, IpNet::new(pod_ip, 32).expect("net"))
        .expect("pod address");
    pnl.add_route(&Route::multipath(
        net("0.0.0.0/0"),
        vec![
            NextHop::via(addr("169.254.1.1"))
                .with_device(eth0)
                .with_onlink(),
        ],
    ))
    .expect("pod default route");
    let dp = DpNetns::named(node.name()).expect("node ns");
    dp.run(|| -> tabby_dataplane::Result<()> {
        sysctl::set_ipv4_forwarding(true)?;
        sysctl::set_proxy_arp("tbypod", true)?;
        sysctl::set_proxy_delay("tbypod", 0)
    })
    .expect("run in node")
    .expect("node sysctls");
    let mut nnl = dp.netlink().expect("netlink");
    let host_side = nnl.link_index("tbypod").expect("host side");
    nnl.add_route(&Route::dev(IpNet::new(pod_ip, 32).expect("net"), host_side))
        .expect("route to the pod");
}

/// The FIB thread's work for `me`: every other node's block with that
/// node's address as the BGP next hop, decided by `fib_action` under the
/// agent's rules, applied as one batch. Returns the routes.
fn program_routes(me: usize, hosts: &[Host], pools: &[IpPool], ipip_up: bool) -> Vec<Route> {
    let rules = fib_encapsulation(pools, &own_subnets(&hosts[me].node), ipip_up);
    let mut nl = netlink(&hosts[me].ns);
    let tunl0 = nl.link("tunl0").expect("lookup").map(|l| l.index);
    let mut routes = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        if i == me {
            continue;
        }
        match fib_action(h.block, &[h.underlay], None, rules.as_ref(), tunl0) {
            FibAction::Install(r) => routes.push(r),
            other => panic!("{} -> {}: {other:?}", hosts[me].ns.name(), h.block),
        }
    }
    let batch: Vec<RouteChange> = routes.iter().cloned().map(RouteChange::Replace).collect();
    let report = nl.apply_routes(&batch).expect("apply routes");
    assert!(report.is_ok(), "{:?}", report.failures);
    routes
}

fn shown_routes(h: &Host) -> String {
    h.ns.ip_stdout(["route", "show", "proto", "201"])
        .expect("ip route")
}

fn scenario() {
    // Subnet A 172.16.5.0/24: n1, n2 and the router on a bridge; subnet B
    // 172.16.6.0/24: n3 straight to the router. The router has no pod
    // routes.
    let sw = Netns::new("ipvm-sw").expect("switch");
    sw.ip(["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    sw.ip(["link", "set", "br0", "up"]).expect("bridge up");
    let router = Netns::new("ipvm-r").expect("router");
    veth(&router, "eth0", Some("172.16.5.254/24"), &sw, "p0", None).expect("router port");
    sw.ip(["link", "set", "p0", "master", "br0"])
        .expect("enslave");
    router.sysctl("net.ipv4.ip_forward=1").expect("forwarding");
    let spec = [
        ("n1", "172.16.5.1", "10.98.1.0/26", "10.98.1.5", "10.98.1.1"),
        ("n2", "172.16.5.2", "10.98.2.0/26", "10.98.2.5", "10.98.2.1"),
        ("n3", "172.16.6.3", "10.98.3.0/26", "10.98.3.5", "10.98.3.1"),
    ];
    let mut hosts = Vec::new();
    for (i, (name, ip, block, pod_ip, tunnel)) in spec.iter().enumerate() {
        let ns = Netns::new(&format!("ipvm-{name}")).expect("node");
        if i < 2 {
            let port = format!("p{}", i + 1);
            veth(&ns, "eth0", Some(&format!("{ip}/24")), &sw, &port, None).expect("veth");
            sw.ip(["link", "set", &port, "master", "br0"])
                .expect("enslave");
            ns.ip(["route", "add", "default", "via", "172.16.5.254"])
                .expect("default");
        } else {
            veth(
                &ns,
                "eth0",
                Some(&format!("{ip}/24")),
                &router,
                "eth1",
                Some("172.16.6.254/24"),
            )
            .expect("veth");
            ns.ip(["route", "add", "default", "via", "172.16.6.254"])
                .expect("default");
        }
        let pod = Netns::new(&format!("ipvm-p{name}")).expect("pod");
        wire_pod(&ns, &pod, addr(pod_ip));
        hosts.push(Host {
            ns,
            pod,
            pod_ip: addr(pod_ip),
            underlay: addr(ip),
            node: node(name, &format!("{ip}/24")),
            block: net(block),
            tunnel: tunnel.parse().expect("tunnel address"),
        });
    }
    assert!(
        hosts[0].ns.ping("172.16.6.3", 1),
        "underlay n1 -> n3 broken"
    );
    assert!(
        hosts[0].ns.ping("172.16.5.2", 1),
        "underlay n1 -> n2 broken"
    );
    check("underlay");

    // The agent's kernel step: tunl0 up with the node's tunnel address.
    for h in &hosts {
        let want = KernelTunnels {
            ipip: Some(Some(h.tunnel)),
            node_ip: Some(h.underlay),
            ..KernelTunnels::default()
        };
        let outcome = apply_kernel(&mut netlink(&h.ns), &want);
        assert_eq!(outcome.ipip, DeviceState::Up, "{outcome:?}");
        let shown =
            h.ns.ip_stdout(["-d", "addr", "show", "tunl0"])
                .expect("tunl0");
        assert!(
            shown.contains(&format!("inet {}/32", h.tunnel)) && shown.contains("mtu 1480"),
            "{shown}"
        );
    }
    check("tunl0");

    // With the detected MTUs (what the running agent passes): the host
    // MTU from the kernel's links (eth0 at 1400 here) minus 20, and back.
    let h = &hosts[0];
    h.ns.ip(["link", "set", "eth0", "mtu", "1400"])
        .expect("underlay mtu");
    let plan = |nl: &mut Netlink| {
        let interfaces = host_interfaces(nl).expect("links");
        pod_mtu(
            &interfaces,
            &IfacePattern::default(),
            EncapsulationsInUse {
                ipip: true,
                ..EncapsulationsInUse::default()
            },
        )
    };
    let mut nl = netlink(&h.ns);
    let detected = plan(&mut nl);
    assert_eq!(
        (detected.host_interface.as_deref(), detected.pod_mtu),
        (Some("eth0"), 1380),
        "{detected}"
    );
    let want = KernelTunnels {
        ipip: Some(Some(h.tunnel)),
        node_ip: Some(h.underlay),
        mtu: Some(detected),
        ..KernelTunnels::default()
    };
    assert_eq!(apply_kernel(&mut nl, &want).ipip, DeviceState::Up);
    let shown = h.ns.ip_stdout(["link", "show", "tunl0"]).expect("tunl0");
    assert!(shown.contains("mtu 1380"), "{shown}");
    h.ns.ip(["link", "set", "eth0", "mtu", "1500"])
        .expect("underlay mtu");
    let want = KernelTunnels {
        mtu: Some(plan(&mut nl)),
        ..want
    };
    assert_eq!(apply_kernel(&mut nl, &want).ipip, DeviceState::Up);
    let shown = h.ns.ip_stdout(["link", "show", "tunl0"]).expect("tunl0");
    assert!(shown.contains("mtu 1480"), "{shown}");
    check("tunl0-detected-mtu");

    let cross = vec![pool("CrossSubnet")];
    for i in 0..3 {
        program_routes(i, &hosts, &cross, true);
    }
    let n1 = shown_routes(&hosts[0]);
    let n3 = shown_routes(&hosts[2]);
    println!("tabby-guest: n1 routes (CrossSubnet):\n{n1}");
    assert!(n1.contains("10.98.2.0/26 via 172.16.5.2 dev eth0"), "{n1}");
    assert!(
        !n1.contains("10.98.2.0/26 via 172.16.5.2 dev tunl0"),
        "{n1}"
    );
    assert!(
        n1.contains("10.98.3.0/26 via 172.16.6.3 dev tunl0 onlink"),
        "{n1}"
    );
    assert!(
        n3.contains("10.98.1.0/26 via 172.16.5.1 dev tunl0 onlink"),
        "{n3}"
    );
    assert!(
        n3.contains("10.98.2.0/26 via 172.16.5.2 dev tunl0 onlink"),
        "{n3}"
    );
    check("cross-subnet-routes");

    let tx = counter(&hosts[0].ns, "tunl0", "tx_packets");
    assert!(
        hosts[0].pod.ping(&hosts[1].pod_ip.to_string(), 3),
        "pod n1 -> pod n2 (same subnet, native)"
    );
    assert_eq!(
        counter(&hosts[0].ns, "tunl0", "tx_packets"),
        tx,
        "native ping used tunl0"
    );
    check("same-subnet-native-ping");

    let rx3 = counter(&hosts[2].ns, "tunl0", "rx_packets");
    assert!(
        hosts[0].pod.ping(&hosts[2].pod_ip.to_string(), 3),
        "pod n1 -> pod n3 (across subnets, IPIP)"
    );
    let moved = (
        counter(&hosts[0].ns, "tunl0", "tx_packets") - tx,
        counter(&hosts[2].ns, "tunl0", "rx_packets") - rx3,
    );
    println!("tabby-guest: tunl0 n1 tx +{} / n3 rx +{}", moved.0, moved.1);
    assert!(moved.0 >= 3 && moved.1 >= 3, "{moved:?}");
    check("cross-subnet-ipip-ping");

    let always = vec![pool("Always")];
    for i in 0..3 {
        program_routes(i, &hosts, &always, true);
    }
    let n1 = shown_routes(&hosts[0]);
    assert!(
        n1.contains("10.98.2.0/26 via 172.16.5.2 dev tunl0 onlink"),
        "{n1}"
    );
    check("always-routes");
    let tx = counter(&hosts[0].ns, "tunl0", "tx_packets");
    assert!(
        hosts[0].pod.ping(&hosts[1].pod_ip.to_string(), 3),
        "pod n1 -> pod n2 (Always, IPIP)"
    );
    assert!(counter(&hosts[0].ns, "tunl0", "tx_packets") >= tx + 3);
    check("always-ipip-ping");

    // Never: the agent takes the tunnel address off tunl0 and the FIB
    // rules are gone (routes native again).
    let never = vec![pool("Never")];
    let outcome = apply_kernel(
        &mut netlink(&hosts[0].ns),
        &KernelTunnels {
            ipip: None,
            node_ip: Some(hosts[0].underlay),
            ..KernelTunnels::default()
        },
    );
    assert_eq!(outcome.ipip, DeviceState::Off);
    let shown = hosts[0]
        .ns
        .ip_stdout(["addr", "show", "tunl0"])
        .expect("tunl0");
    assert!(!shown.contains("inet "), "{shown}");
    let rules = fib_encapsulation(&never, &own_subnets(&hosts[0].node), true);
    assert_eq!(rules, None);
    for h in &hosts[1..] {
        assert_eq!(
            fib_action(h.block, &[h.underlay], None, rules.as_ref(), Some(1)),
            FibAction::Install(Route::via(h.block, h.underlay)),
            "native without encapsulation"
        );
    }
    check("never-releases");
}
