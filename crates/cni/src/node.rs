//! The node backend: what ADD, DEL, CHECK, STATUS and GC do on this node.
//!
//! ADD, step by step (the plugin role):
//! 1. open the pod's namespace (`CNI_NETNS`; missing: error 3);
//! 2. if the IPAM handle `<network>.<containerID>` already holds addresses
//!    (a repeated ADD), reuse them, else ask IPAM for new ones (block
//!    affinity for this node);
//! 3. write the pod's WorkloadEndpoint (`tabby-model`'s resource; the pod
//!    end's MAC is derived from the container, so it is known already);
//! 4. meanwhile, on a thread of its own: create the veth with its pod end in
//!    the pod's namespace, prepare the host end and set it up
//!    ([`crate::wiring::create_host_end`]);
//! 5. configure the pod side and the host routes
//!    ([`crate::wiring::configure`]);
//! 6. print the result.
//!
//! Rollback: if any step fails, the host veth is deleted (taking the pod
//! end and the host routes with it) and, if step 2 allocated, the handle is
//! released and this container's endpoint record deleted, so a failed ADD
//! leaves nothing allocated and no interface.
//!
//! DEL deletes the host veth (if any), releases the handle (if it holds
//! anything) and deletes the WorkloadEndpoint if it is this container's;
//! each of those may already be gone.
//!
//! Under the name `tabby-ipam` only steps 2 and 4 happen, and the result
//! carries the address with its pool's prefix and the 169.254.1.1 (fe80::1)
//! gateway, which is what point-to-point plugins such as the reference
//! `ptp` need to route the pool through the host.
//!
//! The datastore client is async. With the SQLite datastore every query
//! runs on the calling thread and never waits for anything else, so its
//! futures are driven by a minimal executor ([`Driver::Inline`]: poll, park
//! the thread if pending) and the plugin starts no runtime at all; only etcd
//! gets a current-thread tokio runtime.
//!
//! ADD runs two things at once, since neither needs the other's result:
//! IPAM and the WorkloadEndpoint write (this thread), and on one other
//! thread the host end of the veth (in the node's namespace: the pair, the
//! host end's sysctls, up) followed by the pod's netlink socket (the same
//! thread then enters the pod's namespace,
//! `tabby_dataplane::Netns::spawn_scoped_then`). The pod side is then
//! configured in one pipelined netlink burst.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use tabby_dataplane::{self as dp, Netlink};
use tabby_datastore::{Datastore, DatastoreError};
use tabby_model::{Cidr, IpAddress, Object, Resource, WorkloadEndpoint, WorkloadEndpointSpec};

use crate::addresses::{self, AssignRequest, Assigned, datastore_error};
use crate::config::{
    self, ANNOTATION_IPV4_POOLS, ANNOTATION_IPV6_POOLS, Attachment, Family, NetConf, PoolRef,
};
use crate::env::PodIdentity;
use crate::error::{CniError, ErrorCode};
use crate::naming;
use crate::plugin::{AttachRequest, Backend, Role};
use crate::result::{CniResult, Interface, IpConfig};
use crate::wiring::{self, GATEWAY_V4, GATEWAY_V6, PodInterface};

/// Where WorkloadEndpoints live (`tabby-model`'s key layout):
/// `<prefix><namespace>/<name>`.
pub const ENDPOINT_PREFIX: &str = "/tabby/resources/v3/workloadendpoints/";

/// Annotation on a WorkloadEndpoint naming the CNI network it belongs to
/// (GC only touches endpoints of its own network).
pub const NETWORK_ANNOTATION: &str = "cni.tabby.dev/network";

/// What the plugin needs back from a stored WorkloadEndpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    /// Its datastore key.
    pub key: String,
    /// `CNI_CONTAINERID` of the ADD that wrote it.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The node.
    pub node: String,
    /// The CNI network (from [`NETWORK_ANNOTATION`]).
    pub network: Option<String>,
    /// The host end of the veth (absent when written by `tabby-ipam`).
    pub host_ifname: Option<String>,
}

fn escape_dashes(s: &str) -> String {
    s.replace('-', "--")
}

/// The namespace and name of the WorkloadEndpoint of an attachment, as
/// Calico names them: `<node>-k8s-<pod>-<ifname>` in the pod's namespace, or
/// `<node>-cni-<containerID>-<ifname>` in `default` outside Kubernetes
/// (dashes inside each part doubled).
pub fn endpoint_name(
    node: &str,
    pod: Option<&PodIdentity>,
    container_id: &str,
    ifname: &str,
) -> (String, String) {
    match pod {
        Some(p) => (
            p.namespace.clone(),
            format!(
                "{}-k8s-{}-{}",
                escape_dashes(node),
                escape_dashes(&p.name),
                escape_dashes(ifname)
            ),
        ),
        None => (
            "default".to_owned(),
            format!(
                "{}-cni-{}-{}",
                escape_dashes(node),
                escape_dashes(container_id),
                escape_dashes(ifname)
            ),
        ),
    }
}

/// The datastore key of the WorkloadEndpoint of an attachment.
pub fn endpoint_key(
    node: &str,
    pod: Option<&PodIdentity>,
    container_id: &str,
    ifname: &str,
) -> String {
    let (ns, name) = endpoint_name(node, pod, container_id, ifname);
    format!("{ENDPOINT_PREFIX}{ns}/{name}")
}

fn decode_endpoint(key: &str, bytes: &[u8]) -> Option<EndpointRecord> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let Ok(Resource::WorkloadEndpoint(w)) = Resource::from_value(v) else {
        return None;
    };
    Some(EndpointRecord {
        key: key.to_owned(),
        container_id: w.spec.container_id,
        ifname: w.spec.endpoint,
        node: w.spec.node,
        network: w.metadata.annotations.get(NETWORK_ANNOTATION).cloned(),
        host_ifname: Some(w.spec.interface_name).filter(|n| !n.is_empty()),
    })
}

/// What a WorkloadEndpoint is written from.
struct NewEndpoint<'a> {
    req: &'a AttachRequest,
    node: &'a str,
    host_ifname: Option<&'a str>,
    addresses: &'a [IpAddr],
    mac: Option<String>,
}

fn encode_endpoint(e: &NewEndpoint<'_>) -> Vec<u8> {
    let req = e.req;
    let (namespace, name) = endpoint_name(e.node, req.pod.as_ref(), &req.container_id, &req.ifname);
    let spec = WorkloadEndpointSpec {
        orchestrator: if req.pod.is_some() { "k8s" } else { "cni" }.to_owned(),
        workload: match &req.pod {
            Some(p) => format!("{}/{}", p.namespace, p.name),
            None => req.container_id.clone(),
        },
        node: e.node.to_owned(),
        container_id: req.container_id.clone(),
        pod: req.pod.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
        endpoint: req.ifname.clone(),
        ip_networks: e
            .addresses
            .iter()
            .map(|a| Cidr::from(IpNet::from(*a)))
            .collect(),
        ipv4_gateway: e
            .addresses
            .iter()
            .any(IpAddr::is_ipv4)
            .then_some(IpAddress(IpAddr::V4(GATEWAY_V4))),
        ipv6_gateway: e
            .addresses
            .iter()
            .any(IpAddr::is_ipv6)
            .then_some(IpAddress(IpAddr::V6(GATEWAY_V6))),
        profiles: req
            .pod
            .as_ref()
            .map(|p| vec![format!("kns.{}", p.namespace)])
            .unwrap_or_default(),
        interface_name: e.host_ifname.unwrap_or_default().to_owned(),
        mac: e.mac.clone().unwrap_or_default(),
        ..WorkloadEndpointSpec::default()
    };
    let mut wep: WorkloadEndpoint = Object::new(name, spec);
    wep.metadata.namespace = Some(namespace);
    wep.metadata
        .annotations
        .insert(NETWORK_ANNOTATION.to_owned(), req.conf.name.clone());
    if let Some(ns) = &req.netns {
        wep.metadata
            .annotations
            .insert("cni.tabby.dev/netns".to_owned(), ns.display().to_string());
    }
    serde_json::to_vec(&Resource::WorkloadEndpoint(wep).to_value()).unwrap_or_default()
}

/// The host side of a pod's veth as the pod side needs it: the host's
/// netlink socket and the host end it made (or why not), and a netlink
/// socket inside the pod's namespace if one could be opened (`configure`
/// opens one itself otherwise, and reports why if it cannot).
type HostSide = (HostEndResult, Option<Netlink>);

/// A netlink socket opened inside the pod's namespace.
type PodSocket = dp::Result<Netlink>;

/// The host's netlink socket and the host end made through it.
type HostEndResult = Result<(Netlink, wiring::HostEnd), CniError>;

/// Creates the host end of the veth, in the calling thread's namespace.
fn make_host_end(
    netns: &dp::Netns,
    names: &PodInterface<'_>,
    pod_mac: dp::MacAddr,
    families: wiring::Families,
) -> HostEndResult {
    crate::trace::mark("veth-thread");
    let mut nl = Netlink::open().map_err(|e| kernel_error("open netlink", &e))?;
    crate::trace::mark("host-socket");
    let end = wiring::create_host_end(&mut nl, netns, names, Some(pod_mac), families)
        .map_err(|e| CniError::new(ErrorCode::Internal, e.to_string()))?;
    Ok((nl, end))
}

/// [`make_host_end`] and the pod's netlink socket as a job for the
/// service's [`dp::NetnsWorker`] (which outlives the request, so the job
/// owns what it needs).
struct HostEndJob {
    netns: dp::Netns,
    host_ifname: String,
    pod_ifname: String,
    mtu: u32,
    queues: u32,
    pod_mac: dp::MacAddr,
    families: wiring::Families,
}

impl HostEndJob {
    fn run(self, visitor: &dp::Visitor) -> HostSide {
        let names = PodInterface {
            host_ifname: &self.host_ifname,
            pod_ifname: &self.pod_ifname,
            mtu: self.mtu,
            queues: self.queues,
            addresses: &[],
        };
        let host = make_host_end(&self.netns, &names, self.pod_mac, self.families);
        let pod = host
            .is_ok()
            .then(|| visitor.netlink_in(&self.netns).ok())
            .flatten();
        (host, pod)
    }
}

/// The host side being made, on the service's worker or on a thread of
/// the request's own.
enum PendingHostSide<'scope> {
    /// Queued on the service's warm worker.
    Worker(dp::WorkerTask<HostSide>),
    /// On a thread of the request's scope.
    Scoped(std::thread::ScopedJoinHandle<'scope, (HostEndResult, dp::Result<Option<PodSocket>>)>),
}

impl PendingHostSide<'_> {
    /// Waits for it.
    fn join(self) -> HostSide {
        let lost = |why: String| (Err(CniError::new(ErrorCode::Internal, why)), None);
        match self {
            PendingHostSide::Worker(task) => task.join().unwrap_or_else(|e| lost(e.to_string())),
            PendingHostSide::Scoped(handle) => match handle.join() {
                Ok((host, pod)) => (host, pod.ok().flatten().and_then(Result::ok)),
                Err(_) => lost("the thread creating the host veth panicked".to_owned()),
            },
        }
    }
}

/// What drives the datastore's futures.
#[derive(Debug)]
enum Driver {
    /// SQLite: every query completes on the calling thread, so the future
    /// is polled right here (parking the thread in the unexpected case
    /// that it is pending, until it is woken).
    Inline,
    /// etcd: a current-thread tokio runtime (its client needs the reactor).
    Tokio(tokio::runtime::Runtime),
    /// etcd in the CNI service: the service's runtime, whose reactor the
    /// cached clients' connections live on; the future runs on the calling
    /// thread.
    Shared(tokio::runtime::Handle),
}

/// Wakes a parked thread.
struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Which [`Driver`] a datastore URL needs.
enum RuntimeKind {
    Inline,
    Tokio,
}

fn runtime_kind(url: &str) -> RuntimeKind {
    if url.starts_with("sqlite://") {
        RuntimeKind::Inline
    } else {
        RuntimeKind::Tokio
    }
}

impl Driver {
    /// The driver for `url`: inline for SQLite; for etcd the runtime of
    /// `cache` if given (started with its first etcd store), else a
    /// runtime of its own.
    fn for_url(url: &str, cache: Option<&StoreCache>) -> Result<Driver, CniError> {
        if let RuntimeKind::Inline = runtime_kind(url) {
            return Ok(Driver::Inline);
        }
        if let Some(cache) = cache {
            return cache.runtime().map(Driver::Shared);
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(Driver::Tokio)
            .map_err(|e| CniError::new(ErrorCode::Io, format!("cannot start the runtime: {e}")))
    }

    fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        match self {
            Driver::Tokio(rt) => rt.block_on(fut),
            Driver::Shared(handle) => handle.block_on(fut),
            Driver::Inline => {
                let mut fut = std::pin::pin!(fut);
                let waker = std::task::Waker::from(std::sync::Arc::new(ThreadWaker(
                    std::thread::current(),
                )));
                let mut cx = std::task::Context::from_waker(&waker);
                loop {
                    if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                        return v;
                    }
                    std::thread::park();
                }
            }
        }
    }
}

/// Datastores kept open between requests by a long-running process (the
/// CNI service), by URL; clones share them. A SQLite store opened once
/// skips the open, the schema read and the WAL-index rebuild on every later
/// request; an etcd store keeps its client and its gRPC connection (a new
/// runtime and connection per request cost several milliseconds).
#[derive(Debug, Default, Clone)]
pub struct StoreCache(Arc<Mutex<CachedStores>>);

/// What a [`StoreCache`] holds.
#[derive(Debug, Default)]
struct CachedStores {
    /// The stores, by URL.
    stores: HashMap<String, Datastore>,
    /// The runtime the cached etcd clients run on (one worker thread, which
    /// drives their connections; each request's future runs on the
    /// request's own thread), started with the first.
    runtime: Option<tokio::runtime::Runtime>,
}

impl StoreCache {
    fn get(&self, url: &str) -> Option<Datastore> {
        self.0.lock().ok()?.stores.get(url).cloned()
    }

    fn insert(&self, url: &str, store: Datastore) {
        if let Ok(mut c) = self.0.lock() {
            c.stores.insert(url.to_owned(), store);
        }
    }

    /// The cache's runtime, started on first use.
    fn runtime(&self) -> Result<tokio::runtime::Handle, CniError> {
        let mut c = self
            .0
            .lock()
            .map_err(|_| CniError::new(ErrorCode::Internal, "the datastore cache is poisoned"))?;
        if let Some(rt) = &c.runtime {
            return Ok(rt.handle().clone());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tabby-cni-datastore")
            .enable_all()
            .build()
            .map_err(|e| CniError::new(ErrorCode::Io, format!("cannot start the runtime: {e}")))?;
        let handle = rt.handle().clone();
        c.runtime = Some(rt);
        Ok(handle)
    }
}

/// How often the CNI service checkpoints a SQLite store's WAL.
const SERVICE_CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The backend that does the real work on this node.
#[derive(Debug)]
pub struct NodeBackend {
    role: Role,
    url: String,
    node: String,
    runtime: Driver,
    store: Option<Datastore>,
    cache: Option<StoreCache>,
    /// The CNI service's warm thread for the host side of the veth.
    veth_worker: Option<Arc<dp::NetnsWorker>>,
}

impl NodeBackend {
    /// Prepares a backend for `conf` (the datastore is connected on first
    /// use, so that STATUS can report a failure to connect as code 50). The
    /// datastore is the configuration's, else `TABBY_DATASTORE`'s, else the
    /// default.
    pub fn open(conf: &NetConf, role: Role) -> Result<NodeBackend, CniError> {
        NodeBackend::prepare(
            conf,
            role,
            std::env::var(tabby_datastore::URL_ENV).ok(),
            None,
            None,
        )
    }

    /// Like [`NodeBackend::open`] for the CNI service: `env_datastore` is
    /// the caller's `TABBY_DATASTORE`, SQLite stores come from (and go
    /// into) `cache`, and the host side of a pod's veth is made on
    /// `veth_worker` when there is one.
    pub fn for_service(
        conf: &NetConf,
        role: Role,
        env_datastore: Option<String>,
        cache: &StoreCache,
        veth_worker: Option<Arc<dp::NetnsWorker>>,
    ) -> Result<NodeBackend, CniError> {
        NodeBackend::prepare(conf, role, env_datastore, Some(cache.clone()), veth_worker)
    }

    fn prepare(
        conf: &NetConf,
        role: Role,
        env_datastore: Option<String>,
        cache: Option<StoreCache>,
        veth_worker: Option<Arc<dp::NetnsWorker>>,
    ) -> Result<NodeBackend, CniError> {
        let url = conf
            .datastore
            .clone()
            .or_else(|| env_datastore.filter(|s| !s.is_empty()))
            .unwrap_or_else(|| tabby_datastore::DEFAULT_URL.to_owned());
        let node = match &conf.nodename {
            Some(n) => n.clone(),
            None => hostname()?,
        };
        crate::trace::mark("parse");
        let runtime = Driver::for_url(&url, cache.as_ref())?;
        Ok(NodeBackend {
            role,
            url,
            node,
            runtime,
            store: None,
            cache,
            veth_worker,
        })
    }

    fn store(&mut self) -> Result<Datastore, CniError> {
        if let Some(s) = &self.store {
            return Ok(s.clone());
        }
        if let Some(cache) = &self.cache {
            if let Some(s) = cache.get(&self.url) {
                self.store = Some(s.clone());
                return Ok(s);
            }
        }
        if let Some(path) = self.url.strip_prefix("sqlite://") {
            if let Some(dir) = Path::new(path).parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    CniError::new(ErrorCode::Io, format!("datastore {}: {e}", self.url))
                })?;
            }
        }
        let url = self.url.clone();
        let store = self
            .runtime
            .block_on(Datastore::connect_inline(&url))
            .map_err(|e| datastore_error(e, "connect"))?;
        self.store = Some(store.clone());
        if let Some(cache) = &self.cache {
            // The service keeps the store: its WAL checkpoints (a copy and
            // an fsync every few ADDs) go to a thread of their own instead
            // of landing on an ADD. If that thread cannot start, commits
            // keep checkpointing as they go.
            if let Err(e) = store.checkpoint_in_background(SERVICE_CHECKPOINT_EVERY) {
                eprintln!("tabby cni: datastore {}: {e}", self.url);
            }
            cache.insert(&self.url, store.clone());
        }
        crate::trace::mark("ds-open");
        Ok(store)
    }

    fn read_record(&mut self, key: &str) -> Result<Option<EndpointRecord>, CniError> {
        let store = self.store()?;
        let kv = self
            .runtime
            .block_on(store.get(key))
            .map_err(|e| datastore_error(e, key))?;
        Ok(kv.and_then(|kv| decode_endpoint(key, &kv.value)))
    }

    /// Steps 2: the addresses for this attachment, and whether this call
    /// allocated them.
    fn addresses_for(
        &mut self,
        req: &AttachRequest,
        handle: &str,
    ) -> Result<(Vec<Assigned>, bool), CniError> {
        let store = self.store()?;
        let held = self.runtime.block_on(addresses::assigned(&store, handle))?;
        crate::trace::mark("ipam-held");
        if !held.is_empty() {
            return Ok((held, false));
        }
        let (v4_pools, v6_pools) = pools_for(req)?;
        let mut attributes = vec![
            ("node".to_owned(), self.node.clone()),
            ("containerID".to_owned(), req.container_id.clone()),
        ];
        if let Some(pod) = &req.pod {
            attributes.push(("namespace".to_owned(), pod.namespace.clone()));
            attributes.push(("pod".to_owned(), pod.name.clone()));
        }
        let ask = AssignRequest {
            handle,
            node: &self.node,
            ipv4: req.conf.ipam.assign_ipv4,
            ipv6: req.conf.ipam.assign_ipv6,
            ipv4_pools: &v4_pools,
            ipv6_pools: &v6_pools,
            attributes,
        };
        let got = self.runtime.block_on(addresses::assign(&store, &ask))?;
        crate::trace::mark("ipam-assign");
        Ok((got, true))
    }

    fn release(&mut self, handle: &str) -> Result<usize, CniError> {
        let store = self.store()?;
        self.runtime.block_on(addresses::release(&store, handle))
    }

    fn write_record(&mut self, key: &str, value: Vec<u8>) -> Result<(), CniError> {
        let store = self.store()?;
        self.runtime
            .block_on(store.put(key, value))
            .map(|_| ())
            .map_err(|e| datastore_error(e, key))
    }

    fn delete_record(&mut self, key: &str) -> Result<(), CniError> {
        let store = self.store()?;
        match self.runtime.block_on(store.delete(key, None)) {
            Ok(_) | Err(DatastoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(datastore_error(e, key)),
        }
    }

    fn add_plugin(
        &mut self,
        req: &AttachRequest,
        netns: &dp::Netns,
    ) -> Result<CniResult, CniError> {
        let conf = &req.conf;
        let handle = naming::ipam_handle(&conf.name, &req.container_id);
        let key = endpoint_key(&self.node, req.pod.as_ref(), &req.container_id, &req.ifname);
        let host_ifname = naming::host_veth_name(&req.container_id, req.pod.as_ref());
        let names = PodInterface {
            host_ifname: &host_ifname,
            pod_ifname: &req.ifname,
            mtu: conf.mtu,
            queues: conf.num_queues,
            addresses: &[],
        };
        // The families this configuration asks for (a repeated ADD that
        // finds other ones held gets those prepared later).
        let families = wiring::Families {
            v4: conf.ipam.assign_ipv4,
            v6: conf.ipam.assign_ipv6,
        };
        // The pod end's MAC is chosen here, so the WorkloadEndpoint is
        // complete before the interface exists.
        let pod_mac = dp::MacAddr(naming::pod_mac(
            &req.container_id,
            req.pod.as_ref(),
            &req.ifname,
        ));
        // While IPAM works and the WorkloadEndpoint is written here, the
        // host end is created in this namespace, then a netlink socket is
        // opened in the pod's for the pod side: on the service's warm
        // worker if there is one, else on a thread of its own.
        let (ipam, written, (host_end, pod_socket)) = std::thread::scope(|s| {
            let owned = self.veth_worker.as_ref().and_then(|worker| {
                let job = HostEndJob {
                    netns: netns.try_clone().ok()?,
                    host_ifname: host_ifname.clone(),
                    pod_ifname: req.ifname.clone(),
                    mtu: conf.mtu,
                    queues: conf.num_queues,
                    pod_mac,
                    families,
                };
                worker.submit(move |visitor| job.run(visitor)).ok()
            });
            let pending = match owned {
                Some(task) => PendingHostSide::Worker(task),
                None => PendingHostSide::Scoped(netns.spawn_scoped_then(
                    s,
                    || make_host_end(netns, &names, pod_mac, families),
                    |host| host.is_ok().then(Netlink::open),
                )),
            };
            let ipam = self.addresses_for(req, &handle);
            let written = match &ipam {
                Ok((assigned, _)) => {
                    let ips: Vec<IpAddr> = assigned.iter().map(|a| a.address).collect();
                    let rec = encode_endpoint(&NewEndpoint {
                        req,
                        node: &self.node,
                        host_ifname: Some(&host_ifname),
                        addresses: &ips,
                        mac: Some(pod_mac.to_string()),
                    });
                    let w = self.write_record(&key, rec);
                    crate::trace::mark("write-wep");
                    w
                }
                Err(_) => Ok(()),
            };
            (ipam, written, pending.join())
        });
        crate::trace::mark("joined");
        // Undoes this call's datastore writes: the addresses and the
        // endpoint record if this call allocated them (a repeated ADD keeps
        // what the first one made; a record of another sandbox of the same
        // pod is not ours to delete).
        let container_id = req.container_id.as_str();
        let undo = |this: &mut Self, fresh: bool| {
            if fresh {
                let _ = this.release(&handle);
                if let Ok(Some(rec)) = this.read_record(&key) {
                    if rec.container_id == container_id {
                        let _ = this.delete_record(&key);
                    }
                }
            }
        };
        let ((assigned, fresh), (mut nl, end)) = match (ipam, written, host_end) {
            (Ok(a), Ok(()), Ok(h)) => (a, h),
            (Err(e), _, host) => {
                if let Ok((mut nl, _)) = host {
                    let _ = wiring::detach(&mut nl, &host_ifname);
                }
                return Err(e);
            }
            (Ok((_, fresh)), Err(e), host) => {
                if let Ok((mut nl, _)) = host {
                    let _ = wiring::detach(&mut nl, &host_ifname);
                }
                undo(self, fresh);
                return Err(e);
            }
            (Ok((_, fresh)), Ok(()), Err(e)) => {
                undo(self, fresh);
                return Err(e);
            }
        };
        let ips: Vec<IpAddr> = assigned.iter().map(|a| a.address).collect();
        let attached = wiring::configure(
            &mut nl,
            end,
            families,
            netns,
            pod_socket,
            &PodInterface {
                addresses: &ips,
                ..names
            },
        );
        let attached = match attached {
            Ok(a) => a,
            Err(e) => {
                let _ = nl.delete_link(end.index);
                undo(self, fresh);
                return Err(CniError::new(ErrorCode::Internal, e.to_string()));
            }
        };
        let sandbox = req.netns.as_ref().map(|p| p.display().to_string());
        Ok(CniResult {
            interfaces: vec![
                Interface {
                    name: host_ifname,
                    mac: Some(attached.host_mac.to_string()),
                    mtu: Some(conf.mtu),
                    sandbox: None,
                },
                Interface {
                    name: req.ifname.clone(),
                    mac: attached.pod_mac.map(|m| m.to_string()),
                    mtu: Some(conf.mtu),
                    sandbox,
                },
            ],
            ips: ips
                .iter()
                .map(|a| IpConfig {
                    address: IpNet::from(*a),
                    gateway: Some(gateway_for(*a)),
                    interface: Some(1),
                })
                .collect(),
            routes: Vec::new(),
            dns: conf.dns.clone().unwrap_or_default(),
        })
    }

    fn add_ipam(&mut self, req: &AttachRequest) -> Result<CniResult, CniError> {
        let conf = &req.conf;
        let handle = naming::ipam_handle(&conf.name, &req.container_id);
        let key = endpoint_key(&self.node, req.pod.as_ref(), &req.container_id, &req.ifname);
        let (assigned, fresh) = self.addresses_for(req, &handle)?;
        let ips: Vec<IpAddr> = assigned.iter().map(|a| a.address).collect();
        let rec = encode_endpoint(&NewEndpoint {
            req,
            node: &self.node,
            host_ifname: None,
            addresses: &ips,
            mac: None,
        });
        if let Err(e) = self.write_record(&key, rec) {
            if fresh {
                let _ = self.release(&handle);
            }
            return Err(e);
        }
        Ok(CniResult {
            ips: assigned
                .iter()
                .map(|a| IpConfig {
                    address: IpNet::new(a.address, a.pool.prefix_len())
                        .unwrap_or_else(|_| IpNet::from(a.address)),
                    gateway: Some(gateway_for(a.address)),
                    interface: None,
                })
                .collect(),
            dns: conf.dns.clone().unwrap_or_default(),
            ..CniResult::default()
        })
    }

    /// Detaches one attachment: the host veth (plugin role), the handle's
    /// addresses, and the endpoint record if it is this container's (a newer
    /// sandbox of the same pod keeps its record). Everything may already be
    /// gone.
    fn detach(
        &mut self,
        container_id: &str,
        rec: Option<&EndpointRecord>,
        handle: &str,
        host_ifname: Option<String>,
    ) -> Result<(), CniError> {
        if let Some(host_ifname) = host_ifname {
            let mut nl = Netlink::open().map_err(|e| kernel_error("open netlink", &e))?;
            wiring::detach(&mut nl, &host_ifname)
                .map_err(|e| CniError::new(ErrorCode::Internal, e.to_string()))?;
        }
        self.release(handle)?;
        if let Some(rec) = rec.filter(|r| r.container_id == container_id) {
            self.delete_record(&rec.key)?;
        }
        Ok(())
    }
}

impl Backend for NodeBackend {
    fn add(&mut self, req: &AttachRequest) -> Result<CniResult, CniError> {
        let netns = open_netns(req)?;
        match self.role {
            Role::Plugin => self.add_plugin(req, &netns),
            Role::Ipam => self.add_ipam(req),
        }
    }

    fn del(&mut self, req: &AttachRequest) -> Result<(), CniError> {
        let handle = naming::ipam_handle(&req.conf.name, &req.container_id);
        let key = endpoint_key(&self.node, req.pod.as_ref(), &req.container_id, &req.ifname);
        let rec = self.read_record(&key)?;
        let host_ifname = (self.role == Role::Plugin)
            .then(|| naming::host_veth_name(&req.container_id, req.pod.as_ref()));
        self.detach(&req.container_id, rec.as_ref(), &handle, host_ifname)
    }

    fn check(&mut self, req: &AttachRequest, prev: &CniResult) -> Result<(), CniError> {
        let netns = open_netns(req)?;
        let conf = &req.conf;
        let handle = naming::ipam_handle(&conf.name, &req.container_id);
        let key = endpoint_key(&self.node, req.pod.as_ref(), &req.container_id, &req.ifname);
        let failed = |why: String| CniError::new(ErrorCode::CheckFailed, why);
        // The addresses prevResult gave the container's interface.
        let wanted: Vec<IpAddr> = prev
            .ips
            .iter()
            .filter(
                |ip| match ip.interface.and_then(|i| prev.interfaces.get(i)) {
                    Some(iface) => iface.name == req.ifname && iface.sandbox.is_some(),
                    None => true,
                },
            )
            .map(|ip| ip.address.addr())
            .collect();
        if wanted.is_empty() {
            return Err(CniError::config(
                "prevResult.ips",
                format!("no address for {}", req.ifname),
            ));
        }
        let store = self.store()?;
        let held = self
            .runtime
            .block_on(addresses::assigned(&store, &handle))?;
        for a in &wanted {
            if !held.iter().any(|h| h.address == *a) {
                return Err(failed(format!("IPAM handle {handle} does not hold {a}")));
            }
        }
        if self.role == Role::Ipam {
            return Ok(());
        }
        let rec = self
            .read_record(&key)?
            .filter(|r| r.container_id == req.container_id)
            .ok_or_else(|| failed(format!("no WorkloadEndpoint {key} for this container")))?;
        let host_ifname = rec
            .host_ifname
            .clone()
            .unwrap_or_else(|| naming::host_veth_name(&req.container_id, req.pod.as_ref()));
        let mut nl = Netlink::open().map_err(|e| kernel_error("open netlink", &e))?;
        wiring::check(
            &mut nl,
            &netns,
            &PodInterface {
                host_ifname: &host_ifname,
                pod_ifname: &req.ifname,
                mtu: conf.mtu,
                queues: conf.num_queues,
                addresses: &wanted,
            },
        )
        .map_err(failed)
    }

    fn status(&mut self, _conf: &NetConf) -> Result<(), CniError> {
        let unavailable = |e: CniError| CniError::new(ErrorCode::PluginNotAvailable, e.details);
        let store = self.store().map_err(unavailable)?;
        self.runtime
            .block_on(store.revision())
            .map(|_| ())
            .map_err(|e| {
                CniError::new(
                    ErrorCode::PluginNotAvailable,
                    format!("datastore {}: {e}", self.url),
                )
            })
    }

    fn gc(&mut self, conf: &NetConf, valid: &[Attachment]) -> Result<(), CniError> {
        let store = self.store()?;
        let listing = self
            .runtime
            .block_on(store.list(ENDPOINT_PREFIX))
            .map_err(|e| datastore_error(e, ENDPOINT_PREFIX))?;
        let mut failures = Vec::new();
        for kv in listing.items {
            let Some(rec) = decode_endpoint(&kv.key, &kv.value) else {
                continue;
            };
            let ours = rec.node == self.node && rec.network.as_deref() == Some(conf.name.as_str());
            let valid = valid
                .iter()
                .any(|a| a.container_id == rec.container_id && a.ifname == rec.ifname);
            if !ours || valid {
                continue;
            }
            let host = match self.role {
                Role::Plugin => rec.host_ifname.clone(),
                Role::Ipam => None,
            };
            let handle = naming::ipam_handle(&conf.name, &rec.container_id);
            if let Err(e) = self.detach(&rec.container_id, Some(&rec), &handle, host) {
                failures.push(format!("{}: {}", rec.container_id, e.details));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                ErrorCode::Internal,
                format!("GC could not release: {}", failures.join("; ")),
            ))
        }
    }
}

fn gateway_for(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => IpAddr::V4(GATEWAY_V4),
        IpAddr::V6(_) => IpAddr::V6(GATEWAY_V6),
    }
}

/// The pools for this pod: from its annotations (runtime-provided pod
/// annotations, or `CNI_ARGS`) if it has them, else from the configuration.
fn pools_for(req: &AttachRequest) -> Result<(Vec<PoolRef>, Vec<PoolRef>), CniError> {
    let annotation = |key: &str| -> Option<String> {
        req.conf
            .pod_annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                req.args
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            })
    };
    let v4 = match annotation(ANNOTATION_IPV4_POOLS) {
        Some(v) => config::parse_pool_annotation(ANNOTATION_IPV4_POOLS, &v, Family::V4)?,
        None => req.conf.ipam.ipv4_pools.clone(),
    };
    let v6 = match annotation(ANNOTATION_IPV6_POOLS) {
        Some(v) => config::parse_pool_annotation(ANNOTATION_IPV6_POOLS, &v, Family::V6)?,
        None => req.conf.ipam.ipv6_pools.clone(),
    };
    Ok((v4, v6))
}

fn open_netns(req: &AttachRequest) -> Result<dp::Netns, CniError> {
    let path = req
        .netns
        .as_ref()
        .ok_or_else(|| CniError::env("CNI_NETNS", "not set"))?;
    dp::Netns::open(path).map_err(|e| {
        CniError::new(
            ErrorCode::UnknownContainer,
            format!("CNI_NETNS {}: {e}", path.display()),
        )
    })
}

fn kernel_error(what: &str, e: &dp::Error) -> CniError {
    CniError::new(ErrorCode::Io, format!("{what}: {e}"))
}

fn hostname() -> Result<String, CniError> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CniError::config("nodename", "not set and the host name cannot be read"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending on its first poll (waking itself from another thread), ready
    /// on the second.
    struct WakeLater(bool);

    impl std::future::Future for WakeLater {
        type Output = u32;
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<u32> {
            if self.0 {
                return std::task::Poll::Ready(7);
            }
            self.0 = true;
            let waker = cx.waker().clone();
            std::thread::spawn(move || waker.wake());
            std::task::Poll::Pending
        }
    }

    #[test]
    fn the_inline_driver_runs_ready_and_pending_futures() {
        let d = Driver::for_url("sqlite:///tmp/x.db", None).expect("driver");
        assert!(matches!(d, Driver::Inline));
        assert_eq!(d.block_on(async { 3 }), 3);
        assert_eq!(d.block_on(WakeLater(false)), 7);
        assert!(matches!(
            Driver::for_url("etcd://127.0.0.1:2379", None).expect("driver"),
            Driver::Tokio(_)
        ));
        // The service's cache: SQLite still inline, etcd on the cache's
        // one runtime (the same for every request).
        let cache = StoreCache::default();
        assert!(matches!(
            Driver::for_url("sqlite:///tmp/x.db", Some(&cache)).expect("driver"),
            Driver::Inline
        ));
        let Driver::Shared(a) = Driver::for_url("etcd://127.0.0.1:2379", Some(&cache)).expect("a")
        else {
            panic!("etcd in the service should share the cache's runtime");
        };
        let Driver::Shared(b) = Driver::for_url("etcd://127.0.0.1:2379", Some(&cache)).expect("b")
        else {
            panic!("etcd in the service should share the cache's runtime");
        };
        assert_eq!(a.id(), b.id());
        assert_eq!(Driver::Shared(a).block_on(WakeLater(false)), 7);
    }

    #[test]
    fn endpoint_names_are_calicos() {
        let pod = PodIdentity {
            namespace: "web".into(),
            name: "front-0".into(),
        };
        assert_eq!(
            endpoint_name("node-1", Some(&pod), "abc", "eth0"),
            ("web".to_owned(), "node--1-k8s-front--0-eth0".to_owned())
        );
        assert_eq!(
            endpoint_name("n1", None, "c-1", "eth0"),
            ("default".to_owned(), "n1-cni-c--1-eth0".to_owned())
        );
        assert_eq!(
            endpoint_key("n1", None, "c1", "eth0"),
            "/tabby/resources/v3/workloadendpoints/default/n1-cni-c1-eth0"
        );
    }
}
