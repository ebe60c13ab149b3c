//! Proves the harness itself by peering two third-party daemons with each
//! other: if these pass, a failure in a tabby test is tabby's.

use std::time::Duration;

use crate::net::{A, B, Pair};
use crate::peers::{
    Daemon, Kind, Neighbor, RICH_COMMUNITIES, RICH_LARGE, RICH_MED, Spec, wait_rib,
};

const T: Duration = Duration::from_secs(30);

fn spec(kind: Kind, asn: u32, addr: &str, peer: &str, peer_as: u32, passive: bool) -> Spec {
    Spec {
        kind,
        asn,
        addr: addr.to_owned(),
        neighbors: vec![Neighbor {
            addr: peer.to_owned(),
            asn: peer_as,
            passive,
            rr_client: false,
        }],
        cluster_id: None,
        password: None,
        ttl_security: false,
    }
}

/// `x` (in ns a, AS 65001) and `y` (ns b, AS 65002 or 65001) exchange a
/// route each way, check attributes, withdraw, and `x` shuts the session.
fn exchange(x: Kind, y: Kind, ibgp: bool) {
    let net = Pair::new(&format!("h{}{}", x.tag(), y.tag()));
    let (ax, ay) = (65001, if ibgp { 65001 } else { 65002 });
    let mut dx = Daemon::start(&net.a, spec(x, ax, A, B, ay, false));
    let mut dy = Daemon::start(&net.b, spec(y, ay, B, A, ax, true));
    dx.wait_established(B, T);
    dy.wait_established(A, T);

    dx.announce("10.101.0.0/24");
    dy.announce("10.102.0.0/24");
    let rib_y = wait_rib(&dy, "route from x", T, |r| r.contains_key("10.101.0.0/24"));
    let rib_x = wait_rib(&dx, "route from y", T, |r| r.contains_key("10.102.0.0/24"));
    for (rib, prefix, from_as) in [(&rib_y, "10.101.0.0/24", ax), (&rib_x, "10.102.0.0/24", ay)] {
        let r = &rib[prefix];
        let want_path = if ibgp {
            String::new()
        } else {
            from_as.to_string()
        };
        assert_eq!(r.as_path, want_path, "{x:?}/{y:?} {r:?}");
        assert_eq!(
            r.communities,
            RICH_COMMUNITIES.to_vec(),
            "{x:?}/{y:?} {r:?}"
        );
        assert_eq!(
            r.large_communities,
            vec![RICH_LARGE.to_owned()],
            "{x:?}/{y:?} {r:?}"
        );
        assert_eq!(r.med, Some(RICH_MED), "{x:?}/{y:?} {r:?}");
    }
    dx.withdraw("10.101.0.0/24");
    wait_rib(&dy, "withdrawal from x", T, |r| {
        !r.contains_key("10.101.0.0/24")
    });
    dx.shutdown_peer(B);
    let mut seen = String::new();
    let ok = tabby_testbed::wait_until(T, "notification seen", || {
        seen = dy.last_error(A).to_lowercase();
        seen.contains("cease") || seen.contains("administrative") || seen.contains("shutdown")
    });
    assert!(ok.is_ok(), "{y:?} did not report {x:?}'s Cease: {seen}");
}

#[test]
fn harness_bird2_frr_ebgp() {
    exchange(Kind::Bird2, Kind::Frr, false);
}

#[test]
fn harness_bird1_frr_ibgp() {
    exchange(Kind::Bird1, Kind::Frr, true);
}

#[test]
fn harness_gobgp_bird2_ebgp() {
    exchange(Kind::Gobgp, Kind::Bird2, false);
}

#[test]
fn harness_frr_exabgp_ebgp() {
    exchange(Kind::Frr, Kind::Exabgp, false);
}
