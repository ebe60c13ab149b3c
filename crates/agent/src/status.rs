//! `tabby node status`: the agent's sessions as calicoctl shows them
//! (peer address, type, state, since, info), from the speaker's
//! neighbour list; also the stable JSON form for scripts.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tabby_speaker::control::NeighborStatus;

/// One session row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRow {
    /// The peer's address.
    pub peer_address: IpAddr,
    /// The peer's AS.
    pub as_number: u32,
    /// `node-to-node mesh`, `global`, `node specific`, with `, RR client`
    /// when this node reflects routes to it.
    pub peer_type: String,
    /// FSM state (`Established`, `Active`, ...).
    pub state: String,
    /// `up` when Established, else `down` (calicoctl's `start`/`up`).
    pub summary: String,
    /// Seconds in the current state.
    pub since_secs: Option<u64>,
    /// The last error, or `Established`; while the peer restarts
    /// gracefully, `graceful restart: N stale routes kept` first.
    pub info: String,
    /// Graceful restart with this peer: `negotiated`, `restarting` (its
    /// routes kept stale), absent when not negotiated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<String>,
    /// Routes from this peer kept stale through its restart.
    #[serde(default)]
    pub stale_routes: u64,
}

/// Rows from the speaker's neighbours.
pub fn session_rows(neighbors: &[NeighborStatus]) -> Vec<SessionRow> {
    neighbors
        .iter()
        .map(|n| {
            let mut peer_type = n
                .description
                .clone()
                .unwrap_or_else(|| "configured".to_owned());
            if n.route_reflector_client {
                peer_type.push_str(", RR client");
            }
            let up = n.state == "Established";
            SessionRow {
                peer_address: n.address,
                as_number: n.as_number,
                peer_type,
                state: n.state.clone(),
                summary: if up { "up" } else { "down" }.to_owned(),
                since_secs: n.uptime_secs,
                info: match (up, n.graceful_restart.as_deref()) {
                    (true, _) => "Established".to_owned(),
                    (false, Some("restarting")) => {
                        let kept =
                            format!("graceful restart: {} stale routes kept", n.stale_routes);
                        match &n.last_error {
                            Some(e) => format!("{kept}; {e}"),
                            None => kept,
                        }
                    }
                    (false, _) => n.last_error.clone().unwrap_or_default(),
                },
                graceful_restart: n.graceful_restart.clone(),
                stale_routes: n.stale_routes,
            }
        })
        .collect()
}

fn since(secs: Option<u64>) -> String {
    match secs {
        None => "-".to_owned(),
        Some(s) if s < 60 => format!("{s}s"),
        Some(s) if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        Some(s) if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        Some(s) => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The table `tabby node status` prints.
pub fn render_table(rows: &[SessionRow]) -> String {
    let header = ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.peer_address.to_string(),
                r.peer_type.clone(),
                r.summary.clone(),
                since(r.since_secs),
                if r.info.is_empty() {
                    r.state.clone()
                } else if r.summary == "up" {
                    r.info.clone()
                } else {
                    format!("{} {}", r.state, r.info)
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for c in &cells {
        for (w, v) in widths.iter_mut().zip(c) {
            *w = (*w).max(v.len());
        }
    }
    let line = |vals: &[&str]| {
        let mut s = String::new();
        for (i, v) in vals.iter().enumerate() {
            if i + 1 == vals.len() {
                s.push_str(v);
            } else {
                s.push_str(&format!("{v:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(&header);
    for c in &cells {
        out.push_str(&line(&c.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_report_reads_as_a_table_and_round_trips() {
        let r = NodeReport {
            ipip: "off".into(),
            vxlan: "up".into(),
            vxlan_v6: "kernel-lacks".into(),
            vxlan_routes: 3,
            pod_mtu: Some("1450 (host MTU 1500 from eth0, minus 50 for VXLAN)".into()),
            announced_prefixes: 2,
            warnings: vec!["BGPPeer x: skipped".into()],
            error: None,
        };
        let t = render_node_report(&r);
        for line in [
            "  tunl0            off\n",
            "  vxlan.calico     up (3 routes)\n",
            "  vxlan-v6.calico  kernel-lacks\n",
            "  pod MTU          1450 (host MTU 1500 from eth0, minus 50 for VXLAN)\n",
            "  announced        2 prefixes\n",
            "  warning          BGPPeer x: skipped\n",
        ] {
            assert!(t.contains(line), "{line:?} in {t}");
        }
        assert!(!t.contains("error"), "{t}");
        let json = serde_json::to_string(&r).expect("json");
        assert!(json.contains("\"vxlanV6\":\"kernel-lacks\""), "{json}");
        assert_eq!(serde_json::from_str::<NodeReport>(&json).expect("back"), r);
    }

    fn neighbor(addr: &str, state: &str, desc: &str, rr: bool) -> NeighborStatus {
        serde_json::from_value(serde_json::json!({
            "address": addr, "port": 179, "asNumber": 64512, "sessionType": "iBGP",
            "state": state, "uptimeSecs": 75, "routerId": null, "holdTime": null,
            "lastError": if state == "Established" { serde_json::Value::Null } else { "connection refused".into() },
            "prefixesReceived": 0, "prefixesAccepted": 0, "prefixesAdvertised": 0,
            "routeReflectorClient": rr, "description": desc
        }))
        .expect("neighbor")
    }

    #[test]
    fn rows_and_table_show_type_state_and_info() {
        let rows = session_rows(&[
            neighbor("10.0.0.2", "Established", "node-to-node mesh", false),
            neighbor("10.0.0.9", "Active", "global", true),
        ]);
        assert_eq!(rows[0].summary, "up");
        assert_eq!(rows[0].info, "Established");
        assert_eq!(rows[1].peer_type, "global, RR client");
        assert_eq!(rows[1].info, "connection refused");
        let t = render_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("PEER ADDRESS"), "{t}");
        assert!(
            lines[1].contains("node-to-node mesh") && lines[1].contains("1m15s"),
            "{t}"
        );
        assert!(
            lines[2].contains("down") && lines[2].contains("Active connection refused"),
            "{t}"
        );
    }
}

/// Counters and gauges of the agent itself, for [`render_metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentCounters {
    /// Times the agent brought the speaker and kernel in line.
    pub reconciles: u64,
    /// Times the speaker was restarted in-process (a change it cannot reload).
    pub speaker_restarts: u64,
    /// Prefixes the node announces.
    pub announced_prefixes: u64,
    /// Local blocks (blackhole routes).
    pub local_blocks: u64,
    /// `tunl0` (IPIP pools).
    pub ipip: crate::tunnels::DeviceState,
    /// `vxlan.calico` (IPv4 VXLAN pools).
    pub vxlan: crate::tunnels::DeviceState,
    /// `vxlan-v6.calico` (IPv6 VXLAN pools).
    pub vxlan_v6: crate::tunnels::DeviceState,
    /// Routes the agent holds toward VXLAN pools' remote blocks.
    pub vxlan_routes: u64,
}

fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What `tabby node status` shows besides the sessions: the agent writes
/// it to `<state dir>/status.json` after each reconcile (when it changed),
/// and that file is also the stable JSON form for scripts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    /// `tunl0`: `off`, `pending`, `up`, `kernel-lacks`, `failed`.
    pub ipip: String,
    /// `vxlan.calico`, same states.
    pub vxlan: String,
    /// `vxlan-v6.calico`, same states.
    pub vxlan_v6: String,
    /// Routes the agent holds toward VXLAN pools' remote blocks.
    pub vxlan_routes: u64,
    /// The detected pod MTU and where it comes from
    /// (`1450 (host MTU 1500 from eth0, minus 50 for VXLAN)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_mtu: Option<String>,
    /// Prefixes the node announces.
    pub announced_prefixes: u64,
    /// Warnings of the last plan (unsupported fields, skipped peers).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Why there is no speaker configuration, if there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The name of the report file in the agent's state directory.
pub const NODE_REPORT_FILE: &str = "status.json";

/// The node report as text, after the sessions table.
pub fn render_node_report(r: &NodeReport) -> String {
    let mut out = String::from(
        "Node
",
    );
    let routes = if r.vxlan == "up" {
        format!(" ({} routes)", r.vxlan_routes)
    } else {
        String::new()
    };
    out.push_str(&format!(
        "  tunl0            {}
",
        r.ipip
    ));
    out.push_str(&format!(
        "  vxlan.calico     {}{routes}
",
        r.vxlan
    ));
    out.push_str(&format!(
        "  vxlan-v6.calico  {}
",
        r.vxlan_v6
    ));
    if let Some(m) = &r.pod_mtu {
        out.push_str(&format!(
            "  pod MTU          {m}
"
        ));
    }
    out.push_str(&format!(
        "  announced        {} prefixes
",
        r.announced_prefixes
    ));
    if let Some(e) = &r.error {
        out.push_str(&format!(
            "  error            {e}
"
        ));
    }
    for w in &r.warnings {
        out.push_str(&format!(
            "  warning          {w}
"
        ));
    }
    out
}

/// The Prometheus text exposition of the agent's state.
pub fn render_metrics(rows: &[SessionRow], c: &AgentCounters) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in samples {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    metric(
        "tabby_agent_bgp_session_up",
        "gauge",
        "1 when the BGP session is Established, else 0.",
        rows.iter()
            .map(|r| {
                (
                    format!(
                        "{{peer=\"{}\",type=\"{}\",state=\"{}\"}}",
                        r.peer_address,
                        label_value(&r.peer_type),
                        label_value(&r.state)
                    ),
                    u64::from(r.summary == "up"),
                )
            })
            .collect(),
    );
    metric(
        "tabby_agent_bgp_sessions",
        "gauge",
        "Configured BGP sessions.",
        vec![(String::new(), rows.len() as u64)],
    );
    metric(
        "tabby_agent_bgp_sessions_established",
        "gauge",
        "Established BGP sessions.",
        vec![(
            String::new(),
            rows.iter().filter(|r| r.summary == "up").count() as u64,
        )],
    );
    metric(
        "tabby_agent_announced_prefixes",
        "gauge",
        "Prefixes this node announces (blocks, borrowed addresses, service CIDRs).",
        vec![(String::new(), c.announced_prefixes)],
    );
    metric(
        "tabby_agent_local_blocks",
        "gauge",
        "IPAM blocks affine to this node (each with a blackhole route).",
        vec![(String::new(), c.local_blocks)],
    );
    metric(
        "tabby_agent_reconciles_total",
        "counter",
        "Times the agent applied the cluster state to the speaker and the kernel.",
        vec![(String::new(), c.reconciles)],
    );
    metric(
        "tabby_agent_speaker_restarts_total",
        "counter",
        "In-process restarts of the BGP speaker (changes it cannot reload).",
        vec![(String::new(), c.speaker_restarts)],
    );
    let tunnel = |kind: &str, device: &str, state: crate::tunnels::DeviceState| {
        crate::tunnels::DeviceState::ALL
            .iter()
            .map(|s| {
                (
                    format!(
                        "{{kind=\"{kind}\",device=\"{device}\",state=\"{}\"}}",
                        s.as_str()
                    ),
                    u64::from(*s == state),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut tunnels = tunnel("ipip", tabby_dataplane::encap::IPIP_DEVICE, c.ipip);
    tunnels.extend(tunnel(
        "vxlan",
        tabby_dataplane::encap::VXLAN_DEVICE,
        c.vxlan,
    ));
    metric(
        "tabby_agent_tunnel_state",
        "gauge",
        "1 for the state each tunnel device is in (off, pending, up, kernel-lacks: the kernel cannot create it and the pool is routed natively, failed).",
        tunnels,
    );
    metric(
        "tabby_agent_vxlan_routes",
        "gauge",
        "Routes toward other nodes' blocks of VXLAN pools (via vxlan.calico / vxlan-v6.calico, or native with CrossSubnet).",
        vec![(String::new(), c.vxlan_routes)],
    );
    out
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    #[test]
    fn metrics_are_prometheus_text() {
        let rows = vec![SessionRow {
            peer_address: "10.0.0.2".parse().expect("ip"),
            as_number: 64512,
            peer_type: "node-to-node mesh".into(),
            state: "Established".into(),
            summary: "up".into(),
            since_secs: Some(3),
            info: "Established".into(),
            graceful_restart: Some("negotiated".into()),
            stale_routes: 0,
        }];
        let c = AgentCounters {
            reconciles: 4,
            speaker_restarts: 1,
            announced_prefixes: 2,
            local_blocks: 1,
            ipip: crate::tunnels::DeviceState::KernelLacks,
            ..Default::default()
        };
        let m = render_metrics(&rows, &c);
        assert!(
            m.contains("# TYPE tabby_agent_bgp_session_up gauge\n"),
            "{m}"
        );
        assert!(
            m.contains("tabby_agent_bgp_session_up{peer=\"10.0.0.2\",type=\"node-to-node mesh\",state=\"Established\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("tabby_agent_bgp_sessions_established 1\n"),
            "{m}"
        );
        assert!(m.contains("tabby_agent_reconciles_total 4\n"), "{m}");
        assert!(m.contains("tabby_agent_speaker_restarts_total 1\n"), "{m}");
        assert!(
            m.contains("tabby_agent_tunnel_state{kind=\"ipip\",device=\"tunl0\",state=\"kernel-lacks\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains(
                "tabby_agent_tunnel_state{kind=\"vxlan\",device=\"vxlan.calico\",state=\"off\"} 1\n"
            ),
            "{m}"
        );
        assert_eq!(label_value("a\"b\\c"), "a\\\"b\\\\c");
    }
}
