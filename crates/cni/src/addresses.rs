//! The plugin's view of IPAM: assign addresses to a handle for this node,
//! find what a handle already holds, release a handle. Allocation itself
//! (pools, blocks, affinities, compare-and-swap) is `tabby-ipam`'s; this
//! module translates requests and errors into CNI terms.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use tabby_datastore::{Datastore, DatastoreError};
use tabby_ipam::{Environment, Ipam, IpamError};
use tabby_model::{AllowedUse, selector};

use crate::config::PoolRef;
use crate::error::{CniError, ErrorCode};

/// What to assign.
#[derive(Debug, Clone)]
pub struct AssignRequest<'a> {
    /// The IPAM handle (`<network>.<containerID>`).
    pub handle: &'a str,
    /// This node's name (block affinity).
    pub node: &'a str,
    /// Assign one IPv4 address.
    pub ipv4: bool,
    /// Assign one IPv6 address.
    pub ipv6: bool,
    /// Allowed IPv4 pools (empty: any enabled pool for this node).
    pub ipv4_pools: &'a [PoolRef],
    /// Allowed IPv6 pools (empty: any enabled pool for this node).
    pub ipv6_pools: &'a [PoolRef],
    /// Attributes stored with the allocation (pod, namespace, container).
    pub attributes: Vec<(String, String)>,
}

/// One assigned address and the CIDR of the pool it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// The address.
    pub address: IpAddr,
    /// The CIDR of its pool (its block's if the pool is gone).
    pub pool: IpNet,
}

/// The addresses `handle` holds already (for an idempotent ADD).
pub async fn assigned(store: &Datastore, handle: &str) -> Result<Vec<Assigned>, CniError> {
    let ips = Ipam::new(store.clone())
        .addresses_of(handle)
        .await
        .map_err(|e| ipam_error(e, handle))?;
    if ips.is_empty() {
        return Ok(Vec::new());
    }
    let env = environment(store).await?;
    Ok(ips
        .into_iter()
        .map(|address| Assigned {
            address,
            pool: env
                .pool_of(address)
                .map(|p| p.cidr)
                .unwrap_or_else(|| IpNet::from(address)),
        })
        .collect())
}

/// Assigns the requested addresses to `req.handle`, all or nothing.
pub async fn assign(store: &Datastore, req: &AssignRequest<'_>) -> Result<Vec<Assigned>, CniError> {
    let env = environment(store).await?;
    // The node's labels only matter to a pool with a node selector; when
    // every pool takes `all()` (the usual case) their read is skipped.
    let node_labels = if env
        .pools
        .iter()
        .all(|p| matches!(p.node_selector.expr(), selector::Expr::All))
    {
        BTreeMap::new()
    } else {
        node_labels(store, req.node).await?
    };
    let pools: Vec<String> = req
        .ipv4_pools
        .iter()
        .chain(req.ipv6_pools)
        .map(|p| match p {
            PoolRef::Cidr(c) => c.to_string(),
            PoolRef::Name(n) => n.clone(),
        })
        .collect();
    // A pool named in the configuration or an annotation must exist: an
    // unknown name would otherwise read as "no restriction".
    for (p, name) in req.ipv4_pools.iter().chain(req.ipv6_pools).zip(&pools) {
        let known = env.pools.iter().any(|pool| match p {
            PoolRef::Cidr(c) => pool.cidr == *c,
            PoolRef::Name(n) => pool.name == *n,
        });
        if !known {
            return Err(CniError::config(
                "ipam.ipv4Pools/ipv6Pools",
                format!("no IPPool {name}"),
            ));
        }
    }
    let ask = tabby_ipam::AssignRequest {
        node: req.node.to_owned(),
        node_labels,
        handle: req.handle.to_owned(),
        attributes: req.attributes.iter().cloned().collect(),
        num_v4: usize::from(req.ipv4),
        num_v6: usize::from(req.ipv6),
        use_: AllowedUse::Workload,
        pools,
    };
    let got = Ipam::new(store.clone())
        .auto_assign(&env, &ask)
        .await
        .map_err(|e| ipam_error(e, req.handle))?;
    Ok(got
        .v4
        .into_iter()
        .chain(got.v6)
        .map(|(address, block)| Assigned {
            address,
            pool: env.pool_of(address).map(|p| p.cidr).unwrap_or(block),
        })
        .collect())
}

/// Releases every address of `handle`; returns how many there were.
pub async fn release(store: &Datastore, handle: &str) -> Result<usize, CniError> {
    Ipam::new(store.clone())
        .release_handle(handle)
        .await
        .map(|ips| ips.len())
        .map_err(|e| ipam_error(e, handle))
}

async fn environment(store: &Datastore) -> Result<Environment, CniError> {
    tabby_ipam::resources::load_environment(store)
        .await
        .map_err(|e| ipam_error(e, "(pools)"))
}

async fn node_labels(store: &Datastore, node: &str) -> Result<BTreeMap<String, String>, CniError> {
    tabby_ipam::resources::node_labels(store, node)
        .await
        .map_err(|e| ipam_error(e, "(node labels)"))
}

/// Maps a datastore failure to the CNI code a runtime acts on.
pub(crate) fn datastore_error(e: DatastoreError, what: &str) -> CniError {
    let code = match &e {
        DatastoreError::Unavailable { .. } | DatastoreError::Conflict { .. } => {
            ErrorCode::TryAgainLater
        }
        DatastoreError::InvalidUrl { .. } => ErrorCode::InvalidConfig,
        _ => ErrorCode::Io,
    };
    let field = if code == ErrorCode::InvalidConfig {
        "datastore"
    } else {
        what
    };
    CniError::new(code, format!("{field}: {e}"))
}

fn ipam_error(e: IpamError, handle: &str) -> CniError {
    match e {
        IpamError::Datastore(d) => datastore_error(d, &format!("IPAM handle {handle}")),
        IpamError::NoPools { .. } | IpamError::Exhausted { .. } => {
            CniError::new(ErrorCode::AddressesExhausted, e.to_string())
        }
        IpamError::Invalid { what, .. } => {
            CniError::new(ErrorCode::InvalidEnvironment, format!("{what}: {e}"))
        }
        other => CniError::new(ErrorCode::Internal, other.to_string()),
    }
}
