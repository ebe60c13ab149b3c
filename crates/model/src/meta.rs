//! The envelope every resource shares: `apiVersion`, `kind` and `metadata`
//! (name, namespace, labels, annotations, resourceVersion, uid,
//! creationTimestamp), in the two API groups Calico users write:
//! `projectcalico.org/v3` (calicoctl) and `crd.projectcalico.org/v1`
//! (kubectl against Calico's CRDs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::labels::{check_labels, check_resource_name};

/// The API version tabby stores and prints (calicoctl's).
pub const API_VERSION_V3: &str = "projectcalico.org/v3";
/// The API version of Calico's Kubernetes CRDs, accepted on input.
pub const API_VERSION_CRD_V1: &str = "crd.projectcalico.org/v1";

/// True for an `apiVersion` tabby accepts for a resource.
pub fn is_supported_api_version(v: &str) -> bool {
    v == API_VERSION_V3 || v == API_VERSION_CRD_V1
}

/// Standard object metadata (a subset of Kubernetes' `ObjectMeta`).
///
/// Fields that a Kubernetes API server adds to exported objects
/// (`generation`, `managedFields`, `selfLink`, ...) are accepted so an
/// exported manifest applies unchanged, and dropped when stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The resource's name, unique per kind (per namespace for namespaced kinds).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Namespace, for namespaced kinds (WorkloadEndpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels, matched by selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The datastore revision of the stored object; on input, a
    /// compare-and-swap precondition for `replace`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Unique id assigned when the object was created.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// RFC 3339 time the object was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Kubernetes' generation counter (accepted, not stored).
    #[serde(default, skip_serializing)]
    pub generation: Option<i64>,
    /// Kubernetes' field-manager bookkeeping (accepted, not stored).
    #[serde(default, skip_serializing)]
    pub managed_fields: Option<serde_json::Value>,
    /// Kubernetes' self link (accepted, not stored).
    #[serde(default, skip_serializing)]
    pub self_link: Option<String>,
    /// Kubernetes' name prefix for generated names (accepted, not stored).
    #[serde(default, skip_serializing)]
    pub generate_name: Option<String>,
    /// Kubernetes' finalizers (accepted, not stored).
    #[serde(default, skip_serializing)]
    pub finalizers: Option<Vec<String>>,
    /// Kubernetes' owner references (accepted, not stored).
    #[serde(default, skip_serializing)]
    pub owner_references: Option<serde_json::Value>,
}

impl ObjectMeta {
    /// Metadata with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Checks the name and labels.
    pub fn check(&self, namespaced: bool, problems: &mut Problems) {
        if let Err(e) = check_resource_name(&self.name) {
            problems.push("metadata.name", e);
        }
        match (&self.namespace, namespaced) {
            (Some(ns), true) => {
                if let Err(e) = check_resource_name(ns) {
                    problems.push("metadata.namespace", e);
                }
            }
            (None, true) => problems.push("metadata.namespace", "namespace must be set"),
            (Some(_), false) => problems.push(
                "metadata.namespace",
                "this kind is not namespaced: remove metadata.namespace",
            ),
            (None, false) => {}
        }
        check_labels("metadata.labels", &self.labels, problems);
    }

    /// Drops the fields that only a Kubernetes API server keeps.
    pub fn clear_server_fields(&mut self) {
        self.generation = None;
        self.managed_fields = None;
        self.self_link = None;
        self.generate_name = None;
        self.finalizers = None;
        self.owner_references = None;
    }
}
