//! Session FSM tests: two sessions wired together in memory on a virtual
//! clock (no sleeps), and single sessions fed scripted peer messages.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tabby_bgp::error::{code, subcode};
use tabby_bgp::fsm::{DownReason, collision_survivor};
use tabby_bgp::*;

/// Two sessions connected by an in-memory "TCP connection".
struct Pair {
    now: Instant,
    start: Instant,
    a: Session,
    b: Session,
    connected: bool,
    /// When false, bytes written by either side are lost (a dead link).
    link_up: bool,
    /// When true, a side that does not accept a connection answers it
    /// with Cease / Connection Rejected as tabby-speaker does (the TCP
    /// connection succeeds, then the NOTIFICATION arrives); when false the
    /// connection attempt fails.
    refuse_with_cease: bool,
    a_events: Vec<(Duration, Event)>,
    b_events: Vec<(Duration, Event)>,
    /// Messages sent by each side, decoded, with the time sent.
    a_sent: Vec<(Duration, Vec<u8>)>,
    b_sent: Vec<(Duration, Vec<u8>)>,
}

impl Pair {
    fn new(a: SessionConfig, b: SessionConfig) -> Self {
        let now = Instant::now();
        Pair {
            now,
            start: now,
            a: Session::new(a),
            b: Session::new(b),
            connected: false,
            link_up: true,
            refuse_with_cease: false,
            a_events: vec![],
            b_events: vec![],
            a_sent: vec![],
            b_sent: vec![],
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn flush(&mut self, from_a: bool) {
        let t = self.now - self.start;
        let deliver = self.connected && self.link_up;
        let (src, dst, log) = if from_a {
            (&mut self.a, &mut self.b, &mut self.a_sent)
        } else {
            (&mut self.b, &mut self.a, &mut self.b_sent)
        };
        while let Some(bytes) = src.poll_transmit() {
            if deliver {
                dst.handle_input(self.now, Input::Data(&bytes));
            }
            log.push((t, bytes));
        }
    }

    /// Moves bytes and handles connection events until nothing happens.
    fn drive(&mut self) {
        loop {
            let mut progress = false;
            for from_a in [true, false] {
                let ev = if from_a {
                    self.a.poll_event()
                } else {
                    self.b.poll_event()
                };
                if let Some(e) = ev {
                    progress = true;
                    match &e {
                        Event::Connect => {
                            let listening = if from_a {
                                self.b.accepts_connection()
                            } else {
                                self.a.accepts_connection()
                            };
                            let (src, dst) = if from_a {
                                (&mut self.a, &mut self.b)
                            } else {
                                (&mut self.b, &mut self.a)
                            };
                            if listening && !self.connected {
                                self.connected = true;
                                src.handle_input(
                                    self.now,
                                    Input::TcpConnected(Direction::Outgoing),
                                );
                                dst.handle_input(
                                    self.now,
                                    Input::TcpConnected(Direction::Incoming),
                                );
                            } else if self.refuse_with_cease && !self.connected {
                                let cease = Message::Notification(Notification::new(6, 5, vec![]))
                                    .to_bytes(&CodecContext::default())
                                    .expect("encode");
                                src.handle_input(
                                    self.now,
                                    Input::TcpConnected(Direction::Outgoing),
                                );
                                src.handle_input(self.now, Input::Data(&cease));
                            } else {
                                src.handle_input(self.now, Input::TcpFailed);
                            }
                        }
                        Event::Disconnect => {
                            // Whatever was written before the close still arrives.
                            self.flush(from_a);
                            if self.connected {
                                self.connected = false;
                                let dst = if from_a { &mut self.b } else { &mut self.a };
                                dst.handle_input(self.now, Input::TcpFailed);
                            }
                        }
                        _ => {}
                    }
                    let t = self.elapsed();
                    if from_a {
                        self.a_events.push((t, e))
                    } else {
                        self.b_events.push((t, e))
                    }
                }
                let before = self.a_sent.len() + self.b_sent.len();
                self.flush(from_a);
                progress |= self.a_sent.len() + self.b_sent.len() != before;
            }
            if !progress {
                break;
            }
        }
    }

    /// Advances the virtual clock by `d`, firing timers in order.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.drive();
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = end;
        self.drive();
    }

    fn established_both(&self) -> bool {
        self.a.state() == State::Established && self.b.state() == State::Established
    }
}

fn cfg(local_as: u32, id: [u8; 4], peer_as: u32) -> SessionConfig {
    SessionConfig::new(local_as, Ipv4Addr::from(id), peer_as)
}

fn types(sent: &[(Duration, Vec<u8>)]) -> Vec<u8> {
    sent.iter().map(|(_, m)| m[18]).collect()
}

fn decoded(bytes: &[u8]) -> Message {
    let ctx = CodecContext {
        four_octet_as: true,
        ..Default::default()
    };
    decode_message(bytes, &ctx).expect("our own messages decode")
}

fn notification_in(sent: &[(Duration, Vec<u8>)]) -> Option<Notification> {
    sent.iter().find_map(|(_, m)| match decoded(m) {
        Message::Notification(n) => Some(n),
        _ => None,
    })
}

fn ebgp_pair() -> Pair {
    let a = cfg(65001, [10, 0, 0, 1], 65002);
    let mut b = cfg(65002, [10, 0, 0, 2], 65001);
    b.passive = true;
    b.hold_time = 30;
    Pair::new(a, b)
}

#[test]
fn pair_reaches_established_and_negotiates() {
    let mut p = ebgp_pair();
    p.b.handle_input(p.now, Input::ManualStart);
    p.a.handle_input(p.now, Input::ManualStart);
    p.drive();
    assert!(
        p.established_both(),
        "a {:?} b {:?}",
        p.a.state(),
        p.b.state()
    );
    let n = p.a.negotiated().expect("negotiated");
    assert_eq!(n.hold_time, 30);
    assert_eq!(n.keepalive_time, 10);
    assert_eq!(n.peer_as, 65002);
    assert_eq!(n.peer_id, Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(n.families, vec![Family::Ipv4Unicast]);
    assert!(n.codec.four_octet_as && n.codec.ebgp && n.route_refresh);
    // OPEN, KEEPALIVE from each side, in that order.
    assert_eq!(types(&p.a_sent), [1, 4]);
    assert_eq!(types(&p.b_sent), [1, 4]);
    let states: Vec<State> = p
        .a_events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::StateChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            State::Connect,
            State::OpenSent,
            State::OpenConfirm,
            State::Established
        ]
    );
    assert!(
        p.b_events
            .iter()
            .any(|(_, e)| matches!(e, Event::Established(_)))
    );
}

#[test]
fn keepalives_keep_the_session_up() {
    let mut p = ebgp_pair();
    p.b.handle_input(p.now, Input::ManualStart);
    p.a.handle_input(p.now, Input::ManualStart);
    p.advance(Duration::from_secs(600));
    assert!(p.established_both());
    let ka_a = types(&p.a_sent).iter().filter(|t| **t == 4).count();
    let ka_b = types(&p.b_sent).iter().filter(|t| **t == 4).count();
    // Every 10 s for 600 s, plus the one confirming the OPEN.
    assert_eq!(ka_a, 61, "keepalives from a");
    assert_eq!(ka_b, 61, "keepalives from b");
    // Never two keepalives further apart than the keepalive interval.
    let times: Vec<Duration> = p
        .a_sent
        .iter()
        .filter(|(_, m)| m[18] == 4)
        .map(|(t, _)| *t)
        .collect();
    assert!(
        times
            .windows(2)
            .all(|w| w[1] - w[0] <= Duration::from_secs(10))
    );
}

#[test]
fn hold_timer_expiry_sends_4_0() {
    let mut p = ebgp_pair();
    p.b.handle_input(p.now, Input::ManualStart);
    p.a.handle_input(p.now, Input::ManualStart);
    p.drive();
    assert!(p.established_both());
    p.link_up = false;
    p.advance(Duration::from_secs(31));
    assert_eq!(p.a.state(), State::Idle);
    assert_eq!(p.b.state(), State::Idle);
    let n = notification_in(&p.a_sent).expect("a sent a NOTIFICATION");
    assert_eq!((n.code, n.subcode), (code::HOLD_TIMER_EXPIRED, 0));
    assert!(p.a_events.iter().any(
        |(t, e)| matches!(e, Event::Down(DownReason::HoldTimerExpired))
            && *t == Duration::from_secs(30)
    ));
    assert_eq!(p.a.last_down(), Some(&DownReason::HoldTimerExpired));
}

#[test]
fn session_comes_back_after_hold_expiry_with_backoff() {
    let mut p = ebgp_pair();
    p.b.handle_input(p.now, Input::ManualStart);
    p.a.handle_input(p.now, Input::ManualStart);
    p.drive();
    p.link_up = false;
    p.advance(Duration::from_secs(31));
    p.link_up = true;
    p.advance(Duration::from_secs(10));
    assert!(
        p.established_both(),
        "a {:?} b {:?}",
        p.a.state(),
        p.b.state()
    );
}

#[test]
fn hold_time_zero_means_no_keepalives() {
    let mut a = cfg(65001, [10, 0, 0, 1], 65001);
    let mut b = cfg(65001, [10, 0, 0, 2], 65001);
    a.hold_time = 0;
    b.hold_time = 90;
    b.passive = true;
    let mut p = Pair::new(a, b);
    p.b.handle_input(p.now, Input::ManualStart);
    p.a.handle_input(p.now, Input::ManualStart);
    p.drive();
    assert!(p.established_both());
    assert_eq!(p.b.negotiated().expect("n").hold_time, 0);
    assert_eq!(p.a.poll_timeout(), None);
    assert_eq!(p.b.poll_timeout(), None);
    p.advance(Duration::from_secs(3600));
    assert!(p.established_both());
    assert_eq!(types(&p.a_sent), [1, 4]);
}

#[test]
fn updates_flow_and_route_refresh() {
    let mut p = ebgp_pair();
    p.b.handle_input(p.now, Input::ManualStart);
    p.a.handle_input(p.now, Input::ManualStart);
    p.drive();
    let attrs = Arc::new(PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([65001])),
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ..Default::default()
    });
    let mut builder = UpdateBuilder::new(p.a.codec());
    builder.announce(&attrs, "10.10.0.0/24".parse().expect("prefix"));
    for m in builder.build().expect("build") {
        p.a.send_raw(p.now, m);
    }
    p.a.send_route_refresh(p.now, Family::Ipv4Unicast);
    p.drive();
    let got: Vec<&Update> = p
        .b_events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Update(u) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].nlri[0].to_string(), "10.10.0.0/24");
    assert_eq!(got[0].attributes, attrs);
    assert!(
        p.b_events
            .iter()
            .any(|(_, e)| matches!(e, Event::RouteRefresh(_)))
    );
}

#[test]
fn manual_stop_sends_shutdown_communication() {
    let mut p = ebgp_pair();
    p.b.handle_input(p.now, Input::ManualStart);
    p.a.handle_input(p.now, Input::ManualStart);
    p.drive();
    let n =
        Notification::cease_with_message(subcode::cease::ADMINISTRATIVE_SHUTDOWN, "maintenance");
    p.a.handle_input(p.now, Input::ManualStop(Some(n)));
    p.advance(Duration::from_secs(600));
    assert_eq!(p.a.state(), State::Idle, "a stays down after a manual stop");
    let down = p
        .b_events
        .iter()
        .find_map(|(_, e)| match e {
            Event::Down(DownReason::NotificationReceived(n)) => Some(n.clone()),
            _ => None,
        })
        .expect("b saw the NOTIFICATION");
    assert_eq!(down.shutdown_communication(), Some("maintenance"));
    // b (passive) waits in Active for a to come back.
    assert_eq!(p.b.state(), State::Active);
    p.a.handle_input(p.now, Input::ManualStart);
    p.drive();
    assert!(p.established_both());
}

/// A single session connected to a scripted peer.
fn open_sent(config: SessionConfig) -> (Session, Instant) {
    let now = Instant::now();
    let mut s = Session::new(config);
    s.handle_input(now, Input::ManualStart);
    s.handle_input(now, Input::TcpConnected(Direction::Outgoing));
    assert_eq!(s.state(), State::OpenSent);
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
    (s, now)
}

fn open_bytes(version: u8, my_as: u16, hold: u16, id: [u8; 4], caps: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&my_as.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(caps.len() as u8);
    b.extend_from_slice(caps);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + b.len()) as u16).to_be_bytes());
    m.push(1);
    m.extend_from_slice(&b);
    m
}

fn sent_notification(s: &mut Session) -> Notification {
    let mut out = None;
    while let Some(m) = s.poll_transmit() {
        if let Message::Notification(n) = decoded(&m) {
            out = Some(n);
        }
    }
    out.expect("a NOTIFICATION was sent")
}

#[test]
fn bad_open_gets_the_right_notification() {
    let cases: [(&str, Vec<u8>, u8, u8); 6] = [
        (
            "version 3",
            open_bytes(3, 65002, 90, [10, 0, 0, 2], &[]),
            2,
            1,
        ),
        (
            "wrong AS",
            open_bytes(4, 65099, 90, [10, 0, 0, 2], &[]),
            2,
            2,
        ),
        (
            "hold time 1",
            open_bytes(4, 65002, 1, [10, 0, 0, 2], &[]),
            2,
            6,
        ),
        (
            "hold time 2",
            open_bytes(4, 65002, 2, [10, 0, 0, 2], &[]),
            2,
            6,
        ),
        (
            "BGP identifier 0",
            open_bytes(4, 65002, 90, [0, 0, 0, 0], &[]),
            2,
            3,
        ),
        (
            "4-octet AS capability disagrees",
            open_bytes(4, 23456, 90, [10, 0, 0, 2], &[2, 6, 65, 4, 0, 1, 0, 0]),
            2,
            2,
        ),
    ];
    for (name, bytes, c, sc) in cases {
        let (mut s, now) = open_sent(cfg(65001, [10, 0, 0, 1], 65002));
        s.handle_input(now, Input::Data(&bytes));
        let n = sent_notification(&mut s);
        assert_eq!((n.code, n.subcode), (c, sc), "{name}");
        assert_eq!(s.state(), State::Idle, "{name}");
        let mut saw_down = false;
        while let Some(e) = s.poll_event() {
            if let Event::Down(DownReason::NotificationSent { notification, .. }) = e {
                assert_eq!(notification, n);
                saw_down = true;
            }
        }
        assert!(saw_down, "{name}");
    }
    // A good OPEN split across two reads is reassembled.
    let (mut s, now) = open_sent(cfg(65001, [10, 0, 0, 1], 65002));
    let good = open_bytes(4, 65002, 90, [10, 0, 0, 2], &[]);
    s.handle_input(now, Input::Data(&good[..7]));
    s.handle_input(now, Input::Data(&good[7..]));
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn unexpected_message_is_an_fsm_error() {
    let (mut s, now) = open_sent(cfg(65001, [10, 0, 0, 1], 65002));
    let keepalive = Message::Keepalive
        .to_bytes(&CodecContext::default())
        .expect("encode");
    s.handle_input(now, Input::Data(&keepalive));
    let n = sent_notification(&mut s);
    assert_eq!(
        (n.code, n.subcode),
        (code::FSM, subcode::fsm::UNEXPECTED_IN_OPENSENT)
    );
}

#[test]
fn malformed_update_resets_but_treat_as_withdraw_does_not() {
    let mut p = ebgp_pair();
    p.b.handle_input(p.now, Input::ManualStart);
    p.a.handle_input(p.now, Input::ManualStart);
    p.drive();
    // Missing NEXT_HOP: treat-as-withdraw, session stays up.
    let mut body = vec![
        0, 0, 0, 13, 0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, 24, 10, 1, 1,
    ];
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(2);
    m.append(&mut body);
    p.b.handle_input(p.now, Input::Data(&m));
    p.drive();
    assert!(p.established_both());
    let u = p
        .b_events
        .iter()
        .find_map(|(_, e)| match e {
            Event::Update(u) => Some(u),
            _ => None,
        })
        .expect("update event");
    assert!(u.treat_as_withdraw());
    // Unrecognised well-known attribute: session reset with 3/2.
    let mut body = vec![0, 0, 0, 4, 0x40, 99, 1, 0];
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(2);
    m.append(&mut body);
    p.b.handle_input(p.now, Input::Data(&m));
    p.drive();
    let n = notification_in(&p.b_sent).expect("b sent a NOTIFICATION");
    assert_eq!((n.code, n.subcode), (3, 2));
    assert!(
        p.a_events
            .iter()
            .any(|(_, e)| matches!(e, Event::Down(DownReason::NotificationReceived(_))))
    );
}

#[test]
fn idle_hold_backs_off_exponentially() {
    let mut c = cfg(65001, [10, 0, 0, 1], 65002);
    c.idle_hold_time = Duration::from_secs(5);
    c.max_idle_hold_time = Duration::from_secs(40);
    let mut s = Session::new(c);
    let t0 = Instant::now();
    let mut now = t0;
    s.handle_input(now, Input::ManualStart);
    let cease = Message::Notification(Notification::new(6, 5, vec![]))
        .to_bytes(&CodecContext::default())
        .expect("encode");
    let mut connects = vec![];
    for _ in 0..6 {
        while let Some(e) = s.poll_event() {
            if e == Event::Connect {
                connects.push((now - t0).as_secs());
            }
        }
        s.handle_input(now, Input::TcpConnected(Direction::Outgoing));
        s.handle_input(now, Input::Data(&cease));
        assert_eq!(s.state(), State::Idle);
        now = s.poll_timeout().expect("idle hold timer");
        s.handle_timeout(now);
    }
    while let Some(e) = s.poll_event() {
        if e == Event::Connect {
            connects.push((now - t0).as_secs());
        }
    }
    // Delays 5, 10, 20, 40, 40, 40.
    assert_eq!(connects, [0, 5, 15, 35, 75, 115, 155]);
}

#[test]
fn connect_retry_after_failed_connection() {
    let (mut s, mut now) = {
        let now = Instant::now();
        let mut s = Session::new(cfg(65001, [10, 0, 0, 1], 65002));
        s.handle_input(now, Input::ManualStart);
        (s, now)
    };
    while s.poll_event().is_some() {}
    s.handle_input(now, Input::TcpFailed);
    assert_eq!(s.state(), State::Active);
    now = s.poll_timeout().expect("connect retry");
    s.handle_timeout(now);
    assert_eq!(s.state(), State::Connect);
    assert!(std::iter::from_fn(|| s.poll_event()).any(|e| e == Event::Connect));
}

#[test]
fn four_octet_as_fallback_with_old_speaker() {
    // a has a 4-octet AS; b is an "old" speaker without the capability and
    // knows a as AS_TRANS.
    let a = cfg(4_200_000_001, [10, 0, 0, 1], 65002);
    let mut b = cfg(65002, [10, 0, 0, 2], 23456);
    b.four_octet_as = false;
    b.passive = true;
    let mut p = Pair::new(a, b);
    p.b.handle_input(p.now, Input::ManualStart);
    p.a.handle_input(p.now, Input::ManualStart);
    p.drive();
    assert!(
        p.established_both(),
        "a {:?} b {:?}",
        p.a.state(),
        p.b.state()
    );
    assert!(!p.a.negotiated().expect("n").codec.four_octet_as);
    assert_eq!(p.b.negotiated().expect("n").peer_as, 23456);
    // a's AS travels as AS_TRANS in AS_PATH plus AS4_PATH.
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([4_200_000_001])),
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ..Default::default()
    };
    let u = Update {
        attributes: Arc::new(attrs),
        nlri: vec!["10.9.0.0/16".parse().expect("p")],
        ..Default::default()
    };
    p.a.send_update(p.now, u).expect("encode");
    p.drive();
    let got = p
        .b_events
        .iter()
        .find_map(|(_, e)| match e {
            Event::Update(u) => Some(u),
            _ => None,
        })
        .expect("update");
    assert_eq!(
        got.attributes.as_path.as_ref().expect("path").to_string(),
        "4200000001"
    );
}

#[test]
fn collision_resolution_by_bgp_identifier() {
    assert_eq!(
        collision_survivor(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)),
        Direction::Incoming
    );
    assert_eq!(
        collision_survivor(Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 2)),
        Direction::Outgoing
    );
    // Both sides agree on the same TCP connection.
    let (x, y) = (Ipv4Addr::new(192, 0, 2, 7), Ipv4Addr::new(192, 0, 2, 9));
    let x_keeps = collision_survivor(x, y);
    let y_keeps = collision_survivor(y, x);
    assert_ne!(
        x_keeps, y_keeps,
        "one side's outgoing is the other's incoming"
    );
}

#[test]
fn incoming_connection_when_established_is_refused() {
    let mut p = ebgp_pair();
    p.b.handle_input(p.now, Input::ManualStart);
    p.a.handle_input(p.now, Input::ManualStart);
    p.drive();
    assert!(!p.b.accepts_connection());
    // A driver that passes one anyway does not disturb the session.
    p.b.handle_input(p.now, Input::TcpConnected(Direction::Incoming));
    assert_eq!(p.b.poll_event(), None);
    assert_eq!(p.b.state(), State::Established);
}

#[test]
fn extended_messages_only_when_both_offer_them() {
    for (a_ext, b_ext) in [(true, true), (true, false)] {
        let mut a = cfg(65001, [10, 0, 0, 1], 65002);
        let mut b = cfg(65002, [10, 0, 0, 2], 65001);
        a.extended_message = a_ext;
        b.extended_message = b_ext;
        b.passive = true;
        let mut p = Pair::new(a, b);
        p.b.handle_input(p.now, Input::ManualStart);
        p.a.handle_input(p.now, Input::ManualStart);
        p.drive();
        assert!(p.established_both());
        let want = a_ext && b_ext;
        assert_eq!(p.a.codec().extended_message, want);
        assert_eq!(
            p.a.codec().max_message_len(),
            if want { 65535 } else { 4096 }
        );
    }
}

/// Two active speakers with the same timers, started 100 ms apart so that
/// each one's first attempt meets the other still in Idle.
fn both_active(jitter: Option<(u64, u64)>) -> Pair {
    let mut a = cfg(65001, [10, 0, 0, 1], 65001);
    let mut b = cfg(65001, [10, 0, 0, 2], 65001);
    for c in [&mut a, &mut b] {
        c.hold_time = 9;
        c.idle_hold_time = Duration::from_secs(5);
        c.max_idle_hold_time = Duration::from_secs(120);
    }
    a.jitter_seed = jitter.map(|j| j.0);
    b.jitter_seed = jitter.map(|j| j.1);
    let mut p = Pair::new(a, b);
    p.refuse_with_cease = true;
    p
}

#[test]
fn started_session_in_idle_hold_accepts_a_connection() {
    let mut p = both_active(None);
    p.a.handle_input(p.now, Input::ManualStart);
    p.drive();
    // b not started yet: a's attempt is refused, a backs off.
    assert_eq!(p.a.state(), State::Idle);
    assert!(p.a.poll_timeout().is_some(), "IdleHold timer running");
    assert!(!p.b.accepts_connection(), "a stopped session refuses");
    assert!(
        p.a.accepts_connection(),
        "a started session in IdleHold accepts"
    );
    p.advance(Duration::from_millis(100));
    p.b.handle_input(p.now, Input::ManualStart);
    p.drive();
    assert!(
        p.established_both(),
        "a {:?} b {:?}",
        p.a.state(),
        p.b.state()
    );
    assert_eq!(p.a.direction(), Some(Direction::Incoming));
    assert_eq!(
        p.elapsed(),
        Duration::from_millis(100),
        "no wait for IdleHold"
    );
    // The IdleHold timer was cancelled: nothing fires but the keepalives.
    p.advance(Duration::from_secs(60));
    assert!(p.established_both());
}

#[test]
fn two_active_speakers_that_fail_in_step_converge() {
    for jitter in [None, Some((7, 8))] {
        let mut p = both_active(jitter);
        p.a.handle_input(p.now, Input::ManualStart);
        p.advance(Duration::from_millis(100));
        p.b.handle_input(p.now, Input::ManualStart);
        p.advance(Duration::from_secs(1));
        assert!(p.established_both(), "{jitter:?}: first establishment");
        // Both lose the link and time out together: back-offs in step.
        p.link_up = false;
        p.advance(Duration::from_secs(10));
        assert_eq!(p.a.state(), State::Idle, "{jitter:?}");
        assert_eq!(p.b.state(), State::Idle, "{jitter:?}");
        p.link_up = true;
        p.advance(Duration::from_secs(300));
        assert!(
            p.established_both(),
            "{jitter:?}: a {:?} b {:?}",
            p.a.state(),
            p.b.state()
        );
    }
}

#[test]
fn jitter_scales_idle_hold_between_three_quarters_and_one() {
    let delays = |seed: Option<u64>| {
        let mut c = cfg(65001, [10, 0, 0, 1], 65002);
        c.idle_hold_time = Duration::from_secs(8);
        c.max_idle_hold_time = Duration::from_secs(8);
        c.jitter_seed = seed;
        let mut s = Session::new(c);
        let mut now = Instant::now();
        s.handle_input(now, Input::ManualStart);
        let cease = Message::Notification(Notification::new(6, 5, vec![]))
            .to_bytes(&CodecContext::default())
            .expect("encode");
        let mut out = vec![];
        for _ in 0..20 {
            s.handle_input(now, Input::TcpConnected(Direction::Outgoing));
            s.handle_input(now, Input::Data(&cease));
            let next = s.poll_timeout().expect("idle hold timer");
            out.push(next - now);
            now = next;
            s.handle_timeout(now);
            while s.poll_event().is_some() {}
        }
        out
    };
    assert!(delays(None).iter().all(|d| *d == Duration::from_secs(8)));
    let one = delays(Some(1));
    assert!(
        one.iter()
            .all(|d| *d >= Duration::from_secs(6) && *d <= Duration::from_secs(8)),
        "{one:?}"
    );
    assert_ne!(one, delays(Some(2)), "different seeds, different delays");
    assert_eq!(one, delays(Some(1)), "same seed, same delays");
    assert!(one.windows(2).any(|w| w[0] != w[1]), "delays vary: {one:?}");
}
