//! Reading manifests: every seed manifest parses and validates unchanged;
//! invalid documents are rejected with the file, document, kind/name and
//! field path in the message.

use std::path::PathBuf;

use tabby_model::document::parse_manifest;
use tabby_model::{Kind, Resource};

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/seeds")
}

/// Every valid seed manifest file (all but the operator's Installation).
pub fn seed_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(seeds_dir())
        .expect("seed dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.to_string_lossy().contains("installation"))
        .collect();
    files.sort();
    files
}

fn parse_file(name: &str) -> Result<Vec<Resource>, String> {
    let path = seeds_dir().join(name);
    let text = std::fs::read_to_string(&path).expect("read seed");
    parse_manifest(name, &text)
        .map(|es| es.into_iter().map(|e| e.resource).collect())
        .map_err(|errs| {
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
}

#[test]
fn every_seed_manifest_parses_and_validates() {
    let files = seed_files();
    assert!(files.len() >= 19, "seed files present: {files:?}");
    for f in files {
        let name = f.file_name().expect("name").to_string_lossy().to_string();
        let rs = parse_file(&name).unwrap_or_else(|e| panic!("{name} rejected:\n{e}"));
        assert!(!rs.is_empty(), "{name} has resources");
    }
}

#[test]
fn crd_v1_list_with_server_fields_reads_as_v3() {
    let rs = parse_file("003-default-ippool-list.yaml").expect("parses");
    assert_eq!(rs.len(), 1);
    let Resource::IpPool(p) = &rs[0] else {
        panic!("not a pool: {:?}", rs[0])
    };
    assert_eq!(p.api_version, "projectcalico.org/v3");
    assert_eq!(p.metadata.name, "default-ipv4-ippool");
    assert_eq!(p.spec.cidr.to_string(), "10.66.0.0/16");
    assert_eq!(p.spec.block_size(), 26);
    assert!(p.spec.nat_outgoing);
    assert_eq!(p.metadata.generation, None, "server-only fields dropped");
}

#[test]
fn seed_bgppeers_keep_their_selectors() {
    let rs = parse_file("003-bgppeer-k-master.yaml").expect("parses");
    let Resource::BgpPeer(p) = &rs[0] else {
        panic!("not a peer")
    };
    let sel = p.spec.node_selector.as_ref().expect("selector");
    assert_eq!(sel.as_str(), "kubernetes.io/hostname == \"k-master\"");
    assert_eq!(p.spec.as_number.expect("asn").0, 65011);
    let rs = parse_file("000-bgppeers.yaml").expect("parses");
    assert_eq!(rs.len(), 3);
    assert!(rs.iter().all(|r| r.kind() == Kind::BgpPeer));
}

fn errors_of(text: &str) -> String {
    match parse_manifest("bad.yaml", text) {
        Ok(rs) => panic!("accepted: {rs:?}"),
        Err(errs) => errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

const GOOD_PEER: &str = "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: good
spec:
  peerIP: 10.0.0.1
  asNumber: 65000
";

#[test]
fn invalid_documents_name_document_and_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/33\n",
            &["document 2", "IPPool \"p\"", "spec.cidr", "prefix length"],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n  blockSize: many\n",
            &["spec.blockSize", "invalid type"],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n  ipipMod: Always\n",
            &["spec.ipipMod: unknown field \"ipipMod\""],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: x\nspec:\n  nodeSelector: rack = 'a'\n  peerIP: 10.0.0.2\n  asNumber: 65001\n",
            &["BGPPeer \"x\"", "spec.nodeSelector", "column 6", "=="],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: x\nspec:\n  node: a\n  nodeSelector: all()\n  peerIP: 10.0.0.2\n  asNumber: 65001\n",
            &["spec.node", "mutually exclusive"],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: x\nspec:\n  peerIP: 10.0.0.2\n  peerSelector: all()\n",
            &["spec.peerIP", "mutually exclusive"],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: v6\nspec:\n  cidr: fd00:10::/48\n  ipipMode: Always\n",
            &["spec.ipipMode", "IPv6"],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: both\nspec:\n  cidr: 10.0.0.0/16\n  ipipMode: Always\n  vxlanMode: Always\n",
            &["spec.vxlanMode", "both"],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: big\nspec:\n  cidr: 10.0.0.0/16\n  blockSize: 19\n",
            &["spec.blockSize", "20..=32"],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: host\nspec:\n  cidr: 10.0.0.1/16\n",
            &["spec.cidr", "host bits"],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  asNumber: 1.10\n",
            &["spec.asNumber", "quoted"],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: n1\n  labels:\n    Bad Key: x\nspec: {}\n",
            &["metadata.labels.Bad Key", "invalid label key"],
        ),
        (
            "apiVersion: operator.tigera.io/v1\nkind: Installation\nmetadata:\n  name: default\nspec: {}\n",
            &["apiVersion", "unsupported"],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: n1\nspec:\n  bgp:\n    routeReflectorClusterID: rr1\n",
            &["spec.bgp.routeReflectorClusterID", "IPv4"],
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: f\nspec:\n  exportV4:\n  - action: Accept\n    cidr: fd00::/64\n    matchOperator: In\n",
            &["spec.exportV4[0].cidr", "not an IPv4 prefix"],
        ),
    ];
    for (doc, wants) in cases {
        let text = format!("{GOOD_PEER}---\n{doc}");
        let msg = errors_of(&text);
        assert!(msg.contains("bad.yaml: document 2"), "{msg}");
        for w in *wants {
            assert!(msg.contains(w), "wanted {w:?} in: {msg}");
        }
    }
}

#[test]
fn yaml_syntax_errors_name_the_document() {
    let msg = errors_of(&format!("{GOOD_PEER}---\nkind: [unclosed\n"));
    assert!(msg.contains("document 2 (line 9"), "{msg}");
    assert!(msg.contains("not valid YAML"), "{msg}");
}

#[test]
fn json_documents_and_lists() {
    let text = r#"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"a"},"spec":{"cidr":"10.1.0.0/16"}}
{"apiVersion":"projectcalico.org/v3","kind":"IPPoolList","items":[{"metadata":{"name":"b"},"spec":{"cidr":"10.2.0.0/16"}}]}"#;
    let es = parse_manifest("x.json", text).expect("parses");
    assert_eq!(es.len(), 2);
    assert_eq!(es[1].resource.name(), "b");
    assert_eq!(es[1].doc.item, Some(1));
    let msg = match parse_manifest(
        "x.json",
        r#"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"a"},"spec":{"cidr":"nope"}}"#,
    ) {
        Ok(_) => panic!("accepted"),
        Err(e) => e[0].to_string(),
    };
    assert!(
        msg.contains("x.json: document 1") && msg.contains("spec.cidr"),
        "{msg}"
    );
}

#[test]
fn yaml_round_trip_of_seed_resources() {
    for f in seed_files() {
        let name = f.file_name().expect("name").to_string_lossy().to_string();
        let rs = parse_file(&name).expect("parses");
        let yaml = tabby_model::document::to_yaml(&rs);
        let back: Vec<Resource> = parse_manifest("rt", &yaml)
            .unwrap_or_else(|e| panic!("{name} re-read failed: {e:?}\n{yaml}"))
            .into_iter()
            .map(|e| e.resource)
            .collect();
        assert_eq!(rs, back, "{name}");
    }
}

#[test]
fn ip_reservations_take_cidrs_and_bare_addresses() {
    let es = parse_manifest(
        "r.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata:\n  name: r\nspec:\n  reservedCIDRs:\n  - 192.168.2.3\n  - 10.0.2.0/24\n  - cafe:f00d::/123\n",
    )
    .expect("parses");
    let Resource::IpReservation(r) = &es[0].resource else {
        panic!("reservation")
    };
    assert!(r.spec.reserves("192.168.2.3".parse().expect("ip")));
    assert!(r.spec.reserves("10.0.2.77".parse().expect("ip")));
    assert!(!r.spec.reserves("10.0.3.1".parse().expect("ip")));
    let msg = errors_of(
        "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata:\n  name: r\nspec:\n  reservedCIDRs: [10.0.0.300]\n",
    );
    assert!(
        msg.contains("spec.reservedCIDRs") && msg.contains("10.0.0.300"),
        "{msg}"
    );
}

#[test]
fn yaml_flow_style_is_not_mistaken_for_json() {
    let es = parse_manifest(
        "flow.yaml",
        "{apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: f}, spec: {cidr: 10.9.0.0/16}}\n",
    )
    .expect("flow YAML parses");
    assert_eq!(es[0].resource.name(), "f");
}
