//! The network configuration read from stdin, parsed once into typed values
//! ([`NetConf`]); every problem is reported with the path of the offending
//! field (`ipam.ipv4Pools[1]`).
//!
//! `mtu` absent or 0 means "the detected MTU", as in Calico: parsing
//! records the MTU file to read (`mtuFile`, default [`DEFAULT_MTU_FILE`],
//! which `tabby agent` and calico-node write) and
//! [`NetConf::resolve_mtu`] reads it; no file gives [`DEFAULT_MTU`]
//! silently, an unreadable or garbage one gives [`DEFAULT_MTU`] with a
//! warning naming the file. An explicit `mtu` always wins.
//!
//! Fields tabby does not know (a Calico configuration's `log_level`,
//! `kubernetes`, `policy`, ...) are ignored, as the spec allows, so that a
//! Calico `.conflist` works with its `type` changed. Both tabby's camelCase
//! IPAM keys (`assignIpv4`, `ipv4Pools`) and Calico's snake_case ones
//! (`assign_ipv4: "true"`, `ipv4_pools`) are accepted.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::error::{CniError, ErrorCode};
use crate::version::{self, CniVersion};

/// The MTU used when the configuration gives none (or 0) and no MTU file
/// says otherwise.
pub const DEFAULT_MTU: u32 = 1500;

/// Where the MTU detected on the node is read from when `mtu` is absent or
/// 0 (Calico's file: `tabby agent` and calico-node write it); `mtuFile`
/// overrides it.
pub const DEFAULT_MTU_FILE: &str = "/var/lib/calico/mtu";

/// TX/RX queues of each end of a pod's veth unless `numQueues` says
/// otherwise. The kernel's default is one per possible CPU, and every queue
/// is a sysfs object registered when the pair is created (the longest step
/// of an ADD); a routed pod interface only uses more than one with XDP or
/// GRO turned on (veth NAPI).
pub const DEFAULT_VETH_QUEUES: u32 = 1;

/// The pod annotation (Calico's name) that chooses IPv4 pools for a pod.
pub const ANNOTATION_IPV4_POOLS: &str = "cni.projectcalico.org/ipv4pools";
/// The pod annotation (Calico's name) that chooses IPv6 pools for a pod.
pub const ANNOTATION_IPV6_POOLS: &str = "cni.projectcalico.org/ipv6pools";
/// The `runtimeConfig` key under which containerd passes pod annotations
/// (capability `io.kubernetes.cri.pod-annotations`).
pub const RUNTIME_POD_ANNOTATIONS: &str = "io.kubernetes.cri.pod-annotations";

/// An IP pool named by a configuration or an annotation: by CIDR or by the
/// IPPool resource's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PoolRef {
    /// The pool whose CIDR is exactly this.
    Cidr(IpNet),
    /// The IPPool resource of this name.
    Name(String),
}

/// The `ipam` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    /// `type`: the IPAM plugin (`tabby-ipam`, or `calico-ipam` for drop-in
    /// Calico configurations).
    pub kind: String,
    /// `assignIpv4` (default true).
    pub assign_ipv4: bool,
    /// `assignIpv6` (default false).
    pub assign_ipv6: bool,
    /// `ipv4Pools`: allowed IPv4 pools; empty means every enabled pool.
    pub ipv4_pools: Vec<PoolRef>,
    /// `ipv6Pools`: allowed IPv6 pools; empty means every enabled pool.
    pub ipv6_pools: Vec<PoolRef>,
}

impl Default for IpamConf {
    fn default() -> Self {
        IpamConf {
            kind: "tabby-ipam".to_owned(),
            assign_ipv4: true,
            assign_ipv6: false,
            ipv4_pools: Vec::new(),
            ipv6_pools: Vec::new(),
        }
    }
}

/// One entry of `cni.dev/valid-attachments` (GC, spec 1.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attachment {
    /// `containerID`.
    pub container_id: String,
    /// `ifname`.
    pub ifname: String,
}

/// The `dns` section, passed through into the result.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Dns {
    /// Name servers, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains, in priority order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A parsed network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// The spec version to speak (from `cniVersion`, or the best of
    /// `cniVersions`).
    pub cni_version: CniVersion,
    /// `name`: the network name.
    pub name: String,
    /// `type`: the plugin name.
    pub kind: String,
    /// `datastore`: URL of the datastore; `None` means `TABBY_DATASTORE` or
    /// the default SQLite file.
    pub datastore: Option<String>,
    /// `nodename`: this node's name; `None` means the host name.
    pub nodename: Option<String>,
    /// `mtu` of the pod interface: the configured one, or once
    /// [`NetConf::resolve_mtu`] ran, the detected one.
    pub mtu: u32,
    /// `mtu` absent or 0: the file the detected MTU is read from
    /// (`mtuFile`, default [`DEFAULT_MTU_FILE`]); `None` when `mtu` is set.
    pub mtu_file: Option<PathBuf>,
    /// `numQueues`: TX/RX queues of each end of the pod's veth.
    pub num_queues: u32,
    /// `ipam`.
    pub ipam: IpamConf,
    /// `dns`.
    pub dns: Option<Dns>,
    /// `prevResult`, still raw: its format depends on the version.
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (or its early alias `cni.dev/attachments`).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Pod annotations the runtime passed in `runtimeConfig`.
    pub pod_annotations: Vec<(String, String)>,
}

/// The version a configuration asks for, found before anything else is
/// parsed so that even a bad configuration's error is in the right format.
pub fn requested_version(doc: &Value) -> Option<CniVersion> {
    let obj = doc.as_object()?;
    if let Some(list) = obj.get("cniVersions").and_then(Value::as_array) {
        if let Some(v) = version::negotiate(list.iter().filter_map(Value::as_str)) {
            return Some(v);
        }
    }
    obj.get("cniVersion")?.as_str()?.parse().ok()
}

/// Decodes stdin into a JSON document (error 6 if it is not JSON).
pub fn decode(stdin: &[u8]) -> Result<Value, CniError> {
    serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            ErrorCode::Decode,
            format!("network configuration on stdin is not JSON: {e}"),
        )
    })
}

impl NetConf {
    /// Parses a network configuration document.
    pub fn parse(doc: &Value) -> Result<NetConf, CniError> {
        let obj = doc
            .as_object()
            .ok_or_else(|| CniError::config("(top level)", "expected a JSON object"))?;
        let cni_version = parse_version(obj)?;
        let name = req_str(obj, "name", "name")?;
        validate_network_name(&name)?;
        let kind = req_str(obj, "type", "type")?;
        // Top level (the tabby plugin) or inside `ipam` (tabby-ipam under
        // another plugin, whose own section is the natural place).
        let ipam_obj = obj.get("ipam").and_then(Value::as_object);
        let datastore = match opt_str(obj, "datastore", "datastore")? {
            Some(d) => Some(d),
            None => match ipam_obj {
                Some(m) => opt_str(m, "datastore", "ipam.datastore")?,
                None => None,
            },
        };
        let nodename = match opt_str(obj, "nodename", "nodename")? {
            Some(n) => Some(n),
            None => match ipam_obj {
                Some(m) => opt_str(m, "nodename", "ipam.nodename")?,
                None => None,
            },
        };
        if nodename.as_deref() == Some("") {
            return Err(CniError::config("nodename", "must not be empty"));
        }
        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(0) => None,
                Some(m @ 68..=65535) => Some(m as u32),
                _ => {
                    return Err(CniError::config(
                        "mtu",
                        format!(
                            "{v} is not an MTU (68..65535, or 0 for the MTU detected on the node)"
                        ),
                    ));
                }
            },
        };
        let mtu_file = match opt_str(obj, "mtuFile", "mtuFile")? {
            Some(f) if f.is_empty() => {
                return Err(CniError::config("mtuFile", "must not be empty"));
            }
            Some(f) => PathBuf::from(f),
            None => PathBuf::from(DEFAULT_MTU_FILE),
        };
        let num_queues = match obj.get("numQueues") {
            None | Some(Value::Null) => DEFAULT_VETH_QUEUES,
            Some(v) => match v.as_u64() {
                Some(q @ 1..=4096) => q as u32,
                _ => {
                    return Err(CniError::config(
                        "numQueues",
                        format!("{v} is not a queue count (1..4096)"),
                    ));
                }
            },
        };
        if obj.get("ipMasq").and_then(Value::as_bool) == Some(true) {
            return Err(CniError::new(
                ErrorCode::UnsupportedField,
                "ipMasq: true: tabby masquerades per pool; set natOutgoing on the IPPool instead",
            ));
        }
        let ipam = match obj.get("ipam") {
            None | Some(Value::Null) => IpamConf::default(),
            Some(Value::Object(m)) => parse_ipam(m)?,
            Some(_) => return Err(CniError::config("ipam", "expected an object")),
        };
        let dns = match obj.get("dns") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<Dns>(v.clone()).map_err(|e| CniError::config("dns", e))?,
            ),
        };
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => return Err(CniError::config("prevResult", "expected an object")),
        };
        let valid_attachments = parse_attachments(obj)?;
        let pod_annotations = parse_runtime_annotations(obj)?;
        Ok(NetConf {
            cni_version,
            name,
            kind,
            datastore,
            nodename,
            mtu: mtu.unwrap_or(DEFAULT_MTU),
            mtu_file: mtu.is_none().then_some(mtu_file),
            num_queues,
            ipam,
            dns,
            prev_result,
            valid_attachments,
            pod_annotations,
        })
    }
}

impl NetConf {
    /// With `mtu` absent or 0, sets [`NetConf::mtu`] from the MTU file. A
    /// missing file leaves [`DEFAULT_MTU`] (the agent has not written it
    /// yet, or the node runs without one), as Calico's plugin does; an
    /// unreadable or garbage file leaves it too, and the returned warning
    /// names the file (pod creation goes on: a wrong MTU is better than no
    /// pod, and the warning says what to repair).
    pub fn resolve_mtu(&mut self) -> Option<String> {
        let path = self.mtu_file.as_deref()?;
        match read_mtu_file(path) {
            Ok(Some(mtu)) => {
                self.mtu = mtu;
                None
            }
            Ok(None) => None,
            Err(why) => Some(format!(
                "mtu: not set, and the MTU file {} {why}; using {DEFAULT_MTU}",
                path.display()
            )),
        }
    }
}

/// The MTU in a file written by `tabby agent` or calico-node: `Ok(None)`
/// when there is no file, `Err` (what is wrong with it) when it cannot be
/// read or does not hold an MTU.
pub fn read_mtu_file(path: &Path) -> Result<Option<u32>, String> {
    match std::fs::read(path) {
        Ok(bytes) => parse_mtu_text(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot be read: {e}")),
    }
}

/// The MTU an MTU file holds: decimal digits in 68..65535, white space
/// around them allowed.
pub fn parse_mtu_text(bytes: &[u8]) -> Result<u32, String> {
    let text = String::from_utf8_lossy(bytes);
    let t = text.trim();
    match t.parse::<u32>() {
        Ok(m @ 68..=65535) => Ok(m),
        _ => {
            let shown: String = t.chars().take(32).collect();
            Err(format!("holds {shown:?}, not an MTU (68..65535)"))
        }
    }
}

fn parse_version(obj: &Map<String, Value>) -> Result<CniVersion, CniError> {
    if let Some(list) = obj.get("cniVersions") {
        let list = list
            .as_array()
            .ok_or_else(|| CniError::config("cniVersions", "expected a list of strings"))?;
        let strs: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
        if let Some(v) = version::negotiate(strs.iter().copied()) {
            return Ok(v);
        }
        if obj.get("cniVersion").is_none() {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!("cniVersions: none of {strs:?} is supported (0.3.0 .. 1.1.0)"),
            ));
        }
    }
    match obj.get("cniVersion") {
        None => Err(CniError::config("cniVersion", "missing")),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|e| CniError::new(ErrorCode::IncompatibleVersion, format!("cniVersion: {e}"))),
        Some(v) => Err(CniError::config(
            "cniVersion",
            format!("{v} is not a string"),
        )),
    }
}

/// The spec's rule for network names (same as container ids).
fn validate_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::config(
            "name",
            format!(
                "{name:?} is not a valid network name (alphanumeric first, then alphanumerics, '_', '.' or '-')"
            ),
        ))
    }
}

fn opt_str(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(CniError::config(path, format!("{v} is not a string"))),
    }
}

fn req_str(obj: &Map<String, Value>, key: &str, path: &str) -> Result<String, CniError> {
    match opt_str(obj, key, path)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(CniError::config(path, "missing")),
    }
}

/// A boolean that Calico configurations spell as a string (`"true"`).
fn opt_flag(obj: &Map<String, Value>, keys: [&str; 2]) -> Result<Option<bool>, CniError> {
    for key in keys {
        let path = format!("ipam.{key}");
        match obj.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Bool(b)) => return Ok(Some(*b)),
            Some(Value::String(s)) => {
                return match s.to_ascii_lowercase().as_str() {
                    "true" => Ok(Some(true)),
                    "false" => Ok(Some(false)),
                    _ => Err(CniError::config(
                        &path,
                        format!("{s:?} is not true or false"),
                    )),
                };
            }
            Some(v) => return Err(CniError::config(&path, format!("{v} is not a boolean"))),
        }
    }
    Ok(None)
}

fn parse_ipam(m: &Map<String, Value>) -> Result<IpamConf, CniError> {
    let kind = opt_str(m, "type", "ipam.type")?.unwrap_or_else(|| "tabby-ipam".to_owned());
    let assign_ipv4 = opt_flag(m, ["assignIpv4", "assign_ipv4"])?.unwrap_or(true);
    let assign_ipv6 = opt_flag(m, ["assignIpv6", "assign_ipv6"])?.unwrap_or(false);
    if !assign_ipv4 && !assign_ipv6 {
        return Err(CniError::config(
            "ipam.assignIpv4",
            "both assignIpv4 and assignIpv6 are false: the pod would get no address",
        ));
    }
    let ipv4_pools = pool_list(m, ["ipv4Pools", "ipv4_pools"], Family::V4)?;
    let ipv6_pools = pool_list(m, ["ipv6Pools", "ipv6_pools"], Family::V6)?;
    Ok(IpamConf {
        kind,
        assign_ipv4,
        assign_ipv6,
        ipv4_pools,
        ipv6_pools,
    })
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

fn pool_list(
    m: &Map<String, Value>,
    keys: [&str; 2],
    family: Family,
) -> Result<Vec<PoolRef>, CniError> {
    for key in keys {
        let path = format!("ipam.{key}");
        match m.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => {
                return items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let p = format!("{path}[{i}]");
                        match item.as_str() {
                            Some(s) => {
                                parse_pool_ref(s, family).map_err(|why| CniError::config(&p, why))
                            }
                            None => Err(CniError::config(&p, format!("{item} is not a string"))),
                        }
                    })
                    .collect();
            }
            Some(v) => {
                return Err(CniError::config(
                    &path,
                    format!("{v} is not a list of pools"),
                ));
            }
        }
    }
    Ok(Vec::new())
}

/// Parses one pool reference: a CIDR of `family`, or a pool name.
pub fn parse_pool_ref(s: &str, family: Family) -> Result<PoolRef, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty pool reference".to_owned());
    }
    if s.contains('/') {
        let net: IpNet = s.parse().map_err(|e| format!("{s:?} is not a CIDR: {e}"))?;
        if Family::of(net.addr()) != family {
            return Err(format!(
                "{s} is an {} CIDR in a list of {} pools",
                if family == Family::V4 { "IPv6" } else { "IPv4" },
                if family == Family::V4 { "IPv4" } else { "IPv6" },
            ));
        }
        if net.trunc() != net {
            return Err(format!(
                "{s} has host bits set (the pool is {})",
                net.trunc()
            ));
        }
        return Ok(PoolRef::Cidr(net));
    }
    Ok(PoolRef::Name(s.to_owned()))
}

/// Parses the value of a pool annotation: a JSON list of CIDRs or names.
pub fn parse_pool_annotation(
    key: &str,
    value: &str,
    family: Family,
) -> Result<Vec<PoolRef>, CniError> {
    let list: Vec<String> = serde_json::from_str(value).map_err(|e| {
        CniError::config(
            &format!("annotation {key}"),
            format!("{value:?} is not a JSON list of strings: {e}"),
        )
    })?;
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            parse_pool_ref(s, family)
                .map_err(|why| CniError::config(&format!("annotation {key}[{i}]"), why))
        })
        .collect()
}

fn parse_attachments(obj: &Map<String, Value>) -> Result<Option<Vec<Attachment>>, CniError> {
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let Some(v) = obj.get(key) else { continue };
        let items = v
            .as_array()
            .ok_or_else(|| CniError::config(key, "expected a list"))?;
        let list = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{key}[{i}]");
                let o = item
                    .as_object()
                    .ok_or_else(|| CniError::config(&path, "expected an object"))?;
                Ok(Attachment {
                    container_id: req_str(o, "containerID", &format!("{path}.containerID"))?,
                    ifname: req_str(o, "ifname", &format!("{path}.ifname"))?,
                })
            })
            .collect::<Result<Vec<_>, CniError>>()?;
        return Ok(Some(list));
    }
    Ok(None)
}

fn parse_runtime_annotations(obj: &Map<String, Value>) -> Result<Vec<(String, String)>, CniError> {
    let Some(rc) = obj.get("runtimeConfig").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    match rc.get(RUNTIME_POD_ANNOTATIONS) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => Ok(m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
            .collect()),
        Some(_) => Err(CniError::config(
            &format!("runtimeConfig.{RUNTIME_POD_ANNOTATIONS}"),
            "expected an object of strings",
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(&v)
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let c = parse(json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby"}))
            .expect("valid");
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
        assert_eq!(c.mtu, DEFAULT_MTU);
        assert_eq!(c.mtu_file.as_deref(), Some(Path::new(DEFAULT_MTU_FILE)));
        assert_eq!(c.num_queues, DEFAULT_VETH_QUEUES);
        assert_eq!(c.ipam, IpamConf::default());
        assert!(c.datastore.is_none() && c.nodename.is_none() && c.prev_result.is_none());
    }

    #[test]
    fn full_config_and_calico_spelling() {
        let c = parse(json!({
            "cniVersion": "0.3.1", "name": "net", "type": "tabby",
            "datastore": "sqlite:///tmp/x.db", "nodename": "node-1", "mtu": 1440,
            "numQueues": 4, "log_level": "info", "kubernetes": {"kubeconfig": "/x"},
            "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "true",
                     "ipv4_pools": ["10.244.0.0/16", "blue"], "ipv6Pools": ["fd00:10::/48"]}
        }))
        .expect("valid");
        assert_eq!(c.mtu, 1440);
        assert_eq!(c.mtu_file, None);
        assert_eq!(c.num_queues, 4);
        assert_eq!(c.nodename.as_deref(), Some("node-1"));
        assert!(c.ipam.assign_ipv6);
        assert_eq!(
            c.ipam.ipv4_pools,
            vec![
                PoolRef::Cidr("10.244.0.0/16".parse().expect("cidr")),
                PoolRef::Name("blue".into())
            ]
        );
        assert_eq!(c.ipam.ipv6_pools.len(), 1);
        let c = parse(json!({
            "cniVersion": "1.0.0", "name": "net", "type": "ptp",
            "ipam": {"type": "tabby-ipam", "datastore": "sqlite:///d.db", "nodename": "n2"}
        }))
        .expect("valid");
        assert_eq!(c.datastore.as_deref(), Some("sqlite:///d.db"));
        assert_eq!(c.nodename.as_deref(), Some("n2"));
    }

    #[test]
    fn an_absent_or_zero_mtu_is_read_from_the_mtu_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("mtu");
        let conf = |mtu: Value| {
            let mut v = json!({"cniVersion": "1.0.0", "name": "n", "type": "tabby",
                               "mtuFile": file.display().to_string()});
            if !mtu.is_null() {
                v["mtu"] = mtu;
            }
            parse(v).expect("valid")
        };
        // No file: the default, silently.
        let mut c = conf(Value::Null);
        assert_eq!(c.resolve_mtu(), None);
        assert_eq!(c.mtu, DEFAULT_MTU);
        // The agent's file, absent mtu or 0.
        std::fs::write(&file, "1350").expect("write");
        for mtu in [Value::Null, json!(0)] {
            let mut c = conf(mtu);
            assert_eq!(c.resolve_mtu(), None);
            assert_eq!(c.mtu, 1350);
        }
        std::fs::write(&file, " 1410\n").expect("write");
        let mut c = conf(Value::Null);
        assert_eq!(c.resolve_mtu(), None);
        assert_eq!(c.mtu, 1410);
        // An explicit mtu wins and the file is not read.
        let mut c = conf(json!(9000));
        assert_eq!(c.mtu_file, None);
        assert_eq!(c.resolve_mtu(), None);
        assert_eq!(c.mtu, 9000);
        // Garbage or out of range: the default, and a warning naming the file.
        for garbage in ["", "abc", "1350x", "20", "70000", "-1"] {
            std::fs::write(&file, garbage).expect("write");
            let mut c = conf(Value::Null);
            let w = c.resolve_mtu().expect("a warning");
            assert_eq!(c.mtu, DEFAULT_MTU, "{garbage:?}");
            assert!(
                w.contains(&file.display().to_string())
                    && w.contains("not an MTU")
                    && w.starts_with("mtu:"),
                "{w}"
            );
        }
        // Unreadable (a directory): the default, and a warning.
        let mut c = parse(json!({"cniVersion": "1.0.0", "name": "n", "type": "tabby",
                                 "mtuFile": dir.path().display().to_string()}))
        .expect("valid");
        let w = c.resolve_mtu().expect("a warning");
        assert!(w.contains("cannot be read"), "{w}");
        assert_eq!(c.mtu, DEFAULT_MTU);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!([]), ErrorCode::InvalidConfig, "(top level)"),
            (
                json!({"name": "n", "type": "t"}),
                ErrorCode::InvalidConfig,
                "cniVersion",
            ),
            (
                json!({"cniVersion": "0.2.0", "name": "n", "type": "t"}),
                ErrorCode::IncompatibleVersion,
                "cniVersion",
            ),
            (
                json!({"cniVersion": "1.0.0", "type": "t"}),
                ErrorCode::InvalidConfig,
                "name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "-n", "type": "t"}),
                ErrorCode::InvalidConfig,
                "name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n"}),
                ErrorCode::InvalidConfig,
                "type",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "mtu": 20}),
                ErrorCode::InvalidConfig,
                "mtu",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "mtu": "x"}),
                ErrorCode::InvalidConfig,
                "mtu",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "mtuFile": 5}),
                ErrorCode::InvalidConfig,
                "mtuFile",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "mtuFile": ""}),
                ErrorCode::InvalidConfig,
                "mtuFile",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "numQueues": 0}),
                ErrorCode::InvalidConfig,
                "numQueues",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "numQueues": 5000}),
                ErrorCode::InvalidConfig,
                "numQueues",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "ipMasq": true}),
                ErrorCode::UnsupportedField,
                "ipMasq",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "ipam": {"ipv4Pools": ["fd00::/64"]}}),
                ErrorCode::InvalidConfig,
                "ipam.ipv4Pools[0]",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "ipam": {"ipv4Pools": ["10.0.0.1/16"]}}),
                ErrorCode::InvalidConfig,
                "ipam.ipv4Pools[0]",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "ipam": {"ipv4Pools": "10.0.0.0/16"}}),
                ErrorCode::InvalidConfig,
                "ipam.ipv4Pools",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "ipam": {"assignIpv4": "maybe"}}),
                ErrorCode::InvalidConfig,
                "ipam.assignIpv4",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "type": "t", "ipam": {"assignIpv4": false}}),
                ErrorCode::InvalidConfig,
                "ipam.assignIpv4",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "type": "t", "cni.dev/valid-attachments": [{"containerID": "a"}]}),
                ErrorCode::InvalidConfig,
                "cni.dev/valid-attachments[0].ifname",
            ),
        ];
        for (doc, code, field) in cases {
            let e = parse(doc.clone()).expect_err(&doc.to_string());
            assert_eq!(e.code, code, "{doc}: {e}");
            assert!(e.details.starts_with(field), "{doc}: {}", e.details);
        }
    }

    #[test]
    fn cni_versions_list_is_negotiated() {
        let c = parse(json!({"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0", "2.0.0"], "name": "n", "type": "t"}))
            .expect("valid");
        assert_eq!(c.cni_version, CniVersion::V1_1_0);
        assert_eq!(
            requested_version(&json!({"cniVersion": "0.4.0"})),
            Some(CniVersion::V0_4_0)
        );
    }

    #[test]
    fn attachments_and_annotations() {
        let c = parse(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "t",
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {ANNOTATION_IPV4_POOLS: "[\"blue\"]"}}
        }))
        .expect("valid");
        assert_eq!(
            c.valid_attachments,
            Some(vec![Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }])
        );
        assert_eq!(c.pod_annotations.len(), 1);
        assert_eq!(
            parse_pool_annotation(
                ANNOTATION_IPV4_POOLS,
                "[\"blue\", \"10.1.0.0/16\"]",
                Family::V4
            )
            .expect("valid"),
            vec![
                PoolRef::Name("blue".into()),
                PoolRef::Cidr("10.1.0.0/16".parse().expect("cidr"))
            ]
        );
        let e =
            parse_pool_annotation(ANNOTATION_IPV4_POOLS, "blue", Family::V4).expect_err("not json");
        assert!(e.details.contains(ANNOTATION_IPV4_POOLS));
    }
}
