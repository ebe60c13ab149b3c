//! Typed resource storage over the datastore: the key layout, resource
//! versions, and create / replace / apply / delete / patch semantics.
//!
//! Keys: `/tabby/resources/v3/<plural>/<name>` (namespaced kinds:
//! `/tabby/resources/v3/<plural>/<namespace>/<name>`), value = the resource
//! as JSON without `resourceVersion`. A resource's `resourceVersion` is the
//! datastore revision that last wrote it.
//!
//! A batch (one manifest file) is all-or-nothing: every document is read and
//! checked first (existence for create/replace, stale `resourceVersion`,
//! immutable fields, overlapping pools across the batch *and* the stored
//! pools), and only if all pass is the whole batch written in one datastore
//! transaction whose compares pin every key read. Every IPPool write also
//! bumps a marker key that all pool writers compare, so two writers cannot
//! each add one of two overlapping pools. A lost race re-reads and re-checks
//! (a few times) instead of writing over someone else's change.
//!
//! Defaults Calico stores (IPPool block size, modes, selector, uses) are
//! filled in on write; `uid` and `creationTimestamp` are set on create and
//! kept on update.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tabby_datastore::{Condition, Datastore, DatastoreError, Revision, Txn};

use crate::document::ManifestEntry;
use crate::error::{DocumentError, DocumentProblem, DocumentRef, FieldError, ValidationError};
use crate::ippool::find_overlapping_pools;
use crate::node::Node;
use crate::resource::{Kind, Object, Resource, ResourceSpec};

/// Prefix of every resource key.
pub const RESOURCE_PREFIX: &str = "/tabby/resources/v3/";

/// Written (and compared) by every IPPool change, so pool-overlap checks
/// never race.
pub const POOL_WRITE_MARKER: &str = "/tabby/resources-meta/v3/ippools-written";

const RETRIES: usize = 5;

/// The prefix under which every resource of `kind` is stored.
pub fn kind_prefix(kind: Kind) -> String {
    format!("{RESOURCE_PREFIX}{}/", kind.plural())
}

/// The key of one resource.
pub fn resource_key(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if kind.namespaced() => format!("{}{ns}/{name}", kind_prefix(kind)),
        _ => format!("{}{name}", kind_prefix(kind)),
    }
}

fn key_of(r: &Resource) -> String {
    resource_key(r.kind(), r.metadata().namespace.as_deref(), r.name())
}

/// What went wrong storing or reading resources.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The datastore failed (unreachable, backend error).
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
    /// One or more documents of a batch cannot be written; nothing was.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Documents(Vec<DocumentError>),
    /// The named resource does not exist.
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
    },
    /// A change (patch, label) would make the resource invalid.
    #[error("{kind} \"{name}\": {error}")]
    Invalid {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
        /// What is wrong.
        error: ValidationError,
    },
    /// Someone else kept changing the resource; gave up after retrying.
    #[error("{key}: changed concurrently {RETRIES} times in a row; try again")]
    Contended {
        /// The key.
        key: String,
    },
    /// A stored value cannot be read back as a resource.
    #[error("stored value at {key} is not a valid resource: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        message: String,
    },
}

/// How a batch treats documents whose resource exists (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Every resource must be new.
    Create,
    /// Every resource must exist; a `resourceVersion` in the document must
    /// match the stored one.
    Replace,
    /// Create or update, whatever exists (the document's `resourceVersion`
    /// is ignored).
    Apply,
}

/// What happened to one document of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Created.
    Created,
    /// Updated.
    Updated,
    /// Already stored exactly so; not rewritten.
    Unchanged,
    /// Deleted.
    Deleted,
}

/// One document's outcome.
#[derive(Debug, Clone)]
pub struct Written {
    /// The document.
    pub doc: DocumentRef,
    /// The stored resource (for deletes: as it was).
    pub resource: Resource,
    /// What happened.
    pub action: Action,
}

/// Resources on top of a [`Datastore`].
#[derive(Debug, Clone)]
pub struct ResourceStore {
    ds: Datastore,
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn new_uid() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !filled {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn stored_bytes(r: &Resource) -> Vec<u8> {
    let mut v = r.to_value();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Reads a stored value back as a resource (for watchers of
/// [`kind_prefix`]: a `WatchEvent::Put`'s key, value and `mod_revision`).
pub fn decode_resource(
    key: &str,
    bytes: &[u8],
    revision: Revision,
) -> Result<Resource, StoreError> {
    decode(key, bytes, revision)
}

/// The kind and name a resource key names (the inverse of [`resource_key`]
/// for non-namespaced kinds; namespaced keys give `namespace/name`).
pub fn parse_resource_key(key: &str) -> Option<(Kind, &str)> {
    let rest = key.strip_prefix(RESOURCE_PREFIX)?;
    let (plural, name) = rest.split_once('/')?;
    let kind = Kind::ALL.into_iter().find(|k| k.plural() == plural)?;
    Some((kind, name))
}

fn decode(key: &str, bytes: &[u8], revision: Revision) -> Result<Resource, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        key: key.to_string(),
        message,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut r = Resource::from_value(v).map_err(|e| corrupt(e.to_string()))?;
    r.metadata_mut().resource_version = revision.to_string();
    Ok(r)
}

fn fields_error(doc: &DocumentRef, errors: Vec<FieldError>) -> DocumentError {
    DocumentError {
        doc: doc.clone(),
        problem: DocumentProblem::Fields(errors),
    }
}

impl ResourceStore {
    /// Resources stored in `ds`.
    pub fn new(ds: Datastore) -> Self {
        ResourceStore { ds }
    }

    /// The underlying datastore.
    pub fn datastore(&self) -> &Datastore {
        &self.ds
    }

    /// Reads one resource.
    pub async fn get(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Resource>, StoreError> {
        let key = resource_key(kind, namespace, name);
        match self.ds.get(&key).await? {
            None => Ok(None),
            Some(kv) => decode(&key, &kv.value, kv.mod_revision).map(Some),
        }
    }

    /// Reads every resource of a kind, ordered by key.
    pub async fn list(&self, kind: Kind) -> Result<Vec<Resource>, StoreError> {
        let listing = self.ds.list(&kind_prefix(kind)).await?;
        listing
            .items
            .iter()
            .map(|kv| decode(&kv.key, &kv.value, kv.mod_revision))
            .collect()
    }

    /// Reads one resource of a statically known kind.
    pub async fn get_typed<S: ResourceSpec>(
        &self,
        name: &str,
    ) -> Result<Option<Object<S>>, StoreError> {
        Ok(self.get(S::KIND, None, name).await?.and_then(S::unwrap))
    }

    /// Reads every resource of a statically known kind.
    pub async fn list_typed<S: ResourceSpec>(&self) -> Result<Vec<Object<S>>, StoreError> {
        Ok(self
            .list(S::KIND)
            .await?
            .into_iter()
            .filter_map(S::unwrap)
            .collect())
    }

    /// Writes a batch of documents all-or-nothing (see the module doc).
    pub async fn write_batch(
        &self,
        mode: WriteMode,
        entries: &[ManifestEntry],
    ) -> Result<Vec<Written>, StoreError> {
        let mut last_key = String::new();
        for _ in 0..RETRIES {
            match self.try_write_batch(mode, entries).await {
                Err(StoreError::Datastore(DatastoreError::Conflict { key, .. })) => last_key = key,
                other => return other,
            }
        }
        Err(StoreError::Contended { key: last_key })
    }

    async fn try_write_batch(
        &self,
        mode: WriteMode,
        entries: &[ManifestEntry],
    ) -> Result<Vec<Written>, StoreError> {
        let mut errors = Vec::new();
        let mut txn = Txn::new();
        let mut planned: Vec<(usize, Resource, Action, Revision)> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let key = key_of(&e.resource);
            if let Some(first) = seen.insert(key.clone(), i) {
                errors.push(fields_error(
                    &e.doc,
                    vec![FieldError::new(
                        "metadata.name",
                        format!(
                            "{} \"{}\" also appears in document {} of this file",
                            e.resource.kind(),
                            e.resource.name(),
                            entries[first].doc.index
                        ),
                    )],
                ));
                continue;
            }
            let current = self.ds.get(&key).await?;
            let old = match &current {
                Some(kv) => Some(decode(&key, &kv.value, kv.mod_revision)?),
                None => None,
            };
            let kind = e.resource.kind();
            let name = e.resource.name();
            match (mode, &current) {
                (WriteMode::Create, Some(kv)) => {
                    errors.push(fields_error(
                        &e.doc,
                        vec![FieldError::new(
                            "metadata.name",
                            format!(
                                "{kind} \"{name}\" already exists (resourceVersion {}): use replace or apply",
                                kv.mod_revision
                            ),
                        )],
                    ));
                    continue;
                }
                (WriteMode::Replace, None) => {
                    errors.push(fields_error(
                        &e.doc,
                        vec![FieldError::new(
                            "metadata.name",
                            format!("{kind} \"{name}\" does not exist: use create or apply"),
                        )],
                    ));
                    continue;
                }
                (WriteMode::Replace, Some(kv)) => {
                    let rv = &e.resource.metadata().resource_version;
                    if !rv.is_empty() && rv != &kv.mod_revision.to_string() {
                        errors.push(fields_error(
                            &e.doc,
                            vec![FieldError::new(
                                "metadata.resourceVersion",
                                format!(
                                    "{rv} is not the stored version {}: the resource changed since it was read; get it again and retry",
                                    kv.mod_revision
                                ),
                            )],
                        ));
                        continue;
                    }
                }
                _ => {}
            }
            let mut new = e.resource.clone();
            {
                let m = new.metadata_mut();
                m.resource_version.clear();
                match &old {
                    Some(o) => {
                        m.uid = o.metadata().uid.clone();
                        m.creation_timestamp = o.metadata().creation_timestamp.clone();
                    }
                    None => {
                        m.uid = new_uid();
                        m.creation_timestamp = Some(now_rfc3339());
                    }
                }
            }
            new.apply_defaults();
            // Node labels stand in for the Kubernetes node's labels, which
            // `calicoctl apply` of a Node (KDD) never touched: a Node document
            // without labels (the seeds' `spec.bgp` edits) keeps the stored
            // labels, and one without status keeps the stored status.
            if let (Resource::Node(n), Some(Resource::Node(o))) = (&mut new, &old) {
                if n.metadata.labels.is_empty() {
                    n.metadata.labels = o.metadata.labels.clone();
                }
                if n.status.is_none() {
                    n.status = o.status.clone();
                }
            }
            if let Some(o) = &old {
                if let Err(v) = new.check_update(o) {
                    errors.push(fields_error(&e.doc, v.errors));
                    continue;
                }
            }
            let bytes = stored_bytes(&new);
            let action = match &current {
                Some(kv) => {
                    txn.push_compare(key.clone(), Condition::ModRevision(kv.mod_revision));
                    if kv.value == bytes {
                        Action::Unchanged
                    } else {
                        txn.push_put(key.clone(), bytes);
                        Action::Updated
                    }
                }
                None => {
                    txn.push_compare(key.clone(), Condition::Absent);
                    txn.push_put(key.clone(), bytes);
                    Action::Created
                }
            };
            let old_rev = current.as_ref().map_or(0, |kv| kv.mod_revision);
            planned.push((i, new, action, old_rev));
        }

        // Pools: check overlaps over the stored pools as they will be.
        let batch_pools: Vec<&Resource> = planned
            .iter()
            .filter(|(_, r, _, _)| r.kind() == Kind::IpPool)
            .map(|(_, r, _, _)| r)
            .collect();
        if !batch_pools.is_empty() {
            let marker = self.ds.get(POOL_WRITE_MARKER).await?;
            txn.push_compare(
                POOL_WRITE_MARKER,
                marker.as_ref().map_or(Condition::Absent, |kv| {
                    Condition::ModRevision(kv.mod_revision)
                }),
            );
            txn.push_put(POOL_WRITE_MARKER, b"1".to_vec());
            let stored = self.list(Kind::IpPool).await?;
            let mut all: BTreeMap<String, Resource> = stored
                .into_iter()
                .map(|r| (r.name().to_string(), r))
                .collect();
            for r in &batch_pools {
                all.insert(r.name().to_string(), (*r).clone());
            }
            let pools: Vec<&crate::ippool::IpPool> = all
                .values()
                .filter_map(|r| match r {
                    Resource::IpPool(p) => Some(p),
                    _ => None,
                })
                .collect();
            let changed: Vec<&str> = batch_pools.iter().map(|r| r.name()).collect();
            for (name, err) in find_overlapping_pools(&pools, &changed) {
                if let Some(e) = entries
                    .iter()
                    .find(|e| e.resource.kind() == Kind::IpPool && e.resource.name() == name)
                {
                    errors.push(fields_error(&e.doc, vec![err]));
                }
            }
        }

        if !errors.is_empty() {
            return Err(StoreError::Documents(errors));
        }
        let revision = self.ds.txn(txn).await?;
        Ok(planned
            .into_iter()
            .map(|(i, mut r, action, old_rev)| {
                let rv = if action == Action::Unchanged {
                    old_rev
                } else {
                    revision
                };
                r.metadata_mut().resource_version = rv.to_string();
                Written {
                    doc: entries[i].doc.clone(),
                    resource: r,
                    action,
                }
            })
            .collect())
    }

    /// Deletes the resources a batch of documents names, all-or-nothing:
    /// if any does not exist, nothing is deleted.
    pub async fn delete_batch(
        &self,
        entries: &[ManifestEntry],
    ) -> Result<Vec<Written>, StoreError> {
        let mut last_key = String::new();
        for _ in 0..RETRIES {
            let mut errors = Vec::new();
            let mut txn = Txn::new();
            let mut out = Vec::new();
            let mut seen = HashMap::new();
            for e in entries {
                let key = key_of(&e.resource);
                if seen.insert(key.clone(), ()).is_some() {
                    continue;
                }
                match self.ds.get(&key).await? {
                    None => errors.push(fields_error(
                        &e.doc,
                        vec![FieldError::new(
                            "metadata.name",
                            format!("{} \"{}\" not found", e.resource.kind(), e.resource.name()),
                        )],
                    )),
                    Some(kv) => {
                        txn.push_compare(key.clone(), Condition::ModRevision(kv.mod_revision));
                        txn.push_delete(key.clone());
                        out.push(Written {
                            doc: e.doc.clone(),
                            resource: decode(&key, &kv.value, kv.mod_revision)?,
                            action: Action::Deleted,
                        });
                    }
                }
            }
            if !errors.is_empty() {
                return Err(StoreError::Documents(errors));
            }
            match self.ds.txn(txn).await {
                Ok(_) => return Ok(out),
                Err(DatastoreError::Conflict { key, .. }) => last_key = key,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Contended { key: last_key })
    }

    /// Deletes one resource by name.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Resource, StoreError> {
        let key = resource_key(kind, namespace, name);
        for _ in 0..RETRIES {
            let Some(kv) = self.ds.get(&key).await? else {
                return Err(StoreError::NotFound {
                    kind,
                    name: name.to_string(),
                });
            };
            let old = decode(&key, &kv.value, kv.mod_revision)?;
            match self.ds.delete(&key, Some(kv.mod_revision)).await {
                Ok(_) => return Ok(old),
                Err(DatastoreError::Conflict { .. }) => continue,
                Err(DatastoreError::NotFound { .. }) => {
                    return Err(StoreError::NotFound {
                        kind,
                        name: name.to_string(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Contended { key })
    }

    /// Reads a resource, changes it with `change`, checks the result (the
    /// resource's own rules, immutable fields, pool overlaps) and writes it
    /// back with compare-and-swap, re-reading on a lost race.
    pub async fn update_with<F>(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        mut change: F,
    ) -> Result<Resource, StoreError>
    where
        F: FnMut(&Resource) -> Result<Resource, ValidationError>,
    {
        let key = resource_key(kind, namespace, name);
        for _ in 0..RETRIES {
            let Some(old) = self.get(kind, namespace, name).await? else {
                return Err(StoreError::NotFound {
                    kind,
                    name: name.to_string(),
                });
            };
            let invalid = |error: ValidationError| StoreError::Invalid {
                kind,
                name: name.to_string(),
                error,
            };
            let mut new = change(&old).map_err(invalid)?;
            if new.kind() != kind || new.name() != name {
                return Err(invalid(ValidationError::single(
                    "metadata.name",
                    "kind and name cannot be changed",
                )));
            }
            new.check().map_err(invalid)?;
            new.check_update(&old).map_err(invalid)?;
            new.apply_defaults();
            let entry = ManifestEntry {
                doc: DocumentRef {
                    source: "patch".into(),
                    index: 1,
                    item: None,
                    line: 1,
                    kind: Some(kind.name().into()),
                    name: Some(name.into()),
                },
                resource: {
                    let mut r = new;
                    r.metadata_mut().resource_version = old.metadata().resource_version.clone();
                    r
                },
            };
            match self
                .try_write_batch(WriteMode::Replace, std::slice::from_ref(&entry))
                .await
            {
                Ok(mut w) => return Ok(w.remove(0).resource),
                Err(StoreError::Datastore(DatastoreError::Conflict { .. })) => continue,
                Err(StoreError::Documents(mut d)) => {
                    // A stale resourceVersion means someone wrote in between: retry.
                    let stale = d.iter().any(|e| match &e.problem {
                        DocumentProblem::Fields(f) => {
                            f.iter().any(|f| f.path == "metadata.resourceVersion")
                        }
                        _ => false,
                    });
                    if stale {
                        continue;
                    }
                    let errors = match d.remove(0).problem {
                        DocumentProblem::Fields(f) => f,
                        DocumentProblem::Syntax(m) => vec![FieldError::new("", m)],
                    };
                    return Err(invalid(ValidationError { errors }));
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contended { key })
    }

    /// Applies a JSON merge patch (RFC 7386) to a resource.
    pub async fn patch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<Resource, StoreError> {
        self.update_with(kind, namespace, name, |old| {
            let mut v = old.to_value();
            merge_patch(&mut v, patch);
            Resource::from_value(v).map_err(|e| ValidationError { errors: vec![e] })
        })
        .await
    }

    /// Nodes as selectors see them.
    pub async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        self.list_typed().await
    }
}

/// Warnings for selectors in `resources` that match no stored node (a typo
/// such as `rr-id` for `as-id` is valid but peers with nothing). Nothing is
/// reported when no nodes exist at all.
pub fn unmatched_selector_warnings(resources: &[Resource], nodes: &[Node]) -> Vec<String> {
    if nodes.is_empty() {
        return Vec::new();
    }
    let labels: Vec<BTreeMap<String, String>> = nodes.iter().map(Node::selector_labels).collect();
    let mut known_keys: Vec<&str> = labels
        .iter()
        .flat_map(|l| l.keys().map(String::as_str))
        .collect();
    known_keys.sort_unstable();
    known_keys.dedup();
    let mut out = Vec::new();
    let check = |what: &str, field: &str, sel: &crate::selector::Selector| -> Option<String> {
        if labels.iter().any(|l| sel.matches(l)) {
            return None;
        }
        let missing: Vec<&str> = sel
            .expr()
            .keys()
            .into_iter()
            .filter(|k| !known_keys.contains(k))
            .collect();
        let hint = if missing.is_empty() {
            String::new()
        } else {
            format!(
                "; no node has the label {} (node labels: {})",
                missing
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                known_keys.join(", ")
            )
        };
        Some(format!(
            "{what} {field} \"{}\" matches no node{hint}",
            sel.as_str()
        ))
    };
    for r in resources {
        match r {
            Resource::BgpPeer(p) => {
                let what = format!("BGPPeer \"{}\":", p.metadata.name);
                if let Some(s) = &p.spec.node_selector {
                    out.extend(check(&what, "nodeSelector", s));
                }
                if let Some(s) = &p.spec.peer_selector {
                    out.extend(check(&what, "peerSelector", s));
                }
                if let Some(n) = &p.spec.node {
                    if !nodes.iter().any(|x| &x.metadata.name == n) {
                        out.push(format!("{what} node \"{n}\" does not exist"));
                    }
                }
            }
            Resource::IpPool(p) => {
                if let Some(s) = &p.spec.node_selector {
                    check(
                        &format!("IPPool \"{}\":", p.metadata.name),
                        "nodeSelector",
                        s,
                    );
                }
            }
            _ => {}
        }
    }
    out
}
