//! The Loc-RIB: every path to every prefix, from every peer, in one table.
//!
//! Owns [`LocRib`], [`Path`] and [`PathList`]. An IPv4 prefix with one path
//! (the overwhelmingly common case in a full table) costs one 16-byte slot
//! in an open-addressing table (address, length, flags, peer, and an `Arc`
//! to interned attributes; no separate key); a prefix with several paths
//! moves them to a side table. IPv6 prefixes use a plain map. Paths
//! rejected by import policy are kept (flagged) so Adj-RIB-In counts and
//! views stay exact. Which path is best is decided by [`crate::decision`]
//! and recorded here by [`crate::rib::Rib`].

use std::collections::HashMap;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::rib::fast_hash::SeededState;

use crate::attribute::PathAttributes;
use crate::nlri::{Ipv4Prefix, Ipv6Prefix, Prefix};
use crate::rib::PeerId;

const BEST: u32 = 1;
const MULTIPATH: u32 = 2;
const FILTERED: u32 = 4;
/// Internal: the real paths live in the side table.
const REDIRECT: u32 = 8;
/// Kept from a peer whose session went down gracefully (RFC 4724 §4.2)
/// and not yet refreshed.
const STALE: u32 = 16;

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

    /// Kept through the peer's graceful restart (RFC 4724 §4.2) and not
    /// yet refreshed: still used for forwarding.
    pub fn is_stale(&self) -> bool {
        self.flags & STALE != 0
    }

    /// The same path marked stale.
    pub(crate) fn into_stale(mut self) -> Self {
        self.flags |= STALE;
        self
    }
}

/// The paths to one prefix: derefs to `[Path]`.
#[derive(Debug)]
pub enum PathList<'a> {
    /// No path.
    Empty,
    /// One path (copied out of the compact table).
    One(Path),
    /// Several paths.
    Many(&'a [Path]),
}

impl std::ops::Deref for PathList<'_> {
    type Target = [Path];
    fn deref(&self) -> &[Path] {
        match self {
            PathList::Empty => &[],
            PathList::One(p) => std::slice::from_ref(p),
            PathList::Many(s) => s,
        }
    }
}

/// A borrowed path (no reference-count traffic).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PathRef<'a> {
    pub peer: PeerId,
    pub attrs: &'a Arc<PathAttributes>,
    flags: u32,
}

impl PathRef<'_> {
    pub fn is_best(&self) -> bool {
        self.flags & BEST != 0
    }
    pub fn is_multipath(&self) -> bool {
        self.flags & MULTIPATH != 0
    }
    pub fn is_filtered(&self) -> bool {
        self.flags & FILTERED != 0
    }
    pub fn is_stale(&self) -> bool {
        self.flags & STALE != 0
    }
    pub fn to_path(self) -> Path {
        Path {
            attrs: self.attrs.clone(),
            peer: self.peer,
            flags: self.flags,
        }
    }
}

/// Borrowed paths to one prefix.
#[derive(Clone, Copy, Debug)]
pub(crate) enum View<'a> {
    Empty,
    One(PathRef<'a>),
    Many(&'a [Path]),
}

impl<'a> View<'a> {
    pub fn len(&self) -> usize {
        match self {
            View::Empty => 0,
            View::One(_) => 1,
            View::Many(s) => s.len(),
        }
    }

    pub fn get(&self, i: usize) -> Option<PathRef<'a>> {
        match self {
            View::Empty => None,
            View::One(p) => (i == 0).then_some(*p),
            View::Many(s) => s.get(i).map(|p| PathRef {
                peer: p.peer,
                attrs: &p.attrs,
                flags: p.flags,
            }),
        }
    }

    pub fn iter(self) -> impl Iterator<Item = PathRef<'a>> {
        (0..self.len()).filter_map(move |i| self.get(i))
    }

    pub fn best(self) -> Option<PathRef<'a>> {
        self.iter().find(PathRef::is_best)
    }
}

/// One IPv4 slot: 16 bytes (the key lives inside).
#[derive(Debug)]
struct V4Slot {
    attrs: Arc<PathAttributes>,
    addr: u32,
    len: u8,
    flags: u8,
    peer: u16,
}

impl V4Slot {
    fn key(&self) -> Ipv4Prefix {
        Ipv4Prefix::from_bits(self.addr, self.len)
    }

    fn to_path(&self) -> Path {
        Path {
            attrs: self.attrs.clone(),
            peer: PeerId(u32::from(self.peer)),
            flags: u32::from(self.flags),
        }
    }

    fn from_path(prefix: Ipv4Prefix, p: Path) -> V4Slot {
        V4Slot {
            attrs: p.attrs,
            addr: prefix.addr_bits(),
            len: prefix.len(),
            flags: p.flags as u8,
            peer: u16::try_from(p.peer.0).unwrap_or(u16::MAX),
        }
    }
}

/// The table of all paths.
#[derive(Debug, Default)]
pub struct LocRib {
    v4: HashTable<V4Slot>,
    v6: HashMap<Ipv6Prefix, Path, SeededState>,
    multi: HashMap<Prefix, Vec<Path>, SeededState>,
    hasher: SeededState,
    placeholder: Arc<PathAttributes>,
}

/// Largest peer id the compact IPv4 slot holds; larger ids use the side
/// table.
const MAX_PEER_ID: u32 = u16::MAX as u32 - 1;

fn upsert_v6(
    main: &mut HashMap<Ipv6Prefix, Path, SeededState>,
    multi: &mut HashMap<Prefix, Vec<Path>, SeededState>,
    placeholder: &Arc<PathAttributes>,
    key: Ipv6Prefix,
    path: Path,
) -> Option<Path> {
    use std::collections::hash_map::Entry;
    let prefix = Prefix::V6(key);
    match main.entry(key) {
        Entry::Vacant(v) => {
            v.insert(path);
            None
        }
        Entry::Occupied(mut o) => {
            let cur = o.get_mut();
            if cur.flags & REDIRECT != 0 {
                upsert_multi(multi, prefix, path)
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

fn upsert_multi(
    multi: &mut HashMap<Prefix, Vec<Path>, SeededState>,
    prefix: Prefix,
    path: Path,
) -> Option<Path> {
    let v = multi.entry(prefix).or_default();
    if let Some(slot) = v.iter_mut().find(|p| p.peer == path.peer) {
        Some(std::mem::replace(slot, path))
    } else {
        v.push(path);
        None
    }
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

    fn find_v4(&self, p: Ipv4Prefix) -> Option<&V4Slot> {
        let (a, l) = (p.addr_bits(), p.len());
        self.v4
            .find(self.hasher.hash_v4(a, l), |s| s.addr == a && s.len == l)
    }

    /// Looks up each prefix and discards the result (warms the cache for a
    /// batch; see `Rib::apply_update`).
    pub(crate) fn touch_v4(&self, prefixes: &[Ipv4Prefix]) {
        let mut found = 0usize;
        for p in prefixes {
            found += usize::from(self.find_v4(*p).is_some());
        }
        std::hint::black_box(found);
    }

    /// Borrowed paths to `prefix`.
    pub(crate) fn view(&self, prefix: Prefix) -> View<'_> {
        match prefix {
            Prefix::V4(p) => match self.find_v4(p) {
                None => View::Empty,
                Some(s) if u32::from(s.flags) & REDIRECT != 0 => self
                    .multi
                    .get(&prefix)
                    .map_or(View::Empty, |v| View::Many(v)),
                Some(s) => View::One(PathRef {
                    peer: PeerId(u32::from(s.peer)),
                    attrs: &s.attrs,
                    flags: u32::from(s.flags),
                }),
            },
            Prefix::V6(p) => match self.v6.get(&p) {
                None => View::Empty,
                Some(s) if s.flags & REDIRECT != 0 => self
                    .multi
                    .get(&prefix)
                    .map_or(View::Empty, |v| View::Many(v)),
                Some(s) => View::Many(std::slice::from_ref(s)),
            },
        }
    }

    /// All paths to `prefix`.
    pub fn paths(&self, prefix: Prefix) -> PathList<'_> {
        match prefix {
            Prefix::V4(p) => match self.find_v4(p) {
                None => PathList::Empty,
                Some(s) if u32::from(s.flags) & REDIRECT != 0 => self
                    .multi
                    .get(&prefix)
                    .map_or(PathList::Empty, |v| PathList::Many(v)),
                Some(s) => PathList::One(s.to_path()),
            },
            Prefix::V6(p) => match self.v6.get(&p) {
                None => PathList::Empty,
                Some(s) if s.flags & REDIRECT != 0 => self
                    .multi
                    .get(&prefix)
                    .map_or(PathList::Empty, |v| PathList::Many(v)),
                Some(s) => PathList::Many(std::slice::from_ref(s)),
            },
        }
    }

    /// The best path to `prefix`.
    pub fn best(&self, prefix: Prefix) -> Option<Path> {
        self.paths(prefix).iter().find(|p| p.is_best()).cloned()
    }

    /// Records the decision: `selection` is (best index, multipath bitmask)
    /// over the order of [`LocRib::paths`].
    pub(crate) fn set_selection(&mut self, prefix: Prefix, selection: Option<(usize, u64)>) {
        let flags = |i: usize| match selection {
            Some((b, mask)) => (b == i, i < 64 && mask & (1u64 << i) != 0),
            None => (false, false),
        };
        let many = match prefix {
            Prefix::V4(p) => {
                let (a, l) = (p.addr_bits(), p.len());
                let h = self.hasher.hash_v4(a, l);
                match self.v4.find_mut(h, |s| s.addr == a && s.len == l) {
                    None => return,
                    Some(s) if u32::from(s.flags) & REDIRECT == 0 => {
                        let mut path_flags = u32::from(s.flags);
                        set_flags(&mut path_flags, flags(0));
                        s.flags = path_flags as u8;
                        return;
                    }
                    Some(_) => true,
                }
            }
            Prefix::V6(p) => match self.v6.get_mut(&p) {
                None => return,
                Some(s) if s.flags & REDIRECT == 0 => {
                    set_flags(&mut s.flags, flags(0));
                    return;
                }
                Some(_) => true,
            },
        };
        if many {
            if let Some(v) = self.multi.get_mut(&prefix) {
                for (i, p) in v.iter_mut().enumerate() {
                    set_flags(&mut p.flags, flags(i));
                }
            }
        }
    }

    /// Inserts `path` as the only path to a new IPv4 prefix, flagged best
    /// and multipath when `usable`. Gives the path back when the prefix
    /// already has a path (or the peer id needs the side table).
    pub(crate) fn insert_vacant_v4(
        &mut self,
        k: Ipv4Prefix,
        mut path: Path,
        usable: bool,
    ) -> Result<(), Path> {
        if path.peer.0 > MAX_PEER_ID {
            return Err(path);
        }
        let (a, l) = (k.addr_bits(), k.len());
        let hasher = self.hasher;
        let h = hasher.hash_v4(a, l);
        match self.v4.entry(
            h,
            |s| s.addr == a && s.len == l,
            |s| hasher.hash_v4(s.addr, s.len),
        ) {
            hashbrown::hash_table::Entry::Occupied(_) => Err(path),
            hashbrown::hash_table::Entry::Vacant(v) => {
                set_flags(&mut path.flags, (usable, usable));
                v.insert(V4Slot::from_path(k, path));
                Ok(())
            }
        }
    }

    /// Inserts or replaces the path from `path.peer`; returns the old one.
    pub(crate) fn upsert(&mut self, prefix: Prefix, path: Path) -> Option<Path> {
        match prefix {
            Prefix::V6(k) => upsert_v6(&mut self.v6, &mut self.multi, &self.placeholder, k, path),
            Prefix::V4(k) => {
                let (a, l) = (k.addr_bits(), k.len());
                let hasher = self.hasher;
                let h = hasher.hash_v4(a, l);
                match self.v4.find_mut(h, |s| s.addr == a && s.len == l) {
                    None if path.peer.0 > MAX_PEER_ID => {
                        // Peer ids beyond the slot's 16 bits live in the side table.
                        let redirect = V4Slot {
                            attrs: self.placeholder.clone(),
                            addr: a,
                            len: l,
                            flags: REDIRECT as u8,
                            peer: u16::MAX,
                        };
                        self.v4
                            .insert_unique(h, redirect, |s| hasher.hash_v4(s.addr, s.len));
                        self.multi.insert(prefix, vec![path]);
                        None
                    }
                    None => {
                        self.v4.insert_unique(h, V4Slot::from_path(k, path), |s| {
                            hasher.hash_v4(s.addr, s.len)
                        });
                        None
                    }
                    Some(s) if u32::from(s.flags) & REDIRECT != 0 => {
                        upsert_multi(&mut self.multi, prefix, path)
                    }
                    Some(s) if u32::from(s.peer) == path.peer.0 => {
                        let old = s.to_path();
                        *s = V4Slot::from_path(k, path);
                        Some(old)
                    }
                    Some(s) => {
                        let old = s.to_path();
                        s.attrs = self.placeholder.clone();
                        s.flags = REDIRECT as u8;
                        s.peer = u16::MAX;
                        self.multi.insert(prefix, vec![old, path]);
                        None
                    }
                }
            }
        }
    }

    /// Removes the path from `peer`.
    pub(crate) fn remove(&mut self, prefix: Prefix, peer: PeerId) -> Option<Path> {
        let single_left = match prefix {
            Prefix::V4(k) => {
                let (a, l) = (k.addr_bits(), k.len());
                let h = self.hasher.hash_v4(a, l);
                let Ok(entry) = self.v4.find_entry(h, |s| s.addr == a && s.len == l) else {
                    return None;
                };
                let s = entry.get();
                if u32::from(s.flags) & REDIRECT == 0 {
                    if u32::from(s.peer) != peer.0 {
                        return None;
                    }
                    let (slot, _) = entry.remove();
                    return Some(slot.to_path());
                }
                let v = self.multi.get_mut(&prefix)?;
                let i = v.iter().position(|p| p.peer == peer)?;
                let removed = v.swap_remove(i);
                if v.is_empty() {
                    self.multi.remove(&prefix);
                    if let Ok(e) = self.v4.find_entry(h, |s| s.addr == a && s.len == l) {
                        e.remove();
                    }
                } else if v.len() == 1 && v[0].peer.0 <= MAX_PEER_ID {
                    if let Some(last) = v.pop() {
                        self.multi.remove(&prefix);
                        if let Some(s) = self.v4.find_mut(h, |s| s.addr == a && s.len == l) {
                            *s = V4Slot::from_path(k, last);
                        }
                    }
                }
                return Some(removed);
            }
            Prefix::V6(k) => {
                let cur = self.v6.get(&k)?;
                if cur.flags & REDIRECT == 0 {
                    if cur.peer != peer {
                        return None;
                    }
                    return self.v6.remove(&k);
                }
                let v = self.multi.get_mut(&prefix)?;
                let i = v.iter().position(|p| p.peer == peer)?;
                let removed = v.swap_remove(i);
                let single = (v.len() == 1).then(|| v.pop()).flatten();
                (removed, single)
            }
        };
        let (removed, single) = single_left;
        if let Some(last) = single {
            self.multi.remove(&prefix);
            if let Prefix::V6(k) = prefix {
                self.v6.insert(k, last);
            }
        }
        Some(removed)
    }

    /// Every prefix with its paths, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, PathList<'_>)> + '_ {
        let v4 = self.v4.iter().map(|s| Prefix::V4(s.key()));
        let v6 = self.v6.keys().map(|k| Prefix::V6(*k));
        v4.chain(v6).map(move |p| (p, self.paths(p)))
    }

    /// Every prefix that has a path from `peer`.
    pub(crate) fn prefixes_of(&self, peer: PeerId) -> Vec<Prefix> {
        self.prefixes_where(|v| v.iter().any(|p| p.peer == peer))
    }

    /// Every prefix whose paths satisfy `keep` (no reference-count traffic).
    pub(crate) fn prefixes_where(&self, keep: impl Fn(View<'_>) -> bool) -> Vec<Prefix> {
        let v4 = self.v4.iter().map(|s| Prefix::V4(s.key()));
        let v6 = self.v6.keys().map(|k| Prefix::V6(*k));
        v4.chain(v6).filter(|p| keep(self.view(*p))).collect()
    }

    /// Shrinks the tables after many removals.
    pub fn shrink_to_fit(&mut self) {
        let hasher = self.hasher;
        self.v4.shrink_to_fit(|s| hasher.hash_v4(s.addr, s.len));
        self.v6.shrink_to_fit();
        self.multi.shrink_to_fit();
    }

    /// Reserves room for `additional` more IPv4 prefixes.
    pub fn reserve_v4(&mut self, additional: usize) {
        let hasher = self.hasher;
        self.v4
            .reserve(additional, |s| hasher.hash_v4(s.addr, s.len));
    }
}

fn set_flags(f: &mut u32, (best, mp): (bool, bool)) {
    *f &= !(BEST | MULTIPATH);
    if best {
        *f |= BEST;
    }
    if mp {
        *f |= MULTIPATH;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_path_costs_24_bytes_and_multi_moves_out() {
        assert_eq!(std::mem::size_of::<Path>(), 16);
        assert_eq!(std::mem::size_of::<V4Slot>(), 16);
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

    #[test]
    fn peer_ids_beyond_16_bits_use_the_side_table() {
        let mut rib = LocRib::new();
        let p: Prefix = "10.0.0.0/24".parse().expect("prefix");
        let a = Arc::new(PathAttributes::default());
        rib.upsert(p, Path::new(PeerId(70_000), a.clone(), false));
        assert_eq!(rib.paths(p).len(), 1);
        assert_eq!(rib.paths(p)[0].peer, PeerId(70_000));
        rib.upsert(p, Path::new(PeerId(1), a.clone(), false));
        assert!(rib.remove(p, PeerId(1)).is_some());
        assert_eq!(rib.paths(p)[0].peer, PeerId(70_000));
        assert!(rib.remove(p, PeerId(70_000)).is_some());
        assert!(rib.is_empty());
        assert_eq!(rib.iter().count(), 0);
    }
}
