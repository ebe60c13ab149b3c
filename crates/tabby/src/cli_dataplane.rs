//! `tabby dataplane ...`: look at and change the kernel state tabby owns
//! (routes with `proto tabby`, links), in this namespace or in a named one.
//! The logic is `tabby-dataplane`'s; this module parses arguments and prints.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use tabby_dataplane::{Netlink, Netns, Route, RouteTable, format_route, parse_route};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One line per object, `ip route` syntax.
    Text,
    /// A JSON document.
    Json,
}

/// `tabby dataplane` arguments.
#[derive(Debug, Args)]
pub struct DataplaneArgs {
    /// Work inside this network namespace (`ip netns` name or a path).
    #[arg(long, global = true)]
    netns: Option<String>,
    #[command(subcommand)]
    command: DataplaneCommand,
}

#[derive(Debug, Subcommand)]
enum DataplaneCommand {
    /// Lists kernel routes: tabby's own (`proto tabby`), or all with --all.
    Routes {
        /// Only this table (number or `main`).
        #[arg(long)]
        table: Option<String>,
        /// Every protocol's routes, with their protocol.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Adds, replaces or deletes one route (`ip route` syntax).
    Route {
        /// add | replace | delete
        #[arg(value_parser = ["add", "replace", "delete"])]
        action: String,
        /// The route: `10.0.0.0/24 via 10.1.0.1 dev eth0`, `blackhole 10.2.0.0/26`, ...
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        route: Vec<String>,
    },
    /// Makes tabby's routes in a table exactly those of a file (one route
    /// per line, `#` comments); other protocols' routes are never touched.
    Reconcile {
        /// The route file; `-` for standard input.
        file: PathBuf,
        /// The table (number or `main`).
        #[arg(long, default_value = "main")]
        table: String,
    },
    /// Lists links.
    Links {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn open(netns: Option<&str>) -> anyhow::Result<Netlink> {
    Ok(match netns {
        None => Netlink::open()?,
        Some(n) if n.contains('/') => Netns::open(n)?.netlink()?,
        Some(n) => Netns::named(n)?.netlink()?,
    })
}

fn table(s: &str) -> anyhow::Result<RouteTable> {
    if s == "main" {
        return Ok(RouteTable::MAIN);
    }
    s.parse()
        .map(RouteTable)
        .with_context(|| format!("--table {s:?} is not a table number or `main`"))
}

fn names(nl: &mut Netlink) -> anyhow::Result<HashMap<u32, String>> {
    Ok(nl.links()?.into_iter().map(|l| (l.index, l.name)).collect())
}

fn protocol_name(p: u8) -> String {
    match p {
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        tabby_dataplane::TABBY_PROTOCOL => "tabby".into(),
        other => other.to_string(),
    }
}

fn read_routes(nl: &mut Netlink, text: &str, table: RouteTable) -> anyhow::Result<Vec<Route>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let r = parse_route(line, |d| nl.link_index(d))
            .with_context(|| format!("line {}: {line:?}", n + 1))?;
        if r.table != RouteTable::MAIN && r.table != table {
            bail!(
                "line {}: table {} is not the table being reconciled ({table})",
                n + 1,
                r.table
            );
        }
        out.push(r.in_table(table));
    }
    Ok(out)
}

/// Runs `tabby dataplane ...`.
pub fn run(args: DataplaneArgs) -> anyhow::Result<()> {
    let mut nl = open(args.netns.as_deref())?;
    match args.command {
        DataplaneCommand::Routes {
            table: t,
            all,
            output,
        } => {
            let t = t.as_deref().map(table).transpose()?;
            let routes = nl.list_routes(t)?;
            let names = names(&mut nl)?;
            let name = |i: u32| names.get(&i).cloned();
            let routes: Vec<_> = routes
                .into_iter()
                .filter(|r| all || r.protocol == tabby_dataplane::TABBY_PROTOCOL)
                .collect();
            match output {
                Output::Text => {
                    for r in &routes {
                        let mut line = format_route(&r.route, name);
                        if all {
                            line.push_str(&format!(" proto {}", protocol_name(r.protocol)));
                        }
                        println!("{line}");
                    }
                }
                Output::Json => {
                    let list: Vec<_> = routes
                        .iter()
                        .map(|r| {
                            serde_json::json!({
                                "destination": r.route.destination.to_string(),
                                "table": r.route.table.0,
                                "metric": r.route.metric,
                                "kind": format!("{:?}", r.route.kind).to_lowercase(),
                                "protocol": protocol_name(r.protocol),
                                "source": r.route.source.map(|s| s.to_string()),
                                "nextHops": r.route.next_hops.iter().map(|h| serde_json::json!({
                                    "gateway": h.gateway.map(|g| g.to_string()),
                                    "device": h.device.and_then(name),
                                    "onlink": h.onlink,
                                    "weight": h.weight,
                                })).collect::<Vec<_>>(),
                                "text": format_route(&r.route, name),
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                }
            }
        }
        DataplaneCommand::Route { action, route } => {
            let text = route.join(" ");
            let r = parse_route(&text, |d| nl.link_index(d))?;
            match action.as_str() {
                "add" => nl.add_route(&r)?,
                "replace" => nl.replace_route(&r)?,
                _ => nl.delete_route(&r)?,
            }
        }
        DataplaneCommand::Reconcile { file, table: t } => {
            let t = table(&t)?;
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let desired = read_routes(&mut nl, &text, t)?;
            let report = nl.reconcile_routes(t, &desired)?;
            println!(
                "added {} replaced {} deleted {} unchanged {}",
                report.added, report.replaced, report.deleted, report.unchanged
            );
            for (r, p) in &report.conflicts {
                println!(
                    "conflict: {r} is held by proto {} (left alone)",
                    protocol_name(*p)
                );
            }
            for (_, e) in &report.failures {
                println!("failed: {e}");
            }
            if !report.failures.is_empty() {
                bail!("{} route changes failed", report.failures.len());
            }
        }
        DataplaneCommand::Links { output } => {
            let links = nl.links()?;
            match output {
                Output::Text => {
                    for l in &links {
                        println!(
                            "{}: {} {} mtu {} {}{}",
                            l.index,
                            l.name,
                            l.kind.as_deref().unwrap_or("-"),
                            l.mtu,
                            if l.up { "up" } else { "down" },
                            l.mac.map(|m| format!(" {m}")).unwrap_or_default()
                        );
                    }
                }
                Output::Json => {
                    let list: Vec<_> = links
                        .iter()
                        .map(|l| {
                            serde_json::json!({
                                "index": l.index, "name": l.name, "kind": l.kind,
                                "mtu": l.mtu, "up": l.up, "mac": l.mac.map(|m| m.to_string()),
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                }
            }
        }
    }
    Ok(())
}
