//! Routing information bases and the route engine that connects them.
//!
//! Owns [`Rib`]: the peers as the routing process sees them, the
//! [`LocRib`] (all paths, best flagged), one [`AdjRibOut`] per peer, the
//! attribute interner, import processing (RFC 7606 treat-as-withdraw, AS
//! loop detection with an allow-own-AS count, RFC 4456 ORIGINATOR_ID /
//! CLUSTER_LIST loop checks, import policy), the decision process run per
//! changed prefix ([`crate::decision`]), and export (iBGP/eBGP rules, route
//! reflection, NO_EXPORT/NO_ADVERTISE, next hop self, export policy). It
//! produces encoded UPDATEs per peer ([`Rib::take_updates`]) and best-path
//! changes for a FIB ([`Rib::poll_fib_change`]). Sessions are not its
//! concern: [`crate::fsm`] owns those, and the driver tells the `Rib` when
//! a peer comes up or goes down.

mod adj_rib_in;
mod adj_rib_out;
pub(crate) mod fast_hash;
mod loc_rib;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use adj_rib_in::AdjRibIn;
pub use adj_rib_out::AdjRibOut;
use loc_rib::PathRef;
pub use loc_rib::{LocRib, Path, PathList};

use crate::attribute::{AsPath, Community, MpNextHop, Origin, PathAttributes};
use crate::decision::{AllReachable, Candidate, DEFAULT_LOCAL_PREF, NextHopResolver, select};
use crate::error::EncodeError;
use crate::fsm::Negotiated;
use crate::message::{CodecContext, Update};
use crate::nlri::{Family, Prefix};
use crate::policy::{self, PeerType, Policy, RouteContext, RouteSource, Verdict};

/// Identifies a peer inside one [`Rib`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

/// The pseudo-peer of routes this speaker originates.
pub const LOCAL_PEER: PeerId = PeerId(0);

/// Speaker-wide routing parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RibConfig {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Route reflector cluster id; `Some` makes this speaker a route
    /// reflector for peers marked `route_reflector_client` (RFC 4456).
    pub cluster_id: Option<Ipv4Addr>,
    /// Largest multipath set reported to the FIB (1 = no ECMP).
    pub max_paths: usize,
    /// Queue best-path changes for [`Rib::poll_fib_change`].
    pub track_fib: bool,
}

impl RibConfig {
    /// Defaults: no route reflection, up to 8 paths, no FIB tracking.
    pub fn new(local_as: u32, router_id: Ipv4Addr) -> Self {
        RibConfig {
            local_as,
            router_id,
            cluster_id: None,
            max_paths: 8,
            track_fib: false,
        }
    }
}

/// Next hop handling towards a peer (Calico's `nextHopMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NextHopMode {
    /// Self towards eBGP peers, unchanged towards iBGP peers.
    #[default]
    Auto,
    /// Always this speaker's address.
    #[serde(rename = "Self")]
    SelfAddress,
    /// Never changed (except for routes we originate).
    Keep,
}

/// A peer as the routing process sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's address (last decision tie-breaker).
    pub address: IpAddr,
    /// The peer's AS.
    pub remote_as: u32,
    /// The peer is a route reflector client (needs [`RibConfig::cluster_id`]).
    pub route_reflector_client: bool,
    /// Next hop handling for routes sent to this peer.
    pub next_hop_mode: NextHopMode,
    /// How many times our own AS may appear in a received AS_PATH
    /// (Calico's `numAllowedLocalASNumbers`; 0 = standard loop detection).
    pub allow_own_as: u8,
    /// Import policy.
    pub import: Policy,
    /// Export policy.
    pub export: Policy,
}

impl PeerConfig {
    /// A peer with default handling and accept-all policies.
    pub fn new(address: IpAddr, remote_as: u32) -> Self {
        PeerConfig {
            address,
            remote_as,
            route_reflector_client: false,
            next_hop_mode: NextHopMode::Auto,
            allow_own_as: 0,
            import: Policy::default(),
            export: Policy::default(),
        }
    }
}

/// What the routing process needs once a session is Established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerUp {
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    /// The codec context of the session.
    pub codec: CodecContext,
    /// Negotiated families.
    pub families: Vec<Family>,
    /// Our IPv4 address for next hop self.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Our IPv6 address for next hop self.
    pub next_hop_v6: Option<Ipv6Addr>,
}

impl PeerUp {
    /// From a negotiated session and our local address on its connection.
    pub fn new(n: &Negotiated, local_address: IpAddr) -> Self {
        let (v4, v6) = match local_address {
            IpAddr::V4(a) => (Some(a), None),
            IpAddr::V6(a) => (a.to_ipv4_mapped(), Some(a)),
        };
        PeerUp {
            router_id: n.peer_id,
            codec: n.codec,
            families: n.families.clone(),
            next_hop_v4: v4,
            next_hop_v6: v6,
        }
    }
}

/// Route counts for one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PeerStats {
    /// Prefixes received (accepted and filtered).
    pub received: usize,
    /// Prefixes accepted by import policy and loop checks.
    pub accepted: usize,
    /// Prefixes advertised (as of the last flush).
    pub advertised: usize,
}

/// A change of the forwarding state of one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibChange {
    /// The prefix.
    pub prefix: Prefix,
    /// Next hops of the multipath set; empty = remove our route.
    pub next_hops: Vec<IpAddr>,
}

/// What one UPDATE did to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UpdateOutcome {
    /// Prefixes accepted.
    pub accepted: usize,
    /// Prefixes stored but filtered (policy or loop detection).
    pub filtered: usize,
    /// Prefixes withdrawn (including treat-as-withdraw).
    pub withdrawn: usize,
}

/// Source attributes (kept alive so the pointer key stays unique) and the
/// exported attributes before export policy.
type ExportCacheEntry = (Arc<PathAttributes>, Option<Arc<PathAttributes>>);

/// A prefix's state before a change, to tell what changed.
struct Snapshot {
    best: Option<(PeerId, *const PathAttributes)>,
    fib: Vec<IpAddr>,
}

#[derive(Debug)]
struct PeerEntry {
    config: PeerConfig,
    ebgp: bool,
    up: Option<PeerUp>,
    out: AdjRibOut,
    received: usize,
    accepted: usize,
    /// Paths kept stale through the peer's graceful restart.
    stale: usize,
    /// The peer's BGP identifier from its last session (used for its
    /// stale routes while it restarts).
    router_id: Option<Ipv4Addr>,
    /// Export attribute cache: source attributes (by pointer, kept alive
    /// here) and source peer -> exported attributes before export policy.
    export_cache: HashMap<(usize, PeerId), ExportCacheEntry, fast_hash::SeededState>,
}

/// The route engine. See the module documentation.
pub struct Rib {
    config: RibConfig,
    peers: Vec<Option<PeerEntry>>,
    loc: LocRib,
    interner: HashSet<Arc<PathAttributes>, fast_hash::SeededState>,
    interner_sweep_at: usize,
    resolver: Box<dyn NextHopResolver + Send>,
    fib: VecDeque<FibChange>,
    /// Selection deferral (RFC 4724 §4.1): hold UPDATEs and FIB changes.
    deferring: bool,
}

impl std::fmt::Debug for Rib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rib")
            .field("config", &self.config)
            .field("prefixes", &self.loc.len())
            .field("attribute_sets", &self.interner.len())
            .finish()
    }
}

impl Rib {
    /// An empty RIB; every next hop counts as reachable until
    /// [`Rib::set_resolver`] says otherwise.
    pub fn new(config: RibConfig) -> Self {
        Rib {
            config,
            peers: vec![None],
            loc: LocRib::new(),
            interner: HashSet::default(),
            interner_sweep_at: 1024,
            resolver: Box::new(AllReachable),
            fib: VecDeque::new(),
            deferring: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RibConfig {
        &self.config
    }

    /// The Loc-RIB.
    pub fn loc_rib(&self) -> &LocRib {
        &self.loc
    }

    /// Number of distinct interned attribute sets.
    pub fn attribute_sets(&self) -> usize {
        self.interner.len()
    }

    /// Installs the next-hop resolver and re-runs the decision process for
    /// every prefix.
    pub fn set_resolver(&mut self, resolver: Box<dyn NextHopResolver + Send>) {
        self.resolver = resolver;
        self.revalidate();
    }

    /// Re-runs the decision process for every prefix (call when next-hop
    /// reachability changed).
    pub fn revalidate(&mut self) {
        let all: Vec<Prefix> = self.loc.prefixes_where(|_| true);
        for p in all {
            let before = self.snapshot(p);
            self.decide_and_export(p, before);
        }
    }

    /// Adds a peer (down until [`Rib::peer_up`]).
    pub fn add_peer(&mut self, config: PeerConfig) -> PeerId {
        let ebgp = config.remote_as != self.config.local_as;
        let entry = PeerEntry {
            config,
            ebgp,
            up: None,
            out: AdjRibOut::default(),
            received: 0,
            accepted: 0,
            stale: 0,
            router_id: None,
            export_cache: HashMap::default(),
        };
        if let Some(i) = self.peers.iter().skip(1).position(Option::is_none) {
            self.peers[i + 1] = Some(entry);
            PeerId(i as u32 + 1)
        } else {
            self.peers.push(Some(entry));
            PeerId(self.peers.len() as u32 - 1)
        }
    }

    /// Removes a peer and its routes.
    pub fn remove_peer(&mut self, id: PeerId) {
        self.peer_down(id);
        if let Some(slot) = self
            .peers
            .get_mut(id.0 as usize)
            .filter(|_| id != LOCAL_PEER)
        {
            *slot = None;
        }
    }

    /// Replaces a peer's configuration. Export changes are applied at once
    /// (the Adj-RIB-Out diff sends only what changed). Returns true when
    /// the import policy changed: the driver should then ask the peer for
    /// a ROUTE-REFRESH so the new policy sees every route again.
    pub fn update_peer(&mut self, id: PeerId, config: PeerConfig) -> bool {
        let local_as = self.config.local_as;
        let Some(e) = self.peer_mut(id) else {
            return false;
        };
        let import_changed = e.config.import != config.import;
        // Whether routes *from* this peer may be reflected depends on its
        // client flag and session kind: then every peer's exports change.
        let others_affected = e.config.route_reflector_client != config.route_reflector_client
            || e.config.remote_as != config.remote_as;
        e.ebgp = config.remote_as != local_as;
        e.config = config;
        e.export_cache.clear();
        let targets: Vec<PeerId> = if others_affected {
            (1..self.peers.len()).map(|i| PeerId(i as u32)).collect()
        } else {
            vec![id]
        };
        for t in targets {
            if let Some(e) = self.peer_mut(t) {
                e.export_cache.clear();
                if e.up.is_some() {
                    self.export_all_to(t);
                }
            }
        }
        import_changed
    }

    /// The peer's configuration.
    pub fn peer_config(&self, id: PeerId) -> Option<&PeerConfig> {
        self.peer(id).map(|e| &e.config)
    }

    /// Route counts for a peer.
    pub fn peer_stats(&self, id: PeerId) -> Option<PeerStats> {
        self.peer(id).map(|e| PeerStats {
            received: e.received,
            accepted: e.accepted,
            advertised: e.out.len(),
        })
    }

    /// A peer's received routes.
    pub fn adj_rib_in(&self, id: PeerId) -> AdjRibIn<'_> {
        AdjRibIn {
            loc: &self.loc,
            peer: id,
        }
    }

    /// A peer's advertised routes.
    pub fn adj_rib_out(&self, id: PeerId) -> Option<&AdjRibOut> {
        self.peer(id).map(|e| &e.out)
    }

    fn peer(&self, id: PeerId) -> Option<&PeerEntry> {
        self.peers.get(id.0 as usize).and_then(Option::as_ref)
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut PeerEntry> {
        self.peers.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    /// The session with `id` is Established: queue the whole table for it,
    /// followed by End-of-RIB.
    pub fn peer_up(&mut self, id: PeerId, up: PeerUp) {
        let Some(e) = self.peer_mut(id) else { return };
        let families = up.families.clone();
        e.router_id = Some(up.router_id);
        e.up = Some(up);
        e.out.clear();
        e.export_cache.clear();
        self.export_all_to(id);
        if let Some(e) = self.peer_mut(id) {
            e.out.queue_end_of_rib(&families);
        }
    }

    /// The session with `id` went down: its routes are withdrawn and its
    /// Adj-RIB-Out forgotten.
    pub fn peer_down(&mut self, id: PeerId) {
        if id == LOCAL_PEER {
            return;
        }
        let Some(e) = self.peer_mut(id) else { return };
        e.up = None;
        e.out.clear();
        e.export_cache.clear();
        e.received = 0;
        e.accepted = 0;
        e.stale = 0;
        for p in self.loc.prefixes_of(id) {
            let before = self.snapshot(p);
            self.loc.remove(p, id);
            self.decide_and_export(p, before);
        }
        self.loc.shrink_to_fit();
    }

    /// The session with `id` went down and the peer is restarting
    /// gracefully (RFC 4724 §4.2): its routes in `families` stay, marked
    /// stale and still used for forwarding, until [`Rib::purge_stale`] or
    /// a refresh from the restarted session replaces them; its routes in
    /// other families are withdrawn. Its Adj-RIB-Out is forgotten.
    pub fn peer_down_retaining(&mut self, id: PeerId, families: &[Family]) {
        if id == LOCAL_PEER {
            return;
        }
        let Some(e) = self.peer_mut(id) else { return };
        e.up = None;
        e.out.clear();
        e.export_cache.clear();
        for p in self.loc.prefixes_of(id) {
            if !families.contains(&p.family()) {
                self.remove_path(p, id);
                continue;
            }
            let Some(path) = self.loc.paths(p).iter().find(|x| x.peer == id).cloned() else {
                continue;
            };
            if path.is_stale() {
                continue;
            }
            let before = self.snapshot(p);
            self.loc.upsert(p, path.into_stale());
            if let Some(e) = self.peer_mut(id) {
                e.stale += 1;
            }
            self.decide_and_export(p, before);
        }
    }

    /// Withdraws the routes from `id` in `families` that are still stale
    /// (not refreshed since the peer restarted). Returns how many.
    pub fn purge_stale(&mut self, id: PeerId, families: &[Family]) -> usize {
        if families.is_empty() || self.stale_count(id) == 0 {
            return 0;
        }
        let stale = self
            .loc
            .prefixes_where(|v| v.iter().any(|x| x.peer == id && x.is_stale()));
        let mut n = 0;
        for p in stale.into_iter().filter(|p| families.contains(&p.family())) {
            self.remove_path(p, id);
            n += 1;
        }
        if n > 0 {
            self.loc.shrink_to_fit();
        }
        n
    }

    /// Number of stale routes from `id`.
    pub fn stale_count(&self, id: PeerId) -> usize {
        self.peer(id).map_or(0, |e| e.stale)
    }

    /// Selection deferral of a restarting speaker (RFC 4724 §4.1). While
    /// on, the decision process still runs but nothing leaves the RIB:
    /// [`Rib::take_updates`] returns nothing (changes and End-of-RIB
    /// markers wait, coalesced, in each Adj-RIB-Out) and
    /// [`Rib::poll_fib_change`] returns nothing (changes wait in order).
    /// Turning it off releases them.
    pub fn set_deferring(&mut self, on: bool) {
        self.deferring = on;
    }

    /// True while selection is deferred.
    pub fn is_deferring(&self) -> bool {
        self.deferring
    }

    /// The whole forwarding state: every prefix with a usable route
    /// learned from a peer, with its multipath next hops (for reconciling
    /// a FIB after a restart).
    pub fn fib_routes(&self) -> Vec<FibChange> {
        self.loc
            .prefixes_where(|v| v.best().is_some())
            .into_iter()
            .filter_map(|prefix| {
                let next_hops = self.fib_next_hops(prefix);
                (!next_hops.is_empty()).then_some(FibChange { prefix, next_hops })
            })
            .collect()
    }

    /// The peer asked for our routes again (ROUTE-REFRESH).
    pub fn refresh_peer(&mut self, id: PeerId) {
        if let Some(e) = self.peer_mut(id) {
            e.out.resend_all();
            let fams =
                e.up.as_ref()
                    .map(|u| u.families.clone())
                    .unwrap_or_default();
            e.out.queue_end_of_rib(&fams);
        }
    }

    /// Encoded UPDATEs waiting for peer `id` (empty when down or nothing
    /// changed). Send them in order.
    pub fn take_updates(&mut self, id: PeerId) -> Result<Vec<Vec<u8>>, EncodeError> {
        if self.deferring {
            return Ok(Vec::new());
        }
        let Some(e) = self.peer_mut(id) else {
            return Ok(Vec::new());
        };
        let Some(up) = &e.up else {
            return Ok(Vec::new());
        };
        let codec = up.codec;
        e.export_cache.clear();
        e.out.flush(&codec)
    }

    /// Peers with UPDATEs waiting.
    pub fn peers_with_updates(&self) -> Vec<PeerId> {
        if self.deferring {
            return Vec::new();
        }
        self.peers
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let e = e.as_ref()?;
                (e.up.is_some() && e.out.has_pending()).then_some(PeerId(i as u32))
            })
            .collect()
    }

    /// Next change for the FIB (with [`RibConfig::track_fib`]).
    pub fn poll_fib_change(&mut self) -> Option<FibChange> {
        if self.deferring {
            return None;
        }
        self.fib.pop_front()
    }

    /// Originates `prefix` with `attrs` (origin, communities, MED...). An
    /// absent ORIGIN becomes IGP and an absent AS_PATH empty; the next hop
    /// is filled per peer on export.
    pub fn originate(&mut self, prefix: Prefix, mut attrs: PathAttributes) {
        attrs.origin.get_or_insert(Origin::Igp);
        attrs.as_path.get_or_insert_with(AsPath::empty);
        let attrs = self.intern(Arc::new(attrs));
        self.set_path(prefix, Path::new(LOCAL_PEER, attrs, false));
    }

    /// Stops originating `prefix`.
    pub fn withdraw_originated(&mut self, prefix: Prefix) {
        self.remove_path(prefix, LOCAL_PEER);
    }

    /// Prefixes this speaker originates.
    pub fn originated(&self) -> Vec<Prefix> {
        self.adj_rib_in(LOCAL_PEER).iter().map(|(p, _)| p).collect()
    }

    /// Applies an UPDATE received from peer `id`: RFC 7606
    /// treat-as-withdraw, loop checks, import policy, decision, export.
    pub fn apply_update(&mut self, id: PeerId, update: &Update) -> UpdateOutcome {
        let mut out = UpdateOutcome::default();
        let Some(e) = self.peer(id) else { return out };
        if e.up.is_none() {
            return out;
        }
        for p in update.withdrawn_prefixes() {
            self.remove_path(p, id);
            out.withdrawn += 1;
        }
        if update.nlri.is_empty() && update.mp_reach.as_ref().is_none_or(|m| m.nlri.is_empty()) {
            return out;
        }
        if update.treat_as_withdraw() {
            for p in update.announced() {
                self.remove_path(p, id);
                out.withdrawn += 1;
            }
            return out;
        }
        let attrs = self.intern(update.attributes.clone());
        let loop_free = self.import_loop_check(id, &attrs).is_none();
        let (peer_type, import_empty) = {
            let e = self.peer(id).map(|e| (e.ebgp, e.config.import.is_empty()));
            let (ebgp, empty) = e.unwrap_or((false, true));
            (if ebgp { PeerType::Ebgp } else { PeerType::Ibgp }, empty)
        };
        // Touch every prefix's slot first: the lookups are independent, so
        // the CPU overlaps their cache misses instead of taking them one by
        // one inside the per-prefix work below.
        if update.nlri.len() > 1 {
            self.loc.touch_v4(&update.nlri);
        }
        for prefix in update.announced() {
            let path = if !loop_free {
                Path::new(id, attrs.clone(), true)
            } else if import_empty {
                Path::new(id, attrs.clone(), false)
            } else {
                let verdict = self.peer(id).map(|e| {
                    e.config.import.evaluate(&RouteContext {
                        prefix,
                        attrs: &attrs,
                        source: RouteSource::RemotePeers,
                        peer_type,
                    })
                });
                match verdict {
                    Some(Verdict::Reject) | None => Path::new(id, attrs.clone(), true),
                    Some(Verdict::Accept) => Path::new(id, attrs.clone(), false),
                    Some(Verdict::Modify(m)) => {
                        let nh = self.peer(id).and_then(|e| self_next_hop(e, prefix));
                        let modified = policy::apply_modifications(&attrs, &m, nh);
                        Path::new(id, self.intern(Arc::new(modified)), false)
                    }
                }
            };
            if path.is_filtered() {
                out.filtered += 1;
            } else {
                out.accepted += 1;
            }
            self.set_path(prefix, path);
        }
        out
    }

    /// Why routes with these attributes from `id` must not be used, if so.
    pub fn import_loop_check(&self, id: PeerId, attrs: &PathAttributes) -> Option<&'static str> {
        let e = self.peer(id)?;
        let path = attrs.as_path_or_empty();
        if path.count(self.config.local_as) > usize::from(e.config.allow_own_as) {
            return Some("AS_PATH contains our AS");
        }
        if e.ebgp {
            if path.first_asn().is_some_and(|a| a != e.config.remote_as) {
                return Some("AS_PATH does not start with the peer's AS");
            }
        } else {
            if attrs.originator_id == Some(self.config.router_id) {
                return Some("ORIGINATOR_ID is our router id");
            }
            if let Some(c) = self.config.cluster_id {
                if attrs.cluster_list.contains(&c) {
                    return Some("CLUSTER_LIST contains our cluster id");
                }
            }
        }
        None
    }

    fn intern(&mut self, a: Arc<PathAttributes>) -> Arc<PathAttributes> {
        if let Some(existing) = self.interner.get(&a) {
            return existing.clone();
        }
        if self.interner.len() >= self.interner_sweep_at {
            self.interner.retain(|a| Arc::strong_count(a) > 1);
            self.interner_sweep_at = (self.interner.len() * 2).max(1024);
        }
        self.interner.insert(a.clone());
        a
    }

    fn remove_path(&mut self, prefix: Prefix, peer: PeerId) {
        let before = self.snapshot(prefix);
        if let Some(old) = self.loc.remove(prefix, peer) {
            self.count(peer, Some(&old), None);
            self.decide_and_export(prefix, before);
        }
    }

    fn set_path(&mut self, prefix: Prefix, path: Path) {
        // Fast path for the bulk of a table transfer: a new IPv4 prefix
        // (one table probe instead of five). Same outcome as the general
        // path below: the only path is best and multipath when usable.
        let path = match prefix {
            Prefix::V4(k) if !self.config.track_fib && !path.is_filtered() => {
                let usable = path.peer == LOCAL_PEER
                    || Self::path_next_hop(prefix, &path.attrs)
                        .and_then(|nh| self.resolver.resolve(nh))
                        .is_some();
                let peer = path.peer;
                match self.loc.insert_vacant_v4(k, path, usable) {
                    Ok(()) => {
                        self.count(peer, None, Some(false));
                        if usable {
                            self.export_prefix(prefix);
                        }
                        return;
                    }
                    Err(path) => path,
                }
            }
            _ => path,
        };
        let before = self.snapshot(prefix);
        let peer = path.peer;
        let filtered = path.is_filtered();
        let old = self.loc.upsert(prefix, path);
        self.count(peer, old.as_ref(), Some(filtered));
        self.decide_and_export(prefix, before);
    }

    /// The best path and FIB next hops of `prefix` before a change.
    fn snapshot(&self, prefix: Prefix) -> Snapshot {
        let best = self
            .loc
            .view(prefix)
            .best()
            .map(|p| (p.peer, Arc::as_ptr(p.attrs)));
        let fib = if self.config.track_fib {
            self.fib_next_hops(prefix)
        } else {
            Vec::new()
        };
        Snapshot { best, fib }
    }

    fn count(&mut self, peer: PeerId, old: Option<&Path>, new_filtered: Option<bool>) {
        let Some(e) = self.peer_mut(peer) else { return };
        if let Some(o) = old {
            e.received -= 1;
            if !o.is_filtered() {
                e.accepted -= 1;
            }
            if o.is_stale() {
                e.stale = e.stale.saturating_sub(1);
            }
        }
        if let Some(f) = new_filtered {
            e.received += 1;
            if !f {
                e.accepted += 1;
            }
        }
    }

    /// The next hop a path resolves through.
    fn path_next_hop(prefix: Prefix, attrs: &PathAttributes) -> Option<IpAddr> {
        match prefix {
            Prefix::V4(_) => attrs
                .next_hop
                .map(IpAddr::V4)
                .or_else(|| attrs.mp_next_hop.map(|n| n.addr)),
            Prefix::V6(_) => attrs.mp_next_hop.map(|n| n.addr),
        }
    }

    /// Runs the decision process for `prefix`, records the result, and
    /// propagates a changed best path to every peer and the FIB.
    fn decide_and_export(&mut self, prefix: Prefix, before: Snapshot) {
        let paths = self.loc.view(prefix);
        // (best index, multipath bitmask) over `paths`.
        let selection: Option<(usize, u64)> = if paths.len() == 1 {
            // Fast path: one path (most prefixes of a full table).
            let usable = paths
                .get(0)
                .is_some_and(|p| !p.is_filtered() && self.candidate(prefix, &p).igp_cost.is_some());
            usable.then_some((0, 1))
        } else {
            let cands: Vec<(usize, Candidate<'_>)> = paths
                .iter()
                .enumerate()
                .filter(|(i, p)| !p.is_filtered() && *i < 64)
                .map(|(i, p)| (i, self.candidate(prefix, &p)))
                .collect();
            let only: Vec<Candidate<'_>> = cands.iter().map(|(_, c)| *c).collect();
            select(&only).map(|s| {
                let mut mask = 1u64 << cands[s.best].0;
                let extra = self.config.max_paths.max(1) - 1;
                for i in s.multipath.iter().filter(|i| **i != s.best).take(extra) {
                    mask |= 1u64 << cands[*i].0;
                }
                (cands[s.best].0, mask)
            })
        };
        let new_best = selection
            .and_then(|(b, _)| paths.get(b))
            .map(|p| (p.peer, Arc::as_ptr(p.attrs)));
        self.loc.set_selection(prefix, selection);
        if self.config.track_fib {
            let new_mp = self.fib_next_hops(prefix);
            if new_mp != before.fib {
                self.fib.push_back(FibChange {
                    prefix,
                    next_hops: new_mp,
                });
            }
        }
        if new_best != before.best {
            self.export_prefix(prefix);
        }
    }

    fn fib_next_hops(&self, prefix: Prefix) -> Vec<IpAddr> {
        let paths = self.loc.view(prefix);
        if paths.iter().any(|p| p.is_best() && p.peer == LOCAL_PEER) {
            return Vec::new();
        }
        let mut v: Vec<IpAddr> = paths
            .iter()
            .filter(|p| p.is_multipath() && p.peer != LOCAL_PEER)
            .filter_map(|p| Self::path_next_hop(prefix, p.attrs))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn candidate<'a>(&'a self, prefix: Prefix, p: &PathRef<'a>) -> Candidate<'a> {
        let local = p.peer == LOCAL_PEER;
        let peer = self.peer(p.peer);
        let igp_cost = if local {
            Some(0)
        } else {
            Self::path_next_hop(prefix, p.attrs).and_then(|nh| self.resolver.resolve(nh))
        };
        Candidate {
            attrs: p.attrs,
            local,
            ebgp: peer.is_some_and(|e| e.ebgp),
            igp_cost,
            peer_router_id: peer
                .and_then(|e| e.up.as_ref().map(|u| u.router_id).or(e.router_id))
                .unwrap_or(self.config.router_id),
            peer_address: peer
                .map(|e| e.config.address)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        }
    }

    /// Recomputes what every up peer should get for `prefix`.
    fn export_prefix(&mut self, prefix: Prefix) {
        for i in 1..self.peers.len() {
            let id = PeerId(i as u32);
            if self.peer(id).is_some_and(|e| e.up.is_some()) {
                let attrs = self.export_for(id, prefix);
                if let Some(e) = self.peer_mut(id) {
                    e.out.set(prefix, attrs);
                }
            }
        }
    }

    fn export_all_to(&mut self, id: PeerId) {
        let prefixes: Vec<Prefix> = self.loc.prefixes_where(|v| v.best().is_some());
        let advertised: Vec<Prefix> = self
            .peer(id)
            .map(|e| e.out.iter().map(|(p, _)| p).collect())
            .unwrap_or_default();
        for p in prefixes.iter().chain(advertised.iter()) {
            let attrs = self.export_for(id, *p);
            if let Some(e) = self.peer_mut(id) {
                e.out.set(*p, attrs);
            }
        }
    }

    /// The attributes to advertise to peer `to` for `prefix`, or `None`.
    fn export_for(&mut self, to: PeerId, prefix: Prefix) -> Option<Arc<PathAttributes>> {
        let best = self.loc.view(prefix).best()?;
        if best.peer == to {
            return None;
        }
        let best = best.to_path();
        let family = prefix.family();
        let target = self.peer(to)?;
        let up = target.up.as_ref()?;
        if !up.families.contains(&family) {
            return None;
        }
        let key = (Arc::as_ptr(&best.attrs) as usize, best.peer);
        let base = match target.export_cache.get(&key) {
            Some((_, cached)) => cached.clone(),
            None => {
                let computed = self
                    .export_base(to, prefix, &best)
                    .map(|a| self.intern(Arc::new(a)));
                if let Some(e) = self.peer_mut(to) {
                    e.export_cache
                        .insert(key, (best.attrs.clone(), computed.clone()));
                }
                computed
            }
        }?;
        let target = self.peer(to)?;
        if target.config.export.is_empty() {
            return Some(base);
        }
        let ctx = RouteContext {
            prefix,
            attrs: &base,
            source: if best.peer == LOCAL_PEER {
                RouteSource::Local
            } else {
                RouteSource::RemotePeers
            },
            peer_type: if target.ebgp {
                PeerType::Ebgp
            } else {
                PeerType::Ibgp
            },
        };
        match target.config.export.evaluate(&ctx) {
            Verdict::Reject => None,
            Verdict::Accept => Some(base),
            Verdict::Modify(m) => {
                let nh = self_next_hop(target, prefix);
                let a = policy::apply_modifications(&base, &m, nh);
                Some(self.intern(Arc::new(a)))
            }
        }
    }

    /// Export rules without policy: split horizon, well-known communities,
    /// iBGP re-advertisement and route reflection, eBGP path and next-hop
    /// handling.
    fn export_base(&self, to: PeerId, prefix: Prefix, best: &Path) -> Option<PathAttributes> {
        if best.peer == to {
            return None;
        }
        let target = self.peer(to)?;
        let a = &best.attrs;
        if a.has_community(Community::NO_ADVERTISE) {
            return None;
        }
        let local = best.peer == LOCAL_PEER;
        let source = if local {
            None
        } else {
            Some(self.peer(best.peer)?)
        };
        if target.ebgp
            && (a.has_community(Community::NO_EXPORT)
                || a.has_community(Community::NO_EXPORT_SUBCONFED))
        {
            return None;
        }
        let mut reflect = false;
        if let Some(src) = source {
            if !src.ebgp && !target.ebgp {
                // iBGP -> iBGP only as a route reflector (RFC 4456 §6).
                self.config.cluster_id?;
                if !src.config.route_reflector_client && !target.config.route_reflector_client {
                    return None;
                }
                reflect = true;
            }
        }
        let mut out = (**a).clone();
        let self_nh = self_next_hop(target, prefix);
        let set_self = |out: &mut PathAttributes| -> Option<()> {
            match (prefix, self_nh?) {
                (Prefix::V4(_), IpAddr::V4(v4)) => {
                    out.next_hop = Some(v4);
                    out.mp_next_hop = None;
                }
                (_, addr) => {
                    out.mp_next_hop = Some(MpNextHop {
                        addr,
                        link_local: None,
                    })
                }
            }
            Some(())
        };
        if target.ebgp {
            out.as_path
                .get_or_insert_with(AsPath::empty)
                .prepend(self.config.local_as, 1);
            out.local_pref = None;
            out.originator_id = None;
            out.cluster_list.clear();
            if source.is_some_and(|s| s.ebgp) {
                // MED is not passed from one neighbouring AS to another.
                out.med = None;
            }
            let keep = target.config.next_hop_mode == NextHopMode::Keep
                && Self::path_next_hop(prefix, &out).is_some();
            if !keep {
                set_self(&mut out)?;
            }
        } else {
            out.local_pref.get_or_insert(DEFAULT_LOCAL_PREF);
            if reflect {
                if let Some(src) = source {
                    let id = src.up.as_ref().map(|u| u.router_id).or(src.router_id)?;
                    out.originator_id.get_or_insert(id);
                }
                if let Some(c) = self.config.cluster_id {
                    out.cluster_list.insert(0, c);
                }
            }
            let force_self = target.config.next_hop_mode == NextHopMode::SelfAddress && !reflect;
            if local || force_self || Self::path_next_hop(prefix, &out).is_none() {
                set_self(&mut out)?;
            }
        }
        Some(out)
    }

    /// Every route in the Loc-RIB with its paths, for introspection.
    pub fn routes(&self) -> impl Iterator<Item = (Prefix, PathList<'_>)> + '_ {
        self.loc.iter()
    }

    /// The configured address of a peer.
    pub fn peer_address(&self, id: PeerId) -> Option<IpAddr> {
        self.peer(id).map(|e| e.config.address)
    }
}

fn self_next_hop(target: &PeerEntry, prefix: Prefix) -> Option<IpAddr> {
    let up = target.up.as_ref()?;
    match prefix {
        Prefix::V4(_) => up
            .next_hop_v4
            .map(IpAddr::V4)
            .or(up.next_hop_v6.map(IpAddr::V6)),
        Prefix::V6(_) => up.next_hop_v6.map(IpAddr::V6),
    }
}
