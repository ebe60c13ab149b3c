//! What `ipam show` reports: addresses in use per pool and per block, and
//! what one address is allocated to.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::Result;
use crate::allocation::{Ipam, decode_kv};
use crate::block::Block;
use crate::pool::Environment;

/// Usage of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsage {
    /// The block.
    pub cidr: IpNet,
    /// The node it is affine to.
    pub node: Option<String>,
    /// Its size.
    pub total: u32,
    /// Addresses allocated.
    pub in_use: u32,
}

/// Usage of one pool (and its blocks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    /// The pool's name (empty for blocks that are in no pool).
    pub name: String,
    /// Its range.
    pub cidr: Option<IpNet>,
    /// Its size (saturating).
    pub total: u128,
    /// Addresses allocated in it.
    pub in_use: u128,
    /// Its blocks.
    pub blocks: Vec<BlockUsage>,
}

/// What one address is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressInfo {
    /// The address.
    pub ip: IpAddr,
    /// The pool holding it.
    pub pool: Option<String>,
    /// The block holding it, if one exists.
    pub block: Option<IpNet>,
    /// The block's node.
    pub node: Option<String>,
    /// True when allocated.
    pub allocated: bool,
    /// Its handle.
    pub handle: Option<String>,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
    /// Its allocation's sequence number.
    pub sequence: Option<u64>,
    /// True when an IPReservation covers it.
    pub reserved: bool,
}

impl Ipam {
    /// Usage of every pool, plus a last entry (named "") for blocks that
    /// are in no pool, if any.
    pub async fn usage(&self, env: &Environment) -> Result<Vec<PoolUsage>> {
        let blocks = self.blocks().await?;
        let mut out: Vec<PoolUsage> = env
            .pools
            .iter()
            .map(|p| PoolUsage {
                name: p.name.clone(),
                cidr: Some(p.cidr),
                total: p.address_count(),
                in_use: 0,
                blocks: Vec::new(),
            })
            .collect();
        let mut orphans = PoolUsage {
            name: String::new(),
            cidr: None,
            total: 0,
            in_use: 0,
            blocks: Vec::new(),
        };
        for b in &blocks {
            let u = BlockUsage {
                cidr: b.cidr,
                node: b.host().map(str::to_owned),
                total: b.size(),
                in_use: b.in_use(),
            };
            let target = match env.pools.iter().position(|p| p.cidr.contains(&b.cidr)) {
                Some(i) => &mut out[i],
                None => {
                    orphans.total += u128::from(u.total);
                    &mut orphans
                }
            };
            target.in_use += u128::from(u.in_use);
            target.blocks.push(u);
        }
        if !orphans.blocks.is_empty() {
            out.push(orphans);
        }
        Ok(out)
    }

    /// What `ip` is allocated to.
    pub async fn address_info(&self, env: &Environment, ip: IpAddr) -> Result<AddressInfo> {
        let mut info = AddressInfo {
            ip,
            pool: env.pool_of(ip).map(|p| p.name.clone()),
            block: None,
            node: None,
            allocated: false,
            handle: None,
            attributes: BTreeMap::new(),
            sequence: None,
            reserved: env.is_reserved(ip),
        };
        if let Some(kv) = self.find_block(env, ip).await? {
            let b: Block = decode_kv(&kv)?;
            info.block = Some(b.cidr);
            info.node = b.host().map(str::to_owned);
            if let Some((attr, seq)) = b.allocation(ip) {
                info.allocated = true;
                info.handle = attr.handle_id.clone();
                info.attributes = attr.secondary.clone();
                info.sequence = Some(seq);
            }
        }
        Ok(info)
    }
}
