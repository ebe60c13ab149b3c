//! FIB sync: `fib: true` installs best paths into the kernel as
//! `proto tabby` routes, multipath sets as ECMP, and removes them on
//! withdrawal and on exit.

use std::time::Duration;

use crate::net::Star;
use crate::peers::{Daemon, Kind, Neighbor, Spec};
use crate::tabby::Tabby;

const T: Duration = Duration::from_secs(40);

fn kernel(star: &Star, prefix: &str) -> String {
    star.hub
        .ip_stdout(["route", "show", prefix, "proto", "201"])
        .expect("ip route")
}

#[test]
fn fib_installs_ecmp_and_removes_on_withdrawal() {
    let (star, _sw) = Star::new("fib", 2);
    let (s0, s1) = (Star::spoke_addr(0), Star::spoke_addr(1));
    let tabby = Tabby::start(
        &star.hub,
        &format!(
            "asNumber: 65001\nrouterId: {hub}\nfib: true\nlisten: [\"{hub}:179\"]\npeers:\n  - {{address: {s0}, asNumber: 65002, passive: true}}\n  - {{address: {s1}, asNumber: 65002, passive: true}}\n",
            hub = Star::HUB
        ),
    );
    let spec = |i: usize| Spec {
        kind: Kind::Bird2,
        asn: 65002,
        addr: Star::spoke_addr(i),
        neighbors: vec![Neighbor {
            addr: Star::HUB.to_owned(),
            asn: 65001,
            passive: false,
            rr_client: false,
        }],
        cluster_id: None,
        password: None,
        ttl_security: false,
    };
    let mut b0 = Daemon::start(&star.spokes[0], spec(0));
    let mut b1 = Daemon::start(&star.spokes[1], spec(1));
    tabby.wait_established(&s0, T);
    tabby.wait_established(&s1, T);

    let prefix = "10.70.0.0/24";
    b0.announce(prefix);
    b1.announce(prefix);
    let mut seen = String::new();
    let ecmp = tabby_testbed::wait_until(T, "an ECMP kernel route", || {
        seen = kernel(&star, prefix);
        seen.contains(&format!("via {s0}")) && seen.contains(&format!("via {s1}"))
    });
    assert!(
        ecmp.is_ok(),
        "kernel route: {seen:?}\nroutes: {:?}\n{}",
        tabby.routes(),
        tabby.log()
    );
    assert!(seen.contains("nexthop"), "not a multipath route: {seen}");

    b0.withdraw(prefix);
    let single = tabby_testbed::wait_until(T, "one next hop left", || {
        seen = kernel(&star, prefix);
        !seen.contains(&format!("via {s0}")) && seen.contains(&format!("via {s1}"))
    });
    assert!(single.is_ok(), "kernel route: {seen:?}");

    b1.withdraw(prefix);
    let gone = tabby_testbed::wait_until(T, "the route removed", || {
        kernel(&star, prefix).trim().is_empty()
    });
    assert!(
        gone.is_ok(),
        "kernel route left: {:?}",
        kernel(&star, prefix)
    );

    // Routes of other protocols are never touched, and ours go on exit.
    star.hub
        .ip(["route", "add", "10.71.0.0/24", "via", &s0])
        .expect("static route");
    b0.announce("10.72.0.0/24");
    let installed = tabby_testbed::wait_until(T, "10.72.0.0/24 installed", || {
        !kernel(&star, "10.72.0.0/24").trim().is_empty()
    });
    assert!(installed.is_ok());
    tabby.signal("TERM");
    let cleaned = tabby_testbed::wait_until(T, "routes removed on exit", || {
        kernel(&star, "10.72.0.0/24").trim().is_empty()
    });
    assert!(
        cleaned.is_ok(),
        "left behind: {}",
        kernel(&star, "10.72.0.0/24")
    );
    let statics = star
        .hub
        .ip_stdout(["route", "show", "10.71.0.0/24"])
        .expect("ip route");
    assert!(
        statics.contains("10.71.0.0/24"),
        "a route of another protocol was removed"
    );
}
