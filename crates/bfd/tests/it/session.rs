//! The session state machine on a virtual clock: two sessions wired back
//! to back through the codec, time advanced by hand, no sleeps.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use tabby_bfd::{
    ConfigError, ControlPacket, Diagnostic, Event, PacketError, Session, SessionConfig, State,
    decode,
};

fn discr(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("nonzero")
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// What one side saw: state changes with the virtual time they happened at,
/// and every packet it sent.
#[derive(Default)]
struct Log {
    events: Vec<(Duration, Event)>,
    sent: Vec<(Duration, ControlPacket)>,
    received_at: Option<Duration>,
    rejected: Vec<PacketError>,
}

/// Two sessions, A and B, connected by a link that can be cut in either
/// direction. Packets go through encode/decode and arrive at once.
struct Pair {
    start: Instant,
    now: Instant,
    a: Session,
    b: Session,
    a_to_b: bool,
    b_to_a: bool,
    log_a: Log,
    log_b: Log,
}

impl Pair {
    fn new(config_a: SessionConfig, config_b: SessionConfig) -> Pair {
        let start = Instant::now();
        Pair {
            start,
            now: start,
            a: Session::new(start, config_a, discr(0x0a0a), 1).expect("config A"),
            b: Session::new(start, config_b, discr(0x0b0b), 2).expect("config B"),
            a_to_b: true,
            b_to_a: true,
            log_a: Log::default(),
            log_b: Log::default(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Delivers everything that is ready to send, until nothing is.
    fn flush(&mut self) {
        loop {
            let mut moved = false;
            while let Some(p) = self.a.poll_transmit(self.now) {
                moved = true;
                self.log_a.sent.push((self.elapsed(), p));
                if self.a_to_b {
                    let p = decode(&p.encode()).expect("A's packet decodes");
                    self.log_b.received_at = Some(self.elapsed());
                    if let Err(e) = self.b.handle_packet(self.now, &p) {
                        self.log_b.rejected.push(e);
                    }
                }
            }
            while let Some(p) = self.b.poll_transmit(self.now) {
                moved = true;
                self.log_b.sent.push((self.elapsed(), p));
                if self.b_to_a {
                    let p = decode(&p.encode()).expect("B's packet decodes");
                    self.log_a.received_at = Some(self.elapsed());
                    if let Err(e) = self.a.handle_packet(self.now, &p) {
                        self.log_a.rejected.push(e);
                    }
                }
            }
            let at = self.elapsed();
            while let Some(e) = self.a.poll_event() {
                self.log_a.events.push((at, e));
            }
            while let Some(e) = self.b.poll_event() {
                self.log_b.events.push((at, e));
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs the virtual clock forward to `until` (from the start), firing
    /// every timer on the way.
    fn run_until(&mut self, until: Duration) {
        let end = self.start + until;
        loop {
            self.flush();
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
                _ => {
                    self.now = end;
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    self.flush();
                    return;
                }
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.elapsed() + d;
        self.run_until(until);
    }

    fn up(&mut self) {
        self.run_for(ms(10));
        assert_eq!(self.a.state(), State::Up);
        assert_eq!(self.b.state(), State::Up);
    }
}

fn changes(log: &Log) -> Vec<(State, State, Diagnostic)> {
    log.events
        .iter()
        .map(|(_, e)| match *e {
            Event::StateChanged {
                from,
                to,
                diagnostic,
            } => (from, to, diagnostic),
            _ => unreachable!("only state changes exist"),
        })
        .collect()
}

#[test]
fn three_way_handshake_comes_up() {
    let mut pair = Pair::new(SessionConfig::default(), SessionConfig::default());
    pair.run_for(ms(1));
    // A spoke first (Down, Your Discriminator 0): B went Init, A saw Init
    // and went Up, B saw Up.
    assert_eq!(
        changes(&pair.log_a),
        vec![(State::Down, State::Up, Diagnostic::None)]
    );
    assert_eq!(
        changes(&pair.log_b),
        vec![
            (State::Down, State::Init, Diagnostic::None),
            (State::Init, State::Up, Diagnostic::None)
        ]
    );
    assert_eq!(pair.a.remote_discriminator(), 0x0b0b);
    assert_eq!(pair.b.remote_discriminator(), 0x0a0a);
    // The first packet names nobody and advertises the 1 s slow rate.
    let first = pair.log_a.sent[0].1;
    assert_eq!(first.your_discriminator, 0);
    assert_eq!(first.state, State::Down);
    assert_eq!(first.desired_min_tx, 1_000_000);
    // Coming Up switched to 300 ms with a Poll Sequence that completed.
    pair.run_for(ms(1000));
    assert!(!pair.a.poll_in_progress() && !pair.b.poll_in_progress());
    assert_eq!(pair.a.transmit_interval(), Some(ms(300)));
    assert_eq!(pair.a.detection_time(), Some(ms(900)));
    assert!(
        pair.log_a.sent.iter().any(|(_, p)| p.poll && !p.final_),
        "A polled"
    );
    assert!(
        pair.log_b.sent.iter().any(|(_, p)| p.final_ && !p.poll),
        "B answered with Final"
    );
    assert!(pair.log_a.rejected.is_empty() && pair.log_b.rejected.is_empty());
}

/// Gaps between consecutive periodic packets sent by one side after `from`.
fn periodic_gaps(log: &Log, from: Duration) -> Vec<Duration> {
    let times: Vec<Duration> = log
        .sent
        .iter()
        .filter(|(t, p)| *t >= from && !p.final_)
        .map(|(t, _)| *t)
        .collect();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn periodic_transmission_is_jittered_within_75_to_100_percent() {
    let mut pair = Pair::new(SessionConfig::default(), SessionConfig::default());
    pair.up();
    pair.run_for(ms(2000));
    let from = pair.elapsed();
    pair.run_for(ms(30_000));
    let gaps = periodic_gaps(&pair.log_a, from);
    assert!(gaps.len() > 90, "{} packets", gaps.len());
    for g in &gaps {
        assert!(*g >= ms(225) && *g <= ms(300), "gap {g:?}");
    }
    let distinct: std::collections::BTreeSet<_> = gaps.iter().collect();
    assert!(distinct.len() > 10, "jitter varies the interval");
}

#[test]
fn detect_mult_one_jitters_within_75_to_90_percent() {
    let one = SessionConfig {
        detect_mult: 1,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(one, one);
    pair.up();
    pair.run_for(ms(2000));
    let from = pair.elapsed();
    pair.run_for(ms(30_000));
    let gaps = periodic_gaps(&pair.log_a, from);
    assert!(gaps.len() > 90);
    for g in &gaps {
        assert!(*g >= ms(225) && *g <= ms(270), "gap {g:?}");
    }
}

#[test]
fn sends_slowly_while_not_up() {
    // B never hears anything: A talks to nobody.
    let mut pair = Pair::new(SessionConfig::default(), SessionConfig::default());
    pair.a_to_b = false;
    pair.b_to_a = false;
    pair.run_for(ms(20_000));
    assert_eq!(pair.a.state(), State::Down);
    let gaps = periodic_gaps(&pair.log_a, Duration::ZERO);
    assert!(gaps.len() >= 19, "{} packets", gaps.len());
    for g in &gaps {
        assert!(*g >= ms(750) && *g <= ms(1000), "gap {g:?}");
    }
    assert!(
        pair.log_a
            .sent
            .iter()
            .all(|(_, p)| p.desired_min_tx == 1_000_000)
    );
}

#[test]
fn lost_peer_is_detected_after_detect_mult_times_interval_not_before() {
    let mut pair = Pair::new(SessionConfig::default(), SessionConfig::default());
    pair.up();
    pair.run_for(ms(5000));
    // Cut B -> A; A hears nothing more.
    pair.b_to_a = false;
    let last_heard = pair.log_a.received_at.expect("A heard B");
    let detection = pair.a.detection_time().expect("negotiated");
    assert_eq!(detection, ms(900));
    pair.run_until(last_heard + detection - ms(1));
    assert_eq!(pair.a.state(), State::Up, "not before the detection time");
    pair.run_until(last_heard + detection);
    assert_eq!(pair.a.state(), State::Down);
    assert_eq!(
        pair.a.local_diagnostic(),
        Diagnostic::ControlDetectionTimeExpired
    );
    let (at, _) = *pair.log_a.events.last().expect("event");
    assert_eq!(at, last_heard + detection);
    assert_eq!(pair.a.remote_discriminator(), 0, "§6.8.1: zeroed on expiry");
    // B still hears A, which now says Down: B goes Down too.
    assert_eq!(pair.b.state(), State::Down);
    assert_eq!(pair.b.local_diagnostic(), Diagnostic::NeighborSignaledDown);
    // The link heals: the handshake runs again.
    pair.b_to_a = true;
    pair.run_for(ms(3000));
    assert_eq!(pair.a.state(), State::Up);
    assert_eq!(pair.b.state(), State::Up);
}

#[test]
fn detection_time_uses_the_slower_of_our_rx_and_their_tx() {
    let slow_sender = SessionConfig {
        desired_min_tx: ms(500),
        required_min_rx: ms(100),
        detect_mult: 5,
    };
    let mut pair = Pair::new(SessionConfig::default(), slow_sender);
    pair.up();
    pair.run_for(ms(3000));
    // A: B's mult 5 × max(A rx 300, B tx 500) = 2.5 s.
    assert_eq!(pair.a.detection_time(), Some(ms(2500)));
    // B: A's mult 3 × max(B rx 100, A tx 300) = 900 ms.
    assert_eq!(pair.b.detection_time(), Some(ms(900)));
    // A sends at max(A tx 300, B rx 100); B at max(500, 300).
    assert_eq!(pair.a.transmit_interval(), Some(ms(300)));
    assert_eq!(pair.b.transmit_interval(), Some(ms(500)));
}

#[test]
fn parameter_change_uses_a_poll_sequence() {
    let fast_b = SessionConfig {
        desired_min_tx: ms(50),
        required_min_rx: ms(50),
        detect_mult: 3,
    };
    let mut pair = Pair::new(SessionConfig::default(), fast_b);
    pair.up();
    pair.run_for(ms(3000));
    assert_eq!(pair.a.detection_time(), Some(ms(900)));
    // A lowers its Required Min RX: until B's Final arrives, the detection
    // time must not shrink (§6.8.3).
    pair.b_to_a = false;
    let lower = SessionConfig {
        required_min_rx: ms(100),
        ..SessionConfig::default()
    };
    pair.a.set_config(pair.now, lower).expect("valid");
    assert!(pair.a.poll_in_progress());
    assert_eq!(pair.a.detection_time(), Some(ms(900)));
    pair.run_for(ms(400));
    assert!(pair.a.poll_in_progress(), "no Final without B's packets");
    let polls = pair.log_a.sent.iter().filter(|(_, p)| p.poll).count();
    assert!(polls >= 1);
    // B answers with Final: the poll ends and the new value applies.
    pair.b_to_a = true;
    pair.run_for(ms(400));
    assert!(!pair.a.poll_in_progress());
    assert_eq!(pair.a.detection_time(), Some(ms(300)));
    // B now sends every 100 ms (max(50, A's new rx 100)).
    assert_eq!(pair.b.transmit_interval(), Some(ms(100)));
    assert_eq!(pair.a.state(), State::Up);
    assert_eq!(pair.b.state(), State::Up);
    // A raises its Desired Min TX: its own sending does not slow down
    // until the poll ends (§6.8.3).
    pair.b_to_a = false;
    let slower = SessionConfig {
        desired_min_tx: ms(600),
        required_min_rx: ms(100),
        detect_mult: 3,
    };
    pair.a.set_config(pair.now, slower).expect("valid");
    assert_eq!(pair.a.transmit_interval(), Some(ms(300)));
    pair.b_to_a = true;
    pair.run_for(ms(700));
    assert!(!pair.a.poll_in_progress());
    assert_eq!(pair.a.transmit_interval(), Some(ms(600)));
    assert_eq!(pair.b.detection_time(), Some(ms(1800)));
    assert_eq!(pair.b.state(), State::Up);
}

#[test]
fn poll_is_answered_at_once_with_final() {
    let now = Instant::now();
    let mut s = Session::new(now, SessionConfig::default(), discr(7), 0).expect("valid");
    while s.poll_transmit(now).is_some() {}
    let poll = ControlPacket {
        diagnostic: Diagnostic::None,
        state: State::Down,
        poll: true,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 99,
        your_discriminator: 7,
        desired_min_tx: 1_000_000,
        required_min_rx: 1_000_000,
        required_min_echo_rx: 0,
    };
    s.handle_packet(now, &poll).expect("accepted");
    let reply = s.poll_transmit(now).expect("Final goes out at once");
    assert!(reply.final_ && !reply.poll);
    assert_eq!(reply.your_discriminator, 99);
    // A packet for another session is refused.
    let stranger = ControlPacket {
        your_discriminator: 8,
        ..poll
    };
    assert_eq!(
        s.handle_packet(now, &stranger),
        Err(PacketError::DiscriminatorMismatch {
            local: 7,
            received: 8
        })
    );
}

#[test]
fn admin_down_takes_the_peer_down_without_a_failure() {
    let mut pair = Pair::new(SessionConfig::default(), SessionConfig::default());
    pair.up();
    pair.run_for(ms(2000));
    let before = pair.log_b.events.len();
    pair.a.admin_down(pair.now);
    pair.run_for(ms(5000));
    assert_eq!(pair.a.state(), State::AdminDown);
    assert_eq!(pair.a.local_diagnostic(), Diagnostic::AdministrativelyDown);
    // B went Down because A said so, and stays Down (not Init) while A is
    // AdminDown; it does not time out either.
    assert_eq!(pair.b.state(), State::Down);
    assert_eq!(pair.b.local_diagnostic(), Diagnostic::NeighborSignaledDown);
    assert_eq!(
        changes(&pair.log_b)[before..],
        [(State::Up, State::Down, Diagnostic::NeighborSignaledDown)]
    );
    // A's packets keep saying AdminDown with diagnostic 7.
    let (_, last) = pair.log_a.sent.last().expect("A keeps sending");
    assert_eq!(last.state, State::AdminDown);
    assert_eq!(last.diagnostic, Diagnostic::AdministrativelyDown);
    pair.a.admin_up(pair.now);
    pair.run_for(ms(3000));
    assert_eq!(pair.a.state(), State::Up);
    assert_eq!(pair.b.state(), State::Up);
}

#[test]
fn restart_with_a_new_discriminator_recovers() {
    let mut pair = Pair::new(SessionConfig::default(), SessionConfig::default());
    pair.up();
    pair.run_for(ms(2000));
    // B restarts: a new session, a new discriminator, state Down.
    pair.b = Session::new(pair.now, SessionConfig::default(), discr(0x0c0c), 3).expect("valid");
    pair.run_for(ms(5000));
    assert_eq!(pair.a.state(), State::Up);
    assert_eq!(pair.b.state(), State::Up);
    assert_eq!(pair.a.remote_discriminator(), 0x0c0c);
    // A went Down on B's first Down packet (not by timing out), then Up.
    let a_changes = changes(&pair.log_a);
    assert!(a_changes.contains(&(State::Up, State::Down, Diagnostic::NeighborSignaledDown)));
    assert!(
        !a_changes
            .iter()
            .any(|c| c.2 == Diagnostic::ControlDetectionTimeExpired)
    );
}

#[test]
fn bad_configuration_is_refused() {
    let now = Instant::now();
    let zero_mult = SessionConfig {
        detect_mult: 0,
        ..SessionConfig::default()
    };
    assert!(Session::new(now, zero_mult, discr(1), 0).is_err());
    let huge = SessionConfig {
        required_min_rx: Duration::from_secs(5000),
        ..SessionConfig::default()
    };
    let err = Session::new(now, huge, discr(1), 0).expect_err("too large");
    assert!(err.to_string().contains("required min rx"), "{err}");
    let no_rx = SessionConfig {
        required_min_rx: Duration::ZERO,
        ..SessionConfig::default()
    };
    assert_eq!(
        Session::new(now, no_rx, discr(1), 0).expect_err("zero rx"),
        ConfigError::ZeroRequiredMinRx
    );
}
