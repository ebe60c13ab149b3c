//! Property tests: random sequences of assignments and releases by several
//! nodes against a small pool (so blocks fill, nodes claim, borrow and run
//! out), checked against a model after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use proptest::prelude::*;
use tabby_datastore::Datastore;
use tabby_ipam::{
    AssignRequest, Environment, Ipam, IpamConfig, IpamError, Pool, ReleaseRequest, ReleaseResult,
};

#[derive(Debug, Clone)]
enum Step {
    Assign { node: u8, n: usize },
    ReleaseHandle { pick: usize },
    ReleaseIp { pick: usize, stale: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..3, 1usize..5).prop_map(|(node, n)| Step::Assign { node, n }),
        1 => any::<usize>().prop_map(|pick| Step::ReleaseHandle { pick }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, stale)| Step::ReleaseIp { pick, stale }),
    ]
}

async fn run(steps: Vec<Step>, strict: bool, max_blocks: Option<u32>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let ipam = Ipam::new(Datastore::connect(&url).await.expect("open"));
    let pool: IpNet = "10.60.0.0/26".parse().expect("pool");
    let env = Environment {
        pools: vec![Pool::new("p", pool, 29)],
        config: IpamConfig {
            strict_affinity: strict,
            max_blocks_per_host: max_blocks,
            auto_allocate_blocks: true,
        },
        reservations: Vec::new(),
    };
    // handle -> (node, addresses)
    let mut model: BTreeMap<String, (String, Vec<IpAddr>)> = BTreeMap::new();
    for (i, s) in steps.into_iter().enumerate() {
        match s {
            Step::Assign { node, n } => {
                let node = format!("node-{node}");
                let handle = format!("k8s-pod-network.h{i}");
                let mut req = AssignRequest::v4(&node, &handle);
                req.num_v4 = n;
                match ipam.auto_assign(&env, &req).await {
                    Ok(got) => {
                        assert_eq!(got.v4.len(), n);
                        let held: BTreeSet<IpAddr> = model
                            .values()
                            .flat_map(|(_, ips)| ips.iter().copied())
                            .collect();
                        for (ip, block) in &got.v4 {
                            assert!(pool.contains(ip), "{ip} outside the pool");
                            assert!(block.contains(ip));
                            assert!(!held.contains(ip), "{ip} handed out twice");
                            if strict {
                                let info = ipam.address_info(&env, *ip).await.expect("info");
                                assert_eq!(
                                    info.node.as_deref(),
                                    Some(node.as_str()),
                                    "strict affinity: {ip} is in another node's block"
                                );
                            }
                        }
                        let ips: Vec<IpAddr> = got.v4.iter().map(|(ip, _)| *ip).collect();
                        let unique: BTreeSet<IpAddr> = ips.iter().copied().collect();
                        assert_eq!(unique.len(), ips.len(), "duplicate in one answer");
                        model.insert(handle, (node, ips));
                    }
                    Err(IpamError::Exhausted { .. }) => {
                        // All or nothing: a failed request holds nothing.
                        assert!(ipam.addresses_of(&handle).await.expect("addrs").is_empty());
                    }
                    Err(e) => panic!("assign: {e}"),
                }
            }
            Step::ReleaseHandle { pick } => {
                if model.is_empty() {
                    continue;
                }
                let handle = model.keys().nth(pick % model.len()).cloned().expect("key");
                let (_, ips) = model.remove(&handle).expect("present");
                let mut released = ipam.release_handle(&handle).await.expect("release");
                released.sort();
                let mut want = ips;
                want.sort();
                assert_eq!(released, want, "release by handle returns its addresses");
            }
            Step::ReleaseIp { pick, stale } => {
                let all: Vec<(String, IpAddr)> = model
                    .iter()
                    .flat_map(|(h, (_, ips))| ips.iter().map(move |ip| (h.clone(), *ip)))
                    .collect();
                if all.is_empty() {
                    continue;
                }
                let (handle, ip) = all[pick % all.len()].clone();
                let seq = ipam
                    .address_info(&env, ip)
                    .await
                    .expect("info")
                    .sequence
                    .expect("allocated");
                let req = ReleaseRequest {
                    ip,
                    sequence: Some(if stale { seq + 1 } else { seq }),
                    handle: Some(handle.clone()),
                };
                let r = ipam.release(&env, &[req]).await.expect("release");
                if stale {
                    assert_eq!(r[0].1, ReleaseResult::Reused);
                    continue;
                }
                assert!(matches!(r[0].1, ReleaseResult::Released { .. }));
                assert!(!ipam.address_info(&env, ip).await.expect("info").allocated);
                let entry = model.get_mut(&handle).expect("handle");
                entry.1.retain(|x| *x != ip);
                if entry.1.is_empty() {
                    model.remove(&handle);
                }
            }
        }
    }
    // Blocks never overlap and stay inside the pool; IPAM agrees with the model.
    let blocks = ipam.blocks().await.expect("blocks");
    for (i, a) in blocks.iter().enumerate() {
        assert!(pool.contains(&a.cidr));
        for b in &blocks[i + 1..] {
            assert!(
                !a.cidr.contains(&b.cidr.network()) && !b.cidr.contains(&a.cidr.network()),
                "{} and {} overlap",
                a.cidr,
                b.cidr
            );
        }
    }
    if let Some(max) = max_blocks {
        for node in ["node-0", "node-1", "node-2"] {
            let n = blocks.iter().filter(|b| b.host() == Some(node)).count();
            assert!(n as u32 <= max, "{node} holds {n} blocks, max {max}");
        }
    }
    let in_use: BTreeSet<IpAddr> = model
        .values()
        .flat_map(|(_, ips)| ips.iter().copied())
        .collect();
    let report = ipam.check(&env, Some(&in_use)).await.expect("check");
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.checked.allocations, in_use.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn allocation_matches_the_model(
        steps in proptest::collection::vec(step(), 1..40),
        strict in any::<bool>(),
        max_blocks in prop_oneof![Just(None), (1u32..4).prop_map(Some)],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(steps, strict, max_blocks));
    }
}
