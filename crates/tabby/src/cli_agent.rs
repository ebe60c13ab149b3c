//! `tabby agent`: argument parsing for the node daemon (`tabby-agent`).
//! Flags follow calico-node's environment variables (`NODENAME`, `IP`,
//! `IP6`, `AS`, `IP_AUTODETECTION_METHOD`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tabby_agent::daemon::{
    AddressSetting, AgentOptions, DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR,
};
use tabby_agent::registration::AutodetectMethod;
use tabby_model::{AsNumber, InterfaceAddress};

/// `tabby agent` options.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name (default: the host name).
    #[arg(long, env = "NODENAME")]
    nodename: Option<String>,
    /// IPv4 BGP address with its subnet (`10.0.0.1/24`), `autodetect`
    /// (default), or `none` (keep what the Node resource has).
    #[arg(long, env = "IP", default_value = "autodetect")]
    ip: String,
    /// IPv6 BGP address (`fd00::1/64`), `autodetect`, or `none` (default).
    #[arg(long, env = "IP6", default_value = "none")]
    ip6: String,
    /// How to autodetect: `default-route`, `first-found`,
    /// `interface=NAME[,NAME]` (`eth*` matches a prefix) or `cidr=CIDR[,CIDR]`.
    #[arg(long, env = "IP_AUTODETECTION_METHOD", default_value = "default-route")]
    ip_autodetection_method: String,
    /// This node's AS number (`spec.bgp.asNumber`; plain or asdot).
    #[arg(long = "as", env = "AS")]
    as_number: Option<String>,
    /// Control socket (`tabby node status` reads it).
    #[arg(long, env = "TABBY_AGENT_SOCKET", default_value = DEFAULT_CONTROL_SOCKET)]
    control_socket: PathBuf,
    /// Directory for the generated speaker configuration (`bgpd.json`).
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Directory of BGP password secrets: a BGPPeer's
    /// `password.secretKeyRef {name, key}` is read from `<dir>/<name>/<key>`.
    #[arg(long, env = "TABBY_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    /// How often the datastore revision is checked, in milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Do not manage the NAT table for `natOutgoing` pools.
    #[arg(long)]
    no_nat: bool,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (off by default),
    /// e.g. `127.0.0.1:9091`.
    #[arg(long, env = "TABBY_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Do not advertise graceful restart (RFC 4724): sessions then get a
    /// Cease when the agent stops and peers withdraw this node's routes
    /// until it is back. On by default, like Calico's BIRD.
    #[arg(long, env = "TABBY_NO_GRACEFUL_RESTART")]
    no_graceful_restart: bool,
    /// Serve the CNI plugin's requests on this Unix socket (the node-local
    /// service of `tabby cni serve`), or `off`. The plugin looks at
    /// `TABBY_CNI_SOCKET`, else this default.
    #[arg(long, env = "TABBY_CNI_SOCKET", default_value = tabby_cni::service::DEFAULT_SOCKET)]
    cni_socket: String,
    /// Where the detected pod MTU is written (Calico's file: the CNI
    /// plugins, tabby's and Calico's, read it when their configuration's
    /// `mtu` is absent or 0).
    #[arg(long, env = "TABBY_MTU_FILE", default_value = tabby_agent::mtu::DEFAULT_MTU_FILE)]
    mtu_file: PathBuf,
    /// The interfaces whose smallest MTU is the host MTU (a regular
    /// expression; FelixConfiguration `mtuIfacePattern` and its default).
    #[arg(
        long,
        env = "FELIX_MTUIFACEPATTERN",
        default_value = tabby_agent::mtu::DEFAULT_IFACE_PATTERN
    )]
    mtu_iface_pattern: String,
}

/// Requests the agent's CNI service runs at once (as `tabby cni serve`).
const CNI_WORKERS: usize = 16;

/// Starts the node-local CNI service on a thread of its own. Another live
/// service on the same path (several agents on one host) or any other bind
/// failure is a warning: the plugin then does the work itself.
fn start_cni_service(socket: &str) {
    if socket.is_empty() || socket == "off" {
        return;
    }
    let path = PathBuf::from(socket);
    let service = match tabby_cni::service::Service::bind(&path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "CNI service not started on {socket}: {e}; the plugin does the work itself"
            );
            return;
        }
    };
    tracing::info!("CNI service on {socket}");
    let spawned = std::thread::Builder::new()
        .name("cni-service".into())
        .spawn(move || {
            if let Err(e) = service.serve(CNI_WORKERS) {
                tracing::warn!(
                    "CNI service on {} stopped: {e}; the plugin does the work itself",
                    service.path().display()
                );
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("CNI service thread: {e}; the plugin does the work itself");
    }
}

fn address(flag: &str, value: &str, v6: bool) -> anyhow::Result<AddressSetting> {
    match value {
        "autodetect" => Ok(AddressSetting::Autodetect),
        "none" | "" => Ok(AddressSetting::Keep),
        v => {
            let a: InterfaceAddress = v
                .parse()
                .map_err(|e| anyhow::anyhow!("--{flag} {v}: {e}"))?;
            if a.addr.is_ipv6() != v6 {
                bail!(
                    "--{flag} {v}: not an {} address",
                    if v6 { "IPv6" } else { "IPv4" }
                );
            }
            Ok(AddressSetting::Fixed(a))
        }
    }
}

fn hostname() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name (set --nodename or NODENAME)")?;
    Ok(name.trim().to_owned())
}

/// Runs `tabby agent`.
pub fn run(datastore: &str, args: AgentArgs) -> anyhow::Result<()> {
    let node = match args.nodename {
        Some(n) if !n.is_empty() => n,
        _ => hostname()?,
    };
    let autodetect: AutodetectMethod = args
        .ip_autodetection_method
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--ip-autodetection-method: {e}"))?;
    let as_number = match &args.as_number {
        Some(a) => Some(
            a.parse::<AsNumber>()
                .map_err(|e| anyhow::anyhow!("--as {a}: {e}"))?,
        ),
        None => None,
    };
    let options = AgentOptions {
        datastore: datastore.to_owned(),
        node,
        ipv4: address("ip", &args.ip, false)?,
        ipv6: address("ip6", &args.ip6, true)?,
        autodetect,
        as_number,
        control_socket: args.control_socket,
        state_dir: args.state_dir,
        secrets_dir: args.secrets_dir,
        poll_interval: Duration::from_millis(args.poll_ms.max(50)),
        nat: !args.no_nat,
        metrics_listen: args.metrics_listen,
        graceful_restart: !args.no_graceful_restart,
        mtu_file: args.mtu_file,
        mtu_iface_pattern: args
            .mtu_iface_pattern
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--mtu-iface-pattern: {e}"))?,
    };
    start_cni_service(&args.cni_socket);
    tabby_agent::daemon::run(options).context("tabby agent")
}
