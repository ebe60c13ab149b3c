//! The resource kinds tabby knows, the generic typed object
//! (`apiVersion`/`kind`/`metadata`/`spec`), and [`Resource`], one value of
//! any kind, with reading from a YAML/JSON tree (every error carries the
//! field path), validation, update checks and defaults.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bgp_configuration::{BgpConfiguration, BgpConfigurationSpec};
use crate::bgp_filter::{BgpFilter, BgpFilterSpec};
use crate::bgp_peer::{BgpPeer, BgpPeerSpec};
use crate::error::{FieldError, Problems, ValidationError, join_path};
use crate::ip_reservation::{IpReservation, IpReservationSpec};
use crate::ipam_config::{IPAM_CONFIGURATION_NAME, IpamConfiguration, IpamConfigurationSpec};
use crate::ippool::{IpPool, IpPoolSpec};
use crate::meta::{API_VERSION_CRD_V1, API_VERSION_V3, ObjectMeta, is_supported_api_version};
use crate::node::{Node, NodeSpec};
use crate::workload_endpoint::{WorkloadEndpoint, WorkloadEndpointSpec};

/// A resource of kind `S`: the envelope plus a typed spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    /// Always `projectcalico.org/v3` once read (input may say
    /// `crd.projectcalico.org/v1`).
    pub api_version: String,
    /// The kind's canonical name, e.g. `IPPool`.
    pub kind: String,
    /// Name, labels and bookkeeping.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The kind-specific part.
    pub spec: S,
    /// Status as exported by Calico (only Nodes have one; kept as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl<S: ResourceSpec> Object<S> {
    /// A new object of `S`'s kind with the given name and spec.
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Object {
            api_version: API_VERSION_V3.to_string(),
            kind: S::KIND.name().to_string(),
            metadata: ObjectMeta::named(name),
            spec,
            status: None,
        }
    }
}

/// The kinds of resource tabby stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// BGPConfiguration.
    BgpConfiguration,
    /// BGPPeer.
    BgpPeer,
    /// BGPFilter.
    BgpFilter,
    /// IPPool.
    IpPool,
    /// Node.
    Node,
    /// IPAMConfiguration.
    IpamConfiguration,
    /// IPReservation.
    IpReservation,
    /// WorkloadEndpoint.
    WorkloadEndpoint,
}

impl Kind {
    /// Every kind, in the order `apply` writes them.
    pub const ALL: [Kind; 8] = [
        Kind::IpamConfiguration,
        Kind::IpPool,
        Kind::IpReservation,
        Kind::BgpConfiguration,
        Kind::BgpFilter,
        Kind::Node,
        Kind::BgpPeer,
        Kind::WorkloadEndpoint,
    ];

    /// The canonical `kind:` string.
    pub fn name(self) -> &'static str {
        match self {
            Kind::BgpConfiguration => "BGPConfiguration",
            Kind::BgpPeer => "BGPPeer",
            Kind::BgpFilter => "BGPFilter",
            Kind::IpPool => "IPPool",
            Kind::Node => "Node",
            Kind::IpamConfiguration => "IPAMConfiguration",
            Kind::IpReservation => "IPReservation",
            Kind::WorkloadEndpoint => "WorkloadEndpoint",
        }
    }

    /// Lower-case plural, used in datastore keys.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::BgpConfiguration => "bgpconfigurations",
            Kind::BgpPeer => "bgppeers",
            Kind::BgpFilter => "bgpfilters",
            Kind::IpPool => "ippools",
            Kind::Node => "nodes",
            Kind::IpamConfiguration => "ipamconfigurations",
            Kind::IpReservation => "ipreservations",
            Kind::WorkloadEndpoint => "workloadendpoints",
        }
    }

    /// True for kinds whose names are scoped to a namespace.
    pub fn namespaced(self) -> bool {
        self == Kind::WorkloadEndpoint
    }

    /// The kind named by a document's `kind:` (canonical names, plus
    /// `IPAMConfig`, the CRD spelling).
    pub fn from_kind_name(s: &str) -> Option<Kind> {
        if s == "IPAMConfig" {
            return Some(Kind::IpamConfiguration);
        }
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The kind named on the command line, with calicoctl's aliases
    /// (case-insensitive): `ippool`, `ippools`, `ipp`, `pool`, `bgppeer`,
    /// `bgpp`, `bp`, `bgpconfig`, `node`, `no`, `wep`, ...
    pub fn from_cli_name(s: &str) -> Option<Kind> {
        let s = s.to_ascii_lowercase();
        let s = s
            .strip_suffix(".crd.projectcalico.org")
            .or_else(|| s.strip_suffix(".projectcalico.org"))
            .unwrap_or(&s);
        Some(match s {
            "bgpconfiguration" | "bgpconfigurations" | "bgpconfig" | "bgpconfigs" => {
                Kind::BgpConfiguration
            }
            "bgppeer" | "bgppeers" | "bgpp" | "bgpps" | "bp" | "bps" => Kind::BgpPeer,
            "bgpfilter" | "bgpfilters" => Kind::BgpFilter,
            "ippool" | "ippools" | "ipp" | "ipps" | "pool" | "pools" => Kind::IpPool,
            "node" | "nodes" | "no" | "nos" => Kind::Node,
            "ipamconfiguration" | "ipamconfigurations" | "ipamconfig" | "ipamconfigs" => {
                Kind::IpamConfiguration
            }
            "ipreservation" | "ipreservations" => Kind::IpReservation,
            "workloadendpoint" | "workloadendpoints" | "wep" | "weps" => Kind::WorkloadEndpoint,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A spec type that belongs to one kind.
pub trait ResourceSpec: Serialize + DeserializeOwned + Clone + Sized {
    /// The kind this spec belongs to.
    const KIND: Kind;
    /// Wraps a typed object into a [`Resource`].
    fn wrap(obj: Object<Self>) -> Resource;
    /// Unwraps a [`Resource`] of this kind.
    fn unwrap(res: Resource) -> Option<Object<Self>>;
}

macro_rules! resource_kinds {
    ($($variant:ident => $spec:ident, $ty:ident;)*) => {
        /// One resource of any kind.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum Resource {
            $(
                #[doc = concat!("A ", stringify!($ty), ".")]
                $variant($ty),
            )*
        }

        $(
            impl ResourceSpec for $spec {
                const KIND: Kind = Kind::$variant;
                fn wrap(obj: Object<Self>) -> Resource {
                    Resource::$variant(obj)
                }
                fn unwrap(res: Resource) -> Option<Object<Self>> {
                    match res {
                        Resource::$variant(o) => Some(o),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )*

        impl Resource {
            /// The resource's kind.
            pub fn kind(&self) -> Kind {
                match self {
                    $(Resource::$variant(_) => Kind::$variant,)*
                }
            }

            /// The resource's metadata.
            pub fn metadata(&self) -> &ObjectMeta {
                match self {
                    $(Resource::$variant(o) => &o.metadata,)*
                }
            }

            /// The resource's metadata, to change.
            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Resource::$variant(o) => &mut o.metadata,)*
                }
            }

            /// True when a `status` section is present.
            fn has_status(&self) -> bool {
                match self {
                    $(Resource::$variant(o) => o.status.is_some(),)*
                }
            }

            /// The resource as a JSON tree (what `-o json`/`-o yaml` print).
            pub fn to_value(&self) -> Value {
                let v = match self {
                    $(Resource::$variant(o) => serde_json::to_value(o),)*
                };
                // Serialising these plain data types cannot fail.
                v.unwrap_or(Value::Null)
            }

            fn from_normalised(kind: Kind, value: Value) -> Result<Resource, FieldError> {
                match kind {
                    $(Kind::$variant => deserialize_with_path::<$ty>(value).map(Resource::$variant),)*
                }
            }
        }
    };
}

resource_kinds! {
    BgpConfiguration => BgpConfigurationSpec, BgpConfiguration;
    BgpPeer => BgpPeerSpec, BgpPeer;
    BgpFilter => BgpFilterSpec, BgpFilter;
    IpPool => IpPoolSpec, IpPool;
    Node => NodeSpec, Node;
    IpamConfiguration => IpamConfigurationSpec, IpamConfiguration;
    IpReservation => IpReservationSpec, IpReservation;
    WorkloadEndpoint => WorkloadEndpointSpec, WorkloadEndpoint;
}

/// Deserialises `T`, turning serde's error into a [`FieldError`] whose path
/// names the field (`spec.blockSize`, `spec.exportV4[1].cidr`, or for an
/// unknown field the unknown field itself).
fn deserialize_with_path<T: DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        let msg = e.inner().to_string();
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            if let Some((field, tail)) = rest.split_once('`') {
                let tail = tail.trim_start_matches(',').trim();
                // The path may already end at the unknown field.
                let at_field = path == field || path.ends_with(&format!(".{field}"));
                return FieldError::new(
                    if at_field {
                        path.clone()
                    } else {
                        join_path(&path, field)
                    },
                    format!("unknown field \"{field}\" ({tail})"),
                );
            }
        }
        if let Some(rest) = msg.strip_prefix("missing field `") {
            if let Some((field, _)) = rest.split_once('`') {
                return FieldError::new(join_path(&path, field), "required field is missing");
            }
        }
        FieldError::new(path, msg)
    })
}

impl Resource {
    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// Reads a resource from a YAML/JSON tree. Both API versions are
    /// accepted; the result says `projectcalico.org/v3` and the canonical
    /// kind. Only the shape of fields is checked here; see
    /// [`Resource::check`] for the rules.
    pub fn from_value(mut value: Value) -> Result<Resource, FieldError> {
        let Some(map) = value.as_object_mut() else {
            return Err(FieldError::new(
                "",
                "a resource must be a mapping with apiVersion, kind, metadata and spec",
            ));
        };
        match map.get("apiVersion") {
            None => {
                return Err(FieldError::new(
                    "apiVersion",
                    format!("required field is missing (use {API_VERSION_V3})"),
                ));
            }
            Some(Value::String(v)) if is_supported_api_version(v) => {}
            Some(v) => {
                return Err(FieldError::new(
                    "apiVersion",
                    format!(
                        "unsupported apiVersion {v}: use {API_VERSION_V3} or {API_VERSION_CRD_V1}"
                    ),
                ));
            }
        }
        let kind = match map.get("kind") {
            None => return Err(FieldError::new("kind", "required field is missing")),
            Some(Value::String(k)) => Kind::from_kind_name(k).ok_or_else(|| {
                FieldError::new(
                    "kind",
                    format!(
                        "unknown kind \"{k}\": tabby knows {}",
                        Kind::ALL.map(Kind::name).join(", ")
                    ),
                )
            })?,
            Some(v) => {
                return Err(FieldError::new(
                    "kind",
                    format!("must be a string, not {v}"),
                ));
            }
        };
        map.insert("apiVersion".into(), Value::String(API_VERSION_V3.into()));
        map.insert("kind".into(), Value::String(kind.name().into()));
        let mut r = Resource::from_normalised(kind, value)?;
        r.metadata_mut().clear_server_fields();
        Ok(r)
    }

    /// Checks the resource on its own: name, labels, and the kind's rules.
    pub fn check(&self) -> Result<(), ValidationError> {
        let mut p = Problems::new();
        self.metadata().check(self.kind().namespaced(), &mut p);
        if self.has_status() && self.kind() != Kind::Node {
            p.push("status", format!("a {} has no status section", self.kind()));
        }
        match self {
            Resource::BgpConfiguration(o) => o.spec.check(&o.metadata.name, &mut p),
            Resource::BgpPeer(o) => o.spec.check(&mut p),
            Resource::BgpFilter(o) => o.spec.check(&mut p),
            Resource::IpPool(o) => o.spec.check(&mut p),
            Resource::Node(o) => o.spec.check(&mut p),
            Resource::IpamConfiguration(o) => {
                if o.metadata.name != IPAM_CONFIGURATION_NAME {
                    p.push(
                        "metadata.name",
                        format!(
                            "the IPAMConfiguration is always named \"{IPAM_CONFIGURATION_NAME}\", not \"{}\"",
                            o.metadata.name
                        ),
                    );
                }
                o.spec.check(&mut p);
            }
            Resource::IpReservation(o) => o.spec.check(&mut p),
            Resource::WorkloadEndpoint(o) => o.spec.check(&mut p),
        }
        p.into_result()
    }

    /// Checks a change from `old` (the stored version) to `self`: fields
    /// that are immutable once created (an IPPool's `cidr` and `blockSize`).
    pub fn check_update(&self, old: &Resource) -> Result<(), ValidationError> {
        let mut p = Problems::new();
        if let (Resource::IpPool(new), Resource::IpPool(old)) = (self, old) {
            new.spec.check_update(&old.spec, &mut p);
        }
        p.into_result()
    }

    /// Fills in the defaults Calico stores (an IPPool's block size, modes,
    /// node selector, allowed uses; a pool's CIDR normalised).
    pub fn apply_defaults(&mut self) {
        if let Resource::IpPool(o) = self {
            o.spec.apply_defaults();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_aliases() {
        for (alias, kind) in [
            ("pool", Kind::IpPool),
            ("IPPools", Kind::IpPool),
            ("ippools.crd.projectcalico.org", Kind::IpPool),
            ("ippool.projectcalico.org", Kind::IpPool),
            ("bgpconfig", Kind::BgpConfiguration),
            ("bp", Kind::BgpPeer),
            ("nodes", Kind::Node),
            ("wep", Kind::WorkloadEndpoint),
            ("ipamconfig", Kind::IpamConfiguration),
        ] {
            assert_eq!(Kind::from_cli_name(alias), Some(kind), "{alias}");
        }
        assert_eq!(Kind::from_cli_name("ipamblocks"), None);
        assert_eq!(
            Kind::from_kind_name("IPAMConfig"),
            Some(Kind::IpamConfiguration)
        );
    }
}
