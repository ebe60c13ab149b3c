//! The kernel parameters a node needs, written under `/proc/sys/net` of the
//! calling thread's network namespace (use [`Netns::run`](crate::Netns::run)
//! for another namespace): forwarding, reverse-path filtering, proxy ARP /
//! NDP and router advertisements, per interface or for `all`/`default`.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// IP version of a per-interface setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `net.ipv4`.
    V4,
    /// `net.ipv6`.
    V6,
}

/// Reverse-path filtering mode (`rp_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpFilter {
    /// 0: no source validation.
    Off,
    /// 1: strict (RFC 3704 strict reverse path).
    Strict,
    /// 2: loose (source reachable through any interface).
    Loose,
}

/// Path of `net.<family>.conf.<interface>.<key>`; `interface` may be a real
/// interface name (dots included) or `all` / `default`.
pub fn conf_path(family: Family, interface: &str, key: &str) -> Result<PathBuf> {
    let bad = |field: &str, v: &str| Error::Invalid {
        field: field.into(),
        reason: format!("{v:?} cannot be part of a /proc/sys path"),
    };
    if interface.is_empty() || interface.contains('/') || interface == "." || interface == ".." {
        return Err(bad("interface", interface));
    }
    if key.is_empty() || key.contains('/') || key.contains("..") {
        return Err(bad("key", key));
    }
    let fam = match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    };
    Ok(PathBuf::from(format!(
        "/proc/sys/net/{fam}/conf/{interface}/{key}"
    )))
}

/// Writes `value` to a file under /proc/sys.
pub fn write(path: &std::path::Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| Error::Sysctl {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a file under /proc/sys, trimmed.
pub fn read(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| Error::Sysctl {
            path: path.to_path_buf(),
            source,
        })
}

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// `net.ipv4.ip_forward`.
pub fn set_ipv4_forwarding(on: bool) -> Result<()> {
    write(
        std::path::Path::new("/proc/sys/net/ipv4/ip_forward"),
        flag(on),
    )
}

/// `net.ipv6.conf.<interface>.forwarding` (`all` for the node).
pub fn set_ipv6_forwarding(interface: &str, on: bool) -> Result<()> {
    write(&conf_path(Family::V6, interface, "forwarding")?, flag(on))
}

/// `net.ipv4.conf.<interface>.rp_filter`.
pub fn set_rp_filter(interface: &str, mode: RpFilter) -> Result<()> {
    let v = match mode {
        RpFilter::Off => "0",
        RpFilter::Strict => "1",
        RpFilter::Loose => "2",
    };
    write(&conf_path(Family::V4, interface, "rp_filter")?, v)
}

/// `net.ipv4.conf.<interface>.proxy_arp` (the host side of a pod veth
/// answers ARP for the pod's gateway 169.254.1.1).
pub fn set_proxy_arp(interface: &str, on: bool) -> Result<()> {
    write(&conf_path(Family::V4, interface, "proxy_arp")?, flag(on))
}

/// `net.ipv4.neigh.<interface>.proxy_delay` in hundredths of a second
/// (0: answer proxy ARP at once instead of after up to 0.8 s).
pub fn set_proxy_delay(interface: &str, centiseconds: u32) -> Result<()> {
    // Same name rules as `conf` paths.
    conf_path(Family::V4, interface, "proxy_delay")?;
    let path = PathBuf::from(format!("/proc/sys/net/ipv4/neigh/{interface}/proxy_delay"));
    write(&path, &centiseconds.to_string())
}

/// `net.ipv6.conf.<interface>.proxy_ndp`.
pub fn set_proxy_ndp(interface: &str, on: bool) -> Result<()> {
    write(&conf_path(Family::V6, interface, "proxy_ndp")?, flag(on))
}

/// `net.ipv6.conf.<interface>.accept_ra` (0 never, 1 unless forwarding,
/// 2 even when forwarding).
pub fn set_accept_ra(interface: &str, mode: u8) -> Result<()> {
    if mode > 2 {
        return Err(Error::Invalid {
            field: "accept_ra".into(),
            reason: format!("{mode} is not 0, 1 or 2"),
        });
    }
    write(
        &conf_path(Family::V6, interface, "accept_ra")?,
        &mode.to_string(),
    )
}

/// What a node needs: IPv4 and IPv6 forwarding on.
pub fn enable_node_forwarding() -> Result<()> {
    set_ipv4_forwarding(true)?;
    set_ipv6_forwarding("all", true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_dots_and_refuse_traversal() {
        let p = conf_path(Family::V4, "vxlan.tabby", "proxy_arp").expect("path");
        assert_eq!(
            p,
            PathBuf::from("/proc/sys/net/ipv4/conf/vxlan.tabby/proxy_arp")
        );
        assert!(conf_path(Family::V6, "../x", "forwarding").is_err());
        assert!(conf_path(Family::V6, "..", "forwarding").is_err());
        assert!(conf_path(Family::V6, "eth0", "../../x").is_err());
        assert!(set_accept_ra("eth0", 3).is_err());
    }
}
