//! The harness the namespace tests of `tabby agent` share (`agent.rs`,
//! `doctor.rs`; `cni.rs` uses its process helpers): an L2 segment of node namespaces, the agent's command
//! line, the CNI plugin's environment, `tabby node status` and waiting
//! with context. Each test file keeps its own `Cluster`/`Node` on top.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tabby_testbed::{Netns, wait_until};

/// The `tabby` binary under test.
pub const TABBY: &str = env!("CARGO_BIN_EXE_tabby");
/// How long any one wait lasts before the test fails with its context.
pub const WAIT: Duration = Duration::from_secs(60);

/// An L2 segment: a bridge in a namespace of its own.
pub struct Segment {
    /// The bridge's namespace (its ports are `p1`, `p2`, ... in plug order).
    pub ns: Netns,
    ports: usize,
}

impl Segment {
    /// A new bridge `br0` in a namespace named from `prefix`.
    pub fn new(prefix: &str) -> Segment {
        let ns = Netns::new(prefix).expect("switch netns");
        ns.ip(["link", "add", "br0", "type", "bridge"])
            .expect("bridge");
        ns.ip(["link", "set", "br0", "up"]).expect("bridge up");
        Segment { ns, ports: 0 }
    }

    /// Plugs `host` in with its end `dev` addressed `addr`.
    pub fn plug(&mut self, host: &Netns, dev: &str, addr: &str) {
        self.ports += 1;
        let port = format!("p{}", self.ports);
        tabby_testbed::veth(host, dev, Some(addr), &self.ns, &port, None).expect("veth");
        self.ns
            .ip(["link", "set", &port, "master", "br0"])
            .expect("enslave");
    }
}

/// Runs `cmd` with `stdin` written to it, capturing stdout and stderr.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// `tabby --datastore URL --log info agent` in `ns` for node `name` at
/// `ip` (a /24), its control socket `socket`, its state in `state_dir`
/// (its MTU file too, [`mtu_file`]: never the machine's
/// `/var/lib/calico/mtu`), polling every 200 ms, logging to `log`. The
/// caller adds `--cni-socket`.
pub fn agent_command(
    ns: &Netns,
    url: &str,
    name: &str,
    ip: &str,
    socket: &Path,
    state_dir: &Path,
    log: std::fs::File,
) -> Command {
    let mut cmd = ns.command(TABBY);
    cmd.args(["--datastore", url, "--log", "info", "agent"])
        .args(["--nodename", name, "--ip", &format!("{ip}/24")])
        .arg("--control-socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--mtu-file")
        .arg(mtu_file(state_dir))
        .args(["--poll-ms", "200"])
        .stdout(Stdio::null())
        .stderr(log);
    cmd
}

/// The MTU file of the agent whose state directory is `state_dir` (what
/// [`agent_command`] passes as `--mtu-file`; `mtuFile` for the plugin).
pub fn mtu_file(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("mtu")
}

/// The CNI plugin (`tabby` with `CNI_*` set) in `ns`, for `command` on
/// container `id` in `pod`, pointed at the agent's CNI socket (or `off`).
pub fn cni_command(
    ns: &Netns,
    command: &str,
    id: &str,
    pod: &Netns,
    cni_socket: impl AsRef<OsStr>,
) -> Command {
    let mut cmd = ns.command(TABBY);
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/var/run/netns/{}", pod.name()))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("TABBY_CNI_SOCKET", cni_socket);
    cmd
}

/// The network configuration of the `tabby` plugin for node `nodename`.
pub fn cni_conf(url: &str, nodename: &str, ipam: Value) -> Value {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby",
        "datastore": url, "nodename": nodename,
        "ipam": ipam
    })
}

/// `tabby node status -o json` of the agent on `socket`, or None while it
/// is not answering.
pub fn node_status(socket: &Path) -> Option<Vec<Value>> {
    let out = Command::new(TABBY)
        .args(["node", "status", "-o", "json", "--socket"])
        .arg(socket)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits up to [`WAIT`] for `cond`; panics with `context()` if it never holds.
pub fn wait(what: &str, cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    if wait_until(WAIT, what, cond).is_err() {
        panic!("timed out waiting for {what}\n{}", context());
    }
}
