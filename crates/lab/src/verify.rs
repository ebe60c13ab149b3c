//! `verify`: runs a lab's checks against what really runs (pings and HTTP
//! fetches from inside namespaces, the agents' session status, an FRR
//! router's BGP table against the nodes' blackholed pod blocks), each retried
//! until it passes or the time given for convergence is spent, and reports
//! each with its evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use crate::build::{exec_in, run};
use crate::error::LabError;
use crate::state::State;
use crate::topology::{Check, RouteEncapsulation, Target};

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The check, described.
    pub check: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was seen (a ping summary, a router's routes, ...).
    pub evidence: String,
}

/// Runs every check of lab `name`, giving convergence up to `settle`.
pub fn verify(name: &str, settle: Duration) -> Result<Vec<CheckResult>, LabError> {
    let state = State::load(name)?;
    let deadline = Instant::now() + settle;
    let mut results = Vec::new();
    for check in &state.topology.checks {
        let mut attempt = run_check(&state, check);
        while !attempt.0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            attempt = run_check(&state, check);
        }
        results.push(CheckResult {
            check: check.describe(),
            passed: attempt.0,
            evidence: attempt.1,
        });
    }
    Ok(results)
}

/// The namespace a target runs in and its address.
fn locate(state: &State, target: &str) -> Result<(String, Option<Ipv4Addr>), String> {
    match state.topology.resolve_target(target) {
        Some(Target::Pod { node, pod }) => {
            let rec = state
                .pod(&node.name, &pod.name)
                .ok_or_else(|| format!("pod {target} was not created"))?;
            Ok((rec.netns.clone(), rec.address))
        }
        Some(Target::Host { name, .. }) => {
            let addr = state
                .topology
                .nodes
                .iter()
                .find(|n| n.name == name)
                .map(|n| n.address.addr())
                .or_else(|| {
                    state
                        .topology
                        .interfaces(name)
                        .first()
                        .map(|(_, a)| a.addr())
                });
            Ok((state.host_netns(name), addr))
        }
        None => Err(format!("{target:?} is not in the topology")),
    }
}

/// The namespace of `from` and the address of `to`.
pub(crate) fn ping_ends(state: &State, from: &str, to: &str) -> Result<(String, Ipv4Addr), String> {
    let (src, _) = locate(state, from)?;
    match locate(state, to)? {
        (_, Some(a)) => Ok((src, a)),
        (_, None) => Err(format!("{to} has no address")),
    }
}

/// `(transmitted, received)` from ping's summary line.
pub(crate) fn ping_counts(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    Some((nums.next()?, nums.next()?))
}

fn run_check(state: &State, check: &Check) -> (bool, String) {
    match check {
        Check::Ping { from, to } => {
            let (src, _) = match locate(state, from) {
                Ok(x) => x,
                Err(e) => return (false, e),
            };
            let dst = match locate(state, to) {
                Ok((_, Some(a))) => a,
                Ok((_, None)) => return (false, format!("{to} has no address")),
                Err(e) => return (false, e),
            };
            let d = dst.to_string();
            match exec_in(&src, "ping", &["-n", "-c", "3", "-i", "0.2", "-W", "1", &d]) {
                Ok(out) => {
                    // Every echo answered: a lossy path is retried, not passed.
                    let text = String::from_utf8_lossy(&out.stdout);
                    (text.contains(" 0% packet loss"), summary(&text, &d))
                }
                Err(e) => (false, e.to_string()),
            }
        }
        Check::Http { from, to } => {
            let (src, _) = match locate(state, from) {
                Ok(x) => x,
                Err(e) => return (false, e),
            };
            let (addr, port) = match state.topology.resolve_target(to) {
                Some(Target::Pod { node, pod }) => (
                    state.pod(&node.name, &pod.name).and_then(|p| p.address),
                    pod.http.unwrap_or(80),
                ),
                _ => (None, 80),
            };
            let Some(addr) = addr else {
                return (false, format!("{to} has no address"));
            };
            let url = format!("http://{addr}:{port}/");
            match exec_in(
                &src,
                "curl",
                &["-sS", "-m", "3", "-w", "\nHTTP %{http_code}", &url],
            ) {
                Ok(out) => {
                    let body = String::from_utf8_lossy(&out.stdout).into_owned();
                    let marker = format!("pod {to} at {addr}");
                    let ok = body.trim_end().ends_with("HTTP 200") && body.contains(&marker);
                    let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
                    (ok, format!("GET {url}: {}", lines.join(" | ")))
                }
                Err(e) => (false, format!("GET {url}: {e}")),
            }
        }
        Check::Sessions { node, count } => {
            let socket = state.dir().join(format!("{node}.sock"));
            let tabby = state.tabby.display().to_string();
            let s = socket.display().to_string();
            match run(
                &tabby,
                &["node", "status", "-o", "json", "--socket", &s],
                None,
            ) {
                Ok(out) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&out.stdout).unwrap_or_default();
                    let peers: Vec<String> = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| {
                            format!(
                                "{} AS{} {} {}",
                                p["peerAddress"].as_str().unwrap_or("?"),
                                p["asNumber"],
                                p["peerType"].as_str().unwrap_or("?"),
                                p["state"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    let up = peers.iter().filter(|p| p.ends_with(" Established")).count();
                    (up == *count && peers.len() == *count, peers.join("; "))
                }
                Err(e) => (false, e.to_string()),
            }
        }
        Check::Path { from, to, via } => path(state, from, to, via),
        Check::Routes {
            host,
            nodes,
            proto,
            via,
            encapsulation,
        } => kernel_routes(state, host, nodes, proto, *via, *encapsulation),
        Check::LearnsBlocks {
            router,
            nodes,
            also,
        } => learns_blocks(state, router, nodes, also),
    }
}

/// The ping summary lines.
fn summary(out: &str, dst: &str) -> String {
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("transmitted") || l.starts_with("rtt"))
        .collect();
    format!("{dst}: {}", lines.join(", "))
}

/// The pod blocks a node owns: its `proto tabby` blackhole routes.
fn node_blocks(state: &State, node: &str) -> Result<BTreeSet<Ipv4Net>, String> {
    let ns = state.host_netns(node);
    let out = exec_in(
        &ns,
        "ip",
        &["-4", "route", "show", "type", "blackhole", "proto", "tabby"],
    )
    .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|p| p.parse().ok())
        .collect())
}

fn learns_blocks(
    state: &State,
    router: &str,
    nodes: &[String],
    also: &[Ipv4Net],
) -> (bool, String) {
    let mut expected: BTreeSet<Ipv4Net> = also.iter().copied().collect();
    let mut blocks = BTreeSet::new();
    for n in nodes {
        match node_blocks(state, n) {
            Ok(b) if b.is_empty() => return (false, format!("{n} has no pod block yet")),
            Ok(b) => blocks.extend(b),
            Err(e) => return (false, e),
        }
    }
    expected.extend(blocks.iter().copied());
    let dir = state.dir().join(router).display().to_string();
    let ns = state.host_netns(router);
    let out = match exec_in(
        &ns,
        "vtysh",
        &[
            "--vty_socket",
            &dir,
            "-d",
            "bgpd",
            "-c",
            "show bgp ipv4 unicast json",
        ],
    ) {
        Ok(o) => o,
        Err(e) => return (false, e.to_string()),
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut learned: BTreeMap<Ipv4Net, Vec<String>> = BTreeMap::new();
    for (prefix, paths) in v["routes"].as_object().into_iter().flatten() {
        let Ok(net) = prefix.parse::<Ipv4Net>() else {
            continue;
        };
        let paths = paths
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let hop = p["nexthops"][0]["ip"].as_str().unwrap_or("?");
                let path = p["path"].as_str().unwrap_or("");
                format!("via {hop} [{path}]")
            })
            .collect();
        learned.insert(net, paths);
    }
    let got: BTreeSet<Ipv4Net> = learned.keys().copied().collect();
    let single = blocks
        .iter()
        .all(|b| learned.get(b).is_some_and(|p| p.len() == 1));
    let total: usize = learned.values().map(Vec::len).sum();
    let evidence = format!(
        "{router} has {} prefixes, {total} paths: {}{}",
        got.len(),
        learned
            .iter()
            .map(|(p, paths)| format!("{p} {}", paths.join(" ")))
            .collect::<Vec<_>>()
            .join("; "),
        if got == expected {
            String::new()
        } else {
            let missing: Vec<String> = expected.difference(&got).map(|p| p.to_string()).collect();
            let extra: Vec<String> = got.difference(&expected).map(|p| p.to_string()).collect();
            format!(
                " | missing [{}], unexpected [{}]",
                missing.join(", "),
                extra.join(", ")
            )
        }
    );
    (got == expected && single, evidence)
}

fn kernel_routes(
    state: &State,
    host: &str,
    nodes: &[String],
    proto: &str,
    via: Option<Ipv4Addr>,
    encapsulation: Option<RouteEncapsulation>,
) -> (bool, String) {
    let mut blocks = BTreeSet::new();
    for n in nodes {
        match node_blocks(state, n) {
            Ok(b) if b.is_empty() => return (false, format!("{n} has no pod block yet")),
            Ok(b) => blocks.extend(b),
            Err(e) => return (false, e),
        }
    }
    let out = match exec_in(
        &state.host_netns(host),
        "ip",
        &["-4", "-o", "route", "show", "proto", proto],
    ) {
        Ok(o) => o,
        Err(e) => return (false, e.to_string()),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let routes: BTreeMap<Ipv4Net, String> = text
        .lines()
        .filter_map(|l| {
            let net = l.split_whitespace().next()?.parse().ok()?;
            Some((net, l.split_whitespace().collect::<Vec<_>>().join(" ")))
        })
        .collect();
    let missing: Vec<String> = blocks
        .iter()
        .filter(|b| !routes.contains_key(b))
        .map(ToString::to_string)
        .collect();
    let seen: Vec<&str> = blocks
        .iter()
        .filter_map(|b| routes.get(b).map(String::as_str))
        .collect();
    let mut evidence = format!("{host}: {}", seen.join("; "));
    if !missing.is_empty() {
        evidence += &format!(" | no proto {proto} route for [{}]", missing.join(", "));
    }
    let wrong_gateway = via.is_some_and(|v| {
        let want = format!(" via {v} ");
        seen.iter().any(|r| !format!("{r} ").contains(&want))
    });
    if wrong_gateway {
        evidence += &format!(
            " | not all via {}",
            via.map(|v| v.to_string()).unwrap_or_default()
        );
    }
    // Say how each route forwards (native, or which tunnel), and check it
    // when the topology asks.
    let used: BTreeSet<&str> = seen
        .iter()
        .map(|r| RouteEncapsulation::of_route_line(r).as_str())
        .collect();
    if !seen.is_empty() {
        evidence += &format!(
            " | encapsulation: {}",
            used.iter().copied().collect::<Vec<_>>().join(", ")
        );
    }
    let wrong_encapsulation = encapsulation.is_some_and(|e| {
        seen.iter()
            .any(|r| RouteEncapsulation::of_route_line(r) != e)
    });
    if let (true, Some(e)) = (wrong_encapsulation, encapsulation) {
        evidence += &format!(" | not all {}", e.as_str());
    }
    (
        missing.is_empty() && !wrong_gateway && !wrong_encapsulation,
        evidence,
    )
}

/// The hops from `from` to `to`, by pings with TTL 1, 2, ...: each hop's
/// address and, when it is one of the lab's, its host's name.
fn path(state: &State, from: &str, to: &str, via: &[String]) -> (bool, String) {
    let (src, _) = match locate(state, from) {
        Ok(x) => x,
        Err(e) => return (false, e),
    };
    let dst = match locate(state, to) {
        Ok((_, Some(a))) => a.to_string(),
        Ok((_, None)) => return (false, format!("{to} has no address")),
        Err(e) => return (false, e),
    };
    let owner = |addr: &str| -> Option<String> {
        let a: Ipv4Addr = addr.parse().ok()?;
        let loopback = state
            .topology
            .routers
            .iter()
            .find(|r| r.loopbacks.iter().any(|n| n.addr() == a))
            .map(|r| r.name.clone());
        loopback.or_else(|| {
            state
                .topology
                .hosts()
                .into_keys()
                .find(|h| {
                    state
                        .topology
                        .interfaces(h)
                        .iter()
                        .any(|(_, n)| n.addr() == a)
                })
                .map(str::to_owned)
        })
    };
    let mut hops: Vec<(String, Option<String>)> = Vec::new();
    let mut reached = false;
    for ttl in 1..=12u8 {
        let t = ttl.to_string();
        // A non-zero exit is expected for every hop but the last.
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &src, "ping", "-n", "-c", "1", "-W", "1", "-t", &t, &dst,
            ])
            .output();
        let Ok(out) = out else {
            return (false, "cannot run ping".to_owned());
        };
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(" bytes from ") {
            reached = true;
            break;
        }
        let hop = text
            .lines()
            .find_map(|l| l.strip_prefix("From "))
            .and_then(|l| l.split_whitespace().next())
            .map(|a| a.trim_end_matches(':').to_owned());
        match hop {
            Some(a) => {
                let h = owner(&a);
                hops.push((a, h));
            }
            None => hops.push(("*".to_owned(), None)),
        }
    }
    let names: Vec<&str> = hops.iter().filter_map(|(_, h)| h.as_deref()).collect();
    let mut want = via.iter().peekable();
    for n in &names {
        if want.peek().is_some_and(|w| w.as_str() == *n) {
            want.next();
        }
    }
    let in_order = want.peek().is_none();
    let shown: Vec<String> = hops
        .iter()
        .map(|(a, h)| match h {
            Some(h) => format!("{a} ({h})"),
            None => a.clone(),
        })
        .chain(reached.then(|| format!("{dst} reached")))
        .collect();
    (reached && in_order, shown.join(" -> "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_counts_reads_the_summary() {
        let out = "PING 10.0.0.1 (10.0.0.1) 56(84) bytes of data.\n\n--- 10.0.0.1 ping statistics ---\n52 packets transmitted, 47 received, 9.61538% packet loss, time 10215ms\n";
        assert_eq!(ping_counts(out), Some((52, 47)));
        assert_eq!(
            ping_counts("3 packets transmitted, 0 received, +3 errors, 100% packet loss"),
            Some((3, 0))
        );
        assert_eq!(ping_counts("nothing"), None);
    }
}
