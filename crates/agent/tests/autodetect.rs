//! Address autodetection against a real namespace: interfaces, addresses
//! and a default route made here (as root), read back through netlink.
//! Addresses: 10.83.1.0/24 (ens3), 10.83.2.0/24 (eth0, default route),
//! all inside the test's namespace.

use tabby_agent::registration::{AutodetectMethod, autodetect};
use tabby_testbed::Netns;

fn detect(ns: &Netns, method: &str) -> Option<String> {
    let m: AutodetectMethod = method.parse().expect("method");
    let dp = tabby_dataplane::Netns::named(ns.name()).expect("netns");
    let mut nl = dp.netlink().expect("netlink");
    autodetect(&mut nl, &m, false)
        .expect("autodetect")
        .map(|a| a.to_string())
}

#[test]
fn methods_pick_the_expected_address() {
    let ns = Netns::new("agdetect").expect("netns");
    // veth pairs with both ends inside (no dummy module on every kernel).
    for (dev, peer) in [
        ("ens3", "ens3p"),
        ("eth0", "eth0p"),
        ("tby0123456789", "tbyp"),
    ] {
        ns.ip(["link", "add", dev, "type", "veth", "peer", "name", peer])
            .expect("veth");
        ns.ip(["link", "set", dev, "up"]).expect("up");
        ns.ip(["link", "set", peer, "up"]).expect("up");
    }
    ns.addr_add("tby0123456789", "10.83.9.1/32").expect("addr");
    ns.addr_add("ens3", "10.83.1.5/24").expect("addr");
    ns.addr_add("eth0", "10.83.2.5/24").expect("addr");
    ns.ip(["route", "add", "default", "via", "10.83.2.1"])
        .expect("default route");

    assert_eq!(
        detect(&ns, "default-route").as_deref(),
        Some("10.83.2.5/24")
    );
    assert_eq!(
        detect(&ns, "interface=ens*").as_deref(),
        Some("10.83.1.5/24")
    );
    assert_eq!(
        detect(&ns, "interface=nope,eth0").as_deref(),
        Some("10.83.2.5/24")
    );
    assert_eq!(
        detect(&ns, "cidr=10.83.2.0/24").as_deref(),
        Some("10.83.2.5/24")
    );
    assert_eq!(detect(&ns, "cidr=192.0.2.0/24"), None);
    // first-found never picks loopback or a pod veth.
    let first = detect(&ns, "first-found").expect("an address");
    assert!(
        first == "10.83.1.5/24" || first == "10.83.2.5/24",
        "{first}"
    );

    // Without a default route, default-route falls back to first-found.
    ns.ip(["route", "del", "default"]).expect("del default");
    assert_eq!(detect(&ns, "default-route"), Some(first));
}
