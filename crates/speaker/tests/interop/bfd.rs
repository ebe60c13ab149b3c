//! BFD on a BGP neighbour: `tabby bgpd` with a 90 s hold time and `bfd:
//! true`, against BIRD 2 running `bfd on` for the same session. Cutting the
//! link makes BFD declare the neighbour down, tabby closes the BGP session
//! at once (Cease / BFD Down), and the learned route leaves the kernel long
//! before the hold timer would have expired.

use std::fs::File;
use std::time::{Duration, Instant};

use tabby_testbed::{Process, wait_until};

use crate::net::{A, B, Pair};
use crate::tabby::Tabby;

const PREFIX: &str = "10.90.0.0/24";

/// The daemon's log without terminal colour codes.
fn plain_log(tabby: &Tabby) -> String {
    let log = tabby.log();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn kernel_route(pair: &Pair) -> String {
    pair.a
        .ip_stdout(["route", "show", PREFIX, "proto", "201"])
        .expect("ip route")
}

#[test]
fn bfd_down_withdraws_routes_long_before_the_hold_timer() {
    let pair = Pair::new("bfd");
    let tabby = Tabby::start(
        &pair.a,
        &format!(
            "asNumber: 65001\nrouterId: {A}\nfib: true\nlisten: [\"{A}:179\"]\npeers:\n  - {{address: {B}, asNumber: 65002, holdTime: 90, bfd: true, bfdIntervalMs: 100, bfdMultiplier: 3}}\n"
        ),
    );
    let dir = tempfile::Builder::new()
        .prefix("tabby-interop-bfd-bird-")
        .tempdir()
        .expect("tempdir");
    let conf = dir.path().join("bird.conf");
    std::fs::write(
        &conf,
        format!(
            "router id {B};\nprotocol device {{ }}\nprotocol bfd {{\n  interface \"*\" {{ interval 100 ms; multiplier 3; }};\n}}\nprotocol static announced {{\n  ipv4;\n  route {PREFIX} blackhole;\n}}\nprotocol bgp to_tabby {{\n  local {B} as 65002;\n  neighbor {A} as 65001;\n  hold time 90;\n  bfd on;\n  ipv4 {{ import all; export all; }};\n}}\n"
        ),
    )
    .expect("bird.conf");
    let log = File::create(dir.path().join("bird.log")).expect("log");
    let mut cmd = pair.b.command("/opt/bird2/usr/sbin/bird");
    cmd.args(["-f", "-c"])
        .arg(&conf)
        .arg("-s")
        .arg(dir.path().join("bird.ctl"))
        .stdout(log.try_clone().expect("dup"))
        .stderr(log);
    let _bird = Process::spawn(&mut cmd).expect("start BIRD 2");
    let t = Duration::from_secs(40);
    tabby.wait_established(B, t);
    let installed = wait_until(t, "the learned route in the kernel", || {
        kernel_route(&pair).contains(&format!("via {B}"))
    });
    assert!(
        installed.is_ok(),
        "not installed: {:?}\n{}",
        kernel_route(&pair),
        tabby.log()
    );
    // BFD is Up with BIRD (tabby logs every BFD state change).
    let bfd_up = wait_until(t, "BFD Up in tabby's log", || {
        plain_log(&tabby).contains("from=Init to=Up")
            || plain_log(&tabby).contains("from=Down to=Up")
    });
    assert!(bfd_up.is_ok(), "{}", tabby.log());
    std::thread::sleep(Duration::from_secs(1));

    // Cut the link from BIRD's side.
    pair.b
        .ip(["link", "set", "eth0", "down"])
        .expect("link down");
    let cut = Instant::now();
    let gone = wait_until(t, "the route removed from the kernel", || {
        kernel_route(&pair).trim().is_empty()
    });
    let took = cut.elapsed();
    assert!(
        gone.is_ok(),
        "route still there: {:?}\n{}",
        kernel_route(&pair),
        tabby.log()
    );
    // The cause: BFD, not the hold timer.
    let n = tabby.neighbor(B).expect("neighbour");
    let reason = n.last_error.unwrap_or_default();
    assert!(
        reason.contains("6/10") && reason.contains("BFD Down"),
        "session went down for another reason: {reason:?}\n{}",
        tabby.log()
    );
    assert!(
        plain_log(&tabby).contains("BFD down: closing the BGP session"),
        "{}",
        tabby.log()
    );
    println!(
        "link cut -> route gone from the kernel in {took:?} (BGP hold time 90 s; BFD 3 x 100 ms); reason: {reason}"
    );
}
