//! Kernel routes: tabby's own route types ([`Route`], [`NextHop`],
//! [`RouteTable`]), their encoding to and from rtnetlink, and the route
//! operations on a [`Netlink`] socket: add / replace / delete one route,
//! list ours, apply a batch of changes in one burst, and reconcile the kernel
//! with a desired set.
//!
//! Every route tabby writes carries protocol [`TABBY_PROTOCOL`] (201,
//! `proto tabby` in `ip route`). Deletes name that protocol too, so the
//! kernel itself refuses to remove a route of another protocol; reconcile
//! also never replaces a foreign route that has the same key as a desired one
//! (it reports a conflict instead).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::Parseable;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteNextHopFlags, RouteProtocol, RouteScope, RouteType, RouteVia,
};

use crate::error::{Error, KernelError, Result};
use crate::netlink::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, Netlink, Request};

/// The kernel route protocol number tabby tags its routes with
/// (`/etc/iproute2/rt_protos.d/tabby.conf`: `201 tabby`).
pub const TABBY_PROTOCOL: u8 = 201;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
/// The metric the kernel gives an IPv6 route added with metric 0.
const IPV6_DEFAULT_METRIC: u32 = 1024;

/// A kernel routing table id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteTable(pub u32);

impl RouteTable {
    /// The main table (254), where `ip route` looks by default.
    pub const MAIN: RouteTable = RouteTable(254);
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable::MAIN
    }
}

impl fmt::Display for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the kernel does with packets a route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RouteKind {
    /// Forward via the route's next hops.
    Unicast,
    /// Drop silently (tabby's route for each local address block).
    Blackhole,
    /// Drop with ICMP unreachable.
    Unreachable,
    /// Drop with ICMP administratively prohibited.
    Prohibit,
    /// Any other kernel route type (local, broadcast, ...), read back only.
    Other(u8),
}

/// One next hop of a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The gateway; `None` for a route straight onto `device`.
    pub gateway: Option<IpAddr>,
    /// The outgoing interface index; `None` lets the kernel resolve it from
    /// the gateway.
    pub device: Option<u32>,
    /// Treat the gateway as directly reachable on `device` even if no
    /// address of that interface covers it (IPIP `tunl0` routes, /32 pods).
    pub onlink: bool,
    /// Share of ECMP traffic, 1..=256 (1 when there is one next hop).
    pub weight: u16,
}

impl NextHop {
    /// Via `gateway`, interface resolved by the kernel.
    pub fn via(gateway: IpAddr) -> NextHop {
        NextHop {
            gateway: Some(gateway),
            device: None,
            onlink: false,
            weight: 1,
        }
    }

    /// Straight out of interface `device` (no gateway).
    pub fn dev(device: u32) -> NextHop {
        NextHop {
            gateway: None,
            device: Some(device),
            onlink: false,
            weight: 1,
        }
    }

    /// Sets the outgoing interface.
    pub fn with_device(mut self, device: u32) -> NextHop {
        self.device = Some(device);
        self
    }

    /// Marks the gateway as on-link.
    pub fn with_onlink(mut self) -> NextHop {
        self.onlink = true;
        self
    }

    /// Sets the ECMP weight (1..=256).
    pub fn with_weight(mut self, weight: u16) -> NextHop {
        self.weight = weight;
        self
    }

    /// True if `self`, as read back from the kernel, is what `desired` asks
    /// for (a desired next hop without a device accepts any device).
    fn satisfies(&self, desired: &NextHop) -> bool {
        self.gateway == desired.gateway
            && (desired.device.is_none() || self.device == desired.device)
            && self.onlink == desired.onlink
            && self.weight == desired.weight
    }
}

/// A route as tabby programs it: a destination in a table, with next hops
/// (several for ECMP) or a drop kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The destination prefix (host bits must be zero).
    pub destination: IpNet,
    /// The table it lives in.
    pub table: RouteTable,
    /// The metric (`ip route ... metric N`); 0 for IPv6 means the kernel's 1024.
    pub metric: u32,
    /// Forward, or drop.
    pub kind: RouteKind,
    /// Next hops of a unicast route: one, or several for ECMP. Empty for a
    /// blackhole/unreachable/prohibit route.
    pub next_hops: Vec<NextHop>,
    /// Preferred source address (`src`).
    pub source: Option<IpAddr>,
}

impl Route {
    /// A unicast route to `destination` via `gateway` in the main table.
    pub fn via(destination: IpNet, gateway: IpAddr) -> Route {
        Route::multipath(destination, vec![NextHop::via(gateway)])
    }

    /// A unicast route to `destination` with these next hops (ECMP if several).
    pub fn multipath(destination: IpNet, next_hops: Vec<NextHop>) -> Route {
        Route {
            destination,
            table: RouteTable::MAIN,
            metric: 0,
            kind: RouteKind::Unicast,
            next_hops,
            source: None,
        }
    }

    /// A route to `destination` straight out of interface `device`.
    pub fn dev(destination: IpNet, device: u32) -> Route {
        Route::multipath(destination, vec![NextHop::dev(device)])
    }

    /// A blackhole route to `destination` in the main table.
    pub fn blackhole(destination: IpNet) -> Route {
        Route {
            destination,
            table: RouteTable::MAIN,
            metric: 0,
            kind: RouteKind::Blackhole,
            next_hops: Vec::new(),
            source: None,
        }
    }

    /// Puts the route in `table`.
    pub fn in_table(mut self, table: RouteTable) -> Route {
        self.table = table;
        self
    }

    /// Sets the metric.
    pub fn with_metric(mut self, metric: u32) -> Route {
        self.metric = metric;
        self
    }

    /// Sets the preferred source address.
    pub fn with_source(mut self, source: IpAddr) -> Route {
        self.source = Some(source);
        self
    }

    /// The kernel's identity of this route: no two routes in the kernel share it.
    pub fn key(&self) -> RouteKey {
        RouteKey {
            destination: self.destination,
            table: self.table,
            metric: self.effective_metric(),
        }
    }

    fn effective_metric(&self) -> u32 {
        match self.destination {
            IpNet::V6(_) if self.metric == 0 => IPV6_DEFAULT_METRIC,
            _ => self.metric,
        }
    }

    /// True if `self` (read back from the kernel) is what `desired` asks for.
    pub fn satisfies(&self, desired: &Route) -> bool {
        self.key() == desired.key()
            && self.kind == desired.kind
            && (desired.source.is_none() || self.source == desired.source)
            && self.next_hops.len() == desired.next_hops.len()
            && desired
                .next_hops
                .iter()
                .all(|d| self.next_hops.iter().any(|h| h.satisfies(d)))
    }

    /// Checks what the kernel would refuse less clearly; `field` prefixes
    /// the names in the error (`routes[3]`).
    pub fn validate(&self, field: &str) -> Result<()> {
        self.check().map_err(|(f, reason)| Error::Invalid {
            field: format!("{field}.{f}"),
            reason,
        })
    }

    /// [`Route::validate`] without building any string unless it fails:
    /// the failing field (relative to the route) and the reason.
    pub(crate) fn check(&self) -> std::result::Result<(), (String, String)> {
        let invalid = |f: &str, reason: String| Err((f.to_owned(), reason));
        if self.destination.trunc() != self.destination {
            return invalid(
                "destination",
                format!(
                    "{} has host bits set (the prefix is {})",
                    self.destination,
                    self.destination.trunc()
                ),
            );
        }
        let v4 = matches!(self.destination, IpNet::V4(_));
        if let Some(src) = self.source {
            if src.is_ipv4() != v4 {
                return invalid(
                    "source",
                    format!("{src} is not of the destination's family"),
                );
            }
        }
        match self.kind {
            RouteKind::Unicast => {
                if self.next_hops.is_empty() {
                    return invalid("next_hops", "a unicast route needs a next hop".into());
                }
            }
            RouteKind::Other(t) => {
                return invalid("kind", format!("tabby does not program route type {t}"));
            }
            _ => {
                if !self.next_hops.is_empty() {
                    return invalid("next_hops", "a drop route has no next hops".into());
                }
            }
        }
        for (i, nh) in self.next_hops.iter().enumerate() {
            if nh.gateway.is_none() && nh.device.is_none() {
                return invalid(
                    &format!("next_hops[{i}]"),
                    "needs a gateway or a device".into(),
                );
            }
            if let Some(gw) = nh.gateway {
                // An IPv4 route may use an IPv6 gateway (RFC 5549, RTA_VIA);
                // the reverse does not exist.
                if gw.is_ipv4() && !v4 {
                    return invalid(
                        &format!("next_hops[{i}].gateway"),
                        format!("{gw} is IPv4; an IPv6 route needs an IPv6 gateway"),
                    );
                }
            }
            if nh.onlink && nh.device.is_none() {
                return invalid(
                    &format!("next_hops[{i}].onlink"),
                    "an on-link next hop needs a device".into(),
                );
            }
            if !(1..=256).contains(&nh.weight) {
                return invalid(
                    &format!("next_hops[{i}].weight"),
                    format!("{} is not in 1..=256", nh.weight),
                );
            }
        }
        Ok(())
    }

    fn family(&self) -> AddressFamily {
        match self.destination {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        }
    }

    fn header(&self) -> RouteHeader {
        let mut h = RouteHeader {
            address_family: self.family(),
            destination_prefix_length: self.destination.prefix_len(),
            table: u8::try_from(self.table.0).unwrap_or(RouteHeader::RT_TABLE_UNSPEC),
            protocol: RouteProtocol::from(TABBY_PROTOCOL),
            ..Default::default()
        };
        h.kind = match self.kind {
            RouteKind::Unicast => RouteType::Unicast,
            RouteKind::Blackhole => RouteType::BlackHole,
            RouteKind::Unreachable => RouteType::Unreachable,
            RouteKind::Prohibit => RouteType::Prohibit,
            RouteKind::Other(t) => RouteType::from(t),
        };
        h.scope = match self.next_hops.as_slice() {
            [nh] if nh.gateway.is_none() => RouteScope::Link,
            _ => RouteScope::Universe,
        };
        h
    }

    pub(crate) fn to_message(&self) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header = self.header();
        let a = &mut m.attributes;
        a.push(RouteAttribute::Table(self.table.0));
        if self.destination.prefix_len() > 0 {
            a.push(RouteAttribute::Destination(self.destination.addr().into()));
        }
        if self.metric != 0 {
            a.push(RouteAttribute::Priority(self.metric));
        }
        if let Some(src) = self.source {
            a.push(RouteAttribute::PrefSource(src.into()));
        }
        match self.next_hops.as_slice() {
            [] => {}
            [nh] => {
                if let Some(gw) = nh.gateway {
                    a.push(gateway_attribute(&self.destination, gw));
                }
                if let Some(dev) = nh.device {
                    a.push(RouteAttribute::Oif(dev));
                }
                if nh.onlink {
                    m.header.flags |= RouteFlags::Onlink;
                }
            }
            hops => {
                let hops = hops
                    .iter()
                    .map(|nh| {
                        let mut h = RouteNextHop::default();
                        if let Some(gw) = nh.gateway {
                            h.attributes.push(gateway_attribute(&self.destination, gw));
                        }
                        h.interface_index = nh.device.unwrap_or(0);
                        if nh.onlink {
                            h.flags |= RouteNextHopFlags::Onlink;
                        }
                        h.hops = u8::try_from(nh.weight.saturating_sub(1)).unwrap_or(u8::MAX);
                        h
                    })
                    .collect();
                a.push(RouteAttribute::MultiPath(hops));
            }
        }
        m
    }

    /// The delete request: key and protocol only, so the kernel removes
    /// our route with that key and never another protocol's.
    fn to_delete_message(&self) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header = RouteHeader {
            address_family: self.family(),
            destination_prefix_length: self.destination.prefix_len(),
            table: u8::try_from(self.table.0).unwrap_or(RouteHeader::RT_TABLE_UNSPEC),
            protocol: RouteProtocol::from(TABBY_PROTOCOL),
            scope: RouteScope::NoWhere,
            kind: RouteType::Unspec,
            ..Default::default()
        };
        m.attributes.push(RouteAttribute::Table(self.table.0));
        if self.destination.prefix_len() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(self.destination.addr().into()));
        }
        let metric = self.effective_metric();
        if metric != 0 {
            m.attributes.push(RouteAttribute::Priority(metric));
        }
        m
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RouteKind::Unicast => {}
            RouteKind::Blackhole => write!(f, "blackhole ")?,
            RouteKind::Unreachable => write!(f, "unreachable ")?,
            RouteKind::Prohibit => write!(f, "prohibit ")?,
            RouteKind::Other(t) => write!(f, "type {t} ")?,
        }
        write!(f, "{}", self.destination)?;
        for nh in &self.next_hops {
            if self.next_hops.len() > 1 {
                write!(f, " nexthop")?;
            }
            if let Some(gw) = nh.gateway {
                write!(f, " via {gw}")?;
            }
            if let Some(dev) = nh.device {
                write!(f, " dev #{dev}")?;
            }
            if nh.onlink {
                write!(f, " onlink")?;
            }
            if self.next_hops.len() > 1 {
                write!(f, " weight {}", nh.weight)?;
            }
        }
        if self.metric != 0 {
            write!(f, " metric {}", self.metric)?;
        }
        write!(f, " table {}", self.table)
    }
}

/// The kernel's identity of a route: destination, table and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// Destination prefix.
    pub destination: IpNet,
    /// Table.
    pub table: RouteTable,
    /// Metric as the kernel stores it (IPv6 0 becomes 1024).
    pub metric: u32,
}

/// A route read back from the kernel, with the protocol that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRoute {
    /// The route.
    pub route: Route,
    /// Its kernel protocol number ([`TABBY_PROTOCOL`] for ours; 2 kernel,
    /// 3 boot, 4 static, ...).
    pub protocol: u8,
}

/// The gateway attribute: `RTA_GATEWAY`, or `RTA_VIA` for an IPv6 gateway
/// of an IPv4 route.
fn gateway_attribute(destination: &IpNet, gw: IpAddr) -> RouteAttribute {
    match (destination, gw) {
        (IpNet::V4(_), IpAddr::V6(v6)) => RouteAttribute::Via(RouteVia::Inet6(v6)),
        _ => RouteAttribute::Gateway(gw.into()),
    }
}

fn via_of(v: &RouteVia) -> Option<IpAddr> {
    match v {
        RouteVia::Inet(a) => Some(IpAddr::V4(*a)),
        RouteVia::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Decodes a kernel route message; `None` for what is not IPv4/IPv6 or
/// not a route tabby could describe (cloned cache entries).
pub(crate) fn decode(m: &RouteMessage) -> Option<InstalledRoute> {
    let v4 = match m.header.address_family {
        AddressFamily::Inet => true,
        AddressFamily::Inet6 => false,
        _ => return None,
    };
    if m.header.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut table = RouteTable(u32::from(m.header.table));
    let mut dst: Option<IpAddr> = None;
    let mut metric = 0;
    let mut source = None;
    let mut gateway = None;
    let mut oif = None;
    let mut hops = Vec::new();
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = RouteTable(*t),
            RouteAttribute::Destination(d) => dst = ip_of(d),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::PrefSource(s) => source = ip_of(s),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::Via(v) => gateway = via_of(v),
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::MultiPath(nhs) => {
                for nh in nhs {
                    let gw = nh.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => ip_of(g),
                        RouteAttribute::Via(v) => via_of(v),
                        _ => None,
                    });
                    hops.push(NextHop {
                        gateway: gw,
                        device: (nh.interface_index != 0).then_some(nh.interface_index),
                        onlink: nh.flags.contains(RouteNextHopFlags::Onlink),
                        weight: u16::from(nh.hops) + 1,
                    });
                }
            }
            _ => {}
        }
    }
    let addr = dst.unwrap_or(if v4 {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    });
    let destination = IpNet::new(addr, m.header.destination_prefix_length).ok()?;
    let kind = match m.header.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        other => RouteKind::Other(other.into()),
    };
    if hops.is_empty() && (gateway.is_some() || oif.is_some()) {
        hops.push(NextHop {
            gateway,
            device: oif,
            onlink: m.header.flags.contains(RouteFlags::Onlink),
            weight: 1,
        });
    }
    if kind != RouteKind::Unicast {
        hops.clear();
    }
    Some(InstalledRoute {
        route: Route {
            destination,
            table,
            metric,
            kind,
            next_hops: hops,
            source,
        },
        protocol: m.header.protocol.into(),
    })
}

/// One change of a route batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Add; fails with `EEXIST` if a route with the same key exists.
    Add(Route),
    /// Add, or replace the route with the same key.
    Replace(Route),
    /// Delete our route with this key (next hops are not compared).
    Delete(Route),
}

impl RouteChange {
    /// The route the change is about.
    pub fn route(&self) -> &Route {
        match self {
            RouteChange::Add(r) | RouteChange::Replace(r) | RouteChange::Delete(r) => r,
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            RouteChange::Add(_) => "add",
            RouteChange::Replace(_) => "replace",
            RouteChange::Delete(_) => "delete",
        }
    }
}

/// The outcome of a batch: which changes failed and why; all others were
/// applied.
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Changes the kernel accepted.
    pub applied: usize,
    /// Each failed change: its index in the batch and the error
    /// ([`Error::Invalid`] before sending, [`Error::Kernel`] from the kernel).
    pub failures: Vec<(usize, Error)>,
}

impl BatchReport {
    /// True if every change was applied.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What [`Netlink::reconcile_routes`] did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    /// Desired routes that were missing and were added.
    pub added: usize,
    /// Our routes whose next hops or kind differed and were replaced.
    pub replaced: usize,
    /// Our routes that are not desired and were deleted.
    pub deleted: usize,
    /// Desired routes already installed as asked.
    pub unchanged: usize,
    /// Desired routes whose key is held by another protocol's route: left
    /// alone, with that protocol's number.
    pub conflicts: Vec<(Route, u8)>,
    /// Changes that failed (route and error).
    pub failures: Vec<(Route, Error)>,
}

fn dump_request(
    family: AddressFamily,
    table: Option<RouteTable>,
    protocol: Option<u8>,
) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unspec;
    if let Some(p) = protocol {
        m.header.protocol = RouteProtocol::from(p);
    }
    if let Some(t) = table {
        m.header.table = u8::try_from(t.0).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        m.attributes.push(RouteAttribute::Table(t.0));
    }
    m
}

impl Netlink {
    /// Adds `route` (tagged `proto tabby`); fails if its key is taken.
    pub fn add_route(&mut self, route: &Route) -> Result<()> {
        self.change_route(&RouteChange::Add(route.clone()))
    }

    /// Adds `route`, or replaces the route with the same key.
    pub fn replace_route(&mut self, route: &Route) -> Result<()> {
        self.change_route(&RouteChange::Replace(route.clone()))
    }

    /// Deletes our route with `route`'s key; never another protocol's.
    pub fn delete_route(&mut self, route: &Route) -> Result<()> {
        self.change_route(&RouteChange::Delete(route.clone()))
    }

    fn change_route(&mut self, change: &RouteChange) -> Result<()> {
        let route = change.route();
        route.validate("route")?;
        let (kind, flags, msg) = encode_change(change);
        self.request_ok(kind, flags, &msg, || {
            format!("{} route {route}", change.verb())
        })
    }

    /// Applies `changes` in one pipelined burst (a thousand requests per
    /// system call, only failures answered). Invalid changes are not sent;
    /// every failure is reported with its index, the rest are applied.
    pub fn apply_routes(&mut self, changes: &[RouteChange]) -> Result<BatchReport> {
        let mut report = BatchReport::default();
        let mut messages = Vec::with_capacity(changes.len());
        let mut indexes = Vec::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            match c.route().check() {
                Ok(()) => {
                    messages.push(encode_change(c));
                    indexes.push(i);
                }
                Err((field, reason)) => report.failures.push((
                    i,
                    Error::Invalid {
                        field: format!("changes[{i}].{field}"),
                        reason,
                    },
                )),
            }
        }
        let requests: Vec<Request<'_>> = messages
            .iter()
            .map(|(kind, flags, body)| Request {
                kind: *kind,
                flags: *flags,
                body,
            })
            .collect();
        let failed = self.batch(&requests)?;
        report.applied = requests.len() - failed.len();
        for (j, source) in failed {
            let i = indexes[j];
            let c = &changes[i];
            report.failures.push((
                i,
                Error::Kernel {
                    operation: format!("{} route {}", c.verb(), c.route()),
                    source,
                },
            ));
        }
        report.failures.sort_by_key(|(i, _)| *i);
        Ok(report)
    }

    /// Every IPv4 and IPv6 route of every protocol, in `table` (or all tables).
    pub fn list_routes(&mut self, table: Option<RouteTable>) -> Result<Vec<InstalledRoute>> {
        self.dump_routes(table, None)
    }

    /// tabby's own routes (protocol [`TABBY_PROTOCOL`]) in `table` (or all).
    pub fn routes(&mut self, table: Option<RouteTable>) -> Result<Vec<Route>> {
        Ok(self
            .dump_routes(table, Some(TABBY_PROTOCOL))?
            .into_iter()
            .map(|r| r.route)
            .collect())
    }

    fn dump_routes(
        &mut self,
        table: Option<RouteTable>,
        protocol: Option<u8>,
    ) -> Result<Vec<InstalledRoute>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let req = dump_request(family, table, protocol);
            let res = self.dump(RTM_GETROUTE, &req, |payload| {
                let m = RouteMessage::parse(payload)
                    .map_err(|e| Error::Decode(format!("route message: {e}")))?;
                if let Some(r) = decode(&m) {
                    let wanted_table = table.is_none_or(|t| r.route.table == t);
                    let wanted_proto = protocol.is_none_or(|p| r.protocol == p);
                    if wanted_table && wanted_proto {
                        out.push(r);
                    }
                }
                Ok(())
            });
            match res {
                // A table that does not exist yet holds no routes.
                Err(Error::Kernel { source, .. }) if source.errno == libc::ENOENT => {}
                other => other?,
            }
        }
        Ok(out)
    }

    /// Makes tabby's routes in `table` exactly `desired`: adds what is
    /// missing, replaces what differs, deletes our routes not desired.
    /// Routes of other protocols are never changed, even when one holds the
    /// key of a desired route (reported in [`ReconcileReport::conflicts`]).
    ///
    /// This manages **every** `proto tabby` route in the table. Where
    /// several tabby components share a table (the CNI plugin's host routes
    /// to pods, the agent's block blackholes, `bgpd`'s learned routes), each
    /// uses [`Netlink::reconcile_routes_owned`] instead.
    pub fn reconcile_routes(
        &mut self,
        table: RouteTable,
        desired: &[Route],
    ) -> Result<ReconcileReport> {
        self.reconcile_routes_owned(table, desired, |_| true)
    }

    /// Like [`Netlink::reconcile_routes`], but only our installed routes for
    /// which `owns` is true are candidates for deletion or replacement; our
    /// other routes are left alone like other protocols' routes (a desired
    /// route whose key one of them holds is reported as a conflict with
    /// protocol [`TABBY_PROTOCOL`]). Example: `bgpd` owns the routes that
    /// have a gateway, so it never removes the CNI plugin's device routes
    /// to pods.
    pub fn reconcile_routes_owned(
        &mut self,
        table: RouteTable,
        desired: &[Route],
        owns: impl Fn(&Route) -> bool,
    ) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let mut wanted: HashMap<RouteKey, &Route> = HashMap::with_capacity(desired.len());
        for (i, r) in desired.iter().enumerate() {
            r.validate(&format!("desired[{i}]"))?;
            if r.table != table {
                return Err(Error::Invalid {
                    field: format!("desired[{i}].table"),
                    reason: format!("{} is not the table being reconciled ({table})", r.table),
                });
            }
            if wanted.insert(r.key(), r).is_some() {
                return Err(Error::Invalid {
                    field: format!("desired[{i}].destination"),
                    reason: format!("{} appears twice with the same metric", r.destination),
                });
            }
        }
        let installed = self.list_routes(Some(table))?;
        let mut ours: HashMap<RouteKey, Route> = HashMap::new();
        let mut foreign: HashMap<RouteKey, u8> = HashMap::new();
        for r in installed {
            if r.protocol == TABBY_PROTOCOL && owns(&r.route) {
                ours.insert(r.route.key(), r.route);
            } else if matches!(r.route.kind, RouteKind::Other(_)) {
                // local/broadcast entries live in their own tables; ignore.
            } else {
                foreign.insert(r.route.key(), r.protocol);
            }
        }
        let mut changes = Vec::new();
        for r in desired {
            let key = r.key();
            match ours.get(&key) {
                Some(have) if have.satisfies(r) => report.unchanged += 1,
                Some(_) => changes.push(RouteChange::Replace(r.clone())),
                None => match foreign.get(&key) {
                    Some(p) => report.conflicts.push((r.clone(), *p)),
                    None => changes.push(RouteChange::Add(r.clone())),
                },
            }
        }
        for (key, r) in &ours {
            if !wanted.contains_key(key) {
                changes.push(RouteChange::Delete(r.clone()));
            }
        }
        let batch = self.apply_routes(&changes)?;
        let mut failed = vec![false; changes.len()];
        for (i, e) in batch.failures {
            failed[i] = true;
            report.failures.push((changes[i].route().clone(), e));
        }
        for (c, failed) in changes.iter().zip(failed) {
            if failed {
                continue;
            }
            match c {
                RouteChange::Add(_) => report.added += 1,
                RouteChange::Replace(_) => report.replaced += 1,
                RouteChange::Delete(_) => report.deleted += 1,
            }
        }
        Ok(report)
    }
}

pub(crate) fn encode_change(c: &RouteChange) -> (u16, u16, RouteMessage) {
    match c {
        RouteChange::Add(r) => (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, r.to_message()),
        RouteChange::Replace(r) => (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, r.to_message()),
        RouteChange::Delete(r) => (RTM_DELROUTE, 0, r.to_delete_message()),
    }
}

/// Whether a kernel error on delete only means the route was already gone.
pub fn is_already_gone(e: &KernelError) -> bool {
    e.is_not_found()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn round_trip(r: &Route) -> Route {
        let m = r.to_message();
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        let back = RouteMessage::parse(&buf[..]).expect("parses");
        let d = decode(&back).expect("decodes");
        assert_eq!(d.protocol, TABBY_PROTOCOL);
        d.route
    }

    #[test]
    fn encode_decode_round_trip() {
        let routes = [
            Route::via(net("10.1.0.0/26"), ip("192.168.1.2")),
            Route::blackhole(net("10.2.0.0/26")).in_table(RouteTable(1000)),
            Route::multipath(
                net("10.3.0.0/24"),
                vec![
                    NextHop::via(ip("10.0.0.1")).with_device(3).with_weight(2),
                    NextHop::via(ip("10.0.1.1")).with_device(4).with_onlink(),
                ],
            )
            .with_metric(20),
            Route::via(net("fd00:1::/64"), ip("fd00::1")).with_source(ip("fd00::2")),
            Route::dev(net("0.0.0.0/0"), 7),
            Route::via(net("10.4.0.0/24"), ip("fd00::1")),
            Route::multipath(
                net("10.5.0.0/24"),
                vec![NextHop::via(ip("fd00::1")), NextHop::via(ip("fd00::2"))],
            ),
        ];
        for r in &routes {
            r.validate("route").expect("valid");
            assert_eq!(&round_trip(r), r);
        }
    }

    #[test]
    fn validation_names_the_field() {
        let bad = Route::via(net("fd00:1::/64"), ip("10.0.0.1"));
        let e = bad.validate("routes[2]").expect_err("family mismatch");
        assert!(
            e.to_string().contains("routes[2].next_hops[0].gateway"),
            "{e}"
        );
        let host_bits = Route::blackhole(IpNet::new(ip("10.1.0.1"), 24).expect("net"));
        assert!(
            host_bits
                .validate("r")
                .expect_err("host bits")
                .to_string()
                .contains("r.destination")
        );
        let w = Route::multipath(
            net("10.0.0.0/8"),
            vec![NextHop::via(ip("1.1.1.1")).with_weight(0)],
        );
        assert!(
            w.validate("r")
                .expect_err("weight")
                .to_string()
                .contains("weight")
        );
        let empty = Route::multipath(net("10.0.0.0/8"), vec![]);
        assert!(empty.validate("r").is_err());
    }

    #[test]
    fn satisfies_ignores_kernel_resolved_device_and_v6_default_metric() {
        let desired = Route::via(net("fd00:2::/64"), ip("fd00::1"));
        let mut installed = desired.clone();
        installed.metric = 1024;
        installed.next_hops[0].device = Some(5);
        assert!(installed.satisfies(&desired));
        installed.next_hops[0].gateway = Some(ip("fd00::9"));
        assert!(!installed.satisfies(&desired));
    }
}
