//! `ipam check` and `ipam release --from-report`: find everything that is
//! inconsistent in the stored IPAM objects (or between them and the
//! addresses actually in use), write it as a JSON report, and fix what a
//! report lists.
//!
//! Every fix is guarded: it re-reads the objects and applies only if they
//! still show the problem (compare-and-swap on the revision or sequence
//! number the report recorded), so running a stale report is harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tabby_datastore::{Condition, Datastore, DatastoreError, Revision, Txn};

use crate::allocation::{Ipam, ReleaseRequest, decode_kv, encode_value};
use crate::block::{Block, ReleaseResult};
use crate::pool::Environment;
use crate::records::{
    self, AffinityState, BlockAffinity, Handle, affinities_prefix, affinity_key, block_key,
    blocks_prefix, handle_key, handles_prefix,
};
use crate::{IpamError, Result};

/// One problem `ipam check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Problem {
    /// A pod address is allocated but no workload uses it (a leak).
    LeakedAddress {
        /// The address.
        ip: IpAddr,
        /// Its handle.
        handle: Option<String>,
        /// Its block.
        block: IpNet,
        /// Its allocation's sequence number (guards the release).
        sequence: u64,
    },
    /// An address is in use by a workload but not allocated.
    InUseNotAllocated {
        /// The address.
        ip: IpAddr,
    },
    /// A handle's recorded count for a block differs from the addresses
    /// the block holds for it (`actual` 0: a handle without addresses).
    HandleMismatch {
        /// The handle.
        handle: String,
        /// The block.
        block: String,
        /// What the handle says.
        recorded: u32,
        /// What the block holds.
        actual: u32,
    },
    /// An allocated address whose handle is missing (or has no id).
    AddressWithoutHandle {
        /// The address.
        ip: IpAddr,
        /// The handle id the allocation names, if any.
        handle: Option<String>,
        /// Its block.
        block: IpNet,
        /// Its allocation's sequence number.
        sequence: u64,
    },
    /// A block's own bookkeeping is inconsistent.
    BlockDamaged {
        /// The block.
        block: IpNet,
        /// What is wrong.
        details: Vec<String>,
    },
    /// An affinity whose block does not exist.
    AffinityWithoutBlock {
        /// The node.
        host: String,
        /// The block.
        block: IpNet,
        /// The affinity's state.
        state: AffinityState,
        /// The affinity's revision.
        revision: Revision,
    },
    /// An affinity left pending (an interrupted claim) or pending deletion
    /// although its block exists and is affine to the node.
    UnconfirmedAffinity {
        /// The node.
        host: String,
        /// The block.
        block: IpNet,
        /// The affinity's state.
        state: AffinityState,
        /// The affinity's revision.
        revision: Revision,
    },
    /// An affinity for a block that is affine to another node (or none).
    AffinityMismatch {
        /// The node the affinity names.
        host: String,
        /// The block.
        block: IpNet,
        /// The node the block names.
        owner: Option<String>,
        /// The affinity's revision.
        revision: Revision,
    },
    /// A block affine to a node that has no affinity record for it.
    BlockWithoutAffinity {
        /// The block.
        block: IpNet,
        /// The node the block names.
        host: String,
    },
    /// A block that lies in no pool (its pool was deleted or changed).
    BlockOutsidePools {
        /// The block.
        block: IpNet,
        /// Addresses it still holds.
        in_use: u32,
    },
    /// Two blocks overlap.
    OverlappingBlocks {
        /// One block.
        block: IpNet,
        /// The other.
        other: IpNet,
    },
    /// A stored object does not decode.
    Undecodable {
        /// Its key.
        key: String,
        /// The decode error.
        reason: String,
    },
}

impl Problem {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Problem::LeakedAddress { ip, handle, .. } => format!(
                "{ip} is allocated (handle {}) but no workload uses it",
                handle.as_deref().unwrap_or("none")
            ),
            Problem::InUseNotAllocated { ip } => {
                format!("{ip} is in use by a workload but not allocated")
            }
            Problem::HandleMismatch {
                handle,
                block,
                recorded,
                actual,
            } => format!(
                "handle {handle} records {recorded} addresses in block {block}, the block holds {actual}"
            ),
            Problem::AddressWithoutHandle { ip, handle, .. } => match handle {
                Some(h) => format!("{ip} belongs to handle {h}, which does not exist"),
                None => format!("{ip} is allocated with no handle"),
            },
            Problem::BlockDamaged { block, details } => {
                format!("block {block} is damaged: {}", details.join("; "))
            }
            Problem::AffinityWithoutBlock {
                host, block, state, ..
            } => format!(
                "node {host} has a {} affinity for block {block}, which does not exist",
                state.as_str()
            ),
            Problem::UnconfirmedAffinity {
                host, block, state, ..
            } => format!(
                "node {host}'s affinity for block {block} is still {} (an interrupted claim?)",
                state.as_str()
            ),
            Problem::AffinityMismatch {
                host, block, owner, ..
            } => format!(
                "node {host} has an affinity for block {block}, which is affine to {}",
                owner.as_deref().unwrap_or("no node")
            ),
            Problem::BlockWithoutAffinity { block, host } => {
                format!("block {block} is affine to node {host}, which has no affinity for it")
            }
            Problem::BlockOutsidePools { block, in_use } => {
                format!("block {block} is in no IP pool ({in_use} addresses in use)")
            }
            Problem::OverlappingBlocks { block, other } => {
                format!("blocks {block} and {other} overlap")
            }
            Problem::Undecodable { key, reason } => format!("{key} does not decode: {reason}"),
        }
    }
}

/// What `ipam check` looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    /// Blocks read.
    pub blocks: usize,
    /// Affinities read.
    pub affinities: usize,
    /// Handles read.
    pub handles: usize,
    /// Allocated addresses.
    pub allocations: usize,
    /// Addresses given as in use (`None`: leak detection was off).
    pub in_use: Option<usize>,
}

/// The result of `ipam check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Store revision when the check started.
    pub revision: Revision,
    /// Counts of what was read.
    pub checked: Checked,
    /// Everything found.
    pub problems: Vec<Problem>,
}

/// What fixing a report did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FixOutcome {
    /// Problems fixed.
    pub fixed: Vec<Problem>,
    /// Problems left alone, with why.
    pub skipped: Vec<(Problem, String)>,
}

impl Ipam {
    /// Checks every IPAM object. With `in_use`, pod addresses (workload
    /// handles) not in it are reported as leaked, and addresses in it that
    /// are not allocated as such.
    pub async fn check(
        &self,
        env: &Environment,
        in_use: Option<&BTreeSet<IpAddr>>,
    ) -> Result<Report> {
        let ds = self.datastore();
        let revision = ds.revision().await?;
        let blocks_l = ds.list(&blocks_prefix(None)).await?;
        let affs_l = ds.list(&affinities_prefix(None, None)).await?;
        let handles_l = ds.list(&handles_prefix()).await?;
        let mut report = Report {
            revision,
            ..Report::default()
        };
        let problems = &mut report.problems;

        let mut blocks: BTreeMap<IpNet, Block> = BTreeMap::new();
        for kv in &blocks_l.items {
            match decode_kv::<Block>(kv) {
                Ok(b) => {
                    blocks.insert(b.cidr, b);
                }
                Err(e) => problems.push(Problem::Undecodable {
                    key: kv.key.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        let mut handles: BTreeMap<String, Handle> = BTreeMap::new();
        for kv in &handles_l.items {
            match decode_kv::<Handle>(kv) {
                Ok(h) => {
                    handles.insert(h.handle_id.clone(), h);
                }
                Err(e) => problems.push(Problem::Undecodable {
                    key: kv.key.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        let mut affinity_of: BTreeMap<(String, IpNet), ()> = BTreeMap::new();
        for kv in &affs_l.items {
            let aff = match decode_kv::<BlockAffinity>(kv) {
                Ok(a) => a,
                Err(e) => {
                    problems.push(Problem::Undecodable {
                        key: kv.key.clone(),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            affinity_of.insert((aff.host.clone(), aff.cidr), ());
            match blocks.get(&aff.cidr) {
                None => problems.push(Problem::AffinityWithoutBlock {
                    host: aff.host,
                    block: aff.cidr,
                    state: aff.state,
                    revision: kv.mod_revision,
                }),
                Some(b) if b.host() != Some(aff.host.as_str()) => {
                    problems.push(Problem::AffinityMismatch {
                        host: aff.host,
                        block: aff.cidr,
                        owner: b.host().map(str::to_owned),
                        revision: kv.mod_revision,
                    })
                }
                Some(_) if aff.state != AffinityState::Confirmed => {
                    problems.push(Problem::UnconfirmedAffinity {
                        host: aff.host,
                        block: aff.cidr,
                        state: aff.state,
                        revision: kv.mod_revision,
                    })
                }
                Some(_) => {}
            }
        }

        // Per block: structure, pool, affinity, allocations.
        let mut actual: BTreeMap<(String, String), u32> = BTreeMap::new();
        let mut allocated: BTreeSet<IpAddr> = BTreeSet::new();
        let mut prev: Option<IpNet> = None;
        for (cidr, b) in &blocks {
            if let Some(p) = prev {
                if p.contains(&cidr.network()) {
                    problems.push(Problem::OverlappingBlocks {
                        block: p,
                        other: *cidr,
                    });
                }
            }
            prev = Some(*cidr);
            let details = b.problems();
            if !details.is_empty() {
                problems.push(Problem::BlockDamaged {
                    block: *cidr,
                    details,
                });
            }
            if env.pool_of_block(cidr).is_none() {
                problems.push(Problem::BlockOutsidePools {
                    block: *cidr,
                    in_use: b.in_use(),
                });
            }
            if let Some(host) = b.host() {
                if !affinity_of.contains_key(&(host.to_owned(), *cidr)) {
                    problems.push(Problem::BlockWithoutAffinity {
                        block: *cidr,
                        host: host.to_owned(),
                    });
                }
            }
            for (ip, attr, sequence) in b.allocated() {
                report.checked.allocations += 1;
                allocated.insert(ip);
                let handle = attr.and_then(|a| a.handle_id.clone());
                match &handle {
                    Some(h) if handles.contains_key(h) => {
                        *actual.entry((h.clone(), cidr.to_string())).or_insert(0) += 1;
                    }
                    _ => {
                        problems.push(Problem::AddressWithoutHandle {
                            ip,
                            handle: handle.clone(),
                            block: *cidr,
                            sequence,
                        });
                        continue;
                    }
                }
                if let (Some(in_use), Some(h)) = (in_use, &handle) {
                    if records::is_workload_handle(h) && !in_use.contains(&ip) {
                        problems.push(Problem::LeakedAddress {
                            ip,
                            handle: handle.clone(),
                            block: *cidr,
                            sequence,
                        });
                    }
                }
            }
        }
        if let Some(in_use) = in_use {
            for ip in in_use {
                if !allocated.contains(ip) {
                    problems.push(Problem::InUseNotAllocated { ip: *ip });
                }
            }
        }
        for (id, h) in &handles {
            let mut blocks_named: BTreeSet<&String> = h.block.keys().collect();
            for (block, recorded) in &h.block {
                let actual_n = actual
                    .get(&(id.clone(), block.clone()))
                    .copied()
                    .unwrap_or(0);
                if actual_n != *recorded {
                    problems.push(Problem::HandleMismatch {
                        handle: id.clone(),
                        block: block.clone(),
                        recorded: *recorded,
                        actual: actual_n,
                    });
                }
            }
            if h.block.is_empty() {
                problems.push(Problem::HandleMismatch {
                    handle: id.clone(),
                    block: String::new(),
                    recorded: 0,
                    actual: 0,
                });
            }
            for ((hid, block), n) in actual.range((id.clone(), String::new())..) {
                if hid != id {
                    break;
                }
                if blocks_named.insert(block) {
                    problems.push(Problem::HandleMismatch {
                        handle: id.clone(),
                        block: block.clone(),
                        recorded: 0,
                        actual: *n,
                    });
                }
            }
        }
        report.checked.blocks = blocks.len();
        report.checked.affinities = affs_l.items.len();
        report.checked.handles = handles.len();
        report.checked.in_use = in_use.map(BTreeSet::len);
        Ok(report)
    }

    /// Fixes what `report` lists, each fix guarded against the objects
    /// having changed since.
    pub async fn fix(&self, env: &Environment, report: &Report) -> Result<FixOutcome> {
        let mut out = FixOutcome::default();
        for p in &report.problems {
            match self.fix_one(env, p).await? {
                None => out.fixed.push(p.clone()),
                Some(why) => out.skipped.push((p.clone(), why)),
            }
        }
        Ok(out)
    }

    /// Fixes one problem; `Some(reason)` when it was left alone.
    async fn fix_one(&self, env: &Environment, p: &Problem) -> Result<Option<String>> {
        let ds = self.datastore();
        match p {
            Problem::LeakedAddress {
                ip,
                handle,
                sequence,
                ..
            } => {
                let r = self
                    .release(
                        env,
                        &[ReleaseRequest {
                            ip: *ip,
                            sequence: Some(*sequence),
                            handle: handle.clone(),
                        }],
                    )
                    .await?;
                Ok(match r.first().map(|(_, r)| r) {
                    Some(ReleaseResult::Released { .. }) => None,
                    Some(other) => Some(format!("not released: {other:?}")),
                    None => Some("not found".into()),
                })
            }
            Problem::AddressWithoutHandle {
                ip,
                handle: None,
                sequence,
                ..
            } => {
                let r = self
                    .release(
                        env,
                        &[ReleaseRequest {
                            ip: *ip,
                            sequence: Some(*sequence),
                            handle: None,
                        }],
                    )
                    .await?;
                Ok(match r.first().map(|(_, r)| r) {
                    Some(ReleaseResult::Released { .. }) => None,
                    Some(other) => Some(format!("not released: {other:?}")),
                    None => Some("not found".into()),
                })
            }
            Problem::AddressWithoutHandle {
                handle: Some(h), ..
            }
            | Problem::HandleMismatch { handle: h, .. } => self.recount_handle(h).await,
            Problem::BlockDamaged { block, .. } => {
                let key = block_key(block);
                let Some(kv) = ds.get(&key).await? else {
                    return Ok(Some("block is gone".into()));
                };
                let mut b: Block = decode_kv(&kv)?;
                if b.problems().is_empty() {
                    return Ok(Some("block is consistent now".into()));
                }
                b.repair();
                cas(ds.update(&key, encode_value(&b), kv.mod_revision).await)
            }
            Problem::AffinityWithoutBlock {
                host,
                block,
                revision,
                ..
            }
            | Problem::AffinityMismatch {
                host,
                block,
                revision,
                ..
            } => {
                let akey = affinity_key(host, block);
                let bkey = block_key(block);
                // Delete only if the block still does not name this node.
                let bkv = ds.get(&bkey).await?;
                if let Some(kv) = &bkv {
                    let b: Block = decode_kv(kv)?;
                    if b.host() == Some(host.as_str()) {
                        return Ok(Some("the block is affine to this node now".into()));
                    }
                }
                let txn = Txn::new()
                    .when(&akey, Condition::ModRevision(*revision))
                    .when(
                        &bkey,
                        bkv.as_ref().map_or(Condition::Absent, |kv| {
                            Condition::ModRevision(kv.mod_revision)
                        }),
                    )
                    .delete(&akey);
                cas(ds.txn(txn).await)
            }
            Problem::UnconfirmedAffinity {
                host,
                block,
                revision,
                ..
            } => {
                // An interrupted claim: give the block back if it is empty,
                // otherwise confirm it (its addresses are in use).
                settle_block_affinity(ds, host, block, Condition::ModRevision(*revision), true)
                    .await
            }
            Problem::BlockWithoutAffinity { block, host } => {
                settle_block_affinity(ds, host, block, Condition::Absent, false).await
            }
            Problem::BlockOutsidePools { block, .. } => {
                let bkey = block_key(block);
                let Some(bkv) = ds.get(&bkey).await? else {
                    return Ok(None);
                };
                let b: Block = decode_kv(&bkv)?;
                if !b.is_empty() {
                    return Ok(Some(format!(
                        "block still holds {} addresses: release them first",
                        b.in_use()
                    )));
                }
                let mut txn = Txn::new()
                    .when(&bkey, Condition::ModRevision(bkv.mod_revision))
                    .delete(&bkey);
                if let Some(host) = b.host() {
                    txn.push_delete(affinity_key(host, block));
                }
                cas(ds.txn(txn).await)
            }
            Problem::InUseNotAllocated { .. } => Ok(Some(
                "an address in use cannot be fixed by a release: re-create the workload".into(),
            )),
            Problem::OverlappingBlocks { .. } | Problem::Undecodable { .. } => {
                Ok(Some("needs a person: not changed".into()))
            }
        }
    }

    /// Rewrites `handle`'s per-block counts from what the blocks hold
    /// (deleting it if it holds nothing), in one transaction guarded by the
    /// handle and every block read.
    async fn recount_handle(&self, handle: &str) -> Result<Option<String>> {
        let ds = self.datastore();
        let hkey = handle_key(handle);
        let hkv = ds.get(&hkey).await?;
        let mut names: BTreeSet<String> = BTreeSet::new();
        if let Some(kv) = &hkv {
            let h: Handle = decode_kv(kv)?;
            names.extend(h.block.keys().cloned());
        }
        // Blocks may hold addresses of this handle the handle forgot: scan.
        let blocks = ds.list(&blocks_prefix(None)).await?;
        let mut txn = Txn::new().when(
            &hkey,
            hkv.as_ref().map_or(Condition::Absent, |kv| {
                Condition::ModRevision(kv.mod_revision)
            }),
        );
        let mut counts = BTreeMap::new();
        for kv in &blocks.items {
            let b: Block = decode_kv(kv)?;
            let n = b.addresses_of(handle).len() as u32;
            if n > 0 || names.contains(&b.cidr.to_string()) {
                txn.push_compare(&kv.key, Condition::ModRevision(kv.mod_revision));
            }
            if n > 0 {
                counts.insert(b.cidr.to_string(), n);
            }
        }
        if counts.is_empty() {
            if hkv.is_none() {
                return Ok(Some("handle holds nothing and is gone".into()));
            }
            txn.push_delete(&hkey);
        } else {
            txn.push_put(
                &hkey,
                encode_value(&Handle {
                    handle_id: handle.to_owned(),
                    block: counts,
                }),
            );
        }
        cas(ds.txn(txn).await)
    }
}

/// Settles a block whose affinity is unconfirmed or missing: an empty block
/// is deleted (with the affinity, when `delete_affinity`), a block holding
/// addresses gets a confirmed affinity for `host`. Guarded by the block's
/// revision and by `affinity_now` on the affinity key, so anything that
/// changed since the check makes the fix a no-op to re-run.
async fn settle_block_affinity(
    ds: &Datastore,
    host: &str,
    block: &IpNet,
    affinity_now: Condition,
    delete_affinity: bool,
) -> Result<Option<String>> {
    let akey = affinity_key(host, block);
    let bkey = block_key(block);
    let Some(bkv) = ds.get(&bkey).await? else {
        return Ok(Some("block is gone".into()));
    };
    let b: Block = decode_kv(&bkv)?;
    let mut txn = Txn::new()
        .when(&akey, affinity_now)
        .when(&bkey, Condition::ModRevision(bkv.mod_revision));
    if b.is_empty() {
        if delete_affinity {
            txn.push_delete(&akey);
        }
        txn.push_delete(&bkey);
    } else {
        let confirmed = BlockAffinity {
            host: host.to_owned(),
            cidr: *block,
            state: AffinityState::Confirmed,
        };
        txn.push_put(&akey, encode_value(&confirmed));
    }
    cas(ds.txn(txn).await)
}

/// A guarded write's outcome as a fix result.
fn cas(r: std::result::Result<Revision, DatastoreError>) -> Result<Option<String>> {
    match r {
        Ok(_) => Ok(None),
        Err(e) if e.is_conflict() => Ok(Some(format!("changed since the check ({e}): re-run it"))),
        Err(DatastoreError::NotFound { key }) => Ok(Some(format!("{key} is gone"))),
        Err(e) => Err(IpamError::Datastore(e)),
    }
}
