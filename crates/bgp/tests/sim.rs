//! Deterministic simulations: several speakers (FSM + RIB) wired together
//! in memory on a virtual clock. No sockets, no sleeps.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tabby_bgp::attribute::Community;
use tabby_bgp::fsm::{DownReason, Event, Input};
use tabby_bgp::policy::{Action, MatchOperator, Policy, Rule};
use tabby_bgp::rib::{FibChange, NextHopMode, PeerConfig, PeerId, PeerUp, Rib, RibConfig};
use tabby_bgp::*;

struct Node {
    addr: Ipv4Addr,
    rib: Rib,
    /// (peer id in the RIB, session, link index)
    sessions: Vec<(PeerId, Session, usize)>,
    fib: Vec<FibChange>,
}

struct Link {
    ends: [(usize, usize); 2],
    connected: bool,
    up: bool,
}

struct Net {
    now: Instant,
    nodes: Vec<Node>,
    links: Vec<Link>,
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

impl Net {
    fn new() -> Self {
        Net {
            now: Instant::now(),
            nodes: vec![],
            links: vec![],
        }
    }

    /// A node with address 10.0.0.`n`, router id the same.
    fn node(&mut self, n: u8, asn: u32, rr_cluster: Option<Ipv4Addr>) -> usize {
        let mut cfg = RibConfig::new(asn, ip(n));
        cfg.cluster_id = rr_cluster;
        cfg.track_fib = true;
        self.nodes.push(Node {
            addr: ip(n),
            rib: Rib::new(cfg),
            sessions: vec![],
            fib: vec![],
        });
        self.nodes.len() - 1
    }

    /// A session between nodes `x` (active) and `y` (passive).
    fn link(&mut self, x: usize, y: usize, tweak: impl Fn(&mut PeerConfig, bool)) -> usize {
        let li = self.links.len();
        let mut ends = [(0, 0); 2];
        for (k, (me, other)) in [(x, y), (y, x)].into_iter().enumerate() {
            let (my_as, my_addr) = (self.nodes[me].rib.config().local_as, self.nodes[me].addr);
            let (their_as, their_addr) = (
                self.nodes[other].rib.config().local_as,
                self.nodes[other].addr,
            );
            let mut sc = SessionConfig::new(my_as, my_addr, their_as);
            sc.passive = k == 1;
            sc.hold_time = 9;
            sc.connect_retry = Duration::from_secs(5);
            sc.idle_hold_time = Duration::from_secs(1);
            let mut pc = PeerConfig::new(IpAddr::V4(their_addr), their_as);
            tweak(&mut pc, k == 0);
            let pid = self.nodes[me].rib.add_peer(pc);
            let mut s = Session::new(sc);
            s.handle_input(self.now, Input::ManualStart);
            self.nodes[me].sessions.push((pid, s, li));
            ends[k] = (me, self.nodes[me].sessions.len() - 1);
        }
        self.links.push(Link {
            ends,
            connected: false,
            up: true,
        });
        li
    }

    fn other_end(&self, li: usize, me: (usize, usize)) -> (usize, usize) {
        let l = &self.links[li];
        if l.ends[0] == me {
            l.ends[1]
        } else {
            l.ends[0]
        }
    }

    fn deliver(&mut self, me: (usize, usize)) -> bool {
        let li = self.nodes[me.0].sessions[me.1].2;
        let peer = self.other_end(li, me);
        let deliver = self.links[li].connected && self.links[li].up;
        let mut any = false;
        while let Some(bytes) = self.nodes[me.0].sessions[me.1].1.poll_transmit() {
            any = true;
            if deliver {
                let now = self.now;
                self.nodes[peer.0].sessions[peer.1]
                    .1
                    .handle_input(now, Input::Data(&bytes));
            }
        }
        any
    }

    fn step(&mut self) -> bool {
        let mut progress = false;
        let now = self.now;
        for n in 0..self.nodes.len() {
            for s in 0..self.nodes[n].sessions.len() {
                let li = self.nodes[n].sessions[s].2;
                while let Some(ev) = self.nodes[n].sessions[s].1.poll_event() {
                    progress = true;
                    let pid = self.nodes[n].sessions[s].0;
                    match ev {
                        Event::Connect => {
                            let peer = self.other_end(li, (n, s));
                            let accepts =
                                self.nodes[peer.0].sessions[peer.1].1.accepts_connection();
                            if accepts && self.links[li].up && !self.links[li].connected {
                                self.links[li].connected = true;
                                self.nodes[n].sessions[s]
                                    .1
                                    .handle_input(now, Input::TcpConnected(Direction::Outgoing));
                                self.nodes[peer.0].sessions[peer.1]
                                    .1
                                    .handle_input(now, Input::TcpConnected(Direction::Incoming));
                            } else {
                                self.nodes[n].sessions[s]
                                    .1
                                    .handle_input(now, Input::TcpFailed);
                            }
                        }
                        Event::Disconnect => {
                            self.deliver((n, s));
                            if self.links[li].connected {
                                self.links[li].connected = false;
                                let peer = self.other_end(li, (n, s));
                                self.nodes[peer.0].sessions[peer.1]
                                    .1
                                    .handle_input(now, Input::TcpFailed);
                            }
                        }
                        Event::Established(neg) => {
                            let addr = IpAddr::V4(self.nodes[n].addr);
                            self.nodes[n].rib.peer_up(pid, PeerUp::new(&neg, addr));
                        }
                        Event::Down(_) => self.nodes[n].rib.peer_down(pid),
                        Event::Update(u) => {
                            self.nodes[n].rib.apply_update(pid, &u);
                        }
                        Event::RouteRefresh(_) => self.nodes[n].rib.refresh_peer(pid),
                        _ => {}
                    }
                }
            }
            // Flush RIB output into established sessions.
            for s in 0..self.nodes[n].sessions.len() {
                let pid = self.nodes[n].sessions[s].0;
                if self.nodes[n].sessions[s].1.state() == State::Established {
                    let msgs = self.nodes[n].rib.take_updates(pid).expect("encode");
                    for m in msgs {
                        progress = true;
                        self.nodes[n].sessions[s].1.send_raw(now, m);
                    }
                }
            }
            while let Some(c) = self.nodes[n].rib.poll_fib_change() {
                self.nodes[n].fib.push(c);
            }
            for s in 0..self.nodes[n].sessions.len() {
                progress |= self.deliver((n, s));
            }
        }
        progress
    }

    fn drive(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("network did not settle");
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.drive();
            let next = self
                .nodes
                .iter()
                .flat_map(|n| n.sessions.iter().filter_map(|(_, s, _)| s.poll_timeout()))
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in &mut self.nodes {
                        for (_, s, _) in &mut n.sessions {
                            s.handle_timeout(now);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = end;
        self.drive();
    }

    fn all_established(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.sessions
                .iter()
                .all(|(_, s, _)| s.state() == State::Established)
        })
    }

    fn best(&self, node: usize, prefix: &str) -> Option<Path> {
        self.nodes[node]
            .rib
            .loc_rib()
            .best(prefix.parse().expect("prefix"))
    }
}

use tabby_bgp::rib::Path;

fn originate(net: &mut Net, node: usize, prefix: &str) {
    net.nodes[node]
        .rib
        .originate(prefix.parse().expect("prefix"), PathAttributes::default());
}

#[test]
fn ibgp_full_mesh() {
    let mut net = Net::new();
    let a = net.node(1, 64512, None);
    let b = net.node(2, 64512, None);
    let c = net.node(3, 64512, None);
    net.link(a, b, |_, _| {});
    net.link(a, c, |_, _| {});
    net.link(b, c, |_, _| {});
    originate(&mut net, a, "10.1.0.0/24");
    net.advance(Duration::from_secs(1));
    assert!(net.all_established());
    for n in [b, c] {
        let p = net.best(n, "10.1.0.0/24").expect("route learned");
        assert_eq!(
            p.attrs.next_hop,
            Some(ip(1)),
            "next hop unchanged = originator's address"
        );
        assert_eq!(p.attrs.local_pref, Some(100));
        assert_eq!(p.attrs.as_path.as_ref().expect("path").to_string(), "");
        // Exactly one path: b does not re-advertise a's route to c (no RR).
        assert_eq!(
            net.nodes[n]
                .rib
                .loc_rib()
                .paths("10.1.0.0/24".parse().expect("p"))
                .len(),
            1
        );
    }
    assert_eq!(
        net.nodes[c].fib.last(),
        Some(&FibChange {
            prefix: "10.1.0.0/24".parse().expect("p"),
            next_hops: vec![IpAddr::V4(ip(1))]
        })
    );
    // Keepalives keep everything up for a while; then a withdraws.
    net.advance(Duration::from_secs(60));
    assert!(net.all_established());
    net.nodes[a]
        .rib
        .withdraw_originated("10.1.0.0/24".parse().expect("p"));
    net.advance(Duration::from_secs(1));
    assert!(net.best(b, "10.1.0.0/24").is_none());
    assert!(net.best(c, "10.1.0.0/24").is_none());
    assert_eq!(net.nodes[c].fib.last().map(|f| f.next_hops.len()), Some(0));
}

#[test]
fn ebgp_chain_with_withdraw_propagation() {
    let mut net = Net::new();
    let a = net.node(1, 65001, None);
    let b = net.node(2, 65002, None);
    let c = net.node(3, 65003, None);
    let ab = net.link(a, b, |_, _| {});
    net.link(b, c, |_, _| {});
    originate(&mut net, a, "10.1.0.0/24");
    originate(&mut net, c, "10.3.0.0/24");
    net.advance(Duration::from_secs(1));
    let p = net.best(c, "10.1.0.0/24").expect("c learns a's route");
    assert_eq!(
        p.attrs.as_path.as_ref().expect("path").to_string(),
        "65002 65001"
    );
    assert_eq!(p.attrs.next_hop, Some(ip(2)), "next hop self on eBGP");
    assert_eq!(p.attrs.local_pref, None);
    let p = net.best(a, "10.3.0.0/24").expect("a learns c's route");
    assert_eq!(
        p.attrs.as_path.as_ref().expect("path").to_string(),
        "65002 65003"
    );
    // a's own prefix comes back from nobody (split horizon at b).
    assert_eq!(
        net.nodes[a]
            .rib
            .loc_rib()
            .paths("10.1.0.0/24".parse().expect("p"))
            .len(),
        1
    );
    // Cut a-b silently: hold timers (9 s) expire, b withdraws towards c.
    net.links[ab].up = false;
    net.advance(Duration::from_secs(10));
    assert!(
        net.best(c, "10.1.0.0/24").is_none(),
        "withdraw propagated to c"
    );
    assert!(net.best(b, "10.1.0.0/24").is_none());
    // The link comes back: the session re-establishes and the route returns.
    net.links[ab].up = true;
    net.advance(Duration::from_secs(30));
    assert!(
        net.best(c, "10.1.0.0/24").is_some(),
        "route back after reconnect"
    );
}

#[test]
fn route_reflector_with_two_clients_and_a_non_client() {
    let mut net = Net::new();
    let cluster = Ipv4Addr::new(1, 1, 1, 1);
    let rr = net.node(1, 64512, Some(cluster));
    let c1 = net.node(2, 64512, None);
    let c2 = net.node(3, 64512, None);
    let n1 = net.node(4, 64512, None);
    // On the RR's side mark the clients.
    net.link(c1, rr, |pc, active| pc.route_reflector_client = !active);
    net.link(c2, rr, |pc, active| pc.route_reflector_client = !active);
    net.link(n1, rr, |_, _| {});
    originate(&mut net, c1, "10.2.0.0/24");
    originate(&mut net, n1, "10.4.0.0/24");
    net.advance(Duration::from_secs(1));
    assert!(net.all_established());
    for n in [c2, n1] {
        let p = net.best(n, "10.2.0.0/24").expect("reflected");
        assert_eq!(p.attrs.originator_id, Some(ip(2)));
        assert_eq!(p.attrs.cluster_list, vec![cluster]);
        assert_eq!(
            p.attrs.next_hop,
            Some(ip(2)),
            "next hop unchanged through the RR"
        );
    }
    // Non-client route goes to clients.
    for n in [c1, c2] {
        let p = net
            .best(n, "10.4.0.0/24")
            .expect("non-client route reflected to clients");
        assert_eq!(p.attrs.originator_id, Some(ip(4)));
    }
    // The originator drops its own reflected route (ORIGINATOR_ID check): c1
    // never gets 10.2.0.0/24 back, since the RR does not send it to its source.
    assert_eq!(
        net.nodes[c1]
            .rib
            .loc_rib()
            .paths("10.2.0.0/24".parse().expect("p"))
            .len(),
        1
    );
    // A route carrying our cluster id is filtered by the RR (loop).
    let looped = PathAttributes {
        cluster_list: vec![cluster],
        ..Default::default()
    };
    let reason = net.nodes[rr].rib.import_loop_check(PeerId(1), &looped);
    assert_eq!(reason, Some("CLUSTER_LIST contains our cluster id"));
}

#[test]
fn route_with_unreachable_next_hop_is_not_installed() {
    let mut net = Net::new();
    let a = net.node(1, 64512, None);
    let b = net.node(2, 64512, None);
    let c = net.node(3, 65003, None);
    net.link(a, b, |_, _| {});
    net.link(b, c, |_, _| {});
    // b cannot reach 10.0.0.1 (seed 003: next hop not resolvable).
    net.nodes[b].rib.set_resolver(Box::new(|nh: IpAddr| {
        (nh != IpAddr::V4(ip(1))).then_some(0)
    }));
    originate(&mut net, a, "10.1.0.0/24");
    net.advance(Duration::from_secs(1));
    let paths = net.nodes[b]
        .rib
        .loc_rib()
        .paths("10.1.0.0/24".parse().expect("p"))
        .to_vec();
    assert_eq!(paths.len(), 1, "the path is kept");
    assert!(!paths[0].is_best(), "but not used");
    assert!(net.nodes[b].fib.is_empty(), "nothing installed");
    assert!(net.best(c, "10.1.0.0/24").is_none(), "nor advertised");
    // The next hop becomes reachable (IGP converged).
    net.nodes[b]
        .rib
        .set_resolver(Box::new(|_: IpAddr| Some(10)));
    net.advance(Duration::from_secs(1));
    assert!(net.best(b, "10.1.0.0/24").is_some());
    assert_eq!(net.nodes[b].fib.len(), 1);
    assert!(net.best(c, "10.1.0.0/24").is_some());
}

#[test]
fn ecmp_from_two_ebgp_peers() {
    let mut net = Net::new();
    let a = net.node(1, 65001, None);
    let b = net.node(2, 65002, None);
    let c = net.node(3, 65002, None);
    net.link(b, a, |_, _| {});
    net.link(c, a, |_, _| {});
    originate(&mut net, b, "10.9.0.0/24");
    originate(&mut net, c, "10.9.0.0/24");
    net.advance(Duration::from_secs(1));
    let last = net.nodes[a].fib.last().expect("fib change");
    assert_eq!(last.next_hops, vec![IpAddr::V4(ip(2)), IpAddr::V4(ip(3))]);
    let paths = net.nodes[a]
        .rib
        .loc_rib()
        .paths("10.9.0.0/24".parse().expect("p"))
        .to_vec();
    assert_eq!(paths.iter().filter(|p| p.is_multipath()).count(), 2);
    assert_eq!(paths.iter().filter(|p| p.is_best()).count(), 1);
}

#[test]
fn policy_and_well_known_communities() {
    let mut net = Net::new();
    let a = net.node(1, 65001, None);
    let b = net.node(2, 65002, None);
    let c = net.node(3, 65003, None);
    let d = net.node(4, 65002, None);
    net.link(a, b, |pc, active| {
        if !active {
            // b imports from a: tag everything, prepend nothing.
            pc.import = Policy {
                v4: vec![Rule {
                    add_community: vec![Community::new(65002, 7)],
                    ..Rule::new(Action::Accept)
                }],
                v6: vec![],
            };
        }
    });
    net.link(b, c, |pc, active| {
        if active {
            // b exports to c: nothing inside 10.66.0.0/16.
            pc.export = Policy {
                v4: vec![Rule {
                    cidr: Some("10.66.0.0/16".parse().expect("cidr")),
                    match_operator: MatchOperator::In,
                    ..Rule::new(Action::Reject)
                }],
                v6: vec![],
            };
        }
    });
    net.link(b, d, |pc, active| {
        if active {
            pc.next_hop_mode = NextHopMode::SelfAddress;
        }
    });
    originate(&mut net, a, "10.1.0.0/24");
    originate(&mut net, a, "10.66.1.0/24");
    net.nodes[b].rib.originate(
        "10.77.0.0/24".parse().expect("p"),
        PathAttributes {
            communities: vec![Community::NO_EXPORT],
            ..Default::default()
        },
    );
    net.advance(Duration::from_secs(1));
    let p = net.best(c, "10.1.0.0/24").expect("exported");
    assert!(
        p.attrs.has_community(Community::new(65002, 7)),
        "import policy tag kept"
    );
    assert!(
        net.best(c, "10.66.1.0/24").is_none(),
        "export policy rejected it"
    );
    assert!(
        net.best(b, "10.77.0.0/24").is_some(),
        "b got the NO_EXPORT route"
    );
    assert!(
        net.best(c, "10.77.0.0/24").is_none(),
        "NO_EXPORT not sent to another AS"
    );
    assert!(
        net.best(d, "10.77.0.0/24").is_some(),
        "NO_EXPORT sent inside the AS"
    );
    assert_eq!(
        net.best(d, "10.1.0.0/24").expect("ibgp").attrs.next_hop,
        Some(ip(2)),
        "next hop self"
    );
    let stats = net.nodes[b].rib.peer_stats(PeerId(1)).expect("stats");
    assert_eq!((stats.received, stats.accepted), (2, 2));
}

#[test]
fn own_as_loop_detection_with_allowance() {
    let mut net = Net::new();
    let a = net.node(1, 65001, None);
    let b = net.node(2, 65002, None);
    net.link(a, b, |_, _| {});
    net.advance(Duration::from_secs(1));
    // Feed b an UPDATE from a whose path already contains b's AS.
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([65001, 65002, 65009])),
        next_hop: Some(ip(1)),
        ..Default::default()
    };
    let u = Update {
        attributes: std::sync::Arc::new(attrs),
        nlri: vec!["10.5.0.0/24".parse().expect("p")],
        ..Default::default()
    };
    let out = net.nodes[b].rib.apply_update(PeerId(1), &u);
    assert_eq!((out.accepted, out.filtered), (0, 1));
    assert!(net.best(b, "10.5.0.0/24").is_none());
    // With allow-own-AS 1 the same route is accepted.
    let mut pc = net.nodes[b]
        .rib
        .peer_config(PeerId(1))
        .expect("cfg")
        .clone();
    pc.allow_own_as = 1;
    net.nodes[b].rib.update_peer(PeerId(1), pc);
    let out = net.nodes[b].rib.apply_update(PeerId(1), &u);
    assert_eq!((out.accepted, out.filtered), (1, 0));
    assert!(net.best(b, "10.5.0.0/24").is_some());
}

#[test]
fn notification_on_bad_update_resets_and_routes_are_withdrawn() {
    let mut net = Net::new();
    let a = net.node(1, 65001, None);
    let b = net.node(2, 65002, None);
    net.link(a, b, |_, _| {});
    originate(&mut net, a, "10.1.0.0/24");
    net.advance(Duration::from_secs(1));
    assert!(net.best(b, "10.1.0.0/24").is_some());
    // Inject garbage into b's session as if a sent it: unknown well-known attribute.
    let body = [0u8, 0, 0, 4, 0x40, 99, 1, 0];
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&body);
    let now = net.now;
    net.nodes[b].sessions[0]
        .1
        .handle_input(now, Input::Data(&m));
    assert!(matches!(
        net.nodes[b].sessions[0].1.last_down(),
        Some(DownReason::NotificationSent { notification, .. }) if notification.code == 3 && notification.subcode == 2
    ));
    net.drive();
    assert!(
        net.best(b, "10.1.0.0/24").is_none(),
        "routes from the reset session withdrawn"
    );
    // After the idle hold time the session comes back.
    net.advance(Duration::from_secs(10));
    assert!(net.all_established());
    assert!(net.best(b, "10.1.0.0/24").is_some());
}

#[test]
fn treat_as_withdraw_removes_an_earlier_route() {
    let mut net = Net::new();
    let a = net.node(1, 65001, None);
    let b = net.node(2, 65002, None);
    net.link(a, b, |_, _| {});
    originate(&mut net, a, "10.1.0.0/24");
    net.advance(Duration::from_secs(1));
    assert!(net.best(b, "10.1.0.0/24").is_some());
    // The same prefix again with a malformed ORIGIN (RFC 7606: treat-as-withdraw).
    let body = [
        0u8, 0, 0, 20, 0x40, 1, 1, 9, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, 0x40, 3, 4, 10, 0, 0, 1,
        24, 10, 1, 0,
    ];
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&body);
    let u = match decode_message(
        &m,
        &CodecContext {
            four_octet_as: true,
            ebgp: true,
            ..Default::default()
        },
    ) {
        Ok(Message::Update(u)) => u,
        other => panic!("expected an UPDATE, got {other:?}"),
    };
    assert!(u.treat_as_withdraw());
    let out = net.nodes[b].rib.apply_update(PeerId(1), &u);
    assert_eq!(out.withdrawn, 1);
    assert!(net.best(b, "10.1.0.0/24").is_none());
}

#[test]
fn making_a_peer_an_rr_client_reflects_its_routes() {
    let mut net = Net::new();
    let cluster = Ipv4Addr::new(1, 1, 1, 1);
    let rr = net.node(1, 64512, Some(cluster));
    let c1 = net.node(2, 64512, None);
    let n1 = net.node(3, 64512, None);
    net.link(c1, rr, |_, _| {});
    net.link(n1, rr, |_, _| {});
    originate(&mut net, c1, "10.2.0.0/24");
    net.advance(Duration::from_secs(1));
    assert!(
        net.best(n1, "10.2.0.0/24").is_none(),
        "non-client to non-client: not reflected"
    );
    let pid = net.nodes[rr].sessions[0].0;
    let mut pc = net.nodes[rr].rib.peer_config(pid).expect("cfg").clone();
    pc.route_reflector_client = true;
    net.nodes[rr].rib.update_peer(pid, pc);
    net.advance(Duration::from_secs(1));
    let p = net
        .best(n1, "10.2.0.0/24")
        .expect("reflected once c1 is a client");
    assert_eq!(p.attrs.originator_id, Some(ip(2)));
}
