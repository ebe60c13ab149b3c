//! The resource commands, calicoctl style: `apply`, `create`, `replace`,
//! `delete` (`-f FILE`, `-` for stdin), `get KIND [NAME] [-o yaml|json|wide]`,
//! `patch KIND NAME -p JSON` (JSON merge patch) and
//! `label KIND NAME k=v ... [--overwrite] | k-`.
//!
//! Parsing, validation and storage semantics live in `tabby-model`; this
//! module reads files, calls the store, and prints tables and messages.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use tabby_datastore::Datastore;
use tabby_model::document::{ManifestEntry, parse_manifest, to_yaml};
use tabby_model::store::{
    Action, ResourceStore, StoreError, WriteMode, unmatched_selector_warnings,
};
use tabby_model::{Kind, Node, Resource};

/// A manifest file argument.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// YAML or JSON file with one or more documents (`-` reads stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: String,
}

/// `delete`: by file, or by kind and name.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// YAML or JSON file naming the resources to delete (`-` reads stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE", conflicts_with_all = ["kind", "name"])]
    file: Option<String>,
    /// Kind (calicoctl aliases work: ippool, bgppeer, bgpconfig, node, ...).
    #[arg(required_unless_present = "file")]
    kind: Option<String>,
    /// Name of the resource.
    #[arg(requires = "kind")]
    name: Option<String>,
    /// Namespace (WorkloadEndpoints only).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// Output format of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table of the main fields.
    Table,
    /// A table with more columns (for BGPPeers: the nodes each selector matches).
    Wide,
    /// YAML documents that `tabby apply -f` accepts back.
    Yaml,
    /// JSON.
    Json,
}

/// `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Kind (calicoctl aliases work: ippool, bgppeer, bgpconfig, node, ...).
    kind: String,
    /// Only this resource.
    name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
    /// Namespace (WorkloadEndpoints only).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// `patch`.
#[derive(Debug, Args)]
pub struct PatchArgs {
    /// Kind.
    kind: String,
    /// Name of the resource.
    name: String,
    /// JSON merge patch (RFC 7386), e.g. '{"spec":{"disabled":true}}'.
    #[arg(short = 'p', long = "patch", value_name = "JSON")]
    patch: String,
    /// Patch type; only `merge` is supported (accepted for kubectl habits).
    #[arg(long = "type", default_value = "merge")]
    patch_type: String,
    /// Namespace (WorkloadEndpoints only).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// `label`.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// Kind (usually `node`).
    kind: String,
    /// Name of the resource.
    name: String,
    /// `key=value` to set, `key-` to remove.
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    labels: Vec<String>,
    /// Allow changing the value of a label that is already set.
    #[arg(long)]
    overwrite: bool,
}

/// The resource commands.
#[derive(Debug, Subcommand)]
pub enum ResourceCommand {
    /// Creates or updates the resources in a file (all or nothing).
    Apply(FileArgs),
    /// Creates the resources in a file; fails if any exists (all or nothing).
    Create(FileArgs),
    /// Replaces existing resources with the ones in a file (all or nothing).
    Replace(FileArgs),
    /// Deletes the resources a file names, or one by kind and name.
    Delete(DeleteArgs),
    /// Lists resources of a kind, or shows one.
    Get(GetArgs),
    /// Changes a resource with a JSON merge patch.
    Patch(PatchArgs),
    /// Sets or removes labels of a resource.
    Label(LabelArgs),
}

fn parse_kind(s: &str) -> Result<Kind> {
    Kind::from_cli_name(s).ok_or_else(|| {
        anyhow!(
            "unknown resource kind \"{s}\": use one of bgpconfiguration, bgppeer, bgpfilter, ippool, node, ipamconfiguration, ipreservation, workloadendpoint"
        )
    })
}

fn read_file(file: &str) -> Result<(String, String)> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        Ok(("<stdin>".into(), s))
    } else {
        let s = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        Ok((file.to_string(), s))
    }
}

fn read_manifest(file: &str) -> Result<Vec<ManifestEntry>> {
    let (source, text) = read_file(file)?;
    let entries = parse_manifest(&source, &text).map_err(|errs| {
        let n = errs.len();
        let lines: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
        anyhow!(
            "no changes made: {n} invalid document{}:\n{}",
            if n == 1 { "" } else { "s" },
            lines.join("\n")
        )
    })?;
    if entries.is_empty() {
        bail!("{source}: no resources found");
    }
    Ok(entries)
}

fn store_error(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::Documents(errs) => {
            let lines: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
            anyhow!("no changes made:\n{}", lines.join("\n"))
        }
        other => anyhow!(other),
    }
}

async fn open(url: &str) -> Result<ResourceStore> {
    let ds = Datastore::connect(url)
        .await
        .with_context(|| format!("opening datastore {url}"))?;
    Ok(ResourceStore::new(ds))
}

fn summary(verb: &str, written: &[tabby_model::store::Written]) {
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for w in written {
        *by_kind.entry(w.resource.kind().name()).or_default() += 1;
    }
    for (k, n) in by_kind {
        println!("Successfully {verb} {n} '{k}' resource(s)");
    }
}

async fn warn_unmatched(
    store: &ResourceStore,
    written: &[tabby_model::store::Written],
) -> Result<()> {
    let resources: Vec<Resource> = written.iter().map(|w| w.resource.clone()).collect();
    let nodes = store.nodes().await.map_err(store_error)?;
    for w in unmatched_selector_warnings(&resources, &nodes) {
        eprintln!("Warning: {w}");
    }
    let filters = store.list(Kind::BgpFilter).await.map_err(store_error)?;
    for r in &resources {
        if let Resource::BgpPeer(p) = r {
            for f in &p.spec.filters {
                if !filters.iter().any(|x| x.name() == f) {
                    eprintln!(
                        "Warning: BGPPeer \"{}\": filter \"{f}\" does not exist (no BGPFilter of that name)",
                        p.metadata.name
                    );
                }
            }
        }
    }
    Ok(())
}

/// Runs a resource command against the datastore at `url`.
pub fn run(cmd: ResourceCommand, url: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cmd, url))
}

async fn run_async(cmd: ResourceCommand, url: &str) -> Result<()> {
    match cmd {
        ResourceCommand::Apply(a) => write(url, &a.file, WriteMode::Apply, "applied").await,
        ResourceCommand::Create(a) => write(url, &a.file, WriteMode::Create, "created").await,
        ResourceCommand::Replace(a) => write(url, &a.file, WriteMode::Replace, "replaced").await,
        ResourceCommand::Delete(a) => delete(url, a).await,
        ResourceCommand::Get(a) => get(url, a).await,
        ResourceCommand::Patch(a) => patch(url, a).await,
        ResourceCommand::Label(a) => label(url, a).await,
    }
}

async fn write(url: &str, file: &str, mode: WriteMode, verb: &str) -> Result<()> {
    let entries = read_manifest(file)?;
    let store = open(url).await?;
    let written = store
        .write_batch(mode, &entries)
        .await
        .map_err(store_error)?;
    summary(verb, &written);
    let unchanged = written
        .iter()
        .filter(|w| w.action == Action::Unchanged)
        .count();
    if unchanged > 0 {
        println!("({unchanged} unchanged)");
    }
    warn_unmatched(&store, &written).await
}

async fn delete(url: &str, a: DeleteArgs) -> Result<()> {
    let store = open(url).await?;
    if let Some(file) = a.file {
        let entries = read_manifest(&file)?;
        let deleted = store.delete_batch(&entries).await.map_err(store_error)?;
        summary("deleted", &deleted);
        return Ok(());
    }
    let kind = parse_kind(a.kind.as_deref().unwrap_or_default())?;
    let name = a
        .name
        .ok_or_else(|| anyhow!("name the resource to delete"))?;
    store
        .delete(kind, a.namespace.as_deref(), &name)
        .await
        .map_err(store_error)?;
    println!("Successfully deleted 1 '{kind}' resource(s)");
    Ok(())
}

async fn patch(url: &str, a: PatchArgs) -> Result<()> {
    if a.patch_type != "merge" {
        bail!(
            "--type {}: only merge patches (RFC 7386) are supported",
            a.patch_type
        );
    }
    let kind = parse_kind(&a.kind)?;
    let patch: Value = serde_json::from_str(&a.patch)
        .with_context(|| format!("-p is not valid JSON: {}", a.patch))?;
    if !patch.is_object() {
        bail!("-p must be a JSON object, e.g. '{{\"spec\":{{\"disabled\":true}}}}'");
    }
    let store = open(url).await?;
    store
        .patch(kind, a.namespace.as_deref(), &a.name, &patch)
        .await
        .map_err(store_error)?;
    println!("Successfully patched 1 '{kind}' resource");
    Ok(())
}

async fn label(url: &str, a: LabelArgs) -> Result<()> {
    let kind = parse_kind(&a.kind)?;
    let mut set = Vec::new();
    let mut remove = Vec::new();
    for l in &a.labels {
        if let Some(k) = l.strip_suffix('-') {
            remove.push(k.to_string());
        } else if let Some((k, v)) = l.split_once('=') {
            set.push((k.to_string(), v.to_string()));
        } else {
            bail!("label \"{l}\": write key=value to set or key- to remove");
        }
    }
    let store = open(url).await?;
    let overwrite = a.overwrite;
    store
        .update_with(kind, None, &a.name, |old| {
            let mut r = old.clone();
            let labels = &mut r.metadata_mut().labels;
            for (k, v) in &set {
                match labels.get(k) {
                    Some(cur) if cur != v && !overwrite => {
                        return Err(tabby_model::ValidationError::single(
                            format!("metadata.labels.{k}"),
                            format!("already set to \"{cur}\": use --overwrite to change it"),
                        ));
                    }
                    _ => {
                        labels.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in &remove {
                labels.remove(k);
            }
            Ok(r)
        })
        .await
        .map_err(store_error)?;
    println!("Successfully labelled 1 '{kind}' resource \"{}\"", a.name);
    Ok(())
}

async fn get(url: &str, a: GetArgs) -> Result<()> {
    let kind = parse_kind(&a.kind)?;
    let store = open(url).await?;
    let resources = match &a.name {
        Some(name) => match store
            .get(kind, a.namespace.as_deref(), name)
            .await
            .map_err(store_error)?
        {
            Some(r) => vec![r],
            None => bail!("{kind} \"{name}\" not found"),
        },
        None => {
            let mut all = store.list(kind).await.map_err(store_error)?;
            if let Some(ns) = &a.namespace {
                all.retain(|r| r.metadata().namespace.as_deref() == Some(ns));
            }
            all
        }
    };
    let single = a.name.is_some();
    match a.output {
        Output::Yaml => {
            if single {
                print!("{}", to_yaml(&resources));
            } else {
                let list = list_value(kind, &resources);
                print!("{}", serde_saphyr::to_string(&list).unwrap_or_default());
            }
        }
        Output::Json => {
            let v = if single {
                resources[0].to_value()
            } else {
                list_value(kind, &resources)
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Table | Output::Wide => {
            let nodes = if a.output == Output::Wide && kind == Kind::BgpPeer {
                store.nodes().await.map_err(store_error)?
            } else {
                Vec::new()
            };
            print!(
                "{}",
                table(kind, &resources, a.output == Output::Wide, &nodes)
            );
        }
    }
    Ok(())
}

fn list_value(kind: Kind, resources: &[Resource]) -> Value {
    serde_json::json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": format!("{}List", kind.name()),
        "items": resources.iter().map(Resource::to_value).collect::<Vec<_>>(),
    })
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn matched_nodes(nodes: &[Node], pred: impl Fn(&Node) -> bool) -> String {
    let names: Vec<&str> = nodes
        .iter()
        .filter(|n| pred(n))
        .map(|n| n.metadata.name.as_str())
        .collect();
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(",")
    }
}

/// Renders resources as an aligned table (columns padded with three spaces,
/// like calicoctl's).
fn table(kind: Kind, resources: &[Resource], wide: bool, nodes: &[Node]) -> String {
    let (header, rows): (Vec<&str>, Vec<Vec<String>>) = match kind {
        Kind::IpPool => {
            let header = if wide {
                vec![
                    "NAME",
                    "CIDR",
                    "NAT",
                    "IPIPMODE",
                    "VXLANMODE",
                    "DISABLED",
                    "DISABLEBGPEXPORT",
                    "SELECTOR",
                ]
            } else {
                vec!["NAME", "CIDR", "SELECTOR"]
            };
            let rows = resources
                .iter()
                .filter_map(|r| match r {
                    Resource::IpPool(p) => Some(p),
                    _ => None,
                })
                .map(|p| {
                    let s = &p.spec;
                    if wide {
                        vec![
                            p.metadata.name.clone(),
                            s.cidr.to_string(),
                            s.nat_outgoing.to_string(),
                            s.ipip_mode().as_str().into(),
                            s.vxlan_mode().as_str().into(),
                            s.disabled.to_string(),
                            s.disable_bgp_export.to_string(),
                            s.node_selector().to_string(),
                        ]
                    } else {
                        vec![
                            p.metadata.name.clone(),
                            s.cidr.to_string(),
                            s.node_selector().to_string(),
                        ]
                    }
                })
                .collect();
            (header, rows)
        }
        Kind::BgpPeer => {
            let mut header = vec!["NAME", "PEERIP", "NODE", "ASN"];
            if wide {
                header.extend(["MATCHED-NODES", "PEER-NODES"]);
            }
            let rows = resources
                .iter()
                .filter_map(|r| match r {
                    Resource::BgpPeer(p) => Some(p),
                    _ => None,
                })
                .map(|p| {
                    let s = &p.spec;
                    let peer = match (&s.peer_ip, &s.peer_selector) {
                        (Some(ip), _) => ip.to_string(),
                        (None, Some(sel)) => sel.to_string(),
                        (None, None) => String::new(),
                    };
                    let node = match (&s.node, &s.node_selector) {
                        (Some(n), _) => n.clone(),
                        (None, Some(sel)) => sel.to_string(),
                        (None, None) => "(global)".into(),
                    };
                    let mut row = vec![p.metadata.name.clone(), peer, node, opt(s.as_number)];
                    if wide {
                        row.push(matched_nodes(nodes, |n| s.selects_local_node(n)));
                        row.push(if s.peer_selector.is_some() {
                            matched_nodes(nodes, |n| s.selects_peer_node(n))
                        } else {
                            "-".into()
                        });
                    }
                    row
                })
                .collect();
            (header, rows)
        }
        Kind::BgpConfiguration => (
            vec!["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
            resources
                .iter()
                .filter_map(|r| match r {
                    Resource::BgpConfiguration(c) => Some(c),
                    _ => None,
                })
                .map(|c| {
                    let s = &c.spec;
                    let global = c.metadata.name == "default";
                    vec![
                        c.metadata.name.clone(),
                        s.log_severity_screen
                            .clone()
                            .unwrap_or_else(|| if global { "Info".into() } else { String::new() }),
                        if global {
                            s.node_to_node_mesh_enabled().to_string()
                        } else {
                            String::new()
                        },
                        if global {
                            s.as_number().to_string()
                        } else {
                            String::new()
                        },
                    ]
                })
                .collect(),
        ),
        Kind::Node => {
            let header = if wide {
                vec!["NAME", "ASN", "IPV4", "IPV6", "RRCLUSTERID"]
            } else {
                vec!["NAME"]
            };
            let rows = resources
                .iter()
                .filter_map(|r| match r {
                    Resource::Node(n) => Some(n),
                    _ => None,
                })
                .map(|n| {
                    let bgp = n.spec.bgp.clone().unwrap_or_default();
                    if wide {
                        vec![
                            n.metadata.name.clone(),
                            bgp.as_number
                                .map_or_else(|| "(64512)".into(), |a| a.to_string()),
                            opt(bgp.ipv4_address),
                            opt(bgp.ipv6_address),
                            bgp.route_reflector_cluster_id.unwrap_or_default(),
                        ]
                    } else {
                        vec![n.metadata.name.clone()]
                    }
                })
                .collect();
            (header, rows)
        }
        Kind::IpamConfiguration => (
            vec![
                "NAME",
                "STRICTAFFINITY",
                "MAXBLOCKSPERHOST",
                "AUTOALLOCATEBLOCKS",
            ],
            resources
                .iter()
                .filter_map(|r| match r {
                    Resource::IpamConfiguration(c) => Some(c),
                    _ => None,
                })
                .map(|c| {
                    vec![
                        c.metadata.name.clone(),
                        c.spec.strict_affinity.to_string(),
                        c.spec.max_blocks_per_host.to_string(),
                        c.spec.auto_allocate_blocks.to_string(),
                    ]
                })
                .collect(),
        ),
        Kind::IpReservation => (
            vec!["NAME", "CIDRS"],
            resources
                .iter()
                .filter_map(|r| match r {
                    Resource::IpReservation(c) => Some(c),
                    _ => None,
                })
                .map(|c| {
                    let cidrs: Vec<String> = c
                        .spec
                        .reserved_cidrs
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    vec![c.metadata.name.clone(), cidrs.join(",")]
                })
                .collect(),
        ),
        Kind::WorkloadEndpoint => (
            vec!["NAMESPACE", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
            resources
                .iter()
                .filter_map(|r| match r {
                    Resource::WorkloadEndpoint(w) => Some(w),
                    _ => None,
                })
                .map(|w| {
                    let nets: Vec<String> =
                        w.spec.ip_networks.iter().map(ToString::to_string).collect();
                    vec![
                        w.metadata.namespace.clone().unwrap_or_default(),
                        if w.spec.workload.is_empty() {
                            w.metadata.name.clone()
                        } else {
                            w.spec.workload.clone()
                        },
                        w.spec.node.clone(),
                        nets.join(","),
                        w.spec.interface_name.clone(),
                    ]
                })
                .collect(),
        ),
        Kind::BgpFilter => (
            vec!["NAME"],
            resources
                .iter()
                .map(|r| vec![r.name().to_string()])
                .collect(),
        ),
    };
    render_table(&header, &rows)
}

fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let n = cells.len();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i + 1 < n {
                out.push_str(&" ".repeat(w - cell.chars().count() + 3));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let t = render_table(
            &["NAME", "CIDR"],
            &[
                vec!["a-long-name".into(), "10.0.0.0/8".into()],
                vec!["b".into(), "x".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NAME          CIDR");
        assert_eq!(lines[1], "a-long-name   10.0.0.0/8");
        assert_eq!(lines[2], "b             x");
    }
}
