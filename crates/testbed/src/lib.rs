//! Network namespaces, veth links and processes inside namespaces, for
//! tests, benchmarks and the lab.
//!
//! Everything here drives iproute2 (`ip`) as a child process: it is the
//! harness around the code under test, not part of the product's dataplane
//! (that is `tabby-dataplane`, over netlink). Every namespace made here gets a
//! name unique to this process, and is deleted (with the processes still
//! running inside it, all of which this harness started) when its guard
//! drops. Addresses used by callers must stay inside these namespaces.

mod etcd;
pub mod vm;

pub use etcd::EtcdServer;

use std::ffi::OsStr;
use std::fmt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What went wrong while building or driving a test network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestbedError {
    /// A command could not be started at all (binary missing, not root).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command ran and exited with a failure status.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on standard error.
        stderr: String,
    },
    /// A condition polled by [`wait_until`] did not hold in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, TestbedError>;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; an error carries its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let command = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestbedError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(TestbedError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// Runs `ip ARGS...` in the current (root) namespace.
pub fn ip<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new("ip").args(args))
}

/// Polls `cond` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(TestbedError::Timeout(timeout, what.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A network namespace this process created; deleted on drop together with
/// every process still running inside it.
pub struct Netns {
    name: String,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Netns").field(&self.name).finish()
    }
}

impl Netns {
    /// Creates a namespace named `tby-<prefix>-<pid>-<n>` with `lo` up.
    pub fn new(prefix: &str) -> Result<Netns> {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("tby-{prefix}-{}-{n}", std::process::id());
        ip(["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program ARGS...` inside the namespace to completion.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(self.command(program).args(args))
    }

    /// Runs `ip ARGS...` inside the namespace.
    pub fn ip<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `ip ARGS...` inside the namespace and returns its stdout.
    pub fn ip_stdout<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Ok(String::from_utf8_lossy(&self.ip(args)?.stdout).into_owned())
    }

    /// Adds `addr` (with prefix length) to `dev` and sets `dev` up.
    pub fn addr_add(&self, dev: &str, addr: &str) -> Result<()> {
        self.ip(["addr", "add", addr, "dev", dev])?;
        self.ip(["link", "set", dev, "up"])?;
        Ok(())
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.ip_forward=1`, ...).
    pub fn sysctl(&self, key_value: &str) -> Result<()> {
        self.exec("sysctl", ["-q", "-w", key_value])?;
        Ok(())
    }

    /// Sends `count` pings from this namespace to `dst`; true if any came back.
    pub fn ping(&self, dst: &str, count: u32) -> bool {
        self.exec(
            "ping",
            ["-c", &count.to_string(), "-i", "0.2", "-W", "1", "-q", dst],
        )
        .is_ok()
    }

    /// Starts `cmd` (built with [`Netns::command`]) as a guarded process.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Process> {
        Process::spawn(cmd)
    }

    /// PIDs of processes running inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        ip(["netns", "pids", &self.name])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Every process inside was started by this harness (the namespace is
        // ours and new), so ending them by PID is ending our own.
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = ip(["netns", "del", &self.name]);
    }
}

/// Connects two namespaces with a veth pair, `a_if` in `a` and `b_if` in `b`,
/// optionally addressing each end (`"10.0.0.1/30"`); both ends are set up.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_addr: Option<&str>,
    b: &Netns,
    b_if: &str,
    b_addr: Option<&str>,
) -> Result<()> {
    ip([
        "link", "add", "name", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if,
        "netns", &b.name,
    ])?;
    for (ns, dev, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        if let Some(addr) = addr {
            ns.ip(["addr", "add", addr, "dev", dev])?;
        }
        ns.ip(["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// A child process this harness started; killed by PID and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    command: String,
}

impl Process {
    /// Starts `cmd` with stdin closed.
    pub fn spawn(cmd: &mut Command) -> Result<Process> {
        let command = describe(cmd);
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                command: command.clone(),
                source,
            })?;
        Ok(Process { child, command })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The command line it was started with.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Sends a signal (`"TERM"`, `"HUP"`, ...) to the process by PID.
    pub fn signal(&self, sig: &str) -> Result<()> {
        run(Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]))?;
        Ok(())
    }

    /// Mutable access to the child (for its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_namespaces_ping_over_veth() {
        let a = Netns::new("tb-a").expect("netns a");
        let b = Netns::new("tb-b").expect("netns b");
        veth(
            &a,
            "eth0",
            Some("10.250.0.1/30"),
            &b,
            "eth0",
            Some("10.250.0.2/30"),
        )
        .expect("veth");
        assert!(a.ping("10.250.0.2", 1), "a cannot reach b over the veth");
        assert!(!a.ping("10.250.0.9", 1), "an address nobody has answered");
        let name = a.name().to_owned();
        drop(a);
        let list =
            String::from_utf8_lossy(&ip(["netns", "list"]).expect("list").stdout).into_owned();
        assert!(!list.contains(&name), "namespace {name} left behind");
    }
}
