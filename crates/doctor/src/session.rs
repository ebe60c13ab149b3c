//! Why a BGP session is not Established: the speaker's last error (a
//! NOTIFICATION sent or received, a hold timer, a socket error) read
//! back into a typed [`SessionError`], then explained against the
//! resources (which BGPPeer made the session, which AS each side uses and
//! where that number comes from) as a [`Finding`] with the field to change.

use std::net::IpAddr;

use tabby_model::Node;
use tabby_model::bgp_peer::ReversePeering;
use tabby_speaker::control::NeighborStatus;

use crate::finding::{Check, Finding, Severity};
use crate::snapshot::ClusterState;

/// The speaker's `lastError`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// This node sent a NOTIFICATION (it found the error).
    Sent {
        /// Error code.
        code: u8,
        /// Error subcode.
        subcode: u8,
        /// The speaker's detail (`peer AS 65001, expected 65002`).
        detail: String,
    },
    /// The peer sent a NOTIFICATION.
    Received {
        /// Error code.
        code: u8,
        /// Error subcode.
        subcode: u8,
    },
    /// No KEEPALIVE within the hold time.
    HoldTimerExpired,
    /// The TCP connection ended without a NOTIFICATION.
    ConnectionLost,
    /// A socket error or anything else, verbatim.
    Other(String),
}

fn code_pair(s: &str) -> Option<(u8, u8)> {
    let word = s.split_whitespace().next()?;
    let (c, sc) = word.split_once('/')?;
    Some((c.parse().ok()?, sc.parse().ok()?))
}

/// Parses the speaker's last error (see `tabby_bgp::fsm::DownReason`).
pub fn parse_last_error(text: &str) -> SessionError {
    let t = text.trim();
    if let Some(rest) = t
        .strip_prefix("sent NOTIFICATION ")
        .or_else(|| t.strip_prefix("stopped, sent NOTIFICATION "))
        && let Some((code, subcode)) = code_pair(rest)
    {
        let detail = rest
            .split_once("): ")
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default();
        return SessionError::Sent {
            code,
            subcode,
            detail,
        };
    }
    if let Some(rest) = t.strip_prefix("received NOTIFICATION ")
        && let Some((code, subcode)) = code_pair(rest)
    {
        return SessionError::Received { code, subcode };
    }
    if t.starts_with("hold timer expired") {
        return SessionError::HoldTimerExpired;
    }
    if t == "connection lost" {
        return SessionError::ConnectionLost;
    }
    SessionError::Other(t.to_owned())
}

/// `peer AS 65001, expected 65002` -> (65001, 65002).
fn bad_peer_as_detail(detail: &str) -> Option<(u32, u32)> {
    let rest = detail.strip_prefix("peer AS ")?;
    let (claimed, expected) = rest.split_once(", expected ")?;
    Some((claimed.trim().parse().ok()?, expected.trim().parse().ok()?))
}

/// The names of the BGPPeers that give `me` a session toward `addr`.
pub fn bgppeers_toward(cluster: &ClusterState, me: &Node, addr: IpAddr) -> Vec<String> {
    let remote = cluster.node_at(addr);
    let mut names = Vec::new();
    for bp in &cluster.resources.peers {
        let s = &bp.spec;
        let local_side = |n: &Node| match (&s.node, &s.node_selector) {
            (Some(name), _) => n.metadata.name == *name,
            (None, Some(sel)) => sel.matches(&n.selector_labels()),
            (None, None) => true,
        };
        let forward = local_side(me)
            && (s.peer_ip.as_ref().is_some_and(|p| p.ip == addr)
                || s.peer_selector
                    .as_ref()
                    .is_some_and(|sel| remote.is_some_and(|r| sel.matches(&r.selector_labels()))));
        let reverse = s.reverse_peering != Some(ReversePeering::Manual)
            && s.peer_selector
                .as_ref()
                .is_some_and(|sel| sel.matches(&me.selector_labels()))
            && remote.is_some_and(local_side);
        if forward || reverse {
            names.push(bp.metadata.name.clone());
        }
    }
    names
}

/// Where a node's AS number comes from, for a fix that names the field.
pub fn as_source(cluster: &ClusterState, node: &Node) -> String {
    if node.spec.bgp.as_ref().and_then(|b| b.as_number).is_some() {
        format!("Node {} spec.bgp.asNumber", node.metadata.name)
    } else if cluster
        .resources
        .default_configuration()
        .as_number
        .is_some()
    {
        "BGPConfiguration default spec.asNumber".to_owned()
    } else {
        format!(
            "Node {} spec.bgp.asNumber (unset, so the default 64512 applies)",
            node.metadata.name
        )
    }
}

/// How a neighbour is named in findings: `peer 10.0.0.1 (BGPPeer tor)`.
pub fn peer_subject(n: &NeighborStatus, remote: Option<&Node>, bgppeers: &[String]) -> String {
    let mut what = Vec::new();
    if let Some(r) = remote {
        what.push(format!("node {}", r.metadata.name));
    }
    if !bgppeers.is_empty() {
        what.push(format!("BGPPeer {}", bgppeers.join(", ")));
    } else if let Some(d) = &n.description {
        what.push(d.clone());
    }
    if what.is_empty() {
        format!("peer {}", n.address)
    } else {
        format!("peer {} ({})", n.address, what.join(", "))
    }
}

/// What this node knows about itself, for explanations.
pub struct LocalSide<'a> {
    /// Its Node resource.
    pub node: &'a Node,
    /// Its AS.
    pub as_number: u32,
    /// Whether it waits for `addr` to connect (passive toward it).
    pub passive_toward: &'a dyn Fn(IpAddr) -> bool,
}

fn cease_reason(subcode: u8) -> &'static str {
    match subcode {
        1 => "maximum number of prefixes reached",
        2 => "administrative shutdown",
        3 => "peer de-configured",
        4 => "administrative reset",
        5 => "connection rejected",
        6 => "other configuration change",
        7 => "connection collision resolution",
        8 => "out of resources",
        9 => "hard reset",
        10 => "BFD down",
        _ => "cease",
    }
}

/// Explains one session that is not Established.
pub fn explain_session(
    n: &NeighborStatus,
    cluster: Option<&ClusterState>,
    local: Option<&LocalSide<'_>>,
) -> Finding {
    let remote = cluster.and_then(|c| c.node_at(n.address));
    let bgppeers = match (cluster, local) {
        (Some(c), Some(l)) => bgppeers_toward(c, l.node, n.address),
        _ => Vec::new(),
    };
    let subject = peer_subject(n, remote, &bgppeers);
    let problem = format!(
        "session {} with {} (AS {})",
        n.state, n.address, n.as_number
    );
    let my_as = local.map(|l| l.as_number);
    let my_as_text = my_as.map_or_else(|| "this node's AS".to_owned(), |a| format!("AS {a}"));
    let my_addr = local
        .and_then(|l| {
            ClusterState::addresses(l.node)
                .into_iter()
                .find(|a| a.is_ipv4() == n.address.is_ipv4())
        })
        .map_or_else(|| "this node's address".to_owned(), |a| a.to_string());
    let my_as_field = match (cluster, local) {
        (Some(c), Some(l)) => as_source(c, l.node),
        _ => "this node's spec.bgp.asNumber".to_owned(),
    };
    let peer_field = if let Some(r) = remote {
        format!("Node {} spec.bgp.asNumber", r.metadata.name)
    } else if let Some(b) = bgppeers.first() {
        format!("BGPPeer {b} spec.asNumber")
    } else {
        "the peer's asNumber".to_owned()
    };
    let err = n.last_error.as_deref().map(parse_last_error);
    // A NOTIFICATION or a hold timer says what is wrong; anything else may
    // be a session still on its way up.
    let settled = matches!(
        err,
        Some(
            SessionError::Sent { .. }
                | SessionError::Received { .. }
                | SessionError::HoldTimerExpired
        )
    );
    let (cause, fix) = match err {
        Some(SessionError::Sent {
            code: 2,
            subcode: 2,
            detail,
        }) => match bad_peer_as_detail(&detail) {
            Some((claimed, expected)) => (
                format!(
                    "this node closed it with NOTIFICATION 2/2 Bad Peer AS: {} says it is AS {claimed}, {peer_field} says {expected}",
                    n.address
                ),
                match (remote, bgppeers.first()) {
                    (None, Some(b)) => format!(
                        "set spec.asNumber: {claimed} in BGPPeer {b} (tabby patch bgppeer {b} -p '{{\"spec\":{{\"asNumber\":{claimed}}}}}'), or make the router at {} use AS {expected}",
                        n.address
                    ),
                    (Some(r), _) => format!(
                        "node {} runs AS {claimed} but the datastore says {expected}: set {peer_field} to the AS it should use and restart its agent (an agent started with another --as or another datastore)",
                        r.metadata.name
                    ),
                    (None, None) => format!(
                        "make {} use AS {expected}, or configure the peer with asNumber {claimed}",
                        n.address
                    ),
                },
            ),
            None => (
                format!("this node closed it with NOTIFICATION 2/2 Bad Peer AS ({detail})"),
                format!("set {peer_field} to the AS the peer really uses"),
            ),
        },
        Some(SessionError::Received {
            code: 2,
            subcode: 2,
        }) => {
            // What does the other side expect? Known when it is a node.
            let expected = remote.and_then(|r| {
                let plan = cluster?.plan(&r.metadata.name).ok()?;
                let mine = local.map(|l| ClusterState::addresses(l.node))?;
                plan.config
                    .peers
                    .iter()
                    .find(|p| mine.contains(&p.address))
                    .map(|p| p.as_number)
            });
            let cause = match expected {
                Some(x) => format!(
                    "{} closed it with NOTIFICATION 2/2 Bad Peer AS: it expects AS {x}, this node uses {my_as_text}",
                    n.address
                ),
                None => format!(
                    "{} closed it with NOTIFICATION 2/2 Bad Peer AS: it expects another AS for {my_addr}; this node uses {my_as_text}",
                    n.address
                ),
            };
            let fix = format!(
                "set {my_as_field} to the AS the peer expects{}, or configure the peer with neighbor {my_addr} remote-as {}",
                expected.map(|x| format!(" ({x})")).unwrap_or_default(),
                my_as.map_or_else(|| "<this node's AS>".to_owned(), |a| a.to_string())
            );
            (cause, fix)
        }
        Some(SessionError::Sent {
            code: 2,
            subcode: 3,
            detail,
        }) => (
            format!("router ids collide: {detail}"),
            "every speaker needs its own router id (a node's is its spec.bgp.ipv4Address): give the nodes distinct addresses or change the router's router-id".to_owned(),
        ),
        Some(SessionError::Received {
            code: 2,
            subcode: 3,
        }) => (
            format!("{} refused this node's router id (Bad BGP Identifier): another speaker uses it", n.address),
            "every speaker needs its own router id (a node's is its spec.bgp.ipv4Address): change the duplicate".to_owned(),
        ),
        Some(SessionError::Sent {
            code: 6,
            subcode,
            ..
        }) => (
            format!(
                "this node closed it with NOTIFICATION 6/{subcode} (Cease / {})",
                cease_reason(subcode)
            ),
            match subcode {
                10 => format!(
                    "BFD on this node stopped hearing {}: check the link; both ends need BFD (BGPPeer annotation tabby.io/bfd and the peer's bfd configuration) with compatible intervals",
                    n.address
                ),
                5 | 7 => format!(
                    "this node refused a connection from {} (a collision, or the peer connected while this side should): nothing to do if the session comes up; otherwise check that only one side connects (the mesh: the greater address)",
                    n.address
                ),
                1 => "this node's maximum-prefix limit was reached: the peer sends more routes than allowed".to_owned(),
                _ => "this node's configuration for the peer changed or was removed (a BGPPeer edited or deleted): it comes back if it is still wanted".to_owned(),
            },
        ),
        Some(SessionError::Sent {
            code,
            subcode,
            detail,
        }) => (
            if detail.is_empty() {
                format!("this node closed it with NOTIFICATION {code}/{subcode}")
            } else {
                format!("this node closed it with NOTIFICATION {code}/{subcode}: {detail}")
            },
            notification_fix(code, subcode, &n.address, &my_addr),
        ),
        Some(SessionError::Received { code: 6, subcode }) => (
            format!(
                "{} closed it with NOTIFICATION 6/{subcode} (Cease / {})",
                n.address,
                cease_reason(subcode)
            ),
            match subcode {
                5 => format!(
                    "the peer does not accept this node: configure neighbor {my_addr} remote-as {} on it (or check its connection limit)",
                    my_as.map_or_else(|| "<this node's AS>".to_owned(), |a| a.to_string())
                ),
                10 => format!("BFD saw the path to {} fail: check the link", n.address),
                1 => "raise the peer's maximum-prefix limit or announce fewer prefixes".to_owned(),
                _ => "the peer's operator shut or reset the session; check the peer's configuration and logs".to_owned(),
            },
        ),
        Some(SessionError::Received { code, subcode }) => (
            format!("{} closed it with NOTIFICATION {code}/{subcode}", n.address),
            notification_fix(code, subcode, &n.address, &my_addr),
        ),
        Some(SessionError::HoldTimerExpired) => (
            format!("no KEEPALIVE from {} within the hold time (NOTIFICATION 4/0 sent)", n.address),
            format!(
                "the path to {} loses packets or the peer stalled: check the link and MTU (ping -M do), and firewalls on TCP 179",
                n.address
            ),
        ),
        Some(SessionError::ConnectionLost) => (
            format!("{} closed the TCP connection without a NOTIFICATION", n.address),
            format!(
                "routers close silently when the neighbour is not configured or the TCP MD5 password differs: check neighbor {my_addr} on {} and spec.password",
                n.address
            ),
        ),
        Some(SessionError::Other(e)) => {
            let lower = e.to_ascii_lowercase();
            let fix = if lower.contains("refused") {
                format!(
                    "nothing listens on {}:{}: start its BGP daemon, or check the port (BGPPeer peerIP with :port, BGPConfiguration listenPort)",
                    n.address, n.port
                )
            } else if lower.contains("unreachable") || lower.contains("no route") {
                format!("this node has no route to {}: check `ip route get {}`", n.address, n.address)
            } else if lower.contains("timed out") || lower.contains("timeout") {
                format!(
                    "no answer from {}: a firewall drops TCP 179, or the address is wrong",
                    n.address
                )
            } else {
                format!("check that {} runs BGP and can reach {my_addr}", n.address)
            };
            (format!("last error: {e}"), fix)
        }
        None => {
            let passive = local.is_some_and(|l| (l.passive_toward)(n.address));
            if passive {
                (
                    format!(
                        "this node waits for {} to connect (between two nodes only the one with the greater address connects) and it has not",
                        n.address
                    ),
                    match remote {
                        Some(r) => format!(
                            "check that node {}'s agent runs (`tabby node status` there) and reaches {my_addr} on TCP 179",
                            r.metadata.name
                        ),
                        None => format!("check that {} connects to {my_addr}", n.address),
                    },
                )
            } else {
                (
                    format!("no answer from {} yet", n.address),
                    format!(
                        "check that {} is reachable (ping) and runs BGP with neighbor {my_addr}",
                        n.address
                    ),
                )
            }
        }
    };
    // A session that went down (or was configured) moments ago may still
    // be on its way up: say so rather than send the reader hunting.
    let cause = match n.uptime_secs {
        Some(secs) if secs < JUST_CHANGED_SECS && !settled => format!(
            "{cause} (the state changed {secs} s ago: it may still be coming up, the speaker retries every few seconds; run doctor again)"
        ),
        _ => cause,
    };
    Finding::new(
        Severity::Error,
        Check::SessionDown,
        subject,
        problem,
        cause,
        fix,
    )
}

/// Below this many seconds in its state, a session that is not up may
/// still be coming up.
const JUST_CHANGED_SECS: u64 = 15;

fn notification_fix(code: u8, subcode: u8, peer: &IpAddr, my_addr: &str) -> String {
    match (code, subcode) {
        (2, 6) => "the hold times are incompatible: set keepaliveTime in the BGPPeer (hold time is 3x) or fix the peer's timers".to_owned(),
        (2, 7) | (2, 4) => format!(
            "{peer} and this node disagree on capabilities (address families, 4-octet AS): check the peer's neighbor {my_addr} settings"
        ),
        (3, _) => format!("an UPDATE from {peer} was malformed: check the peer's software and export policy"),
        (1, _) => format!("the BGP byte stream from {peer} was corrupt: something between the two rewrites TCP 179"),
        (4, _) => format!(
            "{peer} stopped hearing this node's KEEPALIVEs within its hold time: the path loses packets (link, MTU, a firewall on TCP 179) or this node stalled"
        ),
        _ => format!("see the peer's log for why it sent {code}/{subcode}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_errors_parse() {
        assert_eq!(
            parse_last_error(
                "sent NOTIFICATION 2/2 (OPEN Message Error / Bad Peer AS): peer AS 65001, expected 65002"
            ),
            SessionError::Sent {
                code: 2,
                subcode: 2,
                detail: "peer AS 65001, expected 65002".into()
            }
        );
        assert_eq!(
            parse_last_error("received NOTIFICATION 6/5 (Cease / Connection Rejected)"),
            SessionError::Received {
                code: 6,
                subcode: 5
            }
        );
        assert_eq!(
            parse_last_error("hold timer expired, sent NOTIFICATION 4/0"),
            SessionError::HoldTimerExpired
        );
        assert_eq!(
            parse_last_error("connection lost"),
            SessionError::ConnectionLost
        );
        assert_eq!(
            parse_last_error("connect: Connection refused (os error 111)"),
            SessionError::Other("connect: Connection refused (os error 111)".into())
        );
        assert_eq!(
            bad_peer_as_detail("peer AS 65001, expected 65002"),
            Some((65001, 65002))
        );
    }

    #[test]
    fn a_session_that_just_changed_may_still_come_up() {
        let mut n =
            crate::checks::tests::neighbor("10.0.0.2", 64512, "Active", Some("connection lost"));
        n.uptime_secs = Some(2);
        let f = explain_session(&n, None, None);
        assert!(
            f.cause.contains("2 s ago: it may still be coming up"),
            "{f:?}"
        );
        n.uptime_secs = Some(600);
        let f = explain_session(&n, None, None);
        assert!(!f.cause.contains("coming up"), "{f:?}");
        // A NOTIFICATION is an answer, not a session on its way up.
        n.uptime_secs = Some(2);
        n.last_error = Some("received NOTIFICATION 6/5 (Cease / Connection Rejected)".into());
        let f = explain_session(&n, None, None);
        assert!(!f.cause.contains("coming up"), "{f:?}");
    }

    #[test]
    fn ceases_and_hold_timers_either_way() {
        let n = |err: &str| crate::checks::tests::neighbor("10.0.0.9", 65000, "Idle", Some(err));
        let f = explain_session(&n("sent NOTIFICATION 6/10 (Cease / BFD Down)"), None, None);
        assert!(f.cause.contains("6/10 (Cease / BFD down)"), "{f:?}");
        assert!(
            f.fix.contains("BFD on this node stopped hearing 10.0.0.9"),
            "{f:?}"
        );
        let f = explain_session(
            &n("received NOTIFICATION 4/0 (Hold Timer Expired / unspecific)"),
            None,
            None,
        );
        assert!(
            f.fix.contains("stopped hearing this node's KEEPALIVEs"),
            "{f:?}"
        );
        let f = explain_session(
            &n("received NOTIFICATION 6/5 (Cease / Connection Rejected)"),
            None,
            None,
        );
        assert!(f.fix.contains("configure neighbor"), "{f:?}");
        let f = explain_session(&n("hold timer expired, sent NOTIFICATION 4/0"), None, None);
        assert!(f.cause.contains("no KEEPALIVE from 10.0.0.9"), "{f:?}");
    }

    proptest::proptest! {
        /// The speaker's text is read, never trusted: any string parses to
        /// something, and explaining it never panics.
        #[test]
        fn any_last_error_is_explained(text in ".{0,120}", code in 0u8..8, sub in 0u8..12) {
            let _ = parse_last_error(&text);
            for t in [
                text.clone(),
                format!("sent NOTIFICATION {code}/{sub} (x / y): {text}"),
                format!("received NOTIFICATION {code}/{sub}{text}"),
                format!("sent NOTIFICATION 2/2 (a / b): peer AS {text}, expected {sub}"),
            ] {
                let n = crate::checks::tests::neighbor("10.0.0.9", 65000, "Idle", Some(&t));
                let f = explain_session(&n, None, None);
                proptest::prop_assert!(!f.cause.is_empty() && !f.fix.is_empty());
            }
        }
    }
}
