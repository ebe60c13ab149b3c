//! What a node announces and which drop routes it holds: a pure function
//! ([`node_exports`]) of the IPAM state, the pools and the `default`
//! BGPConfiguration.
//!
//! - every block with a *confirmed* affinity for the node: one aggregate
//!   route, and a kernel blackhole so that traffic to an unused address of
//!   the block is dropped here instead of looping to the default route;
//! - every address the node borrowed from another node's block (its
//!   allocation says `node: <this node>`): a /32 (/128), which wins over
//!   the owner's aggregate by length;
//! - `serviceClusterIPs`, `serviceExternalIPs`, `serviceLoadBalancerIPs`;
//! - nothing inside a pool with `disableBGPExport` (the blackhole is kept:
//!   it is about forwarding, not advertising).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use tabby_ipam::{AffinityState, Block, BlockAffinity};
use tabby_model::{BgpConfigurationSpec, IpPool};

/// A node's announcements and drop routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeExports {
    /// Prefixes the speaker originates, sorted.
    pub originate: Vec<IpNet>,
    /// Local blocks: one blackhole route each, sorted.
    pub blackholes: Vec<IpNet>,
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Computes what node `node` announces.
pub fn node_exports(
    node: &str,
    pools: &[IpPool],
    blocks: &[Block],
    affinities: &[BlockAffinity],
    bgp: &BgpConfigurationSpec,
) -> NodeExports {
    let not_exported = |net: &IpNet| {
        pools.iter().any(|p| {
            p.spec.disable_bgp_export && {
                let pool = p.spec.cidr.net();
                pool.contains(net) || net.contains(&pool)
            }
        })
    };
    let local: BTreeSet<IpNet> = affinities
        .iter()
        .filter(|a| a.host == node && a.state == AffinityState::Confirmed)
        .map(|a| a.cidr.trunc())
        .collect();
    let mut originate = BTreeSet::new();
    for b in &local {
        if !not_exported(b) {
            originate.insert(*b);
        }
    }
    for block in blocks {
        if local.contains(&block.cidr) || block.host() == Some(node) {
            continue;
        }
        for (ip, attr, _) in block.allocated() {
            let mine = attr.is_some_and(|a| a.secondary.get("node").is_some_and(|n| n == node));
            let net = host_net(ip);
            if mine && !not_exported(&net) {
                originate.insert(net);
            }
        }
    }
    for s in bgp
        .service_cluster_ips
        .iter()
        .chain(&bgp.service_external_ips)
        .chain(&bgp.service_load_balancer_ips)
    {
        originate.insert(s.cidr.network());
    }
    NodeExports {
        originate: originate.into_iter().collect(),
        blackholes: local.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tabby_ipam::AllocationAttribute;
    use tabby_model::{Resource, parse_manifest};

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn pools(yaml: &str) -> Vec<IpPool> {
        parse_manifest("pools.yaml", yaml)
            .expect("manifest")
            .into_iter()
            .filter_map(|e| match e.resource {
                Resource::IpPool(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn affinity(host: &str, cidr: &str, state: AffinityState) -> BlockAffinity {
        BlockAffinity {
            host: host.into(),
            cidr: net(cidr),
            state,
        }
    }

    fn block_with(cidr: &str, owner: &str, borrowers: &[(&str, &str)]) -> Block {
        let mut b = Block::new(net(cidr), Some(owner));
        for (ip, node) in borrowers {
            let attr = AllocationAttribute {
                handle_id: Some(format!("h-{ip}")),
                secondary: BTreeMap::from([("node".to_owned(), (*node).to_owned())]),
            };
            assert!(b.assign_ip(ip.parse().expect("ip"), attr));
        }
        b
    }

    const POOLS: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.244.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: private}\nspec: {cidr: 10.250.0.0/16, disableBGPExport: true}\n";

    #[test]
    fn confirmed_local_blocks_are_aggregates_and_blackholes() {
        let e = node_exports(
            "a",
            &pools(POOLS),
            &[],
            &[
                affinity("a", "10.244.1.0/26", AffinityState::Confirmed),
                affinity("a", "10.244.2.0/26", AffinityState::Pending),
                affinity("b", "10.244.3.0/26", AffinityState::Confirmed),
                affinity("a", "10.250.0.0/26", AffinityState::Confirmed),
            ],
            &BgpConfigurationSpec::default(),
        );
        assert_eq!(e.originate, vec![net("10.244.1.0/26")]);
        assert_eq!(
            e.blackholes,
            vec![net("10.244.1.0/26"), net("10.250.0.0/26")]
        );
    }

    #[test]
    fn borrowed_addresses_are_host_routes() {
        let blocks = [
            block_with(
                "10.244.3.0/26",
                "b",
                &[("10.244.3.5", "a"), ("10.244.3.6", "b")],
            ),
            block_with("10.250.3.0/26", "b", &[("10.250.3.5", "a")]),
            block_with("10.244.1.0/26", "a", &[("10.244.1.1", "a")]),
        ];
        let e = node_exports(
            "a",
            &pools(POOLS),
            &blocks,
            &[affinity("a", "10.244.1.0/26", AffinityState::Confirmed)],
            &BgpConfigurationSpec::default(),
        );
        assert_eq!(
            e.originate,
            vec![net("10.244.1.0/26"), net("10.244.3.5/32")]
        );
        let b = node_exports(
            "b",
            &pools(POOLS),
            &blocks,
            &[],
            &BgpConfigurationSpec::default(),
        );
        assert!(
            b.originate.is_empty(),
            "b's own block comes from its affinity only"
        );
    }

    #[test]
    fn service_cidrs_are_exported() {
        let spec: BgpConfigurationSpec = serde_json::from_value(serde_json::json!({
            "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}],
            "serviceExternalIPs": [{"cidr": "192.0.2.0/24"}, {"cidr": "10.96.0.0/12"}],
        }))
        .expect("spec");
        let e = node_exports("a", &[], &[], &[], &spec);
        assert_eq!(e.originate, vec![net("10.96.0.0/12"), net("192.0.2.0/24")]);
        assert!(e.blackholes.is_empty());
    }
}
