//! `BGPFilter`: ordered import/export rules for BGP sessions, referenced by
//! name from `BGPPeer.spec.filters`. The first matching rule's action wins;
//! a route no rule matches is accepted.
//!
//! A rule matches on any of: `cidr` + `matchOperator` (Equal, NotEqual, In,
//! NotIn), `prefixLength` (min/max, with a cidr), `source: RemotePeers`,
//! `interface`, `peerType` (eBGP/iBGP), `communities.values`, `asPathPrefix`;
//! its `action` is Accept or Reject, and an accepted route may be changed by
//! `operations` (`addCommunity`, `prependASPath`).

use serde::{Deserialize, Serialize};

use crate::address::Cidr;
use crate::asn::AsNumber;
use crate::bgp_configuration::check_community_value;
use crate::error::Problems;
use crate::resource::Object;

/// The BGP filter resource.
pub type BgpFilter = Object<BgpFilterSpec>;

/// How a rule's `cidr` is compared with a route's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOperator {
    /// The prefix is exactly the cidr.
    Equal,
    /// The prefix is not the cidr.
    NotEqual,
    /// The prefix is inside the cidr.
    In,
    /// The prefix is not inside the cidr.
    NotIn,
}

/// Where a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterSource {
    /// Learned from a BGP peer (not originated by this node).
    RemotePeers,
}

/// The kind of session a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerType {
    /// External BGP.
    #[serde(rename = "eBGP")]
    Ebgp,
    /// Internal BGP.
    #[serde(rename = "iBGP")]
    Ibgp,
}

/// A rule's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterAction {
    /// Accept the route.
    Accept,
    /// Reject the route.
    Reject,
}

/// Bounds on a route's prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixLength {
    /// Shortest prefix length matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i32>,
    /// Longest prefix length matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i32>,
}

/// Communities a route must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommunityMatch {
    /// Community values (`aa:nn` or `aa:nn:mm`).
    #[serde(default)]
    pub values: Vec<String>,
}

/// `addCommunity` operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddCommunity {
    /// The community to add.
    pub value: String,
}

/// `prependASPath` operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrependAsPath {
    /// AS numbers to prepend, leftmost first.
    pub prefix: Vec<AsNumber>,
}

/// One change made to an accepted route (exactly one field set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterOperation {
    /// Add a community.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_community: Option<AddCommunity>,
    /// Prepend AS numbers to the path.
    #[serde(
        default,
        rename = "prependASPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub prepend_as_path: Option<PrependAsPath>,
}

/// One filter rule (the same shape for IPv4 and IPv6 lists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpFilterRule {
    /// Prefix compared by `matchOperator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Cidr>,
    /// Prefix-length bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLength>,
    /// Route origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<FilterSource>,
    /// Interface name the route goes through (`*` wildcards allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// How `cidr` is compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<MatchOperator>,
    /// Session type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_type: Option<PeerType>,
    /// Required communities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<CommunityMatch>,
    /// Required leading AS numbers of the path.
    #[serde(
        default,
        rename = "asPathPrefix",
        skip_serializing_if = "Option::is_none"
    )]
    pub as_path_prefix: Option<Vec<AsNumber>>,
    /// Verdict.
    pub action: FilterAction,
    /// Changes applied to an accepted route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<FilterOperation>,
}

/// `BGPFilter.spec`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpFilterSpec {
    /// IPv4 export rules.
    #[serde(default, rename = "exportV4", skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<BgpFilterRule>,
    /// IPv4 import rules.
    #[serde(default, rename = "importV4", skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<BgpFilterRule>,
    /// IPv6 export rules.
    #[serde(default, rename = "exportV6", skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<BgpFilterRule>,
    /// IPv6 import rules.
    #[serde(default, rename = "importV6", skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<BgpFilterRule>,
}

impl BgpFilterRule {
    fn check(&self, path: &str, v6: bool, problems: &mut Problems) {
        let max = if v6 { 128 } else { 32 };
        match (&self.cidr, self.match_operator) {
            (Some(c), Some(_)) => {
                if c.is_ipv6() != v6 {
                    problems.push(
                        format!("{path}.cidr"),
                        format!(
                            "{c} is not an {} prefix (this rule is in a {} list)",
                            if v6 { "IPv6" } else { "IPv4" },
                            if v6 { "V6" } else { "V4" }
                        ),
                    );
                }
            }
            (Some(_), None) => problems.push(
                format!("{path}.matchOperator"),
                "cidr needs a matchOperator (Equal, NotEqual, In or NotIn)",
            ),
            (None, Some(_)) => problems.push(format!("{path}.cidr"), "matchOperator needs a cidr"),
            (None, None) => {}
        }
        if let Some(pl) = self.prefix_length {
            if self.cidr.is_none() {
                problems.push(format!("{path}.prefixLength"), "prefixLength needs a cidr");
            }
            for (name, v) in [("min", pl.min), ("max", pl.max)] {
                if let Some(v) = v {
                    if !(0..=max).contains(&v) {
                        problems.push(
                            format!("{path}.prefixLength.{name}"),
                            format!("must be 0..={max}, not {v}"),
                        );
                    }
                }
            }
            if let (Some(lo), Some(hi)) = (pl.min, pl.max) {
                if lo > hi {
                    problems.push(
                        format!("{path}.prefixLength"),
                        format!("min {lo} is greater than max {hi}"),
                    );
                }
            }
        }
        if let Some(i) = &self.interface {
            if i.is_empty() || i.len() > 15 || i.contains(['/', ' ']) {
                problems.push(
                    format!("{path}.interface"),
                    format!("\"{i}\" is not an interface name pattern"),
                );
            }
        }
        if let Some(c) = &self.communities {
            for (j, v) in c.values.iter().enumerate() {
                if let Err(e) = check_community_value(v) {
                    problems.push(format!("{path}.communities.values[{j}]"), e);
                }
            }
        }
        for (j, op) in self.operations.iter().enumerate() {
            let p = format!("{path}.operations[{j}]");
            match (&op.add_community, &op.prepend_as_path) {
                (Some(a), None) => {
                    if let Err(e) = check_community_value(&a.value) {
                        problems.push(format!("{p}.addCommunity.value"), e);
                    }
                }
                (None, Some(pp)) => {
                    if pp.prefix.is_empty() {
                        problems.push(
                            format!("{p}.prependASPath.prefix"),
                            "list at least one AS number",
                        );
                    }
                }
                _ => problems.push(p, "set exactly one of addCommunity or prependASPath"),
            }
        }
        if self.action == FilterAction::Reject && !self.operations.is_empty() {
            problems.push(
                format!("{path}.operations"),
                "operations only apply to accepted routes (action: Accept)",
            );
        }
    }
}

impl BgpFilterSpec {
    /// Checks every rule.
    pub fn check(&self, problems: &mut Problems) {
        for (list, v6, name) in [
            (&self.export_v4, false, "exportV4"),
            (&self.import_v4, false, "importV4"),
            (&self.export_v6, true, "exportV6"),
            (&self.import_v6, true, "importV6"),
        ] {
            for (i, r) in list.iter().enumerate() {
                r.check(&format!("spec.{name}[{i}]"), v6, problems);
            }
        }
    }
}
