//! Typed storage against a real SQLite datastore in a temporary directory:
//! every seed manifest applies unchanged, a file with one bad document
//! writes nothing, create/replace/apply/delete/patch semantics, immutable
//! pool fields, overlapping pools, and unmatched-selector warnings.

use std::path::PathBuf;

use serde_json::json;
use tabby_datastore::Datastore;
use tabby_model::document::parse_manifest;
use tabby_model::store::{
    Action, ResourceStore, StoreError, WriteMode, unmatched_selector_warnings,
};
use tabby_model::{IpPoolSpec, Kind, Resource};
use tabby_testbed::EtcdServer;

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/seeds")
}

/// A store under test plus whatever keeps its backend alive.
struct Backend {
    store: ResourceStore,
    url: String,
    _dir: Option<tempfile::TempDir>,
    _etcd: Option<EtcdServer>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/tabby.db", dir.path().display());
    let ds = Datastore::connect(&url).await.expect("sqlite");
    Backend {
        store: ResourceStore::new(ds),
        url,
        _dir: Some(dir),
        _etcd: None,
    }
}

async fn etcd() -> Backend {
    let server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("join")
        .expect("start etcd");
    let url = server.url();
    let ds = Datastore::connect(&url).await.expect("connect etcd");
    Backend {
        store: ResourceStore::new(ds),
        url,
        _dir: None,
        _etcd: Some(server),
    }
}

/// Deletes every key, so one backend can host several independent checks.
async fn clear(store: &ResourceStore) {
    let all = store.datastore().list("").await.expect("list");
    let mut txn = tabby_datastore::Txn::new();
    for kv in all.items {
        txn.push_delete(kv.key);
    }
    store.datastore().txn(txn).await.expect("clear");
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::sqlite().await).await;
                }
            )*
        }
        mod on_etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::etcd().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    every_seed_manifest_applies_unchanged,
    a_file_with_one_bad_document_writes_nothing,
    seed_003_pool_migration,
    create_replace_delete_semantics,
    seed_004_patches_and_labels,
    seed_002_selector_typo_applies_with_a_warning,
    concurrent_writers_never_store_overlapping_pools,
);

fn seed(name: &str) -> Vec<tabby_model::ManifestEntry> {
    let text = std::fs::read_to_string(seeds_dir().join(name)).expect("read");
    parse_manifest(name, &text).expect("seed parses")
}

fn manifest(text: &str) -> Vec<tabby_model::ManifestEntry> {
    parse_manifest("test.yaml", text).expect("parses")
}

fn doc_errors(e: StoreError) -> String {
    match e {
        StoreError::Documents(d) => d
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        other => panic!("expected document errors, got {other}"),
    }
}

async fn every_seed_manifest_applies_unchanged(b: Backend) {
    let files: Vec<String> = std::fs::read_dir(seeds_dir())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") && !n.contains("installation"))
        .collect();
    assert!(files.len() >= 19);
    for f in files {
        let store = &b.store;
        clear(store).await;
        let entries = seed(&f);
        let written = store
            .write_batch(WriteMode::Apply, &entries)
            .await
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(written.len(), entries.len());
        for (w, e) in written.iter().zip(&entries) {
            assert_eq!(w.action, Action::Created, "{f}");
            let got = store
                .get(e.resource.kind(), None, e.resource.name())
                .await
                .expect("get")
                .expect("stored");
            assert!(!got.metadata().uid.is_empty());
            assert!(got.metadata().creation_timestamp.is_some());
            assert_eq!(
                got.metadata().resource_version,
                w.resource.metadata().resource_version
            );
            // The spec reads back as written (plus pool defaults).
            let mut want = e.resource.clone();
            want.apply_defaults();
            let spec = |r: &Resource| r.to_value()["spec"].clone();
            assert_eq!(spec(&got), spec(&want), "{f}: {}", e.resource.name());
            assert_eq!(got.metadata().labels, e.resource.metadata().labels);
        }
        // Watchers can decode what is stored.
        let listing = store
            .datastore()
            .list("/tabby/resources/v3/")
            .await
            .expect("list");
        for kv in &listing.items {
            let r = tabby_model::store::decode_resource(&kv.key, &kv.value, kv.mod_revision)
                .expect("decode");
            let (kind, name) = tabby_model::store::parse_resource_key(&kv.key).expect("key");
            assert_eq!((kind, name), (r.kind(), r.name()));
        }
        // Applying again changes nothing.
        let again = store
            .write_batch(WriteMode::Apply, &entries)
            .await
            .expect("re-apply");
        assert!(again.iter().all(|w| w.action == Action::Unchanged), "{f}");
    }
}

async fn a_file_with_one_bad_document_writes_nothing(b: Backend) {
    let store = &b.store;
    // Both documents parse; the second overlaps the first.
    let entries = manifest(
        "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: p1}
spec: {peerIP: 10.0.0.1, asNumber: 65001}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: a}
spec: {cidr: 10.10.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: b}
spec: {cidr: 10.10.128.0/17}
",
    );
    let msg = doc_errors(
        store
            .write_batch(WriteMode::Apply, &entries)
            .await
            .expect_err("overlap"),
    );
    assert!(msg.contains("test.yaml: document 3"), "{msg}");
    assert!(msg.contains("IPPool \"b\""), "{msg}");
    assert!(
        msg.contains("spec.cidr") && msg.contains("overlaps IPPool \"a\""),
        "{msg}"
    );
    for k in Kind::ALL {
        assert!(store.list(k).await.expect("list").is_empty(), "{k} written");
    }
    assert_eq!(
        store.datastore().list("").await.expect("all").items.len(),
        0
    );
}

async fn seed_003_pool_migration(b: Backend) {
    let store = &b.store;
    store
        .write_batch(WriteMode::Apply, &seed("003-default-ippool-list.yaml"))
        .await
        .expect("default pool");
    // Same CIDR as the default pool: rejected, naming both pools.
    let msg = doc_errors(
        store
            .write_batch(WriteMode::Apply, &seed("003-new-ippool-24.yaml"))
            .await
            .expect_err("overlap"),
    );
    assert!(
        msg.contains("IPPool \"new-ippool-24\"") && msg.contains("default-ipv4-ippool"),
        "{msg}"
    );
    assert!(
        store
            .get(Kind::IpPool, None, "new-ippool-24")
            .await
            .expect("get")
            .is_none()
    );
    // The seed's patch: disable the old pool.
    let p = store
        .patch(
            Kind::IpPool,
            None,
            "default-ipv4-ippool",
            &json!({"spec": {"disabled": true}}),
        )
        .await
        .expect("patch");
    let Resource::IpPool(p) = p else {
        panic!("pool")
    };
    assert!(p.spec.disabled);
    assert_eq!(p.spec.block_size, Some(26));
    // Delete it, then the new pool applies.
    store
        .delete(Kind::IpPool, None, "default-ipv4-ippool")
        .await
        .expect("delete");
    store
        .write_batch(WriteMode::Apply, &seed("003-new-ippool-24.yaml"))
        .await
        .expect("new pool");
    for patch in [
        json!({"spec":{"ipipMode":"Never"}}),
        json!({"spec":{"natOutgoing":false}}),
    ] {
        store
            .patch(Kind::IpPool, None, "new-ippool-24", &patch)
            .await
            .expect("patch");
    }
    let pool: tabby_model::IpPool = store
        .get_typed::<IpPoolSpec>("new-ippool-24")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(pool.spec.ipip_mode, Some(tabby_model::EncapMode::Never));
    assert!(!pool.spec.nat_outgoing);
    assert_eq!(pool.spec.block_size(), 24);
    // blockSize is immutable.
    let err = store
        .patch(
            Kind::IpPool,
            None,
            "new-ippool-24",
            &json!({"spec":{"blockSize":26}}),
        )
        .await
        .expect_err("immutable");
    assert!(
        err.to_string().contains("spec.blockSize") && err.to_string().contains("cannot be changed"),
        "{err}"
    );
    let msg = doc_errors(
        store
            .write_batch(
                WriteMode::Apply,
                &manifest("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: new-ippool-24}\nspec: {cidr: 10.67.0.0/16, blockSize: 24}\n"),
            )
            .await
            .expect_err("immutable cidr"),
    );
    assert!(
        msg.contains("spec.cidr") && msg.contains("cannot be changed"),
        "{msg}"
    );
}

async fn create_replace_delete_semantics(b: Backend) {
    let store = &b.store;
    let peers = seed("000-bgppeers.yaml");
    store
        .write_batch(WriteMode::Create, &peers)
        .await
        .expect("create");
    let msg = doc_errors(
        store
            .write_batch(WriteMode::Create, &peers)
            .await
            .expect_err("exists"),
    );
    assert!(
        msg.contains("already exists") && msg.contains("document 1"),
        "{msg}"
    );

    let missing = manifest(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: nope}\nspec: {peerIP: 10.0.0.9, asNumber: 65009}\n",
    );
    let msg = doc_errors(
        store
            .write_batch(WriteMode::Replace, &missing)
            .await
            .expect_err("missing"),
    );
    assert!(msg.contains("does not exist"), "{msg}");

    // Replace with the stored resourceVersion works; a stale one fails.
    let cur = store
        .get(Kind::BgpPeer, None, "route-reflector-wds")
        .await
        .expect("get")
        .expect("there");
    let mut doc = cur.to_value();
    doc["spec"]["asNumber"] = json!(64513);
    let text = serde_json::to_string(&doc).expect("json");
    let entries = parse_manifest("r.json", &text).expect("parses");
    let w = store
        .write_batch(WriteMode::Replace, &entries)
        .await
        .expect("replace");
    assert_eq!(w[0].action, Action::Updated);
    let msg = doc_errors(
        store
            .write_batch(WriteMode::Replace, &entries)
            .await
            .expect_err("stale"),
    );
    assert!(msg.contains("metadata.resourceVersion"), "{msg}");

    // Delete of a file where one document is missing deletes nothing.
    let mut both = peers.clone();
    both.extend(missing);
    let msg = doc_errors(store.delete_batch(&both).await.expect_err("missing"));
    assert!(msg.contains("\"nope\" not found"), "{msg}");
    assert_eq!(store.list(Kind::BgpPeer).await.expect("list").len(), 3);
    store.delete_batch(&peers).await.expect("delete");
    assert!(store.list(Kind::BgpPeer).await.expect("list").is_empty());
}

async fn seed_004_patches_and_labels(b: Backend) {
    let store = &b.store;
    let nodes = manifest(
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: ip-10-20-1-81}\nspec: {bgp: {ipv4Address: 10.20.1.81/23}}\n---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: ip-10-20-1-84}\nspec: {bgp: {ipv4Address: 10.20.1.84/23}}\n",
    );
    store
        .write_batch(WriteMode::Apply, &nodes)
        .await
        .expect("nodes");
    store
        .patch(
            Kind::Node,
            None,
            "ip-10-20-1-81",
            &json!({"spec": {"bgp": {"routeReflectorClusterID": "244.0.0.1"}}}),
        )
        .await
        .expect("rr id");
    let n = store
        .get_typed::<tabby_model::NodeSpec>("ip-10-20-1-81")
        .await
        .expect("get")
        .expect("node");
    let bgp = n.spec.bgp.expect("bgp");
    assert_eq!(bgp.route_reflector_cluster_id.as_deref(), Some("244.0.0.1"));
    assert_eq!(
        bgp.ipv4_address.map(|a| a.to_string()).as_deref(),
        Some("10.20.1.81/23"),
        "merge patch keeps siblings"
    );
    let err = store
        .patch(
            Kind::Node,
            None,
            "ip-10-20-1-81",
            &json!({"spec": {"bgp": {"routeReflectorClusterID": "rr-1"}}}),
        )
        .await
        .expect_err("bad id");
    assert!(
        err.to_string().contains("spec.bgp.routeReflectorClusterID"),
        "{err}"
    );
    let err = store
        .patch(
            Kind::Node,
            None,
            "ip-10-20-1-81",
            &json!({"spec": {"bgp": {"asNumbr": 1}}}),
        )
        .await
        .expect_err("unknown field");
    assert!(err.to_string().contains("spec.bgp.asNumbr"), "{err}");

    store
        .update_with(Kind::Node, None, "ip-10-20-1-81", |old| {
            let mut r = old.clone();
            r.metadata_mut()
                .labels
                .insert("route-reflector".into(), "true".into());
            Ok(r)
        })
        .await
        .expect("label");
    let entries = [
        seed("004-bgppeer-peer-with-route-reflectors.yaml"),
        seed("004-bgppeer-rrs-to-rrs.yaml"),
    ]
    .concat();
    store
        .write_batch(WriteMode::Apply, &entries)
        .await
        .expect("peers");
    let nodes = store.nodes().await.expect("nodes");
    let peers: Vec<Resource> = entries.iter().map(|e| e.resource.clone()).collect();
    assert!(unmatched_selector_warnings(&peers, &nodes).is_empty());
    let Resource::BgpPeer(p) = &peers[0] else {
        panic!("peer")
    };
    let rr = nodes
        .iter()
        .find(|n| n.metadata.name == "ip-10-20-1-81")
        .expect("rr");
    let client = nodes
        .iter()
        .find(|n| n.metadata.name == "ip-10-20-1-84")
        .expect("client");
    assert!(p.spec.selects_local_node(client) && !p.spec.selects_local_node(rr));
    assert!(p.spec.selects_peer_node(rr) && !p.spec.selects_peer_node(client));
}

async fn seed_002_selector_typo_applies_with_a_warning(b: Backend) {
    let store = &b.store;
    store
        .write_batch(WriteMode::Apply, &seed("002-nodes.yaml"))
        .await
        .expect("nodes");
    let entries = seed("002-bgppeers.yaml");
    store
        .write_batch(WriteMode::Apply, &entries)
        .await
        .expect("peers apply");
    let nodes = store.nodes().await.expect("nodes");
    let rs: Vec<Resource> = entries.into_iter().map(|e| e.resource).collect();
    let warnings = unmatched_selector_warnings(&rs, &nodes);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("as64513-to-r2-peer") && warnings[0].contains("\"rr-id\""),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("as-id"),
        "lists the labels nodes do have: {warnings:?}"
    );
    // Applying a Node document without labels (the seeds' spec.bgp edits)
    // keeps the node's labels.
    store
        .write_batch(
            WriteMode::Apply,
            &manifest("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: k8s-node3}\nspec: {bgp: {asNumber: 64513, ipv4Address: 192.168.219.21/24}}\n"),
        )
        .await
        .expect("node edit");
    let n = store
        .get_typed::<tabby_model::NodeSpec>("k8s-node3")
        .await
        .expect("get")
        .expect("node");
    assert_eq!(
        n.metadata.labels.get("as-id").map(String::as_str),
        Some("as64513")
    );
    assert_eq!(
        n.spec
            .bgp
            .and_then(|b| b.ipv4_address)
            .map(|a| a.to_string())
            .as_deref(),
        Some("192.168.219.21/24")
    );
    // The seed-003 hostname selectors match the implicit hostname label.
    store
        .write_batch(WriteMode::Apply, &seed("003-node-k-w1-bgp.yaml"))
        .await
        .expect("node");
    let nodes = store.nodes().await.expect("nodes");
    let peer: Vec<Resource> = seed("003-bgppeer-k-w1.yaml")
        .into_iter()
        .map(|e| e.resource)
        .collect();
    assert!(unmatched_selector_warnings(&peer, &nodes).is_empty());
}

async fn concurrent_writers_never_store_overlapping_pools(b: Backend) {
    let url = b.url.clone();
    for round in 0..5u8 {
        let mut tasks = Vec::new();
        for i in 0..6u8 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                // Separate connections, as separate processes would have.
                let store = ResourceStore::new(Datastore::connect(&url).await.expect("connect"));
                let prefix = if i % 2 == 0 { 16 } else { 17 };
                let text = format!(
                    "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: r{round}-w{i}}}\nspec: {{cidr: 10.{}.0.0/{prefix}}}\n",
                    100 + round
                );
                store.write_batch(WriteMode::Apply, &manifest(&text)).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(_) => ok += 1,
                Err(StoreError::Documents(d)) => {
                    assert!(d[0].to_string().contains("overlaps IPPool"), "{}", d[0]);
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(
            ok, 1,
            "round {round}: exactly one of six overlapping pools is stored"
        );
    }
    let store = ResourceStore::new(Datastore::connect(&url).await.expect("connect"));
    let pools = store.list_typed::<IpPoolSpec>().await.expect("list");
    assert_eq!(pools.len(), 5);
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            assert!(
                !a.spec.cidr.overlaps(&b.spec.cidr),
                "{} overlaps {}",
                a.spec.cidr,
                b.spec.cidr
            );
        }
    }
}
