//! The etcd v3 backend, over the `etcd-client` gRPC client.
//!
//! A [`crate::Txn`] maps one-to-one onto an etcd transaction: `Absent` is
//! `mod_revision == 0`, `Exists` is `mod_revision > 0`; the else branch reads
//! every compared key so a failed transaction can say which key moved.
//! Watches run in a task that re-creates the etcd watch from the last
//! revision delivered whenever the stream breaks (etcd restarted, network
//! gone), and relists (sending [`WatchEvent::Reset`]) if that revision has
//! been compacted meanwhile.

use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions, TxnOp,
    TxnOpResponse, WatchOptions,
};

use crate::{
    Condition, DatastoreError, KeyValue, Listing, Op, Result, Revision, Txn, Watch, WatchEvent,
};

/// How long one unary request may take before it counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per page of a listing.
const PAGE: i64 = 500;
/// Largest listing page accepted (500 IPAM blocks of a /20 are ~20 MB).
const MAX_PAGE_BYTES: usize = 64 << 20;
/// Backoff between attempts to re-establish a broken watch.
const WATCH_RETRY: Duration = Duration::from_millis(200);

/// A handle on an etcd cluster. Clones share the gRPC channel.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn err(e: etcd_client::Error) -> DatastoreError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => match status.code() {
            tonic_code::Unavailable
            | tonic_code::DeadlineExceeded
            | tonic_code::Cancelled
            | tonic_code::Unknown
            | tonic_code::ResourceExhausted
            | tonic_code::Aborted => DatastoreError::Unavailable {
                backend: "etcd",
                reason: status.message().to_owned(),
            },
            _ => DatastoreError::Backend {
                backend: "etcd",
                reason: format!("{:?}: {}", status.code(), status.message()),
            },
        },
        E::TransportError(t) => DatastoreError::Unavailable {
            backend: "etcd",
            reason: t.to_string(),
        },
        E::IoError(io) => DatastoreError::Unavailable {
            backend: "etcd",
            reason: io.to_string(),
        },
        other => DatastoreError::Backend {
            backend: "etcd",
            reason: other.to_string(),
        },
    }
}

use tonic::Code as tonic_code;

fn kv_from(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = std::str::from_utf8(kv.key()).map_err(|e| DatastoreError::Backend {
        backend: "etcd",
        reason: format!("stored key is not UTF-8: {e}"),
    })?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, etcd_client::ResponseHeader::revision)
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://host:port`).
    pub async fn connect(endpoints: Vec<String>) -> Result<EtcdStore> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(err)?;
        Ok(EtcdStore { client, endpoints })
    }

    /// The endpoints this store was connected with.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    async fn timed<T>(
        fut: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(r) => r.map_err(err),
            Err(_) => Err(DatastoreError::Unavailable {
                backend: "etcd",
                reason: format!("no answer within {REQUEST_TIMEOUT:?}"),
            }),
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut c = self.client.clone();
        let resp = Self::timed(c.get(key, None)).await?;
        resp.kvs().first().map(kv_from).transpose()
    }

    /// Lists in pages of [`PAGE`] keys, every page read at the revision of
    /// the first, so a large prefix (100,000 handles, thousands of blocks)
    /// stays under gRPC's message size limit and is still one consistent
    /// snapshot.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Listing> {
        let mut c = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_PAGE_BYTES);
        // An empty prefix means every key: from "\0" to the end ("\0").
        let end = crate::prefix_end(prefix).unwrap_or_else(|| vec![0]);
        let mut start: Vec<u8> = if prefix.is_empty() {
            vec![0]
        } else {
            prefix.as_bytes().to_vec()
        };
        let mut revision = 0;
        let mut items = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let resp = Self::timed(c.get(start.clone(), Some(options))).await?;
            if revision == 0 {
                revision = header_revision(resp.header());
            }
            for kv in resp.kvs() {
                items.push(kv_from(kv)?);
            }
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(Listing { items, revision })
    }

    pub(crate) async fn revision(&self) -> Result<Revision> {
        let mut c = self.client.clone();
        let resp = Self::timed(c.get("\0", Some(GetOptions::new().with_count_only()))).await?;
        Ok(header_revision(resp.header()))
    }

    pub(crate) async fn txn(&self, txn: Txn) -> Result<Revision> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| match c.condition {
                Condition::Absent => EtcdCompare::mod_revision(c.key.as_str(), CompareOp::Equal, 0),
                Condition::Exists => {
                    EtcdCompare::mod_revision(c.key.as_str(), CompareOp::Greater, 0)
                }
                Condition::ModRevision(r) => {
                    EtcdCompare::mod_revision(c.key.as_str(), CompareOp::Equal, r)
                }
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(key.as_str(), value.clone(), None),
                Op::Delete { key } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let else_ops: Vec<TxnOp> = txn
            .compares
            .iter()
            .map(|c| TxnOp::get(c.key.as_str(), None))
            .collect();
        let request = etcd_client::Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else(else_ops);
        let mut c = self.client.clone();
        let resp = Self::timed(c.txn(request)).await?;
        if resp.succeeded() {
            return Ok(header_revision(resp.header()));
        }
        // Find the first compare that fails against what the else branch read.
        for (cmp, op) in txn.compares.iter().zip(resp.op_responses()) {
            let TxnOpResponse::Get(get) = op else {
                continue;
            };
            let current = get.kvs().first().map(etcd_client::KeyValue::mod_revision);
            let holds = match (cmp.condition, current) {
                (Condition::Absent, None) => true,
                (Condition::Exists, Some(_)) => true,
                (Condition::ModRevision(want), Some(have)) => want == have,
                _ => false,
            };
            if !holds {
                return Err(DatastoreError::Conflict {
                    key: cmp.key.clone(),
                    current_revision: current,
                });
            }
        }
        Err(DatastoreError::Conflict {
            key: txn
                .compares
                .first()
                .map(|c| c.key.clone())
                .unwrap_or_default(),
            current_revision: None,
        })
    }

    pub(crate) async fn compact(&self, revision: Revision) -> Result<()> {
        let mut c = self.client.clone();
        match Self::timed(c.compact(revision, None)).await {
            Ok(_) => Ok(()),
            // Already compacted at or past this revision: nothing to do.
            Err(DatastoreError::Backend { reason, .. }) if reason.contains("compacted") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch> {
        let next = if from > 0 {
            from
        } else {
            self.revision().await? + 1
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let store = self.clone();
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            store.run_watch(prefix, next, tx).await;
        });
        Ok(Watch { rx, task })
    }

    /// The watch loop: (re)creates the etcd watch from `next` until the
    /// receiver goes away.
    async fn run_watch(
        &self,
        prefix: String,
        mut next: Revision,
        tx: tokio::sync::mpsc::Sender<Result<WatchEvent>>,
    ) {
        let mut reported_down = false;
        loop {
            if tx.is_closed() {
                return;
            }
            let mut c = self.client.clone();
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(next)
                .with_progress_notify();
            let mut stream = match c.watch(prefix.as_str(), Some(options)).await {
                Ok(s) => s,
                Err(e) => {
                    if !reported_down {
                        tracing::warn!(error = %e, "etcd watch on {prefix} down; retrying");
                        reported_down = true;
                    }
                    tokio::time::sleep(WATCH_RETRY).await;
                    continue;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        reported_down = false;
                        if resp.compact_revision() > 0
                            || (resp.canceled() && resp.compact_revision() > 0)
                        {
                            // History we need is gone: relist.
                            match self.list(&prefix).await {
                                Ok(listing) => {
                                    next = listing.revision + 1;
                                    if tx.send(Ok(WatchEvent::Reset(listing))).await.is_err() {
                                        return;
                                    }
                                }
                                Err(_) => tokio::time::sleep(WATCH_RETRY).await,
                            }
                            break;
                        }
                        if resp.canceled() {
                            tokio::time::sleep(WATCH_RETRY).await;
                            break;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let event = match ev.event_type() {
                                EventType::Put => kv_from(kv).map(WatchEvent::Put),
                                EventType::Delete => std::str::from_utf8(kv.key())
                                    .map(|k| WatchEvent::Delete {
                                        key: k.to_owned(),
                                        revision: kv.mod_revision(),
                                    })
                                    .map_err(|e| DatastoreError::Backend {
                                        backend: "etcd",
                                        reason: format!("key is not UTF-8: {e}"),
                                    }),
                            };
                            if let Ok(ev) = &event {
                                next = next.max(ev.revision() + 1);
                            }
                            if tx.send(event).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) | Err(_) => {
                        tokio::time::sleep(WATCH_RETRY).await;
                        break;
                    }
                }
            }
        }
    }
}
