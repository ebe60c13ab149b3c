//! Reads the resources IPAM depends on (IPPools, the IPAMConfiguration,
//! IPReservations, a Node's labels, WorkloadEndpoint addresses) through
//! `tabby-model`'s typed storage. Writing resources stays with `tabby-model`; the one exception,
//! [`write_ipam_config`] (`tabby ipam configure`), keeps every other field
//! of the stored object and compare-and-swaps on its revision.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tabby_datastore::{Condition, Datastore, KeyValue, Txn};
use tabby_model::store::{ResourceStore, StoreError};
use tabby_model::{
    IpPoolSpec, IpReservationSpec, IpamConfiguration, IpamConfigurationSpec, Kind, NodeSpec,
    Object, WorkloadEndpointSpec,
};

use crate::pool::Environment;
use crate::{IpamError, Result};

/// Prefix of every resource key (as `tabby-model` stores them).
pub const RESOURCE_PREFIX: &str = "/tabby/resources/v3/";

/// The name of the one IPAMConfiguration.
pub const IPAM_CONFIG_NAME: &str = "default";

fn kind_prefix(kind: Kind) -> String {
    format!("{RESOURCE_PREFIX}{}/", kind.plural())
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| IpamError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

fn store_err(e: StoreError) -> IpamError {
    match e {
        StoreError::Datastore(d) => IpamError::Datastore(d),
        other => IpamError::Corrupt {
            key: RESOURCE_PREFIX.into(),
            reason: other.to_string(),
        },
    }
}

/// Pools, configuration and reservations as stored.
pub async fn load_environment(ds: &Datastore) -> Result<Environment> {
    let store = ResourceStore::new(ds.clone());
    let pools = store.list_typed::<IpPoolSpec>().await.map_err(store_err)?;
    let reservations = store
        .list_typed::<IpReservationSpec>()
        .await
        .map_err(store_err)?;
    let config = load_ipam_config(ds).await?;
    Ok(Environment::from_resources(
        &pools,
        Some(&config.spec),
        &reservations,
    ))
}

/// The IPAMConfiguration (Calico's defaults if none is stored).
pub async fn load_ipam_config(ds: &Datastore) -> Result<IpamConfiguration> {
    let store = ResourceStore::new(ds.clone());
    match store
        .get_typed::<IpamConfigurationSpec>(IPAM_CONFIG_NAME)
        .await
        .map_err(store_err)?
    {
        Some(c) => Ok(c),
        None => Ok(Object::new(
            IPAM_CONFIG_NAME,
            IpamConfigurationSpec::default(),
        )),
    }
}

/// Changes the IPAMConfiguration with `edit` (creating it with defaults
/// first if absent); retried on a concurrent change. Returns the result.
pub async fn write_ipam_config(
    ds: &Datastore,
    edit: impl Fn(&mut IpamConfigurationSpec),
) -> Result<IpamConfiguration> {
    let key = format!("{}{IPAM_CONFIG_NAME}", kind_prefix(Kind::IpamConfiguration));
    for _ in 0..20 {
        let current = ds.get(&key).await?;
        let mut obj: IpamConfiguration = match &current {
            Some(kv) => decode(kv)?,
            None => Object::new(IPAM_CONFIG_NAME, IpamConfigurationSpec::default()),
        };
        edit(&mut obj.spec);
        obj.metadata.resource_version.clear();
        let mut problems = tabby_model::error::Problems::new();
        obj.spec.check(&mut problems);
        if let Some(first) = problems.into_vec().into_iter().next() {
            return Err(IpamError::Invalid {
                what: "IPAMConfiguration",
                reason: first.to_string(),
            });
        }
        let value = serde_json::to_vec(&obj).map_err(|e| IpamError::Invalid {
            what: "IPAMConfiguration",
            reason: e.to_string(),
        })?;
        let cond = current.as_ref().map_or(Condition::Absent, |kv| {
            Condition::ModRevision(kv.mod_revision)
        });
        match ds.txn(Txn::new().when(&key, cond).put(&key, value)).await {
            Ok(_) => return Ok(obj),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IpamError::Invalid {
        what: "IPAMConfiguration",
        reason: "kept changing concurrently; try again".into(),
    })
}

/// A node's labels (empty if the Node is not stored).
pub async fn node_labels(ds: &Datastore, node: &str) -> Result<BTreeMap<String, String>> {
    let store = ResourceStore::new(ds.clone());
    match store.get_typed::<NodeSpec>(node).await.map_err(store_err)? {
        Some(n) => Ok(n.metadata.labels),
        None => Ok(BTreeMap::new()),
    }
}

/// Every address in use by a pod: those of stored WorkloadEndpoints (where
/// `tabby-cni` records each attachment).
pub async fn workload_addresses(ds: &Datastore) -> Result<BTreeSet<IpAddr>> {
    let store = ResourceStore::new(ds.clone());
    let weps = store
        .list_typed::<WorkloadEndpointSpec>()
        .await
        .map_err(store_err)?;
    let out: BTreeSet<IpAddr> = weps
        .iter()
        .flat_map(|w| w.spec.ip_networks.iter().map(|c| c.net().addr()))
        .collect();
    Ok(out)
}
