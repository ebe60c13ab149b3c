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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ipnet::IpNet;
use tabby_bgp::Prefix;
use tabby_bgp::rib::FibChange;
use tabby_dataplane::{NextHop, Route, RouteChange, RouteTable};
use tokio::sync::mpsc;

use crate::nexthop::{KernelNextHops, made_by_bgpd};

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
    run_until_closed(changes, installed, Arc::new(AtomicBool::new(false)), None)
}

/// Runs the FIB thread until the channel closes; then removes the routes
/// it installed, unless `frozen` was set: from then on changes are
/// ignored and the kernel routes are left in place (the node agent
/// freezes the FIB before closing its sessions so that traffic keeps
/// flowing while it restarts; the next run's start-up clean-up removes
/// what is stale).
/// With `next_hops`, next hops are resolved recursively (see the module
/// documentation).
pub fn run_until_closed(
    changes: mpsc::UnboundedReceiver<FibChange>,
    installed: Arc<AtomicU64>,
    frozen: Arc<AtomicBool>,
    next_hops: Option<KernelNextHops>,
) {
    run_inner(changes, installed, frozen, None, next_hops)
}

/// The gateway routes a previous run left in the main table (what a
/// graceful restart adopts). Empty when netlink cannot be read.
pub fn adoptable_routes() -> Vec<Route> {
    let listed =
        tabby_dataplane::Netlink::open().and_then(|mut nl| nl.routes(Some(RouteTable::MAIN)));
    match listed {
        Ok(routes) => routes.into_iter().filter(made_by_bgpd).collect(),
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
) {
    run_inner(changes, installed, frozen, Some(adopted), next_hops)
}

/// What woke the FIB thread.
enum Wake {
    Change(FibChange),
    KernelChanged,
    Closed,
}

fn run_inner(
    mut changes: mpsc::UnboundedReceiver<FibChange>,
    installed: Arc<AtomicU64>,
    frozen: Arc<AtomicBool>,
    adopted: Option<Vec<Route>>,
    next_hops: Option<KernelNextHops>,
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
        match nl.reconcile_routes_owned(RouteTable::MAIN, &[], made_by_bgpd) {
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
            tokio::select! {
                c = changes.recv() => c.map_or(Wake::Closed, Wake::Change),
                () = kernel => Wake::KernelChanged,
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
            match resolved_route(dest, &hops, next_hops.as_ref()) {
                Some(r) => {
                    if ours.get(&dest) != Some(&r) {
                        ours.insert(dest, r.clone());
                        batch.push(RouteChange::Replace(r));
                    }
                }
                None => {
                    if let Some(r) = ours.remove(&dest) {
                        batch.push(RouteChange::Delete(r));
                    }
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
