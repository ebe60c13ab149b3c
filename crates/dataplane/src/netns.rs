//! Network namespace entry, confined to this module.
//!
//! The only way tabby works inside another network namespace is
//! [`Netns::run`]: it spawns a thread, moves *that thread* into the
//! namespace with `setns(2)`, runs the closure there and returns its result;
//! the thread then ends. The caller's threads never change namespace. A
//! netlink socket created this way ([`Netns::netlink`]) stays bound to the
//! namespace it was created in and can be used from any thread afterwards;
//! files under `/proc/sys/net` opened there, and child processes started
//! there (`nft`), belong to the namespace too.
//!
//! This module needs no `unsafe`: `nix::sched::setns` is a safe wrapper
//! over a borrowed namespace file descriptor that this struct keeps open.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::error::{Error, Result};
use crate::netlink::Netlink;

/// An open network namespace (its `nsfs` file, kept open).
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    file: File,
}

impl Netns {
    /// Opens a namespace file: `/var/run/netns/NAME`, `/proc/PID/ns/net`,
    /// or a CNI `CNI_NETNS` path.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Netns {
            path: path.clone(),
            source,
        })?;
        Ok(Netns { path, file })
    }

    /// Opens the namespace `ip netns` knows as `name`.
    pub fn named(name: &str) -> Result<Netns> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::Invalid {
                field: "netns name".into(),
                reason: format!("{name:?} is not a namespace name"),
            });
        }
        Netns::open(Path::new("/var/run/netns").join(name))
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<Netns> {
        Netns::open("/proc/thread-self/ns/net")
    }

    /// The file this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace file descriptor (for `IFLA_NET_NS_FD`).
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Borrowed namespace file descriptor.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `work` on a new thread inside this namespace and returns its
    /// result. The calling thread stays where it is.
    pub fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        std::thread::scope(|s| {
            let worker = s.spawn(|| -> Result<T> {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    Error::Netns {
                        path: self.path.clone(),
                        source: errno.into(),
                    }
                })?;
                Ok(work())
            });
            worker
                .join()
                .map_err(|_| Error::NetnsThread(self.path.clone()))?
        })
    }

    /// Like [`Netns::run`], but returns at once: the namespace at `path` is
    /// opened and entered on a new thread of its own, `work` runs there, and
    /// [`NetnsTask::join`] returns its result. The caller does other work
    /// meanwhile (the CNI plugin opens the pod's netlink socket this way
    /// while IPAM works). The thread ends with `work`.
    pub fn spawn<T, F>(path: PathBuf, work: F) -> NetnsTask<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let p = path.clone();
        let handle = std::thread::Builder::new()
            .name("tabby-netns".into())
            .spawn(move || -> Result<T> {
                let ns = Netns::open(&p)?;
                setns(ns.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Netns {
                    path: p.clone(),
                    source: errno.into(),
                })?;
                Ok(work())
            });
        NetnsTask { path, handle }
    }

    /// On a new thread of the scope `s`: runs `first` in the caller's
    /// namespace, then moves that thread into this namespace and runs
    /// `then` there with `first`'s result; the thread then ends. The join
    /// gives both results (`then`'s is the error if the namespace could not
    /// be entered). One thread instead of two when work in the caller's
    /// namespace must precede work inside this one (the CNI plugin creates
    /// the veth, then opens the pod's netlink socket).
    pub fn spawn_scoped_then<'scope, 'env, A, T, F, G>(
        &'scope self,
        s: &'scope std::thread::Scope<'scope, 'env>,
        first: F,
        then: G,
    ) -> std::thread::ScopedJoinHandle<'scope, (A, Result<T>)>
    where
        A: Send + 'scope,
        T: Send + 'scope,
        F: FnOnce() -> A + Send + 'scope,
        G: FnOnce(&A) -> T + Send + 'scope,
    {
        s.spawn(move || {
            let a = first();
            let t = setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|errno| Error::Netns {
                    path: self.path.clone(),
                    source: errno.into(),
                })
                .map(|()| then(&a));
            (a, t)
        })
    }

    /// Subscribes to route changes inside this namespace.
    pub fn route_monitor(&self) -> Result<crate::RouteMonitor> {
        self.run(crate::RouteMonitor::open)?
    }

    /// Opens a netlink route socket inside this namespace.
    pub fn netlink(&self) -> Result<Netlink> {
        self.run(Netlink::open)?
    }
}

/// Work running inside a namespace on a thread of its own
/// ([`Netns::spawn`]).
#[derive(Debug)]
pub struct NetnsTask<T> {
    path: PathBuf,
    handle: std::io::Result<std::thread::JoinHandle<Result<T>>>,
}

impl<T> NetnsTask<T> {
    /// Waits for the work and returns its result, or why the namespace
    /// could not be entered (or the thread not started).
    pub fn join(self) -> Result<T> {
        match self.handle {
            Ok(h) => h.join().map_err(|_| Error::NetnsThread(self.path))?,
            Err(source) => Err(Error::Netns {
                path: self.path,
                source,
            }),
        }
    }
}
