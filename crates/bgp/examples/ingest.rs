//! Ingests N IPv4 /24 prefixes (10 per attribute set, pre-encoded UPDATEs)
//! into a `Rib` in this process and prints the time taken and the resident
//! memory added per route. The core's share of the speaker's ingest
//! benchmark; no sockets.
//!
//! Run: `cargo run --release -p tabby-bgp --example ingest -- 1000000`

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use tabby_bgp::rib::{PeerConfig, PeerUp, Rib, RibConfig};
use tabby_bgp::*;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// User + system CPU time of this process in seconds (from /proc, 10 ms
/// resolution): steadier than wall time on a shared machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // After the command name: state, ppid, ..., utime (12th), stime (13th).
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let (u, s) = (field(11), field(12));
    (u + s) as f64 / 100.0
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let ctx = CodecContext {
        four_octet_as: true,
        ebgp: true,
        ..Default::default()
    };
    // Pre-encode the stream as one contiguous buffer, as a socket would
    // deliver it.
    let mut wire = Vec::new();
    for i in 0..n.div_ceil(10) {
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence([65001, 65100 + (i % 1000)])),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
            med: Some(i),
            ..Default::default()
        };
        let nlri = (0..10)
            .map(|k| {
                let p = i * 10 + k;
                Ipv4Prefix::new(Ipv4Addr::from(0x0b00_0000u32.wrapping_add(p << 8)), 24)
                    .expect("prefix")
            })
            .collect();
        let u = Update {
            attributes: Arc::new(attrs),
            nlri,
            ..Default::default()
        };
        Message::Update(u).encode(&ctx, &mut wire).expect("encode");
    }
    let mut rib = Rib::new(RibConfig::new(64512, Ipv4Addr::new(10, 0, 0, 2)));
    let peer = rib.add_peer(PeerConfig::new("10.0.0.1".parse().expect("addr"), 65001));
    rib.peer_up(
        peer,
        PeerUp {
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            codec: ctx,
            families: vec![Family::Ipv4Unicast],
            next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            next_hop_v6: None,
        },
    );
    let before = rss_bytes();
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let mut off = 0;
    while off < wire.len() {
        let len = frame_len(&wire[off..], &ctx)
            .expect("frame")
            .expect("whole");
        if let Ok(Message::Update(u)) = decode_message(&wire[off..off + len], &ctx) {
            rib.apply_update(peer, &u);
        }
        off += len;
    }
    let took = start.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let after = rss_bytes();
    let routes = rib.loc_rib().len();
    println!(
        "ingested {routes} prefixes in {:.3} s wall, {cpu:.2} s CPU ({:.0} prefixes/s wall); RIB added {:.1} MB RSS = {:.1} bytes/route; {} attribute sets",
        took.as_secs_f64(),
        routes as f64 / took.as_secs_f64(),
        (after.saturating_sub(before)) as f64 / 1e6,
        (after.saturating_sub(before)) as f64 / routes as f64,
        rib.attribute_sets(),
    );
    // Full-table export to a new iBGP peer, packed into UPDATEs.
    let ibgp = rib.add_peer(PeerConfig::new("10.0.0.3".parse().expect("addr"), 64512));
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    rib.peer_up(
        ibgp,
        PeerUp {
            router_id: Ipv4Addr::new(10, 0, 0, 3),
            codec: CodecContext {
                four_octet_as: true,
                ..Default::default()
            },
            families: vec![Family::Ipv4Unicast],
            next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            next_hop_v6: None,
        },
    );
    let msgs = rib.take_updates(ibgp).expect("encode");
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    println!(
        "exported the table to a new iBGP peer: {} UPDATEs, {:.1} MB, in {:.3} s wall, {:.2} s CPU",
        msgs.len(),
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64(),
        cpu_seconds() - cpu0
    );
    drop(msgs);
    // The eBGP session drops: every route is withdrawn and the withdrawals
    // are packed for the iBGP peer.
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    rib.peer_down(peer);
    let msgs = rib.take_updates(ibgp).expect("encode");
    println!(
        "peer down: {} prefixes left, {} withdrawal UPDATEs, in {:.3} s wall, {:.2} s CPU",
        rib.loc_rib().len(),
        msgs.len(),
        start.elapsed().as_secs_f64(),
        cpu_seconds() - cpu0
    );
    println!(
        "process RSS {:.1} MB (includes the {:.1} MB pre-encoded input)",
        after as f64 / 1e6,
        wire.len() as f64 / 1e6
    );
}
