//! The `tabby bgpd` configuration file: its YAML (camelCase) model, defaults
//! and validation.
//!
//! Owns parsing and checking only. A config is refused whole with an error
//! that names the field path (`peers[1].holdTime`) and what is wrong with it;
//! unknown fields are refused too, so a typo never silently changes nothing.
//! Turning the validated config into `tabby-bgp` session and policy settings
//! is the daemon's job (`crate::daemon`).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tabby_bgp::policy::Policy;
pub use tabby_bgp::policy::Rule;
pub use tabby_bgp::rib::NextHopMode;

/// Default path of the control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/tabby/bgpd.sock";
/// Default hold time offered to peers, in seconds (RFC 4271 suggests 90).
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// Default connect-retry time, in seconds.
pub const DEFAULT_CONNECT_RETRY_TIME: u16 = 30;
/// Longest TCP MD5 key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_PASSWORD_LEN: usize = 80;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The document is not valid YAML or does not fit the schema (unknown
    /// field, wrong type, missing required field).
    #[error("{file}: {field}: {message}")]
    Parse {
        /// The file (or `<string>`).
        file: String,
        /// Field path where it went wrong (`peers[0].asNumber`), `.` for the root.
        field: String,
        /// What the parser said.
        message: String,
    },
    /// The document parsed but a value is not acceptable.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The file (or `<string>`).
        file: String,
        /// Field path of the offending value.
        field: String,
        /// What is wrong and what would be accepted.
        message: String,
    },
}

impl ConfigError {
    /// The field path the error names.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { field, .. } | ConfigError::Invalid { field, .. } => Some(field),
        }
    }
}

/// The whole `tabby bgpd` configuration.
///
/// ```yaml
/// asNumber: 64512
/// routerId: 10.0.0.1
/// listen: ["10.0.0.1:179"]
/// clusterId: 10.0.0.1
/// fib: true
/// originate: [10.10.0.0/24]
/// peers:
///   - address: 10.0.0.2
///     asNumber: 64512
///     routeReflectorClient: true
///   - address: 10.0.1.1
///     asNumber: 65000
///     password: s3cret
///     import:
///       - cidr: 10.0.0.0/8
///         matchOperator: In
///         action: Accept
///       - action: Reject
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpdConfig {
    /// Local AS number (4-octet).
    pub as_number: u32,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Addresses to accept sessions on; default `0.0.0.0:179` and `[::]:179`.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Neighbours.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Prefixes this speaker announces itself.
    #[serde(default)]
    pub originate: Vec<IpNet>,
    /// Program learned best paths into the kernel (ECMP for multipath).
    #[serde(default)]
    pub fib: bool,
    /// Unix socket for `tabby bgp ...`.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// Route-reflector cluster id; the router id when unset.
    #[serde(default)]
    pub cluster_id: Option<Ipv4Addr>,
    /// Graceful restart (RFC 4724) for every neighbour without a
    /// `gracefulRestart` of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GracefulRestartSettings>,
    /// How learned routes toward pod blocks are installed (Calico's
    /// `ipipMode` / `vxlanMode` pools); written by the node agent. A
    /// reload applies a change without touching the sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encapsulation: Option<FibEncapsulation>,
}

/// Encapsulation of learned routes (`fib: true`), as Calico's BIRD kernel
/// filter does it: a route toward an IPIP pool goes `via <next hop> dev
/// tunl0 onlink` (with CrossSubnet only when the next hop is outside
/// [`subnets`](Self::subnets)); a route toward a VXLAN pool is not
/// installed at all (the node agent programs those from the datastore).
///
/// ```yaml
/// encapsulation:
///   pools: [{cidr: 10.244.0.0/16, ipipMode: CrossSubnet, vxlanMode: Never}]
///   subnets: [10.20.0.0/23]
///   ipip: true
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FibEncapsulation {
    /// Pools with an encapsulation mode other than Never.
    #[serde(default)]
    pub pools: Vec<EncapsulatedPool>,
    /// This node's own subnets (CrossSubnet's "same subnet" test).
    #[serde(default)]
    pub subnets: Vec<IpNet>,
    /// `tunl0` is usable: IPIP routes go through it. False (a kernel
    /// without IPIP): they are installed natively instead.
    #[serde(default)]
    pub ipip: bool,
}

/// One pool's encapsulation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncapsulatedPool {
    /// The pool's CIDR.
    pub cidr: IpNet,
    /// Its `ipipMode`.
    #[serde(default)]
    pub ipip_mode: tabby_dataplane::encap::EncapMode,
    /// Its `vxlanMode`.
    #[serde(default)]
    pub vxlan_mode: tabby_dataplane::encap::EncapMode,
}

impl FibEncapsulation {
    /// The pool whose CIDR holds `destination`, if any.
    pub fn pool_of(&self, destination: &IpNet) -> Option<&EncapsulatedPool> {
        self.pools.iter().find(|p| p.cidr.contains(destination))
    }
}

/// Graceful restart (RFC 4724) settings.
///
/// With them the speaker advertises the capability (forwarding state
/// preserved for every family), keeps a restarting neighbour's routes
/// (stale, still installed) for the restart time it advertised and
/// replaces them when its End-of-RIB arrives; on SIGTERM it closes its
/// sessions without a NOTIFICATION and leaves its kernel routes, and on
/// the next start it adopts them, sets the Restart State bit and defers
/// route selection until End-of-RIB from every neighbour.
///
/// ```yaml
/// gracefulRestart: {restartTime: 120}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GracefulRestartSettings {
    /// Seconds a neighbour keeps our routes after our session drops
    /// (1..=4095; Calico's `maxRestartTime`).
    pub restart_time: u16,
    /// Seconds a restarted neighbour's stale routes are kept while waiting
    /// for its End-of-RIB (360 unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_routes_time: Option<u16>,
    /// Seconds a restarting speaker waits for End-of-RIB from its
    /// neighbours before selecting and advertising routes (120 unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_deferral_time: Option<u16>,
    /// Advertise the N bit (RFC 8538): when the neighbour sets it too, a
    /// session ended by a NOTIFICATION (hold timer expiry included, Cease
    /// / Hard Reset excepted) is also a graceful restart. Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notification: bool,
}

/// Default stale-routes time, seconds.
pub const DEFAULT_STALE_ROUTES_TIME: u16 = 360;
/// Default selection deferral time, seconds.
pub const DEFAULT_SELECTION_DEFERRAL_TIME: u16 = 120;

impl GracefulRestartSettings {
    /// The `tabby-bgp` settings (`restarting` sets the R bit).
    pub fn core(&self, restarting: bool) -> tabby_bgp::graceful_restart::GracefulRestartConfig {
        let mut c = tabby_bgp::graceful_restart::GracefulRestartConfig::new(self.restart_time);
        c.restarting = restarting;
        c.notification = self.notification;
        // Forwarding never depends on this process: routes to local pods
        // are the CNI plugin's, and the FIB sync leaves its routes in place
        // across a graceful restart.
        c.forwarding_preserved = true;
        c.stale_routes_time = Duration::from_secs(u64::from(
            self.stale_routes_time.unwrap_or(DEFAULT_STALE_ROUTES_TIME),
        ));
        c.selection_deferral_time = Duration::from_secs(u64::from(
            self.selection_deferral_time
                .unwrap_or(DEFAULT_SELECTION_DEFERRAL_TIME),
        ));
        c
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if !(1..=4095).contains(&self.restart_time) {
            return Err((
                "restartTime".into(),
                format!(
                    "{} s: must be 1..=4095 (12 bits in the capability)",
                    self.restart_time
                ),
            ));
        }
        for (f, v) in [
            ("staleRoutesTime", self.stale_routes_time),
            ("selectionDeferralTime", self.selection_deferral_time),
        ] {
            if v == Some(0) {
                return Err((f.into(), "must be at least 1 s".into()));
            }
        }
        Ok(())
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec![
        SocketAddr::from(([0, 0, 0, 0], 179)),
        SocketAddr::from(([0u16; 8], 179)),
    ]
}

fn default_control_socket() -> PathBuf {
    PathBuf::from(DEFAULT_CONTROL_SOCKET)
}

/// One neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerConfig {
    /// The neighbour's address (the session's remote end).
    pub address: IpAddr,
    /// The neighbour's AS; equal to ours means iBGP.
    pub as_number: u32,
    /// Remote TCP port (179).
    #[serde(default)]
    pub port: Option<u16>,
    /// Never connect; only accept the neighbour's connection.
    #[serde(default)]
    pub passive: bool,
    /// The neighbour is a route-reflector client of this speaker (iBGP only).
    #[serde(default)]
    pub route_reflector_client: bool,
    /// How the NEXT_HOP of routes sent to this neighbour is set.
    #[serde(default)]
    pub next_hop_mode: NextHopMode,
    /// How many times our own AS may appear in a received AS path
    /// (Calico's `numAllowedLocalASNumbers`).
    #[serde(default)]
    pub allow_own_as: u8,
    /// eBGP multihop: the TTL of packets to this neighbour (1 = directly connected).
    #[serde(default)]
    pub multihop: Option<u8>,
    /// Hold time offered, seconds (0 = no keepalives, or 3..=65535).
    #[serde(default)]
    pub hold_time: Option<u16>,
    /// Keepalive interval, seconds (a third of the hold time by default).
    #[serde(default)]
    pub keepalive_time: Option<u16>,
    /// Connect-retry interval, seconds.
    #[serde(default)]
    pub connect_retry_time: Option<u16>,
    /// TCP MD5 signature key (RFC 2385).
    #[serde(default)]
    pub password: Option<String>,
    /// GTSM (RFC 5082): the neighbour is at most this many hops away; packets
    /// are sent with TTL 255 and accepted only with TTL >= 256 - hops.
    #[serde(default)]
    pub ttl_security: Option<u8>,
    /// Local address to bind outgoing connections to.
    #[serde(default)]
    pub source_address: Option<IpAddr>,
    /// Import rules (Calico BGPFilter semantics, `tabby_bgp::policy::Rule`),
    /// first match wins; no match accepts.
    #[serde(default)]
    pub import: Vec<Rule>,
    /// Export rules, first match wins; no match accepts.
    #[serde(default)]
    pub export: Vec<Rule>,
    /// Run BFD (RFC 5880/5881, single hop) with this neighbour: when BFD
    /// says the path is down the BGP session is closed at once (Cease / BFD
    /// Down) instead of waiting for the hold timer.
    #[serde(default)]
    pub bfd: bool,
    /// BFD transmit and receive interval, milliseconds (300 unless set).
    #[serde(default)]
    pub bfd_interval_ms: Option<u32>,
    /// BFD detect multiplier: the neighbour is down after this many
    /// intervals without a packet (3 unless set).
    #[serde(default)]
    pub bfd_multiplier: Option<u8>,
    /// Carry only the neighbour address's own family: IPv6 routes only on
    /// an IPv6 session (by default an IPv6 session carries IPv4 too, which
    /// needs an IPv4 next hop the session does not have). The node agent
    /// sets it: like Calico, it runs one session per family.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub same_family_only: bool,
    /// Free text shown by `tabby bgp neighbors` (the node agent writes the
    /// peer's origin here: `node-to-node mesh`, `global`, ...). Changing it
    /// never touches the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Graceful restart with this neighbour (overrides the global
    /// `gracefulRestart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GracefulRestartSettings>,
}

impl PeerConfig {
    /// Remote port, 179 unless set.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(179)
    }
    /// Hold time offered.
    pub fn hold_time(&self) -> u16 {
        self.hold_time.unwrap_or(DEFAULT_HOLD_TIME)
    }
    /// Keepalive interval.
    pub fn keepalive_time(&self) -> u16 {
        self.keepalive_time.unwrap_or(self.hold_time() / 3)
    }
    /// The BFD session settings, when `bfd` is on.
    pub fn bfd_config(&self) -> Option<tabby_bfd::SessionConfig> {
        if !self.bfd {
            return None;
        }
        let defaults = tabby_bfd::SessionConfig::default();
        let interval = self.bfd_interval_ms.map_or(defaults.desired_min_tx, |ms| {
            Duration::from_millis(u64::from(ms))
        });
        Some(tabby_bfd::SessionConfig {
            desired_min_tx: interval,
            required_min_rx: interval,
            detect_mult: self.bfd_multiplier.unwrap_or(defaults.detect_mult),
        })
    }
    /// Connect-retry interval.
    pub fn connect_retry_time(&self) -> u16 {
        self.connect_retry_time
            .unwrap_or(DEFAULT_CONNECT_RETRY_TIME)
    }
}

impl BgpdConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<BgpdConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a config document; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<BgpdConfig, ConfigError> {
        let mut failed_at: Option<String> = None;
        let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, BgpdConfig>(de).map_err(|e| {
                failed_at = Some(e.path().to_string());
                e.into_inner()
            })
        });
        let config = parsed.map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            field: failed_at.unwrap_or_else(|| ".".to_owned()),
            message: e.to_string(),
        })?;
        config
            .validate()
            .map_err(|(field, message)| ConfigError::Invalid {
                file: file.to_owned(),
                field,
                message,
            })?;
        Ok(config)
    }

    /// The route-reflector cluster id in force.
    pub fn cluster_id(&self) -> Ipv4Addr {
        self.cluster_id.unwrap_or(self.router_id)
    }

    /// The graceful restart settings of neighbour `p` (its own, else the
    /// global ones), if any.
    pub fn graceful_restart_for<'a>(
        &'a self,
        p: &'a PeerConfig,
    ) -> Option<&'a GracefulRestartSettings> {
        p.graceful_restart
            .as_ref()
            .or(self.graceful_restart.as_ref())
    }

    /// True when some neighbour does graceful restart.
    pub fn any_graceful_restart(&self) -> bool {
        self.peers
            .iter()
            .any(|p| self.graceful_restart_for(p).is_some())
    }

    /// Checks values the schema cannot: returns (field path, message).
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_owned(), m));
        if self.as_number == 0 {
            return err("asNumber", "AS 0 is reserved (RFC 7607)".into());
        }
        if self.router_id.is_unspecified() || self.router_id.is_broadcast() {
            return err(
                "routerId",
                format!("{} cannot be a BGP identifier", self.router_id),
            );
        }
        if let Some(c) = self.cluster_id
            && c.is_unspecified()
        {
            return err("clusterId", "0.0.0.0 cannot be a cluster id".into());
        }
        if self.listen.is_empty() && self.peers.iter().any(|p| p.passive) {
            return err(
                "listen",
                "empty, but some peers are passive and could never connect".into(),
            );
        }
        let mut seen = HashSet::new();
        for (i, l) in self.listen.iter().enumerate() {
            if !seen.insert(*l) {
                return err(&format!("listen[{i}]"), format!("{l} listed twice"));
            }
        }
        for (i, net) in self.originate.iter().enumerate() {
            if net.trunc() != *net {
                return err(
                    &format!("originate[{i}]"),
                    format!("{net} has host bits set (did you mean {}?)", net.trunc()),
                );
            }
        }
        if let Some(g) = &self.graceful_restart {
            g.validate()
                .map_err(|(f, m)| (format!("gracefulRestart.{f}"), m))?;
        }
        let mut addrs = HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            let at = |f: &str| format!("peers[{i}].{f}");
            if let Some(g) = &p.graceful_restart {
                g.validate()
                    .map_err(|(f, m)| (at(&format!("gracefulRestart.{f}")), m))?;
            }
            if !addrs.insert(p.address) {
                return err(&at("address"), format!("{} is configured twice", p.address));
            }
            if p.address.is_unspecified() || p.address.is_multicast() {
                return err(
                    &at("address"),
                    format!("{} cannot be a neighbour", p.address),
                );
            }
            if p.as_number == 0 {
                return err(&at("asNumber"), "AS 0 is reserved (RFC 7607)".into());
            }
            if p.bfd_interval_ms == Some(0) {
                return err(&at("bfdIntervalMs"), "0 ms: must be at least 1".into());
            }
            if p.bfd_multiplier == Some(0) {
                return err(&at("bfdMultiplier"), "0: must be at least 1".into());
            }
            if (p.bfd_interval_ms.is_some() || p.bfd_multiplier.is_some()) && !p.bfd {
                let f = if p.bfd_interval_ms.is_some() {
                    "bfdIntervalMs"
                } else {
                    "bfdMultiplier"
                };
                return err(&at(f), "set, but bfd is not on (add `bfd: true`)".into());
            }
            if p.port == Some(0) {
                return err(&at("port"), "port 0 cannot be connected to".into());
            }
            let ibgp = p.as_number == self.as_number;
            if p.route_reflector_client && !ibgp {
                return err(
                    &at("routeReflectorClient"),
                    format!(
                        "route reflection is for iBGP: peer AS {} differs from ours ({})",
                        p.as_number, self.as_number
                    ),
                );
            }
            if let Some(h) = p.hold_time
                && (h == 1 || h == 2)
            {
                return err(
                    &at("holdTime"),
                    format!("{h} s: must be 0 or at least 3 (RFC 4271)"),
                );
            }
            if let Some(k) = p.keepalive_time {
                let h = p.hold_time();
                if h == 0 && k != 0 {
                    return err(&at("keepaliveTime"), "must be 0 when holdTime is 0".into());
                }
                if h != 0 && (k == 0 || k >= h) {
                    return err(
                        &at("keepaliveTime"),
                        format!("{k} s: must be between 1 and holdTime ({h} s) - 1"),
                    );
                }
            }
            if p.connect_retry_time == Some(0) {
                return err(&at("connectRetryTime"), "must be at least 1 s".into());
            }
            if p.multihop == Some(0) {
                return err(
                    &at("multihop"),
                    "TTL 0 would never leave the host; use 1..=255".into(),
                );
            }
            if let Some(h) = p.ttl_security {
                if h == 0 {
                    return err(&at("ttlSecurity"), "hop count must be 1..=254".into());
                }
                if p.multihop.is_some() {
                    return err(
                        &at("ttlSecurity"),
                        "cannot be combined with multihop (GTSM always sends TTL 255)".into(),
                    );
                }
            }
            if let Some(pw) = &p.password {
                if pw.is_empty() || pw.len() > MAX_PASSWORD_LEN {
                    return err(
                        &at("password"),
                        format!("must be 1..={MAX_PASSWORD_LEN} bytes (TCP MD5 key)"),
                    );
                }
            }
            if let Some(src) = p.source_address
                && src.is_ipv4() != p.address.is_ipv4()
            {
                return err(
                    &at("sourceAddress"),
                    format!("{src} is not of the same family as {}", p.address),
                );
            }
            for (kind, rules) in [("import", &p.import), ("export", &p.export)] {
                for (j, r) in rules.iter().enumerate() {
                    let base = format!("peers[{i}].{kind}[{j}]");
                    validate_rule(r).map_err(|(f, m)| (format!("{base}.{f}"), m))?;
                }
            }
        }
        Ok(())
    }
}

fn validate_rule(r: &Rule) -> Result<(), (String, String)> {
    let max_len = match r.cidr {
        Some(tabby_bgp::Prefix::V4(_)) => 32,
        _ => 128,
    };
    if let Some(pl) = r.prefix_length {
        for (f, v) in [("min", pl.min), ("max", pl.max)] {
            if let Some(v) = v
                && v > max_len
            {
                return Err((
                    format!("prefixLength.{f}"),
                    format!("{v} is longer than {max_len}"),
                ));
            }
        }
        if let (Some(lo), Some(hi)) = (pl.min, pl.max)
            && lo > hi
        {
            return Err((
                "prefixLength".into(),
                format!("min {lo} is greater than max {hi}"),
            ));
        }
    }
    if r.action == tabby_bgp::policy::Action::Reject && !r.modifications().is_empty() {
        return Err((
            "action".into(),
            "Reject with modifications (addCommunity, prependASPath, setLocalPref, setMED, nextHop) that would never apply".into(),
        ));
    }
    if r.prepend_as_path.contains(&0) {
        return Err(("prependASPath".into(), "AS 0 cannot be prepended".into()));
    }
    Ok(())
}

/// Builds a `tabby-bgp` policy from config rules: a rule with an IPv4 (IPv6)
/// `cidr` applies to IPv4 (IPv6) routes, one without a `cidr` to both.
pub fn policy(rules: &[Rule]) -> Policy {
    let mut p = Policy::default();
    for r in rules {
        match r.cidr {
            Some(tabby_bgp::Prefix::V4(_)) => p.v4.push(r.clone()),
            Some(tabby_bgp::Prefix::V6(_)) => p.v6.push(r.clone()),
            None => {
                p.v4.push(r.clone());
                p.v6.push(r.clone());
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<BgpdConfig, ConfigError> {
        BgpdConfig::parse(s, "test.yaml")
    }

    fn field_of(s: &str) -> String {
        let e = parse(s).expect_err("config should be refused");
        e.field().expect("names a field").to_owned()
    }

    const GOOD: &str = r#"
asNumber: 64512
routerId: 10.0.0.1
listen: ["10.0.0.1:179", "[fd00::1]:1179"]
clusterId: 10.0.0.100
fib: true
controlSocket: /tmp/x.sock
originate: [10.10.0.0/24, "fd00:10::/64"]
peers:
  - address: 10.0.0.2
    asNumber: 64512
    routeReflectorClient: true
    holdTime: 9
    keepaliveTime: 3
  - address: 10.0.1.1
    asNumber: 65000
    port: 1179
    passive: true
    nextHopMode: Self
    password: s3cret
    ttlSecurity: 1
    import:
      - cidr: 10.0.0.0/8
        matchOperator: In
        prefixLength: {min: 16, max: 24}
        communities: ["65000:100"]
        asPathPrefix: [65000]
        action: Accept
        addCommunity: ["64512:7"]
        setLocalPref: 200
      - action: Reject
    export:
      - peerType: eBGP
        action: Accept
        prependASPath: [64512, 64512]
"#;

    #[test]
    fn full_example_parses_with_defaults() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.as_number, 64512);
        assert_eq!(c.cluster_id(), Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.peers[0].port(), 179);
        assert_eq!(c.peers[0].keepalive_time(), 3);
        assert_eq!(c.peers[1].next_hop_mode, NextHopMode::SelfAddress);
        assert_eq!(c.peers[1].import[0].set_local_pref, Some(200));
        assert_eq!(c.peers[1].export[0].prepend_as_path, vec![64512, 64512]);
        let p = policy(&c.peers[1].import);
        assert_eq!(
            (p.v4.len(), p.v6.len()),
            (2, 1),
            "the cidr rule is IPv4 only"
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("asNumber: 65001\nrouterId: 1.1.1.1\n").expect("valid");
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
        assert!(!c.fib);
        assert!(c.peers.is_empty());
        assert_eq!(c.cluster_id(), Ipv4Addr::new(1, 1, 1, 1));
    }

    #[test]
    fn bfd_settings_parse_and_are_checked() {
        let base =
            "asNumber: 1\nrouterId: 1.1.1.1\npeers:\n  - address: 10.0.0.2\n    asNumber: 2\n";
        let c = parse(&format!("{base}    bfd: true\n")).expect("valid");
        let b = c.peers[0].bfd_config().expect("bfd on");
        assert_eq!(b, tabby_bfd::SessionConfig::default());
        let c = parse(&format!(
            "{base}    bfd: true\n    bfdIntervalMs: 50\n    bfdMultiplier: 5\n"
        ))
        .expect("valid");
        let b = c.peers[0].bfd_config().expect("bfd on");
        assert_eq!(b.desired_min_tx, Duration::from_millis(50));
        assert_eq!(b.required_min_rx, Duration::from_millis(50));
        assert_eq!(b.detect_mult, 5);
        assert!(parse(base).expect("valid").peers[0].bfd_config().is_none());
        assert_eq!(
            field_of(&format!("{base}    bfdIntervalMs: 50\n")),
            "peers[0].bfdIntervalMs"
        );
        assert_eq!(
            field_of(&format!("{base}    bfd: true\n    bfdMultiplier: 0\n")),
            "peers[0].bfdMultiplier"
        );
    }

    #[test]
    fn unknown_field_is_refused_with_its_path() {
        let e = parse("asNumber: 1\nrouterId: 1.1.1.1\npeers:\n  - address: 10.0.0.2\n    asNumber: 2\n    holdtime: 9\n")
            .expect_err("typo refused");
        let msg = e.to_string();
        assert!(msg.contains("holdtime"), "{msg}");
        assert!(e.field().expect("field").starts_with("peers[0]"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        assert_eq!(
            field_of(
                "asNumber: 1\nrouterId: 1.1.1.1\npeers:\n  - address: 10.0.0.2\n    asNumber: lots\n"
            ),
            "peers[0].asNumber"
        );
        assert_eq!(field_of("asNumber: 1\nrouterId: nope\n"), "routerId");
        assert_eq!(
            field_of(
                "asNumber: 1\nrouterId: 1.1.1.1\npeers:\n  - address: 10.0.0.2\n    asNumber: 2\n    nextHopMode: Sometimes\n"
            ),
            "peers[0].nextHopMode"
        );
    }

    #[test]
    fn missing_required_field_is_refused() {
        let e = parse("routerId: 1.1.1.1\n").expect_err("no AS");
        assert!(e.to_string().contains("asNumber"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let base = "asNumber: 64512\nrouterId: 10.0.0.1\n";
        let cases: &[(&str, &str)] = &[
            ("asNumber: 0\nrouterId: 1.1.1.1\n", "asNumber"),
            ("asNumber: 1\nrouterId: 0.0.0.0\n", "routerId"),
            ("originate: [10.0.0.1/24]\n", "originate[0]"),
            (
                "peers: [{address: 10.0.0.2, asNumber: 1, routeReflectorClient: true}]\n",
                "peers[0].routeReflectorClient",
            ),
            (
                "peers: [{address: 10.0.0.2, asNumber: 1, holdTime: 2}]\n",
                "peers[0].holdTime",
            ),
            (
                "peers: [{address: 10.0.0.2, asNumber: 1, holdTime: 9, keepaliveTime: 9}]\n",
                "peers[0].keepaliveTime",
            ),
            (
                "peers: [{address: 10.0.0.2, asNumber: 1}, {address: 10.0.0.2, asNumber: 2}]\n",
                "peers[1].address",
            ),
            (
                "peers: [{address: 10.0.0.2, asNumber: 1, ttlSecurity: 1, multihop: 2}]\n",
                "peers[0].ttlSecurity",
            ),
            (
                "peers: [{address: 10.0.0.2, asNumber: 1, password: \"\"}]\n",
                "peers[0].password",
            ),
            (
                "peers: [{address: 10.0.0.2, asNumber: 1, sourceAddress: \"fd00::1\"}]\n",
                "peers[0].sourceAddress",
            ),
            (
                "peers: [{address: 10.0.0.2, asNumber: 1, import: [{action: Accept}, {action: Reject, cidr: 10.0.0.0/8, matchOperator: Inside}]}]\n",
                "peers[0].import[1].matchOperator",
            ),
            (
                "peers: [{address: 10.0.0.2, asNumber: 1, export: [{action: Reject, setMED: 5}]}]\n",
                "peers[0].export[0].action",
            ),
            (
                "peers: [{address: 10.0.0.2, asNumber: 1, export: [{action: Accept, prefixLength: {min: 24, max: 16}}]}]\n",
                "peers[0].export[0].prefixLength",
            ),
        ];
        for (doc, field) in cases {
            let text = if doc.starts_with("asNumber") {
                (*doc).to_owned()
            } else {
                format!("{base}{doc}")
            };
            let e = parse(&text).expect_err(doc);
            assert_eq!(e.field(), Some(*field), "{doc} -> {e}");
        }
    }

    #[test]
    fn readme_example_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("# /etc/tabby/bgpd.yaml")
            .expect("example in README");
        let body = &readme[start..];
        let end = body.find("```").expect("end of example");
        let c = parse(&body[..end]).expect("README example parses");
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.peers[1].ttl_security, Some(1));
        assert_eq!(policy(&c.peers[1].import).v4.len(), 2);
    }
}

#[cfg(test)]
mod graceful_restart_tests {
    use super::*;

    const BASE: &str = "asNumber: 64512\nrouterId: 10.0.0.1\n";

    #[test]
    fn global_and_per_neighbour_settings() {
        let c = BgpdConfig::parse(
            &format!("{BASE}gracefulRestart: {{restartTime: 120}}\npeers:\n  - {{address: 10.0.0.2, asNumber: 64512}}\n  - {{address: 10.0.0.3, asNumber: 64512, gracefulRestart: {{restartTime: 30, staleRoutesTime: 60}}}}\n"),
            "t.yaml",
        )
        .expect("valid");
        let g0 = c.graceful_restart_for(&c.peers[0]).expect("global");
        assert_eq!(g0.restart_time, 120);
        let g1 = c.graceful_restart_for(&c.peers[1]).expect("own");
        assert_eq!(g1.restart_time, 30);
        let core = g1.core(true);
        assert!(core.restarting && core.forwarding_preserved);
        assert_eq!(core.stale_routes_time, Duration::from_secs(60));
        assert!(!core.notification);
        let n = BgpdConfig::parse(
            &format!("{BASE}gracefulRestart: {{restartTime: 120, notification: true}}\n"),
            "t.yaml",
        )
        .expect("valid");
        assert!(n.graceful_restart.expect("set").core(false).notification);
        assert!(c.any_graceful_restart());
    }

    #[test]
    fn bad_restart_times_name_the_field() {
        for (text, field) in [
            (
                format!("{BASE}gracefulRestart: {{restartTime: 5000}}\n"),
                "gracefulRestart.restartTime",
            ),
            (
                format!(
                    "{BASE}peers:\n  - {{address: 10.0.0.2, asNumber: 1, gracefulRestart: {{restartTime: 0}}}}\n"
                ),
                "peers[0].gracefulRestart.restartTime",
            ),
            (
                format!("{BASE}gracefulRestart: {{restartTime: 10, selectionDeferralTime: 0}}\n"),
                "gracefulRestart.selectionDeferralTime",
            ),
        ] {
            let e = BgpdConfig::parse(&text, "t.yaml").expect_err("refused");
            assert_eq!(e.field(), Some(field), "{e}");
        }
    }
}
