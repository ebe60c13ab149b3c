//! The CNI plugin end to end, as a container runtime drives it: the real
//! `tabby` binary run with `CNI_*` variables and a configuration on stdin,
//! inside "node" namespaces this test makes (so host-side veths and routes
//! land there, never in the machine's own namespace), with pods in
//! namespaces of their own and a SQLite datastore in a temporary directory
//! holding an IPPool written through tabby-model's types.
//!
//! Runs as root. Addresses: pools 10.96.0.0/16 and fd00:96::/48, node
//! uplinks 10.97.0.0/24; all inside the test's namespaces.

// The shared harness; this file uses only its process helpers.
#[allow(dead_code)]
mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde_json::{Value, json};
use tabby_datastore::Datastore;
use tabby_model::Resource;
use tabby_testbed::{Netns, Process, wait_until};

use support::TABBY;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A datastore in a temporary directory with one IPv4 pool (and optionally
/// an IPv6 one).
struct Cluster {
    _dir: tempfile::TempDir,
    url: String,
}

impl Cluster {
    fn new(v6: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/tabby.db", dir.path().display());
        let c = Cluster { _dir: dir, url };
        c.put_pool("pool-v4", "10.96.0.0/16", 26);
        if v6 {
            c.put_pool("pool-v6", "fd00:96::/48", 122);
        }
        c
    }

    fn put_pool(&self, name: &str, cidr: &str, block_size: u8) {
        self.put_resource(
            "ippools",
            name,
            json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": name},
                "spec": {"cidr": cidr, "blockSize": block_size}
            }),
        );
    }

    /// Stores a resource (checked and defaulted by tabby-model) under
    /// `/tabby/resources/v3/<plural>/<name>`.
    fn put_resource(&self, plural: &str, name: &str, doc: Value) {
        let mut r = Resource::from_value(doc).expect("resource");
        r.check().expect("valid resource");
        r.apply_defaults();
        let rt = runtime();
        rt.block_on(async {
            let ds = Datastore::connect(&self.url).await.expect("datastore");
            ds.put(
                &format!("/tabby/resources/v3/{plural}/{name}"),
                serde_json::to_vec(&r.to_value()).expect("json"),
            )
            .await
            .expect("put resource");
        });
    }

    /// `tabby ipam check` (leak check against the WorkloadEndpoints) finds
    /// nothing wrong.
    fn ipam_check_is_clean(&self) {
        let out = Command::new(TABBY)
            .args(["--datastore", &self.url, "ipam", "check"])
            .env_remove("CNI_COMMAND")
            .output()
            .expect("tabby ipam check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "tabby ipam check failed: {text}");
        assert!(
            text.contains("Found 0 problems."),
            "tabby ipam check: {text}"
        );
    }

    /// A stored resource, decoded by tabby-model.
    fn get(&self, key: &str) -> Option<Resource> {
        let rt = runtime();
        let kv = rt.block_on(async {
            let ds = Datastore::connect(&self.url).await.expect("datastore");
            ds.get(key).await.expect("get")
        })?;
        let v: Value = serde_json::from_slice(&kv.value).expect("json");
        Some(Resource::from_value(v).expect("resource"))
    }

    /// Every address allocated in any block.
    fn allocated(&self) -> Vec<IpAddr> {
        let rt = runtime();
        let ds = rt
            .block_on(Datastore::connect(&self.url))
            .expect("datastore");
        let blocks = rt
            .block_on(tabby_ipam::Ipam::new(ds).blocks())
            .expect("blocks");
        blocks
            .iter()
            .flat_map(|b| b.allocated().into_iter().map(|(ip, _, _)| ip))
            .collect()
    }
}

/// The path a runtime passes as `CNI_NETNS` for a namespace.
fn netns_path(ns: &Netns) -> PathBuf {
    Path::new("/var/run/netns").join(ns.name())
}

/// What one plugin call printed and how it exited.
#[derive(Debug)]
struct Call {
    code: i32,
    stdout: Value,
    raw: String,
    stderr: String,
}

impl Call {
    fn ok(&self) -> &Value {
        assert_eq!(
            self.code, 0,
            "plugin failed: {} / {}",
            self.raw, self.stderr
        );
        &self.stdout
    }

    fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "plugin succeeded unexpectedly: {}", self.raw);
        self.stdout["code"]
            .as_u64()
            .expect("error object has a code")
    }

    fn details(&self) -> String {
        self.stdout["details"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first address of an ADD result.
    fn address(&self) -> IpNet {
        self.ok()["ips"][0]["address"]
            .as_str()
            .expect("address")
            .parse()
            .expect("cidr")
    }
}

/// One node: a namespace acting as the host (forwarding on, an uplink with
/// an address of its own), a node name, the cluster's datastore.
struct Node {
    ns: Netns,
    name: String,
    datastore: String,
}

impl Node {
    fn new(prefix: &str, name: &str, cluster: &Cluster) -> Node {
        let ns = Netns::new(prefix).expect("node netns");
        ns.sysctl("net.ipv4.ip_forward=1").expect("forwarding");
        Node {
            ns,
            name: name.to_owned(),
            datastore: cluster.url.clone(),
        }
    }

    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "tabby",
            "datastore": self.datastore,
            "nodename": self.name,
            "mtu": 1400,
            "ipam": {"type": "tabby-ipam"}
        })
    }

    /// Runs `program` inside this node's namespace, as a runtime on the node
    /// would, with `env` and `stdin`.
    fn run(&self, program: &str, env: &[(&str, &str)], stdin: &Value) -> Call {
        let mut cmd = self.ns.command(program);
        for var in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
            "CNI_PATH",
            "TABBY_DATASTORE",
            "TABBY_CNI_SOCKET",
            "TABBY_CNI_TRACE",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_with_stdin(cmd, stdin)
    }

    fn call(&self, cmd: &str, id: &str, pod: Option<&Netns>, conf: &Value) -> Call {
        let path = pod.map(|p| netns_path(p).to_string_lossy().into_owned());
        let mut env = vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        if let Some(p) = path.as_deref() {
            env.push(("CNI_NETNS", p));
        }
        self.run(TABBY, &env, conf)
    }

    fn add(&self, id: &str, pod: &Netns) -> Call {
        self.call("ADD", id, Some(pod), &self.conf("1.0.0"))
    }

    fn del(&self, id: &str, pod: Option<&Netns>) -> Call {
        self.call("DEL", id, pod, &self.conf("1.0.0"))
    }

    fn links(&self) -> String {
        self.ns.ip_stdout(["-o", "link"]).expect("links")
    }

    /// How many host-side pod veths (`tby…`) the node has.
    fn host_veths(&self) -> usize {
        self.links()
            .lines()
            .filter(|l| l.split(": ").nth(1).is_some_and(|n| n.starts_with("tby")))
            .count()
    }
}

fn run_with_stdin(mut cmd: Command, stdin: &Value) -> Call {
    let out = support::run_with_stdin(&mut cmd, stdin.to_string().as_bytes());
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    Call {
        code: out.status.code().unwrap_or(-1),
        stdout: if raw.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&raw).unwrap_or(Value::String(raw.clone()))
        },
        raw,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Gives a node namespace an uplink address (on a veth pair kept inside it)
/// for its pods to ping, as a host's own address.
fn give_host_address(node: &Node, addr: &str) {
    node.ns
        .ip(["link", "add", "up0", "type", "veth", "peer", "name", "up1"])
        .expect("uplink");
    node.ns.ip(["link", "set", "up1", "up"]).expect("up1");
    node.ns.addr_add("up0", addr).expect("host address");
}

#[test]
fn version_reports_every_supported_version() {
    let cluster = Cluster::new(false);
    let node = Node::new("cni-ver", "n1", &cluster);
    let call = node.run(
        TABBY,
        &[("CNI_COMMAND", "VERSION")],
        &json!({"cniVersion": "1.1.0"}),
    );
    assert_eq!(
        call.ok()["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn add_check_del_and_pods_reach_the_host_and_each_other() {
    let cluster = Cluster::new(false);
    let node = Node::new("cni-node", "node-1", &cluster);
    give_host_address(&node, "10.97.0.1/24");
    let a = Netns::new("cni-pa").expect("pod a");
    let b = Netns::new("cni-pb").expect("pod b");

    let add_a = node.add("ctr-a", &a);
    let result = add_a.ok().clone();
    assert_eq!(result["cniVersion"], "1.0.0");
    let addr_a = add_a.address();
    assert_eq!(addr_a.prefix_len(), 32);
    assert!(
        "10.96.0.0/16"
            .parse::<IpNet>()
            .expect("net")
            .contains(&addr_a.addr())
    );
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        netns_path(&a).to_string_lossy().as_ref()
    );
    let host_if = result["interfaces"][0]["name"]
        .as_str()
        .expect("host if")
        .to_owned();
    assert!(
        host_if.starts_with("tby") && host_if.len() == 14,
        "{host_if}"
    );
    let addr_b = node.add("ctr-b", &b).address();
    assert_ne!(addr_a, addr_b);

    // The kernel state the result describes.
    let pod_addr = a.ip_stdout(["-o", "addr", "show", "eth0"]).expect("addr");
    assert!(pod_addr.contains(&addr_a.to_string()), "{pod_addr}");
    let pod_routes = a.ip_stdout(["route"]).expect("routes");
    assert!(
        pod_routes.contains("default via 169.254.1.1 dev eth0"),
        "{pod_routes}"
    );
    let host_routes = node
        .ns
        .ip_stdout(["route", "show", &addr_a.addr().to_string()])
        .expect("host routes");
    assert!(
        host_routes.contains(&format!("dev {host_if}")),
        "{host_routes}"
    );
    assert!(
        host_routes.contains("proto 201") || host_routes.contains("proto tabby"),
        "{host_routes}"
    );
    assert!(
        a.ip_stdout(["link", "show", "eth0"])
            .expect("link")
            .contains("mtu 1400")
    );
    // One TX and one RX queue per end unless `numQueues` says otherwise.
    for details in [
        a.ip_stdout(["-d", "link", "show", "eth0"])
            .expect("pod end"),
        node.ns
            .ip_stdout(["-d", "link", "show", &host_if])
            .expect("host end"),
    ] {
        assert!(details.contains("numtxqueues 1 numrxqueues 1"), "{details}");
    }

    assert!(a.ping("10.97.0.1", 2), "pod a cannot reach the host");
    assert!(
        a.ping(&addr_b.addr().to_string(), 2),
        "pod a cannot reach pod b"
    );
    assert!(
        b.ping(&addr_a.addr().to_string(), 2),
        "pod b cannot reach pod a"
    );

    // The WorkloadEndpoint, as tabby-model reads it.
    let wep = cluster
        .get("/tabby/resources/v3/workloadendpoints/default/node--1-cni-ctr--a-eth0")
        .expect("WorkloadEndpoint of pod a");
    let Resource::WorkloadEndpoint(wep) = wep else {
        panic!("not a WorkloadEndpoint: {wep:?}");
    };
    assert_eq!(wep.spec.node, "node-1");
    assert_eq!(wep.spec.container_id, "ctr-a");
    assert_eq!(wep.spec.interface_name, host_if);
    assert_eq!(wep.spec.ip_networks[0].net(), addr_a);

    // CHECK with the ADD's result passes...
    let mut check = node.conf("1.0.0");
    check["prevResult"] = result.clone();
    let c = node.call("CHECK", "ctr-a", Some(&a), &check);
    c.ok();
    assert!(c.raw.trim().is_empty(), "CHECK prints nothing: {}", c.raw);
    // ...and fails once the pod's address is gone.
    a.ip(["addr", "del", &addr_a.to_string(), "dev", "eth0"])
        .expect("del addr");
    let c = node.call("CHECK", "ctr-a", Some(&a), &check);
    assert_eq!(c.error_code(), 100, "{}", c.raw);
    assert!(
        c.details().contains(&addr_a.addr().to_string()),
        "{}",
        c.details()
    );

    node.del("ctr-a", Some(&a)).ok();
    node.del("ctr-b", Some(&b)).ok();
    assert!(
        !node.links().contains(&host_if),
        "host veth left: {}",
        node.links()
    );
    assert!(
        a.ip(["link", "show", "eth0"]).is_err(),
        "pod end left behind"
    );
    assert!(
        cluster.allocated().is_empty(),
        "addresses left: {:?}",
        cluster.allocated()
    );
    assert!(
        cluster
            .get("/tabby/resources/v3/workloadendpoints/default/node--1-cni-ctr--a-eth0")
            .is_none(),
        "WorkloadEndpoint left after DEL"
    );
}

#[test]
fn every_spec_version_gets_its_result_format() {
    let cluster = Cluster::new(false);
    let node = Node::new("cni-vers", "node-v", &cluster);
    for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        let pod = Netns::new("cni-pv").expect("pod");
        let id = format!("ctr-v{i}");
        let r = node.call("ADD", &id, Some(&pod), &node.conf(v));
        let out = r.ok();
        assert_eq!(out["cniVersion"], *v);
        assert_eq!(
            out["ips"][0].get("version").is_some(),
            v.starts_with('0'),
            "{v}: {out}"
        );
        node.call("DEL", &id, Some(&pod), &node.conf(v)).ok();
    }
}

#[test]
fn pool_node_selector_follows_the_node_labels() {
    // The only pool selects `rack == 'a'`: a node labelled so gets an
    // address from it, an unlabelled node gets "addresses exhausted" (101).
    let cluster = Cluster::new(false);
    cluster.put_resource(
        "ippools",
        "pool-v4",
        json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "pool-v4"},
            "spec": {"cidr": "10.96.0.0/16", "blockSize": 26, "nodeSelector": "rack == 'a'"}
        }),
    );
    cluster.put_resource(
        "nodes",
        "node-ra",
        json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "Node",
            "metadata": {"name": "node-ra", "labels": {"rack": "a"}},
            "spec": {}
        }),
    );
    let labelled = Node::new("cni-sela", "node-ra", &cluster);
    let unlabelled = Node::new("cni-selb", "node-rb", &cluster);
    let pod_a = Netns::new("cni-psa").expect("pod");
    let pod_b = Netns::new("cni-psb").expect("pod");
    let got = labelled.add("ctr-sa", &pod_a).address();
    assert!(
        "10.96.0.0/16"
            .parse::<IpNet>()
            .expect("net")
            .contains(&got.addr()),
        "{got}"
    );
    let refused = unlabelled.add("ctr-sb", &pod_b);
    assert_eq!(refused.error_code(), 101, "{}", refused.details());
    assert_eq!(cluster.allocated(), vec![got.addr()]);
    labelled.del("ctr-sa", Some(&pod_a)).ok();
    unlabelled.del("ctr-sb", Some(&pod_b)).ok();
    assert!(cluster.allocated().is_empty(), "{:?}", cluster.allocated());
    cluster.ipam_check_is_clean();
}

#[test]
fn add_is_idempotent_and_del_twice_succeeds() {
    let cluster = Cluster::new(false);
    let node = Node::new("cni-idem", "node-i", &cluster);
    give_host_address(&node, "10.97.0.1/24");
    let pod = Netns::new("cni-pi").expect("pod");
    let first = node.add("ctr-i", &pod).address();
    let second = node.add("ctr-i", &pod).address();
    assert_eq!(first, second, "a repeated ADD must keep the address");
    assert_eq!(cluster.allocated(), vec![first.addr()]);
    assert_eq!(node.host_veths(), 1, "{}", node.links());
    assert!(
        pod.ping("10.97.0.1", 2),
        "pod lost connectivity after the second ADD"
    );

    node.del("ctr-i", Some(&pod)).ok();
    node.del("ctr-i", Some(&pod)).ok();
    // DEL when the namespace is gone, and without CNI_NETNS.
    let gone = Netns::new("cni-pg").expect("pod");
    node.add("ctr-g", &gone).ok();
    drop(gone);
    node.del("ctr-g", None).ok();
    assert!(cluster.allocated().is_empty(), "{:?}", cluster.allocated());
    assert_eq!(node.host_veths(), 0, "{}", node.links());
}

#[test]
fn bad_input_gets_the_right_error_code_and_allocates_nothing() {
    let cluster = Cluster::new(false);
    let node = Node::new("cni-bad", "node-b", &cluster);
    let pod = Netns::new("cni-pbad").expect("pod");

    // Missing CNI_NETNS: code 4 naming the variable.
    let c = node.call("ADD", "ctr-x", None, &node.conf("1.0.0"));
    assert_eq!(c.error_code(), 4, "{}", c.raw);
    assert!(c.details().contains("CNI_NETNS"), "{}", c.details());
    // A namespace that does not exist: code 3.
    let mut env_conf = node.conf("1.0.0");
    let c = node.run(
        TABBY,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ctr-x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/var/run/netns/tby-no-such-namespace"),
        ],
        &env_conf,
    );
    assert_eq!(c.error_code(), 3, "{}", c.raw);
    // Not JSON: code 6.
    let mut cmd = node.ns.command(TABBY);
    cmd.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "ctr-x")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", netns_path(&pod))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = support::run_with_stdin(&mut cmd, b"{broken");
    let v: Value = serde_json::from_slice(&out.stdout).expect("error json");
    assert_eq!(v["code"], 6, "{v}");
    // Invalid fields: code 7 naming them; unsupported version: code 1.
    for (field, value, code) in [
        ("mtu", json!(10), 7),
        (
            "ipam",
            json!({"type": "tabby-ipam", "ipv4Pools": ["fd00::/64"]}),
            7,
        ),
        (
            "ipam",
            json!({"type": "tabby-ipam", "ipv4Pools": ["no-such-pool"]}),
            7,
        ),
        ("cniVersion", json!("0.2.0"), 1),
        ("ipMasq", json!(true), 2),
    ] {
        env_conf = node.conf("1.0.0");
        env_conf[field] = value.clone();
        let c = node.call("ADD", "ctr-x", Some(&pod), &env_conf);
        assert_eq!(c.error_code(), code, "{field}={value}: {}", c.raw);
        let details = c.details();
        assert!(
            details.contains(field) || (field == "ipam" && details.contains("ipam")),
            "{details}"
        );
    }
    assert!(cluster.allocated().is_empty(), "{:?}", cluster.allocated());
    assert_eq!(node.host_veths(), 0, "{}", node.links());
    assert!(
        pod.ip(["link", "show", "eth0"]).is_err(),
        "interface left in the pod"
    );
}

#[test]
fn failed_wiring_rolls_back_the_allocation() {
    let cluster = Cluster::new(false);
    let node = Node::new("cni-rb", "node-r", &cluster);
    let pod = Netns::new("cni-prb").expect("pod");
    // The pod already has an eth0: the veth cannot be created.
    pod.ip(["link", "add", "eth0", "type", "veth", "peer", "name", "x0"])
        .expect("clash");
    let c = node.add("ctr-rb", &pod);
    assert_ne!(c.code, 0, "{}", c.raw);
    assert!(c.details().contains("create veth"), "{}", c.details());
    assert!(cluster.allocated().is_empty(), "{:?}", cluster.allocated());
    assert_eq!(node.host_veths(), 0, "{}", node.links());
    // No WorkloadEndpoint left behind either (it is written while the veth
    // is created).
    let key = "/tabby/resources/v3/workloadendpoints/default/node--r-cni-ctr--rb-eth0";
    assert!(cluster.get(key).is_none(), "endpoint record left behind");
    cluster.ipam_check_is_clean();
}

#[test]
fn pods_on_two_nodes_reach_each_other_through_static_routes() {
    let cluster = Cluster::new(false);
    let n1 = Node::new("cni-n1", "node-1", &cluster);
    let n2 = Node::new("cni-n2", "node-2", &cluster);
    tabby_testbed::veth(
        &n1.ns,
        "ens1",
        Some("10.97.0.1/30"),
        &n2.ns,
        "ens1",
        Some("10.97.0.2/30"),
    )
    .expect("node link");
    let p1 = Netns::new("cni-p1").expect("pod 1");
    let p2 = Netns::new("cni-p2").expect("pod 2");
    let a1 = n1.add("ctr-1", &p1).address().addr();
    let a2 = n2.add("ctr-2", &p2).address().addr();
    let block = |a: IpAddr| IpNet::new(a, 26).expect("block").trunc().to_string();
    assert_ne!(block(a1), block(a2), "each node gets its own block");
    n1.ns
        .ip(["route", "add", &block(a2), "via", "10.97.0.2"])
        .expect("route 1");
    n2.ns
        .ip(["route", "add", &block(a1), "via", "10.97.0.1"])
        .expect("route 2");
    assert!(
        p1.ping(&a2.to_string(), 3),
        "pod on node 1 cannot reach pod on node 2"
    );
    assert!(
        p2.ping(&a1.to_string(), 3),
        "pod on node 2 cannot reach pod on node 1"
    );
    n1.del("ctr-1", Some(&p1)).ok();
    n2.del("ctr-2", Some(&p2)).ok();
    assert!(cluster.allocated().is_empty());
}

#[test]
fn dual_stack_pod() {
    let cluster = Cluster::new(true);
    let node = Node::new("cni-ds", "node-6", &cluster);
    give_host_address(&node, "10.97.0.1/24");
    node.ns
        .ip(["-6", "addr", "add", "fd00:97::1/64", "dev", "up0", "nodad"])
        .expect("v6 host address");
    let pod = Netns::new("cni-p6").expect("pod");
    let mut conf = node.conf("1.1.0");
    conf["ipam"]["assignIpv6"] = json!(true);
    let r = node.call("ADD", "ctr-6", Some(&pod), &conf);
    let ips: Vec<String> = r.ok()["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .map(|i| i["address"].as_str().expect("address").to_owned())
        .collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(
        ips[1].ends_with("/128") && ips[1].starts_with("fd00:96:"),
        "{ips:?}"
    );
    assert_eq!(r.ok()["interfaces"][1]["mtu"], 1400);
    assert!(
        pod.ping("fd00:97::1", 3),
        "pod cannot reach the host over IPv6"
    );
    assert!(
        pod.ping("10.97.0.1", 2),
        "pod cannot reach the host over IPv4"
    );
    node.call("DEL", "ctr-6", Some(&pod), &conf).ok();
    assert!(cluster.allocated().is_empty());
}

#[test]
fn status_and_gc() {
    let cluster = Cluster::new(false);
    let node = Node::new("cni-gc", "node-g", &cluster);
    let conf = node.conf("1.1.0");
    node.run(TABBY, &[("CNI_COMMAND", "STATUS")], &conf).ok();
    let mut broken = conf.clone();
    broken["datastore"] = json!("sqlite:///proc/no/such/dir/x.db");
    let c = node.run(TABBY, &[("CNI_COMMAND", "STATUS")], &broken);
    assert_eq!(c.error_code(), 50, "{}", c.raw);

    let keep = Netns::new("cni-pk").expect("pod");
    let stale = Netns::new("cni-ps").expect("pod");
    let kept = node
        .call("ADD", "ctr-keep", Some(&keep), &conf)
        .address()
        .addr();
    node.call("ADD", "ctr-stale", Some(&stale), &conf).ok();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-keep", "ifname": "eth0"}]);
    let c = node.run(TABBY, &[("CNI_COMMAND", "GC")], &gc);
    c.ok();
    assert_eq!(
        cluster.allocated(),
        vec![kept],
        "GC must release only the stale one"
    );
    assert_eq!(node.host_veths(), 1, "{}", node.links());
    assert!(
        stale.ip(["link", "show", "eth0"]).is_err(),
        "stale interface left"
    );
}

/// Runs `cmd` for every pod at once, one plugin process per pod (container
/// id `<prefix>-<i>`), through the node service at `socket` when given;
/// asserts each succeeded and returns the addresses ADD handed out.
fn concurrent_calls(
    node: &Node,
    cmd: &str,
    pods: &[Netns],
    prefix: &str,
    socket: Option<&str>,
) -> BTreeSet<String> {
    let conf = node.conf("1.0.0").to_string();
    let children: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            let mut c = node.ns.command(TABBY);
            c.env("CNI_COMMAND", cmd)
                .env("CNI_CONTAINERID", format!("{prefix}-{i}"))
                .env("CNI_IFNAME", "eth0")
                .env("CNI_NETNS", netns_path(pod))
                .env_remove("TABBY_CNI_TRACE")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(socket) = socket {
                c.env("TABBY_CNI_SOCKET", socket);
            }
            let mut child = c.spawn().expect("spawn");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(conf.as_bytes())
                .expect("stdin");
            child
        })
        .collect();
    let mut addresses = BTreeSet::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{cmd} {i}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if cmd == "ADD" {
            let v: Value = serde_json::from_slice(&out.stdout).expect("result");
            addresses.insert(v["ips"][0]["address"].as_str().expect("address").to_owned());
        }
    }
    addresses
}

#[test]
fn two_hundred_concurrent_adds_get_distinct_addresses() {
    const PODS: usize = 200;
    let cluster = Cluster::new(false);
    let node = Node::new("cni-many", "node-m", &cluster);
    let pods: Vec<Netns> = (0..PODS)
        .map(|_| Netns::new("cni-pm").expect("pod"))
        .collect();
    let addresses = concurrent_calls(&node, "ADD", &pods, "ctr", None);
    assert_eq!(addresses.len(), PODS, "addresses were handed out twice");
    assert_eq!(cluster.allocated().len(), PODS);
    // Every allocation has its WorkloadEndpoint: no leak, nothing damaged.
    cluster.ipam_check_is_clean();

    concurrent_calls(&node, "DEL", &pods, "ctr", None);
    assert!(cluster.allocated().is_empty(), "{:?}", cluster.allocated());
    assert_eq!(node.host_veths(), 0, "{}", node.links());
    cluster.ipam_check_is_clean();
}

#[test]
fn tabby_ipam_under_the_reference_ptp_plugin() {
    let cluster = Cluster::new(false);
    let node = Node::new("cni-ptp", "node-p", &cluster);
    let bin = tempfile::tempdir().expect("bin dir");
    std::os::unix::fs::symlink(TABBY, bin.path().join("tabby-ipam")).expect("symlink");
    let cni_path = format!("{}:/usr/lib/cni", bin.path().display());
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "ptp-net",
        "type": "ptp",
        "ipMasq": false,
        "mtu": 1400,
        "ipam": {"type": "tabby-ipam", "datastore": cluster.url, "nodename": "node-p"}
    });
    let pod = Netns::new("cni-pptp").expect("pod");
    let path = netns_path(&pod).to_string_lossy().into_owned();
    let env = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "ctr-ptp"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", path.as_str()),
            ("CNI_PATH", cni_path.as_str()),
        ]
    };
    let r = node.run("/usr/lib/cni/ptp", &env("ADD"), &conf);
    let out = r.ok().clone();
    let addr: IpNet = out["ips"][0]["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("cidr");
    assert!(
        "10.96.0.0/16"
            .parse::<IpNet>()
            .expect("net")
            .contains(&addr.addr())
    );
    assert_eq!(cluster.allocated(), vec![addr.addr()]);
    // ptp puts the gateway tabby-ipam returned on the host end.
    assert!(
        pod.ping("169.254.1.1", 2),
        "pod cannot reach the host through ptp"
    );
    let r = node.run("/usr/lib/cni/ptp", &env("DEL"), &conf);
    r.ok();
    assert!(cluster.allocated().is_empty(), "{:?}", cluster.allocated());
}

/// `tabby cni serve` inside a node's namespace, on a socket in a
/// temporary directory; killed (by PID) on drop.
struct Service {
    _dir: tempfile::TempDir,
    socket: String,
    process: Process,
}

impl Service {
    fn start(node: &Node) -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("cni.sock").to_string_lossy().into_owned();
        let mut cmd = node.ns.command(TABBY);
        cmd.args(["cni", "serve", "--socket", &socket])
            .env_remove("CNI_COMMAND")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Process::spawn(&mut cmd).expect("tabby cni serve");
        wait_until(
            std::time::Duration::from_secs(20),
            "the CNI service socket",
            || Path::new(&socket).exists(),
        )
        .expect("service listening");
        Service {
            _dir: dir,
            socket,
            process,
        }
    }
}

impl Node {
    /// A plugin call that may forward to the service at `socket`, traced:
    /// the trace on stderr says whether it was forwarded.
    fn call_via(
        &self,
        socket: &str,
        cmd: &str,
        id: &str,
        pod: Option<&Netns>,
        conf: &Value,
    ) -> (Call, bool) {
        let path = pod.map(|p| netns_path(p).to_string_lossy().into_owned());
        let mut env = vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            ("TABBY_CNI_SOCKET", socket),
            ("TABBY_CNI_TRACE", "1"),
        ];
        if let Some(p) = path.as_deref() {
            env.push(("CNI_NETNS", p));
        }
        let c = self.run(TABBY, &env, conf);
        let forwarded = c.stderr.contains("forwarded@");
        (c, forwarded)
    }
}

#[test]
fn the_node_service_serves_add_check_del_and_the_plugin_falls_back_without_it() {
    let cluster = Cluster::new(false);
    let node = Node::new("cni-svc", "node-s", &cluster);
    give_host_address(&node, "10.97.0.1/24");
    let mut service = Service::start(&node);
    let sock = service.socket.clone();
    let a = Netns::new("cni-psa").expect("pod a");

    // ADD through the service: same result as the direct path, pod works.
    let (add, forwarded) = node.call_via(&sock, "ADD", "ctr-sa", Some(&a), &node.conf("1.0.0"));
    assert!(forwarded, "ADD was not forwarded: {}", add.stderr);
    let result = add.ok().clone();
    let addr = add.address();
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        netns_path(&a).to_string_lossy().as_ref()
    );
    assert!(a.ping("10.97.0.1", 2), "pod cannot reach the host");
    // Idempotent through the service too.
    let (again, forwarded) = node.call_via(&sock, "ADD", "ctr-sa", Some(&a), &node.conf("1.0.0"));
    assert!(forwarded);
    assert_eq!(again.address(), addr);
    // CHECK with the ADD's result.
    let mut check = node.conf("1.0.0");
    check["prevResult"] = result.clone();
    let (c, forwarded) = node.call_via(&sock, "CHECK", "ctr-sa", Some(&a), &check);
    assert!(forwarded);
    assert_eq!(c.code, 0, "{} {}", c.raw, c.stderr);
    // Errors come back as the plugin's own: a missing CNI_NETNS is code 4.
    let (e, forwarded) = node.call_via(&sock, "ADD", "ctr-x", None, &node.conf("1.0.0"));
    assert!(forwarded);
    assert_eq!(e.error_code(), 4, "{}", e.raw);
    assert!(e.stderr.contains("CNI_NETNS"), "{}", e.stderr);
    // VERSION never needs the service.
    let (v, forwarded) = node.call_via(&sock, "VERSION", "", None, &node.conf("1.0.0"));
    assert!(!forwarded);
    assert_eq!(v.ok()["cniVersion"], "1.0.0");

    // Concurrent ADDs through the service get distinct addresses.
    let pods: Vec<Netns> = (0..40)
        .map(|_| Netns::new("cni-psm").expect("pod"))
        .collect();
    let addresses = concurrent_calls(&node, "ADD", &pods, "ctr-sm", Some(sock.as_str()));
    assert_eq!(addresses.len(), 40);
    assert!(!addresses.contains(&addr.to_string()));
    cluster.ipam_check_is_clean();
    concurrent_calls(&node, "DEL", &pods, "ctr-sm", Some(sock.as_str()));

    // A plugin in another node's namespace is not served (the host end
    // belongs in its own namespace): it does the work itself.
    let other = Node::new("cni-svo", "node-o", &cluster);
    let b = Netns::new("cni-psb").expect("pod b");
    let (add_b, forwarded) = other.call_via(&sock, "ADD", "ctr-sb", Some(&b), &other.conf("1.0.0"));
    assert!(!forwarded, "a plugin in another namespace was served");
    add_b.ok();
    assert_eq!(other.host_veths(), 1, "{}", other.links());
    assert_eq!(node.host_veths(), 1, "{}", node.links());
    let (del_b, _) = other.call_via(&sock, "DEL", "ctr-sb", Some(&b), &other.conf("1.0.0"));
    assert_eq!(del_b.code, 0, "{}", del_b.raw);

    // DEL through the service, twice.
    for _ in 0..2 {
        let (d, forwarded) = node.call_via(&sock, "DEL", "ctr-sa", Some(&a), &node.conf("1.0.0"));
        assert!(forwarded);
        assert_eq!(d.code, 0, "{} {}", d.raw, d.stderr);
    }
    assert!(cluster.allocated().is_empty(), "{:?}", cluster.allocated());
    assert_eq!(node.host_veths(), 0, "{}", node.links());

    // The service gone (its socket file left behind): the plugin does the
    // work itself.
    service.process.signal("KILL").expect("kill the service");
    wait_until(
        std::time::Duration::from_secs(10),
        "the service to exit",
        || !service.process.is_running(),
    )
    .expect("service exited");
    assert!(Path::new(&sock).exists(), "stale socket kept for the test");
    let (add, forwarded) = node.call_via(&sock, "ADD", "ctr-sa", Some(&a), &node.conf("1.0.0"));
    assert!(!forwarded);
    add.ok();
    let (del, _) = node.call_via(&sock, "DEL", "ctr-sa", Some(&a), &node.conf("1.0.0"));
    assert_eq!(del.code, 0, "{}", del.raw);
    assert!(cluster.allocated().is_empty());
    cluster.ipam_check_is_clean();
}

#[test]
fn pools_come_from_the_config_or_the_pod_annotation() {
    let cluster = Cluster::new(false); // pool-v4: 10.96.0.0/16
    cluster.put_pool("pool-b", "10.98.0.0/16", 26);
    let node = Node::new("cni-pool", "node-p", &cluster);
    let in_net = |a: IpNet, net: &str| net.parse::<IpNet>().expect("net").contains(&a.addr());

    // The configuration names pool-b.
    let a = Netns::new("cni-ppa").expect("pod");
    let mut conf = node.conf("1.0.0");
    conf["ipam"]["ipv4Pools"] = json!(["pool-b"]);
    let got = node.call("ADD", "ctr-pa", Some(&a), &conf).address();
    assert!(in_net(got, "10.98.0.0/16"), "{got}");

    // The pod's annotation (containerd's runtimeConfig) overrides it.
    let b = Netns::new("cni-ppb").expect("pod");
    let mut conf = node.conf("1.0.0");
    conf["ipam"]["ipv4Pools"] = json!(["pool-b"]);
    conf["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations":
        {"cni.projectcalico.org/ipv4pools": "[\"pool-v4\"]"}});
    let got = node.call("ADD", "ctr-pb", Some(&b), &conf).address();
    assert!(in_net(got, "10.96.0.0/16"), "{got}");

    // ... and so does the annotation in CNI_ARGS, by CIDR.
    let c = Netns::new("cni-ppc").expect("pod");
    let path = netns_path(&c).to_string_lossy().into_owned();
    let call = node.run(
        TABBY,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ctr-pc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", &path),
            (
                "CNI_ARGS",
                "cni.projectcalico.org/ipv4pools=[\"10.98.0.0/16\"]",
            ),
        ],
        &node.conf("1.0.0"),
    );
    let got = call.address();
    assert!(in_net(got, "10.98.0.0/16"), "{got}");
    cluster.ipam_check_is_clean();
}

/// etcd inside a node's namespace, on that namespace's loopback (so the
/// plugin and the service reach it, and nothing outside the test does);
/// killed by PID on drop.
struct NodeEtcd {
    dir: tempfile::TempDir,
    process: Option<Process>,
}

/// The client port of [`NodeEtcd`] (private to the node's namespace).
const NODE_ETCD_PORT: u16 = 23979;

impl NodeEtcd {
    fn start(node: &Node) -> NodeEtcd {
        let mut etcd = NodeEtcd {
            dir: tempfile::tempdir().expect("tempdir"),
            process: None,
        };
        etcd.start_again(node);
        etcd
    }

    fn url() -> String {
        format!("etcd://127.0.0.1:{NODE_ETCD_PORT}")
    }

    /// Starts the member (again, on the same data directory) and waits
    /// until it answers.
    fn start_again(&mut self, node: &Node) {
        let client = format!("http://127.0.0.1:{NODE_ETCD_PORT}");
        let peer = format!("http://127.0.0.1:{}", NODE_ETCD_PORT + 1);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("log");
        let mut cmd = node.ns.command("etcd");
        cmd.args(["--name", "n1", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n1={peer}")])
            .stdout(Stdio::null())
            .stderr(log);
        self.process = Some(node.ns.spawn(&mut cmd).expect("etcd"));
        let endpoint = format!("127.0.0.1:{NODE_ETCD_PORT}");
        wait_until(std::time::Duration::from_secs(30), "etcd to answer", || {
            node.ns
                .exec("etcdctl", ["--endpoints", &endpoint, "endpoint", "health"])
                .is_ok()
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {}",
                std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
            )
        });
    }

    fn stop(&mut self) {
        self.process = None;
    }
}

/// Runs `tabby ARGS...` (not as a plugin) inside the node's namespace with
/// `stdin`; returns stdout, panicking with stderr on failure.
fn tabby_in(node: &Node, args: &[&str], stdin: &str) -> String {
    let mut cmd = node.ns.command(TABBY);
    cmd.args(args)
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = support::run_with_stdin(&mut cmd, stdin.as_bytes());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tabby {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Established TCP connections from `pid` to the node's etcd.
fn etcd_connections_of(node: &Node, pid: u32) -> usize {
    let dst = format!("dst 127.0.0.1:{NODE_ETCD_PORT}");
    let out = node
        .ns
        .exec("ss", ["-Htnp", "state", "established", &dst])
        .expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .count()
}

#[test]
fn the_node_service_keeps_its_etcd_client_between_requests() {
    let cluster = Cluster::new(false); // only for Node::new; the pods use etcd
    let mut node = Node::new("cni-sve", "node-e", &cluster);
    let mut etcd = NodeEtcd::start(&node);
    let url = NodeEtcd::url();
    node.datastore = url.clone();
    tabby_in(
        &node,
        &["--datastore", &url, "apply", "-f", "-"],
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool-e\nspec:\n  cidr: 10.96.0.0/16\n  blockSize: 26\n",
    );
    give_host_address(&node, "10.97.0.1/24");
    let service = Service::start(&node);
    let sock = service.socket.clone();
    let service_pid = service.process.id();
    let pods: Vec<Netns> = (0..3)
        .map(|_| Netns::new("cni-pse").expect("pod"))
        .collect();
    let pool: IpNet = "10.96.0.0/16".parse().expect("pool");

    // Two ADDs through the service: distinct addresses from the etcd pool,
    // and the service keeps one client (its connection stays open and is
    // reused, not one per request).
    let mut addresses = BTreeSet::new();
    let mut connections = Vec::new();
    for (i, pod) in pods.iter().take(2).enumerate() {
        let id = format!("ctr-e{i}");
        let (add, forwarded) = node.call_via(&sock, "ADD", &id, Some(pod), &node.conf("1.0.0"));
        assert!(forwarded, "ADD was not forwarded: {}", add.stderr);
        let addr = add.address();
        assert!(pool.contains(&addr.addr()), "{addr} not from the pool");
        addresses.insert(addr.addr());
        connections.push(etcd_connections_of(&node, service_pid));
    }
    assert_eq!(addresses.len(), 2, "{addresses:?}");
    assert!(pods[0].ping("10.97.0.1", 2), "pod cannot reach the host");
    assert!(
        connections[0] >= 1,
        "the service holds no connection to etcd after a request"
    );
    assert_eq!(
        connections[0], connections[1],
        "the service opened another etcd connection for the second request"
    );

    // etcd restarts: the cached client reconnects, as a runtime retrying
    // ADD would see it (a retry on code 11, "try again later", is allowed).
    etcd.stop();
    etcd.start_again(&node);
    let mut third = None;
    for _ in 0..20 {
        let (add, forwarded) =
            node.call_via(&sock, "ADD", "ctr-e2", Some(&pods[2]), &node.conf("1.0.0"));
        assert!(forwarded, "{}", add.stderr);
        if add.code == 0 {
            third = Some(add.address());
            break;
        }
        assert_eq!(add.error_code(), 11, "{} {}", add.raw, add.stderr);
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let third = third.expect("ADD never succeeded after etcd came back");
    assert!(
        !addresses.contains(&third.addr()),
        "{third} handed out twice"
    );

    for (i, pod) in pods.iter().enumerate() {
        let (del, forwarded) = node.call_via(
            &sock,
            "DEL",
            &format!("ctr-e{i}"),
            Some(pod),
            &node.conf("1.0.0"),
        );
        assert!(forwarded);
        assert_eq!(del.code, 0, "{} {}", del.raw, del.stderr);
    }
    assert_eq!(node.host_veths(), 0, "{}", node.links());
    let check = tabby_in(&node, &["--datastore", &url, "ipam", "check"], "");
    assert!(check.contains("Found 0 problems."), "{check}");
    service.process.signal("KILL").expect("kill the service");
}
