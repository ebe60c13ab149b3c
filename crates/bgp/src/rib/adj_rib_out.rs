//! Adj-RIB-Out: what we advertise to one peer.
//!
//! Owns [`AdjRibOut`]: the routes last sent to the peer and the changes
//! not yet sent. Changes are coalesced per prefix (a route that flaps twice
//! before the next flush is sent once, or not at all if it ends where it
//! started) and packed into UPDATEs by [`crate::UpdateBuilder`] when the
//! driver asks. Deciding *what* to advertise is [`crate::rib::Rib`]'s job.

use std::collections::HashMap;
use std::sync::Arc;

use crate::attribute::PathAttributes;
use crate::error::EncodeError;
use crate::message::{CodecContext, Message, Update, UpdateBuilder};
use crate::nlri::{Family, Ipv4Prefix, Ipv6Prefix, Prefix};
use crate::rib::fast_hash::SeededState;

/// A map keyed by prefix with one table per family, so IPv4 entries stay
/// 16 bytes (8-byte key, 8-byte value).
#[derive(Debug, Default)]
struct PrefixMap<V> {
    v4: HashMap<Ipv4Prefix, V, SeededState>,
    v6: HashMap<Ipv6Prefix, V, SeededState>,
}

impl<V> PrefixMap<V> {
    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
    fn get(&self, p: &Prefix) -> Option<&V> {
        match p {
            Prefix::V4(k) => self.v4.get(k),
            Prefix::V6(k) => self.v6.get(k),
        }
    }
    fn insert(&mut self, p: Prefix, v: V) -> Option<V> {
        match p {
            Prefix::V4(k) => self.v4.insert(k, v),
            Prefix::V6(k) => self.v6.insert(k, v),
        }
    }
    fn remove(&mut self, p: &Prefix) -> Option<V> {
        match p {
            Prefix::V4(k) => self.v4.remove(k),
            Prefix::V6(k) => self.v6.remove(k),
        }
    }
    fn entry_or_insert(&mut self, p: Prefix, v: V) {
        match p {
            Prefix::V4(k) => {
                self.v4.entry(k).or_insert(v);
            }
            Prefix::V6(k) => {
                self.v6.entry(k).or_insert(v);
            }
        }
    }
    fn clear(&mut self) {
        self.v4 = HashMap::default();
        self.v6 = HashMap::default();
    }
    fn iter(&self) -> impl Iterator<Item = (Prefix, &V)> + '_ {
        let v4 = self.v4.iter().map(|(k, v)| (Prefix::V4(*k), v));
        let v6 = self.v6.iter().map(|(k, v)| (Prefix::V6(*k), v));
        v4.chain(v6)
    }
    fn into_drain(self) -> impl Iterator<Item = (Prefix, V)> {
        let v4 = self.v4.into_iter().map(|(k, v)| (Prefix::V4(k), v));
        let v6 = self.v6.into_iter().map(|(k, v)| (Prefix::V6(k), v));
        v4.chain(v6)
    }
    fn drain(&mut self) -> impl Iterator<Item = (Prefix, V)> + '_ {
        let v4 = self.v4.drain().map(|(k, v)| (Prefix::V4(k), v));
        let v6 = self.v6.drain().map(|(k, v)| (Prefix::V6(k), v));
        v4.chain(v6)
    }
}

/// Routes advertised to one peer and changes pending.
#[derive(Debug, Default)]
pub struct AdjRibOut {
    advertised: PrefixMap<Arc<PathAttributes>>,
    pending: PrefixMap<Option<Arc<PathAttributes>>>,
    end_of_rib: Vec<Family>,
}

impl AdjRibOut {
    /// Number of prefixes advertised (as of the last flush).
    pub fn len(&self) -> usize {
        self.advertised.len()
    }

    /// True when nothing is advertised.
    pub fn is_empty(&self) -> bool {
        self.advertised.is_empty()
    }

    /// The attributes advertised for `prefix`.
    pub fn get(&self, prefix: Prefix) -> Option<&Arc<PathAttributes>> {
        self.advertised.get(&prefix)
    }

    /// Every advertised route.
    pub fn iter(&self) -> impl Iterator<Item = (Prefix, &Arc<PathAttributes>)> + '_ {
        self.advertised.iter()
    }

    /// True when changes wait for [`AdjRibOut::flush`].
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.end_of_rib.is_empty()
    }

    /// Records what should be advertised for `prefix` (`None`: nothing).
    pub(crate) fn set(&mut self, prefix: Prefix, attrs: Option<Arc<PathAttributes>>) {
        if attrs.is_none() && self.advertised.is_empty() && self.pending.is_empty() {
            // Nothing sent, nothing to take back (e.g. the peer a full table
            // is being received from).
            return;
        }
        let same = match (self.advertised.get(&prefix), &attrs) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        };
        if same {
            self.pending.remove(&prefix);
        } else {
            self.pending.insert(prefix, attrs);
        }
    }

    /// Queues End-of-RIB markers (after the initial table transfer).
    pub(crate) fn queue_end_of_rib(&mut self, families: &[Family]) {
        self.end_of_rib.extend_from_slice(families);
    }

    /// Forgets everything (the session went down).
    pub(crate) fn clear(&mut self) {
        self.advertised.clear();
        self.pending.clear();
        self.end_of_rib.clear();
    }

    /// Queues every advertised route again (the peer sent ROUTE-REFRESH).
    pub(crate) fn resend_all(&mut self) {
        let all: Vec<(Prefix, Arc<PathAttributes>)> = self.advertised.drain().collect();
        for (p, a) in all {
            self.pending.entry_or_insert(p, Some(a));
        }
    }

    /// Encodes pending changes into UPDATE messages and marks them sent.
    pub fn flush(&mut self, ctx: &CodecContext) -> Result<Vec<Vec<u8>>, EncodeError> {
        let mut b = UpdateBuilder::new(*ctx);
        let pending = std::mem::take(&mut self.pending);
        for (p, a) in pending.into_drain() {
            match a {
                Some(a) => {
                    b.announce(&a, p);
                    self.advertised.insert(p, a);
                }
                None => {
                    b.withdraw(p);
                    self.advertised.remove(&p);
                }
            }
        }
        let mut out = b.build()?;
        for f in self.end_of_rib.drain(..) {
            out.push(Message::Update(Update::end_of_rib_marker(f)).to_bytes(ctx)?);
        }
        Ok(out)
    }
}
