//! The seeds' own manifests (crates/model/tests/data/seeds) through the
//! resources-to-peers function: what each node of the seeds' clusters
//! would peer with under tabby. This is where users get hurt, so each
//! seed's intent is checked node by node.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tabby_agent::peers::{BgpResources, NoSecrets, PlanSettings, SpeakerPlan, speaker_plan};
use tabby_model::{Resource, parse_manifest};

fn seed(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/data/seeds")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn resources(docs: &[String]) -> BgpResources {
    let mut r = BgpResources::default();
    for (i, d) in docs.iter().enumerate() {
        for e in parse_manifest(&format!("doc{i}"), d).expect("valid manifest") {
            match e.resource {
                Resource::Node(n) => r.nodes.push(n),
                Resource::BgpConfiguration(c) => {
                    r.configurations
                        .retain(|x| x.metadata.name != c.metadata.name);
                    r.configurations.push(c)
                }
                Resource::BgpPeer(p) => r.peers.push(p),
                Resource::BgpFilter(f) => r.filters.push(f),
                _ => {}
            }
        }
    }
    r
}

fn plan(res: &BgpResources, node: &str) -> SpeakerPlan {
    speaker_plan(
        res,
        &PlanSettings {
            node: node.into(),
            control_socket: "/tmp/unused.sock".into(),
            fib: true,
            graceful_restart: true,
        },
        &NoSecrets,
    )
    .unwrap_or_else(|e| panic!("{node}: {e}"))
}

/// (address, AS, RR client) of every neighbour.
fn peers(p: &SpeakerPlan) -> BTreeSet<(String, u32, bool)> {
    p.config
        .peers
        .iter()
        .map(|x| (x.address.to_string(), x.as_number, x.route_reflector_client))
        .collect()
}

#[test]
fn seed_003_leaf_spine_each_node_peers_with_its_leaf_only() {
    let mut docs: Vec<String> = ["k-master", "k-w1", "k-w2", "k-w3"]
        .iter()
        .flat_map(|n| {
            [
                seed(&format!("003-node-{n}-bgp.yaml")),
                seed(&format!("003-bgppeer-{n}.yaml")),
            ]
        })
        .collect();
    docs.push(seed("003-bgp-config.yaml"));
    // As applied first (mesh on): every node also meshes with the three
    // others over eBGP — the 32 paths the seed saw leaking to its ToRs.
    let meshed = resources(&docs);
    assert_eq!(plan(&meshed, "k-w1").config.peers.len(), 4);
    // The seed's fix: mesh off. Each node: its own AS, one eBGP session to its leaf.
    docs.push(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n  nodeToNodeMeshEnabled: false\n  asNumber: 65000\n  serviceClusterIPs: [{cidr: 10.96.0.0/12}]\n".into(),
    );
    let res = resources(&docs);
    for (node, asn, leaf, leaf_as) in [
        ("k-master", 65000, "10.0.11.0", 65011),
        ("k-w1", 65001, "10.1.11.0", 65011),
    ] {
        let p = plan(&res, node);
        assert_eq!(p.config.as_number, asn, "{node}");
        assert_eq!(
            peers(&p),
            BTreeSet::from([(leaf.to_owned(), leaf_as, false)]),
            "{node}"
        );
        assert!(p.warnings.is_empty(), "{node}: {:?}", p.warnings);
    }
    for node in ["k-w2", "k-w3"] {
        let p = plan(&res, node);
        assert_eq!(p.config.peers.len(), 1, "{node}: {:?}", peers(&p));
        assert_ne!(
            p.config.peers[0].as_number, p.config.as_number,
            "{node}: eBGP"
        );
    }
}

#[test]
fn seed_004_three_route_reflectors_with_one_cluster_id() {
    let mut docs = vec![
        seed("004-bgp-config.yaml"),
        seed("004-bgppeer-rrs-to-rrs.yaml"),
        seed("004-bgppeer-peer-with-route-reflectors.yaml"),
    ];
    for (i, name) in ["node1", "node2", "node3", "node4", "node5"]
        .iter()
        .enumerate()
    {
        let rr = i < 3;
        docs.push(format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n{labels}spec:\n  bgp:\n    ipv4Address: 192.168.1.{ip}/24\n{cluster}",
            labels = if rr { "  labels: {route-reflector: \"true\"}\n" } else { "" },
            ip = 11 + i,
            cluster = if rr { "    routeReflectorClusterID: 244.0.0.1\n" } else { "" },
        ));
    }
    let res = resources(&docs);
    let rr = plan(&res, "node1");
    assert_eq!(rr.config.cluster_id, Some("244.0.0.1".parse().expect("id")));
    assert_eq!(
        peers(&rr),
        BTreeSet::from([
            ("192.168.1.12".to_owned(), 64512, false),
            ("192.168.1.13".to_owned(), 64512, false),
            ("192.168.1.14".to_owned(), 64512, true),
            ("192.168.1.15".to_owned(), 64512, true),
        ])
    );
    let client = plan(&res, "node4");
    assert_eq!(client.config.cluster_id, None);
    assert_eq!(
        peers(&client),
        BTreeSet::from([
            ("192.168.1.11".to_owned(), 64512, false),
            ("192.168.1.12".to_owned(), 64512, false),
            ("192.168.1.13".to_owned(), 64512, false),
        ])
    );
}

#[test]
fn seed_002_as_per_rack_selectors_as_written_match_nothing() {
    let docs = vec![
        seed("002-nodes.yaml"),
        seed("002-bgppeers.yaml"),
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeToNodeMeshEnabled: false}\n".to_owned(),
    ];
    // The seed's peers select `rr-id`, its nodes carry `as-id`: no sessions
    // (tabby apply warns about the unmatched selector).
    let res = resources(&docs);
    assert!(plan(&res, "k8s-node3").config.peers.is_empty());
    // With the label the selectors meant, each rack peers with its router.
    let fixed = resources(&[
        docs[0].replace("as-id:", "rr-id:"),
        docs[1].clone(),
        docs[2].clone(),
    ]);
    let p = plan(&fixed, "k8s-node3");
    assert_eq!(p.config.as_number, 64513);
    assert_eq!(
        peers(&p),
        BTreeSet::from([("192.168.219.10".to_owned(), 64513, false)])
    );
    let p = plan(&fixed, "k8s-master");
    assert_eq!(
        peers(&p),
        BTreeSet::from([("10.30.81.118".to_owned(), 64512, false)])
    );
}

#[test]
fn seed_000_region_selectors_pick_the_aggregation_router() {
    let mut docs = vec![seed("000-bgppeers.yaml")];
    for (name, region, ip) in [
        ("wds1", "WDS", "192.168.100.11"),
        ("g1", "Global", "100.64.1.20"),
    ] {
        docs.push(format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{region: {region}}}\nspec:\n  bgp:\n    ipv4Address: {ip}/24\n"
        ));
    }
    let res = resources(&docs);
    // Mesh kept (the seed's choice) plus the region's router.
    let w = plan(&res, "wds1");
    assert_eq!(
        peers(&w),
        BTreeSet::from([
            ("100.64.1.20".to_owned(), 64512, false),
            ("192.168.100.1".to_owned(), 64512, false),
        ])
    );
    let g = plan(&res, "g1");
    assert!(peers(&g).contains(&("100.64.1.106".to_owned(), 64512, false)));
    assert!(!peers(&g).iter().any(|p| p.0 == "192.168.100.1"));
}
