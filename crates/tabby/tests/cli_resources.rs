//! The resource CLI end to end: the real `tabby` binary against a real
//! SQLite datastore in a temporary directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn seeds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/data/seeds")
}

struct Cli {
    _dir: tempfile::TempDir,
    url: String,
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/tabby.db", dir.path().display());
        Cli { _dir: dir, url }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tabby"))
            .args(args)
            .env("TABBY_DATASTORE", &self.url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tabby");
        if let Some(s) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(s.as_bytes())
                .expect("write stdin");
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().expect("tabby runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "tabby {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "tabby {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn seed(name: &str) -> String {
    seeds().join(name).display().to_string()
}

fn seed_files() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(seeds())
        .expect("seeds")
        .map(|e| e.expect("entry").path())
        .filter(|p: &PathBuf| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p: &PathBuf| !p.to_string_lossy().contains("installation"))
        .map(|p: PathBuf| p.display().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn every_seed_manifest_applies_via_the_cli() {
    for f in seed_files() {
        let cli = Cli::new();
        let out = cli.ok(&["apply", "-f", &f]);
        assert!(out.contains("Successfully applied"), "{f}: {out}");
        // What `get -o yaml` prints applies back unchanged.
        let name = Path::new(&f)
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let kind = if name.contains("bgppeer") {
            "bgppeers"
        } else if name.contains("node") {
            "nodes"
        } else if name.contains("ippool") {
            "ippools"
        } else {
            "bgpconfig"
        };
        let yaml = cli.ok(&["get", kind, "-o", "yaml"]);
        let out = cli.run(&["apply", "-f", "-"], Some(&yaml));
        assert!(
            out.status.success(),
            "{f}: re-apply of get -o yaml failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("unchanged"),
            "{f}"
        );
    }
}

#[test]
fn operator_installation_is_rejected_with_a_clear_error() {
    let cli = Cli::new();
    let err = cli.fails(&["apply", "-f", &seed("000-installation.yaml")], None);
    assert!(
        err.contains("document 1")
            && err.contains("apiVersion")
            && err.contains("operator.tigera.io/v1"),
        "{err}"
    );
}

#[test]
fn invalid_file_changes_nothing_and_names_document_and_field() {
    let cli = Cli::new();
    let text = "apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: fine
spec:
  peerIP: 10.0.0.1
  asNumber: 65001
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: broken
spec:
  nodeSelector: rack == 'a' &&
  peerIP: 10.0.0.2
  asNumber: 65001
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: p
spec:
  cidr: 10.1.0.0/16
  natOutgoin: true
";
    let err = cli.fails(&["apply", "-f", "-"], Some(text));
    assert!(
        err.contains("no changes made: 2 invalid documents"),
        "{err}"
    );
    assert!(
        err.contains("<stdin>: document 2 (line 9, BGPPeer \"broken\"): spec.nodeSelector"),
        "{err}"
    );
    assert!(
        err.contains("<stdin>: document 3 (line 18, IPPool \"p\"): spec.natOutgoin: unknown field"),
        "{err}"
    );
    assert_eq!(
        cli.ok(&["get", "bgppeers"]).lines().count(),
        1,
        "only the header: nothing written"
    );
    // Overlap with a stored pool: also nothing written.
    cli.ok(&["apply", "-f", &seed("003-default-ippool-list.yaml")]);
    let err = cli.fails(&["create", "-f", &seed("003-new-ippool-24.yaml")], None);
    assert!(
        err.contains("spec.cidr") && err.contains("overlaps IPPool \"default-ipv4-ippool\""),
        "{err}"
    );
    let pools = cli.ok(&["get", "ippools"]);
    assert!(!pools.contains("new-ippool-24"), "{pools}");
}

#[test]
fn get_patch_label_delete_round_trip() {
    let cli = Cli::new();
    cli.ok(&["apply", "-f", &seed("002-nodes.yaml")]);
    let out = cli.run(&["apply", "-f", &seed("002-bgppeers.yaml")], None);
    assert!(out.status.success());
    let warn = String::from_utf8_lossy(&out.stderr);
    assert!(warn.contains("Warning: BGPPeer \"as64513-to-r2-peer\": nodeSelector \"rr-id == 'as64513'\" matches no node"), "{warn}");
    let wide = cli.ok(&["get", "bgppeer", "-o", "wide"]);
    assert!(
        wide.lines()
            .next()
            .expect("header")
            .contains("MATCHED-NODES"),
        "{wide}"
    );
    assert!(
        wide.lines()
            .all(|l| l.contains("MATCHED-NODES") || l.contains("(none)")),
        "{wide}"
    );

    // Fix the nodes' labels the way the seed meant them.
    for n in ["k8s-node3", "k8s-node4"] {
        cli.ok(&["label", "node", n, "rr-id=as64513"]);
    }
    let wide = cli.ok(&["get", "bgppeers", "-o", "wide"]);
    let r2 = wide
        .lines()
        .find(|l| l.starts_with("as64513-to-r2-peer"))
        .expect("row");
    assert!(r2.contains("k8s-node3,k8s-node4"), "{wide}");
    let err = cli.fails(&["label", "node", "k8s-node3", "rr-id=other"], None);
    assert!(err.contains("--overwrite"), "{err}");
    cli.ok(&["label", "node", "k8s-node3", "rr-id=other", "--overwrite"]);
    cli.ok(&["label", "node", "k8s-node3", "rr-id-"]);
    let node = cli.ok(&["get", "node", "k8s-node3", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&node).expect("json");
    assert!(v["metadata"]["labels"].get("rr-id").is_none(), "{node}");
    assert_eq!(v["metadata"]["labels"]["as-id"], "as64513");

    // The seed's patches.
    cli.ok(&["apply", "-f", &seed("003-bgp-config.yaml")]);
    cli.ok(&[
        "patch",
        "bgpconfig",
        "default",
        "--patch",
        r#"{"spec":{"nodeToNodeMeshEnabled":false}}"#,
    ]);
    let t = cli.ok(&["get", "bgpconfiguration"]);
    assert!(
        t.contains("default   Info          false         65000"),
        "{t}"
    );
    let err = cli.fails(
        &[
            "patch",
            "bgpconfig",
            "default",
            "-p",
            r#"{"spec":{"asNumber":"x"}}"#,
        ],
        None,
    );
    assert!(err.contains("spec.asNumber"), "{err}");

    // Delete by name and by file.
    cli.ok(&["delete", "bgppeer", "as64512-to-r1-peer"]);
    let err = cli.fails(&["delete", "-f", &seed("002-bgppeers.yaml")], None);
    assert!(err.contains("\"as64512-to-r1-peer\" not found"), "{err}");
    assert!(
        cli.ok(&["get", "bgppeers"]).contains("as64513-to-r2-peer"),
        "nothing deleted"
    );
    cli.ok(&["delete", "bgppeer", "as64513-to-r2-peer"]);
    let err = cli.fails(&["get", "bgppeer", "as64513-to-r2-peer"], None);
    assert!(err.contains("not found"), "{err}");
    let err = cli.fails(&["get", "frobs"], None);
    assert!(err.contains("unknown resource kind"), "{err}");
}
