//! `tabby ipam show|check|release|configure`: calicoctl's IPAM commands,
//! over `tabby-ipam`. Tables are aligned like calicoctl's; `-o json` prints
//! the same data for scripts.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use tabby_datastore::Datastore;
use tabby_ipam::check::FixOutcome;
use tabby_ipam::resources::{load_environment, node_labels, workload_addresses, write_ipam_config};
use tabby_ipam::{AssignRequest, ClaimPause, Ipam, ReleaseRequest, ReleaseResult, Report};

/// `tabby ipam ...`
#[derive(Debug, Args)]
pub struct IpamArgs {
    #[command(subcommand)]
    command: IpamCommand,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Aligned tables.
    Table,
    /// JSON.
    Json,
}

#[derive(Debug, Subcommand)]
enum IpamCommand {
    /// Shows address usage per pool (and per block), or what one address is.
    Show {
        /// Also list every block.
        #[arg(long)]
        show_blocks: bool,
        /// Show what this address is allocated to.
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Finds leaked addresses and damaged IPAM objects; writes a report.
    Check {
        /// Write the JSON report here (`-` for standard output).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// A file of addresses in use (one per line), in addition to those
        /// of stored WorkloadEndpoints.
        #[arg(long)]
        in_use: Vec<PathBuf>,
        /// Do not compare allocations with the addresses in use.
        #[arg(long)]
        skip_leaks: bool,
    },
    /// Releases addresses: one by IP, a handle's, or everything a report lists.
    Release {
        /// The address to release.
        #[arg(long, conflicts_with_all = ["from_report", "handle"])]
        ip: Option<IpAddr>,
        /// Release every address of this handle.
        #[arg(long, conflicts_with = "from_report")]
        handle: Option<String>,
        /// Fix everything an `ipam check -o` report lists.
        #[arg(long)]
        from_report: Option<PathBuf>,
    },
    /// Changes the IPAM configuration.
    Configure {
        /// Never hand out addresses from another node's block.
        #[arg(long, action = clap::ArgAction::Set, value_name = "true|false")]
        strict_affinity: Option<bool>,
        /// Most blocks one node may claim (0: no limit).
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        max_blocks_per_host: Option<i32>,
        /// Whether nodes claim new blocks on demand.
        #[arg(long, action = clap::ArgAction::Set, value_name = "true|false")]
        auto_allocate_blocks: Option<bool>,
    },
    /// Allocates addresses to a handle (for tunnel addresses, tests and
    /// benchmarks).
    Assign {
        /// The node the addresses are for.
        #[arg(long)]
        node: String,
        /// The handle to record them under.
        #[arg(long)]
        handle: String,
        /// IPv4 addresses wanted.
        #[arg(long, default_value_t = 1)]
        ipv4: usize,
        /// IPv6 addresses wanted.
        #[arg(long, default_value_t = 0)]
        ipv6: usize,
        /// A specific address instead of auto-assignment.
        #[arg(long, conflicts_with_all = ["ipv4", "ipv6"])]
        ip: Option<IpAddr>,
    },
    /// Load generator for tests and benchmarks: allocates COUNT pod
    /// addresses one by one for NODE, releasing some as it goes.
    #[command(hide = true)]
    Exercise {
        /// The node.
        #[arg(long)]
        node: String,
        /// Addresses to allocate.
        #[arg(long)]
        count: usize,
        /// Release the oldest held address after every Nth allocation (0: never).
        #[arg(long, default_value_t = 0)]
        release_every: usize,
        /// Write the addresses still held at the end here, one per line.
        #[arg(long)]
        keep_file: Option<PathBuf>,
        /// Handle-id prefix (unique per process).
        #[arg(long, default_value = "exercise")]
        tag: String,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `tabby ipam ...` against the datastore at `url`.
pub fn run(url: &str, args: IpamArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let ds = Datastore::connect(url)
            .await
            .with_context(|| format!("connecting to datastore {url}"))?;
        // Test hook: stop inside block claims (see ClaimPause).
        let pause = std::env::var("TABBY_IPAM_TEST_PAUSE")
            .ok()
            .and_then(|v| ClaimPause::parse(&v));
        let ipam = Ipam::new(ds.clone()).with_pause(pause);
        match args.command {
            IpamCommand::Show {
                show_blocks,
                ip,
                output,
            } => show(&ipam, show_blocks, ip, output).await,
            IpamCommand::Check {
                output,
                in_use,
                skip_leaks,
            } => check(&ipam, output, &in_use, skip_leaks).await,
            IpamCommand::Release {
                ip,
                handle,
                from_report,
            } => release(&ipam, ip, handle, from_report).await,
            IpamCommand::Configure {
                strict_affinity,
                max_blocks_per_host,
                auto_allocate_blocks,
            } => {
                if strict_affinity.is_none()
                    && max_blocks_per_host.is_none()
                    && auto_allocate_blocks.is_none()
                {
                    bail!(
                        "nothing to change: give --strict-affinity, --max-blocks-per-host or --auto-allocate-blocks"
                    );
                }
                let cfg = write_ipam_config(&ds, |spec| {
                    if let Some(v) = strict_affinity {
                        spec.strict_affinity = v;
                    }
                    if let Some(v) = max_blocks_per_host {
                        spec.max_blocks_per_host = v;
                    }
                    if let Some(v) = auto_allocate_blocks {
                        spec.auto_allocate_blocks = v;
                    }
                })
                .await?;
                println!(
                    "IPAM configuration: strictAffinity={} maxBlocksPerHost={} autoAllocateBlocks={}",
                    cfg.spec.strict_affinity,
                    cfg.spec.max_blocks_per_host,
                    cfg.spec.auto_allocate_blocks
                );
                Ok(())
            }
            IpamCommand::Assign {
                node,
                handle,
                ipv4,
                ipv6,
                ip,
            } => {
                let env = load_environment(&ds).await?;
                if let Some(ip) = ip {
                    let block = ipam
                        .assign_ip(&env, ip, &node, &handle, Default::default())
                        .await?;
                    println!("{ip} (block {block})");
                    return Ok(());
                }
                let mut req = AssignRequest::v4(&node, &handle);
                req.num_v4 = ipv4;
                req.num_v6 = ipv6;
                req.node_labels = node_labels(&ds, &node).await?;
                let got = ipam.auto_assign(&env, &req).await?;
                for (ip, block) in got.v4.iter().chain(&got.v6) {
                    println!("{ip} (block {block})");
                }
                Ok(())
            }
            IpamCommand::Exercise {
                node,
                count,
                release_every,
                keep_file,
                tag,
            } => exercise(&ipam, &node, count, release_every, keep_file, &tag).await,
        }
    })
}

/// Renders rows as a calicoctl-style bordered table; `right` marks
/// right-aligned (numeric) columns.
fn table(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let line = |cells: &[String], center: bool| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let cell = if center {
                format!("{c:^w$}")
            } else if right.get(i).copied().unwrap_or(false) {
                format!("{c:>w$}")
            } else {
                format!("{c:<w$}")
            };
            s.push_str(&format!("| {cell} "));
        }
        s + "|\n"
    };
    let mut out = rule.clone();
    out += &line(
        &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
        true,
    );
    out += &rule;
    for r in rows {
        out += &line(r, false);
    }
    out += &rule;
    out
}

fn percent(part: u128, total: u128) -> String {
    if total == 0 {
        return "0%".into();
    }
    format!("{}%", (part * 100 + total / 2) / total)
}

async fn show(
    ipam: &Ipam,
    show_blocks: bool,
    ip: Option<IpAddr>,
    output: Output,
) -> anyhow::Result<()> {
    let env = load_environment(ipam.datastore()).await?;
    if let Some(ip) = ip {
        let info = ipam.address_info(&env, ip).await?;
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&info)?);
            return Ok(());
        }
        if !info.allocated {
            match (&info.pool, info.reserved) {
                (None, _) => println!("IP {ip} is not in any IP pool"),
                (Some(p), true) => println!("IP {ip} is reserved (pool {p})"),
                (Some(p), false) => println!("IP {ip} is not assigned (pool {p})"),
            }
            return Ok(());
        }
        println!("IP {ip} is in use");
        println!("Handle: {}", info.handle.as_deref().unwrap_or("(none)"));
        if let Some(b) = info.block {
            match &info.node {
                Some(n) => println!("Block: {b} (affine to node {n})"),
                None => println!("Block: {b} (no affinity)"),
            }
        }
        if let Some(s) = info.sequence {
            println!("Sequence number: {s}");
        }
        if !info.attributes.is_empty() {
            println!("Attributes:");
            for (k, v) in &info.attributes {
                println!("  {k}: {v}");
            }
        }
        return Ok(());
    }
    let usage = ipam.usage(&env).await?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
        return Ok(());
    }
    let mut rows = Vec::new();
    for p in &usage {
        let free = p.total.saturating_sub(p.in_use);
        let cidr = p
            .cidr
            .map_or_else(|| "(no pool)".to_owned(), |c| c.to_string());
        rows.push(vec![
            "IP Pool".into(),
            cidr,
            p.total.to_string(),
            format!("{} ({})", p.in_use, percent(p.in_use, p.total)),
            format!("{free} ({})", percent(free, p.total)),
        ]);
        if show_blocks {
            for b in &p.blocks {
                let (t, u) = (u128::from(b.total), u128::from(b.in_use));
                rows.push(vec![
                    "Block".into(),
                    b.cidr.to_string(),
                    t.to_string(),
                    format!("{u} ({})", percent(u, t)),
                    format!("{} ({})", t - u, percent(t - u, t)),
                ]);
            }
        }
    }
    print!(
        "{}",
        table(
            &["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
            &[false, false, true, false, false],
            &rows
        )
    );
    Ok(())
}

fn read_ip_list(path: &PathBuf) -> anyhow::Result<BTreeSet<IpAddr>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let addr = line.split('/').next().unwrap_or(line);
        let ip: IpAddr = addr.parse().with_context(|| {
            format!(
                "{}:{}: {line:?} is not an IP address",
                path.display(),
                i + 1
            )
        })?;
        out.insert(ip);
    }
    Ok(out)
}

async fn check(
    ipam: &Ipam,
    output: Option<PathBuf>,
    in_use_files: &[PathBuf],
    skip_leaks: bool,
) -> anyhow::Result<()> {
    let ds = ipam.datastore();
    let env = load_environment(ds).await?;
    let in_use = if skip_leaks {
        None
    } else {
        let mut set = workload_addresses(ds).await?;
        for f in in_use_files {
            set.extend(read_ip_list(f)?);
        }
        Some(set)
    };
    let to_stdout = output.as_deref() == Some(std::path::Path::new("-"));
    let started = Instant::now();
    let report = ipam.check(&env, in_use.as_ref()).await?;
    let elapsed = started.elapsed();
    // The human summary goes to stderr when the report takes stdout.
    let mut human: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let c = &report.checked;
    writeln!(
        human,
        "Checked {} blocks, {} affinities, {} handles, {} allocated addresses{} in {:.3}s.",
        c.blocks,
        c.affinities,
        c.handles,
        c.allocations,
        c.in_use.map_or_else(
            || " (leak check skipped)".to_owned(),
            |n| format!(" against {n} addresses in use")
        ),
        elapsed.as_secs_f64()
    )?;
    for p in &report.problems {
        writeln!(human, "  {}", p.describe())?;
    }
    writeln!(human, "Found {} problems.", report.problems.len())?;
    if let Some(path) = output {
        let json = serde_json::to_string_pretty(&report)?;
        if to_stdout {
            println!("{json}");
        } else {
            std::fs::write(&path, json + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            writeln!(
                human,
                "Report written to {}; fix with: tabby ipam release --from-report {}",
                path.display(),
                path.display()
            )?;
        }
    }
    Ok(())
}

async fn release(
    ipam: &Ipam,
    ip: Option<IpAddr>,
    handle: Option<String>,
    from_report: Option<PathBuf>,
) -> anyhow::Result<()> {
    let env = load_environment(ipam.datastore()).await?;
    if let Some(path) = from_report {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an `ipam check` report", path.display()))?;
        let FixOutcome { fixed, skipped } = ipam.fix(&env, &report).await?;
        for p in &fixed {
            println!("fixed: {}", p.describe());
        }
        for (p, why) in &skipped {
            println!("not fixed: {} ({why})", p.describe());
        }
        println!("{} fixed, {} not fixed.", fixed.len(), skipped.len());
        return Ok(());
    }
    if let Some(ip) = ip {
        let r = ipam
            .release(
                &env,
                &[ReleaseRequest {
                    ip,
                    sequence: None,
                    handle,
                }],
            )
            .await?;
        match r.first().map(|(_, r)| r) {
            Some(ReleaseResult::Released { handle }) => println!(
                "Released {ip} (handle {})",
                handle.as_deref().unwrap_or("none")
            ),
            Some(ReleaseResult::OtherHandle) => bail!("{ip} belongs to another handle"),
            _ => bail!("{ip} is not allocated"),
        }
        return Ok(());
    }
    if let Some(h) = handle {
        let ips = ipam.release_handle(&h).await?;
        if ips.is_empty() {
            println!("Handle {h} held no addresses");
        }
        for ip in ips {
            println!("Released {ip} (handle {h})");
        }
        return Ok(());
    }
    bail!("give --ip IP, --handle HANDLE or --from-report FILE")
}

async fn exercise(
    ipam: &Ipam,
    node: &str,
    count: usize,
    release_every: usize,
    keep_file: Option<PathBuf>,
    tag: &str,
) -> anyhow::Result<()> {
    let ds = ipam.datastore();
    let env = load_environment(ds).await?;
    let labels = node_labels(ds, node).await?;
    let mut held: std::collections::VecDeque<(String, IpAddr)> = Default::default();
    let mut released = 0usize;
    let started = Instant::now();
    for i in 0..count {
        let handle = tabby_ipam::records::workload_handle(&format!("{tag}-{i}"));
        let mut req = AssignRequest::v4(node, &handle);
        req.node_labels = labels.clone();
        let got = ipam
            .auto_assign(&env, &req)
            .await
            .with_context(|| format!("allocation {i} for {node}"))?;
        for (ip, _) in got.v4 {
            held.push_back((handle.clone(), ip));
        }
        if release_every > 0 && (i + 1) % release_every == 0 {
            if let Some((h, _)) = held.pop_front() {
                ipam.release_handle(&h).await?;
                released += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(path) = keep_file {
        let text: String = held.iter().map(|(_, ip)| format!("{ip}\n")).collect();
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{}",
        serde_json::json!({
            "node": node,
            "allocated": count,
            "released": released,
            "held": held.len(),
            "seconds": secs,
            "allocationsPerSecond": if secs > 0.0 { count as f64 / secs } else { 0.0 },
        })
    );
    Ok(())
}
