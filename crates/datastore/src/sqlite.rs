//! The embedded SQLite backend: one database file, safe for many processes
//! on one machine.
//!
//! Tables: `kv` (key, value, create/mod revision), `events` (the change
//! history watches read), `meta` (the store-wide `revision` and the
//! `compacted` revision below which history is gone). Every write runs in a
//! `BEGIN IMMEDIATE` transaction, so writers from all processes are
//! serialised by SQLite's write lock (WAL mode, a busy timeout so waiters
//! block instead of failing) and compares are checked under that lock.
//! Watches poll `meta.revision` and read new rows of `events`. History older
//! than [`HISTORY`] revisions is pruned.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{
    Condition, DatastoreError, KeyValue, Listing, Op, Result, Revision, Txn, Watch, WatchEvent,
    prefix_end,
};

/// How many revisions of change history are kept for watches.
const HISTORY: i64 = 10_000;
/// How often a watch polls for new revisions.
const POLL: Duration = Duration::from_millis(50);
/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    revision INTEGER NOT NULL,
    key BLOB NOT NULL,
    value BLOB,
    create_revision INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_revision ON events(revision);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(name, value) VALUES ('revision', 0), ('compacted', 0);
";

/// A handle on a SQLite datastore file. Clones share one connection.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// Queries run on the calling thread instead of tokio's blocking pool
    /// (see [`SqliteStore::open_inline`]).
    inline: bool,
}

fn err(e: rusqlite::Error) -> DatastoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen) => {
            DatastoreError::Unavailable {
                backend: "sqlite",
                reason: e.to_string(),
            }
        }
        _ => DatastoreError::Backend {
            backend: "sqlite",
            reason: e.to_string(),
        },
    }
}

fn key_string(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| DatastoreError::Backend {
        backend: "sqlite",
        reason: format!("stored key is not UTF-8: {e}"),
    })
}

impl SqliteStore {
    /// Opens (creating if needed, with its parent directory) the database
    /// file at `path`.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let path = path.to_path_buf();
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || open_connection(&p))
            .await
            .map_err(join_err)??;
        Ok(SqliteStore {
            path,
            conn: Arc::new(Mutex::new(conn)),
            inline: false,
        })
    }

    /// Opens the database like [`SqliteStore::open`], but every query then
    /// runs on the calling thread, blocking it, instead of being handed to
    /// tokio's blocking pool. For short-lived processes that do one thing at
    /// a time on a current-thread runtime (the CNI plugin): it saves two
    /// thread hand-offs per query, which on a loaded machine are most of a
    /// query's latency. Watches still poll from a task.
    pub fn open_inline(path: &Path) -> Result<SqliteStore> {
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(open_connection(path)?)),
            inline: true,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For a long-running process that commits on a latency-critical path
    /// (the CNI service): this connection stops checkpointing the WAL as it
    /// commits, and a thread of its own checkpoints it every `every`
    /// (`PASSIVE`: never blocking a reader or a writer) through a second
    /// connection, so the checkpoint's copy and `fsync` (about a
    /// millisecond, every few commits) leave the commit path. The thread
    /// ends once every clone of this store is dropped.
    pub fn checkpoint_in_background(&self, every: Duration) -> Result<()> {
        let checkpointer = open_connection(&self.path)?;
        {
            let conn = self.conn.lock().map_err(|_| DatastoreError::Backend {
                backend: "sqlite",
                reason: "connection mutex poisoned".into(),
            })?;
            conn.execute_batch("PRAGMA wal_autocheckpoint=0;")
                .map_err(err)?;
        }
        let owner = Arc::downgrade(&self.conn);
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("tabby-sqlite-checkpoint".into())
            .spawn(move || {
                while owner.strong_count() > 0 {
                    std::thread::sleep(every);
                    let done: rusqlite::Result<(i64, i64, i64)> =
                        checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        });
                    if let Err(e) = done {
                        tracing::warn!("sqlite {}: background checkpoint: {e}", path.display());
                    }
                }
            })
            .map_err(|e| DatastoreError::Backend {
                backend: "sqlite",
                reason: format!("cannot start the checkpoint thread: {e}"),
            })?;
        Ok(())
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        if self.inline {
            let mut guard = conn.lock().map_err(|_| DatastoreError::Backend {
                backend: "sqlite",
                reason: "connection mutex poisoned".into(),
            })?;
            return f(&mut guard);
        }
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| DatastoreError::Backend {
                backend: "sqlite",
                reason: "connection mutex poisoned".into(),
            })?;
            f(&mut guard)
        })
        .await
        .map_err(join_err)?
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.with_conn(move |c| get_one(c, &key)).await
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Listing> {
        let prefix = prefix.to_owned();
        self.with_conn(move |c| {
            let tx = c.transaction().map_err(err)?;
            let listing = list_in(&tx, &prefix)?;
            tx.commit().map_err(err)?;
            Ok(listing)
        })
        .await
    }

    pub(crate) async fn revision(&self) -> Result<Revision> {
        self.with_conn(|c| meta(c, "revision")).await
    }

    pub(crate) async fn txn(&self, txn: Txn) -> Result<Revision> {
        self.with_conn(move |c| apply(c, &txn)).await
    }

    pub(crate) async fn compact(&self, revision: Revision) -> Result<()> {
        self.with_conn(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(err)?;
            let current = meta(&tx, "revision")?;
            let upto = revision.min(current);
            tx.execute("DELETE FROM events WHERE revision < ?1", [upto])
                .map_err(err)?;
            tx.execute(
                "UPDATE meta SET value = max(value, ?1) WHERE name = 'compacted'",
                [upto - 1],
            )
            .map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }

    pub(crate) async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch> {
        let start = if from > 0 {
            from - 1
        } else {
            self.revision().await?
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let store = self.clone();
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let mut seen = start;
            loop {
                let p = prefix.clone();
                let batch = store.with_conn(move |c| poll_events(c, &p, seen)).await;
                match batch {
                    Ok((events, revision)) => {
                        for ev in events {
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                        seen = revision;
                    }
                    Err(e) => {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Ok(Watch { rx, task })
    }
}

fn join_err(e: tokio::task::JoinError) -> DatastoreError {
    DatastoreError::Backend {
        backend: "sqlite",
        reason: format!("worker task failed: {e}"),
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DatastoreError::Unavailable {
            backend: "sqlite",
            reason: format!("cannot create {}: {e}", dir.display()),
        })?;
    }
    let conn = Connection::open(path).map_err(|e| DatastoreError::Unavailable {
        backend: "sqlite",
        reason: format!("{}: {e}", path.display()),
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    // WAL: readers never block the writer; switching needs the write lock
    // once, which the busy timeout waits for.
    let _mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(err)?;
    conn.execute_batch("PRAGMA synchronous=NORMAL;")
        .map_err(err)?;
    // Short-lived processes (`tabby ipam`, the CNI plugin) must not pay a
    // WAL checkpoint each time they exit; writers checkpoint as they go.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(err)?;
    // Without the checkpoint on close, the next process to open the file
    // rebuilds the WAL index by reading the whole WAL: keep it short (128
    // pages, 512 KiB) so that costs well under a millisecond.
    conn.execute_batch("PRAGMA wal_autocheckpoint=128;")
        .map_err(err)?;
    // Create the schema only when it is missing (a write lock otherwise).
    let ready: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    if ready == 0 {
        let tx = rusqlite::Transaction::new_unchecked(&conn, TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch(SCHEMA).map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(conn)
}

fn meta(c: &Connection, name: &str) -> Result<i64> {
    c.prepare_cached("SELECT value FROM meta WHERE name = ?1")
        .and_then(|mut st| st.query_row([name], |r| r.get(0)))
        .map_err(err)
}

fn get_one(c: &Connection, key: &str) -> Result<Option<KeyValue>> {
    c.prepare_cached("SELECT value, create_revision, mod_revision FROM kv WHERE key = ?1")
        .and_then(|mut st| {
            st.query_row([key.as_bytes()], |r| {
                Ok(KeyValue {
                    key: key.to_owned(),
                    value: r.get(0)?,
                    create_revision: r.get(1)?,
                    mod_revision: r.get(2)?,
                })
            })
            .optional()
        })
        .map_err(err)
}

fn list_in(c: &Connection, prefix: &str) -> Result<Listing> {
    let revision = meta(c, "revision")?;
    let rows: Vec<(Vec<u8>, Vec<u8>, i64, i64)> = match prefix_end(prefix) {
        Some(end) => {
            let mut st = c
                .prepare_cached(
                    "SELECT key, value, create_revision, mod_revision FROM kv \
                     WHERE key >= ?1 AND key < ?2 ORDER BY key",
                )
                .map_err(err)?;
            st.query_map(params![prefix.as_bytes(), end], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(err)?
        }
        None => {
            let mut st = c
                .prepare_cached(
                    "SELECT key, value, create_revision, mod_revision FROM kv ORDER BY key",
                )
                .map_err(err)?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(err)?
        }
    };
    let mut items = Vec::with_capacity(rows.len());
    for (k, value, create_revision, mod_revision) in rows {
        items.push(KeyValue {
            key: key_string(k)?,
            value,
            create_revision,
            mod_revision,
        });
    }
    Ok(Listing { items, revision })
}

fn current_mod_revision(c: &Connection, key: &str) -> Result<Option<Revision>> {
    c.prepare_cached("SELECT mod_revision FROM kv WHERE key = ?1")
        .and_then(|mut st| st.query_row([key.as_bytes()], |r| r.get(0)).optional())
        .map_err(err)
}

fn apply(c: &mut Connection, txn: &Txn) -> Result<Revision> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    for cmp in &txn.compares {
        let current = current_mod_revision(&tx, &cmp.key)?;
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
    let current = meta(&tx, "revision")?;
    let revision = current + 1;
    let mut changed = false;
    for op in &txn.ops {
        match op {
            Op::Put { key, value } => {
                let create_revision: i64 = tx
                    .prepare_cached(
                        "INSERT INTO kv(key, value, create_revision, mod_revision) \
                         VALUES (?1, ?2, ?3, ?3) \
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value, \
                         mod_revision = excluded.mod_revision \
                         RETURNING create_revision",
                    )
                    .and_then(|mut st| {
                        st.query_row(params![key.as_bytes(), value, revision], |r| r.get(0))
                    })
                    .map_err(err)?;
                tx.prepare_cached(
                    "INSERT INTO events(revision, key, value, create_revision) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut st| {
                    st.execute(params![revision, key.as_bytes(), value, create_revision])
                })
                .map_err(err)?;
                changed = true;
            }
            Op::Delete { key } => {
                let n = tx
                    .prepare_cached("DELETE FROM kv WHERE key = ?1")
                    .and_then(|mut st| st.execute([key.as_bytes()]))
                    .map_err(err)?;
                if n > 0 {
                    tx.prepare_cached(
                        "INSERT INTO events(revision, key, value, create_revision) \
                         VALUES (?1, ?2, NULL, 0)",
                    )
                    .and_then(|mut st| st.execute(params![revision, key.as_bytes()]))
                    .map_err(err)?;
                    changed = true;
                }
            }
        }
    }
    if !changed {
        // Nothing written: no new revision (as etcd).
        tx.commit().map_err(err)?;
        return Ok(current);
    }
    tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")
        .and_then(|mut st| st.execute([revision]))
        .map_err(err)?;
    if revision % 1000 == 0 && revision > HISTORY {
        let keep_from = revision - HISTORY;
        tx.execute("DELETE FROM events WHERE revision < ?1", [keep_from])
            .map_err(err)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
            [keep_from - 1],
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)?;
    Ok(revision)
}

/// One row of `events`: revision, key, value (`None`: a delete), create revision.
type EventRow = (i64, Vec<u8>, Option<Vec<u8>>, i64);

/// Events under `prefix` after revision `seen`, and the revision they bring
/// the watcher to. A [`WatchEvent::Reset`] replaces them when history after
/// `seen` has been pruned.
fn poll_events(c: &mut Connection, prefix: &str, seen: Revision) -> Result<(Vec<WatchEvent>, i64)> {
    let tx = c.transaction().map_err(err)?;
    let revision = meta(&tx, "revision")?;
    if revision <= seen {
        return Ok((Vec::new(), seen));
    }
    let compacted = meta(&tx, "compacted")?;
    if seen < compacted {
        let listing = list_in(&tx, prefix)?;
        let revision = listing.revision;
        return Ok((vec![WatchEvent::Reset(listing)], revision));
    }
    let end = prefix_end(prefix).unwrap_or_else(|| vec![0xff; 1]);
    let mut st = tx
        .prepare_cached(
            "SELECT revision, key, value, create_revision FROM events \
             WHERE revision > ?1 AND revision <= ?2 AND key >= ?3 AND key < ?4 ORDER BY id",
        )
        .map_err(err)?;
    let rows: Vec<EventRow> = st
        .query_map(params![seen, revision, prefix.as_bytes(), end], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(err)?;
    drop(st);
    let mut events = Vec::with_capacity(rows.len());
    for (rev, key, value, create_revision) in rows {
        let key = key_string(key)?;
        events.push(match value {
            Some(value) => WatchEvent::Put(KeyValue {
                key,
                value,
                create_revision,
                mod_revision: rev,
            }),
            None => WatchEvent::Delete { key, revision: rev },
        });
    }
    Ok((events, revision))
}
