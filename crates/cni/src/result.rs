//! The success result of ADD (and the `prevResult` of CHECK and DEL): typed
//! once here, written in the format of the version the runtime asked for,
//! and read back from any supported version.
//!
//! Differences handled: before 1.0.0 every `ips` entry carries
//! `"version": "4"|"6"`; from 1.1.0 an interface may carry `mtu`. IPAM
//! plugins return the same object without `interfaces` and without the
//! `interface` index of each address.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Dns;
use crate::error::{CniError, ErrorCode};
use crate::version::CniVersion;

/// An interface the plugin created or configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its hardware address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Its MTU (written from 1.1.0 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for an interface inside the container; absent on the
    /// host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address given to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address with its prefix length (`10.244.1.5/32`).
    pub address: IpNet,
    /// The gateway, if the plugin has one to report.
    pub gateway: Option<IpAddr>,
    /// Index into the result's interfaces (absent in IPAM results).
    pub interface: Option<usize>,
}

/// A route inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination.
    pub dst: IpNet,
    /// The next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// A plugin result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniResult {
    /// Interfaces (empty for an IPAM result).
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS settings.
    pub dns: Dns,
}

#[derive(Serialize, Deserialize)]
struct WireIp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
}

#[derive(Serialize)]
struct WireResult<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    interfaces: Option<Vec<Interface>>,
    ips: Vec<WireIp>,
    #[serde(skip_serializing_if = "<[Route]>::is_empty")]
    routes: &'a [Route],
    dns: &'a Dns,
}

#[derive(Deserialize)]
struct WireIn {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<WireIp>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

impl CniResult {
    /// The result as JSON in the format of `version`.
    pub fn to_json(&self, version: CniVersion) -> String {
        let interfaces = (!self.interfaces.is_empty()).then(|| {
            self.interfaces
                .iter()
                .map(|i| Interface {
                    mtu: if version.has_status_gc() { i.mtu } else { None },
                    ..i.clone()
                })
                .collect()
        });
        let ips = self
            .ips
            .iter()
            .map(|ip| WireIp {
                version: version.ips_have_version().then(|| {
                    match ip.address.addr() {
                        IpAddr::V4(_) => "4",
                        IpAddr::V6(_) => "6",
                    }
                    .to_owned()
                }),
                address: ip.address,
                gateway: ip.gateway,
                interface: ip.interface,
            })
            .collect();
        let wire = WireResult {
            cni_version: version.as_str(),
            interfaces,
            ips,
            routes: &self.routes,
            dns: &self.dns,
        };
        // Addresses, strings and integers always serialize.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Reads a result (a `prevResult`, or a delegate's stdout) of any
    /// supported version; `field` names it in errors.
    pub fn from_value(v: &Value, field: &str) -> Result<CniResult, CniError> {
        let wire: WireIn = serde_json::from_value(v.clone())
            .map_err(|e| CniError::new(ErrorCode::InvalidConfig, format!("{field}: {e}")))?;
        let mut ips = Vec::with_capacity(wire.ips.len());
        for (i, ip) in wire.ips.into_iter().enumerate() {
            if let Some(idx) = ip.interface {
                if idx >= wire.interfaces.len() {
                    return Err(CniError::config(
                        &format!("{field}.ips[{i}].interface"),
                        format!("index {idx} but only {} interfaces", wire.interfaces.len()),
                    ));
                }
            }
            ips.push(IpConfig {
                address: ip.address,
                gateway: ip.gateway,
                interface: ip.interface,
            });
        }
        Ok(CniResult {
            interfaces: wire.interfaces,
            ips,
            routes: wire.routes,
            dns: wire.dns,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "tby0123456789a".into(),
                    mac: Some("ee:ee:ee:ee:ee:ee".into()),
                    mtu: Some(1500),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1500),
                    sandbox: Some("/var/run/netns/p".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.0.5/32".parse().expect("net"),
                    gateway: None,
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00:10::5/128".parse().expect("net"),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().expect("net"),
                gw: Some("169.254.1.1".parse().expect("ip")),
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn each_version_has_its_format() {
        let r = sample();
        let v04: Value = serde_json::from_str(&r.to_json(CniVersion::V0_4_0)).expect("json");
        assert_eq!(v04["cniVersion"], "0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][1]["version"], "6");
        assert!(v04["interfaces"][0].get("mtu").is_none());
        let v10: Value = serde_json::from_str(&r.to_json(CniVersion::V1_0_0)).expect("json");
        assert!(v10["ips"][0].get("version").is_none());
        assert!(v10["interfaces"][1].get("mtu").is_none());
        let v11: Value = serde_json::from_str(&r.to_json(CniVersion::V1_1_0)).expect("json");
        assert_eq!(v11["interfaces"][1]["mtu"], 1500);
        assert_eq!(v11["interfaces"][1]["sandbox"], "/var/run/netns/p");
        assert!(v11["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v11["routes"][0]["gw"], "169.254.1.1");
    }

    #[test]
    fn round_trips_through_every_version() {
        let r = sample();
        for v in CniVersion::SUPPORTED {
            let json: Value = serde_json::from_str(&r.to_json(v)).expect("json");
            let back = CniResult::from_value(&json, "prevResult").expect("parse");
            assert_eq!(back.ips, r.ips, "{v}");
            assert_eq!(back.routes, r.routes, "{v}");
            assert_eq!(back.interfaces.len(), 2, "{v}");
        }
    }

    #[test]
    fn ipam_result_has_no_interfaces() {
        let r = CniResult {
            ips: vec![IpConfig {
                address: "10.244.0.5/26".parse().expect("net"),
                gateway: Some("169.254.1.1".parse().expect("ip")),
                interface: None,
            }],
            ..CniResult::default()
        };
        let v: Value = serde_json::from_str(&r.to_json(CniVersion::V1_0_0)).expect("json");
        assert!(v.get("interfaces").is_none());
        assert!(v["ips"][0].get("interface").is_none());
    }

    #[test]
    fn bad_prev_result_is_reported_with_its_path() {
        let e = CniResult::from_value(&json!({"ips": [{"address": "nope"}]}), "prevResult")
            .expect_err("bad");
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.details.starts_with("prevResult"));
        let e = CniResult::from_value(
            &json!({"interfaces": [], "ips": [{"address": "10.0.0.1/32", "interface": 3}]}),
            "prevResult",
        )
        .expect_err("bad index");
        assert!(
            e.details.starts_with("prevResult.ips[0].interface"),
            "{}",
            e.details
        );
    }
}
