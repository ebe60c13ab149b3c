//! Next-hop reachability from the kernel routing table (seed 003's
//! pitfall: a route whose next hop this node cannot reach must not become
//! best, be installed or be re-advertised).
//!
//! [`KernelNextHops`] is the [`NextHopResolver`] `tabby bgpd` gives the
//! RIB. A next hop is reachable when the most specific route covering it
//! in the main table of bgpd's own namespace forwards (not a blackhole,
//! unreachable or prohibit route) and is not one of bgpd's own routes
//! (`proto tabby` with a gateway): connected subnets, static, OSPF and
//! kernel routes, and the CNI plugin's device routes count. A thread
//! ([`watch`]) keeps the snapshot current from route notifications (and a
//! periodic re-read as a safety net) and tells the RIB task when it
//! changed, so routes whose next hop became reachable later are picked up.
//!
//! The same snapshot resolves next hops recursively for the FIB
//! ([`KernelNextHops::forwarding`], as BIRD's `gateway recursive`): a next
//! hop on a connected subnet (the covering route has no gateway) is used
//! as is; one behind a router is replaced by the gateway(s) of the route
//! covering it (all of them when that route is multipath), and the FIB
//! thread is woken ([`KernelNextHops::changed`]) to re-resolve whenever
//! the table changes.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use std::time::{Duration, Instant};
use tokio::sync::Notify;

use ipnet::IpNet;
use tabby_bgp::decision::NextHopResolver;
use tabby_dataplane::{
    InstalledRoute, Netlink, NextHop, Route, RouteEvent, RouteKind, RouteMonitor, RouteTable,
    TABBY_PROTOCOL,
};
use tokio::sync::mpsc;

/// How often the table is re-read even without notifications.
const REREAD: Duration = Duration::from_secs(30);
/// How often it is re-read when notifications are unavailable.
const REREAD_WITHOUT_MONITOR: Duration = Duration::from_secs(3);
/// How long to gather a burst of notifications before re-reading.
const SETTLE: Duration = Duration::from_millis(100);

/// True for a route `bgpd`'s FIB sync could have made: unicast, and every
/// next hop a plain gateway (the CNI plugin's device routes to pods and the
/// agent's blackholes are not).
pub fn made_by_bgpd(r: &Route) -> bool {
    r.kind == RouteKind::Unicast
        && !r.next_hops.is_empty()
        && r.next_hops.iter().all(|h| h.gateway.is_some() && !h.onlink)
}

/// One kernel route as reachability sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    destination: IpNet,
    metric: u32,
    forwards: bool,
    /// The route's next hops that have a gateway (with their device,
    /// on-link flag and weight); empty for a route straight onto a device
    /// (a connected subnet).
    gateways: Vec<NextHop>,
}

/// Routes that decide reachability, most specific (then lowest metric)
/// first, so the first one covering an address is the kernel's choice.
fn snapshot(routes: &[InstalledRoute]) -> Vec<Entry> {
    let mut v: Vec<Entry> = routes
        .iter()
        .filter(|r| !matches!(r.route.kind, RouteKind::Other(_)))
        .filter(|r| !(r.protocol == TABBY_PROTOCOL && made_by_bgpd(&r.route)))
        .map(|r| Entry {
            destination: r.route.destination,
            metric: r.route.metric,
            forwards: r.route.kind == RouteKind::Unicast,
            gateways: r
                .route
                .next_hops
                .iter()
                .filter(|h| h.gateway.is_some())
                // Never on-link: a route of ours must stay recognisable
                // as bgpd's (`made_by_bgpd`), or it would count toward
                // resolving other next hops.
                .map(|h| NextHop {
                    onlink: false,
                    ..h.clone()
                })
                .collect(),
        })
        .collect();
    v.sort_by(|a, b| {
        b.destination
            .prefix_len()
            .cmp(&a.destination.prefix_len())
            .then(a.metric.cmp(&b.metric))
            .then(a.destination.cmp(&b.destination))
    });
    v
}

/// The kernel's view of which next hops are reachable; cheap to clone
/// (clones share the snapshot).
#[derive(Debug, Clone, Default)]
pub struct KernelNextHops {
    table: Arc<RwLock<Vec<Entry>>>,
    changed: Arc<Notify>,
}

impl KernelNextHops {
    /// Reads the main table of the calling thread's namespace.
    pub fn load(nl: &mut Netlink) -> tabby_dataplane::Result<KernelNextHops> {
        let k = KernelNextHops::default();
        k.reload(nl)?;
        Ok(k)
    }

    /// A snapshot of `routes` (for tests of the FIB's resolution).
    #[cfg(test)]
    pub(crate) fn from_installed(routes: &[InstalledRoute]) -> KernelNextHops {
        let k = KernelNextHops::default();
        if let Ok(mut t) = k.table.write() {
            *t = snapshot(routes);
        }
        k
    }

    /// Re-reads the table; true if reachability may have changed.
    fn reload(&self, nl: &mut Netlink) -> tabby_dataplane::Result<bool> {
        let fresh = snapshot(&nl.list_routes(Some(RouteTable::MAIN))?);
        let Ok(mut t) = self.table.write() else {
            return Ok(false);
        };
        if *t == fresh {
            return Ok(false);
        }
        *t = fresh;
        drop(t);
        self.changed.notify_one();
        Ok(true)
    }

    /// Notified each time the snapshot changes (the FIB thread waits on
    /// it to re-resolve recursive next hops).
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// How to forward to BGP next hop `next_hop` (recursive resolution):
    /// itself when the most specific covering route is a connected or
    /// device route, else that route's gateway next hops (device and ECMP
    /// weight kept);
    /// `None` when it is unreachable (see [`KernelNextHops::reachable`]).
    pub fn forwarding(&self, next_hop: IpAddr) -> Option<Vec<NextHop>> {
        let t = self.table.read().ok()?;
        let e = t.iter().find(|e| e.destination.contains(&next_hop))?;
        if !e.forwards {
            return None;
        }
        if e.gateways.is_empty() {
            return Some(vec![NextHop::via(next_hop)]);
        }
        Some(e.gateways.clone())
    }

    /// True if `next_hop` is reachable (see the module documentation).
    pub fn reachable(&self, next_hop: IpAddr) -> bool {
        let Ok(t) = self.table.read() else {
            return false;
        };
        t.iter()
            .find(|e| e.destination.contains(&next_hop))
            .is_some_and(|e| e.forwards)
    }
}

impl NextHopResolver for KernelNextHops {
    fn resolve(&self, next_hop: IpAddr) -> Option<u32> {
        // Kernel metrics are not IGP costs: every reachable next hop is
        // equally near, so the decision process goes on to later steps.
        self.reachable(next_hop).then_some(0)
    }
}

/// True if `e` may change reachability (bgpd's own routes cannot).
fn relevant(e: &RouteEvent) -> bool {
    match e {
        RouteEvent::Added(r) | RouteEvent::Removed(r) => {
            !(r.protocol == TABBY_PROTOCOL && made_by_bgpd(&r.route))
        }
        _ => true,
    }
}

/// Keeps `next_hops` current until `changed` closes; sends `()` on
/// `changed` each time reachability may have changed. Runs on a thread of
/// its own (netlink calls block) in bgpd's namespace.
pub fn watch(mut nl: Netlink, next_hops: KernelNextHops, changed: mpsc::UnboundedSender<()>) {
    let mut monitor = match RouteMonitor::open() {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("next hops: no route notifications ({e}), re-reading every few seconds");
            None
        }
    };
    let period = if monitor.is_some() {
        REREAD
    } else {
        REREAD_WITHOUT_MONITOR
    };
    let mut last_read = Instant::now();
    // Catch changes between the first read and the subscription.
    let mut dirty = true;
    while !changed.is_closed() {
        match monitor.as_mut() {
            Some(m) => match m.next(Some(Duration::from_secs(1))) {
                Ok(events) => dirty |= events.iter().any(relevant),
                Err(e) => {
                    tracing::warn!("next hops: route notifications failed: {e}");
                    monitor = None;
                }
            },
            None => std::thread::sleep(Duration::from_secs(1)),
        }
        if !dirty && last_read.elapsed() < period {
            continue;
        }
        if dirty {
            // Gather the rest of a burst (a link going down removes many
            // routes) before reading once.
            let until = Instant::now() + SETTLE;
            while let Some(m) = monitor.as_mut() {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() || m.next(Some(left)).is_err() {
                    break;
                }
            }
        }
        dirty = false;
        last_read = Instant::now();
        match next_hops.reload(&mut nl) {
            Ok(true) => {
                tracing::debug!("next hops: kernel routes changed, re-evaluating");
                let _ = changed.send(());
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("next hops: cannot read kernel routes: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabby_dataplane::NextHop;

    fn installed(route: Route, protocol: u8) -> InstalledRoute {
        InstalledRoute { route, protocol }
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn most_specific_route_decides_and_bgp_routes_do_not_count() {
        let k = KernelNextHops::default();
        *k.table.write().expect("lock") = snapshot(&[
            installed(Route::dev(net("10.1.0.0/24"), 2), 2),
            installed(Route::blackhole(net("10.1.0.128/25")), 4),
            installed(
                Route::via(net("10.2.0.0/16"), ip("10.1.0.1")),
                TABBY_PROTOCOL,
            ),
            installed(Route::via(net("10.3.0.0/16"), ip("10.1.0.1")), 4),
            installed(Route::dev(net("10.4.0.5/32"), 3), TABBY_PROTOCOL),
            installed(
                Route::multipath(
                    net("10.5.0.0/16"),
                    vec![NextHop::via(ip("10.1.0.9")).with_onlink()],
                ),
                TABBY_PROTOCOL,
            ),
        ]);
        assert!(k.reachable(ip("10.1.0.7")), "connected");
        assert!(!k.reachable(ip("10.1.0.200")), "blackhole more specific");
        assert!(!k.reachable(ip("10.2.0.1")), "only a BGP route covers it");
        assert!(k.reachable(ip("10.3.0.1")), "static");
        assert!(k.reachable(ip("10.4.0.5")), "CNI device route");
        assert!(k.reachable(ip("10.5.0.1")), "on-link route is not bgpd's");
        assert!(!k.reachable(ip("192.168.0.1")), "no route");
        assert_eq!(k.resolve(ip("10.1.0.7")), Some(0));
        assert_eq!(k.resolve(ip("10.2.0.1")), None);
    }

    #[test]
    fn next_hops_behind_a_router_resolve_to_its_gateways() {
        let k = KernelNextHops::default();
        let ecmp = Route::multipath(
            net("10.7.0.0/16"),
            vec![
                NextHop {
                    device: Some(2),
                    ..NextHop::via(ip("10.1.0.1"))
                },
                NextHop {
                    device: Some(3),
                    ..NextHop::via(ip("10.1.1.1"))
                },
            ],
        );
        *k.table.write().expect("lock") = snapshot(&[
            installed(Route::dev(net("10.1.0.0/24"), 2), 2),
            installed(Route::via(net("10.2.0.0/16"), ip("10.1.0.1")), 4),
            installed(ecmp, 4),
            installed(
                Route::via(net("10.3.0.0/16"), ip("10.1.0.1")),
                TABBY_PROTOCOL,
            ),
            installed(Route::blackhole(net("10.2.9.0/24")), 4),
        ]);
        let gw = |s: &str| {
            k.forwarding(ip(s))
                .map(|v| v.iter().map(|h| h.gateway).collect::<Vec<_>>())
        };
        assert_eq!(
            gw("10.1.0.7"),
            Some(vec![Some(ip("10.1.0.7"))]),
            "connected: as is"
        );
        assert_eq!(
            gw("10.2.5.7"),
            Some(vec![Some(ip("10.1.0.1"))]),
            "via the static route's gateway"
        );
        assert_eq!(
            gw("10.7.0.9"),
            Some(vec![Some(ip("10.1.0.1")), Some(ip("10.1.1.1"))]),
            "ECMP underlying route"
        );
        assert_eq!(gw("10.3.0.1"), None, "only our own BGP route covers it");
        assert_eq!(gw("10.2.9.1"), None, "blackhole");
        assert_eq!(gw("192.168.0.1"), None, "no route");
    }

    #[test]
    fn bgpd_owns_only_gateway_routes() {
        assert!(made_by_bgpd(&Route::via(
            net("10.2.0.0/16"),
            ip("10.1.0.1")
        )));
        assert!(!made_by_bgpd(&Route::dev(net("10.4.0.5/32"), 3)));
        assert!(!made_by_bgpd(&Route::blackhole(net("10.4.0.0/26"))));
    }
}
