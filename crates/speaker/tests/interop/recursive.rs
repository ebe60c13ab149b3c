//! Recursive next-hop resolution (BIRD's `gateway recursive`): tabby bgpd
//! on A and B, iBGP multihop over a plain router R (static routes), in a
//! line A - R - B. Each side's next hop is the other's address behind R,
//! so the learned prefix is installed via R's address (the gateway of the
//! static route toward the next hop), pings pass, and the route goes when
//! the route toward the next hop goes, and comes back with it.

use std::time::Duration;

use tabby_testbed::{Netns, veth, wait_until};

use crate::tabby::Tabby;

const T: Duration = Duration::from_secs(60);
/// A's and B's addresses (on either side of R) and R's on each link.
const A: &str = "10.91.1.2";
const R_A: &str = "10.91.1.1";
const B: &str = "10.91.2.2";
const R_B: &str = "10.91.2.1";

fn config(me: &str, peer: &str, originate: &str) -> String {
    format!(
        "asNumber: 65001\nrouterId: {me}\nlisten: [\"{me}:179\"]\nfib: true\noriginate: [{originate}]\npeers:\n  - {{address: {peer}, asNumber: 65001, holdTime: 9, keepaliveTime: 3, connectRetryTime: 2}}\n"
    )
}

fn kernel(ns: &Netns, prefix: &str) -> String {
    ns.ip_stdout(["route", "show", prefix]).expect("ip route")
}

fn ping_from(ns: &Netns, from: &str, to: &str) -> bool {
    ns.exec(
        "ping",
        ["-c", "2", "-i", "0.2", "-W", "1", "-q", "-I", from, to],
    )
    .is_ok()
}

#[test]
fn next_hop_behind_a_router_is_installed_via_the_router() {
    let a = Netns::new("rca").expect("netns a");
    let r = Netns::new("rcr").expect("netns r");
    let b = Netns::new("rcb").expect("netns b");
    veth(
        &a,
        "eth0",
        Some("10.91.1.2/24"),
        &r,
        "ea",
        Some("10.91.1.1/24"),
    )
    .expect("veth a-r");
    veth(
        &r,
        "eb",
        Some("10.91.2.1/24"),
        &b,
        "eth0",
        Some("10.91.2.2/24"),
    )
    .expect("veth r-b");
    r.sysctl("net.ipv4.ip_forward=1").expect("forwarding on R");
    // R: a plain router with static routes to A's and B's loopbacks.
    r.ip(["route", "add", "10.92.1.0/24", "via", A])
        .expect("R route");
    r.ip(["route", "add", "10.92.2.0/24", "via", B])
        .expect("R route");
    // A and B reach each other's link through R.
    a.ip(["route", "add", "10.91.2.0/24", "via", R_A])
        .expect("A route");
    b.ip(["route", "add", "10.91.1.0/24", "via", R_B])
        .expect("B route");
    a.addr_add("lo", "10.92.1.1/32").expect("A loopback");
    b.addr_add("lo", "10.92.2.1/32").expect("B loopback");

    let ta = Tabby::start(&a, &config(A, B, "10.92.1.0/24"));
    let tb = Tabby::start(&b, &config(B, A, "10.92.2.0/24"));
    ta.wait_established(B, T);
    tb.wait_established(A, T);

    let installed = wait_until(T, "B's prefix on A via R", || {
        let k = kernel(&a, "10.92.2.0/24");
        k.contains(&format!("via {R_A}")) && k.contains("proto")
    });
    assert!(
        installed.is_ok(),
        "A: {:?}\n--- tabby A log ---\n{}",
        kernel(&a, "10.92.2.0/24"),
        ta.log()
    );
    let on_a = a
        .ip_stdout(["route", "show", "proto", "201"])
        .expect("ip route");
    assert!(on_a.contains("10.92.2.0/24 via 10.91.1.1"), "{on_a}");
    let back = wait_until(T, "A's prefix on B via R", || {
        kernel(&b, "10.92.1.0/24").contains(&format!("via {R_B}"))
    });
    assert!(back.is_ok(), "B: {:?}", kernel(&b, "10.92.1.0/24"));
    assert!(
        ping_from(&a, "10.92.1.1", "10.92.2.1"),
        "A's loopback cannot ping B's"
    );

    // No route toward the next hop: the BGP route goes.
    a.ip(["route", "del", "10.91.2.0/24"]).expect("del A route");
    let gone = wait_until(T, "B's prefix removed on A", || {
        kernel(&a, "10.92.2.0/24").trim().is_empty()
    });
    assert!(gone.is_ok(), "A: {:?}", kernel(&a, "10.92.2.0/24"));
    // Back (before the hold timer could expire or not: the route follows
    // the kernel either way).
    a.ip(["route", "add", "10.91.2.0/24", "via", R_A])
        .expect("re-add A route");
    ta.wait_established(B, T);
    let again = wait_until(T, "B's prefix back on A via R", || {
        kernel(&a, "10.92.2.0/24").contains(&format!("via {R_A}"))
    });
    assert!(
        again.is_ok(),
        "A: {:?}\n{}",
        kernel(&a, "10.92.2.0/24"),
        ta.log()
    );
    assert!(ping_from(&a, "10.92.1.1", "10.92.2.1"), "ping after re-add");
}
