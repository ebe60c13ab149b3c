//! `tabby lab` end to end: the leaf-spine scenario (seed 003, FRR routers),
//! the as-per-rack scenario (seed 002, BIRD 2 routers) and the
//! cross-region-rr scenario (seed 000, BIRD 2 with OSPF) and the
//! rr-in-cluster scenario (seed 004, route-reflector nodes) are brought up
//! with the real binary (one `tabby agent` per node, pods through the CNI
//! plugin), verified (every check must pass), and taken down; afterwards no
//! namespace and no process of the lab is left.
//!
//! Runs as root. The lab gets an id of its own (`--name`) so that its
//! namespaces never collide with a lab a user brought up by hand. All
//! traffic stays inside the lab's namespaces (the seeds' private addresses).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TABBY: &str = env!("CARGO_BIN_EXE_tabby");

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .join("topology.yaml")
}

fn tabby(args: &[&str]) -> Output {
    Command::new(TABBY).args(args).output().expect("run tabby")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn lab_namespaces(name: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{name}-")))
        .map(str::to_owned)
        .collect()
}

/// Takes the lab down if the test fails half-way.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        if tabby_lab::State::load(&self.0).is_ok() {
            let _ = tabby(&["lab", "down", &self.0]);
        }
    }
}

/// A restart-agent run inside a scenario: (node, ping from, ping to).
type RestartCheck<'a> = (&'a str, &'a str, &'a str);

/// Runs the scenario; returns the first `verify` report.
fn run_scenario(example_name: &str, lab: &str, restart: Option<RestartCheck>) -> String {
    let file = example(example_name);
    let file = file.to_str().expect("utf-8 path");
    let guard = Guard(lab.to_owned());
    let up = tabby(&["lab", "up", file, "--name", lab]);
    assert!(up.status.success(), "lab up failed:\n{}", text(&up));

    let state = tabby_lab::State::load(lab).expect("state file after up");
    assert!(state.complete);
    assert!(!state.processes.is_empty());
    assert!(
        state
            .processes
            .iter()
            .all(tabby_lab::state::ProcessRecord::is_alive),
        "{}",
        text(&tabby(&["lab", "status", lab]))
    );
    let status = tabby(&["lab", "status", lab]);
    assert!(status.status.success(), "{}", text(&status));

    let verify = tabby(&["lab", "verify", lab, "--timeout", "90"]);
    let report = text(&verify);
    let checks = state.topology.checks.len();
    assert!(
        verify.status.success(),
        "lab verify failed:\n{report}\n{}",
        agent_logs(&state)
    );
    assert_eq!(
        report.lines().filter(|l| l.starts_with("PASS ")).count(),
        checks,
        "{report}"
    );
    assert!(!report.contains("FAIL "), "{report}");
    assert!(
        report.contains(&format!("{checks} of {checks} checks passed")),
        "{report}"
    );

    // With graceful restart (the agent's default) the node's routes stay
    // at its peers and its learned routes stay in its kernel while the
    // agent restarts: the path never disappears, so every echo sent from
    // a second before SIGTERM to two seconds after the sessions are back
    // is answered. Three restarts in a row.
    if let Some((node, from, to)) = restart {
        for round in 1..=3 {
            let r = tabby(&[
                "lab",
                "restart-agent",
                lab,
                node,
                "--ping-from",
                from,
                "--ping-to",
                to,
            ]);
            let out = text(&r);
            assert!(r.status.success(), "restart {round}: {out}");
            let line = out
                .lines()
                .find(|l| l.contains("across the restart:"))
                .unwrap_or_else(|| panic!("restart {round}: no ping line: {out}"));
            assert!(
                line.ends_with(", 0 lost"),
                "restart {round}: echoes lost across a graceful restart: {line}\n{}",
                agent_logs(&tabby_lab::State::load(lab).expect("state"))
            );
        }
        let verify = tabby(&["lab", "verify", lab, "--timeout", "90"]);
        assert!(verify.status.success(), "{}", text(&verify));
    }

    let down = tabby(&["lab", "down", lab]);
    assert!(down.status.success(), "lab down failed:\n{}", text(&down));
    assert_eq!(lab_namespaces(lab), Vec::<String>::new(), "namespaces left");
    let alive: Vec<&str> = state
        .processes
        .iter()
        .filter(|p| p.is_alive())
        .map(|p| p.role.as_str())
        .collect();
    assert!(alive.is_empty(), "processes left: {alive:?}");
    assert!(!tabby_lab::State::dir_of(lab).exists(), "state dir left");
    // A second `down` says the lab is not up.
    let again = tabby(&["lab", "down", lab]);
    assert!(!again.status.success());
    assert!(text(&again).contains("no lab"), "{}", text(&again));
    drop(guard);
    report
}

fn agent_logs(state: &tabby_lab::State) -> String {
    state
        .processes
        .iter()
        .map(|p| {
            format!(
                "--- {} ({}):\n{}",
                p.role,
                p.log.display(),
                std::fs::read_to_string(&p.log)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn leaf_spine_up_verify_down() {
    run_scenario(
        "leaf-spine",
        &format!("lsp{}", std::process::id()),
        Some(("k-master", "client", "k-master/web")),
    );
}

#[test]
fn as_per_rack_up_verify_down() {
    run_scenario("as-per-rack", &format!("apr{}", std::process::id()), None);
}

#[test]
fn cross_region_rr_up_verify_down() {
    run_scenario(
        "cross-region-rr",
        &format!("crr{}", std::process::id()),
        None,
    );
}

#[test]
fn rr_in_cluster_up_verify_down() {
    let report = run_scenario("rr-in-cluster", &format!("ric{}", std::process::id()), None);
    // ipipMode CrossSubnet with every node in one subnet: native routes,
    // and verify says so (the evidence under each `routes` check).
    assert_eq!(
        report.matches("| encapsulation: native\n").count(),
        2,
        "{report}"
    );
    assert!(!report.contains("dev tunl0"), "{report}");
}

#[test]
fn a_bad_topology_is_refused_with_the_field_path_and_builds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    let lab = format!("bad{}", std::process::id());
    std::fs::write(
        &file,
        format!(
            "name: {lab}\nrouters:\n  - {{name: r1, kind: frr, ospf: {{}}}}\nclients:\n  - {{name: c}}\nlinks:\n  - ends: [{{host: r1, address: 10.0.0.0/31}}, {{host: c, address: 10.0.0.1/33}}]\n"
        ),
    )
    .expect("write");
    let out = tabby(&["lab", "up", file.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("links[0].ends[1].address"),
        "{}",
        text(&out)
    );
    assert_eq!(lab_namespaces(&lab), Vec::<String>::new());
    assert!(!tabby_lab::State::dir_of(&lab).exists());
}

#[test]
fn every_router_kind_peers_and_a_failing_check_fails_verify() {
    let lab = format!("rtr{}", std::process::id());
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lab-routers/topology.yaml");
    let guard = Guard(lab.clone());
    let up = tabby(&["lab", "up", file.to_str().expect("path"), "--name", &lab]);
    assert!(up.status.success(), "lab up failed:\n{}", text(&up));
    let state = tabby_lab::State::load(&lab).expect("state");
    // The same lab id cannot be brought up twice.
    let again = tabby(&["lab", "up", file.to_str().expect("path"), "--name", &lab]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already up"), "{}", text(&again));
    assert!(
        state
            .processes
            .iter()
            .all(tabby_lab::state::ProcessRecord::is_alive)
    );
    let verify = tabby(&["lab", "verify", &lab, "--timeout", "90"]);
    assert!(
        verify.status.success(),
        "lab verify failed:\n{}\n{}",
        text(&verify),
        agent_logs(&state)
    );
    assert_eq!(
        text(&verify)
            .lines()
            .filter(|l| l.starts_with("PASS "))
            .count(),
        state.topology.checks.len(),
        "{}",
        text(&verify)
    );

    // Restart the node's agent with pings across it: a new PID, all four
    // sessions back, every check passing again. (The loss is printed, a
    // measurement, not asserted.)
    let restart = tabby(&[
        "lab",
        "restart-agent",
        &lab,
        "n1",
        "--ping-from",
        "r-frr",
        "--ping-to",
        "n1/pod",
    ]);
    let report = text(&restart);
    assert!(restart.status.success(), "{report}");
    assert!(
        report.contains("4 session(s) Established again"),
        "{report}"
    );
    assert!(report.contains("answered"), "{report}");
    let after = tabby_lab::State::load(&lab).expect("state");
    let agent = |s: &tabby_lab::State| {
        s.processes
            .iter()
            .find(|p| p.role == "n1/agent")
            .cloned()
            .expect("agent record")
    };
    let (old, new) = (agent(&state), agent(&after));
    assert_ne!(old.pid, new.pid);
    assert!(!old.is_alive());
    assert!(new.is_alive());
    let verify = tabby(&["lab", "verify", &lab, "--timeout", "90"]);
    assert!(verify.status.success(), "{}", text(&verify));
    let state = after;

    // Stop BIRD 1.6 (it removes its kernel routes on the way out): its
    // routes check must now fail, and verify must say so in its exit code.
    let bird = state
        .processes
        .iter()
        .find(|p| p.role == "r-bird1/bird")
        .expect("bird 1.6 process");
    tabby_lab::state::stop(bird, std::time::Duration::from_secs(5));
    assert!(!bird.is_alive());
    let verify = tabby(&["lab", "verify", &lab, "--timeout", "3"]);
    let report = text(&verify);
    assert!(!verify.status.success(), "{report}");
    assert!(
        report.contains("FAIL r-bird1 routes the blocks of [n1] by bird"),
        "{report}"
    );
    assert!(report.contains("PASS r-frr learns exactly"), "{report}");

    // `status` shows the dead process; `down` still removes everything.
    let status = text(&tabby(&["lab", "status", &lab]));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("r-bird1/bird") && l.contains("dead")),
        "{status}"
    );
    let down = tabby(&["lab", "down", &lab]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(lab_namespaces(&lab), Vec::<String>::new());
    assert!(state.processes.iter().all(|p| !p.is_alive()));
    drop(guard);
}

#[test]
fn a_failure_half_way_through_up_takes_down_what_was_built() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("half.yaml");
    let lab = format!("half{}", std::process::id());
    // FRR starts (zebra), then the BIRD router's config file is missing.
    std::fs::write(
        &file,
        format!(
            "name: {lab}\nrouters:\n  - {{name: r1, kind: frr, ospf: {{}}}}\n  - {{name: r2, kind: bird2, config: missing.conf}}\nlinks:\n  - ends: [{{host: r1, address: 10.0.0.0/31}}, {{host: r2, address: 10.0.0.1/31}}]\n"
        ),
    )
    .expect("write");
    let out = tabby(&["lab", "up", file.to_str().expect("path")]);
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("missing.conf"), "{report}");
    assert!(report.contains("router r1 (Frr) started"), "{report}");
    assert!(report.contains("tearing down"), "{report}");
    assert!(report.contains("stopped 2 processes"), "{report}");
    assert_eq!(lab_namespaces(&lab), Vec::<String>::new());
    assert!(!tabby_lab::State::dir_of(&lab).exists());
}
