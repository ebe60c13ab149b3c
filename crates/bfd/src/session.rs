//! One BFD session in asynchronous mode (RFC 5880 §6.2, §6.8), sans-IO.
//!
//! Owns the state variables of §6.8.1 (state, discriminators, diagnostic,
//! the negotiated intervals), the three-way handshake, the detection timer,
//! the periodic transmit timer with jitter (§6.8.7), the Poll/Final sequence
//! for parameter changes (§6.5, §6.8.3) and AdminDown (§6.8.16). It does no
//! I/O, reads no clock and draws no random numbers of its own, in the style
//! of quinn-proto:
//!
//! - the driver feeds decoded packets with [`Session::handle_packet`] and
//!   calls [`Session::handle_timeout`] when [`Session::poll_timeout`] is due;
//! - it sends what [`Session::poll_transmit`] returns, to UDP port 3784;
//! - it reports what [`Session::poll_event`] returns (state changes).
//!
//! The jitter comes from a seed given to [`Session::new`], so a test with a
//! fixed seed and a virtual clock is fully deterministic.
//!
//! Not implemented: Demand mode (a peer's D bit is recorded but periodic
//! transmission never stops), the Echo function (Required Min Echo RX
//! Interval is always 0), authentication (see [`crate::packet`]), the
//! passive role (a session always sends).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use crate::packet::{ControlPacket, DecodeError, Diagnostic, State};

/// The transmit interval floor while the session is not Up (§6.8.3).
pub const SLOW_TX_INTERVAL: Duration = Duration::from_secs(1);

/// Timer parameters of one session, as an operator configures them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// bfd.DesiredMinTxInterval while Up: how often we would like to send.
    /// While not Up, at least [`SLOW_TX_INTERVAL`] is used instead.
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval: the fastest we accept packets at.
    pub required_min_rx: Duration,
    /// bfd.DetectMult: the peer declares us down after this many of our
    /// intervals without a packet.
    pub detect_mult: u8,
}

impl Default for SessionConfig {
    /// 300 ms × 3, the common default of FRR and BIRD.
    fn default() -> Self {
        SessionConfig {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
        }
    }
}

/// A [`SessionConfig`] that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `detect_mult` is 0 (RFC 5880 §4.1: it must be nonzero).
    #[error("BFD detect multiplier must be at least 1")]
    ZeroDetectMult,
    /// `desired_min_tx` is zero (the value 0 is reserved, §4.1).
    #[error("BFD desired min tx interval must be more than 0")]
    ZeroDesiredMinTx,
    /// `required_min_rx` is zero: that asks the peer to send nothing, which
    /// only makes sense with the Echo function or Demand mode (neither is
    /// implemented).
    #[error(
        "BFD required min rx interval must be more than 0 (Echo and Demand mode are not supported)"
    )]
    ZeroRequiredMinRx,
    /// An interval does not fit the 32-bit microsecond field.
    #[error("BFD {field} interval {value:?} is too large (at most 4294 s)")]
    IntervalTooLarge {
        /// Which interval (`desired min tx` or `required min rx`).
        field: &'static str,
        /// The configured value.
        value: Duration,
    },
}

impl SessionConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.detect_mult == 0 {
            return Err(ConfigError::ZeroDetectMult);
        }
        if self.desired_min_tx.is_zero() {
            return Err(ConfigError::ZeroDesiredMinTx);
        }
        if self.required_min_rx.is_zero() {
            return Err(ConfigError::ZeroRequiredMinRx);
        }
        micros("desired min tx", self.desired_min_tx)?;
        micros("required min rx", self.required_min_rx)?;
        Ok(())
    }
}

fn micros(field: &'static str, value: Duration) -> Result<u32, ConfigError> {
    u32::try_from(value.as_micros()).map_err(|_| ConfigError::IntervalTooLarge { field, value })
}

/// A received packet that this session does not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Your Discriminator is neither 0 nor ours (§6.8.6: discard).
    #[error("BFD Your Discriminator {received} is not this session's {local}")]
    DiscriminatorMismatch {
        /// Our discriminator.
        local: u32,
        /// The packet's Your Discriminator.
        received: u32,
    },
    /// The packet breaks a rule [`crate::packet::decode`] enforces (for a
    /// packet built by hand rather than decoded).
    #[error(transparent)]
    Malformed(#[from] DecodeError),
}

/// What a session reports to its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The session state changed.
    StateChanged {
        /// The state before.
        from: State,
        /// The state now.
        to: State,
        /// bfd.LocalDiag after the change: why it happened
        /// ([`Diagnostic::None`] when coming up).
        diagnostic: Diagnostic,
    },
}

/// Timer values advertised before a Poll Sequence started (§6.8.3).
#[derive(Clone, Copy, Debug)]
struct PollSequence {
    previous_tx: u32,
    previous_rx: u32,
}

/// One BFD session with one peer.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    local_discriminator: u32,
    state: State,
    local_diagnostic: Diagnostic,
    remote_state: State,
    remote_discriminator: u32,
    remote_min_rx: u32,
    remote_desired_min_tx: u32,
    remote_detect_mult: u8,
    remote_demand: bool,
    /// bfd.DesiredMinTxInterval as advertised now, µs.
    desired_min_tx: u32,
    /// bfd.RequiredMinRxInterval as advertised now, µs.
    required_min_rx: u32,
    poll: Option<PollSequence>,
    final_due: bool,
    send_due: bool,
    next_tx: Option<Instant>,
    detect_deadline: Option<Instant>,
    events: VecDeque<Event>,
    rng: u64,
}

impl Session {
    /// A new session in state Down that starts sending (slowly) at once.
    ///
    /// `local_discriminator` must be unique among the sessions of this
    /// system; `jitter_seed` seeds the transmit jitter.
    pub fn new(
        now: Instant,
        config: SessionConfig,
        local_discriminator: NonZeroU32,
        jitter_seed: u64,
    ) -> Result<Session, ConfigError> {
        config.validate()?;
        let mut session = Session {
            config,
            local_discriminator: local_discriminator.get(),
            state: State::Down,
            local_diagnostic: Diagnostic::None,
            remote_state: State::Down,
            remote_discriminator: 0,
            remote_min_rx: 1,
            remote_desired_min_tx: 0,
            remote_detect_mult: 0,
            remote_demand: false,
            desired_min_tx: 0,
            required_min_rx: 0,
            poll: None,
            final_due: false,
            send_due: false,
            next_tx: None,
            detect_deadline: None,
            events: VecDeque::new(),
            rng: jitter_seed,
        };
        session.apply_timers();
        session.send_now(now);
        Ok(session)
    }

    /// bfd.SessionState.
    pub fn state(&self) -> State {
        self.state
    }

    /// bfd.LocalDiag: why the state last changed.
    pub fn local_diagnostic(&self) -> Diagnostic {
        self.local_diagnostic
    }

    /// bfd.LocalDiscr.
    pub fn local_discriminator(&self) -> u32 {
        self.local_discriminator
    }

    /// bfd.RemoteDiscr (0 until the peer is heard from, and again after a
    /// detection time without packets).
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discriminator
    }

    /// bfd.RemoteSessionState: the peer's state as it last told us.
    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    /// Whether the peer asked for Demand mode (recorded, not acted on).
    pub fn remote_demand(&self) -> bool {
        self.remote_demand
    }

    /// The configuration in use.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Whether a Poll Sequence is waiting for the peer's Final.
    pub fn poll_in_progress(&self) -> bool {
        self.poll.is_some()
    }

    /// The negotiated transmit interval before jitter:
    /// max(bfd.DesiredMinTxInterval, bfd.RemoteMinRxInterval). `None` when
    /// the peer asked for no periodic packets (Required Min RX 0).
    pub fn transmit_interval(&self) -> Option<Duration> {
        if self.remote_min_rx == 0 {
            return None;
        }
        // While a Poll Sequence runs, an increased Desired Min TX does not
        // take effect yet (§6.8.3): use the smaller of old and new.
        let tx = match self.poll {
            Some(p) => p.previous_tx.min(self.desired_min_tx),
            None => self.desired_min_tx,
        };
        Some(Duration::from_micros(u64::from(tx.max(self.remote_min_rx))))
    }

    /// The detection time (§6.8.4): the peer's Detect Mult times
    /// max(bfd.RequiredMinRxInterval, the peer's Desired Min TX). `None`
    /// until the peer is heard from.
    pub fn detection_time(&self) -> Option<Duration> {
        if self.remote_detect_mult == 0 {
            return None;
        }
        // While a Poll Sequence runs, a reduced Required Min RX does not
        // shorten the detection time yet (§6.8.3): use the larger.
        let rx = match self.poll {
            Some(p) => p.previous_rx.max(self.required_min_rx),
            None => self.required_min_rx,
        };
        let per = u64::from(rx.max(self.remote_desired_min_tx));
        if per == 0 {
            // We asked for no packets and the peer advertises no rate:
            // there is nothing to time.
            return None;
        }
        Some(Duration::from_micros(
            per * u64::from(self.remote_detect_mult),
        ))
    }

    /// Changes the timer parameters. While Up, a Poll Sequence carries the
    /// change to the peer (§6.8.3).
    pub fn set_config(&mut self, now: Instant, config: SessionConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.config = config;
        let before = self.transmit_interval();
        self.apply_timers();
        self.reschedule_if_faster(now, before);
        Ok(())
    }

    /// Holds the session in AdminDown (§6.8.16): the peer is told, and
    /// goes Down with diagnostic "neighbor signaled session down" without
    /// treating it as a failure of the path.
    pub fn admin_down(&mut self, now: Instant) {
        if self.state != State::AdminDown {
            self.detect_deadline = None;
            self.set_state(now, State::AdminDown, Diagnostic::AdministrativelyDown);
        }
    }

    /// Leaves AdminDown: the session goes to Down and can come Up again.
    pub fn admin_up(&mut self, now: Instant) {
        if self.state == State::AdminDown {
            self.set_state(now, State::Down, Diagnostic::None);
        }
    }

    /// Processes a received Control packet (§6.8.6, after the checks that
    /// [`crate::packet::decode`] makes).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: &ControlPacket,
    ) -> Result<(), PacketError> {
        if packet.detect_mult == 0 {
            return Err(DecodeError::ZeroDetectMult.into());
        }
        if packet.my_discriminator == 0 {
            return Err(DecodeError::ZeroMyDiscriminator.into());
        }
        if packet.your_discriminator == 0 && matches!(packet.state, State::Init | State::Up) {
            return Err(DecodeError::ZeroYourDiscriminator {
                state: packet.state,
            }
            .into());
        }
        if packet.your_discriminator != 0 && packet.your_discriminator != self.local_discriminator {
            return Err(PacketError::DiscriminatorMismatch {
                local: self.local_discriminator,
                received: packet.your_discriminator,
            });
        }
        let before = self.transmit_interval();
        self.remote_discriminator = packet.my_discriminator;
        self.remote_state = packet.state;
        self.remote_demand = packet.demand;
        if packet.final_ && self.poll.is_some() {
            self.poll = None;
        }
        self.remote_min_rx = packet.required_min_rx;
        self.remote_desired_min_tx = packet.desired_min_tx;
        self.remote_detect_mult = packet.detect_mult;
        if self.state == State::AdminDown {
            return Ok(());
        }
        match (self.state, packet.state) {
            (State::AdminDown, _) => {}
            (State::Down, State::AdminDown) => {}
            (_, State::AdminDown) => {
                self.set_state(now, State::Down, Diagnostic::NeighborSignaledDown)
            }
            (State::Down, State::Down) => self.set_state(now, State::Init, Diagnostic::None),
            (State::Down, State::Init) => self.set_state(now, State::Up, Diagnostic::None),
            (State::Init, State::Init | State::Up) => {
                self.set_state(now, State::Up, Diagnostic::None)
            }
            (State::Up, State::Down) => {
                self.set_state(now, State::Down, Diagnostic::NeighborSignaledDown)
            }
            _ => {}
        }
        if packet.poll {
            self.final_due = true;
        }
        self.detect_deadline = self.detection_time().map(|d| now + d);
        self.reschedule_if_faster(now, before);
        Ok(())
    }

    /// Runs the timers that are due at `now`: the detection timer (the
    /// session goes Down with "control detection time expired") and the
    /// transmit timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.detect_deadline.is_some_and(|d| d <= now) {
            self.detect_deadline = None;
            // §6.8.1: RemoteDiscr is zeroed when a detection time passes.
            self.remote_discriminator = 0;
            self.remote_state = State::Down;
            if matches!(self.state, State::Init | State::Up) {
                self.set_state(now, State::Down, Diagnostic::ControlDetectionTimeExpired);
            }
        }
        if self.next_tx.is_some_and(|t| t <= now) {
            self.send_now(now);
        }
    }

    /// The next packet to send, if one is due. Call after every
    /// `handle_*` until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<ControlPacket> {
        if self.final_due {
            // A Final goes out at once and is not a periodic packet; P and F
            // are never both set (§6.8.7).
            self.final_due = false;
            return Some(self.packet(false, true));
        }
        if self.send_due {
            self.send_due = false;
            self.next_tx = self.jittered_interval().map(|i| now + i);
            return Some(self.packet(self.poll.is_some(), false));
        }
        None
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_tx, self.detect_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event (state change), if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn packet(&self, poll: bool, final_: bool) -> ControlPacket {
        ControlPacket {
            diagnostic: self.local_diagnostic,
            state: self.state,
            poll,
            final_,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.config.detect_mult,
            my_discriminator: self.local_discriminator,
            your_discriminator: self.remote_discriminator,
            desired_min_tx: self.desired_min_tx,
            required_min_rx: self.required_min_rx,
            required_min_echo_rx: 0,
        }
    }

    fn set_state(&mut self, now: Instant, to: State, diagnostic: Diagnostic) {
        let from = self.state;
        self.state = to;
        self.local_diagnostic = diagnostic;
        if to != State::Up {
            // Nothing left to coordinate with the peer: new timer values
            // apply at once.
            self.poll = None;
        }
        self.events.push_back(Event::StateChanged {
            from,
            to,
            diagnostic,
        });
        self.apply_timers();
        // Tell the peer at once rather than at the next periodic packet, so
        // the handshake and a teardown take one round trip.
        self.send_now(now);
    }

    /// Sets the advertised intervals from the configuration and the state
    /// (at least 1 s TX while not Up, §6.8.3), starting a Poll Sequence if
    /// they change while Up.
    fn apply_timers(&mut self) {
        let mut tx = self.config.desired_min_tx;
        if self.state != State::Up {
            tx = tx.max(SLOW_TX_INTERVAL);
        }
        // validate() has checked both fit.
        let tx = micros("desired min tx", tx).unwrap_or(u32::MAX);
        let rx = micros("required min rx", self.config.required_min_rx).unwrap_or(u32::MAX);
        if tx == self.desired_min_tx && rx == self.required_min_rx {
            return;
        }
        if self.state == State::Up && self.poll.is_none() {
            self.poll = Some(PollSequence {
                previous_tx: self.desired_min_tx,
                previous_rx: self.required_min_rx,
            });
        }
        self.desired_min_tx = tx;
        self.required_min_rx = rx;
    }

    fn send_now(&mut self, _now: Instant) {
        self.send_due = true;
        self.next_tx = None;
    }

    /// After the transmit interval shrank, brings the next periodic packet
    /// forward so the peer is not left waiting for the old, longer interval.
    fn reschedule_if_faster(&mut self, now: Instant, before: Option<Duration>) {
        let after = self.transmit_interval();
        if self.send_due {
            return;
        }
        match (before, after) {
            (_, None) => self.next_tx = None,
            (None, Some(_)) => self.send_now(now),
            (Some(b), Some(a)) if a < b => {
                let sooner = self.jittered_interval().map(|i| now + i);
                self.next_tx = match (self.next_tx, sooner) {
                    (Some(t), Some(s)) => Some(t.min(s)),
                    (t, s) => t.or(s),
                };
            }
            _ => {}
        }
    }

    /// The transmit interval reduced by a random 0-25 % (§6.8.7), or
    /// 10-25 % when Detect Mult is 1.
    fn jittered_interval(&mut self) -> Option<Duration> {
        let interval = self.transmit_interval()?;
        let (low, high) = if self.config.detect_mult == 1 {
            (750u64, 900u64)
        } else {
            (750, 1000)
        };
        let per_mille = low + self.next_random() % (high - low + 1);
        let micros = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
        Some(Duration::from_micros(micros / 1000 * per_mille))
    }

    /// SplitMix64: a small deterministic generator for the jitter.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
