//! `up`, `down` and `status`: builds a topology on this machine from network
//! namespaces (links as veth pairs, segments as bridges), starts the routers,
//! applies the manifests to the lab's own SQLite datastore, starts one
//! `tabby agent` per node, creates the pods through the CNI plugin; and takes
//! all of it down again by PID and namespace name, from the state file.

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::error::{LabError, TopologyError};
use crate::frr;
use crate::state::{PodRecord, State, stop};
use crate::topology::{HostKind, Role, RouterKind, Topology};

/// BIRD 2's daemon.
pub const BIRD2: &str = "/opt/bird2/usr/sbin/bird";
/// BIRD 1.6's daemon.
pub const BIRD1: &str = "bird";

/// How long a router or agent may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads and parses a topology file.
pub fn load_topology(path: &Path) -> Result<Topology, TopologyError> {
    let file = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|source| TopologyError::Read {
        file: file.clone(),
        source,
    })?;
    Topology::parse(&text, &file)
}

/// Runs a short command; its output, or an error with its stderr.
pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, LabError> {
    let command = format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| LabError::Command {
        command: command.clone(),
        message: e.to_string(),
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| LabError::Command {
                command: command.clone(),
                message: e.to_string(),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| LabError::Command {
        command: command.clone(),
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            message: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(out)
}

/// `ip -n <ns> args...`.
fn ip_in(ns: &str, args: &[&str]) -> Result<Output, LabError> {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    run("ip", &a, None)
}

/// `ip netns exec <ns> program args...`.
pub(crate) fn exec_in(ns: &str, program: &str, args: &[&str]) -> Result<Output, LabError> {
    let mut a = vec!["netns", "exec", ns, program];
    a.extend_from_slice(args);
    run("ip", &a, None)
}

/// Builds the lab of the topology at `file` (named `name`, else the
/// topology's name), running `tabby` for agents, resources and CNI. On
/// failure, whatever was built is taken down again.
pub fn up(
    file: &Path,
    name: Option<&str>,
    tabby: &Path,
    log: &mut dyn Write,
) -> Result<State, LabError> {
    let mut topology = load_topology(file)?;
    if let Some(n) = name {
        n.clone_into(&mut topology.name);
        topology
            .validate()
            .map_err(|(field, message)| TopologyError::Invalid {
                file: "--name".to_owned(),
                field,
                message,
            })?;
    }
    let dir = State::dir_of(&topology.name);
    if dir.join("state.json").exists() {
        return Err(LabError::AlreadyUp(topology.name.clone(), dir));
    }
    fs::create_dir_all(&dir).map_err(|source| LabError::Io {
        path: dir.clone(),
        source,
    })?;
    let file = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let mut state = State {
        name: topology.name.clone(),
        topology_file: file,
        datastore: format!("sqlite://{}/tabby.db", dir.display()),
        tabby: tabby.to_path_buf(),
        topology,
        namespaces: Vec::new(),
        processes: Vec::new(),
        pods: Vec::new(),
        complete: false,
    };
    state.save()?;
    match build(&mut state, log) {
        Ok(()) => {
            state.complete = true;
            state.save()?;
            Ok(state)
        }
        Err(e) => {
            let _ = writeln!(log, "lab {}: up failed: {e}; tearing down", state.name);
            let _ = teardown(&state, log);
            Err(e)
        }
    }
}

fn step(log: &mut dyn Write, msg: &str) {
    let _ = writeln!(log, "  {msg}");
}

fn build(state: &mut State, log: &mut dyn Write) -> Result<(), LabError> {
    let t = state.topology.clone();
    let base = state
        .topology_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let dir = state.dir();
    let _ = writeln!(log, "lab {}: building in {}", state.name, dir.display());

    // Namespaces: every host, every segment's bridge.
    let hosts = t.hosts();
    for (host, kind) in &hosts {
        let ns = state.host_netns(host);
        add_netns(state, &ns)?;
        if *kind != HostKind::Client {
            exec_in(&ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        }
    }
    for s in &t.segments {
        let ns = format!("{}-s-{}", state.name, s.name);
        add_netns(state, &ns)?;
        ip_in(&ns, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&ns, &["link", "set", "br0", "up"])?;
    }
    step(log, &format!("{} namespaces", state.namespaces.len()));

    // Links and segment ports, in the order `Topology::interfaces` names them.
    let mut next_if: std::collections::BTreeMap<String, usize> = Default::default();
    let mut take = |host: &str| {
        let n = next_if.entry(host.to_owned()).or_insert(0);
        let name = format!("eth{n}");
        *n += 1;
        name
    };
    for l in &t.links {
        let (a, b) = (&l.ends[0], &l.ends[1]);
        let (ia, ib) = (take(&a.host), take(&b.host));
        let (na, nb) = (state.host_netns(&a.host), state.host_netns(&b.host));
        run(
            "ip",
            &[
                "link", "add", &ia, "netns", &na, "type", "veth", "peer", "name", &ib, "netns", &nb,
            ],
            None,
        )?;
        for (ns, iface, addr) in [(&na, &ia, a.address), (&nb, &ib, b.address)] {
            ip_in(ns, &["addr", "add", &addr.to_string(), "dev", iface])?;
            ip_in(ns, &["link", "set", iface, "up"])?;
        }
    }
    for s in &t.segments {
        let seg_ns = format!("{}-s-{}", state.name, s.name);
        for (i, m) in s.members.iter().enumerate() {
            let iface = take(&m.host);
            let port = format!("p{i}");
            let ns = state.host_netns(&m.host);
            run(
                "ip",
                &[
                    "link", "add", &iface, "netns", &ns, "type", "veth", "peer", "name", &port,
                    "netns", &seg_ns,
                ],
                None,
            )?;
            ip_in(&ns, &["addr", "add", &m.address.to_string(), "dev", &iface])?;
            ip_in(&ns, &["link", "set", &iface, "up"])?;
            ip_in(&seg_ns, &["link", "set", &port, "master", "br0"])?;
            ip_in(&seg_ns, &["link", "set", &port, "up"])?;
        }
    }
    step(
        log,
        &format!("{} links, {} segments", t.links.len(), t.segments.len()),
    );

    // Loopback addresses, static routes.
    for r in &t.routers {
        let ns = state.host_netns(&r.name);
        for a in &r.loopbacks {
            ip_in(&ns, &["addr", "add", &a.to_string(), "dev", "lo"])?;
        }
    }
    let statics = t
        .routers
        .iter()
        .map(|r| (&r.name, None, &r.routes))
        .chain(t.nodes.iter().map(|n| (&n.name, n.gateway, &n.routes)))
        .chain(t.clients.iter().map(|c| (&c.name, c.gateway, &c.routes)));
    for (host, gateway, routes) in statics {
        let ns = state.host_netns(host);
        if let Some(gw) = gateway {
            ip_in(&ns, &["route", "add", "default", "via", &gw.to_string()])?;
        }
        for r in routes {
            ip_in(
                &ns,
                &["route", "add", &r.to.to_string(), "via", &r.via.to_string()],
            )?;
        }
    }

    // Routers.
    for r in &t.routers {
        let rdir = dir.join(&r.name);
        fs::create_dir_all(&rdir).map_err(|source| LabError::Io {
            path: rdir.clone(),
            source,
        })?;
        let ns = state.host_netns(&r.name);
        let given = match &r.config {
            Some(f) => {
                let path = base.join(f);
                let text =
                    fs::read_to_string(&path).map_err(|source| LabError::Io { path, source })?;
                Some(text.replace("{{dir}}", &rdir.display().to_string()))
            }
            None => None,
        };
        match r.kind {
            RouterKind::Frr => start_frr(state, &t, r, &rdir, given)?,
            RouterKind::Bird2 | RouterKind::Bird => {
                let conf = rdir.join("bird.conf");
                write_file(&conf, given.as_deref().unwrap_or_default())?;
                let bin = if r.kind == RouterKind::Bird2 {
                    BIRD2
                } else {
                    BIRD1
                };
                let args = vec![
                    "-f".to_owned(),
                    "-c".to_owned(),
                    conf.display().to_string(),
                    "-s".to_owned(),
                    rdir.join("bird.ctl").display().to_string(),
                ];
                state.spawn(
                    &format!("{}/bird", r.name),
                    &ns,
                    bin,
                    &args,
                    None,
                    rdir.join("bird.log"),
                )?;
                wait_for(&format!("{}'s control socket", r.name), || {
                    rdir.join("bird.ctl").exists()
                })?;
            }
            RouterKind::TabbyBgpd => {
                let conf = rdir.join("bgpd.yaml");
                write_file(&conf, given.as_deref().unwrap_or_default())?;
                let tabby = state.tabby.display().to_string();
                let args = vec![
                    "bgpd".to_owned(),
                    "--config".to_owned(),
                    conf.display().to_string(),
                ];
                state.spawn(
                    &format!("{}/bgpd", r.name),
                    &ns,
                    &tabby,
                    &args,
                    None,
                    rdir.join("bgpd.log"),
                )?;
            }
        }
        step(log, &format!("router {} ({:?}) started", r.name, r.kind));
    }

    // Resources.
    let tabby = state.tabby.display().to_string();
    let ds = state.datastore.clone();
    for m in &t.manifests {
        let path = base.join(m);
        let p = path.display().to_string();
        run(&tabby, &["--datastore", &ds, "apply", "-f", &p], None)?;
        step(log, &format!("applied {m}"));
    }
    apply_patches(&tabby, &ds, &t, false, log)?;

    // Agents.
    for n in &t.nodes {
        let ns = state.host_netns(&n.name);
        let socket = dir.join(format!("{}.sock", n.name));
        let mut args = vec![
            "--datastore".to_owned(),
            ds.clone(),
            "--log".to_owned(),
            "info".to_owned(),
            "agent".to_owned(),
            "--nodename".to_owned(),
            n.name.clone(),
            "--ip".to_owned(),
            n.address.to_string(),
            "--control-socket".to_owned(),
            socket.display().to_string(),
            "--state-dir".to_owned(),
            dir.join(format!("{}-state", n.name)).display().to_string(),
            "--mtu-file".to_owned(),
            mtu_file(&dir, &n.name).display().to_string(),
            "--poll-ms".to_owned(),
            "200".to_owned(),
            "--cni-socket".to_owned(),
            cni_socket(&dir, &n.name).display().to_string(),
        ];
        if let Some(asn) = n.asn {
            args.extend(["--as".to_owned(), asn.to_string()]);
        }
        state.spawn(
            &format!("{}/agent", n.name),
            &ns,
            &tabby,
            &args,
            None,
            dir.join(format!("{}-agent.log", n.name)),
        )?;
    }
    for n in &t.nodes {
        let socket = dir.join(format!("{}.sock", n.name));
        let s = socket.display().to_string();
        wait_for(&format!("{}'s agent", n.name), || {
            run(
                &tabby,
                &["node", "status", "-o", "json", "--socket", &s],
                None,
            )
            .is_ok()
        })?;
        let mut labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if n.role == Role::Master {
            labels.push("node-role.kubernetes.io/control-plane=".to_owned());
        }
        if !labels.is_empty() {
            let mut a = vec!["--datastore", &ds, "label", "node", &n.name, "--overwrite"];
            a.extend(labels.iter().map(String::as_str));
            run(&tabby, &a, None)?;
        }
        step(log, &format!("agent on {} up", n.name));
    }
    apply_patches(&tabby, &ds, &t, true, log)?;

    // Pods.
    for n in &t.nodes {
        for p in &n.pods {
            let ns = format!("{}-p-{}.{}", state.name, n.name, p.name);
            add_netns(state, &ns)?;
            let container_id = format!("{}-{}-{}", state.name, n.name, p.name);
            state.pods.push(PodRecord {
                node: n.name.clone(),
                name: p.name.clone(),
                netns: ns.clone(),
                container_id: container_id.clone(),
                address: None,
            });
            state.save()?;
            let address = cni(state, &n.name, &ns, &container_id, "ADD")?;
            if let Some(rec) = state.pods.last_mut() {
                rec.address = Some(address);
            }
            state.save()?;
            if let Some(port) = p.http {
                let www = dir.join(format!("www-{}-{}", n.name, p.name));
                fs::create_dir_all(&www).map_err(|source| LabError::Io {
                    path: www.clone(),
                    source,
                })?;
                write_file(
                    &www.join("index.html"),
                    &format!("tabby lab: pod {}/{} at {address}\n", n.name, p.name),
                )?;
                let args = vec![
                    "-m".to_owned(),
                    "http.server".to_owned(),
                    port.to_string(),
                    "--bind".to_owned(),
                    address.to_string(),
                ];
                state.spawn(
                    &format!("{}/{}/http", n.name, p.name),
                    &ns,
                    python(),
                    &args,
                    Some(&www),
                    dir.join(format!("{}-{}-http.log", n.name, p.name)),
                )?;
                let probe = format!("{address}:{port}");
                wait_for(&format!("the web server in {}/{}", n.name, p.name), || {
                    exec_in(&ns, "ss", &["-Htln", "src", &probe])
                        .is_ok_and(|o| !o.stdout.is_empty())
                })?;
            }
            step(log, &format!("pod {}/{} at {address}", n.name, p.name));
        }
    }
    Ok(())
}

/// Applies the patches of one stage (before or after the agents).
fn apply_patches(
    tabby: &str,
    ds: &str,
    t: &Topology,
    after_agents: bool,
    log: &mut dyn Write,
) -> Result<(), LabError> {
    for p in t.patches.iter().filter(|p| p.after_agents == after_agents) {
        let json = p.patch.to_string();
        run(
            tabby,
            &["--datastore", ds, "patch", &p.kind, &p.name, "-p", &json],
            None,
        )?;
        step(log, &format!("patched {} {}: {json}", p.kind, p.name));
    }
    Ok(())
}

/// The Python interpreter that serves HTTP in pods.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), LabError> {
    fs::write(path, text).map_err(|source| LabError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn add_netns(state: &mut State, ns: &str) -> Result<(), LabError> {
    run("ip", &["netns", "add", ns], None)?;
    state.namespaces.push(ns.to_owned());
    state.save()?;
    ip_in(ns, &["link", "set", "lo", "up"])?;
    Ok(())
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), LabError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: what.to_owned(),
                detail: format!("not there after {}s", START_TIMEOUT.as_secs()),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_frr(
    state: &mut State,
    t: &Topology,
    r: &crate::topology::Router,
    rdir: &Path,
    given: Option<String>,
) -> Result<(), LabError> {
    let ns = state.host_netns(&r.name);
    let daemons: Vec<(&str, String)> = match given {
        // A given file is one integrated config: every daemon reads it.
        Some(text) => {
            let mut v = vec![("zebra", text.clone())];
            if text.contains("router ospf") {
                v.push(("ospfd", text.clone()));
            }
            if text.contains("router bgp") {
                v.push(("bgpd", text));
            }
            v
        }
        None => frr::configs(t, r, rdir),
    };
    for (daemon, text) in &daemons {
        write_file(&rdir.join(format!("{daemon}.conf")), text)?;
    }
    // The daemons drop privileges to FRR's user: it writes sockets, pid
    // files and logs here.
    let d = rdir.display().to_string();
    run("chown", &["-R", "frr:frr", &d], None)?;
    for (daemon, _) in &daemons {
        let prog = format!("{}/{daemon}", frr::FRR_DIR);
        state.spawn(
            &format!("{}/{daemon}", r.name),
            &ns,
            &prog,
            &frr::daemon_args(daemon, rdir),
            None,
            rdir.join(format!("{daemon}.out")),
        )?;
        if *daemon == "zebra" {
            wait_for(&format!("{}'s zebra", r.name), || {
                rdir.join("zserv.api").exists()
            })?;
        }
    }
    Ok(())
}

/// The socket of `node`'s agent's CNI service (one per agent: several
/// agents share the host's file system).
fn cni_socket(dir: &std::path::Path, node: &str) -> std::path::PathBuf {
    dir.join(format!("{node}-cni.sock"))
}

/// The MTU file of `node`'s agent, which its pods read (one per agent:
/// never the machine's own `/var/lib/calico/mtu`).
fn mtu_file(dir: &std::path::Path, node: &str) -> std::path::PathBuf {
    dir.join(format!("{node}-state")).join("mtu")
}

/// Runs the CNI plugin in `node`'s namespace for the pod namespace `pod_ns`
/// (through that node's agent's CNI service when it answers);
/// returns the pod's IPv4 address on ADD.
fn cni(
    state: &State,
    node: &str,
    pod_ns: &str,
    container_id: &str,
    command: &str,
) -> Result<Ipv4Addr, LabError> {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby",
        "datastore": state.datastore, "nodename": node,
        "mtuFile": mtu_file(&state.dir(), node),
        "ipam": {"type": "tabby-ipam"}
    });
    let what = format!("CNI {command} {container_id} on {node}");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &state.host_netns(node)])
        .arg(&state.tabby)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", format!("/var/run/netns/{pod_ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("TABBY_CNI_SOCKET", cni_socket(&state.dir(), node))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::Command {
            command: what.clone(),
            message: e.to_string(),
        })?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(conf.to_string().as_bytes())
            .map_err(|e| LabError::Command {
                command: what.clone(),
                message: e.to_string(),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| LabError::Command {
        command: what.clone(),
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: what,
            message: format!(
                "{}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    if command != "ADD" {
        return Ok(Ipv4Addr::UNSPECIFIED);
    }
    let result: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| LabError::Command {
            command: what.clone(),
            message: format!("result is not JSON: {e}"),
        })?;
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next())
        .find_map(|a| a.parse::<Ipv4Addr>().ok())
        .ok_or_else(|| LabError::Command {
            command: what,
            message: format!("no IPv4 address in {result}"),
        })
}

/// What `down` removed.
#[derive(Debug, Default)]
pub struct DownReport {
    /// Processes stopped (by role).
    pub stopped: Vec<String>,
    /// Processes that needed SIGKILL.
    pub killed: Vec<String>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
}

/// Takes lab `name` down: every recorded process by PID, then the
/// namespaces, then the state directory.
pub fn down(name: &str, log: &mut dyn Write) -> Result<DownReport, LabError> {
    let state = State::load(name)?;
    teardown(&state, log)
}

fn teardown(state: &State, log: &mut dyn Write) -> Result<DownReport, LabError> {
    let mut report = DownReport::default();
    // Pods first, through the plugin, while the datastore and agents exist
    // (releases their addresses); failures only leave datastore entries in
    // a datastore about to be deleted.
    for p in state.pods.iter().filter(|p| p.address.is_some()) {
        let _ = cni(state, &p.node, &p.netns, &p.container_id, "DEL");
    }
    for p in state.processes.iter().rev() {
        if !p.is_alive() {
            continue;
        }
        if crate::state::stop(p, Duration::from_secs(5)) {
            report.killed.push(p.role.clone());
        }
        report.stopped.push(p.role.clone());
    }
    // Anything else still inside the lab's own namespaces was started by
    // the lab (a daemon's child): stop it by PID too.
    for ns in &state.namespaces {
        if let Ok(out) = run("ip", &["netns", "pids", ns], None) {
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                let Some((_, start_time)) = crate::state::proc_stat(pid) else {
                    continue;
                };
                let rec = crate::state::ProcessRecord {
                    role: format!("pid {pid} in {ns}"),
                    netns: ns.clone(),
                    pid,
                    start_time,
                    log: PathBuf::new(),
                    program: String::new(),
                    args: Vec::new(),
                    cwd: None,
                };
                stop(&rec, Duration::from_secs(2));
                report.stopped.push(rec.role);
            }
        }
    }
    for ns in state.namespaces.iter().rev() {
        match run("ip", &["netns", "del", ns], None) {
            Ok(_) => report.namespaces.push(ns.clone()),
            Err(e) => {
                let _ = writeln!(log, "  {e}");
            }
        }
    }
    let dir = state.dir();
    fs::remove_dir_all(&dir).map_err(|source| LabError::Io { path: dir, source })?;
    let _ = writeln!(
        log,
        "lab {}: stopped {} processes ({} killed), deleted {} namespaces",
        state.name,
        report.stopped.len(),
        report.killed.len(),
        report.namespaces.len()
    );
    Ok(report)
}

/// A human-readable status of lab `name`.
pub fn status(name: &str) -> Result<String, LabError> {
    let state = State::load(name)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "lab {} ({}), topology {}, datastore {}",
        state.name,
        if state.complete { "up" } else { "incomplete" },
        state.topology_file.display(),
        state.datastore
    );
    let _ = writeln!(s, "{:<24} {:>8}  {:<8} LOG", "PROCESS", "PID", "STATE");
    for p in &state.processes {
        let _ = writeln!(
            s,
            "{:<24} {:>8}  {:<8} {}",
            p.role,
            p.pid,
            if p.is_alive() { "running" } else { "dead" },
            p.log.display()
        );
    }
    let _ = writeln!(s, "{:<24} {:<16} NETNS", "POD", "ADDRESS");
    for p in &state.pods {
        let _ = writeln!(
            s,
            "{:<24} {:<16} {}",
            format!("{}/{}", p.node, p.name),
            p.address
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            p.netns
        );
    }
    let _ = writeln!(s, "namespaces: {}", state.namespaces.join(" "));
    Ok(s)
}

/// Lab names with a state directory.
pub fn list() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(crate::state::state_root())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// What `restart_agent` saw.
#[derive(Debug)]
pub struct RestartReport {
    /// The agent's PID before.
    pub old_pid: u32,
    /// Its PID after.
    pub new_pid: u32,
    /// Sessions Established before the restart and again after it.
    pub sessions: usize,
    /// How long from SIGTERM until every session was Established again.
    pub recovery: Duration,
    /// `(sent, answered)` echoes of the ping run across the restart.
    pub ping: Option<(u32, u32)>,
}

/// The agent flag that turns graceful restart off.
const NO_GRACEFUL_RESTART: &str = "--no-graceful-restart";

/// Established sessions of a node's agent, or None while it does not answer.
fn established(state: &State, node: &str) -> Option<usize> {
    let socket = state.dir().join(format!("{node}.sock"));
    let s = socket.display().to_string();
    let tabby = state.tabby.display().to_string();
    let out = run(
        &tabby,
        &["node", "status", "-o", "json", "--socket", &s],
        None,
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter(|p| p["state"] == "Established")
            .count(),
    )
}

/// Restarts `node`'s agent (SIGTERM, then the same command line) and waits
/// until it has as many Established sessions as before; with `ping`
/// (`from`, `to` targets), pings every 200 ms across the restart and
/// counts the answers (a measurement for graceful restart, not a check).
/// `graceful_restart` `Some(false)` starts the new agent with
/// `--no-graceful-restart`, `Some(true)` without it, `None` keeps the old
/// command line (the stop itself is graceful or not as the old agent was).
pub fn restart_agent(
    name: &str,
    node: &str,
    ping: Option<(&str, &str)>,
    graceful_restart: Option<bool>,
    log: &mut dyn Write,
) -> Result<RestartReport, LabError> {
    let mut state = State::load(name)?;
    let role = format!("{node}/agent");
    let index = state
        .processes
        .iter()
        .position(|p| p.role == role)
        .ok_or_else(|| LabError::Command {
            command: format!("restart {role}"),
            message: format!("lab {name} has no process {role}"),
        })?;
    let old = state.processes[index].clone();
    if old.program.is_empty() {
        return Err(LabError::Command {
            command: format!("restart {role}"),
            message:
                "the state file does not record its command line (lab brought up by an older tabby)"
                    .into(),
        });
    }
    let before = established(&state, node).unwrap_or(0);
    let mut pinger = match ping {
        Some((from, to)) => {
            let (src, dst) = crate::verify::ping_ends(&state, from, to).map_err(|message| {
                LabError::Command {
                    command: format!("ping {from} -> {to}"),
                    message,
                }
            })?;
            // Measure from a working path: wait (up to 60 s) until one
            // echo is answered, e.g. after a previous restart without
            // graceful restart.
            let settle = Instant::now() + Duration::from_secs(60);
            while Instant::now() < settle {
                let ok = Command::new("ip")
                    .args(["netns", "exec", &src, "ping", "-n", "-c", "1", "-W", "1"])
                    .arg(dst.to_string())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
            }
            let child = Command::new("ip")
                .args(["netns", "exec", &src, "ping", "-n", "-i", "0.2", "-W", "1"])
                .arg(dst.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| LabError::Command {
                    command: "ping".into(),
                    message: e.to_string(),
                })?;
            std::thread::sleep(Duration::from_secs(1));
            Some(child)
        }
        None => None,
    };
    let _ = writeln!(log, "  stopping {role} (pid {})", old.pid);
    let mut args = old.args.clone();
    if let Some(on) = graceful_restart {
        args.retain(|a| a != NO_GRACEFUL_RESTART);
        if !on {
            args.push(NO_GRACEFUL_RESTART.to_owned());
        }
    }
    let start = Instant::now();
    stop(&old, Duration::from_secs(10));
    state.processes.remove(index);
    state.save()?;
    state.spawn(
        &role,
        &old.netns,
        &old.program,
        &args,
        old.cwd.as_deref(),
        // One log for every restart after the first (a name that grew
        // by `.restarted` each time would end up too long for the file
        // system).
        if old.log.to_string_lossy().ends_with(".restarted.log") {
            old.log.clone()
        } else {
            old.log.with_extension("restarted.log")
        },
    )?;
    let new_pid = state.processes.last().map(|p| p.pid).unwrap_or(0);
    let _ = writeln!(
        log,
        "  started {role} (pid {new_pid}); waiting for {before} session(s)"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if established(&state, node).is_some_and(|n| n >= before) {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let recovery = start.elapsed();
    let sessions = established(&state, node).unwrap_or(0);
    let ping = match pinger.take() {
        Some(child) => {
            std::thread::sleep(Duration::from_secs(2));
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let out = child.wait_with_output().map_err(|e| LabError::Command {
                command: "ping".into(),
                message: e.to_string(),
            })?;
            crate::verify::ping_counts(&String::from_utf8_lossy(&out.stdout))
        }
        None => None,
    };
    if sessions < before {
        return Err(LabError::Timeout {
            what: format!("{role} to re-establish {before} session(s)"),
            detail: format!("{sessions} after {}s", recovery.as_secs()),
        });
    }
    Ok(RestartReport {
        old_pid: old.pid,
        new_pid,
        sessions,
        recovery,
        ping,
    })
}
