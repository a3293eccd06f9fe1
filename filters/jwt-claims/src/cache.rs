//! The verified-token cache: a client that reuses its token pays a hash lookup and a
//! comparison instead of a signature verification.
//!
//! Per VM (one worker), bounded, first-in first-out. An entry never outlives its token's `exp`
//! (plus the provider's clock skew), and the whole cache is dropped when a key set changes, so
//! a revoked key stops working at the next JWKS refresh. The map is keyed by a 64-bit hash
//! seeded per VM, but a hit also compares the full token, so a hash collision (found by luck
//! or by an attacker) can never stand in for a verification.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

/// What a verified token grants: its provider and the header values to set, rendered once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub provider: usize,
    /// `(header, value)` pairs in configuration order.
    pub headers: Vec<(String, String)>,
    /// Claims that could not be forwarded (unsafe or too long), counted on every use.
    pub rejected_claims: u32,
    /// The token's `exp` plus the clock skew: the entry is useless after it.
    pub valid_until_s: Option<u64>,
}

struct Entry {
    token: Box<[u8]>,
    verified: Rc<Verified>,
}

/// The map's keys are already seeded hashes: hashing them again (SipHash) would cost more
/// than the rest of a lookup.
#[derive(Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes.iter().fold(self.0, |h, &b| h.rotate_left(8) ^ u64::from(b));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub struct VerifiedCache {
    capacity: usize,
    seed: u64,
    entries: HashMap<u64, Entry, BuildHasherDefault<KeyIsHash>>,
    /// Insertion order, for eviction. May hold hashes already removed; those are skipped.
    order: VecDeque<u64>,
    hasher: fn(u64, &[u8]) -> u64,
}

/// Up to eight bytes as a little-endian word (missing bytes are zero).
#[inline(always)]
fn word(bytes: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(bytes) {
        Ok(w) => u64::from_le_bytes(w),
        Err(_) => bytes.iter().rev().fold(0, |acc, &b| acc << 8 | u64::from(b)),
    }
}

/// The slot of a token: its length and last 32 bytes (the end of the signature, which differs
/// between any two signed tokens), mixed with the VM's seed. Hashing the whole token would cost
/// more than the rest of a cache hit in wasm; a slot shared by two tokens only costs a miss,
/// since a hit compares the whole token.
fn seeded_hash(seed: u64, token: &[u8]) -> u64 {
    let tail = &token[token.len().saturating_sub(32)..];
    let mut h = seed ^ (token.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for chunk in tail.chunks(8) {
        h = filter_common::hash::fmix64(h ^ word(chunk));
    }
    h
}

/// Compares without an early exit (eight bytes at a time), so the time taken says nothing
/// about where two tokens first differ. This runs on every cache hit: a byte-wise fold costs
/// more than the rest of the hit in wasm.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u64;
    let mut i = 0;
    while let (Some(x), Some(y)) = (a.get(i..i + 8), b.get(i..i + 8)) {
        diff |= word(x) ^ word(y);
        i += 8;
    }
    diff |= word(a.get(i..).unwrap_or_default()) ^ word(b.get(i..).unwrap_or_default());
    diff == 0
}

impl VerifiedCache {
    pub fn new(capacity: usize, seed: u64) -> VerifiedCache {
        VerifiedCache::with_hasher(capacity, seed, seeded_hash)
    }

    /// With another hash function: tests force collisions with it.
    pub fn with_hasher(capacity: usize, seed: u64, hasher: fn(u64, &[u8]) -> u64) -> VerifiedCache {
        VerifiedCache { capacity, seed, entries: HashMap::default(), order: VecDeque::new(), hasher }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached result for `token`, if it is still valid at `now_s` for one of `providers`.
    pub fn get(&mut self, token: &[u8], providers: &[usize], now_s: u64) -> Option<Rc<Verified>> {
        if self.capacity == 0 {
            return None;
        }
        let key = (self.hasher)(self.seed, token);
        let entry = self.entries.get(&key)?;
        if !same_token(&entry.token, token) {
            return None;
        }
        if entry.verified.valid_until_s.is_some_and(|until| now_s > until) {
            self.entries.remove(&key);
            return None;
        }
        providers.contains(&entry.verified.provider).then(|| entry.verified.clone())
    }

    pub fn insert(&mut self, token: &[u8], verified: Rc<Verified>) {
        if self.capacity == 0 {
            return;
        }
        let key = (self.hasher)(self.seed, token);
        if let Some(existing) = self.entries.get(&key) {
            // A colliding token keeps the slot it has; the newcomer is simply not cached.
            if !same_token(&existing.token, token) {
                return;
            }
        } else {
            while self.entries.len() >= self.capacity {
                match self.order.pop_front() {
                    Some(old) => {
                        self.entries.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(key);
        }
        self.entries.insert(key, Entry { token: token.into(), verified });
        // `order` can collect hashes of entries that expired and were removed; keep it bounded.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }

    /// Drops everything: the key set changed.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(provider: usize, until: Option<u64>) -> Rc<Verified> {
        Rc::new(Verified { provider, headers: vec![("x-user-id".into(), format!("p{provider}"))], rejected_claims: 0, valid_until_s: until })
    }

    #[test]
    fn hits_until_expiry_and_only_for_the_same_providers() {
        let mut c = VerifiedCache::new(4, 7);
        c.insert(b"tok-a", verified(0, Some(100)));
        assert_eq!(c.get(b"tok-a", &[0], 50).unwrap().headers[0].1, "p0");
        assert!(c.get(b"tok-a", &[1], 50).is_none(), "verified for provider 0 only");
        assert!(c.get(b"tok-b", &[0], 50).is_none());
        assert!(c.get(b"tok-a", &[0], 100).is_some());
        assert!(c.get(b"tok-a", &[0], 101).is_none(), "never past exp");
        assert!(c.is_empty(), "an expired entry is dropped when seen");
    }

    #[test]
    fn bounded_first_in_first_out() {
        let mut c = VerifiedCache::new(3, 1);
        for i in 0..10u8 {
            c.insert(&[b't', i], verified(0, None));
            assert!(c.len() <= 3);
        }
        assert!(c.get(&[b't', 9], &[0], 0).is_some());
        assert!(c.get(&[b't', 6], &[0], 0).is_none());
        c.clear();
        assert!(c.get(&[b't', 9], &[0], 0).is_none());
        let mut off = VerifiedCache::new(0, 1);
        off.insert(b"t", verified(0, None));
        assert!(off.get(b"t", &[0], 0).is_none());
    }

    /// With every token hashing alike, a forged token must still miss: the cache compares
    /// the whole token, not the hash.
    #[test]
    fn a_hash_collision_is_never_a_hit() {
        fn constant(_: u64, _: &[u8]) -> u64 {
            42
        }
        let mut c = VerifiedCache::with_hasher(8, 0, constant);
        c.insert(b"eyJ.valid.sig", verified(0, None));
        assert!(c.get(b"eyJ.forged.sig", &[0], 0).is_none());
        assert!(c.get(b"eyJ.valid.si", &[0], 0).is_none());
        assert!(c.get(b"eyJ.valid.sig", &[0], 0).is_some());
        // Nor does a colliding insert replace the verified entry.
        c.insert(b"eyJ.other.sig", verified(1, None));
        assert_eq!(c.get(b"eyJ.valid.sig", &[0], 0).unwrap().provider, 0);
        assert!(c.get(b"eyJ.other.sig", &[1], 0).is_none());
    }

    #[test]
    fn the_seed_changes_the_slots() {
        assert_ne!(seeded_hash(1, b"token"), seeded_hash(2, b"token"));
        assert_ne!(seeded_hash(1, b"a.b.sig1"), seeded_hash(1, b"a.b.sig2"));
    }

    #[test]
    fn comparison_sees_every_byte() {
        let token: Vec<u8> = (0..77u8).collect();
        assert!(same_token(&token, &token.clone()));
        for i in 0..token.len() {
            let mut other = token.clone();
            other[i] ^= 1;
            assert!(!same_token(&token, &other), "byte {i}");
        }
        assert!(!same_token(&token, &token[..76]));
        assert!(same_token(b"", b""));
    }
}
