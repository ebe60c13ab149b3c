//! Runs `tabby-bgpd` (the daemon behind `tabby bgpd`) inside a namespace
//! and reads its view through the control socket, as `tabby bgp` does.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use tabby_speaker::control::{self, NeighborStatus, Request, Response, RouteStatus};
use tabby_testbed::{Netns, Process, wait_until};
use tempfile::TempDir;

/// A running tabby daemon.
pub struct Tabby {
    dir: TempDir,
    process: Process,
}

impl Tabby {
    /// Writes `config` (YAML, without `controlSocket`) and starts the daemon in `ns`.
    pub fn start(ns: &Netns, config: &str) -> Tabby {
        let dir = tempfile::Builder::new()
            .prefix("tabby-interop-bgpd-")
            .tempdir()
            .expect("tempdir");
        let sock = dir.path().join("bgpd.sock");
        let text = format!("{config}\ncontrolSocket: {}\n", sock.display());
        let conf = dir.path().join("bgpd.yaml");
        std::fs::write(&conf, text).expect("write config");
        let log = File::create(dir.path().join("bgpd.log")).expect("log");
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_tabby-bgpd"));
        cmd.arg("--config")
            .arg(&conf)
            .env("TABBY_LOG", "info,tabby_speaker=debug")
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        let process = Process::spawn(&mut cmd).expect("start tabby-bgpd");
        let t = Tabby { dir, process };
        if wait_until(Duration::from_secs(10), "control socket", || sock.exists()).is_err() {
            panic!("tabby-bgpd did not start:\n{}", t.log());
        }
        t
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("bgpd.sock")
    }

    /// Replaces the config file (call [`Tabby::reload`] or send SIGHUP after).
    pub fn rewrite(&self, config: &str) {
        let text = format!("{config}\ncontrolSocket: {}\n", self.socket().display());
        std::fs::write(self.dir.path().join("bgpd.yaml"), text).expect("rewrite config");
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bgpd.log")).unwrap_or_default()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: &str) {
        self.process.signal(sig).expect("signal tabby");
    }

    /// One control request.
    pub fn ask(&self, r: &Request) -> Response {
        control::request(&self.socket(), r, Duration::from_secs(10)).expect("control request")
    }

    /// `tabby bgp neighbors`.
    pub fn neighbors(&self) -> Vec<NeighborStatus> {
        match self.ask(&Request::Neighbors) {
            Response::Neighbors(v) => v,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The status of one neighbour.
    pub fn neighbor(&self, addr: &str) -> Option<NeighborStatus> {
        self.neighbors()
            .into_iter()
            .find(|n| n.address.to_string() == addr)
    }

    /// Waits until the daemon has exited (it removes its control socket
    /// last, after the FIB thread cleaned up).
    pub fn wait_exit(&self, timeout: Duration) {
        let sock = self.socket();
        if wait_until(timeout, "tabby-bgpd exit", || !sock.exists()).is_err() {
            panic!("tabby-bgpd did not exit:\n{}", self.log());
        }
    }

    /// `tabby bgp routes`.
    pub fn routes(&self) -> Vec<RouteStatus> {
        match self.ask(&Request::Routes { prefix: None }) {
            Response::Routes(v) => v,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Waits until the session with `addr` is Established.
    pub fn wait_established(&self, addr: &str, timeout: Duration) {
        let mut last = None;
        if wait_until(timeout, "tabby session Established", || {
            last = self.neighbor(addr);
            last.as_ref().is_some_and(|n| n.state == "Established")
        })
        .is_err()
        {
            panic!(
                "tabby to {addr} not Established: {last:?}\n--- tabby log ---\n{}",
                self.log()
            );
        }
    }

    /// Waits until `cond` holds for tabby's routes; returns them.
    pub fn wait_routes(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&[RouteStatus]) -> bool,
    ) -> Vec<RouteStatus> {
        let mut last = Vec::new();
        if wait_until(timeout, what, || {
            last = self.routes();
            cond(&last)
        })
        .is_err()
        {
            panic!(
                "tabby: timed out waiting for {what}; routes: {last:#?}\n--- tabby log ---\n{}",
                self.log()
            );
        }
        last
    }
}
