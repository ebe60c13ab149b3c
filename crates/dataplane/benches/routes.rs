//! Benchmark (not a test): time to program 100,000 IPv4 routes into the
//! kernel with `ip -batch` (the anchor) and with tabby's batch API, each in
//! a fresh network namespace with a veth next-hop device, in one run.
//! Prints both, the ratio, and the median over several rounds.
//!
//! `cargo bench -p tabby-dataplane --bench routes` (as root), or
//! `bench/routes.sh`. `TABBY_BENCH_ROUTES` and `TABBY_BENCH_ROUNDS` change
//! the sizes.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tabby_dataplane::{Netns as DpNetns, Route, RouteChange, RouteTable};
use tabby_testbed::{Netns, veth};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn destination(i: usize) -> Ipv4Addr {
    // 11.0.0.0 + i: distinct /32s, as a routing table full of pod routes.
    Ipv4Addr::from(0x0b00_0000u32 + i as u32)
}

/// A fresh namespace with `eth0` 10.250.0.1/24 (veth to a peer namespace).
fn fresh() -> (Netns, Netns) {
    let a = Netns::new("bench-a").expect("netns");
    let b = Netns::new("bench-b").expect("netns");
    veth(
        &a,
        "eth0",
        Some("10.250.0.1/24"),
        &b,
        "eth0",
        Some("10.250.0.2/24"),
    )
    .expect("veth");
    (a, b)
}

fn count_routes(ns: &Netns) -> usize {
    ns.ip_stdout(["-4", "route", "show", "table", "main"])
        .expect("ip route")
        .lines()
        .filter(|l| l.starts_with("11."))
        .count()
}

fn run_ip_batch(n: usize, file: &std::path::Path) -> Duration {
    let (a, _b) = fresh();
    let start = Instant::now();
    a.ip(["-batch", file.to_str().expect("utf-8 path")])
        .expect("ip -batch");
    let t = start.elapsed();
    assert_eq!(count_routes(&a), n, "ip -batch installed every route");
    t
}

fn run_tabby(n: usize) -> Duration {
    let (a, _b) = fresh();
    let mut nl = DpNetns::named(a.name())
        .expect("ns")
        .netlink()
        .expect("netlink");
    let gw = IpAddr::V4(Ipv4Addr::new(10, 250, 0, 2));
    let start = Instant::now();
    let changes: Vec<RouteChange> = (0..n)
        .map(|i| {
            RouteChange::Add(Route::via(
                IpNet::new(IpAddr::V4(destination(i)), 32).expect("prefix"),
                gw,
            ))
        })
        .collect();
    let report = nl.apply_routes(&changes).expect("batch");
    let t = start.elapsed();
    assert!(report.is_ok(), "{:?}", report.failures.first());
    assert_eq!(
        nl.routes(Some(RouteTable::MAIN)).expect("list").len(),
        n,
        "tabby installed every route"
    );
    t
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n = env_usize("TABBY_BENCH_ROUTES", 100_000);
    let rounds = env_usize("TABBY_BENCH_ROUNDS", 5).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("routes.batch");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).expect("batch file"));
        for i in 0..n {
            writeln!(f, "route add {}/32 via 10.250.0.2", destination(i)).expect("write");
        }
    }
    println!(
        "program {n} IPv4 routes (/32 via a veth neighbour), fresh namespace each time, {rounds} rounds"
    );
    let mut ip_times = Vec::new();
    let mut tabby_times = Vec::new();
    for round in 1..=rounds {
        let ip_t = run_ip_batch(n, &file);
        let tabby_t = run_tabby(n);
        println!(
            "round {round}: ip -batch {:.3} s   tabby {:.3} s   ratio ip/tabby {:.2}x",
            ip_t.as_secs_f64(),
            tabby_t.as_secs_f64(),
            ip_t.as_secs_f64() / tabby_t.as_secs_f64()
        );
        ip_times.push(ip_t);
        tabby_times.push(tabby_t);
    }
    let ip_m = median(ip_times);
    let tabby_m = median(tabby_times);
    println!(
        "median: ip -batch {:.3} s   tabby {:.3} s   tabby is {:.2}x the speed of ip -batch",
        ip_m.as_secs_f64(),
        tabby_m.as_secs_f64(),
        ip_m.as_secs_f64() / tabby_m.as_secs_f64()
    );
}
