//! Adj-RIB-In: the routes one peer sent us.
//!
//! Owns [`AdjRibIn`], a read-only view of one peer's paths in the Loc-RIB.
//! tabby keeps no separate per-peer copy: every path already records its
//! peer, and paths rejected by import policy are kept flagged, so the view
//! is exact without doubling memory for a full table. Re-evaluating import
//! policy uses ROUTE-REFRESH (RFC 2918) rather than a stored pre-policy
//! copy.

use crate::nlri::Prefix;
use crate::rib::{LocRib, Path, PeerId};

/// One peer's received routes.
#[derive(Clone, Copy, Debug)]
pub struct AdjRibIn<'a> {
    pub(crate) loc: &'a LocRib,
    pub(crate) peer: PeerId,
}

impl<'a> AdjRibIn<'a> {
    /// The peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The path this peer sent for `prefix`.
    pub fn get(&self, prefix: Prefix) -> Option<Path> {
        self.loc
            .paths(prefix)
            .iter()
            .find(|p| p.peer == self.peer)
            .cloned()
    }

    /// Every route from this peer (accepted and filtered).
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, Path)> + 'a {
        let peer = self.peer;
        self.loc.iter().filter_map(move |(pfx, paths)| {
            paths
                .iter()
                .find(|p| p.peer == peer)
                .cloned()
                .map(|p| (pfx, p))
        })
    }
}
