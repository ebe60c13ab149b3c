//! The central RIB task: the one owner of every neighbour's status and
//! routes. Peer tasks report to it over a channel; the control socket asks
//! it questions over another; it sends encoded UPDATEs back to peer tasks.
//!
//! Route handling (Adj-RIB-In, decision, Adj-RIB-Out, policy, reflection)
//! is `tabby_bgp`'s; this task feeds it, acts on its output (UPDATEs to
//! send, kernel routes to program) and answers queries from it.
//!
//! Graceful restart (`tabby_bgp::graceful_restart`) is wired here too: a
//! neighbour whose session drops gracefully keeps its routes stale (and
//! installed) until it is back and sent End-of-RIB, or its restart timer
//! runs out; after our own graceful restart ([`RibTask::restarting`])
//! route selection is deferred until End-of-RIB from every graceful
//! neighbour, then the FIB adopted from the previous run is reconciled
//! (what is no longer learned is removed, nothing else is touched).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tabby_bgp::graceful_restart::{
    GracefulRestartSession, PeerRestart, SelectionDeferral, negotiate,
};
use tabby_bgp::rib::{FibChange, LOCAL_PEER};
use tabby_bgp::{Notification, PathAttributes, PeerId, PeerUp, Prefix, Rib, RibConfig, State};
use tokio::sync::{mpsc, oneshot};

use crate::config::{BgpdConfig, PeerConfig, policy};
use crate::control::{NeighborStatus, ReloadReport, Request, Response, RouteStatus, Summary};
use crate::nexthop::KernelNextHops;
use crate::peer::{PeerCommand, PeerReport};

/// A question from the control socket, with where to send the answer.
pub struct ControlCall {
    /// The request.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Response>,
}

/// Starts peer tasks on the RIB task's behalf (the daemon owns sockets and
/// the runtime; the RIB task decides when).
pub trait PeerSpawner: Send {
    /// Starts a task for `peer`; returns its command channel.
    fn spawn(
        &mut self,
        config: &BgpdConfig,
        peer: &PeerConfig,
    ) -> mpsc::UnboundedSender<PeerCommand>;
    /// Re-reads the config file (for a reload).
    fn reload_config(&mut self) -> Result<BgpdConfig, String>;
    /// `peer`'s task was stopped for good (removed from the config).
    fn removed(&mut self, _peer: IpAddr) {}
}

struct Neighbor {
    id: PeerId,
    config: PeerConfig,
    commands: mpsc::UnboundedSender<PeerCommand>,
    state: State,
    state_since: Instant,
    last_error: Option<String>,
    up_since: Option<Instant>,
    /// The last error is a connection attempt's, cleared once up.
    error_is_transient: bool,
    peer_id: Option<std::net::Ipv4Addr>,
    hold_time: Option<u16>,
    /// Graceful restart as the current (or last) session negotiated it.
    graceful: Option<GracefulRestartSession>,
    /// The neighbour's graceful restart in progress, if any.
    restart: PeerRestart,
}

/// The RIB task's state.
pub struct RibTask<S: PeerSpawner> {
    config: BgpdConfig,
    spawner: S,
    rib: Rib,
    neighbors: BTreeMap<IpAddr, Neighbor>,
    fib: Option<mpsc::UnboundedSender<FibChange>>,
    fib_routes: Arc<std::sync::atomic::AtomicU64>,
    started: Instant,
    /// The kernel next-hop resolver the RIB uses (`None`: every next hop
    /// is reachable).
    next_hops: Option<KernelNextHops>,
    /// Says when the resolver's view changed.
    next_hop_changes: Option<mpsc::UnboundedReceiver<()>>,
    /// Our own graceful restart: selection deferred until End-of-RIB
    /// from every graceful neighbour (or the deferral timer).
    deferral: Option<SelectionDeferral>,
    /// Kernel routes adopted from the previous run, reconciled when the
    /// deferral ends.
    adopted: Vec<Prefix>,
    /// The FIB thread's encapsulation rules (updated on reload).
    encapsulation: Option<Arc<crate::fib::SharedEncapsulation>>,
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// Waits for a next-hop change: true for one, false once the channel
/// closed; never returns without a channel.
async fn next_hops_changed(rx: &mut Option<mpsc::UnboundedReceiver<()>>) -> bool {
    match rx {
        Some(rx) => rx.recv().await.is_some(),
        None => std::future::pending().await,
    }
}

/// The `tabby-bgp` view of a configured neighbour.
pub fn rib_peer(p: &PeerConfig) -> tabby_bgp::PeerConfig {
    let mut c = tabby_bgp::PeerConfig::new(p.address, p.as_number);
    c.route_reflector_client = p.route_reflector_client;
    c.next_hop_mode = p.next_hop_mode;
    c.allow_own_as = p.allow_own_as;
    c.import = policy(&p.import);
    c.export = policy(&p.export);
    c
}

fn rib_config(config: &BgpdConfig) -> RibConfig {
    let mut c = RibConfig::new(config.as_number, config.router_id);
    let rr = config.peers.iter().any(|p| p.route_reflector_client);
    c.cluster_id = (rr || config.cluster_id.is_some()).then(|| config.cluster_id());
    c.track_fib = config.fib;
    c
}

fn to_prefix(net: &ipnet::IpNet) -> Option<Prefix> {
    Prefix::new(net.addr(), net.prefix_len()).ok()
}

impl<S: PeerSpawner> RibTask<S> {
    /// Starts every configured neighbour. With `fib`, best-path changes
    /// go to that channel (and `fib_routes` counts what is installed).
    pub fn new(
        config: BgpdConfig,
        spawner: S,
        fib: Option<mpsc::UnboundedSender<FibChange>>,
        fib_routes: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        let rib = Rib::new(rib_config(&config));
        let mut t = RibTask {
            config: config.clone(),
            spawner,
            rib,
            neighbors: BTreeMap::new(),
            fib,
            fib_routes,
            started: Instant::now(),
            next_hops: None,
            next_hop_changes: None,
            deferral: None,
            adopted: Vec::new(),
            encapsulation: None,
        };
        for net in &config.originate {
            if let Some(p) = to_prefix(net) {
                t.rib.originate(p, PathAttributes::default());
            }
        }
        for p in &config.peers {
            t.add_neighbor(p.clone());
        }
        t
    }

    /// Makes routes whose next hop `next_hops` cannot resolve ineligible
    /// (not best, not installed, not advertised); each message on
    /// `changed` re-runs the decision process.
    pub fn with_next_hops(
        mut self,
        next_hops: KernelNextHops,
        changed: mpsc::UnboundedReceiver<()>,
    ) -> Self {
        self.rib.set_resolver(Box::new(next_hops.clone()));
        self.next_hops = Some(next_hops);
        self.next_hop_changes = Some(changed);
        self
    }

    /// The FIB thread's encapsulation rules, replaced when a reload
    /// changes `encapsulation`.
    pub fn with_encapsulation(mut self, shared: Arc<crate::fib::SharedEncapsulation>) -> Self {
        self.encapsulation = Some(shared);
        self
    }

    /// This run is a graceful restart (RFC 4724 §4.1): `adopted` are the
    /// kernel routes the previous run left. Route selection and
    /// advertisement wait until every neighbour with graceful restart sent
    /// End-of-RIB (or the longest `selectionDeferralTime` passed); then
    /// the adopted routes no longer learned are removed.
    pub fn restarting(mut self, adopted: Vec<Prefix>) -> Self {
        let waited: Vec<PeerId> = self
            .neighbors
            .values()
            .filter(|n| self.config.graceful_restart_for(&n.config).is_some())
            .map(|n| n.id)
            .collect();
        let time = self
            .config
            .peers
            .iter()
            .filter_map(|p| self.config.graceful_restart_for(p))
            .map(|g| g.core(true).selection_deferral_time)
            .max()
            .unwrap_or(Duration::ZERO);
        tracing::info!(
            adopted = adopted.len(),
            neighbours = waited.len(),
            "graceful restart: deferring route selection until End-of-RIB"
        );
        self.rib.set_deferring(true);
        self.deferral = Some(SelectionDeferral::new(Instant::now(), time, waited));
        self.adopted = adopted;
        self
    }

    /// When the earliest graceful restart timer is due.
    fn next_timer(&self) -> Option<Instant> {
        self.neighbors
            .values()
            .filter_map(|n| n.restart.poll_timeout())
            .chain(
                self.deferral
                    .as_ref()
                    .and_then(SelectionDeferral::poll_timeout),
            )
            .min()
    }

    fn handle_timers(&mut self, now: Instant) {
        for n in self.neighbors.values_mut() {
            let purge = n.restart.handle_timeout(now);
            if !purge.is_empty() {
                let gone = self.rib.purge_stale(n.id, &purge);
                tracing::info!(peer = %n.config.address, routes = gone, "graceful restart: timer expired, stale routes removed");
            }
        }
        if let Some(d) = &mut self.deferral {
            d.handle_timeout(now);
            if d.is_done() {
                tracing::warn!(
                    "graceful restart: selection deferral timer expired before End-of-RIB from every neighbour"
                );
            }
        }
    }

    /// Ends our own graceful restart once the deferral is over: releases
    /// UPDATEs and FIB changes and removes adopted routes no longer
    /// learned (returned, to send after the RIB's own queued changes so a
    /// removal never overtakes an install).
    fn end_deferral_if_done(&mut self) -> Vec<FibChange> {
        if !self
            .deferral
            .as_ref()
            .is_some_and(SelectionDeferral::is_done)
        {
            return Vec::new();
        }
        self.deferral = None;
        self.rib.set_deferring(false);
        let learned: std::collections::HashSet<Prefix> = self
            .rib
            .fib_routes()
            .into_iter()
            .map(|c| c.prefix)
            .collect();
        let removals: Vec<FibChange> = std::mem::take(&mut self.adopted)
            .into_iter()
            .filter(|p| !learned.contains(p))
            .map(|prefix| FibChange {
                prefix,
                next_hops: Vec::new(),
            })
            .collect();
        tracing::info!(
            removed = removals.len(),
            "graceful restart: route selection done, adopted kernel routes reconciled"
        );
        removals
    }

    fn add_neighbor(&mut self, p: PeerConfig) {
        let stale = stale_routes_time(&self.config, &p);
        let commands = self.spawner.spawn(&self.config, &p);
        let id = self.rib.add_peer(rib_peer(&p));
        self.neighbors.insert(
            p.address,
            Neighbor {
                id,
                config: p,
                commands,
                state: State::Idle,
                state_since: Instant::now(),
                last_error: None,
                up_since: None,
                error_is_transient: false,
                peer_id: None,
                hold_time: None,
                graceful: None,
                restart: PeerRestart::new(stale),
            },
        );
    }

    /// Runs until both channels close.
    pub async fn run(
        mut self,
        mut reports: mpsc::Receiver<PeerReport>,
        mut control: mpsc::Receiver<ControlCall>,
    ) {
        loop {
            tokio::select! {
                r = reports.recv() => match r {
                    Some(r) => {
                        self.handle_report(r);
                        // Take whatever else is queued before flushing, so
                        // bursts of UPDATEs are exported in big batches.
                        let mut n = 0;
                        while n < 256 {
                            match reports.try_recv() {
                                Ok(r) => self.handle_report(r),
                                Err(_) => break,
                            }
                            n += 1;
                        }
                        self.flush();
                    }
                    None => return,
                },
                c = control.recv() => match c {
                    Some(c) => {
                        let answer = self.handle_request(c.request);
                        self.flush();
                        let _ = c.reply.send(answer);
                    }
                    None => return,
                },
                () = sleep_until(self.next_timer()) => {
                    self.handle_timers(Instant::now());
                    self.flush();
                }
                more = next_hops_changed(&mut self.next_hop_changes) => {
                    if more {
                        // Coalesce a burst into one re-evaluation.
                        if let Some(rx) = &mut self.next_hop_changes {
                            while rx.try_recv().is_ok() {}
                        }
                        self.rib.revalidate();
                        self.flush();
                    } else {
                        tracing::warn!("next-hop tracking stopped; reachability is frozen");
                        self.next_hop_changes = None;
                    }
                }
            }
        }
    }

    /// Sends every peer its pending UPDATEs and the FIB its changes.
    fn flush(&mut self) {
        let removals = self.end_deferral_if_done();
        for id in self.rib.peers_with_updates() {
            let Some(n) = self.neighbors.values().find(|n| n.id == id) else {
                continue;
            };
            match self.rib.take_updates(id) {
                Ok(msgs) if !msgs.is_empty() => {
                    let _ = n.commands.send(PeerCommand::Send(msgs));
                }
                Ok(_) => {}
                Err(e) => tracing::error!(peer = %n.config.address, "cannot encode UPDATEs: {e}"),
            }
        }
        while let Some(change) = self.rib.poll_fib_change() {
            if let Some(fib) = &self.fib {
                let _ = fib.send(change);
            }
        }
        for change in removals {
            if let Some(fib) = &self.fib {
                let _ = fib.send(change);
            }
        }
    }

    fn handle_report(&mut self, report: PeerReport) {
        match report {
            PeerReport::State { peer, state } => {
                if let Some(n) = self.neighbors.get_mut(&peer) {
                    n.state = state;
                    n.state_since = Instant::now();
                }
            }
            PeerReport::Up {
                peer,
                negotiated,
                local,
            } => {
                tracing::info!(%peer, peer_id = %negotiated.peer_id, hold = negotiated.hold_time, "session established");
                let Some(n) = self.neighbors.get_mut(&peer) else {
                    return;
                };
                n.up_since = Some(Instant::now());
                if n.error_is_transient {
                    n.last_error = None;
                    n.error_is_transient = false;
                }
                n.peer_id = Some(negotiated.peer_id);
                n.hold_time = Some(negotiated.hold_time);
                let id = n.id;
                let local_gr = self
                    .config
                    .graceful_restart_for(&n.config)
                    .map(|g| g.core(false).capability(&negotiated.families));
                let graceful = negotiate(local_gr.as_ref(), &negotiated);
                let purge = n.restart.session_up(Instant::now(), graceful.as_ref());
                if !purge.is_empty() {
                    let gone = self.rib.purge_stale(id, &purge);
                    tracing::info!(%peer, routes = gone, "graceful restart: the neighbour kept no forwarding state, stale routes removed");
                }
                if let Some(d) = &mut self.deferral {
                    d.session_up(id, graceful.as_ref());
                }
                n.graceful = graceful;
                self.rib.peer_up(id, PeerUp::new(&negotiated, local.ip()));
            }
            PeerReport::Update { peer, update } => {
                let Some(n) = self.neighbors.get_mut(&peer) else {
                    return;
                };
                for issue in &update.issues {
                    let msg = format!(
                        "RFC 7606 {} for attribute {} ({}): {}",
                        issue.action,
                        issue.type_code,
                        tabby_bgp::attribute::type_name(issue.type_code),
                        issue.reason
                    );
                    tracing::warn!(%peer, "{msg}");
                    n.last_error = Some(msg);
                    n.error_is_transient = false;
                }
                let id = n.id;
                if let Some(family) = update.end_of_rib() {
                    if n.restart.end_of_rib(family) {
                        let gone = self.rib.purge_stale(id, &[family]);
                        tracing::info!(%peer, %family, routes = gone, "graceful restart: End-of-RIB, routes not refreshed removed");
                    }
                    if let Some(d) = &mut self.deferral {
                        d.end_of_rib(id, family);
                    }
                    return;
                }
                self.rib.apply_update(id, &update);
            }
            PeerReport::RouteRefresh { peer } => {
                if let Some(n) = self.neighbors.get(&peer) {
                    self.rib.refresh_peer(n.id);
                }
            }
            PeerReport::Down {
                peer,
                reason,
                cause,
            } => {
                if let Some(n) = self.neighbors.get_mut(&peer) {
                    n.last_error = Some(reason);
                    n.error_is_transient = false;
                    let was_established = n.up_since.take().is_some();
                    let id = n.id;
                    if !was_established {
                        // A connection that never got Established: nothing
                        // changes for routes (a graceful restart in
                        // progress keeps its timer and stale routes).
                        if !n.restart.is_restarting() {
                            self.rib.peer_down(id);
                        }
                        return;
                    }
                    match n
                        .restart
                        .session_down(Instant::now(), n.graceful.as_ref(), &cause)
                    {
                        Some(families) => {
                            tracing::info!(%peer, ?families, "graceful restart: keeping the neighbour's routes (stale) while it restarts");
                            self.rib.peer_down_retaining(id, &families);
                        }
                        None => self.rib.peer_down(id),
                    }
                }
            }
            PeerReport::Error { peer, error } => {
                tracing::debug!(%peer, "{error}");
                if let Some(n) = self.neighbors.get_mut(&peer)
                    && n.up_since.is_none()
                    && (n.last_error.is_none() || n.error_is_transient)
                {
                    n.last_error = Some(error);
                    n.error_is_transient = true;
                }
            }
        }
    }

    fn handle_request(&mut self, request: Request) -> Response {
        match request {
            Request::Neighbors => Response::Neighbors(
                self.neighbors
                    .values()
                    .map(|n| {
                        let mut st = n.status(self.config.as_number, self.rib.peer_stats(n.id));
                        st.stale_routes = self.rib.stale_count(n.id) as u64;
                        st
                    })
                    .collect(),
            ),
            Request::Routes { prefix } => {
                let filter = match prefix.as_deref().map(parse_query) {
                    Some(Err(e)) => return Response::Error(e),
                    Some(Ok(q)) => Some(q),
                    None => None,
                };
                let mut out = Vec::new();
                for (p, paths) in self.rib.routes() {
                    if filter.is_some_and(|q: Prefix| !q.contains(p) && !p.contains(q)) {
                        continue;
                    }
                    for path in paths.iter().filter(|x| !x.is_filtered()) {
                        let from = (path.peer != LOCAL_PEER)
                            .then(|| self.rib.peer_address(path.peer))
                            .flatten();
                        let mut r = route_status(p, &path.attrs, from);
                        r.best = path.is_best();
                        r.unresolved = from.is_some()
                            && r.next_hop.is_some_and(|nh| {
                                self.next_hops.as_ref().is_some_and(|k| !k.reachable(nh))
                            });
                        r.multipath = path.is_multipath();
                        r.stale = path.is_stale();
                        out.push(r);
                    }
                }
                out.sort_by(|a, b| a.prefix.cmp(&b.prefix).then(b.best.cmp(&a.best)));
                Response::Routes(out)
            }
            Request::Summary => {
                let loc = self.rib.loc_rib();
                let paths: usize = loc.iter().map(|(_, p)| p.len()).sum();
                Response::Summary(Summary {
                    as_number: self.config.as_number,
                    router_id: self.config.router_id,
                    loc_rib_prefixes: loc.len() as u64,
                    loc_rib_paths: paths as u64,
                    peers: self.neighbors.len() as u64,
                    established: self
                        .neighbors
                        .values()
                        .filter(|n| n.state == State::Established)
                        .count() as u64,
                    uptime_secs: self.started.elapsed().as_secs(),
                    fib_routes: self
                        .config
                        .fib
                        .then(|| self.fib_routes.load(std::sync::atomic::Ordering::Relaxed)),
                })
            }
            Request::Reload => match self.spawner.reload_config() {
                Ok(new) => match self.reload(new) {
                    Ok(r) => Response::Reloaded(r),
                    Err(e) => Response::Error(e),
                },
                Err(e) => Response::Error(e),
            },
        }
    }

    /// Applies a new config: neighbours whose settings did not change keep
    /// their sessions; changed ones restart; removed ones get a Cease;
    /// originated prefixes are announced/withdrawn by difference.
    fn reload(&mut self, new: BgpdConfig) -> Result<ReloadReport, String> {
        if rib_config(&new) != *self.rib.config() {
            return Err(
                "asNumber, routerId, clusterId, fib or the use of route reflection changed: restart tabby bgpd to apply; the running config is kept"
                    .into(),
            );
        }
        if new.listen != self.config.listen || new.control_socket != self.config.control_socket {
            return Err(
                "listen and controlSocket changes need a restart; the running config is kept"
                    .into(),
            );
        }
        let mut report = ReloadReport::default();
        let new_peers: BTreeMap<IpAddr, &PeerConfig> =
            new.peers.iter().map(|p| (p.address, p)).collect();
        let old: Vec<IpAddr> = self.neighbors.keys().copied().collect();
        for addr in old {
            if new_peers
                .get(&addr)
                .is_some_and(|p| **p == self.neighbors[&addr].config)
            {
                report.unchanged.push(addr);
                continue;
            }
            // Only routing settings changed (policy, next hop mode, RR
            // client): the session stays; the RIB re-exports, and a changed
            // import policy asks the peer for a ROUTE-REFRESH.
            if let (Some(p), Some(n)) = (new_peers.get(&addr), self.neighbors.get_mut(&addr))
                && same_session(p, &n.config)
            {
                n.config = (*p).clone();
                if self.rib.update_peer(n.id, rib_peer(p)) {
                    let _ = n.commands.send(PeerCommand::RouteRefresh);
                }
                report.updated.push(addr);
                continue;
            }
            if let Some(n) = self.neighbors.remove(&addr) {
                // Cease / Peer De-configured, or Other Configuration Change.
                let sub = if new_peers.contains_key(&addr) { 6 } else { 3 };
                let _ = n
                    .commands
                    .send(PeerCommand::Stop(Notification::new(6, sub, Vec::new())));
                self.rib.remove_peer(n.id);
                if let Some(d) = &mut self.deferral {
                    d.peer_removed(n.id);
                }
            }
            if new_peers.contains_key(&addr) {
                report.restarted.push(addr);
            } else {
                self.spawner.removed(addr);
                report.removed.push(addr);
            }
        }
        let old_originate: Vec<Prefix> =
            self.config.originate.iter().filter_map(to_prefix).collect();
        let new_originate: Vec<Prefix> = new.originate.iter().filter_map(to_prefix).collect();
        if new.encapsulation != self.config.encapsulation
            && let Some(shared) = &self.encapsulation
        {
            shared.set(new.encapsulation.clone());
        }
        self.config = new;
        for p in old_originate.iter().filter(|p| !new_originate.contains(p)) {
            self.rib.withdraw_originated(*p);
        }
        for p in new_originate.iter().filter(|p| !old_originate.contains(p)) {
            self.rib.originate(*p, PathAttributes::default());
        }
        for p in self.config.peers.clone() {
            if !self.neighbors.contains_key(&p.address) {
                if !report.restarted.contains(&p.address) {
                    report.added.push(p.address);
                }
                self.add_neighbor(p);
            }
        }
        Ok(report)
    }
}

/// How long a restarted neighbour's stale routes wait for its End-of-RIB.
fn stale_routes_time(config: &BgpdConfig, p: &PeerConfig) -> Duration {
    config
        .graceful_restart_for(p)
        .map_or(Duration::from_secs(360), |g| {
            g.core(false).stale_routes_time
        })
}

/// True when two neighbour configs differ at most in routing settings
/// (import/export policy, next hop mode, RR client, allowOwnAs) and the
/// description.
fn same_session(a: &PeerConfig, b: &PeerConfig) -> bool {
    let strip = |p: &PeerConfig| {
        let mut p = p.clone();
        p.import.clear();
        p.export.clear();
        p.next_hop_mode = Default::default();
        p.route_reflector_client = false;
        p.allow_own_as = 0;
        p.description = None;
        p
    };
    strip(a) == strip(b)
}

impl Neighbor {
    fn status(&self, local_as: u32, stats: Option<tabby_bgp::rib::PeerStats>) -> NeighborStatus {
        let stats = stats.unwrap_or_default();
        NeighborStatus {
            address: self.config.address,
            port: self.config.port(),
            as_number: self.config.as_number,
            session_type: if self.config.as_number == local_as {
                "iBGP"
            } else {
                "eBGP"
            }
            .to_owned(),
            state: self.state.to_string(),
            uptime_secs: Some(
                self.up_since
                    .unwrap_or(self.state_since)
                    .elapsed()
                    .as_secs(),
            ),
            router_id: self.up_since.and(self.peer_id),
            hold_time: self.up_since.and(self.hold_time),
            last_error: self.last_error.clone(),
            prefixes_received: stats.received as u64,
            prefixes_accepted: stats.accepted as u64,
            prefixes_advertised: stats.advertised as u64,
            route_reflector_client: self.config.route_reflector_client,
            description: self.config.description.clone(),
            graceful_restart: if self.restart.is_restarting() {
                Some("restarting".to_owned())
            } else {
                self.graceful.as_ref().map(|_| "negotiated".to_owned())
            },
            stale_routes: 0,
        }
    }
}
fn parse_query(q: &str) -> Result<Prefix, String> {
    if let Ok(net) = q.parse::<ipnet::IpNet>() {
        return Prefix::new(net.addr(), net.prefix_len()).map_err(|e| format!("{q}: {e}"));
    }
    let addr: IpAddr = q
        .parse()
        .map_err(|_| format!("`{q}` is neither a prefix nor an address"))?;
    let len = if addr.is_ipv4() { 32 } else { 128 };
    Prefix::new(addr, len).map_err(|e| format!("{q}: {e}"))
}

fn route_status(prefix: Prefix, a: &PathAttributes, peer: Option<IpAddr>) -> RouteStatus {
    RouteStatus {
        prefix: format!("{}/{}", prefix.addr(), prefix.len()),
        next_hop: a.next_hop.map(IpAddr::V4).or(a.mp_next_hop.map(|m| m.addr)),
        as_path: a.as_path_or_empty().to_string(),
        origin: a.origin.map_or_else(|| "?".to_owned(), |o| o.to_string()),
        med: a.med,
        local_pref: a.local_pref,
        communities: a.communities.iter().map(ToString::to_string).collect(),
        large_communities: a
            .large_communities
            .iter()
            .map(ToString::to_string)
            .collect(),
        originator_id: a.originator_id,
        cluster_list: a.cluster_list.clone(),
        best: false,
        unresolved: false,
        multipath: false,
        stale: false,
        peer,
    }
}
