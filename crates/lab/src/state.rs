//! The state file of a running lab (`/run/tabby-lab/<lab>/state.json`):
//! what `up` built (namespaces, processes with their PIDs and start times,
//! pods with their addresses), written after every step so that `down` can
//! remove a lab that failed half-way; and the process primitives that use it
//! (spawn detached in a namespace, is-alive, kill by PID).

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::topology::Topology;

/// Where lab state directories live, unless `TABBY_LAB_DIR` says otherwise.
pub const DEFAULT_STATE_ROOT: &str = "/run/tabby-lab";

/// The directory that holds every lab's state directory.
pub fn state_root() -> PathBuf {
    std::env::var_os("TABBY_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_ROOT))
}

/// A process the lab started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// What it is, e.g. `leaf1/bgpd`, `k-w1/agent`, `k-w1/web/http`.
    pub role: String,
    /// The namespace it runs in.
    pub netns: String,
    /// Its PID.
    pub pid: u32,
    /// Its start time (field 22 of `/proc/<pid>/stat`), so that a reused PID
    /// is never taken for it.
    pub start_time: u64,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    /// The program it runs (to restart it).
    #[serde(default)]
    pub program: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its working directory, when not inherited.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

impl ProcessRecord {
    /// Whether this very process still runs (not a zombie, PID not reused).
    pub fn is_alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((state, start)) if state != 'Z' && start == self.start_time)
    }
}

/// A pod the lab created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    /// Its node.
    pub node: String,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub netns: String,
    /// The CNI container id.
    pub container_id: String,
    /// Its IPv4 address, once CNI ADD succeeded.
    pub address: Option<Ipv4Addr>,
}

/// Everything `up` built.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// The lab id.
    pub name: String,
    /// The topology file.
    pub topology_file: PathBuf,
    /// The parsed topology (checks are run from it).
    pub topology: Topology,
    /// The lab's datastore URL.
    pub datastore: String,
    /// The `tabby` binary the lab runs.
    pub tabby: PathBuf,
    /// Namespaces in creation order.
    pub namespaces: Vec<String>,
    /// Processes in start order.
    pub processes: Vec<ProcessRecord>,
    /// Pods.
    pub pods: Vec<PodRecord>,
    /// Whether `up` finished.
    pub complete: bool,
}

impl State {
    /// The state directory of lab `name`.
    pub fn dir_of(name: &str) -> PathBuf {
        state_root().join(name)
    }

    /// This lab's state directory.
    pub fn dir(&self) -> PathBuf {
        State::dir_of(&self.name)
    }

    /// Loads the state of lab `name`.
    pub fn load(name: &str) -> Result<State, LabError> {
        let path = State::dir_of(name).join("state.json");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NotUp(name.to_owned(), path));
            }
            Err(source) => return Err(LabError::Io { path, source }),
        };
        serde_json::from_str(&text).map_err(|e| LabError::State {
            path,
            message: e.to_string(),
        })
    }

    /// Writes the state file (atomically: a temporary file renamed).
    pub fn save(&self) -> Result<(), LabError> {
        let dir = self.dir();
        let path = dir.join("state.json");
        let tmp = dir.join("state.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| LabError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        fs::write(&tmp, text).map_err(|source| LabError::Io {
            path: tmp.clone(),
            source,
        })?;
        fs::rename(&tmp, &path).map_err(|source| LabError::Io { path, source })
    }

    /// The namespace of host `host`.
    pub fn host_netns(&self, host: &str) -> String {
        format!("{}-h-{host}", self.name)
    }

    /// A pod's record.
    pub fn pod(&self, node: &str, pod: &str) -> Option<&PodRecord> {
        self.pods.iter().find(|p| p.node == node && p.name == pod)
    }

    /// Starts `program args` detached inside `netns` (its own process group,
    /// output to `log`) and records it.
    pub fn spawn(
        &mut self,
        role: &str,
        netns: &str,
        program: &str,
        args: &[String],
        cwd: Option<&Path>,
        log: PathBuf,
    ) -> Result<(), LabError> {
        let out = fs::File::create(&log).map_err(|source| LabError::Io {
            path: log.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| LabError::Io {
            path: log.clone(),
            source,
        })?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().map_err(|e| LabError::Command {
            command: format!("ip netns exec {netns} {program}"),
            message: e.to_string(),
        })?;
        let pid = child.id();
        // `ip netns exec` execs the program: the PID stays; read its start
        // time now (it is the same before and after the exec).
        let start_time = proc_stat(pid).map(|(_, s)| s).unwrap_or(0);
        self.processes.push(ProcessRecord {
            role: role.to_owned(),
            netns: netns.to_owned(),
            pid,
            start_time,
            log,
            program: program.to_owned(),
            args: args.to_vec(),
            cwd: cwd.map(Path::to_path_buf),
        });
        // The child is not waited for: it outlives `tabby lab up` and is
        // reaped by whoever inherits it; `down` stops it by PID.
        drop(child);
        self.save()
    }
}

/// `(state, start time)` of a PID from `/proc/<pid>/stat`.
pub fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after
    // the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields after the name start at field 3 (state); start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Stops a recorded process: SIGTERM, then SIGKILL after `grace`. Returns
/// whether it had to be killed. Does nothing when the PID now belongs to
/// another process.
pub fn stop(p: &ProcessRecord, grace: Duration) -> bool {
    if !p.is_alive() {
        return false;
    }
    let pid = nix::unistd::Pid::from_raw(p.pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !p.is_alive() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if p.is_alive() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_reads_our_own_start_time() {
        let (state, start) = proc_stat(std::process::id()).expect("own stat");
        assert!(matches!(state, 'R' | 'S'), "{state}");
        assert!(start > 0);
        assert_eq!(proc_stat(std::process::id()).expect("again").1, start);
    }
}
