//! Network namespace entry, confined to this module.
//!
//! The only way tabby works inside another network namespace is
//! [`Netns::run`]: it spawns a thread, moves *that thread* into the
//! namespace with `setns(2)`, runs the closure there and returns its result;
//! the thread then ends. The caller's threads never change namespace.
//!
//! Work that recurs many times a second (the CNI service wiring pods) goes
//! to a [`NetnsWorker`] instead: one long-lived thread of its own, which
//! stays in its home namespace and steps into another only to open a
//! netlink socket there ([`Visitor::netlink_in`]), returning home before
//! the job goes on. That saves a thread start per request and keeps the
//! thread warm; a worker that cannot return home stops for good. A
//! netlink socket created this way ([`Netns::netlink`]) stays bound to the
//! namespace it was created in and can be used from any thread afterwards;
//! files under `/proc/sys/net` opened there, and child processes started
//! there (`nft`), belong to the namespace too.
//!
//! This module needs no `unsafe`: `nix::sched::setns` is a safe wrapper
//! over a borrowed namespace file descriptor that this struct keeps open.

use std::cell::Cell;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

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

    /// A second handle on the same namespace (the file descriptor
    /// duplicated), e.g. to hand to a [`NetnsWorker`] job.
    pub fn try_clone(&self) -> Result<Netns> {
        let file = self.file.try_clone().map_err(|source| Error::Netns {
            path: self.path.clone(),
            source,
        })?;
        Ok(Netns {
            path: self.path.clone(),
            file,
        })
    }

    /// Moves the calling thread into this namespace.
    fn enter(&self) -> Result<()> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Netns {
            path: self.path.clone(),
            source: errno.into(),
        })
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
                self.enter()?;
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
                Netns::open(&p)?.enter()?;
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
            let t = self.enter().map(|()| then(&a));
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

/// One job for a [`NetnsWorker`].
type Job = Box<dyn FnOnce(&Visitor) + Send>;

/// A long-lived thread for namespace work that recurs: it runs submitted
/// jobs one after the other in its home namespace (the namespace of the
/// thread that started it), and a job steps into other namespaces only
/// through [`Visitor::netlink_in`], which returns home before the job goes
/// on. If the thread ever fails to return home, or a job panics, it stops
/// and every later [`NetnsWorker::submit`] fails with
/// [`Error::NetnsWorkerStopped`] (the caller can then fall back to
/// [`Netns::spawn_scoped_then`] or [`Netns::run`]). Dropping the worker
/// lets the thread finish the jobs already submitted and end.
#[derive(Debug)]
pub struct NetnsWorker {
    name: String,
    jobs: mpsc::Sender<Job>,
}

/// What a [`NetnsWorker`] job may do outside the worker's home namespace.
#[derive(Debug)]
pub struct Visitor {
    home: Netns,
    /// Set when a return home failed: the thread is in a foreign namespace.
    lost: Cell<bool>,
}

impl Visitor {
    /// Opens a netlink route socket inside `ns` (which stays bound to it):
    /// the thread enters `ns`, opens the socket and returns home. Fails
    /// without trying if an earlier return home failed.
    pub fn netlink_in(&self, ns: &Netns) -> Result<Netlink> {
        if self.lost.get() {
            return Err(Error::Netns {
                path: self.home.path.clone(),
                source: std::io::Error::other("the worker could not return to its home namespace"),
            });
        }
        ns.enter()?;
        let socket = Netlink::open();
        if let Err(e) = self.home.enter() {
            self.lost.set(true);
            return Err(e);
        }
        socket
    }
}

impl NetnsWorker {
    /// Starts the worker thread, named `name`, at home in the calling
    /// thread's namespace.
    pub fn start(name: &str) -> Result<NetnsWorker> {
        let home = Netns::current()?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || -> Result<()> {
                // A new thread starts in its creator's namespace; entering
                // the home explicitly makes that a checked fact.
                home.enter()?;
                let visitor = Visitor {
                    home,
                    lost: Cell::new(false),
                };
                while let Ok(job) = queue.recv() {
                    job(&visitor);
                    if visitor.lost.get() {
                        break;
                    }
                }
                Ok(())
            })
            .map_err(|source| Error::Netns {
                path: PathBuf::from("/proc/thread-self/ns/net"),
                source,
            })?;
        Ok(NetnsWorker {
            name: name.to_owned(),
            jobs,
        })
    }

    /// Queues `job` on the worker; [`WorkerTask::join`] waits for its
    /// result. Fails if the worker has stopped.
    pub fn submit<T, F>(&self, job: F) -> Result<WorkerTask<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Visitor) -> T + Send + 'static,
    {
        let (done, result) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |v: &Visitor| {
                let _ = done.send(job(v));
            }))
            .map_err(|_| Error::NetnsWorkerStopped(self.name.clone()))?;
        Ok(WorkerTask {
            name: self.name.clone(),
            result,
        })
    }
}

/// A job queued on a [`NetnsWorker`].
#[derive(Debug)]
pub struct WorkerTask<T> {
    name: String,
    result: mpsc::Receiver<T>,
}

impl<T> WorkerTask<T> {
    /// Waits for the job's result; fails if the worker stopped before
    /// finishing it (the job panicked).
    pub fn join(self) -> Result<T> {
        self.result
            .recv()
            .map_err(|_| Error::NetnsWorkerStopped(self.name))
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
