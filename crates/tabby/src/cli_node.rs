//! `tabby node status`: the local agent's BGP sessions, calicoctl style,
//! read over the agent's control socket, then the node's tunnels, pod MTU
//! and plan warnings from the report the agent keeps in its state
//! directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use tabby_agent::daemon::{DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR};
use tabby_agent::status::{
    NODE_REPORT_FILE, NodeReport, render_node_report, render_table, session_rows,
};
use tabby_speaker::control::{Request, Response, request};

/// `tabby node ...`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// The agent's BGP sessions: peer, type, state, since, info.
    Status {
        /// The agent's control socket.
        #[arg(long, env = "TABBY_AGENT_SOCKET", default_value = DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
        /// The agent's state directory (`tabby agent --state-dir`), where
        /// it keeps the node report (tunnels, pod MTU, warnings).
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Output format. JSON is the sessions; the node report is JSON
        /// already, in `<state dir>/status.json`.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Runs `tabby node ...`.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    match args.command {
        NodeCommand::Status {
            socket,
            state_dir,
            output,
        } => {
            let answer = request(&socket, &Request::Neighbors, Duration::from_secs(5))
                .with_context(|| {
                    format!(
                        "asking the agent at {} (is `tabby agent` running?)",
                        socket.display()
                    )
                })?;
            let neighbors = match answer {
                Response::Neighbors(n) => n,
                Response::Error(e) => bail!("agent: {e}"),
                other => bail!("unexpected answer from the agent: {other:?}"),
            };
            let rows = session_rows(&neighbors);
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Table => {
                    println!("tabby process is running.\n\nIPv4/IPv6 BGP status");
                    print!("{}", render_table(&rows));
                    let path = state_dir.join(NODE_REPORT_FILE);
                    match std::fs::read(&path) {
                        Ok(bytes) => {
                            let report: NodeReport = serde_json::from_slice(&bytes)
                                .with_context(|| format!("reading {}", path.display()))?;
                            print!("\n{}", render_node_report(&report));
                        }
                        Err(e) => println!(
                            "\nNode: no report at {} ({e}; is --state-dir the agent's?)",
                            path.display()
                        ),
                    }
                }
            }
            Ok(())
        }
    }
}
