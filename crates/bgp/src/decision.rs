//! The BGP decision process (RFC 4271 §9.1.2, RFC 4456 §9): choosing the
//! best path and the equal-cost multipath set among a prefix's candidates.
//!
//! Owns [`Candidate`] (what the process needs to know about one path),
//! [`select`] and the [`NextHopResolver`] hook. It keeps no state; the RIB
//! ([`crate::rib`]) calls it for every prefix whose candidates changed.
//!
//! Order of the steps, each one keeping only the paths that are best so far:
//! 0. the next hop resolves (unresolvable paths are never used);
//! 1. highest LOCAL_PREF (100 when absent);
//! 2. locally originated over learned;
//! 3. shortest AS_PATH (an AS_SET counts 1, confederation segments 0);
//! 4. lowest ORIGIN (IGP < EGP < INCOMPLETE);
//! 5. lowest MED, compared only among paths from the same neighbour AS
//!    (absent MED counts as 0);
//! 6. eBGP-learned over iBGP-learned;
//! 7. lowest IGP cost to the next hop.
//!
//! The paths left are the multipath (ECMP) set. The best of them is then
//! chosen by
//! 8. lowest BGP identifier (ORIGINATOR_ID when present, RFC 4456);
//! 9. shortest CLUSTER_LIST;
//! 10. lowest peer address.

use std::net::{IpAddr, Ipv4Addr};

use crate::attribute::{Origin, PathAttributes};

/// LOCAL_PREF assumed when a path has none.
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// Tells whether a next hop can be reached and at what IGP cost (the hook
/// for seed 003's pitfall: routes via an unreachable next hop must not be
/// used). Implemented by the agent over the kernel routing table; tests use
/// closures.
pub trait NextHopResolver {
    /// `Some(cost)` when `next_hop` is reachable, `None` when it is not.
    fn resolve(&self, next_hop: IpAddr) -> Option<u32>;
}

impl<F: Fn(IpAddr) -> Option<u32>> NextHopResolver for F {
    fn resolve(&self, next_hop: IpAddr) -> Option<u32> {
        self(next_hop)
    }
}

/// A resolver that considers every next hop reachable at cost 0 (for a
/// route reflector or a speaker that does not program routes).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllReachable;

impl NextHopResolver for AllReachable {
    fn resolve(&self, _: IpAddr) -> Option<u32> {
        Some(0)
    }
}

/// One path as the decision process sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The path's attributes (after import policy).
    pub attrs: &'a PathAttributes,
    /// Originated by this speaker.
    pub local: bool,
    /// Learned over eBGP.
    pub ebgp: bool,
    /// IGP cost to the next hop; `None` = unreachable.
    pub igp_cost: Option<u32>,
    /// BGP identifier of the peer it was learned from.
    pub peer_router_id: Ipv4Addr,
    /// Address of the peer it was learned from.
    pub peer_address: IpAddr,
}

/// The result of [`select`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Index of the best path.
    pub best: usize,
    /// Indices of the multipath set (the best included), ascending.
    pub multipath: Vec<usize>,
}

fn origin_rank(o: Option<Origin>) -> u8 {
    match o {
        Some(Origin::Igp) | None => 0,
        Some(Origin::Egp) => 1,
        Some(Origin::Incomplete) => 2,
    }
}

fn keep_best<K: Ord>(alive: &mut Vec<usize>, key: impl Fn(usize) -> K) {
    if alive.len() < 2 {
        return;
    }
    let Some(best) = alive.iter().map(|i| key(*i)).min() else {
        return;
    };
    alive.retain(|i| key(*i) == best);
}

/// Runs the decision process. `None` when no candidate is usable.
pub fn select(c: &[Candidate<'_>]) -> Option<Selection> {
    let mut alive: Vec<usize> = (0..c.len()).filter(|i| c[*i].igp_cost.is_some()).collect();
    if alive.is_empty() {
        return None;
    }
    if alive.len() == 1 {
        return Some(Selection {
            best: alive[0],
            multipath: alive,
        });
    }
    keep_best(&mut alive, |i| {
        std::cmp::Reverse(c[i].attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF))
    });
    keep_best(&mut alive, |i| !c[i].local);
    keep_best(&mut alive, |i| c[i].attrs.as_path_or_empty().decision_len());
    keep_best(&mut alive, |i| origin_rank(c[i].attrs.origin));
    if alive.len() > 1 {
        // MED only among paths with the same neighbour AS.
        let neighbour = |i: usize| c[i].attrs.as_path_or_empty().first_asn();
        let med = |i: usize| c[i].attrs.med.unwrap_or(0);
        let snapshot = alive.clone();
        alive.retain(|&i| {
            !snapshot
                .iter()
                .any(|&j| j != i && neighbour(j) == neighbour(i) && med(j) < med(i))
        });
    }
    keep_best(&mut alive, |i| !c[i].ebgp);
    keep_best(&mut alive, |i| c[i].igp_cost.unwrap_or(u32::MAX));
    let multipath = alive.clone();
    let best = alive.iter().copied().min_by_key(|&i| {
        let id = c[i].attrs.originator_id.unwrap_or(c[i].peer_router_id);
        (
            u32::from(id),
            c[i].attrs.cluster_list.len(),
            c[i].peer_address,
        )
    })?;
    Some(Selection { best, multipath })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{AsPath, AsSegment, SegmentKind};

    fn attrs(path: &[u32], lp: Option<u32>, med: Option<u32>) -> PathAttributes {
        PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence(path.iter().copied())),
            local_pref: lp,
            med,
            ..Default::default()
        }
    }

    fn cand(a: &PathAttributes, ebgp: bool, id: u8) -> Candidate<'_> {
        Candidate {
            attrs: a,
            local: false,
            ebgp,
            igp_cost: Some(0),
            peer_router_id: Ipv4Addr::new(10, 0, 0, id),
            peer_address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, id)),
        }
    }

    #[test]
    fn local_pref_beats_path_length() {
        let a = attrs(&[1, 2, 3], Some(200), None);
        let b = attrs(&[1], Some(100), None);
        let s = select(&[cand(&b, false, 1), cand(&a, false, 2)]).expect("best");
        assert_eq!(s.best, 1);
    }

    #[test]
    fn as_set_counts_one() {
        let mut a = attrs(&[1], None, None);
        a.as_path = Some(AsPath {
            segments: vec![
                AsSegment {
                    kind: SegmentKind::Sequence,
                    asns: vec![1],
                },
                AsSegment {
                    kind: SegmentKind::Set,
                    asns: vec![5, 6, 7, 8],
                },
            ],
        });
        let b = attrs(&[1, 2, 3], None, None);
        let s = select(&[cand(&b, true, 1), cand(&a, true, 2)]).expect("best");
        assert_eq!(s.best, 1, "path length 2 beats 3");
    }

    #[test]
    fn med_only_within_same_neighbour_as() {
        let a = attrs(&[65001, 9], None, Some(50));
        let b = attrs(&[65001, 9], None, Some(10));
        let c = attrs(&[65002, 9], None, Some(5));
        // a loses to b (same neighbour); c is not compared with a or b on MED.
        let s = select(&[cand(&a, true, 1), cand(&b, true, 2), cand(&c, true, 3)]).expect("best");
        assert_eq!(s.multipath, vec![1, 2]);
        assert_eq!(s.best, 1, "lowest router id among the survivors");
    }

    #[test]
    fn ebgp_over_ibgp_and_unreachable_excluded() {
        let a = attrs(&[1, 2], None, None);
        let b = attrs(&[1, 2], None, None);
        let s = select(&[cand(&a, false, 1), cand(&b, true, 2)]).expect("best");
        assert_eq!(s.best, 1);
        let mut unreachable = cand(&b, true, 2);
        unreachable.igp_cost = None;
        let s = select(&[cand(&a, false, 1), unreachable]).expect("best");
        assert_eq!(s.best, 0);
        assert_eq!(select(&[unreachable]), None);
    }

    #[test]
    fn igp_cost_then_originator_id_then_cluster_list() {
        let a = attrs(&[1], None, None);
        let b = attrs(&[1], None, None);
        let mut ca = cand(&a, false, 1);
        ca.igp_cost = Some(20);
        let s = select(&[ca, cand(&b, false, 2)]).expect("best");
        assert_eq!(s.best, 1);
        // ORIGINATOR_ID replaces the router id.
        let mut ra = attrs(&[1], None, None);
        ra.originator_id = Some(Ipv4Addr::new(10, 0, 0, 9));
        let rb = attrs(&[1], None, None);
        let s = select(&[cand(&ra, false, 1), cand(&rb, false, 5)]).expect("best");
        assert_eq!(s.best, 1);
        assert_eq!(s.multipath, vec![0, 1], "equal up to IGP cost: multipath");
        // Same originator: shorter CLUSTER_LIST wins.
        let mut x = attrs(&[1], None, None);
        x.originator_id = Some(Ipv4Addr::new(10, 0, 0, 9));
        x.cluster_list = vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2)];
        let mut y = x.clone();
        y.cluster_list.truncate(1);
        let s = select(&[cand(&x, false, 1), cand(&y, false, 2)]).expect("best");
        assert_eq!(s.best, 1);
    }

    #[test]
    fn lowest_peer_address_breaks_the_last_tie() {
        let a = attrs(&[1], None, None);
        let mut ca = cand(&a, false, 7);
        let mut cb = cand(&a, false, 7);
        ca.peer_address = "10.0.0.8".parse().expect("addr");
        cb.peer_address = "10.0.0.3".parse().expect("addr");
        assert_eq!(select(&[ca, cb]).expect("best").best, 1);
    }
}
