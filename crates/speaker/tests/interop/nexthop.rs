//! Next-hop reachability (seed 003's pitfall) and FIB ownership: a route
//! whose next hop tabby's namespace cannot reach is not best, not
//! installed, and becomes both once a kernel route covers the next hop;
//! FIB sync start-up and exit leave the CNI plugin's `proto tabby` device
//! routes and blackholes alone.

use std::time::Duration;

use crate::net::{A, B, Pair};
use crate::peers::{Daemon, Kind, Neighbor, Spec};
use crate::tabby::Tabby;

const T: Duration = Duration::from_secs(40);

fn kernel(ns: &tabby_testbed::Netns, prefix: &str) -> String {
    ns.ip_stdout(["route", "show", prefix]).expect("ip route")
}

#[test]
fn unreachable_next_hop_is_not_used_until_a_route_covers_it() {
    let pair = Pair::new("nh");
    let tabby = Tabby::start(
        &pair.a,
        &format!(
            "asNumber: 65001\nrouterId: {A}\nfib: true\nlisten: [\"{A}:179\"]\npeers:\n  - {{address: {B}, asNumber: 65001, passive: true}}\n"
        ),
    );
    let mut exa = Daemon::start(
        &pair.b,
        Spec {
            kind: Kind::Exabgp,
            asn: 65001,
            addr: B.to_owned(),
            neighbors: vec![Neighbor {
                addr: A.to_owned(),
                asn: 65001,
                passive: false,
                rr_client: false,
            }],
            cluster_id: None,
            password: None,
            ttl_security: false,
        },
    );
    tabby.wait_established(B, T);

    let (good, bad, far) = ("10.81.1.0/24", "10.81.2.0/24", "10.66.0.1");
    exa.announce_via(good, B);
    exa.announce_via(bad, far);
    let routes = tabby.wait_routes("both routes received", T, |rs| {
        rs.iter().any(|r| r.prefix == good && r.best) && rs.iter().any(|r| r.prefix == bad)
    });
    let r = routes.iter().find(|r| r.prefix == bad).expect("bad route");
    assert!(!r.best, "route via unreachable {far} is best: {r:?}");
    assert!(
        r.unresolved,
        "route via {far} not shown as unresolved: {r:?}"
    );
    let g = routes
        .iter()
        .find(|r| r.prefix == good)
        .expect("good route");
    assert!(!g.unresolved, "{g:?}");
    let installed = tabby_testbed::wait_until(T, "the reachable route installed", || {
        kernel(&pair.a, good).contains(&format!("via {B}"))
    });
    assert!(installed.is_ok(), "{}", tabby.log());
    assert!(
        kernel(&pair.a, bad).trim().is_empty(),
        "route via an unreachable next hop installed: {}",
        kernel(&pair.a, bad)
    );

    // The next hop's subnet becomes connected: the route becomes best and
    // is installed, without anything else happening on the session.
    pair.a
        .ip(["route", "add", "10.66.0.0/24", "dev", "eth0"])
        .expect("connected route");
    tabby.wait_routes("the route via the now reachable next hop best", T, |rs| {
        rs.iter()
            .any(|r| r.prefix == bad && r.best && !r.unresolved)
    });
    let mut seen = String::new();
    let installed = tabby_testbed::wait_until(T, "the route installed", || {
        seen = kernel(&pair.a, bad);
        seen.contains(&format!("via {far}"))
    });
    assert!(installed.is_ok(), "kernel: {seen:?}\n{}", tabby.log());

    // And unreachable again once that route goes.
    pair.a
        .ip(["route", "del", "10.66.0.0/24", "dev", "eth0"])
        .expect("remove route");
    tabby.wait_routes("the route unresolved again", T, |rs| {
        rs.iter()
            .any(|r| r.prefix == bad && !r.best && r.unresolved)
    });
    let removed = tabby_testbed::wait_until(T, "the route removed from the kernel", || {
        kernel(&pair.a, bad).trim().is_empty()
    });
    assert!(removed.is_ok(), "left: {}", kernel(&pair.a, bad));
}

#[test]
fn fib_sync_owns_only_gateway_routes() {
    let pair = Pair::new("fo");
    let ns = &pair.a;
    ns.ip([
        "route",
        "add",
        "10.91.0.5/32",
        "dev",
        "eth0",
        "proto",
        "201",
    ])
    .expect("device route");
    ns.ip(["route", "add", "blackhole", "10.91.1.0/26", "proto", "201"])
        .expect("blackhole");
    ns.ip(["route", "add", "10.91.2.0/24", "via", B, "proto", "201"])
        .expect("stale gateway route");
    let tabby = Tabby::start(
        ns,
        &format!(
            "asNumber: 65001\nrouterId: {A}\nfib: true\nlisten: [\"{A}:179\"]\npeers:\n  - {{address: {B}, asNumber: 65002, passive: true}}\n"
        ),
    );
    let stale_gone = tabby_testbed::wait_until(T, "the stale gateway route removed", || {
        kernel(ns, "10.91.2.0/24").trim().is_empty()
    });
    assert!(stale_gone.is_ok(), "{}", tabby.log());
    let survivors = |when: &str| {
        let dev = kernel(ns, "10.91.0.5/32");
        assert!(
            dev.contains("dev eth0"),
            "device route gone {when}: {dev:?}"
        );
        let bh = kernel(ns, "10.91.1.0/26");
        assert!(bh.contains("blackhole"), "blackhole gone {when}: {bh:?}");
    };
    survivors("after start");
    tabby.signal("TERM");
    tabby.wait_exit(T);
    survivors("after exit");
}
