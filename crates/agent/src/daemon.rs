//! `tabby agent`: the node daemon's loop.
//!
//! Start-up: connect to the datastore, find the node's address, register
//! the Node resource, turn on forwarding. Then, each time something the
//! node's routing reads changes and every 30 s regardless:
//!
//! 1. read the BGP resources, the pools and the IPAM blocks and affinities
//!    (with etcd from a [`ClusterMirror`] kept current by one watch, so a
//!    change costs one event, not a new listing; with SQLite by polling the
//!    revision and reading again when it moves);
//! 2. compute the speaker configuration ([`crate::peers::speaker_plan`])
//!    and the exports ([`crate::exports::node_exports`]), both pure;
//! 3. if the configuration changed, write it to `<state dir>/bgpd.json`
//!    and ask the in-process speaker to reload it (the speaker's own
//!    per-neighbour diff keeps every unchanged session up); changes the
//!    speaker cannot reload (AS, router id, cluster id, listen port) restart
//!    it in-process;
//! 4. reconcile the local blocks' blackhole routes (`proto tabby`, only
//!    blackholes are the agent's: CNI device routes and the speaker's
//!    gateway routes are never touched) and the NAT table.
//!
//! The MTU ([`crate::mtu`]) comes first in each round: the pod MTU is
//! detected from the kernel's links and the pools' modes, logged and
//! written to the MTU file when it changes (the CNI plugin reads it when
//! its configuration has no `mtu`), and the tunnel devices get the host
//! MTU minus their overhead.
//!
//! Tunnels ([`crate::tunnels`]) come before the speaker in each round: the
//! node's tunnel addresses are allocated or released, `tunl0` and
//! `vxlan.calico` with the VXLAN peers and routes are programmed, and the
//! outcome (is `tunl0` usable?) goes into the speaker's FIB
//! encapsulation rules.
//!
//! SIGTERM/SIGINT: kernel routes (learned routes, blackholes, pod routes)
//! and the NAT table stay, so pods keep forwarding while the agent is
//! restarted. With graceful restart (the default) the sessions close
//! without a NOTIFICATION, so the peers keep this node's routes (stale)
//! too; the next start's speaker adopts the learned routes left in the
//! kernel (gateway routes only), sets the Restart State bit and defers
//! its selection until every peer's End-of-RIB, and the blackhole
//! reconcile owns only blackholes, so neither flushes what the other, or
//! the CNI plugin's pod routes, holds. Without it sessions get a Cease.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tabby_dataplane::{Netlink, Route, RouteKind, RouteTable};
use tabby_datastore::Datastore;
use tabby_ipam::{Block, BlockAffinity, Ipam};
use tabby_model::store::ResourceStore;
use tabby_model::{AsNumber, InterfaceAddress, IpPool};
use tabby_speaker::config::BgpdConfig;
use tabby_speaker::control::{Request, Response};
use tabby_speaker::daemon::{ServeOptions, serve_until};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::AgentError;
use crate::exports::{NodeExports, node_exports};
use crate::mirror::ClusterMirror;
use crate::mtu::{
    EncapsulationsInUse, IfacePattern, MtuPlan, host_interfaces, pod_mtu, write_mtu_file,
};
use crate::peers::{BgpResources, NoSecrets, PlanSettings, SecretSource, SecretsDir, speaker_plan};
use crate::registration::{AutodetectMethod, Registration, autodetect, register};
use crate::status::{AgentCounters, NODE_REPORT_FILE, NodeReport, render_metrics, session_rows};
use crate::tunnels::{
    DeviceState, KernelTunnels, KernelTunnelsOutcome, TunnelKind, apply_kernel,
    ensure_tunnel_addresses, fib_encapsulation, own_subnets, tunnel_pools, vxlan_plan,
};

/// Default control socket of the agent (its speaker's).
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/tabby/agent.sock";
/// Default directory for the generated speaker configuration.
pub const DEFAULT_STATE_DIR: &str = "/run/tabby/agent";

/// Where the node's address comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSetting {
    /// This address (`--ip 10.0.0.1/24`).
    Fixed(InterfaceAddress),
    /// Found with the autodetection method.
    Autodetect,
    /// None of this family (`--ip none`): keep what the Node has.
    Keep,
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Datastore URL.
    pub datastore: String,
    /// This node's name.
    pub node: String,
    /// IPv4 address.
    pub ipv4: AddressSetting,
    /// IPv6 address.
    pub ipv6: AddressSetting,
    /// How to find an address to autodetect.
    pub autodetect: AutodetectMethod,
    /// `spec.bgp.asNumber` to set on the node.
    pub as_number: Option<AsNumber>,
    /// The speaker's control socket (`tabby node status` reads it).
    pub control_socket: PathBuf,
    /// Directory for `bgpd.json`.
    pub state_dir: PathBuf,
    /// Directory of BGP password secrets (`<dir>/<secret>/<key>`).
    pub secrets_dir: Option<PathBuf>,
    /// How often the datastore revision is polled.
    pub poll_interval: Duration,
    /// Manage the NAT table from `natOutgoing` pools.
    pub nat: bool,
    /// Serve Prometheus metrics over HTTP on this address (`/metrics`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Graceful restart on every session (the default): peers keep this
    /// node's routes while the agent restarts.
    pub graceful_restart: bool,
    /// Where the detected pod MTU is written ([`crate::mtu::DEFAULT_MTU_FILE`],
    /// Calico's, by default).
    pub mtu_file: PathBuf,
    /// Which interfaces the MTU detection looks at (`mtuIfacePattern`).
    pub mtu_iface_pattern: IfacePattern,
}

/// A running in-process speaker.
struct RunningSpeaker {
    config: BgpdConfig,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(options: AgentOptions) -> Result<(), AgentError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    rt.block_on(serve(options))
}

async fn resolve_address(
    setting: &AddressSetting,
    method: &AutodetectMethod,
    v6: bool,
) -> Result<Option<InterfaceAddress>, AgentError> {
    match setting {
        AddressSetting::Fixed(a) => Ok(Some(*a)),
        AddressSetting::Keep => Ok(None),
        AddressSetting::Autodetect => {
            let method = method.clone();
            tokio::task::spawn_blocking(move || {
                let mut nl = Netlink::open()?;
                autodetect(&mut nl, &method, v6)
            })
            .await
            .map_err(|e| AgentError::Runtime(std::io::Error::other(e)))?
        }
    }
}

async fn serve(options: AgentOptions) -> Result<(), AgentError> {
    let ds = Datastore::connect(&options.datastore).await?;
    let store = ResourceStore::new(ds.clone());
    let ipv4 = resolve_address(&options.ipv4, &options.autodetect, false).await?;
    if options.ipv4 == AddressSetting::Autodetect && ipv4.is_none() {
        return Err(AgentError::Registration(
            "no IPv4 address found to autodetect; set --ip (env IP) or --ip-autodetection-method"
                .into(),
        ));
    }
    let ipv6 = resolve_address(&options.ipv6, &options.autodetect, true).await?;
    let reg = Registration {
        name: options.node.clone(),
        ipv4,
        ipv6,
        as_number: options.as_number,
    };
    let node = register(&store, &reg).await?;
    tracing::info!(node = %options.node, bgp = ?node.spec.bgp, "node registered");
    if let Err(e) = tabby_dataplane::sysctl::set_ipv4_forwarding(true) {
        tracing::warn!("cannot enable IPv4 forwarding: {e}");
    }
    if ipv6.is_some()
        && let Err(e) = tabby_dataplane::sysctl::set_ipv6_forwarding("all", true)
    {
        tracing::warn!("cannot enable IPv6 forwarding: {e}");
    }
    std::fs::create_dir_all(&options.state_dir).map_err(|source| AgentError::StateDir {
        path: options.state_dir.clone(),
        source,
    })?;
    let secrets: Box<dyn SecretSource + Send + Sync> = match &options.secrets_dir {
        Some(d) => Box::new(SecretsDir(d.clone())),
        None => Box::new(NoSecrets),
    };
    let settings = PlanSettings {
        node: options.node.clone(),
        control_socket: options.control_socket.clone(),
        fib: true,
        graceful_restart: options.graceful_restart,
    };
    let config_path = options.state_dir.join("bgpd.json");

    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut node = NodeState {
        settings,
        secrets,
        config_path,
        nat: options.nat,
        speaker: None,
        exports: None,
        nat_pools: None,
        warnings: Vec::new(),
        error: None,
        counters: Arc::default(),
        store: store.clone(),
        ipam: Ipam::new(ds.clone()),
        tunnels: None,
        tunnel_outcome: KernelTunnelsOutcome::default(),
        tunnel_error: None,
        tunnel_address_error: None,
        mtu_file: options.mtu_file.clone(),
        mtu_pattern: options.mtu_iface_pattern.clone(),
        mtu: None,
        mtu_written: None,
        report_path: options.state_dir.join(NODE_REPORT_FILE),
        report: None,
        mtu_error: None,
    };
    if let Some(addr) = options.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Metrics { addr, source })?;
        tracing::info!(%addr, "serving metrics at /metrics");
        tokio::spawn(serve_metrics(
            listener,
            options.control_socket.clone(),
            node.counters.clone(),
        ));
    }
    // With etcd the cluster state is mirrored (listed once, then followed
    // by one watch); with SQLite the revision is polled and everything is
    // re-read when it moves (see `mirror`).
    let mirrored = ds.backend() == "etcd";
    let mut mirror: Option<ClusterMirror> = None;
    let mut last_revision = -1;
    // Something to apply (a change, or a round that asked to be retried).
    let mut pending = true;
    let mut last_full = Instant::now();
    let mut speaker_retry = Instant::now();
    loop {
        if mirrored {
            if let Some(m) = mirror.as_mut() {
                match m.catch_up() {
                    Ok(changed) => pending |= changed,
                    Err(e) => {
                        tracing::warn!("following the datastore: {e}; listing again");
                        mirror = None;
                        pending = true;
                    }
                }
            }
        } else {
            let revision = ds.revision().await.unwrap_or(-1);
            pending |= revision != last_revision;
            last_revision = revision;
        }
        let due = last_full.elapsed() >= FULL_RESYNC;
        // No speaker (a plan error, or it stopped): try again now and then.
        let speaker_down = node.speaker.as_ref().is_none_or(|s| s.task.is_finished())
            && Instant::now() >= speaker_retry;
        if pending || due || speaker_down {
            if due {
                last_full = Instant::now();
                // Re-apply kernel state even if nothing changed here: it
                // may have been changed behind our back.
                node.exports = None;
                node.nat_pools = None;
                node.tunnels = None;
                node.mtu_written = None;
            }
            if speaker_down {
                speaker_retry = Instant::now() + SPEAKER_RETRY;
            }
            match current_state(&store, &ds, &options.node, mirrored, &mut mirror).await {
                Ok(state) => pending = !node.reconcile(&state).await,
                Err(e) => tracing::warn!("reading the datastore: {e}"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(options.poll_interval) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: sessions closed, kernel routes and NAT kept");
    if let Some(s) = node.speaker.take() {
        stop_speaker(s).await;
    }
    Ok(())
}

/// The cluster state: from the mirror when `mirrored` (opened first if
/// there is none), else read afresh.
async fn current_state(
    store: &ResourceStore,
    ds: &Datastore,
    node: &str,
    mirrored: bool,
    mirror: &mut Option<ClusterMirror>,
) -> Result<ClusterState, AgentError> {
    if !mirrored {
        return read_state(store, ds, Some(node)).await;
    }
    let m = match mirror {
        Some(m) => m,
        None => {
            let m = ClusterMirror::open(ds, node).await?;
            tracing::info!(
                keys = m.len(),
                revision = m.revision(),
                "following the datastore with a watch"
            );
            mirror.insert(m)
        }
    };
    m.state()
}

/// How often everything is re-read and re-applied even without changes.
const FULL_RESYNC: Duration = Duration::from_secs(30);
/// How long to wait before trying again to start a speaker that is not running.
const SPEAKER_RETRY: Duration = Duration::from_secs(5);

/// What the agent has applied, so that only changes are applied again.
struct NodeState {
    settings: PlanSettings,
    secrets: Box<dyn SecretSource + Send + Sync>,
    config_path: PathBuf,
    nat: bool,
    speaker: Option<RunningSpeaker>,
    exports: Option<NodeExports>,
    nat_pools: Option<tabby_dataplane::nat::NatPools>,
    warnings: Vec<String>,
    error: Option<String>,
    counters: Arc<Mutex<AgentCounters>>,
    store: ResourceStore,
    ipam: Ipam,
    /// The tunnel state last applied to the kernel.
    tunnels: Option<KernelTunnels>,
    /// What that gave.
    tunnel_outcome: KernelTunnelsOutcome,
    /// The last tunnel error logged (said once, not at every poll).
    tunnel_error: Option<String>,
    /// The last tunnel address error logged.
    tunnel_address_error: Option<String>,
    /// Where the pod MTU is written.
    mtu_file: PathBuf,
    /// The interfaces the MTU detection looks at.
    mtu_pattern: IfacePattern,
    /// The MTUs detected last (logged when they change).
    mtu: Option<MtuPlan>,
    /// The pod MTU in the file, as last written or found there.
    mtu_written: Option<u32>,
    /// The last MTU error logged.
    mtu_error: Option<String>,
    /// Where the node report for `tabby node status` goes.
    report_path: PathBuf,
    /// The report last written.
    report: Option<NodeReport>,
}

impl NodeState {
    /// Brings the speaker and the kernel in line with `state`; false when
    /// something should be tried again at the next poll.
    async fn reconcile(&mut self, state: &ClusterState) -> bool {
        self.reconcile_mtu(state).await;
        let mut done = self.reconcile_tunnels(state).await;
        match speaker_plan(&state.bgp, &self.settings, self.secrets.as_ref()) {
            Ok(plan) => {
                self.error = None;
                if plan.warnings != self.warnings {
                    for w in &plan.warnings {
                        tracing::warn!("{w}");
                    }
                    self.warnings = plan.warnings.clone();
                }
                let exports = node_exports(
                    &self.settings.node,
                    &state.pools,
                    &state.blocks,
                    &state.affinities,
                    &state.bgp.default_configuration(),
                );
                let mut config = plan.config;
                config.originate = exports.originate.clone();
                config.encapsulation = fib_encapsulation(
                    &state.pools,
                    &self.me(state).map(own_subnets).unwrap_or_default(),
                    self.tunnel_outcome.ipip == DeviceState::Up,
                );
                let announced = config.originate.len() as u64;
                let (s, outcome) =
                    apply_speaker(self.speaker.take(), config, &self.config_path).await;
                self.speaker = s;
                done &= outcome != SpeakerOutcome::Retry;
                if let Ok(mut c) = self.counters.lock() {
                    c.reconciles += 1;
                    c.announced_prefixes = announced;
                    c.local_blocks = exports.blackholes.len() as u64;
                    c.ipip = self.tunnel_outcome.ipip;
                    c.vxlan = self.tunnel_outcome.vxlan;
                    c.vxlan_v6 = self.tunnel_outcome.vxlan_v6;
                    c.vxlan_routes = self.tunnel_outcome.vxlan_routes as u64;
                    if outcome == SpeakerOutcome::Restarted {
                        c.speaker_restarts += 1;
                    }
                }
                if self.exports.as_ref() != Some(&exports) {
                    match reconcile_blackholes(exports.blackholes.clone()).await {
                        Ok(()) => self.exports = Some(exports),
                        Err(e) => tracing::error!("blackhole routes: {e}"),
                    }
                }
            }
            Err(e) => {
                // Said once, not at every poll.
                let msg = e.to_string();
                if self.error.as_deref() != Some(msg.as_str()) {
                    tracing::error!("{msg}");
                    self.error = Some(msg);
                }
            }
        }
        if self.nat {
            let nat = nat_pools(&state.pools);
            if self.nat_pools.as_ref() != Some(&nat) {
                let n = nat.clone();
                let applied =
                    tokio::task::spawn_blocking(move || tabby_dataplane::nat::apply(&n)).await;
                match applied {
                    Ok(Ok(())) => self.nat_pools = Some(nat),
                    Ok(Err(e)) => tracing::error!("NAT table: {e}"),
                    Err(e) => tracing::error!("NAT table: {e}"),
                }
            }
        }
        self.write_report().await;
        done
    }

    /// Writes the node report for `tabby node status` when it changed.
    async fn write_report(&mut self) {
        let announced = self
            .counters
            .lock()
            .map(|c| c.announced_prefixes)
            .unwrap_or_default();
        let report = NodeReport {
            ipip: self.tunnel_outcome.ipip.as_str().to_owned(),
            vxlan: self.tunnel_outcome.vxlan.as_str().to_owned(),
            vxlan_v6: self.tunnel_outcome.vxlan_v6.as_str().to_owned(),
            vxlan_routes: self.tunnel_outcome.vxlan_routes as u64,
            pod_mtu: self.mtu.as_ref().map(ToString::to_string),
            announced_prefixes: announced,
            warnings: self.warnings.clone(),
            error: self.error.clone(),
        };
        if self.report.as_ref() == Some(&report) {
            return;
        }
        let path = self.report_path.clone();
        let body = match serde_json::to_vec_pretty(&report) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("node report: {e}");
                return;
            }
        };
        let written = tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &path))
        })
        .await;
        match written {
            Ok(Ok(())) => self.report = Some(report),
            Ok(Err(e)) => tracing::warn!("node report {}: {e}", self.report_path.display()),
            Err(e) => tracing::warn!("node report: {e}"),
        }
    }
}

impl NodeState {
    fn me<'a>(&self, state: &'a ClusterState) -> Option<&'a tabby_model::Node> {
        state
            .bgp
            .nodes
            .iter()
            .find(|n| n.metadata.name == self.settings.node)
    }

    /// Logs an MTU problem once (not at every poll).
    fn mtu_problem(&mut self, msg: Option<String>) {
        if let Some(m) = &msg
            && self.mtu_error.as_ref() != Some(m)
        {
            tracing::error!("{m}");
        }
        self.mtu_error = msg;
    }

    /// Detects the MTUs from the kernel's links and the pools' modes and
    /// writes the pod MTU to the MTU file when it changed. A failure is
    /// logged once and tried again at the next round (a datastore change
    /// or the 30 s resync), not at every poll: an unwritable path must not
    /// turn every poll into a full reconcile.
    async fn reconcile_mtu(&mut self, state: &ClusterState) {
        let listed = tokio::task::spawn_blocking(|| {
            Netlink::open().and_then(|mut nl| host_interfaces(&mut nl))
        })
        .await;
        let interfaces = match listed {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => {
                self.mtu_problem(Some(format!("MTU detection: netlink: {e}")));
                return;
            }
            Err(e) => {
                self.mtu_problem(Some(format!("MTU detection: {e}")));
                return;
            }
        };
        let plan = pod_mtu(
            &interfaces,
            &self.mtu_pattern,
            EncapsulationsInUse::from_pools(&state.pools),
        );
        if self.mtu.as_ref() != Some(&plan) {
            if plan.host_interface.is_none() {
                tracing::warn!(
                    pattern = self.mtu_pattern.as_str(),
                    "no up interface matches the MTU interface pattern (--mtu-iface-pattern): host MTU {}",
                    plan.host_mtu
                );
            }
            tracing::info!(
                pod_mtu = plan.pod_mtu,
                host_mtu = plan.host_mtu,
                "pod MTU {plan}"
            );
            self.mtu = Some(plan.clone());
        }
        if self.mtu_written == Some(plan.pod_mtu) {
            return;
        }
        let path = self.mtu_file.clone();
        let mtu = plan.pod_mtu;
        let written = tokio::task::spawn_blocking(move || write_mtu_file(&path, mtu)).await;
        match written {
            Ok(Ok(changed)) => {
                if changed {
                    tracing::info!(mtu, "pod MTU written to {}", self.mtu_file.display());
                }
                self.mtu_written = Some(mtu);
                self.mtu_problem(None);
            }
            Ok(Err(e)) => {
                self.mtu_problem(Some(format!(
                    "cannot write the pod MTU to {}: {e}; pods whose CNI configuration has no mtu get 1500 (set --mtu-file)",
                    self.mtu_file.display()
                )));
            }
            Err(e) => self.mtu_problem(Some(format!("MTU file: {e}"))),
        }
    }

    /// Logs a tunnel problem once (not at every poll).
    fn tunnel_problem(&mut self, msg: Option<String>) {
        if let Some(m) = &msg
            && self.tunnel_error.as_ref() != Some(m)
        {
            tracing::error!("{m}");
        }
        self.tunnel_error = msg;
    }

    /// Tunnel addresses, then devices, VXLAN peers and routes; false when
    /// something should be tried again at the next poll.
    async fn reconcile_tunnels(&mut self, state: &ClusterState) -> bool {
        let Some(me) = self.me(state).cloned() else {
            return true;
        };
        let mut done = true;
        match ensure_tunnel_addresses(&self.store, &self.ipam, &me, &state.pools).await {
            Ok(changes) => {
                self.tunnel_address_error = None;
                for (kind, addr) in &changes.allocated {
                    tracing::info!(kind = kind.as_str(), %addr, "tunnel address allocated");
                }
                for (kind, addrs) in &changes.released {
                    tracing::info!(kind = kind.as_str(), ?addrs, "tunnel address released");
                }
                if changes.mac_generated {
                    tracing::info!("VXLAN tunnel MAC generated");
                }
            }
            Err(e) => {
                // Said once (it is retried at every poll until it works).
                let msg = format!("tunnel addresses: {e}; retrying");
                if self.tunnel_address_error.as_ref() != Some(&msg) {
                    tracing::warn!("{msg}");
                    self.tunnel_address_error = Some(msg);
                }
                done = false;
            }
        }
        let ipip_wanted = !tunnel_pools(TunnelKind::Ipip, &state.pools, &me).is_empty();
        let want = KernelTunnels {
            ipip: ipip_wanted.then(|| match TunnelKind::Ipip.node_address(&me) {
                Some(std::net::IpAddr::V4(a)) => Some(a),
                _ => None,
            }),
            node_ip: me
                .spec
                .bgp
                .as_ref()
                .and_then(|b| b.ipv4_address)
                .map(|a| a.addr),
            vxlan: vxlan_plan(&me, &state.bgp.nodes, &state.pools, &state.blocks, false),
            vxlan_wanted: !tunnel_pools(TunnelKind::Vxlan, &state.pools, &me).is_empty(),
            vxlan_v6: vxlan_plan(&me, &state.bgp.nodes, &state.pools, &state.blocks, true),
            vxlan_v6_wanted: !tunnel_pools(TunnelKind::VxlanV6, &state.pools, &me).is_empty(),
            mtu: self.mtu.clone(),
        };
        if self.tunnels.as_ref() == Some(&want) {
            return done;
        }
        for s in want.vxlan.skipped.iter().chain(&want.vxlan_v6.skipped) {
            tracing::debug!("VXLAN: {s}");
        }
        let w = want.clone();
        let applied = tokio::task::spawn_blocking(move || {
            Netlink::open().map(|mut nl| apply_kernel(&mut nl, &w))
        })
        .await;
        let outcome = match applied {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                self.tunnel_problem(Some(format!("tunnels: netlink: {e}")));
                return false;
            }
            Err(e) => {
                self.tunnel_problem(Some(format!("tunnels: {e}")));
                return false;
            }
        };
        if outcome.ipip != self.tunnel_outcome.ipip
            || outcome.vxlan != self.tunnel_outcome.vxlan
            || outcome.vxlan_v6 != self.tunnel_outcome.vxlan_v6
        {
            tracing::info!(
                ipip = outcome.ipip.as_str(),
                vxlan = outcome.vxlan.as_str(),
                vxlan_v6 = outcome.vxlan_v6.as_str(),
                vxlan_routes = outcome.vxlan_routes,
                "tunnels"
            );
        }
        let problem = if outcome.ipip == DeviceState::KernelLacks {
            Some(format!(
                "{}; routing IPIP pools natively",
                tabby_dataplane::Error::KernelLacks {
                    kind: "ipip",
                    config: "CONFIG_NET_IPIP",
                    consequence: "tunl0 cannot be created",
                }
            ))
        } else {
            outcome.errors.first().map(|e| format!("tunnels: {e}"))
        };
        let failed = !outcome.errors.is_empty() || outcome.ipip == DeviceState::Failed;
        self.tunnel_problem(problem);
        self.tunnel_outcome = outcome;
        if failed {
            done = false;
        } else {
            self.tunnels = Some(want);
        }
        done
    }
}

fn signal(
    kind: tokio::signal::unix::SignalKind,
) -> Result<tokio::signal::unix::Signal, AgentError> {
    tokio::signal::unix::signal(kind).map_err(AgentError::Runtime)
}

/// Everything a node's routing is computed from, as the datastore holds
/// it (the agent's input; `tabby doctor` reads the same).
#[derive(Debug, Clone)]
pub struct ClusterState {
    /// Nodes, BGPConfigurations, BGPPeers, BGPFilters.
    pub bgp: BgpResources,
    /// Every IPPool.
    pub pools: Vec<IpPool>,
    /// Every IPAM block.
    pub blocks: Vec<Block>,
    /// The block affinities read ([`read_state`]'s `affinities_of`).
    pub affinities: Vec<BlockAffinity>,
}

/// Reads the [`ClusterState`]: every BGP resource, pool and IPAM block,
/// and the block affinities of the node `affinities_of` (`None`: of every
/// node). An IPAM record that does not decode is skipped with a warning
/// (`tabby ipam check` reports it).
pub async fn read_state(
    store: &ResourceStore,
    ds: &Datastore,
    affinities_of: Option<&str>,
) -> Result<ClusterState, AgentError> {
    let bgp = BgpResources {
        nodes: store.list_typed().await?,
        configurations: store.list_typed().await?,
        peers: store.list_typed().await?,
        filters: store.list_typed().await?,
    };
    let pools = store.list_typed().await?;
    let mut blocks = Vec::new();
    for kv in ds
        .list(&tabby_ipam::records::blocks_prefix(None))
        .await?
        .items
    {
        match serde_json::from_slice::<Block>(&kv.value) {
            Ok(b) => blocks.push(b),
            Err(e) => tracing::warn!(key = %kv.key, "unreadable IPAM block: {e}"),
        }
    }
    let mut affinities = Vec::new();
    for kv in ds
        .list(&tabby_ipam::records::affinities_prefix(affinities_of, None))
        .await?
        .items
    {
        match serde_json::from_slice::<BlockAffinity>(&kv.value) {
            Ok(a) => affinities.push(a),
            Err(e) => tracing::warn!(key = %kv.key, "unreadable block affinity: {e}"),
        }
    }
    Ok(ClusterState {
        bgp,
        pools,
        blocks,
        affinities,
    })
}

/// The NAT table's input: pools with `natOutgoing` and every pool.
pub fn nat_pools(pools: &[IpPool]) -> tabby_dataplane::nat::NatPools {
    let live = || pools.iter().filter(|p| !p.spec.disabled);
    tabby_dataplane::nat::NatPools {
        masquerade: live()
            .filter(|p| p.spec.nat_outgoing)
            .map(|p| p.spec.cidr.network())
            .collect(),
        all: pools.iter().map(|p| p.spec.cidr.network()).collect(),
    }
}

fn is_agent_route(r: &Route) -> bool {
    r.kind == RouteKind::Blackhole
}

async fn reconcile_blackholes(blocks: Vec<IpNet>) -> Result<(), AgentError> {
    tokio::task::spawn_blocking(move || {
        let mut nl = Netlink::open()?;
        for v6 in [false, true] {
            let desired: Vec<Route> = blocks
                .iter()
                .filter(|b| b.addr().is_ipv6() == v6)
                .map(|b| Route::blackhole(*b))
                .collect();
            let owns = |r: &Route| is_agent_route(r) && r.destination.addr().is_ipv6() == v6;
            let report = nl.reconcile_routes_owned(RouteTable::MAIN, &desired, owns)?;
            if report.added + report.deleted + report.replaced > 0 {
                tracing::info!(
                    added = report.added,
                    deleted = report.deleted,
                    "block blackhole routes reconciled"
                );
            }
            for c in &report.conflicts {
                tracing::warn!("local block route held by another protocol: {c:?}");
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| AgentError::Runtime(std::io::Error::other(e)))?
}

fn write_config(path: &std::path::Path, config: &BgpdConfig) -> Result<(), String> {
    let text = serde_json::to_string_pretty(config).map_err(|e| e.to_string())?;
    // The speaker will read it back: refuse here what it would refuse.
    BgpdConfig::parse(&text, &path.display().to_string()).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, &text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn start_speaker(config: BgpdConfig, path: &std::path::Path) -> RunningSpeaker {
    let (stop, stopped) = oneshot::channel::<()>();
    let c = config.clone();
    let p = path.to_owned();
    let task = tokio::spawn(async move {
        let options = ServeOptions {
            handle_signals: false,
            keep_kernel_routes: true,
        };
        let stop = async move {
            let _ = stopped.await;
        };
        if let Err(e) = serve_until(p, c, options, stop).await {
            tracing::error!("BGP speaker: {e}");
        }
    });
    tracing::info!(
        peers = config.peers.len(),
        originate = config.originate.len(),
        "BGP speaker started"
    );
    RunningSpeaker { config, stop, task }
}

async fn stop_speaker(s: RunningSpeaker) {
    let _ = s.stop.send(());
    let _ = s.task.await;
}

/// Why a reload did not happen.
enum ReloadFailure {
    /// The speaker refused the change (it needs a restart).
    Refused(String),
    /// The speaker could not be asked (socket, timeout): try again later.
    Unreachable(String),
}

async fn reload(socket: PathBuf) -> Result<(), ReloadFailure> {
    let answer = tokio::task::spawn_blocking(move || {
        tabby_speaker::control::request(&socket, &Request::Reload, Duration::from_secs(10))
    })
    .await
    .map_err(|e| ReloadFailure::Unreachable(e.to_string()))?;
    match answer {
        Ok(Response::Reloaded(r)) => {
            tracing::info!(?r, "BGP configuration reloaded");
            Ok(())
        }
        Ok(Response::Error(e)) | Err(tabby_speaker::control::ClientError::Daemon(e)) => {
            Err(ReloadFailure::Refused(e))
        }
        Ok(other) => Err(ReloadFailure::Unreachable(format!(
            "unexpected answer {other:?}"
        ))),
        Err(e) => Err(ReloadFailure::Unreachable(e.to_string())),
    }
}

/// What [`apply_speaker`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpeakerOutcome {
    /// Already so, started, or reloaded.
    Applied,
    /// Stopped and started again (a change the speaker cannot reload).
    Restarted,
    /// Not applied yet: try again soon.
    Retry,
}

/// Brings the speaker to `config`: start, reload, or restart (only when
/// the speaker refuses the change).
async fn apply_speaker(
    running: Option<RunningSpeaker>,
    config: BgpdConfig,
    path: &std::path::Path,
) -> (Option<RunningSpeaker>, SpeakerOutcome) {
    if let Some(r) = &running
        && r.config == config
        && !r.task.is_finished()
    {
        return (running, SpeakerOutcome::Applied);
    }
    if let Err(e) = write_config(path, &config) {
        tracing::error!("refusing the generated BGP configuration, keeping the running one: {e}");
        return (running, SpeakerOutcome::Applied);
    }
    match running {
        None => (Some(start_speaker(config, path)), SpeakerOutcome::Applied),
        Some(r) if r.task.is_finished() => {
            tracing::warn!("BGP speaker had stopped; starting it again");
            (Some(start_speaker(config, path)), SpeakerOutcome::Restarted)
        }
        Some(mut r) => match reload(r.config.control_socket.clone()).await {
            Ok(()) => {
                r.config = config;
                (Some(r), SpeakerOutcome::Applied)
            }
            Err(ReloadFailure::Refused(e)) => {
                tracing::info!("restarting the BGP speaker: {e}");
                stop_speaker(r).await;
                (Some(start_speaker(config, path)), SpeakerOutcome::Restarted)
            }
            Err(ReloadFailure::Unreachable(e)) => {
                tracing::warn!("cannot reach the BGP speaker to reload it, will retry: {e}");
                (Some(r), SpeakerOutcome::Retry)
            }
        },
    }
}

/// Serves `GET /metrics` (Prometheus text format); anything else is 404.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    socket: PathBuf,
    counters: Arc<Mutex<AgentCounters>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let socket = socket.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let line = String::from_utf8_lossy(&head);
            let wanted = line
                .lines()
                .next()
                .is_some_and(|l| l.starts_with("GET /metrics ") || l == "GET /metrics");
            let (status, body) = if wanted {
                let neighbors = tokio::task::spawn_blocking(move || {
                    tabby_speaker::control::request(
                        &socket,
                        &Request::Neighbors,
                        Duration::from_secs(5),
                    )
                })
                .await;
                let rows = match neighbors {
                    Ok(Ok(Response::Neighbors(n))) => session_rows(&n),
                    _ => Vec::new(),
                };
                let c = counters.lock().map(|c| *c).unwrap_or_default();
                ("200 OK", render_metrics(&rows, &c))
            } else {
                ("404 Not Found", "only /metrics is served\n".to_owned())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        });
    }
}
