//! `tabby dataplane` end to end: the binary, run as root against a
//! namespace this test makes, reconciles a route file, lists routes (text
//! and JSON) and refuses bad input with the line and field at fault.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use tabby_testbed::{Netns, veth};

fn tabby(ns: &Netns, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tabby"))
        .args(["dataplane", "--netns", ns.name()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tabby");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn reconcile_list_and_errors() {
    let a = Netns::new("cli-dp-a").expect("netns");
    let b = Netns::new("cli-dp-b").expect("netns");
    veth(
        &a,
        "eth0",
        Some("10.250.0.1/24"),
        &b,
        "eth0",
        Some("10.250.0.2/24"),
    )
    .expect("veth");
    a.ip([
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "10.250.0.2",
        "proto",
        "static",
    ])
    .expect("static route");
    let file = "\
blackhole 10.244.1.0/26   # local block
10.244.2.0/26 via 10.250.0.2 dev eth0
10.244.3.0/26 nexthop via 10.250.0.2 weight 1 nexthop via 10.250.0.3 weight 3
10.99.0.0/24 via 10.250.0.9
";
    let out = tabby(&a, &["reconcile", "-"], Some(file));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(
        o.contains("added 3 replaced 0 deleted 0 unchanged 0"),
        "{o}"
    );
    assert!(
        o.contains("conflict: 10.99.0.0/24") && o.contains("proto static"),
        "{o}"
    );

    let out = tabby(&a, &["routes"], None);
    let o = text(&out.stdout);
    assert!(o.contains("blackhole 10.244.1.0/26"), "{o}");
    assert!(
        o.contains("10.244.3.0/26 nexthop via 10.250.0.2 dev eth0 weight 1 nexthop via 10.250.0.3 dev eth0 weight 3"),
        "{o}"
    );
    assert!(
        !o.contains("10.99.0.0/24"),
        "foreign route listed as ours: {o}"
    );

    let out = tabby(&a, &["routes", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let list = v.as_array().expect("array");
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|r| r["protocol"] == "tabby"));

    // Second run: nothing to do; dropping a line deletes that route only.
    let out = tabby(&a, &["reconcile", "-"], Some(file));
    assert!(
        text(&out.stdout).contains("unchanged 3"),
        "{}",
        text(&out.stdout)
    );
    let out = tabby(&a, &["reconcile", "-"], Some("blackhole 10.244.1.0/26\n"));
    assert!(
        text(&out.stdout).contains("deleted 2"),
        "{}",
        text(&out.stdout)
    );
    let ip = a.ip_stdout(["route", "show"]).expect("ip route");
    assert!(
        ip.contains("10.99.0.0/24 via 10.250.0.2 dev eth0 proto static"),
        "{ip}"
    );

    // Bad input: the line and what is wrong; nothing changed.
    let out = tabby(
        &a,
        &["reconcile", "-"],
        Some("10.1.0.0/24 via 10.250.0.2\n10.2.0.0/24 via nope\n"),
    );
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("line 2") && e.contains("\"nope\""), "{e}");
    let out = tabby(&a, &["route", "add", "10.5.0.0/24", "dev", "eth9"], None);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("eth9"), "{}", text(&out.stderr));
    let out = tabby(&a, &["routes"], None);
    assert_eq!(text(&out.stdout).trim(), "blackhole 10.244.1.0/26");
}
