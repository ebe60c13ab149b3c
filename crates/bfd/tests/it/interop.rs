//! Interop: tabby's BFD against real BFD daemons from Debian, FRR's `bfdd`
//! and BIRD 2's `protocol bfd`, each in a namespace of its own joined to
//! tabby's by a veth pair (root required). For each: the session comes Up;
//! the peer is killed by PID and tabby declares Down when the detection time
//! passes; the peer comes back and the session is Up again; the link is
//! taken down and tabby declares Down; the link comes back and it is Up.

use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tabby_bfd::{Diagnostic, PeerEvent, SessionConfig, SessionSpec, State};
use tabby_testbed::{Netns, Process, veth, wait_until};

use crate::net::NsBfd;

const TABBY: &str = "10.82.0.1";
const PEER: &str = "10.82.0.2";
const TABBY6: &str = "fd00:82::1";
const PEER6: &str = "fd00:82::2";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Frr,
    Bird2,
}

/// A real BFD daemon in its namespace, with its files in a temp dir.
struct Daemon {
    kind: Kind,
    ns_name: String,
    dir: tempfile::TempDir,
    process: Option<Process>,
}

impl Daemon {
    fn new(kind: Kind, ns: &Netns) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("tabby-bfd-interop-")
            .tempdir()
            .expect("tempdir");
        // FRR drops privileges to its own user and must write here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let d = Daemon {
            kind,
            ns_name: ns.name().to_owned(),
            dir,
            process: None,
        };
        let config = match kind {
            Kind::Frr => format!(
                "bfd\n peer {TABBY} local-address {PEER}\n  receive-interval 300\n  transmit-interval 300\n  detect-multiplier 3\n !\n peer {TABBY6} local-address {PEER6}\n  receive-interval 300\n  transmit-interval 300\n  detect-multiplier 3\n !\n!\n"
            ),
            Kind::Bird2 => format!(
                "router id {PEER};\nlog \"{}\" all;\nprotocol device {{ }}\nprotocol bfd {{\n  interface \"*\" {{ interval 300 ms; multiplier 3; }};\n  neighbor {TABBY} local {PEER};\n  neighbor {TABBY6} local {PEER6};\n}}\n",
                d.path("daemon.log").display()
            ),
        };
        std::fs::write(d.path("daemon.conf"), config).expect("write config");
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(self.path("daemon.ctl"));
        let _ = std::fs::remove_file(self.path("bfdd.vty"));
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_name]);
        match self.kind {
            Kind::Frr => {
                c.arg("/usr/lib/frr/bfdd").args([
                    "-f",
                    &self.p("daemon.conf"),
                    "-i",
                    &self.p("bfdd.pid"),
                    "--vty_socket",
                    &self.dir.path().display().to_string(),
                    "-P",
                    "0",
                    "--bfdctl",
                    &self.p("bfdd.sock"),
                    "--log",
                    "stdout",
                ]);
            }
            Kind::Bird2 => {
                c.arg("/opt/bird2/usr/sbin/bird").args([
                    "-f",
                    "-c",
                    &self.p("daemon.conf"),
                    "-s",
                    &self.p("daemon.ctl"),
                ]);
            }
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.path("stdout.log"))
            .expect("log");
        c.stdout(log.try_clone().expect("dup")).stderr(log);
        self.process = Some(Process::spawn(&mut c).expect("start daemon"));
        let ready = match self.kind {
            Kind::Frr => self.path("bfdd.vty"),
            Kind::Bird2 => self.path("daemon.ctl"),
        };
        wait_until(Duration::from_secs(15), "daemon control socket", || {
            ready.exists()
        })
        .unwrap_or_else(|e| panic!("{:?} did not start: {e}\n{}", self.kind, self.log()));
    }

    /// Kills the daemon by PID (SIGKILL: no goodbye packet).
    fn kill(&mut self) {
        self.process = None;
    }

    fn log(&self) -> String {
        let mut s = std::fs::read_to_string(self.path("stdout.log")).unwrap_or_default();
        s += &std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default();
        s
    }

    /// The daemon's own view of the session with tabby.
    fn show(&self) -> String {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_name]);
        match self.kind {
            Kind::Frr => c.args([
                "vtysh",
                "--vty_socket",
                &self.dir.path().display().to_string(),
                "-d",
                "bfdd",
                "-c",
                "show bfd peers",
            ]),
            Kind::Bird2 => c.args([
                "/opt/bird2/usr/sbin/birdc",
                "-s",
                &self.p("daemon.ctl"),
                "show",
                "bfd",
                "sessions",
            ]),
        };
        let out = c.stdin(Stdio::null()).output().expect("daemon CLI");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the daemon says its sessions with tabby (IPv4 and IPv6)
    /// are Up.
    fn says_up(&self) -> bool {
        let s = self.show();
        [TABBY, TABBY6].iter().all(|addr| match self.kind {
            Kind::Frr => s.split("\tpeer ").any(|block| {
                block.starts_with(&format!("{addr} ")) && block.contains("Status: up")
            }),
            Kind::Bird2 => s.lines().any(|l| {
                l.starts_with(&format!("{addr} ")) && l.split_whitespace().nth(2) == Some("Up")
            }),
        })
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn up(peer: &'static str) -> impl Fn(&PeerEvent) -> bool {
    move |e| e.peer == ip(peer) && e.to == State::Up
}

fn down(peer: &'static str) -> impl Fn(&PeerEvent) -> bool {
    move |e| e.peer == ip(peer) && e.to == State::Down
}

fn run(kind: Kind) {
    let ns_t = Netns::new("bfdt").expect("netns tabby");
    let ns_p = Netns::new("bfdp").expect("netns peer");
    veth(
        &ns_t,
        "vt",
        Some("10.82.0.1/24"),
        &ns_p,
        "vp",
        Some("10.82.0.2/24"),
    )
    .expect("veth");
    ns_t.ip(["addr", "add", "fd00:82::1/64", "dev", "vt", "nodad"])
        .expect("v6 tabby");
    let add_peer_v6 = || {
        ns_p.ip(["addr", "replace", "fd00:82::2/64", "dev", "vp", "nodad"])
            .expect("v6 peer")
    };
    add_peer_v6();
    let mut daemon = Daemon::new(kind, &ns_p);
    daemon.start();
    let mut tabby = NsBfd::start(&ns_t);
    for (peer, local) in [(PEER, TABBY), (PEER6, TABBY6)] {
        tabby.add(SessionSpec {
            peer: ip(peer),
            local: Some(ip(local)),
            config: SessionConfig::default(),
        });
    }
    let t = Duration::from_secs(20);

    // 1. Up with the real peer, as both ends see it.
    tabby.wait_event(t, &format!("IPv4 Up with {kind:?}"), up(PEER));
    tabby.wait_event(t, &format!("IPv6 Up with {kind:?}"), up(PEER6));
    wait_until(t, "the daemon says Up", || daemon.says_up())
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", daemon.show(), daemon.log()));
    println!("{kind:?}: Up; the peer's view:\n{}", daemon.show());
    std::thread::sleep(Duration::from_secs(1));
    // 3 × max(our 300 ms rx, their 300 ms tx), both families.
    for s in tabby.sessions() {
        assert_eq!(s.detection_time, Some(Duration::from_millis(900)), "{s:?}");
    }

    // 2. Kill the peer by PID: tabby goes Down because the detection time
    // passed.
    tabby.drain();
    daemon.kill();
    let (e, took) = tabby.wait_event(t, "IPv4 Down after the peer was killed", down(PEER));
    assert_eq!(e.diagnostic, Diagnostic::ControlDetectionTimeExpired);
    let (e6, took6) = tabby.wait_event(t, "IPv6 Down after the peer was killed", down(PEER6));
    assert_eq!(e6.diagnostic, Diagnostic::ControlDetectionTimeExpired);
    println!(
        "{kind:?}: peer killed -> tabby Down in {took:?} (IPv4), {took6:?} (IPv6 after that); detection time 900 ms"
    );

    // 3. The peer comes back (new discriminator): Up again.
    daemon.start();
    tabby.wait_event(t, "IPv6 Up after the peer restarted", up(PEER6));
    let (_, took) = tabby.wait_event(t, "IPv4 Up after the peer restarted", up(PEER));
    println!("{kind:?}: peer restarted -> Up {took:?} after its control socket appeared");
    wait_until(t, "the daemon says Up again", || daemon.says_up()).expect("peer Up");

    // 4. Take the link down: Down by detection time; link back: Up.
    std::thread::sleep(Duration::from_secs(1));
    tabby.drain();
    ns_p.ip(["link", "set", "vp", "down"]).expect("link down");
    let (e, took) = tabby.wait_event(t, "IPv4 Down after the link went down", down(PEER));
    assert_eq!(e.diagnostic, Diagnostic::ControlDetectionTimeExpired);
    let (e6, _) = tabby.wait_event(t, "IPv6 Down after the link went down", down(PEER6));
    assert_eq!(e6.diagnostic, Diagnostic::ControlDetectionTimeExpired);
    println!("{kind:?}: link down -> tabby Down in {took:?}");
    ns_p.ip(["link", "set", "vp", "up"]).expect("link up");
    // The kernel flushed the peer's IPv6 address with the link.
    add_peer_v6();
    tabby.wait_event(t, "IPv6 Up after the link came back", up(PEER6));
    let (_, took) = tabby.wait_event(t, "IPv4 Up after the link came back", up(PEER));
    println!("{kind:?}: link up -> Up in {took:?}");
    wait_until(t, "the daemon says Up after the link came back", || {
        daemon.says_up()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.show()));
}

#[test]
fn frr_bfdd() {
    run(Kind::Frr);
}

#[test]
fn bird2() {
    run(Kind::Bird2);
}
