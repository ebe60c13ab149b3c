//! Node registration: the agent creates or updates its Node resource with
//! its BGP addresses and AS, keeping every field it does not own (labels,
//! `routeReflectorClusterID`, tunnel addresses, ...), and finds its
//! address when none is given (calico-node's `IP=autodetect`).
//!
//! Autodetection methods (`--ip-autodetection-method`, env
//! `IP_AUTODETECTION_METHOD`), a subset of calico-node's:
//!
//! | method | address |
//! |---|---|
//! | `default-route` (default) | first global address of the interface the IPv4 default route leaves by; `first-found` when there is no default route |
//! | `first-found` | first global address of the first up interface (loopback, `tby*` pod veths, `docker*`, `cni*`, `virbr*`, `vxlan*`, `tunl*` skipped) |
//! | `interface=NAME[,NAME...]` | first global address of the first listed interface that has one; a trailing `*` matches a prefix (`eth*`) |
//! | `cidr=CIDR[,CIDR...]` | first address inside one of the ranges |

use std::net::IpAddr;

use ipnet::IpNet;
use tabby_dataplane::{Netlink, RouteTable};
use tabby_model::store::ResourceStore;
use tabby_model::{AsNumber, InterfaceAddress, Kind, Resource, ValidationError};

use crate::AgentError;

/// What the agent writes into its Node resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The node's name.
    pub name: String,
    /// `spec.bgp.ipv4Address` (with the subnet length).
    pub ipv4: Option<InterfaceAddress>,
    /// `spec.bgp.ipv6Address`.
    pub ipv6: Option<InterfaceAddress>,
    /// `spec.bgp.asNumber`, when given (otherwise left as stored).
    pub as_number: Option<AsNumber>,
}

/// How to find the node's address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AutodetectMethod {
    /// The interface of the default route (else `FirstFound`).
    DefaultRoute,
    /// The first usable interface.
    FirstFound,
    /// These interfaces, in order (`eth*` matches a prefix).
    Interfaces(Vec<String>),
    /// The first address inside one of these ranges.
    Cidrs(Vec<IpNet>),
}

impl std::str::FromStr for AutodetectMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        match s.split_once('=') {
            None if s == "default-route" => Ok(AutodetectMethod::DefaultRoute),
            None if s == "first-found" => Ok(AutodetectMethod::FirstFound),
            Some(("interface", v)) if !list(v).is_empty() => {
                Ok(AutodetectMethod::Interfaces(list(v)))
            }
            Some(("cidr", v)) if !list(v).is_empty() => list(v)
                .iter()
                .map(|c| {
                    c.parse::<IpNet>()
                        .map_err(|_| format!("cidr={c}: not a CIDR such as 10.0.0.0/24"))
                })
                .collect::<Result<_, _>>()
                .map(AutodetectMethod::Cidrs),
            _ => Err(format!(
                "unknown autodetection method {s:?}: use default-route, first-found, interface=NAME[,NAME] or cidr=CIDR[,CIDR]"
            )),
        }
    }
}

const SKIPPED_PREFIXES: [&str; 8] = [
    "lo",
    "tby",
    "docker",
    "cni",
    "virbr",
    "vxlan",
    "tunl",
    "kube-ipvs",
];

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn is_global(net: &IpNet) -> bool {
    match net.addr() {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
        IpAddr::V6(a) => {
            !a.is_loopback() && !a.is_unspecified() && (a.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

fn to_interface_address(net: IpNet) -> InterfaceAddress {
    InterfaceAddress {
        addr: net.addr(),
        prefix_len: Some(net.prefix_len()),
    }
}

/// Finds this host's address of one family (`v6`) with `method`.
pub fn autodetect(
    nl: &mut Netlink,
    method: &AutodetectMethod,
    v6: bool,
) -> Result<Option<InterfaceAddress>, AgentError> {
    let links = nl.links()?;
    let mut candidates: Vec<(String, Vec<IpNet>)> = Vec::new();
    for l in &links {
        let addrs: Vec<IpNet> = nl
            .addresses(l.index)?
            .into_iter()
            .filter(|a| a.addr().is_ipv6() == v6 && is_global(a))
            .collect();
        candidates.push((l.name.clone(), addrs));
    }
    let first_of = |name: &str| {
        candidates
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, a)| a.first().copied())
    };
    let first_found = || {
        links
            .iter()
            .filter(|l| l.up && !SKIPPED_PREFIXES.iter().any(|p| l.name.starts_with(p)))
            .find_map(|l| first_of(&l.name))
    };
    let found = match method {
        AutodetectMethod::DefaultRoute => {
            let default_dev = nl
                .list_routes(Some(RouteTable::MAIN))?
                .into_iter()
                .map(|installed| installed.route)
                .find_map(|r| {
                    (r.destination.prefix_len() == 0 && r.destination.addr().is_ipv6() == v6)
                        .then(|| r.next_hops.iter().find_map(|h| h.device))
                        .flatten()
                });
            match default_dev.and_then(|i| links.iter().find(|l| l.index == i)) {
                Some(l) => first_of(&l.name).or_else(first_found),
                None => first_found(),
            }
        }
        AutodetectMethod::FirstFound => first_found(),
        AutodetectMethod::Interfaces(patterns) => patterns.iter().find_map(|p| {
            links
                .iter()
                .filter(|l| name_matches(p, &l.name))
                .find_map(|l| first_of(&l.name))
        }),
        AutodetectMethod::Cidrs(ranges) => candidates
            .iter()
            .flat_map(|(_, a)| a.iter())
            .find(|a| ranges.iter().any(|r| r.contains(&a.addr())))
            .copied(),
    };
    Ok(found.map(to_interface_address))
}

fn node_document(reg: &Registration) -> serde_json::Value {
    let mut bgp = serde_json::Map::new();
    if let Some(a) = reg.ipv4 {
        bgp.insert("ipv4Address".into(), a.to_string().into());
    }
    if let Some(a) = reg.ipv6 {
        bgp.insert("ipv6Address".into(), a.to_string().into());
    }
    if let Some(a) = reg.as_number {
        bgp.insert("asNumber".into(), a.0.into());
    }
    let mut spec = serde_json::Map::new();
    if !bgp.is_empty() {
        spec.insert("bgp".into(), bgp.into());
    }
    serde_json::json!({
        "apiVersion": tabby_model::meta::API_VERSION_V3,
        "kind": "Node",
        "metadata": {"name": reg.name},
        "spec": spec,
    })
}

/// Creates the Node resource, or updates the fields the agent owns
/// (`spec.bgp.ipv4Address`, `ipv6Address`, `asNumber` when given).
pub async fn register(
    store: &ResourceStore,
    reg: &Registration,
) -> Result<tabby_model::Node, AgentError> {
    for _ in 0..5 {
        if store.get(Kind::Node, None, &reg.name).await?.is_none() {
            let resource = Resource::from_value(node_document(reg))
                .map_err(|e| AgentError::Registration(e.to_string()))?;
            let entry = tabby_model::ManifestEntry {
                doc: tabby_model::DocumentRef {
                    source: "tabby agent".into(),
                    index: 1,
                    item: None,
                    line: 1,
                    kind: Some("Node".into()),
                    name: Some(reg.name.clone()),
                },
                resource,
            };
            match store
                .write_batch(tabby_model::WriteMode::Create, &[entry])
                .await
            {
                Ok(mut w) => {
                    if let Some(Resource::Node(n)) = w.pop().map(|w| w.resource) {
                        return Ok(n);
                    }
                }
                // Created by someone else in between: update it instead.
                Err(e) => tracing::debug!("creating node {}: {e}; retrying as an update", reg.name),
            }
            continue;
        }
        let updated = store
            .update_with(Kind::Node, None, &reg.name, |old| {
                let Resource::Node(n) = old else {
                    return Err(ValidationError::single("kind", "not a Node"));
                };
                let mut n = n.clone();
                let bgp = n.spec.bgp.get_or_insert_with(Default::default);
                if reg.ipv4.is_some() {
                    bgp.ipv4_address = reg.ipv4;
                }
                if reg.ipv6.is_some() {
                    bgp.ipv6_address = reg.ipv6;
                }
                if reg.as_number.is_some() {
                    bgp.as_number = reg.as_number;
                }
                if *bgp == Default::default() {
                    n.spec.bgp = None;
                }
                Ok(Resource::Node(n))
            })
            .await;
        match updated {
            Ok(Resource::Node(n)) => return Ok(n),
            Ok(_) => {}
            Err(tabby_model::StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AgentError::Registration(format!(
        "node {}: the Node resource kept changing under us",
        reg.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autodetection_methods_parse() {
        assert_eq!(
            "first-found".parse::<AutodetectMethod>(),
            Ok(AutodetectMethod::FirstFound)
        );
        assert_eq!(
            "interface=eth0,ens*".parse::<AutodetectMethod>(),
            Ok(AutodetectMethod::Interfaces(vec![
                "eth0".into(),
                "ens*".into()
            ]))
        );
        assert!(matches!(
            "cidr=10.0.0.0/8".parse::<AutodetectMethod>(),
            Ok(AutodetectMethod::Cidrs(v)) if v.len() == 1
        ));
        let e = "can-reach=8.8.8.8"
            .parse::<AutodetectMethod>()
            .expect_err("unsupported");
        assert!(e.contains("first-found"), "{e}");
        assert!("cidr=nonsense".parse::<AutodetectMethod>().is_err());
        assert!(name_matches("eth*", "eth1") && !name_matches("eth0", "eth01"));
    }

    #[test]
    fn registration_document_is_a_valid_node() {
        let reg = Registration {
            name: "n1".into(),
            ipv4: Some("10.0.0.1/24".parse().expect("addr")),
            ipv6: None,
            as_number: Some(AsNumber(65001)),
        };
        let r = Resource::from_value(node_document(&reg)).expect("valid node");
        r.check().expect("passes checks");
        let Resource::Node(n) = r else {
            panic!("not a node")
        };
        let bgp = n.spec.bgp.expect("bgp");
        assert_eq!(
            bgp.ipv4_address.map(|a| a.to_string()).as_deref(),
            Some("10.0.0.1/24")
        );
        assert_eq!(bgp.as_number, Some(AsNumber(65001)));
    }
}
