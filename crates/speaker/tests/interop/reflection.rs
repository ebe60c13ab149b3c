//! Route reflection (RFC 4456) with real peers on one LAN: tabby as the
//! reflector for an FRR and a BIRD client, and BIRD 2 as the reflector for
//! two tabby clients; ORIGINATOR_ID and CLUSTER_LIST are checked on the
//! reflected routes.

use std::time::Duration;

use crate::net::Star;
use crate::peers::{Daemon, Kind, Neighbor, Spec, wait_rib};
use crate::tabby::Tabby;

const T: Duration = Duration::from_secs(40);
const AS: u32 = 64512;
const CLUSTER: &str = "10.78.0.100";

fn client(kind: Kind, i: usize) -> Spec {
    Spec {
        kind,
        asn: AS,
        addr: Star::spoke_addr(i),
        neighbors: vec![Neighbor {
            addr: Star::HUB.to_owned(),
            asn: AS,
            passive: false,
            rr_client: false,
        }],
        cluster_id: None,
        password: None,
        ttl_security: false,
    }
}

#[test]
fn tabby_reflects_between_frr_and_bird() {
    let (star, _sw) = Star::new("rrt", 2);
    let (frr_addr, bird_addr) = (Star::spoke_addr(0), Star::spoke_addr(1));
    let tabby = Tabby::start(
        &star.hub,
        &format!(
            "asNumber: {AS}\nrouterId: {hub}\nclusterId: {CLUSTER}\nlisten: [\"{hub}:179\"]\npeers:\n  - {{address: {frr_addr}, asNumber: {AS}, routeReflectorClient: true, passive: true}}\n  - {{address: {bird_addr}, asNumber: {AS}, routeReflectorClient: true, passive: true}}\n",
            hub = Star::HUB
        ),
    );
    let mut frr = Daemon::start(&star.spokes[0], client(Kind::Frr, 0));
    let mut bird = Daemon::start(&star.spokes[1], client(Kind::Bird1, 1));
    tabby.wait_established(&frr_addr, T);
    tabby.wait_established(&bird_addr, T);

    frr.announce("10.60.1.0/24");
    bird.announce("10.60.2.0/24");
    let at_bird = wait_rib(&bird, "FRR's route reflected", T, |r| {
        r.contains_key("10.60.1.0/24")
    });
    let r = &at_bird["10.60.1.0/24"];
    assert_eq!(r.originator_id.as_deref(), Some(frr_addr.as_str()), "{r:?}");
    assert_eq!(r.cluster_list, vec![CLUSTER.to_owned()], "{r:?}");
    assert_eq!(
        r.next_hop.as_deref(),
        Some(frr_addr.as_str()),
        "next hop unchanged: {r:?}"
    );
    let at_frr = wait_rib(&frr, "BIRD's route reflected", T, |r| {
        r.contains_key("10.60.2.0/24")
    });
    let r = &at_frr["10.60.2.0/24"];
    assert_eq!(
        r.originator_id.as_deref(),
        Some(bird_addr.as_str()),
        "{r:?}"
    );
    assert_eq!(r.cluster_list, vec![CLUSTER.to_owned()], "{r:?}");

    // Withdrawals are reflected too.
    frr.withdraw("10.60.1.0/24");
    wait_rib(&bird, "FRR's withdrawal reflected", T, |r| {
        !r.contains_key("10.60.1.0/24")
    });
}

#[test]
fn bird2_reflects_between_tabby_clients() {
    let (star, _sw) = Star::new("rrb", 2);
    let mut spec = Spec {
        kind: Kind::Bird2,
        asn: AS,
        addr: Star::HUB.to_owned(),
        neighbors: (0..2)
            .map(|i| Neighbor {
                addr: Star::spoke_addr(i),
                asn: AS,
                passive: true,
                rr_client: true,
            })
            .collect(),
        cluster_id: Some(CLUSTER.to_owned()),
        password: None,
        ttl_security: false,
    };
    spec.neighbors.sort_by(|a, b| a.addr.cmp(&b.addr));
    let bird = Daemon::start(&star.hub, spec);
    let config = |i: usize, originate: &str| {
        format!(
            "asNumber: {AS}\nrouterId: {me}\nlisten: [\"{me}:179\"]\noriginate: [{originate}]\npeers:\n  - {{address: {hub}, asNumber: {AS}, connectRetryTime: 2}}\n",
            me = Star::spoke_addr(i),
            hub = Star::HUB
        )
    };
    let t0 = Tabby::start(&star.spokes[0], &config(0, "10.61.0.0/24"));
    let t1 = Tabby::start(&star.spokes[1], &config(1, "10.61.1.0/24"));
    bird.wait_established(&Star::spoke_addr(0), T);
    bird.wait_established(&Star::spoke_addr(1), T);
    let routes = t1.wait_routes("t0's route via the reflector", T, |r| {
        r.iter().any(|r| r.prefix == "10.61.0.0/24")
    });
    let r = routes
        .iter()
        .find(|r| r.prefix == "10.61.0.0/24")
        .expect("route");
    assert_eq!(
        r.originator_id.map(|o| o.to_string()),
        Some(Star::spoke_addr(0)),
        "{r:?}"
    );
    assert_eq!(
        r.cluster_list
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![CLUSTER.to_owned()],
        "{r:?}"
    );
    assert!(r.best, "{r:?}");
    assert_eq!(
        r.next_hop.map(|n| n.to_string()),
        Some(Star::spoke_addr(0)),
        "{r:?}"
    );
    let routes = t0.wait_routes("t1's route via the reflector", T, |r| {
        r.iter().any(|r| r.prefix == "10.61.1.0/24")
    });
    let r = routes
        .iter()
        .find(|r| r.prefix == "10.61.1.0/24")
        .expect("route");
    assert_eq!(
        r.originator_id.map(|o| o.to_string()),
        Some(Star::spoke_addr(1)),
        "{r:?}"
    );
    // A client never accepts its own route back (ORIGINATOR_ID loop check).
    assert!(
        !routes
            .iter()
            .any(|r| r.prefix == "10.61.0.0/24" && r.peer.is_some()),
        "t0 accepted its own route back: {routes:?}"
    );
}
