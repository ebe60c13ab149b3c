//! The `tabby` binary: one executable for every role (node agent, CNI and
//! IPAM plugin, standalone BGP daemon, resource CLI, lab, doctor).
//!
//! This crate holds only argument parsing and dispatch; each subcommand's
//! logic lives in the library crate that owns it. Each command family has a
//! module of its own here (`cli_*.rs`) so that adding one touches this file
//! in two places only: the `Command` enum and `main`'s dispatch.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli_agent;
mod cli_bgp;
mod cli_cni;
mod cli_dataplane;
mod cli_doctor;
mod cli_ipam;
mod cli_lab;
mod cli_node;
mod cli_resources;
mod cni_mode;

/// BGP-routed, no-overlay pod networking for Kubernetes and K3s.
#[derive(Debug, Parser)]
#[command(name = "tabby", version, about, propagate_version = true)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `tabby_bgp=debug`.
    #[arg(long, global = true, env = "TABBY_LOG", default_value = "warn")]
    log: String,

    /// The datastore: `sqlite:///path/to/tabby.db` or
    /// `etcd://host:2379[,host2:2379]`.
    #[arg(
        long,
        global = true,
        env = "TABBY_DATASTORE",
        default_value = tabby_datastore::DEFAULT_URL
    )]
    datastore: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints the version and the features this build supports.
    Version,
    /// Kernel routes and links tabby owns: list, change, reconcile.
    Dataplane(cli_dataplane::DataplaneArgs),
    /// Runs the standalone BGP daemon (router, route reflector, ToR speaker).
    Bgpd(cli_bgp::BgpdArgs),
    /// Asks a running `tabby bgpd` about neighbours and routes.
    Bgp(cli_bgp::BgpArgs),
    /// IP address management: show usage, check for leaks, release, configure.
    Ipam(cli_ipam::IpamArgs),
    /// The CNI plugin's node-local service: `tabby cni serve`.
    Cni(cli_cni::CniArgs),
    /// Runs the node agent: registers the node, BGP sessions from resources, kernel routes.
    Agent(cli_agent::AgentArgs),
    /// The local agent's state: `tabby node status`.
    Node(cli_node::NodeArgs),
    /// Explains what is wrong on this node and what to change; `--route`
    /// explains one route. Exit 0 healthy, 1 problems, 2 could not check.
    Doctor(cli_doctor::DoctorArgs),
    /// Lab topologies on this machine: up, verify, status, down.
    Lab(cli_lab::LabArgs),
    /// Resources, calicoctl style: apply, create, replace, delete, get, patch, label.
    #[command(flatten)]
    Resources(cli_resources::ResourceCommand),
}

fn main() -> ExitCode {
    if let Some(status) = cni_mode::detect_and_run() {
        return status;
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result: anyhow::Result<()> = match cli.command {
        Command::Dataplane(args) => cli_dataplane::run(args),
        Command::Version => {
            println!("tabby {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Bgpd(args) => cli_bgp::bgpd(args),
        Command::Bgp(args) => cli_bgp::bgp(args),
        Command::Ipam(args) => cli_ipam::run(&cli.datastore, args),
        Command::Cni(args) => cli_cni::run(args),
        Command::Agent(args) => cli_agent::run(&cli.datastore, args),
        Command::Node(args) => cli_node::run(args),
        Command::Lab(args) => cli_lab::run(args),
        Command::Doctor(args) => return cli_doctor::run(&cli.datastore, args),
        Command::Resources(cmd) => cli_resources::run(cmd, &cli.datastore),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tabby: {e:#}");
            ExitCode::FAILURE
        }
    }
}
