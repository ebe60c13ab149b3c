//! Graceful restart (RFC 4724, with the RFC 8538 notification option),
//! sans-IO.
//!
//! Owns the decisions and timers of graceful restart; the routes
//! themselves stay in [`crate::rib::Rib`] (stale marking, purge, deferral)
//! and the driver wires the two together:
//!
//! - [`GracefulRestartConfig`]: what we advertise (restart time, R bit,
//!   per-family F bit, N bit) and [`GracefulRestartConfig::capability`].
//! - [`negotiate`]: what a session agreed on ([`GracefulRestartSession`]):
//!   both sides advertised the capability; the families the peer listed
//!   that the session also carries.
//! - [`PeerRestart`]: the *receiving speaker* side (RFC 4724 §4.2) for one
//!   peer. When the session goes down without a NOTIFICATION (or with one
//!   when both sides set the N bit, RFC 8538 §4, except Cease / Hard
//!   Reset), the peer's routes are kept stale and the restart timer runs
//!   (the peer's advertised restart time). When the peer comes back, the
//!   families it no longer preserves (F bit clear, or no capability at
//!   all) are purged at once; the others stay stale until the peer's
//!   End-of-RIB for that family or the stale-routes timer, then whatever
//!   was not refreshed is purged. The restart timer expiring purges all.
//! - [`SelectionDeferral`]: the *restarting speaker* side (RFC 4724 §4.1):
//!   route selection and advertisement wait until every peer that
//!   negotiated graceful restart (and is not itself restarting) sent
//!   End-of-RIB for each family, or the selection deferral timer expires.
//!
//! Driving a peer (`rib`, `id`, `restart: PeerRestart`):
//!
//! ```text
//! Event::Down(reason)      => match restart.session_down(now, gr, &reason) {
//!                                 Some(fams) => rib.peer_down_retaining(id, &fams),
//!                                 None => rib.peer_down(id),
//!                             }
//! Event::Established(n)    => rib.purge_stale(id, &restart.session_up(now, gr));
//!                             rib.peer_up(id, ..)
//! Event::Update(u) if u.end_of_rib() == Some(f)
//!                          => if restart.end_of_rib(f) { rib.purge_stale(id, &[f]); }
//! poll_timeout() is due    => rib.purge_stale(id, &restart.handle_timeout(now))
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::capability::{GracefulRestart, GracefulRestartFamily};
use crate::fsm::{DownReason, Negotiated};
use crate::message::Notification;
use crate::nlri::Family;
use crate::rib::PeerId;

/// Cease (6) / Hard Reset (9): never graceful (RFC 8538 §3).
const CEASE: u8 = 6;
const HARD_RESET: u8 = 9;

/// What we advertise in the graceful restart capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// Seconds the peer should keep our routes after our session drops
    /// (0..=4095).
    pub restart_time: u16,
    /// The R bit: we have just restarted (set only on the sessions
    /// brought up right after a restart).
    pub restarting: bool,
    /// The F bit for every family: our forwarding state survived the
    /// restart (the kernel routes were kept).
    pub forwarding_preserved: bool,
    /// The N bit (RFC 8538): a NOTIFICATION also leads to a graceful
    /// restart (except Cease / Hard Reset).
    pub notification: bool,
    /// How long a restarted peer's stale routes are kept while waiting for
    /// its End-of-RIB.
    pub stale_routes_time: Duration,
    /// How long a restarting speaker defers selection waiting for
    /// End-of-RIB from its peers.
    pub selection_deferral_time: Duration,
}

impl GracefulRestartConfig {
    /// Restart time `restart_time` seconds, not restarting, no N bit;
    /// stale routes kept 360 s after the peer is back; selection deferred
    /// at most 360 s (the RFC 4724 §4.1 suggestions).
    pub fn new(restart_time: u16) -> Self {
        GracefulRestartConfig {
            restart_time: restart_time.min(0x0fff),
            restarting: false,
            forwarding_preserved: false,
            notification: false,
            stale_routes_time: Duration::from_secs(360),
            selection_deferral_time: Duration::from_secs(360),
        }
    }

    /// The capability for a session carrying `families`.
    pub fn capability(&self, families: &[Family]) -> GracefulRestart {
        GracefulRestart {
            restarting: self.restarting,
            notification: self.notification,
            restart_time: self.restart_time.min(0x0fff),
            families: families
                .iter()
                .map(|f| {
                    let (afi, safi) = f.afi_safi();
                    GracefulRestartFamily {
                        afi,
                        safi,
                        forwarding_preserved: self.forwarding_preserved,
                    }
                })
                .collect(),
        }
    }
}

/// Graceful restart as one session negotiated it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GracefulRestartSession {
    /// The peer's restart time.
    pub peer_restart_time: Duration,
    /// The peer set the R bit: it has just restarted.
    pub peer_restarting: bool,
    /// Families the peer listed that the session carries, with the peer's
    /// F bit for each.
    pub families: Vec<(Family, bool)>,
    /// Every family the session carries: after our own restart we wait
    /// for the peer's End-of-RIB for each of them, also when the peer
    /// listed none (a helper-only peer such as FRR's default mode or
    /// BIRD's `graceful restart aware` sends the capability with no
    /// families, and still sends End-of-RIB; RFC 4724 §4.1 waits for every
    /// peer that advertised the capability).
    pub session_families: Vec<Family>,
    /// Both sides set the N bit (RFC 8538).
    pub notification: bool,
}

impl GracefulRestartSession {
    /// The families whose routes the peer asks us to keep.
    pub fn retained_families(&self) -> Vec<Family> {
        self.families.iter().map(|(f, _)| *f).collect()
    }

    /// The families for which the peer kept its forwarding state.
    pub fn preserved_families(&self) -> Vec<Family> {
        self.families
            .iter()
            .filter(|(_, fwd)| *fwd)
            .map(|(f, _)| *f)
            .collect()
    }
}

/// Graceful restart of a session: `None` unless both sides advertised the
/// capability (`local` is what we sent).
pub fn negotiate(
    local: Option<&GracefulRestart>,
    negotiated: &Negotiated,
) -> Option<GracefulRestartSession> {
    let local = local?;
    let peer = negotiated.peer_graceful_restart.as_ref()?;
    let families = peer
        .families
        .iter()
        .filter_map(|f| {
            let family = Family::from_afi_safi(f.afi, f.safi)?;
            negotiated
                .families
                .contains(&family)
                .then_some((family, f.forwarding_preserved))
        })
        .collect();
    Some(GracefulRestartSession {
        peer_restart_time: Duration::from_secs(u64::from(peer.restart_time)),
        peer_restarting: peer.restarting,
        families,
        session_families: negotiated.families.clone(),
        notification: local.notification && peer.notification,
    })
}

/// True when a session that went down for `reason` is a graceful restart
/// of the peer (RFC 4724 §4.2: the TCP session terminated; RFC 8538 §4:
/// also a NOTIFICATION other than Cease / Hard Reset when both sides set
/// the N bit). An operator stop is never graceful.
pub fn is_graceful(reason: &DownReason, session: &GracefulRestartSession) -> bool {
    let hard = |n: &Notification| n.code == CEASE && n.subcode == HARD_RESET;
    match reason {
        DownReason::ConnectionLost => true,
        DownReason::HoldTimerExpired => session.notification,
        DownReason::NotificationReceived(n) => session.notification && !hard(n),
        DownReason::NotificationSent { notification, .. } => {
            session.notification && !hard(notification)
        }
        _ => false,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing retained.
    Idle,
    /// The session is down; the routes of `families` are stale until the
    /// peer is back or `until`.
    Restarting {
        families: Vec<Family>,
        until: Instant,
    },
    /// The session is back; stale routes of `families` wait for the
    /// peer's End-of-RIB for each, or `until`.
    AwaitingEndOfRib {
        families: Vec<Family>,
        until: Instant,
    },
}

/// The receiving-speaker state of one peer (RFC 4724 §4.2). See the
/// module documentation for how to drive it.
#[derive(Clone, Debug)]
pub struct PeerRestart {
    stale_routes_time: Duration,
    phase: Phase,
}

impl PeerRestart {
    /// No restart in progress; stale routes are kept at most
    /// `stale_routes_time` after the peer is back.
    pub fn new(stale_routes_time: Duration) -> Self {
        PeerRestart {
            stale_routes_time,
            phase: Phase::Idle,
        }
    }

    /// True while the peer's routes are kept stale (session down, or back
    /// but End-of-RIB not yet received for every family).
    pub fn is_restarting(&self) -> bool {
        self.phase != Phase::Idle
    }

    /// The Established session went down. Returns the families whose
    /// routes to keep stale (`None`: withdraw every route, as without
    /// graceful restart). `session` is what that session negotiated.
    pub fn session_down(
        &mut self,
        now: Instant,
        session: Option<&GracefulRestartSession>,
        reason: &DownReason,
    ) -> Option<Vec<Family>> {
        let Some(s) = session.filter(|s| is_graceful(reason, s)) else {
            self.phase = Phase::Idle;
            return None;
        };
        let families = s.retained_families();
        self.phase = Phase::Restarting {
            families: families.clone(),
            until: now + s.peer_restart_time,
        };
        Some(families)
    }

    /// The session is Established again. Returns the families whose stale
    /// routes to purge now (the peer did not preserve forwarding for
    /// them, or no longer does graceful restart): call
    /// [`crate::rib::Rib::purge_stale`] with them before
    /// [`crate::rib::Rib::peer_up`].
    pub fn session_up(
        &mut self,
        now: Instant,
        session: Option<&GracefulRestartSession>,
    ) -> Vec<Family> {
        let families = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => return Vec::new(),
            Phase::Restarting { families, .. } | Phase::AwaitingEndOfRib { families, .. } => {
                families
            }
        };
        let preserved = session.map(|s| s.preserved_families()).unwrap_or_default();
        let (keep, purge): (Vec<Family>, Vec<Family>) =
            families.into_iter().partition(|f| preserved.contains(f));
        if !keep.is_empty() {
            self.phase = Phase::AwaitingEndOfRib {
                families: keep,
                until: now + self.stale_routes_time,
            };
        }
        purge
    }

    /// The peer sent End-of-RIB for `family`. Returns true when that
    /// family's stale routes are to be purged now.
    pub fn end_of_rib(&mut self, family: Family) -> bool {
        let Phase::AwaitingEndOfRib { families, .. } = &mut self.phase else {
            return false;
        };
        let Some(i) = families.iter().position(|f| *f == family) else {
            return false;
        };
        families.remove(i);
        if families.is_empty() {
            self.phase = Phase::Idle;
        }
        true
    }

    /// When [`PeerRestart::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Idle => None,
            Phase::Restarting { until, .. } | Phase::AwaitingEndOfRib { until, .. } => Some(*until),
        }
    }

    /// Fires a due timer (restart timer or stale-routes timer). Returns
    /// the families whose stale routes to purge.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Family> {
        match &self.phase {
            Phase::Restarting { until, .. } | Phase::AwaitingEndOfRib { until, .. }
                if *until <= now => {}
            _ => return Vec::new(),
        }
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Restarting { families, .. } | Phase::AwaitingEndOfRib { families, .. } => {
                families
            }
            Phase::Idle => Vec::new(),
        }
    }
}

/// Selection deferral of a restarting speaker (RFC 4724 §4.1): done when
/// every peer sent End-of-RIB for each family it negotiated graceful
/// restart for (peers without graceful restart, or restarting themselves,
/// are not waited for), or when the deferral timer expires.
#[derive(Clone, Debug)]
pub struct SelectionDeferral {
    until: Instant,
    /// Per peer: `None` until its session is up, then the families whose
    /// End-of-RIB is still missing.
    waiting: BTreeMap<PeerId, Option<Vec<Family>>>,
    done: bool,
}

impl SelectionDeferral {
    /// Deferral started at `now` for at most `time`, waiting for `peers`.
    pub fn new(now: Instant, time: Duration, peers: impl IntoIterator<Item = PeerId>) -> Self {
        let waiting: BTreeMap<PeerId, Option<Vec<Family>>> =
            peers.into_iter().map(|p| (p, None)).collect();
        SelectionDeferral {
            until: now + time,
            done: waiting.is_empty(),
            waiting,
        }
    }

    /// True once selection may run (End-of-RIB from every peer, or the
    /// timer expired).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// A peer's session is up: wait for its End-of-RIB for the families of
    /// `session`, or not at all when it did not negotiate graceful restart
    /// or is restarting itself.
    pub fn session_up(&mut self, peer: PeerId, session: Option<&GracefulRestartSession>) {
        match session {
            Some(s) if !s.peer_restarting && !s.session_families.is_empty() => {
                if self.waiting.contains_key(&peer) {
                    self.waiting.insert(peer, Some(s.session_families.clone()));
                }
            }
            _ => {
                self.waiting.remove(&peer);
            }
        }
        self.check();
    }

    /// The peer sent End-of-RIB for `family`.
    pub fn end_of_rib(&mut self, peer: PeerId, family: Family) {
        if let Some(Some(families)) = self.waiting.get_mut(&peer) {
            families.retain(|f| *f != family);
            if families.is_empty() {
                self.waiting.remove(&peer);
            }
        }
        self.check();
    }

    /// The peer was removed from the configuration.
    pub fn peer_removed(&mut self, peer: PeerId) {
        self.waiting.remove(&peer);
        self.check();
    }

    /// When [`SelectionDeferral::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.done).then_some(self.until)
    }

    /// Fires the deferral timer if due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.until {
            self.done = true;
        }
    }

    fn check(&mut self) {
        if self.waiting.is_empty() {
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(fwd: bool, notification: bool) -> GracefulRestartSession {
        GracefulRestartSession {
            peer_restart_time: Duration::from_secs(120),
            peer_restarting: false,
            families: vec![(Family::Ipv4Unicast, fwd), (Family::Ipv6Unicast, fwd)],
            session_families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            notification,
        }
    }

    #[test]
    fn only_connection_loss_is_graceful_without_the_n_bit() {
        let s = session(true, false);
        assert!(is_graceful(&DownReason::ConnectionLost, &s));
        assert!(!is_graceful(&DownReason::HoldTimerExpired, &s));
        let n = Notification::new(6, 2, vec![]);
        assert!(!is_graceful(
            &DownReason::NotificationReceived(n.clone()),
            &s
        ));
        let s = session(true, true);
        assert!(is_graceful(&DownReason::HoldTimerExpired, &s));
        assert!(is_graceful(
            &DownReason::NotificationReceived(n.clone()),
            &s
        ));
        let hard = Notification::new(6, 9, vec![]);
        assert!(!is_graceful(&DownReason::NotificationReceived(hard), &s));
        assert!(!is_graceful(&DownReason::ManualStop(n), &s));
    }

    #[test]
    fn peer_restart_phases() {
        let t0 = Instant::now();
        let mut r = PeerRestart::new(Duration::from_secs(360));
        let kept = r.session_down(t0, Some(&session(true, false)), &DownReason::ConnectionLost);
        assert_eq!(kept, Some(vec![Family::Ipv4Unicast, Family::Ipv6Unicast]));
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(120)));
        assert!(r.handle_timeout(t0 + Duration::from_secs(119)).is_empty());
        // Back with forwarding kept for IPv4 only: IPv6 is purged at once.
        let mut back = session(true, false);
        back.families[1].1 = false;
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(r.session_up(t1, Some(&back)), vec![Family::Ipv6Unicast]);
        assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(360)));
        assert!(!r.end_of_rib(Family::Ipv6Unicast));
        assert!(r.end_of_rib(Family::Ipv4Unicast));
        assert!(!r.is_restarting());
        // Restart timer expiry purges everything.
        r.session_down(t1, Some(&back), &DownReason::ConnectionLost);
        assert_eq!(
            r.handle_timeout(t1 + Duration::from_secs(120)),
            vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
        );
        // Back without graceful restart: purge all.
        r.session_down(t1, Some(&back), &DownReason::ConnectionLost);
        assert_eq!(r.session_up(t1, None).len(), 2);
        // Not graceful: nothing kept.
        assert_eq!(r.session_down(t1, None, &DownReason::ConnectionLost), None);
    }

    #[test]
    fn deferral_waits_for_every_graceful_peer() {
        let t0 = Instant::now();
        let mut d = SelectionDeferral::new(t0, Duration::from_secs(60), [PeerId(1), PeerId(2)]);
        d.session_up(PeerId(1), Some(&session(false, false)));
        d.session_up(PeerId(2), None);
        assert!(!d.is_done());
        d.end_of_rib(PeerId(1), Family::Ipv4Unicast);
        assert!(!d.is_done());
        d.end_of_rib(PeerId(1), Family::Ipv6Unicast);
        assert!(d.is_done());
        let mut d = SelectionDeferral::new(t0, Duration::from_secs(60), [PeerId(1)]);
        d.handle_timeout(t0 + Duration::from_secs(59));
        assert!(!d.is_done());
        d.handle_timeout(t0 + Duration::from_secs(60));
        assert!(d.is_done());
    }

    #[test]
    fn deferral_waits_for_a_helper_only_peer_that_lists_no_family() {
        // FRR's default (helper) mode: the capability with no families.
        let t0 = Instant::now();
        let mut helper = session(false, false);
        helper.families.clear();
        helper.session_families = vec![Family::Ipv4Unicast];
        let mut d = SelectionDeferral::new(t0, Duration::from_secs(60), [PeerId(1)]);
        d.session_up(PeerId(1), Some(&helper));
        assert!(
            !d.is_done(),
            "a helper-only peer's End-of-RIB is waited for"
        );
        d.end_of_rib(PeerId(1), Family::Ipv4Unicast);
        assert!(d.is_done());
    }
}
