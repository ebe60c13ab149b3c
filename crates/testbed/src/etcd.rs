//! A throwaway single-member etcd (Debian's `etcd-server`) for tests and
//! benchmarks: loopback-only, free ports, a data directory of its own,
//! killed by PID and its directory removed on drop. It can be stopped and
//! restarted on the same ports and data, to test clients that must survive
//! an etcd restart.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Process, Result, TestbedError, wait_until};

/// A running (or stopped, between [`EtcdServer::stop`] and
/// [`EtcdServer::start_again`]) etcd member on 127.0.0.1.
#[derive(Debug)]
pub struct EtcdServer {
    process: Option<Process>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|source| TestbedError::Spawn {
        command: "bind 127.0.0.1:0".into(),
        source,
    })?;
    let port = l
        .local_addr()
        .map_err(|source| TestbedError::Spawn {
            command: "local_addr".into(),
            source,
        })?
        .port();
    Ok(port)
}

impl EtcdServer {
    /// Starts etcd on two free loopback ports and waits until it answers.
    pub fn start() -> Result<EtcdServer> {
        let id = crate::NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tabby-etcd-{}-{id}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| TestbedError::Spawn {
            command: format!("mkdir {}", dir.display()),
            source,
        })?;
        let mut server = EtcdServer {
            process: None,
            dir,
            client_port: free_port()?,
            peer_port: free_port()?,
        };
        server.start_again()?;
        Ok(server)
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The tabby datastore URL, `etcd://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    /// Kills the member (SIGKILL, by PID); data stays for [`Self::start_again`].
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the member again on the same ports and data directory.
    pub fn start_again(&mut self) -> Result<()> {
        self.process = None;
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .map_err(|source| TestbedError::Spawn {
                command: "open etcd.log".into(),
                source,
            })?;
        let process = Process::spawn(
            Command::new("etcd")
                .arg("--name")
                .arg("tabby-test")
                .arg("--data-dir")
                .arg(self.dir.join("data"))
                .arg("--listen-client-urls")
                .arg(&client)
                .arg("--advertise-client-urls")
                .arg(&client)
                .arg("--listen-peer-urls")
                .arg(&peer)
                .arg("--initial-advertise-peer-urls")
                .arg(&peer)
                .arg("--initial-cluster")
                .arg(format!("tabby-test={peer}"))
                .stdout(Stdio::null())
                .stderr(log),
        )?;
        self.process = Some(process);
        let endpoint = self.endpoint();
        wait_until(Duration::from_secs(30), "etcd to answer", || {
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &endpoint, "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })?;
        Ok(())
    }

    /// Compacts history up to the current revision (so older watches must
    /// relist).
    pub fn compact_now(&self) -> Result<()> {
        let endpoint = self.endpoint();
        let out = crate::run(Command::new("etcdctl").env("ETCDCTL_API", "3").args([
            "--endpoints",
            &endpoint,
            "endpoint",
            "status",
            "--write-out",
            "fields",
        ]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let revision = text
            .lines()
            .find_map(|l| l.strip_prefix("\"Revision\" : "))
            .unwrap_or("0")
            .trim()
            .to_owned();
        crate::run(Command::new("etcdctl").env("ETCDCTL_API", "3").args([
            "--endpoints",
            &endpoint,
            "compact",
            &revision,
        ]))?;
        Ok(())
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.process = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
