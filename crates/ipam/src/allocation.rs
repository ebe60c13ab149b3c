//! Allocation and release of addresses over the datastore.
//!
//! Auto-assignment for a node, per family, tries in order:
//!
//! 1. the node's own blocks (its confirmed affinities, in pools that still
//!    select it), most recently claimed first;
//! 2. claiming a new block (unless `autoAllocateBlocks` is off or the node
//!    holds `maxBlocksPerHost` blocks), trying the pool's blocks from a
//!    start seeded by the node name;
//!    when every block of the pools exists, taking over an empty block of
//!    another node instead (one transaction moves block and affinity);
//! 3. borrowing from other nodes' blocks, unless `strictAffinity`.
//!
//! Claiming a block is Calico's two-phase protocol: (1) create a *pending*
//! affinity `node -> block` (create-if-absent), (2) create the block with
//! affinity `host:node` (create-if-absent; if another node won, delete our
//! pending affinity and try the next block), (3) flip the affinity to
//! *confirmed* (compare-and-swap). A crash between phases leaves a pending
//! affinity, perhaps with its block: `ipam check` reports both and
//! `ipam release --from-report` removes them; the same node retrying also
//! finishes its own interrupted claim.
//!
//! Assigning addresses inside a block and recording them in their handle
//! is one transaction (compare-and-swap on the block and on the handle),
//! so a crash never leaves an address without its handle count or the
//! reverse. Release is the same in reverse, and deletes a block that
//! becomes empty and has no affinity.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use tabby_datastore::{Condition, Datastore, DatastoreError, KeyValue, Txn};
use tabby_model::AllowedUse;

use crate::block::{AllocationAttribute, Block, HOST_AFFINITY_PREFIX, ReleaseResult};
use crate::pool::{Environment, Pool};
use crate::records::{
    self, AffinityState, BlockAffinity, Handle, affinities_prefix, affinity_key, block_key,
    blocks_prefix, handle_key,
};
use crate::{IpamError, Result};

/// How many times a compare-and-swap is retried before giving up.
const RETRIES: usize = 100;

/// A point in the claim protocol where a test can stop the process (to
/// kill it there and check what it leaves behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimPause {
    /// After the pending affinity is written, before the block exists.
    AfterPendingAffinity,
    /// After the block is created, before the affinity is confirmed.
    AfterBlockCreated,
}

impl ClaimPause {
    /// Parses `after-pending-affinity` / `after-block-created`.
    pub fn parse(s: &str) -> Option<ClaimPause> {
        match s {
            "after-pending-affinity" => Some(ClaimPause::AfterPendingAffinity),
            "after-block-created" => Some(ClaimPause::AfterBlockCreated),
            _ => None,
        }
    }
}

/// An auto-assignment request.
#[derive(Debug, Clone)]
pub struct AssignRequest {
    /// The node the addresses are for.
    pub node: String,
    /// The node's labels (for pools' `nodeSelector`).
    pub node_labels: BTreeMap<String, String>,
    /// The handle the addresses are recorded under.
    pub handle: String,
    /// Attributes stored with each address (`namespace`, `pod`, ...).
    pub attributes: BTreeMap<String, String>,
    /// IPv4 addresses wanted.
    pub num_v4: usize,
    /// IPv6 addresses wanted.
    pub num_v6: usize,
    /// What the addresses are for (pools' `allowedUses`).
    pub use_: AllowedUse,
    /// Only these pools (by CIDR or name); empty: every usable pool.
    pub pools: Vec<String>,
}

impl AssignRequest {
    /// One IPv4 workload address for `handle` on `node`.
    pub fn v4(node: &str, handle: &str) -> AssignRequest {
        AssignRequest {
            node: node.into(),
            node_labels: BTreeMap::new(),
            handle: handle.into(),
            attributes: BTreeMap::new(),
            num_v4: 1,
            num_v6: 0,
            use_: AllowedUse::Workload,
            pools: Vec::new(),
        }
    }
}

/// What an auto-assignment handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    /// IPv4 addresses with their block.
    pub v4: Vec<(IpAddr, IpNet)>,
    /// IPv6 addresses with their block.
    pub v6: Vec<(IpAddr, IpNet)>,
}

/// One address to release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRequest {
    /// The address.
    pub ip: IpAddr,
    /// Release only if it was allocated at this sequence number.
    pub sequence: Option<u64>,
    /// Release only if it belongs to this handle.
    pub handle: Option<String>,
}

/// The IPAM client: allocation, release and queries over one datastore.
#[derive(Debug, Clone)]
pub struct Ipam {
    ds: Datastore,
    pause: Option<ClaimPause>,
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| IpamError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn family_name(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

fn family_key(v6: bool) -> &'static str {
    if v6 { "ipv6" } else { "ipv4" }
}

fn use_name(u: AllowedUse) -> &'static str {
    match u {
        AllowedUse::Workload => "Workload",
        AllowedUse::Tunnel => "Tunnel",
        AllowedUse::LoadBalancer => "LoadBalancer",
    }
}

impl Ipam {
    /// An IPAM client over `ds`.
    pub fn new(ds: Datastore) -> Ipam {
        Ipam { ds, pause: None }
    }

    /// Stops (forever) at `at` in every claim: a test hook, see
    /// [`ClaimPause`].
    pub fn with_pause(mut self, at: Option<ClaimPause>) -> Ipam {
        self.pause = at;
        self
    }

    /// The datastore.
    pub fn datastore(&self) -> &Datastore {
        &self.ds
    }

    async fn pause_if(&self, here: ClaimPause) {
        if self.pause == Some(here) {
            eprintln!("tabby-ipam: paused at {here:?}");
            std::future::pending::<()>().await;
        }
    }

    /// Auto-assigns `num_v4` + `num_v6` addresses. All or nothing: if one
    /// family cannot be satisfied, what was taken is released again.
    pub async fn auto_assign(&self, env: &Environment, req: &AssignRequest) -> Result<Assigned> {
        records::check_key_part("node", &req.node).map_err(|reason| IpamError::Invalid {
            what: "node",
            reason,
        })?;
        records::check_key_part("handle", &req.handle).map_err(|reason| IpamError::Invalid {
            what: "handle",
            reason,
        })?;
        let mut out = Assigned::default();
        let v4 = self.assign_family(env, req, false, req.num_v4).await;
        match v4 {
            Ok(v) => out.v4 = v,
            Err(e) => return Err(e),
        }
        match self.assign_family(env, req, true, req.num_v6).await {
            Ok(v) => out.v6 = v,
            Err(e) => {
                let undo: Vec<ReleaseRequest> = out
                    .v4
                    .iter()
                    .map(|(ip, _)| ReleaseRequest {
                        ip: *ip,
                        sequence: None,
                        handle: Some(req.handle.clone()),
                    })
                    .collect();
                self.release(env, &undo).await?;
                return Err(e);
            }
        }
        Ok(out)
    }

    async fn assign_family(
        &self,
        env: &Environment,
        req: &AssignRequest,
        v6: bool,
        n: usize,
    ) -> Result<Vec<(IpAddr, IpNet)>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let pools: Vec<&Pool> = env
            .pools
            .iter()
            .filter(|p| p.is_ipv6() == v6)
            .filter(|p| p.usable_by(&req.node_labels, req.use_))
            .filter(|p| {
                req.pools.is_empty()
                    || req
                        .pools
                        .iter()
                        .any(|want| *want == p.name || *want == p.cidr.to_string())
            })
            .collect();
        if pools.is_empty() {
            return Err(IpamError::NoPools {
                node: req.node.clone(),
                family: family_name(v6),
                use_: use_name(req.use_).into(),
            });
        }
        let attr = AllocationAttribute {
            handle_id: Some(req.handle.clone()),
            secondary: req.attributes.clone(),
        };
        let reserved = |ip: IpAddr| env.is_reserved(ip);
        let mut got: Vec<(IpAddr, IpNet)> = Vec::new();

        // 1. The node's own blocks, newest claim first: older ones are
        // usually full, and a node may hold many, so this finds room after
        // reading one block instead of all of them.
        let mut affinities = self.node_affinities(&req.node, v6).await?;
        affinities.sort_by_key(|(kv, _)| std::cmp::Reverse(kv.create_revision));
        for (kv, aff) in &affinities {
            if got.len() >= n {
                break;
            }
            if !pools.iter().any(|p| p.cidr.contains(&aff.cidr)) {
                continue;
            }
            if aff.state == AffinityState::Pending {
                // Finish our own interrupted claim if its block exists.
                if !self.adopt_pending(kv, aff).await? {
                    continue;
                }
            } else if aff.state != AffinityState::Confirmed {
                continue;
            }
            let ips = self
                .assign_in_block(&aff.cidr, n - got.len(), &attr, Some(&req.node), &reserved)
                .await?;
            got.extend(ips.into_iter().map(|ip| (ip, aff.cidr)));
        }

        // 2. Claim new blocks.
        let mut reason = String::from("every pool is full");
        if got.len() < n && !env.config.auto_allocate_blocks {
            reason = "autoAllocateBlocks is false".into();
        }
        let mut held = affinities.len() as u32;
        let mut claimed: BTreeSet<IpNet> = BTreeSet::new();
        while got.len() < n && env.config.auto_allocate_blocks {
            if let Some(max) = env.config.max_blocks_per_host {
                if held >= max {
                    reason = format!("node holds maxBlocksPerHost ({max}) blocks");
                    break;
                }
            }
            let cidr = match self.claim_block(&req.node, &pools).await? {
                Some(cidr) => cidr,
                // 2b. No unclaimed block left: take over an empty block of
                // another node.
                None => match self.reclaim_block(&req.node, &pools, &reserved).await? {
                    Some(cidr) => cidr,
                    None => break,
                },
            };
            if !claimed.insert(cidr) {
                // The same block twice: it has nothing left for us.
                break;
            }
            held += 1;
            let ips = self
                .assign_in_block(&cidr, n - got.len(), &attr, Some(&req.node), &reserved)
                .await?;
            got.extend(ips.into_iter().map(|ip| (ip, cidr)));
        }

        // 3. Borrow from other nodes' blocks.
        if got.len() < n && env.config.strict_affinity {
            reason.push_str(" and strictAffinity forbids borrowing");
        } else if got.len() < n {
            let listing = self.ds.list(&blocks_prefix(Some(family_key(v6)))).await?;
            let mut candidates: Vec<Block> = Vec::new();
            for kv in &listing.items {
                let b: Block = decode(kv)?;
                if b.host() == Some(req.node.as_str()) {
                    continue;
                }
                if pools
                    .iter()
                    .any(|p| p.cidr.contains(&b.cidr) && p.block_size == b.cidr.prefix_len())
                    && b.free_count(&reserved) > 0
                {
                    candidates.push(b);
                }
            }
            for b in candidates {
                if got.len() >= n {
                    break;
                }
                let ips = self
                    .assign_in_block(&b.cidr, n - got.len(), &attr, None, &reserved)
                    .await?;
                got.extend(ips.into_iter().map(|ip| (ip, b.cidr)));
            }
        }

        if got.len() < n {
            let undo: Vec<ReleaseRequest> = got
                .iter()
                .map(|(ip, _)| ReleaseRequest {
                    ip: *ip,
                    sequence: None,
                    handle: Some(req.handle.clone()),
                })
                .collect();
            self.release(env, &undo).await?;
            return Err(IpamError::Exhausted {
                node: req.node.clone(),
                family: family_name(v6),
                reason,
            });
        }
        Ok(got)
    }

    /// The node's affinities of one family, as stored.
    pub async fn node_affinities(
        &self,
        node: &str,
        v6: bool,
    ) -> Result<Vec<(KeyValue, BlockAffinity)>> {
        let listing = self
            .ds
            .list(&affinities_prefix(Some(node), Some(family_key(v6))))
            .await?;
        listing
            .items
            .into_iter()
            .map(|kv| {
                let a: BlockAffinity = decode(&kv)?;
                Ok((kv, a))
            })
            .collect()
    }

    /// A pending affinity of ours whose block exists and is ours: confirm
    /// it (an interrupted claim, or a concurrent one of the same node about
    /// to confirm it anyway). True if the block can be used.
    async fn adopt_pending(&self, kv: &KeyValue, aff: &BlockAffinity) -> Result<bool> {
        let Some(bkv) = self.ds.get(&block_key(&aff.cidr)).await? else {
            return Ok(false);
        };
        let block: Block = decode(&bkv)?;
        if block.host() != Some(aff.host.as_str()) {
            return Ok(false);
        }
        let confirmed = BlockAffinity {
            state: AffinityState::Confirmed,
            ..aff.clone()
        };
        match self
            .ds
            .update(&kv.key, encode(&confirmed), kv.mod_revision)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_conflict() => Ok(true),
            Err(DatastoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Claims a free block of one of `pools` for `node` (two phases, see
    /// the module doc). `None` when every block of every pool exists.
    async fn claim_block(&self, node: &str, pools: &[&Pool]) -> Result<Option<IpNet>> {
        let Some(first) = pools.first() else {
            return Ok(None);
        };
        let listing = self
            .ds
            .list(&blocks_prefix(Some(records::family(&first.cidr))))
            .await?;
        let mut existing: BTreeSet<IpNet> = BTreeSet::new();
        for kv in &listing.items {
            let part = kv.key.rsplit('/').next().unwrap_or_default();
            if let Some(net) = records::parse_cidr_key_part(part) {
                existing.insert(net);
            }
        }
        for pool in pools {
            for cidr in pool.blocks_for_node(node) {
                if existing.contains(&cidr) {
                    continue;
                }
                if self.claim(node, cidr).await? {
                    return Ok(Some(cidr));
                }
                existing.insert(cidr);
            }
        }
        Ok(None)
    }

    /// Takes over an empty block of another node for `node`, when every
    /// block of `pools` exists. Candidates are blocks of `pools` affine to
    /// another node through a confirmed affinity, with nothing allocated
    /// and room for us, tried from a start seeded by the node name. One
    /// transaction per attempt moves the block: it compares the block's
    /// revision (any allocation by the owner in the meantime changes it),
    /// the old affinity's and the absence (or revision) of ours, deletes
    /// the old affinity, rewrites the block as `host:node` and writes our
    /// affinity confirmed. `None` when no block qualifies.
    async fn reclaim_block(
        &self,
        node: &str,
        pools: &[&Pool],
        reserved: &(dyn Fn(IpAddr) -> bool + Sync),
    ) -> Result<Option<IpNet>> {
        let Some(first) = pools.first() else {
            return Ok(None);
        };
        let listing = self
            .ds
            .list(&blocks_prefix(Some(records::family(&first.cidr))))
            .await?;
        let mut candidates: Vec<IpNet> = Vec::new();
        for kv in &listing.items {
            let b: Block = decode(kv)?;
            if Self::reclaimable(&b, node, pools, reserved) {
                candidates.push(b.cidr);
            }
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        candidates.sort();
        let start = (crate::pool::node_hash(node) % candidates.len() as u64) as usize;
        candidates.rotate_left(start);
        for cidr in candidates {
            if self.take_over(node, cidr, pools, reserved).await? {
                return Ok(Some(cidr));
            }
        }
        Ok(None)
    }

    /// True if `b` is another node's block of one of `pools`, empty, and
    /// has an address `node` may use.
    fn reclaimable(
        b: &Block,
        node: &str,
        pools: &[&Pool],
        reserved: &(dyn Fn(IpAddr) -> bool + Sync),
    ) -> bool {
        b.host().is_some_and(|h| h != node)
            && b.is_empty()
            && b.free_count(reserved) > 0
            && pools
                .iter()
                .any(|p| p.cidr.contains(&b.cidr) && p.block_size == b.cidr.prefix_len())
    }

    /// One take-over of block `cidr` for `node` (see
    /// [`Ipam::reclaim_block`]), re-read and retried on conflict while the
    /// block still qualifies. False if it no longer does.
    async fn take_over(
        &self,
        node: &str,
        cidr: IpNet,
        pools: &[&Pool],
        reserved: &(dyn Fn(IpAddr) -> bool + Sync),
    ) -> Result<bool> {
        let bkey = block_key(&cidr);
        let new_akey = affinity_key(node, &cidr);
        for _ in 0..RETRIES {
            let Some(bkv) = self.ds.get(&bkey).await? else {
                return Ok(false);
            };
            let mut block: Block = decode(&bkv)?;
            if !Self::reclaimable(&block, node, pools, reserved) {
                return Ok(false);
            }
            let Some(old_host) = block.host().map(str::to_owned) else {
                return Ok(false);
            };
            let old_akey = affinity_key(&old_host, &cidr);
            // Only a settled affinity is taken: a pending one belongs to a
            // claim still in progress.
            let Some(old_akv) = self.ds.get(&old_akey).await? else {
                return Ok(false);
            };
            let old: BlockAffinity = decode(&old_akv)?;
            if old.state != AffinityState::Confirmed {
                return Ok(false);
            }
            let ours = self.ds.get(&new_akey).await?;
            block.affinity = Some(format!("{HOST_AFFINITY_PREFIX}{node}"));
            let confirmed = BlockAffinity {
                host: node.into(),
                cidr,
                state: AffinityState::Confirmed,
            };
            let txn = Txn::new()
                .when(&bkey, Condition::ModRevision(bkv.mod_revision))
                .when(&old_akey, Condition::ModRevision(old_akv.mod_revision))
                .when(
                    &new_akey,
                    ours.as_ref().map_or(Condition::Absent, |kv| {
                        Condition::ModRevision(kv.mod_revision)
                    }),
                )
                .delete(&old_akey)
                .put(&bkey, encode(&block))
                .put(&new_akey, encode(&confirmed));
            match self.ds.txn(txn).await {
                Ok(_) => return Ok(true),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Claims block `cidr` for `node`; false if another node got it.
    async fn claim(&self, node: &str, cidr: IpNet) -> Result<bool> {
        let akey = affinity_key(node, &cidr);
        let pending = BlockAffinity {
            host: node.into(),
            cidr,
            state: AffinityState::Pending,
        };
        // Phase 1: pending affinity (or take over one of ours).
        let mut already_confirmed = false;
        let mut aff_rev = match self.ds.create(&akey, encode(&pending)).await {
            Ok(r) => r,
            Err(DatastoreError::AlreadyExists { .. }) => {
                let Some(kv) = self.ds.get(&akey).await? else {
                    return Ok(false);
                };
                let cur: BlockAffinity = decode(&kv)?;
                // Confirmed by another process of this node: the block is
                // ours once it exists (phase 2 makes sure it does).
                already_confirmed = cur.state == AffinityState::Confirmed;
                kv.mod_revision
            }
            Err(e) => return Err(e.into()),
        };
        self.pause_if(ClaimPause::AfterPendingAffinity).await;

        // Phase 2: the block, affine to us.
        let block = Block::new(cidr, Some(node));
        let bkey = block_key(&cidr);
        match self.ds.create(&bkey, encode(&block)).await {
            Ok(_) => {}
            Err(DatastoreError::AlreadyExists { .. }) => {
                let theirs = match self.ds.get(&bkey).await? {
                    Some(kv) => decode::<Block>(&kv)?,
                    None => return Ok(false),
                };
                if theirs.host() != Some(node) {
                    // Another node won: withdraw our claim.
                    match self.ds.delete(&akey, Some(aff_rev)).await {
                        Ok(_) | Err(DatastoreError::NotFound { .. }) => {}
                        Err(e) if e.is_conflict() => {}
                        Err(e) => return Err(e.into()),
                    }
                    return Ok(false);
                }
            }
            Err(e) => return Err(e.into()),
        }
        self.pause_if(ClaimPause::AfterBlockCreated).await;
        if already_confirmed {
            return Ok(true);
        }

        // Phase 3: confirm.
        let confirmed = BlockAffinity {
            state: AffinityState::Confirmed,
            ..pending
        };
        for _ in 0..RETRIES {
            match self.ds.update(&akey, encode(&confirmed), aff_rev).await {
                Ok(_) => return Ok(true),
                Err(e) if e.is_conflict() => {
                    let Some(kv) = self.ds.get(&akey).await? else {
                        break;
                    };
                    let cur: BlockAffinity = decode(&kv)?;
                    if cur.state == AffinityState::Confirmed {
                        return Ok(true);
                    }
                    aff_rev = kv.mod_revision;
                }
                Err(DatastoreError::NotFound { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // Our affinity vanished under us (released by `ipam release`):
        // recreate it confirmed, since the block says it is ours.
        match self.ds.create(&akey, encode(&confirmed)).await {
            Ok(_) | Err(DatastoreError::AlreadyExists { .. }) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes up to `n` addresses from block `cidr` for the handle in
    /// `attr`, in one transaction with the handle's count. With
    /// `require_host`, only if the block is still affine to that node.
    async fn assign_in_block(
        &self,
        cidr: &IpNet,
        n: usize,
        attr: &AllocationAttribute,
        require_host: Option<&str>,
        reserved: &(dyn Fn(IpAddr) -> bool + Sync),
    ) -> Result<Vec<IpAddr>> {
        let handle_id = attr.handle_id.clone().unwrap_or_default();
        self.commit_assignment(cidr, &handle_id, |block| {
            let Some(block) = block else {
                return Ok((Vec::new(), 0));
            };
            if let Some(host) = require_host {
                if block.host() != Some(host) {
                    return Ok((Vec::new(), 0));
                }
            }
            let ips = block.assign(n, attr.clone(), reserved);
            let count = ips.len() as u32;
            Ok((ips, count))
        })
        .await
    }

    /// Assigns one specific address to `handle` (claiming its block for
    /// `node` if the block does not exist yet).
    pub async fn assign_ip(
        &self,
        env: &Environment,
        ip: IpAddr,
        node: &str,
        handle: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<IpNet> {
        records::check_key_part("node", node).map_err(|reason| IpamError::Invalid {
            what: "node",
            reason,
        })?;
        records::check_key_part("handle", handle).map_err(|reason| IpamError::Invalid {
            what: "handle",
            reason,
        })?;
        let pool = env.pool_of(ip).ok_or(IpamError::NotInPool { ip })?;
        let cidr = pool
            .block_containing(ip)
            .ok_or(IpamError::NotInPool { ip })?;
        if self.ds.get(&block_key(&cidr)).await?.is_none() {
            self.claim(node, cidr).await?;
        }
        let attr = AllocationAttribute {
            handle_id: Some(handle.into()),
            secondary: attributes,
        };
        self.commit_assignment(&cidr, handle, |block| {
            let Some(block) = block else {
                return Err(IpamError::NotInPool { ip });
            };
            if !block.assign_ip(ip, attr.clone()) {
                return Err(IpamError::AddressInUse { ip });
            }
            Ok((cidr, 1))
        })
        .await
    }

    /// Changes block `cidr` and the record of `handle_id` in one
    /// transaction, retrying on conflict. `assign` gets the freshly read
    /// block (`None` if it does not exist), may assign addresses in it, and
    /// returns its result with how many addresses it assigned; with none,
    /// nothing is written.
    async fn commit_assignment<R>(
        &self,
        cidr: &IpNet,
        handle_id: &str,
        mut assign: impl FnMut(Option<&mut Block>) -> Result<(R, u32)>,
    ) -> Result<R> {
        let bkey = block_key(cidr);
        let hkey = handle_key(handle_id);
        for _ in 0..RETRIES {
            let Some(bkv) = self.ds.get(&bkey).await? else {
                return assign(None).map(|(r, _)| r);
            };
            let mut block: Block = decode(&bkv)?;
            let (result, count) = assign(Some(&mut block))?;
            if count == 0 {
                return Ok(result);
            }
            let hkv = self.ds.get(&hkey).await?;
            let mut handle = match &hkv {
                Some(kv) => decode::<Handle>(kv)?,
                None => Handle {
                    handle_id: handle_id.to_owned(),
                    block: BTreeMap::new(),
                },
            };
            *handle.block.entry(cidr.to_string()).or_insert(0) += count;
            let txn = Txn::new()
                .when(&bkey, Condition::ModRevision(bkv.mod_revision))
                .when(
                    &hkey,
                    hkv.as_ref().map_or(Condition::Absent, |kv| {
                        Condition::ModRevision(kv.mod_revision)
                    }),
                )
                .put(&bkey, encode(&block))
                .put(&hkey, encode(&handle));
            match self.ds.txn(txn).await {
                Ok(_) => return Ok(result),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Datastore(DatastoreError::Unavailable {
            backend: self.ds.backend(),
            reason: format!("block {cidr}: still conflicting after {RETRIES} retries"),
        }))
    }

    /// Finds the stored block holding `ip`: the pools' block sizes first,
    /// then every size a block may have.
    pub async fn find_block(&self, env: &Environment, ip: IpAddr) -> Result<Option<KeyValue>> {
        let mut lens: Vec<u8> = env
            .pools
            .iter()
            .filter(|p| p.cidr.contains(&ip))
            .map(|p| p.block_size)
            .collect();
        let (lo, hi) = if ip.is_ipv6() { (116, 128) } else { (20, 32) };
        lens.extend(lo..=hi);
        let mut tried = BTreeSet::new();
        for len in lens {
            if !tried.insert(len) {
                continue;
            }
            let Ok(net) = IpNet::new(ip, len) else {
                continue;
            };
            if let Some(kv) = self.ds.get(&block_key(&net.trunc())).await? {
                return Ok(Some(kv));
            }
        }
        Ok(None)
    }

    /// Releases addresses; returns what happened to each.
    pub async fn release(
        &self,
        env: &Environment,
        requests: &[ReleaseRequest],
    ) -> Result<Vec<(IpAddr, ReleaseResult)>> {
        let mut by_block: HashMap<String, Vec<&ReleaseRequest>> = HashMap::new();
        let mut out = Vec::new();
        for r in requests {
            match self.find_block(env, r.ip).await? {
                Some(kv) => by_block.entry(kv.key).or_default().push(r),
                None => out.push((r.ip, ReleaseResult::NotAllocated)),
            }
        }
        for (bkey, reqs) in by_block {
            out.extend(self.release_in_block(&bkey, &reqs).await?);
        }
        Ok(out)
    }

    async fn release_in_block(
        &self,
        bkey: &str,
        reqs: &[&ReleaseRequest],
    ) -> Result<Vec<(IpAddr, ReleaseResult)>> {
        for _ in 0..RETRIES {
            let Some(bkv) = self.ds.get(bkey).await? else {
                return Ok(reqs
                    .iter()
                    .map(|r| (r.ip, ReleaseResult::NotAllocated))
                    .collect());
            };
            let mut block: Block = decode(&bkv)?;
            let mut results = Vec::new();
            let mut per_handle: BTreeMap<String, u32> = BTreeMap::new();
            for r in reqs {
                let res = block.release(r.ip, r.sequence, r.handle.as_deref());
                if let ReleaseResult::Released { handle: Some(h) } = &res {
                    *per_handle.entry(h.clone()).or_insert(0) += 1;
                }
                results.push((r.ip, res));
            }
            if !results
                .iter()
                .any(|(_, r)| matches!(r, ReleaseResult::Released { .. }))
            {
                return Ok(results);
            }
            let mut txn = Txn::new().when(bkey, Condition::ModRevision(bkv.mod_revision));
            self.write_block(&mut txn, bkey, &block);
            for (h, n) in &per_handle {
                self.decrement_handle(&mut txn, h, &block.cidr, *n).await?;
            }
            match self.ds.txn(txn).await {
                Ok(_) => return Ok(results),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Datastore(DatastoreError::Unavailable {
            backend: self.ds.backend(),
            reason: format!("{bkey}: still conflicting after {RETRIES} retries"),
        }))
    }

    /// Adds the write of `block` to `txn`: deleted when it is empty and no
    /// node holds it, updated otherwise.
    fn write_block(&self, txn: &mut Txn, bkey: &str, block: &Block) {
        if block.is_empty() && block.affinity.is_none() {
            txn.push_delete(bkey);
        } else {
            txn.push_put(bkey, encode(block));
        }
    }

    /// Adds "handle `h` holds `n` fewer addresses in `cidr`" to `txn`
    /// (compare-and-swap on the handle; deleted when it holds nothing).
    async fn decrement_handle(&self, txn: &mut Txn, h: &str, cidr: &IpNet, n: u32) -> Result<()> {
        let hkey = handle_key(h);
        let Some(hkv) = self.ds.get(&hkey).await? else {
            // A handle already gone: nothing to decrement (check reports
            // such addresses; releasing them is the fix).
            txn.push_compare(&hkey, Condition::Absent);
            return Ok(());
        };
        let mut handle: Handle = decode(&hkv)?;
        let key = cidr.to_string();
        let left = handle
            .block
            .get(&key)
            .copied()
            .unwrap_or(0)
            .saturating_sub(n);
        if left == 0 {
            handle.block.remove(&key);
        } else {
            handle.block.insert(key, left);
        }
        txn.push_compare(&hkey, Condition::ModRevision(hkv.mod_revision));
        if handle.block.is_empty() {
            txn.push_delete(&hkey);
        } else {
            txn.push_put(&hkey, encode(&handle));
        }
        Ok(())
    }

    /// Releases every address of `handle`; returns them.
    pub async fn release_handle(&self, handle: &str) -> Result<Vec<IpAddr>> {
        records::check_key_part("handle", handle).map_err(|reason| IpamError::Invalid {
            what: "handle",
            reason,
        })?;
        let hkey = handle_key(handle);
        let mut released = Vec::new();
        for _ in 0..RETRIES {
            let Some(hkv) = self.ds.get(&hkey).await? else {
                return Ok(released);
            };
            let mut h: Handle = decode(&hkv)?;
            let Some(block_cidr) = h.block.keys().next().cloned() else {
                // An empty handle: just remove it.
                match self.ds.delete(&hkey, Some(hkv.mod_revision)).await {
                    Ok(_) | Err(DatastoreError::NotFound { .. }) => return Ok(released),
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            h.block.remove(&block_cidr);
            let mut txn = Txn::new().when(&hkey, Condition::ModRevision(hkv.mod_revision));
            let mut ips = Vec::new();
            if let Ok(cidr) = block_cidr.parse::<IpNet>() {
                let bkey = block_key(&cidr);
                if let Some(bkv) = self.ds.get(&bkey).await? {
                    let mut block: Block = decode(&bkv)?;
                    ips = block.release_handle(handle);
                    txn.push_compare(&bkey, Condition::ModRevision(bkv.mod_revision));
                    if !ips.is_empty() {
                        self.write_block(&mut txn, &bkey, &block);
                    }
                }
            }
            if h.block.is_empty() {
                txn.push_delete(&hkey);
            } else {
                txn.push_put(&hkey, encode(&h));
            }
            match self.ds.txn(txn).await {
                Ok(_) => released.extend(ips),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Datastore(DatastoreError::Unavailable {
            backend: self.ds.backend(),
            reason: format!("handle {handle}: still conflicting after {RETRIES} retries"),
        }))
    }

    /// The addresses `handle` holds.
    pub async fn addresses_of(&self, handle: &str) -> Result<Vec<IpAddr>> {
        let Some(hkv) = self.ds.get(&handle_key(handle)).await? else {
            return Ok(Vec::new());
        };
        let h: Handle = decode(&hkv)?;
        let mut out = Vec::new();
        for cidr in h.block.keys() {
            let Ok(net) = cidr.parse::<IpNet>() else {
                continue;
            };
            if let Some(bkv) = self.ds.get(&block_key(&net)).await? {
                out.extend(decode::<Block>(&bkv)?.addresses_of(handle));
            }
        }
        Ok(out)
    }

    /// Every stored block.
    pub async fn blocks(&self) -> Result<Vec<Block>> {
        let listing = self.ds.list(&blocks_prefix(None)).await?;
        listing.items.iter().map(decode).collect()
    }
}

pub(crate) fn decode_kv<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    decode(kv)
}

pub(crate) fn encode_value<T: serde::Serialize>(v: &T) -> Vec<u8> {
    encode(v)
}
