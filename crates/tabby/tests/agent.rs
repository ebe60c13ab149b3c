//! `tabby agent` end to end: "nodes" are network namespaces on one L2
//! segment (a bridge in a namespace of its own), sharing one SQLite
//! datastore file, each running the real `tabby agent`; pods are created
//! with the real CNI plugin inside each node namespace; a BIRD 2 "ToR"
//! runs in a namespace of its own on the same segment.
//!
//! Runs as root. Addresses: node segment 10.79.0.0/24, pools 10.80.0.0/16
//! (mesh test), 10.81.0.0/16 (ToR test) and others per test; all inside the test's
//! namespaces.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{
    Segment, TABBY, agent_command, cni_command, cni_conf, mtu_file, node_status, run_with_stdin,
    wait,
};
use tabby_testbed::{Netns, Process};

const BIRD2: &str = "/opt/bird2/usr/sbin/bird";
const BIRDC2: &str = "/opt/bird2/usr/sbin/birdc";

/// Temporary state: the datastore file and sockets.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    /// The namespace the CLI runs in (for a datastore only reachable there).
    cli_netns: Option<String>,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/tabby.db", dir.path().display());
        Cluster {
            dir,
            url,
            cli_netns: None,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `tabby <args>` with this datastore; panics with stderr on failure.
    fn tabby(&self, args: &[&str], stdin: &str) -> String {
        let mut cmd = match &self.cli_netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, TABBY]);
                c
            }
            None => Command::new(TABBY),
        };
        let out = run_with_stdin(
            cmd.arg("--datastore").arg(&self.url).args(args),
            stdin.as_bytes(),
        );
        assert!(
            out.status.success(),
            "tabby {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) {
        self.tabby(&["apply", "-f", "-"], yaml);
    }
}

/// A node namespace with its agent.
struct Node {
    name: String,
    ns: Netns,
    ip: String,
    socket: PathBuf,
    /// The agent's CNI service socket (the plugin is pointed at it).
    cni_socket: PathBuf,
    agent: Option<Process>,
    pods: Vec<(Netns, String)>,
    /// The plugin's stderr of the last ADD (traced: `forwarded@` says the
    /// agent's CNI service ran it).
    last_cni_stderr: String,
}

impl Node {
    fn new(cluster: &Cluster, seg: &mut Segment, name: &str, ip: &str) -> Node {
        let ns = Netns::new("agnode").expect("node netns");
        seg.plug(&ns, "eth0", &format!("{ip}/24"));
        Node {
            name: name.to_owned(),
            ns,
            ip: ip.to_owned(),
            socket: cluster.path(&format!("{name}.sock")),
            cni_socket: cluster.path(&format!("{name}-cni.sock")),
            agent: None,
            pods: Vec::new(),
            last_cni_stderr: String::new(),
        }
    }

    fn start_agent(&mut self, cluster: &Cluster) {
        self.start_agent_with(cluster, &[]);
    }

    fn start_agent_with(&mut self, cluster: &Cluster, extra: &[&str]) {
        let log = std::fs::File::create(cluster.path(&format!("{}.log", self.name))).expect("log");
        let mut cmd = agent_command(
            &self.ns,
            &cluster.url,
            &self.name,
            &self.ip,
            &self.socket,
            &cluster.path(&format!("{}-state", self.name)),
            log,
        );
        cmd.arg("--cni-socket").arg(&self.cni_socket).args(extra);
        self.agent = Some(self.ns.spawn(&mut cmd).expect("agent"));
    }

    /// The MTU file this node's agent writes (and its pods read).
    fn mtu_file(&self, cluster: &Cluster) -> PathBuf {
        mtu_file(&cluster.path(&format!("{}-state", self.name)))
    }

    fn log(&self, cluster: &Cluster) -> String {
        std::fs::read_to_string(cluster.path(&format!("{}.log", self.name))).unwrap_or_default()
    }

    /// `tabby node status -o json`, or None while the agent is not answering.
    fn status(&self) -> Option<Vec<Value>> {
        node_status(&self.socket)
    }

    fn established(&self) -> BTreeSet<String> {
        self.status()
            .unwrap_or_default()
            .iter()
            .filter(|s| s["state"] == "Established")
            .filter_map(|s| s["peerAddress"].as_str().map(str::to_owned))
            .collect()
    }

    /// Adds a pod through the CNI plugin; returns its IPv4 address.
    fn add_pod(&mut self, cluster: &Cluster, id: &str) -> String {
        self.add_pod_with(cluster, id, false)[0].clone()
    }

    /// Runs the CNI plugin in this node's namespace, pointed at the
    /// agent's CNI service and traced; asserts it succeeded.
    fn cni(&self, command: &str, id: &str, pod: &Netns, conf: &Value) -> std::process::Output {
        let out = run_with_stdin(
            cni_command(&self.ns, command, id, pod, &self.cni_socket).env("TABBY_CNI_TRACE", "1"),
            conf.to_string().as_bytes(),
        );
        assert!(
            out.status.success(),
            "CNI {command} on {}: {} {}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Adds a pod; returns its addresses (IPv4, then IPv6 with `v6`).
    fn add_pod_with(&mut self, cluster: &Cluster, id: &str, v6: bool) -> Vec<String> {
        let pod = Netns::new("agpod").expect("pod netns");
        let mut ipam = serde_json::json!({"type": "tabby-ipam"});
        if v6 {
            ipam["assign_ipv6"] = "true".into();
        }
        let mut conf = cni_conf(&cluster.url, &self.name, ipam);
        conf["mtuFile"] = self.mtu_file(cluster).display().to_string().into();
        let out = self.cni("ADD", id, &pod, &conf);
        self.last_cni_stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let result: Value = serde_json::from_slice(&out.stdout).expect("CNI result");
        let addrs: Vec<String> = result["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .filter_map(|ip| ip["address"].as_str())
            .filter_map(|a| a.split('/').next())
            .map(str::to_owned)
            .collect();
        assert!(!addrs.is_empty(), "no address in {result}");
        self.pods.push((pod, addrs[0].clone()));
        addrs
    }

    /// Deletes the pod `id` (in `pod`) through the CNI plugin, pointed at
    /// the agent's CNI service; returns the plugin's (traced) stderr.
    fn del_pod(&self, cluster: &Cluster, id: &str, pod: &Netns) -> String {
        let conf = cni_conf(
            &cluster.url,
            &self.name,
            serde_json::json!({"type": "tabby-ipam"}),
        );
        let out = self.cni("DEL", id, pod, &conf);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn routes(&self) -> String {
        self.ns
            .ip_stdout(["-4", "route", "show", "proto", "tabby"])
            .expect("ip route")
    }
}

/// The pod block (a /26) that `addr` lies in.
fn block_of(addr: &str) -> String {
    let ip: std::net::Ipv4Addr = addr.parse().expect("ip");
    let net = ipnet::Ipv4Net::new(ip, 26).expect("net").trunc();
    net.to_string()
}

fn logs(cluster: &Cluster, nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "--- {} routes:\n{}--- log:\n{}",
                n.name,
                n.routes(),
                n.log(cluster)
            )
        })
        .collect()
}

/// Gives the i-th node (from 0) `fd00:79::(i+1)/64` on `eth0` and starts
/// its agent with that as `--ip6`.
fn start_dual_stack(cluster: &Cluster, nodes: &mut [Node]) {
    for (i, n) in nodes.iter_mut().enumerate() {
        let v6 = format!("fd00:79::{}", i + 1);
        n.ns.ip([
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .expect("v6 address");
        n.start_agent_with(cluster, &["--ip6", &format!("{v6}/64")]);
    }
}

/// Nodes named `names` on the segment, the i-th (from 0) at 10.79.0.(i+1).
fn nodes_on(cluster: &Cluster, seg: &mut Segment, names: &[&str]) -> Vec<Node> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| Node::new(cluster, seg, n, &format!("10.79.0.{}", i + 1)))
        .collect()
}

#[test]
fn the_agent_serves_cni_requests_and_a_second_agent_on_its_socket_runs_on_without() {
    let cluster = Cluster::new();
    let mut seg = Segment::new("agsw");
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.86.0.0/16}\n",
    );
    let mut node = Node::new(&cluster, &mut seg, "cs1", "10.79.0.41");
    node.start_agent(&cluster);
    wait(
        "the agent's CNI service socket",
        || node.cni_socket.exists() && node.status().is_some(),
        || node.log(&cluster),
    );

    // ADD goes through the agent's service and the pod reaches its node.
    let addr = node.add_pod(&cluster, "svc-pod");
    assert!(
        node.last_cni_stderr.contains("forwarded@"),
        "ADD was not served by the agent: {}",
        node.last_cni_stderr
    );
    assert!(addr.starts_with("10.86."), "{addr}");
    let (pod, _) = node.pods.last().expect("pod");
    assert!(pod.ping("10.79.0.41", 2), "the pod cannot reach its node");
    let veths = node
        .ns
        .ip_stdout(["-4", "route", "show", &addr])
        .expect("ip route");
    assert!(!veths.trim().is_empty(), "no route to the pod {addr}");

    // A second agent on the same CNI socket (another node on this host)
    // warns and runs on; the first agent keeps serving.
    let mut other = Node::new(&cluster, &mut seg, "cs2", "10.79.0.42");
    other.cni_socket = node.cni_socket.clone();
    other.start_agent(&cluster);
    wait(
        "the second agent's warning",
        || other.log(&cluster).contains("CNI service not started"),
        || other.log(&cluster),
    );
    wait(
        "the two agents' mesh session",
        || other.established().contains("10.79.0.41"),
        || format!("{}\n{}", node.log(&cluster), other.log(&cluster)),
    );

    // DEL through the service too: the pod's route is gone.
    let stderr = node.del_pod(&cluster, "svc-pod", pod);
    assert!(
        stderr.contains("forwarded@"),
        "DEL was not served: {stderr}"
    );
    let after = node
        .ns
        .ip_stdout(["-4", "route", "show", &addr])
        .expect("ip route");
    assert!(after.trim().is_empty(), "route to {addr} left: {after}");
}

#[test]
fn three_agents_mesh_program_routes_and_pods_ping_across_nodes() {
    let cluster = Cluster::new();
    let mut seg = Segment::new("agsw");
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.80.0.0/16, natOutgoing: true}\n",
    );
    let mut nodes = nodes_on(&cluster, &mut seg, &["n1", "n2", "n3"]);
    nodes[0].start_agent_with(&cluster, &["--metrics-listen", "127.0.0.1:9091"]);
    for n in &mut nodes[1..] {
        n.start_agent(&cluster);
    }
    let mut pods = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        pods.push(n.add_pod(&cluster, &format!("pod{i}")));
    }
    // Mesh: every node Established with the two others.
    for n in &nodes {
        let others: BTreeSet<String> = nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| o.ip.clone())
            .collect();
        wait(
            &format!("{}'s mesh sessions", n.name),
            || n.established() == others,
            || format!("{:?}\n{}", n.status(), logs(&cluster, &nodes)),
        );
        let status = n.status().expect("status");
        assert!(
            status.iter().all(|s| s["peerType"] == "node-to-node mesh"),
            "{status:?}"
        );
    }
    // Forwarding on (a new namespace starts with it off) and the NAT table
    // for the natOutgoing pool.
    for n in &nodes {
        let fwd =
            n.ns.exec("cat", ["/proc/sys/net/ipv4/ip_forward"])
                .expect("sysctl");
        assert_eq!(
            String::from_utf8_lossy(&fwd.stdout).trim(),
            "1",
            "{}",
            n.name
        );
        let nat =
            n.ns.exec("nft", ["list", "table", "inet", "tabby-nat"])
                .expect("tabby-nat table");
        let nat = String::from_utf8_lossy(&nat.stdout).into_owned();
        assert!(
            nat.contains("10.80.0.0/16") && nat.contains("masquerade"),
            "{nat}"
        );
    }

    // Metrics, as Prometheus scrapes them (HTTP inside n1's namespace).
    let metrics = || {
        nodes[0]
            .ns
            .exec(
                "bash",
                [
                    "-c",
                    "exec 3<>/dev/tcp/127.0.0.1/9091; printf 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3",
                ],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    wait(
        "n1's metrics",
        || metrics().contains("tabby_agent_bgp_sessions_established 2\n"),
        metrics,
    );
    let m = metrics();
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    assert!(
        m.contains("tabby_agent_bgp_session_up{peer=\"10.79.0.2\",type=\"node-to-node mesh\",state=\"Established\"} 1"),
        "{m}"
    );
    assert!(m.contains("tabby_agent_local_blocks 1\n"), "{m}");

    // A new BGPPeer is added by reload: the mesh sessions are not reset.
    let since = |n: &Node, addr: &str| {
        n.status()
            .unwrap_or_default()
            .iter()
            .find(|s| s["peerAddress"] == addr)
            .and_then(|s| s["sinceSecs"].as_u64())
    };
    std::thread::sleep(Duration::from_secs(2));
    let before = since(&nodes[0], "10.79.0.2").expect("mesh session");
    assert!(before >= 1, "up for {before}s");
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: nobody}\nspec: {peerIP: 10.79.0.250, asNumber: 65000}\n",
    );
    wait(
        "the new BGPPeer on n1",
        || nodes[0].status().is_some_and(|s| s.len() == 3),
        || format!("{:?}", nodes[0].status()),
    );
    let status = nodes[0].status().expect("status");
    let global = status
        .iter()
        .find(|s| s["peerAddress"] == "10.79.0.250")
        .expect("global peer");
    assert_eq!(global["peerType"], "global");
    assert_ne!(global["state"], "Established");
    assert_eq!(nodes[0].established().len(), 2, "{status:?}");
    let after = since(&nodes[0], "10.79.0.2").expect("mesh session");
    assert!(
        after >= before,
        "mesh session reset by the reload: {after}s < {before}s"
    );
    cluster.tabby(&["delete", "bgppeer", "nobody"], "");

    // Kernel: other nodes' blocks via their address, own block blackholed.
    for (i, n) in nodes.iter().enumerate() {
        for (j, o) in nodes.iter().enumerate() {
            let block = block_of(&pods[j]);
            let want = if i == j {
                format!("blackhole {block} ")
            } else {
                format!("{block} via {} dev eth0 ", o.ip)
            };
            wait(
                &format!("{} has {want}", n.name),
                || n.routes().contains(&want),
                || logs(&cluster, &nodes),
            );
        }
    }
    // Pods on different nodes reach each other.
    for (i, n) in nodes.iter().enumerate() {
        let (pod, _) = &n.pods[0];
        for (j, dst) in pods.iter().enumerate() {
            if i != j {
                assert!(pod.ping(dst, 2), "pod on {} cannot ping {dst}", n.name);
            }
        }
    }
    // The Node resources carry the registered addresses.
    let got: Value =
        serde_json::from_str(&cluster.tabby(&["get", "nodes", "-o", "json"], "")).expect("json");
    let text = got.to_string();
    for n in &nodes {
        assert!(text.contains(&format!("{}/24", n.ip)), "{text}");
    }
    // A new cluster AS cannot be reloaded: each agent restarts its speaker
    // in-process, and the mesh comes back in AS 64600.
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 64600}\n",
    );
    for n in &nodes {
        wait(
            &format!("{}'s mesh in AS 64600", n.name),
            || {
                n.status().is_some_and(|s| {
                    s.len() == 2
                        && s.iter()
                            .all(|x| x["asNumber"] == 64600 && x["state"] == "Established")
                })
            },
            || format!("{:?}\n{}", n.status(), logs(&cluster, &nodes)),
        );
    }
    assert!(nodes[0].pods[0].0.ping(&pods[2], 2), "after the AS change");

    // SIGTERM: the agent exits, kernel routes stay (learned and blackhole).
    let before = nodes[0].routes();
    let agent = nodes[0].agent.as_mut().expect("agent");
    agent.signal("TERM").expect("TERM");
    wait("n1's agent to exit", || !agent.is_running(), String::new);
    let after = nodes[0].routes();
    for line in before
        .lines()
        .filter(|l| l.contains("via") || l.starts_with("blackhole"))
    {
        assert!(
            after.contains(line),
            "route {line:?} gone after SIGTERM:\n{after}"
        );
    }
    // (With graceful restart the peers keep n1's block: see
    // agent_restart_with_graceful_restart_loses_no_ping.)
}

fn bird_config(router_id: &str, nodes: &[(&str, &str)]) -> String {
    let mut c = format!(
        "router id {router_id};\nprotocol device {{}}\nprotocol kernel {{ ipv4 {{ export none; }}; }}\n"
    );
    for (name, ip) in nodes {
        c += &format!(
            "protocol bgp {name} {{\n  local {router_id} as 65000;\n  neighbor {ip} as 64512;\n  connect retry time 2;\n  ipv4 {{ import all; export none; }};\n}}\n"
        );
    }
    c
}

fn birdc(sock: &Path, cmd: &str) -> String {
    let out = Command::new(BIRDC2)
        .arg("-s")
        .arg(sock)
        .args(cmd.split_whitespace())
        .output()
        .expect("birdc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Prefixes in BIRD's table.
fn bird_prefixes(sock: &Path) -> BTreeSet<String> {
    birdc(sock, "show route")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.contains('/') && w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect()
}

#[test]
fn tor_learns_exactly_the_pod_blocks_and_a_deleted_bgppeer_closes_its_session() {
    let cluster = Cluster::new();
    let mut seg = Segment::new("agsw");
    cluster.apply(concat!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n",
        "spec: {nodeToNodeMeshEnabled: false, asNumber: 64512}\n---\n",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\n",
        "spec: {cidr: 10.81.0.0/16, natOutgoing: false}\n---\n",
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n",
        "spec: {peerIP: 10.79.0.254, asNumber: 65000}\n",
    ));
    let tor = Netns::new("agtor").expect("tor netns");
    seg.plug(&tor, "eth0", "10.79.0.254/24");
    let conf = cluster.path("bird.conf");
    let sock = cluster.path("bird.ctl");
    std::fs::write(
        &conf,
        bird_config("10.79.0.254", &[("n1", "10.79.0.1"), ("n2", "10.79.0.2")]),
    )
    .expect("bird.conf");
    let mut bird_cmd = tor.command(BIRD2);
    bird_cmd
        .arg("-f")
        .arg("-c")
        .arg(&conf)
        .arg("-s")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _bird = tor.spawn(&mut bird_cmd).expect("bird");

    let mut nodes = nodes_on(&cluster, &mut seg, &["n1", "n2"]);
    for n in &mut nodes {
        n.start_agent(&cluster);
    }
    let mut blocks = BTreeSet::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        // Two pods per node: still one block (one aggregate) each.
        blocks.insert(block_of(&n.add_pod(&cluster, &format!("a{i}"))));
        blocks.insert(block_of(&n.add_pod(&cluster, &format!("b{i}"))));
    }
    assert_eq!(blocks.len(), 2, "one block per node: {blocks:?}");
    for n in &nodes {
        wait(
            &format!("{}'s session with the ToR", n.name),
            || n.established() == BTreeSet::from(["10.79.0.254".to_owned()]),
            || format!("{:?}\n{}", n.status(), logs(&cluster, &nodes)),
        );
        let status = n.status().expect("status");
        assert_eq!(status.len(), 1, "mesh is off: only the ToR: {status:?}");
        assert_eq!(status[0]["peerType"], "global");
    }
    wait(
        "BIRD to learn exactly the pod blocks",
        || bird_prefixes(&sock) == blocks,
        || {
            format!(
                "bird has {:?}, want {blocks:?}\n{}",
                bird_prefixes(&sock),
                logs(&cluster, &nodes)
            )
        },
    );
    // Each block from the node that owns it.
    let all = birdc(&sock, "show route all");
    for n in &nodes {
        assert!(all.contains(&format!("via {}", n.ip)), "{all}");
    }

    // Mesh on as well (seed 003's first setup): the ToR still gets one
    // path per block, from its owner; nodes never pass learned routes on.
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeToNodeMeshEnabled: true, asNumber: 64512}\n",
    );
    for n in &nodes {
        wait(
            &format!("{}'s mesh and ToR sessions", n.name),
            || n.established().len() == 2,
            || format!("{:?}\n{}", n.status(), logs(&cluster, &nodes)),
        );
    }
    for n in &nodes {
        let other_block = nodes
            .iter()
            .filter(|o| o.name != n.name)
            .map(|o| block_of(&o.pods[0].1))
            .next()
            .expect("other node");
        wait(
            &format!("{} learns {other_block} over the mesh", n.name),
            || n.routes().contains(&other_block),
            || logs(&cluster, &nodes),
        );
    }
    let paths = birdc(&sock, "show route");
    assert_eq!(
        paths.matches("unicast [").count(),
        blocks.len(),
        "one path per block at the ToR:\n{paths}"
    );

    // Delete the BGPPeer: sessions go away, the agents keep running.
    let pids: Vec<u32> = nodes
        .iter()
        .map(|n| n.agent.as_ref().expect("agent").id())
        .collect();
    cluster.tabby(&["delete", "bgppeer", "tor"], "");
    for n in &nodes {
        wait(
            &format!("{} to drop the ToR session", n.name),
            || {
                n.status().is_some_and(|s| {
                    s.iter().all(|x| x["peerType"] == "node-to-node mesh") && s.len() == 1
                })
            },
            || format!("{:?}\n{}", n.status(), logs(&cluster, &nodes)),
        );
    }
    wait(
        "BIRD to lose the routes",
        || bird_prefixes(&sock).is_empty(),
        || birdc(&sock, "show protocols"),
    );
    for (n, pid) in nodes.iter_mut().zip(pids) {
        let agent = n.agent.as_mut().expect("agent");
        assert_eq!(agent.id(), pid);
        assert!(agent.is_running(), "{} restarted or died", n.name);
    }
}

#[test]
fn route_reflector_node_reflects_between_clients_and_keeps_its_labels() {
    let cluster = Cluster::new();
    let mut seg = Segment::new("agsw");
    // The RR's Node exists before its agent starts (labels and cluster id
    // set by the operator); registration must keep them.
    cluster.apply(concat!(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n",
        "spec: {nodeToNodeMeshEnabled: false}\n---\n",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\n",
        "spec: {cidr: 10.82.0.0/16}\n---\n",
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: rr\n  labels: {route-reflector: \"true\"}\n",
        "spec:\n  bgp: {routeReflectorClusterID: 224.0.0.1}\n---\n",
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: peer-with-route-reflectors}\n",
        "spec: {nodeSelector: all(), peerSelector: route-reflector == 'true'}\n",
    ));
    let mut nodes = nodes_on(&cluster, &mut seg, &["n1", "n2", "rr"]);
    for n in &mut nodes {
        n.start_agent(&cluster);
    }
    let p1 = nodes[0].add_pod(&cluster, "c1");
    let p2 = nodes[1].add_pod(&cluster, "c2");
    let rr_status = || nodes[2].status().unwrap_or_default();
    wait(
        "the RR's sessions with both clients",
        || {
            nodes[2].established()
                == BTreeSet::from(["10.79.0.1".to_owned(), "10.79.0.2".to_owned()])
        },
        || format!("{:?}\n{}", rr_status(), logs(&cluster, &nodes)),
    );
    for s in rr_status() {
        assert_eq!(s["peerType"], "node specific, RR client", "{s}");
    }
    // Clients have only the RR (no mesh).
    for n in &nodes[..2] {
        wait(
            &format!("{}'s session with the RR", n.name),
            || n.established() == BTreeSet::from(["10.79.0.3".to_owned()]),
            || format!("{:?}", n.status()),
        );
    }
    // Reflected routes keep the originating node as next hop.
    for (n, other_pod, other_ip) in [(&nodes[0], &p2, "10.79.0.2"), (&nodes[1], &p1, "10.79.0.1")] {
        let want = format!("{} via {other_ip} dev eth0 ", block_of(other_pod));
        wait(
            &format!("{} has {want}", n.name),
            || n.routes().contains(&want),
            || logs(&cluster, &nodes),
        );
    }
    assert!(
        nodes[0].pods[0].0.ping(&p2, 2),
        "pod on n1 cannot reach {p2}"
    );
    let rr: Value = serde_json::from_str(&cluster.tabby(&["get", "node", "rr", "-o", "json"], ""))
        .expect("json");
    assert_eq!(rr["metadata"]["labels"]["route-reflector"], "true", "{rr}");
    assert_eq!(
        rr["spec"]["bgp"]["routeReflectorClusterID"], "224.0.0.1",
        "{rr}"
    );
    assert_eq!(rr["spec"]["bgp"]["ipv4Address"], "10.79.0.3/24", "{rr}");
}

#[test]
fn dual_stack_mesh_carries_ipv6_blocks() {
    let cluster = Cluster::new();
    let mut seg = Segment::new("agsw");
    cluster.apply(concat!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v4}\nspec: {cidr: 10.84.0.0/16}\n---\n",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: \"fd00:84::/48\"}\n",
    ));
    let mut nodes = nodes_on(&cluster, &mut seg, &["n1", "n2"]);
    start_dual_stack(&cluster, &mut nodes);
    let a = nodes[0].add_pod_with(&cluster, "d1", true);
    let b = nodes[1].add_pod_with(&cluster, "d2", true);
    assert_eq!((a.len(), b.len()), (2, 2), "{a:?} {b:?}");
    wait(
        "v4 and v6 mesh sessions",
        || {
            nodes[0].established()
                == BTreeSet::from(["10.79.0.2".to_owned(), "fd00:79::2".to_owned()])
        },
        || format!("{:?}\n{}", nodes[0].status(), logs(&cluster, &nodes)),
    );
    let block6 = {
        let ip: std::net::Ipv6Addr = b[1].parse().expect("v6");
        ipnet::Ipv6Net::new(ip, 122)
            .expect("net")
            .trunc()
            .to_string()
    };
    let want = format!("{block6} via fd00:79::2 dev eth0 proto tabby");
    wait(
        &format!("n1 has {want}"),
        || {
            nodes[0]
                .ns
                .ip_stdout(["-6", "route", "show"])
                .is_ok_and(|r| r.contains(&want))
        },
        || logs(&cluster, &nodes),
    );
    let pod = &nodes[0].pods[0].0;
    assert!(pod.ping(&b[0], 2), "v4 {b:?}");
    // One family per session, as Calico: no IPv4 route without a next hop
    // on the IPv6 session (which the receiver would treat as withdrawn).
    for n in &nodes {
        let log = n.log(&cluster);
        assert!(!log.contains("RFC 7606"), "{}: {log}", n.name);
    }
    assert!(
        pod.exec(
            "ping",
            ["-6", "-c", "2", "-i", "0.2", "-W", "1", "-q", &b[1]]
        )
        .is_ok(),
        "v6 {b:?}"
    );
}

#[test]
fn borrowed_address_is_announced_as_a_host_route() {
    let cluster = Cluster::new();
    let mut seg = Segment::new("agsw");
    // Two /30 blocks in the whole pool: the third node has to borrow.
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: tiny}\nspec: {cidr: 10.85.0.0/29, blockSize: 30}\n",
    );
    let mut nodes = nodes_on(&cluster, &mut seg, &["n1", "n2", "n3"]);
    for n in &mut nodes {
        n.start_agent(&cluster);
    }
    let p1 = nodes[0].add_pod(&cluster, "t1");
    let p2 = nodes[1].add_pod(&cluster, "t2");
    let p3 = nodes[2].add_pod(&cluster, "t3");
    let b1 = ipnet::Ipv4Net::new(p1.parse().expect("ip"), 30)
        .expect("net")
        .trunc();
    let b2 = ipnet::Ipv4Net::new(p2.parse().expect("ip"), 30)
        .expect("net")
        .trunc();
    let p3ip: std::net::Ipv4Addr = p3.parse().expect("ip");
    assert_ne!(b1, b2, "one block each");
    let owner = if b1.contains(&p3ip) {
        0
    } else {
        assert!(b2.contains(&p3ip), "{p3} borrowed from n1's or n2's block");
        1
    };
    // Both other nodes route the borrowed address to n3, even the owner of
    // the block (its blackhole for the block is less specific).
    for n in &nodes[..2] {
        let want = format!("{p3} via 10.79.0.3 dev eth0 ");
        wait(
            &format!("{} has {want}", n.name),
            || n.routes().contains(&want),
            || logs(&cluster, &nodes),
        );
    }
    wait(
        "the owner's blackhole for its block",
        || nodes[owner].routes().contains("blackhole "),
        || logs(&cluster, &nodes),
    );
    assert!(
        !nodes[2].routes().contains("blackhole"),
        "n3 has no block of its own:\n{}",
        nodes[2].routes()
    );
    assert!(
        nodes[owner].pods[0].0.ping(&p3, 2),
        "owner's pod reaches the borrower's pod"
    );
    let other = 1 - owner;
    assert!(
        nodes[other].pods[0].0.ping(&p3, 2),
        "other pod reaches the borrower's pod"
    );
}

#[test]
fn agents_share_an_etcd_datastore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seg = Segment::new("agsw");
    // etcd in a namespace of its own on the segment, as on a real cluster.
    let ds_ns = Netns::new("agetcd").expect("etcd netns");
    seg.plug(&ds_ns, "eth0", "10.79.0.250/24");
    let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log");
    let mut etcd_cmd = ds_ns.command("etcd");
    etcd_cmd
        .args(["--name", "agent-test", "--data-dir"])
        .arg(dir.path().join("etcd-data"))
        .args(["--listen-client-urls", "http://10.79.0.250:2379"])
        .args(["--advertise-client-urls", "http://10.79.0.250:2379"])
        .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
        .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
        .args(["--initial-cluster", "agent-test=http://127.0.0.1:2380"])
        .stdout(Stdio::null())
        .stderr(log);
    let _etcd = ds_ns.spawn(&mut etcd_cmd).expect("etcd");
    wait(
        "etcd to answer",
        || {
            ds_ns
                .exec(
                    "etcdctl",
                    ["--endpoints", "10.79.0.250:2379", "endpoint", "health"],
                )
                .is_ok()
        },
        || std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default(),
    );
    let mut nodes: Vec<Node> = Vec::new();
    let mut cluster = Cluster::new();
    cluster.url = "etcd://10.79.0.250:2379".into();
    for (n, ip) in [("e1", "10.79.0.1"), ("e2", "10.79.0.2")] {
        nodes.push(Node::new(&cluster, &mut seg, n, ip));
    }
    cluster.cli_netns = Some(nodes[0].ns.name().to_owned());
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.86.0.0/16}\n",
    );
    for n in &mut nodes {
        n.start_agent(&cluster);
    }
    let p1 = nodes[0].add_pod(&cluster, "x1");
    let p2 = nodes[1].add_pod(&cluster, "x2");
    wait(
        "the mesh over etcd",
        || nodes[0].established() == BTreeSet::from(["10.79.0.2".to_owned()]),
        || format!("{:?}\n{}", nodes[0].status(), logs(&cluster, &nodes)),
    );
    let want = format!("{} via 10.79.0.2 dev eth0 ", block_of(&p2));
    wait(
        &format!("e1 has {want}"),
        || nodes[0].routes().contains(&want),
        || logs(&cluster, &nodes),
    );
    assert!(nodes[1].pods[0].0.ping(&p1, 2), "{p2} -> {p1}");
    let got = cluster.tabby(&["get", "nodes", "-o", "json"], "");
    assert!(got.contains("10.79.0.2/24"), "{got}");
    // With etcd the agents follow the datastore with a watch (e2 saw its
    // own new block through it, or e1 would have no route to it).
    for n in &nodes {
        assert!(
            n.log(&cluster)
                .contains("following the datastore with a watch"),
            "{}",
            n.log(&cluster)
        );
    }
}

/// Echo counts from ping's summary line (`N packets transmitted, M received`).
fn ping_counts(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    Some((nums.next()?, nums.next()?))
}

#[test]
fn agent_restart_with_graceful_restart_loses_no_ping() {
    let cluster = Cluster::new();
    let mut seg = Segment::new("agsw");
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.87.0.0/16}\n",
    );
    let mut nodes = nodes_on(&cluster, &mut seg, &["a", "b"]);
    for n in &mut nodes {
        n.start_agent(&cluster);
    }
    nodes[0].add_pod(&cluster, "pa");
    let pod_b = nodes[1].add_pod(&cluster, "pb");
    wait(
        "a's pod to reach b's pod",
        || nodes[0].pods[0].0.ping(&pod_b, 1),
        || logs(&cluster, &nodes),
    );
    // The session negotiated graceful restart (the agent's default).
    wait(
        "graceful restart negotiated on a's session with b",
        || {
            nodes[0].status().is_some_and(|s| {
                s.iter()
                    .any(|x| x["state"] == "Established" && x["gracefulRestart"] == "negotiated")
            })
        },
        || format!("{:?}", nodes[0].status()),
    );

    // 20 echoes a second from a's pod to b's pod across b's restart.
    let ping_log = cluster.path("ping.out");
    let mut ping_cmd = nodes[0].pods[0].0.command("ping");
    ping_cmd
        .args(["-n", "-i", "0.05", "-W", "1", &pod_b])
        .stdout(std::fs::File::create(&ping_log).expect("ping log"))
        .stderr(Stdio::null());
    let mut ping = nodes[0].pods[0].0.spawn(&mut ping_cmd).expect("ping");
    std::thread::sleep(Duration::from_secs(1));

    let agent = nodes[1].agent.as_mut().expect("b's agent");
    agent.signal("TERM").expect("TERM");
    wait("b's agent to exit", || !agent.is_running(), String::new);
    // While b is away, a keeps b's routes, stale, and says so.
    let restarting = || {
        nodes[0].status().and_then(|s| {
            s.iter()
                .find(|x| x["gracefulRestart"] == "restarting")
                .cloned()
        })
    };
    wait(
        "a to show b's session as restarting",
        || restarting().is_some(),
        || format!("{:?}\n{}", nodes[0].status(), logs(&cluster, &nodes)),
    );
    let row = restarting().expect("restarting row");
    assert!(row["staleRoutes"].as_u64().unwrap_or(0) >= 1, "{row}");
    assert!(
        row["info"]
            .as_str()
            .is_some_and(|i| i.contains("stale routes kept")),
        "{row}"
    );
    assert!(
        nodes[0].routes().contains(&block_of(&pod_b)),
        "b's block gone from a while b restarts:\n{}",
        nodes[0].routes()
    );

    nodes[1].start_agent(&cluster);
    wait(
        "both sessions Established again, graceful restart done",
        || {
            nodes.iter().all(|n| {
                n.status().is_some_and(|s| {
                    !s.is_empty()
                        && s.iter().all(|x| {
                            x["state"] == "Established" && x["gracefulRestart"] != "restarting"
                        })
                })
            })
        },
        || logs(&cluster, &nodes),
    );
    // The restarted speaker adopted the routes it had left in the kernel.
    let log_b = nodes[1].log(&cluster);
    assert!(
        log_b.contains("adopting the kernel routes left by the previous run"),
        "{log_b}"
    );
    wait(
        "b to select routes after a's End-of-RIB",
        || {
            nodes[1]
                .log(&cluster)
                .contains("graceful restart: route selection done")
        },
        || nodes[1].log(&cluster),
    );
    std::thread::sleep(Duration::from_secs(1));
    ping.signal("INT").expect("INT");
    wait("ping to exit", || !ping.is_running(), String::new);
    let out = std::fs::read_to_string(&ping_log).expect("ping output");
    let (sent, answered) = ping_counts(&out).unwrap_or_else(|| panic!("no summary: {out}"));
    println!("b's agent restarted under a 20/s ping: {sent} sent, {answered} answered");
    assert!(sent >= 20, "{out}");
    assert_eq!(
        sent,
        answered,
        "echoes lost across a graceful restart:\n{out}\n{}",
        logs(&cluster, &nodes)
    );
}

#[test]
fn bfd_from_a_bgppeer_annotation_closes_the_session_when_the_link_dies() {
    bfd_closes_the_session_when_the_link_dies(
        "agsw",
        concat!(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {nodeToNodeMeshEnabled: false}\n---\n",
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.88.0.0/16}\n---\n",
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: nodes\n",
            "  annotations: {tabby.io/bfd: \"true\", tabby.io/bfd-interval-ms: \"100\", tabby.io/bfd-multiplier: \"3\"}\n",
            "spec: {nodeSelector: all(), peerSelector: all()}\n",
        ),
    );
}

#[test]
fn bfd_on_the_mesh_from_the_default_bgpconfiguration_closes_the_session_when_the_link_dies() {
    bfd_closes_the_session_when_the_link_dies(
        "agmb",
        concat!(
            "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\n",
            "  annotations: {tabby.io/bfd: \"true\", tabby.io/bfd-interval-ms: \"100\", tabby.io/bfd-multiplier: \"3\"}\n",
            "spec: {}\n---\n",
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.88.0.0/16}\n",
        ),
    );
}

/// Two agents on one segment whose sessions `manifest` gives BFD at 100 ms
/// x 3: the generated speaker configuration carries it, and when b's port
/// goes down a's session is closed by BFD (the 90 s hold time alone would
/// keep it).
fn bfd_closes_the_session_when_the_link_dies(segment: &str, manifest: &str) {
    let cluster = Cluster::new();
    let mut seg = Segment::new(segment);
    cluster.apply(manifest);
    let mut nodes = nodes_on(&cluster, &mut seg, &["a", "b"]);
    for n in &mut nodes {
        n.start_agent(&cluster);
    }
    wait(
        "a and b Established",
        || nodes.iter().all(|n| n.established().len() == 1),
        || logs(&cluster, &nodes),
    );
    // The generated speaker configuration carries the annotation's BFD.
    let conf: Value = serde_json::from_str(
        &std::fs::read_to_string(cluster.path("a-state").join("bgpd.json")).expect("bgpd.json"),
    )
    .expect("json");
    let p = &conf["peers"][0];
    assert_eq!(p["bfd"], true, "{conf}");
    assert_eq!(p["bfdIntervalMs"], 100, "{conf}");
    assert_eq!(p["bfdMultiplier"], 3, "{conf}");
    // Let BFD come up, then cut b off the segment: with a 90 s hold time
    // only BFD can close a's session now.
    std::thread::sleep(Duration::from_secs(2));
    seg.ns
        .ip(["link", "set", "p2", "down"])
        .expect("cut b's port");
    wait(
        "a's session closed by BFD",
        || nodes[0].log(&cluster).contains("BFD down"),
        || logs(&cluster, &nodes),
    );
    assert!(nodes[0].established().is_empty(), "{:?}", nodes[0].status());
}

/// Two L2 segments joined by a router namespace (forwarding on, no pod
/// routes: only the nodes' subnets), for CrossSubnet.
struct TwoSubnets {
    segs: [Segment; 2],
    _router: Netns,
}

impl TwoSubnets {
    /// 10.79.1.0/24 and 10.79.2.0/24, the router at .254 on both.
    fn new() -> TwoSubnets {
        let mut segs = [Segment::new("agsw"), Segment::new("agsw")];
        let router = Netns::new("agrtr").expect("router netns");
        for (i, seg) in segs.iter_mut().enumerate() {
            seg.plug(
                &router,
                &format!("eth{i}"),
                &format!("10.79.{}.254/24", i + 1),
            );
        }
        router.sysctl("net.ipv4.ip_forward=1").expect("forwarding");
        TwoSubnets {
            segs,
            _router: router,
        }
    }

    /// A node on subnet `subnet` (1 or 2) at `10.79.<subnet>.<host>`, with
    /// a default route via the router.
    fn node(&mut self, cluster: &Cluster, subnet: usize, name: &str, host: u8) -> Node {
        let node = Node::new(
            cluster,
            &mut self.segs[subnet - 1],
            name,
            &format!("10.79.{subnet}.{host}"),
        );
        node.ns
            .ip([
                "route",
                "add",
                "default",
                "via",
                &format!("10.79.{subnet}.254"),
            ])
            .expect("default route");
        node
    }
}

/// `vxlan.calico`'s transmitted packets on `node`.
fn vxlan_tx(node: &Node) -> u64 {
    let out = node
        .ns
        .ip_stdout(["-s", "-j", "link", "show", "vxlan.calico"])
        .unwrap_or_default();
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0)
}

/// The node's Node resource as JSON.
fn node_resource(cluster: &Cluster, name: &str) -> Value {
    serde_json::from_str(&cluster.tabby(&["get", "node", name, "-o", "json"], "")).expect("json")
}

/// The route line for `block` in `node`'s `proto tabby` routes.
fn route_for(node: &Node, block: &str) -> Option<String> {
    node.routes()
        .lines()
        .find(|l| l.starts_with(&format!("{block} ")))
        .map(str::to_owned)
}

#[test]
fn vxlan_always_and_cross_subnet_across_two_subnets() {
    let cluster = Cluster::new();
    let mut net = TwoSubnets::new();
    let pool = |mode: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: vx}}\nspec: {{cidr: 10.87.0.0/16, vxlanMode: {mode}, ipipMode: Never}}\n"
        )
    };
    cluster.apply(&pool("Always"));
    let mut nodes = vec![
        net.node(&cluster, 1, "vxa", 1),
        net.node(&cluster, 1, "vxb", 2),
        net.node(&cluster, 2, "vxc", 3),
    ];
    nodes[0].start_agent_with(&cluster, &["--metrics-listen", "127.0.0.1:9093"]);
    for n in &mut nodes[1..] {
        n.start_agent(&cluster);
    }
    let mut pods = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        pods.push(n.add_pod(&cluster, &format!("vxpod{i}")));
    }
    let blocks: Vec<String> = pods.iter().map(|p| block_of(p)).collect();

    // Every node gets a VXLAN tunnel address and MAC on its Node, from the
    // pool, under Calico's handle; its vxlan.calico carries it.
    let mut tunnel = Vec::new();
    for n in &nodes {
        wait(
            &format!("{}'s VTEP on its Node", n.name),
            || {
                let r = node_resource(&cluster, &n.name);
                r["spec"]["ipv4VXLANTunnelAddr"].is_string()
                    && r["spec"]["vxlanTunnelMACAddr"].is_string()
            },
            || logs(&cluster, &nodes),
        );
        let r = node_resource(&cluster, &n.name);
        let addr = r["spec"]["ipv4VXLANTunnelAddr"]
            .as_str()
            .expect("addr")
            .to_owned();
        assert!(addr.starts_with("10.87."), "{r}");
        let mac = r["spec"]["vxlanTunnelMACAddr"]
            .as_str()
            .expect("mac")
            .to_owned();
        wait(
            &format!("{}'s vxlan.calico", n.name),
            || {
                let d =
                    n.ns.ip_stdout(["-d", "addr", "show", "dev", "vxlan.calico"])
                        .unwrap_or_default();
                d.contains(&format!("inet {addr}/32"))
                    && d.contains("vxlan id 4096")
                    && d.contains("dstport 4789")
                    && d.contains(&mac)
            },
            || logs(&cluster, &nodes),
        );
        let held = cluster.tabby(&["ipam", "show", "--ip", &addr], "");
        assert!(
            held.contains(&format!("Handle: vxlan-tunnel-addr-{}", n.name)),
            "{held}"
        );
        tunnel.push(addr);
    }
    // Always: every remote block via the remote VTEP on vxlan.calico.
    let expect_vxlan = |from: usize, to: usize| {
        let n = &nodes[from];
        wait(
            &format!("{} -> {}'s block via vxlan.calico", n.name, nodes[to].name),
            || {
                route_for(n, &blocks[to]).is_some_and(|l| {
                    l.contains(&format!("via {} dev vxlan.calico", tunnel[to]))
                        && l.contains("onlink")
                })
            },
            || logs(&cluster, &nodes),
        );
    };
    for from in 0..3 {
        for to in 0..3 {
            if from != to {
                expect_vxlan(from, to);
            }
        }
    }
    // Neighbour and FDB entries for each remote VTEP.
    let neigh = nodes[0]
        .ns
        .ip_stdout(["neigh", "show", "dev", "vxlan.calico"])
        .expect("neigh");
    let fdb = nodes[0]
        .ns
        .exec("bridge", ["fdb", "show", "dev", "vxlan.calico"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .expect("fdb");
    for (i, n) in nodes.iter().enumerate().skip(1) {
        let mac = node_resource(&cluster, &n.name)["spec"]["vxlanTunnelMACAddr"]
            .as_str()
            .expect("mac")
            .to_owned();
        assert!(
            neigh.contains(&format!("{} lladdr {mac} PERMANENT", tunnel[i])),
            "{neigh}"
        );
        assert!(
            fdb.contains(&format!("{mac} dst {} self permanent", n.ip)),
            "{fdb}"
        );
    }
    let before = vxlan_tx(&nodes[0]);
    assert!(
        nodes[0].pods[0].0.ping(&pods[1], 3),
        "a -> b (vxlan)\n{}",
        logs(&cluster, &nodes)
    );
    assert!(
        nodes[0].pods[0].0.ping(&pods[2], 3),
        "a -> c (vxlan)\n{}",
        logs(&cluster, &nodes)
    );
    let after = vxlan_tx(&nodes[0]);
    assert!(after >= before + 6, "vxlan.calico tx {before} -> {after}");
    // `tabby node status` shows the tunnels and the pod MTU after the
    // sessions (from the report in the agent's state directory).
    let table = || {
        let out = std::process::Command::new(TABBY)
            .args(["node", "status", "--socket"])
            .arg(&nodes[0].socket)
            .arg("--state-dir")
            .arg(cluster.path("vxa-state"))
            .output()
            .expect("tabby node status");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait(
        "vxa's node status to show vxlan.calico up with 2 routes",
        || table().contains("vxlan.calico     up (2 routes)"),
        table,
    );
    let t = table();
    assert!(t.contains("IPv4/IPv6 BGP status"), "{t}");
    assert!(t.contains("tunl0            off"), "{t}");
    assert!(
        t.contains("pod MTU          1450 (host MTU 1500 from eth0, minus 50 for VXLAN)"),
        "{t}"
    );

    // CrossSubnet: native inside 10.79.1.0/24 (a <-> b), VXLAN to c.
    cluster.apply(&pool("CrossSubnet"));
    wait(
        "a -> b native, a -> c via vxlan.calico",
        || {
            route_for(&nodes[0], &blocks[1])
                .is_some_and(|l| l.contains("via 10.79.1.2 dev eth0") && l.contains("onlink"))
                && route_for(&nodes[0], &blocks[2])
                    .is_some_and(|l| l.contains(&format!("via {} dev vxlan.calico", tunnel[2])))
                && route_for(&nodes[2], &blocks[0])
                    .is_some_and(|l| l.contains(&format!("via {} dev vxlan.calico", tunnel[0])))
        },
        || logs(&cluster, &nodes),
    );
    let before = vxlan_tx(&nodes[0]);
    assert!(
        nodes[0].pods[0].0.ping(&pods[1], 3),
        "a -> b (native)\n{}",
        logs(&cluster, &nodes)
    );
    let native = vxlan_tx(&nodes[0]);
    assert_eq!(native, before, "a -> b must not use vxlan.calico");
    assert!(
        nodes[0].pods[0].0.ping(&pods[2], 3),
        "a -> c (vxlan)\n{}",
        logs(&cluster, &nodes)
    );
    assert!(
        vxlan_tx(&nodes[0]) >= native + 3,
        "a -> c must use vxlan.calico"
    );
    assert!(nodes[2].pods[0].0.ping(&pods[1], 3), "c -> b (vxlan)");
    // Exactly one route per remote block: the speaker installs none of
    // the VXLAN pool's (it learned them over the mesh all the same).
    let routes = nodes[0].routes();
    for b in &blocks[1..] {
        assert_eq!(
            routes
                .lines()
                .filter(|l| l.starts_with(&format!("{b} ")))
                .count(),
            1,
            "{routes}"
        );
    }
    let m = nodes[0]
        .ns
        .exec(
            "bash",
            [
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/9093; printf 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3",
            ],
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        m.contains(
            "tabby_agent_tunnel_state{kind=\"vxlan\",device=\"vxlan.calico\",state=\"up\"} 1"
        ),
        "{m}"
    );
    assert!(m.contains("tabby_agent_vxlan_routes 2\n"), "{m}");

    // Never: the device and the tunnel addresses go, BGP routes come back
    // (native, via the speaker), IPAM stays consistent.
    cluster.apply(&pool("Never"));
    for n in &nodes {
        wait(
            &format!("{}: vxlan.calico gone, tunnel address released", n.name),
            || {
                n.ns.ip(["link", "show", "vxlan.calico"]).is_err()
                    && node_resource(&cluster, &n.name)["spec"]["ipv4VXLANTunnelAddr"].is_null()
            },
            || logs(&cluster, &nodes),
        );
    }
    wait(
        "a -> b natively via the speaker",
        || {
            route_for(&nodes[0], &blocks[1])
                .is_some_and(|l| l.contains("via 10.79.1.2 dev eth0") && !l.contains("onlink"))
        },
        || logs(&cluster, &nodes),
    );
    assert!(nodes[0].pods[0].0.ping(&pods[1], 3), "a -> b (native, BGP)");
    let ipam = cluster.tabby(&["ipam", "check"], "");
    assert!(ipam.contains("Found 0 problems."), "{ipam}");
    for addr in &tunnel {
        let freed = cluster.tabby(&["ipam", "show", "--ip", addr], "");
        assert!(freed.contains("is not assigned"), "{freed}");
    }
    // c's block is now the speaker's, via the router (BGP next hop
    // 10.79.2.3 resolved recursively).
    wait(
        "a -> c natively via the router (speaker)",
        || route_for(&nodes[0], &blocks[2]).is_some_and(|l| l.contains("via 10.79.1.254 dev eth0")),
        || logs(&cluster, &nodes),
    );

    // CrossSubnet again: the agent takes the speaker's route over.
    cluster.apply(&pool("CrossSubnet"));
    wait(
        "a -> c via vxlan.calico again, a -> b native on-link",
        || {
            route_for(&nodes[0], &blocks[2]).is_some_and(|l| l.contains("dev vxlan.calico onlink"))
                && route_for(&nodes[0], &blocks[1])
                    .is_some_and(|l| l.contains("via 10.79.1.2 dev eth0") && l.contains("onlink"))
                && route_for(&nodes[2], &blocks[0])
                    .is_some_and(|l| l.contains("dev vxlan.calico onlink"))
        },
        || logs(&cluster, &nodes),
    );
    assert!(
        nodes[0].pods[0].0.ping(&pods[2], 3),
        "a -> c (vxlan again)\n{}",
        logs(&cluster, &nodes)
    );
    let ipam = cluster.tabby(&["ipam", "check"], "");
    assert!(ipam.contains("Found 0 problems."), "{ipam}");
    for n in &mut nodes {
        assert!(n.agent.as_mut().expect("agent").is_running(), "{}", n.name);
    }

    // c goes away (agent stopped, Node deleted): a drops its route, its
    // neighbour and its FDB entry; b's stay.
    let c_mac = node_resource(&cluster, "vxc")["spec"]["vxlanTunnelMACAddr"]
        .as_str()
        .expect("mac")
        .to_owned();
    let agent = nodes[2].agent.as_mut().expect("c's agent");
    agent.signal("TERM").expect("TERM");
    wait("c's agent to exit", || !agent.is_running(), String::new);
    cluster.tabby(&["delete", "node", "vxc"], "");
    let entries = |n: &Node| {
        let neigh =
            n.ns.ip_stdout(["neigh", "show", "dev", "vxlan.calico"])
                .unwrap_or_default();
        let fdb =
            n.ns.exec("bridge", ["fdb", "show", "dev", "vxlan.calico"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
        format!("{neigh}{fdb}")
    };
    assert!(
        entries(&nodes[0]).contains(&c_mac),
        "{}",
        entries(&nodes[0])
    );
    wait(
        "a forgets c (route, neighbour, FDB entry)",
        || {
            route_for(&nodes[0], &blocks[2]).is_none()
                && !entries(&nodes[0]).contains(&c_mac)
                && route_for(&nodes[0], &blocks[1]).is_some()
        },
        || format!("{}\n{}", entries(&nodes[0]), logs(&cluster, &nodes)),
    );
}

#[test]
fn ipip_on_a_kernel_without_it_is_reported_and_routed_natively() {
    let cluster = Cluster::new();
    let mut seg = Segment::new("agsw");
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: ipip}\nspec: {cidr: 10.88.0.0/16, ipipMode: Always}\n",
    );
    let mut nodes = vec![
        Node::new(&cluster, &mut seg, "ipa", "10.79.0.51"),
        Node::new(&cluster, &mut seg, "ipb", "10.79.0.52"),
    ];
    nodes[0].start_agent_with(&cluster, &["--metrics-listen", "127.0.0.1:9094"]);
    nodes[1].start_agent(&cluster);
    let pods: Vec<String> = nodes
        .iter_mut()
        .enumerate()
        .map(|(i, n)| n.add_pod(&cluster, &format!("ippod{i}")))
        .collect();
    let mut tunnel = Vec::new();
    for n in &nodes {
        wait(
            &format!("{}'s IPIP tunnel address on its Node", n.name),
            || node_resource(&cluster, &n.name)["spec"]["bgp"]["ipv4IPIPTunnelAddr"].is_string(),
            || logs(&cluster, &nodes),
        );
        let addr = node_resource(&cluster, &n.name)["spec"]["bgp"]["ipv4IPIPTunnelAddr"]
            .as_str()
            .expect("addr")
            .to_owned();
        let held = cluster.tabby(&["ipam", "show", "--ip", &addr], "");
        assert!(
            held.contains(&format!("Handle: ipip-tunnel-addr-{}", n.name)),
            "{held}"
        );
        tunnel.push(addr);
    }
    let kernel_has_ipip = nodes[0].ns.ip(["link", "show", "tunl0"]).is_ok();
    let b_block = block_of(&pods[1]);
    if kernel_has_ipip {
        wait(
            "a -> b's block via tunl0",
            || {
                route_for(&nodes[0], &b_block)
                    .is_some_and(|l| l.contains("via 10.79.0.52 dev tunl0") && l.contains("onlink"))
            },
            || logs(&cluster, &nodes),
        );
    } else {
        // This project's machines: said clearly, once, and routed natively.
        wait(
            "a -> b's block natively",
            || {
                route_for(&nodes[0], &b_block)
                    .is_some_and(|l| l.contains("via 10.79.0.52 dev eth0"))
            },
            || logs(&cluster, &nodes),
        );
        let log = nodes[0].log(&cluster);
        assert!(
            log.contains("no ipip support") && log.contains("routing IPIP pools natively"),
            "{log}"
        );
        assert_eq!(
            log.matches("no ipip support").count(),
            1,
            "said once\n{log}"
        );
        let m = nodes[0]
            .ns
            .exec(
                "bash",
                [
                    "-c",
                    "exec 3<>/dev/tcp/127.0.0.1/9094; printf 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3",
                ],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        assert!(
            m.contains(
                "tabby_agent_tunnel_state{kind=\"ipip\",device=\"tunl0\",state=\"kernel-lacks\"} 1"
            ),
            "{m}"
        );
    }
    assert!(
        nodes[0].pods[0].0.ping(&pods[1], 3),
        "a -> b\n{}",
        logs(&cluster, &nodes)
    );
    let ipam = cluster.tabby(&["ipam", "check"], "");
    assert!(ipam.contains("Found 0 problems."), "{ipam}");
    // Back to Never: the addresses are released and the fields cleared.
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: ipip}\nspec: {cidr: 10.88.0.0/16, ipipMode: Never}\n",
    );
    for n in &nodes {
        wait(
            &format!("{}'s IPIP tunnel address released", n.name),
            || node_resource(&cluster, &n.name)["spec"]["bgp"]["ipv4IPIPTunnelAddr"].is_null(),
            || logs(&cluster, &nodes),
        );
    }
    for addr in &tunnel {
        let freed = cluster.tabby(&["ipam", "show", "--ip", addr], "");
        assert!(freed.contains("is not assigned"), "{freed}");
    }
    let ipam = cluster.tabby(&["ipam", "check"], "");
    assert!(ipam.contains("Found 0 problems."), "{ipam}");
    for n in &mut nodes {
        assert!(n.agent.as_mut().expect("agent").is_running(), "{}", n.name);
    }
}

#[test]
fn vxlan_borrowed_addresses_are_routed_to_the_borrowers_vtep() {
    let cluster = Cluster::new();
    let mut seg = Segment::new("agsw");
    // Two /30 blocks in the whole pool, three nodes each needing a tunnel
    // address and a pod address: at least one node has to borrow.
    cluster.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: tiny}\nspec: {cidr: 10.89.0.0/29, blockSize: 30, vxlanMode: Always}\n",
    );
    let mut nodes = nodes_on(&cluster, &mut seg, &["vb1", "vb2", "vb3"]);
    for n in &mut nodes {
        n.start_agent(&cluster);
    }
    let pods: Vec<String> = nodes
        .iter_mut()
        .enumerate()
        .map(|(i, n)| n.add_pod(&cluster, &format!("vb{i}")))
        .collect();
    // Every node reaches every other node's pod through vxlan.calico,
    // whether by the owner's block route or by a /32 toward the borrower.
    for (i, n) in nodes.iter().enumerate() {
        for (j, p) in pods.iter().enumerate() {
            if i == j {
                continue;
            }
            wait(
                &format!(
                    "{} routes {p} (on {}) via vxlan.calico",
                    n.name, nodes[j].name
                ),
                || {
                    n.ns.ip_stdout(["route", "get", p])
                        .is_ok_and(|r| r.contains("dev vxlan.calico"))
                },
                || logs(&cluster, &nodes),
            );
        }
    }
    let host_routes: Vec<String> = nodes
        .iter()
        .flat_map(|n| {
            n.routes()
                .lines()
                .filter(|l| l.contains("dev vxlan.calico"))
                .filter(|l| {
                    l.split_whitespace()
                        .next()
                        .is_some_and(|d| !d.contains('/'))
                })
                .map(|l| format!("{}: {l}", n.name))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        !host_routes.is_empty(),
        "no borrowed address was routed as a /32\n{}",
        logs(&cluster, &nodes)
    );
    println!("borrowed-address routes: {host_routes:#?}");
    for (i, n) in nodes.iter().enumerate() {
        for (j, p) in pods.iter().enumerate() {
            if i != j {
                assert!(
                    n.pods[0].0.ping(p, 2),
                    "{}'s pod -> {p}\n{}",
                    n.name,
                    logs(&cluster, &nodes)
                );
            }
        }
    }
    let ipam = cluster.tabby(&["ipam", "check"], "");
    assert!(ipam.contains("Found 0 problems."), "{ipam}");

    // The agent restarted: the device, its entries and routes stay in the
    // kernel while it is away and are kept (same device) when it is back.
    let index = |n: &Node| -> Option<u64> {
        let out =
            n.ns.ip_stdout(["-j", "link", "show", "vxlan.calico"])
                .ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        v[0]["ifindex"].as_u64()
    };
    let before = (index(&nodes[0]), nodes[0].routes());
    assert!(before.0.is_some());
    let agent = nodes[0].agent.as_mut().expect("agent");
    agent.signal("TERM").expect("TERM");
    wait("vb1's agent to exit", || !agent.is_running(), String::new);
    assert_eq!(
        (index(&nodes[0]), nodes[0].routes()),
        before,
        "kernel state kept"
    );
    assert!(
        nodes[0].pods[0].0.ping(&pods[1], 2),
        "forwarding while the agent is away"
    );
    nodes[0].start_agent(&cluster);
    wait(
        "vb1's agent back with its mesh sessions",
        || nodes[0].established().len() == 2,
        || logs(&cluster, &nodes),
    );
    assert_eq!(index(&nodes[0]), before.0, "vxlan.calico was not recreated");
    for p in &pods[1..] {
        assert!(nodes[0].pods[0].0.ping(p, 2), "after the restart -> {p}");
    }
}

#[test]
fn ipv6_vxlan_carries_pod_traffic_over_vxlan_v6_calico() {
    let cluster = Cluster::new();
    let mut seg = Segment::new("agsw");
    cluster.apply(concat!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v4}\nspec: {cidr: 10.83.0.0/16}\n---\n",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: \"fd00:83::/48\", vxlanMode: Always}\n",
    ));
    let mut nodes = nodes_on(&cluster, &mut seg, &["v6a", "v6b"]);
    start_dual_stack(&cluster, &mut nodes);
    // Pods made before the agent's first write would get the plugin's 1500.
    let file = nodes[0].mtu_file(&cluster);
    wait(
        "v6a's MTU file",
        || std::fs::read_to_string(&file).is_ok_and(|t| t == "1430"),
        || logs(&cluster, &nodes),
    );
    let a = nodes[0].add_pod_with(&cluster, "v6p1", true);
    let b = nodes[1].add_pod_with(&cluster, "v6p2", true);
    let b6: std::net::Ipv6Addr = b[1].parse().expect("v6");
    let block6 = ipnet::Ipv6Net::new(b6, 122)
        .expect("net")
        .trunc()
        .to_string();
    let tunnel_b = {
        wait(
            "v6b's IPv6 VTEP on its Node",
            || {
                let r = node_resource(&cluster, "v6b");
                r["spec"]["ipv6VXLANTunnelAddr"].is_string()
                    && r["spec"]["vxlanTunnelMACAddrV6"].is_string()
            },
            || logs(&cluster, &nodes),
        );
        node_resource(&cluster, "v6b")["spec"]["ipv6VXLANTunnelAddr"]
            .as_str()
            .expect("addr")
            .to_owned()
    };
    let held = cluster.tabby(&["ipam", "show", "--ip", &tunnel_b], "");
    assert!(held.contains("Handle: vxlan-v6-tunnel-addr-v6b"), "{held}");
    let want = format!("{block6} via {tunnel_b} dev vxlan-v6.calico");
    wait(
        &format!("v6a has {want}"),
        || {
            nodes[0]
                .ns
                .ip_stdout(["-6", "route", "show", "proto", "tabby"])
                .is_ok_and(|r| r.contains(&want))
        },
        || logs(&cluster, &nodes),
    );
    let dev = nodes[0]
        .ns
        .ip_stdout(["-d", "link", "show", "vxlan-v6.calico"])
        .expect("device");
    assert!(
        dev.contains("vxlan id 6096") && dev.contains("dstport 4789"),
        "{dev}"
    );
    // The detected MTU: eth0's 1500 minus 70 (VXLAN over IPv6) for the
    // device and, through the MTU file, for both ends of the pods' veths.
    assert_eq!(link_mtu(&nodes[0].ns, "vxlan-v6.calico"), Some(1430));
    assert_eq!(link_mtu(&nodes[0].pods[0].0, "eth0"), Some(1430));
    assert_eq!(
        link_mtu(&nodes[0].ns, &host_veth(&nodes[0], &a[0])),
        Some(1430)
    );
    // The IPv4 pool is not VXLAN: no v4 device, its blocks native via BGP.
    assert!(nodes[0].ns.ip(["link", "show", "vxlan.calico"]).is_err());
    let tx = || -> u64 {
        let out = nodes[0]
            .ns
            .ip_stdout(["-s", "-j", "link", "show", "vxlan-v6.calico"])
            .unwrap_or_default();
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0)
    };
    let before = tx();
    assert!(
        nodes[0].pods[0].0.ping(&b[1], 3),
        "{} -> {} over vxlan-v6.calico\n{}",
        a[1],
        b[1],
        logs(&cluster, &nodes)
    );
    assert!(
        tx() >= before + 3,
        "vxlan-v6.calico tx {before} -> {}",
        tx()
    );
    let block4 = block_of(&b[0]);
    wait(
        "v6a routes v6b's IPv4 block natively (BGP)",
        || route_for(&nodes[0], &block4).is_some_and(|l| l.contains("via 10.79.0.2 dev eth0")),
        || logs(&cluster, &nodes),
    );
    assert!(nodes[0].pods[0].0.ping(&b[0], 2), "v4 natively");
    let ipam = cluster.tabby(&["ipam", "check"], "");
    assert!(ipam.contains("Found 0 problems."), "{ipam}");
}

/// The MTU of `dev` in `ns`, read back from the kernel (`ip -d -j link`).
fn link_mtu(ns: &Netns, dev: &str) -> Option<u64> {
    let out = ns.ip_stdout(["-d", "-j", "link", "show", dev]).ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v[0]["mtu"].as_u64()
}

/// The host end (`tby…`) of the pod veth whose address is `addr`.
fn host_veth(node: &Node, addr: &str) -> String {
    let route = node
        .ns
        .ip_stdout(["route", "show", addr])
        .expect("pod route");
    route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .filter(|d| d.starts_with("tby"))
        .unwrap_or_else(|| panic!("no pod veth in {route:?}"))
        .to_owned()
}

#[test]
fn the_agent_detects_the_pod_mtu_and_the_plugin_uses_it() {
    let cluster = Cluster::new();
    let mut seg = Segment::new("agsw");
    let pool = |mode: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pods}}\nspec: {{cidr: 10.90.0.0/16, vxlanMode: {mode}}}\n"
        )
    };
    cluster.apply(&pool("Never"));
    let mut node = Node::new(&cluster, &mut seg, "mtu1", "10.79.0.1");
    // The underlay (eth0, matching Calico's default pattern) has MTU 1400;
    // smaller MTUs on interfaces that must not count: one that is down,
    // one whose name the pattern leaves out.
    node.ns
        .ip(["link", "set", "eth0", "mtu", "1400"])
        .expect("underlay mtu");
    node.ns
        .ip([
            "link", "add", "eth9", "mtu", "1000", "type", "veth", "peer", "name", "x9", "mtu",
            "1000",
        ])
        .expect("down interface");
    node.ns
        .ip([
            "link", "add", "bond7", "mtu", "1100", "type", "veth", "peer", "name", "x7", "mtu",
            "1100",
        ])
        .expect("unmatched interface");
    for dev in ["bond7", "x7"] {
        node.ns.ip(["link", "set", dev, "up"]).expect("up");
    }
    node.start_agent(&cluster);
    let file = node.mtu_file(&cluster);
    let file_holds = |want: &str| {
        let f = file.clone();
        let w = want.to_owned();
        move || std::fs::read_to_string(&f).is_ok_and(|t| t == w)
    };

    // No encapsulation: the underlay's MTU.
    wait("the MTU file holds 1400", file_holds("1400"), || {
        node.log(&cluster)
    });
    let log = node.log(&cluster);
    assert!(
        log.contains("pod MTU 1400 (host MTU 1400 from eth0, no encapsulation in use)"),
        "{log}"
    );

    // A VXLAN pool: 50 bytes less, for the file and vxlan.calico.
    cluster.apply(&pool("Always"));
    wait(
        "the MTU file holds 1350 and vxlan.calico has MTU 1350",
        || file_holds("1350")() && link_mtu(&node.ns, "vxlan.calico") == Some(1350),
        || {
            format!(
                "{:?} {:?}\n{}",
                std::fs::read_to_string(&file),
                link_mtu(&node.ns, "vxlan.calico"),
                node.log(&cluster)
            )
        },
    );
    let log = node.log(&cluster);
    assert!(
        log.contains("pod MTU 1350 (host MTU 1400 from eth0, minus 50 for VXLAN)"),
        "{log}"
    );

    // CNI ADD without mtu, through the agent's CNI service: both ends of
    // the pod's veth get the detected MTU.
    let addr = node.add_pod(&cluster, "mtu-pod1");
    let pod = &node.pods[0].0;
    assert_eq!(link_mtu(pod, "eth0"), Some(1350));
    let host_end = host_veth(&node, &addr);
    assert_eq!(link_mtu(&node.ns, &host_end), Some(1350), "{host_end}");

    // The plugin on its own (no service), mtu 0: the same file.
    let plugin = |id: &str, pod: &Netns, conf: &Value| {
        run_with_stdin(
            &mut cni_command(&node.ns, "ADD", id, pod, "off"),
            conf.to_string().as_bytes(),
        )
    };
    let base = || {
        let mut c = cni_conf(
            &cluster.url,
            &node.name,
            serde_json::json!({"type": "tabby-ipam"}),
        );
        c["mtuFile"] = file.display().to_string().into();
        c
    };
    let pod2 = Netns::new("agpod").expect("pod netns");
    let mut conf = base();
    conf["mtu"] = 0.into();
    let out = plugin("mtu-pod2", &pod2, &conf);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(link_mtu(&pod2, "eth0"), Some(1350));

    // An explicit mtu wins over the file.
    let pod3 = Netns::new("agpod").expect("pod netns");
    let mut conf = base();
    conf["mtu"] = 1300.into();
    let out = plugin("mtu-pod3", &pod3, &conf);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(link_mtu(&pod3, "eth0"), Some(1300));
    let r: Value = serde_json::from_slice(&out.stdout).expect("result");
    let addr3 = r["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("address");
    assert_eq!(link_mtu(&node.ns, &host_veth(&node, addr3)), Some(1300));

    // A garbage file: the pod is still made, with 1500, and stderr names
    // the file.
    let garbage = cluster.path("garbage-mtu");
    std::fs::write(&garbage, "fifteen hundred").expect("garbage");
    let pod4 = Netns::new("agpod").expect("pod netns");
    let mut conf = base();
    conf["mtuFile"] = garbage.display().to_string().into();
    let out = plugin("mtu-pod4", &pod4, &conf);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(link_mtu(&pod4, "eth0"), Some(1500));
    assert!(
        stderr.contains(&garbage.display().to_string())
            && stderr.contains("\"fifteen hundred\", not an MTU")
            && stderr.contains("using 1500"),
        "{stderr}"
    );
    // Through the agent's service the warning goes to the agent's log.
    let pod5 = Netns::new("agpod").expect("pod netns");
    let out = node.cni("ADD", "mtu-pod5", &pod5, &conf);
    assert!(out.status.success());
    assert_eq!(link_mtu(&pod5, "eth0"), Some(1500));
    wait(
        "the agent's log names the garbage file",
        || {
            node.log(&cluster)
                .contains(&format!("MTU file {} holds", garbage.display()))
        },
        || node.log(&cluster),
    );

    // Back to no encapsulation: the file follows, and the change is logged.
    cluster.apply(&pool("Never"));
    wait("the MTU file holds 1400 again", file_holds("1400"), || {
        node.log(&cluster)
    });
    assert_eq!(
        node.log(&cluster).matches("pod MTU written to").count(),
        3,
        "written once per change: {}",
        node.log(&cluster)
    );

    // Another interface pattern (FelixConfiguration mtuIfacePattern):
    // restarted with `^bond`, the agent takes bond7's 1100.
    node.agent = None;
    node.start_agent_with(&cluster, &["--mtu-iface-pattern", "^bond"]);
    wait("the MTU file holds 1100", file_holds("1100"), || {
        node.log(&cluster)
    });
    assert!(
        node.log(&cluster)
            .contains("pod MTU 1100 (host MTU 1100 from bond7"),
        "{}",
        node.log(&cluster)
    );
    // A pattern that is not a regular expression stops the agent at once,
    // naming the flag.
    let out = node
        .ns
        .command(TABBY)
        .args(["--datastore", &cluster.url, "agent", "--nodename", "mtu1"])
        .args(["--mtu-iface-pattern", "(eth"])
        .output()
        .expect("agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("--mtu-iface-pattern: \"(eth\" is not a regular expression"),
        "{stderr}"
    );
}
