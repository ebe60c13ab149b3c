//! The BGP session finite state machine (RFC 4271 §8), sans-IO.
//!
//! Owns one session with one peer over (at most) one TCP connection:
//! states Idle / Connect / Active / OpenSent / OpenConfirm / Established,
//! the ConnectRetry, Hold, Keepalive and IdleHold timers, OPEN validation,
//! capability negotiation, message framing and decoding. It does no I/O and
//! reads no clock, in the style of quinn-proto:
//!
//! - the driver feeds [`Input`]s with [`Session::handle_input`] (start,
//!   stop, TCP up/down, bytes received) and calls
//!   [`Session::handle_timeout`] when [`Session::poll_timeout`] is due;
//! - it writes what [`Session::poll_transmit`] returns to the socket;
//! - it acts on [`Session::poll_event`]: [`Event::Connect`] (open a TCP
//!   connection now), [`Event::Disconnect`] (close it, after flushing),
//!   [`Event::Established`], [`Event::Update`], [`Event::Down`], ...
//!
//! Connection collisions (RFC 4271 §6.8): the driver runs one `Session` per
//! TCP connection while both exist. When the second one has received the
//! peer's OPEN, [`collision_survivor`] says which direction survives; the
//! driver stops the other with `Input::ManualStop(Some(Notification::new(6,
//! 7, vec![])))` (Cease / Connection Collision Resolution) and drops it. An
//! incoming connection while a session is Established is refused the same
//! way.
//!
//! Routes are not handled here: [`crate::rib`] owns them.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::attribute::AS_TRANS;
use crate::capability::{Capability, GracefulRestart, capability_code};
use crate::error::{DecodeError, code, subcode};
use crate::message::{
    CodecContext, Message, Notification, Open, RouteRefresh, Update, decode_message, frame_len,
};
use crate::nlri::Family;

/// Session states (RFC 4271 §8.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not trying to connect; refuses connections.
    Idle,
    /// Waiting for an outgoing TCP connection to complete.
    Connect,
    /// Waiting for the peer to connect (passive, or after a failed attempt).
    Active,
    /// OPEN sent, waiting for the peer's OPEN.
    OpenSent,
    /// OPENs exchanged, waiting for the first KEEPALIVE.
    OpenConfirm,
    /// Up: UPDATEs flow.
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

/// Which side opened a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We connected to the peer.
    Outgoing,
    /// The peer connected to us.
    Incoming,
}

/// RFC 4271 §6.8: of two connections between the same pair of speakers,
/// the one initiated by the speaker with the higher BGP identifier
/// survives. Returns the direction (seen from us) of the survivor.
pub fn collision_survivor(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> Direction {
    if u32::from(local_id) < u32::from(remote_id) {
        Direction::Incoming
    } else {
        Direction::Outgoing
    }
}

/// Session parameters. Times are in seconds where the RFC uses seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The peer's expected AS.
    pub peer_as: u32,
    /// Hold time we propose (0 disables keepalives, else at least 3).
    pub hold_time: u16,
    /// Keepalive interval; `None` means a third of the negotiated hold time.
    pub keepalive_time: Option<u16>,
    /// ConnectRetry timer.
    pub connect_retry: Duration,
    /// Never connect; wait for the peer.
    pub passive: bool,
    /// Families to offer (multiprotocol capabilities).
    pub families: Vec<Family>,
    /// Offer 4-octet AS numbers (RFC 6793).
    pub four_octet_as: bool,
    /// Offer route refresh (RFC 2918).
    pub route_refresh: bool,
    /// Offer extended messages (RFC 8654).
    pub extended_message: bool,
    /// Graceful restart capability to advertise, if any.
    pub graceful_restart: Option<GracefulRestart>,
    /// First IdleHold delay after an error; doubles per consecutive error.
    pub idle_hold_time: Duration,
    /// Upper bound of the IdleHold back-off.
    pub max_idle_hold_time: Duration,
    /// Seed for jittering the ConnectRetry and IdleHold timers (RFC 4271
    /// §10: each run of the timer is scaled by a factor between 0.75 and
    /// 1). `None` disables jitter, so runs are exactly reproducible. A
    /// driver passes a random seed so that two speakers that failed
    /// together do not retry in lockstep.
    pub jitter_seed: Option<u64>,
}

impl SessionConfig {
    /// Defaults: hold 90 s, ConnectRetry 30 s, IPv4 unicast, 4-octet AS,
    /// route refresh, IdleHold 5 s doubling to 120 s.
    pub fn new(local_as: u32, router_id: Ipv4Addr, peer_as: u32) -> Self {
        SessionConfig {
            local_as,
            router_id,
            peer_as,
            hold_time: 90,
            keepalive_time: None,
            connect_retry: Duration::from_secs(30),
            passive: false,
            families: vec![Family::Ipv4Unicast],
            four_octet_as: true,
            route_refresh: true,
            extended_message: false,
            graceful_restart: None,
            idle_hold_time: Duration::from_secs(5),
            max_idle_hold_time: Duration::from_secs(120),
            jitter_seed: None,
        }
    }

    /// True when the peer is in another AS.
    pub fn is_ebgp(&self) -> bool {
        self.local_as != self.peer_as
    }

    /// The OPEN we send.
    pub fn open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .families
            .iter()
            .map(|f| Capability::multiprotocol(*f))
            .collect();
        if self.route_refresh {
            caps.push(Capability::RouteRefresh);
        }
        if self.four_octet_as {
            caps.push(Capability::FourOctetAs(self.local_as));
        }
        if self.extended_message {
            caps.push(Capability::ExtendedMessage);
        }
        if let Some(gr) = &self.graceful_restart {
            caps.push(Capability::GracefulRestart(gr.clone()));
        }
        Open::new(self.local_as, self.hold_time, self.router_id, caps)
    }
}

/// What both sides agreed on, reported with [`Event::Established`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's AS (4-octet).
    pub peer_as: u32,
    /// The peer's BGP identifier.
    pub peer_id: Ipv4Addr,
    /// Negotiated hold time (minimum of both; 0 = no keepalives).
    pub hold_time: u16,
    /// Keepalive interval in use (0 when the hold time is 0).
    pub keepalive_time: u16,
    /// Families both sides support.
    pub families: Vec<Family>,
    /// Both support route refresh.
    pub route_refresh: bool,
    /// The peer's graceful restart capability, if advertised.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// The context to encode and decode this session's messages with.
    pub codec: CodecContext,
    /// The peer's OPEN as received.
    pub peer_open: Open,
}

/// Input to the session.
#[derive(Debug)]
pub enum Input<'a> {
    /// Start (RFC 4271 event 1/4): connect unless passive.
    ManualStart,
    /// Stop (event 2): send the NOTIFICATION given (default Cease /
    /// Administrative Shutdown), close, stay Idle until the next start.
    ManualStop(Option<Notification>),
    /// A TCP connection for this session is up (events 16/17).
    TcpConnected(Direction),
    /// The connection attempt failed or the connection closed (event 18).
    TcpFailed,
    /// Bytes read from the connection.
    Data(&'a [u8]),
}

/// Why a session went down.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// Stopped by the operator (the NOTIFICATION sent).
    ManualStop(Notification),
    /// The peer sent a NOTIFICATION.
    NotificationReceived(Notification),
    /// We found an error and sent a NOTIFICATION.
    NotificationSent {
        /// The NOTIFICATION sent.
        notification: Notification,
        /// What was wrong.
        detail: String,
    },
    /// The hold timer expired (NOTIFICATION 4/0 sent).
    HoldTimerExpired,
    /// The TCP connection closed or failed.
    ConnectionLost,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::ManualStop(n) => write!(f, "stopped, sent NOTIFICATION {n}"),
            DownReason::NotificationReceived(n) => write!(f, "received NOTIFICATION {n}"),
            DownReason::NotificationSent {
                notification,
                detail,
            } => {
                write!(f, "sent NOTIFICATION {notification}: {detail}")
            }
            DownReason::HoldTimerExpired => {
                f.write_str("hold timer expired, sent NOTIFICATION 4/0")
            }
            DownReason::ConnectionLost => f.write_str("connection lost"),
        }
    }
}

/// Output of the session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Open a TCP connection to the peer now (dropping any earlier attempt).
    Connect,
    /// Close the TCP connection once [`Session::poll_transmit`] is drained.
    Disconnect,
    /// The state changed.
    StateChanged {
        /// Old state.
        from: State,
        /// New state.
        to: State,
    },
    /// The session is up.
    Established(Box<Negotiated>),
    /// An UPDATE arrived (check [`Update::action`] for RFC 7606 handling).
    Update(Update),
    /// The peer asked for our routes again.
    RouteRefresh(RouteRefresh),
    /// A connection that had reached OpenSent or later was torn down. If the
    /// session had been Established, its routes must be withdrawn.
    Down(DownReason),
}

/// Large hold time used while waiting for the peer's OPEN (RFC 4271 §8.2.2
/// suggests 4 minutes).
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// An Established session that lasted this long resets the back-off.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// One BGP session. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    /// Started by the operator (automatic restarts after errors happen only
    /// while this holds).
    started: bool,
    direction: Option<Direction>,
    connect_retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    keepalive_interval: Option<Duration>,
    idle_hold_at: Option<Instant>,
    /// Next IdleHold delay.
    backoff: Duration,
    established_at: Option<Instant>,
    negotiated: Option<Negotiated>,
    peer_open: Option<Open>,
    /// Decoding context (becomes the negotiated one at OpenConfirm).
    codec: CodecContext,
    rx: Vec<u8>,
    tx: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    last_down: Option<DownReason>,
    /// State of the jitter generator (xorshift64*); `None` when jitter is
    /// off.
    jitter: Option<u64>,
}

impl Session {
    /// A session in Idle.
    pub fn new(config: SessionConfig) -> Self {
        let backoff = config.idle_hold_time;
        // xorshift has a fixed point at 0: keep the state away from it.
        let jitter = config.jitter_seed.map(|s| s | 1);
        let codec = CodecContext {
            ebgp: config.is_ebgp(),
            ..CodecContext::default()
        };
        Session {
            config,
            state: State::Idle,
            started: false,
            direction: None,
            connect_retry_at: None,
            hold_at: None,
            keepalive_at: None,
            keepalive_interval: None,
            idle_hold_at: None,
            backoff,
            established_at: None,
            negotiated: None,
            peer_open: None,
            codec,
            rx: Vec::new(),
            tx: VecDeque::new(),
            events: VecDeque::new(),
            last_down: None,
            jitter,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// A new connection from the peer arrived while this session is
    /// Established. With graceful restart negotiated (both sides advertised
    /// it) RFC 4724 §4.2 says the peer has restarted and the old
    /// connection is dead: the session goes down as if the TCP connection
    /// had been lost ([`DownReason::ConnectionLost`], so its routes are
    /// kept stale) and waits in Active for the new connection, which the
    /// driver hands over with `Input::TcpConnected` once it has acted on
    /// the events (`Disconnect` closes the old connection). Returns false
    /// (nothing changes) otherwise: the driver refuses the connection.
    pub fn accept_restarted_peer(&mut self, now: Instant) -> bool {
        let graceful = self.config.graceful_restart.is_some()
            && self
                .negotiated
                .as_ref()
                .is_some_and(|n| n.peer_graceful_restart.is_some());
        if self.state != State::Established || !graceful || !self.started {
            return false;
        }
        self.teardown(now, Some(DownReason::ConnectionLost), false);
        if !self.config.passive {
            self.connect_retry_at = Some(now + self.config.connect_retry);
        }
        self.set_state(State::Active);
        true
    }

    /// Replaces the graceful restart capability sent in the next OPEN
    /// (RFC 4724 §4.1: the Restart State bit belongs only in the OPEN of
    /// the first session after a restart, so a driver clears it once that
    /// session is Established).
    pub fn set_graceful_restart(&mut self, graceful_restart: Option<GracefulRestart>) {
        self.config.graceful_restart = graceful_restart;
    }

    /// What was negotiated, while Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The peer's OPEN, once received on the current connection.
    pub fn peer_open(&self) -> Option<&Open> {
        self.peer_open.as_ref()
    }

    /// True when a new TCP connection may be handed to this session:
    /// Connect or Active, and also Idle while a started session waits out
    /// its IdleHold back-off (RFC 4271 event 5,
    /// AutomaticStart_with_PassiveTcpEstablishment: the back-off delays our
    /// own connection attempts, not the peer's). Without the latter, two
    /// speakers that both connect actively and failed together refuse
    /// each other in turn forever. A stopped session refuses; from
    /// OpenSent on, a second connection is a collision for the driver to
    /// resolve with [`collision_survivor`] once the peer's OPEN is known.
    pub fn accepts_connection(&self) -> bool {
        match self.state {
            State::Connect | State::Active => true,
            State::Idle => self.started,
            _ => false,
        }
    }

    /// Which side opened the current connection.
    pub fn direction(&self) -> Option<Direction> {
        self.direction
    }

    /// When the session became Established.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    /// Why the session last went down.
    pub fn last_down(&self) -> Option<&DownReason> {
        self.last_down.as_ref()
    }

    /// The codec context for this session's messages.
    pub fn codec(&self) -> CodecContext {
        self.codec
    }

    /// Next bytes to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// Next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest instant at which [`Session::handle_timeout`] must be
    /// called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.connect_retry_at,
            self.hold_at,
            self.keepalive_at,
            self.idle_hold_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Queues an already encoded UPDATE (from [`crate::UpdateBuilder`]) or
    /// any other message. Ignored unless Established. Restarts the
    /// keepalive timer (RFC 4271 §4.4).
    pub fn send_raw(&mut self, now: Instant, message: Vec<u8>) {
        if self.state != State::Established {
            return;
        }
        self.tx.push_back(message);
        self.restart_keepalive(now);
    }

    /// Encodes and queues an UPDATE. Ignored unless Established.
    pub fn send_update(&mut self, now: Instant, update: Update) -> Result<(), crate::EncodeError> {
        if self.state != State::Established {
            return Ok(());
        }
        let bytes = Message::Update(update).to_bytes(&self.codec)?;
        self.send_raw(now, bytes);
        Ok(())
    }

    /// Asks the peer to resend its routes for `family` (if it supports
    /// route refresh).
    pub fn send_route_refresh(&mut self, now: Instant, family: Family) {
        if self.negotiated.as_ref().is_some_and(|n| n.route_refresh) {
            let m = Message::RouteRefresh(RouteRefresh::request(family));
            if let Ok(bytes) = m.to_bytes(&self.codec) {
                self.send_raw(now, bytes);
            }
        }
    }

    /// Feeds one input.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::ManualStart => {
                self.started = true;
                self.backoff = self.config.idle_hold_time;
                if self.state == State::Idle {
                    self.idle_hold_at = None;
                    self.start(now);
                }
            }
            Input::ManualStop(n) => {
                self.started = false;
                let n = n.unwrap_or_else(|| {
                    Notification::new(code::CEASE, subcode::cease::ADMINISTRATIVE_SHUTDOWN, vec![])
                });
                if matches!(
                    self.state,
                    State::OpenSent | State::OpenConfirm | State::Established
                ) {
                    self.queue(Message::Notification(n.clone()));
                    self.teardown(now, Some(DownReason::ManualStop(n)), false);
                } else {
                    if matches!(self.state, State::Connect | State::Active) {
                        self.events.push_back(Event::Disconnect);
                    }
                    self.teardown(now, None, false);
                }
                self.idle_hold_at = None;
            }
            Input::TcpConnected(dir) => match self.state {
                State::Connect | State::Active => self.connected(now, dir),
                // Passive establishment during the IdleHold back-off.
                State::Idle if self.started && dir == Direction::Incoming => {
                    self.idle_hold_at = None;
                    self.connected(now, dir);
                }
                // Not expecting a connection: the driver should have asked
                // `accepts_connection` (or resolved a collision) first.
                _ => {}
            },
            Input::TcpFailed => match self.state {
                State::Idle => {}
                State::Connect | State::Active => {
                    // RFC 4271: Connect -> Active, retry when the timer fires.
                    if !self.config.passive && self.connect_retry_at.is_none() {
                        self.connect_retry_at =
                            Some(now + self.jittered(self.config.connect_retry));
                    }
                    self.set_state(State::Active);
                }
                State::OpenSent | State::OpenConfirm | State::Established => {
                    self.teardown(now, Some(DownReason::ConnectionLost), true);
                }
            },
            Input::Data(data) => self.handle_data(now, data),
        }
    }

    /// Handles expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.idle_hold_at.is_some_and(|t| t <= now) {
            self.idle_hold_at = None;
            if self.started && self.state == State::Idle {
                self.start(now);
            }
        }
        if self.connect_retry_at.is_some_and(|t| t <= now) {
            self.connect_retry_at = Some(now + self.jittered(self.config.connect_retry));
            if matches!(self.state, State::Connect | State::Active) && !self.config.passive {
                self.events.push_back(Event::Connect);
                self.set_state(State::Connect);
            }
        }
        if self.hold_at.is_some_and(|t| t <= now) {
            self.hold_at = None;
            let n = Notification::new(code::HOLD_TIMER_EXPIRED, 0, vec![]);
            self.queue(Message::Notification(n));
            self.teardown(now, Some(DownReason::HoldTimerExpired), true);
        }
        if self.keepalive_at.is_some_and(|t| t <= now) {
            self.queue(Message::Keepalive);
            self.restart_keepalive(now);
        }
    }

    /// A TCP connection is up: send our OPEN and wait for the peer's.
    fn connected(&mut self, now: Instant, dir: Direction) {
        self.direction = Some(dir);
        self.connect_retry_at = None;
        self.rx.clear();
        self.codec = CodecContext {
            ebgp: self.config.is_ebgp(),
            ..Default::default()
        };
        self.queue(Message::Open(self.config.open()));
        self.hold_at = Some(now + OPEN_HOLD);
        self.set_state(State::OpenSent);
    }

    /// `d` scaled by a factor in [0.75, 1] when jitter is on (RFC 4271
    /// §10), else `d`.
    fn jittered(&mut self, d: Duration) -> Duration {
        let Some(x) = self.jitter.as_mut() else {
            return d;
        };
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56; // 0..=255
        // 0.75 + 0.25 * r / 256, in 1/1024ths.
        d.saturating_mul(768 + u32::try_from(r).unwrap_or(0)) / 1024
    }

    fn start(&mut self, now: Instant) {
        if self.config.passive {
            self.set_state(State::Active);
        } else {
            self.connect_retry_at = Some(now + self.jittered(self.config.connect_retry));
            self.events.push_back(Event::Connect);
            self.set_state(State::Connect);
        }
    }

    fn set_state(&mut self, to: State) {
        if self.state != to {
            let from = self.state;
            self.state = to;
            self.events.push_back(Event::StateChanged { from, to });
        }
    }

    fn queue(&mut self, m: Message) {
        // OPEN, KEEPALIVE and NOTIFICATION always fit 4096 octets.
        if let Ok(bytes) = m.to_bytes(&self.codec) {
            self.tx.push_back(bytes);
        }
    }

    fn restart_keepalive(&mut self, now: Instant) {
        if let Some(ka) = self.keepalive_interval {
            self.keepalive_at = Some(now + ka);
        }
    }

    fn restart_hold(&mut self, now: Instant) {
        if let Some(open) = &self.peer_open {
            let hold = self.config.hold_time.min(open.hold_time);
            self.hold_at = (hold > 0).then(|| now + Duration::from_secs(u64::from(hold)));
        }
    }

    /// Closes the connection and goes Idle (RFC 4271: most errors lead to
    /// Idle). With `error`, the IdleHold back-off applies before the next
    /// automatic start.
    fn teardown(&mut self, now: Instant, reason: Option<DownReason>, error: bool) {
        let was_connected = matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        );
        if let Some(est) = self.established_at.take() {
            if now.saturating_duration_since(est) >= STABLE_AFTER {
                self.backoff = self.config.idle_hold_time;
            }
        }
        self.connect_retry_at = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.keepalive_interval = None;
        self.negotiated = None;
        self.peer_open = None;
        self.direction = None;
        self.rx.clear();
        if was_connected {
            self.events.push_back(Event::Disconnect);
        }
        if let Some(r) = reason {
            self.last_down = Some(r.clone());
            self.events.push_back(Event::Down(r));
        }
        self.set_state(State::Idle);
        if error && self.started {
            self.idle_hold_at = Some(now + self.jittered(self.backoff));
            self.backoff = (self.backoff * 2).min(self.config.max_idle_hold_time);
        }
    }

    fn fail(&mut self, now: Instant, e: DecodeError) {
        self.queue(Message::Notification(e.notification.clone()));
        self.teardown(
            now,
            Some(DownReason::NotificationSent {
                notification: e.notification,
                detail: e.detail,
            }),
            true,
        );
    }

    fn fsm_error(&mut self, now: Instant, what: &str) {
        let sub = match self.state {
            State::OpenSent => subcode::fsm::UNEXPECTED_IN_OPENSENT,
            State::OpenConfirm => subcode::fsm::UNEXPECTED_IN_OPENCONFIRM,
            _ => subcode::fsm::UNEXPECTED_IN_ESTABLISHED,
        };
        let detail = format!("unexpected {what} in {}", self.state);
        self.fail(now, DecodeError::reset(code::FSM, sub, vec![], detail));
    }

    fn handle_data(&mut self, now: Instant, data: &[u8]) {
        if !matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            return;
        }
        // Fast path: nothing buffered, decode straight from `data`.
        let mut pending = std::mem::take(&mut self.rx);
        let buf: &[u8] = if pending.is_empty() {
            data
        } else {
            pending.extend_from_slice(data);
            &pending
        };
        let mut off = 0;
        let mut keep_rest = true;
        while off < buf.len() {
            let rest = &buf[off..];
            match frame_len(rest, &self.codec) {
                Ok(Some(len)) if len <= rest.len() => {
                    off += len;
                    let msg = decode_message(&rest[..len], &self.codec);
                    self.handle_message(now, msg);
                    if !matches!(
                        self.state,
                        State::OpenSent | State::OpenConfirm | State::Established
                    ) {
                        keep_rest = false;
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    self.fail(now, e);
                    keep_rest = false;
                    break;
                }
            }
        }
        if keep_rest && off < buf.len() {
            let rest = buf[off..].to_vec();
            self.rx = rest;
        }
    }

    fn handle_message(&mut self, now: Instant, msg: Result<Message, DecodeError>) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => return self.fail(now, e),
        };
        match (self.state, msg) {
            (_, Message::Notification(n)) => {
                self.teardown(now, Some(DownReason::NotificationReceived(n)), true);
            }
            (State::OpenSent, Message::Open(open)) => self.accept_open(now, open),
            (State::OpenConfirm, Message::Keepalive) => {
                self.restart_hold(now);
                if let Some(n) = self.negotiated_from_open() {
                    self.negotiated = Some(n.clone());
                    self.established_at = Some(now);
                    self.set_state(State::Established);
                    self.events.push_back(Event::Established(Box::new(n)));
                }
            }
            (State::Established, Message::Keepalive) => self.restart_hold(now),
            (State::Established, Message::Update(u)) => {
                self.restart_hold(now);
                self.events.push_back(Event::Update(u));
            }
            (State::Established, Message::RouteRefresh(r)) => {
                self.restart_hold(now);
                self.events.push_back(Event::RouteRefresh(r));
            }
            (_, m) => {
                let what = match m {
                    Message::Open(_) => "OPEN",
                    Message::Update(_) => "UPDATE",
                    Message::Keepalive => "KEEPALIVE",
                    Message::RouteRefresh(_) => "ROUTE-REFRESH",
                    _ => "message",
                };
                self.fsm_error(now, what);
            }
        }
    }

    fn accept_open(&mut self, now: Instant, open: Open) {
        if let Err(e) = self.check_open(&open) {
            return self.fail(now, e);
        }
        let four = self.config.four_octet_as && open.four_octet_as().is_some();
        let ext =
            self.config.extended_message && open.has_capability(capability_code::EXTENDED_MESSAGE);
        self.codec = CodecContext {
            four_octet_as: four,
            extended_message: ext,
            ebgp: self.config.is_ebgp(),
        };
        self.peer_open = Some(open);
        self.queue(Message::Keepalive);
        self.restart_hold(now);
        let hold = self
            .config
            .hold_time
            .min(self.peer_open.as_ref().map_or(0, |o| o.hold_time));
        let ka = keepalive_for(hold, self.config.keepalive_time);
        self.keepalive_interval = (ka > 0).then(|| Duration::from_secs(u64::from(ka)));
        self.restart_keepalive(now);
        self.set_state(State::OpenConfirm);
    }

    /// The peer's AS as we understand it: an old (2-octet) speaker, which we
    /// are when 4-octet support is off, ignores the capability.
    fn peer_asn(&self, open: &Open) -> u32 {
        if self.config.four_octet_as {
            open.asn()
        } else {
            u32::from(open.my_as)
        }
    }

    fn check_open(&self, open: &Open) -> Result<(), DecodeError> {
        let peer_as = self.peer_asn(open);
        let as_ok = peer_as == self.config.peer_as
            || (open.four_octet_as().is_none()
                && u32::from(open.my_as) == AS_TRANS
                && self.config.peer_as > 0xffff);
        if !as_ok {
            return Err(DecodeError::reset(
                code::OPEN_MESSAGE,
                subcode::open::BAD_PEER_AS,
                open.my_as.to_be_bytes().to_vec(),
                format!("peer AS {peer_as}, expected {}", self.config.peer_as),
            ));
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(DecodeError::reset(
                code::OPEN_MESSAGE,
                subcode::open::UNACCEPTABLE_HOLD_TIME,
                vec![],
                format!("hold time {} (must be 0 or at least 3)", open.hold_time),
            ));
        }
        if open.bgp_id.is_unspecified()
            || (!self.config.is_ebgp() && open.bgp_id == self.config.router_id)
        {
            return Err(DecodeError::reset(
                code::OPEN_MESSAGE,
                subcode::open::BAD_BGP_IDENTIFIER,
                open.bgp_id.octets().to_vec(),
                format!("BGP identifier {} not acceptable", open.bgp_id),
            ));
        }
        Ok(())
    }

    fn negotiated_from_open(&self) -> Option<Negotiated> {
        let open = self.peer_open.clone()?;
        let hold = self.config.hold_time.min(open.hold_time);
        let peer_families: Vec<Family> = open
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol { afi, safi } => Family::from_afi_safi(*afi, *safi),
                _ => None,
            })
            .collect();
        let families = if open
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::Multiprotocol { .. }))
        {
            self.config
                .families
                .iter()
                .copied()
                .filter(|f| peer_families.contains(f))
                .collect()
        } else {
            // No multiprotocol capability: IPv4 unicast implied (RFC 4760 §8).
            self.config
                .families
                .iter()
                .copied()
                .filter(|f| *f == Family::Ipv4Unicast)
                .collect()
        };
        let peer_gr = open.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g.clone()),
            _ => None,
        });
        Some(Negotiated {
            peer_as: self.peer_asn(&open),
            peer_id: open.bgp_id,
            hold_time: hold,
            keepalive_time: keepalive_for(hold, self.config.keepalive_time),
            families,
            route_refresh: self.config.route_refresh
                && open.has_capability(capability_code::ROUTE_REFRESH),
            peer_graceful_restart: peer_gr,
            codec: self.codec,
            peer_open: open,
        })
    }
}

/// The keepalive interval for a negotiated hold time: the configured value
/// capped at a third of the hold time, or a third of it by default.
fn keepalive_for(hold: u16, configured: Option<u16>) -> u16 {
    if hold == 0 {
        return 0;
    }
    let third = (hold / 3).max(1);
    configured.map_or(third, |k| k.clamp(1, third))
}
