//! `tabby lab up/verify/status/down`: a topology built on this machine from
//! network namespaces (the logic is in `tabby-lab`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

/// `tabby lab ...`.
#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Builds the topology: namespaces, links, routers, agents, pods.
    Up {
        /// The topology file (e.g. examples/leaf-spine/topology.yaml).
        file: PathBuf,
        /// Lab id instead of the topology's `name` (prefixes its namespaces).
        #[arg(long)]
        name: Option<String>,
    },
    /// Runs the topology's checks; exits non-zero when one fails.
    Verify {
        /// Lab id or topology file.
        lab: String,
        /// Seconds the lab may take to converge before a check fails.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Shows the lab's processes, pods and namespaces (every lab without LAB).
    Status {
        /// Lab id or topology file.
        lab: Option<String>,
    },
    /// Restarts a node's agent and waits for its sessions; with --ping,
    /// counts the echoes answered across the restart.
    RestartAgent {
        /// Lab id or topology file.
        lab: String,
        /// The node.
        node: String,
        /// Ping from this host or `node/pod` across the restart ...
        #[arg(long, requires = "ping_to")]
        ping_from: Option<String>,
        /// ... to this one.
        #[arg(long, requires = "ping_from")]
        ping_to: Option<String>,
        /// Start the new agent with graceful restart on or off (default:
        /// as it was).
        #[arg(long, value_parser = ["on", "off"])]
        graceful_restart: Option<String>,
        /// Measure both: restart with graceful restart off, then on
        /// (each preceded by an unmeasured restart that switches the
        /// mode), and print both losses.
        #[arg(long, conflicts_with = "graceful_restart", requires = "ping_from")]
        compare_graceful_restart: bool,
    },
    /// Stops the lab's processes by PID and deletes its namespaces.
    Down {
        /// Lab id or topology file.
        lab: String,
    },
}

/// A lab id given as itself or as the topology file that names it.
fn lab_name(lab: &str) -> Result<String> {
    let path = Path::new(lab);
    if path.is_file() {
        return Ok(tabby_lab::load_topology(path)?.name);
    }
    Ok(lab.to_owned())
}

/// Runs a lab command.
pub fn run(args: LabArgs) -> Result<()> {
    let mut out = std::io::stdout();
    match args.command {
        LabCommand::Up { file, name } => {
            let tabby = std::env::current_exe().context("the tabby binary's path")?;
            let state = tabby_lab::up(&file, name.as_deref(), &tabby, &mut out)?;
            println!(
                "lab {} is up: {} namespaces, {} processes, {} pods; next: tabby lab verify {}",
                state.name,
                state.namespaces.len(),
                state.processes.len(),
                state.pods.len(),
                state.name
            );
        }
        LabCommand::Verify { lab, timeout } => {
            let name = lab_name(&lab)?;
            let results = tabby_lab::verify(&name, Duration::from_secs(timeout))?;
            let failed = results.iter().filter(|r| !r.passed).count();
            for r in &results {
                println!(
                    "{} {}\n     {}",
                    if r.passed { "PASS" } else { "FAIL" },
                    r.check,
                    r.evidence
                );
            }
            println!(
                "lab {name}: {} of {} checks passed",
                results.len() - failed,
                results.len()
            );
            if failed > 0 {
                bail!("{failed} check(s) failed");
            }
        }
        LabCommand::Status { lab } => match lab {
            Some(lab) => print!("{}", tabby_lab::status(&lab_name(&lab)?)?),
            None => {
                let labs = tabby_lab::list();
                if labs.is_empty() {
                    println!("no lab is up");
                }
                for l in labs {
                    print!("{}", tabby_lab::status(&l)?);
                }
            }
        },
        LabCommand::RestartAgent {
            lab,
            node,
            ping_from,
            ping_to,
            graceful_restart,
            compare_graceful_restart,
        } => {
            let ping = ping_from.as_deref().zip(ping_to.as_deref());
            let name = lab_name(&lab)?;
            // (graceful restart of the new agent, measured, label)
            let runs: Vec<(Option<bool>, bool, &str)> = if compare_graceful_restart {
                vec![
                    (Some(false), false, ""),
                    (Some(false), true, "graceful restart off: "),
                    (Some(true), false, ""),
                    (Some(true), true, "graceful restart on: "),
                ]
            } else {
                vec![(graceful_restart.as_deref().map(|g| g == "on"), true, "")]
            };
            let mut lines = Vec::new();
            for (graceful, measured, label) in runs {
                let r = tabby_lab::restart_agent(
                    &name,
                    &node,
                    ping.filter(|_| measured),
                    graceful,
                    &mut out,
                )?;
                if !measured {
                    continue;
                }
                lines.push(format!(
                    "{label}{node}: agent restarted (pid {} -> {}), {} session(s) Established again {:.1}s after SIGTERM",
                    r.old_pid,
                    r.new_pid,
                    r.sessions,
                    r.recovery.as_secs_f64()
                ));
                if let (Some((sent, answered)), Some((from, to))) = (r.ping, ping) {
                    lines.push(format!(
                        "{label}ping {from} -> {to} every 200 ms across the restart: {sent} sent, {answered} answered, {} lost",
                        sent.saturating_sub(answered)
                    ));
                }
            }
            for l in lines {
                println!("{l}");
            }
        }
        LabCommand::Down { lab } => {
            tabby_lab::down(&lab_name(&lab)?, &mut out)?;
        }
    }
    Ok(())
}
