//! A seeded multiply-fold hasher for the RIB's prefix-keyed tables.
//!
//! Owns [`SeededState`]. Prefix keys are 5 to 17 bytes; SipHash (std's
//! default) spends more time on them than the table lookup itself. This
//! hasher mixes each word with a per-table random seed through a folded
//! 64x64->128 multiply (the construction foldhash and aHash's fallback
//! use), so a peer cannot precompute colliding prefixes without knowing
//! the seed.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xD6E8_FEB8_6659_FD93;

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds [`SeededHasher`]s sharing one random seed.
#[derive(Clone, Copy, Debug)]
pub struct SeededState {
    seed: u64,
}

impl Default for SeededState {
    fn default() -> Self {
        SeededState {
            seed: RandomState::new().hash_one(0x0074_6162_6279_u64) | 1,
        }
    }
}

impl SeededState {
    /// Hash of an IPv4 prefix given as address bits and length.
    #[inline]
    pub fn hash_v4(&self, addr: u32, len: u8) -> u64 {
        fold(
            fold((u64::from(addr) << 8 | u64::from(len)) ^ self.seed, K1),
            K2,
        )
    }
}

impl BuildHasher for SeededState {
    type Hasher = SeededHasher;
    fn build_hasher(&self) -> SeededHasher {
        SeededHasher { state: self.seed }
    }
}

/// The hasher built by [`SeededState`].
#[derive(Clone, Copy, Debug)]
pub struct SeededHasher {
    state: u64,
}

impl Hasher for SeededHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.state = fold(self.state ^ i, K1);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.state, K2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_prefixes_spread() {
        let s = SeededState::default();
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            seen.insert(s.hash_v4(0x0a00_0000 + (i << 8), 24) >> 50);
        }
        // 14 top bits over 10k keys: expect close to the 2^14 maximum spread.
        assert!(seen.len() > 7000, "{}", seen.len());
        assert_ne!(
            SeededState::default().hash_v4(1, 8),
            SeededState::default().hash_v4(1, 8)
        );
    }
}
