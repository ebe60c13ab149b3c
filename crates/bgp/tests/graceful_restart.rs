//! Graceful restart (RFC 4724) between two speakers on a virtual clock:
//! A restarts (its process dies without a NOTIFICATION, a new one starts
//! in restarting mode) while B is the receiving speaker. Each speaker is
//! an FSM, a RIB and the graceful restart state wired the way the
//! `tabby-speaker` driver wires them. No sockets, no sleeps.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use tabby_bgp::fsm::{Event, Input};
use tabby_bgp::graceful_restart::{
    GracefulRestartConfig, GracefulRestartSession, PeerRestart, SelectionDeferral, negotiate,
};
use tabby_bgp::rib::{PeerConfig, PeerId, PeerUp, Rib, RibConfig};
use tabby_bgp::*;

/// What happened to one prefix, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Announced(Prefix),
    Withdrawn(Prefix),
    EndOfRib(Family),
}

struct Speaker {
    addr: Ipv4Addr,
    rib: Rib,
    session: Session,
    peer: PeerId,
    gr: Option<GracefulRestartSession>,
    restart: PeerRestart,
    deferral: Option<SelectionDeferral>,
    /// The forwarding table: prefix -> next hops.
    fib: BTreeMap<Prefix, Vec<IpAddr>>,
    /// Every FIB removal, in order.
    fib_removed: Vec<Prefix>,
    /// Every UPDATE received, in order.
    seen: Vec<Seen>,
    /// UPDATE messages sent while selection was still deferred.
    sent_while_deferring: usize,
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

fn pfx(s: &str) -> Prefix {
    s.parse().expect("prefix")
}

impl Speaker {
    /// Speaker 10.0.0.`me` in AS 6500`me` peering with 10.0.0.`other`.
    fn new(now: Instant, me: u8, other: u8, gr: Option<GracefulRestartConfig>) -> Self {
        let (my_as, their_as) = (65000 + u32::from(me), 65000 + u32::from(other));
        let mut rc = RibConfig::new(my_as, ip(me));
        rc.track_fib = true;
        let mut rib = Rib::new(rc);
        let peer = rib.add_peer(PeerConfig::new(IpAddr::V4(ip(other)), their_as));
        let mut sc = SessionConfig::new(my_as, ip(me), their_as);
        sc.passive = me == 2;
        sc.hold_time = 9;
        sc.connect_retry = Duration::from_secs(5);
        sc.idle_hold_time = Duration::from_secs(1);
        sc.graceful_restart = gr.as_ref().map(|g| g.capability(&sc.families));
        let stale_time = gr
            .as_ref()
            .map_or(Duration::from_secs(360), |g| g.stale_routes_time);
        let deferral = gr.as_ref().filter(|g| g.restarting).map(|g| {
            rib.set_deferring(true);
            SelectionDeferral::new(now, g.selection_deferral_time, [peer])
        });
        let mut session = Session::new(sc);
        session.handle_input(now, Input::ManualStart);
        Speaker {
            addr: ip(me),
            rib,
            session,
            peer,
            gr: None,
            restart: PeerRestart::new(stale_time),
            deferral,
            fib: BTreeMap::new(),
            fib_removed: Vec::new(),
            seen: Vec::new(),
            sent_while_deferring: 0,
        }
    }

    fn originate(&mut self, prefix: &str) {
        self.rib.originate(pfx(prefix), PathAttributes::default());
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.session.poll_timeout(),
            self.restart.poll_timeout(),
            self.deferral
                .as_ref()
                .and_then(SelectionDeferral::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        let purge = self.restart.handle_timeout(now);
        self.rib.purge_stale(self.peer, &purge);
        if let Some(d) = &mut self.deferral {
            d.handle_timeout(now);
        }
    }

    /// Handles one session event other than Connect / Disconnect.
    fn on_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::Established(n) => {
                let gr = negotiate(self.session.config().graceful_restart.as_ref(), &n);
                let purge = self.restart.session_up(now, gr.as_ref());
                self.rib.purge_stale(self.peer, &purge);
                self.rib
                    .peer_up(self.peer, PeerUp::new(&n, IpAddr::V4(self.addr)));
                if let Some(d) = &mut self.deferral {
                    d.session_up(self.peer, gr.as_ref());
                }
                self.gr = gr;
            }
            Event::Down(reason) => {
                match self.restart.session_down(now, self.gr.as_ref(), &reason) {
                    Some(families) => self.rib.peer_down_retaining(self.peer, &families),
                    None => self.rib.peer_down(self.peer),
                }
            }
            Event::Update(u) => {
                if let Some(f) = u.end_of_rib() {
                    self.seen.push(Seen::EndOfRib(f));
                    if self.restart.end_of_rib(f) {
                        self.rib.purge_stale(self.peer, &[f]);
                    }
                    if let Some(d) = &mut self.deferral {
                        d.end_of_rib(self.peer, f);
                    }
                } else {
                    self.seen
                        .extend(u.withdrawn_prefixes().map(Seen::Withdrawn));
                    self.seen.extend(u.announced().map(Seen::Announced));
                    self.rib.apply_update(self.peer, &u);
                }
            }
            _ => {}
        }
    }

    /// Releases deferred selection, flushes UPDATEs and FIB changes.
    fn flush(&mut self, now: Instant) -> bool {
        if self
            .deferral
            .as_ref()
            .is_some_and(SelectionDeferral::is_done)
        {
            self.deferral = None;
            self.rib.set_deferring(false);
            // Reconcile the FIB adopted from before the restart: apply
            // the queued changes, then drop what is no longer learned.
            self.apply_fib_changes();
            let learned: Vec<Prefix> = self.rib.fib_routes().iter().map(|c| c.prefix).collect();
            let gone: Vec<Prefix> = self
                .fib
                .keys()
                .filter(|p| !learned.contains(p))
                .copied()
                .collect();
            for p in gone {
                self.fib.remove(&p);
                self.fib_removed.push(p);
            }
        }
        let mut any = false;
        if self.session.state() == State::Established {
            for m in self.rib.take_updates(self.peer).expect("encode") {
                if self.deferral.is_some() {
                    self.sent_while_deferring += 1;
                }
                self.session.send_raw(now, m);
                any = true;
            }
        }
        any | self.apply_fib_changes()
    }

    fn apply_fib_changes(&mut self) -> bool {
        let mut any = false;
        while let Some(c) = self.rib.poll_fib_change() {
            any = true;
            if c.next_hops.is_empty() {
                self.fib.remove(&c.prefix);
                self.fib_removed.push(c.prefix);
            } else {
                self.fib.insert(c.prefix, c.next_hops);
            }
        }
        any
    }
}

/// Two speakers and the TCP connection between them.
struct Pair {
    now: Instant,
    a: Speaker,
    b: Speaker,
    connected: bool,
    /// False while A's host is unreachable.
    link_up: bool,
    /// A's host died without closing its connection: B still thinks the
    /// session is up.
    stale_connection: bool,
}

impl Pair {
    fn new(gr_a: Option<GracefulRestartConfig>, gr_b: Option<GracefulRestartConfig>) -> Self {
        let now = Instant::now();
        let mut a = Speaker::new(now, 1, 2, gr_a);
        a.originate("10.1.0.0/24");
        a.originate("10.1.1.0/24");
        let mut b = Speaker::new(now, 2, 1, gr_b);
        b.originate("10.2.0.0/24");
        let mut p = Pair {
            now,
            a,
            b,
            connected: false,
            link_up: true,
            stale_connection: false,
        };
        p.advance(Duration::from_secs(10));
        assert_eq!(p.a.session.state(), State::Established);
        assert_eq!(p.b.session.state(), State::Established);
        p
    }

    fn step(&mut self) -> bool {
        let now = self.now;
        let mut progress = false;
        for side in 0..2 {
            let (me, other) = if side == 0 {
                (&mut self.a, &mut self.b)
            } else {
                (&mut self.b, &mut self.a)
            };
            while let Some(ev) = me.session.poll_event() {
                progress = true;
                match ev {
                    Event::Connect => {
                        // RFC 4724 §4.2: a connection from a restarted peer
                        // while the old session still looks Established.
                        if self.link_up
                            && self.stale_connection
                            && other.session.accept_restarted_peer(now)
                        {
                            self.connected = false;
                            self.stale_connection = false;
                            while let Some(ev) = other.session.poll_event() {
                                if !matches!(ev, Event::Disconnect) {
                                    other.on_event(now, ev);
                                }
                            }
                            while other.session.poll_transmit().is_some() {}
                        }
                        if self.link_up && !self.connected && other.session.accepts_connection() {
                            self.connected = true;
                            me.session
                                .handle_input(now, Input::TcpConnected(Direction::Outgoing));
                            other
                                .session
                                .handle_input(now, Input::TcpConnected(Direction::Incoming));
                        } else {
                            me.session.handle_input(now, Input::TcpFailed);
                        }
                    }
                    Event::Disconnect => {
                        while let Some(bytes) = me.session.poll_transmit() {
                            if self.connected {
                                other.session.handle_input(now, Input::Data(&bytes));
                            }
                        }
                        if self.connected {
                            self.connected = false;
                            other.session.handle_input(now, Input::TcpFailed);
                        }
                    }
                    ev => me.on_event(now, ev),
                }
            }
            progress |= me.flush(now);
            while let Some(bytes) = me.session.poll_transmit() {
                progress = true;
                if self.connected {
                    other.session.handle_input(now, Input::Data(&bytes));
                }
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
        panic!("the pair did not settle");
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.drive();
            match [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
            {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.a.handle_timeout(now);
                    self.b.handle_timeout(now);
                }
                _ => break,
            }
        }
        self.now = end;
        self.drive();
    }

    /// A's process dies: its TCP connection closes without a NOTIFICATION
    /// and it is unreachable until [`Pair::start_a`].
    fn kill_a(&mut self) {
        self.link_up = false;
        if self.connected {
            self.connected = false;
            self.b.session.handle_input(self.now, Input::TcpFailed);
        }
        self.drive();
    }

    /// A's host crashes: nothing reaches B, not even a TCP reset.
    fn crash_a(&mut self) {
        self.link_up = false;
        self.stale_connection = self.connected;
        self.drive();
    }

    /// A new A process starts with `gr`, its FIB adopted from the old one,
    /// originating `prefixes`.
    fn start_a(&mut self, gr: Option<GracefulRestartConfig>, prefixes: &[&str]) {
        let fib = std::mem::take(&mut self.a.fib);
        self.a = Speaker::new(self.now, 1, 2, gr);
        self.a.fib = fib;
        for p in prefixes {
            self.a.originate(p);
        }
        self.link_up = true;
    }
}

/// Stale paths from `peer`, counted the slow way (to check the RIB's
/// counter).
fn stale_paths(rib: &Rib, peer: PeerId) -> usize {
    rib.routes()
        .filter(|(_, paths)| paths.iter().any(|p| p.peer == peer && p.is_stale()))
        .count()
}

fn gr(restarting: bool) -> GracefulRestartConfig {
    let mut g = GracefulRestartConfig::new(120);
    g.restarting = restarting;
    g.forwarding_preserved = true;
    g.selection_deferral_time = Duration::from_secs(60);
    g
}

#[test]
fn restart_with_helper_keeps_routes_and_converges_on_end_of_rib() {
    let mut p = Pair::new(Some(gr(false)), Some(gr(false)));
    let gr_b = p.b.gr.clone().expect("B negotiated graceful restart");
    assert_eq!(gr_b.families, vec![(Family::Ipv4Unicast, true)]);
    assert_eq!(gr_b.peer_restart_time, Duration::from_secs(120));
    assert_eq!(p.b.fib.len(), 2);
    assert_eq!(p.a.fib.len(), 1);
    // B received A's table followed by End-of-RIB.
    assert_eq!(p.b.seen.last(), Some(&Seen::EndOfRib(Family::Ipv4Unicast)));

    p.kill_a();
    // B keeps A's routes, stale, still forwarding.
    assert_eq!(p.b.rib.stale_count(p.b.peer), 2);
    assert_eq!(stale_paths(&p.b.rib, p.b.peer), 2);
    let stale = p.b.rib.loc_rib().best(pfx("10.1.0.0/24")).expect("kept");
    assert!(stale.is_stale());
    assert_eq!(p.b.fib.len(), 2, "B's FIB is untouched");
    assert!(p.b.fib_removed.is_empty());
    assert_eq!(
        p.b.restart.poll_timeout(),
        Some(p.now + Duration::from_secs(120))
    );

    p.advance(Duration::from_secs(30));
    assert_eq!(p.b.fib.len(), 2, "kept through the outage");
    // A comes back restarting, no longer originating 10.1.1.0/24 and
    // originating 10.1.2.0/24 instead.
    p.start_a(Some(gr(true)), &["10.1.0.0/24", "10.1.2.0/24"]);
    let seen_before = p.b.seen.len();
    p.advance(Duration::from_secs(10));
    assert_eq!(p.a.session.state(), State::Established);
    assert!(p.a.deferral.is_none(), "B's End-of-RIB ended A's deferral");
    assert_eq!(p.a.sent_while_deferring, 0);

    let after: Vec<Seen> = p.b.seen[seen_before..].to_vec();
    // Unchanged routes are refreshed, never withdrawn; the route A no
    // longer has is dropped at End-of-RIB (a local purge, not a message).
    assert!(!after.contains(&Seen::Withdrawn(pfx("10.1.0.0/24"))));
    assert!(after.contains(&Seen::Announced(pfx("10.1.0.0/24"))));
    assert!(after.contains(&Seen::Announced(pfx("10.1.2.0/24"))));
    assert_eq!(after.last(), Some(&Seen::EndOfRib(Family::Ipv4Unicast)));
    assert_eq!(p.b.rib.stale_count(p.b.peer), 0);
    assert_eq!(stale_paths(&p.b.rib, p.b.peer), 0);
    assert_eq!(p.b.fib_removed, vec![pfx("10.1.1.0/24")]);
    assert!(p.b.fib.contains_key(&pfx("10.1.0.0/24")));
    assert!(p.b.fib.contains_key(&pfx("10.1.2.0/24")));
    assert!(!p.b.restart.is_restarting());

    // A adopted its old FIB and never removed B's route.
    assert!(p.a.fib_removed.is_empty());
    assert_eq!(
        p.a.fib.get(&pfx("10.2.0.0/24")),
        Some(&vec![IpAddr::V4(ip(2))])
    );
}

#[test]
fn restarting_speaker_drops_adopted_routes_no_longer_learned() {
    let mut p = Pair::new(Some(gr(false)), Some(gr(false)));
    assert!(p.a.fib.contains_key(&pfx("10.2.0.0/24")));
    p.kill_a();
    // While A is away, B stops originating its prefix.
    p.b.rib.withdraw_originated(pfx("10.2.0.0/24"));
    p.b.originate("10.2.9.0/24");
    p.advance(Duration::from_secs(5));
    p.start_a(Some(gr(true)), &["10.1.0.0/24", "10.1.1.0/24"]);
    p.advance(Duration::from_secs(10));
    assert!(p.a.deferral.is_none());
    assert_eq!(p.a.fib_removed, vec![pfx("10.2.0.0/24")]);
    assert!(p.a.fib.contains_key(&pfx("10.2.9.0/24")));
    assert!(p.b.fib_removed.is_empty(), "B lost none of A's routes");
}

#[test]
fn restart_timer_expiry_purges_stale_routes() {
    let mut p = Pair::new(Some(gr(false)), Some(gr(false)));
    p.kill_a();
    p.advance(Duration::from_secs(119));
    assert_eq!(p.b.fib.len(), 2, "kept during the restart time");
    assert_eq!(p.b.rib.stale_count(p.b.peer), 2);
    p.advance(Duration::from_secs(2));
    assert_eq!(p.b.rib.stale_count(p.b.peer), 0);
    assert_eq!(p.b.fib.len(), 0);
    let mut removed = p.b.fib_removed.clone();
    removed.sort();
    assert_eq!(removed, vec![pfx("10.1.0.0/24"), pfx("10.1.1.0/24")]);
}

#[test]
fn peer_back_without_forwarding_state_is_purged_at_once() {
    let mut p = Pair::new(Some(gr(false)), Some(gr(false)));
    p.kill_a();
    let mut cold = gr(true);
    cold.forwarding_preserved = false;
    p.start_a(Some(cold), &["10.1.0.0/24"]);
    // Stop right after the OPEN exchange: routes A re-sends arrive fresh,
    // the stale copies were purged when the session came up.
    p.advance(Duration::from_secs(10));
    assert_eq!(p.b.rib.stale_count(p.b.peer), 0);
    assert!(p.b.fib_removed.contains(&pfx("10.1.1.0/24")));
    assert!(p.b.fib_removed.contains(&pfx("10.1.0.0/24")));
    assert!(p.b.fib.contains_key(&pfx("10.1.0.0/24")), "re-learned");
}

#[test]
fn peer_back_without_graceful_restart_is_purged_at_once() {
    let mut p = Pair::new(Some(gr(false)), Some(gr(false)));
    p.kill_a();
    p.start_a(None, &["10.1.0.0/24"]);
    p.advance(Duration::from_secs(10));
    assert_eq!(p.a.session.state(), State::Established);
    assert!(p.b.gr.is_none());
    assert_eq!(p.b.rib.stale_count(p.b.peer), 0);
    assert!(!p.b.fib.contains_key(&pfx("10.1.1.0/24")));
}

#[test]
fn without_graceful_restart_routes_are_withdrawn_at_once() {
    // B is willing, A never advertised the capability: nothing negotiated.
    let mut p = Pair::new(None, Some(gr(false)));
    assert!(p.b.gr.is_none());
    p.kill_a();
    assert_eq!(p.b.rib.stale_count(p.b.peer), 0);
    assert!(p.b.fib.is_empty());
    assert_eq!(p.b.fib_removed.len(), 2);
}

#[test]
fn selection_deferral_timer_releases_a_restarting_speaker() {
    let mut p = Pair::new(Some(gr(false)), Some(gr(false)));
    p.kill_a();
    // A restarts but B is unreachable: A keeps its adopted FIB and sends
    // nothing until the deferral timer (60 s) fires.
    p.start_a(Some(gr(true)), &["10.1.0.0/24"]);
    p.link_up = false;
    p.advance(Duration::from_secs(59));
    assert!(p.a.deferral.is_some());
    assert!(p.a.fib.contains_key(&pfx("10.2.0.0/24")));
    p.advance(Duration::from_secs(2));
    assert!(p.a.deferral.is_none());
    // Nothing learned: the adopted route goes.
    assert_eq!(p.a.fib_removed, vec![pfx("10.2.0.0/24")]);
}

#[test]
fn hold_timer_expiry_is_not_graceful_without_the_n_bit() {
    let mut p = Pair::new(Some(gr(false)), Some(gr(false)));
    // The link dies silently: no TCP close, so B's hold timer (9 s) fires
    // and B sends NOTIFICATION 4/0: RFC 4724 routes are withdrawn.
    p.link_up = false;
    p.connected = false;
    p.advance(Duration::from_secs(10));
    assert_eq!(p.b.rib.stale_count(p.b.peer), 0);
    assert!(p.b.fib.is_empty());
}

#[test]
fn hold_timer_expiry_is_graceful_with_the_n_bit() {
    let mut n = gr(false);
    n.notification = true;
    let mut p = Pair::new(Some(n.clone()), Some(n));
    assert!(p.b.gr.as_ref().is_some_and(|g| g.notification));
    p.link_up = false;
    p.connected = false;
    p.advance(Duration::from_secs(10));
    // RFC 8538: the hold timer NOTIFICATION starts a graceful restart.
    assert_eq!(p.b.rib.stale_count(p.b.peer), 2);
    assert_eq!(p.b.fib.len(), 2);
}

#[test]
fn restart_state_bit_can_be_cleared_for_later_opens() {
    let now = Instant::now();
    let a = Speaker::new(now, 1, 2, Some(gr(true)));
    let mut session = a.session;
    let sent = |s: &Session| {
        s.config().open().capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g.restarting),
            _ => None,
        })
    };
    assert_eq!(sent(&session), Some(true));
    let cleared =
        session
            .config()
            .graceful_restart
            .clone()
            .map(|g| tabby_bgp::capability::GracefulRestart {
                restarting: false,
                ..g
            });
    session.set_graceful_restart(cleared);
    assert_eq!(sent(&session), Some(false));
}

#[test]
fn restarted_peer_replacing_a_dead_connection_is_graceful() {
    let mut p = Pair::new(Some(gr(false)), Some(gr(false)));
    p.crash_a();
    p.advance(Duration::from_secs(5));
    // Within B's hold time (9 s): B has not noticed.
    assert_eq!(p.b.session.state(), State::Established);
    p.start_a(Some(gr(true)), &["10.1.0.0/24"]);
    p.advance(Duration::from_secs(2));
    // B took A's new connection as the end of the old session (graceful),
    // kept the routes, then replaced them at End-of-RIB.
    assert_eq!(p.a.session.state(), State::Established);
    assert_eq!(p.b.session.state(), State::Established);
    assert!(p.b.fib.contains_key(&pfx("10.1.0.0/24")));
    assert_eq!(p.b.fib_removed, vec![pfx("10.1.1.0/24")]);
    assert_eq!(p.b.rib.stale_count(p.b.peer), 0);
}

#[test]
fn without_graceful_restart_a_second_connection_is_refused() {
    let mut p = Pair::new(None, None);
    assert!(!p.b.session.accept_restarted_peer(p.now));
    assert_eq!(p.b.session.state(), State::Established);
}
