//! Links against the real kernel, in namespaces the tests create: a veth
//! pair made in a "host" namespace with its peer moved straight into a
//! "pod" namespace, renamed, addressed, MTU and MAC set, routes inside the
//! pod, proxy ARP on the host side, and the pod reaching the host; moving an
//! existing link; deleting. Run as root.

use std::net::IpAddr;

use ipnet::IpNet;
use tabby_dataplane::{MacAddr, Netns as DpNetns, Route, VethPair, sysctl};
use tabby_testbed::{Netns, veth};

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}
fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn veth_into_pod_namespace_and_pod_reaches_host() {
    let host = Netns::new("dp-host").expect("host");
    let pod = Netns::new("dp-pod").expect("pod");
    let up = Netns::new("dp-up").expect("uplink");
    veth(
        &host,
        "uplink",
        Some("172.16.9.1/24"),
        &up,
        "eth0",
        Some("172.16.9.2/24"),
    )
    .expect("uplink veth");
    host.ip(["route", "add", "default", "via", "172.16.9.2"])
        .expect("default");
    let host_ns = DpNetns::named(host.name()).expect("host ns");
    let pod_ns = DpNetns::named(pod.name()).expect("pod ns");
    let mut h = host_ns.netlink().expect("host netlink");
    let mut p = pod_ns.netlink().expect("pod netlink");

    let host_mac: MacAddr = "ee:ee:ee:ee:ee:ee".parse().expect("mac");
    let pod_mac: MacAddr = "02:00:0a:f4:00:05".parse().expect("mac");
    let hidx = h
        .create_veth(
            &VethPair {
                name: "tby0123456789a".into(),
                peer: "tmp5".into(),
                mtu: Some(1400),
                mac: None,
                peer_mac: Some(pod_mac),
                up: false,
                queues: None,
            },
            Some(&pod_ns),
        )
        .expect("create veth");
    let hidx = hidx.index;
    assert!(
        h.link("tmp5").expect("lookup").is_none(),
        "peer left in the host"
    );
    h.set_mac(hidx, host_mac).expect("host mac");
    h.set_up(hidx).expect("host side up");
    host_ns
        .run(|| {
            sysctl::set_proxy_arp("tby0123456789a", true)?;
            sysctl::set_proxy_delay("tby0123456789a", 0)?;
            sysctl::set_ipv4_forwarding(true)?;
            sysctl::set_rp_filter("tby0123456789a", sysctl::RpFilter::Loose)?;
            sysctl::set_accept_ra("tby0123456789a", 0)
        })
        .expect("thread")
        .expect("sysctls");
    let proxy = host
        .exec("cat", ["/proc/sys/net/ipv4/conf/tby0123456789a/proxy_arp"])
        .expect("cat");
    assert_eq!(String::from_utf8_lossy(&proxy.stdout).trim(), "1");
    let delay = host
        .exec(
            "cat",
            ["/proc/sys/net/ipv4/neigh/tby0123456789a/proxy_delay"],
        )
        .expect("cat");
    assert_eq!(String::from_utf8_lossy(&delay.stdout).trim(), "0");
    h.add_route(&Route::dev(net("10.244.0.5/32"), hidx))
        .expect("host route to pod");

    let l = p.require_link("tmp5").expect("peer in pod");
    assert_eq!(l.mtu, 1400);
    assert_eq!(l.mac, Some(pod_mac));
    assert_eq!(l.kind.as_deref(), Some("veth"));
    p.rename(l.index, "eth0").expect("rename");
    p.set_up(l.index).expect("up");
    p.add_address(l.index, net("10.244.0.5/32"))
        .expect("v4 address");
    p.add_address(l.index, net("fd00:244::5/128"))
        .expect("v6 address");
    p.add_address(l.index, net("10.244.0.5/32"))
        .expect("adding again is fine");
    let addrs = p.addresses(l.index).expect("addresses");
    assert!(addrs.contains(&net("10.244.0.5/32")), "{addrs:?}");
    assert!(addrs.contains(&net("fd00:244::5/128")), "{addrs:?}");
    p.add_route(&Route::dev(net("169.254.1.1/32"), l.index))
        .expect("gw route");
    p.add_route(&Route::via(net("0.0.0.0/0"), ip("169.254.1.1")))
        .expect("default");
    let eth0 = p.require_link("eth0").expect("renamed");
    assert!(eth0.up);
    assert_eq!(eth0.index, l.index);

    assert!(
        pod.ping("172.16.9.1", 3),
        "pod cannot reach the host over the veth"
    );
    let neigh = pod
        .ip_stdout(["neigh", "show", "169.254.1.1"])
        .expect("neigh");
    assert!(
        neigh.contains("ee:ee:ee:ee:ee:ee"),
        "host side did not proxy-ARP: {neigh}"
    );

    p.set_down(l.index).expect("down");
    assert!(!p.require_link("eth0").expect("eth0").up);
    p.set_mtu(l.index, 1300).expect("mtu");
    assert_eq!(p.require_link("eth0").expect("eth0").mtu, 1300);
    p.delete_address(l.index, net("10.244.0.5/32"))
        .expect("delete address");
    assert!(
        !p.addresses(l.index)
            .expect("addresses")
            .contains(&net("10.244.0.5/32"))
    );

    h.delete_link(hidx).expect("delete host side");
    assert!(
        p.link("eth0").expect("lookup").is_none(),
        "peer outlived its pair"
    );
}

#[test]
fn veth_created_up_with_its_queue_count() {
    let host = Netns::new("dp-vup").expect("host");
    let pod = Netns::new("dp-vupp").expect("pod");
    let host_ns = DpNetns::named(host.name()).expect("ns");
    let pod_ns = DpNetns::named(pod.name()).expect("ns");
    let mut h = host_ns.netlink().expect("netlink");
    let pair = |up, queues| VethPair {
        name: "vup0".into(),
        peer: "eth0".into(),
        up,
        queues,
        ..Default::default()
    };
    // How many TX/RX queues `ip -d` reports for `dev` in `ns`.
    let queues = |ns: &str, dev: &str| {
        let out = std::process::Command::new("ip")
            .args(["-n", ns, "-d", "link", "show", "dev", dev])
            .output()
            .expect("ip");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |name: &str| {
            let mut words = text.split_whitespace();
            words.find(|w| *w == name);
            words.next().map(str::to_owned)
        };
        (field("numtxqueues"), field("numrxqueues"))
    };
    let one = (Some("1".to_owned()), Some("1".to_owned()));
    for (up, q) in [(true, Some(1)), (false, None)] {
        let near = h.create_veth(&pair(up, q), Some(&pod_ns)).expect("veth");
        let index = near.index;
        // The far end's index, as the pod's namespace knows it.
        assert_eq!(
            near.linked,
            Some(
                pod_ns
                    .netlink()
                    .expect("pod netlink")
                    .link_index("eth0")
                    .expect("far end")
            )
        );
        if q.is_some() {
            assert_eq!(queues(host.name(), "vup0"), one, "host end");
            assert_eq!(queues(pod.name(), "eth0"), one, "pod end");
        } else {
            // The kernel's default: one per possible CPU.
            let possible =
                std::fs::read_to_string("/sys/devices/system/cpu/possible").expect("possible CPUs");
            let n = possible
                .trim()
                .rsplit(['-', ','])
                .next()
                .and_then(|last| last.parse::<u32>().ok())
                .expect("last possible CPU")
                + 1;
            assert_eq!(
                queues(host.name(), "vup0").0,
                Some(n.to_string()),
                "default queues"
            );
        }
        let near = h.require_link("vup0").expect("near end");
        let far = pod_ns
            .netlink()
            .expect("pod netlink")
            .require_link("eth0")
            .expect("far end in the pod");
        assert_eq!(
            (near.index, near.up, far.up),
            (index, up, false),
            "up: {up}"
        );
        h.delete_link(index).expect("delete");
    }
    for bad in [0, 4097] {
        let err = h
            .create_veth(&pair(true, Some(bad)), Some(&pod_ns))
            .expect_err("bad queue count");
        assert!(err.to_string().contains("veth.queues"), "{err}");
    }
    assert!(h.link("vup0").expect("lookup").is_none(), "nothing left");
}

#[test]
fn move_existing_link_and_errors_name_the_object() {
    let host = Netns::new("dp-mvh").expect("host");
    let other = Netns::new("dp-mvo").expect("other");
    let host_ns = DpNetns::named(host.name()).expect("ns");
    let other_ns = DpNetns::named(other.name()).expect("ns");
    let mut h = host_ns.netlink().expect("netlink");
    let a = h
        .create_veth(
            &VethPair {
                name: "mv0".into(),
                peer: "mv1".into(),
                ..Default::default()
            },
            None,
        )
        .expect("veth")
        .index;
    let b = h.link_index("mv1").expect("peer here");
    h.move_to_netns(b, &other_ns).expect("move");
    assert!(h.link("mv1").expect("lookup").is_none());
    let mut o = other_ns.netlink().expect("netlink");
    assert!(o.link("mv1").expect("lookup").is_some());
    let err = h
        .create_veth(
            &VethPair {
                name: "mv0".into(),
                peer: "mv2".into(),
                ..Default::default()
            },
            None,
        )
        .expect_err("name taken");
    assert!(
        err.to_string().contains("create veth mv0 peer mv2"),
        "{err}"
    );
    let err = h.require_link("nope0").expect_err("missing");
    assert!(err.to_string().contains("nope0"), "{err}");
    let err = h
        .create_veth(
            &VethPair {
                name: "this-name-is-too-long".into(),
                peer: "x".into(),
                ..Default::default()
            },
            None,
        )
        .expect_err("too long");
    assert!(err.to_string().contains("veth.name"), "{err}");
    h.delete_link(a).expect("delete");
    assert!(o.link("mv1").expect("lookup").is_none());
    let err = DpNetns::open("/var/run/netns/does-not-exist-tby").expect_err("no such ns");
    assert!(err.to_string().contains("does-not-exist-tby"), "{err}");
}
