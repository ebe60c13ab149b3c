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
