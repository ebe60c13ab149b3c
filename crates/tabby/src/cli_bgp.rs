//! `tabby bgpd` (the standalone BGP daemon) and `tabby bgp ...` (its
//! introspection over the control socket): argument parsing and table
//! rendering only; the daemon and the protocol are in `tabby-speaker`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tabby_speaker::config::{BgpdConfig, DEFAULT_CONTROL_SOCKET};
use tabby_speaker::control::{
    self, NeighborStatus, ReloadReport, Request, Response, RouteStatus, Summary,
};

/// `tabby bgpd`.
#[derive(Debug, Args)]
pub struct BgpdArgs {
    /// The YAML config file.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Only check the config and exit.
    #[arg(long)]
    pub check: bool,
}

/// `tabby bgp`.
#[derive(Debug, Args)]
pub struct BgpArgs {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "TABBY_BGPD_SOCKET", default_value = DEFAULT_CONTROL_SOCKET)]
    pub socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: BgpCommand,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// `tabby bgp` subcommands.
#[derive(Debug, Subcommand)]
pub enum BgpCommand {
    /// Neighbours: address, AS, state, uptime, last error, prefix counts.
    Neighbors,
    /// Loc-RIB paths, all or for one prefix/address.
    Routes {
        /// `10.0.0.0/24` (exact and more specific) or `10.0.0.1`.
        prefix: Option<String>,
    },
    /// Counters: Loc-RIB size, sessions.
    Summary,
    /// Re-read the daemon's config file (sessions whose settings did not change stay up).
    Reload,
}

/// Runs `tabby bgpd`.
pub fn bgpd(args: BgpdArgs) -> anyhow::Result<()> {
    if args.check {
        let c = BgpdConfig::load(&args.config)?;
        println!("{}: ok ({} peers)", args.config.display(), c.peers.len());
        return Ok(());
    }
    tabby_speaker::daemon::run(&args.config).context("tabby bgpd")
}

/// Runs `tabby bgp ...`.
pub fn bgp(args: BgpArgs) -> anyhow::Result<()> {
    let request = match &args.command {
        BgpCommand::Neighbors => Request::Neighbors,
        BgpCommand::Routes { prefix } => Request::Routes {
            prefix: prefix.clone(),
        },
        BgpCommand::Summary => Request::Summary,
        BgpCommand::Reload => Request::Reload,
    };
    let response = control::request(&args.socket, &request, Duration::from_secs(30))?;
    if args.output == Output::Json {
        let text = match &response {
            Response::Neighbors(v) => serde_json::to_string_pretty(v)?,
            Response::Routes(v) => serde_json::to_string_pretty(v)?,
            Response::Summary(v) => serde_json::to_string_pretty(v)?,
            Response::Reloaded(v) => serde_json::to_string_pretty(v)?,
            other => serde_json::to_string_pretty(other)?,
        };
        println!("{text}");
        return Ok(());
    }
    let text = match &response {
        Response::Neighbors(v) => neighbors_table(v),
        Response::Routes(v) => routes_table(v),
        Response::Summary(s) => summary_text(s),
        Response::Reloaded(r) => reload_text(r),
        other => format!("{other:?}\n"),
    };
    print!("{text}");
    Ok(())
}

/// Renders rows as columns padded to the widest cell (the last column is
/// not padded).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h{m:02}m")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

fn neighbors_table(v: &[NeighborStatus]) -> String {
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|n| {
            vec![
                n.address.to_string(),
                n.as_number.to_string(),
                format!(
                    "{}{}",
                    n.session_type,
                    if n.route_reflector_client {
                        " rr-client"
                    } else {
                        ""
                    }
                ),
                n.state.clone(),
                n.uptime_secs.map(duration).unwrap_or_default(),
                format!(
                    "{}/{}/{}",
                    n.prefixes_received, n.prefixes_accepted, n.prefixes_advertised
                ),
                match (&n.graceful_restart, n.stale_routes) {
                    (Some(g), 0) => g.clone(),
                    (Some(g), k) => format!("{g}, {k} stale"),
                    (None, _) => String::new(),
                },
                n.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "NEIGHBOR",
            "AS",
            "TYPE",
            "STATE",
            "SINCE",
            "RCVD/ACC/ADV",
            "GRACEFUL RESTART",
            "LAST ERROR",
        ],
        &rows,
    )
}

fn routes_table(v: &[RouteStatus]) -> String {
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|r| {
            let flags = format!(
                "{}{}{}{}",
                if r.best { "*" } else { "" },
                if r.multipath { "=" } else { "" },
                if r.unresolved { "?" } else { "" },
                if r.stale { "S" } else { "" }
            );
            let mut attrs = Vec::new();
            if let Some(m) = r.med {
                attrs.push(format!("med {m}"));
            }
            if let Some(l) = r.local_pref {
                attrs.push(format!("lp {l}"));
            }
            attrs.extend(r.communities.iter().cloned());
            attrs.extend(r.large_communities.iter().cloned());
            if let Some(o) = r.originator_id {
                attrs.push(format!("originator {o}"));
            }
            if !r.cluster_list.is_empty() {
                let l: Vec<String> = r.cluster_list.iter().map(ToString::to_string).collect();
                attrs.push(format!("cluster-list {}", l.join(" ")));
            }
            vec![
                flags,
                r.prefix.clone(),
                r.next_hop
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.peer.map_or_else(|| "local".to_owned(), |p| p.to_string()),
                if r.as_path.is_empty() {
                    "(empty)".into()
                } else {
                    r.as_path.clone()
                },
                r.origin.clone(),
                attrs.join(", "),
            ]
        })
        .collect();
    let mut s = table(
        &[
            "",
            "PREFIX",
            "NEXT HOP",
            "FROM",
            "AS PATH",
            "ORIGIN",
            "ATTRIBUTES",
        ],
        &rows,
    );
    s.push_str("(* best, = multipath, ? next hop unreachable, S stale: kept through the neighbour's graceful restart)\n");
    s
}

fn summary_text(s: &Summary) -> String {
    let mut rows = vec![
        vec!["router id".to_owned(), s.router_id.to_string()],
        vec!["local AS".to_owned(), s.as_number.to_string()],
        vec![
            "neighbors".to_owned(),
            format!("{} ({} established)", s.peers, s.established),
        ],
        vec![
            "Loc-RIB prefixes".to_owned(),
            s.loc_rib_prefixes.to_string(),
        ],
        vec!["Loc-RIB paths".to_owned(), s.loc_rib_paths.to_string()],
        vec!["uptime".to_owned(), duration(s.uptime_secs)],
    ];
    if let Some(f) = s.fib_routes {
        rows.push(vec!["kernel routes".to_owned(), f.to_string()]);
    }
    table(&["", ""], &rows)
        .trim_start_matches(|c: char| c.is_whitespace())
        .to_owned()
}

fn reload_text(r: &ReloadReport) -> String {
    let list = |v: &[std::net::IpAddr]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    format!(
        "reloaded\n  added:     {}\n  removed:   {}\n  restarted: {}\n  updated:   {}\n  unchanged: {}\n",
        list(&r.added),
        list(&r.removed),
        list(&r.restarted),
        list(&r.updated),
        list(&r.unchanged)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let t = table(
            &["A", "BB", "C"],
            &[vec!["long-cell".into(), "x".into(), "tail".into()]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0].find("BB"), lines[1].find('x'));
        assert_eq!(lines[0].find('C'), lines[1].find("tail"));
    }

    #[test]
    fn durations_read_like_birdc() {
        assert_eq!(duration(59), "00:00:59");
        assert_eq!(duration(3723), "01:02:03");
        assert_eq!(duration(90000), "1d01h00m");
    }
}
