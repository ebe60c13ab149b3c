//! The pipelined link changes ([`Netlink::apply_link_changes`]) and
//! background namespace entry ([`Netns::spawn`]) against the real kernel, in
//! namespaces the test creates: a burst that configures a pod interface is
//! read back piece by piece, and a burst with a failing change names it.
//! Run as root.

use std::net::IpAddr;

use ipnet::IpNet;
use tabby_dataplane::{
    Error, LinkChange, MacAddr, Netlink, Netns as DpNetns, NextHop, Route, VethPair,
};
use tabby_testbed::Netns;

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}
fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn a_burst_configures_a_pod_interface_and_names_a_failure() {
    let host = Netns::new("pl-host").expect("host");
    let pod = Netns::new("pl-pod").expect("pod");
    let host_ns = DpNetns::named(host.name()).expect("host ns");
    let pod_ns = DpNetns::named(pod.name()).expect("pod ns");
    // The pod's socket is opened on a thread of its own while this one
    // works in the host namespace.
    let pod_socket = DpNetns::spawn(pod_ns.path().to_path_buf(), Netlink::open);
    let mut h = host_ns.netlink().expect("host netlink");
    let hidx = h
        .create_veth(
            &VethPair {
                name: "tbyplhost00001".into(),
                peer: "eth0".into(),
                mtu: Some(1450),
                mac: None,
                peer_mac: None,
                up: false,
                queues: None,
            },
            Some(&pod_ns),
        )
        .expect("create veth")
        .index;
    let mut p = pod_socket
        .join()
        .expect("entered the pod namespace")
        .expect("pod netlink");
    let link = p.require_link("eth0").expect("pod end in the pod");
    assert!(!link.up);

    let mac: MacAddr = "ee:ee:ee:ee:ee:ee".parse().expect("mac");
    let gw = ip("169.254.1.1");
    p.apply_link_changes(&[
        LinkChange::Up(link.index),
        LinkChange::ReplaceNeighbour(link.index, gw, mac),
        LinkChange::AddAddress(link.index, net("10.77.0.5/32")),
        LinkChange::ReplaceRoute(Route::dev(net("169.254.1.1/32"), link.index)),
        LinkChange::ReplaceRoute(Route::multipath(
            net("0.0.0.0/0"),
            vec![NextHop::via(gw).with_device(link.index)],
        )),
    ])
    .expect("burst");
    assert!(p.require_link("eth0").expect("link").up, "pod end up");
    assert_eq!(
        p.addresses(link.index).expect("addresses"),
        vec![net("10.77.0.5/32")]
    );
    let neighbours = p.neighbours(link.index).expect("neighbours");
    assert!(
        neighbours.iter().any(|n| n.ip == gw && n.mac == Some(mac)),
        "gateway neighbour: {neighbours:?}"
    );
    let routes = p.routes(None).expect("routes");
    assert!(
        routes
            .iter()
            .any(|r| r.destination == net("0.0.0.0/0") && r.next_hops[0].gateway == Some(gw)),
        "default route via the gateway: {routes:?}"
    );

    // A route through a missing link fails; the error names that change
    // and the changes after it were still tried.
    h.set_up(hidx).expect("up");
    let err = h
        .apply_link_changes(&[
            LinkChange::ReplaceRoute(Route::dev(net("10.77.0.5/32"), 999_999)),
            LinkChange::ReplaceRoute(Route::dev(net("10.77.0.6/32"), hidx)),
        ])
        .expect_err("a missing link");
    match err {
        Error::Kernel { operation, .. } => {
            assert!(operation.contains("10.77.0.5/32"), "{operation}")
        }
        other => panic!("unexpected error {other}"),
    }
    let host_routes = h.routes(None).expect("host routes");
    assert!(
        host_routes
            .iter()
            .any(|r| r.destination == net("10.77.0.6/32")),
        "the change after the failure was applied: {host_routes:?}"
    );

    // Entering a namespace that does not exist is an error, not a panic.
    let missing = DpNetns::spawn("/var/run/netns/tabby-no-such-ns".into(), || ());
    assert!(matches!(missing.join(), Err(Error::Netns { .. })));
}

#[test]
fn spawn_scoped_then_runs_first_here_and_then_inside_the_namespace() {
    use std::os::unix::fs::MetadataExt;
    let pod = Netns::new("pl-then").expect("pod");
    let pod_ns = DpNetns::named(pod.name()).expect("pod ns");
    let ns_inode = |p: &str| std::fs::metadata(p).expect("nsfs").ino();
    let here = ns_inode("/proc/thread-self/ns/net");
    let want = ns_inode(pod_ns.path().to_str().expect("path"));
    assert_ne!(here, want);
    let (first, then) = std::thread::scope(|s| {
        pod_ns
            .spawn_scoped_then(
                s,
                || ns_inode("/proc/thread-self/ns/net"),
                |first: &u64| (*first, ns_inode("/proc/thread-self/ns/net")),
            )
            .join()
            .expect("thread")
    });
    assert_eq!(first, here, "first runs in the caller's namespace");
    let (seen_first, inside) = then.expect("entered");
    assert_eq!(seen_first, here, "then gets first's result");
    assert_eq!(inside, want, "then runs inside the namespace");
    // The calling thread never moved.
    assert_eq!(ns_inode("/proc/thread-self/ns/net"), here);
}
