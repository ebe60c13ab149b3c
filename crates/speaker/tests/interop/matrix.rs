//! The interop matrix: for each implementation, tabby active and passive,
//! over iBGP and eBGP: the session establishes, routes with their
//! attributes go both ways, withdrawals go both ways, and a NOTIFICATION
//! from either side is reported with its code.

use std::time::Duration;

use crate::net::{A, B, Pair};
use crate::peers::{
    Daemon, Kind, Neighbor, RICH_COMMUNITIES, RICH_LARGE, RICH_LOCAL_PREF, RICH_MED, Spec, wait_rib,
};
use crate::tabby::Tabby;

const T: Duration = Duration::from_secs(40);
const TABBY_AS: u32 = 65001;

fn tabby_config(peer_as: u32, passive: bool, originate: &[&str], with_peer: bool) -> String {
    let mut c = format!(
        "asNumber: {TABBY_AS}\nrouterId: {A}\nlisten: [\"{A}:179\"]\noriginate: [{}]\n",
        originate.join(", ")
    );
    if with_peer {
        c += &format!(
            "peers:\n  - address: {B}\n    asNumber: {peer_as}\n    passive: {passive}\n    holdTime: 9\n    connectRetryTime: 2\n"
        );
    } else {
        c += "peers: []\n";
    }
    c
}

fn run(kind: Kind, tabby_active: bool, ibgp: bool) {
    let tag = format!(
        "m{}{}{}",
        kind.tag(),
        if tabby_active { "a" } else { "p" },
        if ibgp { "i" } else { "e" }
    );
    let net = Pair::new(&tag);
    let peer_as = if ibgp { TABBY_AS } else { 65002 };
    let ours = "10.201.0.0/24";
    let theirs = "10.202.0.0/24";
    let tabby = Tabby::start(&net.a, &tabby_config(peer_as, !tabby_active, &[ours], true));
    let mut peer = Daemon::start(
        &net.b,
        Spec {
            kind,
            asn: peer_as,
            addr: B.to_owned(),
            neighbors: vec![Neighbor {
                addr: A.to_owned(),
                asn: TABBY_AS,
                passive: tabby_active,
                rr_client: false,
            }],
            cluster_id: None,
            password: None,
            ttl_security: false,
        },
    );

    // Session up, seen from both sides.
    peer.wait_established(A, T);
    tabby.wait_established(B, T);
    let n = tabby.neighbor(B).expect("neighbour listed");
    assert_eq!(n.session_type, if ibgp { "iBGP" } else { "eBGP" });
    assert_eq!(n.router_id.map(|r| r.to_string()).as_deref(), Some(B));

    // Routes in: the peer's route with every attribute.
    peer.announce(theirs);
    let routes = tabby.wait_routes("the peer's route", T, |r| {
        r.iter().any(|r| r.prefix == theirs)
    });
    let r = routes.iter().find(|r| r.prefix == theirs).expect("route");
    assert_eq!(r.peer.map(|p| p.to_string()).as_deref(), Some(B));
    assert_eq!(
        r.as_path,
        if ibgp {
            String::new()
        } else {
            peer_as.to_string()
        },
        "{r:?}"
    );
    let mut comms = r.communities.clone();
    comms.sort();
    assert_eq!(comms, RICH_COMMUNITIES.to_vec(), "{r:?}");
    assert_eq!(r.large_communities, vec![RICH_LARGE.to_owned()], "{r:?}");
    assert_eq!(r.med, Some(RICH_MED), "{r:?}");
    if ibgp {
        assert_eq!(r.local_pref, Some(RICH_LOCAL_PREF), "{r:?}");
    } else {
        assert_eq!(r.local_pref, None, "LOCAL_PREF must not cross eBGP: {r:?}");
    }
    assert_eq!(
        r.next_hop.map(|n| n.to_string()).as_deref(),
        Some(B),
        "{r:?}"
    );

    // Routes out: tabby's originated route at the peer.
    let rib = wait_rib(&peer, "tabby's route", T, |r| r.contains_key(ours));
    let seen = &rib[ours];
    assert_eq!(
        seen.as_path,
        if ibgp {
            String::new()
        } else {
            TABBY_AS.to_string()
        },
        "{seen:?}"
    );
    assert_eq!(seen.next_hop.as_deref(), Some(A), "{seen:?}");
    if ibgp && kind != Kind::Exabgp {
        assert_eq!(seen.local_pref, Some(100), "{seen:?}");
    }

    // Withdrawals both ways.
    peer.withdraw(theirs);
    tabby.wait_routes("the peer's withdrawal", T, |r| {
        !r.iter().any(|r| r.prefix == theirs)
    });
    tabby.rewrite(&tabby_config(peer_as, !tabby_active, &[], true));
    tabby.signal("HUP");
    wait_rib(&peer, "tabby's withdrawal", T, |r| !r.contains_key(ours));
    // The reload kept the session (its settings did not change).
    let n = tabby.neighbor(B).expect("neighbour");
    assert_eq!(
        n.state, "Established",
        "reload dropped an unchanged session: {n:?}"
    );

    // A NOTIFICATION from the peer is reported with its code. ExaBGP's
    // `teardown` API command does not take effect from our process pipe,
    // so ExaBGP's row is covered by the raw sender in `malformed` instead.
    peer.shutdown_peer(A);
    let mut last = None;
    let got = tabby_testbed::wait_until(T, "the peer's Cease in tabby's status", || {
        last = tabby.neighbor(B).and_then(|n| n.last_error);
        last.as_deref()
            .is_some_and(|e| e.contains("received NOTIFICATION 6/2"))
    });
    assert!(
        got.is_ok(),
        "{kind:?}: tabby did not report the peer's NOTIFICATION: {last:?}\n{}\n--- peer log ---\n{}",
        tabby.log(),
        peer.log()
    );
}

/// A NOTIFICATION from tabby (the peer removed from the config: Cease /
/// Peer De-configured) reaches the peer, which reports it.
fn tabby_sends_notification(kind: Kind) {
    let net = Pair::new(&format!("n{}", kind.tag()));
    let tabby = Tabby::start(&net.a, &tabby_config(65002, false, &[], true));
    let peer = Daemon::start(
        &net.b,
        Spec {
            kind,
            asn: 65002,
            addr: B.to_owned(),
            neighbors: vec![Neighbor {
                addr: A.to_owned(),
                asn: TABBY_AS,
                passive: true,
                rr_client: false,
            }],
            cluster_id: None,
            password: None,
            ttl_security: false,
        },
    );
    tabby.wait_established(B, T);
    peer.wait_established(A, T);
    tabby.rewrite(&tabby_config(65002, false, &[], false));
    match tabby.ask(&tabby_speaker::control::Request::Reload) {
        tabby_speaker::control::Response::Reloaded(r) => assert_eq!(r.removed.len(), 1, "{r:?}"),
        other => panic!("reload: {other:?}"),
    }
    let mut seen = String::new();
    let ok = tabby_testbed::wait_until(T, "the peer reports tabby's Cease", || {
        seen = peer.last_error(A).to_lowercase();
        // Cease / Peer De-configured (6/3), as each implementation words it.
        seen.contains("peer de-configured") || seen.contains("subcode=3")
    });
    assert!(
        ok.is_ok(),
        "{kind:?} did not report tabby's NOTIFICATION: {seen}"
    );
}

macro_rules! matrix {
    ($($name:ident: $kind:expr, $active:expr, $ibgp:expr;)*) => {
        $(#[test] fn $name() { run($kind, $active, $ibgp); })*
    };
}

matrix! {
    bird1_active_ebgp: Kind::Bird1, true, false;
    bird1_passive_ibgp: Kind::Bird1, false, true;
    bird2_active_ibgp: Kind::Bird2, true, true;
    bird2_passive_ebgp: Kind::Bird2, false, false;
    frr_active_ebgp: Kind::Frr, true, false;
    frr_passive_ibgp: Kind::Frr, false, true;
    gobgp_active_ibgp: Kind::Gobgp, true, true;
    gobgp_passive_ebgp: Kind::Gobgp, false, false;
    exabgp_active_ebgp: Kind::Exabgp, true, false;
    exabgp_passive_ibgp: Kind::Exabgp, false, true;
    bird1_active_ibgp: Kind::Bird1, true, true;
    bird1_passive_ebgp: Kind::Bird1, false, false;
    bird2_active_ebgp: Kind::Bird2, true, false;
    bird2_passive_ibgp: Kind::Bird2, false, true;
    frr_active_ibgp: Kind::Frr, true, true;
    frr_passive_ebgp: Kind::Frr, false, false;
    gobgp_active_ebgp: Kind::Gobgp, true, false;
    gobgp_passive_ibgp: Kind::Gobgp, false, true;
    exabgp_active_ibgp: Kind::Exabgp, true, true;
    exabgp_passive_ebgp: Kind::Exabgp, false, false;
}

#[test]
fn notification_from_tabby_bird2() {
    tabby_sends_notification(Kind::Bird2);
}

#[test]
fn notification_from_tabby_frr() {
    tabby_sends_notification(Kind::Frr);
}

/// TCP MD5 (RFC 2385) and GTSM (RFC 5082) with FRR and BIRD 2: the session
/// comes up only when both sides use the same key.
fn md5_and_gtsm(kind: Kind, tabby_active: bool) {
    let net = Pair::new(&format!("s{}", kind.tag()));
    let tabby_conf = |pw: &str| {
        format!(
            "asNumber: {TABBY_AS}\nrouterId: {A}\nlisten: [\"{A}:179\"]\npeers:\n  - {{address: {B}, asNumber: 65002, passive: {}, password: {pw}, ttlSecurity: 1, holdTime: 9, connectRetryTime: 2}}\n",
            !tabby_active
        )
    };
    let tabby = Tabby::start(&net.a, &tabby_conf("wrong-key"));
    let peer = Daemon::start(
        &net.b,
        Spec {
            kind,
            asn: 65002,
            addr: B.to_owned(),
            neighbors: vec![Neighbor {
                addr: A.to_owned(),
                asn: TABBY_AS,
                passive: tabby_active,
                rr_client: false,
            }],
            cluster_id: None,
            password: Some("s3cret-key".into()),
            ttl_security: true,
        },
    );
    // With the wrong key nothing comes up (the kernel drops the segments).
    std::thread::sleep(Duration::from_secs(5));
    let n = tabby.neighbor(B).expect("neighbour");
    assert_ne!(
        n.state, "Established",
        "a session came up with mismatched MD5 keys"
    );
    // The right key, applied by reload: the session establishes.
    tabby.rewrite(&tabby_conf("s3cret-key"));
    tabby.signal("HUP");
    tabby.wait_established(B, T);
    peer.wait_established(A, T);
}

#[test]
fn md5_gtsm_frr_tabby_active() {
    md5_and_gtsm(Kind::Frr, true);
}

#[test]
fn md5_gtsm_bird2_tabby_passive() {
    md5_and_gtsm(Kind::Bird2, false);
}

#[test]
fn notification_from_tabby_bird1() {
    tabby_sends_notification(Kind::Bird1);
}

#[test]
fn notification_from_tabby_gobgp() {
    tabby_sends_notification(Kind::Gobgp);
}

#[test]
fn notification_from_tabby_exabgp() {
    tabby_sends_notification(Kind::Exabgp);
}

/// Import and export policy from the config, changed by a reload that keeps
/// the session: BIRD 2 sees tabby's export community appear, and a new
/// import rule filters one of BIRD's routes (through a ROUTE-REFRESH).
#[test]
fn policy_reload_keeps_the_session_bird2() {
    let net = Pair::new("pol");
    let conf = |import: &str, export: &str| {
        format!(
            "asNumber: {TABBY_AS}\nrouterId: {A}\nlisten: [\"{A}:179\"]\noriginate: [10.201.0.0/24]\npeers:\n  - address: {B}\n    asNumber: 65002\n    holdTime: 9\n    connectRetryTime: 2\n    import: [{import}]\n    export: [{export}]\n"
        )
    };
    let tabby = Tabby::start(&net.a, &conf("", ""));
    let mut peer = Daemon::start(
        &net.b,
        Spec {
            kind: Kind::Bird2,
            asn: 65002,
            addr: B.to_owned(),
            neighbors: vec![Neighbor {
                addr: A.to_owned(),
                asn: TABBY_AS,
                passive: true,
                rr_client: false,
            }],
            cluster_id: None,
            password: None,
            ttl_security: false,
        },
    );
    tabby.wait_established(B, T);
    peer.announce("10.80.1.0/24");
    peer.announce("10.80.2.0/24");
    tabby.wait_routes("both of BIRD's routes", T, |r| {
        r.iter().filter(|r| r.prefix.starts_with("10.80.")).count() == 2
    });
    let rib = wait_rib(&peer, "tabby's route", T, |r| {
        r.contains_key("10.201.0.0/24")
    });
    assert!(rib["10.201.0.0/24"].communities.is_empty());

    tabby.rewrite(&conf(
        "{cidr: 10.80.2.0/24, matchOperator: Equal, action: Reject}",
        "{action: Accept, addCommunity: [\"65001:7\"], setMED: 70}",
    ));
    match tabby.ask(&tabby_speaker::control::Request::Reload) {
        tabby_speaker::control::Response::Reloaded(r) => {
            assert_eq!(r.updated.len(), 1, "{r:?}");
            assert!(r.restarted.is_empty(), "{r:?}");
        }
        other => panic!("reload: {other:?}"),
    }
    let rib = wait_rib(&peer, "the export community", T, |r| {
        r.get("10.201.0.0/24")
            .is_some_and(|x| x.communities == vec!["65001:7".to_owned()])
    });
    assert_eq!(rib["10.201.0.0/24"].med, Some(70));
    tabby.wait_routes("10.80.2.0/24 filtered", T, |r| {
        r.iter().any(|r| r.prefix == "10.80.1.0/24")
            && !r.iter().any(|r| r.prefix == "10.80.2.0/24")
    });
    let n = tabby.neighbor(B).expect("neighbour");
    assert_eq!(n.state, "Established");
    assert!(n.last_error.is_none(), "the session was reset: {n:?}");
    assert_eq!((n.prefixes_received, n.prefixes_accepted), (2, 1), "{n:?}");
}
