//! The central RIB task: the one owner of every neighbour's status and
//! routes. Peer tasks report to it over a channel; the control socket asks
//! it questions over another; it sends encoded UPDATEs back to peer tasks.
//!
//! Route handling (Adj-RIB-In, decision, Adj-RIB-Out, policy, reflection)
//! is `tabby_bgp`'s; this task feeds it, acts on its output (UPDATEs to
//! send, kernel routes to program) and answers queries from it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tabby_bgp::{
    AsPath, CodecContext, Negotiated, Notification, Origin, PathAttributes, Prefix, State,
    UpdateBuilder,
};
use tokio::sync::{mpsc, oneshot};

use crate::config::{BgpdConfig, PeerConfig};
use crate::control::{NeighborStatus, ReloadReport, Request, Response, RouteStatus, Summary};
use crate::peer::{PeerCommand, PeerReport};

/// A question from the control socket, with where to send the answer.
pub struct ControlCall {
    /// The request.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Response>,
}

/// Starts and stops peer tasks on the RIB task's behalf (the daemon owns
/// sockets and the runtime; the RIB task decides when).
pub trait PeerSpawner: Send {
    /// Starts a task for `peer`; returns its command channel.
    fn spawn(&mut self, config: &BgpdConfig, peer: &PeerConfig) -> mpsc::Sender<PeerCommand>;
    /// Re-reads the config file (for a reload).
    fn reload_config(&mut self) -> Result<BgpdConfig, String>;
}

struct Established {
    codec: CodecContext,
    local: SocketAddr,
    negotiated: Box<Negotiated>,
    since: Instant,
}

struct Neighbor {
    config: PeerConfig,
    commands: mpsc::Sender<PeerCommand>,
    state: State,
    state_since: Instant,
    last_error: Option<String>,
    up: Option<Established>,
    adj_in: HashMap<Prefix, Arc<PathAttributes>>,
    advertised: HashSet<Prefix>,
}

/// The RIB task's state.
pub struct RibTask<S: PeerSpawner> {
    config: BgpdConfig,
    spawner: S,
    neighbors: BTreeMap<IpAddr, Neighbor>,
    started: Instant,
}

impl<S: PeerSpawner> RibTask<S> {
    /// Starts every configured neighbour.
    pub fn new(config: BgpdConfig, mut spawner: S) -> Self {
        let mut neighbors = BTreeMap::new();
        for p in &config.peers {
            let commands = spawner.spawn(&config, p);
            neighbors.insert(p.address, Neighbor::new(p.clone(), commands));
        }
        RibTask {
            config,
            spawner,
            neighbors,
            started: Instant::now(),
        }
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
                    Some(r) => self.handle_report(r),
                    None => return,
                },
                c = control.recv() => match c {
                    Some(c) => {
                        let answer = self.handle_request(c.request);
                        let _ = c.reply.send(answer);
                    }
                    None => return,
                },
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
                let codec = negotiated.codec;
                if let Some(n) = self.neighbors.get_mut(&peer) {
                    n.up = Some(Established {
                        codec,
                        local,
                        negotiated,
                        since: Instant::now(),
                    });
                }
                self.send_initial(peer);
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
                }
                let withdraw_all = update.treat_as_withdraw();
                for p in update.withdrawn_prefixes() {
                    n.adj_in.remove(&p);
                }
                let attrs = update.attributes.clone();
                for p in update.announced() {
                    if withdraw_all {
                        n.adj_in.remove(&p);
                    } else {
                        n.adj_in.insert(p, attrs.clone());
                    }
                }
            }
            PeerReport::RouteRefresh { peer } => self.send_initial(peer),
            PeerReport::Down { peer, reason } => {
                if let Some(n) = self.neighbors.get_mut(&peer) {
                    n.last_error = Some(reason);
                    n.up = None;
                    n.adj_in.clear();
                    n.advertised.clear();
                }
            }
            PeerReport::Error { peer, error } => {
                tracing::debug!(%peer, "{error}");
                if let Some(n) = self.neighbors.get_mut(&peer)
                    && n.up.is_none()
                {
                    n.last_error = Some(error);
                }
            }
        }
    }

    /// Sends a newly established (or refreshing) neighbour our routes.
    fn send_initial(&mut self, peer: IpAddr) {
        let local_as = self.config.as_number;
        let Some(n) = self.neighbors.get_mut(&peer) else {
            return;
        };
        let Some(up) = &n.up else { return };
        let ebgp = n.config.as_number != local_as;
        let mut attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(if ebgp {
                AsPath::from_sequence([local_as])
            } else {
                AsPath::empty()
            }),
            local_pref: (!ebgp).then_some(100),
            ..PathAttributes::default()
        };
        if let IpAddr::V4(a) = up.local.ip() {
            attrs.next_hop = Some(a);
        }
        let attrs = Arc::new(attrs);
        let mut b = UpdateBuilder::new(up.codec);
        let mut now_advertised = HashSet::new();
        for net in &self.config.originate {
            if let Ok(p) = Prefix::new(net.addr(), net.prefix_len())
                && p.family() == tabby_bgp::Family::Ipv4Unicast
            {
                b.announce(&attrs, p);
                now_advertised.insert(p);
            }
        }
        for p in n.advertised.difference(&now_advertised) {
            b.withdraw(*p);
        }
        n.advertised = now_advertised;
        if b.is_empty() {
            return;
        }
        match b.build() {
            Ok(msgs) => {
                let _ = n.commands.try_send(PeerCommand::Send(msgs));
            }
            Err(e) => tracing::error!(%peer, "cannot encode UPDATE: {e}"),
        }
    }

    fn handle_request(&mut self, request: Request) -> Response {
        match request {
            Request::Neighbors => Response::Neighbors(
                self.neighbors
                    .values()
                    .map(|n| n.status(self.config.as_number))
                    .collect(),
            ),
            Request::Routes { prefix } => {
                let filter = match prefix.as_deref().map(parse_query) {
                    Some(Err(e)) => return Response::Error(e),
                    Some(Ok(q)) => Some(q),
                    None => None,
                };
                let mut out = Vec::new();
                for (addr, n) in &self.neighbors {
                    for (p, a) in &n.adj_in {
                        if filter.is_some_and(|q: Prefix| !q.contains(*p) && *p != q) {
                            continue;
                        }
                        out.push(route_status(*p, a, Some(*addr)));
                    }
                }
                out.sort_by(|a, b| a.prefix.cmp(&b.prefix));
                Response::Routes(out)
            }
            Request::Summary => {
                let paths: u64 = self.neighbors.values().map(|n| n.adj_in.len() as u64).sum();
                Response::Summary(Summary {
                    as_number: self.config.as_number,
                    router_id: self.config.router_id,
                    loc_rib_prefixes: paths,
                    loc_rib_paths: paths,
                    peers: self.neighbors.len() as u64,
                    established: self
                        .neighbors
                        .values()
                        .filter(|n| n.state == State::Established)
                        .count() as u64,
                    uptime_secs: self.started.elapsed().as_secs(),
                    fib_routes: None,
                })
            }
            Request::Reload => match self.spawner.reload_config() {
                Ok(new) => Response::Reloaded(self.reload(new)),
                Err(e) => Response::Error(e),
            },
        }
    }

    /// Applies a new config: neighbours whose settings did not change keep
    /// their sessions; changed ones restart; removed ones get a Cease.
    fn reload(&mut self, new: BgpdConfig) -> ReloadReport {
        let mut report = ReloadReport::default();
        let global_changed =
            new.as_number != self.config.as_number || new.router_id != self.config.router_id;
        let originate_changed = new.originate != self.config.originate;
        let new_peers: BTreeMap<IpAddr, &PeerConfig> =
            new.peers.iter().map(|p| (p.address, p)).collect();
        let old: Vec<IpAddr> = self.neighbors.keys().copied().collect();
        for addr in old {
            let keep = new_peers
                .get(&addr)
                .is_some_and(|p| **p == self.neighbors[&addr].config)
                && !global_changed;
            if keep {
                report.unchanged.push(addr);
                continue;
            }
            if let Some(n) = self.neighbors.remove(&addr) {
                // Cease / Peer De-configured or Other Configuration Change.
                let sub = if new_peers.contains_key(&addr) { 6 } else { 3 };
                let _ =
                    n.commands
                        .try_send(PeerCommand::Stop(Notification::new(6, sub, Vec::new())));
            }
            if new_peers.contains_key(&addr) {
                report.restarted.push(addr);
            } else {
                report.removed.push(addr);
            }
        }
        self.config = new;
        for p in self.config.peers.clone() {
            if !self.neighbors.contains_key(&p.address) {
                let commands = self.spawner.spawn(&self.config, &p);
                if !report.restarted.contains(&p.address) {
                    report.added.push(p.address);
                }
                self.neighbors.insert(p.address, Neighbor::new(p, commands));
            }
        }
        if originate_changed {
            let up: Vec<IpAddr> = report.unchanged.clone();
            for a in up {
                self.send_initial(a);
            }
        }
        report
    }
}

impl Neighbor {
    fn new(config: PeerConfig, commands: mpsc::Sender<PeerCommand>) -> Self {
        Neighbor {
            config,
            commands,
            state: State::Idle,
            state_since: Instant::now(),
            last_error: None,
            up: None,
            adj_in: HashMap::new(),
            advertised: HashSet::new(),
        }
    }

    fn status(&self, local_as: u32) -> NeighborStatus {
        let neg = self.up.as_ref().map(|u| &u.negotiated);
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
                self.up
                    .as_ref()
                    .map_or(self.state_since, |u| u.since)
                    .elapsed()
                    .as_secs(),
            ),
            router_id: neg.map(|n| n.peer_id),
            hold_time: neg.map(|n| n.hold_time),
            last_error: self.last_error.clone(),
            prefixes_received: self.adj_in.len() as u64,
            prefixes_accepted: self.adj_in.len() as u64,
            prefixes_advertised: self.advertised.len() as u64,
            route_reflector_client: self.config.route_reflector_client,
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
        multipath: false,
        peer,
    }
}
