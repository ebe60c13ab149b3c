//! The Loc-RIB: every path to every prefix, from every peer, in one table.
//!
//! Owns [`LocRib`] and [`Path`]. A prefix with one path (the overwhelmingly
//! common case in a full table) costs one hash-table entry of 24 bytes
//! (8-byte key, 16-byte path: an `Arc` to interned attributes, a peer id and
//! flags); a prefix with several paths moves them to a side table. Paths
//! rejected by import policy are kept (flagged) so Adj-RIB-In counts and
//! views stay exact. Which path is best is decided by [`crate::decision`]
//! and recorded here by [`crate::rib::Rib`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::attribute::PathAttributes;
use crate::nlri::{Ipv4Prefix, Ipv6Prefix, Prefix};
use crate::rib::PeerId;

const BEST: u32 = 1;
const MULTIPATH: u32 = 2;
const FILTERED: u32 = 4;
/// Internal: the real paths live in the side table.
const REDIRECT: u32 = 8;

/// One path to a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// Attributes (interned: equal sets share one allocation).
    pub attrs: Arc<PathAttributes>,
    /// The peer it was learned from ([`crate::rib::LOCAL_PEER`] for routes
    /// this speaker originates).
    pub peer: PeerId,
    flags: u32,
}

impl Path {
    /// A path from `peer`; `filtered` marks it rejected by import policy.
    pub fn new(peer: PeerId, attrs: Arc<PathAttributes>, filtered: bool) -> Self {
        Path {
            attrs,
            peer,
            flags: if filtered { FILTERED } else { 0 },
        }
    }

    /// Chosen as the best path.
    pub fn is_best(&self) -> bool {
        self.flags & BEST != 0
    }

    /// Part of the multipath (ECMP) set.
    pub fn is_multipath(&self) -> bool {
        self.flags & MULTIPATH != 0
    }

    /// Rejected by import policy or loop detection: kept for accounting,
    /// never used.
    pub fn is_filtered(&self) -> bool {
        self.flags & FILTERED != 0
    }

    pub(crate) fn set_selection(&mut self, best: bool, multipath: bool) {
        self.flags &= !(BEST | MULTIPATH);
        if best {
            self.flags |= BEST;
        }
        if multipath {
            self.flags |= MULTIPATH;
        }
    }
}

/// The table of all paths.
#[derive(Debug, Default)]
pub struct LocRib {
    v4: HashMap<Ipv4Prefix, Path>,
    v6: HashMap<Ipv6Prefix, Path>,
    multi: HashMap<Prefix, Vec<Path>>,
    placeholder: Arc<PathAttributes>,
}

fn upsert_in<K: std::hash::Hash + Eq + Copy>(
    main: &mut HashMap<K, Path>,
    multi: &mut HashMap<Prefix, Vec<Path>>,
    placeholder: &Arc<PathAttributes>,
    key: K,
    prefix: Prefix,
    path: Path,
) -> Option<Path> {
    use std::collections::hash_map::Entry;
    match main.entry(key) {
        Entry::Vacant(v) => {
            v.insert(path);
            None
        }
        Entry::Occupied(mut o) => {
            let cur = o.get_mut();
            if cur.flags & REDIRECT != 0 {
                let v = multi.entry(prefix).or_default();
                if let Some(slot) = v.iter_mut().find(|p| p.peer == path.peer) {
                    Some(std::mem::replace(slot, path))
                } else {
                    v.push(path);
                    None
                }
            } else if cur.peer == path.peer {
                Some(std::mem::replace(cur, path))
            } else {
                let redirect = Path {
                    attrs: placeholder.clone(),
                    peer: PeerId(u32::MAX),
                    flags: REDIRECT,
                };
                let old = std::mem::replace(cur, redirect);
                multi.insert(prefix, vec![old, path]);
                None
            }
        }
    }
}

fn remove_in<K: std::hash::Hash + Eq + Copy>(
    main: &mut HashMap<K, Path>,
    multi: &mut HashMap<Prefix, Vec<Path>>,
    key: K,
    prefix: Prefix,
    peer: PeerId,
) -> Option<Path> {
    let cur = main.get_mut(&key)?;
    if cur.flags & REDIRECT == 0 {
        if cur.peer == peer {
            return main.remove(&key);
        }
        return None;
    }
    let v = multi.get_mut(&prefix)?;
    let i = v.iter().position(|p| p.peer == peer)?;
    let removed = v.swap_remove(i);
    if v.len() == 1 {
        if let Some(mut v) = multi.remove(&prefix) {
            if let Some(last) = v.pop() {
                *cur = last;
            }
        }
    }
    Some(removed)
}

impl LocRib {
    /// An empty table.
    pub fn new() -> Self {
        LocRib::default()
    }

    /// Number of prefixes with at least one path.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of prefixes with a usable best path.
    pub fn best_count(&self) -> usize {
        self.iter()
            .filter(|(_, paths)| paths.iter().any(Path::is_best))
            .count()
    }

    /// All paths to `prefix`.
    pub fn paths(&self, prefix: Prefix) -> &[Path] {
        let main = match prefix {
            Prefix::V4(p) => self.v4.get(&p),
            Prefix::V6(p) => self.v6.get(&p),
        };
        match main {
            None => &[],
            Some(p) if p.flags & REDIRECT != 0 => {
                self.multi.get(&prefix).map(Vec::as_slice).unwrap_or(&[])
            }
            Some(p) => std::slice::from_ref(p),
        }
    }

    /// The best path to `prefix`.
    pub fn best(&self, prefix: Prefix) -> Option<&Path> {
        self.paths(prefix).iter().find(|p| p.is_best())
    }

    pub(crate) fn paths_mut(&mut self, prefix: Prefix) -> &mut [Path] {
        let main = match prefix {
            Prefix::V4(p) => self.v4.get_mut(&p),
            Prefix::V6(p) => self.v6.get_mut(&p),
        };
        match main {
            None => &mut [],
            Some(p) if p.flags & REDIRECT != 0 => self
                .multi
                .get_mut(&prefix)
                .map(Vec::as_mut_slice)
                .unwrap_or(&mut []),
            Some(p) => std::slice::from_mut(p),
        }
    }

    /// Inserts or replaces the path from `path.peer`; returns the old one.
    pub(crate) fn upsert(&mut self, prefix: Prefix, path: Path) -> Option<Path> {
        match prefix {
            Prefix::V4(k) => upsert_in(
                &mut self.v4,
                &mut self.multi,
                &self.placeholder,
                k,
                prefix,
                path,
            ),
            Prefix::V6(k) => upsert_in(
                &mut self.v6,
                &mut self.multi,
                &self.placeholder,
                k,
                prefix,
                path,
            ),
        }
    }

    /// Removes the path from `peer`.
    pub(crate) fn remove(&mut self, prefix: Prefix, peer: PeerId) -> Option<Path> {
        match prefix {
            Prefix::V4(k) => remove_in(&mut self.v4, &mut self.multi, k, prefix, peer),
            Prefix::V6(k) => remove_in(&mut self.v6, &mut self.multi, k, prefix, peer),
        }
    }

    /// Every prefix with its paths, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, &[Path])> + '_ {
        let v4 = self.v4.keys().map(|k| Prefix::V4(*k));
        let v6 = self.v6.keys().map(|k| Prefix::V6(*k));
        v4.chain(v6).map(move |p| (p, self.paths(p)))
    }

    /// Every prefix that has a path from `peer`.
    pub(crate) fn prefixes_of(&self, peer: PeerId) -> Vec<Prefix> {
        self.iter()
            .filter(|(_, paths)| paths.iter().any(|p| p.peer == peer))
            .map(|(p, _)| p)
            .collect()
    }

    /// Shrinks the tables after many removals.
    pub fn shrink_to_fit(&mut self) {
        self.v4.shrink_to_fit();
        self.v6.shrink_to_fit();
        self.multi.shrink_to_fit();
    }

    /// Reserves room for `additional` more IPv4 prefixes.
    pub fn reserve_v4(&mut self, additional: usize) {
        self.v4.reserve(additional);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_path_costs_24_bytes_and_multi_moves_out() {
        assert_eq!(std::mem::size_of::<Path>(), 16);
        assert_eq!(std::mem::size_of::<(Ipv4Prefix, Path)>(), 24);
        let mut rib = LocRib::new();
        let p: Prefix = "10.0.0.0/24".parse().expect("prefix");
        let a = Arc::new(PathAttributes::default());
        assert!(
            rib.upsert(p, Path::new(PeerId(1), a.clone(), false))
                .is_none()
        );
        assert!(
            rib.upsert(p, Path::new(PeerId(2), a.clone(), false))
                .is_none()
        );
        assert!(
            rib.upsert(p, Path::new(PeerId(3), a.clone(), true))
                .is_none()
        );
        assert_eq!(rib.paths(p).len(), 3);
        assert!(
            rib.upsert(p, Path::new(PeerId(2), a.clone(), false))
                .is_some()
        );
        assert_eq!(rib.paths(p).len(), 3);
        assert!(rib.remove(p, PeerId(1)).is_some());
        assert!(rib.remove(p, PeerId(3)).is_some());
        assert_eq!(rib.paths(p).len(), 1);
        assert_eq!(rib.paths(p)[0].peer, PeerId(2));
        assert!(rib.multi.is_empty());
        assert!(rib.remove(p, PeerId(9)).is_none());
        assert!(rib.remove(p, PeerId(2)).is_some());
        assert!(rib.is_empty());
    }
}
