//! The node-local CNI service: a long-running process on the node (the
//! agent, or `tabby cni serve`) keeps the datastore open and runs the
//! plugin's requests; the plugin process started by the runtime forwards
//! its invocation (environment and stdin) over a Unix socket and prints the
//! reply, the way Cilium's plugin talks to its agent. A plugin that finds no
//! service, or a service in another network namespace than its own, does
//! the work itself (the direct path), so the service is only ever a
//! shortcut.
//!
//! What the service saves per request: opening the SQLite file, reading its
//! schema and rebuilding the WAL index (a fresh connection does all three),
//! and the first-use cost of every prepared statement.
//!
//! Wire format, one exchange per connection: a request frame, a reply
//! frame; each frame is a 4-byte big-endian length and that many bytes of
//! JSON ([`Request`], [`Reply`]). The socket is created mode 0600 in a
//! directory made mode 0700 if missing: only root (the runtime) may ask.
//!
//! The service runs requests with the plugin's own code (the dispatcher and
//! [`NodeBackend`]), so answers are the same as the direct path's, byte for
//! byte.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tabby_dataplane::NetnsWorker;

use crate::node::{NodeBackend, StoreCache};
use crate::plugin::{self, Role};

/// The environment variable naming the service's socket; empty or `off`
/// turns forwarding off.
pub const SOCKET_ENV: &str = "TABBY_CNI_SOCKET";

/// Where the service listens unless [`SOCKET_ENV`] says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/tabby/cni.sock";

/// The largest frame either side accepts (a CNI configuration is a few
/// kilobytes; GC lists every attachment of the node).
const MAX_FRAME: usize = 16 << 20;

/// How long the plugin waits for the service's answer before doing the
/// work itself (ADD and DEL are idempotent, so a late answer is harmless).
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the service waits for a connected plugin's request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the plugin sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// `plugin` or `ipam`.
    pub role: String,
    /// The plugin's network namespace (device and inode of its nsfs file):
    /// the service only serves plugins in its own namespace, where the host
    /// end of the veth must be created.
    pub netns: (u64, u64),
    /// The `CNI_*` variables and `TABBY_DATASTORE`.
    pub env: Vec<(String, String)>,
    /// Standard input (the network configuration).
    pub stdin: String,
}

/// What the service answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// False when the service did not run the request (another namespace):
    /// the plugin then does the work itself.
    pub served: bool,
    /// What the plugin prints on stdout.
    pub stdout: String,
    /// Its exit status.
    pub exit_code: u8,
    /// The error line for stderr, if the command failed.
    pub error: Option<String>,
}

/// The socket the plugin should try, if forwarding is on.
pub fn client_socket() -> Option<PathBuf> {
    match std::env::var_os(SOCKET_ENV) {
        Some(v) if v.is_empty() || v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => Some(PathBuf::from(DEFAULT_SOCKET)),
    }
}

/// Device and inode of the calling thread's network namespace.
fn current_netns() -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((m.dev(), m.ino()))
}

fn write_frame(stream: &mut UnixStream, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    stream.write_all(&buf)
}

fn read_frame(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes (at most {MAX_FRAME})"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// Forwards one invocation to the service at `socket`. `None` when there
/// is no service there, it is in another namespace, or it failed to
/// answer: the caller then does the work itself.
pub fn forward(socket: &Path, role: Role, stdin: &[u8]) -> Option<Reply> {
    let stdin = std::str::from_utf8(stdin).ok()?;
    let mut stream = UnixStream::connect(socket).ok()?;
    let env = std::env::vars()
        .filter(|(k, _)| k.starts_with("CNI_") || k == tabby_datastore::URL_ENV)
        .collect();
    let req = Request {
        role: match role {
            Role::Plugin => "plugin",
            Role::Ipam => "ipam",
        }
        .to_owned(),
        netns: current_netns().ok()?,
        env,
        stdin: stdin.to_owned(),
    };
    let body = serde_json::to_vec(&req).ok()?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).ok()?;
    write_frame(&mut stream, &body).ok()?;
    let reply: Reply = serde_json::from_slice(&read_frame(&mut stream).ok()?).ok()?;
    reply.served.then_some(reply)
}

/// A bound service socket.
#[derive(Debug)]
pub struct Service {
    listener: UnixListener,
    path: PathBuf,
    netns: (u64, u64),
    cache: StoreCache,
}

impl Service {
    /// Binds the socket at `path` (its directory is created mode 0700 if
    /// missing; a stale socket file nobody answers on is replaced; a live
    /// service there is an error).
    pub fn bind(path: &Path) -> std::io::Result<Service> {
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("a CNI service already answers on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Service {
            listener,
            path: path.to_path_buf(),
            netns: current_netns()?,
            cache: StoreCache::default(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests forever on `workers` threads (each takes the next
    /// connection and runs it to the end), plus the calling thread.
    pub fn serve(&self, workers: usize) -> std::io::Result<()> {
        std::thread::scope(|s| {
            for _ in 1..workers.max(1) {
                s.spawn(|| self.accept_loop());
            }
            self.accept_loop()
        })
    }

    fn accept_loop(&self) -> std::io::Result<()> {
        // Each accept thread has its own warm thread for the host side of
        // the veth (without one, each ADD starts a thread of its own).
        let veth_worker = NetnsWorker::start("tabby-cni-veth").ok().map(Arc::new);
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.handle(stream, veth_worker.as_ref()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn handle(&self, mut stream: UnixStream, veth_worker: Option<&Arc<NetnsWorker>>) {
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        let Ok(body) = read_frame(&mut stream) else {
            return;
        };
        let reply = match serde_json::from_slice::<Request>(&body) {
            Ok(req) => self.run_with(&req, veth_worker),
            // Not ours to answer: the plugin falls back to the direct path.
            Err(_) => Reply {
                served: false,
                stdout: String::new(),
                exit_code: 1,
                error: None,
            },
        };
        if let Ok(body) = serde_json::to_vec(&reply) {
            let _ = write_frame(&mut stream, &body);
        }
    }

    /// Runs one request, as the plugin would have.
    pub fn run(&self, req: &Request) -> Reply {
        self.run_with(req, None)
    }

    /// [`Service::run`], with the host side of a pod's veth made on
    /// `veth_worker` if given.
    fn run_with(&self, req: &Request, veth_worker: Option<&Arc<NetnsWorker>>) -> Reply {
        if req.netns != self.netns {
            return Reply {
                served: false,
                stdout: String::new(),
                exit_code: 1,
                error: None,
            };
        }
        let role = if req.role == "ipam" {
            Role::Ipam
        } else {
            Role::Plugin
        };
        let var = |k: &str| {
            req.env
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        };
        let env_datastore = var(tabby_datastore::URL_ENV);
        // With TABBY_CNI_TRACE set on the service, each request's phases
        // go to the service's stderr (one request at a time makes sense of
        // them).
        crate::trace::start();
        let out = plugin::run(role, var, req.stdin.as_bytes(), |conf, role| {
            NodeBackend::for_service(conf, role, env_datastore, &self.cache, veth_worker.cloned())
        });
        crate::trace::mark("served");
        crate::trace::report();
        let error = out.error.as_ref().map(|e| {
            format!(
                "tabby cni {} {}: {e}",
                var("CNI_COMMAND").unwrap_or_default(),
                var("CNI_CONTAINERID").unwrap_or_default()
            )
        });
        Reply {
            served: true,
            stdout: out.stdout,
            exit_code: out.exit_code,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(netns: (u64, u64), env: &[(&str, &str)], stdin: &str) -> Request {
        Request {
            role: "plugin".into(),
            netns,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            stdin: stdin.into(),
        }
    }

    #[test]
    fn requests_go_over_the_socket_and_foreign_namespaces_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run").join("cni.sock");
        let service = Service::bind(&path).expect("bind");
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
        // A second service on a live socket is refused.
        assert!(Service::bind(&path).is_err());

        std::thread::scope(|s| {
            s.spawn(|| {
                // The refused second bind's probe, then two requests.
                for _ in 0..3 {
                    let (stream, _) = service.listener.accept().expect("accept");
                    service.handle(stream, None);
                }
            });
            // A request the dispatcher answers without a backend: an
            // unknown command is error 4 naming CNI_COMMAND, served.
            let req = request(
                current_netns().expect("netns"),
                &[("CNI_COMMAND", "FROB")],
                r#"{"cniVersion":"1.0.0","name":"n","type":"tabby"}"#,
            );
            let mut stream = UnixStream::connect(&path).expect("connect");
            write_frame(&mut stream, &serde_json::to_vec(&req).expect("json")).expect("send");
            let reply: Reply =
                serde_json::from_slice(&read_frame(&mut stream).expect("reply")).expect("json");
            assert!(reply.served);
            assert_eq!(reply.exit_code, 1);
            assert!(reply.stdout.contains("CNI_COMMAND"), "{}", reply.stdout);
            assert!(reply.error.is_some());

            // Another namespace: not served, so the plugin works alone.
            let req = request((0, 1), &[("CNI_COMMAND", "ADD")], "{}");
            let mut stream = UnixStream::connect(&path).expect("connect");
            write_frame(&mut stream, &serde_json::to_vec(&req).expect("json")).expect("send");
            let reply: Reply =
                serde_json::from_slice(&read_frame(&mut stream).expect("reply")).expect("json");
            assert!(!reply.served);
        });
        drop(service);
        // The socket file is left behind; nobody answers, so it is stale and
        // a new service replaces it.
        assert!(forward(&path, Role::Plugin, b"{}").is_none());
        Service::bind(&path).expect("rebind over a stale socket");
    }

    #[test]
    fn oversized_frames_are_refused() {
        let (mut a, mut b) = UnixStream::pair().expect("pair");
        a.write_all(&(u32::MAX).to_be_bytes()).expect("write");
        assert!(read_frame(&mut b).is_err());
    }
}
