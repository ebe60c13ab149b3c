//! IPAM behaviour against both datastore backends: SQLite in a temporary
//! file and a real etcd started for each test on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use tabby_datastore::Datastore;
use tabby_ipam::check::Problem;
use tabby_ipam::records::{self, AffinityState, BlockAffinity};
use tabby_ipam::{
    AssignRequest, ClaimPause, Environment, Ipam, IpamConfig, IpamError, Pool, ReleaseRequest,
    ReleaseResult,
};
use tabby_model::AllowedUse;
use tabby_testbed::EtcdServer;

struct Backend {
    ipam: Ipam,
    _dir: Option<tempfile::TempDir>,
    _etcd: Option<EtcdServer>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("ipam.db").display());
    let ds = Datastore::connect(&url).await.expect("open sqlite");
    Backend {
        ipam: Ipam::new(ds),
        _dir: Some(dir),
        _etcd: None,
    }
}

async fn etcd() -> Backend {
    let server = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .expect("join")
        .expect("start etcd");
    let ds = Datastore::connect(&server.url()).await.expect("connect");
    Backend {
        ipam: Ipam::new(ds),
        _dir: None,
        _etcd: Some(server),
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::sqlite().await;
                    super::$name(&b.ipam).await;
                }
            )*
        }
        mod on_etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::etcd().await;
                    super::$name(&b.ipam).await;
                }
            )*
        }
    };
}

on_both!(
    affine_blocks_first_then_new_claims,
    strict_affinity_and_max_blocks_per_host,
    release_by_handle_and_by_ip_with_sequence_guard,
    dual_stack,
    pool_selection_rules,
    reservations_are_skipped,
    check_finds_damage_and_fix_repairs_it,
    interrupted_claim_is_found_and_fixed,
    concurrent_tasks_never_share_an_address,
    a_confirmed_affinity_whose_block_vanished_is_reclaimed,
    an_empty_block_of_another_node_is_taken_over,
    a_non_empty_block_of_another_node_is_never_taken_over,
);

fn net(s: &str) -> IpNet {
    s.parse().expect("cidr")
}

fn env(pools: Vec<Pool>) -> Environment {
    Environment {
        pools,
        config: IpamConfig::default(),
        reservations: Vec::new(),
    }
}

fn req(node: &str, handle: &str, n4: usize) -> AssignRequest {
    let mut r = AssignRequest::v4(node, handle);
    r.num_v4 = n4;
    r
}

async fn clean(ipam: &Ipam, env: &Environment, in_use: &BTreeSet<IpAddr>) {
    let report = ipam.check(env, Some(in_use)).await.expect("check");
    assert!(
        report.problems.is_empty(),
        "check found: {:#?}",
        report.problems
    );
}

async fn affinity(ipam: &Ipam, node: &str, cidr: &IpNet) -> Option<BlockAffinity> {
    let kv = ipam
        .datastore()
        .get(&records::affinity_key(node, cidr))
        .await
        .expect("get");
    kv.map(|kv| serde_json::from_slice(&kv.value).expect("affinity json"))
}

async fn affine_blocks_first_then_new_claims(ipam: &Ipam) {
    let e = env(vec![Pool::new("p", net("10.10.0.0/24"), 28)]);
    let mut all = BTreeSet::new();
    let mut blocks = BTreeSet::new();
    for i in 0..20 {
        let got = ipam
            .auto_assign(&e, &req("node-a", &format!("k8s-pod-network.c{i}"), 1))
            .await
            .expect("assign");
        assert_eq!(got.v4.len(), 1);
        let (ip, block) = got.v4[0];
        assert!(all.insert(ip), "{ip} handed out twice");
        assert!(block.contains(&ip));
        blocks.insert(block);
    }
    // 20 addresses from /28 blocks: exactly two blocks, both node-a's.
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    for b in &blocks {
        let a = affinity(ipam, "node-a", b).await.expect("affinity");
        assert_eq!(a.state, AffinityState::Confirmed);
    }
    // Another node gets a block of its own.
    let got = ipam
        .auto_assign(&e, &req("node-b", "k8s-pod-network.b0", 1))
        .await
        .expect("assign b");
    assert!(!blocks.contains(&got.v4[0].1));
    all.insert(got.v4[0].0);
    clean(ipam, &e, &all).await;
    let usage = ipam.usage(&e).await.expect("usage");
    assert_eq!(usage[0].in_use, 21);
    assert_eq!(usage[0].blocks.len(), 3);
}

async fn strict_affinity_and_max_blocks_per_host(ipam: &Ipam) {
    // 4 blocks of 16.
    let mut e = env(vec![Pool::new("p", net("10.11.0.0/26"), 28)]);
    e.config.strict_affinity = true;
    e.config.max_blocks_per_host = Some(1);
    let got = ipam
        .auto_assign(&e, &req("a", "k8s-pod-network.a", 16))
        .await
        .expect("16 from one block");
    let block_a = got.v4[0].1;
    assert!(got.v4.iter().all(|(_, b)| *b == block_a));
    match ipam
        .auto_assign(&e, &req("a", "k8s-pod-network.a2", 1))
        .await
    {
        Err(IpamError::Exhausted { reason, .. }) => {
            assert!(reason.contains("maxBlocksPerHost"), "{reason}");
            assert!(reason.contains("strictAffinity"), "{reason}");
        }
        other => panic!("expected exhaustion, got {other:?}"),
    }
    // Node b takes a block and uses 2 of its addresses.
    let b = ipam
        .auto_assign(&e, &req("b", "k8s-pod-network.b", 2))
        .await
        .expect("b");
    let block_b = b.v4[0].1;
    // Without strict affinity, a borrows from b's block.
    e.config.strict_affinity = false;
    let borrowed = ipam
        .auto_assign(&e, &req("a", "k8s-pod-network.a3", 1))
        .await
        .expect("borrow");
    assert_eq!(borrowed.v4[0].1, block_b, "borrowed from b's block");
    // b's block stays b's.
    let info = ipam.address_info(&e, borrowed.v4[0].0).await.expect("info");
    assert_eq!(info.node.as_deref(), Some("b"));
    assert_eq!(info.handle.as_deref(), Some("k8s-pod-network.a3"));
}

async fn release_by_handle_and_by_ip_with_sequence_guard(ipam: &Ipam) {
    let e = env(vec![Pool::new("p", net("10.12.0.0/24"), 30)]);
    let got = ipam
        .auto_assign(&e, &req("n", "k8s-pod-network.x", 3))
        .await
        .expect("assign");
    let ips: BTreeSet<IpAddr> = got.v4.iter().map(|(ip, _)| *ip).collect();
    assert_eq!(
        ipam.addresses_of("k8s-pod-network.x")
            .await
            .expect("addresses")
            .into_iter()
            .collect::<BTreeSet<_>>(),
        ips
    );
    let released: BTreeSet<IpAddr> = ipam
        .release_handle("k8s-pod-network.x")
        .await
        .expect("release")
        .into_iter()
        .collect();
    assert_eq!(released, ips);
    assert!(
        ipam.datastore()
            .get(&records::handle_key("k8s-pod-network.x"))
            .await
            .expect("get")
            .is_none(),
        "handle deleted"
    );
    // By IP, guarded by the sequence number.
    let one = ipam
        .auto_assign(&e, &req("n", "k8s-pod-network.y", 1))
        .await
        .expect("assign");
    let ip = one.v4[0].0;
    let seq = ipam
        .address_info(&e, ip)
        .await
        .expect("info")
        .sequence
        .expect("allocated");
    let stale = ReleaseRequest {
        ip,
        sequence: Some(seq + 1),
        handle: None,
    };
    assert_eq!(
        ipam.release(&e, &[stale]).await.expect("release")[0].1,
        ReleaseResult::Reused
    );
    let good = ReleaseRequest {
        ip,
        sequence: Some(seq),
        handle: Some("k8s-pod-network.y".into()),
    };
    assert!(matches!(
        ipam.release(&e, std::slice::from_ref(&good))
            .await
            .expect("release")[0]
            .1,
        ReleaseResult::Released { .. }
    ));
    assert_eq!(
        ipam.release(&e, &[good]).await.expect("release")[0].1,
        ReleaseResult::NotAllocated
    );
    clean(ipam, &e, &BTreeSet::new()).await;
}

async fn dual_stack(ipam: &Ipam) {
    let e = env(vec![
        Pool::new("v4", net("10.13.0.0/24"), 26),
        Pool::new("v6", net("fd00:13::/120"), 122),
    ]);
    let mut r = req("n", "k8s-pod-network.ds", 1);
    r.num_v6 = 2;
    let got = ipam.auto_assign(&e, &r).await.expect("assign");
    assert_eq!(got.v4.len(), 1);
    assert_eq!(got.v6.len(), 2);
    assert!(
        got.v6
            .iter()
            .all(|(ip, b)| ip.is_ipv6() && b.prefix_len() == 122)
    );
    let in_use: BTreeSet<IpAddr> = got.v4.iter().chain(&got.v6).map(|(ip, _)| *ip).collect();
    clean(ipam, &e, &in_use).await;
    // v6 pool full: the v4 address taken first is given back.
    let mut big = req("n", "k8s-pod-network.big", 1);
    big.num_v6 = 300;
    assert!(matches!(
        ipam.auto_assign(&e, &big).await,
        Err(IpamError::Exhausted { family: "IPv6", .. })
    ));
    assert!(
        ipam.addresses_of("k8s-pod-network.big")
            .await
            .expect("addresses")
            .is_empty()
    );
    clean(ipam, &e, &in_use).await;
}

async fn pool_selection_rules(ipam: &Ipam) {
    let mut rack_a = Pool::new("rack-a", net("10.14.0.0/24"), 26);
    rack_a.node_selector = "rack == 'a'".parse().expect("selector");
    let mut off = Pool::new("off", net("10.14.1.0/24"), 26);
    off.disabled = true;
    let mut tunnels = Pool::new("tunnels", net("10.14.2.0/24"), 26);
    tunnels.allowed_uses = vec![AllowedUse::Tunnel];
    let e = env(vec![rack_a, off, tunnels]);

    let mut r = req("n1", "k8s-pod-network.p", 1);
    r.node_labels = BTreeMap::from([("rack".to_string(), "b".to_string())]);
    assert!(matches!(
        ipam.auto_assign(&e, &r).await,
        Err(IpamError::NoPools { .. })
    ));
    r.node_labels.insert("rack".into(), "a".into());
    let got = ipam.auto_assign(&e, &r).await.expect("rack a");
    assert!(net("10.14.0.0/24").contains(&got.v4[0].0));

    let mut t = req("n1", &records::ipip_tunnel_handle("n1"), 1);
    t.use_ = AllowedUse::Tunnel;
    t.pools = vec!["tunnels".into()];
    let tun = ipam.auto_assign(&e, &t).await.expect("tunnel");
    assert!(net("10.14.2.0/24").contains(&tun.v4[0].0));
}

async fn reservations_are_skipped(ipam: &Ipam) {
    let mut e = env(vec![Pool::new("p", net("10.15.0.0/28"), 28)]);
    e.reservations = vec![net("10.15.0.0/30")];
    let got = ipam
        .auto_assign(&e, &req("n", "k8s-pod-network.r", 12))
        .await
        .expect("12 unreserved");
    assert!(
        got.v4
            .iter()
            .all(|(ip, _)| !net("10.15.0.0/30").contains(ip))
    );
    assert!(matches!(
        ipam.auto_assign(&e, &req("n", "k8s-pod-network.r2", 1))
            .await,
        Err(IpamError::Exhausted { .. })
    ));
}

async fn check_finds_damage_and_fix_repairs_it(ipam: &Ipam) {
    let e = env(vec![Pool::new("p", net("10.16.0.0/24"), 26)]);
    let ds = ipam.datastore();
    let kept = ipam
        .auto_assign(&e, &req("n", "k8s-pod-network.kept", 1))
        .await
        .expect("kept");
    let leaked = ipam
        .auto_assign(&e, &req("n", "k8s-pod-network.leak", 1))
        .await
        .expect("leak");
    let lost_handle = ipam
        .auto_assign(&e, &req("n", "k8s-pod-network.lost", 1))
        .await
        .expect("lost");
    ds.delete(&records::handle_key("k8s-pod-network.lost"), None)
        .await
        .expect("delete handle");
    // An affinity for a block that does not exist, and a handle that
    // records an address its block does not hold.
    let ghost = net("10.16.0.192/26");
    let aff = BlockAffinity {
        host: "m".into(),
        cidr: ghost,
        state: AffinityState::Pending,
    };
    ds.put(
        &records::affinity_key("m", &ghost),
        serde_json::to_vec(&aff).expect("json"),
    )
    .await
    .expect("put affinity");
    ds.put(
        &records::handle_key("k8s-pod-network.empty"),
        r#"{"handleId":"k8s-pod-network.empty","block":{"10.16.0.0/26":1}}"#,
    )
    .await
    .expect("put handle");

    let in_use: BTreeSet<IpAddr> = [
        kept.v4[0].0,
        lost_handle.v4[0].0,
        "10.16.0.250".parse().expect("ip"),
    ]
    .into_iter()
    .collect();
    let report = ipam.check(&e, Some(&in_use)).await.expect("check");
    let kinds: BTreeSet<String> = report
        .problems
        .iter()
        .map(|p| {
            serde_json::to_value(p).expect("json")["kind"]
                .as_str()
                .expect("kind")
                .to_owned()
        })
        .collect();
    assert!(
        report.problems.contains(&Problem::LeakedAddress {
            ip: leaked.v4[0].0,
            handle: Some("k8s-pod-network.leak".into()),
            block: leaked.v4[0].1,
            sequence: 1,
        }),
        "{:#?}",
        report.problems
    );
    for k in [
        "addressWithoutHandle",
        "affinityWithoutBlock",
        "handleMismatch",
        "inUseNotAllocated",
    ] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
    // The report survives JSON.
    let text = serde_json::to_string(&report).expect("json");
    let back: tabby_ipam::Report = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, report);

    let outcome = ipam.fix(&e, &back).await.expect("fix");
    assert_eq!(outcome.skipped.len(), 1, "{:?}", outcome.skipped);
    assert!(matches!(
        outcome.skipped[0].0,
        Problem::InUseNotAllocated { .. }
    ));
    let in_use: BTreeSet<IpAddr> = [kept.v4[0].0, lost_handle.v4[0].0].into_iter().collect();
    clean(ipam, &e, &in_use).await;
    // The leaked address is free again, the others kept.
    let info = ipam.address_info(&e, leaked.v4[0].0).await.expect("info");
    assert!(!info.allocated);
    assert_eq!(
        ipam.addresses_of("k8s-pod-network.lost")
            .await
            .expect("lost"),
        vec![lost_handle.v4[0].0]
    );
}

async fn interrupted_claim_is_found_and_fixed(ipam: &Ipam) {
    let e = env(vec![Pool::new("p", net("10.17.0.0/24"), 26)]);
    for pause in [
        ClaimPause::AfterPendingAffinity,
        ClaimPause::AfterBlockCreated,
    ] {
        let paused = ipam.clone().with_pause(Some(pause));
        let e2 = e.clone();
        let task = tokio::spawn(async move {
            let _ = paused
                .auto_assign(&e2, &req("crash", "k8s-pod-network.crash", 1))
                .await;
        });
        // Wait until the claim has written its pending affinity.
        let mut found = None;
        for _ in 0..200 {
            let l = ipam
                .datastore()
                .list(&records::affinities_prefix(Some("crash"), None))
                .await
                .expect("list");
            let block_written = match l.items.first() {
                Some(kv) => {
                    let a: BlockAffinity = serde_json::from_slice(&kv.value).expect("json");
                    pause == ClaimPause::AfterPendingAffinity
                        || ipam
                            .datastore()
                            .get(&records::block_key(&a.cidr))
                            .await
                            .expect("get")
                            .is_some()
                }
                None => false,
            };
            if block_written {
                found = Some(());
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(found.is_some(), "claim never reached {pause:?}");
        task.abort();
        let _ = task.await;

        let report = ipam.check(&e, Some(&BTreeSet::new())).await.expect("check");
        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        match (&report.problems[0], pause) {
            (Problem::AffinityWithoutBlock { host, .. }, ClaimPause::AfterPendingAffinity)
            | (Problem::UnconfirmedAffinity { host, .. }, ClaimPause::AfterBlockCreated) => {
                assert_eq!(host, "crash")
            }
            (p, _) => panic!("unexpected {p:?} at {pause:?}"),
        }
        let outcome = ipam.fix(&e, &report).await.expect("fix");
        assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);
        clean(ipam, &e, &BTreeSet::new()).await;
    }
}

async fn concurrent_tasks_never_share_an_address(ipam: &Ipam) {
    // Tiny blocks and a small pool: claims race, blocks fill, nodes borrow.
    let e = env(vec![Pool::new("p", net("10.18.0.0/25"), 29)]);
    let mut tasks = Vec::new();
    for t in 0..4 {
        let ipam = ipam.clone();
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..20 {
                let h = format!("k8s-pod-network.t{t}-{i}");
                let got = ipam
                    .auto_assign(&e, &req(&format!("node-{}", t % 2), &h, 1))
                    .await
                    .expect("assign");
                mine.push((h, got.v4[0].0));
                if i % 3 == 0 {
                    let (h, _) = mine.remove(0);
                    ipam.release_handle(&h).await.expect("release");
                }
            }
            mine
        }));
    }
    let mut in_use = BTreeSet::new();
    for t in tasks {
        for (_, ip) in t.await.expect("task") {
            assert!(in_use.insert(ip), "{ip} handed out twice");
        }
    }
    clean(ipam, &e, &in_use).await;
}

async fn a_confirmed_affinity_whose_block_vanished_is_reclaimed(ipam: &Ipam) {
    // A one-block pool: the node's claim must land on this very block.
    let e = env(vec![Pool::new("p", net("10.19.0.0/26"), 26)]);
    let block = net("10.19.0.0/26");
    let aff = BlockAffinity {
        host: "n".into(),
        cidr: block,
        state: AffinityState::Confirmed,
    };
    ipam.datastore()
        .put(
            &records::affinity_key("n", &block),
            serde_json::to_vec(&aff).expect("json"),
        )
        .await
        .expect("put affinity");
    let got = ipam
        .auto_assign(&e, &req("n", "k8s-pod-network.v", 1))
        .await
        .expect("assign");
    assert_eq!(got.v4[0].1, block);
    let in_use = got.v4.iter().map(|(ip, _)| *ip).collect();
    clean(ipam, &e, &in_use).await;
}

/// A pool of exactly two /28 blocks, both claimed by node a, one address
/// in each (10.12.0.1 and 10.12.0.17).
async fn two_blocks_of_a(ipam: &Ipam, e: &Environment) -> (IpNet, IpNet) {
    let first = ipam
        .assign_ip(
            e,
            "10.12.0.1".parse().expect("ip"),
            "a",
            "k8s-pod-network.a1",
            BTreeMap::new(),
        )
        .await
        .expect("a1");
    let second = ipam
        .assign_ip(
            e,
            "10.12.0.17".parse().expect("ip"),
            "a",
            "k8s-pod-network.a2",
            BTreeMap::new(),
        )
        .await
        .expect("a2");
    assert_eq!(first, net("10.12.0.0/28"));
    assert_eq!(second, net("10.12.0.16/28"));
    for b in [first, second] {
        let aff = affinity(ipam, "a", &b).await.expect("a's affinity");
        assert_eq!(aff.state, AffinityState::Confirmed);
    }
    (first, second)
}

async fn an_empty_block_of_another_node_is_taken_over(ipam: &Ipam) {
    let mut e = env(vec![Pool::new("p", net("10.12.0.0/27"), 28)]);
    // Strict affinity: b cannot borrow, so an address proves the take-over.
    e.config.strict_affinity = true;
    let (first, second) = two_blocks_of_a(ipam, &e).await;
    let released = ipam
        .release(
            &e,
            &[ReleaseRequest {
                ip: "10.12.0.17".parse().expect("ip"),
                sequence: None,
                handle: None,
            }],
        )
        .await
        .expect("release");
    assert!(matches!(released[0].1, ReleaseResult::Released { .. }));
    // a's emptied block is still a's until someone needs it.
    assert!(affinity(ipam, "a", &second).await.is_some());

    let got = ipam
        .auto_assign(&e, &req("b", "k8s-pod-network.b", 1))
        .await
        .expect("b takes over a's empty block");
    let (ip_b, block_b) = got.v4[0];
    assert_eq!(block_b, second, "b got a's empty block");
    let aff_b = affinity(ipam, "b", &second).await.expect("b's affinity");
    assert_eq!(aff_b.state, AffinityState::Confirmed);
    assert!(
        affinity(ipam, "a", &second).await.is_none(),
        "a's affinity for the taken block is gone"
    );
    let aff_a = affinity(ipam, "a", &first)
        .await
        .expect("a keeps its other block");
    assert_eq!(aff_a.state, AffinityState::Confirmed);
    let info = ipam.address_info(&e, ip_b).await.expect("info");
    assert_eq!(info.node.as_deref(), Some("b"));

    // b's next address comes from its new block; a still uses its own.
    let b2 = ipam
        .auto_assign(&e, &req("b", "k8s-pod-network.b2", 1))
        .await
        .expect("b again");
    assert_eq!(b2.v4[0].1, second);
    let a3 = ipam
        .auto_assign(&e, &req("a", "k8s-pod-network.a3", 1))
        .await
        .expect("a again");
    assert_eq!(a3.v4[0].1, first);

    let in_use: BTreeSet<IpAddr> = [
        "10.12.0.1".parse().expect("ip"),
        ip_b,
        b2.v4[0].0,
        a3.v4[0].0,
    ]
    .into_iter()
    .collect();
    clean(ipam, &e, &in_use).await;
}

async fn a_non_empty_block_of_another_node_is_never_taken_over(ipam: &Ipam) {
    let mut e = env(vec![Pool::new("p", net("10.12.0.0/27"), 28)]);
    e.config.strict_affinity = true;
    let (first, second) = two_blocks_of_a(ipam, &e).await;
    match ipam
        .auto_assign(&e, &req("b", "k8s-pod-network.b", 1))
        .await
    {
        Err(IpamError::Exhausted { node, reason, .. }) => {
            assert_eq!(node, "b");
            assert!(reason.contains("strictAffinity"), "{reason}");
        }
        other => panic!("expected exhaustion, got {other:?}"),
    }
    // Without strict affinity b borrows; both blocks stay a's.
    e.config.strict_affinity = false;
    let got = ipam
        .auto_assign(&e, &req("b", "k8s-pod-network.b", 1))
        .await
        .expect("borrow");
    let (ip_b, block_b) = got.v4[0];
    assert!(block_b == first || block_b == second, "{block_b}");
    for b in [first, second] {
        assert!(affinity(ipam, "a", &b).await.is_some(), "a keeps {b}");
        assert!(affinity(ipam, "b", &b).await.is_none(), "b holds no {b}");
    }
    let info = ipam.address_info(&e, ip_b).await.expect("info");
    assert_eq!(info.node.as_deref(), Some("a"));
    assert_eq!(info.handle.as_deref(), Some("k8s-pod-network.b"));
    let in_use: BTreeSet<IpAddr> = [
        "10.12.0.1".parse().expect("ip"),
        "10.12.0.17".parse().expect("ip"),
        ip_b,
    ]
    .into_iter()
    .collect();
    clean(ipam, &e, &in_use).await;
}
