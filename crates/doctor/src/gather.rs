//! The I/O layer: reads a [`Snapshot`] from a live node. Each source is
//! read on its own, with a time limit, and a failure becomes that part's
//! [`Unavailable`] (with what to check) instead of stopping the others:
//!
//! - the datastore (resources, IPAM blocks and affinities, `ipam check`);
//! - the agent's control socket (`neighbors`, `routes`);
//! - the kernel's main routing table over netlink, with interface names;
//! - `/proc/sys/net` (forwarding, rp_filter) of the caller's namespace.
//!
//! Nothing is written anywhere; a SQLite datastore that does not exist is
//! reported, not created.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tabby_dataplane::{Netlink, RouteKind, RouteTable};
use tabby_datastore::Datastore;
use tabby_ipam::Ipam;
use tabby_model::store::ResourceStore;
use tabby_speaker::control::{Request, Response, request};

use crate::finding::Unavailable;
use crate::snapshot::{
    AgentState, ClusterState, KernelLink, KernelNextHop, KernelRoute, KernelRouteKind, KernelState,
    NatTable, Snapshot, Sysctls,
};

/// Where and how to gather.
#[derive(Debug, Clone)]
pub struct GatherOptions {
    /// This node's name.
    pub node: String,
    /// Datastore URL (`sqlite:///...`, `etcd://...`).
    pub datastore: String,
    /// The agent's control socket.
    pub control_socket: PathBuf,
    /// Time limit of each source.
    pub timeout: Duration,
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatherError {
    /// The datastore failed.
    #[error("{0}")]
    Datastore(#[from] tabby_datastore::DatastoreError),
    /// Resources could not be read.
    #[error("{0}")]
    Store(#[from] tabby_model::StoreError),
    /// The time limit passed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The async runtime could not start.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    /// A SQLite datastore file that does not exist.
    #[error("no database file at {0}")]
    NoDatabase(PathBuf),
    /// The agent's control socket failed.
    #[error("{0}")]
    Agent(#[from] tabby_speaker::control::ClientError),
    /// The datastore's contents could not be read.
    #[error("{0}")]
    Read(#[from] tabby_agent::AgentError),
    /// The agent answered something unexpected.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// A netlink operation failed.
    #[error("{0}")]
    Kernel(#[from] tabby_dataplane::Error),
    /// A /proc/sys file could not be read.
    #[error("{path}: {source}")]
    Sysctl {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Reads everything; never fails as a whole.
pub fn gather(o: &GatherOptions) -> Snapshot {
    Snapshot {
        node: o.node.clone(),
        cluster: cluster(o).map_err(|e| Unavailable {
            part: "datastore".into(),
            source: o.datastore.clone(),
            hint: match e {
                GatherError::NoDatabase(_) => {
                    "give the agent's datastore: --datastore URL or TABBY_DATASTORE".into()
                }
                _ => "check that the datastore is up and reachable from this node, and that --datastore (TABBY_DATASTORE) is the agent's".into(),
            },
            reason: e.to_string(),
        }),
        agent: agent(o).map_err(|e| Unavailable {
            part: "agent".into(),
            source: o.control_socket.display().to_string(),
            reason: match e {
                GatherError::Agent(tabby_speaker::control::ClientError::Connect {
                    source, ..
                }) => format!("cannot connect: {source}"),
                e => e.to_string(),
            },
            hint: "is `tabby agent` running on this node? its socket is --control-socket (TABBY_AGENT_SOCKET)".into(),
        }),
        kernel: kernel().map_err(|e| Unavailable {
            part: "kernel".into(),
            source: "netlink".into(),
            reason: e.to_string(),
            hint: "run doctor on the node (in its network namespace)".into(),
        }),
        sysctls: sysctls().map_err(|e| Unavailable {
            part: "sysctls".into(),
            source: "/proc/sys/net".into(),
            reason: e.to_string(),
            hint: "run doctor on the node with /proc mounted".into(),
        }),
    }
}

fn cluster(o: &GatherOptions) -> Result<ClusterState, GatherError> {
    if let Some(path) = o.datastore.strip_prefix("sqlite://") {
        let path = Path::new(path);
        if !path.exists() {
            return Err(GatherError::NoDatabase(path.to_owned()));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(GatherError::Runtime)?;
    rt.block_on(async {
        tokio::time::timeout(o.timeout, read_cluster(&o.datastore))
            .await
            .map_err(|_| GatherError::Timeout(o.timeout))?
    })
}

async fn read_cluster(url: &str) -> Result<ClusterState, GatherError> {
    let ds = Datastore::connect(url).await?;
    let store = ResourceStore::new(ds.clone());
    // The agent's own reading of the same records: every node's
    // affinities, since doctor looks at other nodes' blocks too.
    let state = tabby_agent::daemon::read_state(&store, &ds, None).await?;
    let ipam = async {
        let env = tabby_ipam::resources::load_environment(&ds).await?;
        let in_use = tabby_ipam::resources::workload_addresses(&ds).await?;
        Ipam::new(ds.clone()).check(&env, Some(&in_use)).await
    }
    .await
    .map_err(|e| e.to_string());
    Ok(ClusterState {
        resources: state.bgp,
        pools: state.pools,
        blocks: state.blocks,
        affinities: state.affinities,
        ipam: Some(ipam),
    })
}

fn agent(o: &GatherOptions) -> Result<AgentState, GatherError> {
    let neighbors = match request(&o.control_socket, &Request::Neighbors, o.timeout)? {
        Response::Neighbors(n) => n,
        other => return Err(GatherError::Unexpected(format!("{other:?}"))),
    };
    let routes = match request(
        &o.control_socket,
        &Request::Routes { prefix: None },
        o.timeout,
    )? {
        Response::Routes(r) => r,
        other => return Err(GatherError::Unexpected(format!("{other:?}"))),
    };
    let summary = match request(&o.control_socket, &Request::Summary, o.timeout) {
        Ok(Response::Summary(s)) => Some(s),
        _ => None,
    };
    Ok(AgentState {
        neighbors,
        routes,
        summary,
    })
}

fn kernel() -> Result<KernelState, GatherError> {
    let mut nl = Netlink::open()?;
    let all = nl.links()?;
    let names: HashMap<u32, String> = all.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut links = Vec::new();
    for l in all {
        links.push(KernelLink {
            addresses: nl.addresses(l.index)?,
            name: l.name,
            kind: l.kind,
            mtu: l.mtu,
            up: l.up,
            running: l.running,
        });
    }
    let routes = nl
        .list_routes(Some(RouteTable::MAIN))?
        .into_iter()
        .map(|r| KernelRoute {
            destination: r.route.destination,
            protocol: r.protocol,
            kind: match r.route.kind {
                RouteKind::Unicast => KernelRouteKind::Unicast,
                RouteKind::Blackhole => KernelRouteKind::Blackhole,
                RouteKind::Unreachable | RouteKind::Prohibit => KernelRouteKind::Reject,
                _ => KernelRouteKind::Other,
            },
            next_hops: r
                .route
                .next_hops
                .iter()
                .map(|h| KernelNextHop {
                    gateway: h.gateway,
                    device: h.device.and_then(|d| names.get(&d).cloned()),
                })
                .collect(),
        })
        .collect();
    Ok(KernelState {
        routes,
        links,
        nat: nat_table(),
    })
}

/// tabby's NAT table, from `nft`; `None` when nft cannot be run.
fn nat_table() -> Option<NatTable> {
    let out = std::process::Command::new("nft")
        .args(["list", "table"])
        .args(tabby_dataplane::nat::NAT_TABLE.split(' '))
        .output()
        .ok()?;
    if out.status.success() {
        return Some(NatTable::parse(&String::from_utf8_lossy(&out.stdout)));
    }
    String::from_utf8_lossy(&out.stderr)
        .contains("No such file or directory")
        .then(NatTable::default)
}

fn read_sys(path: &Path) -> Result<String, GatherError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| GatherError::Sysctl {
            path: path.to_owned(),
            source,
        })
}

fn sysctls() -> Result<Sysctls, GatherError> {
    let flag = |p: &str| -> Result<Option<bool>, GatherError> {
        let path = Path::new(p);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(read_sys(path)? != "0"))
    };
    let ipv4_forward = flag("/proc/sys/net/ipv4/ip_forward")?;
    let ipv6_forward = flag("/proc/sys/net/ipv6/conf/all/forwarding")?;
    let mut rp_filter = BTreeMap::new();
    let conf = Path::new("/proc/sys/net/ipv4/conf");
    let entries = std::fs::read_dir(conf).map_err(|source| GatherError::Sysctl {
        path: conf.to_owned(),
        source,
    })?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(v) = read_sys(&e.path().join("rp_filter"))
            && let Ok(n) = v.parse::<u8>()
        {
            rp_filter.insert(name, n);
        }
    }
    Ok(Sysctls {
        ipv4_forward,
        ipv6_forward,
        rp_filter,
    })
}
