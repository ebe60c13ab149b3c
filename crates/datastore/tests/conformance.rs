//! The datastore conformance suite: every check runs against the SQLite
//! backend (a temporary file) and against a real etcd started for the test
//! on free loopback ports.

use std::time::Duration;

use tabby_datastore::{Condition, Datastore, DatastoreError, Txn, WatchEvent};
use tabby_testbed::EtcdServer;

/// A backend under test plus whatever keeps it alive.
struct Backend {
    ds: Datastore,
    _dir: Option<tempfile::TempDir>,
    etcd: Option<EtcdServer>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let ds = Datastore::connect(&url).await.expect("open sqlite");
    Backend {
        ds,
        _dir: Some(dir),
        etcd: None,
    }
}

async fn etcd() -> Backend {
    let server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("join")
        .expect("start etcd");
    let ds = Datastore::connect(&server.url())
        .await
        .expect("connect etcd");
    Backend {
        ds,
        _dir: None,
        etcd: Some(server),
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::sqlite().await;
                    super::$name(&b).await;
                }
            )*
        }
        mod on_etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::etcd().await;
                    super::$name(&b).await;
                }
            )*
        }
    };
}

conformance!(
    create_get_update_delete,
    list_by_prefix,
    txn_is_all_or_nothing,
    watch_from_a_revision,
    watch_after_compaction_resets,
    concurrent_compare_and_swap_loses_no_update,
    list_of_many_keys_is_complete,
    list_of_large_values_is_complete,
);

async fn create_get_update_delete(b: &Backend) {
    let ds = &b.ds;
    assert_eq!(ds.get("/t/a").await.expect("get"), None);
    let r1 = ds.create("/t/a", "one").await.expect("create");
    assert!(r1 > 0);
    match ds.create("/t/a", "again").await {
        Err(DatastoreError::AlreadyExists { key, revision }) => {
            assert_eq!(key, "/t/a");
            assert_eq!(revision, r1);
        }
        other => panic!("second create: {other:?}"),
    }
    let kv = ds.get("/t/a").await.expect("get").expect("present");
    assert_eq!(kv.value, b"one");
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.mod_revision, r1);

    match ds.update("/t/a", "stale", r1 - 1).await {
        Err(DatastoreError::Conflict {
            current_revision, ..
        }) => assert_eq!(current_revision, Some(r1)),
        other => panic!("stale update: {other:?}"),
    }
    let r2 = ds.update("/t/a", "two", r1).await.expect("update");
    assert!(r2 > r1);
    let kv = ds.get("/t/a").await.expect("get").expect("present");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"two"[..], r1, r2)
    );
    assert_eq!(ds.revision().await.expect("revision"), r2);

    assert!(matches!(
        ds.delete("/t/a", Some(r1)).await,
        Err(DatastoreError::Conflict { .. })
    ));
    ds.delete("/t/a", Some(r2)).await.expect("delete");
    assert_eq!(ds.get("/t/a").await.expect("get"), None);
    assert!(matches!(
        ds.delete("/t/a", None).await,
        Err(DatastoreError::NotFound { .. })
    ));
    assert!(matches!(
        ds.update("/t/a", "x", r2).await,
        Err(DatastoreError::NotFound { .. })
    ));
    assert!(matches!(
        ds.get("has space").await,
        Err(DatastoreError::InvalidKey { .. })
    ));
}

async fn list_by_prefix(b: &Backend) {
    let ds = &b.ds;
    for k in ["/p/b", "/p/a", "/p/c/d", "/pq", "/o"] {
        ds.put(k, k.as_bytes()).await.expect("put");
    }
    let l = ds.list("/p/").await.expect("list");
    let keys: Vec<&str> = l.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/p/a", "/p/b", "/p/c/d"]);
    assert_eq!(l.revision, ds.revision().await.expect("revision"));
    assert_eq!(l.items[0].value, b"/p/a");
    assert!(ds.list("/zz/").await.expect("list").items.is_empty());
    assert_eq!(ds.list("").await.expect("list all").items.len(), 5);
}

async fn list_of_many_keys_is_complete(b: &Backend) {
    // More keys than four etcd pages (500), written 100 per transaction.
    let ds = &b.ds;
    for batch in 0..21 {
        let mut txn = Txn::new();
        for i in 0..100 {
            txn.push_put(format!("/many/{:05}", batch * 100 + i), vec![b'x'; 600]);
        }
        ds.txn(txn).await.expect("txn");
    }
    ds.put("/many0", "outside").await.expect("put");
    let l = ds.list("/many/").await.expect("list");
    assert_eq!(l.items.len(), 2100);
    assert!(l.items.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(l.items[2099].key, "/many/02099");
    assert_eq!(ds.list("").await.expect("all").items.len(), 2101);
}

async fn list_of_large_values_is_complete(b: &Backend) {
    // 8 MB in one listing: more than gRPC's default 4 MB message.
    let ds = &b.ds;
    for i in 0..40 {
        ds.put(&format!("/big/{i:02}"), vec![b'v'; 200_000])
            .await
            .expect("put");
    }
    let l = ds.list("/big/").await.expect("list");
    assert_eq!(l.items.len(), 40);
    assert!(l.items.iter().all(|kv| kv.value.len() == 200_000));
}

async fn txn_is_all_or_nothing(b: &Backend) {
    let ds = &b.ds;
    let ra = ds.create("/x/a", "a").await.expect("create a");
    ds.create("/x/gone", "g").await.expect("create gone");

    // One compare fails: nothing is written, and the error names that key.
    let bad = Txn::new()
        .when("/x/a", Condition::ModRevision(ra))
        .when("/x/b", Condition::Exists)
        .put("/x/a", "a2")
        .put("/x/c", "c")
        .delete("/x/gone");
    match ds.txn(bad).await {
        Err(DatastoreError::Conflict {
            key,
            current_revision,
        }) => {
            assert_eq!(key, "/x/b");
            assert_eq!(current_revision, None);
        }
        other => panic!("failing txn: {other:?}"),
    }
    assert_eq!(
        ds.get("/x/a").await.expect("get").expect("a").value,
        b"a".to_vec()
    );
    assert!(ds.get("/x/c").await.expect("get").is_none());
    assert!(ds.get("/x/gone").await.expect("get").is_some());

    // All compares hold: every op lands at one revision.
    let good = Txn::new()
        .when("/x/a", Condition::ModRevision(ra))
        .when("/x/b", Condition::Absent)
        .put("/x/a", "a2")
        .put("/x/c", "c")
        .delete("/x/gone");
    let r = ds.txn(good).await.expect("txn");
    let a = ds.get("/x/a").await.expect("get").expect("a");
    let c = ds.get("/x/c").await.expect("get").expect("c");
    assert_eq!((a.value.as_slice(), a.mod_revision), (&b"a2"[..], r));
    assert_eq!(c.mod_revision, r);
    assert!(ds.get("/x/gone").await.expect("get").is_none());
    // Replaying it fails on the first compare now.
    let again = Txn::new()
        .when("/x/a", Condition::ModRevision(ra))
        .put("/x/a", "a3");
    assert!(matches!(
        ds.txn(again).await,
        Err(DatastoreError::Conflict { current_revision: Some(cr), .. }) if cr == r
    ));
}

async fn watch_from_a_revision(b: &Backend) {
    let ds = &b.ds;
    let r1 = ds.put("/w/a", "1").await.expect("put");
    ds.put("/other", "x").await.expect("put");
    let r2 = ds.put("/w/b", "2").await.expect("put");
    let mut w = ds.watch("/w/", r1).await.expect("watch");
    let e1 = next(&mut w).await;
    assert!(matches!(&e1, WatchEvent::Put(kv) if kv.key == "/w/a" && kv.mod_revision == r1));
    let e2 = next(&mut w).await;
    assert!(matches!(&e2, WatchEvent::Put(kv) if kv.key == "/w/b" && kv.mod_revision == r2));
    let r3 = ds.delete("/w/a", None).await.expect("delete");
    let e3 = next(&mut w).await;
    assert_eq!(
        e3,
        WatchEvent::Delete {
            key: "/w/a".into(),
            revision: r3
        }
    );
    // A watch from "now" sees only later writes.
    let mut now = ds.watch("/w/", 0).await.expect("watch now");
    let r4 = ds.put("/w/c", "3").await.expect("put");
    let e4 = next(&mut now).await;
    assert!(matches!(&e4, WatchEvent::Put(kv) if kv.key == "/w/c" && kv.mod_revision == r4));
}

async fn watch_after_compaction_resets(b: &Backend) {
    let ds = &b.ds;
    let r1 = ds.put("/c/a", "1").await.expect("put");
    ds.put("/c/b", "2").await.expect("put");
    let r3 = ds.put("/c/a", "3").await.expect("put");
    ds.compact(r3).await.expect("compact");
    let mut w = ds.watch("/c/", r1).await.expect("watch");
    match next(&mut w).await {
        WatchEvent::Reset(listing) => {
            assert_eq!(listing.items.len(), 2);
            assert_eq!(listing.items[0].value, b"3");
            assert!(listing.revision >= r3);
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    let r4 = ds.put("/c/b", "4").await.expect("put");
    let e = next(&mut w).await;
    assert!(matches!(&e, WatchEvent::Put(kv) if kv.mod_revision == r4));
}

async fn concurrent_compare_and_swap_loses_no_update(b: &Backend) {
    let ds = &b.ds;
    ds.create("/n", "0").await.expect("create");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let ds = ds.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                loop {
                    let kv = ds.get("/n").await.expect("get").expect("present");
                    let n: u64 = std::str::from_utf8(&kv.value)
                        .expect("utf8")
                        .parse()
                        .expect("number");
                    match ds.update("/n", (n + 1).to_string(), kv.mod_revision).await {
                        Ok(_) => break,
                        Err(DatastoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("update: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let kv = ds.get("/n").await.expect("get").expect("present");
    assert_eq!(kv.value, b"100");
}

async fn next(w: &mut tabby_datastore::Watch) -> WatchEvent {
    w.next_timeout(Duration::from_secs(30))
        .await
        .expect("a watch event within 30 s")
        .expect("watch event")
}

/// A watch keeps delivering across an etcd restart, resuming from the
/// last revision it delivered (nothing lost, nothing repeated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_survives_restart() {
    let mut b = etcd().await;
    let ds = b.ds.clone();
    let mut w = ds.watch("/r/", 0).await.expect("watch");
    let r1 = ds.put("/r/a", "1").await.expect("put");
    assert_eq!(next(&mut w).await.revision(), r1);

    let mut server = b.etcd.take().expect("server");
    tokio::task::spawn_blocking(move || {
        server.stop();
        server.start_again().expect("restart etcd");
        server
    })
    .await
    .map(|s| b.etcd = Some(s))
    .expect("join");

    // The client reconnects by itself; retry writes until etcd is back.
    let mut r2 = None;
    for _ in 0..100 {
        match ds.put("/r/b", "2").await {
            Ok(r) => {
                r2 = Some(r);
                break;
            }
            Err(DatastoreError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("put after restart: {e}"),
        }
    }
    let r2 = r2.expect("etcd back within 10 s");
    let e = next(&mut w).await;
    assert!(
        matches!(&e, WatchEvent::Put(kv) if kv.key == "/r/b" && kv.mod_revision == r2),
        "{e:?}"
    );
}

/// Two independent handles on one SQLite file (as two processes would
/// have) see each other's writes and conflict correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_handles_share_one_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("sub/dir/t.db").display());
    let a = Datastore::connect(&url).await.expect("a");
    let b = Datastore::connect(&url).await.expect("b");
    let r = a.create("/k", "1").await.expect("create");
    assert!(matches!(
        b.create("/k", "2").await,
        Err(DatastoreError::AlreadyExists { .. })
    ));
    b.update("/k", "2", r).await.expect("update via b");
    assert_eq!(a.get("/k").await.expect("get").expect("k").value, b"2");
    let mut w = a.watch("/", r).await.expect("watch");
    assert_eq!(next(&mut w).await.revision(), r);
}

/// `checkpoint_in_background`: commits no longer copy the WAL into the
/// database file (it does not grow while the writes run, although they are
/// far past the 128-page autocheckpoint), and the checkpoint thread does
/// it a moment later (the file grows to hold the data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.db");
    let ds = Datastore::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("open");
    ds.checkpoint_in_background(Duration::from_secs(4))
        .expect("checkpoint thread");
    let size = || std::fs::metadata(&file).expect("db file").len();
    let before = size();
    let value = "x".repeat(2000);
    for i in 0..400 {
        ds.put(&format!("/ckpt/{i:04}"), value.clone())
            .await
            .expect("put");
    }
    let wal = std::fs::metadata(dir.path().join("c.db-wal"))
        .expect("wal")
        .len();
    assert!(wal > 128 * 4096, "only {wal} bytes of WAL written");
    assert_eq!(
        size(),
        before,
        "a commit checkpointed the WAL into the database file"
    );
    let mut grown = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if size() > before + 400 * 2000 {
            grown = true;
            break;
        }
    }
    assert!(grown, "no background checkpoint: {} bytes", size());
    assert_eq!(
        ds.list("/ckpt/").await.expect("list").items.len(),
        400,
        "data lost"
    );
}
