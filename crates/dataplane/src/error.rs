//! The errors of this crate: one enum for every operation, with the kernel's
//! own errno and extended-ack message kept so a caller can tell *which*
//! route or link the kernel refused and why.

use std::fmt;
use std::path::PathBuf;

/// An error the kernel returned for one netlink request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The positive errno (`libc::EEXIST`, `libc::ESRCH`, ...).
    pub errno: i32,
    /// The kernel's extended-ack message, when it sent one
    /// (e.g. "Nexthop has invalid gateway").
    pub message: Option<String>,
}

impl KernelError {
    /// A kernel error with no extended-ack message.
    pub fn from_errno(errno: i32) -> Self {
        KernelError {
            errno,
            message: None,
        }
    }

    /// True for "file exists" (the object is already there).
    pub fn is_exists(&self) -> bool {
        self.errno == libc::EEXIST
    }

    /// True for "no such process / not found" (the object is not there).
    pub fn is_not_found(&self) -> bool {
        self.errno == libc::ESRCH || self.errno == libc::ENOENT || self.errno == libc::ENODEV
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = std::io::Error::from_raw_os_error(self.errno);
        match &self.message {
            Some(m) => write!(f, "{m} ({os})"),
            None => write!(f, "{os}"),
        }
    }
}

impl std::error::Error for KernelError {}

/// Everything that can go wrong in the dataplane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The netlink socket could not be opened, configured, written or read.
    #[error("netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel refused a request.
    #[error("{operation}: {source}")]
    Kernel {
        /// What was being done, naming the object ("add route 10.0.0.0/24 table 254").
        operation: String,
        /// The kernel's answer.
        source: KernelError,
    },
    /// The kernel sent a message this crate could not decode.
    #[error("cannot decode netlink message from the kernel: {0}")]
    Decode(String),
    /// A route, link or address given by the caller is not valid; names the field.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or attribute at fault (`route.next_hops[1].gateway`).
        field: String,
        /// Why it is refused.
        reason: String,
    },
    /// A link named by the caller does not exist in the namespace.
    #[error("no link named {0:?}")]
    NoSuchLink(String),
    /// The running kernel has no support for a device type tabby needs.
    #[error(
        "the running kernel has no {kind} support (kernel option {config} is not built \
         in and the module cannot be loaded); {consequence}"
    )]
    KernelLacks {
        /// The device kind (`ipip`, `vxlan`).
        kind: &'static str,
        /// The kernel configuration option that provides it.
        config: &'static str,
        /// What does not work without it.
        consequence: &'static str,
    },
    /// A network namespace could not be opened or entered.
    #[error("network namespace {path}: {source}")]
    Netns {
        /// The namespace file (`/var/run/netns/NAME`, `/proc/PID/ns/net`).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The worker thread that entered a namespace panicked.
    #[error("the thread working inside network namespace {0} panicked")]
    NetnsThread(PathBuf),
    /// A long-lived namespace worker ([`crate::NetnsWorker`]) has stopped:
    /// a job panicked, or the thread could not return to its home
    /// namespace (so it runs nothing more).
    #[error("namespace worker {0:?} has stopped")]
    NetnsWorkerStopped(String),
    /// A sysctl under /proc/sys could not be read or written.
    #[error("sysctl {path}: {source}")]
    Sysctl {
        /// The file under /proc/sys.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `nft` could not be run or refused the ruleset.
    #[error("nft: {0}")]
    Nft(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
