//! `tabby bgpd`: wires the config, listeners, peer tasks, the RIB task, the
//! control socket and signals together on a tokio runtime.
//!
//! Tasks: one accept loop per `listen` address (hands each connection to
//! the peer task of its source address, refuses strangers), one task per
//! neighbour ([`crate::peer`]), the RIB task ([`crate::routing`]), the
//! control-socket server, the BFD driver and its event task (started when a
//! neighbour has `bfd: true`; BFD Down resets that neighbour's session with
//! Cease / BFD Down), and the signal handler (SIGHUP reloads,
//! SIGTERM/SIGINT close every session with a Cease and exit). Threads: the
//! FIB sync ([`crate::fib`], with `fib: true`) and the next-hop watcher
//! ([`crate::nexthop`]).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tabby_bfd::{Bfd, PeerEvent, SessionSpec};
use tabby_bgp::{Family, Notification, SessionConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::{mpsc, oneshot};

use crate::config::{BgpdConfig, ConfigError, PeerConfig};
use crate::control::{Request, Response};
use crate::peer::{self, PeerCommand, PeerReport, Transport};
use crate::routing::{ControlCall, PeerSpawner, RibTask};
use crate::sockopt;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The config file was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The control socket could not be created.
    #[error("cannot create control socket {path}: {source}")]
    ControlSocket {
        /// Its path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The tokio runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(io::Error),
}

/// How [`serve_until`] runs the speaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Handle SIGHUP (reload), SIGTERM and SIGINT (stop) itself, as
    /// `tabby bgpd` does. An embedding process (the node agent) handles
    /// signals on its own and stops the speaker through `stop`.
    pub handle_signals: bool,
    /// Leave the kernel routes the FIB sync installed when stopping.
    pub keep_kernel_routes: bool,
}

/// Loads `config_path` and runs the daemon until SIGTERM/SIGINT.
pub fn run(config_path: &Path) -> Result<(), DaemonError> {
    let config = BgpdConfig::load(config_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let options = ServeOptions {
        handle_signals: true,
        keep_kernel_routes: false,
    };
    rt.block_on(serve_until(
        config_path.to_owned(),
        config,
        options,
        std::future::pending(),
    ))
}

type PeerMap = Arc<Mutex<HashMap<IpAddr, (mpsc::UnboundedSender<PeerCommand>, Transport)>>>;

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The session settings `tabby-bgp` gets for one neighbour.
pub fn session_config(config: &BgpdConfig, p: &PeerConfig) -> SessionConfig {
    let mut c = SessionConfig::new(config.as_number, config.router_id, p.as_number);
    c.hold_time = p.hold_time();
    c.keepalive_time = p.keepalive_time;
    c.connect_retry = Duration::from_secs(u64::from(p.connect_retry_time()));
    c.passive = p.passive;
    c.families = if p.address.is_ipv4() {
        vec![Family::Ipv4Unicast]
    } else if p.same_family_only {
        vec![Family::Ipv6Unicast]
    } else {
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
    };
    c.idle_hold_time = c.connect_retry.min(Duration::from_secs(5));
    c.jitter_seed = Some(jitter_seed(p));
    c.graceful_restart = config
        .graceful_restart_for(p)
        .map(|g| g.core(false).capability(&c.families));
    c
}

/// A fresh random seed for one session's timer jitter (std's per-process
/// random hash keys, mixed with the neighbour's address).
fn jitter_seed(p: &PeerConfig) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(p.address)
}

/// [`session_config`] for the first run after a graceful restart: the
/// graceful restart capability carries the Restart State (R) bit.
pub fn session_config_restarting(config: &BgpdConfig, p: &PeerConfig) -> SessionConfig {
    let mut c = session_config(config, p);
    c.graceful_restart = config
        .graceful_restart_for(p)
        .map(|g| g.core(true).capability(&c.families));
    c
}

/// Socket settings for one neighbour.
pub fn transport(config: &BgpdConfig, p: &PeerConfig) -> Transport {
    let ebgp = p.as_number != config.as_number;
    Transport {
        remote: SocketAddr::new(p.address, p.port()),
        source: p.source_address,
        password: p.password.clone(),
        ttl: p.multihop.unwrap_or(if ebgp { 1 } else { 64 }),
        min_ttl: p.ttl_security.map(|hops| 255 - hops + 1),
    }
}

struct Spawner {
    config_path: PathBuf,
    reports: mpsc::Sender<PeerReport>,
    peers: PeerMap,
    listeners: Vec<Arc<TcpListener>>,
    bfd: Option<Bfd>,
    /// This run is a graceful restart: OPENs carry the R bit.
    restarting: bool,
    /// Neighbours with graceful restart (closed without a NOTIFICATION on
    /// the way out).
    graceful_peers: Arc<Mutex<HashSet<IpAddr>>>,
}

impl Spawner {
    /// The BFD driver, started the first time a neighbour asks for BFD.
    fn bfd(&mut self) -> Option<Bfd> {
        if self.bfd.is_none() {
            match Bfd::start() {
                Ok((bfd, events)) => {
                    tokio::spawn(bfd_events(events, self.peers.clone()));
                    self.bfd = Some(bfd);
                }
                Err(e) => tracing::error!("cannot start BFD; neighbours run without it: {e}"),
            }
        }
        self.bfd.clone()
    }

    /// Makes the BFD session of `p` match its config (added, re-added with
    /// new settings, or removed).
    fn sync_bfd(&mut self, p: &PeerConfig) {
        let want = p.bfd_config();
        if want.is_none() && self.bfd.is_none() {
            return;
        }
        let Some(bfd) = self.bfd() else {
            return;
        };
        let peer = p.address;
        let spec = want.map(|config| SessionSpec {
            peer,
            local: p.source_address,
            config,
        });
        tokio::spawn(async move {
            // Settings may have changed: start from a fresh session.
            let _ = bfd.remove_session(peer).await;
            if let Some(spec) = spec
                && let Err(e) = bfd.add_session(spec).await
            {
                tracing::error!(%peer, "BFD: {e}");
            }
        });
    }
}

/// Acts on BFD state changes: a session that was Up and is now Down (not
/// because the neighbour set it AdminDown, RFC 5882 §3.2) resets the BGP
/// session with that neighbour at once, with Cease / BFD Down (RFC 9384).
async fn bfd_events(mut events: mpsc::UnboundedReceiver<PeerEvent>, peers: PeerMap) {
    while let Some(e) = events.recv().await {
        if e.from != tabby_bfd::State::Up || e.to != tabby_bfd::State::Down {
            continue;
        }
        if e.peer_state == tabby_bfd::State::AdminDown {
            tracing::info!(peer = %e.peer, "BFD: the neighbour set the session AdminDown; the BGP session is left alone");
            continue;
        }
        let target = peers
            .lock()
            .ok()
            .and_then(|m| m.get(&canonical(e.peer)).map(|(tx, _)| tx.clone()));
        if let Some(tx) = target {
            tracing::warn!(peer = %e.peer, diagnostic = %e.diagnostic, "BFD down: closing the BGP session (Cease / BFD Down)");
            let cease = Notification::new(
                tabby_bgp::error::code::CEASE,
                tabby_bgp::error::subcode::cease::BFD_DOWN,
                Vec::new(),
            );
            let _ = tx.send(PeerCommand::Reset(cease));
        }
    }
}

impl PeerSpawner for Spawner {
    fn spawn(&mut self, config: &BgpdConfig, p: &PeerConfig) -> mpsc::UnboundedSender<PeerCommand> {
        let (tx, rx) = mpsc::unbounded_channel();
        let t = transport(config, p);
        for l in &self.listeners {
            if l.local_addr()
                .is_ok_and(|a| a.is_ipv4() == p.address.is_ipv4())
            {
                let key = p.password.as_deref().map(str::as_bytes);
                if let Err(e) = sockopt::set_md5_key(l.as_ref(), p.address, key)
                    && key.is_some()
                {
                    tracing::error!(peer = %p.address, "cannot set TCP MD5 key: {e}");
                }
            }
        }
        if let Ok(mut m) = self.peers.lock() {
            m.insert(canonical(p.address), (tx.clone(), t.clone()));
        }
        if let Ok(mut g) = self.graceful_peers.lock() {
            if config.graceful_restart_for(p).is_some() {
                g.insert(canonical(p.address));
            } else {
                g.remove(&canonical(p.address));
            }
        }
        self.sync_bfd(p);
        let session = if self.restarting {
            session_config_restarting(config, p)
        } else {
            session_config(config, p)
        };
        tokio::spawn(peer::run(session, t, rx, self.reports.clone()));
        tx
    }

    fn removed(&mut self, peer: IpAddr) {
        if let Ok(mut g) = self.graceful_peers.lock() {
            g.remove(&canonical(peer));
        }
        if let Some(bfd) = self.bfd.clone() {
            tokio::spawn(async move {
                let _ = bfd.remove_session(peer).await;
            });
        }
    }

    fn reload_config(&mut self) -> Result<BgpdConfig, String> {
        let c = BgpdConfig::load(&self.config_path).map_err(|e| e.to_string())?;
        tracing::info!(file = %self.config_path.display(), "configuration reloaded");
        Ok(c)
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if addr.is_ipv6() {
        sockopt::set_v6_only(&s)?;
    }
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(128)
}

/// Runs the speaker on the current tokio runtime with `config` (read from
/// `config_path`, which a `reload` re-reads) until `stop` completes (or,
/// with `options.handle_signals`, SIGTERM/SIGINT). On the way out every
/// session gets a Cease; kernel routes go unless
/// `options.keep_kernel_routes`.
pub async fn serve_until(
    config_path: PathBuf,
    config: BgpdConfig,
    options: ServeOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let l = bind(*addr).map_err(|source| DaemonError::Listen {
            addr: *addr,
            source,
        })?;
        tracing::info!(%addr, "listening");
        listeners.push(Arc::new(l));
    }
    let control_path = config.control_socket.clone();
    if let Some(dir) = control_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(&control_path);
    let control_listener =
        UnixListener::bind(&control_path).map_err(|source| DaemonError::ControlSocket {
            path: control_path.clone(),
            source,
        })?;

    let (report_tx, report_rx) = mpsc::channel(1024);
    let (control_tx, control_rx) = mpsc::channel::<ControlCall>(16);
    let peers: PeerMap = Arc::default();
    let graceful_peers: Arc<Mutex<HashSet<IpAddr>>> = Arc::default();
    // Tasks to end on the way out, so that an embedding process can start
    // the speaker again on the same addresses.
    let mut background = Vec::new();
    for l in &listeners {
        background.push(tokio::spawn(accept_loop(l.clone(), peers.clone())));
    }
    let spawner = Spawner {
        config_path,
        reports: report_tx,
        peers: peers.clone(),
        listeners,
        bfd: None,
        restarting: false,
        graceful_peers: graceful_peers.clone(),
    };
    let mut spawner = spawner;
    let graceful = config.any_graceful_restart();
    // Graceful restart: the routes a previous run left in the kernel are
    // adopted (kept, and removed only if no longer learned once every
    // neighbour sent End-of-RIB); their presence is what says this run is
    // a restart.
    let adopted = if graceful && config.fib {
        crate::fib::adoptable_routes()
    } else {
        Vec::new()
    };
    let restarting = !adopted.is_empty();
    spawner.restarting = restarting;
    let adopted_prefixes: Vec<tabby_bgp::Prefix> = adopted
        .iter()
        .filter_map(|r| {
            tabby_bgp::Prefix::new(r.destination.addr(), r.destination.prefix_len()).ok()
        })
        .collect();
    let fib_routes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let fib_frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next_hops = tabby_dataplane::Netlink::open().and_then(|mut nl| {
        let k = crate::nexthop::KernelNextHops::load(&mut nl)?;
        Ok((nl, k))
    });
    let encapsulation = crate::fib::SharedEncapsulation::new(config.encapsulation.clone());
    let (fib_tx, fib_thread) = if config.fib {
        let (tx, rx) = mpsc::unbounded_channel();
        let encap = encapsulation.clone();
        let resolver = next_hops.as_ref().ok().map(|(_, k)| k.clone());
        let counter = fib_routes.clone();
        let frozen = fib_frozen.clone();
        let thread = std::thread::Builder::new()
            .name("fib".into())
            .spawn(move || {
                if restarting {
                    crate::fib::run_adopting(rx, counter, frozen, adopted, resolver, Some(encap))
                } else {
                    crate::fib::run_until_closed(rx, counter, frozen, resolver, Some(encap))
                }
            })
            .map_err(DaemonError::Runtime)?;
        (Some(tx), Some(thread))
    } else {
        (None, None)
    };
    let mut rib =
        RibTask::new(config, spawner, fib_tx, fib_routes).with_encapsulation(encapsulation);
    if restarting {
        rib = rib.restarting(adopted_prefixes);
    }
    match next_hops {
        Ok((nl, k)) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let watched = k.clone();
            std::thread::Builder::new()
                .name("nexthop".into())
                .spawn(move || crate::nexthop::watch(nl, watched, tx))
                .map_err(DaemonError::Runtime)?;
            rib = rib.with_next_hops(k, rx);
        }
        Err(e) => {
            tracing::error!("cannot read kernel routes, every next hop counts as reachable: {e}")
        }
    }
    let rib_task = tokio::spawn(rib.run(report_rx, control_rx));
    background.push(tokio::spawn(control_server(
        control_listener,
        control_tx.clone(),
    )));

    let (mut hup, mut term, mut int) = if options.handle_signals {
        (
            Some(signal(tokio::signal::unix::SignalKind::hangup())?),
            Some(signal(tokio::signal::unix::SignalKind::terminate())?),
            Some(signal(tokio::signal::unix::SignalKind::interrupt())?),
        )
    } else {
        (None, None, None)
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = received(&mut hup) => {
                let (reply, rx) = oneshot::channel();
                if control_tx.send(ControlCall { request: Request::Reload, reply }).await.is_ok() {
                    match rx.await {
                        Ok(Response::Reloaded(r)) => tracing::info!(?r, "SIGHUP: reloaded"),
                        Ok(Response::Error(e)) => tracing::error!("SIGHUP: reload refused, keeping the running config: {e}"),
                        _ => {}
                    }
                }
            }
            _ = received(&mut term) => break,
            _ = received(&mut int) => break,
            () = &mut stop => break,
        }
    }
    if options.keep_kernel_routes || graceful {
        // Sessions going down must not withdraw what is in the kernel.
        fib_frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let senders: Vec<(IpAddr, mpsc::UnboundedSender<PeerCommand>)> = peers
        .lock()
        .map(|m| m.iter().map(|(a, (tx, _))| (*a, tx.clone())).collect())
        .unwrap_or_default();
    let graceful_set = graceful_peers.lock().map(|g| g.clone()).unwrap_or_default();
    if graceful {
        // RFC 4724: a NOTIFICATION would make the neighbours drop our
        // routes; closing the connections lets them keep them.
        tracing::info!(
            "shutting down for a graceful restart: closing graceful sessions without a NOTIFICATION, kernel routes stay"
        );
    } else {
        tracing::info!("shutting down: closing every session");
    }
    for (addr, tx) in senders {
        let cmd = if graceful_set.contains(&addr) {
            PeerCommand::Abandon
        } else {
            PeerCommand::Stop(Notification::new(6, 2, Vec::new()))
        };
        let _ = tx.send(cmd);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Dropping the RIB task closes the FIB channel: the FIB thread removes
    // the kernel routes it installed and ends.
    rib_task.abort();
    let _ = rib_task.await;
    for task in background {
        task.abort();
        let _ = task.await;
    }
    if let Some(t) = fib_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let _ = std::fs::remove_file(&control_path);
    Ok(())
}

/// Waits for a signal; never returns when signals are not handled.
async fn received(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn signal(
    kind: tokio::signal::unix::SignalKind,
) -> Result<tokio::signal::unix::Signal, DaemonError> {
    tokio::signal::unix::signal(kind).map_err(DaemonError::Runtime)
}

async fn accept_loop(listener: Arc<TcpListener>, peers: PeerMap) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = canonical(from.ip());
        let target = peers
            .lock()
            .ok()
            .and_then(|m| m.get(&ip).map(|(tx, _)| tx.clone()));
        match target {
            Some(tx) => {
                let _ = tx.send(PeerCommand::Incoming(stream));
            }
            None => tracing::info!(%from, "refused a connection from an unconfigured address"),
        }
    }
}

async fn control_server(listener: UnixListener, calls: mpsc::Sender<ControlCall>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(r);
            let answer =
                match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
                    .await
                {
                    Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                        Ok(request) => {
                            let (reply, rx) = oneshot::channel();
                            if calls.send(ControlCall { request, reply }).await.is_err() {
                                Response::Error("daemon is shutting down".into())
                            } else {
                                rx.await
                                    .unwrap_or_else(|_| Response::Error("no answer".into()))
                            }
                        }
                        Err(e) => Response::Error(format!("bad request: {e}")),
                    },
                    _ => Response::Error("no request received".into()),
                };
            if let Ok(mut bytes) = serde_json::to_vec(&answer) {
                bytes.push(b'\n');
                let _ = w.write_all(&bytes).await;
            }
        });
    }
}
