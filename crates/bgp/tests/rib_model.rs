//! Model-based property test of the RIB: random announcements and
//! withdrawals from three peers against a plain model of who announced
//! what; after every run the Loc-RIB, the counters and what an iBGP peer
//! was sent must agree with the model.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use proptest::prelude::*;
use tabby_bgp::rib::{PeerConfig, PeerId, PeerUp, Rib, RibConfig};
use tabby_bgp::*;

#[derive(Clone, Debug)]
enum Op {
    Announce {
        peer: usize,
        prefix: u8,
        path_len: u8,
        med: u32,
    },
    Withdraw {
        peer: usize,
        prefix: u8,
    },
    Flush,
    /// The session with the peer drops and comes back.
    Reset {
        peer: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..2, 0u8..12, 1u8..4, 0u32..3)
            .prop_map(|(peer, prefix, path_len, med)| Op::Announce { peer, prefix, path_len, med }),
        2 => (0usize..2, 0u8..12).prop_map(|(peer, prefix)| Op::Withdraw { peer, prefix }),
        1 => Just(Op::Flush),
        1 => (0usize..2).prop_map(|peer| Op::Reset { peer }),
    ]
}

fn prefix(i: u8) -> Ipv4Prefix {
    Ipv4Prefix::new(Ipv4Addr::new(10, 7, i, 0), 24).expect("prefix")
}

fn up(id: [u8; 4], four: bool) -> PeerUp {
    PeerUp {
        router_id: Ipv4Addr::from(id),
        codec: CodecContext {
            four_octet_as: four,
            ..Default::default()
        },
        families: vec![Family::Ipv4Unicast],
        next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 100)),
        next_hop_v6: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn rib_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        let mut rib = Rib::new(RibConfig::new(64512, Ipv4Addr::new(10, 0, 0, 100)));
        // Two eBGP peers in the same neighbour AS (so MED is compared) and
        // one iBGP peer that only receives.
        let e1 = rib.add_peer(PeerConfig::new("10.0.0.1".parse().expect("a"), 65001));
        let e2 = rib.add_peer(PeerConfig::new("10.0.0.2".parse().expect("a"), 65001));
        let ib = rib.add_peer(PeerConfig::new("10.0.0.3".parse().expect("a"), 64512));
        rib.peer_up(e1, up([10, 0, 0, 1], true));
        rib.peer_up(e2, up([10, 0, 0, 2], true));
        rib.peer_up(ib, up([10, 0, 0, 3], true));
        let peers = [e1, e2];
        // Model: (peer index, prefix) -> (path length, med).
        let mut model: BTreeMap<(usize, u8), (u8, u32)> = BTreeMap::new();
        // What the iBGP peer has been told: prefix -> MED.
        let mut sent: BTreeMap<Ipv4Prefix, Option<u32>> = BTreeMap::new();
        let ctx = CodecContext { four_octet_as: true, ..Default::default() };
        let flush = |rib: &mut Rib, sent: &mut BTreeMap<Ipv4Prefix, Option<u32>>| {
            for m in rib.take_updates(ib).expect("encode") {
                let Ok(Message::Update(u)) = decode_message(&m, &ctx) else { panic!("bad UPDATE") };
                for w in &u.withdrawn { sent.remove(w); }
                for p in &u.nlri { sent.insert(*p, u.attributes.med); }
            }
        };
        for op in &ops {
            match *op {
                Op::Announce { peer, prefix: p, path_len, med } => {
                    let asns: Vec<u32> = std::iter::once(65001).chain((1..path_len).map(|i| 65100 + u32::from(i))).collect();
                    let attrs = PathAttributes {
                        origin: Some(Origin::Igp),
                        as_path: Some(AsPath::from_sequence(asns)),
                        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1 + peer as u8)),
                        med: Some(med),
                        ..Default::default()
                    };
                    let u = Update { attributes: Arc::new(attrs), nlri: vec![prefix(p)], ..Default::default() };
                    rib.apply_update(peers[peer], &u);
                    model.insert((peer, p), (path_len, med));
                }
                Op::Withdraw { peer, prefix: p } => {
                    let u = Update { withdrawn: vec![prefix(p)], ..Default::default() };
                    rib.apply_update(peers[peer], &u);
                    model.remove(&(peer, p));
                }
                Op::Flush => flush(&mut rib, &mut sent),
                Op::Reset { peer } => {
                    rib.peer_down(peers[peer]);
                    rib.peer_up(peers[peer], up([10, 0, 0, 1 + peer as u8], true));
                    model.retain(|(p, _), _| *p != peer);
                }
            }
        }
        flush(&mut rib, &mut sent);
        // Loc-RIB agrees with the model, with one best path per prefix.
        let mut expected_sent = BTreeMap::new();
        for p in 0u8..12 {
            let pfx = Prefix::V4(prefix(p));
            let paths = rib.loc_rib().paths(pfx);
            let have: BTreeSet<u32> = paths.iter().map(|x| x.peer.0).collect();
            let want: BTreeSet<u32> = (0..2).filter(|i| model.contains_key(&(*i, p))).map(|i| peers[i].0).collect();
            prop_assert_eq!(&have, &want, "paths of {}", pfx);
            let bests: Vec<_> = paths.iter().filter(|x| x.is_best()).collect();
            prop_assert_eq!(bests.len(), usize::from(!want.is_empty()));
            if let Some(b) = bests.first() {
                // Model decision: shortest path, then lowest MED, then lowest router id.
                let cands: Vec<(u8, u32, usize)> = (0..2)
                    .filter_map(|i| model.get(&(i, p)).map(|(l, m)| (*l, *m, i)))
                    .collect();
                let (_, med, winner) = *cands.iter().min().expect("candidate");
                prop_assert_eq!(b.peer, peers[winner]);
                expected_sent.insert(prefix(p), Some(med));
            }
        }
        prop_assert_eq!(&sent, &expected_sent, "what the iBGP peer was told");
        for (i, id) in peers.iter().enumerate() {
            let n = model.keys().filter(|(peer, _)| *peer == i).count();
            let stats = rib.peer_stats(*id).expect("stats");
            prop_assert_eq!(stats.received, n);
            prop_assert_eq!(stats.accepted, n);
        }
        prop_assert_eq!(rib.peer_stats(ib).expect("stats").advertised, expected_sent.len());
        let _ = PeerId(0);
    }
}
