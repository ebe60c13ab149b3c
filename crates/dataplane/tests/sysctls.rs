//! Every sysctl setter the node and the CNI wiring use, read back from
//! /proc/sys inside a namespace the test creates (the calling thread enters
//! it through `Netns::run`): each value turned on and off again, the
//! namespace's values only (the host's stay as they were), and the errors
//! naming the field or the path. Run as root.

use tabby_dataplane::sysctl::{self, Family, RpFilter};
use tabby_dataplane::{Netns as DpNetns, VethPair};
use tabby_testbed::Netns;

/// Reads `net.<family>.conf.<interface>.<key>` in the calling thread's
/// namespace.
fn conf(family: Family, interface: &str, key: &str) -> String {
    sysctl::read(&sysctl::conf_path(family, interface, key).expect("path")).expect("read")
}

#[test]
fn every_setter_reads_back_in_its_namespace_only() {
    let ns = Netns::new("dp-sysctl").expect("netns");
    let dp = DpNetns::named(ns.name()).expect("ns");
    dp.netlink()
        .expect("netlink")
        .create_veth(
            &VethPair {
                name: "sys0".into(),
                peer: "sys1".into(),
                ..Default::default()
            },
            None,
        )
        .expect("veth");
    let host_forwarding =
        sysctl::read(std::path::Path::new("/proc/sys/net/ipv4/ip_forward")).expect("host");

    let seen = dp
        .run(|| {
            let mut seen = Vec::new();
            for on in [true, false, true] {
                let want = if on { "1" } else { "0" };
                sysctl::set_ipv4_forwarding(on).expect("ip_forward");
                let v = sysctl::read(std::path::Path::new("/proc/sys/net/ipv4/ip_forward"))
                    .expect("read ip_forward");
                seen.push(("ip_forward", v == want));
                sysctl::set_ipv6_forwarding("all", on).expect("v6 forwarding");
                seen.push((
                    "ipv6 forwarding",
                    conf(Family::V6, "all", "forwarding") == want,
                ));
                sysctl::set_proxy_arp("sys0", on).expect("proxy_arp");
                seen.push(("proxy_arp", conf(Family::V4, "sys0", "proxy_arp") == want));
                sysctl::set_proxy_ndp("sys0", on).expect("proxy_ndp");
                seen.push(("proxy_ndp", conf(Family::V6, "sys0", "proxy_ndp") == want));
            }
            for (mode, want) in [
                (RpFilter::Strict, "1"),
                (RpFilter::Loose, "2"),
                (RpFilter::Off, "0"),
            ] {
                sysctl::set_rp_filter("sys0", mode).expect("rp_filter");
                seen.push(("rp_filter", conf(Family::V4, "sys0", "rp_filter") == want));
            }
            for centiseconds in [0, 80] {
                sysctl::set_proxy_delay("sys0", centiseconds).expect("proxy_delay");
                let v = sysctl::read(std::path::Path::new(
                    "/proc/sys/net/ipv4/neigh/sys0/proxy_delay",
                ))
                .expect("read proxy_delay");
                seen.push(("proxy_delay", v == centiseconds.to_string()));
            }
            for mode in [0, 2, 1] {
                sysctl::set_accept_ra("sys0", mode).expect("accept_ra");
                seen.push((
                    "accept_ra",
                    conf(Family::V6, "sys0", "accept_ra") == mode.to_string(),
                ));
            }
            sysctl::set_ipv4_forwarding(false).expect("off");
            sysctl::set_ipv6_forwarding("all", false).expect("off");
            sysctl::enable_node_forwarding().expect("node forwarding");
            seen.push((
                "node forwarding v4",
                sysctl::read(std::path::Path::new("/proc/sys/net/ipv4/ip_forward")).expect("read")
                    == "1",
            ));
            seen.push((
                "node forwarding v6",
                conf(Family::V6, "all", "forwarding") == "1",
            ));
            seen
        })
        .expect("enter the namespace");
    let wrong: Vec<_> = seen.iter().filter(|(_, ok)| !ok).map(|(n, _)| n).collect();
    assert!(wrong.is_empty(), "read back differs for {wrong:?}");
    assert_eq!(seen.len(), 22, "{seen:?}");

    // The host's own value did not move, and its interfaces do not include
    // the namespace's.
    assert_eq!(
        sysctl::read(std::path::Path::new("/proc/sys/net/ipv4/ip_forward")).expect("host"),
        host_forwarding
    );
    assert!(!std::path::Path::new("/proc/sys/net/ipv4/conf/sys0").exists());
}

#[test]
fn errors_name_the_field_or_the_path() {
    let err = sysctl::set_proxy_arp("../all", true).expect_err("traversal");
    assert!(err.to_string().contains("interface"), "{err}");
    let err = sysctl::set_accept_ra("lo", 3).expect_err("bad mode");
    assert!(err.to_string().contains("accept_ra"), "{err}");
    let ns = Netns::new("dp-sysctle").expect("netns");
    let dp = DpNetns::named(ns.name()).expect("ns");
    let err = dp
        .run(|| sysctl::set_proxy_arp("nosuch0", true))
        .expect("enter")
        .expect_err("no such interface");
    assert!(
        err.to_string()
            .contains("/proc/sys/net/ipv4/conf/nosuch0/proxy_arp"),
        "{err}"
    );
}
