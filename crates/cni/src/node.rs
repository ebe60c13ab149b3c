//! The node backend: what ADD, DEL, CHECK, STATUS and GC do on this node.
//!
//! ADD, step by step (the plugin role):
//! 1. open the pod's namespace (`CNI_NETNS`; missing: error 3);
//! 2. read the endpoint record of `(network, container, ifname)`; if the
//!    handle already holds addresses (a repeated ADD), reuse them, else ask
//!    IPAM for new ones (block affinity for this node, handle
//!    `<network>.<containerID>`);
//! 3. wire the pod ([`crate::wiring::attach`]): veth, addresses, routes,
//!    proxy ARP/NDP, host routes;
//! 4. write the endpoint record;
//! 5. print the result.
//!
//! Rollback: if step 3 or 4 fails, the host veth is deleted (taking the pod
//! end and the host routes with it) and, if step 2 allocated, the handle is
//! released, so a failed ADD leaves nothing allocated and no interface.
//!
//! DEL deletes the host veth (if any), releases the handle (if it holds
//! anything) and deletes the record; each of those may already be gone.
//!
//! Under the name `tabby-ipam` only steps 2 and 4 happen, and the result
//! carries the address with its pool's prefix and the 169.254.1.1 (fe80::1)
//! gateway, which is what point-to-point plugins such as the reference
//! `ptp` need to route the pool through the host.
//!
//! The datastore client is async; one current-thread runtime drives it, so
//! a plugin invocation starts no thread pool.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tabby_dataplane::{self as dp, Netlink};
use tabby_datastore::{Datastore, DatastoreError};

use crate::addresses::{self, AssignRequest, Assigned, datastore_error};
use crate::config::{
    self, ANNOTATION_IPV4_POOLS, ANNOTATION_IPV6_POOLS, Attachment, Family, NetConf, PoolRef,
};
use crate::error::{CniError, ErrorCode};
use crate::naming;
use crate::plugin::{AttachRequest, Backend, Role};
use crate::result::{CniResult, Interface, IpConfig};
use crate::wiring::{self, GATEWAY_V4, GATEWAY_V6, PodInterface};

/// Where endpoint records live: `<prefix><node>/<network>/<container>/<ifname>`.
pub const ENDPOINT_PREFIX: &str = "/tabby/cni/v1/endpoints/";

/// What the plugin remembers about one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRecord {
    /// The node.
    pub node: String,
    /// The CNI network name.
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The host end of the veth (absent when acting as `tabby-ipam`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    /// `CNI_NETNS` at ADD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The pod's namespace, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// The pod's name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The IPAM handle.
    pub handle: String,
    /// The pod's addresses.
    pub addresses: Vec<IpAddr>,
    /// The pod end's MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The datastore key of an endpoint record.
pub fn endpoint_key(node: &str, network: &str, container_id: &str, ifname: &str) -> String {
    format!("{ENDPOINT_PREFIX}{node}/{network}/{container_id}/{ifname}")
}

/// The backend that does the real work on this node.
#[derive(Debug)]
pub struct NodeBackend {
    role: Role,
    url: String,
    node: String,
    runtime: tokio::runtime::Runtime,
    store: Option<Datastore>,
}

impl NodeBackend {
    /// Prepares a backend for `conf` (the datastore is connected on first
    /// use, so that STATUS can report a failure to connect as code 50).
    pub fn open(conf: &NetConf, role: Role) -> Result<NodeBackend, CniError> {
        let url = conf
            .datastore
            .clone()
            .or_else(|| {
                std::env::var(tabby_datastore::URL_ENV)
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| tabby_datastore::DEFAULT_URL.to_owned());
        let node = match &conf.nodename {
            Some(n) => n.clone(),
            None => hostname()?,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CniError::new(ErrorCode::Io, format!("cannot start the runtime: {e}")))?;
        Ok(NodeBackend {
            role,
            url,
            node,
            runtime,
            store: None,
        })
    }

    fn store(&mut self) -> Result<Datastore, CniError> {
        if let Some(s) = &self.store {
            return Ok(s.clone());
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
            .block_on(Datastore::connect(&url))
            .map_err(|e| datastore_error(e, "connect"))?;
        self.store = Some(store.clone());
        Ok(store)
    }

    fn read_record(&mut self, key: &str) -> Result<Option<EndpointRecord>, CniError> {
        let store = self.store()?;
        let kv = self
            .runtime
            .block_on(store.get(key))
            .map_err(|e| datastore_error(e, key))?;
        Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
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
        Ok((got, true))
    }

    fn release(&mut self, handle: &str) -> Result<usize, CniError> {
        let store = self.store()?;
        self.runtime.block_on(addresses::release(&store, handle))
    }

    fn write_record(&mut self, key: &str, rec: &EndpointRecord) -> Result<(), CniError> {
        let store = self.store()?;
        let value = serde_json::to_vec(rec)
            .map_err(|e| CniError::new(ErrorCode::Internal, format!("endpoint record: {e}")))?;
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
        let key = endpoint_key(&self.node, &conf.name, &req.container_id, &req.ifname);
        let previous = self.read_record(&key)?;
        let host_ifname = previous
            .as_ref()
            .and_then(|r| r.host_ifname.clone())
            .unwrap_or_else(|| naming::host_veth_name(&req.container_id, req.pod.as_ref()));
        let (assigned, fresh) = self.addresses_for(req, &handle)?;
        let ips: Vec<IpAddr> = assigned.iter().map(|a| a.address).collect();

        let mut nl = Netlink::open().map_err(|e| kernel_error("open netlink", &e))?;
        let attached = wiring::attach(
            &mut nl,
            netns,
            &PodInterface {
                host_ifname: &host_ifname,
                pod_ifname: &req.ifname,
                mtu: conf.mtu,
                addresses: &ips,
            },
        );
        let attached = match attached {
            Ok(a) => a,
            Err(e) => {
                if fresh {
                    let _ = self.release(&handle);
                }
                return Err(CniError::new(ErrorCode::Internal, e.to_string()));
            }
        };
        let rec = EndpointRecord {
            node: self.node.clone(),
            network: conf.name.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            host_ifname: Some(host_ifname.clone()),
            netns: req.netns.as_ref().map(|p| p.display().to_string()),
            pod_namespace: req.pod.as_ref().map(|p| p.namespace.clone()),
            pod_name: req.pod.as_ref().map(|p| p.name.clone()),
            handle: handle.clone(),
            addresses: ips.clone(),
            mac: attached.pod_mac.map(|m| m.to_string()),
        };
        if let Err(e) = self.write_record(&key, &rec) {
            let _ = wiring::detach(&mut nl, &host_ifname);
            if fresh {
                let _ = self.release(&handle);
            }
            return Err(e);
        }
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
        let key = endpoint_key(&self.node, &conf.name, &req.container_id, &req.ifname);
        let (assigned, fresh) = self.addresses_for(req, &handle)?;
        let rec = EndpointRecord {
            node: self.node.clone(),
            network: conf.name.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            host_ifname: None,
            netns: req.netns.as_ref().map(|p| p.display().to_string()),
            pod_namespace: req.pod.as_ref().map(|p| p.namespace.clone()),
            pod_name: req.pod.as_ref().map(|p| p.name.clone()),
            handle: handle.clone(),
            addresses: assigned.iter().map(|a| a.address).collect(),
            mac: None,
        };
        if let Err(e) = self.write_record(&key, &rec) {
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

    /// Detaches one attachment; everything may already be gone.
    fn detach(
        &mut self,
        node_key: &str,
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
        if rec.is_some() {
            self.delete_record(node_key)?;
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
        let conf = &req.conf;
        let handle = naming::ipam_handle(&conf.name, &req.container_id);
        let key = endpoint_key(&self.node, &conf.name, &req.container_id, &req.ifname);
        let rec = self.read_record(&key)?;
        let host_ifname = match self.role {
            Role::Ipam => None,
            Role::Plugin => Some(
                rec.as_ref()
                    .and_then(|r| r.host_ifname.clone())
                    .unwrap_or_else(|| naming::host_veth_name(&req.container_id, req.pod.as_ref())),
            ),
        };
        self.detach(&key, rec.as_ref(), &handle, host_ifname)
    }

    fn check(&mut self, req: &AttachRequest, prev: &CniResult) -> Result<(), CniError> {
        let netns = open_netns(req)?;
        let conf = &req.conf;
        let handle = naming::ipam_handle(&conf.name, &req.container_id);
        let key = endpoint_key(&self.node, &conf.name, &req.container_id, &req.ifname);
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
            .ok_or_else(|| failed(format!("no endpoint record {key}")))?;
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
        let prefix = format!("{ENDPOINT_PREFIX}{}/{}/", self.node, conf.name);
        let listing = self
            .runtime
            .block_on(store.list(&prefix))
            .map_err(|e| datastore_error(e, &prefix))?;
        let mut failures = Vec::new();
        for kv in listing.items {
            let Ok(rec) = serde_json::from_slice::<EndpointRecord>(&kv.value) else {
                continue;
            };
            let keep = valid
                .iter()
                .any(|a| a.container_id == rec.container_id && a.ifname == rec.ifname);
            if keep {
                continue;
            }
            let host = match self.role {
                Role::Plugin => rec.host_ifname.clone(),
                Role::Ipam => None,
            };
            if let Err(e) = self.detach(&kv.key, Some(&rec), &rec.handle, host) {
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
