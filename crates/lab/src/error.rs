//! The lab's error types: a bad topology file (with the field path), and a
//! failure while building, verifying or tearing down a lab.

use std::path::PathBuf;

/// A topology file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not fit the schema.
    #[error("{file}: {field}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The field path, e.g. `links[1].ends[0].address`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The YAML parses but is inconsistent (a missing host, a duplicate name).
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// The field path.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// A lab operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// The topology file is bad.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A lab of this name is already up.
    #[error("lab {0:?} is already up (state in {1}); run `tabby lab down {0}` first")]
    AlreadyUp(String, PathBuf),
    /// No lab of this name is up.
    #[error("no lab {0:?} is up (no state file {1})")]
    NotUp(String, PathBuf),
    /// A file of the lab's state could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state file is corrupt.
    #[error("{path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A command the lab runs failed.
    #[error("{command}: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and stderr.
        message: String,
    },
    /// Something did not come up in time.
    #[error("timed out waiting for {what}: {detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The last thing seen.
        detail: String,
    },
}
