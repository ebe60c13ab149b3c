//! Revisioned key-value store: the one storage interface every other tabby
//! crate uses, with two backends behind it.
//!
//! This crate owns keys, values, revisions, compare-and-swap, multi-key
//! transactions and watches. It knows nothing about what the values mean
//! (resources, IPAM blocks): that is `tabby-model` and `tabby-ipam`.
//!
//! The model is etcd v3's, which the SQLite backend reproduces:
//!
//! - every successful write bumps one store-wide **revision** counter; each
//!   key remembers the revision that created it (`create_revision`) and the
//!   one that last changed it (`mod_revision`);
//! - a [`Txn`] is a set of [`Compare`]s and a list of [`Op`]s applied all
//!   together (with one new revision) only if every compare holds; otherwise
//!   nothing changes and [`DatastoreError::Conflict`] names the first key whose
//!   compare failed and its current revision;
//! - a [`Watch`] streams [`WatchEvent`]s under a prefix from a given
//!   revision; when history has been compacted away (or a backend had to
//!   reconnect past compacted history) it sends [`WatchEvent::Reset`] with a
//!   full listing, after which events continue.
//!
//! Backends are chosen by URL ([`Datastore::connect`]):
//! `sqlite:///var/lib/tabby/tabby.db` (the default, [`DEFAULT_URL`]) or
//! `etcd://host:2379[,host2:2379]`.

mod etcd;
mod sqlite;

use std::fmt;
use std::time::Duration;

pub use etcd::EtcdStore;
pub use sqlite::SqliteStore;

/// The URL used when neither `--datastore` nor `TABBY_DATASTORE` is given.
pub const DEFAULT_URL: &str = "sqlite:///var/lib/tabby/tabby.db";

/// The environment variable that names the datastore URL.
pub const URL_ENV: &str = "TABBY_DATASTORE";

/// A store-wide revision number. Revisions start at 1 and only grow; `0`
/// means "no such key" in compares and "from now on" in watches.
pub type Revision = i64;

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key (an ASCII path such as `/tabby/ipam/v1/block/10.0.0.0-26`).
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The revision of the write that created this key.
    pub create_revision: Revision,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
}

/// The keys under a prefix, read at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    /// The keys in byte order.
    pub items: Vec<KeyValue>,
    /// The store revision the listing was read at; watch from
    /// `revision + 1` to follow it without a gap.
    pub revision: Revision,
}

/// What a [`Compare`] requires of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent,
    /// The key exists (any revision).
    Exists,
    /// The key exists and was last written at exactly this revision.
    ModRevision(Revision),
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key it looks at.
    pub key: String,
    /// What must hold.
    pub condition: Condition,
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite a key.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
    },
    /// Delete a key (no effect, and no error, if it does not exist).
    Delete {
        /// The key.
        key: String,
    },
}

/// An all-or-nothing multi-key change: every compare must hold, then every
/// op is applied at one new revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// The conditions.
    pub compares: Vec<Compare>,
    /// The writes, applied in order. A key may appear at most once.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a condition.
    pub fn when(mut self, key: impl Into<String>, condition: Condition) -> Txn {
        self.compares.push(Compare {
            key: key.into(),
            condition,
        });
        self
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Txn {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Adds a condition in place.
    pub fn push_compare(&mut self, key: impl Into<String>, condition: Condition) {
        self.compares.push(Compare {
            key: key.into(),
            condition,
        });
    }

    /// Adds a put in place.
    pub fn push_put(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
    }

    /// Adds a delete in place.
    pub fn push_delete(&mut self, key: impl Into<String>) {
        self.ops.push(Op::Delete { key: key.into() });
    }

    fn validate(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for op in &self.ops {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            };
            check_key(key)?;
            if !seen.insert(key.as_str()) {
                return Err(DatastoreError::InvalidKey {
                    key: key.clone(),
                    reason: "the key appears in more than one op of a transaction".into(),
                });
            }
        }
        for c in &self.compares {
            check_key(&c.key)?;
        }
        Ok(())
    }
}

/// A change seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or changed; `mod_revision` is the write's revision.
    Put(KeyValue),
    /// A key was deleted at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: Revision,
    },
    /// History between the last event delivered and now is gone (compacted);
    /// this is the complete current state of the prefix. Replace everything
    /// known under the prefix with it; events continue after its revision.
    Reset(Listing),
}

impl WatchEvent {
    /// The revision this event brings the watcher up to.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
            WatchEvent::Reset(l) => l.revision,
        }
    }
}

/// What went wrong in a datastore call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatastoreError {
    /// The key does not exist.
    #[error("{key}: not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A create found the key already there.
    #[error("{key}: already exists (revision {revision})")]
    AlreadyExists {
        /// The key.
        key: String,
        /// Its current `mod_revision`.
        revision: Revision,
    },
    /// A compare-and-swap lost: the key changed (or appeared, or vanished)
    /// since it was read. Re-read and retry.
    #[error("{key}: changed concurrently (now at {})", current_revision.map_or_else(|| "no revision: deleted".to_owned(), |r| format!("revision {r}")))]
    Conflict {
        /// The first key whose compare failed.
        key: String,
        /// Its current `mod_revision`, `None` if it does not exist.
        current_revision: Option<Revision>,
    },
    /// The backend cannot be reached or did not answer in time.
    #[error("datastore unavailable ({backend}): {reason}")]
    Unavailable {
        /// `sqlite` or `etcd`.
        backend: &'static str,
        /// What the backend said.
        reason: String,
    },
    /// The datastore URL is malformed or names an unknown backend.
    #[error("invalid datastore URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key is empty, not printable ASCII, or repeated in a transaction.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend failed in a way that retrying will not fix (corrupt
    /// database, unexpected response).
    #[error("datastore error ({backend}): {reason}")]
    Backend {
        /// `sqlite` or `etcd`.
        backend: &'static str,
        /// What the backend said.
        reason: String,
    },
    /// The watch's background task has stopped.
    #[error("watch closed")]
    WatchClosed,
}

impl DatastoreError {
    /// True for errors a caller should handle by re-reading and retrying
    /// (lost compare-and-swap races).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            DatastoreError::Conflict { .. } | DatastoreError::AlreadyExists { .. }
        )
    }
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, DatastoreError>;

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(DatastoreError::InvalidKey {
            key: key.to_owned(),
            reason: "empty".into(),
        });
    }
    if !key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(DatastoreError::InvalidKey {
            key: key.to_owned(),
            reason: "keys are printable ASCII without spaces".into(),
        });
    }
    Ok(())
}

/// The first key after every key that starts with `prefix` (etcd's
/// `range_end` for a prefix), `None` when the prefix is empty (all keys).
fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A parsed datastore URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreUrl {
    /// `sqlite:///path/to/file.db`
    Sqlite(std::path::PathBuf),
    /// `etcd://host:port[,host:port...]`, as `http://` endpoints.
    Etcd(Vec<String>),
}

impl DatastoreUrl {
    /// Parses `sqlite:///path` or `etcd://host:port[,host:port]`.
    pub fn parse(url: &str) -> Result<DatastoreUrl> {
        let bad = |reason: &str| DatastoreError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "the path must be absolute: sqlite:///var/lib/tabby/tabby.db",
                ));
            }
            if path.len() < 2 || path.ends_with('/') {
                return Err(bad("the path must name a file"));
            }
            return Ok(DatastoreUrl::Sqlite(path.into()));
        }
        if let Some(hosts) = url.strip_prefix("etcd://") {
            let hosts = hosts.trim_end_matches('/');
            let mut endpoints = Vec::new();
            for host in hosts.split(',') {
                let host = host.trim();
                let Some((name, port)) = host.rsplit_once(':') else {
                    return Err(bad(&format!("endpoint {host:?} has no :port")));
                };
                if name.is_empty() {
                    return Err(bad(&format!("endpoint {host:?} has no host")));
                }
                if port.parse::<u16>().is_err() {
                    return Err(bad(&format!("endpoint {host:?}: bad port {port:?}")));
                }
                endpoints.push(format!("http://{host}"));
            }
            return Ok(DatastoreUrl::Etcd(endpoints));
        }
        Err(bad(
            "unknown scheme: use sqlite:///path or etcd://host:2379[,host2:2379]",
        ))
    }
}

/// A connected datastore: one of the backends, chosen at run time.
///
/// Cheap to clone (clones share the connection).
#[derive(Debug, Clone)]
pub enum Datastore {
    /// The embedded SQLite backend.
    Sqlite(SqliteStore),
    /// The etcd v3 backend.
    Etcd(Box<EtcdStore>),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Datastore::Sqlite($s) => $e,
            Datastore::Etcd($s) => $e,
        }
    };
}

impl Datastore {
    /// Connects to the datastore a URL names (see [`DatastoreUrl`]).
    pub async fn connect(url: &str) -> Result<Datastore> {
        match DatastoreUrl::parse(url)? {
            DatastoreUrl::Sqlite(path) => Ok(Datastore::Sqlite(SqliteStore::open(&path).await?)),
            DatastoreUrl::Etcd(endpoints) => Ok(Datastore::Etcd(Box::new(
                EtcdStore::connect(endpoints).await?,
            ))),
        }
    }

    /// Connects like [`Datastore::connect`]; a SQLite store then runs its
    /// queries on the calling thread (see [`SqliteStore::open_inline`]), for
    /// one-shot processes such as the CNI plugin. etcd is unaffected.
    pub async fn connect_inline(url: &str) -> Result<Datastore> {
        match DatastoreUrl::parse(url)? {
            DatastoreUrl::Sqlite(path) => Ok(Datastore::Sqlite(SqliteStore::open_inline(&path)?)),
            DatastoreUrl::Etcd(_) => Datastore::connect(url).await,
        }
    }

    /// SQLite: moves WAL checkpoints off the commit path, onto a thread
    /// of their own (see [`SqliteStore::checkpoint_in_background`]); etcd:
    /// nothing to do.
    pub fn checkpoint_in_background(&self, every: std::time::Duration) -> Result<()> {
        match self {
            Datastore::Sqlite(s) => s.checkpoint_in_background(every),
            Datastore::Etcd(_) => Ok(()),
        }
    }

    /// `sqlite` or `etcd`.
    pub fn backend(&self) -> &'static str {
        match self {
            Datastore::Sqlite(_) => "sqlite",
            Datastore::Etcd(_) => "etcd",
        }
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        check_key(key)?;
        dispatch!(self, s => s.get(key).await)
    }

    /// Reads every key that starts with `prefix`, in byte order, at one
    /// revision.
    pub async fn list(&self, prefix: &str) -> Result<Listing> {
        dispatch!(self, s => s.list(prefix).await)
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<Revision> {
        dispatch!(self, s => s.revision().await)
    }

    /// Applies a transaction; returns the new revision (or the current one
    /// if the ops changed nothing). [`DatastoreError::Conflict`] when a
    /// compare fails, and then nothing was written.
    pub async fn txn(&self, txn: Txn) -> Result<Revision> {
        txn.validate()?;
        dispatch!(self, s => s.txn(txn).await)
    }

    /// Creates a key; [`DatastoreError::AlreadyExists`] if it exists.
    pub async fn create(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<Revision> {
        let txn = Txn::new().when(key, Condition::Absent).put(key, value);
        match self.txn(txn).await {
            Err(DatastoreError::Conflict {
                key,
                current_revision: Some(revision),
            }) => Err(DatastoreError::AlreadyExists { key, revision }),
            other => other,
        }
    }

    /// Replaces a key's value if it is still at `revision` (compare-and-swap).
    /// [`DatastoreError::NotFound`] if it is gone,
    /// [`DatastoreError::Conflict`] if it changed.
    pub async fn update(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        revision: Revision,
    ) -> Result<Revision> {
        let txn = Txn::new()
            .when(key, Condition::ModRevision(revision))
            .put(key, value);
        not_found_if_absent(self.txn(txn).await)
    }

    /// Writes a key whatever its state.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<Revision> {
        self.txn(Txn::new().put(key, value)).await
    }

    /// Deletes a key, only if it is still at `revision` when one is given.
    /// [`DatastoreError::NotFound`] if it does not exist.
    pub async fn delete(&self, key: &str, revision: Option<Revision>) -> Result<Revision> {
        let condition = revision.map_or(Condition::Exists, Condition::ModRevision);
        let txn = Txn::new().when(key, condition).delete(key);
        not_found_if_absent(self.txn(txn).await)
    }

    /// Discards change history before `revision`: watches from an older
    /// revision get a [`WatchEvent::Reset`] instead of the lost events.
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        dispatch!(self, s => s.compact(revision).await)
    }

    /// Streams changes under `prefix` from revision `from` (inclusive;
    /// `0` means changes after now). See [`WatchEvent`].
    pub async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch> {
        dispatch!(self, s => s.watch(prefix, from).await)
    }
}

fn not_found_if_absent(r: Result<Revision>) -> Result<Revision> {
    match r {
        Err(DatastoreError::Conflict {
            key,
            current_revision: None,
        }) => Err(DatastoreError::NotFound { key }),
        other => other,
    }
}

/// A stream of changes under a prefix; stops its background task on drop.
pub struct Watch {
    rx: tokio::sync::mpsc::Receiver<Result<WatchEvent>>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Watch {
    /// The next event; `None` once the watch has stopped for good.
    pub async fn next(&mut self) -> Option<Result<WatchEvent>> {
        self.rx.recv().await
    }

    /// The next event if one has arrived already: `Ok(None)` when none is
    /// waiting, `Err(())` once the watch has stopped for good.
    #[allow(clippy::result_unit_err)]
    pub fn try_next(&mut self) -> std::result::Result<Option<Result<WatchEvent>>, ()> {
        match self.rx.try_recv() {
            Ok(ev) => Ok(Some(ev)),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => Err(()),
        }
    }

    /// The next event, or `None` if none arrives within `timeout`.
    pub async fn next_timeout(&mut self, timeout: Duration) -> Option<Result<WatchEvent>> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            DatastoreUrl::parse("sqlite:///var/lib/tabby/tabby.db").expect("sqlite"),
            DatastoreUrl::Sqlite("/var/lib/tabby/tabby.db".into())
        );
        assert_eq!(
            DatastoreUrl::parse("etcd://10.0.0.1:2379,etcd2:2380").expect("etcd"),
            DatastoreUrl::Etcd(vec![
                "http://10.0.0.1:2379".into(),
                "http://etcd2:2380".into()
            ])
        );
        for bad in [
            "sqlite://relative.db",
            "etcd://host",
            "etcd://:2379",
            "etcd://h:99999",
            "mysql://x",
            "sqlite:///",
        ] {
            assert!(
                matches!(
                    DatastoreUrl::parse(bad),
                    Err(DatastoreError::InvalidUrl { .. })
                ),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/a/").as_deref(), Some(&b"/a0"[..]));
        assert_eq!(prefix_end(""), None);
    }

    #[test]
    fn txn_rejects_a_key_twice_and_bad_keys() {
        let t = Txn::new().put("/a", "1").delete("/a");
        assert!(matches!(
            t.validate(),
            Err(DatastoreError::InvalidKey { .. })
        ));
        let t = Txn::new().put("/a b", "1");
        assert!(matches!(
            t.validate(),
            Err(DatastoreError::InvalidKey { .. })
        ));
    }
}
