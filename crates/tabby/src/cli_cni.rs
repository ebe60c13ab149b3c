//! `tabby cni serve`: runs the node-local CNI service ([`tabby_cni::service`])
//! on a Unix socket, in the calling process's network namespace, until
//! killed. The plugin (`/opt/cni/bin/tabby`) forwards its invocations there
//! and does the work itself when nothing answers. The node agent will run
//! the same service; this command is for nodes (and benchmarks) without it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

/// `tabby cni ...`
#[derive(Debug, Args)]
pub struct CniArgs {
    #[command(subcommand)]
    command: CniCommand,
}

#[derive(Debug, Subcommand)]
enum CniCommand {
    /// Serves the CNI plugin's requests on a Unix socket, keeping the
    /// datastore open between them.
    Serve {
        /// The socket (the plugin looks at `TABBY_CNI_SOCKET`, else this
        /// default).
        #[arg(long, default_value = tabby_cni::service::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Requests served at once.
        #[arg(long, default_value_t = 16)]
        workers: usize,
    },
}

/// Runs a `tabby cni` command.
pub fn run(args: CniArgs) -> anyhow::Result<()> {
    match args.command {
        CniCommand::Serve { socket, workers } => {
            let service = tabby_cni::service::Service::bind(&socket)
                .with_context(|| format!("bind {}", socket.display()))?;
            eprintln!("tabby cni: serving on {}", service.path().display());
            service
                .serve(workers)
                .with_context(|| format!("serve on {}", socket.display()))
        }
    }
}
