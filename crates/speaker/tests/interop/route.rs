//! A route as any daemon under test shows it, normalised so tests compare
//! one shape whichever implementation they read it from.

use std::collections::BTreeMap;

/// One (best) path for a prefix, as seen by a daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenRoute {
    /// `10.1.0.0/24`.
    pub prefix: String,
    /// Next hop address.
    pub next_hop: Option<String>,
    /// AS numbers, space separated (`65001 65002`).
    pub as_path: String,
    /// `a:b` communities, sorted.
    pub communities: Vec<String>,
    /// `a:b:c` large communities, sorted.
    pub large_communities: Vec<String>,
    /// MED.
    pub med: Option<u32>,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// ORIGINATOR_ID.
    pub originator_id: Option<String>,
    /// CLUSTER_LIST, in order.
    pub cluster_list: Vec<String>,
}

/// Routes by prefix.
pub type Rib = BTreeMap<String, SeenRoute>;
