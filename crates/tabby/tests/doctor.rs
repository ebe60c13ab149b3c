//! `tabby doctor` end to end, as root: "nodes" are network namespaces on
//! one L2 segment (a bridge in a namespace of its own) sharing a SQLite
//! datastore, each running the real `tabby agent`; pods come from the real
//! CNI plugin; doctor runs inside a node's namespace as a user would run it
//! on the node. A standalone `tabby bgpd` plays the ToR where a router is
//! needed.
//!
//! Addresses: node segment 10.78.0.0/24, pools 10.92.0.0/16 and up; all
//! inside the test's namespaces.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::{
    Segment, TABBY, agent_command, cni_command, cni_conf, mtu_file, node_status, run_with_stdin,
    wait,
};
use tabby_testbed::{Netns, Process};

/// The segment, the datastore and the nodes of one test.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    segment: Segment,
}

/// A node namespace with its agent.
struct Node {
    name: String,
    ns: Netns,
    ip: String,
    socket: PathBuf,
    _agent: Option<Process>,
    pods: Vec<Netns>,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/tabby.db", dir.path().display());
        Cluster {
            dir,
            url,
            segment: Segment::new("drsw"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Plugs `host` into the segment with `eth0` addressed `addr`.
    fn plug(&mut self, host: &Netns, addr: &str) {
        self.segment.plug(host, "eth0", addr);
    }

    /// `tabby --datastore URL <args>` with `stdin`; panics on failure.
    fn tabby(&self, args: &[&str], stdin: &str) {
        let out = run_with_stdin(
            Command::new(TABBY)
                .arg("--datastore")
                .arg(&self.url)
                .args(args),
            stdin.as_bytes(),
        );
        assert!(
            out.status.success(),
            "tabby {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn apply(&self, yaml: &str) {
        self.tabby(&["apply", "-f", "-"], yaml);
    }

    /// A node at `10.78.0.<i>` running its agent.
    fn node(&mut self, name: &str, i: u8) -> Node {
        let ns = Netns::new("drnode").expect("node netns");
        let ip = format!("10.78.0.{i}");
        self.plug(&ns, &format!("{ip}/24"));
        let socket = self.path(&format!("{name}.sock"));
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).expect("log");
        let mut cmd = agent_command(
            &ns,
            &self.url,
            name,
            &ip,
            &socket,
            &self.path(&format!("{name}-state")),
            log,
        );
        cmd.args(["--cni-socket", "off"]);
        let agent = ns.spawn(&mut cmd).expect("agent");
        Node {
            name: name.to_owned(),
            ns,
            ip,
            socket,
            _agent: Some(agent),
            pods: Vec::new(),
        }
    }

    fn log(&self, node: &Node) -> String {
        std::fs::read_to_string(self.path(&format!("{}.log", node.name))).unwrap_or_default()
    }
}

impl Node {
    /// Adds a pod through the CNI plugin; returns its IPv4 address.
    fn add_pod(&mut self, cluster: &Cluster, id: &str) -> String {
        let pod = Netns::new("drpod").expect("pod netns");
        let mut conf = cni_conf(
            &cluster.url,
            &self.name,
            serde_json::json!({"type": "tabby-ipam"}),
        );
        conf["mtuFile"] = mtu_file(&cluster.path(&format!("{}-state", self.name)))
            .display()
            .to_string()
            .into();
        let out = run_with_stdin(
            &mut cni_command(&self.ns, "ADD", id, &pod, "off"),
            conf.to_string().as_bytes(),
        );
        assert!(
            out.status.success(),
            "CNI ADD on {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let result: Value = serde_json::from_slice(&out.stdout).expect("CNI result");
        let addr = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .expect("address")
            .to_owned();
        self.pods.push(pod);
        addr
    }

    /// `tabby node status -o json` rows.
    fn status(&self) -> Vec<Value> {
        node_status(&self.socket).unwrap_or_default()
    }

    fn established_with(&self, peer: &str) -> bool {
        self.status()
            .iter()
            .any(|s| s["peerAddress"] == peer && s["state"] == "Established")
    }

    fn tabby_routes(&self) -> String {
        self.ns
            .ip_stdout(["-4", "route", "show", "proto", "tabby"])
            .unwrap_or_default()
    }

    /// `tabby doctor <args>` run inside the node, as on the node itself.
    fn doctor(&self, cluster: &Cluster, args: &[&str]) -> Output {
        self.ns
            .command(TABBY)
            .args([
                "--datastore",
                &cluster.url,
                "doctor",
                "--nodename",
                &self.name,
            ])
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("doctor")
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Two nodes in a mesh with one pod each; waits until each has the other's
/// block in its kernel. Returns the pods' addresses.
fn mesh_of_two(
    cluster: &mut Cluster,
    pool: &str,
    wait_routes: bool,
) -> (Node, Node, String, String) {
    cluster.apply(pool);
    let mut a = cluster.node("dr-a", 1);
    let mut b = cluster.node("dr-b", 2);
    for n in [&a, &b] {
        wait(
            &format!("{}'s agent", n.name),
            || !n.status().is_empty(),
            || cluster.log(n),
        );
    }
    let pa = a.add_pod(cluster, "pod-a");
    let pb = b.add_pod(cluster, "pod-b");
    wait(
        "the mesh session",
        || a.established_with(&b.ip) && b.established_with(&a.ip),
        || format!("{}\n{}", cluster.log(&a), cluster.log(&b)),
    );
    // Each node's own block: announced and blackholed (the agent does both
    // in one reconcile, the blackhole last).
    for n in [&a, &b] {
        wait(
            &format!("{}'s blackhole", n.name),
            || n.tabby_routes().contains("blackhole"),
            || format!("{}\n{}", n.tabby_routes(), cluster.log(n)),
        );
    }
    if wait_routes {
        for (n, other) in [(&a, &pb), (&b, &pa)] {
            let block = other
                .rsplit_once('.')
                .map(|(p, _)| p.to_owned())
                .expect("ip");
            wait(
                &format!("{}'s route to the other node's block", n.name),
                || {
                    n.tabby_routes()
                        .lines()
                        .any(|l| l.starts_with(&block) && l.contains("via"))
                },
                || format!("{}\n{}", n.tabby_routes(), cluster.log(n)),
            );
        }
    }
    (a, b, pa, pb)
}

#[test]
fn a_healthy_mesh_passes_then_ip_forward_off_is_named() {
    let mut cluster = Cluster::new();
    let (a, b, _pa, pb) = mesh_of_two(
        &mut cluster,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.92.0.0/16, natOutgoing: true}\n",
        true,
    );
    // Healthy: exit 0 on both nodes, nothing found.
    for n in [&a, &b] {
        let out = n.doctor(&cluster, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let t = text(&out);
        assert!(
            t.contains(&format!("Node {}: no problem found", n.name)),
            "{t}"
        );
        assert!(t.contains("1 of 1 BGP sessions Established"), "{t}");
        assert!(
            t.contains("NAT table masquerades the 1 natOutgoing pool"),
            "{t}"
        );
        let j = json(&n.doctor(&cluster, &["-o", "json"]));
        assert_eq!(j["status"], "healthy", "{j:#}");
        assert_eq!(j["findings"].as_array().map(Vec::len), Some(0), "{j:#}");
    }
    // The route to the pod on b, explained from a: present.
    let out = a.doctor(&cluster, &["--route", &pb]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("Verdict: node dr-a routes"), "{t}");
    assert!(t.contains("node-to-node mesh) Established"), "{t}");

    // The wrong node name: the agent's router id says which node it runs.
    let out =
        a.ns.command(TABBY)
            .args([
                "--datastore",
                &cluster.url,
                "doctor",
                "--nodename",
                "nosuch",
            ])
            .arg("--socket")
            .arg(&a.socket)
            .output()
            .expect("doctor");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("fix: the agent at this socket runs node dr-a"),
        "{t}"
    );

    // Forwarding turned off behind the agent's back.
    a.ns.sysctl("net.ipv4.ip_forward=0").expect("sysctl");
    let out = a.doctor(&cluster, &["-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    let findings = j["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{j:#}");
    assert_eq!(findings[0]["check"], "forwarding", "{j:#}");
    assert_eq!(
        findings[0]["subject"], "sysctl net.ipv4.ip_forward",
        "{j:#}"
    );
    assert!(
        findings[0]["fix"]
            .as_str()
            .is_some_and(|f| f.contains("sysctl -w net.ipv4.ip_forward=1")),
        "{j:#}"
    );
    let t = text(&a.doctor(&cluster, &[]));
    assert!(t.contains("ERROR  sysctl net.ipv4.ip_forward"), "{t}");
    a.ns.sysctl("net.ipv4.ip_forward=1").expect("sysctl");
    let out = a.doctor(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_pool_without_bgp_export_is_named_for_a_route_to_the_other_node() {
    let mut cluster = Cluster::new();
    let (a, _b, _pa, pb) = mesh_of_two(
        &mut cluster,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: private}\nspec: {cidr: 10.93.0.0/16, disableBGPExport: true}\n",
        false,
    );
    let out = a.doctor(&cluster, &["--route", &pb]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("node dr-b does not announce")
            && t.contains("IPPool private has disableBGPExport: true"),
        "{t}"
    );
    assert!(
        t.contains("Verdict: route to") && t.contains("missing"),
        "{t}"
    );
    assert!(t.contains("tabby patch ippool private"), "{t}");
    let j = json(&a.doctor(&cluster, &["--route", &pb, "-o", "json"]));
    assert_eq!(j["present"], false, "{j:#}");
    assert_eq!(j["findings"][0]["check"], "route-not-exported", "{j:#}");
    assert_eq!(j["findings"][0]["subject"], "IPPool private", "{j:#}");
    // No route in a's kernel indeed.
    let prefix = pb.rsplit_once('.').map(|(p, _)| p.to_owned()).expect("ip");
    assert!(!a.tabby_routes().contains(&prefix), "{}", a.tabby_routes());
}

#[test]
fn a_session_down_for_a_wrong_as_names_the_peer_and_the_fix() {
    let mut cluster = Cluster::new();
    // The ToR: tabby bgpd as AS 65001 at 10.78.0.254.
    let tor = Netns::new("drtor").expect("tor netns");
    cluster.plug(&tor, "10.78.0.254/24");
    let config = cluster.path("tor.yaml");
    std::fs::write(
        &config,
        format!(
            "asNumber: 65001\nrouterId: 10.78.0.254\nlisten: [\"10.78.0.254:179\"]\ncontrolSocket: {}\npeers:\n  - {{address: 10.78.0.1, asNumber: 64512, connectRetryTime: 1}}\n",
            cluster.path("tor.sock").display()
        ),
    )
    .expect("config");
    let _router = tor
        .spawn(
            tor.command(TABBY)
                .arg("bgpd")
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("bgpd");
    // The BGPPeer says 65002: wrong.
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.94.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeToNodeMeshEnabled: false}\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 10.78.0.254, asNumber: 65002}\n",
    );
    let a = cluster.node("dr-a", 1);
    wait(
        "the Bad Peer AS error",
        || {
            a.status().iter().any(|s| {
                s["info"]
                    .as_str()
                    .is_some_and(|i| i.contains("Bad Peer AS"))
            })
        },
        || format!("{:?}\n{}", a.status(), cluster.log(&a)),
    );
    let out = a.doctor(&cluster, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("ERROR  peer 10.78.0.254 (BGPPeer tor)"), "{t}");
    assert!(t.contains("10.78.0.254 says it is AS 65001"), "{t}");
    assert!(t.contains("set spec.asNumber: 65001 in BGPPeer tor"), "{t}");
    let j = json(&a.doctor(&cluster, &["-o", "json"]));
    let f = j["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["check"] == "session-down"))
        .unwrap_or_else(|| panic!("{j:#}"));
    assert!(
        f["subject"]
            .as_str()
            .is_some_and(|s| s.contains("BGPPeer tor")),
        "{j:#}"
    );

    // Fixed as doctor says: the session comes up and doctor is content.
    cluster.tabby(
        &[
            "patch",
            "bgppeer",
            "tor",
            "-p",
            "{\"spec\":{\"asNumber\":65001}}",
        ],
        "",
    );
    wait(
        "the session with the ToR",
        || a.established_with("10.78.0.254"),
        || format!("{:?}\n{}", a.status(), cluster.log(&a)),
    );
    let out = a.doctor(&cluster, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_node_that_no_bgppeer_selects_has_no_session() {
    let mut cluster = Cluster::new();
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.96.0.0/16}\n---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeToNodeMeshEnabled: false}\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: rack2-tor}\nspec: {nodeSelector: rack == 'r2', peerIP: 10.78.0.254, asNumber: 65000}\n",
    );
    let a = cluster.node("dr-a", 1);
    wait(
        "the agent",
        || {
            Command::new(TABBY)
                .args(["node", "status", "--socket"])
                .arg(&a.socket)
                .output()
                .is_ok_and(|o| o.status.success())
        },
        || cluster.log(&a),
    );
    let out = a.doctor(&cluster, &["-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let j = json(&out);
    let f = j["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["check"] == "no-sessions"))
        .unwrap_or_else(|| panic!("{j:#}"));
    assert!(
        f["cause"]
            .as_str()
            .is_some_and(|c| c.contains("nodeToNodeMeshEnabled is false")),
        "{j:#}"
    );
    assert!(
        f["fix"]
            .as_str()
            .is_some_and(|c| c.contains("nodeSelector matches dr-a")),
        "{j:#}"
    );
}

#[test]
fn an_unreachable_agent_is_a_part_not_checked() {
    let cluster = Cluster::new();
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.95.0.0/16}\n",
    );
    let ns = Netns::new("drlone").expect("netns");
    ns.sysctl("net.ipv4.ip_forward=1").expect("sysctl");
    let out = ns
        .command(TABBY)
        .args(["--datastore", &cluster.url, "doctor", "--nodename", "ghost"])
        .arg("--socket")
        .arg(cluster.path("none.sock"))
        .output()
        .expect("doctor");
    let t = text(&out);
    // The node is not registered (a problem) and the agent cannot be asked.
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("no Node resource named ghost"), "{t}");
    assert!(t.contains("Could not check:\n  agent ("), "{t}");
    // A datastore that does not exist is not created, and is reported.
    let missing = cluster.path("missing.db");
    let out = ns
        .command(TABBY)
        .arg("--datastore")
        .arg(format!("sqlite://{}", missing.display()))
        .args(["doctor", "--nodename", "ghost", "--socket"])
        .arg(cluster.path("none.sock"))
        .output()
        .expect("doctor");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("datastore (sqlite://"), "{t}");
    assert!(!missing.exists());
}

/// Takes a lab down when the test ends, passed or not.
struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if tabby_lab::State::load(&self.0).is_ok() {
            let _ = Command::new(TABBY).args(["lab", "down", &self.0]).output();
        }
    }
}

#[test]
fn every_node_of_the_seed_004_lab_is_healthy_and_routes_go_through_the_reflectors() {
    // Seed 004: three route reflectors, two clients, mesh off, IPIP
    // CrossSubnet on one subnet; doctor must raise no false alarm there.
    let lab = format!("dr{}", std::process::id() % 100_000);
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/rr-in-cluster/topology.yaml");
    let _guard = LabGuard(lab.clone());
    let up = Command::new(TABBY)
        .args(["lab", "up"])
        .arg(&file)
        .args(["--name", &lab])
        .output()
        .expect("lab up");
    assert!(up.status.success(), "{}", text(&up));
    let verify = Command::new(TABBY)
        .args(["lab", "verify", &lab, "--timeout", "90"])
        .output()
        .expect("lab verify");
    assert!(verify.status.success(), "{}", text(&verify));
    let state = tabby_lab::State::load(&lab).expect("lab state");
    let doctor = |node: &str, extra: &[&str]| {
        let agent = state
            .processes
            .iter()
            .find(|p| p.role == format!("{node}/agent"))
            .expect("agent process");
        let socket = agent
            .args
            .iter()
            .skip_while(|a| *a != "--control-socket")
            .nth(1)
            .expect("--control-socket")
            .clone();
        Command::new("ip")
            .args(["netns", "exec", &state.host_netns(node), TABBY])
            .args([
                "--datastore",
                &state.datastore,
                "doctor",
                "--nodename",
                node,
            ])
            .args(["--socket", &socket])
            .args(extra)
            .output()
            .expect("doctor")
    };
    let nodes: Vec<String> = state
        .topology
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(nodes.len(), 5);
    for n in &nodes {
        let out = doctor(n, &[]);
        assert_eq!(out.status.code(), Some(0), "{n}: {}", text(&out));
    }
    // A client's route to the web pod on the other client: learned from a
    // reflector, installed.
    let web = state
        .pods
        .iter()
        .find(|p| p.name == "web")
        .and_then(|p| p.address)
        .expect("web pod")
        .to_string();
    let out = doctor("ip-10-20-1-84", &["--route", &web]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("(route reflector ip-10-20-1-8"), "{t}");
    assert!(t.contains("Verdict: node ip-10-20-1-84 routes"), "{t}");
    // The whole pool: one line per block, each routed.
    let out = doctor("ip-10-20-1-84", &["--route", "10.244.0.0/16"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("Verdict: node ip-10-20-1-84 routes each of the 5 blocks in 10.244.0.0/16"),
        "{t}"
    );
}
