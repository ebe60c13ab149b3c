//! What doctor reports: typed findings (severity, which check, subject,
//! what is wrong, why, what to change), the parts it could not look at,
//! and the exit status derived from both.

use serde::{Deserialize, Serialize};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something is broken: traffic or routes are lost.
    Error,
    /// Likely to break, or half-working.
    Warning,
    /// Worth knowing; not a problem (does not change the exit status).
    Info,
}

impl Severity {
    /// The label in text output.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Warning => "WARN",
            Severity::Info => "INFO",
        }
    }
}

/// Which check produced a finding (stable names for scripts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Check {
    /// The node has no Node resource, or no usable BGP address.
    NodeRegistration,
    /// A resource the agent skips or ignores (its plan's warnings).
    ResourceWarning,
    /// A BGP session is not Established.
    SessionDown,
    /// The resources give this node no BGP session at all.
    NoSessions,
    /// A session the resources ask for is not configured in the agent.
    SessionNotConfigured,
    /// Node-to-node mesh on while every node also peers with a router.
    MeshWithExternalPeers,
    /// Route-reflector cluster ids that make peers non-clients, or an RR
    /// without clients.
    RouteReflector,
    /// IPv4/IPv6 forwarding off.
    Forwarding,
    /// Strict reverse-path filtering where routes are asymmetric.
    RpFilter,
    /// No IPPool, overlapping pools, blocks that do not fit, pools over
    /// node networks.
    Pools,
    /// IPAM inconsistencies (`tabby ipam check`).
    Ipam,
    /// A local block without its blackhole route.
    Blackhole,
    /// A learned route whose next hop this node cannot reach.
    NextHopUnreachable,
    /// A learned best route that is not in the kernel.
    RouteNotInKernel,
    /// A kernel route of another protocol wins over tabby's.
    RouteShadowed,
    /// The address is in no pool or no block.
    RouteUnallocated,
    /// The owning node does not announce the route.
    RouteNotExported,
    /// A BGPFilter rejects the route on its way here.
    RouteFiltered,
    /// No session carries the route toward this node.
    RouteNoPath,
    /// The route is not in this node's RIB for no reason doctor can see.
    RouteNotLearned,
    /// A local pod's own route is missing.
    PodRoute,
    /// The node's BGP address is on none of its interfaces.
    NodeAddress,
    /// An IPIP/VXLAN pool without its tunnel device.
    Encapsulation,
    /// Pods use a larger MTU than the path to other nodes.
    Mtu,
    /// What the speaker announces differs from what the node should.
    Announcements,
    /// A `natOutgoing` pool that the NAT table does not masquerade.
    Nat,
}

/// One problem, with its explanation and fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// Which check found it.
    pub check: Check,
    /// What it is about: `peer 10.0.0.1`, `IPPool private`, `sysctl net.ipv4.ip_forward`.
    pub subject: String,
    /// What is wrong.
    pub problem: String,
    /// Why it happens / what it breaks.
    pub cause: String,
    /// What to change: the resource and field, or the command.
    pub fix: String,
}

impl Finding {
    /// A finding.
    pub fn new(
        severity: Severity,
        check: Check,
        subject: impl Into<String>,
        problem: impl Into<String>,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            severity,
            check,
            subject: subject.into(),
            problem: problem.into(),
            cause: cause.into(),
            fix: fix.into(),
        }
    }

    /// True for errors and warnings (what makes the exit status 1).
    pub fn is_problem(&self) -> bool {
        self.severity != Severity::Info
    }
}

/// A part of the node doctor could not look at, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unavailable {
    /// The part: `datastore`, `agent`, `kernel`, `sysctls`.
    pub part: String,
    /// Where doctor looked (URL, socket path).
    pub source: String,
    /// The error.
    pub reason: String,
    /// What to check.
    pub hint: String,
}

/// The overall outcome, and the exit status of `tabby doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing wrong and everything checked (exit 0).
    Healthy,
    /// At least one error or warning (exit 1).
    Problems,
    /// Nothing wrong in what could be checked, but some part could not be
    /// (exit 2).
    Incomplete,
}

impl Status {
    /// From findings and unchecked parts: problems first, then incomplete.
    pub fn of(findings: &[Finding], unchecked: &[Unavailable]) -> Status {
        if findings.iter().any(Finding::is_problem) {
            Status::Problems
        } else if !unchecked.is_empty() {
            Status::Incomplete
        } else {
            Status::Healthy
        }
    }

    /// The process exit status.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Healthy => 0,
            Status::Problems => 1,
            Status::Incomplete => 2,
        }
    }
}

/// The whole-node report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The node checked.
    pub node: String,
    /// The outcome.
    pub status: Status,
    /// Problems and notes, errors first.
    pub findings: Vec<Finding>,
    /// What looked fine, one line each (so a healthy report says what it saw).
    pub passed: Vec<String>,
    /// Parts that could not be checked.
    pub unchecked: Vec<Unavailable>,
}

impl Report {
    /// Builds a report; sorts findings by severity (stable within one).
    pub fn new(
        node: String,
        mut findings: Vec<Finding>,
        passed: Vec<String>,
        unchecked: Vec<Unavailable>,
    ) -> Report {
        findings.sort_by_key(|f| f.severity);
        Report {
            node,
            status: Status::of(&findings, &unchecked),
            findings,
            passed,
            unchecked,
        }
    }

    /// Findings of one check.
    pub fn of(&self, check: Check) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.check == check).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counts_problems_before_missing_parts() {
        let info = Finding::new(Severity::Info, Check::Pools, "s", "p", "c", "f");
        let warn = Finding::new(Severity::Warning, Check::Pools, "s", "p", "c", "f");
        let gone = Unavailable {
            part: "agent".into(),
            source: "/x".into(),
            reason: "r".into(),
            hint: "h".into(),
        };
        assert_eq!(Status::of(&[], &[]), Status::Healthy);
        assert_eq!(
            Status::of(std::slice::from_ref(&info), &[]),
            Status::Healthy
        );
        assert_eq!(
            Status::of(std::slice::from_ref(&info), std::slice::from_ref(&gone)),
            Status::Incomplete
        );
        assert_eq!(Status::of(&[info, warn], &[gone]), Status::Problems);
        assert_eq!(Status::Problems.exit_code(), 1);
        assert_eq!(Status::Incomplete.exit_code(), 2);
        assert_eq!(
            serde_json::to_string(&Check::NextHopUnreachable).expect("json"),
            "\"next-hop-unreachable\""
        );
    }
}
