//! IPIP (`tunl0`) and VXLAN pass pod-to-pod traffic between two "nodes",
//! proven inside a virtual machine that boots Debian's kernel (this
//! machine's kernel has no IPIP; see `tunnels.rs` for the typed error it
//! gives). Run as root.
//!
//! This test binary plays both roles (`harness = false`):
//! - on the host (no arguments, or a name filter), it boots a VM with
//!   `tabby_testbed::vm` holding this very binary, iproute2's `ip` and the
//!   `ipip`, `vxlan` and `veth` modules, runs `<self> --guest`, and asserts
//!   on the guest's marker lines: the run fails if the guest does not boot,
//!   does not run, or any check inside fails;
//! - in the guest (`--guest`), it builds the topology below with the
//!   testbed's namespaces and veths and tabby-dataplane's API for the thing
//!   under test (tunnel devices, addresses, routes with `proto tabby`,
//!   neighbour/FDB entries, sysctls), and checks traffic with busybox
//!   `ping`, printing one `tabby-guest: check NAME ok` line per check.
//!
//! Topology per tunnel kind: node namespaces n1 and n2 joined by an
//! underlay veth (172.16.x.1/24, .2/24); a pod namespace behind each node
//! wired like tabby's CNI plugin does (pod /32 on eth0, default route via
//! 169.254.1.1 onlink, proxy ARP and a /32 route on the host side); each
//! node routes the other node's pod block through the tunnel.

use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use ipnet::IpNet;
use tabby_dataplane::{
    IpipTunnel, MacAddr, Netlink, Netns as DpNetns, NextHop, Route, RouteTable, Vxlan, sysctl,
};
use tabby_testbed::vm::{Kernel, Vm};
use tabby_testbed::{Netns, Process, veth, wait_until};

/// The one test this binary holds (its name, for filters and `--list`).
const TEST: &str = "ipip_and_vxlan_pass_pod_traffic_in_a_vm";
/// Marker prefix of guest check lines.
const CHECK: &str = "tabby-guest: check";

/// Checks the guest must report, in order of the scenarios.
const IPIP_CHECKS: &[&str] = &[
    "ipip.underlay",
    "ipip.device",
    "ipip.no-route-no-traffic",
    "ipip.routes-proto-tabby",
    "ipip.pod-to-pod-ping",
    "ipip.encapsulated",
    "ipip.route-removed-no-traffic",
    "ipip.named-device",
];
const VXLAN_CHECKS: &[&str] = &[
    "vxlan.underlay",
    "vxlan.device",
    "vxlan.no-fdb-no-traffic",
    "vxlan.pod-to-pod-ping",
    "vxlan.encapsulated",
];

fn main() -> ExitCode {
    tabby_testbed::vm::test_main(TEST, host, guest)
}

/// The host side: boot the VM, run the guest side in it, check its markers.
fn host() {
    let kernel = Kernel::installed().expect("guest kernel (scripts/install-deps.sh unpacks it)");
    for option in ["CONFIG_NET_IPIP", "CONFIG_VXLAN", "CONFIG_VETH"] {
        let v = kernel.config(option).expect("kernel config");
        assert!(
            matches!(v.as_deref(), Some("m" | "y")),
            "guest kernel {} has {option}={v:?}",
            kernel.release()
        );
    }
    let me = std::env::current_exe().expect("own path");
    let ip = tabby_testbed::vm::host_ip().expect("iproute2 ip");
    let release = kernel.release().to_owned();
    let run = Vm::new(kernel)
        .module("ipip")
        .module("vxlan")
        .module("veth")
        .program(&me, "/usr/local/bin/tunnels-guest")
        .program(ip, "/usr/sbin/ip")
        .program("/usr/bin/tcpdump", "/usr/bin/tcpdump")
        .command(["tunnels-guest", "--guest"])
        .env("RUST_BACKTRACE", "1")
        .timeout(Duration::from_secs(600))
        .run()
        .unwrap_or_else(|e| panic!("the VM did not run the guest: {e}"));
    println!(
        "vm: kernel {release}, accel {} ({}), boot {:.2?} (qemu start to /init), guest done at {:.2?}, initramfs {} MiB",
        run.accel,
        run.accel_reason,
        run.boot_time,
        run.total_time,
        run.initramfs_bytes >> 20
    );
    run.assert_checks_passed(IPIP_CHECKS.iter().chain(VXLAN_CHECKS).copied());
    assert!(
        run.output
            .lines()
            .any(|l| l.trim() == "tabby-guest: all passed"),
        "{}",
        run.console
    );
}

/// The guest side: every scenario, each check reported; exit status 0 only
/// if all passed.
fn guest() -> ExitCode {
    let mut failed = false;
    for (name, scenario) in [("ipip", ipip as fn()), ("vxlan", vxlan as fn())] {
        match std::panic::catch_unwind(scenario) {
            Ok(()) => println!("tabby-guest: scenario {name} passed"),
            Err(_) => {
                println!("tabby-guest: scenario {name} FAILED");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        println!("tabby-guest: all passed");
        ExitCode::SUCCESS
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

/// A counter of `dev` in `/sys/class/net/DEV/statistics` inside `ns`.
fn counter(ns: &Netns, dev: &str, which: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/{which}");
    let out = ns.exec("cat", [path.as_str()]).expect("statistics");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("number")
}

/// `tcpdump` on one interface inside a namespace, already listening.
struct Capture {
    tcpdump: Process,
}

impl Capture {
    /// Captures up to `count` packets matching `filter` on `dev`.
    fn start(ns: &Netns, dev: &str, filter: &str, count: u32) -> Capture {
        let mut cmd = ns.command("tcpdump");
        cmd.args([
            "-Z",
            "root",
            "-n",
            "-l",
            "-i",
            dev,
            "-c",
            &count.to_string(),
        ])
        .args(filter.split_whitespace())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut tcpdump = Process::spawn(&mut cmd).expect("start tcpdump");
        let stderr = tcpdump.child_mut().stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut said = String::new();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(l)) => said.push_str(&l),
                _ => panic!("tcpdump stopped before listening: {said}"),
            }
        }
        // Keep draining its stderr so it never blocks.
        std::thread::spawn(move || lines.for_each(drop));
        Capture { tcpdump }
    }

    /// What it printed once it has seen its packets (it is stopped if it
    /// has not after a generous while: then the text shows what it saw).
    fn finish(mut self) -> String {
        let seen = wait_until(Duration::from_secs(30), "tcpdump packets", || {
            !self.tcpdump.is_running()
        });
        if seen.is_err() {
            let _ = self.tcpdump.signal("TERM");
        }
        let mut out = String::new();
        if let Some(mut stdout) = self.tcpdump.child_mut().stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        out
    }
}

/// Two nodes joined by an underlay veth, each with one pod behind it.
struct Nodes {
    node: [Netns; 2],
    pod: [Netns; 2],
    underlay: [IpAddr; 2],
    pod_ip: [IpAddr; 2],
}

impl Nodes {
    /// Underlay `172.16.<subnet>.1/.2`, pods `<pod_net>.<i+1>.5`.
    fn new(tag: &str, subnet: u8, pod_net: &str) -> Nodes {
        let node = [
            Netns::new(&format!("{tag}-n1")).expect("node1"),
            Netns::new(&format!("{tag}-n2")).expect("node2"),
        ];
        let pod = [
            Netns::new(&format!("{tag}-p1")).expect("pod1"),
            Netns::new(&format!("{tag}-p2")).expect("pod2"),
        ];
        let underlay = [
            addr(&format!("172.16.{subnet}.1")),
            addr(&format!("172.16.{subnet}.2")),
        ];
        veth(
            &node[0],
            "eth0",
            Some(&format!("{}/24", underlay[0])),
            &node[1],
            "eth0",
            Some(&format!("{}/24", underlay[1])),
        )
        .expect("underlay veth");
        let pod_ip = [
            addr(&format!("{pod_net}.1.5")),
            addr(&format!("{pod_net}.2.5")),
        ];
        for i in 0..2 {
            // The pod's wiring, as the CNI plugin does it.
            veth(&node[i], "tbypod", None, &pod[i], "eth0", None).expect("pod veth");
            let mut pnl = netlink(&pod[i]);
            let eth0 = pnl.link_index("eth0").expect("pod eth0");
            pnl.add_address(eth0, IpNet::new(pod_ip[i], 32).expect("net"))
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
            let dp = DpNetns::named(node[i].name()).expect("node ns");
            dp.run(|| -> tabby_dataplane::Result<()> {
                sysctl::set_ipv4_forwarding(true)?;
                sysctl::set_proxy_arp("tbypod", true)?;
                sysctl::set_proxy_delay("tbypod", 0)
            })
            .expect("run in node")
            .expect("node sysctls");
            let mut nnl = dp.netlink().expect("netlink");
            let host_side = nnl.link_index("tbypod").expect("host side");
            nnl.add_route(&Route::dev(
                IpNet::new(pod_ip[i], 32).expect("net"),
                host_side,
            ))
            .expect("route to the pod");
            // The node's uplink default route, to a gateway nobody answers
            // for: proxy ARP for 169.254.1.1 needs a unicast route out of
            // another interface (as on a real node), and pod traffic
            // without a tunnel route goes nowhere.
            nnl.add_route(&Route::via(
                net("0.0.0.0/0"),
                addr(&format!("172.16.{subnet}.254")),
            ))
            .expect("node default route");
        }
        Nodes {
            node,
            pod,
            underlay,
            pod_ip,
        }
    }

    /// Pings from pod `from` to the other pod; true if replies came back.
    fn pod_ping(&self, from: usize) -> bool {
        self.pod[from].ping(&self.pod_ip[1 - from].to_string(), 3)
    }

    /// Prints links, addresses, routes and neighbours of every namespace
    /// (for a failed check).
    fn dump(&self) {
        for ns in self.node.iter().chain(&self.pod) {
            for args in [&["-d", "link"][..], &["addr"], &["route"], &["neigh"]] {
                let out = ns.ip_stdout(args).unwrap_or_else(|e| e.to_string());
                println!("tabby-guest: {} ip {}:\n{out}", ns.name(), args.join(" "));
            }
        }
    }
}

/// IPIP in Calico's layout: `tunl0` (the ipip module's fallback device) in
/// each node with the node's tunnel address, and the remote pod block routed
/// `via <remote underlay> dev tunl0 onlink proto tabby`.
fn ipip() {
    let nodes = Nodes::new("vm-ipip", 2, "10.97");
    assert!(
        nodes.node[0].ping(&nodes.underlay[1].to_string(), 1),
        "underlay broken"
    );
    check("ipip.underlay");

    let blocks = [net("10.97.1.0/26"), net("10.97.2.0/26")];
    let tunnel_addr = [addr("10.97.1.0"), addr("10.97.2.0")];
    let spec = IpipTunnel {
        name: "tunl0".into(),
        local: None,
        mtu: Some(1480),
    };
    let mut nl = [netlink(&nodes.node[0]), netlink(&nodes.node[1])];
    let mut tunl = [0u32; 2];
    for i in 0..2 {
        tunl[i] = nl[i].ensure_ipip(&spec).expect("ensure tunl0");
        nl[i]
            .add_address(tunl[i], IpNet::new(tunnel_addr[i], 32).expect("net"))
            .expect("tunnel address");
        nl[i].set_up(tunl[i]).expect("tunl0 up");
        let l = nl[i].require_link("tunl0").expect("tunl0");
        assert_eq!(
            (l.kind.as_deref(), l.mtu, l.up),
            (Some("ipip"), 1480, true),
            "{l:?}"
        );
        // Ensuring again keeps the same device.
        assert_eq!(nl[i].ensure_ipip(&spec).expect("again"), tunl[i]);
    }
    check("ipip.device");

    assert!(!nodes.pod_ping(0), "pods reached each other with no route");
    check("ipip.no-route-no-traffic");

    let routes: Vec<Route> = (0..2)
        .map(|i| {
            let j = 1 - i;
            Route::multipath(
                blocks[j],
                vec![
                    NextHop::via(nodes.underlay[j])
                        .with_device(tunl[i])
                        .with_onlink(),
                ],
            )
        })
        .collect();
    for i in 0..2 {
        nl[i].add_route(&routes[i]).expect("route via tunl0");
    }
    // Read back independently of the code under test.
    let shown = nodes.node[0]
        .ip_stdout(["route", "show", "proto", "201"])
        .expect("ip route");
    assert!(
        shown.contains("10.97.2.0/26 via 172.16.2.2 dev tunl0 onlink"),
        "{shown}"
    );
    let installed = nl[0].list_routes(Some(RouteTable::MAIN)).expect("list");
    assert!(
        installed.iter().any(|r| r.route.satisfies(&routes[0])
            && r.protocol == tabby_dataplane::TABBY_PROTOCOL),
        "{installed:?}"
    );
    check("ipip.routes-proto-tabby");

    let tx0 = counter(&nodes.node[0], "tunl0", "tx_packets");
    let rx1 = counter(&nodes.node[1], "tunl0", "rx_packets");
    let tx1 = counter(&nodes.node[1], "tunl0", "tx_packets");
    let rx0 = counter(&nodes.node[0], "tunl0", "rx_packets");
    // What crosses the underlay at node 2: IP protocol 4 only.
    let capture = Capture::start(&nodes.node[1], "eth0", "ip proto 4", 2);
    if !nodes.pod_ping(0) {
        nodes.dump();
        panic!("pod 10.97.1.5 cannot reach 10.97.2.5 over ipip");
    }
    println!("tabby-guest: ipip ping 10.97.1.5 -> 10.97.2.5 passed");
    check("ipip.pod-to-pod-ping");

    // Requests left node 1 and arrived at node 2 through the tunnel
    // devices, replies the other way: the tunl0 counters only move for
    // packets the kernel encapsulated or decapsulated (IP protocol 4).
    let moved = [
        counter(&nodes.node[0], "tunl0", "tx_packets") - tx0,
        counter(&nodes.node[1], "tunl0", "rx_packets") - rx1,
        counter(&nodes.node[1], "tunl0", "tx_packets") - tx1,
        counter(&nodes.node[0], "tunl0", "rx_packets") - rx0,
    ];
    println!(
        "tabby-guest: ipip tunl0 packets n1 tx {} / n2 rx {} / n2 tx {} / n1 rx {}",
        moved[0], moved[1], moved[2], moved[3]
    );
    assert!(
        moved.iter().all(|m| *m >= 1),
        "tunl0 counters did not move: {moved:?}"
    );
    let seen = capture.finish();
    print!(
        "{}",
        seen.lines()
            .map(|l| format!("tabby-guest: underlay n2 eth0: {l}\n"))
            .collect::<String>()
    );
    assert!(
        seen.contains("172.16.2.1 > 172.16.2.2: IP 10.97.1.5 > 10.97.2.5: ICMP echo request"),
        "no IPIP-encapsulated pod packet on the underlay: {seen:?}"
    );
    check("ipip.encapsulated");

    // Withdrawing the route on one side cuts the path again.
    nl[0].delete_route(&routes[0]).expect("delete route");
    assert!(!nodes.pod_ping(0), "traffic crossed after the route went");
    check("ipip.route-removed-no-traffic");

    // A named IPIP device bound to the node's underlay address is created
    // (not the fallback device), idempotently; a name held by another kind
    // of device is refused, naming the field.
    let named = IpipTunnel {
        name: "tbyipip".into(),
        local: Some(std::net::Ipv4Addr::new(172, 16, 2, 1)),
        mtu: Some(1400),
    };
    let index = nl[0].ensure_ipip(&named).expect("named ipip device");
    assert_ne!(index, tunl[0], "the named device is not tunl0");
    let l = nl[0].require_link("tbyipip").expect("tbyipip");
    assert_eq!((l.kind.as_deref(), l.mtu), (Some("ipip"), 1400), "{l:?}");
    let shown = nodes.node[0]
        .ip_stdout(["-d", "link", "show", "tbyipip"])
        .expect("ip link");
    assert!(shown.contains("local 172.16.2.1"), "{shown}");
    assert_eq!(nl[0].ensure_ipip(&named).expect("again"), index);
    let err = nl[0]
        .ensure_ipip(&IpipTunnel {
            name: "eth0".into(),
            local: None,
            mtu: None,
        })
        .expect_err("eth0 is a veth");
    assert!(
        matches!(&err, tabby_dataplane::Error::Invalid { field, .. } if field == "ipip.name"),
        "{err:?}"
    );
    nl[0].delete_link(index).expect("delete tbyipip");
    assert!(nl[0].link("tbyipip").expect("lookup").is_none());
    check("ipip.named-device");
}

/// VXLAN in Calico's layout: `vxlan.tabby` with the node's tunnel address,
/// the remote block onlink via the remote tunnel address, which has a
/// static ARP entry and an FDB entry pointing at the remote underlay.
fn vxlan() {
    let nodes = Nodes::new("vm-vx", 3, "10.96");
    assert!(
        nodes.node[0].ping(&nodes.underlay[1].to_string(), 1),
        "underlay broken"
    );
    check("vxlan.underlay");

    let macs: [MacAddr; 2] = [
        "02:74:62:00:00:11".parse().expect("mac"),
        "02:74:62:00:00:12".parse().expect("mac"),
    ];
    let blocks = [net("10.96.1.0/26"), net("10.96.2.0/26")];
    let tunnel_addr = [addr("10.96.1.0"), addr("10.96.2.0")];
    let mut nl = [netlink(&nodes.node[0]), netlink(&nodes.node[1])];
    let mut dev = [0u32; 2];
    for i in 0..2 {
        let eth0 = nl[i].link_index("eth0").expect("eth0");
        dev[i] = nl[i]
            .ensure_vxlan(&Vxlan {
                name: "vxlan.tabby".into(),
                vni: 4096,
                local: Some(nodes.underlay[i]),
                underlay: Some(eth0),
                port: 4789,
                learning: false,
                mtu: Some(1450),
                mac: Some(macs[i]),
            })
            .expect("vxlan device");
        nl[i]
            .add_address(dev[i], IpNet::new(tunnel_addr[i], 32).expect("net"))
            .expect("tunnel address");
        nl[i].set_up(dev[i]).expect("up");
        let j = 1 - i;
        nl[i]
            .add_route(&Route::multipath(
                blocks[j],
                vec![
                    NextHop::via(tunnel_addr[j])
                        .with_device(dev[i])
                        .with_onlink(),
                ],
            ))
            .expect("route via vxlan");
    }
    check("vxlan.device");

    assert!(!nodes.pod_ping(0), "traffic crossed with no FDB entry");
    check("vxlan.no-fdb-no-traffic");

    for i in 0..2 {
        let j = 1 - i;
        nl[i]
            .replace_neighbour(dev[i], tunnel_addr[j], macs[j])
            .expect("arp entry");
        nl[i]
            .replace_fdb(dev[i], macs[j], nodes.underlay[j])
            .expect("fdb entry");
    }
    let tx0 = counter(&nodes.node[0], "vxlan.tabby", "tx_packets");
    let rx1 = counter(&nodes.node[1], "vxlan.tabby", "rx_packets");
    let capture = Capture::start(&nodes.node[1], "eth0", "udp port 4789", 2);
    if !nodes.pod_ping(0) {
        nodes.dump();
        panic!("pod 10.96.1.5 cannot reach 10.96.2.5 over vxlan");
    }
    println!("tabby-guest: vxlan ping 10.96.1.5 -> 10.96.2.5 passed");
    check("vxlan.pod-to-pod-ping");

    let moved = [
        counter(&nodes.node[0], "vxlan.tabby", "tx_packets") - tx0,
        counter(&nodes.node[1], "vxlan.tabby", "rx_packets") - rx1,
    ];
    assert!(
        moved.iter().all(|m| *m >= 1),
        "vxlan counters did not move: {moved:?}"
    );
    let seen = capture.finish();
    print!(
        "{}",
        seen.lines()
            .map(|l| format!("tabby-guest: underlay n2 eth0: {l}\n"))
            .collect::<String>()
    );
    assert!(
        seen.contains("> 172.16.3.2.4789: VXLAN")
            && seen.contains("vni 4096")
            && seen.contains("10.96.1.5 > 10.96.2.5: ICMP echo request"),
        "no VXLAN-encapsulated pod packet on the underlay: {seen:?}"
    );
    check("vxlan.encapsulated");
}
