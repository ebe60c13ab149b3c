//! `tabby doctor`: argument parsing and output for `tabby-doctor`. Exit
//! status 0 when healthy, 1 when problems were found, 2 when some part
//! could not be checked (the output says which).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tabby_agent::daemon::DEFAULT_CONTROL_SOCKET;
use tabby_doctor::route::RouteTarget;
use tabby_doctor::{GatherOptions, diagnose, explain_route, gather, render};

/// `tabby doctor` options.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// This node's name, as the agent's `--nodename` (default: the host name).
    #[arg(long, env = "NODENAME")]
    nodename: Option<String>,
    /// The agent's control socket.
    #[arg(long, env = "TABBY_AGENT_SOCKET", default_value = DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    /// Explain this node's route to one pod address or block
    /// (`10.244.1.5`, `10.244.1.0/26`) instead of checking the whole node.
    #[arg(long, value_name = "IP|CIDR")]
    route: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    output: Format,
    /// Time limit for each source (datastore, agent), in seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn hostname() -> Result<String, String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("reading the host name: {e} (set --nodename or NODENAME)"))
}

/// Runs `tabby doctor`; returns the exit status.
pub fn run(datastore: &str, args: DoctorArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("tabby doctor: {msg}");
        ExitCode::from(2)
    };
    let target = match args.route.as_deref().map(str::parse::<RouteTarget>) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return fail(e.to_string()),
    };
    let node = match args.nodename {
        Some(n) if !n.is_empty() => n,
        _ => match hostname() {
            Ok(n) => n,
            Err(e) => return fail(e),
        },
    };
    let snapshot = gather(&GatherOptions {
        node,
        datastore: datastore.to_owned(),
        control_socket: args.socket,
        timeout: Duration::from_secs(args.timeout.max(1)),
    });
    let (text, json, status) = match target {
        Some(t) => {
            let r = explain_route(&snapshot, &t);
            (
                render::route(&r),
                serde_json::to_string_pretty(&r),
                r.status,
            )
        }
        None => {
            let r = diagnose(&snapshot);
            (
                render::report(&r),
                serde_json::to_string_pretty(&r),
                r.status,
            )
        }
    };
    match args.output {
        Format::Text => print!("{text}"),
        Format::Json => match json {
            Ok(j) => println!("{j}"),
            Err(e) => return fail(format!("JSON output: {e}")),
        },
    }
    ExitCode::from(status.exit_code())
}
