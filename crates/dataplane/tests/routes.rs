//! Route programming against the real kernel, inside namespaces the tests
//! create: add/replace/delete, read back, reconcile (other protocols'
//! routes survive), ECMP with weights, blackhole, per-route batch errors and
//! a 100,000-route batch. Run as root.

use std::net::IpAddr;

use ipnet::IpNet;
use tabby_dataplane::{
    Error, NextHop, Route, RouteChange, RouteEvent, RouteKind, RouteTable, TABBY_PROTOCOL,
};
use tabby_testbed::{Netns, veth};

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}
fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// A namespace `a` with eth0 10.250.0.1/24 + fd00:250::1/64 towards `b`.
fn pair() -> (Netns, Netns) {
    let a = Netns::new("dp-a").expect("netns a");
    let b = Netns::new("dp-b").expect("netns b");
    veth(
        &a,
        "eth0",
        Some("10.250.0.1/24"),
        &b,
        "eth0",
        Some("10.250.0.2/24"),
    )
    .expect("veth");
    a.ip([
        "-6",
        "addr",
        "add",
        "fd00:250::1/64",
        "dev",
        "eth0",
        "nodad",
    ])
    .expect("v6 address");
    (a, b)
}

fn netlink(ns: &Netns) -> tabby_dataplane::Netlink {
    tabby_dataplane::Netns::named(ns.name())
        .expect("open netns")
        .netlink()
        .expect("netlink in netns")
}

#[test]
fn program_read_back_reconcile_remove() {
    let (a, _b) = pair();
    let mut nl = netlink(&a);
    // Routes of other protocols that must survive everything below.
    a.ip([
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "10.250.0.2",
        "proto",
        "static",
    ])
    .expect("static route");
    let foreign_before = a
        .ip_stdout(["route", "show", "table", "main"])
        .expect("show");
    assert!(
        foreign_before.contains("10.250.0.0/24 dev eth0 proto kernel"),
        "{foreign_before}"
    );

    let ecmp = Route::multipath(
        net("10.30.0.0/24"),
        vec![
            NextHop::via(ip("10.250.0.2")),
            NextHop::via(ip("10.250.0.3")).with_weight(3),
        ],
    );
    let mut desired = vec![
        Route::via(net("10.10.0.0/24"), ip("10.250.0.2")),
        Route::blackhole(net("10.20.0.0/26")),
        ecmp.clone(),
        Route::via(net("fd00:10::/64"), ip("fd00:250::2")),
    ];
    let r = nl
        .reconcile_routes(RouteTable::MAIN, &desired)
        .expect("reconcile");
    assert_eq!(
        (r.added, r.replaced, r.deleted, r.unchanged),
        (4, 0, 0, 0),
        "{r:?}"
    );
    assert!(r.failures.is_empty() && r.conflicts.is_empty(), "{r:?}");

    let mut ours = nl.routes(Some(RouteTable::MAIN)).expect("list");
    ours.sort_by_key(|r| r.key());
    assert_eq!(ours.len(), 4, "{ours:?}");
    for d in &desired {
        assert!(
            ours.iter().any(|o| o.satisfies(d)),
            "{d} not read back in {ours:?}"
        );
    }
    let text = a
        .ip_stdout(["route", "show", "10.10.0.0/24"])
        .expect("show");
    assert!(
        text.contains("proto tabby"),
        "ip route does not name our protocol: {text}"
    );

    // Same desired set: nothing to do.
    let r = nl
        .reconcile_routes(RouteTable::MAIN, &desired)
        .expect("reconcile");
    assert_eq!(
        (r.added, r.replaced, r.deleted, r.unchanged),
        (0, 0, 0, 4),
        "{r:?}"
    );

    // Move one next hop, drop the blackhole, add a route.
    desired[0] = Route::via(net("10.10.0.0/24"), ip("10.250.0.3"));
    desired.remove(1);
    desired.push(Route::via(net("10.40.0.0/16"), ip("10.250.0.4")).with_metric(50));
    let r = nl
        .reconcile_routes(RouteTable::MAIN, &desired)
        .expect("reconcile");
    assert_eq!(
        (r.added, r.replaced, r.deleted, r.unchanged),
        (1, 1, 1, 2),
        "{r:?}"
    );
    let text = a
        .ip_stdout(["route", "show", "10.10.0.0/24"])
        .expect("show");
    assert!(text.contains("via 10.250.0.3"), "{text}");
    assert!(
        a.ip_stdout(["route", "show", "10.20.0.0/26"])
            .expect("show")
            .trim()
            .is_empty()
    );

    // A desired route whose key a static route holds: reported, not touched.
    let mut with_conflict = desired.clone();
    with_conflict.push(Route::via(net("10.99.0.0/24"), ip("10.250.0.4")));
    let r = nl
        .reconcile_routes(RouteTable::MAIN, &with_conflict)
        .expect("reconcile");
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    assert_eq!(r.conflicts[0].1, 4, "conflict names proto static");
    let text = a
        .ip_stdout(["route", "show", "10.99.0.0/24"])
        .expect("show");
    assert!(
        text.contains("via 10.250.0.2") && text.contains("proto static"),
        "{text}"
    );

    // Deleting by key never removes another protocol's route.
    let err = nl
        .delete_route(&Route::via(net("10.99.0.0/24"), ip("10.250.0.2")))
        .expect_err("static route is not ours");
    match err {
        Error::Kernel { source, .. } => assert!(source.is_not_found(), "{source}"),
        other => panic!("unexpected {other}"),
    }

    // Remove everything of ours.
    let r = nl
        .reconcile_routes(RouteTable::MAIN, &[])
        .expect("reconcile to empty");
    assert_eq!(r.deleted, 4, "{r:?}");
    assert!(nl.routes(None).expect("list").is_empty());
    let after = a
        .ip_stdout(["route", "show", "table", "main"])
        .expect("show");
    assert!(
        after.contains("10.99.0.0/24 via 10.250.0.2 dev eth0 proto static"),
        "{after}"
    );
    assert!(
        after.contains("10.250.0.0/24 dev eth0 proto kernel"),
        "{after}"
    );
    assert!(!after.contains("proto tabby"), "{after}");
}

#[test]
fn owned_reconcile_leaves_other_tabby_components_routes() {
    // A pod host route (device route, as the CNI plugin makes) and a block
    // blackhole (the agent's) are proto tabby too; bgpd owns only routes
    // with a gateway and must not remove them.
    let (a, _b) = pair();
    let mut nl = netlink(&a);
    let eth0 = nl.link_index("eth0").expect("eth0");
    let pod = Route::dev(net("10.244.0.5/32"), eth0);
    let block = Route::blackhole(net("10.244.0.0/26"));
    let learned = Route::via(net("10.244.1.0/26"), ip("10.250.0.2"));
    for r in [&pod, &block, &learned] {
        nl.add_route(r).expect("add");
    }
    let has_gateway = |r: &Route| r.next_hops.iter().any(|h| h.gateway.is_some());
    let r = nl
        .reconcile_routes_owned(RouteTable::MAIN, &[], has_gateway)
        .expect("reconcile");
    assert_eq!(r.deleted, 1, "{r:?}");
    let left = nl.routes(None).expect("list");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&pod) && left.contains(&block), "{left:?}");
    // A desired gateway route whose key a non-owned tabby route holds is a
    // conflict, not a replacement.
    let clash = Route::via(net("10.244.0.0/26"), ip("10.250.0.3"));
    let r = nl
        .reconcile_routes_owned(RouteTable::MAIN, &[clash], has_gateway)
        .expect("reconcile");
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    assert_eq!(r.conflicts[0].1, TABBY_PROTOCOL);
    assert!(nl.routes(None).expect("list").contains(&block));
}

#[test]
fn monitor_sees_our_route_removed_behind_our_back() {
    let (a, _b) = pair();
    let ns = tabby_dataplane::Netns::named(a.name()).expect("ns");
    let mut mon = ns.route_monitor().expect("monitor");
    let mut nl = netlink(&a);
    let r = Route::via(net("10.66.0.0/24"), ip("10.250.0.2"));
    nl.add_route(&r).expect("add");
    a.ip(["route", "del", "10.66.0.0/24"])
        .expect("operator deletes it");
    let mut added = false;
    let mut removed = false;
    // Bounded: at most 20 reads of up to 1 s; both events come at once.
    for _ in 0..20 {
        for e in mon
            .next(Some(std::time::Duration::from_secs(1)))
            .expect("next")
        {
            match e {
                RouteEvent::Added(i) if i.route.satisfies(&r) && i.protocol == TABBY_PROTOCOL => {
                    added = true
                }
                RouteEvent::Removed(i) if i.route.destination == r.destination => removed = true,
                _ => {}
            }
        }
        if added && removed {
            break;
        }
    }
    assert!(added && removed, "added {added} removed {removed}");
    // Nothing more about our route. (The namespace's links may still be
    // settling, e.g. IPv6 link-local and multicast routes appear after DAD,
    // so events for other destinations are allowed here.)
    let later = mon
        .next(Some(std::time::Duration::from_millis(50)))
        .expect("quiet");
    assert!(
        !later.iter().any(|e| match e {
            RouteEvent::Added(i) | RouteEvent::Removed(i) => i.route.destination == r.destination,
            _ => false,
        }),
        "no further events for {}: {later:?}",
        r.destination
    );
}

#[test]
fn single_route_operations_and_other_tables() {
    let (a, _b) = pair();
    let mut nl = netlink(&a);
    let eth0 = nl.link_index("eth0").expect("eth0");
    let table = RouteTable(1000);
    // A table that does not exist yet holds no routes (not an error).
    assert!(nl.routes(Some(table)).expect("empty table").is_empty());
    let r = Route::via(net("10.60.0.0/24"), ip("10.250.0.2")).in_table(table);
    nl.add_route(&r).expect("add");
    let err = nl.add_route(&r).expect_err("second add");
    match &err {
        Error::Kernel { source, operation } => {
            assert!(source.is_exists(), "{source}");
            assert!(operation.contains("10.60.0.0/24"), "{operation}");
        }
        other => panic!("unexpected {other}"),
    }
    let onlink = Route::multipath(
        net("10.60.0.0/24"),
        vec![
            NextHop::via(ip("192.0.2.1"))
                .with_device(eth0)
                .with_onlink(),
        ],
    )
    .in_table(table);
    nl.replace_route(&onlink)
        .expect("replace with onlink next hop");
    let text = a
        .ip_stdout(["route", "show", "table", "1000"])
        .expect("show");
    assert!(
        text.contains("via 192.0.2.1 dev eth0 proto tabby onlink"),
        "{text}"
    );
    assert_eq!(nl.routes(Some(table)).expect("list"), vec![onlink.clone()]);
    assert!(nl.routes(Some(RouteTable::MAIN)).expect("main").is_empty());
    // RFC 5549: an IPv4 route via an IPv6 gateway (RTA_VIA).
    let v4_via_v6 = Route::via(net("10.62.0.0/24"), ip("fd00:250::2")).in_table(table);
    nl.add_route(&v4_via_v6).expect("v4 via v6");
    let text = a
        .ip_stdout(["route", "show", "table", "1000", "10.62.0.0/24"])
        .expect("show");
    assert!(
        text.contains("via inet6 fd00:250::2 dev eth0 proto tabby"),
        "{text}"
    );
    let back = nl.routes(Some(table)).expect("list");
    assert!(back.iter().any(|r| r.satisfies(&v4_via_v6)), "{back:?}");
    nl.delete_route(&v4_via_v6).expect("delete v4 via v6");
    assert_eq!(
        nl.link_by_index(eth0).expect("by index").map(|l| l.name),
        Some("eth0".to_owned())
    );
    let dev = Route::dev(net("fd00:61::/64"), eth0).in_table(table);
    nl.add_route(&dev).expect("v6 device route");
    nl.delete_route(&onlink).expect("delete");
    nl.delete_route(&dev).expect("delete v6");
    assert!(nl.routes(None).expect("list").is_empty());
    assert!(
        a.ip_stdout(["route", "show", "table", "1000"])
            .expect("show")
            .trim()
            .is_empty()
    );
}

#[test]
fn ecmp_read_back_with_next_hops_and_weights() {
    let (a, _b) = pair();
    let mut nl = netlink(&a);
    for (dst, gws) in [
        ("10.70.0.0/24", ["10.250.0.2", "10.250.0.3", "10.250.0.4"]),
        (
            "fd00:70::/64",
            ["fd00:250::2", "fd00:250::3", "fd00:250::4"],
        ),
    ] {
        let hops = gws
            .iter()
            .zip([1u16, 2, 5])
            .map(|(g, w)| NextHop::via(ip(g)).with_weight(w))
            .collect();
        let r = Route::multipath(net(dst), hops);
        nl.replace_route(&r).expect("ecmp route");
        let back = nl.routes(None).expect("list");
        let got = back
            .iter()
            .find(|b| b.destination == r.destination)
            .expect("read back");
        assert_eq!(got.next_hops.len(), 3, "{got:?}");
        for (g, w) in gws.iter().zip([1u16, 2, 5]) {
            assert!(
                got.next_hops
                    .iter()
                    .any(|h| h.gateway == Some(ip(g)) && h.weight == w && h.device.is_some()),
                "{g} weight {w} missing in {got:?}"
            );
        }
        assert!(got.satisfies(&r));
        let family = if dst.contains(':') { "-6" } else { "-4" };
        let text = a.ip_stdout([family, "route", "show", dst]).expect("show");
        assert!(
            text.contains(&format!("nexthop via {} dev eth0 weight 5", gws[2])),
            "{text:?}"
        );
    }
}

#[test]
fn blackhole_drops_traffic() {
    let (a, _b) = pair();
    let mut nl = netlink(&a);
    // b answers for 10.80.0.1; with a blackhole in a nothing gets there.
    _b.ip(["addr", "add", "10.80.0.1/32", "dev", "lo"])
        .expect("b address");
    nl.add_route(&Route::via(net("10.80.0.0/24"), ip("10.250.0.2")))
        .expect("route");
    assert!(
        a.ping("10.80.0.1", 3),
        "route via b works before the blackhole"
    );
    nl.replace_route(&Route::blackhole(net("10.80.0.0/24")))
        .expect("blackhole");
    let back = nl.routes(None).expect("list");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].kind, RouteKind::Blackhole);
    assert!(back[0].next_hops.is_empty());
    let text = a
        .ip_stdout(["route", "show", "type", "blackhole"])
        .expect("show");
    assert!(
        text.contains("blackhole 10.80.0.0/24 proto tabby"),
        "{text}"
    );
    assert!(!a.ping("10.80.0.1", 1), "blackholed address still answers");
}

#[test]
fn batch_reports_each_failure_by_index() {
    let (a, _b) = pair();
    let mut nl = netlink(&a);
    let mut changes: Vec<RouteChange> = (0..10u8)
        .map(|i| {
            RouteChange::Add(Route::via(
                net(&format!("10.90.{i}.0/24")),
                ip("10.250.0.2"),
            ))
        })
        .collect();
    // 3: gateway in no connected subnet; 5: invalid before sending;
    // 7: duplicate of 2; 9: delete of a route that is not there.
    changes[3] = RouteChange::Add(Route::via(net("10.90.3.0/24"), ip("10.77.0.1")));
    changes[5] = RouteChange::Add(Route::via(net("fd00:90::/64"), ip("10.250.0.2")));
    changes[7] = changes[2].clone();
    changes[9] = RouteChange::Delete(Route::blackhole(net("10.91.0.0/24")));
    let report = nl.apply_routes(&changes).expect("batch");
    let idx: Vec<usize> = report.failures.iter().map(|(i, _)| *i).collect();
    assert_eq!(idx, vec![3, 5, 7, 9], "{report:?}");
    assert_eq!(report.applied, 6);
    let msg = report.failures[0].1.to_string();
    assert!(
        msg.contains("10.90.3.0/24") && msg.contains("10.77.0.1"),
        "{msg}"
    );
    assert!(matches!(report.failures[1].1, Error::Invalid { .. }));
    match &report.failures[2].1 {
        Error::Kernel { source, .. } => assert!(source.is_exists()),
        other => panic!("{other}"),
    }
    match &report.failures[3].1 {
        Error::Kernel { source, .. } => assert!(source.is_not_found()),
        other => panic!("{other}"),
    }
    assert_eq!(nl.routes(None).expect("list").len(), 6);
}

#[test]
fn batch_where_every_change_fails_reports_every_one() {
    // 3,000 deletes of routes that do not exist: three chunks whose every
    // request is answered with an error; none may be lost or misattributed.
    let (a, _b) = pair();
    let mut nl = netlink(&a);
    let mut changes: Vec<RouteChange> = (0..3000u32)
        .map(|i| {
            let dst = std::net::Ipv4Addr::from(0x0c00_0000 + i);
            RouteChange::Delete(Route::blackhole(
                IpNet::new(IpAddr::V4(dst), 32).expect("net"),
            ))
        })
        .collect();
    // One that succeeds, in the middle of the second chunk.
    nl.add_route(&Route::blackhole(net("12.0.5.220/32")))
        .expect("add");
    let report = nl.apply_routes(&changes).expect("batch");
    assert_eq!(report.applied, 1);
    assert_eq!(report.failures.len(), 2999);
    let idx: Vec<usize> = report.failures.iter().map(|(i, _)| *i).collect();
    let expected: Vec<usize> = (0..3000).filter(|i| *i != 1500).collect();
    assert_eq!(idx, expected);
    for (i, e) in &report.failures {
        match e {
            Error::Kernel { source, operation } => {
                assert!(source.is_not_found(), "{i}: {source}");
                assert!(operation.contains(&changes[*i].route().destination.to_string()));
            }
            other => panic!("{i}: {other}"),
        }
    }
    changes.clear();
    assert!(nl.routes(None).expect("list").is_empty());
}

#[test]
fn dropped_answers_are_reported_as_unknown_never_as_applied() {
    // A receive buffer far too small for 1,000 error answers: the kernel
    // drops some (ENOBUFS). The batch must still end, and every change it
    // cannot confirm must be reported, never counted as applied.
    let (a, _b) = pair();
    let mut nl = netlink(&a);
    nl.set_receive_buffer(4096).expect("small buffer");
    let changes: Vec<RouteChange> = (0..1000u32)
        .map(|i| {
            let dst = std::net::Ipv4Addr::from(0x0d00_0000 + i);
            RouteChange::Delete(Route::blackhole(
                IpNet::new(IpAddr::V4(dst), 32).expect("net"),
            ))
        })
        .collect();
    let report = nl.apply_routes(&changes).expect("batch ends");
    assert_eq!(report.applied, 0, "no delete could succeed");
    assert_eq!(report.failures.len(), 1000);
    let unknown = report
        .failures
        .iter()
        .filter(
            |(_, e)| matches!(e, Error::Kernel { source, .. } if source.errno == libc_enobufs()),
        )
        .count();
    assert!(
        unknown > 0,
        "the small buffer dropped no answer; the test proves nothing"
    );
    // The socket is still usable afterwards.
    nl.add_route(&Route::blackhole(net("13.1.0.0/24")))
        .expect("add after overrun");
    assert_eq!(nl.routes(None).expect("list").len(), 1);
}

fn libc_enobufs() -> i32 {
    105 // ENOBUFS on Linux
}

#[test]
fn hundred_thousand_routes_in_one_batch() {
    let (a, _b) = pair();
    let mut nl = netlink(&a);
    let routes: Vec<Route> = (0..100_000u32)
        .map(|i| {
            let dst = std::net::Ipv4Addr::from(0x0b00_0000 + i); // 11.0.0.0 + i, /32
            Route::via(
                IpNet::new(IpAddr::V4(dst), 32).expect("net"),
                ip("10.250.0.2"),
            )
        })
        .collect();
    let adds: Vec<RouteChange> = routes.iter().cloned().map(RouteChange::Add).collect();
    let report = nl.apply_routes(&adds).expect("batch");
    assert!(
        report.is_ok(),
        "{:?}",
        &report.failures[..report.failures.len().min(3)]
    );
    assert_eq!(report.applied, 100_000);
    assert_eq!(
        nl.routes(Some(RouteTable::MAIN)).expect("list").len(),
        100_000
    );
    let count = a
        .ip_stdout([
            "route",
            "show",
            "proto",
            TABBY_PROTOCOL.to_string().as_str(),
        ])
        .expect("show")
        .lines()
        .count();
    assert_eq!(count, 100_000, "ip route counts our routes");
    // Reconcile down to 10 of them: 99,990 deletes in one burst.
    let r = nl
        .reconcile_routes(RouteTable::MAIN, &routes[..10])
        .expect("reconcile");
    assert_eq!(
        (r.deleted, r.unchanged),
        (99_990, 10),
        "{:?}",
        r.failures.first()
    );
    assert_eq!(nl.routes(None).expect("list").len(), 10);
}
