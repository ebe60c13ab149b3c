//! IPAM's view of the cluster's resources: pools (from `IPPool`), the IPAM
//! configuration (from `IPAMConfiguration`) and reservations (from
//! `IPReservation`), plus the order in which a node tries a pool's blocks.
//!
//! Loading these from the datastore is the caller's job (the model's
//! typed storage); this module only turns resources into what allocation
//! needs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tabby_model::{
    AllowedUse, AssignmentMode, IpPool, IpReservation, IpamConfigurationSpec, Selector,
};

/// One pool as IPAM uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// The IPPool's name.
    pub name: String,
    /// Its range (host bits cleared).
    pub cidr: IpNet,
    /// Prefix length of its blocks.
    pub block_size: u8,
    /// Nodes that may claim its blocks.
    pub node_selector: Selector,
    /// No new addresses when true.
    pub disabled: bool,
    /// What its addresses may be used for.
    pub allowed_uses: Vec<AllowedUse>,
    /// Only explicitly requested addresses (no auto-assignment).
    pub manual: bool,
}

impl Pool {
    /// A pool with Calico's defaults (`all()`, Workload + Tunnel, enabled).
    pub fn new(name: impl Into<String>, cidr: IpNet, block_size: u8) -> Pool {
        Pool {
            name: name.into(),
            cidr: cidr.trunc(),
            block_size,
            node_selector: Selector::all(),
            disabled: false,
            allowed_uses: vec![AllowedUse::Workload, AllowedUse::Tunnel],
            manual: false,
        }
    }

    /// From a (validated) IPPool resource.
    pub fn from_resource(p: &IpPool) -> Pool {
        Pool {
            name: p.metadata.name.clone(),
            cidr: p.spec.cidr.network(),
            block_size: p.spec.block_size(),
            node_selector: p.spec.node_selector(),
            disabled: p.spec.disabled,
            allowed_uses: p.spec.allowed_uses(),
            manual: p.spec.assignment_mode == Some(AssignmentMode::Manual),
        }
    }

    /// True for an IPv6 pool.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.cidr, IpNet::V6(_))
    }

    /// True when `node` (with these labels) may take automatically assigned
    /// addresses of `use_` from this pool.
    pub fn usable_by(&self, labels: &BTreeMap<String, String>, use_: AllowedUse) -> bool {
        !self.disabled
            && !self.manual
            && self.allowed_uses.contains(&use_)
            && self.node_selector.matches(labels)
    }

    /// Number of blocks (saturating at `u128::MAX`).
    pub fn block_count(&self) -> u128 {
        let bits = u32::from(self.block_size.saturating_sub(self.cidr.prefix_len()));
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }

    /// Number of addresses.
    pub fn address_count(&self) -> u128 {
        let bits = u32::from(self.cidr.max_prefix_len() - self.cidr.prefix_len());
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }

    /// The `i`-th block.
    pub fn block_at(&self, i: u128) -> Option<IpNet> {
        let host_bits = u32::from(self.cidr.max_prefix_len() - self.block_size);
        let offset = i.checked_shl(host_bits)?;
        match self.cidr {
            IpNet::V4(n) => {
                let base = u32::from(n.network()).checked_add(u32::try_from(offset).ok()?)?;
                Ipv4Net::new(base.into(), self.block_size)
                    .ok()
                    .map(IpNet::V4)
            }
            IpNet::V6(n) => {
                let base = u128::from(n.network()).checked_add(offset)?;
                Ipv6Net::new(base.into(), self.block_size)
                    .ok()
                    .map(IpNet::V6)
            }
        }
    }

    /// The block of this pool that holds `ip`.
    pub fn block_containing(&self, ip: IpAddr) -> Option<IpNet> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        IpNet::new(ip, self.block_size).ok().map(|n| n.trunc())
    }

    /// The pool's blocks in the order `node` tries them: from a start
    /// chosen by a hash of the node name, then upwards, wrapping around.
    /// Different nodes start in different places (few collisions when many
    /// claim at once); one node always tries the same order (a node that
    /// crashed mid-claim picks the same block again and finishes the claim).
    pub fn blocks_for_node(&self, node: &str) -> impl Iterator<Item = IpNet> + '_ {
        let count = self.block_count();
        let start = if count == 0 {
            0
        } else {
            u128::from(node_hash(node)) % count
        };
        (0..count).filter_map(move |i| self.block_at((start + i) % count))
    }
}

/// FNV-1a of the node name: a stable seed across runs and machines.
pub(crate) fn node_hash(node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The settings of `IPAMConfiguration` that allocation obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpamConfig {
    /// Never borrow from another node's block.
    pub strict_affinity: bool,
    /// Most blocks one node may claim per family (`None`: no limit).
    pub max_blocks_per_host: Option<u32>,
    /// Claim new blocks on demand.
    pub auto_allocate_blocks: bool,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            max_blocks_per_host: None,
            auto_allocate_blocks: true,
        }
    }
}

impl From<&IpamConfigurationSpec> for IpamConfig {
    fn from(s: &IpamConfigurationSpec) -> Self {
        IpamConfig {
            strict_affinity: s.strict_affinity,
            max_blocks_per_host: s.block_limit(),
            auto_allocate_blocks: s.auto_allocate_blocks,
        }
    }
}

/// Everything allocation reads besides the IPAM objects themselves.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Every pool, disabled ones included.
    pub pools: Vec<Pool>,
    /// The IPAM configuration.
    pub config: IpamConfig,
    /// Addresses never handed out automatically.
    pub reservations: Vec<IpNet>,
}

impl Environment {
    /// From the resources as stored.
    pub fn from_resources(
        pools: &[IpPool],
        config: Option<&IpamConfigurationSpec>,
        reservations: &[IpReservation],
    ) -> Environment {
        Environment {
            pools: pools.iter().map(Pool::from_resource).collect(),
            config: config.map(IpamConfig::from).unwrap_or_default(),
            reservations: reservations
                .iter()
                .flat_map(|r| r.spec.reserved_cidrs.iter().map(|c| c.network()))
                .collect(),
        }
    }

    /// True when `ip` is reserved.
    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        self.reservations.iter().any(|r| r.contains(&ip))
    }

    /// The pool holding `ip`.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.pools.iter().find(|p| p.cidr.contains(&ip))
    }

    /// The pool holding all of block `cidr`.
    pub fn pool_of_block(&self, cidr: &IpNet) -> Option<&Pool> {
        self.pools
            .iter()
            .find(|p| p.cidr.contains(cidr) && p.block_size == cidr.prefix_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_pool_once_in_node_order() {
        let p = Pool::new("p", "10.0.0.0/24".parse().expect("cidr"), 26);
        assert_eq!(p.block_count(), 4);
        let a: Vec<IpNet> = p.blocks_for_node("node-a").collect();
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "10.0.0.0/26",
                "10.0.0.64/26",
                "10.0.0.128/26",
                "10.0.0.192/26"
            ]
            .map(|s| s.parse::<IpNet>().expect("net"))
        );
        // Same node, same order.
        assert_eq!(a, p.blocks_for_node("node-a").collect::<Vec<_>>());
        let v6 = Pool::new("p6", "fd00::/64".parse().expect("cidr"), 122);
        assert_eq!(v6.block_count(), 1 << 58);
        let first = v6.blocks_for_node("n").next().expect("a block");
        assert_eq!(first.prefix_len(), 122);
        assert!(v6.cidr.contains(&first));
    }
}
