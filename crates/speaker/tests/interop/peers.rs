//! Launchers for the real BGP daemons tabby is tested against (BIRD 1.6,
//! BIRD 2, FRR bgpd, GoBGP, ExaBGP), each inside a namespace the test made:
//! config generation, start, and a common way to read the daemon's view
//! (sessions, routes, last error) and to make it announce, withdraw or shut
//! a session down.
//!
//! Every route a daemon announces carries the same rich attribute set
//! ([`RICH`]): tests check those attributes arrive intact.

use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tabby_testbed::{Netns, Process, wait_until};
use tempfile::TempDir;

use crate::route::{Rib, SeenRoute};

/// Communities attached to every route a peer announces.
pub const RICH_COMMUNITIES: [&str; 2] = ["65000:100", "65000:200"];
/// Large community attached to every route a peer announces.
pub const RICH_LARGE: &str = "65000:1:2";
/// MED attached to every route a peer announces.
pub const RICH_MED: u32 = 42;
/// LOCAL_PREF attached to every route a peer announces over iBGP.
pub const RICH_LOCAL_PREF: u32 = 250;

/// Which implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// BIRD 1.6 (`bird`).
    Bird1,
    /// BIRD 2 (unpacked at /opt/bird2).
    Bird2,
    /// FRR `bgpd -Z`.
    Frr,
    /// GoBGP `gobgpd`.
    Gobgp,
    /// ExaBGP.
    Exabgp,
}

impl Kind {
    /// Short name used in namespace names and messages.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Bird1 => "b1",
            Kind::Bird2 => "b2",
            Kind::Frr => "fr",
            Kind::Gobgp => "gb",
            Kind::Exabgp => "ex",
        }
    }
}

/// One neighbour of the daemon.
#[derive(Debug, Clone)]
pub struct Neighbor {
    /// Its address.
    pub addr: String,
    /// Its AS.
    pub asn: u32,
    /// The daemon waits for the neighbour to connect.
    pub passive: bool,
    /// The neighbour is a route-reflector client of the daemon.
    pub rr_client: bool,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Implementation.
    pub kind: Kind,
    /// Local AS.
    pub asn: u32,
    /// Local address (also the router id).
    pub addr: String,
    /// Neighbours.
    pub neighbors: Vec<Neighbor>,
    /// Route-reflector cluster id (when some neighbour is a client).
    pub cluster_id: Option<String>,
    /// TCP MD5 password on every session.
    pub password: Option<String>,
    /// GTSM (RFC 5082, one hop) on every session.
    pub ttl_security: bool,
}

/// A running daemon.
pub struct Daemon {
    /// What it runs.
    pub spec: Spec,
    dir: TempDir,
    ns_name: String,
    cmd: std::process::Command,
    process: Option<Process>,
    announced: Vec<String>,
}

fn sh(ns: &str, program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run daemon CLI");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        s.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    s
}

fn proto_name(addr: &str) -> String {
    format!("n_{}", addr.replace(['.', ':'], "_"))
}

impl Daemon {
    /// Writes the config and starts the daemon inside `ns`.
    pub fn start(ns: &Netns, spec: Spec) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tabby-interop-{}-", spec.kind.tag()))
            .tempdir()
            .expect("tempdir");
        let mut d = Daemon {
            cmd: ns.command("true"),
            spec,
            dir,
            ns_name: ns.name().to_owned(),
            process: None,
            announced: Vec::new(),
        };
        d.cmd = d.build_command(ns);
        d.write_config();
        let log = File::create(d.path("daemon.log")).expect("log file");
        d.cmd.stdout(log.try_clone().expect("dup log")).stderr(log);
        d.process = Some(Process::spawn(&mut d.cmd).expect("start daemon"));
        d.wait_ready();
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The daemon's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    fn build_command(&self, ns: &Netns) -> std::process::Command {
        match self.spec.kind {
            Kind::Bird1 | Kind::Bird2 => {
                let bin = if self.spec.kind == Kind::Bird1 {
                    "bird"
                } else {
                    "/opt/bird2/usr/sbin/bird"
                };
                let mut c = ns.command(bin);
                c.args(["-f", "-c", &self.p("bird.conf"), "-s", &self.p("bird.ctl")]);
                c
            }
            Kind::Frr => {
                let mut c = ns.command("/usr/lib/frr/bgpd");
                c.args([
                    "-Z",
                    "-S",
                    "-n",
                    "-f",
                    &self.p("frr.conf"),
                    "-i",
                    &self.p("bgpd.pid"),
                    "--vty_socket",
                    &self.dir.path().display().to_string(),
                    "-P",
                    "0",
                    "-l",
                    &self.spec.addr,
                    "--log",
                    "stdout",
                ]);
                c
            }
            Kind::Gobgp => {
                let mut c = ns.command("gobgpd");
                c.args([
                    "-f",
                    &self.p("gobgpd.toml"),
                    "--api-hosts",
                    "127.0.0.1:50051",
                    "--pprof-disable",
                    "-p",
                ]);
                c
            }
            Kind::Exabgp => {
                let mut c = ns.command("exabgp");
                c.arg(self.p("exabgp.conf"));
                for (k, v) in [
                    ("exabgp.daemon.user", "root"),
                    ("exabgp.daemon.daemonize", "false"),
                    ("exabgp.daemon.drop", "false"),
                    ("exabgp.api.cli", "false"),
                    ("exabgp.api.ack", "false"),
                    ("exabgp.log.destination", "stderr"),
                    ("exabgp.log.level", "INFO"),
                    ("exabgp.tcp.bind", self.spec.addr.as_str()),
                    ("exabgp.tcp.port", "179"),
                ] {
                    c.env(k, v);
                }
                c
            }
        }
    }

    fn write_config(&self) {
        let (name, text) = match self.spec.kind {
            Kind::Bird1 | Kind::Bird2 => ("bird.conf", self.bird_config()),
            Kind::Frr => ("frr.conf", self.frr_config()),
            Kind::Gobgp => ("gobgpd.toml", self.gobgp_config()),
            Kind::Exabgp => {
                // The announce process reads commands from a FIFO, forever.
                let fifo = self.path("commands");
                if !fifo.exists() {
                    let st = std::process::Command::new("mkfifo")
                        .arg(&fifo)
                        .status()
                        .expect("mkfifo");
                    assert!(st.success());
                }
                ("exabgp.conf", self.exabgp_config())
            }
        };
        std::fs::write(self.path(name), text).expect("write config");
    }

    fn is_ibgp(&self, n: &Neighbor) -> bool {
        n.asn == self.spec.asn
    }

    fn bird_config(&self) -> String {
        let v2 = self.spec.kind == Kind::Bird2;
        let s = &self.spec;
        let mut c = format!(
            "router id {};\nlog stderr all;\nprotocol device {{ }}\n",
            s.addr
        );
        let routes: String = self
            .announced
            .iter()
            .map(|p| format!("  route {p} blackhole;\n"))
            .collect();
        if v2 {
            c += &format!("protocol static st {{\n  ipv4;\n{routes}}}\n");
        } else {
            c += &format!("protocol static st {{\n{routes}}}\n");
        }
        c += &format!(
            "filter rich {{\n  if source = RTS_STATIC then {{\n    bgp_community.add(({}));\n    bgp_community.add(({}));\n    bgp_large_community.add(({}));\n    bgp_med = {RICH_MED};\n    bgp_local_pref = {RICH_LOCAL_PREF};\n  }}\n  accept;\n}}\n",
            RICH_COMMUNITIES[0].replace(':', ","),
            RICH_COMMUNITIES[1].replace(':', ","),
            RICH_LARGE.replace(':', ","),
        );
        for n in &s.neighbors {
            let mut p = format!(
                "protocol bgp {} {{\n  local {} as {};\n  neighbor {} as {};\n  hold time 9;\n  keepalive time 3;\n  connect retry time 2;\n  error wait time 1, 4;\n",
                proto_name(&n.addr),
                s.addr,
                s.asn,
                n.addr,
                n.asn
            );
            p += if v2 {
                "  connect delay time 1;\n"
            } else {
                "  start delay time 1;\n"
            };
            if n.passive {
                p += "  passive on;\n";
            }
            if let Some(pw) = &s.password {
                p += &format!("  password \"{pw}\";\n");
            }
            if s.ttl_security {
                p += "  ttl security on;\n";
            }
            if n.rr_client {
                p += "  rr client;\n";
                if let Some(id) = &s.cluster_id {
                    p += &format!("  rr cluster id {id};\n");
                }
            }
            if self.is_ibgp(n) {
                p += "  direct;\n";
            }
            let ch = "import all;\n  export filter rich;\n";
            if v2 {
                p += &format!("  ipv4 {{\n  {ch}  }};\n");
            } else {
                p += &format!("  {ch}");
            }
            p += "}\n";
            c += &p;
        }
        c
    }

    fn frr_config(&self) -> String {
        let s = &self.spec;
        let mut c = format!(
            "hostname interop\nlog stdout debugging\n!\nroute-map RICH permit 10\n set community {} {}\n set large-community {}\n set metric {RICH_MED}\n set local-preference {RICH_LOCAL_PREF}\nexit\n!\nrouter bgp {}\n bgp router-id {}\n no bgp ebgp-requires-policy\n no bgp network import-check\n no bgp default ipv4-unicast\n timers bgp 3 9\n",
            RICH_COMMUNITIES[0], RICH_COMMUNITIES[1], RICH_LARGE, s.asn, s.addr
        );
        if let Some(id) = &s.cluster_id {
            c += &format!(" bgp cluster-id {id}\n");
        }
        for n in &s.neighbors {
            c += &format!(
                " neighbor {a} remote-as {asn}\n neighbor {a} timers 3 9\n neighbor {a} timers connect 2\n neighbor {a} advertisement-interval 0\n",
                a = n.addr,
                asn = n.asn
            );
            if n.passive {
                c += &format!(" neighbor {} passive\n", n.addr);
            }
            if let Some(pw) = &s.password {
                c += &format!(" neighbor {} password {pw}\n", n.addr);
            }
            if s.ttl_security {
                c += &format!(" neighbor {} ttl-security hops 1\n", n.addr);
            }
        }
        c += " address-family ipv4 unicast\n";
        for p in &self.announced {
            c += &format!("  network {p} route-map RICH\n");
        }
        for n in &s.neighbors {
            c += &format!("  neighbor {} activate\n", n.addr);
            if n.rr_client {
                c += &format!("  neighbor {} route-reflector-client\n", n.addr);
            }
        }
        c += " exit-address-family\nexit\n";
        c
    }

    fn gobgp_config(&self) -> String {
        let s = &self.spec;
        let mut c = format!(
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n  port = 179\n  local-address-list = [\"{}\"]\n",
            s.asn, s.addr, s.addr
        );
        for n in &s.neighbors {
            c += &format!(
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}\n  [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n    connect-retry = 2\n  [neighbors.transport.config]\n    passive-mode = {}\n    local-address = \"{}\"\n",
                n.addr, n.asn, n.passive, s.addr
            );
            if n.rr_client {
                c += &format!(
                    "  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"{}\"\n",
                    s.cluster_id.as_deref().unwrap_or(&s.addr)
                );
            }
            c += "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n";
        }
        c
    }

    fn exabgp_config(&self) -> String {
        let s = &self.spec;
        let mut c = format!(
            "process announce {{\n  run /bin/sh -c \"while true; do cat {fifo}; done\";\n  encoder text;\n}}\nprocess receive {{\n  run /bin/sh -c \"cat >> {rx}\";\n  encoder json;\n}}\n",
            fifo = self.p("commands"),
            rx = self.p("received.json")
        );
        for n in &s.neighbors {
            c += &format!(
                "neighbor {} {{\n  router-id {};\n  local-address {};\n  local-as {};\n  peer-as {};\n  hold-time 9;\n  passive {};\n  family {{ ipv4 unicast; }}\n  api {{ processes [ announce ]; }}\n  api {{ processes [ receive ]; neighbor-changes; receive {{ parsed; update; notification; }} }}\n}}\n",
                n.addr, s.addr, s.addr, s.asn, n.asn, n.passive
            );
        }
        c
    }

    fn wait_ready(&self) {
        let ok = wait_until(
            Duration::from_secs(15),
            "daemon control interface",
            || match self.spec.kind {
                Kind::Bird1 | Kind::Bird2 => self.path("bird.ctl").exists(),
                Kind::Frr => self.path("bgpd.vty").exists(),
                Kind::Gobgp => self.gobgp(&["global"]).contains("AS"),
                Kind::Exabgp => {
                    self.log().contains("loaded new configuration successfully")
                        || self.log().contains("Connected to peer")
                        || self.log().contains("welcome")
                }
            },
        );
        if let Err(e) = ok {
            panic!("{:?} did not come up: {e}\n{}", self.spec.kind, self.log());
        }
    }

    fn birdc(&self, cmd: &str) -> String {
        let bin = if self.spec.kind == Kind::Bird1 {
            "birdc"
        } else {
            "/opt/bird2/usr/sbin/birdc"
        };
        let out = std::process::Command::new(bin)
            .args(["-s", &self.p("bird.ctl")])
            .args(cmd.split(' '))
            .stdin(Stdio::null())
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs vtysh commands against this bgpd.
    pub fn vtysh(&self, cmds: &[&str]) -> String {
        let dir = self.dir.path().display().to_string();
        let mut args: Vec<&str> = vec!["--vty_socket", &dir, "-d", "bgpd"];
        for c in cmds {
            args.push("-c");
            args.push(c);
        }
        sh(&self.ns_name, "vtysh", &args)
    }

    /// Runs the gobgp CLI against this gobgpd.
    pub fn gobgp(&self, args: &[&str]) -> String {
        let mut a = vec!["-u", "127.0.0.1", "-p", "50051"];
        a.extend_from_slice(args);
        sh(&self.ns_name, "gobgp", &a)
    }

    fn exabgp_command(&self, line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path("commands"))
            .expect("open exabgp fifo");
        writeln!(f, "{line}").expect("write exabgp command");
    }

    /// Whether the session with `peer` is Established, by the daemon's own report.
    pub fn established(&self, peer: &str) -> bool {
        match self.spec.kind {
            Kind::Bird1 | Kind::Bird2 => self
                .birdc(&format!("show protocols {}", proto_name(peer)))
                .contains("Established"),
            Kind::Frr => self
                .vtysh(&[&format!("show bgp neighbors {peer} json")])
                .contains("\"bgpState\":\"Established\""),
            Kind::Gobgp => {
                let v: serde_json::Value =
                    serde_json::from_str(&self.gobgp(&["neighbor", peer, "-j"]))
                        .unwrap_or_default();
                let st = &v["state"]["session_state"];
                st == 6 || st == "established" || st == "ESTABLISHED"
            }
            Kind::Exabgp => {
                let mut up = false;
                for m in self.exabgp_messages() {
                    if m["type"] == "state" && m["neighbor"]["address"]["peer"] == peer {
                        up = m["neighbor"]["state"] == "up";
                    }
                }
                up
            }
        }
    }

    /// Waits until the session with `peer` is Established.
    pub fn wait_established(&self, peer: &str, timeout: Duration) {
        if let Err(e) = wait_until(timeout, "session Established", || self.established(peer)) {
            panic!(
                "{:?} to {peer}: {e}\n--- state ---\n{}\n--- log ---\n{}",
                self.spec.kind,
                self.last_error(peer),
                self.log()
            );
        }
    }

    /// What the daemon says about the last error/notification on the session.
    pub fn last_error(&self, peer: &str) -> String {
        match self.spec.kind {
            Kind::Bird1 | Kind::Bird2 => {
                self.birdc(&format!("show protocols all {}", proto_name(peer)))
            }
            Kind::Frr => self.vtysh(&[&format!("show bgp neighbors {peer} json")]),
            Kind::Gobgp => self.log(),
            Kind::Exabgp => {
                std::fs::read_to_string(self.path("received.json")).unwrap_or_default()
                    + &self.log()
            }
        }
    }

    /// Makes the daemon announce `prefix` with the rich attributes.
    pub fn announce(&mut self, prefix: &str) {
        self.announced.push(prefix.to_owned());
        self.apply_route_change(prefix, true);
    }

    /// Makes an ExaBGP daemon announce `prefix` with an explicit (possibly
    /// third-party) NEXT_HOP.
    pub fn announce_via(&mut self, prefix: &str, next_hop: &str) {
        assert_eq!(self.spec.kind, Kind::Exabgp, "announce_via needs ExaBGP");
        self.exabgp_command(&format!("announce route {prefix} next-hop {next_hop}"));
    }

    /// Makes the daemon withdraw `prefix`.
    pub fn withdraw(&mut self, prefix: &str) {
        self.announced.retain(|p| p != prefix);
        self.apply_route_change(prefix, false);
    }

    fn apply_route_change(&mut self, prefix: &str, add: bool) {
        match self.spec.kind {
            Kind::Bird1 | Kind::Bird2 => {
                self.write_config();
                let out = self.birdc("configure");
                assert!(
                    out.contains("Reconfigured") || out.contains("Reconfiguration"),
                    "birdc configure: {out}"
                );
            }
            Kind::Frr => {
                let asn = format!("router bgp {}", self.spec.asn);
                let net = if add {
                    format!("network {prefix} route-map RICH")
                } else {
                    format!("no network {prefix}")
                };
                let out = self.vtysh(&[
                    "configure terminal",
                    &asn,
                    "address-family ipv4 unicast",
                    &net,
                ]);
                assert!(!out.contains('%'), "vtysh: {out}");
            }
            Kind::Gobgp => {
                let out = if add {
                    let comms = RICH_COMMUNITIES.join(",");
                    let med = RICH_MED.to_string();
                    let lp = RICH_LOCAL_PREF.to_string();
                    self.gobgp(&[
                        "global",
                        "rib",
                        "add",
                        prefix,
                        "community",
                        &comms,
                        "large-community",
                        RICH_LARGE,
                        "med",
                        &med,
                        "local-pref",
                        &lp,
                    ])
                } else {
                    self.gobgp(&["global", "rib", "del", prefix])
                };
                assert!(out.trim().is_empty(), "gobgp: {out}");
            }
            Kind::Exabgp => {
                let line = if add {
                    format!(
                        "announce route {prefix} next-hop self med {RICH_MED} local-preference {RICH_LOCAL_PREF} community [ {} ] large-community [ {} ]",
                        RICH_COMMUNITIES.join(" "),
                        RICH_LARGE
                    )
                } else {
                    format!("withdraw route {prefix} next-hop self")
                };
                self.exabgp_command(&line);
            }
        }
    }

    /// Makes the daemon close the session with `peer` with a Cease
    /// NOTIFICATION (administrative shutdown).
    pub fn shutdown_peer(&mut self, peer: &str) {
        match self.spec.kind {
            Kind::Bird1 | Kind::Bird2 => {
                let out = self.birdc(&format!("disable {}", proto_name(peer)));
                assert!(out.contains("disabled"), "birdc disable: {out}");
            }
            Kind::Frr => {
                let asn = format!("router bgp {}", self.spec.asn);
                let cmd = format!("neighbor {peer} shutdown");
                self.vtysh(&["configure terminal", &asn, &cmd]);
            }
            Kind::Gobgp => {
                self.gobgp(&["neighbor", peer, "disable"]);
            }
            Kind::Exabgp => self.exabgp_command(&format!("neighbor {peer} teardown 2")),
        }
    }

    fn exabgp_messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("received.json"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The daemon's routing table (best path per prefix), normalised.
    pub fn rib(&self) -> Rib {
        match self.spec.kind {
            Kind::Bird1 | Kind::Bird2 => parse_bird_routes(&self.birdc("show route all")),
            Kind::Frr => self.frr_rib(),
            Kind::Gobgp => parse_gobgp_rib(&self.gobgp(&["global", "rib", "-j"])),
            Kind::Exabgp => exabgp_rib(&self.exabgp_messages()),
        }
    }

    fn frr_rib(&self) -> Rib {
        let list: serde_json::Value =
            serde_json::from_str(&self.vtysh(&["show bgp ipv4 unicast json"])).unwrap_or_default();
        let mut rib = Rib::new();
        let Some(routes) = list["routes"].as_object() else {
            return rib;
        };
        for prefix in routes.keys() {
            let v: serde_json::Value = serde_json::from_str(
                &self.vtysh(&[&format!("show bgp ipv4 unicast {prefix} json")]),
            )
            .unwrap_or_default();
            let Some(paths) = v["paths"].as_array() else {
                continue;
            };
            let Some(best) = paths
                .iter()
                .find(|p| p["bestpath"]["overall"] == true)
                .or_else(|| paths.first())
            else {
                continue;
            };
            let words = |x: &serde_json::Value| -> Vec<String> {
                let mut v: Vec<String> = x
                    .as_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                v.sort();
                v
            };
            rib.insert(
                prefix.clone(),
                SeenRoute {
                    prefix: prefix.clone(),
                    next_hop: best["nexthops"][0]["ip"].as_str().map(str::to_owned),
                    as_path: best["aspath"]["string"]
                        .as_str()
                        .unwrap_or("")
                        .replace("Local", "")
                        .trim()
                        .to_owned(),
                    communities: words(&best["community"]["string"]),
                    large_communities: words(&best["largeCommunity"]["string"]),
                    med: best["metric"].as_u64().map(|m| m as u32),
                    local_pref: best["locPrf"].as_u64().map(|m| m as u32),
                    originator_id: best["originatorId"].as_str().map(str::to_owned),
                    cluster_list: best["clusterList"]["list"]
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                },
            );
        }
        rib
    }
}

/// Parses `birdc show route all` (BIRD 1.6 and 2 formats): first path per prefix.
pub fn parse_bird_routes(text: &str) -> Rib {
    let mut rib = Rib::new();
    let mut current: Option<String> = None;
    let mut collecting = false;
    for line in text.lines() {
        let indented = line.starts_with([' ', '\t']);
        let t = line.trim();
        if !indented {
            let first = t.split_whitespace().next().unwrap_or("");
            if first.contains('/') && first.parse::<ipnet::IpNet>().is_ok() {
                current = Some(first.to_owned());
                collecting = true;
                rib.insert(
                    first.to_owned(),
                    SeenRoute {
                        prefix: first.to_owned(),
                        ..SeenRoute::default()
                    },
                );
                if let Some(i) = t.find(" via ") {
                    let nh = t[i + 5..].split_whitespace().next().unwrap_or("");
                    if let Some(r) = rib.get_mut(first) {
                        r.next_hop = Some(nh.to_owned());
                    }
                }
            }
            continue;
        }
        if !t.starts_with("BGP.") && !t.starts_with("Type:") && t.contains(" [") && t.contains(']')
        {
            collecting = false; // an alternative path
            continue;
        }
        let (Some(p), true) = (&current, collecting) else {
            continue;
        };
        let Some(r) = rib.get_mut(p) else { continue };
        let Some((key, value)) = t.split_once(": ") else {
            continue;
        };
        let tuples = |v: &str| -> Vec<String> {
            let mut out: Vec<String> = v
                .split(')')
                .map(|x| {
                    x.trim()
                        .trim_start_matches('(')
                        .replace(' ', "")
                        .replace(',', ":")
                })
                .filter(|x| !x.is_empty())
                .collect();
            out.sort();
            out
        };
        match key {
            "BGP.as_path" => r.as_path = value.trim().to_owned(),
            "BGP.next_hop" => r.next_hop = value.split_whitespace().next().map(str::to_owned),
            "BGP.med" => r.med = value.trim().parse().ok(),
            "BGP.local_pref" => r.local_pref = value.trim().parse().ok(),
            "BGP.community" => r.communities = tuples(value),
            "BGP.large_community" => r.large_communities = tuples(value),
            "BGP.originator_id" => r.originator_id = Some(value.trim().to_owned()),
            "BGP.cluster_list" => {
                r.cluster_list = value.split_whitespace().map(str::to_owned).collect()
            }
            _ => {}
        }
    }
    rib
}

/// Parses `gobgp global rib -j`.
pub fn parse_gobgp_rib(text: &str) -> Rib {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let mut rib = Rib::new();
    let Some(m) = v.as_object() else { return rib };
    for (prefix, paths) in m {
        let Some(paths) = paths.as_array() else {
            continue;
        };
        let Some(best) = paths
            .iter()
            .find(|p| p["best"] == true)
            .or_else(|| paths.first())
        else {
            continue;
        };
        let mut r = SeenRoute {
            prefix: prefix.clone(),
            ..SeenRoute::default()
        };
        for a in best["attrs"].as_array().into_iter().flatten() {
            match a["type"].as_u64() {
                Some(2) => {
                    let asns: Vec<String> = a["as_paths"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|s| s["asns"].as_array().cloned().unwrap_or_default())
                        .map(|x| x.to_string())
                        .collect();
                    r.as_path = asns.join(" ");
                }
                Some(3) => r.next_hop = a["nexthop"].as_str().map(str::to_owned),
                Some(4) => r.med = a["metric"].as_u64().map(|m| m as u32),
                Some(5) => r.local_pref = a["value"].as_u64().map(|m| m as u32),
                Some(8) => {
                    r.communities = a["communities"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(serde_json::Value::as_u64)
                        .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                        .collect();
                    r.communities.sort();
                }
                Some(9) => r.originator_id = a["value"].as_str().map(str::to_owned),
                Some(10) => {
                    r.cluster_list = a["value"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect();
                }
                Some(32) => {
                    r.large_communities = a["value"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|l| format!("{}:{}:{}", l["ASN"], l["LocalData1"], l["LocalData2"]))
                        .collect();
                    r.large_communities.sort();
                }
                _ => {}
            }
        }
        rib.insert(prefix.clone(), r);
    }
    rib
}

/// Replays ExaBGP's JSON update stream into a table.
pub fn exabgp_rib(messages: &[serde_json::Value]) -> Rib {
    let mut rib = Rib::new();
    for m in messages {
        if m["type"] == "state" && m["neighbor"]["state"] == "down" {
            rib.clear();
        }
        if m["type"] != "update" {
            continue;
        }
        let u = &m["neighbor"]["message"]["update"];
        for w in u["withdraw"]["ipv4 unicast"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(p) = w["nlri"].as_str() {
                rib.remove(p);
            }
        }
        let a = &u["attribute"];
        let Some(ann) = u["announce"]["ipv4 unicast"].as_object() else {
            continue;
        };
        for (nh, nlris) in ann {
            for n in nlris.as_array().into_iter().flatten() {
                let Some(p) = n["nlri"].as_str() else {
                    continue;
                };
                let mut comms: Vec<String> = a["community"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| format!("{}:{}", c[0], c[1]))
                    .collect();
                comms.sort();
                let mut large: Vec<String> = a["large-community"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| format!("{}:{}:{}", c[0], c[1], c[2]))
                    .collect();
                large.sort();
                rib.insert(
                    p.to_owned(),
                    SeenRoute {
                        prefix: p.to_owned(),
                        next_hop: Some(nh.clone()),
                        as_path: a["as-path"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(" "),
                        communities: comms,
                        large_communities: large,
                        med: a["med"].as_u64().map(|m| m as u32),
                        local_pref: a["local-preference"].as_u64().map(|m| m as u32),
                        originator_id: a["originator-id"].as_str().map(str::to_owned),
                        cluster_list: a["cluster-list"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect(),
                    },
                );
            }
        }
    }
    rib
}

/// Waits until `rib()` satisfies `cond`; panics with the last table seen.
pub fn wait_rib(d: &Daemon, what: &str, timeout: Duration, cond: impl Fn(&Rib) -> bool) -> Rib {
    let mut last = Rib::new();
    if wait_until(timeout, what, || {
        last = d.rib();
        cond(&last)
    })
    .is_err()
    {
        panic!(
            "{:?}: timed out waiting for {what}; table: {last:#?}\n--- log ---\n{}",
            d.spec.kind,
            d.log()
        );
    }
    last
}
