//! `ClusterMirror` against a real etcd (Debian's `etcd-server`, on a
//! loopback port of its own): what it holds equals a fresh `read_state`
//! after creates, changes and deletes of resources and IPAM blocks; keys
//! the agent does not read (a WorkloadEndpoint, an IPAM handle, another
//! node's affinity) do not count as a change; resources and blocks do.

use std::time::Duration;

use tabby_agent::daemon::{ClusterState, read_state};
use tabby_agent::mirror::ClusterMirror;
use tabby_datastore::Datastore;
use tabby_ipam::resources::load_environment;
use tabby_ipam::{AssignRequest, Ipam};
use tabby_model::store::{ResourceStore, WriteMode};
use tabby_model::{Kind, parse_manifest};
use tabby_testbed::EtcdServer;

async fn apply(store: &ResourceStore, yaml: &str) {
    let entries = parse_manifest("test.yaml", yaml).expect("manifest");
    store
        .write_batch(WriteMode::Apply, &entries)
        .await
        .expect("write");
}

/// One address for `node` under `handle` (claims a block and its affinity).
async fn assign(ds: &Datastore, node: &str, handle: &str) {
    let env = load_environment(ds).await.expect("environment");
    let req = AssignRequest {
        node: node.into(),
        node_labels: Default::default(),
        handle: handle.into(),
        attributes: Default::default(),
        num_v4: 1,
        num_v6: 0,
        use_: tabby_model::AllowedUse::Workload,
        pools: Vec::new(),
    };
    Ipam::new(ds.clone())
        .auto_assign(&env, &req)
        .await
        .expect("assign");
}

/// Everything in a state, in a stable order, for comparison.
fn summary(s: &ClusterState) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    out.extend(
        s.bgp
            .nodes
            .iter()
            .map(|n| format!("node {}", n.metadata.name)),
    );
    out.extend(
        s.bgp
            .configurations
            .iter()
            .map(|c| format!("config {}", c.metadata.name)),
    );
    out.extend(
        s.bgp
            .peers
            .iter()
            .map(|p| format!("peer {}", p.metadata.name)),
    );
    out.extend(
        s.bgp
            .filters
            .iter()
            .map(|f| format!("filter {}", f.metadata.name)),
    );
    out.extend(
        s.pools
            .iter()
            .map(|p| format!("pool {} {}", p.metadata.name, p.spec.cidr)),
    );
    out.extend(
        s.blocks
            .iter()
            .map(|b| format!("block {}", serde_json::to_string(b).expect("json"))),
    );
    out.extend(
        s.affinities
            .iter()
            .map(|a| format!("affinity {}", serde_json::to_string(a).expect("json"))),
    );
    out.sort();
    out
}

/// Waits (up to ~10 s) until the mirror reports a change.
async fn changed(m: &mut ClusterMirror) {
    for _ in 0..10 {
        if m.wait_for_change(Duration::from_secs(1))
            .await
            .expect("watch")
        {
            return;
        }
    }
    panic!("the mirror saw no change");
}

#[test]
fn the_mirror_follows_etcd_and_matches_a_fresh_read() {
    let etcd = EtcdServer::start().expect("etcd");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ds = Datastore::connect(&etcd.url()).await.expect("connect");
        let store = ResourceStore::new(ds.clone());
        apply(
            &store,
            concat!(
                "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1}\nspec: {bgp: {ipv4Address: 10.0.0.1/24}}\n---\n",
                "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n2}\nspec: {bgp: {ipv4Address: 10.0.0.2/24}}\n---\n",
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.80.0.0/16}\n---\n",
                "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 10.0.0.254, asNumber: 65000}\n",
            ),
        )
        .await;
        assign(&ds, "n1", "h1").await;
        let mut m = ClusterMirror::open(&ds, "n1").await.expect("mirror");
        let fresh = || async { read_state(&store, &ds, Some("n1")).await.expect("read") };
        let first = summary(&m.state().expect("state"));
        assert_eq!(first, summary(&fresh().await));
        assert!(first.iter().any(|l| l.starts_with("block ")), "{first:?}");
        assert!(first.iter().any(|l| l.starts_with("affinity ")), "{first:?}");

        // A key the agent does not read: a WorkloadEndpoint.
        ds.put(
            "/tabby/resources/v3/workloadendpoints/default/n1-cni-x-eth0",
            b"{}".to_vec(),
        )
        .await
        .expect("put");
        assert!(
            !m.wait_for_change(Duration::from_secs(3)).await.expect("watch"),
            "a WorkloadEndpoint counted as a change"
        );

        // A new pool and a deleted peer: changes.
        apply(
            &store,
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p2}\nspec: {cidr: 10.81.0.0/16}\n",
        )
        .await;
        changed(&mut m).await;
        assert!(
            summary(&m.state().expect("state")).contains(&"pool p2 10.81.0.0/16".to_owned())
        );
        store
            .delete(Kind::BgpPeer, None, "tor")
            .await
            .expect("delete peer");
        changed(&mut m).await;
        assert!(
            !summary(&m.state().expect("state")).contains(&"peer tor".to_owned()),
            "deleted peer still mirrored"
        );

        // Another node's assignment: its block is read (exports, VXLAN
        // routes), its affinity is not (this node's only).
        assign(&ds, "n2", "h2").await;
        changed(&mut m).await;
        // Let every event of the assignment arrive, then compare with a
        // fresh read of the same node.
        while m.wait_for_change(Duration::from_secs(1)).await.expect("watch") {}
        let state = m.state().expect("state");
        assert_eq!(state.blocks.len(), 2, "{:?}", summary(&state));
        assert_eq!(state.affinities.len(), 1, "{:?}", summary(&state));
        assert_eq!(summary(&state), summary(&fresh().await));
        assert!(m.revision() > 0);
    });
}
