//! Outgoing NAT for `natOutgoing` pools, in an nftables table of tabby's own
//! (`inet tabby-nat`): traffic from a NAT pool to a destination outside every
//! pool is masqueraded. The table is replaced as a whole in one `nft -f`
//! transaction (created empty, deleted, recreated), so there is never a
//! moment with half a ruleset, and no other table is touched.
//!
//! Runs `nft` in the calling thread's namespace (use
//! [`Netns::run`](crate::Netns::run) for another one).

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use crate::error::{Error, Result};

/// The nftables family and name of tabby's NAT table.
pub const NAT_TABLE: &str = "inet tabby-nat";

/// The pools NAT is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatPools {
    /// Pools with `natOutgoing: true`: their traffic leaving the pools is masqueraded.
    pub masquerade: Vec<IpNet>,
    /// Every pool (NAT or not): destinations here keep the pod's source.
    pub all: Vec<IpNet>,
}

fn set(name: &str, kind: &str, nets: &[IpNet]) -> String {
    let mut s = format!("\tset {name} {{\n\t\ttype {kind}\n\t\tflags interval\n");
    if !nets.is_empty() {
        let elems: Vec<String> = nets.iter().map(ToString::to_string).collect();
        s.push_str(&format!("\t\telements = {{ {} }}\n", elems.join(", ")));
    }
    s.push_str("\t}\n");
    s
}

/// The whole `nft -f` script that replaces tabby's NAT table.
pub fn render(pools: &NatPools) -> String {
    let split = |nets: &[IpNet]| -> (Vec<IpNet>, Vec<IpNet>) {
        // Overlapping prefixes are merged: interval sets refuse overlaps.
        let merged = IpNet::aggregate(&nets.to_vec());
        merged.into_iter().partition(|n| matches!(n, IpNet::V4(_)))
    };
    let (masq4, masq6) = split(&pools.masquerade);
    let mut all = pools.all.clone();
    all.extend(pools.masquerade.iter().copied());
    let (all4, all6) = split(&all);
    let mut s = String::new();
    s.push_str(&format!(
        "table {NAT_TABLE} {{}}\ndelete table {NAT_TABLE}\n"
    ));
    s.push_str(&format!("table {NAT_TABLE} {{\n"));
    s.push_str(&set("masq-v4", "ipv4_addr", &masq4));
    s.push_str(&set("pools-v4", "ipv4_addr", &all4));
    s.push_str(&set("masq-v6", "ipv6_addr", &masq6));
    s.push_str(&set("pools-v6", "ipv6_addr", &all6));
    s.push_str(
        "\tchain postrouting {\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr @masq-v4 ip daddr != @pools-v4 masquerade\n\
         \t\tip6 saddr @masq-v6 ip6 daddr != @pools-v6 masquerade\n\
         \t}\n}\n",
    );
    s
}

fn nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft(format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::Nft(format!("writing the ruleset to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Nft(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(Error::Nft(format!(
            "ruleset refused ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Replaces tabby's NAT table with the rules for `pools`, atomically.
pub fn apply(pools: &NatPools) -> Result<()> {
    nft(&render(pools))
}

/// Removes tabby's NAT table (no error if it is not there).
pub fn remove() -> Result<()> {
    nft(&format!(
        "table {NAT_TABLE} {{}}\ndelete table {NAT_TABLE}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_merges_overlaps_and_splits_families() {
        let n = |s: &str| s.parse::<IpNet>().expect("net");
        let s = render(&NatPools {
            masquerade: vec![n("10.244.0.0/16"), n("10.244.1.0/24"), n("fd00:244::/48")],
            all: vec![n("10.245.0.0/16")],
        });
        assert!(s.starts_with("table inet tabby-nat {}\ndelete table inet tabby-nat\n"));
        assert!(s.contains("set masq-v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 10.244.0.0/16 }"), "{s}");
        assert!(s.contains("elements = { 10.244.0.0/15 }"), "{s}");
        assert!(s.contains("elements = { fd00:244::/48 }"), "{s}");
        assert!(s.contains("ip saddr @masq-v4 ip daddr != @pools-v4 masquerade"));
        let empty = render(&NatPools::default());
        assert!(!empty.contains("elements"), "{empty}");
    }
}
