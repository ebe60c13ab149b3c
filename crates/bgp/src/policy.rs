//! Import and export policy with the semantics of Calico's `BGPFilter`.
//!
//! Owns [`Policy`] (an ordered rule list per address family), [`Rule`]
//! (match conditions, an action, modifications) and their evaluation
//! against one route. Rules are tried in order and the first whose
//! conditions all hold decides; a route no rule matches is accepted
//! (Calico's default action). The types deserialize from the camelCase
//! YAML/JSON Calico users write (`cidr`, `matchOperator`, `prefixLength`,
//! `source: RemotePeers`, `peerType`, `communities`, `asPathPrefix`,
//! `action`, plus tabby's modifications). Where a policy is applied (which
//! peer, import or export) is [`crate::rib`]'s business.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::attribute::{Community, PathAttributes};
use crate::nlri::Prefix;

/// How a rule's `cidr` is compared with the route's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MatchOperator {
    /// The prefix equals the CIDR.
    Equal,
    /// The prefix differs from the CIDR.
    NotEqual,
    /// The prefix lies inside the CIDR (or equals it).
    #[default]
    In,
    /// The prefix does not lie inside the CIDR.
    NotIn,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Accept the route (after the rule's modifications).
    Accept,
    /// Drop the route.
    Reject,
}

/// Where a route came from, for the `source` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteSource {
    /// Learned from a BGP peer (Calico's `RemotePeers`).
    RemotePeers,
    /// Originated by this speaker.
    Local,
}

/// The kind of BGP session, for the `peerType` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerType {
    /// External BGP (different AS).
    #[serde(rename = "eBGP", alias = "EBGP", alias = "External")]
    Ebgp,
    /// Internal BGP (same AS).
    #[serde(rename = "iBGP", alias = "IBGP", alias = "Internal")]
    Ibgp,
}

/// A prefix length range; either bound may be omitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixLength {
    /// Shortest length matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u8>,
    /// Longest length matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u8>,
}

/// Which next hop an accepted route gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextHopAction {
    /// This speaker's own address on the session.
    #[serde(rename = "Self")]
    SelfAddress,
    /// Leave the next hop unchanged.
    Keep,
}

/// Changes a rule makes to an accepted route.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Modifications {
    /// Communities to add.
    pub add_community: Vec<Community>,
    /// AS numbers to prepend to the AS path, leftmost first.
    pub prepend_as_path: Vec<u32>,
    /// LOCAL_PREF to set.
    pub set_local_pref: Option<u32>,
    /// MULTI_EXIT_DISC to set.
    pub set_med: Option<u32>,
    /// Next hop handling.
    pub next_hop: Option<NextHopAction>,
}

impl Modifications {
    /// True when the rule changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Modifications::default()
    }
}

/// One filter rule. Every condition present must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Decision when the rule matches.
    pub action: Action,
    /// Prefix to compare with (`matchOperator` says how).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_prefix")]
    pub cidr: Option<Prefix>,
    /// How `cidr` is compared (default `In`).
    #[serde(default)]
    pub match_operator: MatchOperator,
    /// Prefix length range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLength>,
    /// Route source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RouteSource>,
    /// Session kind of the peer the policy is applied for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_type: Option<PeerType>,
    /// The route carries all of these communities.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "community_list"
    )]
    pub communities: Vec<Community>,
    /// The AS path starts with these ASes.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        rename = "asPathPrefix"
    )]
    pub as_path_prefix: Vec<u32>,
    /// Communities to add when accepted.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "community_list"
    )]
    pub add_community: Vec<Community>,
    /// AS numbers to prepend when accepted, leftmost first.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        rename = "prependASPath"
    )]
    pub prepend_as_path: Vec<u32>,
    /// LOCAL_PREF to set when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_local_pref: Option<u32>,
    /// MULTI_EXIT_DISC to set when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "setMED")]
    pub set_med: Option<u32>,
    /// Next hop handling when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<NextHopAction>,
}

impl Rule {
    /// A rule with only an action (matches everything).
    pub fn new(action: Action) -> Self {
        Rule {
            action,
            cidr: None,
            match_operator: MatchOperator::In,
            prefix_length: None,
            source: None,
            peer_type: None,
            communities: Vec::new(),
            as_path_prefix: Vec::new(),
            add_community: Vec::new(),
            prepend_as_path: Vec::new(),
            set_local_pref: None,
            set_med: None,
            next_hop: None,
        }
    }

    /// The changes this rule makes to an accepted route.
    pub fn modifications(&self) -> Modifications {
        Modifications {
            add_community: self.add_community.clone(),
            prepend_as_path: self.prepend_as_path.clone(),
            set_local_pref: self.set_local_pref,
            set_med: self.set_med,
            next_hop: self.next_hop,
        }
    }

    /// True when every condition holds for the route.
    pub fn matches(&self, route: &RouteContext<'_>) -> bool {
        if let Some(cidr) = self.cidr {
            let hit = match self.match_operator {
                MatchOperator::Equal => route.prefix == cidr,
                MatchOperator::NotEqual => route.prefix != cidr,
                MatchOperator::In => cidr.contains(route.prefix),
                MatchOperator::NotIn => {
                    cidr.family() == route.prefix.family() && !cidr.contains(route.prefix)
                }
            };
            if !hit {
                return false;
            }
        }
        if let Some(pl) = self.prefix_length {
            let len = route.prefix.len();
            if pl.min.is_some_and(|m| len < m) || pl.max.is_some_and(|m| len > m) {
                return false;
            }
        }
        if self.source.is_some_and(|s| s != route.source) {
            return false;
        }
        if self.peer_type.is_some_and(|t| t != route.peer_type) {
            return false;
        }
        if !self
            .communities
            .iter()
            .all(|c| route.attrs.has_community(*c))
        {
            return false;
        }
        if !self.as_path_prefix.is_empty()
            && !route
                .attrs
                .as_path_or_empty()
                .starts_with(&self.as_path_prefix)
        {
            return false;
        }
        true
    }
}

/// The route a policy looks at.
#[derive(Debug)]
pub struct RouteContext<'a> {
    /// The prefix.
    pub prefix: Prefix,
    /// Its attributes.
    pub attrs: &'a PathAttributes,
    /// Learned or local.
    pub source: RouteSource,
    /// The session kind of the peer the policy applies to.
    pub peer_type: PeerType,
}

/// The outcome of evaluating a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted unchanged.
    Accept,
    /// Accepted with modifications (apply with [`apply_modifications`]).
    Modify(Modifications),
    /// Rejected.
    Reject,
}

/// An ordered rule list for each address family (Calico's `importV4` /
/// `exportV4` ... split by family; here one list per family per direction).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Rules for IPv4 routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v4: Vec<Rule>,
    /// Rules for IPv6 routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v6: Vec<Rule>,
}

impl Policy {
    /// A policy accepting everything.
    pub fn accept_all() -> Self {
        Policy::default()
    }

    /// True when there is no rule (everything is accepted unchanged).
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Evaluates the rules of the route's family; the first match decides,
    /// no match accepts.
    pub fn evaluate(&self, route: &RouteContext<'_>) -> Verdict {
        let rules = match route.prefix {
            Prefix::V4(_) => &self.v4,
            Prefix::V6(_) => &self.v6,
        };
        for r in rules {
            if r.matches(route) {
                return match r.action {
                    Action::Reject => Verdict::Reject,
                    Action::Accept => {
                        let m = r.modifications();
                        if m.is_empty() {
                            Verdict::Accept
                        } else {
                            Verdict::Modify(m)
                        }
                    }
                };
            }
        }
        Verdict::Accept
    }
}

/// Applies modifications to a copy of `attrs`. `self_next_hop` is this
/// speaker's address for [`NextHopAction::SelfAddress`] (IPv4 routes).
pub fn apply_modifications(
    attrs: &Arc<PathAttributes>,
    m: &Modifications,
    self_next_hop: Option<std::net::IpAddr>,
) -> PathAttributes {
    let mut a = (**attrs).clone();
    for c in &m.add_community {
        if !a.communities.contains(c) {
            a.communities.push(*c);
        }
    }
    if !m.prepend_as_path.is_empty() {
        let path = a.as_path.get_or_insert_with(Default::default);
        for asn in m.prepend_as_path.iter().rev() {
            path.prepend(*asn, 1);
        }
    }
    if let Some(lp) = m.set_local_pref {
        a.local_pref = Some(lp);
    }
    if let Some(med) = m.set_med {
        a.med = Some(med);
    }
    if m.next_hop == Some(NextHopAction::SelfAddress) {
        match self_next_hop {
            Some(std::net::IpAddr::V4(v4)) => a.next_hop = Some(v4),
            Some(addr @ std::net::IpAddr::V6(_)) => {
                a.mp_next_hop = Some(crate::attribute::MpNextHop {
                    addr,
                    link_local: None,
                })
            }
            None => {}
        }
    }
    a
}

mod community_list {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::attribute::Community;

    pub fn serialize<S: Serializer>(v: &[Community], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|c| c.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Community>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let list = match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        list.iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

mod opt_prefix {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::nlri::Prefix;

    pub fn serialize<S: Serializer>(v: &Option<Prefix>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(p) => s.serialize_str(&p.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Prefix>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            s.parse()
                .map_err(|e| serde::de::Error::custom(format!("invalid cidr {s:?}: {e}")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::AsPath;

    fn ctx<'a>(prefix: &str, attrs: &'a PathAttributes) -> RouteContext<'a> {
        RouteContext {
            prefix: prefix.parse().expect("prefix"),
            attrs,
            source: RouteSource::RemotePeers,
            peer_type: PeerType::Ebgp,
        }
    }

    fn rule(action: Action, cidr: &str, op: MatchOperator) -> Rule {
        Rule {
            cidr: Some(cidr.parse().expect("cidr")),
            match_operator: op,
            ..Rule::new(action)
        }
    }

    #[test]
    fn match_operators() {
        let a = PathAttributes::default();
        let cases = [
            (MatchOperator::Equal, "10.0.0.0/16", "10.0.0.0/16", true),
            (MatchOperator::Equal, "10.0.0.0/16", "10.0.1.0/24", false),
            (MatchOperator::NotEqual, "10.0.0.0/16", "10.0.1.0/24", true),
            (MatchOperator::In, "10.0.0.0/16", "10.0.1.0/24", true),
            (MatchOperator::In, "10.0.0.0/16", "10.0.0.0/16", true),
            (MatchOperator::In, "10.0.0.0/16", "10.0.0.0/8", false),
            (MatchOperator::NotIn, "10.0.0.0/16", "10.1.0.0/24", true),
            (MatchOperator::NotIn, "10.0.0.0/16", "10.0.5.0/24", false),
        ];
        for (op, cidr, p, want) in cases {
            assert_eq!(
                rule(Action::Reject, cidr, op).matches(&ctx(p, &a)),
                want,
                "{op:?} {cidr} {p}"
            );
        }
    }

    #[test]
    fn first_match_wins_and_default_accepts() {
        let a = PathAttributes::default();
        let p = Policy {
            v4: vec![
                Rule {
                    prefix_length: Some(PrefixLength {
                        min: Some(30),
                        max: None,
                    }),
                    ..rule(Action::Accept, "55.0.0.0/16", MatchOperator::In)
                },
                rule(Action::Reject, "55.0.0.0/16", MatchOperator::In),
            ],
            v6: vec![],
        };
        assert_eq!(p.evaluate(&ctx("55.0.1.0/30", &a)), Verdict::Accept);
        assert_eq!(p.evaluate(&ctx("55.0.1.0/24", &a)), Verdict::Reject);
        assert_eq!(p.evaluate(&ctx("66.0.0.0/24", &a)), Verdict::Accept);
        assert_eq!(p.evaluate(&ctx("fd00::/64", &a)), Verdict::Accept);
    }

    #[test]
    fn community_peer_type_and_as_path_conditions() {
        let a = PathAttributes {
            communities: vec![Community::new(65000, 1)],
            as_path: Some(AsPath::from_sequence([65001, 65002])),
            ..Default::default()
        };
        let mut r = Rule::new(Action::Reject);
        r.communities = vec![Community::new(65000, 1)];
        assert!(r.matches(&ctx("10.0.0.0/24", &a)));
        r.peer_type = Some(PeerType::Ibgp);
        assert!(!r.matches(&ctx("10.0.0.0/24", &a)));
        let mut r = Rule::new(Action::Reject);
        r.as_path_prefix = vec![65001];
        assert!(r.matches(&ctx("10.0.0.0/24", &a)));
        r.as_path_prefix = vec![65002];
        assert!(!r.matches(&ctx("10.0.0.0/24", &a)));
        let mut r = Rule::new(Action::Reject);
        r.source = Some(RouteSource::Local);
        assert!(!r.matches(&ctx("10.0.0.0/24", &a)));
    }

    #[test]
    fn modifications_apply() {
        let a = Arc::new(PathAttributes {
            as_path: Some(AsPath::from_sequence([65001])),
            ..Default::default()
        });
        let m = Modifications {
            add_community: vec![Community::NO_EXPORT],
            prepend_as_path: vec![64512, 64512],
            set_local_pref: Some(200),
            set_med: Some(7),
            next_hop: Some(NextHopAction::SelfAddress),
        };
        let out = apply_modifications(&a, &m, Some("10.0.0.9".parse().expect("addr")));
        assert_eq!(out.as_path.expect("path").to_string(), "64512 64512 65001");
        assert_eq!(out.communities, vec![Community::NO_EXPORT]);
        assert_eq!((out.local_pref, out.med), (Some(200), Some(7)));
        assert_eq!(out.next_hop, Some("10.0.0.9".parse().expect("addr")));
    }

    #[test]
    fn deserializes_calico_style_json() {
        let json = r#"{"v4": [
            {"action": "Accept", "matchOperator": "In", "cidr": "77.0.0.0/16", "source": "RemotePeers"},
            {"action": "Accept", "cidr": "55.0.0.0/16", "prefixLength": {"min": 30},
             "addCommunity": "65000:100", "prependASPath": [64512], "setLocalPref": 150},
            {"action": "Reject", "peerType": "iBGP", "communities": ["no-export"]}
        ]}"#;
        let p: Policy = serde_json::from_str(json).expect("parse");
        assert_eq!(p.v4.len(), 3);
        assert_eq!(p.v4[1].add_community, vec![Community::new(65000, 100)]);
        assert_eq!(p.v4[2].peer_type, Some(PeerType::Ibgp));
        let bad = r#"{"v4": [{"action": "Accept", "cidr": "77.0.0.0/33"}]}"#;
        let e = serde_json::from_str::<Policy>(bad).expect_err("bad cidr");
        assert!(e.to_string().contains("77.0.0.0/33"), "{e}");
        let bad = r#"{"v4": [{"action": "Maybe"}]}"#;
        assert!(serde_json::from_str::<Policy>(bad).is_err());
    }
}
