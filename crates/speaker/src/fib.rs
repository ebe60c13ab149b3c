//! FIB sync (`fib: true`): best-path changes from the RIB become kernel
//! routes through `tabby-dataplane`, tagged with tabby's protocol number
//! (`proto tabby`), multipath sets as ECMP routes, removed on withdrawal.
//!
//! Runs on a thread of its own (netlink calls block). Each wake-up drains
//! every queued change, keeps only the last one per prefix, and programs
//! them as one batch. On start it removes gateway routes a previous run
//! left behind; on exit it removes the routes it installed. It owns only
//! `proto tabby` routes it could have made ([`made_by_bgpd`]: unicast via
//! gateways), never the CNI plugin's device routes to pods or blackholes.
//!
//! Next hops resolve recursively ([`KernelNextHops::forwarding`]): a
//! BGP next hop on a connected subnet is installed as is, one behind a
//! router via the gateway(s) of the kernel route toward it (ECMP when that
//! route is multipath); the route is removed while no next hop resolves,
//! and every route is re-resolved when the kernel table changes.
//!
//! After a graceful restart ([`run_adopting`]) the start-up clean-up is
//! skipped: the routes the previous run left are adopted as this run's
//! own, so they keep forwarding and are replaced or removed like any other
//! when the RIB says so.
//!
//! Encapsulation ([`FibEncapsulation`], set by the node agent, changed by
//! a reload through [`SharedEncapsulation`]): a route toward an IPIP pool
//! goes `via <next hop> dev tunl0 onlink` when
//! [`route_encapsulation`]
//! says IPIP for its next hop (natively when `tunl0` is missing); a route
//! toward a VXLAN pool is left alone ([`FibAction::Leave`]: the agent
//! programs it). IPIP routes via `tunl0` are this thread's own too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ipnet::IpNet;
use tabby_bgp::Prefix;
use tabby_bgp::rib::FibChange;
use tabby_dataplane::encap::{EncapMode, Encapsulation, IPIP_DEVICE, route_encapsulation};
use tabby_dataplane::{NextHop, Route, RouteChange, RouteTable};
use tokio::sync::{Notify, mpsc};

use crate::config::FibEncapsulation;
use crate::nexthop::{KernelNextHops, made_by_bgpd};

/// The encapsulation rules the FIB thread applies; the RIB task replaces
/// them when a reload changes them, and the thread re-evaluates every
/// route.
#[derive(Debug, Default)]
pub struct SharedEncapsulation {
    rules: Mutex<Option<FibEncapsulation>>,
    changed: Notify,
}

impl SharedEncapsulation {
    /// Shared rules starting at `rules`.
    pub fn new(rules: Option<FibEncapsulation>) -> Arc<SharedEncapsulation> {
        Arc::new(SharedEncapsulation {
            rules: Mutex::new(rules),
            changed: Notify::new(),
        })
    }

    /// Replaces the rules and wakes the FIB thread.
    pub fn set(&self, rules: Option<FibEncapsulation>) {
        if let Ok(mut r) = self.rules.lock() {
            *r = rules;
        }
        self.changed.notify_one();
    }

    /// The current rules.
    pub fn get(&self) -> Option<FibEncapsulation> {
        self.rules.lock().ok().and_then(|r| r.clone())
    }
}

/// What the FIB does with one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibAction {
    /// Install (or replace with) this route.
    Install(Route),
    /// Remove our route, if any (withdrawn, or no next hop resolves).
    Remove,
    /// Neither install nor remove: someone else programs this prefix (a
    /// VXLAN pool's blocks, which the node agent owns).
    Leave,
}

/// The kernel action for a prefix with these BGP next hops, applying the
/// encapsulation rules: `ipip_device` is `tunl0`'s index when it exists.
pub fn fib_action(
    dest: IpNet,
    next_hops: &[IpAddr],
    resolver: Option<&KernelNextHops>,
    encapsulation: Option<&FibEncapsulation>,
    ipip_device: Option<u32>,
) -> FibAction {
    let installed = |r: Option<Route>| r.map_or(FibAction::Remove, FibAction::Install);
    let Some((rules, pool)) = encapsulation.and_then(|e| e.pool_of(&dest).map(|p| (e, p))) else {
        return installed(resolved_route(dest, next_hops, resolver));
    };
    if pool.vxlan_mode != EncapMode::Never {
        return FibAction::Leave;
    }
    let mut hops: Vec<NextHop> = Vec::new();
    for nh in next_hops {
        let tunnel = route_encapsulation(pool.ipip_mode, EncapMode::Never, &rules.subnets, *nh);
        let via: Vec<NextHop> = match (tunnel, ipip_device) {
            (Encapsulation::Ipip, Some(dev)) => {
                vec![NextHop::via(*nh).with_device(dev).with_onlink()]
            }
            _ => match resolver {
                Some(k) => k.forwarding(*nh).unwrap_or_default(),
                None => vec![NextHop::via(*nh)],
            },
        };
        for h in via {
            if !hops.iter().any(|x| x.gateway == h.gateway) {
                hops.push(h);
            }
        }
    }
    installed((!hops.is_empty()).then(|| Route::multipath(dest, hops)))
}

/// True for an IPIP route this thread made: every next hop a gateway
/// on-link through `tunl0` (`ipip_device`).
fn ipip_route(r: &Route, ipip_device: Option<u32>) -> bool {
    ipip_device.is_some()
        && !r.next_hops.is_empty()
        && r.next_hops
            .iter()
            .all(|h| h.gateway.is_some() && h.onlink && h.device == ipip_device)
}

/// True for a route of ours this thread owns: [`made_by_bgpd`], or an
/// IPIP route via `tunl0`.
fn owned(r: &Route, ipip_device: Option<u32>) -> bool {
    made_by_bgpd(r) || ipip_route(r, ipip_device)
}

/// `tunl0`'s index, when it exists and is an IPIP device.
fn ipip_index(nl: &mut tabby_dataplane::Netlink) -> Option<u32> {
    nl.link(IPIP_DEVICE)
        .ok()
        .flatten()
        .filter(|l| l.kind.as_deref() == Some("ipip"))
        .map(|l| l.index)
}

fn destination(p: Prefix) -> Option<IpNet> {
    IpNet::new(p.addr(), p.len()).ok()
}

/// The kernel route for a multipath set (None for a withdrawal).
pub fn kernel_route(dest: IpNet, next_hops: &[IpAddr]) -> Option<Route> {
    match next_hops {
        [] => None,
        [one] => Some(Route::via(dest, *one)),
        many => Some(Route::multipath(
            dest,
            many.iter().map(|h| NextHop::via(*h)).collect(),
        )),
    }
}

/// The kernel route for a multipath set whose BGP next hops are resolved
/// through `resolver` (None: withdrawal, or no next hop resolves). Without
/// a resolver the next hops are used as they are.
pub fn resolved_route(
    dest: IpNet,
    next_hops: &[IpAddr],
    resolver: Option<&KernelNextHops>,
) -> Option<Route> {
    let Some(k) = resolver else {
        return kernel_route(dest, next_hops);
    };
    let mut hops: Vec<NextHop> = Vec::new();
    for h in next_hops
        .iter()
        .filter_map(|nh| k.forwarding(*nh))
        .flatten()
    {
        // Two BGP next hops can resolve to the same gateway (a mesh peer
        // behind the router that is also a BGP neighbour): one kernel
        // next hop per gateway.
        if !hops.iter().any(|x| x.gateway == h.gateway) {
            hops.push(h);
        }
    }
    (!hops.is_empty()).then(|| Route::multipath(dest, hops))
}

/// Runs the FIB thread until the channel closes, then removes our routes.
pub fn run(changes: mpsc::UnboundedReceiver<FibChange>, installed: Arc<AtomicU64>) {
    run_until_closed(
        changes,
        installed,
        Arc::new(AtomicBool::new(false)),
        None,
        None,
    )
}

/// Runs the FIB thread until the channel closes; then removes the routes
/// it installed, unless `frozen` was set: from then on changes are
/// ignored and the kernel routes are left in place (the node agent
/// freezes the FIB before closing its sessions so that traffic keeps
/// flowing while it restarts; the next run's start-up clean-up removes
/// what is stale).
/// With `next_hops`, next hops are resolved recursively (see the module
/// documentation); with `encapsulation`, its rules apply.
pub fn run_until_closed(
    changes: mpsc::UnboundedReceiver<FibChange>,
    installed: Arc<AtomicU64>,
    frozen: Arc<AtomicBool>,
    next_hops: Option<KernelNextHops>,
    encapsulation: Option<Arc<SharedEncapsulation>>,
) {
    run_inner(changes, installed, frozen, None, next_hops, encapsulation)
}

/// The gateway routes a previous run left in the main table (what a
/// graceful restart adopts). Empty when netlink cannot be read.
pub fn adoptable_routes() -> Vec<Route> {
    let listed = tabby_dataplane::Netlink::open().and_then(|mut nl| {
        let ipip = ipip_index(&mut nl);
        Ok((nl.routes(Some(RouteTable::MAIN))?, ipip))
    });
    match listed {
        Ok((routes, ipip)) => routes.into_iter().filter(|r| owned(r, ipip)).collect(),
        Err(e) => {
            tracing::warn!("fib: cannot read kernel routes to adopt: {e}");
            Vec::new()
        }
    }
}

/// Like [`run_until_closed`], after a graceful restart: `adopted` (from
/// [`adoptable_routes`]) stay in the kernel and count as installed by
/// this run.
pub fn run_adopting(
    changes: mpsc::UnboundedReceiver<FibChange>,
    installed: Arc<AtomicU64>,
    frozen: Arc<AtomicBool>,
    adopted: Vec<Route>,
    next_hops: Option<KernelNextHops>,
    encapsulation: Option<Arc<SharedEncapsulation>>,
) {
    run_inner(
        changes,
        installed,
        frozen,
        Some(adopted),
        next_hops,
        encapsulation,
    )
}

/// What woke the FIB thread.
enum Wake {
    Change(FibChange),
    KernelChanged,
    EncapsulationChanged,
    Closed,
}

fn run_inner(
    mut changes: mpsc::UnboundedReceiver<FibChange>,
    installed: Arc<AtomicU64>,
    frozen: Arc<AtomicBool>,
    adopted: Option<Vec<Route>>,
    next_hops: Option<KernelNextHops>,
    encapsulation: Option<Arc<SharedEncapsulation>>,
) {
    // A runtime of the thread's own, only to wait on the channel and the
    // kernel-change notification together.
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("fib: cannot start: {e}");
            return;
        }
    };
    let kernel_changed = next_hops.as_ref().map(KernelNextHops::changed);
    let mut nl = match tabby_dataplane::Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            tracing::error!("fib: cannot open netlink, kernel routes will not be programmed: {e}");
            return;
        }
    };
    let mut rules = encapsulation.as_ref().and_then(|e| e.get());
    let mut ipip = if rules.as_ref().is_some_and(|r| r.ipip) {
        ipip_index(&mut nl)
    } else {
        None
    };
    let mut ours: HashMap<IpNet, Route> = HashMap::new();
    // BGP next hops of every prefix we install (to re-resolve them).
    let mut wanted: HashMap<IpNet, Vec<IpAddr>> = HashMap::new();
    if let Some(adopted) = adopted {
        tracing::info!(
            routes = adopted.len(),
            "fib: graceful restart, adopting the kernel routes left by the previous run"
        );
        for r in adopted {
            ours.insert(r.destination, r);
        }
        installed.store(ours.len() as u64, Ordering::Relaxed);
    } else {
        let ipip_any = ipip_index(&mut nl);
        // A VXLAN pool's routes are the agent's, whatever they look like.
        let mine = |r: &Route| {
            owned(r, ipip_any)
                && !rules.as_ref().is_some_and(|e| {
                    e.pool_of(&r.destination)
                        .is_some_and(|p| p.vxlan_mode != EncapMode::Never)
                })
        };
        match nl.reconcile_routes_owned(RouteTable::MAIN, &[], mine) {
            Ok(r) if r.deleted > 0 => {
                tracing::info!(
                    deleted = r.deleted,
                    "fib: removed stale tabby gateway routes"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("fib: cannot clean stale routes: {e}"),
        }
    }
    loop {
        let mut latest: HashMap<IpNet, Vec<IpAddr>> = HashMap::new();
        let wake = rt.block_on(async {
            let kernel = async {
                match &kernel_changed {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            let encap = async {
                match &encapsulation {
                    Some(e) => e.changed.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = changes.recv() => c.map_or(Wake::Closed, Wake::Change),
                () = kernel => Wake::KernelChanged,
                () = encap => Wake::EncapsulationChanged,
            }
        });
        match wake {
            Wake::Closed => break,
            Wake::Change(c) => {
                if let Some(d) = destination(c.prefix) {
                    latest.insert(d, c.next_hops);
                }
            }
            // Re-resolve everything; unchanged routes are skipped below.
            Wake::KernelChanged => latest.clone_from(&wanted),
            Wake::EncapsulationChanged => {
                rules = encapsulation.as_ref().and_then(|e| e.get());
                ipip = if rules.as_ref().is_some_and(|r| r.ipip) {
                    ipip_index(&mut nl)
                } else {
                    None
                };
                tracing::info!(?rules, ipip_device = ?ipip, "fib: encapsulation changed");
                latest.clone_from(&wanted);
            }
        }
        if frozen.load(Ordering::SeqCst) {
            continue;
        }
        while let Ok(c) = changes.try_recv() {
            if let Some(d) = destination(c.prefix) {
                latest.insert(d, c.next_hops);
            }
        }
        let mut batch = Vec::with_capacity(latest.len());
        for (dest, hops) in latest {
            if hops.is_empty() {
                wanted.remove(&dest);
            } else {
                wanted.insert(dest, hops.clone());
            }
            match fib_action(dest, &hops, next_hops.as_ref(), rules.as_ref(), ipip) {
                FibAction::Install(r) => {
                    if ours.get(&dest) != Some(&r) {
                        ours.insert(dest, r.clone());
                        batch.push(RouteChange::Replace(r));
                    }
                }
                FibAction::Remove => {
                    if let Some(r) = ours.remove(&dest) {
                        batch.push(RouteChange::Delete(r));
                    }
                }
                // Not ours any more: forgotten, not deleted (the agent
                // replaces it with its own).
                FibAction::Leave => {
                    ours.remove(&dest);
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        match nl.apply_routes(&batch) {
            Ok(report) => {
                for (i, e) in report.failures.iter().take(10) {
                    tracing::warn!("fib: {:?}: {e}", batch.get(*i).map(RouteChange::route));
                }
            }
            Err(e) => tracing::error!("fib: batch of {} changes failed: {e}", batch.len()),
        }
        installed.store(ours.len() as u64, Ordering::Relaxed);
    }
    if frozen.load(Ordering::SeqCst) {
        tracing::info!(routes = ours.len(), "fib: leaving kernel routes in place");
        return;
    }
    let batch: Vec<RouteChange> = ours.into_values().map(RouteChange::Delete).collect();
    if let Err(e) = nl.apply_routes(&batch) {
        tracing::warn!("fib: cannot remove routes on exit: {e}");
    }
    installed.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EncapsulatedPool;

    fn rules(ipip: EncapMode, vxlan: EncapMode, usable: bool) -> FibEncapsulation {
        FibEncapsulation {
            pools: vec![EncapsulatedPool {
                cidr: "10.244.0.0/16".parse().expect("net"),
                ipip_mode: ipip,
                vxlan_mode: vxlan,
            }],
            subnets: vec!["10.20.0.0/23".parse().expect("net")],
            ipip: usable,
        }
    }

    #[test]
    fn encapsulation_rules_shape_the_kernel_route() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let block: IpNet = "10.244.1.0/26".parse().expect("net");
        let same = [ip("10.20.1.85")];
        let other = [ip("10.30.0.5")];
        let tunl0 = Some(9);
        let via_tunl0 = |nh| {
            FibAction::Install(Route::multipath(
                block,
                vec![NextHop::via(nh).with_device(9).with_onlink()],
            ))
        };
        let native = |nh| FibAction::Install(Route::multipath(block, vec![NextHop::via(nh)]));
        let always = rules(EncapMode::Always, EncapMode::Never, true);
        let cross = rules(EncapMode::CrossSubnet, EncapMode::Never, true);
        assert_eq!(
            fib_action(block, &same, None, Some(&always), tunl0),
            via_tunl0(same[0])
        );
        assert_eq!(
            fib_action(block, &same, None, Some(&cross), tunl0),
            native(same[0])
        );
        assert_eq!(
            fib_action(block, &other, None, Some(&cross), tunl0),
            via_tunl0(other[0])
        );
        // No tunl0 (a kernel without IPIP): native.
        assert_eq!(
            fib_action(block, &other, None, Some(&always), None),
            native(other[0])
        );
        // VXLAN pools are the agent's; other destinations are untouched.
        let vx = rules(EncapMode::Never, EncapMode::CrossSubnet, true);
        assert_eq!(
            fib_action(block, &other, None, Some(&vx), tunl0),
            FibAction::Leave
        );
        let outside: IpNet = "10.99.0.0/26".parse().expect("net");
        assert_eq!(
            fib_action(outside, &other, None, Some(&always), tunl0),
            FibAction::Install(Route::via(outside, other[0]))
        );
        assert_eq!(
            fib_action(block, &[], None, Some(&always), tunl0),
            FibAction::Remove
        );
    }

    #[test]
    fn next_hops_resolving_to_one_gateway_give_one_kernel_next_hop() {
        use tabby_dataplane::InstalledRoute;
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let net = |s: &str| -> IpNet { s.parse().expect("net") };
        let k = KernelNextHops::from_installed(&[
            InstalledRoute {
                route: Route::dev(net("192.168.100.0/24"), 2),
                protocol: 2,
            },
            InstalledRoute {
                route: Route::multipath(
                    net("0.0.0.0/0"),
                    vec![NextHop {
                        device: Some(2),
                        ..NextHop::via(ip("192.168.100.1"))
                    }],
                ),
                protocol: 3,
            },
        ]);
        let d = net("10.42.0.0/26");
        // A mesh peer in another subnet and the router itself.
        let r = resolved_route(d, &[ip("10.2.5.7"), ip("192.168.100.1")], Some(&k)).expect("route");
        assert_eq!(r.next_hops.len(), 1, "{r:?}");
        assert_eq!(r.next_hops[0].gateway, Some(ip("192.168.100.1")));
        let r = resolved_route(d, &[ip("10.2.5.7"), ip("192.168.100.9")], Some(&k)).expect("route");
        assert_eq!(r.next_hops.len(), 2, "ECMP over two gateways: {r:?}");
        let k = KernelNextHops::from_installed(&[]);
        assert!(resolved_route(d, &[ip("10.2.5.7")], Some(&k)).is_none());
    }

    #[test]
    fn multipath_sets_become_ecmp_routes() {
        let d: IpNet = "10.9.0.0/24".parse().expect("net");
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(kernel_route(d, &[]).is_none());
        assert_eq!(kernel_route(d, &[a]).expect("route").next_hops.len(), 1);
        assert_eq!(kernel_route(d, &[a, b]).expect("route").next_hops.len(), 2);
    }
}
