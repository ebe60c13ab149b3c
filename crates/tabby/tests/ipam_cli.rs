//! `tabby ipam` end to end: the real binary, several processes at once
//! against SQLite and against a real etcd, and a process SIGKILLed in the
//! middle of a block claim.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tabby_datastore::Datastore;
use tabby_model::{IpamConfigurationSpec, ResourceStore, WriteMode};
use tabby_testbed::{EtcdServer, Process};

const TABBY: &str = env!("CARGO_BIN_EXE_tabby");

/// A datastore for one test plus what keeps it alive.
struct Store {
    url: String,
    dir: tempfile::TempDir,
    _etcd: Option<EtcdServer>,
}

fn sqlite() -> Store {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("tabby.db").display());
    Store {
        url,
        dir,
        _etcd: None,
    }
}

fn etcd() -> Store {
    let server = EtcdServer::start().expect("start etcd");
    Store {
        url: server.url(),
        dir: tempfile::tempdir().expect("tempdir"),
        _etcd: Some(server),
    }
}

impl Store {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Applies an IPPool manifest through `tabby-model`'s storage.
    fn add_pool(&self, name: &str, cidr: &str, block_size: u8) {
        let yaml = format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\n\
             spec:\n  cidr: {cidr}\n  blockSize: {block_size}\n  natOutgoing: true\n"
        );
        let entries = tabby_model::parse_manifest("pool.yaml", &yaml).expect("manifest");
        let url = self.url.clone();
        self.block_on(async move {
            let ds = Datastore::connect(&url).await.expect("connect");
            ResourceStore::new(ds)
                .write_batch(WriteMode::Apply, &entries)
                .await
                .expect("apply pool");
        });
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Runtime::new().expect("runtime").block_on(f)
    }

    fn tabby(&self, args: &[&str]) -> Output {
        Command::new(TABBY)
            .arg("--datastore")
            .arg(&self.url)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tabby")
    }

    /// Runs `tabby ARGS`, which must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.tabby(args);
        assert!(
            out.status.success(),
            "tabby {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn show_check_release_configure() {
    let s = sqlite();
    s.add_pool("pods", "10.30.0.0/16", 26);
    let out = s.ok(&[
        "ipam",
        "assign",
        "--node",
        "n1",
        "--handle",
        "k8s-pod-network.abc",
        "--ipv4",
        "3",
    ]);
    let ips: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().expect("ip"))
        .collect();
    assert_eq!(ips.len(), 3, "{out}");

    let show = s.ok(&["ipam", "show", "--show-blocks"]);
    assert!(show.contains("| GROUPING |"), "{show}");
    let pool_row = show
        .lines()
        .find(|l| l.contains("IP Pool"))
        .expect("pool row");
    assert!(pool_row.contains("10.30.0.0/16"), "{show}");
    assert!(pool_row.contains("65536"), "{show}");
    assert!(pool_row.contains("3 (0%)"), "{show}");
    assert!(
        show.lines()
            .any(|l| l.contains("Block") && l.contains("3 (5%)")),
        "{show}"
    );
    // Every row has the same width (aligned table).
    let widths: Vec<usize> = show.lines().map(str::len).collect();
    assert!(widths.windows(2).all(|w| w[0] == w[1]), "{show}");

    let one = s.ok(&["ipam", "show", "--ip", ips[0]]);
    assert!(one.contains("is in use"), "{one}");
    assert!(one.contains("k8s-pod-network.abc"), "{one}");
    assert!(one.contains("node n1"), "{one}");
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["ipam", "show", "-o", "json"])).expect("json");
    assert_eq!(json[0]["inUse"], 3);

    // Two of the three are in use: the third is a leak.
    let in_use = s.path("in-use.txt");
    std::fs::write(&in_use, format!("{}\n{}/32\n", ips[0], ips[1])).expect("write");
    let report = s.path("report.json");
    let out = s.ok(&["ipam", "check", "--in-use", p(&in_use), "-o", p(&report)]);
    assert!(out.contains("Found 1 problems."), "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(r["problems"][0]["kind"], "leakedAddress");
    assert_eq!(r["problems"][0]["ip"], ips[2]);
    let out = s.ok(&["ipam", "release", "--from-report", p(&report)]);
    assert!(out.contains("1 fixed, 0 not fixed."), "{out}");
    let out = s.ok(&["ipam", "check", "--in-use", p(&in_use)]);
    assert!(out.contains("Found 0 problems."), "{out}");
    let gone = s.ok(&["ipam", "show", "--ip", ips[2]]);
    assert!(gone.contains("is not assigned"), "{gone}");

    // Release by IP, then the rest by handle.
    let out = s.ok(&["ipam", "release", "--ip", ips[0]]);
    assert!(out.contains(&format!("Released {}", ips[0])), "{out}");
    let again = s.tabby(&["ipam", "release", "--ip", ips[0]]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not allocated"));
    let out = s.ok(&["ipam", "release", "--handle", "k8s-pod-network.abc"]);
    assert!(out.contains(ips[1]), "{out}");

    // Configure.
    let out = s.ok(&[
        "ipam",
        "configure",
        "--strict-affinity",
        "true",
        "--max-blocks-per-host",
        "1",
    ]);
    assert!(
        out.contains("strictAffinity=true maxBlocksPerHost=1"),
        "{out}"
    );
    // tabby-model's storage reads back what `ipam configure` wrote.
    let url = s.url.clone();
    let stored = s.block_on(async move {
        let ds = Datastore::connect(&url).await.expect("connect");
        ResourceStore::new(ds)
            .get_typed::<IpamConfigurationSpec>("default")
            .await
            .expect("read config")
            .expect("config stored")
    });
    assert!(stored.spec.strict_affinity);
    assert_eq!(stored.spec.max_blocks_per_host, 1);
    let bad = s.tabby(&["ipam", "configure", "--max-blocks-per-host", "-1"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("maxBlocksPerHost"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // strictAffinity + one block per host: node n1's block (64 addresses)
    // is all it gets.
    s.ok(&[
        "ipam",
        "assign",
        "--node",
        "n1",
        "--handle",
        "k8s-pod-network.big",
        "--ipv4",
        "64",
    ]);
    let full = s.tabby(&[
        "ipam",
        "assign",
        "--node",
        "n1",
        "--handle",
        "k8s-pod-network.more",
    ]);
    assert!(!full.status.success());
    let err = String::from_utf8_lossy(&full.stderr);
    assert!(
        err.contains("maxBlocksPerHost (1)") && err.contains("strictAffinity"),
        "{err}"
    );
}

/// Four processes (two per node) allocate and release against one store at
/// once; afterwards no address is held twice and `ipam check` is clean.
fn concurrent_processes(s: &Store) {
    s.add_pool("pods", "10.40.0.0/20", 26);
    let mut procs = Vec::new();
    for i in 0..4 {
        let keep = s.path(&format!("keep-{i}.txt"));
        let child = Command::new(TABBY)
            .arg("--datastore")
            .arg(&s.url)
            .args(["ipam", "exercise", "--node"])
            .arg(format!("node-{}", i % 2))
            .args(["--count", "150", "--release-every", "3", "--tag"])
            .arg(format!("p{i}"))
            .arg("--keep-file")
            .arg(&keep)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        procs.push((child, keep));
    }
    let mut files = Vec::new();
    let mut all = std::collections::BTreeSet::new();
    for (child, keep) in procs {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "exercise failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stats: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("exercise prints JSON");
        assert_eq!(stats["allocated"], 150);
        assert_eq!(stats["held"], 100);
        for line in std::fs::read_to_string(&keep).expect("keep file").lines() {
            assert!(all.insert(line.to_owned()), "{line} held by two workloads");
        }
        files.push(keep);
    }
    assert_eq!(all.len(), 400);
    let mut args = vec!["ipam", "check"];
    for f in &files {
        args.push("--in-use");
        args.push(p(f));
    }
    let out = s.ok(&args);
    assert!(out.contains("400 allocated addresses"), "{out}");
    assert!(out.contains("Found 0 problems."), "{out}");
}

#[test]
fn concurrent_processes_on_sqlite() {
    concurrent_processes(&sqlite());
}

#[test]
fn concurrent_processes_on_etcd() {
    concurrent_processes(&etcd());
}

/// A process SIGKILLed in the middle of a block claim leaves a problem
/// `ipam check` finds and `ipam release --from-report` fixes.
fn killed_mid_claim(s: &Store, pause: &str, expected_kind: &str) {
    s.add_pool("pods", "10.50.0.0/24", 26);
    let mut proc = Process::spawn(
        Command::new(TABBY)
            .env("TABBY_IPAM_TEST_PAUSE", pause)
            .arg("--datastore")
            .arg(&s.url)
            .args(["ipam", "exercise", "--node", "victim", "--count", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .expect("spawn");
    let stderr = proc.child_mut().stderr.take().expect("stderr");
    let mut line = String::new();
    BufReader::new(stderr)
        .read_line(&mut line)
        .expect("read stderr");
    assert!(line.contains("paused at"), "{line}");
    // SIGKILL by PID, mid-claim.
    proc.signal("KILL").expect("kill");
    tabby_testbed::wait_until(Duration::from_secs(10), "the victim to die", || {
        !proc.is_running()
    })
    .expect("dead");

    let report = s.path("report.json");
    let out = s.ok(&["ipam", "check", "-o", p(&report)]);
    assert!(out.contains("Found 1 problems."), "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(r["problems"][0]["kind"], expected_kind, "{r}");
    assert_eq!(r["problems"][0]["host"], "victim");
    let out = s.ok(&["ipam", "release", "--from-report", p(&report)]);
    assert!(out.contains("1 fixed, 0 not fixed."), "{out}");
    let out = s.ok(&["ipam", "check"]);
    assert!(out.contains("Found 0 problems."), "{out}");
    // The node can allocate normally afterwards.
    s.ok(&[
        "ipam",
        "assign",
        "--node",
        "victim",
        "--handle",
        "k8s-pod-network.after",
    ]);
    let out = s.ok(&["ipam", "check", "--skip-leaks"]);
    assert!(out.contains("Found 0 problems."), "{out}");
}

#[test]
fn killed_after_pending_affinity_on_sqlite() {
    killed_mid_claim(&sqlite(), "after-pending-affinity", "affinityWithoutBlock");
}

#[test]
fn killed_after_block_created_on_sqlite() {
    killed_mid_claim(&sqlite(), "after-block-created", "unconfirmedAffinity");
}

#[test]
fn killed_after_block_created_on_etcd() {
    killed_mid_claim(&etcd(), "after-block-created", "unconfirmedAffinity");
}
