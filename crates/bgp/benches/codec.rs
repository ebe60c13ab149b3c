//! Decode and encode throughput in prefixes per second, and RIB ingest
//! (decode + import + decision) for the same UPDATE stream.
//!
//! Run: `cargo bench -p tabby-bgp --bench codec`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tabby_bgp::rib::{PeerConfig, PeerUp, Rib, RibConfig};
use tabby_bgp::*;

/// `updates` UPDATEs of 10 /24 prefixes each, every one with its own
/// attribute set (the shape of the ingest benchmark).
fn stream(updates: u32, ctx: &CodecContext) -> Vec<Vec<u8>> {
    (0..updates)
        .map(|i| {
            let attrs = PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::from_sequence([65001, 65100 + (i % 1000)])),
                next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
                med: Some(i),
                ..Default::default()
            };
            let nlri = (0..10)
                .map(|k| {
                    let n = i * 10 + k;
                    Ipv4Prefix::new(Ipv4Addr::from(0x0b00_0000 + (n << 8)), 24).expect("prefix")
                })
                .collect();
            let u = Update {
                attributes: Arc::new(attrs),
                nlri,
                ..Default::default()
            };
            Message::Update(u).to_bytes(ctx).expect("encode")
        })
        .collect()
}

fn decode(c: &mut Criterion) {
    let ctx = CodecContext {
        four_octet_as: true,
        ebgp: true,
        ..Default::default()
    };
    let msgs = stream(1000, &ctx);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("update_10_prefixes_x1000", |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(decode_message(black_box(m), &ctx).expect("decode"));
            }
        })
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let ctx = CodecContext {
        four_octet_as: true,
        ebgp: true,
        ..Default::default()
    };
    let sets: Vec<Arc<PathAttributes>> = (0..1000u32)
        .map(|i| {
            Arc::new(PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::from_sequence([64512, 65001, 65100 + i])),
                next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
                med: Some(i),
                ..Default::default()
            })
        })
        .collect();
    let prefixes: Vec<Prefix> = (0..10_000u32)
        .map(|n| {
            Prefix::V4(Ipv4Prefix::new(Ipv4Addr::from(0x0b00_0000 + (n << 8)), 24).expect("p"))
        })
        .collect();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("update_builder_10k_prefixes_1000_sets", |b| {
        b.iter(|| {
            let mut builder = UpdateBuilder::new(ctx);
            for (i, p) in prefixes.iter().enumerate() {
                builder.announce(&sets[i / 10], *p);
            }
            black_box(builder.build().expect("build"))
        })
    });
    g.finish();
}

fn ingest(c: &mut Criterion) {
    let ctx = CodecContext {
        four_octet_as: true,
        ebgp: true,
        ..Default::default()
    };
    let msgs = stream(10_000, &ctx);
    let mut g = c.benchmark_group("rib");
    g.sample_size(10);
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("ingest_100k_prefixes", |b| {
        b.iter(|| {
            let mut rib = Rib::new(RibConfig::new(64512, Ipv4Addr::new(10, 0, 0, 2)));
            let peer = rib.add_peer(PeerConfig::new("10.0.0.1".parse().expect("addr"), 65001));
            let up = PeerUp {
                router_id: Ipv4Addr::new(10, 0, 0, 1),
                codec: ctx,
                families: vec![Family::Ipv4Unicast],
                next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
                next_hop_v6: None,
            };
            rib.peer_up(peer, up);
            for m in &msgs {
                if let Ok(Message::Update(u)) = decode_message(m, &ctx) {
                    rib.apply_update(peer, &u);
                }
            }
            black_box(rib.loc_rib().len())
        })
    });
    g.finish();
}

criterion_group!(benches, decode, encode, ingest);
criterion_main!(benches);
