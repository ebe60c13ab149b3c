//! `IPPool`: a range of pod addresses, split into blocks that nodes claim.
//!
//! Defaults and rules follow Calico: block size /26 (IPv4) or /122 (IPv6),
//! IPIP and VXLAN `Never`, `nodeSelector: all()`, allowed uses Workload and
//! Tunnel; block size 20..=32 (v4) or 116..=128 (v6); the CIDR strictly
//! masked, at least one block big, clear of link-local space; IPIP never on
//! IPv6; IPIP and VXLAN never both; `cidr` and `blockSize` immutable; pools
//! never overlap each other.

use serde::{Deserialize, Serialize};

use crate::address::Cidr;
use crate::error::{FieldError, Problems};
use crate::resource::Object;
use crate::selector::Selector;

/// An IP pool resource.
pub type IpPool = Object<IpPoolSpec>;

/// When to encapsulate traffic between nodes (IPIP or VXLAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EncapMode {
    /// Never encapsulate.
    Never,
    /// Always encapsulate.
    Always,
    /// Encapsulate only when the destination node is in another subnet.
    CrossSubnet,
}

impl EncapMode {
    /// Calico's spelling of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            EncapMode::Never => "Never",
            EncapMode::Always => "Always",
            EncapMode::CrossSubnet => "CrossSubnet",
        }
    }
}

/// What addresses of a pool may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AllowedUse {
    /// Pod (workload) addresses.
    Workload,
    /// Node tunnel addresses (IPIP, VXLAN).
    Tunnel,
    /// Service load-balancer addresses.
    LoadBalancer,
}

/// Whether IPAM hands out the pool's addresses on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AssignmentMode {
    /// Addresses are assigned automatically.
    Automatic,
    /// Only explicitly requested addresses are assigned.
    Manual,
}

/// `IPPool.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPoolSpec {
    /// The pool's range.
    pub cidr: Cidr,
    /// Prefix length of the blocks the pool is split into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    /// IPIP encapsulation mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapMode>,
    /// VXLAN encapsulation mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapMode>,
    /// Masquerade traffic from pods to destinations outside all pools.
    #[serde(default)]
    pub nat_outgoing: bool,
    /// When true, no new addresses are assigned from the pool.
    #[serde(default)]
    pub disabled: bool,
    /// When true, the pool's blocks are not advertised over BGP.
    #[serde(default, rename = "disableBGPExport")]
    pub disable_bgp_export: bool,
    /// Nodes that may take blocks from this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Selector>,
    /// Namespaces whose pods may take addresses from this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
    /// What the addresses may be used for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_uses: Option<Vec<AllowedUse>>,
    /// Automatic or manual assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
}

impl IpPoolSpec {
    /// A pool with every optional field unset.
    pub fn new(cidr: Cidr) -> Self {
        IpPoolSpec {
            cidr,
            block_size: None,
            ipip_mode: None,
            vxlan_mode: None,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
            node_selector: None,
            namespace_selector: None,
            allowed_uses: None,
            assignment_mode: None,
        }
    }

    /// Default block size for the pool's address family.
    pub fn default_block_size(cidr: &Cidr) -> u8 {
        if cidr.is_ipv6() { 122 } else { 26 }
    }

    /// The block size, defaulted.
    pub fn block_size(&self) -> u8 {
        self.block_size
            .unwrap_or_else(|| Self::default_block_size(&self.cidr))
    }

    /// The IPIP mode, defaulted to `Never`.
    pub fn ipip_mode(&self) -> EncapMode {
        self.ipip_mode.unwrap_or(EncapMode::Never)
    }

    /// The VXLAN mode, defaulted to `Never`.
    pub fn vxlan_mode(&self) -> EncapMode {
        self.vxlan_mode.unwrap_or(EncapMode::Never)
    }

    /// The node selector, defaulted to `all()`.
    pub fn node_selector(&self) -> Selector {
        self.node_selector.clone().unwrap_or_else(Selector::all)
    }

    /// The allowed uses, defaulted to Workload and Tunnel.
    pub fn allowed_uses(&self) -> Vec<AllowedUse> {
        self.allowed_uses
            .clone()
            .unwrap_or_else(|| vec![AllowedUse::Workload, AllowedUse::Tunnel])
    }

    /// True when the pool allows `use_`.
    pub fn allows(&self, use_: AllowedUse) -> bool {
        self.allowed_uses().contains(&use_)
    }

    /// The assignment mode, defaulted to `Automatic`.
    pub fn assignment_mode(&self) -> AssignmentMode {
        self.assignment_mode.unwrap_or(AssignmentMode::Automatic)
    }

    /// Fills in every default, as Calico stores a pool.
    pub fn apply_defaults(&mut self) {
        self.block_size = Some(self.block_size());
        self.ipip_mode = Some(self.ipip_mode());
        self.vxlan_mode = Some(self.vxlan_mode());
        self.node_selector = Some(self.node_selector());
        self.allowed_uses = Some(self.allowed_uses());
        self.assignment_mode = Some(self.assignment_mode());
    }

    /// Checks the pool on its own (see the module doc for the rules).
    pub fn check(&self, problems: &mut Problems) {
        let v6 = self.cidr.is_ipv6();
        if !self.cidr.is_masked() {
            problems.push(
                "spec.cidr",
                format!(
                    "{} has host bits set: write the network address {}",
                    self.cidr,
                    self.cidr.network()
                ),
            );
        }
        let bs = self.block_size();
        let range = if v6 { 116..=128 } else { 20..=32 };
        if !range.contains(&bs) {
            problems.push(
                "spec.blockSize",
                format!(
                    "block size {bs} is out of range for an {} pool: must be {}..={}",
                    if v6 { "IPv6" } else { "IPv4" },
                    range.start(),
                    range.end()
                ),
            );
        } else if !self.disabled && self.cidr.prefix_len() > bs {
            problems.push(
                "spec.cidr",
                format!(
                    "pool {} is smaller than one block (/{bs}): make the pool larger or the blockSize larger",
                    self.cidr
                ),
            );
        }
        let link_local: Cidr = if v6 {
            Cidr::from(ipnet::IpNet::V6(
                ipnet::Ipv6Net::new(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10)
                    .unwrap_or_default(),
            ))
        } else {
            Cidr::from(ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(169, 254, 0, 0), 16)
                    .unwrap_or_default(),
            ))
        };
        if self.cidr.overlaps(&link_local) {
            problems.push(
                "spec.cidr",
                format!("{} overlaps the link-local range {link_local}", self.cidr),
            );
        }
        if v6 && self.ipip_mode() != EncapMode::Never {
            problems.push(
                "spec.ipipMode",
                "IPIP is IPv4 only: ipipMode must be Never on an IPv6 pool",
            );
        }
        if self.ipip_mode() != EncapMode::Never && self.vxlan_mode() != EncapMode::Never {
            problems.push(
                "spec.vxlanMode",
                "IPIP and VXLAN cannot both be enabled on one pool: set ipipMode or vxlanMode to Never",
            );
        }
        if let Some(uses) = &self.allowed_uses {
            if uses.contains(&AllowedUse::LoadBalancer) && uses.len() > 1 {
                problems.push(
                    "spec.allowedUses",
                    "LoadBalancer cannot be combined with other uses",
                );
            }
        }
    }

    /// Checks a change from `old` to `self`: `cidr` and `blockSize` cannot
    /// change once a pool exists (its blocks would no longer line up).
    pub fn check_update(&self, old: &IpPoolSpec, problems: &mut Problems) {
        if self.cidr.network() != old.cidr.network() {
            problems.push(
                "spec.cidr",
                format!(
                    "cidr cannot be changed (was {}, now {}): create a new pool, disable the old one, then delete it",
                    old.cidr, self.cidr
                ),
            );
        }
        if self.block_size() != old.block_size() {
            problems.push(
                "spec.blockSize",
                format!(
                    "blockSize cannot be changed (was {}, now {}): create a new pool instead",
                    old.block_size(),
                    self.block_size()
                ),
            );
        }
    }
}

/// Finds pools whose CIDRs overlap. `pools` is every pool that would exist
/// after a change; errors are reported against the pool named first in
/// `changed` (the ones being written), naming the pool it collides with.
pub fn find_overlapping_pools(pools: &[&IpPool], changed: &[&str]) -> Vec<(String, FieldError)> {
    let mut out = Vec::new();
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            if a.metadata.name == b.metadata.name || !a.spec.cidr.overlaps(&b.spec.cidr) {
                continue;
            }
            // Blame a pool that is being written; prefer the later one.
            let (blamed, other) = if changed.contains(&b.metadata.name.as_str()) {
                (b, a)
            } else {
                (a, b)
            };
            out.push((
                blamed.metadata.name.clone(),
                FieldError::new(
                    "spec.cidr",
                    format!(
                        "{} overlaps IPPool \"{}\" ({}): pools must not overlap; disable and delete the old pool first",
                        blamed.spec.cidr, other.metadata.name, other.spec.cidr
                    ),
                ),
            ));
        }
    }
    out
}
