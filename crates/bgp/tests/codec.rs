//! Codec tests: byte vectors built by hand from the RFC layouts, RFC 7606
//! error handling, AS4 reconciliation, the UPDATE packer, and round-trip
//! property tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use proptest::prelude::*;
use tabby_bgp::attribute::{
    Aggregator, AsSegment, MpNextHop, MpReach, MpUnreach, RawAttribute, SegmentKind, type_code,
};
use tabby_bgp::error::{code, subcode};
use tabby_bgp::*;

const MARKER: [u8; 16] = [0xff; 16];

fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = MARKER.to_vec();
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(ty);
    m.extend_from_slice(body);
    m
}

/// An UPDATE with the given attribute bytes and NLRI bytes, no withdrawals.
fn update(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    msg(2, &b)
}

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
// AS_PATH, 4-octet: AS_SEQUENCE of [65001].
const AS_PATH_65001: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NEXT_HOP_10_0_0_1: [u8; 7] = [0x40, 3, 4, 10, 0, 0, 1];
const NLRI_10_1_16: [u8; 3] = [16, 10, 1];

fn ctx4() -> CodecContext {
    CodecContext {
        four_octet_as: true,
        ..Default::default()
    }
}

fn base_attrs() -> Vec<u8> {
    [&ORIGIN_IGP[..], &AS_PATH_65001, &NEXT_HOP_10_0_0_1].concat()
}

fn decode_update(bytes: &[u8], ctx: &CodecContext) -> Update {
    match decode_message(bytes, ctx).expect("decodes") {
        Message::Update(u) => u,
        m => panic!("expected UPDATE, got {m:?}"),
    }
}

#[test]
fn keepalive_bytes() {
    let k = msg(4, &[]);
    assert_eq!(k.len(), 19);
    assert_eq!(
        decode_message(&k, &ctx4()).expect("decode"),
        Message::Keepalive
    );
    assert_eq!(Message::Keepalive.to_bytes(&ctx4()).expect("encode"), k);
}

#[test]
fn open_bytes_with_capabilities() {
    // Version 4, AS 65001, hold 90, id 10.0.0.1; optional parameters: one
    // type-2 parameter per capability: MP IPv4 unicast, route refresh,
    // 4-octet AS 65001.
    let body = [
        4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 20, //
        2, 6, 1, 4, 0, 1, 0, 1, //
        2, 2, 2, 0, //
        2, 6, 65, 4, 0, 0, 0xfd, 0xe9,
    ];
    let bytes = msg(1, &body);
    let Message::Open(open) = decode_message(&bytes, &ctx4()).expect("decode") else {
        panic!("not an OPEN");
    };
    assert_eq!(open.asn(), 65001);
    assert_eq!(open.hold_time, 90);
    assert_eq!(open.bgp_id, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(
        open.capabilities,
        vec![
            Capability::multiprotocol(Family::Ipv4Unicast),
            Capability::RouteRefresh,
            Capability::FourOctetAs(65001)
        ]
    );
    assert_eq!(
        Message::Open(open).to_bytes(&ctx4()).expect("encode"),
        bytes
    );
}

#[test]
fn open_with_four_octet_as_uses_as_trans() {
    let open = Open::new(
        4_200_000_001,
        180,
        Ipv4Addr::new(192, 0, 2, 1),
        vec![Capability::FourOctetAs(4_200_000_001)],
    );
    assert_eq!(open.my_as, 23456);
    let bytes = Message::Open(open.clone())
        .to_bytes(&ctx4())
        .expect("encode");
    assert_eq!(&bytes[20..22], &[0x5b, 0xa0]);
    assert_eq!(
        decode_message(&bytes, &ctx4()).expect("decode"),
        Message::Open(open)
    );
}

#[test]
fn open_errors() {
    let bad_version = msg(1, &[3, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 0]);
    let e = decode_message(&bad_version, &ctx4()).expect_err("version 3");
    assert_eq!((e.notification.code, e.notification.subcode), (2, 1));
    assert_eq!(e.notification.data, [0, 4]);
    // Optional parameter type 1 (authentication, deprecated).
    let bad_param = msg(1, &[4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 3, 1, 1, 0]);
    let e = decode_message(&bad_param, &ctx4()).expect_err("param type 1");
    assert_eq!((e.notification.code, e.notification.subcode), (2, 4));
    // Parameter length disagrees with the message.
    let short = msg(1, &[4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 9, 2, 2]);
    assert!(decode_message(&short, &ctx4()).is_err());
}

#[test]
fn header_errors() {
    let mut k = msg(4, &[]);
    k[3] = 0;
    let e = decode_message(&k, &ctx4()).expect_err("marker");
    assert_eq!((e.notification.code, e.notification.subcode), (1, 1));
    let long_keepalive = msg(4, &[0]);
    let e = decode_message(&long_keepalive, &ctx4()).expect_err("length");
    assert_eq!((e.notification.code, e.notification.subcode), (1, 2));
    assert_eq!(e.notification.data, [0, 20]);
    let bad_type = msg(9, &[]);
    let e = decode_message(&bad_type, &ctx4()).expect_err("type");
    assert_eq!(
        (
            e.notification.code,
            e.notification.subcode,
            e.notification.data
        ),
        (1, 3, vec![9])
    );
    // frame_len waits for a whole header.
    assert_eq!(frame_len(&k[..10], &ctx4()).expect("partial"), None);
    assert_eq!(frame_len(&msg(4, &[]), &ctx4()).expect("ok"), Some(19));
}

#[test]
fn update_bytes_with_every_attribute() {
    let attrs = [
        &ORIGIN_IGP[..],
        &AS_PATH_65001,
        &NEXT_HOP_10_0_0_1,
        &[0x80, 4, 4, 0, 0, 0, 50],                   // MED 50
        &[0x40, 5, 4, 0, 0, 0, 200],                  // LOCAL_PREF 200
        &[0x40, 6, 0],                                // ATOMIC_AGGREGATE
        &[0xc0, 7, 8, 0, 0, 0xfd, 0xe9, 10, 0, 0, 9], // AGGREGATOR 65001 10.0.0.9
        &[0xc0, 8, 8, 0xfd, 0xe9, 0, 100, 0xff, 0xff, 0xff, 0x01], // 65001:100 NO_EXPORT
        &[0x80, 9, 4, 10, 0, 0, 2],                   // ORIGINATOR_ID
        &[0x80, 10, 4, 10, 0, 0, 3],                  // CLUSTER_LIST
        &[0xc0, 32, 12, 0, 0, 0xfd, 0xe9, 0, 0, 0, 1, 0, 0, 0, 2], // 65001:1:2
        &[0xc0, 99, 2, 0xab, 0xcd],                   // unknown optional transitive
        &[0x80, 98, 1, 0],                            // unknown optional non-transitive: dropped
    ]
    .concat();
    let bytes = update(&attrs, &NLRI_10_1_16);
    let u = decode_update(&bytes, &ctx4());
    assert!(u.issues.is_empty(), "{:?}", u.issues);
    let a = &u.attributes;
    assert_eq!(a.origin, Some(Origin::Igp));
    assert_eq!(a.as_path.as_ref().expect("path").to_string(), "65001");
    assert_eq!(a.next_hop, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(a.med, Some(50));
    assert_eq!(a.local_pref, Some(200));
    assert!(a.atomic_aggregate);
    assert_eq!(
        a.aggregator,
        Some(Aggregator {
            asn: 65001,
            address: Ipv4Addr::new(10, 0, 0, 9)
        })
    );
    assert_eq!(
        a.communities,
        vec![Community::new(65001, 100), Community::NO_EXPORT]
    );
    assert_eq!(a.originator_id, Some(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(a.cluster_list, vec![Ipv4Addr::new(10, 0, 0, 3)]);
    assert_eq!(a.large_communities[0].to_string(), "65001:1:2");
    assert_eq!(
        a.unknown,
        vec![RawAttribute {
            flags: 0xe0,
            type_code: 99,
            value: vec![0xab, 0xcd]
        }]
    );
    assert_eq!(
        u.nlri,
        vec!["10.1.0.0/16".parse::<Ipv4Prefix>().expect("prefix")]
    );
    // Re-encoding passes the unknown transitive attribute on with Partial set
    // and drops the non-transitive one.
    let again = Message::Update(u.clone())
        .to_bytes(&ctx4())
        .expect("encode");
    let pos = again
        .windows(3)
        .position(|w| w == [0xe0, 99, 2])
        .expect("partial bit set");
    assert_eq!(&again[pos + 3..pos + 5], &[0xab, 0xcd]);
    assert!(!again.windows(2).any(|w| w == [0x80, 98]));
}

#[test]
fn rfc7606_treat_as_withdraw_cases() {
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "bad ORIGIN value",
            [&[0x40, 1, 1, 5][..], &AS_PATH_65001, &NEXT_HOP_10_0_0_1].concat(),
            1,
        ),
        (
            "AS_PATH segment overrun",
            [
                &ORIGIN_IGP[..],
                &[0x40, 2, 4, 2, 3, 0, 0],
                &NEXT_HOP_10_0_0_1,
            ]
            .concat(),
            2,
        ),
        (
            "bad AS_PATH segment type",
            [
                &ORIGIN_IGP[..],
                &[0x40, 2, 6, 7, 1, 0, 0, 0, 1],
                &NEXT_HOP_10_0_0_1,
            ]
            .concat(),
            2,
        ),
        (
            "missing NEXT_HOP",
            [&ORIGIN_IGP[..], &AS_PATH_65001].concat(),
            3,
        ),
        (
            "missing ORIGIN",
            [&AS_PATH_65001[..], &NEXT_HOP_10_0_0_1].concat(),
            1,
        ),
        (
            "NEXT_HOP length 3",
            [&ORIGIN_IGP[..], &AS_PATH_65001, &[0x40, 3, 3, 1, 2, 3]].concat(),
            3,
        ),
        (
            "MED length 2",
            [&base_attrs()[..], &[0x80, 4, 2, 0, 1]].concat(),
            4,
        ),
        (
            "COMMUNITIES length 3",
            [&base_attrs()[..], &[0xc0, 8, 3, 0, 1, 2]].concat(),
            8,
        ),
        (
            "LARGE_COMMUNITY length 8",
            [&base_attrs()[..], &[0xc0, 32, 8, 0, 0, 0, 1, 0, 0, 0, 2]].concat(),
            32,
        ),
        (
            "ORIGIN flagged optional",
            [&[0x80, 1, 1, 0][..], &AS_PATH_65001, &NEXT_HOP_10_0_0_1].concat(),
            1,
        ),
        (
            "attribute overruns the field",
            [&base_attrs()[..], &[0x80, 4, 40, 0]].concat(),
            4,
        ),
        (
            "NEXT_HOP 0.0.0.0",
            [&ORIGIN_IGP[..], &AS_PATH_65001, &[0x40, 3, 4, 0, 0, 0, 0]].concat(),
            3,
        ),
    ];
    for (name, attrs, tc) in cases {
        let u = decode_update(&update(&attrs, &NLRI_10_1_16), &ctx4());
        assert!(u.treat_as_withdraw(), "{name}: {:?}", u.issues);
        assert!(
            u.issues
                .iter()
                .any(|i| i.type_code == tc && i.action == ErrorAction::TreatAsWithdraw),
            "{name}: expected type {tc} in {:?}",
            u.issues
        );
        // The prefixes are still known, so the caller can withdraw them.
        assert_eq!(u.nlri.len(), 1, "{name}");
    }
}

#[test]
fn rfc7606_attribute_discard_cases() {
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "ATOMIC_AGGREGATE length 1",
            [&base_attrs()[..], &[0x40, 6, 1, 0]].concat(),
            6,
        ),
        (
            "AGGREGATOR length 5",
            [&base_attrs()[..], &[0xc0, 7, 5, 0, 0, 0, 0, 0]].concat(),
            7,
        ),
        (
            "duplicate MED",
            [
                &base_attrs()[..],
                &[0x80, 4, 4, 0, 0, 0, 1, 0x80, 4, 4, 0, 0, 0, 2],
            ]
            .concat(),
            4,
        ),
    ];
    for (name, attrs, tc) in cases {
        let u = decode_update(&update(&attrs, &NLRI_10_1_16), &ctx4());
        assert_eq!(
            u.action(),
            Some(ErrorAction::AttributeDiscard),
            "{name}: {:?}",
            u.issues
        );
        assert_eq!(u.issues[0].type_code, tc, "{name}");
    }
    // Duplicate MED keeps the first.
    let attrs = [
        &base_attrs()[..],
        &[0x80, 4, 4, 0, 0, 0, 1, 0x80, 4, 4, 0, 0, 0, 2],
    ]
    .concat();
    assert_eq!(
        decode_update(&update(&attrs, &NLRI_10_1_16), &ctx4())
            .attributes
            .med,
        Some(1)
    );
    // LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST from an external peer.
    let ebgp = CodecContext {
        ebgp: true,
        ..ctx4()
    };
    let attrs = [
        &base_attrs()[..],
        &[0x40, 5, 4, 0, 0, 0, 200],
        &[0x80, 9, 4, 10, 0, 0, 2],
        &[0x80, 10, 4, 10, 0, 0, 3],
    ]
    .concat();
    let u = decode_update(&update(&attrs, &NLRI_10_1_16), &ebgp);
    assert_eq!(u.action(), Some(ErrorAction::AttributeDiscard));
    assert_eq!(u.attributes.local_pref, None);
    assert_eq!(u.attributes.originator_id, None);
    let codes: Vec<u8> = u.issues.iter().map(|i| i.type_code).collect();
    assert_eq!(codes, [5, 9, 10]);
    let shown = u.issues[0].to_string();
    assert!(
        shown.contains("attribute-discard") && shown.contains("LOCAL_PREF"),
        "{shown}"
    );
}

#[test]
fn rfc7606_session_reset_cases() {
    // Unrecognised well-known attribute.
    let attrs = [&base_attrs()[..], &[0x40, 99, 1, 0]].concat();
    let e = decode_message(&update(&attrs, &NLRI_10_1_16), &ctx4()).expect_err("reset");
    assert_eq!((e.notification.code, e.notification.subcode), (3, 2));
    assert_eq!(e.attribute, Some(99));
    assert_eq!(e.action, ErrorAction::SessionReset);
    // NLRI with a prefix length of 33.
    let e =
        decode_message(&update(&base_attrs(), &[33, 1, 2, 3, 4, 5]), &ctx4()).expect_err("nlri");
    assert_eq!((e.notification.code, e.notification.subcode), (3, 10));
    // Withdrawn length overruns.
    let e = decode_message(&msg(2, &[0, 9, 0, 0]), &ctx4()).expect_err("withdrawn");
    assert_eq!((e.notification.code, e.notification.subcode), (3, 1));
    // Two MP_UNREACH attributes.
    let mpu = [0x80, 15, 3, 0, 2, 1];
    let attrs = [&mpu[..], &mpu].concat();
    let e = decode_message(&update(&attrs, &[]), &ctx4()).expect_err("dup mp");
    assert_eq!(e.attribute, Some(15));
    // MP_REACH with a broken IPv6 NLRI: the family can be disabled.
    let attrs = [
        &base_attrs()[..],
        &[0x80, 14, 10, 0, 2, 1, 4, 10, 0, 0, 1, 0, 129],
    ]
    .concat();
    let e = decode_message(&update(&attrs, &[]), &ctx4()).expect_err("mp nlri");
    assert_eq!(
        e.action,
        ErrorAction::AfiSafiDisable {
            afi: Afi::IPV6,
            safi: Safi::UNICAST
        }
    );
    assert_eq!(e.attribute, Some(14));
}

#[test]
fn as4_path_for_two_octet_peer() {
    let ctx2 = CodecContext::default();
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([65001, 4_200_000_000, 65002])),
        next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
        aggregator: Some(Aggregator {
            asn: 4_200_000_000,
            address: Ipv4Addr::new(10, 9, 9, 9),
        }),
        ..Default::default()
    };
    let u = Update {
        attributes: Arc::new(attrs.clone()),
        nlri: vec!["10.2.0.0/16".parse().expect("prefix")],
        ..Default::default()
    };
    let bytes = Message::Update(u).to_bytes(&ctx2).expect("encode");
    // AS_PATH with 2-octet ASes: 65001 AS_TRANS 65002.
    assert!(
        bytes
            .windows(9)
            .any(|w| w == [0x40, 2, 8, 2, 3, 0xfd, 0xe9, 0x5b, 0xa0])
    );
    // AS4_PATH and AS4_AGGREGATOR are present.
    assert!(bytes.windows(2).any(|w| w == [0xc0, type_code::AS4_PATH]));
    assert!(
        bytes
            .windows(2)
            .any(|w| w == [0xc0, type_code::AS4_AGGREGATOR])
    );
    let back = decode_update(&bytes, &ctx2);
    assert!(back.issues.is_empty(), "{:?}", back.issues);
    assert_eq!(*back.attributes, attrs);
    // A hand-made 2-octet UPDATE: AS_PATH "100 AS_TRANS", AS4_PATH "4200000000".
    let attrs = [
        &ORIGIN_IGP[..],
        &[0x40, 2, 6, 2, 2, 0, 100, 0x5b, 0xa0],
        &NEXT_HOP_10_0_0_1,
        &[0xc0, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x00],
    ]
    .concat();
    let u = decode_update(&update(&attrs, &NLRI_10_1_16), &ctx2);
    assert_eq!(
        u.attributes.as_path.as_ref().expect("path").to_string(),
        "100 4200000000"
    );
}

#[test]
fn notification_shutdown_communication() {
    let n = Notification::cease_with_message(
        subcode::cease::ADMINISTRATIVE_SHUTDOWN,
        "maintenance, back at 22:00",
    );
    let bytes = Message::Notification(n.clone())
        .to_bytes(&ctx4())
        .expect("encode");
    assert_eq!(&bytes[19..22], &[6, 2, 26]);
    let Message::Notification(back) = decode_message(&bytes, &ctx4()).expect("decode") else {
        panic!("not a NOTIFICATION");
    };
    assert_eq!(
        back.shutdown_communication(),
        Some("maintenance, back at 22:00")
    );
    assert_eq!(
        back.to_string(),
        "6/2 (Cease / Administrative Shutdown): \"maintenance, back at 22:00\""
    );
    let hold = Notification::new(code::HOLD_TIMER_EXPIRED, 0, vec![]);
    assert_eq!(hold.to_string(), "4/0 (Hold Timer Expired / Unspecific)");
    assert_eq!(hold.shutdown_communication(), None);
}

#[test]
fn route_refresh_bytes() {
    let bytes = msg(5, &[0, 1, 0, 1]);
    let m = decode_message(&bytes, &ctx4()).expect("decode");
    assert_eq!(
        m,
        Message::RouteRefresh(RouteRefresh::request(Family::Ipv4Unicast))
    );
    assert_eq!(m.to_bytes(&ctx4()).expect("encode"), bytes);
}

#[test]
fn ipv6_mp_reach_and_end_of_rib() {
    let attrs = Arc::new(PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence([65001])),
        mp_next_hop: Some(MpNextHop {
            addr: IpAddr::V6("fd00::1".parse().expect("addr")),
            link_local: Some("fe80::1".parse::<Ipv6Addr>().expect("addr")),
        }),
        ..Default::default()
    });
    let mut b = UpdateBuilder::new(ctx4());
    b.announce(&attrs, "fd00:1::/64".parse().expect("prefix"));
    b.withdraw("fd00:2::/64".parse().expect("prefix"));
    let msgs = b.build().expect("build");
    assert_eq!(msgs.len(), 2);
    let w = decode_update(&msgs[0], &ctx4());
    assert_eq!(
        w.withdrawn_prefixes()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        ["fd00:2::/64"]
    );
    let a = decode_update(&msgs[1], &ctx4());
    assert!(a.issues.is_empty(), "{:?}", a.issues);
    assert_eq!(a.attributes, attrs);
    let r = a.mp_reach.as_ref().expect("mp_reach");
    assert_eq!(r.link_local, Some("fe80::1".parse().expect("addr")));
    assert_eq!(
        a.announced().map(|p| p.to_string()).collect::<Vec<_>>(),
        ["fd00:1::/64"]
    );
    // End-of-RIB markers.
    for f in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
        let bytes = Message::Update(Update::end_of_rib_marker(f))
            .to_bytes(&ctx4())
            .expect("eor");
        assert_eq!(decode_update(&bytes, &ctx4()).end_of_rib(), Some(f));
    }
    let _ = MpUnreach {
        family: Family::Ipv6Unicast,
        withdrawn: vec![],
    };
}

#[test]
fn update_builder_packs_into_few_messages() {
    let ctx = ctx4();
    let attrs: Vec<Arc<PathAttributes>> = (0..3)
        .map(|i| {
            Arc::new(PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::from_sequence([65001, 65100 + i])),
                next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
                ..Default::default()
            })
        })
        .collect();
    let mut b = UpdateBuilder::new(ctx);
    let n = 6000u32;
    for i in 0..n {
        let p = Ipv4Prefix::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).expect("prefix");
        // Interleave attribute sets: the builder must regroup them.
        b.announce(&attrs[(i % 3) as usize], Prefix::V4(p));
    }
    for i in 0..500u32 {
        b.withdraw(Prefix::V4(
            Ipv4Prefix::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24).expect("p"),
        ));
    }
    let msgs = b.build().expect("build");
    // Each /24 takes 4 octets; 2000 per set need 2 messages each; 500
    // withdrawals fit one message.
    assert_eq!(msgs.len(), 1 + 3 * 2, "message count");
    let mut announced = 0;
    let mut withdrawn = 0;
    for m in &msgs {
        assert!(m.len() <= 4096);
        let u = decode_update(m, &ctx);
        assert!(u.issues.is_empty());
        announced += u.nlri.len();
        withdrawn += u.withdrawn.len();
        if !u.nlri.is_empty() {
            assert!(attrs.iter().any(|a| **a == *u.attributes));
        }
    }
    assert_eq!((announced, withdrawn), (n as usize, 500));
    // With RFC 8654 extended messages everything of one set fits one UPDATE.
    let ext = CodecContext {
        extended_message: true,
        ..ctx
    };
    let mut b = UpdateBuilder::new(ext);
    for i in 0..3000 {
        b.announce(
            &attrs[0],
            Prefix::V4(Ipv4Prefix::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).expect("p")),
        );
    }
    assert_eq!(b.build().expect("build").len(), 1);
}

fn arb_asn() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..65535, 65536u32..=u32::MAX]
}

fn arb_path() -> impl Strategy<Value = AsPath> {
    prop::collection::vec(
        (
            prop_oneof![Just(SegmentKind::Sequence), Just(SegmentKind::Set)],
            prop::collection::vec(arb_asn(), 1..8),
        ),
        0..4,
    )
    .prop_map(|segs| AsPath {
        segments: segs
            .into_iter()
            .map(|(kind, asns)| AsSegment { kind, asns })
            .collect(),
    })
}

prop_compose! {
    fn arb_attrs()(
        origin in prop_oneof![Just(Origin::Igp), Just(Origin::Egp), Just(Origin::Incomplete)],
        as_path in arb_path(),
        next_hop in (1u8..224, any::<u16>(), 1u8..255).prop_map(|(a, b, c)| Ipv4Addr::new(a, (b >> 8) as u8, b as u8, c)),
        med in prop::option::of(any::<u32>()),
        local_pref in prop::option::of(any::<u32>()),
        atomic_aggregate in any::<bool>(),
        aggregator in prop::option::of((arb_asn(), any::<u32>())),
        communities in prop::collection::vec(any::<u32>(), 0..10),
        large in prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 0..5),
        originator_id in prop::option::of(any::<u32>()),
        cluster_list in prop::collection::vec(any::<u32>(), 0..4),
        unknown in prop::collection::btree_map(100u8..200, prop::collection::vec(any::<u8>(), 0..300), 0..3),
    ) -> PathAttributes {
        PathAttributes {
            origin: Some(origin),
            as_path: Some(as_path),
            next_hop: Some(next_hop),
            med,
            local_pref,
            atomic_aggregate,
            aggregator: aggregator.map(|(asn, a)| Aggregator { asn, address: Ipv4Addr::from(a) }),
            communities: communities.into_iter().map(Community).collect(),
            large_communities: large.into_iter().map(|(global, local1, local2)| LargeCommunity { global, local1, local2 }).collect(),
            originator_id: originator_id.map(Ipv4Addr::from),
            cluster_list: cluster_list.into_iter().map(Ipv4Addr::from).collect(),
            unknown: unknown.into_iter().map(|(type_code, value)| RawAttribute { flags: 0xe0, type_code, value }).collect(),
            mp_next_hop: None,
        }
    }
}

fn arb_v4() -> impl Strategy<Value = Ipv4Prefix> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Prefix::new(Ipv4Addr::from(a), l).expect("len"))
}

proptest! {
    #[test]
    fn update_round_trips_four_octet(attrs in arb_attrs(), nlri in prop::collection::vec(arb_v4(), 1..50), withdrawn in prop::collection::vec(arb_v4(), 0..50)) {
        let u = Update { withdrawn, attributes: Arc::new(attrs), nlri, ..Default::default() };
        let bytes = Message::Update(u.clone()).to_bytes(&ctx4()).expect("encode");
        prop_assert_eq!(decode_message(&bytes, &ctx4()).expect("decode"), Message::Update(u));
    }

    #[test]
    fn update_round_trips_two_octet_sequences(
        seq in prop::collection::vec(arb_asn().prop_filter("not AS_TRANS", |a| *a != 23456), 1..20),
        nlri in prop::collection::vec(arb_v4(), 1..20),
    ) {
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(seq)),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ..Default::default()
        };
        let u = Update { attributes: Arc::new(attrs), nlri, ..Default::default() };
        let ctx2 = CodecContext::default();
        let bytes = Message::Update(u.clone()).to_bytes(&ctx2).expect("encode");
        prop_assert_eq!(decode_message(&bytes, &ctx2).expect("decode"), Message::Update(u));
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), ty in 1u8..=5) {
        let m = msg(ty, &bytes);
        let _ = decode_message(&m, &ctx4());
        let _ = decode_message(&m, &CodecContext::default());
    }

    #[test]
    fn open_round_trips(asn in arb_asn(), hold in prop_oneof![Just(0u16), 3u16..], id in any::<u32>(), rr in any::<bool>()) {
        let mut caps = vec![Capability::multiprotocol(Family::Ipv4Unicast), Capability::FourOctetAs(asn)];
        if rr { caps.push(Capability::RouteRefresh); }
        let o = Open::new(asn, hold, Ipv4Addr::from(id), caps);
        let bytes = Message::Open(o.clone()).to_bytes(&ctx4()).expect("encode");
        prop_assert_eq!(decode_message(&bytes, &ctx4()).expect("decode"), Message::Open(o.clone()));
        prop_assert_eq!(o.asn(), asn);
    }
}

#[test]
fn mp_reach_ipv4_with_ipv6_next_hop() {
    // RFC 8950: IPv4 NLRI with an IPv6 next hop in MP_REACH.
    let mut v = vec![0, 1, 1, 16];
    v.extend_from_slice(&"fd00::9".parse::<Ipv6Addr>().expect("addr").octets());
    v.push(0);
    v.extend_from_slice(&[24, 10, 5, 5]);
    let mut attrs = vec![0x80, 14, v.len() as u8];
    attrs.extend_from_slice(&v);
    attrs.extend_from_slice(&ORIGIN_IGP);
    attrs.extend_from_slice(&AS_PATH_65001);
    let u = decode_update(&update(&attrs, &[]), &ctx4());
    assert!(u.issues.is_empty(), "{:?}", u.issues);
    let r: &MpReach = u.mp_reach.as_ref().expect("mp");
    assert_eq!(r.family, Family::Ipv4Unicast);
    assert_eq!(r.next_hop, "fd00::9".parse::<IpAddr>().expect("addr"));
    assert_eq!(
        u.announced().map(|p| p.to_string()).collect::<Vec<_>>(),
        ["10.5.5.0/24"]
    );
}
