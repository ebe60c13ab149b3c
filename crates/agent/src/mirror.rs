//! The agent's in-memory copy of the datastore keys its routing is
//! computed from (the [`ClusterState`]): Nodes, BGPConfigurations,
//! BGPPeers, BGPFilters, IPPools, every IPAM block and this node's block
//! affinities. Listed once, then kept current from one watch on the
//! datastore's root, so a change anywhere in the cluster costs each agent
//! one event instead of a new listing of everything (with hundreds of
//! nodes and pods starting, re-listing on every revision is what stalls a
//! datastore). Keys the agent does not read (WorkloadEndpoints, IPAM
//! handles, other nodes' affinities) are skipped as they arrive and do not
//! count as a change.
//!
//! A compaction that outruns the watch gives a fresh listing of the root
//! ([`WatchEvent::Reset`]), which replaces everything. If the watch stops,
//! [`ClusterMirror::catch_up`] says so and the agent opens a new mirror.
//!
//! Used with etcd (a watch there is one server-pushed stream); with the
//! embedded SQLite store, whose watches poll, the agent keeps polling the
//! revision and re-reading, which on one machine is cheap.

use std::collections::BTreeMap;

use tabby_datastore::{Datastore, KeyValue, Revision, Watch, WatchEvent};
use tabby_ipam::{Block, BlockAffinity};
use tabby_model::store::{decode_resource, kind_prefix};
use tabby_model::{Kind, Resource};

use crate::AgentError;
use crate::daemon::ClusterState;
use crate::peers::BgpResources;

/// The prefix the watch follows (every prefix below is under it).
const ROOT: &str = "/tabby/";

/// What one section of the mirror holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Resources of one kind.
    Resources(Kind),
    /// IPAM blocks.
    Blocks,
    /// This node's block affinities.
    Affinities,
}

/// The datastore keys a node's routing depends on, kept current by a
/// watch (see the module documentation).
pub struct ClusterMirror {
    /// Prefix, what it holds, and its keys.
    sections: Vec<(String, Section, BTreeMap<String, KeyValue>)>,
    watch: Watch,
    /// The revision of the last event applied.
    revision: Revision,
}

impl std::fmt::Debug for ClusterMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMirror")
            .field("keys", &self.len())
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl ClusterMirror {
    /// Lists what node `node`'s routing reads and starts the watch that
    /// keeps it current.
    pub async fn open(ds: &Datastore, node: &str) -> Result<ClusterMirror, AgentError> {
        let mut sections: Vec<(String, Section, BTreeMap<String, KeyValue>)> = [
            Kind::Node,
            Kind::BgpConfiguration,
            Kind::BgpPeer,
            Kind::BgpFilter,
            Kind::IpPool,
        ]
        .into_iter()
        .map(|k| (kind_prefix(k), Section::Resources(k), BTreeMap::new()))
        .collect();
        sections.push((
            tabby_ipam::records::blocks_prefix(None),
            Section::Blocks,
            BTreeMap::new(),
        ));
        sections.push((
            tabby_ipam::records::affinities_prefix(Some(node), None),
            Section::Affinities,
            BTreeMap::new(),
        ));
        // Each prefix is listed at its own revision; the watch starts after
        // the oldest, so events replayed over a newer listing only repeat
        // what it holds, in order, up to the present.
        let mut oldest = Revision::MAX;
        for (prefix, _, keys) in &mut sections {
            let listing = ds.list(prefix).await?;
            oldest = oldest.min(listing.revision);
            keys.extend(listing.items.into_iter().map(|kv| (kv.key.clone(), kv)));
        }
        let watch = ds.watch(ROOT, oldest + 1).await?;
        Ok(ClusterMirror {
            sections,
            watch,
            revision: oldest,
        })
    }

    /// How many keys the mirror holds.
    pub fn len(&self) -> usize {
        self.sections.iter().map(|(_, _, k)| k.len()).sum()
    }

    /// True when the mirror holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revision of the last change applied.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Applies every event that has arrived; true if a key the agent reads
    /// changed. Fails when the watch has stopped or reported an error (the
    /// caller opens a new mirror).
    pub fn catch_up(&mut self) -> Result<bool, AgentError> {
        let mut changed = false;
        loop {
            match self.watch.try_next() {
                Ok(None) => return Ok(changed),
                Ok(Some(Ok(ev))) => changed |= self.apply(ev),
                Ok(Some(Err(e))) => return Err(AgentError::Datastore(e)),
                Err(()) => return Err(AgentError::WatchStopped),
            }
        }
    }

    /// Waits up to `timeout` for the next event and applies it and every
    /// one behind it; true if a key the agent reads changed.
    pub async fn wait_for_change(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<bool, AgentError> {
        match self.watch.next_timeout(timeout).await {
            None => self.catch_up(),
            Some(Ok(ev)) => {
                let changed = self.apply(ev);
                Ok(self.catch_up()? || changed)
            }
            Some(Err(e)) => Err(AgentError::Datastore(e)),
        }
    }

    /// The section holding `key`, if the agent reads it.
    fn section_of(&mut self, key: &str) -> Option<&mut BTreeMap<String, KeyValue>> {
        self.sections
            .iter_mut()
            .find(|(prefix, _, _)| key.starts_with(prefix.as_str()))
            .map(|(_, _, keys)| keys)
    }

    /// Applies one event; true if it changed a key the agent reads.
    fn apply(&mut self, ev: WatchEvent) -> bool {
        match ev {
            WatchEvent::Put(kv) => {
                self.revision = self.revision.max(kv.mod_revision);
                let key = kv.key.clone();
                match self.section_of(&key) {
                    Some(keys) => {
                        if keys.get(&key) == Some(&kv) {
                            return false;
                        }
                        keys.insert(key, kv);
                        true
                    }
                    None => false,
                }
            }
            WatchEvent::Delete { key, revision } => {
                self.revision = self.revision.max(revision);
                self.section_of(&key)
                    .is_some_and(|keys| keys.remove(&key).is_some())
            }
            WatchEvent::Reset(listing) => {
                self.revision = listing.revision;
                for (_, _, keys) in &mut self.sections {
                    keys.clear();
                }
                for kv in listing.items {
                    let key = kv.key.clone();
                    if let Some(keys) = self.section_of(&key) {
                        keys.insert(key, kv);
                    }
                }
                true
            }
        }
    }

    /// The cluster state the mirror holds, decoded as [`crate::daemon::read_state`]
    /// decodes it: a resource that does not decode is an error; an IPAM
    /// record that does not is skipped with a warning.
    pub fn state(&self) -> Result<ClusterState, AgentError> {
        let mut bgp = BgpResources::default();
        let mut pools = Vec::new();
        let mut blocks = Vec::new();
        let mut affinities = Vec::new();
        for (_, section, keys) in &self.sections {
            for kv in keys.values() {
                match section {
                    Section::Resources(_) => {
                        match decode_resource(&kv.key, &kv.value, kv.mod_revision)? {
                            Resource::Node(n) => bgp.nodes.push(n),
                            Resource::BgpConfiguration(c) => bgp.configurations.push(c),
                            Resource::BgpPeer(p) => bgp.peers.push(p),
                            Resource::BgpFilter(f) => bgp.filters.push(f),
                            Resource::IpPool(p) => pools.push(p),
                            _ => {}
                        }
                    }
                    Section::Blocks => match serde_json::from_slice::<Block>(&kv.value) {
                        Ok(b) => blocks.push(b),
                        Err(e) => tracing::warn!(key = %kv.key, "unreadable IPAM block: {e}"),
                    },
                    Section::Affinities => {
                        match serde_json::from_slice::<BlockAffinity>(&kv.value) {
                            Ok(a) => affinities.push(a),
                            Err(e) => {
                                tracing::warn!(key = %kv.key, "unreadable block affinity: {e}")
                            }
                        }
                    }
                }
            }
        }
        Ok(ClusterState {
            bgp,
            pools,
            blocks,
            affinities,
        })
    }
}
