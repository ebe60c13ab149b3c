//! The process boundary of plugin mode: reads stdin and the environment,
//! runs the dispatcher with the node backend, writes stdout, logs the error
//! (if any) on stderr, and returns the exit status.

use std::io::{Read, Write};

use crate::error::{CniError, ErrorCode};
use crate::plugin::{self, Role};
use crate::version::CniVersion;

/// Runs one CNI invocation of this process in `role`; returns the exit
/// status (0 or 1).
pub fn run_process(role: Role) -> u8 {
    crate::trace::start();
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = CniError::new(ErrorCode::Io, format!("stdin: {e}"));
        emit(&err.to_json(CniVersion::LATEST), Some(&err));
        return 1;
    }
    crate::trace::mark("stdin");
    let out = plugin::run(
        role,
        |k| std::env::var(k).ok(),
        &stdin,
        crate::node::NodeBackend::open,
    );
    emit(&out.stdout, out.error.as_ref());
    crate::trace::mark("output");
    crate::trace::report();
    out.exit_code
}

fn emit(stdout: &str, error: Option<&CniError>) {
    if let Some(e) = error {
        let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
        let id = std::env::var("CNI_CONTAINERID").unwrap_or_default();
        eprintln!("tabby cni {cmd} {id}: {e}");
    }
    let mut out = std::io::stdout().lock();
    // If stdout is gone the runtime is gone too; nothing left to tell.
    let _ = out.write_all(stdout.as_bytes());
    let _ = out.flush();
}
