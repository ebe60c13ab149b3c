//! Reads the resources IPAM depends on (IPPools, the IPAMConfiguration,
//! IPReservations, a Node's labels, WorkloadEndpoint addresses) straight
//! from the datastore, at the key layout `tabby-model`'s typed storage
//! writes: `/tabby/resources/v3/<plural>/<name>`, the value the resource as
//! JSON. Writing resources stays with `tabby-model`; the one exception,
//! [`write_ipam_config`] (`tabby ipam configure`), keeps every other field
//! of the stored object and compare-and-swaps on its revision.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use tabby_datastore::{Condition, Datastore, KeyValue, Txn};
use tabby_model::{
    IpPool, IpReservation, IpamConfiguration, IpamConfigurationSpec, Kind, Node, Object,
    WorkloadEndpoint,
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

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| IpamError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

async fn list<T: DeserializeOwned>(ds: &Datastore, kind: Kind) -> Result<Vec<T>> {
    let l = ds.list(&kind_prefix(kind)).await?;
    l.items.iter().map(decode).collect()
}

/// Pools, configuration and reservations as stored.
pub async fn load_environment(ds: &Datastore) -> Result<Environment> {
    let pools: Vec<IpPool> = list(ds, Kind::IpPool).await?;
    let reservations: Vec<IpReservation> = list(ds, Kind::IpReservation).await?;
    let config = load_ipam_config(ds).await?;
    Ok(Environment::from_resources(
        &pools,
        Some(&config.spec),
        &reservations,
    ))
}

/// The IPAMConfiguration (Calico's defaults if none is stored).
pub async fn load_ipam_config(ds: &Datastore) -> Result<IpamConfiguration> {
    let key = format!("{}{IPAM_CONFIG_NAME}", kind_prefix(Kind::IpamConfiguration));
    match ds.get(&key).await? {
        Some(kv) => decode(&kv),
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
    let key = format!("{}{node}", kind_prefix(Kind::Node));
    match ds.get(&key).await? {
        Some(kv) => Ok(decode::<Node>(&kv)?.metadata.labels),
        None => Ok(BTreeMap::new()),
    }
}

/// Every address a stored WorkloadEndpoint uses.
pub async fn workload_addresses(ds: &Datastore) -> Result<BTreeSet<IpAddr>> {
    let weps: Vec<WorkloadEndpoint> = list(ds, Kind::WorkloadEndpoint).await?;
    Ok(weps
        .iter()
        .flat_map(|w| w.spec.ip_networks.iter().map(|c| c.net().addr()))
        .collect())
}
