//! CNI mode: a container runtime runs this binary as a CNI plugin (with
//! `CNI_COMMAND` set and no arguments), or as the IPAM plugin under the name
//! `tabby-ipam`. Detected before clap sees the command line.

use std::process::ExitCode;

use tabby_cni::Role;

/// Runs the plugin and returns its exit status if this process is a CNI
/// invocation; `None` for an ordinary command line.
pub fn detect_and_run() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let role = Role::from_argv0(&argv0.to_string_lossy());
    let no_arguments = args.next().is_none();
    let cni_env = std::env::var_os("CNI_COMMAND").is_some();
    if role == Role::Ipam || (no_arguments && cni_env) {
        Some(ExitCode::from(tabby_cni::run_process(role)))
    } else {
        None
    }
}
