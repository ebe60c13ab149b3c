//! Routes as text, in the `ip route` syntax network engineers already
//! read: parsing (for the CLI and route files) and printing with device
//! names. Device names are resolved by the caller's closure, so this module
//! does no I/O.
//!
//! ```text
//! [blackhole|unreachable|prohibit] PREFIX|default
//!     [via GW] [dev NAME] [onlink]
//!     [nexthop via GW [dev NAME] [onlink] [weight N]]...
//!     [table N] [metric N] [src ADDR]
//! ```

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::route::{NextHop, Route, RouteKind, RouteTable};

fn invalid(reason: String) -> Error {
    Error::Invalid {
        field: "route".into(),
        reason,
    }
}

fn parse_prefix(s: &str) -> Result<IpNet> {
    if s == "default" {
        return Ok(IpNet::V4(ipnet::Ipv4Net::default()));
    }
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n);
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        invalid(format!(
            "{s:?} is not a prefix (10.0.0.0/24, fd00::/64, default)"
        ))
    })
}

fn parse_number<T: std::str::FromStr>(what: &str, s: Option<&str>) -> Result<T> {
    let s = s.ok_or_else(|| invalid(format!("{what} needs a value")))?;
    s.parse()
        .map_err(|_| invalid(format!("{what} {s:?} is not a number in range")))
}

/// Parses one route; `device` turns an interface name into its index.
pub fn parse_route(text: &str, mut device: impl FnMut(&str) -> Result<u32>) -> Result<Route> {
    let mut words = text.split_whitespace().peekable();
    let mut kind = RouteKind::Unicast;
    let first = words.next().ok_or_else(|| invalid("empty route".into()))?;
    let prefix_word = match first {
        "blackhole" => Some(RouteKind::Blackhole),
        "unreachable" => Some(RouteKind::Unreachable),
        "prohibit" => Some(RouteKind::Prohibit),
        _ => None,
    };
    let prefix = match prefix_word {
        Some(k) => {
            kind = k;
            words
                .next()
                .ok_or_else(|| invalid(format!("a prefix must follow {first:?}")))?
        }
        None => first,
    };
    let mut route = Route {
        destination: parse_prefix(prefix)?,
        table: RouteTable::MAIN,
        metric: 0,
        kind,
        next_hops: Vec::new(),
        source: None,
    };
    // The next hop being described: the single one, or the latest `nexthop`.
    let mut current: Option<NextHop> = None;
    let mut multipath = false;
    let blank = || NextHop {
        gateway: None,
        device: None,
        onlink: false,
        weight: 1,
    };
    while let Some(w) = words.next() {
        match w {
            "nexthop" => {
                if let Some(nh) = current.take() {
                    if !multipath {
                        return Err(invalid(
                            "`via`/`dev` before `nexthop`: use only nexthops".into(),
                        ));
                    }
                    route.next_hops.push(nh);
                }
                multipath = true;
                current = Some(blank());
            }
            "via" => {
                let gw = words
                    .next()
                    .ok_or_else(|| invalid("via needs an address".into()))?;
                let gw: IpAddr = match gw {
                    "inet" | "inet6" => words
                        .next()
                        .ok_or_else(|| invalid("via needs an address".into()))?
                        .parse()
                        .map_err(|_| invalid("via needs an address".into()))?,
                    other => other
                        .parse()
                        .map_err(|_| invalid(format!("via {other:?} is not an address")))?,
                };
                current.get_or_insert_with(blank).gateway = Some(gw);
            }
            "dev" => {
                let name = words
                    .next()
                    .ok_or_else(|| invalid("dev needs a name".into()))?;
                current.get_or_insert_with(blank).device = Some(device(name)?);
            }
            "onlink" => current.get_or_insert_with(blank).onlink = true,
            "weight" => {
                if !multipath {
                    return Err(invalid("weight belongs to a nexthop".into()));
                }
                current.get_or_insert_with(blank).weight = parse_number("weight", words.next())?;
            }
            "table" => {
                route.table = match words.next() {
                    Some("main") => RouteTable::MAIN,
                    v => RouteTable(parse_number("table", v)?),
                }
            }
            "metric" | "priority" => route.metric = parse_number("metric", words.next())?,
            "src" => {
                let s = words
                    .next()
                    .ok_or_else(|| invalid("src needs an address".into()))?;
                route.source = Some(
                    s.parse()
                        .map_err(|_| invalid(format!("src {s:?} is not an address")))?,
                );
            }
            "proto" => {
                // Printed by `ip route`; ours is always tabby.
                words.next();
            }
            other => return Err(invalid(format!("unexpected {other:?}"))),
        }
    }
    if let Some(nh) = current {
        route.next_hops.push(nh);
    }
    route.validate("route")?;
    Ok(route)
}

/// Prints a route in the syntax [`parse_route`] reads; `name` turns an
/// interface index into its name (`#N` when it gives none).
pub fn format_route(route: &Route, name: impl Fn(u32) -> Option<String>) -> String {
    let mut s = String::new();
    match route.kind {
        RouteKind::Unicast => {}
        RouteKind::Blackhole => s.push_str("blackhole "),
        RouteKind::Unreachable => s.push_str("unreachable "),
        RouteKind::Prohibit => s.push_str("prohibit "),
        RouteKind::Other(t) => s.push_str(match t {
            2 => "local ",
            3 => "broadcast ",
            4 => "anycast ",
            5 => "multicast ",
            9 => "throw ",
            10 => "nat ",
            _ => "type-other ",
        }),
    }
    s.push_str(&route.destination.to_string());
    let multipath = route.next_hops.len() > 1;
    for nh in &route.next_hops {
        if multipath {
            s.push_str(" nexthop");
        }
        if let Some(gw) = nh.gateway {
            s.push_str(&format!(" via {gw}"));
        }
        if let Some(dev) = nh.device {
            s.push_str(&format!(
                " dev {}",
                name(dev).unwrap_or_else(|| format!("#{dev}"))
            ));
        }
        if nh.onlink {
            s.push_str(" onlink");
        }
        if multipath {
            s.push_str(&format!(" weight {}", nh.weight));
        }
    }
    if route.table != RouteTable::MAIN {
        s.push_str(&format!(" table {}", route.table));
    }
    if route.metric != 0 {
        s.push_str(&format!(" metric {}", route.metric));
    }
    if let Some(src) = route.source {
        s.push_str(&format!(" src {src}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str) -> Result<u32> {
        match name {
            "eth0" => Ok(2),
            "tunl0" => Ok(3),
            other => Err(Error::NoSuchLink(other.into())),
        }
    }
    fn name(i: u32) -> Option<String> {
        match i {
            2 => Some("eth0".into()),
            3 => Some("tunl0".into()),
            _ => None,
        }
    }

    #[test]
    fn parse_and_print_round_trip() {
        for text in [
            "10.0.0.0/24 via 10.1.0.1",
            "10.0.0.0/24 via 10.1.0.1 dev eth0 table 100 metric 20",
            "blackhole 10.244.3.0/26",
            "10.244.0.0/26 via 192.168.0.2 dev tunl0 onlink",
            "10.5.0.0/16 nexthop via 10.1.0.1 dev eth0 weight 1 nexthop via 10.1.0.2 weight 3",
            "fd00:1::/64 via fd00::1 src fd00::2",
            "10.9.0.0/24 via fd00::1 dev eth0",
            "0.0.0.0/0 dev eth0",
        ] {
            let r = parse_route(text, dev).expect(text);
            assert_eq!(format_route(&r, name), text);
            assert_eq!(parse_route(&format_route(&r, name), dev).expect("again"), r);
        }
        let d = parse_route("default via 10.0.0.1", dev).expect("default");
        assert_eq!(d.destination.to_string(), "0.0.0.0/0");
        let host = parse_route("10.1.2.3 dev eth0", dev).expect("host route");
        assert_eq!(host.destination.to_string(), "10.1.2.3/32");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = |t: &str| parse_route(t, dev).expect_err(t).to_string();
        assert!(e("").contains("empty"));
        assert!(e("10.0.0.0/33 via 10.0.0.1").contains("not a prefix"));
        assert!(e("10.0.0.0/24 via nope").contains("\"nope\""));
        assert!(e("10.0.0.0/24 dev eth9").contains("eth9"));
        assert!(e("10.0.0.0/24 via 10.0.0.1 weight 2").contains("nexthop"));
        assert!(e("10.0.0.0/24 bogus").contains("\"bogus\""));
        assert!(e("10.0.0.1/24 via 10.0.0.9").contains("host bits"));
        assert!(e("10.0.0.0/24").contains("next hop"));
        assert!(e("blackhole 10.0.0.0/24 via 10.0.0.1").contains("no next hops"));
    }
}
