//! `IPAMBlock`: one block of a pool (a /26 by default) and the bookkeeping
//! of which of its addresses are allocated, to which handle, with which
//! attributes. Pure data and logic: no datastore here.
//!
//! Layout follows Calico's allocation block: `allocations[ordinal]` is an
//! index into `attributes` (or null when free), `unallocated` lists the
//! free ordinals in the order they will be handed out (released ordinals go
//! to the back, so an address is not reused at once), and every allocation
//! records the block's `sequenceNumber` at that moment so that a release
//! made with a stale sequence number (the address was freed and handed out
//! again meanwhile) does not free the new owner's address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The largest block tabby accepts (a /20 or a /116: 4096 addresses).
pub const MAX_BLOCK_ADDRESSES: u32 = 4096;

/// Attributes shared by one or more allocations of a block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationAttribute {
    /// The handle the allocation belongs to (`k8s-pod-network.<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    /// Free-form attributes (`namespace`, `pod`, `node`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secondary: BTreeMap<String, String>,
}

/// One IPAM block as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    /// The block's range.
    pub cidr: IpNet,
    /// `host:<node>` when a node has affinity for the block.
    #[serde(default)]
    pub affinity: Option<String>,
    /// Per ordinal: index into `attributes`, or null when free.
    pub allocations: Vec<Option<u32>>,
    /// Free ordinals, in hand-out order.
    pub unallocated: Vec<u32>,
    /// Attribute sets referenced by `allocations`.
    pub attributes: Vec<AllocationAttribute>,
    /// Bumped by every allocation.
    pub sequence_number: u64,
    /// The sequence number each current allocation was made at.
    #[serde(default)]
    pub sequence_numbers_for_allocations: BTreeMap<u32, u64>,
}

/// What [`Block::release`] did with one requested address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseResult {
    /// Freed; it belonged to this handle (if any).
    Released {
        /// The handle the address had.
        handle: Option<String>,
    },
    /// It was not allocated (nothing to do).
    NotAllocated,
    /// It was allocated again since (sequence number differs): left alone.
    Reused,
    /// It belongs to another handle than the caller said: left alone.
    OtherHandle,
    /// The address is not in this block.
    OutsideBlock,
}

/// The prefix of a block's affinity string.
pub const HOST_AFFINITY_PREFIX: &str = "host:";

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Block {
    /// An empty block, affine to `host` if given.
    pub fn new(cidr: IpNet, host: Option<&str>) -> Block {
        let cidr = cidr.trunc();
        let size = Block::size_of(&cidr);
        Block {
            cidr,
            affinity: host.map(|h| format!("{HOST_AFFINITY_PREFIX}{h}")),
            allocations: vec![None; size as usize],
            unallocated: (0..size).collect(),
            attributes: Vec::new(),
            sequence_number: 0,
            sequence_numbers_for_allocations: BTreeMap::new(),
        }
    }

    /// How many addresses a block of this range has (capped at
    /// [`MAX_BLOCK_ADDRESSES`] for validation purposes).
    pub fn size_of(cidr: &IpNet) -> u32 {
        let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
        if host_bits >= 13 {
            MAX_BLOCK_ADDRESSES * 2
        } else {
            1 << host_bits
        }
    }

    /// Number of addresses.
    pub fn size(&self) -> u32 {
        self.allocations.len() as u32
    }

    /// The node this block is affine to.
    pub fn host(&self) -> Option<&str> {
        self.affinity
            .as_deref()
            .and_then(|a| a.strip_prefix(HOST_AFFINITY_PREFIX))
    }

    /// The ordinal of `ip` in this block.
    pub fn ordinal_of(&self, ip: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        let off = to_u128(ip) - to_u128(self.cidr.network());
        u32::try_from(off).ok().filter(|o| *o < self.size())
    }

    /// The address at `ordinal`.
    pub fn ip_at(&self, ordinal: u32) -> IpAddr {
        let base = to_u128(self.cidr.network()) + u128::from(ordinal);
        match self.cidr {
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(base as u32)),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(base)),
        }
    }

    /// Number of allocated addresses.
    pub fn in_use(&self) -> u32 {
        self.allocations.iter().filter(|a| a.is_some()).count() as u32
    }

    /// True when nothing is allocated.
    pub fn is_empty(&self) -> bool {
        self.allocations.iter().all(Option::is_none)
    }

    /// Free addresses that may be handed out (not reserved).
    pub fn free_count(&self, reserved: &dyn Fn(IpAddr) -> bool) -> u32 {
        self.unallocated
            .iter()
            .filter(|o| !reserved(self.ip_at(**o)))
            .count() as u32
    }

    fn attribute_index(&mut self, attr: AllocationAttribute) -> u32 {
        if let Some(i) = self.attributes.iter().position(|a| *a == attr) {
            return i as u32;
        }
        self.attributes.push(attr);
        (self.attributes.len() - 1) as u32
    }

    fn record(&mut self, ordinal: u32, attr_index: u32) {
        self.allocations[ordinal as usize] = Some(attr_index);
        self.sequence_numbers_for_allocations
            .insert(ordinal, self.sequence_number);
        self.sequence_number += 1;
    }

    /// Allocates up to `n` addresses in hand-out order, skipping reserved
    /// ones; returns them (fewer than `n` when the block runs out).
    pub fn assign(
        &mut self,
        n: usize,
        attr: AllocationAttribute,
        reserved: &dyn Fn(IpAddr) -> bool,
    ) -> Vec<IpAddr> {
        let mut picked = Vec::new();
        let mut kept = Vec::with_capacity(self.unallocated.len());
        for &o in &self.unallocated {
            if picked.len() < n && !reserved(self.ip_at(o)) {
                picked.push(o);
            } else {
                kept.push(o);
            }
        }
        if picked.is_empty() {
            return Vec::new();
        }
        self.unallocated = kept;
        let idx = self.attribute_index(attr);
        picked
            .into_iter()
            .map(|o| {
                self.record(o, idx);
                self.ip_at(o)
            })
            .collect()
    }

    /// Allocates one specific address; false if it is taken or outside.
    pub fn assign_ip(&mut self, ip: IpAddr, attr: AllocationAttribute) -> bool {
        let Some(o) = self.ordinal_of(ip) else {
            return false;
        };
        let Some(pos) = self.unallocated.iter().position(|u| *u == o) else {
            return false;
        };
        self.unallocated.remove(pos);
        let idx = self.attribute_index(attr);
        self.record(o, idx);
        true
    }

    /// The handle and sequence number of the allocation at `ip`.
    pub fn allocation(&self, ip: IpAddr) -> Option<(&AllocationAttribute, u64)> {
        let o = self.ordinal_of(ip)?;
        let idx = self.allocations.get(o as usize).copied().flatten()?;
        let attr = self.attributes.get(idx as usize)?;
        let seq = self
            .sequence_numbers_for_allocations
            .get(&o)
            .copied()
            .unwrap_or(0);
        Some((attr, seq))
    }

    /// Frees `ip` unless `sequence` (when given) no longer matches, or
    /// `handle` (when given) is not its handle.
    pub fn release(
        &mut self,
        ip: IpAddr,
        sequence: Option<u64>,
        handle: Option<&str>,
    ) -> ReleaseResult {
        let Some(o) = self.ordinal_of(ip) else {
            return ReleaseResult::OutsideBlock;
        };
        let Some(idx) = self.allocations[o as usize] else {
            return ReleaseResult::NotAllocated;
        };
        let current_seq = self.sequence_numbers_for_allocations.get(&o).copied();
        if let Some(want) = sequence {
            if current_seq != Some(want) {
                return ReleaseResult::Reused;
            }
        }
        let owner = self
            .attributes
            .get(idx as usize)
            .and_then(|a| a.handle_id.clone());
        if let Some(h) = handle {
            if owner.as_deref() != Some(h) {
                return ReleaseResult::OtherHandle;
            }
        }
        self.allocations[o as usize] = None;
        self.sequence_numbers_for_allocations.remove(&o);
        self.unallocated.push(o);
        self.compact_attributes();
        ReleaseResult::Released { handle: owner }
    }

    /// Frees every address of `handle`; returns them.
    pub fn release_handle(&mut self, handle: &str) -> Vec<IpAddr> {
        let ips: Vec<IpAddr> = self.addresses_of(handle);
        for ip in &ips {
            self.release(*ip, None, Some(handle));
        }
        ips
    }

    /// The addresses allocated to `handle`.
    pub fn addresses_of(&self, handle: &str) -> Vec<IpAddr> {
        self.allocations
            .iter()
            .enumerate()
            .filter_map(|(o, a)| {
                let idx = (*a)?;
                let attr = self.attributes.get(idx as usize)?;
                (attr.handle_id.as_deref() == Some(handle)).then(|| self.ip_at(o as u32))
            })
            .collect()
    }

    /// Every allocation: address, attributes, sequence number.
    pub fn allocated(&self) -> Vec<(IpAddr, Option<&AllocationAttribute>, u64)> {
        self.allocations
            .iter()
            .enumerate()
            .filter_map(|(o, a)| {
                let idx = (*a)?;
                let o = o as u32;
                Some((
                    self.ip_at(o),
                    self.attributes.get(idx as usize),
                    self.sequence_numbers_for_allocations
                        .get(&o)
                        .copied()
                        .unwrap_or(0),
                ))
            })
            .collect()
    }

    /// Drops attribute sets no allocation refers to and renumbers the rest.
    fn compact_attributes(&mut self) {
        let mut used = vec![false; self.attributes.len()];
        for idx in self.allocations.iter().flatten() {
            if let Some(u) = used.get_mut(*idx as usize) {
                *u = true;
            }
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut remap = vec![None; self.attributes.len()];
        let mut kept = Vec::new();
        for (i, attr) in std::mem::take(&mut self.attributes).into_iter().enumerate() {
            if used[i] {
                remap[i] = Some(kept.len() as u32);
                kept.push(attr);
            }
        }
        self.attributes = kept;
        for a in self.allocations.iter_mut() {
            if let Some(idx) = *a {
                *a = remap.get(idx as usize).copied().flatten();
            }
        }
    }

    /// Structural problems: the free list and the allocations must partition
    /// the ordinals, every allocation must point at an attribute set, the
    /// array must have the block's size.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.cidr.trunc() != self.cidr {
            out.push(format!("cidr {} has host bits set", self.cidr));
        }
        let size = Block::size_of(&self.cidr);
        if size > MAX_BLOCK_ADDRESSES {
            out.push(format!("block {} is larger than 4096 addresses", self.cidr));
            return out;
        }
        if self.allocations.len() != size as usize {
            out.push(format!(
                "allocations has {} entries, the block has {size} addresses",
                self.allocations.len()
            ));
            return out;
        }
        let mut seen = vec![false; size as usize];
        for &o in &self.unallocated {
            match seen.get_mut(o as usize) {
                None => out.push(format!("unallocated ordinal {o} is outside the block")),
                Some(true) => out.push(format!("ordinal {o} is listed twice as unallocated")),
                Some(s) => {
                    *s = true;
                    if self.allocations[o as usize].is_some() {
                        out.push(format!(
                            "{} is both allocated and listed as unallocated",
                            self.ip_at(o)
                        ));
                    }
                }
            }
        }
        for (o, a) in self.allocations.iter().enumerate() {
            match a {
                None if !seen[o] => out.push(format!(
                    "{} is neither allocated nor listed as unallocated",
                    self.ip_at(o as u32)
                )),
                Some(idx) if *idx as usize >= self.attributes.len() => out.push(format!(
                    "{} points at attribute set {idx}, which does not exist",
                    self.ip_at(o as u32)
                )),
                _ => {}
            }
        }
        out
    }

    /// Rebuilds the free list from the allocations (the fix for a block
    /// whose free list is inconsistent): every ordinal not allocated is free.
    pub fn repair(&mut self) {
        let size = self.allocations.len();
        let mut seen = vec![false; size];
        let mut free = Vec::new();
        for &o in &self.unallocated {
            if (o as usize) < size && !seen[o as usize] && self.allocations[o as usize].is_none() {
                seen[o as usize] = true;
                free.push(o);
            }
        }
        for (o, a) in self.allocations.iter_mut().enumerate() {
            if let Some(idx) = *a {
                if idx as usize >= self.attributes.len() {
                    // Dangling attribute: keep the address allocated with
                    // empty attributes rather than hand it out again.
                    self.attributes.push(AllocationAttribute::default());
                    *a = Some((self.attributes.len() - 1) as u32);
                }
            } else if !seen[o] {
                free.push(o as u32);
            }
        }
        self.unallocated = free;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(h: &str) -> AllocationAttribute {
        AllocationAttribute {
            handle_id: Some(h.into()),
            secondary: BTreeMap::new(),
        }
    }

    #[test]
    fn assigns_in_order_and_releases_to_the_back() {
        let mut b = Block::new("10.0.0.0/30".parse().expect("cidr"), Some("n1"));
        assert_eq!(b.host(), Some("n1"));
        let got = b.assign(2, attr("h1"), &|_| false);
        assert_eq!(
            got,
            [
                "10.0.0.0".parse::<IpAddr>().expect("ip"),
                "10.0.0.1".parse().expect("ip")
            ]
        );
        assert_eq!(b.in_use(), 2);
        let (a, seq) = b.allocation(got[1]).expect("allocated");
        assert_eq!((a.handle_id.as_deref(), seq), (Some("h1"), 1));
        assert_eq!(
            b.release(got[0], None, None),
            ReleaseResult::Released {
                handle: Some("h1".into())
            }
        );
        // The freed address goes to the back of the free list.
        let next = b.assign(3, attr("h2"), &|_| false);
        assert_eq!(next.len(), 3);
        assert_eq!(next[2], got[0]);
        assert!(b.problems().is_empty(), "{:?}", b.problems());
    }

    #[test]
    fn sequence_number_guards_a_reused_address() {
        let mut b = Block::new("fd00::/126".parse().expect("cidr"), None);
        let ip = b.assign(1, attr("old"), &|_| false)[0];
        let (_, old_seq) = b.allocation(ip).expect("allocated");
        assert!(matches!(
            b.release(ip, Some(old_seq), None),
            ReleaseResult::Released { .. }
        ));
        // Hand every address out so `ip` is reused by another handle.
        let again = b.assign(4, attr("new"), &|_| false);
        assert!(again.contains(&ip));
        assert_eq!(b.release(ip, Some(old_seq), None), ReleaseResult::Reused);
        assert_eq!(b.release(ip, None, Some("old")), ReleaseResult::OtherHandle);
        assert_eq!(b.addresses_of("new").len(), 4);
    }

    #[test]
    fn reserved_addresses_are_skipped() {
        let mut b = Block::new("10.1.0.0/29".parse().expect("cidr"), None);
        let reserved: IpAddr = "10.1.0.0".parse().expect("ip");
        let got = b.assign(8, attr("h"), &|ip| ip == reserved);
        assert_eq!(got.len(), 7);
        assert!(!got.contains(&reserved));
        assert_eq!(b.free_count(&|ip| ip == reserved), 0);
    }

    #[test]
    fn problems_found_and_repaired() {
        let mut b = Block::new("10.2.0.0/29".parse().expect("cidr"), None);
        b.assign(2, attr("h"), &|_| false);
        b.unallocated.push(0);
        b.unallocated.retain(|o| *o != 5);
        let p = b.problems();
        assert_eq!(p.len(), 2, "{p:?}");
        b.repair();
        assert!(b.problems().is_empty());
        assert_eq!(b.in_use(), 2);
        assert_eq!(b.unallocated.len(), 6);
    }
}
