//! The process boundary of plugin mode: reads stdin and the environment,
//! forwards the invocation to the node's CNI service if one answers
//! ([`crate::service`]) or else runs the dispatcher with the node backend
//! itself, writes stdout, logs the error (if any) on stderr, and returns
//! the exit status.

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
    let is_version = std::env::var("CNI_COMMAND").is_ok_and(|c| c == "VERSION");
    if !is_version {
        if let Some(socket) = crate::service::client_socket() {
            if let Some(reply) = crate::service::forward(&socket, role, &stdin) {
                if let Some(line) = &reply.error {
                    eprintln!("{line}");
                }
                emit(&reply.stdout, None);
                crate::trace::mark("forwarded");
                crate::trace::report();
                return reply.exit_code;
            }
        }
    }
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
