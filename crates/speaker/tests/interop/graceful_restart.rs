//! Graceful restart (RFC 4724) with BIRD 2: tabby bgpd is stopped with
//! SIGTERM and started again while pods behind each side ping each other
//! at 20/s. With graceful restart no ping is lost, BIRD keeps tabby's
//! route and tabby's kernel route to BIRD's prefix is never deleted; with
//! it off, both routes are withdrawn.

use std::fs::File;
use std::process::Stdio;
use std::time::Duration;

use tabby_testbed::{Netns, Process, wait_until};
use tempfile::TempDir;

use crate::net::{A, B, Pair};
use crate::tabby::Tabby;

const T: Duration = Duration::from_secs(60);
/// The pod-like address behind tabby, and its prefix.
const POD_A: &str = "10.90.1.1";
const NET_A: &str = "10.90.1.0/24";
/// The pod-like address behind BIRD, and its prefix.
const POD_B: &str = "10.90.2.1";
const NET_B: &str = "10.90.2.0/24";

fn tabby_config(graceful: bool) -> String {
    tabby_config_hold(graceful, 9)
}

fn tabby_config_hold(graceful: bool, hold: u16) -> String {
    let gr = if graceful {
        "gracefulRestart: {restartTime: 120}\n"
    } else {
        ""
    };
    format!(
        "asNumber: 65001\nrouterId: {A}\nfib: true\nlisten: [\"{A}:179\"]\noriginate: [{NET_A}]\n{gr}peers:\n  - {{address: {B}, asNumber: 65002, holdTime: {hold}, connectRetryTime: 1}}\n"
    )
}

/// BIRD 2 in `ns`: announces NET_B, installs BGP routes in the kernel.
struct Bird {
    dir: TempDir,
    process: Process,
}

impl Bird {
    fn start(ns: &Netns, graceful: bool) -> Bird {
        Bird::start_hold(ns, graceful, 9)
    }

    fn start_hold(ns: &Netns, graceful: bool, hold: u16) -> Bird {
        let dir = tempfile::Builder::new()
            .prefix("tabby-interop-gr-bird-")
            .tempdir()
            .expect("tempdir");
        let gr = if graceful {
            "  graceful restart on;\n  graceful restart time 120;\n"
        } else {
            "  graceful restart off;\n"
        };
        let conf = format!(
            "router id {B};\nlog stderr all;\nprotocol device {{ }}\nprotocol static st {{\n  ipv4;\n  route {NET_B} unreachable;\n}}\nprotocol kernel {{\n  ipv4 {{ import none; export where source = RTS_BGP; }};\n}}\nprotocol bgp tabby {{\n  local {B} as 65002;\n  neighbor {A} as 65001;\n  hold time {hold};\n  keepalive time 3;\n  connect retry time 2;\n  error wait time 1, 4;\n  connect delay time 1;\n{gr}  ipv4 {{ import all; export where source = RTS_STATIC; }};\n}}\n"
        );
        std::fs::write(dir.path().join("bird.conf"), conf).expect("bird.conf");
        let log = File::create(dir.path().join("bird.log")).expect("log");
        let mut cmd = ns.command("/opt/bird2/usr/sbin/bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(dir.path().join("bird.conf"))
            .arg("-s")
            .arg(dir.path().join("bird.ctl"))
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        let process = Process::spawn(&mut cmd).expect("start BIRD 2");
        let b = Bird { dir, process };
        let ctl = b.dir.path().join("bird.ctl");
        if wait_until(Duration::from_secs(10), "BIRD control socket", || {
            ctl.exists()
        })
        .is_err()
        {
            panic!("BIRD did not start:\n{}", b.log());
        }
        b
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bird.log")).unwrap_or_default()
    }

    fn birdc(&self, ns: &Netns, args: &[&str]) -> String {
        let out = ns
            .command("/opt/bird2/usr/sbin/birdc")
            .arg("-s")
            .arg(self.dir.path().join("bird.ctl"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A command running in a namespace with its output in a file.
struct Recorder {
    file: std::path::PathBuf,
    process: Process,
}

impl Recorder {
    fn start(ns: &Netns, dir: &TempDir, name: &str, program: &str, args: &[&str]) -> Recorder {
        let file = dir.path().join(name);
        let out = File::create(&file).expect("output file");
        let mut cmd = ns.command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        let process = Process::spawn(&mut cmd).expect("spawn");
        Recorder { file, process }
    }

    /// Interrupts it (ping prints its statistics) and returns its output.
    fn finish(mut self) -> String {
        self.process.signal("INT").expect("SIGINT");
        let _ = wait_until(Duration::from_secs(10), "recorder exit", || {
            !self.process.is_running()
        });
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }
}

/// (transmitted, received) from ping's statistics line.
fn ping_counts(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping statistics in {out:?}"));
    let num = |word: &str| -> u64 {
        let before = line
            .split(',')
            .find(|p| p.contains(word))
            .unwrap_or_else(|| panic!("no `{word}` in {line:?}"));
        before
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad count in {line:?}"))
    };
    (num("transmitted"), num("received"))
}

fn kernel_route(ns: &Netns, prefix: &str) -> String {
    ns.ip_stdout(["route", "show", prefix])
        .expect("ip route")
        .trim()
        .to_owned()
}

struct Outcome {
    lost: u64,
    sent: u64,
    /// `ip monitor route` lines deleting BIRD's prefix in tabby's namespace.
    tabby_deleted: Vec<String>,
    /// The same for tabby's prefix in BIRD's namespace.
    bird_deleted: Vec<String>,
    /// BIRD's view of tabby's prefix while tabby was down.
    bird_during: String,
    /// tabby's log of the second run.
    second_log: String,
}

/// Sets up the pair, pings across at 20/s while tabby bgpd is stopped with
/// SIGTERM and started again, and reports what happened.
fn restart_under_ping(tag: &str, graceful: bool) -> Outcome {
    let pair = Pair::new(tag);
    // The pods: an address on each side's loopback (no dummy module
    // needed), reachable only through the BGP routes.
    for (ns, addr) in [(&pair.a, POD_A), (&pair.b, POD_B)] {
        ns.ip(["link", "set", "lo", "up"]).expect("lo up");
        ns.addr_add("lo", &format!("{addr}/32")).expect("addr");
    }
    let bird = Bird::start(&pair.b, graceful);
    let config = tabby_config(graceful);
    let first = Tabby::start(&pair.a, &config);
    first.wait_established(B, T);
    let routes_ready = wait_until(T, "routes in both kernels", || {
        kernel_route(&pair.a, NET_B).contains(&format!("via {B}"))
            && kernel_route(&pair.b, NET_A).contains(&format!("via {A}"))
    });
    assert!(
        routes_ready.is_ok(),
        "tabby: {:?}\nbird: {:?}\n{}\n{}",
        kernel_route(&pair.a, NET_B),
        kernel_route(&pair.b, NET_A),
        first.log(),
        bird.log()
    );
    assert!(
        pair.a.ping(POD_B, 1),
        "no path between the pods before the restart"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mon_a = Recorder::start(&pair.a, &dir, "mon-a", "ip", &["monitor", "route"]);
    let mon_b = Recorder::start(&pair.b, &dir, "mon-b", "ip", &["monitor", "route"]);
    let ping = Recorder::start(
        &pair.a,
        &dir,
        "ping",
        "ping",
        &["-n", "-i", "0.05", "-W", "1", "-I", POD_A, POD_B],
    );
    // Let some echoes through before the restart.
    std::thread::sleep(Duration::from_secs(1));

    first.signal("TERM");
    first.wait_exit(T);
    if !graceful {
        // Give BIRD the time to act on the Cease (the assertion is on
        // what it ends up doing, not on how fast).
        let _ = wait_until(Duration::from_secs(10), "BIRD withdraws", || {
            !bird
                .birdc(&pair.b, &["show", "route", NET_A])
                .contains(NET_A)
        });
    }
    let bird_during = bird.birdc(&pair.b, &["show", "route", NET_A, "all"]);
    let second = Tabby::start(&pair.a, &config);
    second.wait_established(B, T);
    if graceful {
        let n = second.neighbor(B).expect("neighbour");
        assert_eq!(n.graceful_restart.as_deref(), Some("negotiated"), "{n:?}");
    }
    // Converged again: both routes in place, the deferral over (with
    // graceful restart) and a few more echoes through.
    let back = wait_until(T, "routes back in both kernels", || {
        kernel_route(&pair.a, NET_B).contains(&format!("via {B}"))
            && kernel_route(&pair.b, NET_A).contains(&format!("via {A}"))
            && (!graceful || second.log().contains("route selection done"))
    });
    assert!(
        back.is_ok(),
        "tabby: {:?}\nbird: {:?}\n{}\n{}",
        kernel_route(&pair.a, NET_B),
        kernel_route(&pair.b, NET_A),
        second.log(),
        bird.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    let ping_out = ping.finish();
    let deleted = |text: String, prefix: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("Deleted") && l.contains(prefix))
            .map(str::to_owned)
            .collect()
    };
    let tabby_deleted = deleted(mon_a.finish(), NET_B);
    let bird_deleted = deleted(mon_b.finish(), NET_A);
    let (sent, received) = ping_counts(&ping_out);
    Outcome {
        lost: sent - received,
        sent,
        tabby_deleted,
        bird_deleted,
        bird_during,
        second_log: second.log(),
    }
}

#[test]
fn graceful_restart_with_bird2_loses_no_ping() {
    let on = restart_under_ping("gron", true);
    println!(
        "graceful restart on: {} of {} pings lost (20/s across the restart)",
        on.lost, on.sent
    );
    println!("BIRD during the restart:\n{}", on.bird_during);
    assert!(
        on.bird_during.contains(NET_A),
        "BIRD dropped tabby's route while tabby restarted:\n{}",
        on.bird_during
    );
    assert!(
        on.tabby_deleted.is_empty(),
        "tabby's kernel route to BIRD's prefix was deleted: {:?}\n{}",
        on.tabby_deleted,
        on.second_log
    );
    assert!(
        on.bird_deleted.is_empty(),
        "BIRD's kernel route to tabby's prefix was deleted: {:?}",
        on.bird_deleted
    );
    assert!(
        on.second_log.contains("adopting the kernel routes"),
        "{}",
        on.second_log
    );
    assert_eq!(on.lost, 0, "pings lost with graceful restart");

    let off = restart_under_ping("groff", false);
    println!(
        "graceful restart off: {} of {} pings lost (20/s across the restart)",
        off.lost, off.sent
    );
    assert!(
        !off.tabby_deleted.is_empty(),
        "without graceful restart tabby's kernel route should go on exit"
    );
    assert!(
        !off.bird_deleted.is_empty(),
        "without graceful restart BIRD should withdraw tabby's route"
    );
    assert!(
        !off.bird_during.contains(NET_A),
        "BIRD kept tabby's route without graceful restart:\n{}",
        off.bird_during
    );
}

#[test]
fn tabby_keeps_a_restarting_bird2_routes_stale() {
    let pair = Pair::new("grhelp");
    let bird = Bird::start(&pair.b, true);
    let tabby = Tabby::start(&pair.a, &tabby_config(true));
    tabby.wait_established(B, T);
    tabby.wait_routes("BIRD's prefix", T, |r| r.iter().any(|x| x.prefix == NET_B));
    let dir = tempfile::tempdir().expect("tempdir");
    let mon = Recorder::start(&pair.a, &dir, "mon", "ip", &["monitor", "route"]);

    // BIRD dies without a NOTIFICATION: its TCP connection closes.
    bird.process.signal("KILL").expect("SIGKILL");
    let kept = wait_until(T, "the neighbour restarting", || {
        tabby
            .neighbor(B)
            .is_some_and(|n| n.graceful_restart.as_deref() == Some("restarting"))
    });
    assert!(kept.is_ok(), "{:?}\n{}", tabby.neighbor(B), tabby.log());
    let routes = tabby.routes();
    let r = routes
        .iter()
        .find(|x| x.prefix == NET_B)
        .unwrap_or_else(|| panic!("route dropped: {routes:?}"));
    assert!(r.stale && r.best, "{r:?}");
    assert_eq!(tabby.neighbor(B).map(|n| n.stale_routes), Some(1));
    assert!(
        kernel_route(&pair.a, NET_B).contains(&format!("via {B}")),
        "kernel route gone while BIRD restarts"
    );
    drop(bird);

    // BIRD is back: its End-of-RIB refreshes the route.
    let _bird = Bird::start(&pair.b, true);
    tabby.wait_established(B, T);
    tabby.wait_routes("BIRD's prefix refreshed", T, |r| {
        r.iter().any(|x| x.prefix == NET_B && !x.stale)
    });
    let n = tabby.neighbor(B).expect("neighbour");
    println!("after BIRD's restart: {n:?}");
    assert_eq!(n.stale_routes, 0);
    let deleted: Vec<String> = mon
        .finish()
        .lines()
        .filter(|l| l.starts_with("Deleted") && l.contains(NET_B))
        .map(str::to_owned)
        .collect();
    println!("kernel deletions of {NET_B} while BIRD restarted: {deleted:?}");
    // BIRD 2 without kernel route persistence comes back with the F bit
    // clear, and then RFC 4724 §4.2 says purge at once: a deletion is
    // right only in that case.
    assert!(
        deleted.is_empty() || tabby.log().contains("kept no forwarding state"),
        "stale route deleted although BIRD kept its forwarding state:\n{}",
        tabby.log()
    );
}

#[test]
fn a_restarted_bird2_replacing_a_dead_connection_is_accepted_at_once() {
    // Hold time 240 s on both sides: the old session can only end by
    // BIRD's new connection (RFC 4724 §4.2), never by a timer, within
    // the test.
    let pair = Pair::new("grdead");
    let bird = Bird::start_hold(&pair.b, true, 240);
    let tabby = Tabby::start(&pair.a, &tabby_config_hold(true, 240));
    tabby.wait_established(B, T);
    tabby.wait_routes("BIRD's prefix", T, |r| r.iter().any(|x| x.prefix == NET_B));
    // BIRD's host "crashes": no FIN or RST leaves its namespace.
    pair.b
        .exec(
            "nft",
            [
                "add table inet gr; add chain inet gr out { type filter hook output priority 0; }; add rule inet gr out tcp flags & (fin | rst) != 0 drop",
            ],
        )
        .expect("nft");
    bird.process.signal("KILL").expect("SIGKILL");
    drop(bird);
    assert_eq!(
        tabby.neighbor(B).map(|n| n.state),
        Some("Established".to_owned()),
        "tabby must not have noticed yet"
    );
    let _bird = Bird::start_hold(&pair.b, true, 240);
    let replaced = wait_until(T, "the old session replaced", || {
        tabby.log().contains("the neighbour restarted")
            && tabby.neighbor(B).is_some_and(|n| {
                n.state == "Established" && n.last_error.as_deref() == Some("connection lost")
            })
    });
    assert!(replaced.is_ok(), "{:?}\n{}", tabby.neighbor(B), tabby.log());
    tabby.wait_routes("BIRD's prefix again", T, |r| {
        r.iter().any(|x| x.prefix == NET_B && !x.stale)
    });
}
