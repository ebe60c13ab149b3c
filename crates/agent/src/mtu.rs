//! The pod MTU, detected as calico-node's Felix does, and the MTU file the
//! CNI plugin reads.
//!
//! Owns:
//!
//! - **the decision** ([`pod_mtu`], pure): the host MTU is the smallest MTU
//!   among the host's operationally up interfaces whose name matches the
//!   interface pattern (FelixConfiguration `mtuIfacePattern`, default
//!   [`DEFAULT_IFACE_PATTERN`]; tabby's own devices are never candidates);
//!   with no candidate it is [`NO_MATCH_HOST_MTU`] (1460, Felix's "smallest
//!   among common cloud providers"). Each tunnel device gets the host MTU
//!   minus its overhead (IPIP 20, VXLAN 50, VXLAN over IPv6 70), and pods
//!   get the smallest MTU among the encapsulations in use — the host MTU
//!   minus the largest overhead in use, the host MTU itself when none is;
//! - **what is in use** ([`EncapsulationsInUse::from_pools`], pure):
//!   Felix's rule, every pool (enabled or not, whatever its node selector)
//!   whose `ipipMode` / `vxlanMode` is not Never, VXLAN per family;
//! - **the kernel's view** ([`host_interfaces`]) and **the file**
//!   ([`write_mtu_file`]): Calico's `/var/lib/calico/mtu` by default, the
//!   pod MTU as decimal digits, replaced atomically (a temporary file
//!   renamed over it) and only when the value changes, so Calico's own CNI
//!   plugin and tabby's (with `mtu` absent or 0) both give pods the MTU the
//!   tunnels can carry.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use tabby_dataplane::Netlink;
use tabby_dataplane::encap::{
    IPIP_DEVICE, IPIP_OVERHEAD, VXLAN_DEVICE, VXLAN_OVERHEAD, VXLAN_V6_DEVICE, VXLAN_V6_OVERHEAD,
};
use tabby_model::{EncapMode, IpPool};

use crate::tunnels::TunnelKind;

/// Calico's MTU file: calico-node writes the pod MTU there and the CNI
/// plugins read it when their configuration's `mtu` is absent or 0.
pub const DEFAULT_MTU_FILE: &str = "/var/lib/calico/mtu";

/// FelixConfiguration `mtuIfacePattern`'s default: the interface names
/// of physical and cloud NICs (`eth*`, `ens*`, `enp*`, `eno*`, `wl*`, ...).
pub const DEFAULT_IFACE_PATTERN: &str = r"^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)";

/// The host MTU when no interface matches the pattern: Felix's fallback,
/// the smallest MTU among common cloud providers (GCE's).
pub const NO_MATCH_HOST_MTU: u32 = 1460;

/// The prefix of the host ends of pod veths (the CNI plugin's `tby...`).
const POD_VETH_PREFIX: &str = "tby";

/// The interface name pattern of the MTU detection
/// (`mtuIfacePattern`, a regular expression matched anywhere in the name
/// unless anchored, as Go's `regexp.MatchString`).
#[derive(Debug, Clone)]
pub struct IfacePattern(regex_lite::Regex);

impl IfacePattern {
    /// True when `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.0.is_match(name)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Default for IfacePattern {
    fn default() -> Self {
        IfacePattern(
            regex_lite::Regex::new(DEFAULT_IFACE_PATTERN)
                .expect("DEFAULT_IFACE_PATTERN is a valid expression (unit-tested)"),
        )
    }
}

impl FromStr for IfacePattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        regex_lite::Regex::new(s)
            .map(IfacePattern)
            .map_err(|e| format!("{s:?} is not a regular expression: {e}"))
    }
}

impl PartialEq for IfacePattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for IfacePattern {}

/// One host interface, as the detection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterface {
    /// Its name.
    pub name: String,
    /// Its MTU.
    pub mtu: u32,
    /// Operationally up (`IFF_RUNNING`); interfaces that are down are not
    /// candidates (Felix skips them: a NIC being set up is not the path).
    pub up: bool,
}

impl HostInterface {
    /// An interface (for tests and callers with their own link lists).
    pub fn new(name: &str, mtu: u32, up: bool) -> HostInterface {
        HostInterface {
            name: name.to_owned(),
            mtu,
            up,
        }
    }
}

/// True for interfaces that are never the underlay: loopback, pod veths
/// (`tby*`) and tabby's (Calico's) own tunnel devices, whatever the
/// pattern says.
pub fn is_own_or_loopback(name: &str) -> bool {
    name == "lo"
        || name.starts_with(POD_VETH_PREFIX)
        || [IPIP_DEVICE, VXLAN_DEVICE, VXLAN_V6_DEVICE].contains(&name)
}

/// The encapsulations pods' packets may get on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EncapsulationsInUse {
    /// IPIP (`tunl0`).
    pub ipip: bool,
    /// VXLAN over IPv4 (`vxlan.calico`).
    pub vxlan: bool,
    /// VXLAN over IPv6 (`vxlan-v6.calico`).
    pub vxlan_v6: bool,
}

impl EncapsulationsInUse {
    /// Felix's rule: IPIP when any pool's `ipipMode` is not Never, VXLAN
    /// (per family of the pool) when any pool's `vxlanMode` is not Never;
    /// disabled pools and pools whose node selector leaves this node out
    /// count too (their blocks are still routed, and encapsulated).
    pub fn from_pools(pools: &[IpPool]) -> EncapsulationsInUse {
        let any = |kind: TunnelKind| {
            pools
                .iter()
                .any(|p| p.spec.cidr.is_ipv6() == kind.is_v6() && kind.mode(p) != EncapMode::Never)
        };
        EncapsulationsInUse {
            ipip: any(TunnelKind::Ipip),
            vxlan: any(TunnelKind::Vxlan),
            vxlan_v6: any(TunnelKind::VxlanV6),
        }
    }

    /// The kinds in use.
    pub fn kinds(self) -> impl Iterator<Item = TunnelKind> {
        TunnelKind::ALL.into_iter().filter(move |k| match k {
            TunnelKind::Ipip => self.ipip,
            TunnelKind::Vxlan => self.vxlan,
            TunnelKind::VxlanV6 => self.vxlan_v6,
        })
    }

    /// The largest overhead among the encapsulations in use (0 for none),
    /// with the kind that has it.
    pub fn largest_overhead(self) -> Option<(TunnelKind, u32)> {
        self.kinds()
            .map(|k| (k, overhead(k)))
            .max_by_key(|(_, o)| *o)
    }
}

/// Bytes a tunnel kind adds to each packet.
pub fn overhead(kind: TunnelKind) -> u32 {
    match kind {
        TunnelKind::Ipip => IPIP_OVERHEAD,
        TunnelKind::Vxlan => VXLAN_OVERHEAD,
        TunnelKind::VxlanV6 => VXLAN_V6_OVERHEAD,
    }
}

/// What [`pod_mtu`] decided, with the reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtuPlan {
    /// The host MTU: the smallest candidate's, or [`NO_MATCH_HOST_MTU`].
    pub host_mtu: u32,
    /// The interface it came from (`None`: no interface matched).
    pub host_interface: Option<String>,
    /// The encapsulations in use.
    pub encapsulations: EncapsulationsInUse,
    /// The pods' MTU: the host MTU minus the largest overhead in use.
    pub pod_mtu: u32,
}

impl MtuPlan {
    /// The MTU of a tunnel device: the host MTU minus its overhead (set
    /// even when the kind is not in use, as Felix defaults them).
    pub fn tunnel_mtu(&self, kind: TunnelKind) -> u32 {
        self.host_mtu.saturating_sub(overhead(kind))
    }
}

impl fmt::Display for MtuPlan {
    /// `1350 (host MTU 1400 from eth0, minus 50 for VXLAN)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (host MTU {}", self.pod_mtu, self.host_mtu)?;
        match &self.host_interface {
            Some(i) => write!(f, " from {i}")?,
            None => write!(f, ": no interface matches the MTU interface pattern")?,
        }
        match self.encapsulations.largest_overhead() {
            Some((kind, o)) => write!(f, ", minus {o} for {})", kind_label(kind)),
            None => write!(f, ", no encapsulation in use)"),
        }
    }
}

fn kind_label(kind: TunnelKind) -> &'static str {
    match kind {
        TunnelKind::Ipip => "IPIP",
        TunnelKind::Vxlan => "VXLAN",
        TunnelKind::VxlanV6 => "VXLAN over IPv6",
    }
}

/// The pod MTU on a host with these interfaces and encapsulations: the
/// smallest MTU of the up interfaces matching `pattern` (loopback, pod
/// veths and tunnel devices excluded), [`NO_MATCH_HOST_MTU`] without one,
/// minus the largest overhead in use.
pub fn pod_mtu(
    interfaces: &[HostInterface],
    pattern: &IfacePattern,
    encapsulations: EncapsulationsInUse,
) -> MtuPlan {
    let smallest = interfaces
        .iter()
        .filter(|i| i.up && i.mtu > 0 && !is_own_or_loopback(&i.name) && pattern.matches(&i.name))
        .min_by(|a, b| a.mtu.cmp(&b.mtu).then_with(|| a.name.cmp(&b.name)));
    let (host_mtu, host_interface) = match smallest {
        Some(i) => (i.mtu, Some(i.name.clone())),
        None => (NO_MATCH_HOST_MTU, None),
    };
    let pod_mtu = host_mtu.saturating_sub(
        encapsulations
            .largest_overhead()
            .map_or(0, |(_, overhead)| overhead),
    );
    MtuPlan {
        host_mtu,
        host_interface,
        encapsulations,
        pod_mtu,
    }
}

/// The kernel's interfaces in the detection's terms.
pub fn host_interfaces(nl: &mut Netlink) -> Result<Vec<HostInterface>, tabby_dataplane::Error> {
    Ok(nl
        .links()?
        .into_iter()
        .map(|l| HostInterface {
            name: l.name,
            mtu: l.mtu,
            up: l.running,
        })
        .collect())
}

/// The MTU a file holds (decimal digits, surrounding white space allowed,
/// as Calico's CNI plugin reads it); `None` for anything else.
pub fn parse_mtu_file(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

/// Writes `mtu` to `path` unless it already holds that value: into a
/// temporary file beside it, then renamed over it, so a reader sees the
/// old value or the new one, never a partial one. Creates the directory.
/// True when the file was written.
pub fn write_mtu_file(path: &Path, mtu: u32) -> std::io::Result<bool> {
    if std::fs::read_to_string(path)
        .ok()
        .and_then(|t| parse_mtu_file(&t))
        == Some(mtu)
    {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mtu".to_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(mtu.to_string().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, mtu: u32) -> HostInterface {
        HostInterface::new(name, mtu, true)
    }

    const NONE: EncapsulationsInUse = EncapsulationsInUse {
        ipip: false,
        vxlan: false,
        vxlan_v6: false,
    };
    const IPIP: EncapsulationsInUse = EncapsulationsInUse { ipip: true, ..NONE };
    const VXLAN: EncapsulationsInUse = EncapsulationsInUse {
        vxlan: true,
        ..NONE
    };
    const VXLAN_V6: EncapsulationsInUse = EncapsulationsInUse {
        vxlan_v6: true,
        ..NONE
    };

    fn plan(ifaces: &[HostInterface], encaps: EncapsulationsInUse) -> MtuPlan {
        pod_mtu(ifaces, &IfacePattern::default(), encaps)
    }

    #[test]
    fn each_mode_and_family_subtracts_its_overhead() {
        let host = [iface("eth0", 1500)];
        assert_eq!(plan(&host, NONE).pod_mtu, 1500);
        assert_eq!(plan(&host, IPIP).pod_mtu, 1480);
        assert_eq!(plan(&host, VXLAN).pod_mtu, 1450);
        assert_eq!(plan(&host, VXLAN_V6).pod_mtu, 1430);
        let jumbo = [iface("ens5", 9001)];
        assert_eq!(plan(&jumbo, VXLAN).pod_mtu, 8951);
        assert_eq!(plan(&jumbo, NONE).pod_mtu, 9001);
    }

    #[test]
    fn the_largest_overhead_in_use_wins() {
        let host = [iface("eth0", 1500)];
        let both = EncapsulationsInUse {
            ipip: true,
            vxlan: true,
            vxlan_v6: false,
        };
        assert_eq!(plan(&host, both).pod_mtu, 1450);
        let all = EncapsulationsInUse {
            ipip: true,
            vxlan: true,
            vxlan_v6: true,
        };
        let p = plan(&host, all);
        assert_eq!(p.pod_mtu, 1430);
        assert_eq!(
            p.encapsulations.largest_overhead(),
            Some((TunnelKind::VxlanV6, 70))
        );
        let v4_ipip_v6_vxlan = EncapsulationsInUse {
            ipip: true,
            vxlan_v6: true,
            ..NONE
        };
        assert_eq!(plan(&host, v4_ipip_v6_vxlan).pod_mtu, 1430);
    }

    #[test]
    fn tunnel_devices_get_the_host_mtu_minus_their_own_overhead() {
        let p = plan(&[iface("eth0", 1400)], VXLAN);
        assert_eq!(p.tunnel_mtu(TunnelKind::Ipip), 1380);
        assert_eq!(p.tunnel_mtu(TunnelKind::Vxlan), 1350);
        assert_eq!(p.tunnel_mtu(TunnelKind::VxlanV6), 1330);
    }

    #[test]
    fn the_smallest_matching_interface_wins() {
        let host = [
            iface("eth0", 9000),
            iface("ens3", 1400),
            iface("enp1s0", 1500),
            iface("wlan0", 2000),
        ];
        let p = plan(&host, VXLAN);
        assert_eq!(p.host_mtu, 1400);
        assert_eq!(p.host_interface.as_deref(), Some("ens3"));
        assert_eq!(p.pod_mtu, 1350);
        assert_eq!(
            p.to_string(),
            "1350 (host MTU 1400 from ens3, minus 50 for VXLAN)"
        );
    }

    #[test]
    fn non_matching_down_and_own_interfaces_are_not_candidates() {
        let host = [
            iface("lo", 65536),
            iface("docker0", 1000),
            iface("bond0", 1200),
            iface("tby0123456789a", 1300),
            iface("tunl0", 1000),
            iface("vxlan.calico", 900),
            HostInterface::new("eth1", 1100, false),
            iface("eth0", 1500),
        ];
        let p = plan(&host, NONE);
        assert_eq!(p.host_interface.as_deref(), Some("eth0"));
        assert_eq!(p.pod_mtu, 1500);
        // Even a pattern matching everything never picks tabby's own
        // devices or loopback.
        let all: IfacePattern = ".*".parse().expect("pattern");
        let p = pod_mtu(&host, &all, NONE);
        assert_eq!(p.host_interface.as_deref(), Some("docker0"));
        assert_eq!(p.host_mtu, 1000);
    }

    #[test]
    fn no_matching_interface_falls_back_to_felix_default() {
        let p = plan(&[iface("bond0", 9000), iface("lo", 65536)], NONE);
        assert_eq!(p.host_mtu, NO_MATCH_HOST_MTU);
        assert_eq!(p.host_interface, None);
        assert_eq!(p.pod_mtu, 1460);
        assert_eq!(plan(&[], VXLAN).pod_mtu, 1410);
        assert!(
            plan(&[], VXLAN)
                .to_string()
                .contains("no interface matches the MTU interface pattern")
        );
    }

    #[test]
    fn the_default_pattern_is_calicos() {
        let p = IfacePattern::default();
        assert_eq!(p.as_str(), DEFAULT_IFACE_PATTERN);
        for name in [
            "eth0",
            "ens3",
            "enp0s3",
            "eno1",
            "enx00e04c",
            "enP1p1s0",
            "enc1",
            "env0",
            "wlp2s0",
            "wlan0",
            "wwan0",
            "wwp0s20",
            "slp1",
            "ibp1s0",
            "ens5",
        ] {
            assert!(p.matches(name), "{name}");
        }
        for name in [
            "lo",
            "docker0",
            "bond0",
            "br0",
            "cali1234",
            "veth9",
            "vxlan.calico",
            "enX0",
        ] {
            assert!(!p.matches(name), "{name}");
        }
        let custom: IfacePattern = "^bond".parse().expect("pattern");
        assert_eq!(
            pod_mtu(&[iface("bond0", 9000), iface("eth0", 1500)], &custom, IPIP).pod_mtu,
            8980
        );
        let bad = "(".parse::<IfacePattern>().expect_err("bad pattern");
        assert!(bad.contains("\"(\" is not a regular expression"), "{bad}");
    }

    fn pools(yaml: &str) -> Vec<IpPool> {
        tabby_model::parse_manifest("pools.yaml", yaml)
            .expect("manifest")
            .into_iter()
            .filter_map(|e| match e.resource {
                tabby_model::Resource::IpPool(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn encapsulations_in_use_follow_felix() {
        let p = pools(
            "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: plain}
spec: {cidr: 10.0.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec: {cidr: 'fd00:10::/48'}
",
        );
        assert_eq!(EncapsulationsInUse::from_pools(&p), NONE);
        let p = pools(
            "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: vx}
spec: {cidr: 10.1.0.0/16, vxlanMode: CrossSubnet, disabled: true, nodeSelector: '!all()'}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: ipip}
spec: {cidr: 10.2.0.0/16, ipipMode: Always}
",
        );
        assert_eq!(
            EncapsulationsInUse::from_pools(&p),
            EncapsulationsInUse {
                ipip: true,
                vxlan: true,
                vxlan_v6: false
            }
        );
        let p = pools(
            "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec: {cidr: 'fd00:10::/48', vxlanMode: Always}
",
        );
        assert_eq!(EncapsulationsInUse::from_pools(&p), VXLAN_V6);
    }

    #[test]
    fn the_file_is_replaced_only_on_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("mtu");
        assert!(write_mtu_file(&path, 1350).expect("write"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1350");
        let before = std::fs::metadata(&path).expect("meta").modified().ok();
        assert!(!write_mtu_file(&path, 1350).expect("same value"));
        assert_eq!(
            std::fs::metadata(&path).expect("meta").modified().ok(),
            before
        );
        assert!(write_mtu_file(&path, 1400).expect("new value"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1400");
        std::fs::write(&path, "garbage").expect("spoil");
        assert!(write_mtu_file(&path, 1400).expect("repair"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1400");
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("mtu")],
            "no temporary left"
        );
        // A path that cannot be written is an error for the caller to log.
        let blocked = path.join("mtu");
        assert!(write_mtu_file(&blocked, 1400).is_err());
        assert_eq!(parse_mtu_file(" 1450\n"), Some(1450));
        assert_eq!(parse_mtu_file("14x0"), None);
    }
}
